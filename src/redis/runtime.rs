//! The loaded module: its state, load and unload, and the callbacks Redis calls on its main
//! thread (keyspace events, the event loop, role and loading changes, shutdown).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use redis_module::{raw, Context, ContextFlags, RedisString, Status};

use crate::core::event::{self, Event, EventId, RunId};
use crate::core::limits::Throttle;
use crate::core::outbox::{Broker, Outbox, TickInput};
use crate::core::settings;
use crate::publisher;
use crate::redis::fallback::{Placement, RedisList};
use crate::redis::hook;
use crate::redis::log;
use crate::state::shared::Shared;
use crate::state::stats::{MainThreadCounters, Stats};

/// Events moved between memory and the fallback list per main-thread step (well under 1 ms).
const SLICE: usize = 500;

pub struct Module {
    pub shared: Arc<Shared>,
    publisher: Mutex<Option<JoinHandle<()>>>,
    pub run_id: RunId,
    pub events: i32,
    /// Where the fallback list lives (main thread only).
    pub placement: Mutex<Placement>,
    // Main-thread state kept in atomics, updated by server events: the keyspace callback reads
    // them instead of asking Redis for its context flags on every event. Whether this node is
    // a master is in `shared.master`: the publisher reads it too.
    loading: AtomicBool,
    /// Set when this node became a replica: the next step drops copies of the list's items.
    demoted: AtomicBool,
    /// Set while the module itself writes the fallback list: those events are not forwarded.
    own_io: AtomicBool,
    /// New events since the last event-loop step. Only the main thread touches it, so the
    /// keyspace callback never waits for the publisher (which could be off the CPU while
    /// holding the outbox).
    inbox: Mutex<Vec<Event>>,
    /// The list's length must be read again (after loading, or a promotion).
    resync_list: AtomicBool,
    /// Drops are logged when they start, then summed at most every 10 s (main thread).
    drops: Mutex<Throttle>,
    /// For the one-shot callbacks, which Redis calls without a context.
    detached: Detached,
    cluster: bool,
    /// Since when (ms) the event-loop hook has found nothing to do; 0 while there is work.
    quiet_since_ms: AtomicU64,
}

/// A context of our module that is not tied to a call.
struct Detached(*mut raw::RedisModuleCtx);

// SAFETY: only used on the main thread (one-shot callbacks, which Redis runs there).
unsafe impl Send for Detached {}
// SAFETY: as above.
unsafe impl Sync for Detached {}

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

static MODULE: RwLock<Option<Arc<Module>>> = RwLock::new(None);

/// Events in memory at MODULE UNLOAD, for the next load in this process.
static STASH: Mutex<Option<Outbox>> = Mutex::new(None);

/// Events the inbox keeps room for once the outbox is idle.
const INBOX_IDLE: usize = 64;

/// The event-loop hook is dropped after this long without work (see [`hook`]).
const UNHOOK_AFTER_MS: u64 = 1000;

/// How long a shutdown waits for the broker to confirm what is in memory.
const SHUTDOWN_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// Per-run sequence of `message_id`s. The library stays mapped across MODULE UNLOAD (see
/// [`pin_library`]), so a reload in the same process continues the sequence instead of reusing
/// ids under the same run id.
static SEQ: AtomicU64 = AtomicU64::new(0);

pub fn current() -> Option<Arc<Module>> {
    MODULE.read().clone()
}

pub fn init(ctx: &Context, argv: &[RedisString]) -> Status {
    log::init(ctx.ctx);
    match load(ctx, argv) {
        Ok(module) => {
            *MODULE.write() = Some(module);
            // A backlog already waiting in the list starts the connection at the next step.
            wake_main();
            Status::Ok
        }
        Err(e) => {
            log::warning(&format!("MODULE LOAD refused: {e}"));
            hook::forget();
            log::release();
            Status::Err
        }
    }
}

