//! Formats, headers and routing-key templates (issue 15), as a consumer sees them on the real
//! broker: exchanges of every kind route on what the module sends, JSON and CloudEvents
//! bodies parse, and bad values are refused with the option's name and change nothing.
//!
//! Each test declares exchanges of its own (unique names, auto-deleted with their last queue)
//! and never touches the broker's configuration.

use std::time::Duration;

use lapin::options::ExchangeDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::ExchangeKind;
use testkit::{
    block_on_timeout, module_path, run, unique_name, Consumer, ConsumerOptions, Header, Message,
    ModuleArgs, RedisServer,
};

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(500);

/// Declares an exchange of `kind` under a fresh name; it goes away with its last binding.
fn exchange(kind: ExchangeKind) -> String {
    let name = unique_name("fmt-x-");
    let (conn, channel) = testkit::amqp_channel();
    let declared = block_on_timeout(
        WAIT,
        channel.exchange_declare(
            name.as_str().into(),
            kind,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        ),
    );
    assert!(
        matches!(declared, Some(Ok(()))),
        "exchange.declare {name}: {declared:?}"
    );
    let _ = block_on_timeout(WAIT, conn.close(200, "bye".into()));
    name
}

fn cmd(r: &mut redis::Connection, args: &[&[u8]]) {
    run::<redis::Value>(r, args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
}

fn json(m: &Message) -> serde_json::Value {
    serde_json::from_slice(&m.body).unwrap_or_else(|e| panic!("not JSON ({e}): {m:?}"))
}

/// CRC-32 (IEEE, as zlib.crc32), written bit by bit here: an independent check of the hash
/// the README documents for `{partition:N}`.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `date -u -d @ts +%Y-%m-%dT%H:%M:%SZ`: RFC 3339 computed by another program.
pub(crate) fn date_rfc3339(ts: u64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{ts}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date(1)");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_topic_exchange_bound_to_redis_0_expired_gets_only_db_0_expiries() {
    let x = exchange(ExchangeKind::Topic);
    let mut expired0 = Consumer::bind(&x, "redis.0.expired");
    let mut all = Consumer::bind(&x, "#");
    let args = ModuleArgs {
        events: "g$x".into(),
        exchange: x.clone(),
        routing_key: "redis.{db}.{event}".into(),
        ..ModuleArgs::default()
    };
    let server = RedisServer::start(&args.to_vec());
    let mut r = server.client();
    cmd(&mut r, &[b"SET", b"a", b"v"]);
    cmd(&mut r, &[b"PEXPIRE", b"a", b"20"]);
    cmd(&mut r, &[b"SET", b"d", b"v"]);
    cmd(&mut r, &[b"DEL", b"d"]);
    cmd(&mut r, &[b"SELECT", b"1"]);
    cmd(&mut r, &[b"SET", b"b", b"v"]);
    cmd(&mut r, &[b"PEXPIRE", b"b", b"20"]);
    // Both keys expire (the active cycle, or the GETs below once their time has passed).
    std::thread::sleep(Duration::from_millis(100));
    cmd(&mut r, &[b"GET", b"b"]);
    cmd(&mut r, &[b"SELECT", b"0"]);
    cmd(&mut r, &[b"GET", b"a"]);

    let got = all.expect_exactly(8, WAIT, QUIET);
    let mut keys: Vec<&str> = got.iter().map(|m| m.routing_key.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "redis.0.del",
            "redis.0.expire",
            "redis.0.expired",
            "redis.0.set",
            "redis.0.set",
            "redis.1.expire",
            "redis.1.expired",
            "redis.1.set",
        ]
    );
    let only = expired0.expect_exactly(1, WAIT, QUIET);
    assert_eq!(only[0].body, b"0\nexpired\na");
    assert_eq!(only[0].routing_key, "redis.0.expired");
}

