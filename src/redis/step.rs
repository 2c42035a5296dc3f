//! The main thread's maintenance step, run by the event-loop hook before Redis sleeps: hand new
//! events to the outbox and wake the publisher, follow the cluster's slots, spill or refill one
//! slice, and account for it. Every part is bounded ([`SLICE`] events, [`SCAN_SLICE`] slots),
//! and none waits for the publisher.
//!
//! [`SCAN_SLICE`]: crate::core::policy::SCAN_SLICE

use std::ffi::c_void;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use redis_module::{raw, Context};

use crate::core::journal::Durability;
use crate::core::link::now_ms;
use crate::core::outbox::{Broker, ListStore, Outbox, TickInput};
use crate::core::placement::Placement;
use crate::core::policy::{
    INBOX_IDLE, LIST_CHECK_EVERY_MS, MEMORY_FULL_QUEUE, MEMORY_FULL_RATIO, SLICE, UNHOOK_AFTER_MS,
};
use crate::core::snapshot;
use crate::redis::fallback::{OwnWrites, RedisKeyspace, RedisList};
use crate::redis::runtime::{self, Module};
use crate::redis::{config, hook, journal, log, values};
use crate::state::stats::Stats;

impl Module {
    /// One maintenance step; on a replica, only forget the list's copies once demoted.
    pub fn step(&self, ctx: &Context) {
        // `payload value`: the old values' event follows the option; what no event took
        // is dropped (its event was left out by EVENTS).
        values::sync_old_values(ctx.ctx, config::payload_value());
        self.pending_old.lock().clear();
        if self.loading.load(Relaxed) {
            self.shared.direct.store(false, Relaxed);
            return;
        }
        let mut quiet = true;
        if self.shared.master.load(Relaxed) {
            // First, before anything else touches the list: what a flush or swap took away
            // goes back (writes propagated after that command, see `flushes`).
            if self.put_back_list(ctx) {
                self.list_check_due();
            }
            // Before the tick, which hands what the slice emitted to the outbox at once.
            self.snapshot_slice(ctx);
            quiet = self.tick(ctx);
        } else {
            self.shared.direct.store(false, Relaxed);
            if self.demoted.load(Relaxed) {
                self.abandon_snapshot();
                match self.shared.outbox.try_lock() {
                    Some(mut outbox) => {
                        outbox.forget_list();
                        self.demoted.store(false, Relaxed);
                    }
                    None => hook::wake_main(),
                }
            }
        }
        self.unhook_when_quiet(quiet);
    }

    /// A master's step. If the publisher holds the outbox right now, it is retried at once
    /// from the next loop iteration. Returns whether the step was quiet: no new event, and the
    /// outbox idle at the end (nothing waiting, nothing in flight).
    fn tick(&self, ctx: &Context) -> bool {
        let shared = &*self.shared;
        let Some(mut outbox) = shared.outbox.try_lock() else {
            hook::wake_main();
            return false;
        };
        let now_ms = now_ms();
        let broker = shared.link.broker_at(now_ms);
        // 0. `durability`: switch modes, and journal what no job took (snapshot slices).
        self.sync_durability(ctx, &mut outbox);
        // 1. New events: to the outbox, and tell the publisher.
        let had_news = !self.inbox.lock().is_empty();
        if had_news {
            self.move_inbox(&mut outbox);
            shared.notify();
        }
        outbox.set_capacity(config::queue_capacity());
        outbox.set_capacity_bytes(config::queue_capacity_bytes());
        outbox.set_memory_full(memory_full());
        let fallback_size = shared.read_settings(|s| s.fallback_size);
        // 2. Where the list lives (a cluster's slots move).
        let mut resync = self.resync_list.swap(false, Relaxed);
        let mut placement = self.placement.lock();
        // A single node's list never moves: no placement step to call.
        if self.cluster {
            resync |= self.place_list(ctx, &mut placement, &mut outbox, now_ms);
        }
        // 3. Spill, refill, trim: one slice; first, whether someone else changed the list.
        if let Some(key) = placement.key() {
            if !resync {
                self.check_list(ctx, key, &mut outbox, now_ms);
            }
            if resync || outbox.wants_tick(broker, fallback_size, now_ms) {
                let input = TickInput {
                    broker,
                    fallback_size,
                    slice: SLICE,
                    now_ms,
                };
                if !self.maintain(ctx, key, &mut outbox, input, resync) {
                    // A refused write: in a cluster the slot may have moved.
                    placement.recheck();
                }
            }
        }
        // 4. Bookkeeping: give back burst memory, show the sizes, log drops.
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
        self.log_memory_drops(0);
        shared
            .direct
            .store(self.hands_over_directly(&outbox, broker), Relaxed);
        !had_news && self.needs_no_step(&outbox)
    }

