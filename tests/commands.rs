//! The seven `key_evt_amqp.*` commands: what each changes, and that bad input changes nothing.

mod support;

use std::time::Duration;

use support::{unique_routing_key, wait_until, Consumer, RedisServer};

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(400);
const FALLBACK: &str = "REDIS_MODULE-key_evt_amqp-fallback_storage";

struct Node {
    server: RedisServer,
    redis: redis::Connection,
    consumer: Consumer,
    rk: String,
}

impl Node {
    fn start(masks: &[&str]) -> Node {
        let rk = unique_routing_key("cmd-");
        let consumer = Consumer::bind("amq.direct", &rk);
        let mut args = vec![
            "$",
            "127.0.0.1",
            "5672",
            "guest",
            "guest",
            "30",
            "amq.direct",
            &rk,
            "1",
            "0",
        ];
        args.extend_from_slice(masks);
        let server = RedisServer::start(&args);
        let redis = server.client();
        Node {
            server,
            redis,
            consumer,
            rk,
        }
    }

    fn cmd(&mut self, args: &[&str]) -> Result<String, String> {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query::<String>(&mut self.redis)
            .map_err(|e| support::server_error_text(&e))
    }

    fn ok(&mut self, args: &[&str]) {
        assert_eq!(self.cmd(args), Ok("OK".to_string()), "{args:?}");
    }

    /// SETs each key; returns the keys whose events arrived.
    fn forwarded(&mut self, keys: &[&str]) -> Vec<String> {
        for k in keys {
            self.ok(&["SET", k, "v"]);
        }
        self.consumer
            .drain_quiet(QUIET)
            .iter()
            .map(|m| String::from_utf8_lossy(m.parts().unwrap().2).into_owned())
            .collect()
    }

    fn info(&mut self, field: &str) -> String {
        let info: String = redis::cmd("INFO")
            .arg("key_evt_amqp")
            .query(&mut self.redis)
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("key_evt_amqp_{field}:")))
            .unwrap_or_else(|| panic!("no {field} in INFO:\n{info}"))
            .trim()
            .to_string()
    }

    fn list_len(&mut self) -> i64 {
        redis::cmd("LLEN")
            .arg(FALLBACK)
            .query(&mut self.redis)
            .unwrap()
    }

    /// The configuration as INFO shows it.
    fn config(&mut self) -> Vec<String> {
        [
            "broker",
            "exchange",
            "routing_key",
            "keymasks",
            "fallback_size",
            "connection",
        ]
        .iter()
        .map(|f| self.info(f))
        .collect()
    }
}

#[test]
fn keymask_commands_change_forwarding() {
    let mut n = Node::start(&["^a"]);
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
    assert_eq!(n.info("keymasks"), "ALL");
}

#[test]
fn config_set_and_connect_reconfigure() {
    let mut n = Node::start(&["ALL"]);
    assert_eq!(n.forwarded(&["k1"]), ["k1"]);

    let rk2 = unique_routing_key("cmd2-");
    let mut second = Consumer::bind("amq.direct", &rk2);
    n.ok(&[
        "key_evt_amqp.config_set",
        "127.0.0.1",
        "5672",
        "guest",
        "guest",
        "30",
        "amq.direct",
        &rk2,
    ]);
    assert_eq!(n.forwarded(&["k2"]), Vec::<String>::new());
    assert_eq!(second.expect(1, WAIT)[0].parts().unwrap().2, b"k2");

    // Masks given to config_set replace the old ones.
    n.ok(&[
        "key_evt_amqp.config_set",
        "127.0.0.1",
        "5672",
        "guest",
        "guest",
        "30",
        "amq.direct",
        &rk2,
        "2",
        "0",
        "^only",
    ]);
    n.ok(&["SET", "k3", "v"]);
    n.ok(&["SET", "only-this", "v"]);
    let m = &second.expect(1, WAIT)[0];
    assert_eq!(
        (m.parts().unwrap().2, m.delivery_mode),
        (&b"only-this"[..], Some(2))
    );
    second.expect_none(QUIET);

    let rk = n.rk.clone();
    n.ok(&[
        "key_evt_amqp.connect",
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
    ]);
    assert_eq!(n.forwarded(&["k4"]), ["k4"]);
    assert_eq!(n.info("connection"), "connected");
}

#[test]
fn disconnect_keeps_events_in_the_list_until_connect() {
    let mut n = Node::start(&["ALL"]);
    n.ok(&["key_evt_amqp.connect"]);
    assert!(
        wait_until(WAIT, || n.info("connection") == "connected"),
        "connect connects eagerly"
    );
    n.ok(&["key_evt_amqp.disconnect"]);
    assert!(wait_until(WAIT, || n.info("connection") == "disconnected"));
    let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    for k in &keys {
        n.ok(&["SET", k, "v"]);
    }
    assert!(
        wait_until(WAIT, || n.list_len() == 10),
        "events wait in the fallback list"
    );
    n.consumer.expect_none(QUIET);
    assert_eq!(
        n.info("connection"),
        "disconnected",
        "no reconnect until connect"
    );

    // Keep the 5 newest.
    n.ok(&["key_evt_amqp.fallback_storage_size_set", "5"]);
    assert!(wait_until(WAIT, || n.list_len() == 5));
    assert_eq!(n.info("events_dropped"), "5");

    n.ok(&["key_evt_amqp.connect"]);
    let got: Vec<String> = n
        .consumer
        .expect(5, WAIT)
        .iter()
        .map(|m| String::from_utf8_lossy(m.parts().unwrap().2).into_owned())
        .collect();
    assert_eq!(got, keys[5..]);
    assert!(wait_until(WAIT, || n.list_len() == 0));
    n.consumer.expect_none(QUIET);
}

#[test]
fn bad_commands_reply_err_and_change_nothing() {
    let mut n = Node::start(&["^a"]);
    let before = n.config();
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
        assert_eq!(n.config(), before, "{args:?} changed the configuration");
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
    assert_eq!(n.info("connection"), "connected");
    n.server.assert_alive();
}
