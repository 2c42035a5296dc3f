//! A [`ListStore`] in memory: the fallback list for tests and benchmarks, as Redis keeps it,
//! trims included: like `RedisList`, a trim of the front writes the new front's full form
//! over it when it is compact (`core/list_item.rs`).

use std::collections::VecDeque;

use crate::core::list_item::{full_form_of_last, trim_window_start};
use crate::core::outbox::ListStore;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryList(pub VecDeque<Vec<u8>>);

impl MemoryList {
    /// Removes the `n` first items, the new front made full (as LRANGE, LTRIM, LSET do it).
    fn trim_front(&mut self, n: usize) {
        let n = n.min(self.0.len());
        if n == 0 {
            return;
        }
        let start = usize::try_from(trim_window_start(n as u64)).unwrap_or(n);
        let window: Vec<&[u8]> = self
            .0
            .range(start..)
            .take(n + 1 - start)
            .map(Vec::as_slice)
            .collect();
        let full = (window.len() == n + 1 - start)
            .then(|| full_form_of_last(&window))
            .flatten();
        self.0.drain(..n);
        if let (Some(full), Some(front)) = (full, self.0.front_mut()) {
            *front = full;
        }
    }
}

impl ListStore for MemoryList {
    fn push_front(&mut self, items: &[&[u8]]) -> Result<(), String> {
        for i in items.iter().rev() {
            self.0.push_front(i.to_vec());
        }
        Ok(())
    }

    fn push_back(&mut self, items: &[&[u8]]) -> Result<(), String> {
        self.0.extend(items.iter().map(|i| i.to_vec()));
        Ok(())
    }

    fn peek(&mut self, start: u64, n: usize) -> Result<Vec<Vec<u8>>, String> {
        let start = usize::try_from(start).unwrap_or(usize::MAX);
        Ok(self.0.iter().skip(start).take(n).cloned().collect())
    }

    fn remove_front(&mut self, n: u64) -> Result<(), String> {
        self.trim_front(usize::try_from(n).unwrap_or(usize::MAX));
        Ok(())
    }

    fn keep_back(&mut self, n: u64) -> Result<(), String> {
        let keep = usize::try_from(n).unwrap_or(usize::MAX);
        self.trim_front(self.0.len().saturating_sub(keep));
        Ok(())
    }

    fn len(&mut self) -> Result<u64, String> {
        Ok(self.0.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::{test_event as ev, Event};
    use crate::core::list_item::{ListBack, ListReader};
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// This many events of this run at the back.
        Back(u8, u8),
        /// A group at the front.
        Front(u8, u8),
        RemoveFront(u8),
        KeepBack(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u8..40, 1u8..3).prop_map(|(n, r)| Op::Back(n, r)),
            (1u8..40, 1u8..3).prop_map(|(n, r)| Op::Front(n, r)),
            (0u8..40).prop_map(Op::RemoveFront),
            (0u8..60).prop_map(Op::KeepBack),
        ]
    }

    fn encode(events: &[Event], back: &mut ListBack) -> Vec<Vec<u8>> {
        events
            .iter()
            .map(|e| {
                let mut out = vec![];
                back.write(e, &mut out);
                out
            })
            .collect()
    }

    proptest! {
        /// Whatever is pushed at either end and trimmed from the front, the front item is
        /// never compact and the whole list reads back as the events it holds, ids included,
        /// from the front or from any position with the window before it.
        #[test]
        fn the_front_stays_full_and_every_item_keeps_its_id(ops in proptest::collection::vec(op(), 1..40)) {
            let mut list = MemoryList::default();
            let mut model: VecDeque<Event> = VecDeque::new();
            // The outbox's view of the back: unknown whenever the list is empty.
            let mut back = ListBack::default();
            let mut seq = 0u64;
            for op in ops {
                match op {
                    Op::Back(n, run) => {
                        if list.0.is_empty() { back.forget(); }
                        let events: Vec<Event> = (0..n).map(|_| { seq += 1; ev(run, seq) }).collect();
                        let items = encode(&events, &mut back);
                        list.push_back(&items.iter().map(Vec::as_slice).collect::<Vec<_>>()).unwrap();
                        model.extend(events);
                    }
                    Op::Front(n, run) => {
                        let mut group = ListBack::default();
                        let events: Vec<Event> = (0..n).map(|_| { seq += 1; ev(run, seq) }).collect();
                        let items = encode(&events, &mut group);
                        if list.0.is_empty() { back = group; }
                        list.push_front(&items.iter().map(Vec::as_slice).collect::<Vec<_>>()).unwrap();
                        for e in events.into_iter().rev() { model.push_front(e); }
                    }
                    Op::RemoveFront(n) => {
                        list.remove_front(u64::from(n)).unwrap();
                        model.drain(..usize::from(n).min(model.len()));
                    }
                    Op::KeepBack(n) => {
                        list.keep_back(u64::from(n)).unwrap();
                        let drop = model.len().saturating_sub(usize::from(n));
                        model.drain(..drop);
                    }
                }
                if let Some(front) = list.0.front() {
                    prop_assert!(front[0] == 0x1e, "front {:?}", front);
                }
                let items: Vec<Vec<u8>> = list.0.iter().cloned().collect();
                let read: Vec<Event> = ListReader::read_after(&items, 0).collect();
                prop_assert_eq!(&read[..], &model.iter().cloned().collect::<Vec<_>>()[..]);
                for p in 0..items.len() {
                    let start = p.saturating_sub(15);
                    let from_p: Vec<Event> = ListReader::read_after(&items[start..], p - start).collect();
                    prop_assert_eq!(&from_p[..], &read[p..]);
                }
            }
        }
    }
}
