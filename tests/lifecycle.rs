//! Loading with bad arguments, unloading and loading again in the same Redis process.

mod support;

use std::time::Duration;

use support::{unique_routing_key, wait_until, Consumer, RedisServer};

const WAIT: Duration = Duration::from_secs(10);
const FALLBACK: &str = "REDIS_MODULE-key_evt_amqp-fallback_storage";

#[test]
fn bad_load_arguments_fail_the_load_and_name_the_argument() {
    let cases: [(&[&str], &str, &str); 6] = [
        (&["q"], "EVENTS", "'q'"),
        (&["xe", "127.0.0.1", "abc"], "PORT", "'abc'"),
        (&["xe", "127.0.0.1", "70000"], "PORT", "1 to 65535"),
        (
            &[
                "xe",
                "127.0.0.1",
                "5672",
                "guest",
                "guest",
                "30",
                "amq.direct",
                "rk",
                "3",
            ],
            "DELIVERY_MODE",
            "'3'",
        ),
        (
            &["xe", "127.0.0.1", "5672", "guest", "guest", "-1"],
            "HEARTBEAT",
            "'-1'",
        ),
        (
            &[
                "xe",
                "127.0.0.1",
                "5672",
                "guest",
                "guest",
                "30",
                "amq.direct",
                "rk",
                "1",
                "lots",
            ],
            "FALLBACK_SIZE",
            "'lots'",
        ),
    ];
    for (args, name, detail) in cases {
        let failure = RedisServer::start_expect_load_failure(args);
        let line = failure
            .log
            .lines()
            .find(|l| l.contains("MODULE LOAD refused"))
            .unwrap_or_else(|| panic!("{args:?}: no refusal in the log:\n{}", failure.log));
        assert!(
            line.contains(name) && line.contains(detail),
            "{args:?}: {line}"
        );
        assert!(line.contains("expected"), "says what is accepted: {line}");
    }
}

#[test]
fn the_password_is_not_logged() {
    let server = RedisServer::start(&[
        "xe",
        "127.0.0.1",
        "1",
        "guest",
        "pa55-s3cret",
        "30",
        "amq.direct",
        "rk",
        "1",
        "0",
        "ALL",
    ]);
    let mut r = server.client();
    // Port 1 refuses: the failure is logged and shown in INFO.
    redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query::<()>(&mut r)
        .unwrap();
    redis::cmd("EXPIRE")
        .arg("k")
        .arg("1")
        .query::<()>(&mut r)
        .unwrap();
    redis::cmd("key_evt_amqp.connect")
        .query::<()>(&mut r)
        .unwrap();
    assert!(wait_until(WAIT, || server
        .log()
        .contains("Connection refused")));
    let info: String = redis::cmd("INFO")
        .arg("key_evt_amqp")
        .query(&mut r)
        .unwrap();
    assert!(!server.log().contains("pa55-s3cret"));
    assert!(!info.contains("pa55-s3cret"));
}

#[test]
fn unload_keeps_waiting_events_and_a_reload_with_other_arguments_drains_them() {
    let rk = unique_routing_key("life-");
    let mut consumer = Consumer::bind("amq.direct", &rk);
    let args = [
        "A",
        "127.0.0.1",
        "5672",
        "guest",
        "guest",
        "30",
        "amq.direct",
        &rk,
        "1",
        "0",
        "ALL",
    ];
    let server = RedisServer::start(&args);
    let mut r = server.client();
    redis::cmd("SET")
        .arg("before")
        .arg("v")
        .query::<()>(&mut r)
        .unwrap();
    assert_eq!(consumer.expect(1, WAIT)[0].parts().unwrap().2, b"before");

    redis::cmd("key_evt_amqp.disconnect")
        .query::<()>(&mut r)
        .unwrap();
    for i in 0..5 {
        redis::cmd("SET")
            .arg(format!("waiting{i}"))
            .arg("v")
            .query::<()>(&mut r)
            .unwrap();
    }
    redis::cmd("MODULE")
        .arg("UNLOAD")
        .arg("key_evt_amqp")
        .query::<()>(&mut r)
        .unwrap();
    let len: i64 = redis::cmd("LLEN").arg(FALLBACK).query(&mut r).unwrap();
    assert_eq!(len, 5, "unconfirmed events stay in the list");
    redis::cmd("SET")
        .arg("while-unloaded")
        .arg("v")
        .query::<()>(&mut r)
        .unwrap();

    // Strings only now: EXPIRE is no longer forwarded.
    let mut new_args = args;
    new_args[0] = "$";
    server
        .load_module(&new_args)
        .expect("load again with other arguments");
    let got = consumer.expect(5, WAIT);
    let keys: Vec<&[u8]> = got.iter().map(|m| m.parts().unwrap().2).collect();
    assert_eq!(
        keys,
        [
            &b"waiting0"[..],
            b"waiting1",
            b"waiting2",
            b"waiting3",
            b"waiting4"
        ]
    );
    redis::cmd("EXPIRE")
        .arg("waiting0")
        .arg("100")
        .query::<()>(&mut r)
        .unwrap();
    redis::cmd("SET")
        .arg("after")
        .arg("v")
        .query::<()>(&mut r)
        .unwrap();
    let m = consumer.expect(1, WAIT).remove(0);
    assert_eq!(m.parts().unwrap().1, b"set");
    // The sequence continues across the reload: no message id is reused in one run.
    let seq: u64 = m
        .message_id
        .unwrap()
        .rsplit('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(seq, 7);
    consumer.expect_none(Duration::from_millis(300));

    // Unload and load a few more times in the same process.
    for _ in 0..3 {
        redis::cmd("MODULE")
            .arg("UNLOAD")
            .arg("key_evt_amqp")
            .query::<()>(&mut r)
            .unwrap();
        server.load_module(&args).expect("reload");
    }
    server.assert_alive();
}

/// Events still in memory (the broker has been away for less than a second) at MODULE UNLOAD
/// are kept for the next load; and the unload writes nothing, so replaying the AOF does not
/// unload the module again.
#[test]
fn events_in_memory_at_unload_wait_for_the_next_load() {
    let args = [
        "$",
        "127.0.0.1",
        "1",
        "guest",
        "guest",
        "30",
        "amq.direct",
        "rk",
        "1",
        "0",
        "ALL",
    ];
    let mut server = RedisServer::start_with(
        &[("appendonly", "yes"), ("appendfsync", "always")],
        Some(&args),
    );
    let mut r = server.client();
    for k in ["a", "b", "c"] {
        redis::cmd("SET")
            .arg(k)
            .arg("v")
            .query::<()>(&mut r)
            .unwrap();
    }
    redis::cmd("MODULE")
        .arg("UNLOAD")
        .arg("key_evt_amqp")
        .query::<()>(&mut r)
        .unwrap();
    server.load_module(&args).expect("load again");
    assert!(
        wait_until(WAIT, || redis::cmd("LLEN")
            .arg(FALLBACK)
            .query::<i64>(&mut r)
            .unwrap()
            == 3),
        "the events of the first load reach the list"
    );
    server.restart();
    let mut r = server.client();
    let modules: redis::Value = redis::cmd("MODULE").arg("LIST").query(&mut r).unwrap();
    assert!(
        format!("{modules:?}").contains("key_evt_amqp"),
        "still loaded after the AOF replay: {modules:?}"
    );
    let len: i64 = redis::cmd("LLEN").arg(FALLBACK).query(&mut r).unwrap();
    assert_eq!(len, 3, "the list survived the restart");
}
