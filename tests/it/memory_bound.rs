//! The memory queue is bounded in bytes as well as in events
//! (`key_evt_amqp.queue_capacity_bytes`): events with 1 KiB values spill to the fallback list on bytes
//! while far under the event count, INFO shows the bytes and their bound, the module's heap
//! does not grow with the backlog, and every event arrives once, in order. The config is read
//! and set like `queue_capacity`, and bad values change nothing.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use testkit::{fallback_exists, fallback_len, module_path, wait_until, Message, Mode, Node};

const WAIT: Duration = Duration::from_secs(20);
const QUIET: Duration = Duration::from_millis(500);
const MIB: u64 = 1 << 20;

/// What makes an event long: its 1 KiB value (`payload value`, issue 16's acceptance).
const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 1024;

/// The key and value of event `i`: `key:<i>:` padded to [`KEY_LEN`], a value of
/// [`VALUE_LEN`] bytes.
fn long_event(i: usize) -> (String, String) {
    let mut key = format!("key:{i}:");
    let pad = KEY_LEN.saturating_sub(key.len());
    key.extend(std::iter::repeat_n('k', pad));
    (key, "v".repeat(VALUE_LEN))
}

/// `SET`s events `range` in one pipeline.
fn write_events(redis: &mut redis::Connection, range: std::ops::Range<usize>) {
    let mut pipe = redis::pipe();
    for i in range {
        let (key, value) = long_event(i);
        pipe.cmd("SET").arg(key).arg(value).ignore();
    }
    pipe.query::<()>(redis).expect("pipelined SETs");
}

/// The message's key and value (json with `payload value`).
fn key_value_of(m: &Message) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(&m.body).expect("a json body");
    let text = |f: &str| v[f].as_str().unwrap_or_default().to_string();
    (text("key"), text("value"))
}

#[test]
fn long_events_spill_on_bytes_and_arrive_once_in_order() {
    const EVENTS: usize = 20_000;
    // Within one main-thread slice (500 events): each step brings memory back under the bound.
    const PIPELINE: usize = 100;
    // What INFO may show beyond the bound once the steps caught up: one event, which memory
    // always keeps.
    const SLACK: u64 = 4096;
    let mut n = Node::builder("memory-bound-")
        .through_proxy(Mode::Refuse)
        .heartbeat(5)
        // As redis.conf has it, in the units `maxmemory` takes.
        .config("key_evt_amqp.queue_capacity_bytes", "1mb")
        .config("key_evt_amqp.format", "json")
        .config("key_evt_amqp.payload", "value")
        .timeouts(WAIT, QUIET)
        .start();
    let run_id = n.server.run_id();
    let bound = n.server.module_info_u64("queue_capacity_bytes");
    assert_eq!(bound, MIB);
    let capacity = n.server.module_info_u64("queue_capacity");
    assert_eq!(capacity, 100_000, "the event count stays at its default");

    let heap_before = n.server.module_info_u64("heap_bytes");
    let (mut max_bytes, mut max_len) = (0, 0);
    for start in (0..EVENTS).step_by(PIPELINE) {
        write_events(&mut n.redis, start..start + PIPELINE);
        max_bytes = max_bytes.max(n.server.module_info_u64("queue_bytes"));
        max_len = max_len.max(n.server.module_info_u64("queue_length"));
    }
    assert!(
        wait_until(WAIT, || fallback_len(&mut n.redis) == EVENTS as i64),
        "every event reaches the list; it holds {}; INFO:\n{}",
        fallback_len(&mut n.redis),
        n.server.module_info_text()
    );
    let peak_after = n.server.module_info_u64("heap_peak_bytes");
    let growth = peak_after.saturating_sub(heap_before);
    eprintln!(
        "memory bound: queue_bytes seen at most {max_bytes} B (bound {bound} B), queue_length \
         at most {max_len}; heap before {heap_before} B, peak after {peak_after} B (growth at \
         most {growth} B)"
    );
    // Each step brings memory back under the bound, a slice (500 events) at a time, so what
    // INFO shows between two steps may pass it by what arrived meanwhile: a step waits while
    // the publisher holds the outbox, and a busy host can keep it off the CPU (1.89 MB seen
    // once in CI on Redis 8.0, 0.94 MB otherwise). Once the writes stop it is within the bound;
    // all 20,000 held would be 22 MB.
    assert!(
        max_bytes <= bound + 4 * MIB,
        "queue_bytes {max_bytes} B (bound {bound} B): memory grows with the backlog"
    );
    let settled = n.server.module_info_u64("queue_bytes");
    assert!(
        settled <= bound + SLACK,
        "queue_bytes {settled} B over the bound {bound} B once the writes stopped"
    );
    assert!(max_bytes > 0, "INFO shows the bytes of the events waiting");
    // The bytes bound is what held them: about 900 events of 1 KiB fit in 1 MiB.
    assert!(
        (max_len as usize) < 1000 && max_len < capacity,
        "queue_length {max_len}"
    );
    assert_eq!(n.server.module_info_u64("events_spilled"), EVENTS as u64);
    assert_eq!(n.server.module_info_u64("events_dropped"), 0);
    // Holding these events in memory would take 20,000 × about 1.1 KiB = 22 MB. The module
    // holds the bound, what one event-loop iteration brings, one spill slice being encoded
    // (500 KiB) and buffers that keep their capacity.
    let all_held = (EVENTS * (KEY_LEN + VALUE_LEN)) as u64;
    assert!(
        growth < bound + 4 * MIB && growth < all_held / 4,
        "the module's heap grew by up to {growth} B (bound {bound} B, all held {all_held} B)"
    );

    n.proxy().heal();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = HashSet::new();
    for i in 0..EVENTS {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = n.consumer.recv(left).unwrap_or_else(|| {
            panic!(
                "only {i} of {EVENTS} messages arrived; INFO:\n{}",
                n.server.module_info_text()
            )
        });
        let (key, value) = key_value_of(&m);
        assert!(seen.insert(key.clone()), "duplicate: {key}");
        assert_eq!(
            (key, value),
            long_event(i),
            "message {i} out of order or changed"
        );
        assert_eq!(m.identity(), (run_id.clone(), i as u64 + 1));
    }
    if let Some(extra) = n.consumer.recv(QUIET) {
        panic!("an extra message came: {:?}", key_value_of(&extra).0);
    }
    assert!(wait_until(WAIT, || !fallback_exists(&mut n.redis)));
    assert!(
        wait_until(Duration::from_secs(5), || n
            .server
            .module_info_u64("queue_bytes")
            == 0),
        "nothing waits: no bytes; INFO:\n{}",
        n.server.module_info_text()
    );
}

