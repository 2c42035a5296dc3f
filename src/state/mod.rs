//! The state the Redis main thread and the publisher thread share: the outbox, the settings,
//! the counters and the link, each behind its own lock or atomic.

pub mod log;
pub mod shared;
pub mod stats;
