//! The state the Redis main thread and the publisher thread share.
//!
//! The outbox lock is held for microseconds by the publisher (take or give back a batch) and for
//! one bounded slice by the main thread's maintenance step, which only ever try-locks it: the
//! main thread never waits for the publisher.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::core::outbox::Outbox;
use crate::core::settings::Settings;
use crate::state::stats::{Link, Stats};

/// Events published per batch: written in one go, their confirms read together.
pub const BATCH: usize = 1000;

/// While the broker is away, events spill to the list together after waiting this long in
/// memory (or at once when memory is full): Redis's own cron wakes the event loop every 100 ms,
/// so they reach the list within about 0.2 s (the README promises about a second).
pub const SPILL_DELAY: Duration = Duration::from_millis(100);

pub struct Shared {
    pub outbox: Mutex<Outbox>,
    /// The publisher waits here for work or for a change of plan.
    pub wake: Condvar,
    settings: RwLock<Arc<Settings>>,
    pub stats: Stats,
    pub link: Link,
    /// This node is a master: only masters publish new events or hold an idle connection.
    pub master: AtomicBool,
    /// Cleared by `disconnect`, set by `connect`.
    pub enabled: AtomicBool,
    /// Set by `connect`: hold a connection even with nothing to publish.
    pub eager: AtomicBool,
    /// Bumped by `connect` to force a new connection.
    pub reconnect_requests: AtomicU64,
    pub stop: AtomicBool,
}

impl Shared {
    pub fn new(settings: Settings) -> Shared {
        let mut outbox = Outbox::new(crate::redis::config::queue_capacity(), 2 * BATCH);
        outbox.set_spill_delay(SPILL_DELAY);
        Shared {
            outbox: Mutex::new(outbox),
            wake: Condvar::new(),
            settings: RwLock::new(Arc::new(settings)),
            stats: Stats::default(),
            link: Link::default(),
            master: AtomicBool::new(true),
            enabled: AtomicBool::new(true),
            eager: AtomicBool::new(false),
            reconnect_requests: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.settings.read().clone()
    }

    /// Whether a key matches the current masks (the keyspace callback's filter: no `Arc` clone).
    pub fn masks_match(&self, key: &[u8]) -> bool {
        self.settings.read().masks.matches(key)
    }

    /// Replaces the settings as a whole: readers see the old or the new ones, never a mix.
    pub fn set_settings(&self, settings: Settings) {
        *self.settings.write() = Arc::new(settings);
        self.notify();
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Relaxed)
    }

    /// The publisher should hold a connection now. A replica only connects to send what it
    /// still holds from its time as a master.
    pub fn wants_connection(&self) -> bool {
        self.enabled.load(Relaxed)
            && !self.stopping()
            && (self.eager.load(Relaxed) && self.master.load(Relaxed)
                || self.outbox.lock().has_work())
    }

    /// Wakes the publisher if it waits.
    pub fn notify(&self) {
        self.wake.notify_all();
    }

    /// Sleeps up to `timeout` unless notified first.
    pub fn wait(&self, timeout: Duration) {
        let mut outbox = self.outbox.lock();
        if !self.stopping() {
            self.wake.wait_for(&mut outbox, timeout);
        }
    }
}