fn load(ctx: &Context, argv: &[RedisString]) -> Result<Arc<Module>, String> {
    let args: Vec<&[u8]> = argv.iter().map(RedisString::as_slice).collect();
    let (events, settings) = settings::parse_load_args(&args).map_err(|e| e.to_string())?;
    let (events, settings) = crate::redis::config::register(ctx, events, settings)?;
    let run_id = read_run_id(ctx).ok_or("cannot read run_id from INFO server")?;
    pin_library()?;
    let flags = ctx.get_flags();
    let cluster = flags.contains(ContextFlags::CLUSTER);
    // SAFETY: the load context Redis passed; the result is freed when the module is dropped.
    let detached = unsafe {
        raw::RedisModule_GetDetachedThreadSafeContext
            .map(|get| get(ctx.ctx))
            .filter(|c| !c.is_null())
            .ok_or("no detached context (Redis 7.0 or newer needed)")?
    };
    let shared = Arc::new(Shared::new(settings.clone()));
    shared
        .master
        .store(!flags.contains(ContextFlags::SLAVE), Relaxed);
    let module = Arc::new(Module {
        shared,
        publisher: Mutex::new(None),
        run_id,
        events,
        placement: Mutex::new(Placement::new(cluster)),
        loading: AtomicBool::new(flags.contains(ContextFlags::LOADING)),
        demoted: AtomicBool::new(false),
        own_io: AtomicBool::new(false),
        inbox: Mutex::new(Vec::new()),
        resync_list: AtomicBool::new(true),
        drops: Mutex::new(Throttle::new(std::time::Duration::from_secs(10))),
        detached: Detached(detached),
        cluster,
        quiet_since_ms: AtomicU64::new(0),
    });
    if !crate::redis::info::register(ctx.ctx) {
        return Err("cannot register the INFO section".into());
    }
    subscribe(ctx, events)?;
    if cluster {
        crate::redis::commands::listen_to_cluster(ctx);
    }
    let name = format!("{} {}", publisher::APP_ID, run_id.to_hex());
    let handle = publisher::spawn(module.shared.clone(), name, wake_main)
        .map_err(|e| format!("cannot start the publisher thread: {e}"))?;
    *module.publisher.lock() = Some(handle);
    if let Some(mut stash) = STASH.lock().take() {
        stash.hand_over(&mut module.shared.outbox.lock());
    }
    log::notice(&format!(
        "loaded: event classes {}, broker {}, exchange '{}', routing key '{}', masks {}",
        settings::describe_events(events),
        crate::redis::config::describe_endpoints(&settings),
        settings.exchange,
        settings.routing_key,
        settings.masks
    ));
    Ok(module)
}

/// Forgets the module (callbacks then do nothing) and returns it. The lock is released before
/// the caller goes on: the final spill raises keyspace events, whose callback reads `MODULE`.
fn take_module() -> Option<Arc<Module>> {
    MODULE.write().take()
}

pub fn deinit(_ctx: &Context) -> Status {
    let module = take_module();
    if let Some(module) = module {
        module.unload();
        log::notice("unloaded");
    }
    // Redis drops our listeners with the module.
    hook::forget();
    log::release();
    Status::Ok
}

impl Module {
    /// Stops the publisher; it gives back what it had in flight.
    fn stop_publisher(&self) {
        self.shared.stop.store(true, Relaxed);
        self.shared.notify();
        if let Some(handle) = self.publisher.lock().take() {
            let _ = handle.join();
        }
    }

    /// At unload, what is still in memory waits for the next load in this process (the library
    /// stays mapped). It is not written to the list here: a write inside MODULE UNLOAD makes
    /// Redis propagate the MODULE UNLOAD itself, which would unload the module again when the
    /// AOF is replayed, and on every replica.
    fn unload(&self) {
        self.stop_publisher();
        let mut stash = Outbox::new(1, 1);
        let mut outbox = self.shared.outbox.lock();
        self.move_inbox(&mut outbox);
        outbox.hand_over(&mut stash);
        drop(outbox);
        if stash.memory_len() > 0 {
            log::notice(&format!(
                "{} events in memory are kept for the next MODULE LOAD in this process",
                stash.memory_len()
            ));
        }
        *STASH.lock() = Some(stash);
    }

