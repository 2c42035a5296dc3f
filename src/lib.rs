//! key_evt_amqp: a Redis module that publishes keyspace events to RabbitMQ (AMQP 0.9.1).
//!
//! This file only registers the module with Redis; see DESIGN.md for the architecture.

pub mod amqp;
pub mod core;
mod publisher;
mod redis;
mod state;

mod registration {
    use redis_module::{redis_module, Context, RedisString, Status};

    use crate::redis::heap::{Counting, RedisOrSystem};
    use crate::redis::{commands, lifecycle};

    // Redis's allocator aborts outside Redis: unit tests and benchmarks get the system one.
    type Allocator = Counting<RedisOrSystem>;
    const ALLOCATOR: Allocator = Counting(RedisOrSystem);

    fn init(ctx: &Context, args: &[RedisString]) -> Status {
        lifecycle::init(ctx, args)
    }

    fn deinit(ctx: &Context) -> Status {
        lifecycle::deinit(ctx)
    }

    redis_module! {
        name: "key_evt_amqp",
        version: 1,
        allocator: (Allocator, ALLOCATOR),
        data_types: [],
        init: init,
        deinit: deinit,
        commands: [
            [commands::CONFIG_SET, commands::config_set, "admin", 0, 0, 0, ""],
            [commands::CONNECT, commands::connect, "admin", 0, 0, 0, ""],
            [commands::DISCONNECT, commands::disconnect, "admin", 0, 0, 0, ""],
            [commands::FALLBACK_STORAGE_SIZE_SET, commands::fallback_storage_size_set, "admin", 0, 0, 0, ""],
            [commands::KEYMASK_CLEAN, commands::keymask_clean, "admin", 0, 0, 0, ""],
            [commands::KEYMASK_ADD, commands::keymask_add, "admin", 0, 0, 0, ""],
            [commands::KEYMASK_SET, commands::keymask_set, "admin", 0, 0, 0, ""],
        ],
    }
}
