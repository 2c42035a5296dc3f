//! A [`ListStore`] in memory: the fallback list for tests and benchmarks, as Redis keeps it.

use std::collections::VecDeque;

use crate::core::outbox::ListStore;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryList(pub VecDeque<Vec<u8>>);

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
        let n = usize::try_from(n).unwrap_or(usize::MAX).min(self.0.len());
        self.0.drain(..n);
        Ok(())
    }

    fn keep_back(&mut self, n: u64) -> Result<(), String> {
        let keep = usize::try_from(n).unwrap_or(usize::MAX);
        let drop = self.0.len().saturating_sub(keep);
        self.0.drain(..drop);
        Ok(())
    }

    fn len(&mut self) -> Result<u64, String> {
        Ok(self.0.len() as u64)
    }
}
