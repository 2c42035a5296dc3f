//! The outbox: every event not yet confirmed by the broker, as one ordered sequence
//!
//! ```text
//!   [in flight] ++ [head] ++ [fallback list] ++ [tail]
//!    publisher      memory     Redis list        memory
//! ```
//!
//! New events join the tail. The publisher takes batches from the front; what it cannot get
//! confirmed it gives back to the front. Spilling moves memory into the list at either end of it
//! (head items to its front, tail items to its back), so the order above never changes. Nothing
//! behind the list is published while the list is not empty.
//!
//! Refilling *copies* the list's front into the head: an item leaves the list only once the
//! broker has confirmed it, so a crash or a failover while the backlog drains loses nothing (it
//! may resend). These copies are always the last events in memory before the list; the outbox
//! counts them (`mirrored`) and marks them with the current `epoch`, which changes whenever the
//! list turns out to have been changed behind its back, so that stale marks never delete
//! anything.
//!
//! Memory is bounded twice: in events (`capacity`) and in bytes (`capacity_bytes`, each event
//! counted as [`event_bytes`], in flight included: the bound is about the module's heap). Past
//! either bound events spill the same way. Memory always holds at least one event, however
//! large: the first ready one while nothing is in flight (else an event larger than the bound
//! would go back and forth between memory and the list).
//!
//! Pure logic: the list is reached through [`ListStore`], so this file is tested without Redis
//! (on a [`MemoryList`](crate::core::memory_list::MemoryList)).

use std::collections::VecDeque;

use crate::core::event::Event;
use crate::core::list_item::{ListBack, ListReader, REACH};
use crate::core::policy::{MEMORY_FULL_QUEUE, TRIM_MIN};

/// The fallback list, as the outbox needs it. Errors are messages for the log.
#[allow(clippy::len_without_is_empty)] // `len` asks Redis; callers need the number.
pub trait ListStore {
    /// Inserts `items` at the front, keeping their order.
    fn push_front(&mut self, items: &[&[u8]]) -> Result<(), String>;
    /// Appends `items` at the back, keeping their order.
    fn push_back(&mut self, items: &[&[u8]]) -> Result<(), String>;
    /// Up to `n` items from position `start`, without removing them.
    fn peek(&mut self, start: u64, n: usize) -> Result<Vec<Vec<u8>>, String>;
    /// Removes `n` items from the front.
    fn remove_front(&mut self, n: u64) -> Result<(), String>;
    /// Keeps only the `n` items at the back (the newest).
    fn keep_back(&mut self, n: u64) -> Result<(), String>;
    fn len(&mut self) -> Result<u64, String>;
}

/// What the publisher's connection allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broker {
    /// Connected and taking events: refill from the list.
    Ready,
    /// Not known yet (connecting, idle): neither spill nor refill.
    Unsure,
    /// Cannot take events now (down, disconnected, or not confirming): spill.
    Away,
}

/// What the shell knows when it runs a maintenance step.
#[derive(Clone, Copy, Debug)]
pub struct TickInput {
    pub broker: Broker,
    /// FALLBACK_SIZE: >0 keep at most N, 0 unlimited, <0 no list (what would be spilled is dropped).
    pub fallback_size: i64,
    /// At most this many events move between memory and the list in one step.
    pub slice: usize,
    /// A monotonic clock, in milliseconds (for the spill delay).
    pub now_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    pub spilled: u64,
    pub refilled: u64,
    pub dropped: u64,
    /// Of `dropped`, those dropped because Redis is near `maxmemory` (see
    /// [`Outbox::set_memory_full`]).
    pub dropped_memory: u64,
    /// Events found missing from the list: someone else deleted, trimmed or renamed it (see
    /// [`Outbox::reconcile`]).
    pub lost: u64,
    /// More work is waiting: run another step soon.
    pub more: bool,
    pub error: Option<String>,
}

/// The bytes an event takes in memory: its own size and what it holds on the heap.
pub fn event_bytes(e: &Event) -> usize {
    std::mem::size_of::<Event>() + e.heap_bytes()
}

fn sum_bytes<'a>(events: impl Iterator<Item = &'a Event>) -> usize {
    events.map(event_bytes).sum()
}

#[derive(Debug)]
pub struct Outbox {
    in_flight: usize,
    /// [`event_bytes`] of the events in flight, in the head and in the tail.
    in_flight_bytes: usize,
    head_bytes: usize,
    tail_bytes: usize,
    head: VecDeque<Event>,
    /// Items in the Redis list, copies included.
    list_len: u64,
    /// The list's first items that are confirmed (`to_remove`) or copied into memory.
    mirrored: u64,
    /// Confirmed copies whose originals still lead the list.
    to_remove: u64,
    /// Marks the copies made since the list was last found changed behind our back.
    epoch: u32,
    tail: VecDeque<Event>,
    capacity: usize,
    /// Bytes of memory the events may take (see [`event_bytes`]) before they spill.
    capacity_bytes: usize,
    /// The bytes of the list item a refill reads next, when known (it did not fit, or a spill
    /// just put it there): no refill until there is room for it.
    refill_next_bytes: Option<usize>,
    /// The mean bytes of the events that last moved between memory and the list: how many
    /// items a refill reads for the room it has.
    moved_mean_bytes: usize,
    /// Refill when fewer than this many events are in flight or ready.
    refill_below: usize,
    /// While the broker is away, events wait in memory up to this long (within capacity) so
    /// that one list write takes many of them: a write has a fixed cost of several thousand
    /// instructions, which one event at a time would pay per event. 0: at once.
    spill_delay_ms: u64,
    /// When events began to wait for that spill.
    away_since_ms: Option<u64>,
    /// Redis is near `maxmemory`: the list may not grow and memory holds few events.
    memory_full: bool,
    /// Items the journal appended since the last tick: growth of the list that tick counts
    /// as its own (near maxmemory the list may not grow).
    journaled_since_tick: u64,
    /// New events pushed since the last tick: that tick's spill moves as many of them as are
    /// over capacity, so that memory does not grow by what each event-loop iteration brings
    /// beyond a slice.
    arrived_since_tick: usize,
    /// How long confirmed items may wait to be trimmed together, and since when the first of
    /// those waiting has (set by the tick that first sees it).
    trim_delay_ms: u64,
    trim_waits_since_ms: Option<u64>,
    /// What the outbox can vouch for at the list's back, so that appended items may be
    /// compact (see `core/list_item.rs`). Unknown whenever the list may have changed.
    back: ListBack,
}

impl Outbox {
    pub fn new(capacity: usize, refill_below: usize) -> Outbox {
        Outbox {
            in_flight: 0,
            head: VecDeque::new(),
            list_len: 0,
            mirrored: 0,
            to_remove: 0,
            epoch: 1,
            tail: VecDeque::new(),
            capacity: capacity.max(1),
            in_flight_bytes: 0,
            head_bytes: 0,
            tail_bytes: 0,
            capacity_bytes: usize::MAX,
            refill_next_bytes: None,
            moved_mean_bytes: std::mem::size_of::<Event>(),
            refill_below: refill_below.clamp(1, capacity.max(1)),
            spill_delay_ms: 0,
            away_since_ms: None,
            memory_full: false,
            journaled_since_tick: 0,
            arrived_since_tick: 0,
            trim_delay_ms: 0,
            trim_waits_since_ms: None,
            back: ListBack::default(),
        }
    }

    pub fn set_spill_delay(&mut self, delay: std::time::Duration) {
        self.spill_delay_ms = delay.as_millis().try_into().unwrap_or(u64::MAX);
    }

    /// Confirmed items wait up to this long to leave the list together (see [`TRIM_MIN`]).
    /// 0 (the default): at the next step.
    pub fn set_trim_delay(&mut self, delay: std::time::Duration) {
        self.trim_delay_ms = delay.as_millis().try_into().unwrap_or(u64::MAX);
    }

    /// Adds a new event (the keyspace callback). Never fails and never blocks: a queue over
    /// capacity is brought back under it by the next [`Outbox::tick`].
    pub fn push(&mut self, event: Event) {
        let bytes = event_bytes(&event);
        self.push_sized(event, bytes);
    }

    #[inline(always)]
    fn push_sized(&mut self, event: Event, bytes: usize) {
        self.tail_bytes += bytes;
        self.tail.push_back(event);
        self.arrived_since_tick += 1;
    }

    /// Adds a new event if it needs no maintenance step to follow: nothing is in the list
    /// (which it would have to wait behind) and memory has room for it, so that no spill is
    /// due. Otherwise gives it back. The keyspace callback's direct hand-over (inlined there:
    /// the call, passing and returning the event by pointer, cost about 20 instructions).
    #[inline(always)]
    pub fn push_directly(&mut self, event: Event) -> Result<(), Event> {
        let bytes = event_bytes(&event);
        if self.list_len != 0
            || self.memory_len() >= self.capacity_now()
            || self.memory_bytes() + bytes > self.capacity_bytes
        {
            return Err(event);
        }
        self.push_sized(event, bytes);
        Ok(())
    }

    /// Adds new events in order, emptying `events` (the step hands over the inbox): one copy
    /// of the run, not one move per event.
    pub fn push_all(&mut self, events: &mut Vec<Event>) {
        self.tail_bytes += events.iter().map(event_bytes).sum::<usize>();
        self.arrived_since_tick += events.len();
        self.tail.extend(events.drain(..));
    }

    /// An event the journal already appended to the list (`core/journal.rs`): the list is one
    /// item longer, and memory keeps a copy of it when every item before it is copied too and
    /// there is room (else a refill reads it later).
    pub fn push_journaled(&mut self, mut event: Event) {
        let copied_up_to_here = self.mirrored == self.list_len && self.tail.is_empty();
        self.list_len += 1;
        self.journaled_since_tick += 1;
        if !copied_up_to_here {
            return;
        }
        let bytes = event_bytes(&event);
        let fits = self.memory_len() < self.capacity_now()
            && self.memory_bytes().saturating_add(bytes) <= self.capacity_bytes;
        if fits {
            event.list_copy = self.epoch;
            self.head_bytes += bytes;
            self.head.push_back(event);
            self.mirrored += 1;
        } else {
            self.refill_next_bytes = Some(bytes);
        }
    }

