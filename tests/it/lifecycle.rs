//! Loading with bad arguments, unloading and loading again in the same Redis process.

use std::time::Duration;

use testkit::{
    fallback_len, set, unique_routing_key, wait_until, Consumer, Message, ModuleArgs, RedisServer,
};

const WAIT: Duration = Duration::from_secs(10);

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

/// Redis 8.2 added the classes `o` (overwritten) and `c` (type_changed). A server without
/// one refuses the load, naming the letter and itself, as EVENTS and as the config; a server
/// with it loads (none CI has: Redis 7.0, 8.0, Valkey 8.0, 8.1).
#[test]
fn a_class_the_server_lacks_fails_the_load_naming_the_letter_and_the_server() {
    let server = RedisServer::start_without_module(&[]);
    let kind = server.server_kind();
    let has = kind.redis_at_least(8, 2);
    let loadex = |letters: &str| {
        redis::cmd("MODULE")
            .arg("LOADEX")
            .arg(testkit::module_path().display().to_string())
            .arg("CONFIG")
            .arg("key_evt_amqp.events")
            .arg(letters)
            .query::<()>(&mut server.client())
            .map_err(|e| testkit::server_error_text(&e))
    };
    let cases: [(&str, &str); 3] = [
        ("EVENTS", "o"),
        ("EVENTS", "c"),
        ("key_evt_amqp.events", "o"),
    ];
    for (name, letter) in cases {
        let before = server.log().len();
        let loaded = match name {
            "EVENTS" => server.load_module(&[format!("x{letter}")]),
            _ => loadex(letter),
        };
        if has {
            assert_eq!(loaded, Ok(()), "{kind} has class {letter}");
            let () = redis::cmd("MODULE")
                .arg("UNLOAD")
                .arg("key_evt_amqp")
                .query(&mut server.client())
                .unwrap();
            continue;
        }
        assert!(loaded.is_err(), "{kind} has no class {letter}");
        let log = server.log();
        let says = format!("invalid {name} ");
        let line = log[before..]
            .lines()
            .find(|l| l.contains(&says))
            .unwrap_or_else(|| panic!("no refusal of {name} logged:\n{}", &log[before..]));
        assert!(
            line.contains(&format!("{kind} has no class '{letter}'")),
            "{line}"
        );
        assert!(line.contains("expected class letters g $ l s"), "{line}");
        server.assert_alive();
    }
    // Nothing was left behind: a good load still works.
    server
        .load_module(&["xe"])
        .expect("a good load after the refusals");
}

#[test]
fn the_password_is_not_logged() {
    let args = ModuleArgs {
        events: "xe".into(),
        port: 1,
        pass: "pa55-s3cret".into(),
        ..ModuleArgs::with_routing_key("rk")
    };
    let server = RedisServer::start(&args.to_vec());
    let mut r = server.client();
    // Port 1 refuses: the failure is logged and shown in INFO.
    set(&mut r, "k");
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
    let args = ModuleArgs {
        events: "A".into(),
        ..ModuleArgs::with_routing_key(&rk)
    };
    let server = RedisServer::start(&args.to_vec());
    let mut r = server.client();
    set(&mut r, "before");
    assert_eq!(consumer.expect(1, WAIT)[0].key(), b"before");

    redis::cmd("key_evt_amqp.disconnect")
        .query::<()>(&mut r)
        .unwrap();
    for i in 0..5 {
        set(&mut r, &format!("waiting{i}"));
    }
    assert!(
        wait_until(WAIT, || fallback_len(&mut r) == 5),
        "while disconnected, events wait in the list"
    );
    redis::cmd("MODULE")
        .arg("UNLOAD")
        .arg("key_evt_amqp")
        .query::<()>(&mut r)
        .unwrap();
    assert_eq!(
        fallback_len(&mut r),
        5,
        "the unload leaves the list as it is"
    );
    set(&mut r, "while-unloaded");

    // Strings only now: EXPIRE is no longer forwarded.
    let new_args = ModuleArgs {
        events: "$".into(),
        ..args.clone()
    };
    server
        .load_module(&new_args.to_vec())
        .expect("load again with other arguments");
    let got = consumer.expect(5, WAIT);
    let keys: Vec<&[u8]> = got.iter().map(Message::key).collect();
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
    set(&mut r, "after");
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
        server.load_module(&args.to_vec()).expect("reload");
    }
    server.assert_alive();
}

/// Events still in memory (the broker has been away for less than a second) at MODULE UNLOAD
/// are kept for the next load; and the unload writes nothing, so replaying the AOF does not
/// unload the module again.
#[test]
fn events_in_memory_at_unload_wait_for_the_next_load() {
    let args = ModuleArgs {
        port: 1,
        ..ModuleArgs::with_routing_key("rk")
    }
    .to_vec();
    let mut server = RedisServer::start_with(
        &[("appendonly", "yes"), ("appendfsync", "always")],
        Some(&args),
    );
    let mut r = server.client();
    for k in ["a", "b", "c"] {
        set(&mut r, k);
    }
    redis::cmd("MODULE")
        .arg("UNLOAD")
        .arg("key_evt_amqp")
        .query::<()>(&mut r)
        .unwrap();
    server.load_module(&args).expect("load again");
    assert!(
        wait_until(WAIT, || fallback_len(&mut r) == 3),
        "the events of the first load reach the list"
    );
    server.restart();
    let mut r = server.client();
    let modules: redis::Value = redis::cmd("MODULE").arg("LIST").query(&mut r).unwrap();
    assert!(
        format!("{modules:?}").contains("key_evt_amqp"),
        "still loaded after the AOF replay: {modules:?}"
    );
    assert_eq!(fallback_len(&mut r), 3, "the list survived the restart");
}