#[test]
fn a_headers_exchange_bound_on_redis_event_del_gets_only_deletions() {
    let x = exchange(ExchangeKind::Headers);
    let mut bind = FieldTable::default();
    bind.insert("x-match".into(), AMQPValue::LongString("all".into()));
    bind.insert("redis-event".into(), AMQPValue::LongString("del".into()));
    let mut dels = Consumer::connect(&ConsumerOptions {
        bind_arguments: bind,
        ..ConsumerOptions::new(&x, "")
    })
    .unwrap();
    let mut db1 = FieldTable::default();
    db1.insert("x-match".into(), AMQPValue::LongString("all".into()));
    db1.insert("redis-db".into(), AMQPValue::LongLongInt(1));
    let mut in_db1 = Consumer::connect(&ConsumerOptions {
        bind_arguments: db1,
        ..ConsumerOptions::new(&x, "")
    })
    .unwrap();
    let args = ModuleArgs {
        events: "g$h".into(),
        exchange: x.clone(),
        routing_key: "ignored-by-a-headers-exchange".into(),
        ..ModuleArgs::default()
    };
    let server = RedisServer::start_with(&[("key_evt_amqp.headers", "yes")], Some(&args.to_vec()));
    let mut r = server.client();
    cmd(&mut r, &[b"SET", b"k1", b"v"]);
    cmd(&mut r, &[b"SET", b"\xffbin\n", b"v"]);
    cmd(&mut r, &[b"HSET", b"h", b"f", b"v"]);
    cmd(&mut r, &[b"DEL", b"k1"]);
    cmd(&mut r, &[b"DEL", b"\xffbin\n", b"h"]);
    cmd(&mut r, &[b"SELECT", b"1"]);
    cmd(&mut r, &[b"SET", b"one", b"v"]);

    let got = dels.expect_exactly(3, WAIT, QUIET);
    let keys: Vec<&Header> = got.iter().map(|m| m.header("redis-key").unwrap()).collect();
    assert_eq!(
        keys,
        [
            &Header::Bytes(b"k1".to_vec()),
            &Header::Bytes(b"\xffbin\n".to_vec()),
            &Header::Bytes(b"h".to_vec())
        ]
    );
    for m in &got {
        assert_eq!(
            m.header("redis-event"),
            Some(&Header::Bytes(b"del".to_vec()))
        );
        assert_eq!(m.header("redis-db"), Some(&Header::Int(0)), "{m:?}");
        // The format is still text: the headers come on top of today's message.
        assert_eq!(m.content_type.as_deref(), Some("text/plain"));
        assert!(m.body.starts_with(b"0\ndel\n"), "{m:?}");
    }
    let one = in_db1.expect_exactly(1, WAIT, QUIET);
    assert_eq!(one[0].body, b"1\nset\none");
    assert_eq!(one[0].header("redis-db"), Some(&Header::Int(1)));
}

#[test]
fn partition_4_sends_each_keys_events_to_one_queue_of_four_in_order() {
    let base = unique_name("fmt-part-");
    let mut queues: Vec<Consumer> = (0..4)
        .map(|i| Consumer::bind("amq.direct", &format!("{base}.{i}")))
        .collect();
    let args = ModuleArgs {
        events: "g$".into(),
        routing_key: format!("{base}.{{partition:4}}"),
        ..ModuleArgs::default()
    };
    let server = RedisServer::start(&args.to_vec());
    let mut r = server.client();
    let keys: Vec<String> = (0..16).map(|i| format!("user:{i}")).collect();
    // Three events per key, interleaved across keys.
    for k in &keys {
        cmd(&mut r, &[b"SET", k.as_bytes(), b"v"]);
    }
    for k in &keys {
        cmd(&mut r, &[b"APPEND", k.as_bytes(), b"w"]);
    }
    for k in &keys {
        cmd(&mut r, &[b"DEL", k.as_bytes()]);
    }
    let mut expected: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 4];
    for event in ["set", "append", "del"] {
        for k in &keys {
            let q = (crc32(k.as_bytes()) % 4) as usize;
            expected[q].push(format!("0\n{event}\n{k}").into_bytes());
        }
    }
    assert!(
        expected.iter().filter(|e| !e.is_empty()).count() >= 3,
        "16 keys spread over at least 3 of 4 partitions"
    );
    for (i, q) in queues.iter_mut().enumerate() {
        let got = q.expect_exactly(expected[i].len(), WAIT, QUIET);
        let bodies: Vec<Vec<u8>> = got.iter().map(|m| m.body.clone()).collect();
        assert_eq!(
            bodies, expected[i],
            "queue {i}: each key's events, in order"
        );
    }
    assert_eq!(crc32(b"user:1"), 0x7BA5_C282, "zlib.crc32(b'user:1')");
}

