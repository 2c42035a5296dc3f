//! The Redis shell: the only place that touches `redis_module`, `raw::` and `extern "C"`.
//! It feeds the core's decisions from Redis callbacks and carries them out on the main
//! thread.

pub mod acl;
pub mod commands;
pub mod config;
pub mod fallback;
pub mod heap;
pub mod hook;
pub mod info;
pub mod log;
pub mod runtime;