    /// Appends the tail's first `max` events (all, if fewer) to the list, in order (switching
    /// to the journal: what waits in memory goes before the first journaled event, in slices
    /// of the main thread's time). Returns how many it moved.
    pub fn spill_tail(&mut self, store: &mut impl ListStore, max: usize) -> Result<u64, String> {
        let n = self.tail.len().min(max);
        if n == 0 {
            return Ok(0);
        }
        if self.mirrored == self.list_len {
            self.refill_next_bytes = None;
        }
        if self.list_len == 0 {
            self.back.forget();
        }
        let (bytes, lens) = encode(self.tail.range(..n), &mut self.back);
        if let Err(e) = store.push_back(&split(&bytes, &lens)) {
            self.back.forget();
            return Err(e);
        }
        let moved_bytes = sum_bytes(self.tail.range(..n));
        self.tail.drain(..n);
        self.tail_bytes = self.tail_bytes.saturating_sub(moved_bytes);
        self.list_len += n as u64;
        Ok(n as u64)
    }

    /// Events held in memory, including those in flight.
    pub fn memory_len(&self) -> usize {
        self.in_flight + self.head.len() + self.tail.len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        self.refill_below = self.refill_below.min(self.capacity);
    }

    /// Bytes the events in memory take, including those in flight (see [`event_bytes`]).
    pub fn memory_bytes(&self) -> usize {
        self.in_flight_bytes + self.head_bytes + self.tail_bytes
    }

