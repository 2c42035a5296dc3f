//! Logging to the Redis log from any thread, through a detached context (it carries the
//! module's name and, unlike a command's context, outlives any one call). Our own function,
//! not `redis_module::logging`: redis-module 2.0.8 passes the message as the printf format and
//! unwraps its `CString`.

use std::ffi::CString;

use parking_lot::RwLock;
use redis_module::raw;

use crate::redis::detached::Detached;
use crate::state::log::Log;

static LOG_CTX: RwLock<Option<Detached>> = RwLock::new(None);

/// The Redis log, for the threads that are not Redis's.
pub const REDIS_LOG: Log = Log { warning, notice };

/// Creates the logging context (at load).
pub fn init(ctx: *mut raw::RedisModuleCtx) {
    *LOG_CTX.write() = Detached::new(ctx);
}

/// Releases it (at unload, once no other thread logs).
pub fn release() {
    LOG_CTX.write().take();
}

fn log(level: &'static [u8], msg: &str) {
    let ctx = LOG_CTX.read();
    let text = CString::new(msg.replace('\0', "\\x00")).unwrap_or_default();
    // SAFETY: `RedisModule_Log` reads a NUL-terminated level and a "%s" format with one string.
    unsafe {
        match (raw::RedisModule_Log, ctx.as_ref()) {
            (Some(f), Some(ctx)) => f(
                ctx.ctx(),
                level.as_ptr().cast(),
                c"%s".as_ptr(),
                text.as_ptr(),
            ),
            _ => eprintln!("key_evt_amqp: {msg}"),
        }
    }
}

pub fn warning(msg: &str) {
    log(b"warning\0", msg);
}

pub fn notice(msg: &str) {
    log(b"notice\0", msg);
}
