//! Logging to the Redis log from any thread, through a detached thread-safe context (it carries
//! the module's name and, unlike a command's context, outlives any one call).

use std::ffi::CString;
use std::sync::atomic::{AtomicPtr, Ordering};

use redis_module::raw;

static LOG_CTX: AtomicPtr<raw::RedisModuleCtx> = AtomicPtr::new(std::ptr::null_mut());

/// Creates the logging context (at load).
pub fn init(ctx: *mut raw::RedisModuleCtx) {
    // SAFETY: FFI call with the load context Redis gave us; the API pointer is set by then.
    let detached = unsafe {
        raw::RedisModule_GetDetachedThreadSafeContext.map_or(std::ptr::null_mut(), |f| f(ctx))
    };
    let old = LOG_CTX.swap(detached, Ordering::AcqRel);
    free(old);
}

/// Releases it (at unload, once no other thread logs).
pub fn release() {
    free(LOG_CTX.swap(std::ptr::null_mut(), Ordering::AcqRel));
}

fn free(ctx: *mut raw::RedisModuleCtx) {
    if !ctx.is_null() {
        // SAFETY: a context we created and nobody else holds any more.
        unsafe {
            if let Some(f) = raw::RedisModule_FreeThreadSafeContext {
                f(ctx);
            }
        }
    }
}

fn log(level: &'static [u8], msg: &str) {
    let ctx = LOG_CTX.load(Ordering::Acquire);
    let text = CString::new(msg.replace('\0', "\\x00")).unwrap_or_default();
    // SAFETY: `RedisModule_Log` reads a NUL-terminated level and a "%s" format with one string.
    unsafe {
        match raw::RedisModule_Log {
            Some(f) if !ctx.is_null() => {
                f(ctx, level.as_ptr().cast(), c"%s".as_ptr(), text.as_ptr())
            }
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