    /// The bound on [`Outbox::memory_bytes`] (unbounded until set).
    pub fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }

    pub fn set_capacity_bytes(&mut self, capacity_bytes: usize) {
        self.capacity_bytes = capacity_bytes.max(1);
    }

    pub fn list_len(&self) -> u64 {
        self.list_len
    }

    /// Events wait in memory behind the list (the tail): a journaled event, which joins the
    /// list, would overtake them.
    pub fn waits_behind_list(&self) -> bool {
        !self.tail.is_empty()
    }

    /// Redis is near `maxmemory` (the shell asks `RedisModule_GetUsedMemoryRatio` each step).
    /// While it is, the list does not grow: each event that joins it pushes the oldest out
    /// (dropped, counted in `dropped_memory`), and memory keeps at most
    /// [`MEMORY_FULL_QUEUE`] events, the rest going to the list (and so, oldest first, out).
    pub fn set_memory_full(&mut self, full: bool) {
        self.memory_full = full;
    }

    /// The memory queue's capacity as it applies now.
    fn capacity_now(&self) -> usize {
        if self.memory_full {
            self.capacity.min(MEMORY_FULL_QUEUE)
        } else {
            self.capacity
        }
    }

    /// The list's real length `len` (LLEN), when it may have been changed behind our back.
    /// If it differs from what the outbox counts, the count follows Redis and the copies in
    /// memory are no longer trusted (they are published as ordinary events; what they stand
    /// for may be sent twice). Returns how many events are lost: items gone from the list
    /// that no copy in memory holds (when copies are out and the list was cut at its back,
    /// more may be gone: this is the least). Items someone added are simply drained.
    pub fn reconcile(&mut self, len: u64) -> u64 {
        if len == self.list_len {
            return 0;
        }
        let lost = self
            .list_len
            .saturating_sub(len)
            .saturating_sub(self.mirrored);
        self.set_list_len(len);
        lost
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Anything to publish, here or in the list.
    pub fn has_work(&self) -> bool {
        self.memory_len() > 0 || self.list_len > 0
    }

    /// Nothing waits and nothing is in flight.
    pub fn is_idle(&self) -> bool {
        !self.has_work() && self.in_flight == 0
    }

    /// Something the publisher can take right now.
    /// How many events [`Outbox::take_batch`] could take now.
    pub fn ready_len(&self) -> usize {
        if self.head.is_empty() && self.list_len == 0 {
            self.tail.len()
        } else {
            self.head.len()
        }
    }

    pub fn has_ready(&self) -> bool {
        !self.head.is_empty() || (self.list_len == 0 && !self.tail.is_empty())
    }

    /// Learns the list's length (at load, after a promotion, or when it was changed behind our
    /// back). Copies in memory are no longer trusted to match the list.
    pub fn set_list_len(&mut self, len: u64) {
        self.list_len = len;
        self.back.forget();
        self.forget_copies();
    }

    /// Items were appended to the list by someone else (a backlog adopted from another list):
    /// they come after everything already there.
    pub fn list_appended(&mut self, n: u64) {
        self.back.forget();
        self.appended(n);
    }

    fn appended(&mut self, n: u64) {
        if self.mirrored == self.list_len {
            self.refill_next_bytes = None;
        }
        self.list_len += n;
    }

    /// For a writer outside [`Outbox::tick`] (the journal, on the main thread, holding the
    /// outbox's lock): encodes `events` as the next items of the list's back, appending them
    /// to `out` and each item's length to `lens`, compact where they may be, exactly as a spill
    /// at the back would. The back's state advances as if they were written; `list_len` does
    /// not change. The caller then writes them at the back (RPUSH, in this order, before
    /// anything else writes to the list) and says so with [`Outbox::encoded_appended`]; if the
    /// write fails, it calls [`Outbox::forget_back`] (the back is no longer what the state says).
    /// Allocates nothing beyond what `out` and `lens` need.
    pub fn encode_back<'a>(
        &mut self,
        events: impl IntoIterator<Item = &'a Event>,
        out: &mut Vec<u8>,
        lens: &mut Vec<usize>,
    ) {
        if self.list_len == 0 {
            // Whatever is written first is the list's front: full.
            self.back.forget();
        }
        for e in events {
            let start = out.len();
            self.back.write(e, out);
            lens.push(out.len() - start);
        }
    }

    /// `n` items that [`Outbox::encode_back`] encoded were appended to the list: counted,
    /// keeping the back's state (unlike [`Outbox::list_appended`], for items from elsewhere).
    pub fn encoded_appended(&mut self, n: u64) {
        self.appended(n);
    }

    /// The list's back is no longer known (a write of encoded items failed): the next item
    /// appended is written full.
    pub fn forget_back(&mut self) {
        self.back.forget();
    }

    /// The list is no longer ours (this node became a replica: its new master drains it).
    /// Copies of its items are dropped from memory; what is in flight may still be confirmed
    /// but no longer removes anything.
    pub fn forget_list(&mut self) {
        let epoch = self.epoch;
        let mut forgotten = 0;
        self.head.retain(|e| {
            let keep = e.list_copy != epoch;
            if !keep {
                forgotten += event_bytes(e);
            }
            keep
        });
        self.head_bytes = self.head_bytes.saturating_sub(forgotten);
        self.list_len = 0;
        self.back.forget();
        self.forget_copies();
    }

    fn forget_copies(&mut self) {
        self.epoch = self.epoch.wrapping_add(1).max(1);
        self.mirrored = 0;
        self.to_remove = 0;
        self.refill_next_bytes = None;
        for e in self.head.iter_mut() {
            e.list_copy = 0;
        }
    }

    fn is_copy(&self, e: &Event) -> bool {
        e.list_copy == self.epoch
    }

    /// Hands the publisher up to `max` events, oldest first.
    pub fn take_batch(&mut self, max: usize) -> Vec<Event> {
        if self.head.is_empty() && self.list_len == 0 {
            std::mem::swap(&mut self.head, &mut self.tail);
            std::mem::swap(&mut self.head_bytes, &mut self.tail_bytes);
        }
        let n = max.min(self.head.len());
        self.in_flight += n;
        let batch: Vec<Event> = self.head.drain(..n).collect();
        let bytes = sum_bytes(batch.iter());
        self.head_bytes = self.head_bytes.saturating_sub(bytes);
        self.in_flight_bytes += bytes;
        batch
    }

    /// The broker confirmed these events (the front of the batches handed out). Copies among
    /// them have their original removed from the list at the next step.
    pub fn confirmed(&mut self, events: &[Event]) {
        self.in_flight = self.in_flight.saturating_sub(events.len());
        self.in_flight_bytes = self.in_flight_left(sum_bytes(events.iter()));
        self.to_remove += events.iter().filter(|e| self.is_copy(e)).count() as u64;
    }

    /// The bytes still in flight once `bytes` came back (`in_flight` already counts them out).
    /// Nothing in flight is no bytes, whatever the events given back were (copies of the
    /// ones taken, say): the count cannot drift.
    fn in_flight_left(&self, bytes: usize) -> usize {
        if self.in_flight == 0 {
            0
        } else {
            self.in_flight_bytes.saturating_sub(bytes)
        }
    }

    /// Unconfirmed events come back, in their order, ahead of everything else.
    pub fn give_back(&mut self, events: Vec<Event>) {
        self.in_flight = self.in_flight.saturating_sub(events.len());
        let bytes = sum_bytes(events.iter());
        self.in_flight_bytes = self.in_flight_left(bytes);
        self.head_bytes += bytes;
        for e in events.into_iter().rev() {
            self.head.push_front(e);
        }
    }

    /// One bounded maintenance step on the main thread: remove what was confirmed from the
    /// list, spill when the broker is away or memory is over capacity, refill from the list when
    /// the publisher runs short, enforce the cap.
    pub fn tick(&mut self, store: &mut impl ListStore, input: TickInput) -> TickReport {
        let mut report = TickReport::default();
        let list_before = self
            .list_len
            .saturating_sub(std::mem::take(&mut self.journaled_since_tick));
        let arrived = std::mem::take(&mut self.arrived_since_tick);
        if input.broker == Broker::Away && self.spillable() {
            self.away_since_ms.get_or_insert(input.now_ms);
        } else {
            self.away_since_ms = None;
        }
        let result = self
            .remove_confirmed(store, input.now_ms, &mut report)
            .and_then(|()| self.spill_or_refill(store, input, arrived, &mut report));
        if let Err(e) =
            result.and_then(|()| self.enforce_cap(store, input, list_before, &mut report))
        {
            report.error = Some(e);
        }
        if !self.spillable() {
            self.away_since_ms = None;
        }
        report.more = self.wants_tick(input.broker, input.fallback_size, input.now_ms);
        report
    }

    /// Events in memory that are not in flight: what a spill can take.
    fn spillable(&self) -> bool {
        !self.head.is_empty() || !self.tail.is_empty()
    }

    /// The broker is away and what waits in memory has waited long enough to spill. Before
    /// the first step that sees them wait, the wait has not started: that step starts it.
    fn away_spill_due(&self, broker: Broker, now_ms: u64) -> bool {
        broker == Broker::Away
            && self.spillable()
            && (self.spill_delay_ms == 0
                || self
                    .away_since_ms
                    .is_some_and(|t| now_ms.saturating_sub(t) >= self.spill_delay_ms))
    }

    /// Queues that once held a burst keep their capacity: give most of it back once they are
    /// mostly empty, and all of it once nothing waits (not even in flight), so memory returns
    /// to its idle size after an outage or a backlog without reallocating while events flow.
    pub fn release_spare(&mut self) {
        if self.is_idle() {
            self.head.shrink_to_fit();
            self.tail.shrink_to_fit();
            return;
        }
        release_spare(&mut self.head);
        release_spare(&mut self.tail);
    }

    /// Whether a [`Outbox::tick`] would have something to do (`now_ms` on the tick's clock).
    pub fn wants_tick(&self, broker: Broker, fallback_size: i64, now_ms: u64) -> bool {
        let away_wait_to_start = broker == Broker::Away && self.away_since_ms.is_none();
        let spill = self.spillable()
            && (self.memory_len() > self.capacity_now()
                || self.over_bytes_count(1) > 0
                || away_wait_to_start
                || self.away_spill_due(broker, now_ms));
        let cap = self.over_cap(fallback_size)
            || self.list_over_cap(fallback_size) && self.has_ready_copies();
        spill || self.trim_due(now_ms) || cap || self.refill_wanted(broker, fallback_size)
    }

    /// Only for a broker taking events: there is no point in reading ahead for one that may be
    /// down, nor in a list over its cap (the oldest, which a refill reads, are to be dropped).
    fn refill_wanted(&self, broker: Broker, fallback_size: i64) -> bool {
        broker == Broker::Ready
            && !self.list_over_cap(fallback_size)
            && self.list_len > self.mirrored
            && self.in_flight + self.head.len() < self.refill_below
            && self.refill_fits()
    }

    /// Room in bytes for what a refill reads: under the bound, and for the next item when its
    /// size is known. With nothing in flight or ready, always (one event, however large).
    fn refill_fits(&self) -> bool {
        if self.in_flight + self.head.len() == 0 {
            return true;
        }
        let used = self.in_flight_bytes + self.head_bytes;
        match self.refill_next_bytes {
            Some(next) => used.saturating_add(next) <= self.capacity_bytes,
            None => used < self.capacity_bytes,
        }
    }

    /// How many events must leave memory (the tail's front first, then the head's back, as a
    /// spill takes them) for its bytes to be within `capacity_bytes`, counting at most `limit`.
    /// The head's first event stays while nothing is in flight (see the file's comment).
    fn over_bytes_count(&self, limit: usize) -> usize {
        let mut over = self.memory_bytes().saturating_sub(self.capacity_bytes);
        if over == 0 {
            // The usual case, asked at every step: no iterators to set up.
            return 0;
        }
        let keep = usize::from(self.in_flight == 0);
        let head = self.head.iter().skip(keep).rev();
        let mut n = 0;
        for e in self.tail.iter().chain(head) {
            if over == 0 || n >= limit {
                break;
            }
            over = over.saturating_sub(event_bytes(e));
            n += 1;
        }
        n
    }

    /// The list holds more than FALLBACK_SIZE.
    fn list_over_cap(&self, fallback_size: i64) -> bool {
        fallback_size > 0 && self.list_len > fallback_size as u64
    }

    /// The cap is enforced while no copies are out: trimming must not cut the items they stand
    /// for. Over the cap, copies not in flight are dropped (their items are the oldest, to be
    /// trimmed) and no more are read, so that once the batch in flight settles the list can
    /// be cut even while the broker takes events more slowly than they come (the journal,
    /// where every event is in the list, or a long overload).
    fn over_cap(&self, fallback_size: i64) -> bool {
        self.mirrored == 0 && self.list_over_cap(fallback_size)
    }

    /// Copies of list items wait in memory (not in flight): they are always the head's last
    /// events, so the last one tells (no walk over the head at every step).
    fn has_ready_copies(&self) -> bool {
        self.head.back().is_some_and(|e| self.is_copy(e))
    }

    /// Forgets the copies waiting in memory: their items stay in the list.
    fn drop_ready_copies(&mut self) {
        while self.head.back().is_some_and(|e| self.is_copy(e)) {
            if let Some(copy) = self.head.pop_back() {
                self.head_bytes = self.head_bytes.saturating_sub(event_bytes(&copy));
                self.mirrored = self.mirrored.saturating_sub(1);
            }
        }
        self.refill_next_bytes = None;
    }

    /// Confirmed copies are to be removed from the list now: enough of them, or the first has
    /// waited long enough (see [`TRIM_MIN`]). Before a tick has seen them wait, a tick is
    /// wanted to start the wait.
    fn trim_due(&self, now_ms: u64) -> bool {
        self.to_remove > 0
            && (self.to_remove >= TRIM_MIN
                || self
                    .trim_waits_since_ms
                    .is_none_or(|t| now_ms.saturating_sub(t) >= self.trim_delay_ms))
    }

    fn remove_confirmed(
        &mut self,
        store: &mut impl ListStore,
        now_ms: u64,
        report: &mut TickReport,
    ) -> Result<(), String> {
        if self.to_remove > 0 {
            self.trim_waits_since_ms.get_or_insert(now_ms);
        }
        if self.trim_due(now_ms) {
            self.trim_waits_since_ms = None;
            // Only remove what we know is there: a list changed behind our back (LLEN is O(1))
            // invalidates the copies, and the confirmed ones are simply sent again later.
            let len = store.len()?;
            if len != self.list_len {
                report.lost += self.reconcile(len);
                return Ok(());
            }
            store.remove_front(self.to_remove)?;
            self.list_len = self.list_len.saturating_sub(self.to_remove);
            self.mirrored = self.mirrored.saturating_sub(self.to_remove);
            self.to_remove = 0;
        }
        Ok(())
    }

    /// `arrived`: the new events since the last tick (see [`Outbox::spill_plan`]).
    fn spill_or_refill(
        &mut self,
        store: &mut impl ListStore,
        input: TickInput,
        arrived: usize,
        report: &mut TickReport,
    ) -> Result<(), String> {
        let (from_head, from_tail) = self.spill_plan(input, arrived);
        if from_head + from_tail > 0 {
            return self.spill(store, input.fallback_size, from_head, from_tail, report);
        }
        if self.refill_wanted(input.broker, input.fallback_size) {
            // The tail does not count here: when it is what fills memory, the next step spills it.
            let room = self
                .capacity_now()
                .saturating_sub(self.in_flight + self.head.len());
            let unread = usize::try_from(self.list_len - self.mirrored).unwrap_or(usize::MAX);
            // In bytes, as many as the last events moved suggest, and one more: the refill keeps
            // what fits and learns the size of the next item, so that no step is wanted until
            // there is room for it.
            let used = self.in_flight_bytes + self.head_bytes;
            let mut room_bytes = self.capacity_bytes.saturating_sub(used);
            let by_bytes = room_bytes / self.moved_mean_bytes.max(1) + 1;
            let want = (self.refill_below * 2)
                .min(room)
                .min(input.slice.max(1))
                .min(unread)
                .min(by_bytes);
            // A compact item takes its run from a full item up to REACH items before it: read
            // those too (no more than the list's front).
            let skip = if want == 0 {
                0
            } else {
                usize::try_from(self.mirrored.min(REACH)).unwrap_or(0)
            };
            let items = store.peek(self.mirrored - skip as u64, skip + want)?;
            if items.len() < skip + want {
                // Shorter than we thought: someone trimmed or deleted it. Trust Redis, and no
                // longer the copies: removing "their" items could now delete others.
                let len = store.len()?;
                report.lost += self.reconcile(len);
                return Ok(());
            }
            let epoch = self.epoch;
            let mut first = self.in_flight + self.head.len() == 0;
            let (mut kept, mut kept_bytes) = (0usize, 0usize);
            self.refill_next_bytes = None;
            for read in ListReader::read_after(&items, skip) {
                let e = Event {
                    list_copy: epoch,
                    ..read
                };
                let bytes = event_bytes(&e);
                if bytes > room_bytes && !first {
                    self.refill_next_bytes = Some(bytes);
                    break;
                }
                first = false;
                room_bytes = room_bytes.saturating_sub(bytes);
                kept += 1;
                kept_bytes += bytes;
                self.head.push_back(e);
            }
            self.head_bytes += kept_bytes;
            if let Some(mean) = kept_bytes.checked_div(kept) {
                self.moved_mean_bytes = mean;
            }
            report.refilled += kept as u64;
            self.mirrored += kept as u64;
        }
        Ok(())
    }

    /// How many events leave the head's back and the tail's front: a slice, or more when the
    /// `arrived` new events put memory further over capacity (a pipeline faster than a slice a step
    /// would otherwise grow memory by the difference at each step; each of those events
    /// already cost a keyspace callback, so the work stays in proportion to them).
    fn spill_plan(&self, input: TickInput, arrived: usize) -> (usize, usize) {
        let over = self.memory_len().saturating_sub(self.capacity_now());
        let slice = input.slice.max(over.min(arrived));
        let want = if self.away_spill_due(input.broker, input.now_ms) {
            self.head.len() + self.tail.len()
        } else {
            // Over capacity, the tail goes in whole slices: one list write per slice rather
            // than one per step for the few events each step brings (a write has a fixed cost).
            let limit = if self.memory_full { usize::MAX } else { slice };
            match over.max(self.over_bytes_count(limit)) {
                0 => 0,
                over => over.max(self.tail.len().min(input.slice)),
            }
        };
        // Near maxmemory, all the excess at once: memory must not grow by what each
        // event-loop iteration brings beyond one slice (the work is that of the events
        // themselves, each of which already cost a keyspace callback).
        let want = if self.memory_full {
            want
        } else {
            want.min(slice)
        };
        // Newest first: the tail, then the back of the head.
        let from_tail = want.min(self.tail.len());
        let from_head = (want - from_tail).min(self.head.len());
        (from_head, from_tail)
    }

    fn spill(
        &mut self,
        store: &mut impl ListStore,
        fallback_size: i64,
        from_head: usize,
        from_tail: usize,
        report: &mut TickReport,
    ) -> Result<(), String> {
        // Copies at the back of the head are simply forgotten: their originals are in the list.
        let mut from_head = from_head;
        while from_head > 0 && self.head.back().is_some_and(|e| self.is_copy(e)) {
            if let Some(copy) = self.head.pop_back() {
                // It is the list item a refill reads next again.
                let bytes = event_bytes(&copy);
                self.head_bytes = self.head_bytes.saturating_sub(bytes);
                self.refill_next_bytes = Some(bytes);
            }
            self.mirrored -= 1;
            from_head -= 1;
        }
        // Events in front of copies still out cannot go before the list's front (those
        // copies stand for it); by construction there are none, but never break the order.
        if self.mirrored > 0 {
            from_head = 0;
        }
        // Near maxmemory with an empty list, what would be spilled is the oldest there is.
        let memory_drop = self.memory_full && self.list_len == 0;
        let start = self.head.len() - from_head;
        let head_bytes = sum_bytes(self.head.range(start..));
        let tail_bytes = sum_bytes(self.tail.range(..from_tail));
        let moved = from_head + from_tail;
        if let Some(mean) = (head_bytes + tail_bytes).checked_div(moved) {
            self.moved_mean_bytes = mean;
        }
        if fallback_size < 0 || memory_drop {
            // No fallback list: what cannot wait in memory is dropped, and counted.
            self.head.truncate(start);
            self.tail.drain(..from_tail);
            self.head_bytes = self.head_bytes.saturating_sub(head_bytes);
            self.tail_bytes = self.tail_bytes.saturating_sub(tail_bytes);
            let n = (from_head + from_tail) as u64;
            report.dropped += n;
            if memory_drop && fallback_size >= 0 {
                report.dropped_memory += n;
            }
            return Ok(());
        }
        if from_tail > 0 {
            if self.mirrored == self.list_len {
                // The next item a refill reads is one of these.
                self.refill_next_bytes = None;
            }
            if self.list_len == 0 {
                // The first item is the list's front: full.
                self.back.forget();
            }
            let (bytes, lens) = encode(self.tail.iter().take(from_tail), &mut self.back);
            if let Err(e) = store.push_back(&split(&bytes, &lens)) {
                self.back.forget();
                return Err(e);
            }
            self.tail.drain(..from_tail);
            self.tail_bytes = self.tail_bytes.saturating_sub(tail_bytes);
            self.list_len += from_tail as u64;
        }
        if from_head > 0 {
            self.refill_next_bytes = None;
            // A group of its own, its first item full: it becomes the list's front.
            let mut group = ListBack::default();
            let (bytes, lens) = encode(self.head.range(start..), &mut group);
            store.push_front(&split(&bytes, &lens))?;
            if self.list_len == 0 {
                // The group is the whole list: its end is the back.
                self.back = group;
            }
            self.head.truncate(start);
            self.head_bytes = self.head_bytes.saturating_sub(head_bytes);
            self.list_len += from_head as u64;
        }
        report.spilled += moved as u64;
        Ok(())
    }

    /// FALLBACK_SIZE, and near maxmemory no growth beyond `list_before` (the length before
    /// this tick): the oldest go.
    fn enforce_cap(
        &mut self,
        store: &mut impl ListStore,
        input: TickInput,
        list_before: u64,
        report: &mut TickReport,
    ) -> Result<(), String> {
        let cap = input.fallback_size;
        if self.list_over_cap(cap) && self.mirrored > 0 {
            self.drop_ready_copies();
        }
        let size_cap = self.over_cap(cap).then_some(cap as u64);
        let memory_cap = (self.memory_full
            && self.mirrored == 0
            && list_before > 0
            && self.list_len > list_before)
            .then_some(list_before);
        let keep = match (size_cap, memory_cap) {
            (None, None) => return Ok(()),
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
        };
        store.keep_back(keep)?;
        // The list's front went: the next item to read is another.
        self.refill_next_bytes = None;
        let dropped = self.list_len - keep;
        report.dropped += dropped;
        report.dropped_memory += dropped - (self.list_len - size_cap.unwrap_or(self.list_len));
        self.list_len = keep;
        Ok(())
    }

    /// Moves what is in memory (nothing may be in flight) into a new outbox: how the events
    /// of one load of the module reach the next.
    pub fn hand_over(&mut self, to: &mut Outbox) {
        debug_assert_eq!(self.in_flight, 0);
        // Copies stay behind: their originals are still in the list.
        let epoch = self.epoch;
        for e in self.head.drain(..).filter(|e| e.list_copy != epoch) {
            to.head_bytes += event_bytes(&e);
            to.head.push_back(e);
        }
        to.tail_bytes += std::mem::take(&mut self.tail_bytes);
        to.tail.extend(self.tail.drain(..));
        self.head_bytes = 0;
    }
}

