//! The `key_evt_amqp.*` commands. Each builds a new configuration, validates it whole, and only
//! then replaces the current one: a bad command changes nothing.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use redis_module::{Context, RedisError, RedisResult, RedisString, RedisValue};

use crate::acl;
use crate::args::Settings;
use crate::keymask::KeyMasks;
use crate::module::{self, Module};
use crate::redis_log;
use crate::stats::LinkState;

fn module() -> Result<Arc<Module>, RedisError> {
    module::current().ok_or(RedisError::Str("ERR key_evt_amqp is not loaded"))
}

/// The arguments after the command name, as bytes.
fn rest(args: &[RedisString]) -> Vec<&[u8]> {
    args.iter().skip(1).map(RedisString::as_slice).collect()
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
pub fn config_set(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    acl::require_config_permission(ctx, "key_evt_amqp.config_set")?;
    let args = rest(&args);
    if args.is_empty() {
        return Err(RedisError::WrongArity);
    }
    update(|s| with_args(s, &args))
}

/// `key_evt_amqp.connect [HOST …]`: reconfigure if asked, then (re)connect and stay connected.
pub fn connect(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    acl::require_config_permission(ctx, "key_evt_amqp.connect")?;
    let args = rest(&args);
    if !args.is_empty() {
        update(|s| with_args(s, &args))?;
    }
    let shared = &module()?.shared;
    shared.enabled.store(true, Relaxed);
    shared.eager.store(true, Relaxed);
    shared.reconnect_requests.fetch_add(1, Relaxed);
    shared.notify();
    redis_log::notice("connect requested");
    ok()
}

/// `key_evt_amqp.disconnect`: close the connection, no reconnect until `connect`.
pub fn disconnect(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    acl::require_config_permission(ctx, "key_evt_amqp.disconnect")?;
    if args.len() != 1 {
        return Err(RedisError::WrongArity);
    }
    let shared = &module()?.shared;
    shared.enabled.store(false, Relaxed);
    shared.eager.store(false, Relaxed);
    // Spilling starts at the next event-loop step, not after a grace period.
    shared.link.set(LinkState::Disabled);
    shared.notify();
    redis_log::notice("disconnect requested: events wait in the fallback list until connect");
    ok()
}

/// `key_evt_amqp.fallback_storage_size_set N`
pub fn fallback_storage_size_set(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    acl::require_config_permission(ctx, "key_evt_amqp.fallback_storage_size_set")?;
    let args = rest(&args);
    let [n] = args.as_slice() else {
        return Err(RedisError::WrongArity);
    };
    let size = std::str::from_utf8(n)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| {
            RedisError::String(format!(
                "ERR invalid FALLBACK_SIZE '{}': expected an integer: >0 keep at most N events, 0 unlimited, <0 no fallback list",
                crate::event::escape(n)
            ))
        })?;
    update(|s| {
        Ok(Settings {
            fallback_size: size,
            ..s.clone()
        })
    })?;
    module::wake_main();
    ok()
}

/// `key_evt_amqp.keymask_clean`: forward nothing.
pub fn keymask_clean(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    acl::require_config_permission(ctx, "key_evt_amqp.keymask_clean")?;
    if args.len() != 1 {
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
pub fn keymask_add(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    acl::require_config_permission(ctx, "key_evt_amqp.keymask_add")?;
    let masks = rest(&args);
    if masks.is_empty() {
        return Err(RedisError::WrongArity);
    }
    update(|s| {
        Ok(Settings {
            masks: s.masks.add(&masks),
            ..s.clone()
        })
    })
}

/// `key_evt_amqp.keymask_set MASK…`
pub fn keymask_set(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    acl::require_config_permission(ctx, "key_evt_amqp.keymask_set")?;
    let masks = rest(&args);
    if masks.is_empty() {
        return Err(RedisError::WrongArity);
    }
    update(|s| {
        Ok(Settings {
            masks: KeyMasks::from_args(&masks),
            ..s.clone()
        })
    })
}
