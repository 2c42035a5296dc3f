//! A keyspace cursor (`RedisModule_ScanCursorCreate`) of the database it was made for, freed
//! when dropped. Main thread only: the snapshot (`snapshot.rs`) scans with it in slices.

use std::ffi::{c_int, c_void};

use redis_module::raw;

pub struct ScanCursor {
    ptr: *mut raw::RedisModuleScanCursor,
    /// The database it walks (the context is switched to it for each call).
    pub db: u32,
}

// SAFETY: the cursor is a plain allocation of Redis's; it is only used on the main thread
// (the module keeps it behind a lock that only the main thread takes) and freed once.
unsafe impl Send for ScanCursor {}

impl ScanCursor {
    /// A cursor at the start of database `db`; `None` on a server without the API.
    pub fn new(db: u32) -> Option<ScanCursor> {
        // SAFETY: Redis's API pointer, set at load; the call only allocates.
        let ptr = unsafe { raw::RedisModule_ScanCursorCreate.map(|create| create()) }?;
        (!ptr.is_null()).then_some(ScanCursor { ptr, db })
    }

    /// One step of the scan of the context's selected database (one hash bucket, so usually
    /// zero to a few keys), calling `callback` with `privdata` for each key. Returns whether
    /// keys are left to scan.
    ///
    /// # Safety
    /// `ctx` is a live context on the main thread, whose selected database is `self.db`;
    /// `callback` only reads the key it is given and treats `privdata` as what the caller
    /// passes.
    pub unsafe fn scan(
        &mut self,
        ctx: *mut raw::RedisModuleCtx,
        callback: raw::RedisModuleScanCB,
        privdata: *mut c_void,
    ) -> bool {
        // SAFETY: as the caller promises; the cursor is ours and alive.
        unsafe {
            raw::RedisModule_Scan
                .is_some_and(|scan| scan(ctx, self.ptr, callback, privdata) != 0 as c_int)
        }
    }
}

impl Drop for ScanCursor {
    fn drop(&mut self) {
        // SAFETY: the cursor Redis gave us, destroyed once.
        unsafe {
            if let Some(destroy) = raw::RedisModule_ScanCursorDestroy {
                destroy(self.ptr);
            }
        }
    }
}
