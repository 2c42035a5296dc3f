//! The values an event carries under `payload value`, read from an open key.
//!
//! TEMPORARY (branch `snap`): a stand-in with the real one's signature until it lands with
//! `payload value` (another engineer's work, which replaces this file at merge). It captures
//! nothing: every event is as under `payload key`.

use redis_module::raw;

use crate::core::value::Data;

/// The captured value of the open key `key` under `payload value`, `None` under `payload key`.
/// TEMPORARY: always `None`.
pub fn read(key: *mut raw::RedisModuleKey) -> Option<Box<Data>> {
    let _ = key;
    None
}