    /// Nothing in memory waits for a step: it is empty, or handed over directly while the
    /// publisher polls, which asks for a step when it needs the main thread and when it stops
    /// polling (see `Session::publish`, `Shared::stop_polling`). Otherwise the hook stays
    /// until memory is empty.
    fn needs_no_step(&self, outbox: &Outbox) -> bool {
        outbox.is_idle()
            || self.shared.direct.load(Relaxed)
                && self.shared.publisher_polls.load(Relaxed)
                && outbox.list_len() == 0
    }

    /// Whether the keyspace callback may hand events to the outbox itself until the next step
    /// (see [`Module::hand_over`]): nothing the main thread would do for them. A cluster node
    /// steps every second anyway (slots), the journal writes from the inbox, values and the
    /// old values they take are sorted out at each step, and a snapshot or a flush's put-back
    /// orders its events through the inbox.
    fn hands_over_directly(&self, outbox: &Outbox, broker: Broker) -> bool {
        !self.cluster
            && broker == Broker::Ready
            && outbox.list_len() == 0
            && !journal::active()
            && self.shared.read_settings(|s| s.durability) == Durability::Memory
            && !config::payload_value()
            && self.snapshot.lock().is_none()
            && !self.rescue.lock().pending()
    }

    /// The running snapshot's slice (`snapshot`), if one runs, measured like the list's work
    /// (`main_thread_step_max_us`). It sees the memory queue as of now and its capacity as the
    /// tick applies it (less near maxmemory).
    fn snapshot_slice(&self, ctx: &Context) {
        if self.snapshot.lock().is_none() {
            return;
        }
        let shared = &*self.shared;
        let (memory_len, memory_bytes) = shared.outbox.try_lock().map_or_else(
            || {
                (
                    shared.stats.queue_length.load(Relaxed) as usize,
                    shared.stats.queue_bytes.load(Relaxed) as usize,
                )
            },
            |o| (o.memory_len(), o.memory_bytes()),
        );
        let capacity = config::queue_capacity();
        let capacity = if memory_full() {
            capacity.min(MEMORY_FULL_QUEUE)
        } else {
            capacity
        };
        // Keys counted at their value's cap (or an event's size under `payload key`).
        let per_key = if config::payload_value() {
            (config::value_max_bytes() + 256).min(snapshot::KEY_BYTES_MAX)
        } else {
            256
        };
        let bytes_room =
            snapshot::room_bytes(memory_bytes, config::queue_capacity_bytes(), per_key);
        self.timed(|| self.snapshot_step(ctx, memory_len, capacity, bytes_room));
    }

    /// Runs a slice of the list's or a snapshot's work and keeps its CPU time in
    /// `main_thread_step_max_us` if it is the longest yet.
    pub fn timed<T>(&self, work: impl FnOnce() -> T) -> T {
        let cpu_before = thread_cpu_time();
        let result = work();
        let took = thread_cpu_time().saturating_sub(cpu_before).as_micros() as u64;
        self.shared.stats.step_max_us.fetch_max(took, Relaxed);
        result
    }

    /// A node that is no longer a master does not go on with a snapshot: its `snapshot_end`
    /// never comes (a replica publishes nothing new).
    fn abandon_snapshot(&self) {
        if let Some(s) = self.snapshot.lock().take() {
            *self.scan_cursor.lock() = None;
            log::warning(&format!(
                "snapshot {} abandoned after {} keys: this node is no longer a master",
                s.id, s.keys
            ));
        }
    }

    /// Compares the list's length (LLEN, O(1)) with the outbox's count when Redis evicted the
    /// list, after a flush's items were put back, and at least every [`LIST_CHECK_EVERY_MS`]
    /// while the outbox counts items there: a list deleted, renamed or trimmed by hand, or
    /// evicted, is noticed, counted and logged, and the count follows Redis.
    fn check_list(&self, ctx: &Context, key: &[u8], outbox: &mut Outbox, now_ms: u64) {
        let evicted = self.list_evicted.swap(false, Relaxed);
        let due = outbox.list_len() > 0
            && now_ms.saturating_sub(self.list_checked_ms.load(Relaxed)) >= LIST_CHECK_EVERY_MS;
        if !evicted && !due {
            return;
        }
        self.list_checked_ms.store(now_ms, Relaxed);
        let len = {
            let _own = OwnWrites::start(&self.own_io);
            RedisList::new(ctx, key).len()
        };
        match len {
            Ok(len) => {
                let before = outbox.list_len();
                let lost = outbox.reconcile(len);
                if evicted || lost > 0 || len != before {
                    self.note_lost(lost, evicted);
                    if len != before {
                        self.shared.notify();
                    }
                }
            }
            Err(e) => log::warning(&e),
        }
    }

    /// The next step compares the list's length with the outbox's count.
    fn list_check_due(&self) {
        self.list_checked_ms.store(0, Relaxed);
    }

