//! A broker that refuses connections: events wait in the fallback list, then arrive once, in
//! order, with their identity; the cap keeps the newest.

use std::time::{Duration, Instant};

use testkit::{fallback_exists, set, wait_until, Message, Mode, Node};

const WAIT: Duration = Duration::from_secs(20);
const QUIET: Duration = Duration::from_millis(500);

/// Redis publishing through a proxy that refuses connections from the start.
fn refused_broker(fallback_size: i64) -> Node {
    Node::builder("outage-")
        .through_proxy(Mode::Refuse)
        .heartbeat(5)
        .delivery_mode(2)
        .fallback_size(fallback_size)
        .timeouts(WAIT, QUIET)
        .start()
}

#[test]
fn events_wait_in_the_list_and_arrive_once_in_order() {
    let mut s = refused_broker(0);
    let keys = s.set_keys("key:", 50);
    assert!(
        wait_until(Duration::from_secs(5), || s.fallback_len() == 50),
        "events reach the list within about a second"
    );
    s.consumer.expect_none(QUIET);
    assert_ne!(
        s.server.module_info("last_error"),
        "",
        "the failure is visible in INFO"
    );

    // Newer events queue behind the list; none may overtake it.
    let later: Vec<String> = (50..60).map(|i| format!("key:{i}")).collect();
    for k in &later {
        set(&mut s.redis, k);
    }
    s.proxy().heal();
    let mut all = keys.clone();
    all.extend(later);
    let got = s.consumer.expect(60, WAIT);
    s.consumer.expect_none(QUIET);
    let got_keys: Vec<String> = got.iter().map(Message::key_lossy).collect();
    assert_eq!(got_keys, all, "every event once, in the original order");
    // Identity survives the list: sequence numbers 1..=60 in order, persistent as configured.
    let seqs: Vec<u64> = got.iter().map(|m| m.identity().1).collect();
    assert_eq!(seqs, (1..=60).collect::<Vec<u64>>());
    assert!(got
        .iter()
        .all(|m| m.delivery_mode == Some(2) && m.timestamp.is_some()));
    assert!(wait_until(WAIT, || s.fallback_len() == 0));
    assert!(!fallback_exists(&mut s.redis), "the list is gone");
    assert_eq!(s.server.module_info("connection"), "connected");
}

#[test]
fn a_cap_keeps_the_newest_events() {
    let mut s = refused_broker(5);
    let keys = s.set_keys("key:", 10);
    assert!(wait_until(Duration::from_secs(5), || {
        s.server.module_info("events_dropped") == "5"
    }));
    assert_eq!(s.fallback_len(), 5);
    s.proxy().heal();
    assert_eq!(s.received(5), keys[5..]);
}

#[test]
fn no_fallback_list_keeps_nothing() {
    let mut s = refused_broker(-1);
    s.set_keys("key:", 10);
    assert!(wait_until(Duration::from_secs(5), || {
        s.server.module_info("events_dropped") == "10"
    }));
    // With nothing left to send the module goes idle, and tries again at the next event.
    assert!(wait_until(Duration::from_secs(5), || {
        s.server.module_info("connection") == "idle"
    }));
    assert!(!fallback_exists(&mut s.redis), "no fallback list");
    s.proxy().heal();
    // New events flow again; the dropped ones never come.
    let later = vec!["after".to_string()];
    set(&mut s.redis, "after");
    assert_eq!(s.received(1), later);
}

#[test]
fn a_connection_cut_mid_stream_loses_nothing() {
    let mut n = Node::builder("cut-")
        .through_proxy(Mode::Pass)
        .heartbeat(5)
        .start();
    for i in 0..2000 {
        set(&mut n.redis, &format!("k{i}"));
        if i % 500 == 250 {
            n.proxy().set_mode(Mode::CutMidStream);
        }
    }
    let got = n.consumer.drain_quiet(Duration::from_secs(8));
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<String> = got
        .iter()
        .map(Message::key_lossy)
        .filter(|k| seen.insert(k.clone()))
        .collect();
    let expected: Vec<String> = (0..2000).map(|i| format!("k{i}")).collect();
    assert_eq!(firsts, expected, "every event, first occurrences in order");
}

/// While events flow steadily the keyspace callback hands them to the outbox itself, past the
/// main thread's step. A broker that then black-holes them (accepts bytes, never confirms) is
/// still found away after about a second and the events spill, as they do through the step:
/// well before the confirm timeout (5 s) or missed heartbeats (20 s here) end the connection.
#[test]
fn a_black_hole_during_a_steady_flow_spills_after_about_a_second() {
    let mut s = Node::builder("blackhole-flow-")
        .through_proxy(Mode::Pass)
        .heartbeat(10)
        .timeouts(WAIT, QUIET)
        .start();
    let mut keys = Vec::new();
    let flow = |s: &mut Node, keys: &mut Vec<String>| {
        let key = format!("flow:{}", keys.len());
        set(&mut s.redis, &key);
        keys.push(key);
        std::thread::sleep(Duration::from_millis(2));
    };
    // A steady flow first: the publisher polls, events skip the step.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        flow(&mut s, &mut keys);
    }
    s.consumer.expect(keys.len(), WAIT);
    let warm = keys.len();

    s.proxy().set_mode(Mode::Blackhole);
    let holed = Instant::now();
    while s.fallback_len() == 0 && holed.elapsed() < Duration::from_secs(4) {
        flow(&mut s, &mut keys);
    }
    let spilled_after = holed.elapsed();
    eprintln!("the first event reached the list {spilled_after:?} into the black hole");
    assert!(
        spilled_after < Duration::from_millis(3500),
        "events reach the list about a second after the broker stops confirming; none after \
         {spilled_after:?}"
    );
    for _ in 0..20 {
        flow(&mut s, &mut keys);
    }

    s.proxy().heal();
    let got = s.consumer.drain_quiet(Duration::from_secs(8));
    let got_keys: Vec<String> = got.iter().map(Message::key_lossy).collect();
    // Around the failure, what was in flight may come twice; every event comes, first
    // occurrences in order.
    let mut first = Vec::new();
    for k in got_keys {
        if !first.contains(&k) {
            first.push(k);
        }
    }
    let keys = &keys[warm..];
    let expected: Vec<String> = keys.iter().filter(|k| first.contains(k)).cloned().collect();
    let missing: Vec<&String> = keys.iter().filter(|k| !first.contains(k)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert_eq!(first, expected, "in order");
    assert!(wait_until(WAIT, || s.fallback_len() == 0));
}
