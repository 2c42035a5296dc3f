//! Every load argument is also a module config (`CONFIG GET/SET key_evt_amqp.*`): it shows the
//! values in force, changes forwarding at run time, refuses bad values with the load
//! argument's error, wins over the positional argument at load, and the event classes stay
//! fixed after load.

use std::collections::HashMap;
use std::time::Duration;

use testkit::{keys_of, module_path, set, unique_routing_key, Consumer, ModuleArgs, RedisServer};

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(400);

#[test]
fn config_get_shows_the_values_in_force() {
    let rk = unique_routing_key("configs-");
    let args = ModuleArgs {
        pass: "Secret-Of-The-Test".into(),
        heartbeat: 7,
        delivery_mode: 2,
        fallback_size: 1234,
        masks: vec!["user:*".into(), "order:?".into()],
        ..ModuleArgs::with_routing_key(&rk)
    };
    let server = RedisServer::start(&args.to_vec());
    let all = server.config_get("key_evt_amqp.*");
    let expect = [
        ("key_evt_amqp.events", "$"),
        ("key_evt_amqp.host", "127.0.0.1"),
        ("key_evt_amqp.port", "5672"),
        ("key_evt_amqp.user", "guest"),
        ("key_evt_amqp.heartbeat", "7"),
        ("key_evt_amqp.exchange", "amq.direct"),
        ("key_evt_amqp.routing_key", rk.as_str()),
        ("key_evt_amqp.delivery_mode", "2"),
        ("key_evt_amqp.fallback_size", "1234"),
        ("key_evt_amqp.keymasks", "user:* order:?"),
        ("key_evt_amqp.queue_capacity", "100000"),
    ];
    for (name, value) in expect {
        assert_eq!(
            all.get(name).map(String::as_str),
            Some(value),
            "{name}: {all:?}"
        );
    }
    let everything = format!("{:?}", server.config_get("*"));
    assert!(
        !everything.contains("Secret-Of-The-Test"),
        "the password is not in CONFIG GET *"
    );

    // Commands change the same values.
    let () = redis::cmd("key_evt_amqp.keymask_set")
        .arg("cart:*")
        .query(&mut server.client())
        .unwrap();
    assert_eq!(
        server.config_get("key_evt_amqp.keymasks")["key_evt_amqp.keymasks"],
        "cart:*"
    );
}

#[test]
fn config_set_changes_forwarding_and_bad_values_change_nothing() {
    let rk = unique_routing_key("configs-set-");
    let rk2 = unique_routing_key("configs-set2-");
    let mut first = Consumer::bind("amq.direct", &rk);
    let mut second = Consumer::bind("amq.direct", &rk2);
    let server = RedisServer::start(&ModuleArgs::with_routing_key(&rk).to_vec());
    let mut redis = server.client();

    server
        .config_set("key_evt_amqp.keymasks", "a:* b:*")
        .unwrap();
    server.config_set("key_evt_amqp.routing_key", &rk2).unwrap();
    for k in ["a:1", "c:1", "b:1"] {
        set(&mut redis, k);
    }
    assert_eq!(keys_of(&second.expect(2, WAIT)), ["a:1", "b:1"]);
    second.expect_none(QUIET);
    first.expect_none(QUIET);

    let before = server.config_get("key_evt_amqp.*");
    for (name, value, needle) in [
        (
            "key_evt_amqp.port",
            "abc",
            "invalid key_evt_amqp.port 'abc': expected an integer from 1 to 65535",
        ),
        (
            "key_evt_amqp.delivery_mode",
            "3",
            "invalid key_evt_amqp.delivery_mode '3'",
        ),
        (
            "key_evt_amqp.heartbeat",
            "-1",
            "invalid key_evt_amqp.heartbeat '-1'",
        ),
        ("key_evt_amqp.host", "", "invalid key_evt_amqp.host ''"),
        (
            "key_evt_amqp.fallback_size",
            "lots",
            "invalid key_evt_amqp.fallback_size 'lots'",
        ),
    ] {
        let e = server.config_set(name, value).expect_err(name);
        assert!(e.contains(needle), "{name}: {e}");
    }
    assert_eq!(
        server.config_get("key_evt_amqp.*"),
        before,
        "bad values changed nothing"
    );
    set(&mut redis, "a:2");
    assert_eq!(keys_of(&second.expect(1, WAIT)), ["a:2"]);
}

#[test]
fn event_classes_are_fixed_once_loaded() {
    let server = RedisServer::start(&ModuleArgs::default().to_vec());
    let e = server
        .config_set("key_evt_amqp.events", "A")
        .expect_err("immutable");
    assert!(e.contains("immutable"), "{e}");
    assert_eq!(
        server.config_get("key_evt_amqp.events")["key_evt_amqp.events"],
        "$"
    );
}