    /// At shutdown (after Redis has written its AOF and RDB: the list can no longer change
    /// them), give the publisher a moment to get what is in memory confirmed.
    fn shutdown(&self) {
        self.move_inbox(&mut self.shared.outbox.lock());
        let until = std::time::Instant::now() + SHUTDOWN_FLUSH;
        while std::time::Instant::now() < until && self.shared.link.broker() == Broker::Ready {
            let outbox = self.shared.outbox.lock();
            // Behind a non-empty list nothing more can go without refills, which need this thread.
            if outbox.memory_len() == 0 || !outbox.has_ready() && outbox.in_flight() == 0 {
                break;
            }
            drop(outbox);
            self.shared.notify();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        self.stop_publisher();
        let left = self.shared.outbox.lock().memory_len();
        if left > 0 {
            log::warning(&format!(
                "shutdown: {left} events in memory were not confirmed"
            ));
        }
    }

    /// Only a master that is not loading data publishes.
    pub fn publishes(&self) -> bool {
        self.shared.master.load(Relaxed) && !self.loading.load(Relaxed)
    }

    fn move_inbox(&self, outbox: &mut Outbox) {
        let mut inbox = self.inbox.lock();
        for e in inbox.drain(..) {
            outbox.push(e);
        }
        // A burst (a pipeline, a big MULTI) grows it: do not keep that capacity.
        if inbox.capacity() > 4096 {
            inbox.shrink_to(1024);
        }
    }

    /// One maintenance step on the main thread: hand new events to the outbox and wake the
    /// publisher, spill or refill one slice. Never waits for the publisher: if it holds the
    /// outbox right now, the step is retried at once from the next loop iteration. Returns
    /// whether the step was quiet: no new event, and the outbox idle at the end (nothing
    /// waiting, nothing in flight).
    fn tick(&self, ctx: &Context, slice: usize) -> bool {
        let shared = &*self.shared;
        let Some(mut outbox) = shared.outbox.try_lock() else {
            wake_main();
            return false;
        };
        let now_ms = crate::state::stats::now_ms();
        let broker = shared.link.broker_at(now_ms);
        let had_news = !self.inbox.lock().is_empty();
        if had_news {
            self.move_inbox(&mut outbox);
            shared.notify();
        }
        outbox.set_capacity(crate::redis::config::queue_capacity());
        let fallback_size = shared.settings().fallback_size;
        let mut resync = self.resync_list.swap(false, Relaxed);
        let mut placement = self.placement.lock();
        resync |= self.place_list(ctx, &mut placement, &mut outbox, slice);
        if let Some(key) = placement.key() {
            if resync || outbox.wants_tick(broker, fallback_size, now_ms) {
                let input = TickInput {
                    broker,
                    fallback_size,
                    slice,
                    now_ms,
                };
                if !self.maintain(ctx, key, &mut outbox, input, resync) {
                    // A refused write: in a cluster the slot may have moved.
                    placement.recheck();
                }
            }
        }
        outbox.release_spare();
        let idle = outbox.is_idle();
        if idle {
            // After a burst, keep only what a trickle of events needs (no allocation per step).
            let mut inbox = self.inbox.lock();
            if inbox.is_empty() && inbox.capacity() > INBOX_IDLE {
                inbox.shrink_to(INBOX_IDLE);
            }
        }
        shared.stats.observe(&outbox);
        self.log_drops(0, fallback_size);
        idle && !had_news
    }

    /// In a cluster, follows the slots this node serves (see [`Placement`]). Returns whether
    /// the list's length must be read again.
    fn place_list(
        &self,
        ctx: &Context,
        placement: &mut Placement,
        outbox: &mut Outbox,
        slice: usize,
    ) -> bool {
        self.own_io.store(true, Relaxed);
        let step = placement.step(ctx, slice);
        self.own_io.store(false, Relaxed);
        match step {
            Ok(step) => {
                if step.appended > 0 {
                    outbox.list_appended(step.appended);
                    Stats::add(&self.shared.stats.adopted, step.appended);
                    self.shared.notify();
                }
                if step.more {
                    wake_main();
                }
                step.moved_list
            }
            Err(e) => {
                placement.log_error(&e);
                false
            }
        }
    }

    /// Returns false when a list command failed (logged).
    fn maintain(
        &self,
        ctx: &Context,
        key: &[u8],
        outbox: &mut Outbox,
        input: TickInput,
        resync: bool,
    ) -> bool {
        let shared = &*self.shared;
        let cpu_before = thread_cpu_time();
        self.own_io.store(true, Relaxed);
        let mut list = RedisList::new(ctx, key);
        if resync {
            use crate::core::outbox::ListStore;
            match list.len() {
                Ok(n) => outbox.set_list_len(n),
                Err(e) => log::warning(&e),
            }
        }
        let report = outbox.tick(&mut list, input);
        self.own_io.store(false, Relaxed);
        let took = thread_cpu_time().saturating_sub(cpu_before).as_micros() as u64;
        shared.stats.step_max_us.fetch_max(took, Relaxed);
        Stats::add(&shared.stats.spilled, report.spilled);
        Stats::add(&shared.stats.refilled, report.refilled);
        Stats::add(&shared.stats.dropped, report.dropped);
        self.log_drops(report.dropped, input.fallback_size);
        if let Some(e) = &report.error {
            log::warning(e);
            return false;
        } else if report.more {
            wake_main();
        }
        // The publisher cares when work appears (refill, a backlog found) or vanishes (drops).
        if report.refilled > 0 || report.dropped > 0 || (resync && outbox.has_work()) {
            shared.notify();
        }
        true
    }

    fn log_drops(&self, dropped: u64, fallback_size: i64) {
        let mut drops = self.drops.lock();
        if dropped == 0 && drops.idle() {
            return;
        }
        if let Some(n) = drops.note(dropped, std::time::Instant::now()) {
            log::warning(&if fallback_size < 0 {
                format!(
                    "dropped {n} events: the broker cannot take them and there is no fallback \
                     list (FALLBACK_SIZE {fallback_size}); further drops are summed every 10 s"
                )
            } else {
                format!(
                    "dropped {n} events, the oldest: the fallback list is capped at \
                     FALLBACK_SIZE {fallback_size}; further drops are summed every 10 s"
                )
            });
        }
    }

    /// The keyspace callback's work: filter, encode, enqueue. No lock that another thread can
    /// hold (the inbox and the settings are written on this thread only). The database and
    /// the event name are only fetched (`details`) for a key that is forwarded: most events
    /// of a filtering node stop at the mask. Costs per event are in docs/profiles/README.md.
    /// Returns whether the event is forwarded.
    fn on_event<'a>(&self, key: &[u8], details: impl FnOnce() -> (i64, &'a [u8])) -> bool {
        let shared = &*self.shared;
        if !shared.master.load(Relaxed) || self.loading.load(Relaxed) || self.own_io.load(Relaxed) {
            return false;
        }
        MainThreadCounters::bump(&shared.stats.main.seen);
        if Placement::is_fallback_key(key) || !shared.masks_match(key) {
            return false;
        }
        MainThreadCounters::bump(&shared.stats.main.matched);
        let (db, event) = details();
        // Only this callback moves the sequence, and Redis runs it on one thread at a time
        // (the main thread, or one holding the GIL): no locked read-modify-write needed.
        let seq = SEQ.load(Relaxed) + 1;
        SEQ.store(seq, Relaxed);
        // Whole seconds, as `time(2)` gives them: libc's vDSO reads the kernel's coarse clock,
        // without the clock read and conversions of `SystemTime::now`.
        // SAFETY: `time` with a null pointer only returns the value.
        let now = unsafe { libc::time(std::ptr::null_mut()) };
        // The coarse clock lags the precise one by at most a tick.
        debug_assert!(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .is_ok_and(|d| d.as_secs().abs_diff(now as u64) <= 1));
        let event = Event {
            id: Some(EventId {
                run_id: self.run_id,
                seq,
            }),
            timestamp: u32::try_from(now).unwrap_or(0),
            body: event::body(db, event, key),
            list_copy: 0,
        };
        self.inbox.lock().push(event);
        true
    }

    /// Drops the event-loop hook once nothing has been to do for [`UNHOOK_AFTER_MS`]; new work
    /// subscribes it again. Only on a single node: a cluster node looks at its slots every
    /// second. `step_quiet`: what [`Module::tick`] returned (the cheap answer while events
    /// flow); the full check follows only when it is true.
    fn unhook_when_quiet(&self, step_quiet: bool) {
        if self.cluster {
            return;
        }
        if !step_quiet || !self.quiet() {
            self.quiet_since_ms.store(0, Relaxed);
            return;
        }
        let now = crate::state::stats::now_ms();
        match self.quiet_since_ms.load(Relaxed) {
            0 => self.quiet_since_ms.store(now, Relaxed),
            since if now.saturating_sub(since) >= UNHOOK_AFTER_MS => hook::unhook_soon(on_unhook),
            _ => {}
        }
    }

    /// Nothing waits anywhere (inbox, memory, list, in flight) and no state is to catch up:
    /// until new work arrives, which subscribes the hook again, a step would do nothing.
    fn quiet(&self) -> bool {
        !self.loading.load(Relaxed)
            && !self.demoted.load(Relaxed)
            && !self.resync_list.load(Relaxed)
            && self.inbox.lock().is_empty()
            && self.drops.lock().idle()
            && self.shared.outbox.try_lock().is_some_and(|o| o.is_idle())
    }
}

