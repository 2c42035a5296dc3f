//! The loaded module: its state, and the statics that outlive a load (the library stays mapped
//! after MODULE UNLOAD, see `lifecycle::pin_library`). The bottom of the Redis shell: the
//! other files reach the running module through [`current`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use redis_module::{Context, RedisGILGuard};

use crate::core::event::{self, Event, EventId, RunId};
use crate::core::flush::Rescue;
use crate::core::journal::Inbox;
use crate::core::limits::Throttle;
use crate::core::outbox::Outbox;
use crate::core::placement::Placement;
use crate::core::settings::Settings;
use crate::core::snapshot::Snapshot;
use crate::core::value::{Data, PendingOld};
use crate::redis::detached::Detached;
use crate::redis::scan::ScanCursor;
use crate::state::shared::Shared;

pub struct Module {
    pub shared: Arc<Shared>,
    pub publisher: Mutex<Option<JoinHandle<()>>>,
    pub run_id: RunId,
    pub events: i32,
    /// Where the fallback list lives (main thread only).
    pub placement: Mutex<Placement>,
    // Main-thread state kept in atomics, updated by server events: the keyspace callback reads
    // them instead of asking Redis for its context flags on every event. Whether this node is
    // a master is in `shared.master`: the publisher reads it too.
    pub loading: AtomicBool,
    /// Set when this node became a replica: the next step drops copies of the list's items.
    pub demoted: AtomicBool,
    /// Set while the module itself writes the fallback list: those events are not forwarded
    /// (see `step::OwnWrites`).
    pub own_io: AtomicBool,
    /// New events since the last event-loop step. Only the main thread touches it, so the
    /// keyspace callback never waits for the publisher (which could be off the CPU while
    /// holding the outbox).
    pub inbox: Mutex<Inbox>,
    /// The journal's write buffer: items and their lengths (`journal`; main thread only).
    pub journal_buf: Mutex<(Vec<u8>, Vec<usize>)>,
    /// The list's length must be read again (after loading, or a promotion).
    pub resync_list: AtomicBool,
    /// Drops are logged when they start, then summed at most every 10 s (main thread).
    pub drops: Mutex<Throttle>,
    /// For the one-shot callbacks, which Redis calls without a context.
    pub detached: Detached,
    pub cluster: bool,
    /// Since when (ms) the event-loop hook has found nothing to do; 0 while there is work.
    pub quiet_since_ms: AtomicU64,
    /// The backlog read out of the list while a FLUSHALL, FLUSHDB or SWAPDB runs, to be put
    /// back at the next step (see `flushes`). Main thread only.
    pub rescue: Mutex<Rescue>,
    /// Redis evicted the list (its `evicted` event): the next step counts what was lost.
    pub list_evicted: AtomicBool,
    /// When (ms) the list's length was last compared with the outbox's count.
    pub list_checked_ms: AtomicU64,
    /// Events dropped near maxmemory: logged when drops start, then summed every 10 s.
    pub memory_drops: Mutex<Throttle>,
    /// Old values (`payload value`) captured by the `Key` event, waiting for their keyspace
    /// event (see `values`). Main thread only.
    pub pending_old: Mutex<PendingOld>,
    /// The running snapshot, if any (`snapshot`; main thread only).
    pub snapshot: Mutex<Option<Snapshot>>,
    /// Where the running snapshot's scan of its current database is.
    pub scan_cursor: Mutex<Option<ScanCursor>>,
    /// The keyspace callback's own copy of the settings (see [`Module::masks_match`]).
    pub hot: RedisGILGuard<HotSettings>,
}

/// The settings as of a generation of `Shared::set_settings`.
pub struct HotSettings {
    generation: u64,
    settings: Arc<Settings>,
}

impl HotSettings {
    #[cold]
    #[inline(never)]
    fn refresh(&mut self, shared: &Shared, generation: u64) {
        self.generation = generation;
        self.settings = shared.settings();
    }

    /// A copy that the first look replaces.
    pub fn stale(settings: Arc<Settings>) -> HotSettings {
        HotSettings {
            generation: u64::MAX,
            settings,
        }
    }
}

impl Module {
    /// Whether `key` passes the masks: the keyspace callback's filter (and the `Key` event's),
    /// from its own copy of the settings, taken again only after a change. No lock per event:
    /// Redis runs these callbacks under its GIL, as it does every command that changes the
    /// settings (two `RwLock` reads, of the module and of the settings, cost about 35 Ir).
    #[inline(always)]
    pub fn masks_match(&self, gil: &Context, key: &[u8]) -> bool {
        let mut hot = self.hot.lock(gil);
        let generation = self.shared.settings_generation();
        if hot.generation != generation {
            hot.refresh(&self.shared, generation);
        }
        hot.settings.masks.matches(key)
    }

    /// Only a master that is not loading data publishes.
    pub fn publishes(&self) -> bool {
        self.shared.master.load(Relaxed) && !self.loading.load(Relaxed)
    }

