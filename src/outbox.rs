//! The outbox: every event not yet confirmed by the broker, as one ordered sequence
//!
//! ```text
//!   [in flight] ++ [head] ++ [fallback list] ++ [tail]
//!    publisher      memory     Redis list        memory
//! ```
//!
//! New events join the tail. The publisher takes batches from the front; what it cannot get
//! confirmed it gives back to the front. Spilling moves memory into the list at either end of it
//! (head items to its front, tail items to its back), refilling moves the list's front into the
//! head, so the order above never changes. Nothing behind the list is published while the list
//! is not empty.
//!
//! Pure logic: the list is reached through [`ListStore`], so this file is tested without Redis.

use std::collections::VecDeque;

use crate::event::Event;

/// The fallback list, as the outbox needs it. Errors are messages for the log.
#[allow(clippy::len_without_is_empty)] // `len` asks Redis; callers need the number.
pub trait ListStore {
    /// Inserts `items` at the front, keeping their order.
    fn push_front(&mut self, items: &[Vec<u8>]) -> Result<(), String>;
    /// Appends `items` at the back, keeping their order.
    fn push_back(&mut self, items: &[Vec<u8>]) -> Result<(), String>;
    /// Removes and returns up to `n` items from the front.
    fn pop_front(&mut self, n: usize) -> Result<Vec<Vec<u8>>, String>;
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
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    pub spilled: u64,
    pub refilled: u64,
    pub dropped: u64,
    /// More work is waiting: run another step soon.
    pub more: bool,
    pub error: Option<String>,
}

#[derive(Debug)]
pub struct Outbox {
    in_flight: usize,
    head: VecDeque<Event>,
    list_len: u64,
    tail: VecDeque<Event>,
    capacity: usize,
    /// Refill when fewer than this many events are in flight or ready.
    refill_below: usize,
}

impl Outbox {
    pub fn new(capacity: usize, refill_below: usize) -> Outbox {
        Outbox {
            in_flight: 0,
            head: VecDeque::new(),
            list_len: 0,
            tail: VecDeque::new(),
            capacity: capacity.max(1),
            refill_below: refill_below.clamp(1, capacity.max(1)),
        }
    }