#[test]
fn configs_at_load_win_over_positional_arguments() {
    let rk = unique_routing_key("configs-load-");
    let rk2 = unique_routing_key("configs-load2-");
    let mut positional = Consumer::bind("amq.direct", &rk);
    let mut named = Consumer::bind("amq.direct", &rk2);
    let args = ModuleArgs::with_routing_key(&rk).to_vec();

    // As in redis.conf: `loadmodule … ARGS` plus `key_evt_amqp.* …` lines.
    let server = RedisServer::start_with(
        &[
            ("key_evt_amqp.routing_key", rk2.as_str()),
            ("key_evt_amqp.events", "$h"),
        ],
        Some(&args),
    );
    let mut redis = server.client();
    set(&mut redis, "s:1");
    let () = redis::cmd("HSET")
        .arg("h:1")
        .arg("f")
        .arg("v")
        .query(&mut redis)
        .unwrap();
    assert_eq!(keys_of(&named.expect(2, WAIT)), ["s:1", "h:1"]);
    positional.expect_none(QUIET);
    let all = server.config_get("key_evt_amqp.*");
    assert_eq!(all["key_evt_amqp.routing_key"], rk2);
    assert_eq!(
        all["key_evt_amqp.exchange"], "amq.direct",
        "not given: positional"
    );
    drop(redis);

    // The same through MODULE LOADEX … CONFIG … ARGS ….
    let () = redis::cmd("MODULE")
        .arg("UNLOAD")
        .arg("key_evt_amqp")
        .query(&mut server.client())
        .unwrap();
    let mut loadex = redis::cmd("MODULE");
    loadex
        .arg("LOADEX")
        .arg(module_path().display().to_string())
        .arg("CONFIG")
        .arg("key_evt_amqp.keymasks")
        .arg("only:*")
        .arg("ARGS")
        .arg(&args);
    let () = loadex.query(&mut server.client()).expect("MODULE LOADEX");
    let mut redis = server.client();
    set(&mut redis, "other:1");
    set(&mut redis, "only:1");
    assert_eq!(keys_of(&positional.expect(1, WAIT)), ["only:1"]);
    positional.expect_none(QUIET);
}

/// A redis-server started from a config file (`CONFIG REWRITE` needs one); killed on drop.
struct FromFile {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl FromFile {
    fn start(dir: &std::path::Path, conf: &std::path::Path) -> FromFile {
        let port = std::fs::read_to_string(conf)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("port "))
            .and_then(|p| p.trim().parse().ok())
            .expect("a port line");
        let child = std::process::Command::new(testkit::redis_server_binary())
            .arg(conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (run scripts/setup.sh)");
        let server = FromFile {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        assert!(
            testkit::wait_until(WAIT, || server.client().is_ok()),
            "redis-server from {} did not answer",
            conf.display()
        );
        server
    }

    fn client(&self) -> redis::RedisResult<redis::Connection> {
        let mut c =
            redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?.get_connection()?;
        redis::cmd("PING").query::<String>(&mut c)?;
        Ok(c)
    }

    fn config(&self, name: &str) -> String {
        let map: HashMap<String, String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query(&mut self.client().unwrap())
            .unwrap();
        map.get(name).cloned().unwrap_or_default()
    }
}

impl Drop for FromFile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "redis log:\n{}",
                std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
            );
        }
    }
}

#[test]
fn config_rewrite_saves_what_runs_and_a_restart_starts_from_it() {
    let dir = std::env::temp_dir().join(format!("kea-rewrite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.join("redis.conf");
    let args = ModuleArgs::with_routing_key("rewrite-test")
        .to_vec()
        .join(" ");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nlogfile redis.log\nsave \"\"\n\
             loadmodule {} {args}\n",
            dir.display(),
            module_path().display()
        ),
    )
    .unwrap();

    let server = FromFile::start(&dir, &conf);
    let mut c = server.client().unwrap();
    for (name, value) in [
        ("key_evt_amqp.exchange", "amq.topic"),
        ("key_evt_amqp.keymasks", "user:* order:"),
        ("key_evt_amqp.password", "Rewrite-Secret"),
    ] {
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query(&mut c)
            .unwrap();
    }
    let () = redis::cmd("CONFIG").arg("REWRITE").query(&mut c).unwrap();
    let written = std::fs::read_to_string(&conf).unwrap();
    assert!(
        written.contains("key_evt_amqp.exchange \"amq.topic\"")
            || written.contains("key_evt_amqp.exchange amq.topic"),
        "{written}"
    );
    assert!(
        written.contains("key_evt_amqp.password"),
        "the password is saved to reconnect after a restart"
    );
    drop(c);
    drop(server);

    let server = FromFile::start(&dir, &conf);
    assert_eq!(server.config("key_evt_amqp.exchange"), "amq.topic");
    assert_eq!(server.config("key_evt_amqp.keymasks"), "user:* order:");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