#[test]
fn json_bodies_parse_and_carry_binary_keys_as_key_b64() {
    let rk = unique_name("fmt-json-");
    let mut c = Consumer::bind("amq.direct", &rk);
    let args = ModuleArgs::with_routing_key(&rk);
    let server = RedisServer::start_with(&[("key_evt_amqp.format", "json")], Some(&args.to_vec()));
    let mut r = server.client();
    cmd(&mut r, &[b"SET", b"user:1", b"v"]);
    cmd(&mut r, &[b"SET", b"\xff\x00k\n", b"v"]);
    cmd(&mut r, &[b"SET", b"", b"v"]);
    cmd(&mut r, &[b"SET", b"q\"uote\\", b"v"]);
    let got = c.expect_exactly(4, WAIT, QUIET);
    for m in &got {
        assert_eq!(m.content_type.as_deref(), Some("application/json"));
        assert_eq!(m.app_id.as_deref(), Some("key_evt_amqp"));
        assert!(m.headers.is_empty(), "no headers unless asked: {m:?}");
        let v = json(m);
        assert_eq!(v["db"], 0);
        assert_eq!(v["event"], "set");
        assert_eq!(v["id"].as_str(), m.message_id.as_deref());
        assert_eq!(v["time"].as_u64(), m.timestamp);
        assert!(m.timestamp.is_some_and(|t| t > 1_700_000_000));
    }
    assert_eq!(json(&got[0])["key"], "user:1");
    assert!(json(&got[0]).get("key_b64").is_none());
    let binary = json(&got[1]);
    assert!(binary.get("key").is_none(), "{binary}");
    assert_eq!(binary["key_b64"], "/wBrCg==");
    assert_eq!(json(&got[2])["key"], "");
    assert_eq!(json(&got[3])["key"], "q\"uote\\");
    // CONFIG GET shows it; CONFIG SET text goes back to today's bodies.
    assert_eq!(
        server.config_get("key_evt_amqp.format")["key_evt_amqp.format"],
        "json"
    );
    server.config_set("key_evt_amqp.format", "text").unwrap();
    cmd(&mut r, &[b"SET", b"user:2", b"v"]);
    let m = c.expect_exactly(1, WAIT, QUIET);
    assert_eq!(m[0].body, b"0\nset\nuser:2");
    assert_eq!(m[0].content_type.as_deref(), Some("text/plain"));
}