/// Encodes events as the list items that follow `back`, back to back in one buffer (one
/// allocation per spill, not one per event); returns the buffer and each item's length.
fn encode<'a>(
    events: impl Iterator<Item = &'a Event> + Clone,
    back: &mut ListBack,
) -> (Vec<u8>, Vec<usize>) {
    let size = events.clone().map(Event::list_item_len_max).sum();
    let mut bytes = Vec::with_capacity(size);
    let lens = events
        .map(|e| {
            let start = bytes.len();
            back.write(e, &mut bytes);
            bytes.len() - start
        })
        .collect();
    (bytes, lens)
}

/// The items [`encode`] wrote.
fn split<'b>(mut bytes: &'b [u8], lens: &[usize]) -> Vec<&'b [u8]> {
    lens.iter()
        .map(|&n| {
            let (item, rest) = bytes.split_at(n.min(bytes.len()));
            bytes = rest;
            item
        })
        .collect()
}

fn release_spare<T>(queue: &mut VecDeque<T>) {
    const KEEP: usize = 1024;
    if queue.capacity() > 4 * KEEP.max(queue.len()) {
        queue.shrink_to(KEEP.max(2 * queue.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::test_event as ev_of;
    use crate::core::memory_list::MemoryList;
    use proptest::prelude::*;

    fn ev(seq: u64) -> Event {
        ev_of(7, seq)
    }

    /// An event whose body is `len` bytes long (a long key; with `payload value`, a value).
    fn long(seq: u64, len: usize) -> Event {
        let mut body = format!("0\nset\nk{seq}:").into_bytes();
        body.resize(len.max(body.len()), b'x');
        Event {
            body: body.into(),
            ..ev(seq)
        }
    }

    fn long_of(run: u8, seq: u64, len: usize) -> Event {
        Event {
            id: ev_of(run, seq).id,
            ..long(seq, len)
        }
    }

    /// The list as a reader from its front sees it: the front item is never compact, and
    /// every item reads back as the event that was pushed (`sent`, by seq), id included.
    fn check_list(
        s: &MemoryList,
        sent: &std::collections::HashMap<u64, Event>,
    ) -> Result<(), TestCaseError> {
        if let Some(front) = s.0.front() {
            prop_assert!(
                front[0] != 0x1c && front[0] != 0x1b,
                "compact front {:?}",
                front
            );
        }
        let items: Vec<Vec<u8>> = s.0.iter().cloned().collect();
        for e in ListReader::read_after(&items, 0) {
            let id = e.id;
            prop_assert!(id.is_some(), "an item lost its id: {:?}", e);
            let seq = id.map_or(0, |id| id.seq);
            prop_assert_eq!(Some(&e), sent.get(&seq));
        }
        Ok(())
    }

    /// Delivered events are the events pushed (ids included), copies or not.
    fn check_delivered(
        batch: &[Event],
        sent: &std::collections::HashMap<u64, Event>,
    ) -> Result<(), TestCaseError> {
        for e in batch {
            let e = Event {
                list_copy: 0,
                ..e.clone()
            };
            let seq = e.id.map(|id| id.seq);
            prop_assert_eq!(Some(&e), seq.and_then(|q| sent.get(&q)));
        }
        Ok(())
    }

    /// What the outbox holds, in bytes, counted afresh: in flight (`batches`), head and tail.
    fn bytes_held(o: &Outbox, batches: &VecDeque<Vec<Event>>) -> usize {
        sum_bytes(batches.iter().flatten().chain(&o.head).chain(&o.tail))
    }

    fn seqs(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.id.unwrap().seq).collect()
    }

    const AWAY: TickInput = TickInput {
        broker: Broker::Away,
        fallback_size: 0,
        slice: 1000,
        now_ms: 0,
    };
    const BACK: TickInput = TickInput {
        broker: Broker::Ready,
        fallback_size: 0,
        slice: 1000,
        now_ms: 0,
    };

    /// Publishes and confirms everything, ticking as the shell does; counts drops in `dropped`.
    fn drain_counting(
        o: &mut Outbox,
        s: &mut MemoryList,
        input: TickInput,
        dropped: &mut u64,
    ) -> Vec<u64> {
        seqs(&drain_events(o, s, input, dropped))
    }

    /// [`drain_counting`]'s events, as the publisher got them.
    fn drain_events(
        o: &mut Outbox,
        s: &mut MemoryList,
        input: TickInput,
        dropped: &mut u64,
    ) -> Vec<Event> {
        let mut out = vec![];
        for _ in 0..10_000 {
            *dropped += o.tick(s, input).dropped;
            let b = o.take_batch(3);
            if b.is_empty() && !o.has_work() {
                break;
            }
            o.confirmed(&b);
            out.extend(b);
        }
        out
    }

    fn drain(o: &mut Outbox, s: &mut MemoryList, input: TickInput) -> Vec<u64> {
        drain_counting(o, s, input, &mut 0)
    }

    #[test]
    fn memory_returns_after_a_burst() {
        let (mut o, mut s) = (Outbox::new(100_000, 4), MemoryList::default());
        (1..=50_000).for_each(|i| o.push(ev(i)));
        o.tick(
            &mut s,
            TickInput {
                slice: 100_000,
                ..AWAY
            },
        );
        o.release_spare();
        assert_eq!(o.memory_len(), 0);
        assert!(
            o.tail.capacity() <= 4096,
            "capacity kept: {}",
            o.tail.capacity()
        );
        // Once the list is drained and nothing is in flight, nothing of the burst is kept.
        o.set_list_len(0);
        o.release_spare();
        assert_eq!((o.head.capacity(), o.tail.capacity()), (0, 0));
    }

    #[test]
    fn a_pipeline_faster_than_a_slice_spills_what_it_put_over_capacity() {
        let (mut o, mut s) = (Outbox::new(100, 4), MemoryList::default());
        let slice500 = TickInput { slice: 500, ..AWAY };
        let mut seq = 0;
        for round in 1..=4 {
            // One event-loop iteration brings 2,000 events, the step spills once.
            let mut burst: Vec<Event> = (0..2000)
                .map(|_| {
                    seq += 1;
                    ev(seq)
                })
                .collect();
            o.push_all(&mut burst);
            o.tick(&mut s, slice500);
            assert!(
                o.memory_len() <= 100,
                "round {round}: {} events in memory, capacity 100",
                o.memory_len()
            );
        }
        assert_eq!(s.0.len() as u64 + o.memory_len() as u64, seq);
        // Excess that no new event brought (a lowered capacity) still goes a slice a step.
        let (mut o, mut s) = (Outbox::new(10_000, 4), MemoryList::default());
        (1..=3000).for_each(|i| o.push(ev(i)));
        o.tick(&mut s, TickInput { slice: 500, ..BACK });
        assert_eq!(o.memory_len(), 3000, "under capacity: nothing spills");
        o.set_capacity(10);
        o.tick(&mut s, TickInput { slice: 500, ..BACK });
        assert_eq!(o.memory_len(), 2500, "one slice");
    }

    #[test]
    fn a_direct_push_takes_only_what_needs_no_step() {
        let (mut o, mut s) = (Outbox::new(3, 4), MemoryList::default());
        for i in 1..=3 {
            assert!(o.push_directly(ev(i)).is_ok(), "room for event {i}");
        }
        let back = o
            .push_directly(ev(4))
            .expect_err("at capacity: a step must spill");
        assert_eq!(
            back.id.map(|id| id.seq),
            Some(4),
            "the same event comes back"
        );
        assert_eq!(o.memory_len(), 3);
        // Within the byte bound only.
        let mut small = Outbox::new(100, 4);
        small.set_capacity_bytes(2 * event_bytes(&ev(1)));
        assert!(small.push_directly(ev(1)).is_ok() && small.push_directly(ev(2)).is_ok());
        assert!(small.push_directly(ev(3)).is_err(), "over capacity_bytes");
        // Nothing joins memory directly while the list holds events it would overtake.
        o.push(ev(4));
        o.set_capacity(1);
        o.tick(&mut s, TickInput { slice: 500, ..AWAY });
        o.set_capacity(100);
        assert!(o.list_len() > 0);
        assert!(
            o.push_directly(ev(5)).is_err(),
            "behind the list: through the step"
        );
        // What went in directly is published in order, as pushed events are.
        let mut o = Outbox::new(100, 4);
        o.push(ev(1));
        assert!(o.push_directly(ev(2)).is_ok());
        let seqs: Vec<u64> = o
            .take_batch(10)
            .iter()
            .filter_map(|e| e.id.map(|id| id.seq))
            .collect();
        assert_eq!(seqs, [1, 2]);
    }

    #[test]
    fn switching_to_the_journal_moves_the_tail_in_slices_then_journals_behind_it() {
        let (mut o, mut s) = (Outbox::new(100, 4), MemoryList::default());
        (1..=10).for_each(|i| o.push(ev(i)));
        let bytes_before = o.memory_bytes();
        assert_eq!(o.spill_tail(&mut s, 4), Ok(4));
        assert_eq!((s.0.len(), o.list_len(), o.memory_len()), (4, 4, 6));
        assert_eq!(
            o.memory_bytes(),
            bytes_before - sum_bytes([1, 2, 3, 4].map(ev).iter())
        );
        assert!(o.waits_behind_list(), "6 events still wait behind the list");
        // Events that come meanwhile join the tail, behind those still waiting.
        o.push(ev(11));
        assert_eq!(o.spill_tail(&mut s, 4), Ok(4));
        assert_eq!(o.spill_tail(&mut s, 4), Ok(3));
        assert!(!o.waits_behind_list());
        assert_eq!(o.spill_tail(&mut s, 4), Ok(0));
        // Journaled from now on: behind the list, and everything comes out once, in order.
        let (e12, mut item) = (ev(12), Vec::new());
        crate::core::list_item::write_full(&e12, e12.id.unwrap(), &mut item);
        s.0.push_back(item);
        o.push_journaled(e12);
        assert_eq!(o.memory_bytes(), 0);
        assert_eq!(drain(&mut o, &mut s, BACK), (1..=12).collect::<Vec<_>>());
    }

    #[test]
    fn healthy_broker_takes_events_in_order() {
        let mut o = Outbox::new(10, 4);
        (1..=5).for_each(|i| o.push(ev(i)));
        assert_eq!(seqs(&o.take_batch(3)), [1, 2, 3]);
        assert_eq!(o.in_flight(), 3);
        o.confirmed(&[ev(1), ev(2), ev(3)]);
        assert_eq!(seqs(&o.take_batch(3)), [4, 5]);
    }

    #[test]
    fn the_list_keeps_an_item_until_it_is_confirmed() {
        let (mut o, mut s) = (Outbox::new(10, 4), MemoryList::default());
        (1..=5).for_each(|i| o.push(ev(i)));
        o.tick(&mut s, AWAY);
        assert_eq!(s.0.len(), 5);
        o.tick(&mut s, BACK);
        assert_eq!(
            (s.0.len(), o.list_len()),
            (5, 5),
            "refilling copies, it does not pop"
        );
        let b = o.take_batch(3);
        o.confirmed(&b[..2]);
        o.give_back(b[2..].to_vec());
        o.tick(&mut s, BACK);
        assert_eq!(s.0.len(), 3, "only the confirmed ones left the list");
        // The broker goes away: copies are forgotten, not written again.
        o.tick(&mut s, AWAY);
        assert_eq!((s.0.len(), o.memory_len()), (3, 0));
        assert_eq!(drain(&mut o, &mut s, BACK), [3, 4, 5]);
    }

    #[test]
    fn a_demoted_node_forgets_the_list_it_no_longer_owns() {
        let (mut o, mut s) = (Outbox::new(10, 4), MemoryList::default());
        (1..=5).for_each(|i| o.push(ev(i)));
        o.tick(&mut s, AWAY);
        o.tick(&mut s, BACK);
        let in_flight = o.take_batch(2);
        o.push(ev(6));
        o.forget_list();
        // The new master drains 1..=5 from the list; only the new event is ours to send.
        o.confirmed(&in_flight);
        assert_eq!(o.list_len(), 0);
        assert_eq!(drain(&mut o, &mut MemoryList::default(), BACK), [6]);
        assert_eq!(s.0.len(), 5, "the list is left to its new owner");
    }

    #[test]
    fn items_appended_to_the_list_drain_after_it() {
        let (mut o, mut s) = (Outbox::new(10, 4), MemoryList::default());
        (1..=3).for_each(|i| o.push(ev(i)));
        o.tick(&mut s, AWAY);
        s.0.extend([ev(100), ev(101)].iter().map(Event::to_list_item));
        o.list_appended(2);
        o.push(ev(4));
        assert_eq!(drain(&mut o, &mut s, BACK), [1, 2, 3, 100, 101, 4]);
        assert!(s.0.is_empty());
    }

    #[test]
    fn a_crash_while_draining_loses_nothing() {
        let (mut o, mut s) = (Outbox::new(10, 4), MemoryList::default());
        (1..=5).for_each(|i| o.push(ev(i)));
        o.tick(&mut s, AWAY);
        o.tick(&mut s, BACK);
        let b = o.take_batch(2);
        o.confirmed(&b); // confirmed, but Redis dies before the list is trimmed
        let mut after = Outbox::new(10, 4);
        after.set_list_len(s.0.len() as u64);
        assert_eq!(
            drain(&mut after, &mut s, BACK),
            [1, 2, 3, 4, 5],
            "1 and 2 again: at least once"
        );
    }

    #[test]
    fn a_list_changed_behind_our_back_invalidates_the_copies() {
        let (mut o, mut s) = (Outbox::new(10, 2), MemoryList::default());
        (1..=6).for_each(|i| o.push(ev(i)));
        o.tick(&mut s, AWAY);
        o.tick(&mut s, BACK); // copies of 1..=4
        let b = o.take_batch(1);
        s.0.drain(..5); // someone trims the list to [6] (LTRIM by hand)
        o.tick(&mut s, BACK); // finds the list shorter than its copies
        o.confirmed(&b); // a stale copy: must not remove 6
        o.tick(&mut s, BACK);
        assert_eq!(s.0.len(), 1);
        let rest = drain_events(&mut o, &mut s, BACK, &mut 0);
        // Cut from the full item before it, 6 (compact) is still delivered, without its id.
        let six = rest.iter().find(|e| &e.body[..] == b"0\nset\nk6").unwrap();
        assert_eq!(six.id, None);
    }

    #[test]
    fn outage_spills_and_recovery_drains_the_list_first() {
        let (mut o, mut s) = (Outbox::new(10, 4), MemoryList::default());
        (1..=3).for_each(|i| o.push(ev(i)));
        let batch = o.take_batch(2);
        (4..=6).for_each(|i| o.push(ev(i)));
        o.tick(&mut s, AWAY);
        assert_eq!(
            (o.list_len(), s.0.len()),
            (4, 4),
            "3..=6 spilled, 1 and 2 in flight"
        );
        o.give_back(batch); // the connection died
        o.tick(&mut s, AWAY);
        assert_eq!(o.list_len(), 6);
        assert_eq!(o.memory_len(), 0);
        (7..=8).for_each(|i| o.push(ev(i)));
        assert!(o.take_batch(10).is_empty(), "nothing overtakes the list");
        assert_eq!(drain(&mut o, &mut s, BACK), (1..=8).collect::<Vec<_>>());
        assert!(s.0.is_empty());
    }

    #[test]
    fn push_all_is_push_one_by_one() {
        let (mut a, mut b) = (Outbox::new(100, 2), Outbox::new(100, 2));
        (1..=5).for_each(|i| a.push(ev(i)));
        let mut run: Vec<Event> = (1..=5).map(ev).collect();
        b.push_all(&mut run);
        assert!(run.is_empty());
        assert_eq!(
            (a.memory_len(), a.memory_bytes()),
            (b.memory_len(), b.memory_bytes())
        );
        let mut s = MemoryList::default();
        assert_eq!(drain(&mut b, &mut s, BACK), (1..=5).collect::<Vec<_>>());
    }

    #[test]
    fn over_capacity_spills_the_newest_while_connected() {
        let (mut o, mut s) = (Outbox::new(4, 2), MemoryList::default());
        (1..=3).for_each(|i| o.push(ev(i)));
        let batch = o.take_batch(3);
        (4..=7).for_each(|i| o.push(ev(i)));
        let r = o.tick(&mut s, BACK);
        assert_eq!(
            (r.spilled, o.memory_len(), o.list_len()),
            (4, 3, 4),
            "the tail (4..=7) goes whole, not only the 3 events over capacity"
        );
        o.confirmed(&batch);
        assert_eq!(drain(&mut o, &mut s, BACK), (4..=7).collect::<Vec<_>>());
    }

    #[test]
    fn over_capacity_the_excess_spills_in_slices_or_with_the_events_that_brought_it() {
        let (mut o, mut s) = (Outbox::new(4, 2), MemoryList::default());
        let slice3 = TickInput { slice: 3, ..BACK };
        (1..=5).for_each(|i| o.push(ev(i)));
        let r = o.tick(&mut s, slice3);
        assert_eq!(
            (r.spilled, o.memory_len()),
            (3, 2),
            "over by 1: a whole slice goes"
        );
        (6..=14).for_each(|i| o.push(ev(i))); // 11 in memory
        let r = o.tick(&mut s, slice3);
        assert_eq!(
            (r.spilled, o.memory_len()),
            (7, 4),
            "over by 7, all of it brought by this step's 9 events: more than a slice goes"
        );
        assert_eq!(o.tick(&mut s, slice3).spilled, 0, "at capacity: no more");
        assert_eq!(drain(&mut o, &mut s, BACK), (1..=14).collect::<Vec<_>>());
    }

    #[test]
    fn cap_keeps_the_newest_and_counts_the_rest() {
        let (mut o, mut s) = (Outbox::new(100, 4), MemoryList::default());
        (1..=10).for_each(|i| o.push(ev(i)));
        let r = o.tick(
            &mut s,
            TickInput {
                fallback_size: 5,
                ..AWAY
            },
        );
        assert_eq!((r.spilled, r.dropped, o.list_len()), (10, 5, 5));
        assert_eq!(drain(&mut o, &mut s, BACK), [6, 7, 8, 9, 10]);
    }

    #[test]
    fn no_fallback_list_drops_what_would_wait() {
        let (mut o, mut s) = (Outbox::new(100, 4), MemoryList::default());
        (1..=10).for_each(|i| o.push(ev(i)));
        let r = o.tick(
            &mut s,
            TickInput {
                fallback_size: -1,
                ..AWAY
            },
        );
        assert_eq!(
            (r.dropped, o.list_len(), s.0.len(), o.memory_len()),
            (10, 0, 0, 0)
        );
    }

    #[test]
    fn slices_bound_each_step_and_report_more() {
        let (mut o, mut s) = (Outbox::new(100, 4), MemoryList::default());
        (1..=10).for_each(|i| o.push(ev(i)));
        let r = o.tick(&mut s, TickInput { slice: 4, ..AWAY });
        assert_eq!((r.spilled, r.more), (4, true));
        let r = o.tick(&mut s, TickInput { slice: 4, ..BACK });
        assert!(r.refilled > 0 && r.refilled <= 4);
    }

    #[test]
    fn away_events_wait_for_the_spill_delay_unless_memory_is_full() {
        let (mut o, mut s) = (Outbox::new(10, 4), MemoryList::default());
        o.set_spill_delay(std::time::Duration::from_millis(100));
        let away_at = |now_ms| TickInput { now_ms, ..AWAY };
        (1..=3).for_each(|i| o.push(ev(i)));
        assert!(
            o.wants_tick(Broker::Away, 0, 1000),
            "a step starts the wait"
        );
        let r = o.tick(&mut s, away_at(1000));
        assert_eq!((r.spilled, r.more), (0, false), "the wait started");
        assert!(!o.wants_tick(Broker::Away, 0, 1099));
        (4..=5).for_each(|i| o.push(ev(i)));
        assert!(o.wants_tick(Broker::Away, 0, 1100));
        let r = o.tick(&mut s, away_at(1100));
        assert_eq!((r.spilled, o.memory_len()), (5, 0), "all together, once");
        // A new wait starts with the next events; a full memory does not wait.
        (6..=8).for_each(|i| o.push(ev(i)));
        assert_eq!(o.tick(&mut s, away_at(1101)).spilled, 0);
        (9..=20).for_each(|i| o.push(ev(i)));
        let r = o.tick(&mut s, away_at(1102));
        assert_eq!(
            (r.spilled, o.memory_len()),
            (15, 0),
            "over capacity: at once"
        );
        assert_eq!(drain(&mut o, &mut s, BACK), (1..=20).collect::<Vec<_>>());
    }

    #[test]
    fn a_hand_over_keeps_the_order_around_the_list() {
        let (mut old, mut s) = (Outbox::new(10, 4), MemoryList::default());
        (1..=2).for_each(|i| old.push(ev(i)));
        let batch = old.take_batch(2);
        (3..=4).for_each(|i| old.push(ev(i)));
        old.tick(&mut s, TickInput { slice: 1, ..AWAY }); // 4 goes to the list
        old.give_back(batch);
        let mut new = Outbox::new(10, 4);
        new.set_list_len(s.0.len() as u64);
        old.hand_over(&mut new);
        assert_eq!(old.memory_len(), 0);
        assert_eq!(drain(&mut new, &mut s, BACK), [1, 2, 3, 4]);
    }

    fn marks(s: &MemoryList) -> Vec<u8> {
        s.0.iter().map(|i| i[0]).collect()
    }

    #[test]
    fn spills_write_compact_items_and_refills_read_them_back_with_their_ids() {
        let (mut o, mut s) = (Outbox::new(1000, 4), MemoryList::default());
        (1..=20).for_each(|i| o.push(ev(i)));
        o.tick(&mut s, TickInput { slice: 7, ..AWAY });
        o.tick(&mut s, TickInput { slice: 7, ..AWAY });
        o.tick(&mut s, TickInput { slice: 7, ..AWAY });
        // One full item, 15 compact ones, then full again: three spills, one back.
        let expected: Vec<u8> = (0..20)
            .map(|i| if i % 16 == 0 { 0x1e } else { 0x1c })
            .collect();
        assert_eq!(marks(&s), expected);
        // Refilled 3 at a time (each refill from the middle of the list), trimmed as confirmed.
        let mut got = vec![];
        for _ in 0..100 {
            o.tick(&mut s, TickInput { slice: 3, ..BACK });
            if let Some(front) = s.0.front() {
                assert_eq!(front[0], 0x1e, "the front stays full");
            }
            let b = o.take_batch(2);
            if b.is_empty() && !o.has_work() {
                break;
            }
            o.confirmed(&b);
            got.extend(b);
        }
        let want: Vec<Event> = (1..=20).map(ev).collect();
        let got: Vec<Event> = got
            .into_iter()
            .map(|e| Event { list_copy: 0, ..e })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn what_the_outbox_cannot_vouch_for_is_written_full() {
        let (mut o, mut s) = (Outbox::new(1000, 4), MemoryList::default());
        let spill = |o: &mut Outbox, s: &mut MemoryList, events: &[Event]| {
            events.iter().for_each(|e| o.push(e.clone()));
            o.tick(s, AWAY);
        };
        spill(&mut o, &mut s, &[ev(1), ev(2)]);
        // A restart: the list is the previous run's, the new run writes full first.
        let mut o = Outbox::new(1000, 4);
        o.set_list_len(s.0.len() as u64);
        spill(&mut o, &mut s, &[ev_of(8, 3), ev_of(8, 4)]);
        // Items adopted from elsewhere: unknown again. So after a reconcile.
        s.0.push_back(ev_of(9, 100).to_list_item());
        o.list_appended(1);
        spill(&mut o, &mut s, &[ev_of(8, 5), ev_of(8, 6)]);
        assert_eq!(o.reconcile(s.0.len() as u64 + 1), 0);
        s.0.push_back(b"0\nset\nby hand".to_vec());
        spill(&mut o, &mut s, &[ev_of(8, 7)]);
        // Another run's event at the back is full, and the next one of ours again.
        spill(&mut o, &mut s, &[ev_of(2, 8), ev_of(8, 9)]);
        assert_eq!(
            marks(&s),
            [0x1e, 0x1c, 0x1e, 0x1c, 0x1e, 0x1e, 0x1c, b'0', 0x1e, 0x1e, 0x1e]
        );
        let items: Vec<Vec<u8>> = s.0.iter().cloned().collect();
        assert!(ListReader::read_after(&items, 0)
            .take(7)
            .all(|e| e.id.is_some()));
    }

    #[test]
    fn a_spill_of_the_head_is_a_group_starting_full() {
        let (mut o, mut s) = (Outbox::new(1000, 4), MemoryList::default());
        (1..=3).for_each(|i| o.push(ev(i)));
        let b = o.take_batch(3);
        (4..=6).for_each(|i| o.push(ev(i)));
        o.tick(&mut s, AWAY); // 4..=6 at the back
        o.give_back(b);
        o.tick(&mut s, AWAY); // 1..=3 at the front: a group of its own
        assert_eq!(marks(&s), [0x1e, 0x1c, 0x1c, 0x1e, 0x1c, 0x1c]);
        // Into an empty list, the group is the back too.
        let (mut o, mut s) = (Outbox::new(1000, 4), MemoryList::default());
        (1..=3).for_each(|i| o.push(ev(i)));
        let b = o.take_batch(3);
        o.give_back(b);
        o.tick(&mut s, AWAY);
        o.push(ev(4));
        o.tick(&mut s, AWAY);
        assert_eq!(marks(&s), [0x1e, 0x1c, 0x1c, 0x1c]);
        assert_eq!(drain(&mut o, &mut s, BACK), [1, 2, 3, 4]);
    }

    #[test]
    fn encode_back_continues_the_back_as_a_spill_would() {
        let (mut o, mut s) = (Outbox::new(1000, 4), MemoryList::default());
        let (mut out, mut lens) = (vec![], vec![]);
        let events: Vec<Event> = (1..=3).map(ev).collect();
        // An empty list: the first is full.
        o.encode_back(&events, &mut out, &mut lens);
        s.push_back(&split(&out, &lens)).unwrap();
        o.encoded_appended(3);
        (4..=5).for_each(|i| o.push(ev(i)));
        o.tick(&mut s, AWAY);
        assert_eq!(marks(&s), [0x1e, 0x1c, 0x1c, 0x1c, 0x1c]);
        assert_eq!(o.list_len(), 5);
        // A failed write: the back is forgotten, the next item full.
        let (mut out, mut lens) = (vec![], vec![]);
        o.encode_back(&[ev(6)], &mut out, &mut lens);
        o.forget_back();
        out.clear();
        lens.clear();
        o.encode_back(&[ev(6)], &mut out, &mut lens);
        assert_eq!((out[0], lens.len()), (0x1e, 1));
        s.push_back(&split(&out, &lens)).unwrap();
        o.encoded_appended(1);
        assert_eq!(drain(&mut o, &mut s, BACK), [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn legacy_items_in_the_list_are_delivered_first() {
        let (mut o, mut s) = (Outbox::new(10, 4), MemoryList::default());
        s.0.push_back(b"0\nset\nold".to_vec());
        o.set_list_len(1);
        o.push(ev(1));
        o.tick(&mut s, BACK);
        let b = o.take_batch(10);
        assert_eq!(&b[0].body[..], b"0\nset\nold");
        assert_eq!(b[0].id, None);
    }

    #[test]
    fn a_list_emptied_behind_our_back_is_noticed() {
        let (mut o, mut s) = (Outbox::new(10, 4), MemoryList::default());
        o.set_list_len(50);
        o.tick(&mut s, BACK);
        assert_eq!(o.list_len(), 0);
        assert!(!o.has_work());
    }

    #[test]
    fn an_event_counts_its_size_and_its_heap() {
        let short = ev(1);
        assert_eq!(event_bytes(&short), std::mem::size_of::<Event>());
        let e = long(2, 1000);
        assert_eq!(event_bytes(&e), std::mem::size_of::<Event>() + 1000);
        let mut o = Outbox::new(10, 4);
        o.push(short);
        o.push(e);
        assert_eq!(o.memory_bytes(), 2 * std::mem::size_of::<Event>() + 1000);
    }

    #[test]
    fn bytes_follow_events_in_flight_confirmed_and_given_back() {
        let size = std::mem::size_of::<Event>();
        let (mut o, mut s) = (Outbox::new(100, 4), MemoryList::default());
        (1..=4).for_each(|i| o.push(long(i, 500)));
        let all = 4 * (size + 500);
        assert_eq!(o.memory_bytes(), all);
        let mut b = o.take_batch(3);
        assert_eq!(o.memory_bytes(), all, "in flight is memory too");
        let rest = b.split_off(1);
        o.confirmed(&b);
        assert_eq!(o.memory_bytes(), 3 * (size + 500));
        o.give_back(rest);
        assert_eq!(o.memory_bytes(), 3 * (size + 500));
        // Spilled, refilled (copies), forgotten: counted each time.
        o.tick(&mut s, AWAY);
        assert_eq!((o.memory_bytes(), o.memory_len()), (0, 0));
        o.tick(&mut s, BACK);
        assert_eq!(o.memory_len(), 3);
        assert_eq!(o.memory_bytes(), bytes_held(&o, &VecDeque::new()));
        o.push(ev(5));
        o.forget_list();
        assert_eq!(o.memory_bytes(), size, "only the new event is left");
        let mut new = Outbox::new(10, 4);
        o.hand_over(&mut new);
        assert_eq!((o.memory_bytes(), new.memory_bytes()), (0, size));
    }

    #[test]
    fn big_events_spill_on_bytes_while_under_the_event_count() {
        let size = std::mem::size_of::<Event>() + 1024;
        let (mut o, mut s) = (Outbox::new(1000, 4), MemoryList::default());
        o.set_capacity_bytes(10 * size);
        (1..=10).for_each(|i| o.push(long(i, 1024)));
        assert!(
            !o.wants_tick(Broker::Unsure, 0, 0),
            "at the bound, not over it"
        );
        (11..=40).for_each(|i| o.push(long(i, 1024)));
        assert!(
            o.wants_tick(Broker::Unsure, 0, 0),
            "40 events, far under 1000"
        );
        let slice5 = TickInput {
            broker: Broker::Unsure,
            slice: 5,
            ..AWAY
        };
        // A slice per step, as over the event count, until memory is within the bound.
        let r = o.tick(&mut s, slice5);
        assert_eq!((r.spilled, r.more), (5, true));
        let mut steps = 1;
        while o.tick(&mut s, slice5).more {
            steps += 1;
            assert!(steps < 20, "does not settle");
        }
        assert_eq!((steps, o.memory_len(), o.list_len()), (5, 10, 30));
        assert_eq!(o.memory_bytes(), 10 * size);
        // Connected again: within the bound after every step, everything once, in order.
        let mut out = vec![];
        for _ in 0..1000 {
            let r = o.tick(&mut s, BACK);
            if !r.more {
                assert!(o.memory_bytes() <= 10 * size, "{} bytes", o.memory_bytes());
            }
            let b = o.take_batch(3);
            o.confirmed(&b);
            out.extend(seqs(&b));
            if b.is_empty() && !o.has_work() {
                break;
            }
        }
        assert_eq!(out, (1..=40).collect::<Vec<_>>());
        assert_eq!(o.memory_bytes(), 0);
    }

    #[test]
    fn the_refill_keeps_within_the_bytes_and_waits_for_room() {
        let size = std::mem::size_of::<Event>() + 1000;
        let (mut o, mut s) = (Outbox::new(1000, 100), MemoryList::default());
        (1..=50).for_each(|i| o.push(long(i, 1000)));
        o.tick(&mut s, AWAY);
        o.set_capacity_bytes(5 * size + size / 2);
        let r = o.tick(&mut s, BACK);
        assert_eq!((r.refilled, o.memory_len()), (5, 5), "5 fit, not 6");
        // The next one does not fit: no step is wanted until room is made (no busy loop).
        assert!(!o.wants_tick(Broker::Ready, 0, 0));
        let b = o.take_batch(2);
        assert!(!o.wants_tick(Broker::Ready, 0, 0), "in flight still counts");
        o.confirmed(&b);
        assert!(o.wants_tick(Broker::Ready, 0, 0));
        assert_eq!(o.tick(&mut s, BACK).refilled, 2);
        assert_eq!(seqs(&b), [1, 2]);
        assert_eq!(drain(&mut o, &mut s, BACK), (3..=50).collect::<Vec<_>>());
    }

    #[test]
    fn an_event_larger_than_the_bound_still_goes_through() {
        let (mut o, mut s) = (Outbox::new(100, 4), MemoryList::default());
        o.set_capacity_bytes(500);
        o.push(long(1, 4000));
        o.push(ev(2));
        o.push(long(3, 4000));
        let mut steps = 0;
        let mut out = vec![];
        while steps < 100 {
            steps += 1;
            let r = o.tick(&mut s, BACK);
            // Never both an oversized copy and a second event ready.
            assert!(o.head.len() <= 1 || o.memory_bytes() <= 500, "{o:?}");
            let b = o.take_batch(10);
            o.confirmed(&b);
            out.extend(seqs(&b));
            if !r.more && b.is_empty() && !o.has_work() {
                break;
            }
        }
        assert_eq!(out, [1, 2, 3]);
        assert!(steps < 20, "{steps} steps for 3 events");
        // Alone and ready (it went through the list: the bound holds for the tail), it stays:
        // no step moves it to the list and back.
        o.push(long(4, 4000));
        assert_eq!(o.tick(&mut s, BACK).spilled, 1);
        assert_eq!(o.tick(&mut s, BACK).refilled, 1);
        let b = o.take_batch(1);
        assert_eq!(seqs(&b), [4]);
        o.give_back(b);
        assert!(!o.wants_tick(Broker::Ready, 0, 0));
        assert!(!o.wants_tick(Broker::Unsure, 0, 0));
    }

    #[test]
    fn over_the_bytes_bound_with_no_list_drops_and_counts() {
        let size = std::mem::size_of::<Event>() + 200;
        let (mut o, mut s) = (Outbox::new(100, 4), MemoryList::default());
        o.set_capacity_bytes(3 * size);
        (1..=10).for_each(|i| o.push(long(i, 200)));
        let b = o.take_batch(3);
        let r = o.tick(
            &mut s,
            TickInput {
                broker: Broker::Unsure,
                fallback_size: -1,
                ..AWAY
            },
        );
        assert_eq!(
            (r.dropped, o.memory_len(), o.memory_bytes()),
            (7, 3, 3 * size),
            "the batch in flight fills the bound"
        );
        o.confirmed(&b);
        assert_eq!(o.memory_bytes(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u8),
        /// One event with a body this many bytes long (times 16).
        PushLong(u8),
        /// Ticks with the same broker until no more is wanted: it must settle.
        Settle(Broker),
        Take(u8),
        Confirm,
        Fail,
        Tick {
            broker: Broker,
            slice: u8,
        },
        /// Redis dies: memory is gone, the list stays.
        Crash,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u8..5).prop_map(Op::Push),
            (1u8..64).prop_map(Op::PushLong),
            (1u8..6).prop_map(Op::Take),
            Just(Op::Confirm),
            Just(Op::Fail),
            (
                prop_oneof![
                    Just(Broker::Ready),
                    Just(Broker::Unsure),
                    Just(Broker::Away)
                ],
                1u8..8
            )
                .prop_map(|(broker, slice)| Op::Tick { broker, slice }),
            prop_oneof![
                Just(Broker::Ready),
                Just(Broker::Unsure),
                Just(Broker::Away)
            ]
            .prop_map(Op::Settle),
        ]
    }

    /// The bytes bound after a step that wants no other: within it, or all that is left is in
    /// flight, or one event alone and ready (see the file's comment).
    fn within_bytes(o: &Outbox, capb: usize) -> bool {
        o.memory_bytes() <= capb
            || o.tail.is_empty() && (o.head.is_empty() || o.head.len() == 1 && o.in_flight() == 0)
    }

    /// Ticks (the clock moving a millisecond each) until no more is wanted; false if that
    /// takes more than 1000 steps (a busy loop).
    fn settle(
        o: &mut Outbox,
        s: &mut MemoryList,
        input: TickInput,
        now: &mut u64,
        dropped: &mut u64,
    ) -> bool {
        for _ in 0..1000 {
            *now += 1;
            let r = o.tick(
                s,
                TickInput {
                    now_ms: *now,
                    ..input
                },
            );
            *dropped += r.dropped;
            if !r.more {
                return true;
            }
        }
        false
    }

    #[test]
    fn reconcile_counts_what_no_copy_holds() {
        let mut s = MemoryList::default();
        let mut o = Outbox::new(100, 10);
        for i in 1..=10 {
            o.push(ev(i));
        }
        o.tick(&mut s, AWAY);
        assert_eq!(o.list_len(), 10);
        assert_eq!(o.reconcile(10), 0, "unchanged");
        // An operator trims the list to its 4 newest: 6 lost, the count follows Redis.
        s.keep_back(4).unwrap();
        assert_eq!(o.reconcile(4), 6);
        assert_eq!(o.list_len(), 4);
        // Copies in memory are not lost: 3 read back, then the list is deleted.
        let r = o.tick(&mut s, TickInput { slice: 3, ..BACK });
        assert_eq!(r.refilled, 3);
        s.0.clear();
        assert_eq!(o.reconcile(0), 1, "one item had no copy");
        assert_eq!(
            seqs(&o.take_batch(10)),
            vec![7, 8, 9],
            "the copies are still published"
        );
        // Items someone added are not losses.
        assert_eq!(o.reconcile(5), 0);
        assert_eq!(o.list_len(), 5);
    }

    #[test]
    fn a_list_cut_behind_our_back_shows_in_the_report() {
        let mut s = MemoryList::default();
        let mut o = Outbox::new(100, 10);
        for i in 1..=10 {
            o.push(ev(i));
        }
        o.tick(&mut s, AWAY);
        s.keep_back(2).unwrap();
        // The refill reads fewer items than it counted.
        let r = o.tick(&mut s, BACK);
        assert_eq!(r.lost, 8);
        assert_eq!(o.list_len(), 2);
    }

    #[test]
    fn near_maxmemory_the_list_keeps_its_length_dropping_the_oldest() {
        let mut s = MemoryList::default();
        let mut o = Outbox::new(100_000, 10);
        for i in 1..=10 {
            o.push(ev(i));
        }
        o.tick(&mut s, AWAY);
        o.set_memory_full(true);
        for i in 11..=15 {
            o.push(ev(i));
        }
        let r = o.tick(&mut s, AWAY);
        assert_eq!((r.spilled, r.dropped, r.dropped_memory), (5, 5, 5));
        assert_eq!(o.list_len(), 10);
        assert_eq!(s.0.len(), 10);
        let first = Event::from_list_item(&s.0[0]);
        assert_eq!(first.id.unwrap().seq, 6, "the oldest went");
        // With FALLBACK_SIZE lower still, its drops are not memory drops.
        for i in 16..=17 {
            o.push(ev(i));
        }
        let r = o.tick(
            &mut s,
            TickInput {
                fallback_size: 8,
                ..AWAY
            },
        );
        assert_eq!(
            (r.dropped, r.dropped_memory),
            (4, 0),
            "the cap alone takes these"
        );
        assert_eq!(o.list_len(), 8);
        // Memory holds few events while it lasts: the rest spill (and push out the oldest).
        let mut o = Outbox::new(100_000, 10);
        o.set_memory_full(true);
        for i in 1..=(MEMORY_FULL_QUEUE as u64 + 700) {
            o.push(ev(i));
        }
        let mut s = MemoryList::default();
        let r = o.tick(
            &mut s,
            TickInput {
                broker: Broker::Unsure,
                ..AWAY
            },
        );
        // The list was empty: the oldest are dropped straight away, all the excess (more
        // than a slice: memory must not grow step after step).
        let mut o2 = Outbox::new(100_000, 10);
        o2.set_memory_full(true);
        for i in 1..=(MEMORY_FULL_QUEUE as u64 + 1700) {
            o2.push(ev(i));
        }
        let r2 = o2.tick(
            &mut s,
            TickInput {
                broker: Broker::Unsure,
                ..AWAY
            },
        );
        assert_eq!((r2.dropped, r2.dropped_memory), (1700, 1700));
        assert_eq!(o2.memory_len(), MEMORY_FULL_QUEUE);
        assert_eq!(seqs(&o2.take_batch(1)), vec![1701]);
        assert_eq!((r.dropped, r.dropped_memory, r.spilled), (1000, 1000, 0));
        assert!(s.0.is_empty());
        o.set_memory_full(false);
        assert!(!o.wants_tick(Broker::Unsure, 0, 0), "under capacity again");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Redis may die at any moment: everything that reached the list and was not confirmed
        /// is still there, so a restart delivers it; only events that never left memory can be
        /// lost, and first deliveries keep their order across the crash.
        #[test]
        fn crashes_lose_only_what_never_reached_the_list(
            ops in proptest::collection::vec(prop_oneof![9 => op(), 1 => Just(Op::Crash)], 1..250),
            cap in 1usize..8,
            capb in prop_oneof![Just(usize::MAX), 50usize..3000],
            delay in 0u64..3,
        ) {
            let new_outbox = || {
                let mut o = Outbox::new(cap, 2);
                o.set_capacity_bytes(capb);
                o.set_spill_delay(std::time::Duration::from_millis(delay));
                o
            };
            let (mut o, mut s) = (new_outbox(), MemoryList::default());
            let (mut next, mut now) = (1u64, 0u64);
            let mut batches: VecDeque<Vec<Event>> = VecDeque::new();
            let mut delivered: Vec<u64> = vec![];
            let mut durable = std::collections::HashSet::new();
            let mut lost = std::collections::HashSet::new();
            let in_store = |s: &MemoryList| -> std::collections::HashSet<u64> {
                let items: Vec<Vec<u8>> = s.0.iter().cloned().collect();
                ListReader::read_after(&items, 0).filter_map(|e| e.id).map(|id| id.seq).collect()
            };
            // A crash is a restart: the events after it are another run's.
            let mut run = 1u8;
            let mut sent = std::collections::HashMap::new();
            for op in ops {
                match op {
                    Op::Push(n) => for _ in 0..n { sent.insert(next, ev_of(run, next)); o.push(ev_of(run, next)); next += 1; },
                    Op::PushLong(n) => { sent.insert(next, long_of(run, next, 16 * n as usize)); o.push(long_of(run, next, 16 * n as usize)); next += 1; }
                    Op::Take(n) => { let b = o.take_batch(n as usize); if !b.is_empty() { batches.push_back(b); } }
                    Op::Confirm => if let Some(b) = batches.pop_front() { check_delivered(&b, &sent)?; o.confirmed(&b); delivered.extend(seqs(&b)); },
                    Op::Fail => while let Some(b) = batches.pop_back() { o.give_back(b); },
                    Op::Tick { broker, slice } => {
                        now += 1;
                        let r = o.tick(&mut s, TickInput { broker, fallback_size: 0, slice: slice as usize, now_ms: now });
                        prop_assert!(r.error.is_none());
                    }
                    Op::Settle(broker) => {
                        let input = TickInput { broker, fallback_size: 0, slice: 3, now_ms: now };
                        prop_assert!(settle(&mut o, &mut s, input, &mut now, &mut 0), "no end of steps");
                    }
                    Op::Crash => {
                        let stored = in_store(&s);
                        let (head, tail) = (o.head.iter(), o.tail.iter());
                        for e in batches.iter().flatten().chain(head).chain(tail) {
                            let seq = e.id.unwrap().seq;
                            if !stored.contains(&seq) {
                                prop_assert!(!durable.contains(&seq), "event {} was in the list and is gone", seq);
                                lost.insert(seq);
                            }
                        }
                        batches.clear();
                        run = run.wrapping_add(1);
                        o = new_outbox();
                        o.set_list_len(s.0.len() as u64);
                    }
                }
                prop_assert_eq!(o.memory_bytes(), bytes_held(&o, &batches));
                check_list(&s, &sent)?;
                let stored = in_store(&s);
                for seq in &durable {
                    prop_assert!(stored.contains(seq) || delivered.contains(seq), "event {} left the list unconfirmed", seq);
                }
                durable.extend(stored);
            }
            while let Some(b) = batches.pop_back() { o.give_back(b); }
            let last = drain_events(&mut o, &mut s, TickInput { broker: Broker::Ready, fallback_size: 0, slice: 5, now_ms: now }, &mut 0);
            check_delivered(&last, &sent)?;
            delivered.extend(seqs(&last));
            let mut seen = std::collections::HashSet::new();
            let firsts: Vec<u64> = delivered.iter().copied().filter(|q| seen.insert(*q)).collect();
            prop_assert!(firsts.windows(2).all(|w| w[0] < w[1]), "out of order: {:?}", firsts);
            prop_assert_eq!(firsts.len() + lost.len(), (next - 1) as usize, "lost events");
            prop_assert!(s.0.is_empty());
        }

        /// Under any interleaving: first deliveries keep the order events were produced in,
        /// nothing is lost unless counted as dropped, memory stays within both bounds after
        /// each tick (unless the broker is away), the bytes counted are those of the events
        /// held, and ticks alone come to an end.
        #[test]
        fn order_no_loss_and_cap(ops in proptest::collection::vec(op(), 1..200),
                                 cap in 1usize..8, fallback in -1i64..6, delay in 0u64..3,
                                 capb in prop_oneof![Just(usize::MAX), 50usize..3000]) {
            let (mut o, mut s) = (Outbox::new(cap, 2), MemoryList::default());
            o.set_capacity_bytes(capb);
            o.set_spill_delay(std::time::Duration::from_millis(delay));
            let (mut next, mut dropped, mut now) = (1u64, 0u64, 0u64);
            let mut batches: VecDeque<Vec<Event>> = VecDeque::new();
            let mut delivered: Vec<u64> = vec![];
            // Runs change every 10 events (a list that holds several runs' events).
            let run_of = |seq: u64| (seq / 10 % 3) as u8 + 1;
            let mut sent = std::collections::HashMap::new();
            for op in ops {
                match op {
                    Op::Push(n) => for _ in 0..n { sent.insert(next, ev_of(run_of(next), next)); o.push(ev_of(run_of(next), next)); next += 1; },
                    Op::PushLong(n) => { let e = long_of(run_of(next), next, 16 * n as usize); sent.insert(next, e.clone()); o.push(e); next += 1; }
                    Op::Take(n) => { let b = o.take_batch(n as usize); if !b.is_empty() { batches.push_back(b); } }
                    Op::Confirm => if let Some(b) = batches.pop_front() { check_delivered(&b, &sent)?; o.confirmed(&b); delivered.extend(seqs(&b)); },
                    // A failure loses every batch in flight; they come back oldest first.
                    Op::Fail => while let Some(b) = batches.pop_back() { o.give_back(b); },
                    Op::Crash => unreachable!("not generated here"),
                    Op::Tick { broker, slice } => {
                        now += 1;
                        let r = o.tick(&mut s, TickInput { broker, fallback_size: fallback, slice: slice as usize, now_ms: now });
                        dropped += r.dropped;
                        prop_assert!(r.error.is_none());
                        if !r.more {
                            prop_assert!(o.memory_len() - o.in_flight() <= cap || broker == Broker::Away);
                            prop_assert!(within_bytes(&o, capb) || broker == Broker::Away, "{} bytes over {}", o.memory_bytes(), capb);
                        }
                    }
                    Op::Settle(broker) => {
                        let input = TickInput { broker, fallback_size: fallback, slice: 3, now_ms: now };
                        prop_assert!(settle(&mut o, &mut s, input, &mut now, &mut dropped), "no end of steps");
                        prop_assert!(o.memory_len() - o.in_flight() <= cap || broker == Broker::Away);
                        prop_assert!(within_bytes(&o, capb) || broker == Broker::Away, "{} bytes over {}", o.memory_bytes(), capb);
                    }
                }
                prop_assert_eq!(o.memory_bytes(), bytes_held(&o, &batches));
                prop_assert_eq!(o.list_len(), s.0.len() as u64);
                check_list(&s, &sent)?;
            }
            while let Some(b) = batches.pop_back() { o.give_back(b); }
            let last = TickInput { broker: Broker::Ready, fallback_size: fallback, slice: 5, now_ms: now };
            let last = drain_events(&mut o, &mut s, last, &mut dropped);
            check_delivered(&last, &sent)?;
            delivered.extend(seqs(&last));
            let mut seen = std::collections::HashSet::new();
            let firsts: Vec<u64> = delivered.iter().copied().filter(|q| seen.insert(*q)).collect();
            prop_assert!(firsts.windows(2).all(|w| w[0] < w[1]), "out of order: {:?}", firsts);
            prop_assert_eq!(firsts.len() as u64 + dropped, next - 1, "lost events");
            prop_assert!(!o.has_work());
        }
    }
}
