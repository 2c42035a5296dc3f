//! The seven `key_evt_amqp.*` commands: what each changes, and that bad input changes nothing.

use std::time::Duration;

use testkit::{
    fallback_len, run, set, unique_routing_key, wait_until, Consumer, Message, ModuleArgs, Node,
};

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(400);

/// A node whose module forwards the keys matching `masks`.
fn start(masks: &[&str]) -> Node {
    Node::builder("cmd-")
        .masks(masks)
        .timeouts(WAIT, QUIET)
        .start()
}

/// The configuration as INFO shows it.
fn config(n: &Node) -> Vec<String> {
    [
        "broker",
        "exchange",
        "routing_key",
        "keymasks",
        "fallback_size",
        "connection",
    ]
    .iter()
    .map(|f| n.info(f))
    .collect()
}

#[test]
fn keymask_commands_change_forwarding() {
    let mut n = start(&["^a"]);
    assert_eq!(n.forwarded(&["a1", "b1"]), ["a1"]);

    n.ok(&["key_evt_amqp.keymask_add", "^b", "^c"]);
    assert_eq!(n.forwarded(&["a2", "b2", "c2", "d2"]), ["a2", "b2", "c2"]);

    n.ok(&["key_evt_amqp.keymask_set", "^d"]);
    assert_eq!(n.forwarded(&["a3", "d3"]), ["d3"]);

    n.ok(&["key_evt_amqp.keymask_clean"]);
    assert_eq!(n.forwarded(&["a4", "d4"]), Vec::<String>::new());

    // The command name is not a mask (the old module's bug would forward this key).
    n.ok(&["key_evt_amqp.keymask_add", "^x"]);
    assert_eq!(n.forwarded(&["key_evt_amqp.keymask_add", "x5"]), ["x5"]);

    n.ok(&["key_evt_amqp.keymask_add", "ALL"]);
    assert_eq!(n.forwarded(&["a6", "zz"]), ["a6", "zz"]);
    assert_eq!(n.server.module_info("keymasks"), "ALL");
}

#[test]
fn config_set_and_connect_reconfigure() {
    let mut n = start(&["ALL"]);
    assert_eq!(n.forwarded(&["k1"]), ["k1"]);

    let rk2 = unique_routing_key("cmd2-");
    let mut second = Consumer::bind("amq.direct", &rk2);
    // Only HOST … ROUTING_KEY: the arguments left out keep their values (the masks: ALL).
    n.ok(&ModuleArgs::with_routing_key(&rk2).short_command("key_evt_amqp.config_set", 7));
    assert_eq!(n.forwarded(&["k2"]), Vec::<String>::new());
    assert_eq!(second.expect(1, WAIT)[0].key(), b"k2");

    // Masks given to config_set replace the old ones.
    let only = ModuleArgs {
        delivery_mode: 2,
        masks: vec!["^only".into()],
        ..ModuleArgs::with_routing_key(&rk2)
    };
    n.ok(&only.command("key_evt_amqp.config_set"));
    set(&mut n.redis, "k3");
    set(&mut n.redis, "only-this");
    let m = &second.expect(1, WAIT)[0];
    assert_eq!((m.key(), m.delivery_mode), (&b"only-this"[..], Some(2)));
    second.expect_none(QUIET);

    n.ok(&ModuleArgs::with_routing_key(&n.rk).command("key_evt_amqp.connect"));
    assert_eq!(n.forwarded(&["k4"]), ["k4"]);
    assert_eq!(n.server.module_info("connection"), "connected");
}

