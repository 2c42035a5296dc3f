//! `key_evt_amqp.durability`: what survives Redis dying, and the inbox that knows which of its
//! events are already in the journal.
//!
//! With `journal`, a post-notification job appends each forwarded event to the fallback list in
//! the same atomic unit as the write that caused it (`redis/journal.rs`), so the AOF and the
//! replicas get both or neither. The events still go through the inbox to the outbox, which
//! then holds them as copies of list items ([`Outbox::push_journaled`]): an event leaves the
//! list only once the broker confirmed it.
//!
//! Pure logic: the job and the step call it.

use std::ops::Range;

use crate::core::event::Event;
use crate::core::outbox::Outbox;

/// `key_evt_amqp.durability`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Events wait in memory and spill to the list when the broker is away (what the old
    /// module did): a `kill -9` loses what was only in memory.
    #[default]
    Memory,
    /// Every forwarded event is written to the list with the write that caused it.
    Journal,
}

/// What `key_evt_amqp.durability` accepts, for errors.
pub const ACCEPTED: &str = "memory or journal";

impl Durability {
    pub fn parse(value: &[u8]) -> Option<Durability> {
        match value.to_ascii_lowercase().as_slice() {
            b"memory" => Some(Durability::Memory),
            b"journal" => Some(Durability::Journal),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Durability::Memory => "memory",
            Durability::Journal => "journal",
        }
    }
}

/// New events since the last main-thread step, in order, and which of them a journal write
/// took. Only the main thread touches it.
#[derive(Debug, Default)]
pub struct Inbox {
    events: Vec<Event>,
    /// Events from here on have not been offered to the journal yet.
    unwritten: usize,
    /// Ranges of `events` that are in the list (journal writes that succeeded).
    journaled: Vec<Range<usize>>,
}

impl Inbox {
    pub fn push(&mut self, event: Event) {
        self.events.push(event);
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.events.capacity()
    }

    pub fn shrink_to(&mut self, capacity: usize) {
        self.events.shrink_to(capacity);
    }

    /// The events no journal write has been offered yet, oldest first.
    pub fn unwritten(&self) -> &[Event] {
        self.events.get(self.unwritten..).unwrap_or_default()
    }

    /// The events of [`Inbox::unwritten`] were offered to the journal: `journaled` says
    /// whether they are in the list now. Those that are not stay ordinary (memory) events.
    pub fn written(&mut self, journaled: bool) {
        let end = self.events.len();
        if journaled && self.unwritten < end {
            match self.journaled.last_mut() {
                Some(last) if last.end == self.unwritten => last.end = end,
                _ => self.journaled.push(self.unwritten..end),
            }
        }
        self.unwritten = end;
    }

