//! key_evt_amqp: a Redis module that publishes keyspace events to RabbitMQ (AMQP 0.9.1).
//!
//! This file only registers the module with Redis. The map of the code, the dependency rule
//! and the path of one event are in `docs/ARCHITECTURE.md`.
//!
//! # Layout
//!
//! - [`core`]: the pure logic (events, the outbox, settings, masks, slots, policy), no Redis,
//!   no I/O.
//! - [`amqp`]: the AMQP 0-9-1 client; only its wire codec is public (for fuzzing).
//! - `state`: what the main thread and the publisher thread share.
//! - `publisher`: the publisher thread, supervised.
//! - `redis`: the shell, the only place that talks to Redis.

pub mod amqp;
pub mod core;
mod publisher;
mod redis;
mod state;

mod registration {
    use redis_module::{redis_module, Context, RedisString, Status};

    use crate::redis::heap::{Counting, RedisOrSystem};
    use crate::redis::{commands, lifecycle, snapshot};

    // Redis's allocator aborts outside Redis: unit tests and benchmarks get the system one.
    type Allocator = Counting<RedisOrSystem>;
    const ALLOCATOR: Allocator = Counting(RedisOrSystem);

    fn init(ctx: &Context, args: &[RedisString]) -> Status {
        lifecycle::init(ctx, args)
    }

    fn deinit(ctx: &Context) -> Status {
        lifecycle::deinit(ctx)
    }

    /// Redis's own ACL categories, those of `CONFIG SET`, where the server can set them (7.2+,
    /// Valkey 8): `-@admin` then refuses the commands natively. Redis 7.0 cannot, so
    /// `redis::acl` also asks for the permission to run `CONFIG SET`, on every server.
    const CATEGORIES: &str = "admin slow dangerous";

    redis_module! {
        name: "key_evt_amqp",
        version: 1,
        allocator: (Allocator, ALLOCATOR),
        data_types: [],
        init: init,
        deinit: deinit,
        commands: [
            [commands::CONFIG_SET, commands::config_set, "admin", 0, 0, 0, "", CATEGORIES],
            [commands::CONNECT, commands::connect, "admin", 0, 0, 0, "", CATEGORIES],
            [commands::DISCONNECT, commands::disconnect, "admin", 0, 0, 0, "", CATEGORIES],
            [commands::FALLBACK_STORAGE_SIZE_SET, commands::fallback_storage_size_set, "admin", 0, 0, 0, "", CATEGORIES],
            [commands::KEYMASK_CLEAN, commands::keymask_clean, "admin", 0, 0, 0, "", CATEGORIES],
            [commands::KEYMASK_ADD, commands::keymask_add, "admin", 0, 0, 0, "", CATEGORIES],
            [commands::KEYMASK_SET, commands::keymask_set, "admin", 0, 0, 0, "", CATEGORIES],
            [snapshot::SNAPSHOT, snapshot::snapshot, "admin", 0, 0, 0, "", CATEGORIES],
            [snapshot::SNAPSHOT_CANCEL, snapshot::snapshot_cancel, "admin", 0, 0, 0, "", CATEGORIES],
        ],
    }
}