/// Items the old C module left in the list have no identity: their JSON has no `id` (nor
/// `time`), their CloudEvents id is made unique by this node's run id.
#[test]
fn items_without_identity_have_no_id_and_load_with_loadex_config() {
    let rk = unique_name("fmt-legacy-");
    let mut c = Consumer::bind("amq.direct", &rk);
    let server = RedisServer::start_without_module(&[]);
    let mut r = server.client();
    cmd(
        &mut r,
        &[
            b"RPUSH",
            testkit::FALLBACK.as_bytes(),
            b"0\nset\nold-1",
            b"3\nexpired\nold\xfe",
        ],
    );
    let mut load: Vec<Vec<u8>> = vec![
        b"MODULE".to_vec(),
        b"LOADEX".to_vec(),
        module_path().as_os_str().as_encoded_bytes().to_vec(),
        b"CONFIG".to_vec(),
        b"key_evt_amqp.format".to_vec(),
        b"cloudevents".to_vec(),
        b"ARGS".to_vec(),
    ];
    load.extend(
        ModuleArgs::with_routing_key(&rk)
            .to_vec()
            .into_iter()
            .map(String::into_bytes),
    );
    run::<redis::Value>(&mut r, &load).unwrap();
    let got = c.expect_exactly(2, WAIT, QUIET);
    let run_id = server.run_id();
    for (m, (db, event)) in got.iter().zip([(0, "set"), (3, "expired")]) {
        assert_eq!(m.message_id, None);
        assert_eq!(m.timestamp, None);
        let v = json(m);
        assert_eq!(
            (v["db"].as_i64(), v["event"].as_str()),
            (Some(db), Some(event))
        );
        assert!(v.get("id").is_none() && v.get("time").is_none(), "{v}");
        let id = m.header_text("ce-id");
        assert!(id.starts_with(&format!("{run_id}-legacy-")), "{id}");
        assert_eq!(
            m.header_text("ce-source"),
            format!("/key_evt_amqp/{run_id}")
        );
        assert!(m.header("ce-time").is_none());
    }
    assert_ne!(got[0].header("ce-id"), got[1].header("ce-id"));
    assert_eq!(json(&got[0])["key"], "old-1");
    assert_eq!(json(&got[1])["key_b64"], "b2xk/g==");
    assert_eq!(got[0].header_text("ce-subject"), "old-1");
    assert!(
        got[1].header("ce-subject").is_none(),
        "not UTF-8: no subject"
    );
}

#[test]
fn cloudevents_attributes_are_headers_with_the_right_values() {
    let rk = unique_name("fmt-ce-");
    let mut c = Consumer::bind("amq.direct", &rk);
    let args = ModuleArgs {
        events: "g$".into(),
        ..ModuleArgs::with_routing_key(&rk)
    };
    let server = RedisServer::start_with(
        &[
            ("key_evt_amqp.format", "cloudevents"),
            ("key_evt_amqp.headers", "yes"),
        ],
        Some(&args.to_vec()),
    );
    let run_id = server.run_id();
    let mut r = server.client();
    cmd(&mut r, &[b"SET", b"user:1", b"v"]);
    cmd(&mut r, &[b"SET", b"bin\xff", b"v"]);
    let got = c.expect_exactly(2, WAIT, QUIET);
    for m in &got {
        assert_eq!(m.content_type.as_deref(), Some("application/json"));
        assert_eq!(m.header_text("ce-specversion"), "1.0");
        assert_eq!(Some(m.header_text("ce-id")), m.message_id.as_deref());
        assert_eq!(
            m.header_text("ce-source"),
            format!("/key_evt_amqp/{run_id}")
        );
        assert_eq!(m.header_text("ce-type"), "redis.keyspace.set");
        assert_eq!(m.header_text("ce-time"), date_rfc3339(m.timestamp.unwrap()));
        // headers yes adds the redis-* ones.
        assert_eq!(m.header("redis-db"), Some(&Header::Int(0)));
        assert_eq!(m.header_text("redis-event"), "set");
        let v = json(m);
        assert_eq!(v["id"].as_str(), m.message_id.as_deref());
    }
    assert_eq!(got[0].header_text("ce-subject"), "user:1");
    assert_eq!(json(&got[0])["key"], "user:1");
    assert!(got[1].header("ce-subject").is_none(), "{:?}", got[1]);
    assert_eq!(json(&got[1])["key_b64"], "Ymlu/w==");
    assert_eq!(
        got[1].header("redis-key"),
        Some(&Header::Bytes(b"bin\xff".to_vec()))
    );

    // The AMQP 1.0 binding's names, and a source of the operator's choosing.
    server
        .config_set("key_evt_amqp.ce_header_prefix", "cloudEvents_")
        .unwrap();
    server
        .config_set("key_evt_amqp.ce_source", "/orders")
        .unwrap();
    cmd(&mut r, &[b"DEL", b"user:1"]);
    let m = &c.expect_exactly(1, WAIT, QUIET)[0];
    assert_eq!(m.header_text("cloudEvents_type"), "redis.keyspace.del");
    assert_eq!(m.header_text("cloudEvents_source"), "/orders");
    assert_eq!(m.header_text("cloudEvents_specversion"), "1.0");
    assert!(
        m.headers.iter().all(|(n, _)| !n.starts_with("ce-")),
        "{:?}",
        m.headers
    );
}