#[test]
fn disconnect_keeps_events_in_the_list_until_connect() {
    let mut n = start(&["ALL"]);
    n.ok(&["key_evt_amqp.connect"]);
    assert!(
        wait_until(WAIT, || n.server.module_info("connection") == "connected"),
        "connect connects eagerly"
    );
    n.ok(&["key_evt_amqp.disconnect"]);
    assert!(wait_until(WAIT, || n.server.module_info("connection")
        == "disconnected"));
    let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    for k in &keys {
        set(&mut n.redis, k);
    }
    assert!(
        wait_until(WAIT, || fallback_len(&mut n.redis) == 10),
        "events wait in the fallback list"
    );
    n.consumer.expect_none(QUIET);
    assert_eq!(
        n.server.module_info("connection"),
        "disconnected",
        "no reconnect until connect"
    );

    // Keep the 5 newest.
    n.ok(&["key_evt_amqp.fallback_storage_size_set", "5"]);
    assert!(wait_until(WAIT, || fallback_len(&mut n.redis) == 5));
    assert_eq!(n.server.module_info("events_dropped"), "5");

    n.ok(&["key_evt_amqp.connect"]);
    let got: Vec<String> = n
        .consumer
        .expect(5, WAIT)
        .iter()
        .map(Message::key_lossy)
        .collect();
    assert_eq!(got, keys[5..]);
    assert!(wait_until(WAIT, || fallback_len(&mut n.redis) == 0));
    n.consumer.expect_none(QUIET);
}

#[test]
fn bad_commands_reply_err_and_change_nothing() {
    let mut n = start(&["^a"]);
    let before = config(&n);
    let bad: [(&[&str], &str); 12] = [
        (&["key_evt_amqp.config_set"], "wrong number of arguments"),
        (&["key_evt_amqp.config_set", "h", "abc"], "PORT"),
        (&["key_evt_amqp.config_set", "h", "70000"], "PORT"),
        (
            &["key_evt_amqp.config_set", "h", "1", "u", "p", "-1"],
            "HEARTBEAT",
        ),
        (
            &[
                "key_evt_amqp.config_set",
                "h",
                "1",
                "u",
                "p",
                "1",
                "e",
                "r",
                "3",
                "0",
                "ALL",
            ],
            "DELIVERY_MODE",
        ),
        (&["key_evt_amqp.connect", "h", "0"], "PORT"),
        (
            &["key_evt_amqp.disconnect", "now"],
            "wrong number of arguments",
        ),
        (
            &["key_evt_amqp.fallback_storage_size_set"],
            "wrong number of arguments",
        ),
        (
            &["key_evt_amqp.fallback_storage_size_set", "ten"],
            "FALLBACK_SIZE",
        ),
        (
            &["key_evt_amqp.keymask_clean", "x"],
            "wrong number of arguments",
        ),
        (&["key_evt_amqp.keymask_add"], "wrong number of arguments"),
        (&["key_evt_amqp.keymask_set"], "wrong number of arguments"),
    ];
    for (args, names) in bad {
        let err = n.cmd(args).expect_err(&format!("{args:?} must fail"));
        assert!(err.starts_with("ERR"), "{args:?}: {err}");
        assert!(err.contains(names), "{args:?}: {err} should name {names}");
        assert_eq!(config(&n), before, "{args:?} changed the configuration");
    }
    let err = n
        .cmd(&[
            "key_evt_amqp.config_set",
            "h",
            "1",
            "u",
            "p",
            "1",
            "e",
            "r",
            "3",
        ])
        .unwrap_err();
    assert!(
        err.contains("1 (transient) or 2 (persistent)"),
        "says what is accepted: {err}"
    );
    assert_eq!(n.forwarded(&["a1", "b1"]), ["a1"], "forwarding unchanged");
    assert_eq!(n.server.module_info("connection"), "connected");
    n.server.assert_alive();
}

