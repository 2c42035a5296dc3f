//! What reaches RabbitMQ for each write: event classes, key masks, bodies, properties.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use testkit::{body, set, wait_until, Message, Node};

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(400);

/// Redis with the module publishing to `amq.direct` under a fresh routing key, and a consumer
/// bound to it.
fn start(events: &str, delivery_mode: u8, masks: &[&str]) -> Node {
    Node::builder("fwd-")
        .events(events)
        .delivery_mode(delivery_mode)
        .fallback_size(1000)
        .masks(masks)
        .timeouts(WAIT, QUIET)
        .start()
}

fn bodies(messages: &[Message]) -> Vec<Vec<u8>> {
    messages.iter().map(|m| m.body.clone()).collect()
}

fn run(redis: &mut redis::Connection, args: &[&[u8]]) {
    testkit::run::<redis::Value>(redis, args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
}

#[test]
fn every_class_yields_one_message_per_write() {
    let mut n = start("A", 1, &["ALL"]);
    let mut r = n.server.client();
    let writes: [&[&[u8]]; 9] = [
        &[b"SET", b"s", b"v"],
        &[b"HSET", b"h", b"f", b"v"],
        &[b"LPUSH", b"l", b"a"],
        &[b"SADD", b"st", b"m"],
        &[b"ZADD", b"z", b"1", b"m"],
        &[b"DEL", b"s"],
        &[b"EXPIRE", b"h", b"100"],
        &[b"SET", b"e", b"v"],
        &[b"PEXPIRE", b"e", b"50"],
    ];
    for w in writes {
        run(&mut r, w);
    }
    let expected: Vec<Vec<u8>> = [
        ("set", "s"),
        ("hset", "h"),
        ("lpush", "l"),
        ("sadd", "st"),
        ("zadd", "z"),
        ("del", "s"),
        ("expire", "h"),
        ("set", "e"),
        ("expire", "e"),
        ("expired", "e"),
    ]
    .iter()
    .map(|(ev, key)| body(0, ev, key.as_bytes()))
    .collect();
    let got = n.consumer.expect(expected.len(), WAIT);
    assert_eq!(bodies(&got), expected);
    n.consumer.expect_none(QUIET);
}

/// Valkey 8.1 and later report an `EXPIRE` whose time has passed as `expired`; Redis and
/// Valkey 8.0 as `del`. The module forwards what the server says.
#[test]
fn an_expire_in_the_past_is_forwarded_as_the_server_names_it() {
    let mut n = start("A", 1, &["ALL"]);
    let server = n.server.server_kind();
    let expected = if server.valkey_at_least(8, 1) {
        "expired"
    } else {
        "del"
    };
    let mut r = n.server.client();
    run(&mut r, &[b"SET", b"past", b"v"]);
    run(&mut r, &[b"EXPIRE", b"past", b"-1"]);
    let got = n.consumer.expect(2, WAIT);
    assert_eq!(
        bodies(&got),
        vec![body(0, "set", b"past"), body(0, expected, b"past")],
        "on {server}"
    );
    n.consumer.expect_none(QUIET);
}

#[test]
fn only_the_loaded_classes_are_forwarded() {
    let mut n = start("$", 1, &["ALL"]);
    let mut r = n.server.client();
    run(&mut r, &[b"SET", b"a", b"1"]);
    run(&mut r, &[b"EXPIRE", b"a", b"100"]);
    run(&mut r, &[b"DEL", b"a"]);
    run(&mut r, &[b"HSET", b"h", b"f", b"v"]);
    run(&mut r, &[b"SET", b"b", b"1"]);
    let got = n.consumer.expect(2, WAIT);
    assert_eq!(
        bodies(&got),
        vec![body(0, "set", b"a"), body(0, "set", b"b")]
    );
    n.consumer.expect_none(QUIET);
}

const KEYS: [&str; 8] = [
    "user:1",
    "user:",
    "xuser:1",
    "my-session-1",
    "sess",
    "applog",
    "log1",
    "",
];

#[test]
fn without_a_mask_nothing_is_forwarded() {
    let mut n = start("A", 1, &[]);
    assert_eq!(n.forwarded(&KEYS), Vec::<String>::new());
}

#[test]
fn masks_loaded_at_start() {
    let cases: [(&[&str], &[&str]); 5] = [
        (&["ALL"], &KEYS),
        (&["^user:.*$"], &["user:1", "user:"]),
        (&[".*session.*"], &["my-session-1"]),
        (&["log$"], &["applog"]),
        (
            &["^user:.*$", "log$", "^sess$"],
            &["user:1", "user:", "sess", "applog"],
        ),
    ];
    for (masks, expected) in cases {
        let mut n = start("$", 1, masks);
        assert_eq!(n.forwarded(&KEYS), expected, "masks {masks:?}");
    }
}

#[test]
fn keys_arrive_byte_for_byte_with_their_database() {
    let mut n = start("A", 1, &["ALL"]);
    let mut r = n.server.client();
    let key: &[u8] = b"line1\nline2\x00nul\xff\xfe-not-utf8";
    run(&mut r, &[b"SET", key, b"v"]);
    run(&mut r, &[b"SELECT", b"3"]);
    run(&mut r, &[b"SET", b"in-db-3", b"v"]);
    let got = n.consumer.expect(2, WAIT);
    assert_eq!(got[0].body, body(0, "set", key));
    assert_eq!(got[0].key(), key);
    assert_eq!(got[1].body, body(3, "set", b"in-db-3"));
}

#[test]
fn keys_larger_than_a_frame_arrive_whole_and_in_order() {
    // RabbitMQ's frame_max is 128 KiB: these bodies span one, two and nine frames, and the
    // small ones around them share a batch with them.
    let mut n = start("A", 1, &["ALL"]);
    let mut r = n.server.client();
    let keys: Vec<Vec<u8>> = [10, 131_072, 1_000, 1_100_000, 5]
        .iter()
        .enumerate()
        .map(|(i, &len)| (0..len).map(|j| b'a' + ((i + j) % 26) as u8).collect())
        .collect();
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.cmd("SET").arg(k.as_slice()).arg("v").ignore();
    }
    pipe.query::<()>(&mut r).expect("pipelined SETs");
    let got = n.consumer.expect(keys.len(), WAIT);
    let expected: Vec<Vec<u8>> = keys.iter().map(|k| body(0, "set", k)).collect();
    assert!(
        bodies(&got) == expected,
        "body lengths {:?}",
        got.iter().map(|m| m.body.len()).collect::<Vec<_>>()
    );
    // The confirms can reach the module just after the messages reach the n.consumer.
    assert!(
        wait_until(WAIT, || n.server.module_info_u64("events_confirmed")
            == keys.len() as u64),
        "confirmed: {}",
        n.server.module_info_u64("events_confirmed")
    );
}

