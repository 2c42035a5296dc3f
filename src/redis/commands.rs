//! The `key_evt_amqp.*` commands. Each builds a new configuration, validates it whole, and only
//! then replaces the current one: a bad command changes nothing.
//!
//! A command that took effect is passed on so that every node behaves alike: in a cluster to
//! every other node over the cluster bus, otherwise to the replicas through the replication
//! stream. Replayed from the AOF at startup it is ignored: commands change the running module,
//! the load arguments and `key_evt_amqp.*` configs are what a restart starts from.

use std::ffi::c_char;
use std::sync::Arc;

use redis_module::{raw, Context, ContextFlags, RedisError, RedisResult, RedisString, RedisValue};

use crate::core::cluster;
use crate::core::keymask::KeyMasks;
use crate::core::settings::Settings;
use crate::redis::runtime::{self, Module};
use crate::redis::{acl, hook, log};

/// What a command does, given its arguments after the name.
pub type Apply = fn(&[&[u8]]) -> RedisResult;

/// Declares each command once: its name (a const, for `lib.rs`), the function Redis calls (a
/// client's or the master's command) and what it does; [`TABLE`] lists them all.
macro_rules! commands {
    ($($name:ident = $text:literal => $run:ident, $apply:ident;)*) => {
        $(
            pub const $name: &str = $text;

            pub fn $run(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
                run(ctx, args, $name, $apply)
            }
        )*

        /// Every command, by name: for the copies that other nodes send over the cluster bus.
        pub const TABLE: &[(&str, Apply)] = &[$(($name, $apply)),*];
    };
}

commands! {
    CONFIG_SET = "key_evt_amqp.config_set" => config_set, apply_config_set;
    CONNECT = "key_evt_amqp.connect" => connect, apply_connect;
    DISCONNECT = "key_evt_amqp.disconnect" => disconnect, apply_disconnect;
    FALLBACK_STORAGE_SIZE_SET = "key_evt_amqp.fallback_storage_size_set"
        => fallback_storage_size_set, apply_fallback_storage_size_set;
    KEYMASK_CLEAN = "key_evt_amqp.keymask_clean" => keymask_clean, apply_keymask_clean;
    KEYMASK_ADD = "key_evt_amqp.keymask_add" => keymask_add, apply_keymask_add;
    KEYMASK_SET = "key_evt_amqp.keymask_set" => keymask_set, apply_keymask_set;
}

/// Runs a command given by a client (or the master): permission, effect, then pass it on.
fn run(ctx: &Context, args: Vec<RedisString>, name: &str, apply: Apply) -> RedisResult {
    let flags = ctx.get_flags();
    if flags.contains(ContextFlags::LOADING) {
        return ok();
    }
    // The master's stream has no user (asking Redis for it would crash on 7.0).
    if !flags.contains(ContextFlags::REPLICATED) {
        acl::require_config_permission(ctx, name)?;
    }
    let argv: Vec<&[u8]> = args.iter().map(RedisString::as_slice).collect();
    // Redis passes the command's name first.
    let argv = argv.get(1..).unwrap_or_default();
    let reply = apply(argv)?;
    if flags.contains(ContextFlags::CLUSTER) {
        broadcast(ctx, name, argv);
    } else if !flags.contains(ContextFlags::REPLICATED) {
        ctx.replicate_verbatim();
    }
    Ok(reply)
}

/// Sends the command to every other node of the cluster (fire and forget: a node that is
/// unreachable right now misses it, as it would miss a `CONFIG SET`).
pub fn broadcast(ctx: &Context, name: &str, args: &[&[u8]]) {
    let mut all = Vec::with_capacity(args.len() + 1);
    all.push(name.as_bytes());
    all.extend_from_slice(args);
    let payload = cluster::encode_command(&all);
    // SAFETY: FFI call with the command's context; Redis copies the payload before returning.
    let sent = unsafe {
        raw::RedisModule_SendClusterMessage.map(|send| {
            send(
                ctx.ctx,
                std::ptr::null(),
                cluster::COMMAND_MESSAGE,
                payload.as_ptr().cast::<c_char>(),
                payload.len() as u32,
            )
        })
    };
    if sent != Some(raw::REDISMODULE_OK as i32) {
        log::warning(&format!(
            "{name}: applied here, but could not be sent to the other cluster nodes"
        ));
    }
}