#[test]
fn queue_capacity_bytes_is_read_set_and_refused_like_queue_capacity() {
    const NAME: &str = "key_evt_amqp.queue_capacity_bytes";
    let mut n = Node::start("memory-bound-config-");
    assert_eq!(
        n.server.config_get(NAME)[NAME],
        "67108864",
        "64 MiB by default"
    );
    assert_eq!(
        n.server.module_info_u64("queue_capacity_bytes"),
        64 * MIB,
        "INFO shows the bound in force"
    );

    n.server.config_set(NAME, "2097152").unwrap();
    assert_eq!(n.server.config_get(NAME)[NAME], "2097152");
    n.server.config_set(NAME, "3mb").unwrap();
    assert_eq!(
        n.server.config_get(NAME)[NAME],
        "3145728",
        "units as maxmemory"
    );
    // The next step applies it (a step runs once an event comes).
    n.forwarded(&["after-set"]);
    assert!(wait_until(WAIT, || n
        .server
        .module_info_u64("queue_capacity_bytes")
        == 3 * MIB));

    let before = n.server.config_get("key_evt_amqp.*");
    for bad in ["lots", "-1", "0", "1048575", "17179869185", "1.5"] {
        let e = n.server.config_set(NAME, bad).expect_err(bad);
        assert!(e.contains(NAME), "{bad}: {e}");
    }
    assert_eq!(
        n.server.config_get("key_evt_amqp.*"),
        before,
        "bad values changed nothing"
    );
    n.server.config_set(NAME, "16gb").unwrap();
    n.server.config_set(NAME, "1mb").unwrap();
    assert_eq!(
        n.server.config_get(NAME)[NAME],
        "1048576",
        "the limits are allowed"
    );

    // MODULE LOADEX … CONFIG: the value given at load is the one in force.
    let () = redis::cmd("MODULE")
        .arg("UNLOAD")
        .arg("key_evt_amqp")
        .query(&mut n.server.client())
        .unwrap();
    let () = redis::cmd("MODULE")
        .arg("LOADEX")
        .arg(module_path().display().to_string())
        .arg("CONFIG")
        .arg(NAME)
        .arg("5mb")
        .arg("ARGS")
        .arg(n.args.to_vec())
        .query(&mut n.server.client())
        .expect("MODULE LOADEX");
    assert_eq!(n.server.config_get(NAME)[NAME], "5242880");
    assert_eq!(n.server.module_info_u64("queue_capacity_bytes"), 5 * MIB);
}
