//! How often the module may log about a recurring condition, and how fast it retries: every
//! rate limit of the module, in one place.
//!
//! - [`Throttle`]: counts (events dropped, events returned unroutable). The first occurrence is
//!   reported at once, later ones are summed and reported at most once per period.
//! - [`LogBudget`]: lines (connected, failing over, failed), capped when brokers flap.
//! - [`LastLogged`]: a condition that lasts (a failing list command, a broker's failure) is
//!   logged when it starts or changes, not at every retry.
//! - [`Backoff`]: reconnection delays.

use std::time::{Duration, Instant};

use crate::core::policy::{BACKOFF_MAX, BACKOFF_MIN, LINK_LOG_BURST, LINK_LOG_EVERY_MS};

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

/// A burst of [`LINK_LOG_BURST`] lines, then one every [`LINK_LOG_EVERY_MS`]. A line that
/// follows suppressed ones says how many.
pub struct LogBudget {
    tokens: u64,
    refilled_at: u64,
    suppressed: u64,
}

impl LogBudget {
    pub fn new(now_ms: u64) -> LogBudget {
        LogBudget {
            tokens: LINK_LOG_BURST,
            refilled_at: now_ms,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged at `now_ms`; `Some(n)`: yes, after `n` suppressed ones.
    fn take(&mut self, now_ms: u64) -> Option<u64> {
        let earned = now_ms.saturating_sub(self.refilled_at) / LINK_LOG_EVERY_MS;
        if earned > 0 {
            self.tokens = (self.tokens + earned).min(LINK_LOG_BURST);
            self.refilled_at += earned * LINK_LOG_EVERY_MS;
        }
        if self.tokens == 0 {
            self.suppressed += 1;
            return None;
        }
        self.tokens -= 1;
        Some(std::mem::take(&mut self.suppressed))
    }

    /// The line to log for `msg` at `now_ms`, if the budget allows one.
    pub fn line(&mut self, msg: &str, now_ms: u64) -> Option<String> {
        self.take(now_ms).map(|n| match n {
            0 => msg.to_string(),
            n => format!("{msg} ({n} connection messages suppressed before this one)"),
        })
    }
}

/// The last message logged about a condition that lasts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LastLogged(Option<String>);

impl LastLogged {
    /// Whether `msg` is news (so to log); remembers it.
    pub fn changed(&mut self, msg: &str) -> bool {
        if self.0.as_deref() == Some(msg) {
            return false;
        }
        self.0 = Some(msg.to_string());
        true
    }

    /// The condition ended: the next message is news again.
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

/// Capped exponential back-off with jitter, so many nodes do not reconnect in step.
#[derive(Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The next delay; `noise` (any varying number, such as a clock's nanoseconds) sets the
    /// jitter: -25% .. +25%.
    pub fn next_delay(&mut self, noise: u32) -> Duration {
        let base = BACKOFF_MIN
            .saturating_mul(1 << self.attempt.min(10))
            .min(BACKOFF_MAX);
        self.attempt = self.attempt.saturating_add(1);
        let quarter = base / 4;
        let jitter = quarter.mul_f64(f64::from(noise % 1000) / 500.0);
        (base - quarter + jitter).min(BACKOFF_MAX)
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

    #[test]
    fn connection_lines_are_capped_when_brokers_flap() {
        let mut budget = LogBudget::new(1_000);
        for _ in 0..LINK_LOG_BURST {
            assert_eq!(budget.take(1_000), Some(0));
        }
        assert_eq!(budget.take(1_001), None);
        assert_eq!(budget.line("x", 1_002), None);
        // One more line per period; it says how many were left out.
        assert_eq!(
            budget.line("x", 1_000 + LINK_LOG_EVERY_MS).as_deref(),
            Some("x (2 connection messages suppressed before this one)")
        );
        assert_eq!(budget.take(1_000 + LINK_LOG_EVERY_MS), None);
        // A long quiet time gives the whole burst back, no more.
        let later = 1_000 + 100 * LINK_LOG_EVERY_MS;
        for _ in 0..LINK_LOG_BURST {
            assert!(budget.take(later).is_some());
        }
        assert_eq!(budget.take(later), None);
    }

    #[test]
    fn a_lasting_condition_is_logged_when_it_starts_or_changes() {
        let mut last = LastLogged::default();
        assert!(last.changed("a"));
        assert!(!last.changed("a"));
        assert!(last.changed("b"));
        last.clear();
        assert!(last.changed("b"));
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        let mut b = Backoff::default();
        let delays: Vec<Duration> = (0..20).map(|i| b.next_delay(i * 377)).collect();
        assert!(delays[0] >= BACKOFF_MIN * 3 / 4 && delays[0] <= BACKOFF_MIN * 5 / 4);
        assert!(delays[3] > delays[0]);
        assert!(delays.iter().all(|d| *d <= BACKOFF_MAX));
        assert!(delays[19] >= BACKOFF_MAX * 3 / 4);
    }
}
