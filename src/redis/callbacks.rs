//! What Redis calls on its main thread: keyspace events (the hot path), the event loop, role
//! and loading changes. Each callback finds the running module and hands over; shutdown is in
//! `lifecycle.rs`, the cluster bus in `cluster_bus.rs`, INFO in `info.rs`.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::Ordering::Relaxed;

use redis_module::{raw, Context};

use crate::core::placement::Placement;
use crate::core::value::Data;
use crate::redis::runtime::{self, Module};
use crate::redis::{config, flushes, hook, journal, log, values};
use crate::state::stats::MainThreadCounters;

/// Subscribes to keyspace events of the classes `events`, to the server events we follow
/// (`on_shutdown` is the lifecycle's), and (for the first step, which reads the list's length)
/// to the event loop.
pub fn subscribe(
    ctx: &Context,
    events: i32,
    on_shutdown: raw::RedisModuleEventCallback,
) -> Result<(), String> {
    let server_events: [(u64, raw::RedisModuleEventCallback); 5] = [
        (
            raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
            Some(on_role_changed),
        ),
        (raw::REDISMODULE_EVENT_LOADING, Some(on_loading)),
        (raw::REDISMODULE_EVENT_SHUTDOWN, on_shutdown),
        (raw::REDISMODULE_EVENT_FLUSHDB, Some(flushes::on_flushdb)),
        (raw::REDISMODULE_EVENT_SWAPDB, Some(flushes::on_swapdb)),
    ];
    // SAFETY: FFI registration with the load context and callbacks defined below.
    unsafe {
        let sub = raw::RedisModule_SubscribeToKeyspaceEvents.ok_or("no keyspace event API")?;
        // Evictions always: the module must see its own list evicted (see `on_keyspace_event`).
        let classes = events | raw::REDISMODULE_NOTIFY_EVICTED;
        if sub(ctx.ctx, classes, Some(on_keyspace_event)) != raw::REDISMODULE_OK as c_int {
            return Err("cannot subscribe to keyspace events".into());
        }
    }
    for (id, callback) in server_events {
        subscribe_server_event(ctx, id, callback)?;
    }
    hook::install(Some(on_event_loop));
    // The first step reads the list's length; later ones come with work (see `hook`).
    if !hook::hook(ctx.ctx) {
        return Err("cannot subscribe to the event loop (Redis 7.0 or newer needed)".into());
    }
    Ok(())
}

/// Subscribes `callback` to the server event `id`.
fn subscribe_server_event(
    ctx: &Context,
    id: u64,
    callback: raw::RedisModuleEventCallback,
) -> Result<(), String> {
    let event = raw::RedisModuleEvent { id, dataver: 1 };
    // SAFETY: FFI registration with the load context and a callback of ours.
    let status = unsafe {
        let sub = raw::RedisModule_SubscribeToServerEvent.ok_or("no server event API")?;
        sub(ctx.ctx, event, callback)
    };
    if status != raw::REDISMODULE_OK as c_int {
        return Err(format!(
            "cannot subscribe to server event {id} (Redis 7.0 or newer needed)"
        ));
    }
    Ok(())
}

/// The keyspace callback. It also receives every `evicted` event, even when EVENTS leaves
/// them out: an eviction of the module's own list must be noticed at once. That costs nothing
/// on the hot path but one test of the event's class; evictions themselves (rare, and far
/// dearer to Redis than this) pay for a key comparison.
extern "C" fn on_keyspace_event(
    ctx: *mut raw::RedisModuleCtx,
    class: c_int,
    event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    const OK: c_int = raw::REDISMODULE_OK as c_int;
    let gil = Context::new(ctx);
    runtime::with_running(&gil, |module| {
        module.on_keyspace(&gil, class, event, key);
    });
    OK
}

impl Module {
    /// [`on_keyspace_event`] for the running module.
    #[inline(always)]
    fn on_keyspace(
        &self,
        gil: &Context,
        class: c_int,
        event: *const c_char,
        key_name: *mut raw::RedisModuleString,
    ) {
        let ctx = gil.ctx;
        let evicted = class & raw::REDISMODULE_NOTIFY_EVICTED != 0;
        // SAFETY: Redis passes the key's string, alive for the duration of this call; the API
        // pointer is set at load.
        let key = unsafe {
            let Some(ptr_len) = raw::RedisModule_StringPtrLen else {
                return;
            };
            let mut len = 0;
            let ptr = ptr_len(key_name, &mut len);
            if ptr.is_null() {
                return;
            }
            std::slice::from_raw_parts(ptr.cast::<u8>(), len)
        };
        if evicted && !self.on_eviction(key) {
            return;
        }
        let forwarded = self.on_event(
            gil,
            key,
            || {
                // SAFETY: Redis passes a live context and a NUL-terminated event name for the
                // duration of this call.
                unsafe {
                    (
                        i64::from(raw::RedisModule_GetSelectedDb.map_or(0, |f| f(ctx))),
                        CStr::from_ptr(event).to_bytes(),
                    )
                }
            },
            |db, name| self.capture_values(ctx, key_name, db, name),
        );
        if let Some(step_wanted) = forwarded {
            if journal::active() {
                self.schedule_journal(ctx);
            }
            if step_wanted && !hook::is_hooked() {
                let _ = hook::hook(ctx);
            }
        }
    }
}