#[test]
fn properties_exchange_and_identity() {
    for mode in [1, 2] {
        let mut n = start("$", mode, &["ALL"]);
        let mut r = n.server.client();
        for k in ["a", "b", "c"] {
            set(&mut r, k);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let got = n.consumer.expect(3, WAIT);
        let run_id = n.server.run_id();
        assert_eq!(run_id.len(), 40);
        for (i, m) in got.iter().enumerate() {
            assert_eq!(
                (m.exchange.as_str(), m.routing_key.as_str()),
                ("amq.direct", n.rk.as_str())
            );
            assert_eq!(m.content_type.as_deref(), Some("text/plain"));
            assert_eq!(m.delivery_mode, Some(mode));
            assert_eq!(m.app_id.as_deref(), Some("key_evt_amqp"));
            assert_eq!(
                m.message_id,
                Some(format!("{run_id}-{}", i + 1)),
                "seq starts at 1"
            );
            let ts = m.timestamp.expect("timestamp");
            assert!(ts.abs_diff(now) <= 5, "timestamp {ts} vs now {now}");
        }
    }
}

#[test]
fn another_exchange_and_routing_key() {
    let mut n = Node::builder("topic-")
        .heartbeat(0)
        .exchange("amq.topic")
        .delivery_mode(2)
        .fallback_size(100)
        .start();
    set(&mut n.redis, "k");
    let m = &n.consumer.expect(1, WAIT)[0];
    assert_eq!(
        (m.exchange.as_str(), m.routing_key.as_str()),
        ("amq.topic", n.rk.as_str())
    );
    assert_eq!(m.delivery_mode, Some(2));
}

/// An idle module drops its event-loop hook after a quiet second (it costs Redis work on every
/// iteration); whatever comes next must still be forwarded at once: a write, and an expiry that
/// Redis's cron raises while the module is quiet.
#[test]
fn events_after_a_quiet_spell_are_forwarded() {
    let mut n = start("A", 1, &["ALL"]);
    let mut r = n.server.client();
    run(&mut r, &[b"SET", b"first", b"v"]);
    run(&mut r, &[b"SET", b"expiring", b"v", b"PX", b"2500"]);
    assert_eq!(n.consumer.expect(3, WAIT).len(), 3, "set, set and expire");
    // Quiet for more than a second, then the key expires on its own.
    let expired = n.consumer.expect(1, WAIT);
    assert_eq!(bodies(&expired), [body(0, "expired", b"expiring")]);
    std::thread::sleep(Duration::from_millis(1500));
    let sent = std::time::Instant::now();
    run(&mut r, &[b"SET", b"after", b"v"]);
    let got = n.consumer.expect(1, WAIT);
    assert_eq!(bodies(&got), [body(0, "set", b"after")]);
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "forwarded at once, not at the next periodic step: {:?}",
        sent.elapsed()
    );
    n.consumer.expect_none(QUIET);
}

