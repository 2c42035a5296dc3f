//! A context of our module that is not tied to a call (`RedisModule_GetDetachedThreadSafeContext`):
//! for the log, which any thread writes, and for the one-shot callbacks, which Redis calls
//! without a context. Freed when dropped.

use redis_module::raw;

pub struct Detached(*mut raw::RedisModuleCtx);

// SAFETY: Redis's log accepts a detached context from any thread; the one-shot callbacks that
// use it for other calls run on the main thread.
unsafe impl Send for Detached {}
// SAFETY: as above.
unsafe impl Sync for Detached {}

impl Detached {
    /// A detached context made from `ctx` (the load context); `None` on a server without the
    /// API (older than Redis 7.0).
    pub fn new(ctx: *mut raw::RedisModuleCtx) -> Option<Detached> {
        // SAFETY: FFI call with the context Redis gave us; the API pointer is set at load.
        let detached = unsafe { raw::RedisModule_GetDetachedThreadSafeContext.map(|get| get(ctx)) };
        detached.filter(|c| !c.is_null()).map(Detached)
    }

    pub fn ctx(&self) -> *mut raw::RedisModuleCtx {
        self.0
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        // SAFETY: the context we got from RedisModule_GetDetachedThreadSafeContext, freed once.
        unsafe {
            if let Some(free) = raw::RedisModule_FreeThreadSafeContext {
                free(self.0);
            }
        }
    }
}