impl Module {
    /// An `evicted` event: notes the eviction of the list; returns whether to go on with the
    /// event (EVENTS asks for evictions). Out of line and cold: the hot path keeps its shape
    /// (and its inlining) and pays one test of the event's class.
    #[cold]
    #[inline(never)]
    fn on_eviction(&self, key: &[u8]) -> bool {
        if Placement::is_fallback_key(key) {
            self.list_evicted.store(true, Relaxed);
            hook::wake_main();
            return false;
        }
        self.events & raw::REDISMODULE_NOTIFY_EVICTED != 0
    }

    /// The keyspace callback's work: filter, encode, enqueue. It never waits for another
    /// thread: the inbox is this thread's, the settings copy is read under the GIL, and the
    /// outbox is only try-locked (see [`Module::hand_over`]). The database and
    /// the event name are only fetched (`details`) for a key that is forwarded: most events
    /// of a filtering node stop at the mask. Costs per event are in docs/profiles/README.md.
    /// Returns `None` for an event not forwarded, else whether a step must hand it over (it
    /// went to the inbox, see [`Module::hand_over`]). `values` reads the key's values under
    /// `payload value` (one atomic load otherwise). Inlined into the callback: as a call of
    /// its own, it saved and restored registers for every event, about 30 instructions
    /// (callgrind; the same for events that stop at the mask).
    #[inline(always)]
    fn on_event<'a>(
        &self,
        gil: &Context,
        key: &[u8],
        details: impl FnOnce() -> (i64, &'a [u8]),
        values: impl FnOnce(i64, &[u8]) -> Option<Box<Data>>,
    ) -> Option<bool> {
        let shared = &*self.shared;
        if !shared.master.load(Relaxed) || self.loading.load(Relaxed) || self.own_io.load(Relaxed) {
            return None;
        }
        MainThreadCounters::bump(&shared.stats.main.seen);
        if Placement::is_fallback_key(key) || !self.masks_match(gil, key) {
            return None;
        }
        MainThreadCounters::bump(&shared.stats.main.matched);
        let (db, event) = details();
        let data = if config::payload_value() {
            values(db, key)
        } else {
            None
        };
        let event = self.new_event(db, event, key, data);
        if journal::active() {
            // The command's job journals what waits in the inbox.
            self.inbox.lock().push(event);
            return Some(true);
        }
        Some(self.hand_over(event))
    }

    /// The values of a forwarded event under `payload value`: the key's value now, and the
    /// old value the `Key` event captured for it just before. Cold: off the default path.
    #[cold]
    #[inline(never)]
    fn capture_values(
        &self,
        ctx: *mut raw::RedisModuleCtx,
        key_name: *mut raw::RedisModuleString,
        db: i64,
        key: &[u8],
    ) -> Option<Box<Data>> {
        let old = self.pending_old.lock().take(db, key);
        Some(Box::new(values::capture(ctx, key_name, old.as_ref())))
    }

    /// Whether the `Key` event's old value of `key` is wanted: the key would be forwarded.
    pub fn captures_old_value(&self, gil: &Context, key: &[u8]) -> bool {
        let shared = &*self.shared;
        shared.master.load(Relaxed)
            && !self.loading.load(Relaxed)
            && !self.own_io.load(Relaxed)
            && !Placement::is_fallback_key(key)
            && self.masks_match(gil, key)
    }
}

extern "C" fn on_event_loop(
    ctx: *mut raw::RedisModuleCtx,
    _e: raw::RedisModuleEvent,
    sub: u64,
    _d: *mut c_void,
) {
    if sub != raw::REDISMODULE_SUBEVENT_EVENTLOOP_BEFORE_SLEEP {
        return;
    }
    if let Some(m) = runtime::current() {
        m.step(&Context::new(ctx));
    }
}

extern "C" fn on_role_changed(
    _ctx: *mut raw::RedisModuleCtx,
    _e: raw::RedisModuleEvent,
    sub: u64,
    _d: *mut c_void,
) {
    if let Some(m) = runtime::current() {
        let master = sub == raw::REDISMODULE_EVENT_REPLROLECHANGED_NOW_MASTER;
        m.shared.master.store(master, Relaxed);
        m.demoted.store(!master, Relaxed);
        // A replica's list is its master's business.
        m.rescue.lock().forget();
        m.resync_list.store(true, Relaxed);
        // Look at the slots afresh: a promoted replica takes over its master's list, and any
        // other list left in the slots it now serves.
        m.placement.lock().reset();
        if master {
            m.journal_from_now();
        }
        m.shared.notify();
        hook::wake_main();
        log::notice(if master {
            "this node is now a master: publishing"
        } else {
            "this node is now a replica: not publishing"
        });
    }
}

extern "C" fn on_loading(
    _ctx: *mut raw::RedisModuleCtx,
    _e: raw::RedisModuleEvent,
    sub: u64,
    _d: *mut c_void,
) {
    if let Some(m) = runtime::current() {
        let ended = sub == raw::REDISMODULE_SUBEVENT_LOADING_ENDED
            || sub == raw::REDISMODULE_SUBEVENT_LOADING_FAILED;
        m.loading.store(!ended, Relaxed);
        if ended {
            m.resync_list.store(true, Relaxed);
            hook::wake_main();
        } else {
            // The data comes back from the file (DEBUG RELOAD empties the databases first):
            // what a flush saved is in it.
            m.rescue.lock().forget();
        }
    }
}