    /// Gives a new event its identity and puts it in the inbox (the flush and snapshot
    /// events, and keyspace events that cannot go straight to the outbox).
    // Always inlined: the keyspace callback's hot path, as it was before the flush
    // callbacks shared it (callgrind: a call here cost about 45 Ir per forwarded event).
    #[inline(always)]
    pub fn enqueue(&self, db: i64, event: &[u8], key: &[u8]) {
        self.enqueue_with(db, event, key, None);
    }

    /// [`Module::enqueue`] with the captured values of `payload value`.
    #[inline(always)]
    pub fn enqueue_with(&self, db: i64, event: &[u8], key: &[u8], data: Option<Box<Data>>) {
        let event = self.new_event(db, event, key, data);
        self.inbox.lock().push(event);
    }

    /// A new event with its identity. Only this one place moves the sequence, and Redis runs
    /// its callbacks on one thread at a time (the main thread, or one holding the GIL): no
    /// locked read-modify-write needed.
    #[inline(always)]
    pub fn new_event(&self, db: i64, event: &[u8], key: &[u8], data: Option<Box<Data>>) -> Event {
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
        Event {
            id: Some(EventId {
                run_id: self.run_id,
                seq,
            }),
            timestamp: u32::try_from(now).unwrap_or(0),
            body: event::body(db, event, key),
            list_copy: 0,
            data,
        }
    }

    /// Hands a keyspace event to the outbox itself when the last step found nothing for the
    /// main thread to do (`Shared::direct`), nothing waits in the inbox (which would be
    /// overtaken), the publisher looks at the outbox within a millisecond
    /// (`Shared::publisher_polls`: no wake-up, so no system call here) and the outbox has
    /// room. Otherwise the event goes to the inbox. Returns whether a step must hand it over:
    /// without one, the event-loop hook (about 1,300 instructions per loop iteration that
    /// Redis spends firing it) can stay unsubscribed while events flow.
    #[inline(always)]
    pub fn hand_over(&self, mut event: Event) -> bool {
        let shared = &*self.shared;
        let mut inbox = self.inbox.lock();
        if inbox.is_empty() && shared.direct.load(Relaxed) {
            // try_lock: the publisher may hold the outbox (for microseconds); never wait.
            if let Some(mut outbox) = shared.outbox.try_lock() {
                if shared.publisher_polls.load(Relaxed) {
                    match outbox.push_directly(event) {
                        Ok(()) => return false,
                        Err(back) => event = back,
                    }
                }
            }
        }
        inbox.push(event);
        true
    }

    /// Moves the events of the inbox to the outbox.
    pub fn move_inbox(&self, outbox: &mut Outbox) {
        let mut inbox = self.inbox.lock();
        inbox.drain_into(outbox);
        // A burst (a pipeline, a big MULTI) grows it: do not keep that capacity.
        if inbox.capacity() > 4096 {
            inbox.shrink_to(1024);
        }
    }
}

static MODULE: RwLock<Option<Arc<Module>>> = RwLock::new(None);

/// The running module again, for callbacks Redis runs under its GIL (the keyspace callback):
/// [`install`] and [`take`] run on the main thread too, so the GIL orders them, without a
/// lock of our own on the hot path.
static ON_MAIN: OnceLock<RedisGILGuard<Option<Arc<Module>>>> = OnceLock::new();

fn on_main() -> &'static RedisGILGuard<Option<Arc<Module>>> {
    ON_MAIN.get_or_init(RedisGILGuard::default)
}

/// Events in memory at MODULE UNLOAD, for the next load in this process.
pub static STASH: Mutex<Option<Outbox>> = Mutex::new(None);

/// Per-run sequence of `message_id`s. The library stays mapped across MODULE UNLOAD, so a
/// reload in the same process continues the sequence instead of reusing ids under the same
/// run id.
pub static SEQ: AtomicU64 = AtomicU64::new(0);

/// The running module, if any.
pub fn current() -> Option<Arc<Module>> {
    MODULE.read().clone()
}

/// The running module without a lock or an `Arc` clone, for a callback Redis runs under its
/// GIL (`gil`: its context). The keyspace callback's hot path.
#[inline]
pub fn with_running(gil: &Context, f: impl FnOnce(&Module)) {
    if let Some(module) = on_main().lock(gil).as_ref() {
        f(module);
    }
}

/// The module is running from now on (`gil`: the load's context).
pub fn install(gil: &Context, module: Arc<Module>) {
    *on_main().lock(gil) = Some(module.clone());
    *MODULE.write() = Some(module);
}

/// Forgets the module (callbacks then do nothing) and returns it. Nothing stays locked while
/// the caller goes on: the final spill raises keyspace events, whose callback looks again.
pub fn take(gil: &Context) -> Option<Arc<Module>> {
    on_main().lock(gil).take();
    MODULE.write().take()
}
