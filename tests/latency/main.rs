//! The timing tests: they measure how fast Redis keeps answering, so `scripts/test.sh` runs
//! them after every other test, one module per step, single-threaded
//! (`cargo test --release --test latency chaos:: -- --test-threads=1`), and their bounds mean
//! something only on an otherwise idle machine.

// Tests unwrap: a failure is a panic with the error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod blackhole;
mod chaos;
mod chaos_kill;
mod drain;