    /// Adds a new event (the keyspace callback). Never fails and never blocks: a queue over
    /// capacity is brought back under it by the next [`Outbox::tick`].
    pub fn push(&mut self, event: Event) {
        self.tail.push_back(event);
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

    pub fn list_len(&self) -> u64 {
        self.list_len
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Anything to publish, here or in the list.
    pub fn has_work(&self) -> bool {
        self.memory_len() > 0 || self.list_len > 0
    }

    /// Something the publisher can take right now.
    pub fn has_ready(&self) -> bool {
        !self.head.is_empty() || (self.list_len == 0 && !self.tail.is_empty())
    }

    /// Learns the list's length (at load, or when it was changed behind our back).
    pub fn set_list_len(&mut self, len: u64) {
        self.list_len = len;
    }

    /// Hands the publisher up to `max` events, oldest first.
    pub fn take_batch(&mut self, max: usize) -> Vec<Event> {
        if self.head.is_empty() && self.list_len == 0 {
            std::mem::swap(&mut self.head, &mut self.tail);
        }
        let n = max.min(self.head.len());
        self.in_flight += n;
        self.head.drain(..n).collect()
    }

    /// The broker confirmed `n` events of the batches handed out.
    pub fn confirmed(&mut self, n: usize) {
        self.in_flight = self.in_flight.saturating_sub(n);
    }

    /// Unconfirmed events come back, in their order, ahead of everything else.
    pub fn give_back(&mut self, events: Vec<Event>) {
        self.in_flight = self.in_flight.saturating_sub(events.len());
        for e in events.into_iter().rev() {
            self.head.push_front(e);
        }
    }

    /// One bounded maintenance step on the main thread: spill when the broker is away or memory
    /// is over capacity, refill from the list when the publisher runs short, enforce the cap.
    pub fn tick(&mut self, store: &mut impl ListStore, input: TickInput) -> TickReport {
        let mut report = TickReport::default();
        let result = self.spill_or_refill(store, input, &mut report);
        if let Err(e) = result.and_then(|()| self.enforce_cap(store, input, &mut report)) {
            report.error = Some(e);
        }
        report.more = self.wants_tick(input.broker, input.fallback_size);
        report
    }

    /// Whether a [`Outbox::tick`] would have something to do.
    pub fn wants_tick(&self, broker: Broker, fallback_size: i64) -> bool {
        let spillable = !self.head.is_empty() || !self.tail.is_empty();
        let spill = spillable && (broker == Broker::Away || self.memory_len() > self.capacity);
        let over_cap = fallback_size > 0 && self.list_len > fallback_size as u64;
        spill || over_cap || self.refill_wanted(broker)
    }

    /// Only for a broker taking events: refilling for one that may be down would move the
    /// backlog out of Redis's durability for nothing.
    fn refill_wanted(&self, broker: Broker) -> bool {
        broker == Broker::Ready
            && self.list_len > 0
            && self.in_flight + self.head.len() < self.refill_below
    }

    fn spill_or_refill(
        &mut self,
        store: &mut impl ListStore,
        input: TickInput,
        report: &mut TickReport,
    ) -> Result<(), String> {
        let (from_head, from_tail) = self.spill_plan(input);
        if from_head + from_tail > 0 {
            return self.spill(store, input.fallback_size, from_head, from_tail, report);
        }
        if self.refill_wanted(input.broker) {
            // The tail does not count here: when it is what fills memory, the next step spills it.
            let room = self
                .capacity
                .saturating_sub(self.in_flight + self.head.len());
            let want = (self.refill_below * 2).min(room).min(input.slice.max(1));
            let want = want.min(usize::try_from(self.list_len).unwrap_or(usize::MAX));
            let items = store.pop_front(want)?;
            if items.len() < want {
                // Shorter than we thought: someone trimmed or deleted it. Trust Redis.
                self.list_len = store.len()?;
            } else {
                self.list_len -= items.len() as u64;
            }
            report.refilled += items.len() as u64;
            self.head
                .extend(items.iter().map(|i| Event::from_list_item(i)));
        }
        Ok(())
    }

    /// How many events leave the head's back and the tail's front.
    fn spill_plan(&self, input: TickInput) -> (usize, usize) {
        let want = if input.broker == Broker::Away {
            self.head.len() + self.tail.len()
        } else {
            self.memory_len().saturating_sub(self.capacity)
        };
        let want = want.min(input.slice);
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
        if fallback_size < 0 {
            // No fallback list: what cannot wait in memory is dropped, and counted.
            self.head.truncate(self.head.len() - from_head);
            self.tail.drain(..from_tail);
            report.dropped += (from_head + from_tail) as u64;
            return Ok(());
        }
        if from_tail > 0 {
            let items: Vec<Vec<u8>> = self
                .tail
                .iter()
                .take(from_tail)
                .map(Event::to_list_item)
                .collect();
            store.push_back(&items)?;
            self.tail.drain(..from_tail);
            self.list_len += from_tail as u64;
        }
        if from_head > 0 {
            let start = self.head.len() - from_head;
            let items: Vec<Vec<u8>> = self.head.range(start..).map(Event::to_list_item).collect();
            store.push_front(&items)?;
            self.head.truncate(start);
            self.list_len += from_head as u64;
        }
        report.spilled += (from_head + from_tail) as u64;
        Ok(())
    }

    fn enforce_cap(
        &mut self,
        store: &mut impl ListStore,
        input: TickInput,
        report: &mut TickReport,
    ) -> Result<(), String> {
        let cap = input.fallback_size;
        if cap > 0 && self.list_len > cap as u64 {
            store.keep_back(cap as u64)?;
            report.dropped += self.list_len - cap as u64;
            self.list_len = cap as u64;
        }
        Ok(())
    }

    /// Moves what is in memory (nothing may be in flight) into a new outbox: how the events
    /// of one load of the module reach the next.
    pub fn hand_over(&mut self, to: &mut Outbox) {
        debug_assert_eq!(self.in_flight, 0);
        to.head.extend(self.head.drain(..));
        to.tail.extend(self.tail.drain(..));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventId, RunId};
    use proptest::prelude::*;

    /// The fallback list, in memory.
    #[derive(Default)]
    struct VecStore(VecDeque<Vec<u8>>);

    impl ListStore for VecStore {
        fn push_front(&mut self, items: &[Vec<u8>]) -> Result<(), String> {
            for i in items.iter().rev() {
                self.0.push_front(i.clone());
            }
            Ok(())
        }
        fn push_back(&mut self, items: &[Vec<u8>]) -> Result<(), String> {
            self.0.extend(items.iter().cloned());
            Ok(())
        }
        fn pop_front(&mut self, n: usize) -> Result<Vec<Vec<u8>>, String> {
            let n = n.min(self.0.len());
            Ok(self.0.drain(..n).collect())
        }
        fn keep_back(&mut self, n: u64) -> Result<(), String> {
            let drop = self.0.len().saturating_sub(n as usize);
            self.0.drain(..drop);
            Ok(())
        }
        fn len(&mut self) -> Result<u64, String> {
            Ok(self.0.len() as u64)
        }
    }

    fn ev(seq: u64) -> Event {
        Event {
            id: Some(EventId {
                run_id: RunId([7; 20]),
                seq,
            }),
            timestamp: 1_700_000_000,
            body: format!("0\nset\nk{seq}").into_bytes(),
        }
    }

    fn seqs(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.id.unwrap().seq).collect()
    }

    const AWAY: TickInput = TickInput {
        broker: Broker::Away,
        fallback_size: 0,
        slice: 1000,
    };
    const BACK: TickInput = TickInput {
        broker: Broker::Ready,
        fallback_size: 0,
        slice: 1000,
    };

    /// Publishes and confirms everything, ticking as the shell does; counts drops in `dropped`.
    fn drain_counting(
        o: &mut Outbox,
        s: &mut VecStore,
        input: TickInput,
        dropped: &mut u64,
    ) -> Vec<u64> {
        let mut out = vec![];
        for _ in 0..10_000 {
            *dropped += o.tick(s, input).dropped;
            let b = o.take_batch(3);
            if b.is_empty() && !o.has_work() {
                break;
            }
            o.confirmed(b.len());
            out.extend(seqs(&b));
        }
        out
    }

    fn drain(o: &mut Outbox, s: &mut VecStore, input: TickInput) -> Vec<u64> {
        drain_counting(o, s, input, &mut 0)
    }

    #[test]
    fn healthy_broker_takes_events_in_order() {
        let mut o = Outbox::new(10, 4);
        (1..=5).for_each(|i| o.push(ev(i)));
        assert_eq!(seqs(&o.take_batch(3)), [1, 2, 3]);
        assert_eq!(o.in_flight(), 3);
        o.confirmed(3);
        assert_eq!(seqs(&o.take_batch(3)), [4, 5]);
    }

    #[test]
    fn outage_spills_and_recovery_drains_the_list_first() {
        let (mut o, mut s) = (Outbox::new(10, 4), VecStore::default());
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
    fn over_capacity_spills_the_newest_while_connected() {
        let (mut o, mut s) = (Outbox::new(4, 2), VecStore::default());
        (1..=7).for_each(|i| o.push(ev(i)));
        let r = o.tick(&mut s, BACK);
        assert_eq!((r.spilled, o.memory_len(), o.list_len()), (3, 4, 3));
        assert_eq!(drain(&mut o, &mut s, BACK), (1..=7).collect::<Vec<_>>());
    }

    #[test]
    fn cap_keeps_the_newest_and_counts_the_rest() {
        let (mut o, mut s) = (Outbox::new(100, 4), VecStore::default());
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
        let (mut o, mut s) = (Outbox::new(100, 4), VecStore::default());
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
        let (mut o, mut s) = (Outbox::new(100, 4), VecStore::default());
        (1..=10).for_each(|i| o.push(ev(i)));
        let r = o.tick(&mut s, TickInput { slice: 4, ..AWAY });
        assert_eq!((r.spilled, r.more), (4, true));
        let r = o.tick(&mut s, TickInput { slice: 4, ..BACK });
        assert!(r.refilled > 0 && r.refilled <= 4);
    }

    #[test]
    fn a_hand_over_keeps_the_order_around_the_list() {
        let (mut old, mut s) = (Outbox::new(10, 4), VecStore::default());
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

    #[test]
    fn legacy_items_in_the_list_are_delivered_first() {
        let (mut o, mut s) = (Outbox::new(10, 4), VecStore::default());
        s.0.push_back(b"0\nset\nold".to_vec());
        o.set_list_len(1);
        o.push(ev(1));
        o.tick(&mut s, BACK);
        let b = o.take_batch(10);
        assert_eq!(b[0].body, b"0\nset\nold");
        assert_eq!(b[0].id, None);
    }

    #[test]
    fn a_list_emptied_behind_our_back_is_noticed() {
        let (mut o, mut s) = (Outbox::new(10, 4), VecStore::default());
        o.set_list_len(50);
        o.tick(&mut s, BACK);
        assert_eq!(o.list_len(), 0);
        assert!(!o.has_work());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u8),
        Take(u8),
        Confirm,
        Fail,
        Tick { broker: Broker, slice: u8 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u8..5).prop_map(Op::Push),
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
        ]
    }

    proptest! {
        /// Under any interleaving: first deliveries keep the order events were produced in,
        /// nothing is lost unless counted as dropped, and memory stays within capacity after
        /// each tick.
        #[test]
        fn order_no_loss_and_cap(ops in proptest::collection::vec(op(), 1..200),
                                 cap in 1usize..8, fallback in -1i64..6) {
            let (mut o, mut s) = (Outbox::new(cap, 2), VecStore::default());
            let (mut next, mut dropped) = (1u64, 0u64);
            let mut batches: VecDeque<Vec<Event>> = VecDeque::new();
            let mut delivered: Vec<u64> = vec![];
            for op in ops {
                match op {
                    Op::Push(n) => for _ in 0..n { o.push(ev(next)); next += 1; },
                    Op::Take(n) => { let b = o.take_batch(n as usize); if !b.is_empty() { batches.push_back(b); } }
                    Op::Confirm => if let Some(b) = batches.pop_front() { o.confirmed(b.len()); delivered.extend(seqs(&b)); },
                    // A failure loses every batch in flight; they come back oldest first.
                    Op::Fail => while let Some(b) = batches.pop_back() { o.give_back(b); },
                    Op::Tick { broker, slice } => {
                        let r = o.tick(&mut s, TickInput { broker, fallback_size: fallback, slice: slice as usize });
                        dropped += r.dropped;
                        prop_assert!(r.error.is_none());
                        if !r.more { prop_assert!(o.memory_len() - o.in_flight() <= cap || broker == Broker::Away); }
                    }
                }
                prop_assert_eq!(o.list_len(), s.0.len() as u64);
            }
            while let Some(b) = batches.pop_back() { o.give_back(b); }
            let last = TickInput { broker: Broker::Ready, fallback_size: fallback, slice: 5 };
            delivered.extend(drain_counting(&mut o, &mut s, last, &mut dropped));
            let mut seen = std::collections::HashSet::new();
            let firsts: Vec<u64> = delivered.iter().copied().filter(|q| seen.insert(*q)).collect();
            prop_assert!(firsts.windows(2).all(|w| w[0] < w[1]), "out of order: {:?}", firsts);
            prop_assert_eq!(firsts.len() as u64 + dropped, next - 1, "lost events");
            prop_assert!(!o.has_work());
        }
    }
}
