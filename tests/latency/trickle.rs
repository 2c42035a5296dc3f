//! A trickle of events reaches the consumer within milliseconds, one event at a time: a
//! millisecond apart (the publisher polls the outbox, and the keyspace callback hands each
//! event over directly), and 50 ms apart (the publisher sleeps, and the main thread's step
//! wakes it). Runs alone (`--test-threads=1`): it measures latency.

use std::time::{Duration, Instant};

use testkit::{set, unique_routing_key, Consumer, ModuleArgs, RedisServer};

/// Events sent and received before the timed ones: the module connects at the first event.
const WARM_UP: usize = 10;
/// The median from the SET to the consumer. Measured here: 1.0-1.6 ms polling, 0.9 ms woken,
/// against 0.3-0.4 ms from a raw lapin publish (`scripts/bench.sh --only 6`). When the
/// publisher slept a kernel tick between its looks at the outbox (a 1 ms SO_RCVTIMEO at
/// HZ=250), the median was 5.9-8 ms.
const MEDIAN_BOUND: Duration = Duration::from_millis(3);
/// No event may take this long: a lost wake-up waits for the publisher's idle look (200 ms).
const STALL: Duration = Duration::from_millis(100);

/// Sends `n` events, each once the one before has arrived and `gap` has passed; returns
/// each one's time from the SET to its receipt, sorted.
fn one_at_a_time(
    r: &mut redis::Connection,
    consumer: &mut Consumer,
    tag: &str,
    n: usize,
    gap: Duration,
) -> Vec<Duration> {
    let mut took = Vec::with_capacity(n);
    for i in 0..WARM_UP + n {
        let key = format!("{tag}:{i}");
        let t = Instant::now();
        set(r, &key);
        let m = consumer
            .recv(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{key} did not arrive within 10 s"));
        let elapsed = t.elapsed();
        assert_eq!(
            m.key_lossy(),
            key,
            "events arrive in order, one message each"
        );
        if i >= WARM_UP {
            took.push(elapsed);
        }
        std::thread::sleep(gap);
    }
    took.sort();
    took
}

#[test]
fn a_trickle_of_events_reaches_the_consumer_within_milliseconds() {
    let rk = unique_routing_key("trickle-");
    let mut consumer = Consumer::bind("amq.direct", &rk);
    let server = RedisServer::start(&ModuleArgs::with_routing_key(&rk).to_vec());
    let mut r = server.client();
    for (tag, n, gap) in [
        ("polling", 300, Duration::from_millis(1)),
        ("woken", 20, Duration::from_millis(50)),
    ] {
        let took = one_at_a_time(&mut r, &mut consumer, tag, n, gap);
        let (median, p90, worst) = (took[n / 2], took[n * 9 / 10], took[n - 1]);
        eprintln!(
            "{tag}: {n} events {gap:?} apart, SET to consumer: median {median:?}, p90 {p90:?}, \
             max {worst:?}"
        );
        assert!(
            median < MEDIAN_BOUND,
            "{tag}: the median event took {median:?} from the SET to the consumer (bound \
             {MEDIAN_BOUND:?}); p90 {p90:?}, max {worst:?}"
        );
        assert!(
            worst < STALL,
            "{tag}: an event took {worst:?} from the SET to the consumer (bound {STALL:?})"
        );
    }
}
