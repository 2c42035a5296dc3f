//! Batched messages (`key_evt_amqp.batch`, issue 18), as a consumer sees them: up to N events
//! a message, one JSON object a line, in order, the message's id its first event's and
//! `x-event-count` / `x-last-id` right; a trickle waits at most the linger; a nack and a cut
//! connection inside a batch resend its events, in order, which dedupe by id restores exactly;
//! the fallback list works with batches; `batch` and `text` refuse each other; batched
//! `cloudevents` lines are structured events, the old C module's items among them with legacy
//! ids; a linger longer than the heartbeat keeps the connection.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use lapin::options::BasicGetOptions;
use serde_json::Value;
use testkit::{
    unique_routing_key, wait_until, Consumer, FaultProxy, Message, Mode, ModuleArgs, Node,
    NodeBuilder, RedisServer, FALLBACK,
};

const WAIT: Duration = Duration::from_secs(20);
const QUIET: Duration = Duration::from_millis(500);

fn batch_node(prefix: &str, batch: &str, linger_ms: &str) -> NodeBuilder {
    Node::builder(prefix)
        .config("key_evt_amqp.format", "json")
        .config("key_evt_amqp.batch", batch)
        .config("key_evt_amqp.batch_linger_ms", linger_ms)
        .timeouts(WAIT, QUIET)
}

/// A batched message taken apart: its lines (checked against its content type and
/// `x-event-count`).
fn ndjson(m: &Message) -> Vec<Value> {
    assert_eq!(
        m.content_type.as_deref(),
        Some("application/x-ndjson"),
        "{m:?}"
    );
    assert!(m.body.ends_with(b"\n"), "each line ends with a newline");
    let lines: Vec<Value> = m
        .body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap_or_else(|e| panic!("not JSON ({e}): {m:?}")))
        .collect();
    let count = match m.header("x-event-count") {
        Some(testkit::Header::Int(n)) => *n as usize,
        other => panic!("x-event-count {other:?}"),
    };
    assert_eq!(count, lines.len(), "x-event-count");
    lines
}

/// [`ndjson`]'s lines, also checked against the message's id and `x-last-id`.
fn lines(m: &Message) -> Vec<Value> {
    let lines = ndjson(m);
    assert_eq!(
        m.message_id.as_deref(),
        lines[0]["id"].as_str(),
        "message_id: the first's"
    );
    assert_eq!(
        m.header_text("x-last-id"),
        lines[lines.len() - 1]["id"].as_str().unwrap()
    );
    lines
}

/// The events of `n` messages, with the size of each message.
fn events(consumer: &mut Consumer, n: usize) -> (Vec<Value>, Vec<usize>) {
    let (mut all, mut sizes) = (Vec::new(), Vec::new());
    while all.len() < n {
        let m = consumer
            .recv(WAIT)
            .unwrap_or_else(|| panic!("{} of {n} events came", all.len()));
        let l = lines(&m);
        sizes.push(l.len());
        all.extend(l);
    }
    (all, sizes)
}