/// CPU time of the calling thread: what a step costs, without the time the scheduler gave the
/// CPU to others.
fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs a maintenance step soon, from any thread: a one-shot event-loop callback wakes Redis
/// out of its sleep and subscribes the event-loop hook, which does the work before the loop
/// sleeps again. The callback stays valid after MODULE UNLOAD (the library stays mapped, see
/// [`pin_library`]) and then does nothing.
pub fn wake_main() {
    // SAFETY: Redis's API pointer, set at load; the callback takes no data.
    unsafe {
        if let Some(add) = raw::RedisModule_EventLoopAddOneShot {
            add(Some(on_wake), std::ptr::null_mut());
        }
    }
}

extern "C" fn on_wake(_data: *mut c_void) {
    if let Some(m) = current() {
        let _ = hook::hook(m.detached.0, Some(on_event_loop));
    }
}

extern "C" fn on_unhook(_data: *mut c_void) {
    if let Some(m) = current() {
        let quiet = m.quiet();
        hook::unhook(m.detached.0, quiet);
        m.quiet_since_ms.store(0, Relaxed);
    }
}

/// Keeps this library mapped after MODULE UNLOAD: Redis 7.0 keeps our cluster message receiver
/// (it cannot delete one), and [`SEQ`] must go on across a reload under the same run id.
fn pin_library() -> Result<(), String> {
    // SAFETY: dladdr/dlopen with a pointer into this library and the path the loader reports.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(pin_library as *const c_void, &mut info) == 0 || info.dli_fname.is_null() {
            return Err("cannot find the module's own path (dladdr)".into());
        }
        let handle = libc::dlopen(
            info.dli_fname,
            libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
        );
        if handle.is_null() {
            return Err("cannot pin the module in memory (dlopen RTLD_NODELETE)".into());
        }
        // The extra reference only carried the flag; NODELETE keeps the library mapped.
        libc::dlclose(handle);
    }
    Ok(())
}