#[test]
fn a_rendered_routing_key_over_255_bytes_is_cut_and_counted() {
    let base = unique_name("fmt-cut-");
    let key = "k".repeat(300);
    let cut: String = format!("{base}.{key}").chars().take(255).collect();
    let mut c = Consumer::bind("amq.direct", &cut);
    let args = ModuleArgs {
        routing_key: format!("{base}.{{key}}"),
        ..ModuleArgs::default()
    };
    let server = RedisServer::start(&args.to_vec());
    let mut r = server.client();
    cmd(&mut r, &[b"SET", key.as_bytes(), b"v"]);
    let m = c.expect_exactly(1, WAIT, QUIET);
    assert_eq!(m[0].routing_key.len(), 255);
    assert_eq!(server.module_info("routing_keys_cut"), "1");
}

#[test]
fn bad_formats_prefixes_and_templates_are_refused_and_change_nothing() {
    let rk = unique_name("fmt-bad-");
    let mut c = Consumer::bind("amq.direct", &rk);
    let args = ModuleArgs::with_routing_key(&rk);
    let server = RedisServer::start(&args.to_vec());
    let mut r = server.client();
    let refused: [(&str, &str, &[&str]); 7] = [
        ("key_evt_amqp.format", "xml", &["text, json or cloudevents"]),
        ("key_evt_amqp.format", "", &["text, json or cloudevents"]),
        (
            "key_evt_amqp.ce_header_prefix",
            "x-ce-",
            &["ce-", "cloudEvents_", "cloudEvents:"],
        ),
        ("key_evt_amqp.ce_source", "has space", &["URI-reference"]),
        (
            "key_evt_amqp.routing_key",
            "redis.{nope}",
            &["{partition:N}", "unknown placeholder"],
        ),
        (
            "key_evt_amqp.routing_key",
            "redis.{db",
            &["braces in pairs", "unpaired brace"],
        ),
        (
            "key_evt_amqp.routing_key",
            "p.{partition:1025}",
            &["N from 1 to 1024", "out of range"],
        ),
    ];
    for (name, value, accepted) in refused {
        let before = server.config_get(name);
        let e = server
            .config_set(name, value)
            .expect_err(&format!("CONFIG SET {name} {value:?} was accepted"));
        assert!(e.contains(name), "{name} {value:?}: {e}");
        for a in accepted {
            assert!(e.contains(a), "{name} {value:?}: {e} lacks {a:?}");
        }
        assert_eq!(server.config_get(name), before, "{name} unchanged");
    }
    let e = server
        .config_set("key_evt_amqp.headers", "maybe")
        .unwrap_err();
    assert!(e.contains("key_evt_amqp.headers"), "{e}");
    assert_eq!(
        server.config_get("key_evt_amqp.headers")["key_evt_amqp.headers"],
        "no"
    );
    // The commands refuse a bad template the same way, and change nothing either.
    for command in ["key_evt_amqp.config_set", "key_evt_amqp.connect"] {
        let mut bad = args.clone();
        bad.routing_key = "r.{partition:0}".into();
        let e = run::<String>(&mut r, &bad.command(command)).unwrap_err();
        assert!(
            e.contains("ROUTING_KEY") && e.contains("out of range"),
            "{e}"
        );
        assert_eq!(
            server.config_get("key_evt_amqp.routing_key")["key_evt_amqp.routing_key"],
            rk
        );
    }
    // Still today's messages, where they went before.
    cmd(&mut r, &[b"SET", b"after", b"v"]);
    let m = c.expect_exactly(1, WAIT, QUIET);
    assert_eq!(m[0].body, b"0\nset\nafter");
    assert_eq!(m[0].content_type.as_deref(), Some("text/plain"));
    assert!(m[0].headers.is_empty());
    // And at load.
    let mut bad = ModuleArgs::with_routing_key("r.{key");
    bad.masks = vec!["ALL".into()];
    let f = RedisServer::start_expect_load_failure(&bad.to_vec());
    assert!(
        f.log.contains("invalid ROUTING_KEY 'r.{key'") && f.log.contains("unpaired brace"),
        "{}",
        testkit::tail_lines(&f.log, 10)
    );
}