    /// Hands every event to the outbox, in order: those in the journal as copies of their list
    /// items, the others as new events. Returns how many were journaled.
    pub fn drain_into(&mut self, outbox: &mut Outbox) -> usize {
        if self.journaled.is_empty() {
            // Durability memory (the usual case): every event is new, no ranges to follow.
            outbox.push_all(&mut self.events);
            self.unwritten = 0;
            return 0;
        }
        let mut ranges = self.journaled.drain(..).peekable();
        let mut journaled = 0;
        for (i, e) in self.events.drain(..).enumerate() {
            while ranges.peek().is_some_and(|r| r.end <= i) {
                ranges.next();
            }
            if ranges.peek().is_some_and(|r| r.contains(&i)) {
                outbox.push_journaled(e);
                journaled += 1;
            } else {
                outbox.push(e);
            }
        }
        self.unwritten = 0;
        journaled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::Event;
    use crate::core::memory_list::MemoryList;
    use crate::core::outbox::{Broker, TickInput};

    fn ev(seq: u64) -> Event {
        crate::core::event::test_event(3, seq)
    }

    #[test]
    fn durability_parses_its_two_names() {
        assert_eq!(Durability::parse(b"journal"), Some(Durability::Journal));
        assert_eq!(Durability::parse(b"MEMORY"), Some(Durability::Memory));
        assert_eq!(Durability::parse(b"disk"), None);
        assert_eq!(Durability::Journal.name(), "journal");
    }

    #[test]
    fn the_inbox_remembers_which_writes_reached_the_journal() {
        let mut inbox = Inbox::default();
        inbox.push(ev(1));
        inbox.push(ev(2));
        assert_eq!(inbox.unwritten().len(), 2);
        inbox.written(true);
        assert!(inbox.unwritten().is_empty());
        inbox.push(ev(3));
        inbox.written(false); // a failed write: an ordinary event
        inbox.push(ev(4));
        inbox.written(true);
        inbox.push(ev(5)); // not offered yet: ordinary
        let mut outbox = Outbox::new(100, 10);
        assert_eq!(inbox.drain_into(&mut outbox), 3);
        assert!(inbox.is_empty() && inbox.unwritten().is_empty());
        // 1, 2 and 4 are in the list; 3 and 5 only in memory. 1 and 2 are copied in memory
        // too; 4 is not, being behind 3 in memory (a refill reads it).
        assert_eq!(outbox.list_len(), 3);
        assert_eq!(outbox.memory_len(), 4);
    }

    #[test]
    fn adjacent_writes_make_one_range() {
        let mut inbox = Inbox::default();
        for seq in 1..=3 {
            inbox.push(ev(seq));
            inbox.written(true);
        }
        assert_eq!(inbox.journaled, vec![0..3]);
    }

    /// The journal as the job and the step use it: items written to the list with their event,
    /// the event copied in memory; once confirmed, the items leave the list.
    #[test]
    fn journaled_events_leave_the_list_once_confirmed() {
        let mut list = MemoryList::default();
        let mut outbox = Outbox::new(100, 10);
        let mut inbox = Inbox::default();
        for seq in 1..=4 {
            inbox.push(ev(seq));
        }
        let items: Vec<Vec<u8>> = inbox.unwritten().iter().map(Event::to_list_item).collect();
        list.0.extend(items);
        inbox.written(true);
        inbox.drain_into(&mut outbox);
        assert_eq!((outbox.list_len(), outbox.memory_len()), (4, 4));
        let batch = outbox.take_batch(10);
        assert_eq!(
            batch.len(),
            4,
            "the copies are published at once, no refill"
        );
        outbox.confirmed(&batch);
        let input = TickInput {
            broker: Broker::Ready,
            fallback_size: 0,
            slice: 500,
            now_ms: 0,
        };
        let report = outbox.tick(&mut list, input);
        assert_eq!(report.error, None);
        assert!(
            list.0.is_empty(),
            "confirmed items are removed from the list"
        );
        assert!(outbox.is_idle());
    }

    /// FALLBACK_SIZE caps the journal even while the broker takes events, more slowly than
    /// they come: copies waiting in memory are dropped, the batch in flight settles, and the
    /// oldest go.
    #[test]
    fn the_cap_holds_while_a_slow_broker_drains_the_journal() {
        let mut list = MemoryList::default();
        let mut outbox = Outbox::new(1000, 100);
        let mut inbox = Inbox::default();
        let input = TickInput {
            broker: Broker::Ready,
            fallback_size: 500,
            slice: 500,
            now_ms: 0,
        };
        let (mut seq, mut dropped, mut confirmed) = (0, 0, 0);
        for _ in 0..200 {
            // 50 new events a step, 10 confirmed a step.
            for _ in 0..50 {
                seq += 1;
                inbox.push(ev(seq));
            }
            list.0
                .extend(inbox.unwritten().iter().map(Event::to_list_item));
            inbox.written(true);
            inbox.drain_into(&mut outbox);
            let report = outbox.tick(&mut list, input);
            assert_eq!(report.error, None);
            dropped += report.dropped;
            assert_eq!(
                outbox.list_len(),
                list.0.len() as u64,
                "the count follows the list"
            );
            assert!(list.0.len() <= 500 + 50, "capped: {}", list.0.len());
            let batch = outbox.take_batch(10);
            confirmed += batch.len() as u64;
            outbox.confirmed(&batch);
        }
        dropped += outbox.tick(&mut list, input).dropped;
        assert!(confirmed > 0, "the broker still gets events");
        assert_eq!(
            seq,
            dropped + confirmed + outbox.list_len(),
            "every event is delivered, dropped (counted) or waiting"
        );
    }
}
