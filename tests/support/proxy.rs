//! The fault proxy lives in the testkit crate now (`testkit/src/proxy.rs`). This file only
//! keeps `examples/bench.rs` building, which still includes it with
//! `#[path = "../tests/support/proxy.rs"] mod proxy;` and gives it `bind_local`; it goes once
//! the bench uses `testkit::FaultProxy`.

// testkit/src/proxy.rs calls `super::bind_local()`: the includer's, through this import.
#[allow(unused_imports)]
use super::bind_local;

#[path = "../../testkit/src/proxy.rs"]
mod inner;

pub use inner::*;
