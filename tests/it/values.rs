//! `payload value` (issue 16), as a consumer sees it: every type's value right after the
//! change, binary values, the cap, the TTL, and the old value on delete, expiry (active and
//! lazy), eviction and overwrite where the server has the `Key` event (Redis 7.2+, Valkey 8),
//! absent where it has not (Redis 7.0). Values survive the fallback list.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::{run, wait_until, Message, Mode, Node, NodeBuilder, RedisServer, FALLBACK};

const WAIT: Duration = Duration::from_secs(15);
const QUIET: Duration = Duration::from_millis(400);

/// A node forwarding every class in json with `payload value`, then `configs`.
fn values_node(prefix: &str, configs: &[(&str, &str)]) -> NodeBuilder {
    let mut b = Node::builder(prefix)
        .events("A")
        .config("key_evt_amqp.format", "json")
        .config("key_evt_amqp.payload", "value")
        .timeouts(WAIT, QUIET);
    for (name, value) in configs {
        b = b.config(name, value);
    }
    b
}

/// Runs a write and panics with the command on an error (any reply is fine).
fn w(n: &mut Node, args: &[&str]) {
    let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    run::<redis::Value>(&mut n.redis, &bytes).unwrap_or_else(|e| panic!("{args:?}: {e}"));
}

fn body(m: &Message) -> Value {
    serde_json::from_slice(&m.body).unwrap_or_else(|e| panic!("not JSON ({e}): {m:?}"))
}

/// The events' bodies without `id` and `time` (checked elsewhere), in order.
fn bodies(n: &mut Node, count: usize) -> Vec<Value> {
    n.consumer
        .expect_exactly(count, WAIT, QUIET)
        .iter()
        .map(|m| {
            let mut v = body(m);
            let o = v.as_object_mut().unwrap();
            o.remove("id");
            o.remove("time");
            v
        })
        .collect()
}

/// Whether this server has the `Key` event that old values come from.
fn has_old_values(server: &RedisServer) -> bool {
    let kind = server.server_kind();
    kind.valkey_at_least(8, 0) || kind.redis_at_least(7, 2)
}

#[test]
fn every_type_arrives_with_its_value_right_after_the_change() {
    let mut n = values_node("values-types-", &[]).start();
    w(&mut n, &["SET", "s", "hello"]);
    w(&mut n, &["RPUSH", "l", "a", "b", ""]);
    w(&mut n, &["SADD", "st", "x"]);
    w(&mut n, &["HSET", "h", "f", "v"]);
    w(&mut n, &["ZADD", "z", "2.5", "b", "1", "a", "+inf", "c"]);
    w(&mut n, &["XADD", "x", "5-1", "f", "old"]);
    w(&mut n, &["XADD", "x", "6-1", "f", "1", "g", "2"]);
    w(&mut n, &["PEXPIRE", "h", "100000"]);
    w(&mut n, &["SET", "bin", "\u{0}ok"]);
    run::<redis::Value>(&mut n.redis, &[b"SET".as_slice(), b"raw", b"\xff\xfe"]).unwrap();
    run::<redis::Value>(&mut n.redis, &[b"SET".as_slice(), b"\xffk", b"v"]).unwrap();
    // A 100-byte string is read in place (raw), a short one with GET: both the same.
    let long = "y".repeat(100);
    w(&mut n, &["SET", "long", &long]);
    let got = bodies(&mut n, 12);
    let none = -1;
    assert_eq!(
        got[..8],
        [
            json!({"db":0,"event":"set","key":"s","type":"string","value":"hello","ttl_ms":none}),
            json!({"db":0,"event":"rpush","key":"l","type":"list","value":["a","b",""],"ttl_ms":none}),
            json!({"db":0,"event":"sadd","key":"st","type":"set","value":["x"],"ttl_ms":none}),
            json!({"db":0,"event":"hset","key":"h","type":"hash","value":{"f":"v"},"ttl_ms":none}),
            json!({"db":0,"event":"zadd","key":"z","type":"zset",
                   "value":[["a",1.0],["b",2.5],["c","inf"]],"ttl_ms":none}),
            json!({"db":0,"event":"xadd","key":"x","type":"stream","value":["5-1",{"f":"old"}],"ttl_ms":none}),
            json!({"db":0,"event":"xadd","key":"x","type":"stream",
                   "value":["6-1",{"f":"1","g":"2"}],"ttl_ms":none}),
            got[7].clone(),
        ]
    );
    let ttl = got[7]["ttl_ms"].as_i64().unwrap();
    assert!(
        got[7]["event"] == "expire" && got[7]["value"] == json!({"f":"v"}),
        "{}",
        got[7]
    );
    assert!((99_000..=100_000).contains(&ttl), "ttl_ms {ttl}");
    assert_eq!(got[8]["value"], "\u{0}ok", "a NUL is valid UTF-8");
    // Not UTF-8: the whole value in base64, the key too.
    assert_eq!(
        (got[9]["value_b64"].as_str(), got[9].get("value")),
        (Some("//4="), None)
    );
    assert_eq!(
        (got[10]["key_b64"].as_str(), got[10]["value"].as_str()),
        (Some("/2s="), Some("v"))
    );
    assert_eq!(got[11]["value"], long.as_str());
    // The reads changed nothing: the short string is still embedded, the counters untouched.
    assert_eq!(n.cmd(&["OBJECT", "ENCODING", "s"]).unwrap(), "embstr");
    assert_eq!(n.cmd(&["TYPE", "long"]).unwrap(), "string");
}