fn read_run_id(ctx: &Context) -> Option<RunId> {
    let info = ctx.call("INFO", &["server"]).ok()?;
    let text = match info {
        redis_module::RedisValue::SimpleString(s) | redis_module::RedisValue::BulkString(s) => {
            s.into_bytes()
        }
        redis_module::RedisValue::StringBuffer(b) => b,
        redis_module::RedisValue::VerbatimString((_, b)) => b,
        _ => return None,
    };
    text.split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"run_id:"))
        .and_then(|hex| RunId::from_hex(hex.trim_ascii()))
}

fn subscribe(ctx: &Context, events: i32) -> Result<(), String> {
    let server_events: [(u64, raw::RedisModuleEventCallback); 3] = [
        (
            raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
            Some(on_role_changed),
        ),
        (raw::REDISMODULE_EVENT_LOADING, Some(on_loading)),
        (raw::REDISMODULE_EVENT_SHUTDOWN, Some(on_shutdown)),
    ];
    // SAFETY: FFI registration with the load context and callbacks defined below.
    unsafe {
        let sub = raw::RedisModule_SubscribeToKeyspaceEvents.ok_or("no keyspace event API")?;
        if sub(ctx.ctx, events, Some(on_keyspace_event)) != raw::REDISMODULE_OK as c_int {
            return Err("cannot subscribe to keyspace events".into());
        }
        let sub = raw::RedisModule_SubscribeToServerEvent.ok_or("no server event API")?;
        for (id, callback) in server_events {
            let event = raw::RedisModuleEvent { id, dataver: 1 };
            if sub(ctx.ctx, event, callback) != raw::REDISMODULE_OK as c_int {
                return Err(format!(
                    "cannot subscribe to server event {id} (Redis 7.0 or newer needed)"
                ));
            }
        }
    }
    // The first step reads the list's length; later ones come with work (see `hook`).
    if !hook::hook(ctx.ctx, Some(on_event_loop)) {
        return Err("cannot subscribe to the event loop (Redis 7.0 or newer needed)".into());
    }
    Ok(())
}