pub fn module() -> Result<Arc<Module>, RedisError> {
    runtime::current().ok_or(RedisError::Str("ERR key_evt_amqp is not loaded"))
}

fn ok() -> RedisResult {
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// Applies `change` to the current settings; the result replaces them only if it is valid.
fn update(change: impl FnOnce(&Settings) -> Result<Settings, String>) -> RedisResult {
    let m = module()?;
    let new = change(&m.shared.settings()).map_err(|e| RedisError::String(format!("ERR {e}")))?;
    m.shared.set_settings(new);
    ok()
}

fn with_args(s: &Settings, args: &[&[u8]]) -> Result<Settings, String> {
    s.with_args(args).map_err(|e| e.to_string())
}

/// `key_evt_amqp.config_set HOST [PORT … KEYMASK…]`
fn apply_config_set(args: &[&[u8]]) -> RedisResult {
    if args.is_empty() {
        return Err(RedisError::WrongArity);
    }
    update(|s| with_args(s, args))
}

/// `key_evt_amqp.connect [HOST …]`: reconfigure if asked, then (re)connect and stay connected.
fn apply_connect(args: &[&[u8]]) -> RedisResult {
    if !args.is_empty() {
        update(|s| with_args(s, args))?;
    }
    module()?.shared.request_connect();
    log::notice("connect requested");
    ok()
}

/// `key_evt_amqp.disconnect`: close the connection, no reconnect until `connect`.
fn apply_disconnect(args: &[&[u8]]) -> RedisResult {
    if !args.is_empty() {
        return Err(RedisError::WrongArity);
    }
    module()?.shared.disable();
    hook::wake_main();
    log::notice("disconnect requested: events wait in the fallback list until connect");
    ok()
}

/// `key_evt_amqp.fallback_storage_size_set N`
fn apply_fallback_storage_size_set(args: &[&[u8]]) -> RedisResult {
    let [n] = args else {
        return Err(RedisError::WrongArity);
    };
    let size = std::str::from_utf8(n)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| {
            RedisError::String(format!(
                "ERR invalid FALLBACK_SIZE '{}': expected an integer: >0 keep at most N events, 0 unlimited, <0 no fallback list",
                crate::core::escape::escape(n)
            ))
        })?;
    update(|s| s.with_fallback_size(size, n).map_err(|e| e.to_string()))?;
    hook::wake_main();
    ok()
}

/// `key_evt_amqp.keymask_clean`: forward nothing.
fn apply_keymask_clean(args: &[&[u8]]) -> RedisResult {
    if !args.is_empty() {
        return Err(RedisError::WrongArity);
    }
    update(|s| {
        Ok(Settings {
            masks: KeyMasks::default(),
            ..s.clone()
        })
    })
}

/// `key_evt_amqp.keymask_add MASK…` (the command name is not a mask, unlike in the old module).
fn apply_keymask_add(masks: &[&[u8]]) -> RedisResult {
    if masks.is_empty() {
        return Err(RedisError::WrongArity);
    }
    update(|s| {
        Ok(Settings {
            masks: s.masks.add(masks),
            ..s.clone()
        })
    })
}

/// `key_evt_amqp.keymask_set MASK…`
fn apply_keymask_set(masks: &[&[u8]]) -> RedisResult {
    if masks.is_empty() {
        return Err(RedisError::WrongArity);
    }
    update(|s| {
        Ok(Settings {
            masks: KeyMasks::from_args(masks),
            ..s.clone()
        })
    })
}