#[test]
fn a_value_over_value_max_bytes_is_left_out_and_marked() {
    let mut n = values_node("values-cap-", &[("key_evt_amqp.value_max_bytes", "16")]).start();
    w(&mut n, &["SET", "small", "0123456789abcde"]);
    w(&mut n, &["SET", "big", "0123456789abcdef"]);
    // Ten elements of one byte: ten bytes and one per element, 20 > 16.
    w(
        &mut n,
        &[
            "RPUSH", "list", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
        ],
    );
    w(
        &mut n,
        &["CONFIG", "SET", "key_evt_amqp.value_max_bytes", "0"],
    );
    w(&mut n, &["SET", "none", "v"]);
    let got = bodies(&mut n, 4);
    assert_eq!(got[0]["value"], "0123456789abcde", "15 bytes + 1 fit in 16");
    for g in &got[1..3] {
        assert_eq!(
            (
                g["value_truncated"].as_bool(),
                g.get("value"),
                g["type"].as_str()
            ),
            (Some(true), None, g["type"].as_str()),
            "{g}"
        );
    }
    assert_eq!(
        got[3],
        json!({"db":0,"event":"set","key":"none","type":"string","ttl_ms":-1}),
        "value_max_bytes 0: the type and TTL only"
    );
}

#[test]
fn old_values_on_delete_expiry_eviction_and_overwrite() {
    let mut n = values_node("values-old-", &[("enable-debug-command", "yes")]).start();
    let old = has_old_values(&n.server);
    w(&mut n, &["SET", "a", "one"]);
    w(&mut n, &["SET", "a", "two"]);
    w(&mut n, &["RPUSH", "l", "x", "y"]);
    w(&mut n, &["DEL", "l"]);
    w(&mut n, &["HSET", "h", "f", "v"]);
    w(&mut n, &["UNLINK", "h"]);
    w(&mut n, &["SET", "src", "moved"]);
    w(&mut n, &["RENAME", "src", "a"]);
    let got = bodies(&mut n, 9);
    let fields = |g: &Value| {
        (
            g["event"].clone(),
            g.get("old_type").cloned(),
            g.get("old_value").cloned(),
        )
    };
    let expected: [(&str, Option<Value>, Option<Value>); 9] = [
        ("set", None, None),
        ("set", Some(json!("string")), Some(json!("one"))),
        ("rpush", None, None),
        ("del", Some(json!("list")), Some(json!(["x", "y"]))),
        ("hset", None, None),
        ("del", Some(json!("hash")), Some(json!({"f":"v"}))),
        ("set", None, None),
        ("rename_from", Some(json!("string")), Some(json!("moved"))),
        // RENAME onto an existing key: its old value goes with rename_to.
        ("rename_to", Some(json!("string")), Some(json!("two"))),
    ];
    for (g, (event, old_type, old_value)) in got.iter().zip(expected) {
        let want = if old {
            (json!(event), old_type, old_value)
        } else {
            (json!(event), None, None)
        };
        assert_eq!(fields(g), want, "{} on {}", g, n.server.server_kind());
    }

    // Expiry, active: the cycle deletes it; lazy: a read finds it past its time.
    w(&mut n, &["SET", "act", "gone-soon"]);
    w(&mut n, &["PEXPIRE", "act", "30"]);
    assert!(wait_until(WAIT, || n.cmd(&["EXISTS", "act"]).unwrap() == "0"));
    w(&mut n, &["DEBUG", "SET-ACTIVE-EXPIRE", "0"]);
    w(&mut n, &["SET", "lazy", "read-late"]);
    w(&mut n, &["PEXPIRE", "lazy", "30"]);
    std::thread::sleep(Duration::from_millis(80));
    let read: redis::Value = redis::cmd("GET").arg("lazy").query(&mut n.redis).unwrap();
    assert_eq!(read, redis::Value::Nil);
    w(&mut n, &["DEBUG", "SET-ACTIVE-EXPIRE", "1"]);
    let got = bodies(&mut n, 6);
    let expired: Vec<&Value> = got.iter().filter(|g| g["event"] == "expired").collect();
    assert_eq!(expired.len(), 2, "{got:?}");
    for (g, value) in expired.iter().zip(["gone-soon", "read-late"]) {
        assert_eq!(g["type"], "none", "gone at its event: {g}");
        let want = old.then(|| json!(value));
        assert_eq!(g.get("old_value").cloned(), want, "{g}");
    }
}