/// Redis 7.4+ hash-field expiry: `hexpire`, `hpersist` and `hexpired` come under class `h`, and
/// the key's removal when its last field expires as `del` (class `g`). Servers without it
/// refuse the commands.
#[test]
fn hash_field_expiry_is_forwarded_where_the_server_has_it() {
    let mut n = start("A", 1, &["ALL"]);
    let server = n.server.server_kind();
    let mut r = n.server.client();
    run(&mut r, &[b"HSET", b"h", b"f1", b"v", b"f2", b"v"]);
    let hexpire = testkit::run::<redis::Value>(
        &mut r,
        &[&b"HEXPIRE"[..], b"h", b"100", b"FIELDS", b"1", b"f1"],
    );
    if !server.redis_at_least(7, 4) {
        let e = hexpire.expect_err("no HEXPIRE before Redis 7.4");
        assert!(
            e.to_string().contains("unknown command"),
            "on {server}: {e}"
        );
        assert_eq!(
            bodies(&n.consumer.expect(1, WAIT)),
            vec![body(0, "hset", b"h")]
        );
        return;
    }
    hexpire.unwrap_or_else(|e| panic!("HEXPIRE on {server}: {e}"));
    run(&mut r, &[b"HPERSIST", b"h", b"FIELDS", b"1", b"f1"]);
    run(
        &mut r,
        &[b"HPEXPIRE", b"h", b"30", b"FIELDS", b"2", b"f1", b"f2"],
    );
    let got = n.consumer.expect(6, WAIT);
    assert_eq!(
        bodies(&got),
        vec![
            body(0, "hset", b"h"),
            body(0, "hexpire", b"h"),
            body(0, "hpersist", b"h"),
            body(0, "hexpire", b"h"),
            body(0, "hexpired", b"h"),
            body(0, "del", b"h"),
        ],
        "on {server}"
    );
    n.consumer.expect_none(QUIET);
}

/// What README warns about: a key emptied by field expiry is not `expired`, so `EVENTS x`
/// alone does not see it go (a plain key's expiry, sent after it, does come).
#[test]
fn a_hash_emptied_by_field_expiry_is_no_expired_event() {
    let mut n = start("x", 1, &["ALL"]);
    let server = n.server.server_kind();
    let mut r = n.server.client();
    run(&mut r, &[b"HSET", b"h", b"f", b"v"]);
    let field_expiry = &[&b"HPEXPIRE"[..], b"h", b"20", b"FIELDS", b"1", b"f"];
    if !server.redis_at_least(7, 4) {
        let e = testkit::run::<redis::Value>(&mut r, field_expiry).expect_err("no HPEXPIRE");
        assert!(
            e.to_string().contains("unknown command"),
            "on {server}: {e}"
        );
        return;
    }
    run(&mut r, field_expiry);
    assert!(wait_until(WAIT, || !testkit::run::<bool>(
        &mut r,
        &[&b"EXISTS"[..], b"h"]
    )
    .unwrap()));
    run(&mut r, &[b"SET", b"k", b"v", b"PX", b"20"]);
    let got = n.consumer.expect(1, WAIT);
    assert_eq!(bodies(&got), vec![body(0, "expired", b"k")], "on {server}");
    n.consumer.expect_none(QUIET);
}
