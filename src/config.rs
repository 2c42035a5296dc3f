//! Options set with Redis's own `CONFIG SET key_evt_amqp.*` (module configs), beside the
//! positional load arguments.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use redis_module::configuration::{
    register_i64_configuration, ConfigurationContext, ConfigurationFlags,
};
use redis_module::{raw, Context};

use crate::module;

/// `key_evt_amqp.queue_capacity`: events held in memory before they spill to the fallback list.
pub static QUEUE_CAPACITY: AtomicI64 = AtomicI64::new(DEFAULT_QUEUE_CAPACITY);
pub const DEFAULT_QUEUE_CAPACITY: i64 = 100_000;
pub const MAX_QUEUE_CAPACITY: i64 = 100_000_000;

pub fn queue_capacity() -> usize {
    usize::try_from(QUEUE_CAPACITY.load(Relaxed)).unwrap_or(1)
}

/// The next event-loop step applies the new capacity (a queue now over it spills then).
pub fn on_queue_capacity_changed(
    _ctx: &ConfigurationContext,
    _name: &str,
    _value: &'static AtomicI64,
) {
    module::wake_main();
}

/// Registers the configs and applies what redis.conf or `MODULE LOADEX … CONFIG` set (at load).
pub fn register(ctx: &Context) -> Result<(), String> {
    register_i64_configuration(
        ctx,
        "queue_capacity",
        &QUEUE_CAPACITY,
        DEFAULT_QUEUE_CAPACITY,
        1,
        MAX_QUEUE_CAPACITY,
        ConfigurationFlags::DEFAULT,
        Some(Box::new(on_queue_capacity_changed)),
    );
    // SAFETY: FFI call with the load context, once every config is registered.
    let loaded = unsafe { raw::RedisModule_LoadConfigs.map(|f| f(ctx.ctx)) };
    match loaded {
        Some(status) if status == raw::REDISMODULE_OK as i32 => Ok(()),
        _ => Err("invalid key_evt_amqp.* config value (see the line above)".into()),
    }
}
