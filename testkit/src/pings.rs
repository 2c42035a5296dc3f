//! [`Pings`]: what a PING loop measured, for the tests that check Redis keeps answering.

use std::time::Duration;

/// The round trips of a PING loop: every sample, the worst and when it happened, the slow
/// ones, and how much the loop's own sleeps overran (how starved of CPU the test itself was).
#[derive(Debug, Clone, Default)]
pub struct Pings {
    /// Round trips in microseconds, in order.
    pub samples: Vec<u32>,
    /// The worst round trip.
    pub max: Duration,
    /// When the worst one happened, since the loop started.
    pub max_at: Duration,
    /// `(since the loop started, round trip)` of each one at or above the slow bound.
    pub slow: Vec<(Duration, Duration)>,
    /// The longest a sleep of the loop overran.
    pub max_oversleep: Duration,
    slow_bound: Option<Duration>,
}

impl Pings {
    /// Nothing recorded yet; round trips of at least `slow_bound` also go to [`Pings::slow`]
    /// (`None`: none do).
    pub fn new(slow_bound: Option<Duration>) -> Pings {
        Pings {
            slow_bound,
            ..Pings::default()
        }
    }

    /// Records a round trip `took` that started `at` after the loop; returns whether it is the
    /// worst so far.
    pub fn record(&mut self, at: Duration, took: Duration) -> bool {
        self.samples
            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        if self.slow_bound.is_some_and(|bound| took >= bound) {
            self.slow.push((at, took));
        }
        let worst = took > self.max;
        if worst {
            self.max = took;
            self.max_at = at;
        }
        worst
    }

    /// Records that a sleep of the loop lasted `overran` longer than asked.
    pub fn record_oversleep(&mut self, overran: Duration) {
        self.max_oversleep = self.max_oversleep.max(overran);
    }

    /// How many round trips were recorded.
    pub fn count(&self) -> u64 {
        self.samples.len() as u64
    }

    /// The `p`th percentile (0-100) of the round trips, zero if there are none.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        Duration::from_micros(u64::from(sorted[rank.min(sorted.len() - 1)]))
    }
}