extern "C" fn on_keyspace_event(
    ctx: *mut raw::RedisModuleCtx,
    _type: c_int,
    event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    const OK: c_int = raw::REDISMODULE_OK as c_int;
    // The read guard, not a clone of the Arc: nothing to count on this hot path.
    let module = MODULE.read();
    let Some(module) = module.as_ref() else {
        return OK;
    };
    // SAFETY: Redis passes the key's string, alive for the duration of this call; the API
    // pointer is set at load.
    let key = unsafe {
        let Some(ptr_len) = raw::RedisModule_StringPtrLen else {
            return OK;
        };
        let mut len = 0;
        let ptr = ptr_len(key, &mut len);
        if ptr.is_null() {
            return OK;
        }
        std::slice::from_raw_parts(ptr.cast::<u8>(), len)
    };
    let forwarded = module.on_event(key, || {
        // SAFETY: Redis passes a live context and a NUL-terminated event name for the duration
        // of this call.
        unsafe {
            (
                i64::from(raw::RedisModule_GetSelectedDb.map_or(0, |f| f(ctx))),
                CStr::from_ptr(event).to_bytes(),
            )
        }
    });
    if forwarded && !hook::is_hooked() {
        let _ = hook::hook(ctx, Some(on_event_loop));
    }
    OK
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
    if let Some(m) = current() {
        if m.loading.load(Relaxed) {
            return;
        }
        let mut step_quiet = true;
        if m.shared.master.load(Relaxed) {
            step_quiet = m.tick(&Context::new(ctx), SLICE);
        } else if m.demoted.load(Relaxed) {
            match m.shared.outbox.try_lock() {
                Some(mut outbox) => {
                    outbox.forget_list();
                    m.demoted.store(false, Relaxed);
                }
                None => wake_main(),
            }
        }
        m.unhook_when_quiet(step_quiet);
    }
}

extern "C" fn on_role_changed(
    _ctx: *mut raw::RedisModuleCtx,
    _e: raw::RedisModuleEvent,
    sub: u64,
    _d: *mut c_void,
) {
    if let Some(m) = current() {
        let master = sub == raw::REDISMODULE_EVENT_REPLROLECHANGED_NOW_MASTER;
        m.shared.master.store(master, Relaxed);
        m.demoted.store(!master, Relaxed);
        m.resync_list.store(true, Relaxed);
        // Look at the slots afresh: a promoted replica takes over its master's list, and any
        // other list left in the slots it now serves.
        m.placement.lock().reset();
        m.shared.notify();
        wake_main();
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
    if let Some(m) = current() {
        let ended = sub == raw::REDISMODULE_SUBEVENT_LOADING_ENDED
            || sub == raw::REDISMODULE_SUBEVENT_LOADING_FAILED;
        m.loading.store(!ended, Relaxed);
        if ended {
            m.resync_list.store(true, Relaxed);
            wake_main();
        }
    }
}

/// Redis fires this after writing its AOF and RDB for the last time.
extern "C" fn on_shutdown(
    _ctx: *mut raw::RedisModuleCtx,
    _e: raw::RedisModuleEvent,
    _sub: u64,
    _d: *mut c_void,
) {
    let module = take_module();
    if let Some(m) = module {
        m.shutdown();
    }
}