/// Configuring the module takes what configuring Redis takes: a user who may not run
/// CONFIG SET (here `-@admin`) gets NOPERM and changes nothing; its writes are still forwarded.
#[test]
fn commands_need_the_permission_to_configure_redis() {
    let mut n = start(&["^a"]);
    n.ok(&[
        "ACL",
        "SETUSER",
        "app",
        "on",
        ">app-pass",
        "~*",
        "&*",
        "+@all",
        "-@admin",
    ]);
    n.ok(&[
        "ACL",
        "SETUSER",
        "ops",
        "on",
        ">ops-pass",
        "~*",
        "&*",
        "+@all",
    ]);
    let before = config(&n);
    let login = |user: &str| {
        let url = format!("redis://{user}:{user}-pass@127.0.0.1:{}/", n.server.port());
        redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .expect("log in as an ACL user")
    };
    let (mut app, mut ops) = (login("app"), login("ops"));
    for args in [
        &["key_evt_amqp.keymask_set", "ALL"][..],
        &["key_evt_amqp.keymask_clean"],
        &["key_evt_amqp.disconnect"],
        &["key_evt_amqp.config_set", "127.0.0.1"],
    ] {
        let text = run::<String>(&mut app, args).expect_err("not allowed");
        assert!(
            text.starts_with("NOPERM") && text.contains(args[0]),
            "{args:?}: {text}"
        );
    }
    assert_eq!(config(&n), before, "nothing changed");
    set(&mut app, "a-from-app");
    assert_eq!(n.forwarded(&[]), ["a-from-app"]);

    let ok: String = redis::cmd("key_evt_amqp.keymask_set")
        .arg("^b")
        .query(&mut ops)
        .expect("a user with @admin may configure");
    assert_eq!(ok, "OK");
    assert_eq!(n.forwarded(&["a1", "b1"]), ["b1"]);
}

/// Where the server can give module commands ACL categories (Redis 7.2+, Valkey 8), ours are
/// those of CONFIG SET (`@admin @slow @dangerous`, shown by COMMAND INFO) and Redis itself
/// refuses them to `-@admin` or `-@dangerous`. `ACL CAT` lists module commands only from
/// Redis 8.0 (redis#13489) and Valkey 8.1 (valkey#1140). On Redis 7.0 the module's own check
/// refuses them.
#[test]
fn the_commands_are_in_the_servers_acl_categories_where_it_has_them() {
    let mut n = start(&["^a"]);
    let server = n.server.server_kind();
    let native = server.valkey || server.redis_at_least(7, 2);
    let listed = server.valkey_at_least(8, 1) || server.redis_at_least(8, 0);
    let mut r = n.server.client();
    let info: redis::Value = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("key_evt_amqp.connect")
        .query(&mut r)
        .unwrap();
    let info = format!("{info:?}");
    // Every command of the module: config_set, connect, keymask_*, snapshot, snapshot_cancel.
    let all: Vec<String> = redis::cmd("COMMAND").arg("LIST").query(&mut r).unwrap();
    let ours_total = all
        .iter()
        .filter(|c| c.starts_with("key_evt_amqp."))
        .count();
    assert_eq!(ours_total, 9, "{all:?}");
    for category in ["admin", "dangerous", "slow"] {
        let shown = info.contains(&format!("@{category}"));
        assert_eq!(shown, native, "COMMAND INFO on {server}: {info}");
        let cat: Vec<String> = redis::cmd("ACL")
            .arg("CAT")
            .arg(category)
            .query(&mut r)
            .unwrap();
        let ours = cat
            .iter()
            .filter(|c| c.starts_with("key_evt_amqp."))
            .count();
        assert_eq!(
            ours,
            if listed { ours_total } else { 0 },
            "ACL CAT {category} on {server}"
        );
    }
    let state = n.server.module_info("connection");
    for denied in ["-@admin", "-@dangerous"] {
        n.ok(&[
            "ACL",
            "SETUSER",
            "app",
            "reset",
            "on",
            ">app-pass",
            "~*",
            "&*",
            "+@all",
            denied,
        ]);
        let url = format!("redis://app:app-pass@127.0.0.1:{}/", n.server.port());
        let mut app = redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .expect("log in as an ACL user");
        let text = run::<String>(&mut app, &["key_evt_amqp.disconnect"]).expect_err("not allowed");
        let by_the_module = text.contains("it needs the permission to run CONFIG SET");
        assert!(text.starts_with("NOPERM"), "{denied} on {server}: {text}");
        assert_eq!(by_the_module, !native, "{denied} on {server}: {text}");
    }
    assert_eq!(n.server.module_info("connection"), state, "nothing changed");
}
