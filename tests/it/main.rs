//! The integration tests: one binary, one module per topic. Each test starts its own
//! redis-server(s) on free ports and publishes under a routing key no other test uses, so the
//! tests of every topic run in parallel threads of this one binary.
//!
//! `scripts/test.sh` runs one topic per step (`cargo test --release --test it forwarding::`) so
//! that a failure names its topic and a hang is bounded per topic: every test belongs in a
//! topic module, none in this file. The timing tests are in the `latency` binary.

// Tests unwrap: a failure is a panic with the error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod batches;
mod broker_failures;
mod cluster;
mod cluster_selftest;
mod commands;
mod configs;
mod durability;
mod flushes;
mod formats;
mod forwarding;
mod info;
mod journal;
mod layout;
mod lifecycle;
mod memory_bound;
mod outage;
mod replication;
mod snapshot;
mod support_selftest;
mod tls;
mod values;
