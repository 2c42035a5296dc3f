//! Load, unload and shutdown: what `MODULE LOAD`, `MODULE UNLOAD` and the end of Redis do to
//! the module, and the process facts they rely on (the library stays mapped, the run id).

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis_module::{raw, Context, ContextFlags, RedisGILGuard, RedisString, Status};

use crate::core::classes::{self, ServerClasses};
use crate::core::flush::Rescue;
use crate::core::journal::Inbox;
use crate::core::limits::Throttle;
use crate::core::outbox::{Broker, Outbox};
use crate::core::placement::Placement;
use crate::core::policy::{SHUTDOWN_FLUSH, SUMMARY_EVERY};
use crate::core::server::ServerInfo;
use crate::core::settings;
use crate::core::value::PendingOld;
use crate::publisher;
use crate::redis::detached::Detached;
use crate::redis::runtime::{self, HotSettings, Module, STASH};
use crate::redis::{
    callbacks, cluster_bus, config, fallback, hook, info, journal, log, panic_log, values,
};
use crate::state::shared::Shared;

/// `MODULE LOAD`: reads the arguments and configs, starts the publisher, subscribes.
pub fn init(ctx: &Context, argv: &[RedisString]) -> Status {
    log::init(ctx.ctx);
    panic_log::install();
    match load(ctx, argv) {
        Ok(module) => {
            runtime::install(ctx, module);
            // A backlog already waiting in the list starts the connection at the next step.
            hook::wake_main();
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

/// `MODULE UNLOAD`.
pub fn deinit(ctx: &Context) -> Status {
    if let Some(module) = runtime::take(ctx) {
        module.unload();
        log::notice("unloaded");
    }
    // Redis drops our listeners with the module.
    hook::forget();
    journal::forget();
    values::forget_subscription();
    log::release();
    Status::Ok
}

fn load(ctx: &Context, argv: &[RedisString]) -> Result<Arc<Module>, String> {
    // First: a config applied while loading may queue a one-shot callback into this library
    // (`hook::wake_main`); if the load then fails, Redis would otherwise unmap the library
    // under it, and the next loop iteration would jump into nothing.
    pin_library()?;
    let server = read_server(ctx).ok_or("cannot read run_id from INFO server")?;
    journal::note_server(&server.to_string());
    let run_id = server.run_id;
    let classes = ServerClasses {
        flags: server_classes(),
        server: server.to_string(),
    };
    let args: Vec<&[u8]> = argv.iter().map(RedisString::as_slice).collect();
    let (events, settings) =
        settings::parse_load_args(&args, &classes).map_err(|e| e.to_string())?;
    let shared = Arc::new(Shared::new(
        settings,
        config::queue_capacity(),
        log::REDIS_LOG,
    ));
    let events = config::register(ctx, events, &classes, &shared)?;
    let flags = ctx.get_flags();
    let cluster = flags.contains(ContextFlags::CLUSTER);
    let detached =
        Detached::new(ctx.ctx).ok_or("no detached context (Redis 7.0 or newer needed)")?;
    shared
        .master
        .store(!flags.contains(ContextFlags::SLAVE), Relaxed);
    let hot = RedisGILGuard::new(HotSettings::stale(shared.settings()));
    let module = Arc::new(Module {
        shared,
        publisher: Mutex::new(None),
        run_id,
        events,
        placement: Mutex::new(Placement::new(cluster)),
        loading: AtomicBool::new(flags.contains(ContextFlags::LOADING)),
        demoted: AtomicBool::new(false),
        own_io: AtomicBool::new(false),
        inbox: Mutex::new(Inbox::default()),
        journal_buf: Mutex::new((Vec::new(), Vec::new())),
        resync_list: AtomicBool::new(true),
        drops: Mutex::new(Throttle::new(SUMMARY_EVERY)),
        detached,
        cluster,
        quiet_since_ms: AtomicU64::new(0),
        rescue: Mutex::new(Rescue::default()),
        list_evicted: AtomicBool::new(false),
        list_checked_ms: AtomicU64::new(0),
        memory_drops: Mutex::new(Throttle::new(SUMMARY_EVERY)),
        pending_old: Mutex::new(PendingOld::default()),
        snapshot: Mutex::new(None),
        scan_cursor: Mutex::new(None),
        hot,
    });
    if !info::register(ctx.ctx) {
        return Err("cannot register the INFO section".into());
    }
    callbacks::subscribe(ctx, events, Some(on_shutdown))?;
    if cluster {
        let started = Instant::now();
        let checked = fallback::check_key_slots()?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        log::notice(&format!("slots: {checked} (in {ms:.1} ms)"));
        cluster_bus::listen(ctx);
    }
    let name = format!("{} {}", publisher::APP_ID, run_id.to_hex());
    let handle = publisher::spawn(module.shared.clone(), name, run_id, hook::wake_main)
        .map_err(|e| format!("cannot start the publisher thread: {e}"))?;
    *module.publisher.lock() = Some(handle);
    if let Some(mut stash) = STASH.lock().take() {
        stash.hand_over(&mut module.shared.outbox.lock());
    }
    let settings = module.shared.settings();
    log::notice(&format!(
        "loaded into {server} (classes {}): event classes {}, broker {}, exchange '{}', \
         routing key '{}', masks {}",
        classes.describe(),
        classes::describe(events),
        module.shared.describe_endpoints(),
        settings.exchange,
        settings.routing_key,
        settings.masks
    ));
    Ok(module)
}

/// Redis fires this after writing its AOF and RDB for the last time.
extern "C" fn on_shutdown(
    ctx: *mut raw::RedisModuleCtx,
    _e: raw::RedisModuleEvent,
    _sub: u64,
    _d: *mut c_void,
) {
    if let Some(m) = runtime::take(&Context::new(ctx)) {
        m.shutdown();
    }
}

impl Module {
    /// Stops the publisher; it gives back what it had in flight.
    fn stop_publisher(&self) {
        self.shared.stop.store(true, Relaxed);
        self.shared.notify();
        if let Some(handle) = self.publisher.lock().take() {
            // A panic there is caught and logged by the publisher's supervisor.
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
        let until = Instant::now() + SHUTDOWN_FLUSH;
        while Instant::now() < until && self.shared.link.broker() == Broker::Ready {
            let outbox = self.shared.outbox.lock();
            // Behind a non-empty list nothing more can go without refills, which need this thread.
            if outbox.memory_len() == 0 || !outbox.has_ready() && outbox.in_flight() == 0 {
                break;
            }
            drop(outbox);
            self.shared.notify();
            std::thread::sleep(Duration::from_millis(5));
        }
        self.stop_publisher();
        let left = self.shared.outbox.lock().memory_len();
        if left > 0 {
            log::warning(&format!(
                "shutdown: {left} events in memory were not confirmed"
            ));
        }
    }
}

/// Keeps this library mapped after MODULE UNLOAD: Redis 7.0 keeps our cluster message receiver
/// (it cannot delete one), and `runtime::SEQ` must go on across a reload under the same run id.
pub fn pin_library() -> Result<(), String> {
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

/// The event classes this server has (`RedisModule_GetKeyspaceNotificationFlagsAll`, 7.0+).
fn server_classes() -> i32 {
    // SAFETY: a server API without arguments; its pointer is checked before the call.
    unsafe { raw::RedisModule_GetKeyspaceNotificationFlagsAll.map_or(classes::ALL, |f| f()) }
}

fn read_server(ctx: &Context) -> Option<ServerInfo> {
    let info = ctx.call("INFO", &["server"]).ok()?;
    let text = match info {
        redis_module::RedisValue::SimpleString(s) | redis_module::RedisValue::BulkString(s) => {
            s.into_bytes()
        }
        redis_module::RedisValue::StringBuffer(b) => b,
        redis_module::RedisValue::VerbatimString((_, b)) => b,
        _ => return None,
    };
    ServerInfo::parse(&text)
}
