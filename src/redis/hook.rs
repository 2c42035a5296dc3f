//! The event-loop hook (`REDISMODULE_EVENT_EVENTLOOP`), subscribed only while the module has
//! work.
//!
//! Redis fires that event twice per event-loop iteration (before and after sleep) and builds a
//! module context with a temporary client for each subscriber each time: about 1,200
//! instructions per iteration (callgrind, docs/profiles/README.md), paid even when no event
//! matched. So the hook is subscribed when work appears (a forwarded event, a wake-up from the
//! publisher or a command) and dropped once the module has been quiet for a while.
//!
//! Redis walks its list of listeners while it fires a server event and frees a listener that is
//! unsubscribed: unsubscribing from inside a server-event callback could free what that walk
//! still uses. The unsubscription therefore runs from a one-shot event-loop callback, outside
//! any firing. Subscribing appends a listener, which a walk in progress tolerates.
//!
//! Main thread only, but for [`wake_main`].

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::OnceLock;

use redis_module::raw;

use crate::redis::{log, runtime};

/// The event-loop callback (`callbacks::on_event_loop`), given once at the first load: the
/// library stays mapped, so it never changes.
static CALLBACK: OnceLock<raw::RedisModuleEventCallback> = OnceLock::new();
static HOOKED: AtomicBool = AtomicBool::new(false);
/// An unsubscription is on its way (one one-shot at a time).
static UNHOOK_ASKED: AtomicBool = AtomicBool::new(false);

/// Sets the callback [`hook`] subscribes.
pub fn install(callback: raw::RedisModuleEventCallback) {
    let _ = CALLBACK.set(callback);
}

/// Runs a maintenance step soon, from any thread: a one-shot event-loop callback wakes Redis
/// out of its sleep and subscribes the event-loop hook, which does the work before the loop
/// sleeps again. The callback stays valid after MODULE UNLOAD (the library stays mapped) and
/// then does nothing.
pub fn wake_main() {
    // SAFETY: Redis's API pointer, set at load; the callback takes no data.
    unsafe {
        if let Some(add) = raw::RedisModule_EventLoopAddOneShot {
            add(Some(on_wake), std::ptr::null_mut());
        }
    }
}

extern "C" fn on_wake(_data: *mut c_void) {
    if let Some(m) = runtime::current() {
        let _ = hook(m.detached.ctx());
    }
}

pub fn is_hooked() -> bool {
    HOOKED.load(Relaxed)
}

/// Subscribes the installed callback to the event loop, unless it already is. `ctx`: any
/// context of ours. Returns whether it is subscribed.
pub fn hook(ctx: *mut raw::RedisModuleCtx) -> bool {
    if HOOKED.load(Relaxed) {
        return true;
    }
    let callback = CALLBACK.get().copied().flatten();
    if callback.is_some() && subscribe(ctx, callback) {
        HOOKED.store(true, Relaxed);
        return true;
    }
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Relaxed) {
        log::warning("cannot subscribe to the event loop: events are not handed over");
    }
    false
}

/// Asks for [`unhook`] to run from a one-shot event-loop callback (`on_unhook`, which should
/// check that the module is still quiet).
pub fn unhook_soon(on_unhook: unsafe extern "C" fn(*mut c_void)) {
    if !HOOKED.load(Relaxed) || UNHOOK_ASKED.swap(true, Relaxed) {
        return;
    }
    // SAFETY: Redis's API pointer, set at load; the callback is ours (the library stays
    // mapped, see lifecycle::pin_library) and takes no data.
    unsafe {
        if let Some(add) = raw::RedisModule_EventLoopAddOneShot {
            add(Some(on_unhook), std::ptr::null_mut());
        }
    }
}

/// Drops the subscription. Only from a one-shot callback or a command, never from a server
/// event (see the module comment). `quiet`: whether to go on with it.
pub fn unhook(ctx: *mut raw::RedisModuleCtx, quiet: bool) {
    UNHOOK_ASKED.store(false, Relaxed);
    if quiet && HOOKED.load(Relaxed) && subscribe(ctx, None) {
        HOOKED.store(false, Relaxed);
    }
}

/// The module is unloaded: Redis has dropped its listeners.
pub fn forget() {
    HOOKED.store(false, Relaxed);
    UNHOOK_ASKED.store(false, Relaxed);
}

fn subscribe(ctx: *mut raw::RedisModuleCtx, callback: raw::RedisModuleEventCallback) -> bool {
    let event = raw::RedisModuleEvent {
        id: raw::REDISMODULE_EVENT_EVENTLOOP,
        dataver: 1,
    };
    // SAFETY: a context of our module that Redis passed or that we hold (detached); the
    // callback, if any, is ours.
    unsafe {
        raw::RedisModule_SubscribeToServerEvent
            .is_some_and(|sub| sub(ctx, event, callback) == raw::REDISMODULE_OK as c_int)
    }
}
