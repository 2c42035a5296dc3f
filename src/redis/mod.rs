//! The Redis shell: the only place that touches `redis_module`, `raw::` and `extern "C"`.
//! It feeds the core's decisions from Redis callbacks and carries them out on the main
//! thread. Inside it, `runtime.rs` is at the bottom; `lifecycle.rs` at the top, called only
//! from `lib.rs`.

pub mod acl;
pub mod callbacks;
pub mod cluster_bus;
pub mod commands;
pub mod config;
pub mod detached;
pub mod fallback;
pub mod flushes;
pub mod heap;
pub mod hook;
pub mod info;
pub mod journal;
pub mod lifecycle;
pub mod log;
pub mod panic_log;
pub mod runtime;
pub mod scan;
pub mod snapshot;
pub mod step;
pub mod values;
