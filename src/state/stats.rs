//! Counters and connection state, written by both threads without locks, read by `INFO`.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};

use parking_lot::Mutex;

use crate::core::link::{self, now_ms, LinkState};
use crate::core::outbox::{Broker, Outbox};

/// Counters only the main thread writes (the keyspace callback's), on a cache line of their
/// own: the publisher's counters next to them would make every event pay for cache-line
/// transfers between cores.
#[derive(Default)]
#[repr(align(128))]
pub struct MainThreadCounters {
    /// Keyspace events seen while this node publishes.
    pub seen: AtomicU64,
    /// Of those, events whose key matched a mask (entered the outbox).
    pub matched: AtomicU64,
}

impl MainThreadCounters {
    /// One more, without a locked instruction: only the main thread writes these.
    pub fn bump(counter: &AtomicU64) {
        counter.store(counter.load(Relaxed) + 1, Relaxed);
    }
}

#[derive(Default)]
pub struct Stats {
    pub main: MainThreadCounters,
    pub published: AtomicU64,
    pub confirmed: AtomicU64,
    pub nacked: AtomicU64,
    /// Confirmed but returned as unroutable (no queue bound).
    pub returned: AtomicU64,
    pub spilled: AtomicU64,
    pub refilled: AtomicU64,
    /// Moved into this node's list from a list left in a slot it took over (cluster).
    pub adopted: AtomicU64,
    pub dropped: AtomicU64,
    /// Of `dropped`, dropped because Redis was near `maxmemory`.
    pub dropped_memory: AtomicU64,
    /// Found missing from the list: deleted, renamed or trimmed by someone else.
    pub lost_external: AtomicU64,
    /// Lost with the list when Redis evicted it.
    pub lost_evicted: AtomicU64,
    /// Written to the journal with their write (`durability journal`).
    pub journaled: AtomicU64,
    /// Not journaled because the list write failed (they waited in memory instead).
    pub journal_failed: AtomicU64,
    pub connections: AtomicU64,
    /// Publisher sessions that ended in a panic (their batch was given back, see
    /// `publisher::supervise`).
    pub publisher_panics: AtomicU64,
    /// The longest maintenance step on the main thread, in microseconds of its CPU time.
    pub step_max_us: AtomicU64,
    // The outbox's sizes as of the last main-thread step, so that INFO never waits for it.
    pub queue_length: AtomicU64,
    pub in_flight: AtomicU64,
    pub fallback_length: AtomicU64,
    pub queue_capacity: AtomicU64,
    /// Bytes the events in memory take (in flight included), and their bound.
    pub queue_bytes: AtomicU64,
    pub queue_capacity_bytes: AtomicU64,
    /// Routing keys rendered from a template longer than 255 bytes, cut (issue 15).
    pub routing_keys_cut: AtomicU64,
    /// `snapshot` events emitted by the running snapshot, or by the last one.
    pub snapshot_keys: AtomicU64,
    pub snapshots_completed: AtomicU64,
    pub snapshots_cancelled: AtomicU64,
}

impl Stats {
    /// Records the outbox's sizes for INFO.
    pub fn observe(&self, outbox: &Outbox) {
        self.queue_length.store(outbox.memory_len() as u64, Relaxed);
        self.in_flight.store(outbox.in_flight() as u64, Relaxed);
        self.fallback_length.store(outbox.list_len(), Relaxed);
        self.queue_capacity.store(outbox.capacity() as u64, Relaxed);
        self.queue_bytes
            .store(outbox.memory_bytes() as u64, Relaxed);
        self.queue_capacity_bytes
            .store(outbox.capacity_bytes() as u64, Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Relaxed);
        }
    }
}

/// The connection state as the main thread sees it, to decide when events must spill.
pub struct Link {
    state: AtomicU8,
    /// Milliseconds (see [`now_ms`]) since the broker stopped being usable, 0 while it is.
    unusable_since: AtomicU64,
    /// Milliseconds since the batch in flight was sent, 0 when none is.
    batch_since: AtomicU64,
    last_error: Mutex<String>,
    /// The broker in use or being tried, redacted (`amqps://user@host:port/vhost`).
    endpoint: Mutex<String>,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            state: AtomicU8::new(LinkState::Idle as u8),
            unusable_since: AtomicU64::new(0),
            batch_since: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
            endpoint: Mutex::new(String::new()),
        }
    }
}

impl Link {
    pub fn state(&self) -> LinkState {
        LinkState::from_u8(self.state.load(Relaxed))
    }

    /// A new state. Connecting or failing starts the clock of [`Link::broker`]; only
    /// [`Link::mark_healthy`] or going idle stops it: a connection that opens and fails again
    /// at once is no better than none.
    pub fn set(&self, state: LinkState) {
        self.state.store(state as u8, Relaxed);
        match state {
            LinkState::Idle => self.mark_healthy(),
            LinkState::Connected => {}
            _ => {
                let _ = self
                    .unusable_since
                    .compare_exchange(0, now_ms(), Relaxed, Relaxed);
            }
        }
    }

    /// The broker takes events: confirms arrived, or nothing waits.
    pub fn mark_healthy(&self) {
        self.unusable_since.store(0, Relaxed);
    }

    pub fn set_error(&self, error: String) {
        *self.last_error.lock() = error;
    }

    pub fn last_error(&self) -> String {
        self.last_error.lock().clone()
    }

    /// Records the broker in use or being tried (never with its password).
    pub fn set_endpoint(&self, endpoint: String) {
        *self.endpoint.lock() = endpoint;
    }

    pub fn endpoint(&self) -> String {
        self.endpoint.lock().clone()
    }

    pub fn batch_sent(&self, sent: bool) {
        self.batch_since
            .store(if sent { now_ms() } else { 0 }, Relaxed);
    }

    /// What the broker allows now (see [`link::broker_at`]).
    pub fn broker(&self) -> Broker {
        self.broker_at(now_ms())
    }

    /// [`Link::broker`] at `now` (from [`now_ms`]).
    pub fn broker_at(&self, now: u64) -> Broker {
        link::broker_at(
            self.state(),
            self.unusable_since.load(Relaxed),
            self.batch_since.load(Relaxed),
            now,
        )
    }
}
