//! Where the publisher's connection stands, and what that allows the main thread: spill,
//! refill, or wait and see.

use std::time::Instant;

use crate::core::outbox::Broker;
use crate::core::policy::AWAY_AFTER;

/// Where the publisher's connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum LinkState {
    /// No connection and none needed yet (the connection is lazy).
    Idle = 0,
    Connecting = 1,
    Connected = 2,
    /// The last attempt failed or the connection was lost; retrying with back-off.
    Down = 3,
    /// `disconnect` was called: no connection until `connect`.
    Disabled = 4,
}

impl LinkState {
    /// As INFO `connection` shows it.
    pub fn name(self) -> &'static str {
        match self {
            LinkState::Idle => "idle",
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::Down => "down",
            LinkState::Disabled => "disconnected",
        }
    }

    pub fn from_u8(n: u8) -> LinkState {
        match n {
            1 => LinkState::Connecting,
            2 => LinkState::Connected,
            3 => LinkState::Down,
            4 => LinkState::Disabled,
            _ => LinkState::Idle,
        }
    }
}

/// What the broker allows at `now` (from [`now_ms`]). Away: disconnected on purpose, unusable
/// (`unusable_since`) for longer than [`AWAY_AFTER`], or sitting on a batch (`batch_since`)
/// without confirming it for that long. Ready: connected and keeping up. Unsure otherwise
/// (connecting, idle, the first second of a failure). A time of 0 means "not set".
pub fn broker_at(state: LinkState, unusable_since: u64, batch_since: u64, now: u64) -> Broker {
    let older =
        |since: u64| since != 0 && now.saturating_sub(since) >= AWAY_AFTER.as_millis() as u64;
    if state == LinkState::Disabled || older(unusable_since) || older(batch_since) {
        Broker::Away
    } else if state == LinkState::Connected {
        Broker::Ready
    } else {
        Broker::Unsure
    }
}

/// Monotonic milliseconds, never 0 (0 means "not set" above).
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_is_away_after_a_second_of_trouble() {
        use LinkState::*;
        let away = AWAY_AFTER.as_millis() as u64;
        assert_eq!(broker_at(Connected, 0, 0, 5_000), Broker::Ready);
        assert_eq!(broker_at(Connecting, 0, 0, 5_000), Broker::Unsure);
        assert_eq!(broker_at(Idle, 0, 0, 5_000), Broker::Unsure);
        assert_eq!(broker_at(Disabled, 0, 0, 5_000), Broker::Away);
        // Unusable: unsure for the grace period, away after it.
        assert_eq!(broker_at(Down, 5_000, 0, 5_000 + away - 1), Broker::Unsure);
        assert_eq!(broker_at(Down, 5_000, 0, 5_000 + away), Broker::Away);
        // Connected but a batch waits for its confirms too long.
        assert_eq!(
            broker_at(Connected, 0, 5_000, 5_000 + away - 1),
            Broker::Ready
        );
        assert_eq!(broker_at(Connected, 0, 5_000, 5_000 + away), Broker::Away);
    }

    #[test]
    fn states_round_trip_through_their_number() {
        use LinkState::*;
        for s in [Idle, Connecting, Connected, Down, Disabled] {
            assert_eq!(LinkState::from_u8(s as u8), s);
        }
        assert_eq!(LinkState::from_u8(200), Idle);
    }
}
