//! The `key_evt_amqp.*` commands. Each builds a new configuration, validates it whole, and only
//! then replaces the current one: a bad command changes nothing.
//!
//! A command that took effect is passed on so that every node behaves alike: in a cluster to
//! every other node over the cluster bus, otherwise to the replicas through the replication
//! stream. Replayed from the AOF at startup it is ignored: commands change the running module,
//! the load arguments and `key_evt_amqp.*` configs are what a restart starts from.

use std::ffi::{c_char, c_uchar};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use redis_module::{raw, Context, ContextFlags, RedisError, RedisResult, RedisString, RedisValue};

use crate::core::cluster;
use crate::core::keymask::KeyMasks;
use crate::core::settings::Settings;
use crate::redis::acl;
use crate::redis::log;
use crate::redis::runtime::{self, Module};
use crate::state::stats::LinkState;

/// What a command does, given its arguments after the name.
type Apply = fn(&[&[u8]]) -> RedisResult;

/// Every command, by name: for the copies that other nodes send over the cluster bus.
const COMMANDS: [(&str, Apply); 7] = [
    ("key_evt_amqp.config_set", apply_config_set),
    ("key_evt_amqp.connect", apply_connect),
    ("key_evt_amqp.disconnect", apply_disconnect),
    (
        "key_evt_amqp.fallback_storage_size_set",
        apply_fallback_storage_size_set,
    ),
    ("key_evt_amqp.keymask_clean", apply_keymask_clean),
    ("key_evt_amqp.keymask_add", apply_keymask_add),
    ("key_evt_amqp.keymask_set", apply_keymask_set),
];

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
    let reply = apply(&argv[1..])?;
    if flags.contains(ContextFlags::CLUSTER) {
        broadcast(ctx, name, &argv[1..]);
    } else if !flags.contains(ContextFlags::REPLICATED) {
        ctx.replicate_verbatim();
    }
    Ok(reply)
}

/// Sends the command to every other node of the cluster (fire and forget: a node that is
/// unreachable right now misses it, as it would miss a `CONFIG SET`).
fn broadcast(ctx: &Context, name: &str, args: &[&[u8]]) {
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

/// Registers the receiver of commands sent by the other nodes (cluster mode only).
pub fn listen_to_cluster(ctx: &Context) {
    // SAFETY: FFI registration with the load context and a receiver defined below.
    unsafe {
        if let Some(register) = raw::RedisModule_RegisterClusterMessageReceiver {
            register(ctx.ctx, cluster::COMMAND_MESSAGE, Some(on_cluster_message));
        }
    }
}

/// A command another node applied. The context is not used: Redis keeps the receiver of the
/// first load across MODULE UNLOAD/LOAD, with a context that may point at the old load.
extern "C" fn on_cluster_message(
    _ctx: *mut raw::RedisModuleCtx,
    sender_id: *const c_char,
    _type: u8,
    payload: *const c_uchar,
    len: u32,
) {
    // SAFETY: Redis passes the sender's 40-byte id and the payload, valid during this call.
    let (sender, payload) = unsafe {
        (
            std::slice::from_raw_parts(
                sender_id.cast::<u8>(),
                raw::REDISMODULE_NODE_ID_LEN as usize,
            ),
            std::slice::from_raw_parts(payload, len as usize),
        )
    };
    let sender = String::from_utf8_lossy(sender);
    let Some(argv) = cluster::decode_command(payload) else {
        log::warning(&format!("unreadable command from cluster node {sender}"));
        return;
    };
    let name = String::from_utf8_lossy(argv[0]).to_ascii_lowercase();
    let Some((name, apply)) = COMMANDS.iter().find(|(n, _)| *n == name) else {
        log::warning(&format!("unknown command from cluster node {sender}"));
        return;
    };
    // The arguments are not logged: they may hold the password.
    match apply(&argv[1..]) {
        Ok(_) => log::notice(&format!("{name} applied, from cluster node {sender}")),
        Err(e) => log::warning(&format!("{name} from cluster node {sender} refused: {e}")),
    }
}

fn module() -> Result<Arc<Module>, RedisError> {
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
pub fn config_set(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, args, "key_evt_amqp.config_set", apply_config_set)
}

fn apply_config_set(args: &[&[u8]]) -> RedisResult {
    if args.is_empty() {
        return Err(RedisError::WrongArity);
    }
    update(|s| with_args(s, args))
}

/// `key_evt_amqp.connect [HOST …]`: reconfigure if asked, then (re)connect and stay connected.
pub fn connect(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, args, "key_evt_amqp.connect", apply_connect)
}

fn apply_connect(args: &[&[u8]]) -> RedisResult {
    if !args.is_empty() {
        update(|s| with_args(s, args))?;
    }
    let shared = &module()?.shared;
    shared.enabled.store(true, Relaxed);
    shared.eager.store(true, Relaxed);
    shared.reconnect_requests.fetch_add(1, Relaxed);
    shared.notify();
    log::notice("connect requested");
    ok()
}

/// `key_evt_amqp.disconnect`: close the connection, no reconnect until `connect`.
pub fn disconnect(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, args, "key_evt_amqp.disconnect", apply_disconnect)
}

fn apply_disconnect(args: &[&[u8]]) -> RedisResult {
    if !args.is_empty() {
        return Err(RedisError::WrongArity);
    }
    let shared = &module()?.shared;
    shared.enabled.store(false, Relaxed);
    shared.eager.store(false, Relaxed);
    // Spilling starts at the next event-loop step, not after a grace period.
    shared.link.set(LinkState::Disabled);
    shared.notify();
    runtime::wake_main();
    log::notice("disconnect requested: events wait in the fallback list until connect");
    ok()
}

/// `key_evt_amqp.fallback_storage_size_set N`
pub fn fallback_storage_size_set(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(
        ctx,
        args,
        "key_evt_amqp.fallback_storage_size_set",
        apply_fallback_storage_size_set,
    )
}

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
                crate::core::event::escape(n)
            ))
        })?;
    update(|s| {
        Ok(Settings {
            fallback_size: size,
            ..s.clone()
        })
    })?;
    runtime::wake_main();
    ok()
}

/// `key_evt_amqp.keymask_clean`: forward nothing.
pub fn keymask_clean(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, args, "key_evt_amqp.keymask_clean", apply_keymask_clean)
}

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
pub fn keymask_add(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, args, "key_evt_amqp.keymask_add", apply_keymask_add)
}

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
pub fn keymask_set(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, args, "key_evt_amqp.keymask_set", apply_keymask_set)
}

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
