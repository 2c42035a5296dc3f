//! The receiving end of the cluster bus: commands another node applied, sent to this one so
//! that every node behaves alike (the sending end is `commands::broadcast`).

use std::ffi::{c_char, c_uchar};

use redis_module::{raw, Context};

use crate::core::cluster;
use crate::redis::commands::TABLE;
use crate::redis::{log, snapshot};

/// Registers the receiver of commands sent by the other nodes (cluster mode only).
pub fn listen(ctx: &Context) {
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
    apply(&String::from_utf8_lossy(sender), payload);
}

/// Applies a command from cluster node `sender`, logging the outcome. The arguments are not
/// logged: they may hold the password.
fn apply(sender: &str, payload: &[u8]) {
    let Some((name, args)) = cluster::decode_command(payload)
        .as_deref()
        .and_then(<[&[u8]]>::split_first)
        .map(|(name, args)| {
            (
                String::from_utf8_lossy(name).to_ascii_lowercase(),
                args.to_vec(),
            )
        })
    else {
        log::warning(&format!("unreadable command from cluster node {sender}"));
        return;
    };
    let Some((name, apply)) = TABLE
        .iter()
        .chain(snapshot::BUS_TABLE)
        .find(|(n, _)| *n == name)
    else {
        log::warning(&format!("unknown command from cluster node {sender}"));
        return;
    };
    match apply(&args) {
        Ok(_) => log::notice(&format!("{name} applied, from cluster node {sender}")),
        Err(e) => log::warning(&format!("{name} from cluster node {sender} refused: {e}")),
    }
}