fn seq(v: &Value) -> u64 {
    v["id"]
        .as_str()
        .unwrap()
        .rsplit('-')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// `SET k:<i> v` for `range`, pipelined.
fn write(n: &mut Node, range: std::ops::Range<usize>) {
    let mut p = redis::pipe();
    for i in range {
        p.cmd("SET").arg(format!("k:{i}")).arg("v").ignore();
    }
    p.query::<()>(&mut n.redis).unwrap();
}

#[test]
fn a_burst_comes_in_full_messages_in_order() {
    let mut n = batch_node("batch-order-", "100", "50").start();
    write(&mut n, 0..1000);
    let (got, sizes) = events(&mut n.consumer, 1000);
    let keys: Vec<&str> = got.iter().map(|v| v["key"].as_str().unwrap()).collect();
    let want: Vec<String> = (0..1000).map(|i| format!("k:{i}")).collect();
    assert_eq!(keys, want, "every event once, in order");
    let seqs: Vec<u64> = got.iter().map(seq).collect();
    assert_eq!(seqs, (1..=1000).collect::<Vec<u64>>());
    assert!(sizes.iter().all(|&s| s <= 100), "{sizes:?}");
    // One pipeline: the events are there at once, so messages are full but for the last ones.
    assert!(sizes.len() <= 15, "{} messages: {sizes:?}", sizes.len());
    n.consumer.expect_none(QUIET);
}

#[test]
fn a_trickle_waits_for_the_linger_then_goes() {
    let mut n = batch_node("batch-linger-", "100", "1000").start();
    let first = Instant::now();
    write(&mut n, 0..1);
    std::thread::sleep(Duration::from_millis(200));
    write(&mut n, 1..2);
    let m = n.consumer.recv(WAIT).expect("a message");
    let waited = first.elapsed();
    let l = lines(&m);
    assert_eq!(l.len(), 2, "both events in the message that waited: {l:?}");
    // The message waits for the linger (1 s from the first event) for more events.
    assert!(
        waited >= Duration::from_millis(900),
        "sent after {waited:?}"
    );
    // Linger 0: sent at once, one event a message.
    n.ok(&["CONFIG", "SET", "key_evt_amqp.batch_linger_ms", "0"]);
    write(&mut n, 2..3);
    let l = lines(&n.consumer.recv(WAIT).expect("a message"));
    assert_eq!(l[0]["key"], "k:2");
}

/// Under `cloudevents` each line is the event in structured mode: a CloudEvents SDK parses it
/// alone, with the attributes binary mode sends as headers and the `json` object as `data`.
#[test]
fn batched_cloudevents_are_structured_events_one_a_line() {
    let mut n = batch_node("batch-ce-", "100", "50")
        .config("key_evt_amqp.format", "cloudevents")
        .start();
    write(&mut n, 0..10);
    let (got, _) = events(&mut n.consumer, 10);
    let source = format!("/key_evt_amqp/{}", n.server.run_id());
    for (i, v) in got.iter().enumerate() {
        assert_eq!(v["specversion"], "1.0", "{v}");
        assert_eq!(v["source"], source.as_str(), "{v}");
        assert_eq!(v["type"], "redis.keyspace.set", "{v}");
        assert_eq!(v["subject"], format!("k:{i}"), "{v}");
        assert_eq!(v["datacontenttype"], "application/json", "{v}");
        let data = &v["data"];
        let ts = data["time"].as_u64().unwrap_or_else(|| panic!("time: {v}"));
        assert_eq!(
            v["time"],
            crate::formats::date_rfc3339(ts),
            "RFC 3339 of data.time: {v}"
        );
        assert_eq!(data["key"], format!("k:{i}"), "{v}");
        assert_eq!(data["event"], "set", "{v}");
        assert_eq!(data["id"], v["id"], "the data's id is the event's: {v}");
        assert_eq!(seq(v), i as u64 + 1, "in order: {v}");
    }
    n.consumer.expect_none(QUIET);
}

/// Items the old C module left in the fallback list (plain bodies, no identity) come batched
/// too: each line a structured event whose `id` is the node's legacy id (as binary mode's
/// `ce-id`), distinct, in the list's order; the message has no `message_id` when its first
/// event has none.
#[test]
fn old_module_items_come_as_batched_cloudevents_with_legacy_ids() {
    const ITEMS: usize = 25;
    let proxy = FaultProxy::start();
    proxy.set_mode(Mode::Refuse);
    let rk = unique_routing_key("batch-ce-legacy-");
    let mut consumer = Consumer::bind("amq.direct", &rk);
    let server = RedisServer::start_without_module(&[]);
    let mut r = server.client();
    let mut push = redis::cmd("RPUSH");
    push.arg(FALLBACK);
    for i in 0..ITEMS {
        push.arg(format!("0\nset\nold:{i}"));
    }
    push.query::<()>(&mut r).unwrap();
    let args = ModuleArgs {
        port: proxy.port(),
        ..ModuleArgs::with_routing_key(&rk)
    };
    server
        .load_module(&args.to_vec())
        .unwrap_or_else(|e| panic!("MODULE LOAD failed: {e}"));
    for (name, value) in [
        ("key_evt_amqp.format", "cloudevents"),
        ("key_evt_amqp.batch", "10"),
    ] {
        server.config_set(name, value).unwrap();
    }
    proxy.set_mode(Mode::Pass);

    let source = format!("/key_evt_amqp/{}", server.run_id());
    let (mut got, mut ids) = (Vec::new(), HashSet::new());
    while got.len() < ITEMS {
        let m = consumer
            .recv(WAIT)
            .unwrap_or_else(|| panic!("{} of {ITEMS} events came", got.len()));
        assert_eq!(m.message_id, None, "no identity to give the message: {m:?}");
        assert!(m.header("x-last-id").is_none(), "no last id: {m:?}");
        let lines = ndjson(&m);
        for v in lines {
            assert_eq!(v["specversion"], "1.0", "{v}");
            assert_eq!(v["source"], source.as_str(), "{v}");
            assert_eq!(v["type"], "redis.keyspace.set", "{v}");
            let id = v["id"].as_str().unwrap_or_else(|| panic!("an id: {v}"));
            assert!(id.contains("-legacy-"), "a legacy id: {v}");
            assert!(ids.insert(id.to_string()), "each id once: {v}");
            got.push(v["subject"].as_str().unwrap().to_string());
        }
    }
    let want: Vec<String> = (0..ITEMS).map(|i| format!("old:{i}")).collect();
    assert_eq!(got, want, "every item once, in the list's order");
    consumer.expect_none(QUIET);
}

/// A linger longer than the heartbeat: the connection stays up while a message waits (the
/// publisher keeps heartbeating), so the message goes on the connection it waited on.
#[test]
fn a_linger_longer_than_the_heartbeat_keeps_the_connection() {
    let mut n = batch_node("batch-heartbeat-", "100", "6000")
        .heartbeat(1)
        .start();
    let first = Instant::now();
    write(&mut n, 0..1);
    let m = n.consumer.recv(WAIT).expect("a message");
    let waited = first.elapsed();
    assert_eq!(lines(&m)[0]["key"], "k:0");
    assert!(
        waited >= Duration::from_millis(5500),
        "sent after {waited:?}"
    );
    // The first event opened the connection; RabbitMQ closes one silent for two heartbeats
    // (2 s here), and a reconnect would show as a second connection.
    assert_eq!(
        n.info("connections"),
        "1",
        "the connection outlived the linger"
    );
    assert_eq!(n.info("events_confirmed"), "1");
}

#[test]
fn events_waiting_in_the_fallback_list_come_batched_in_order() {
    let mut n = batch_node("batch-list-", "50", "5")
        .through_proxy(Mode::Refuse)
        .start();
    write(&mut n, 0..500);
    assert!(wait_until(WAIT, || n.fallback_len() == 500), "spilled");
    n.proxy().set_mode(Mode::Pass);
    let (got, sizes) = events(&mut n.consumer, 500);
    let seqs: Vec<u64> = got.iter().map(seq).collect();
    assert_eq!(seqs, (1..=500).collect::<Vec<u64>>());
    assert!(sizes.iter().all(|&s| s <= 50), "{sizes:?}");
    assert!(wait_until(WAIT, || n.fallback_len() == 0));
}

#[test]
fn a_cut_connection_inside_batches_resends_and_dedupe_by_id_restores_each_event_once() {
    let mut n = batch_node("batch-cut-", "20", "5")
        .through_proxy(Mode::Pass)
        .start();
    let total = 3000;
    for start in (0..total).step_by(300) {
        write(&mut n, start..start + 300);
        if start == 1200 {
            n.proxy().set_mode(Mode::CutMidStream);
        }
    }
    let mut seen = HashSet::new();
    let mut first_order = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < total {
        assert!(
            Instant::now() < deadline,
            "{} of {total} events",
            seen.len()
        );
        let Some(m) = n.consumer.recv(WAIT) else {
            panic!("{} of {total} events", seen.len());
        };
        for v in lines(&m) {
            if seen.insert(seq(&v)) {
                first_order.push(seq(&v));
            }
        }
    }
    assert_eq!(
        first_order,
        (1..=total as u64).collect::<Vec<u64>>(),
        "first deliveries in order"
    );
}

#[test]
fn a_nack_inside_a_batch_resends_its_events_in_order() {
    // A queue that holds one message and refuses the rest: RabbitMQ nacks them.
    let rk = unique_routing_key("batch-nack-");
    let (conn, channel, queue) = testkit::nacking_queue(&rk);
    let server = RedisServer::start_with(
        &[
            ("key_evt_amqp.format", "json"),
            ("key_evt_amqp.batch", "3"),
            ("key_evt_amqp.batch_linger_ms", "20"),
        ],
        Some(&ModuleArgs::with_routing_key(&rk).to_vec()),
    );
    let mut r = server.client();
    let mut p = redis::pipe();
    for i in 0..9 {
        p.cmd("SET").arg(format!("k{i}")).arg("v").ignore();
    }
    p.query::<()>(&mut r).unwrap();
    assert!(
        wait_until(WAIT, || server.module_info("events_nacked") != "0"),
        "the broker refused some"
    );
    // Take messages one at a time; each frees room for the next retry.
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while got.len() < 9 && Instant::now() < deadline {
        let m = testkit::block_on_timeout(Duration::from_secs(5), async {
            channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
        })
        .flatten();
        let Some(m) = m else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        for line in m
            .delivery
            .data
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
        {
            let v: Value = serde_json::from_slice(line).unwrap();
            let key = v["key"].as_str().unwrap().to_string();
            if !got.contains(&key) {
                got.push(key);
            }
        }
    }
    let want: Vec<String> = (0..9).map(|i| format!("k{i}")).collect();
    assert_eq!(got, want, "every event, first occurrences in order");
    drop(conn);
}

#[test]
fn batch_needs_json_or_cloudevents_and_bad_values_change_nothing() {
    let n = Node::builder("batch-refuse-").start();
    let s = &n.server;
    let err = s.config_set("key_evt_amqp.batch", "10").unwrap_err();
    assert!(
        err.contains("key_evt_amqp.batch") && err.contains("key_evt_amqp.format"),
        "{err}"
    );
    s.config_set("key_evt_amqp.format", "cloudevents").unwrap();
    s.config_set("key_evt_amqp.batch", "10").unwrap();
    let err = s.config_set("key_evt_amqp.format", "text").unwrap_err();
    assert!(
        err.contains("key_evt_amqp.format") && err.contains("key_evt_amqp.batch"),
        "{err}"
    );
    for bad in ["0", "10001", "x"] {
        let err = s.config_set("key_evt_amqp.batch", bad).unwrap_err();
        assert!(err.contains("batch"), "{bad}: {err}");
    }
    assert_eq!(
        s.config_get("key_evt_amqp.batch")["key_evt_amqp.batch"],
        "10"
    );
    assert_eq!(
        s.config_get("key_evt_amqp.format")["key_evt_amqp.format"],
        "cloudevents"
    );
    let err = s
        .config_set("key_evt_amqp.batch_linger_ms", "-1")
        .unwrap_err();
    assert!(err.contains("batch_linger_ms"), "{err}");
    assert_eq!(
        s.config_get("key_evt_amqp.batch_linger_ms")["key_evt_amqp.batch_linger_ms"],
        "5"
    );
}
