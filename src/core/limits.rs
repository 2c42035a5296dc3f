//! Rate limiting for log lines about a recurring condition (events dropped): the first
//! occurrence is reported at once, later ones are summed and reported at most once per period.

use std::time::{Duration, Instant};

pub struct Throttle {
    period: Duration,
    last_report: Option<Instant>,
    pending: u64,
}

impl Throttle {
    pub const fn new(period: Duration) -> Throttle {
        Throttle {
            period,
            last_report: None,
            pending: 0,
        }
    }

    /// Nothing waits to be reported.
    pub fn idle(&self) -> bool {
        self.pending == 0
    }

    /// Adds `n` occurrences; returns how many to report now, if it is time to.
    pub fn note(&mut self, n: u64, now: Instant) -> Option<u64> {
        self.pending += n;
        if self.pending == 0 {
            return None;
        }
        let due = self
            .last_report
            .is_none_or(|last| now.duration_since(last) >= self.period);
        if !due {
            return None;
        }
        self.last_report = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_at_once_then_one_summary_per_period() {
        let mut t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.note(0, t0), None);
        assert_eq!(t.note(3, t0), Some(3));
        assert_eq!(t.note(5, t0 + Duration::from_secs(1)), None);
        assert_eq!(t.note(2, t0 + Duration::from_secs(9)), None);
        assert_eq!(t.note(0, t0 + Duration::from_secs(10)), Some(7));
        assert_eq!(t.note(0, t0 + Duration::from_secs(30)), None, "quiet");
        // After a quiet period, a new burst is reported at once.
        assert_eq!(t.note(1, t0 + Duration::from_secs(31)), Some(1));
    }
}
