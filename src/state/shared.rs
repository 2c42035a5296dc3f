//! The state the Redis main thread and the publisher thread share.
//!
//! The outbox lock is held for microseconds by the publisher (take or give back a batch) and for
//! one bounded slice by the main thread's maintenance step, which only ever try-locks it: the
//! main thread never waits for the publisher.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::core::broker_options::{BrokerOptions, TlsOptions};
use crate::core::outbox::Outbox;
use crate::core::policy::{REFILL_BELOW, SPILL_DELAY, TRIM_DELAY};
use crate::core::settings::Settings;
use crate::core::uri::Endpoint;
use crate::state::log::Log;
use crate::state::stats::{Link, Stats};

pub struct Shared {
    pub log: Log,
    pub outbox: Mutex<Outbox>,
    /// The publisher waits here for work or for a change of plan.
    pub wake: Condvar,
    settings: RwLock<Arc<Settings>>,
    /// Bumped by every change of `settings`: lets the keyspace callback keep its own copy
    /// (`Module::masks_match`) and read this lock only after a change.
    settings_generation: AtomicU64,
    /// The broker options among the module configs (URIs, password, TLS).
    broker: RwLock<BrokerOptions>,
    /// Bumped by every change of `broker`: the publisher's cheap "did anything change?".
    broker_generation: AtomicU64,
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
    /// A snapshot waits for room in the memory queue: the publisher wakes the main thread
    /// once it has settled a batch.
    pub room_wanted: AtomicBool,
    /// The main thread's last step found nothing for itself to do (a single node, the broker
    /// ready, no list, `durability memory`, no values, no snapshot or flush in progress): the
    /// keyspace callback may hand events to the outbox itself (`Module::hand_over`). Written
    /// by the step only.
    pub direct: AtomicBool,
    /// The publisher is connected and looks at the outbox at least every
    /// [`POLL_EVERY`](crate::core::policy::POLL_EVERY) without being woken: an event handed
    /// over directly needs no wake-up. Changed under the outbox lock.
    pub publisher_polls: AtomicBool,
}

impl Shared {
    pub fn new(settings: Settings, queue_capacity: usize, log: Log) -> Shared {
        let mut outbox = Outbox::new(queue_capacity, REFILL_BELOW);
        outbox.set_spill_delay(SPILL_DELAY);
        outbox.set_trim_delay(TRIM_DELAY);
        Shared {
            log,
            outbox: Mutex::new(outbox),
            wake: Condvar::new(),
            settings: RwLock::new(Arc::new(settings)),
            settings_generation: AtomicU64::new(0),
            broker: RwLock::new(BrokerOptions::default()),
            broker_generation: AtomicU64::new(0),
            stats: Stats::default(),
            link: Link::default(),
            master: AtomicBool::new(true),
            enabled: AtomicBool::new(true),
            eager: AtomicBool::new(false),
            reconnect_requests: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            room_wanted: AtomicBool::new(false),
            direct: AtomicBool::new(false),
            publisher_polls: AtomicBool::new(false),
        }
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.settings.read().clone()
    }

    /// Reads the settings under the lock, without cloning the `Arc` (the step's reads: an
    /// `Arc` clone and drop are two locked instructions on a line other threads share).
    #[inline]
    pub fn read_settings<R>(&self, read: impl FnOnce(&Settings) -> R) -> R {
        read(&self.settings.read())
    }

    /// Replaces the settings as a whole: readers see the old or the new ones, never a mix.
    pub fn set_settings(&self, settings: Settings) {
        *self.settings.write() = Arc::new(settings);
        self.settings_generation.fetch_add(1, Ordering::Release);
        self.notify();
    }

    /// Changes with every [`Shared::set_settings`].
    #[inline]
    pub fn settings_generation(&self) -> u64 {
        self.settings_generation.load(Ordering::Acquire)
    }

    /// Reads the broker options.
    pub fn broker<R>(&self, read: impl FnOnce(&BrokerOptions) -> R) -> R {
        read(&self.broker.read())
    }

    /// Changes the broker options; the publisher, which may be waiting out a back-off,
    /// reconnects with the new values now.
    pub fn update_broker(&self, change: impl FnOnce(&mut BrokerOptions)) {
        change(&mut self.broker.write());
        self.broker_generation.fetch_add(1, Ordering::AcqRel);
        self.notify();
    }

    pub fn broker_generation(&self) -> u64 {
        self.broker_generation.load(Ordering::Acquire)
    }

    /// The brokers to try, in order: the settings' positional ones unless the configs say
    /// otherwise (see [`Settings::endpoints`]).
    pub fn endpoints(&self, settings: &Settings) -> Vec<Endpoint> {
        let b = self.broker.read();
        settings.endpoints(&b.uris, &b.password)
    }

    pub fn tls_options(&self) -> TlsOptions {
        self.broker.read().tls.clone()
    }

    /// The brokers as logs and INFO may show them: redacted, comma-separated.
    pub fn describe_endpoints(&self) -> String {
        self.endpoints(&self.settings())
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `connect`: (re)connect now and stay connected even with nothing to publish.
    pub fn request_connect(&self) {
        self.enabled.store(true, Relaxed);
        self.eager.store(true, Relaxed);
        self.reconnect_requests.fetch_add(1, Relaxed);
        self.notify();
    }

    /// `disconnect`: close the connection, no reconnect until `connect`. Spilling starts at
    /// the next event-loop step, not after a grace period.
    pub fn disable(&self) {
        self.enabled.store(false, Relaxed);
        self.eager.store(false, Relaxed);
        self.link.set(crate::core::link::LinkState::Disabled);
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

    /// The publisher stops polling (see `publisher_polls`); returns whether it did, in which
    /// case the main thread must be asked for a step: events in memory may wait for one.
    pub fn stop_polling(&self) -> bool {
        let _outbox = self.outbox.lock();
        self.publisher_polls.swap(false, Relaxed)
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
