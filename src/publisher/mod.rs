//! The publisher thread: owns the AMQP connection (`amqp/`), publishes batches with publisher
//! confirms, and reconnects with capped exponential back-off (`session.rs`). Every network
//! wait has a deadline, and none is longer than a slice that notices an unload.
//!
//! The thread cannot die silently: a panic in a session is caught by [`supervise`], logged
//! with its message, counted (INFO `publisher_panics`), and a new session starts after a
//! back-off. The batch the session had out goes back to the outbox as it unwinds
//! ([`in_flight::InFlight`]), so its events are published again, in order.

mod batched;
mod encode;
mod in_flight;
mod plan;
mod session;

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::core::event::RunId;
use crate::core::limits::Backoff;
use crate::core::link::LinkState;
use crate::state::shared::Shared;
use crate::state::stats::Stats;

pub use self::encode::APP_ID;
use self::session::Session;

/// Starts the publisher thread.
/// `connection_name` shows in RabbitMQ's management tools (we use the node's run id in it).
pub fn spawn(
    shared: Arc<Shared>,
    connection_name: String,
    run_id: RunId,
    wake_main: fn(),
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kea-publisher".into())
        .spawn(move || {
            lower_priority();
            supervise(&shared, wake_main, || {
                Session::new(shared.clone(), connection_name.clone(), run_id, wake_main).run()
            });
            shared.link.set(LinkState::Idle);
        })
}

/// A session that ran this long before its panic restarts after the shortest back-off again.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Runs `session` until the module stops. A panic in it is logged with its message and
/// counted, the link shows it, and a new session starts after a back-off (cut short by an
/// unload). A session that panicked while polling asks the main thread for a step, as one
/// that ends does (`wake_main`): events handed over directly must not wait for it.
fn supervise(shared: &Shared, wake_main: fn(), mut session: impl FnMut()) {
    let mut backoff = Backoff::default();
    while !shared.stopping() {
        let started = Instant::now();
        let Err(payload) = catch_unwind(AssertUnwindSafe(&mut session)) else {
            return; // a session returns only when the module stops
        };
        if started.elapsed() >= STABLE_AFTER {
            backoff = Backoff::default();
        }
        let delay = backoff.next_delay(started.elapsed().subsec_nanos());
        let error = format!("publisher panicked: {}", panic_message(&*payload));
        Stats::add(&shared.stats.publisher_panics, 1);
        shared.log.warning(&format!(
            "{error}; its batch went back to the queue, a new session starts in {} ms",
            delay.as_millis()
        ));
        shared.link.set_error(error);
        shared.link.set(LinkState::Down);
        if shared.stop_polling() {
            wake_main();
        }
        let until = Instant::now() + delay;
        while !shared.stopping() && Instant::now() < until {
            shared.wait(until.saturating_duration_since(Instant::now()));
        }
    }
}

/// The text a panic was raised with (`panic!("…")`, `unwrap` on an error, …).
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// The publisher runs at nice 10: on a busy host Redis's main thread gets the CPU first.
fn lower_priority() {
    // SAFETY: setpriority on this thread's own id; a failure leaves the priority unchanged.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

    use super::*;
    use crate::core::event::{self, Event};
    use crate::core::policy::BATCH;
    use crate::core::settings::Settings;
    use crate::publisher::in_flight::InFlight;
    use crate::state::log::Log;

    fn quiet_log() -> Log {
        Log {
            warning: |m| eprintln!("warning: {m}"),
            notice: |m| eprintln!("notice: {m}"),
        }
    }

    fn event(n: usize) -> Event {
        Event {
            id: None,
            timestamp: 0,
            body: event::body(0, b"set", format!("k{n}").as_bytes()),
            list_copy: 0,
            data: None,
        }
    }

    #[test]
    fn a_panicking_session_gives_its_batch_back_and_the_next_one_sends_it_in_order() {
        let shared = Arc::new(Shared::new(Settings::default(), 10_000, quiet_log()));
        for n in 0..1500 {
            shared.outbox.lock().push(event(n));
        }
        let mut sent: Vec<Vec<u8>> = Vec::new();
        let mut sessions = 0;
        supervise(&shared, no_wake, || {
            sessions += 1;
            if sessions == 1 {
                // Take a batch as the publisher does, then panic while it is out.
                let batch = InFlight::take(&shared, &mut shared.outbox.lock(), BATCH);
                assert_eq!(shared.outbox.lock().in_flight(), BATCH);
                let n = batch.events().len();
                panic!("test panic with {n} events out");
            }
            // The next session publishes everything, confirming each batch whole.
            loop {
                let batch = InFlight::take(&shared, &mut shared.outbox.lock(), BATCH);
                if batch.events().is_empty() {
                    break;
                }
                sent.extend(batch.events().iter().map(|e| e.body.to_vec()));
                let n = batch.events().len();
                batch.settle(n, 0);
            }
            shared.stop.store(true, Relaxed);
        });
        assert_eq!(sessions, 2);
        let expected: Vec<Vec<u8>> = (0..1500).map(|n| event(n).body.to_vec()).collect();
        assert_eq!(sent, expected, "every event once, in order");
        let outbox = shared.outbox.lock();
        assert_eq!((outbox.memory_len(), outbox.in_flight()), (0, 0));
        assert!(outbox.is_idle(), "nothing left counted in flight");
        assert_eq!(shared.stats.publisher_panics.load(Relaxed), 1);
        assert_eq!(
            shared.link.last_error(),
            "publisher panicked: test panic with 1000 events out"
        );
    }

    #[test]
    fn an_unload_during_the_back_off_ends_the_supervisor() {
        let shared = Arc::new(Shared::new(Settings::default(), 100, quiet_log()));
        let started = Instant::now();
        supervise(&shared, no_wake, || {
            shared.stop.store(true, Relaxed);
            panic!("stop, then panic");
        });
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(shared.stats.publisher_panics.load(Relaxed), 1);
    }

    fn no_wake() {}

    #[test]
    fn a_session_that_panics_while_polling_stops_polling_and_wakes_the_main_thread() {
        static WOKEN: AtomicBool = AtomicBool::new(false);
        fn wake() {
            WOKEN.store(true, Relaxed);
        }
        let shared = Arc::new(Shared::new(Settings::default(), 100, quiet_log()));
        let mut sessions = 0;
        supervise(&shared, wake, || {
            sessions += 1;
            if sessions == 1 {
                shared.publisher_polls.store(true, Relaxed);
                panic!("while polling");
            }
            shared.stop.store(true, Relaxed);
        });
        assert!(
            !shared.publisher_polls.load(Relaxed),
            "events go through the step"
        );
        assert!(WOKEN.load(Relaxed), "the main thread was asked for a step");
    }

    #[test]
    fn panic_messages_are_read_from_either_payload() {
        let text = catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(&*text), "plain");
        let formatted = catch_unwind(|| panic!("{}", 42)).unwrap_err();
        assert_eq!(panic_message(&*formatted), "42");
    }
}