    /// Events found missing from the list: counted, and logged once per occurrence (each is an
    /// operator's command or an eviction, not a stream of them).
    fn note_lost(&self, lost: u64, evicted: bool) {
        if evicted {
            Stats::add(&self.shared.stats.lost_evicted, lost);
            log::warning(&format!(
                "Redis evicted the fallback list (maxmemory-policy): {lost} waiting events lost; \
                 use a volatile-* policy or noeviction (the list has no TTL)"
            ));
        } else if lost > 0 {
            Stats::add(&self.shared.stats.lost_external, lost);
            log::warning(&format!(
                "the fallback list was deleted, renamed or trimmed by someone else: {lost} \
                 waiting events lost"
            ));
        }
    }

    fn log_memory_drops(&self, dropped: u64) {
        let mut drops = self.memory_drops.lock();
        if dropped == 0 && drops.idle() {
            return;
        }
        if let Some(n) = drops.note(dropped, Instant::now()) {
            log::warning(&format!(
                "dropped {n} events, the oldest: Redis is near maxmemory (over {:.0} % of it), \
                 the module holds no more; further drops are summed every 10 s",
                MEMORY_FULL_RATIO * 100.0
            ));
        }
    }

    /// In a cluster, follows the slots this node serves (see [`Placement`]). Returns whether
    /// the list's length must be read again.
    fn place_list(
        &self,
        ctx: &Context,
        placement: &mut Placement,
        outbox: &mut Outbox,
        now_ms: u64,
    ) -> bool {
        let step = {
            let _own = OwnWrites::start(&self.own_io);
            placement.step(&mut RedisKeyspace { ctx }, SLICE, now_ms)
        };
        match step {
            Ok(step) => {
                for notice in &step.notices {
                    log::notice(notice);
                }
                if step.appended > 0 {
                    outbox.list_appended(step.appended);
                    Stats::add(&self.shared.stats.adopted, step.appended);
                    self.shared.notify();
                }
                if step.more {
                    hook::wake_main();
                }
                step.moved_list
            }
            Err(e) => {
                if placement.error_is_news(&e) {
                    log::warning(&e);
                }
                false
            }
        }
    }

    /// Spills, refills and trims one slice of the list `key`. Returns false when a list
    /// command failed (logged).
    fn maintain(
        &self,
        ctx: &Context,
        key: &[u8],
        outbox: &mut Outbox,
        input: TickInput,
        resync: bool,
    ) -> bool {
        let shared = &*self.shared;
        let report = self.timed(|| {
            let _own = OwnWrites::start(&self.own_io);
            let mut list = RedisList::new(ctx, key);
            if resync {
                match list.len() {
                    Ok(n) => outbox.set_list_len(n),
                    Err(e) => log::warning(&e),
                }
            }
            outbox.tick(&mut list, input)
        });
        Stats::add(&shared.stats.spilled, report.spilled);
        Stats::add(&shared.stats.refilled, report.refilled);
        Stats::add(&shared.stats.dropped, report.dropped);
        Stats::add(&shared.stats.dropped_memory, report.dropped_memory);
        self.log_drops(report.dropped - report.dropped_memory, input.fallback_size);
        self.log_memory_drops(report.dropped_memory);
        self.note_lost(report.lost, false);
        if let Some(e) = &report.error {
            log::warning(e);
            return false;
        } else if report.more {
            hook::wake_main();
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
        if let Some(n) = drops.note(dropped, Instant::now()) {
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
        if self.shared.direct.load(Relaxed) {
            // Events do not come through the step: no churn of the hook to avoid by waiting.
            hook::unhook_soon(on_unhook);
            return;
        }
        let now = now_ms();
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
            && self.memory_drops.lock().idle()
            && !self.list_evicted.load(Relaxed)
            && !self.rescue.lock().pending()
            && self.snapshot.lock().is_none()
            && self
                .shared
                .outbox
                .try_lock()
                .is_some_and(|o| self.needs_no_step(&o))
    }
}

/// The one-shot that drops the hook, outside any server event (see `hook`), if the module is
/// still quiet.
extern "C" fn on_unhook(_data: *mut c_void) {
    if let Some(m) = runtime::current() {
        let quiet = m.quiet();
        hook::unhook(m.detached.ctx(), quiet);
        m.quiet_since_ms.store(0, Relaxed);
    }
}

/// CPU time of the calling thread: what a step costs, without the time the scheduler gave the
/// CPU to others.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Redis is near `maxmemory` (never when none is set): see [`MEMORY_FULL_RATIO`].
fn memory_full() -> bool {
    // SAFETY: Redis's API pointer, set at load (Redis 6.2 or newer); main thread.
    let ratio = unsafe { raw::RedisModule_GetUsedMemoryRatio.map_or(0.0, |f| f()) };
    ratio >= MEMORY_FULL_RATIO
}
