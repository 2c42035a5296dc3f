//! A batch out of the outbox, on its way to the broker. What is not settled goes back to the
//! front of the outbox when the batch is dropped: after a failed publish, and also when the
//! session panics while the batch is out, so that a panic cannot lose events or leave the
//! outbox counting them in flight forever.

use std::sync::Arc;

use crate::core::event::Event;
use crate::core::link::now_ms;
use crate::core::outbox::{Broker, Outbox};
use crate::state::shared::Shared;

pub struct InFlight {
    shared: Arc<Shared>,
    events: Vec<Event>,
}

impl InFlight {
    /// Takes up to `max` events from `outbox` (the locked outbox of `shared`).
    pub fn take(shared: &Arc<Shared>, outbox: &mut Outbox, max: usize) -> InFlight {
        InFlight {
            shared: shared.clone(),
            events: outbox.take_batch(max),
        }
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The broker confirmed the first `confirmed` events: they leave the outbox, the rest go
    /// back to its front. Returns whether the main thread should run a step now (a refill).
    pub fn settle(mut self, confirmed: usize, fallback_size: i64) -> bool {
        let events = std::mem::take(&mut self.events);
        let confirmed = confirmed.min(events.len());
        let mut outbox = self.shared.outbox.lock();
        outbox.confirmed(&events[..confirmed]);
        outbox.give_back(events.into_iter().skip(confirmed).collect());
        // INFO shows the queue as it is now, not as the main thread's last step saw it (no step
        // may come while no event does).
        self.shared.stats.observe(&outbox);
        outbox.wants_tick(Broker::Ready, fallback_size, now_ms())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.events.is_empty() {
            let events = std::mem::take(&mut self.events);
            let mut outbox = self.shared.outbox.lock();
            outbox.give_back(events);
            self.shared.stats.observe(&outbox);
        }
    }
}