#[test]
fn an_evicted_key_carries_its_old_value() {
    let mut n = values_node("values-evict-", &[]).start();
    let old = has_old_values(&n.server);
    // The only key with a TTL, so the only one volatile-ttl may evict (events: set, expire).
    w(&mut n, &["SET", "victim", "evict-me", "EX", "100000"]);
    let used: u64 = n
        .server
        .info_field("memory", "used_memory")
        .unwrap()
        .parse()
        .unwrap();
    n.server
        .config_set("maxmemory-policy", "volatile-ttl")
        .unwrap();
    n.server
        .config_set("maxmemory", &(used + 200_000).to_string())
        .unwrap();
    let filler = "f".repeat(10_000);
    let mut written = 0;
    for i in 0..100 {
        let set = run::<redis::Value>(
            &mut n.redis,
            &[b"SET", format!("fill:{i}").as_bytes(), filler.as_bytes()],
        );
        // Past maxmemory with nothing left to evict, writes fail (OOM): then it is gone.
        if set.is_err() {
            break;
        }
        written += 1;
        if n.cmd(&["EXISTS", "victim"]).unwrap() == "0" {
            break;
        }
    }
    assert_eq!(n.cmd(&["EXISTS", "victim"]).unwrap(), "0", "evicted");
    n.server.config_set("maxmemory", "0").unwrap();
    let got: Vec<Value> = n
        .consumer
        .expect_exactly(written + 3, WAIT, QUIET)
        .iter()
        .map(body)
        .collect();
    let evicted = got
        .iter()
        .find(|g| g["event"] == "evicted")
        .unwrap_or_else(|| panic!("no eviction in {got:?}"));
    assert_eq!(
        (evicted["key"].as_str(), evicted["type"].as_str()),
        (Some("victim"), Some("none"))
    );
    assert_eq!(
        evicted.get("old_value").cloned(),
        old.then(|| json!("evict-me")),
        "{evicted} on {}",
        n.server.server_kind()
    );
}

#[test]
fn values_wait_in_the_fallback_list_compactly_and_arrive_whole() {
    let mut n = values_node("values-list-", &[])
        .through_proxy(Mode::Refuse)
        .start();
    w(&mut n, &["HSET", "h", "field", "value"]);
    w(&mut n, &["SET", "s", "x"]);
    w(&mut n, &["DEL", "s"]);
    assert!(wait_until(WAIT, || n.fallback_len() == 3), "spilled");
    // The list holds the envelope and the compact value, not JSON.
    let item: Vec<u8> = redis::cmd("LINDEX")
        .arg(FALLBACK)
        .arg(0)
        .query(&mut n.redis)
        .unwrap();
    assert_eq!(item[0], 0x1d, "{item:?}");
    assert!(!item.windows(7).any(|w| w == b"\"value\""), "{item:?}");
    n.proxy().set_mode(Mode::Pass);
    let got = bodies(&mut n, 3);
    assert_eq!(got[0]["value"], json!({"field":"value"}));
    assert_eq!(got[1]["value"], "x");
    assert_eq!(got[2]["type"], "none");
    if has_old_values(&n.server) {
        assert_eq!(got[2]["old_value"], "x");
    }
}

#[test]
fn cloudevents_carry_the_same_values() {
    let mut n = values_node("values-ce-", &[("key_evt_amqp.format", "cloudevents")]).start();
    w(&mut n, &["SADD", "s", "m"]);
    let m = n.consumer.expect_exactly(1, WAIT, QUIET).remove(0);
    let b = body(&m);
    assert_eq!(
        (b["type"].as_str(), b["value"].clone()),
        (Some("set"), json!(["m"]))
    );
    assert_eq!(m.header_text("ce-type"), "redis.keyspace.sadd");
}

#[test]
fn payload_value_needs_json_or_cloudevents_and_bad_values_change_nothing() {
    let n = Node::builder("values-refuse-").start();
    let s = &n.server;
    let err = s.config_set("key_evt_amqp.payload", "value").unwrap_err();
    assert!(
        err.contains("key_evt_amqp.payload") && err.contains("key_evt_amqp.format"),
        "{err}"
    );
    let err = s.config_set("key_evt_amqp.payload", "values").unwrap_err();
    assert!(err.contains("expected key or value"), "{err}");
    assert_eq!(
        s.config_get("key_evt_amqp.payload")["key_evt_amqp.payload"],
        "key"
    );
    s.config_set("key_evt_amqp.format", "json").unwrap();
    s.config_set("key_evt_amqp.payload", "value").unwrap();
    let err = s.config_set("key_evt_amqp.format", "text").unwrap_err();
    assert!(
        err.contains("key_evt_amqp.format") && err.contains("key_evt_amqp.payload"),
        "{err}"
    );
    assert_eq!(
        s.config_get("key_evt_amqp.format")["key_evt_amqp.format"],
        "json"
    );
    for bad in ["-1", "x", "600000000"] {
        let err = s
            .config_set("key_evt_amqp.value_max_bytes", bad)
            .unwrap_err();
        assert!(err.contains("value_max_bytes"), "{bad}: {err}");
    }
    assert_eq!(
        s.config_get("key_evt_amqp.value_max_bytes")["key_evt_amqp.value_max_bytes"],
        "65536"
    );
}