#[test]
fn a_template_from_config_set_takes_effect_at_once() {
    let base = unique_name("fmt-cs-");
    let mut c = Consumer::bind("amq.direct", &format!("{base}.set.user"));
    let args = ModuleArgs::with_routing_key(&unique_name("fmt-cs-old-"));
    let server = RedisServer::start(&args.to_vec());
    let mut r = server.client();
    let mut new = args.clone();
    new.routing_key = format!("{base}.{{event}}.{{prefix}}");
    assert_eq!(
        run::<String>(&mut r, &new.short_command("key_evt_amqp.config_set", 7)),
        Ok("OK".into())
    );
    assert_eq!(
        server.config_get("key_evt_amqp.routing_key")["key_evt_amqp.routing_key"],
        new.routing_key
    );
    cmd(&mut r, &[b"SET", b"user:7", b"v"]);
    let m = c.expect_exactly(1, WAIT, QUIET);
    assert_eq!(m[0].body, b"0\nset\nuser:7");
}

/// Flush events in the other formats: json `"event":"flushall"` with db -1 and an empty key,
/// cloudevents type `redis.keyspace.flushdb` without a subject (the key is empty), swapdb's
/// key the other database, and `redis-*` headers like any event.
#[test]
fn flush_events_in_json_and_cloudevents() {
    let rk = unique_name("fmt-flush-");
    let mut c = Consumer::bind("amq.direct", &rk);
    let args = ModuleArgs {
        events: "g$".into(),
        ..ModuleArgs::with_routing_key(&rk)
    };
    let server = RedisServer::start_with(
        &[
            ("key_evt_amqp.format", "json"),
            ("key_evt_amqp.headers", "yes"),
            ("key_evt_amqp.flush_events", "yes"),
        ],
        Some(&args.to_vec()),
    );
    let mut r = server.client();
    cmd(&mut r, &[b"SET", b"k", b"v"]);
    cmd(&mut r, &[b"FLUSHALL"]);
    cmd(&mut r, &[b"SWAPDB", b"0", b"1"]);
    let got = c.expect_exactly(3, WAIT, QUIET);
    let events: Vec<(i64, String, String)> = got
        .iter()
        .map(|m| {
            let v = json(m);
            let field = |n: &str| {
                v[n].as_str()
                    .unwrap_or_else(|| panic!("{n}: {v}"))
                    .to_string()
            };
            (v["db"].as_i64().unwrap(), field("event"), field("key"))
        })
        .collect();
    assert_eq!(
        events,
        [
            (0, "set".into(), "k".into()),
            (-1, "flushall".into(), String::new()),
            (0, "swapdb".into(), "1".into()),
        ]
    );
    assert_eq!(got[1].header("redis-db"), Some(&Header::Int(-1)));
    assert_eq!(got[1].header_text("redis-event"), "flushall");

    server
        .config_set("key_evt_amqp.format", "cloudevents")
        .unwrap();
    cmd(&mut r, &[b"FLUSHDB"]);
    let m = &c.expect_exactly(1, WAIT, QUIET)[0];
    assert_eq!(m.header_text("ce-type"), "redis.keyspace.flushdb");
    assert!(
        m.header("ce-subject").is_none(),
        "no key, no subject: {m:?}"
    );
    assert_eq!(json(m)["db"], 0);
}
