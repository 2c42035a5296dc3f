//! `key_evt_amqp.uri`, TLS and failover: `amqps://` through a TLS terminator whose CA the test
//! makes, a wrong CA then the right one, several brokers tried in order, configs changed at run
//! time, and the password kept out of the log, INFO, CONFIG GET and error replies.

use std::time::Duration;

use testkit::{run, wait_until, FaultProxy, Mode, Node, RedisServer, TestCa, TlsTerminator};

const WAIT: Duration = Duration::from_secs(20);
const QUIET: Duration = Duration::from_millis(500);

/// A made-up password that must never show anywhere but `CONFIG GET key_evt_amqp.password`.
const SECRET: &str = "Xk7canaryPw93";

/// Redis with the module whose positional broker is `positional_port` (a refused one proves
/// that the configs win), module configs `configs`, and a consumer of its events.
fn start(positional_port: u16, configs: &[(&str, &str)]) -> Node {
    let mut builder = Node::builder("tls-")
        .port(positional_port)
        .heartbeat(5)
        .timeouts(WAIT, QUIET);
    for (name, value) in configs {
        builder = builder.config(name, value);
    }
    builder.start()
}

/// `CONFIG GET pattern` as `name value` lines.
fn config_get(n: &Node, pattern: &str) -> String {
    n.server.config_text(pattern)
}

/// A local port where nothing listens (connections are refused).
fn refused_port() -> (FaultProxy, u16) {
    let proxy = FaultProxy::start();
    proxy.set_mode(Mode::Refuse);
    let port = proxy.port();
    (proxy, port)
}

#[test]
fn amqps_with_the_test_ca_delivers_events() {
    let ca = TestCa::new("good");
    let tls = TlsTerminator::start(&ca);
    let (_down, down_port) = refused_port();
    let uri = format!("amqps://guest:guest@127.0.0.1:{}", tls.port());
    let mut n = start(
        down_port,
        &[
            ("key_evt_amqp.uri", &uri),
            ("key_evt_amqp.tls_ca_file", &ca.path()),
        ],
    );
    let keys = n.set_keys("tls:", 20);
    assert_eq!(n.received(20), keys, "in order, once, over TLS");
    assert!(
        tls.handshakes() >= 1,
        "the events went through the TLS terminator"
    );
    assert_eq!(n.info("connection"), "connected");
    let shown = format!("amqps://guest@127.0.0.1:{}/%2f", tls.port());
    assert!(
        n.server
            .log()
            .contains(&format!("connected to broker {shown}")),
        "the log names the broker in use:\n{}",
        n.server.log()
    );
    assert_eq!(
        config_get(&n, "key_evt_amqp.uri"),
        format!("key_evt_amqp.uri amqps://guest@127.0.0.1:{}", tls.port()),
        "the URI is shown without its password"
    );
}

#[test]
fn a_certificate_of_another_ca_is_refused_until_the_right_ca_is_set() {
    let ca = TestCa::new("good");
    let other = TestCa::new("other");
    let tls = TlsTerminator::start(&ca);
    let (_down, down_port) = refused_port();
    let uri = format!("amqps://guest:guest@127.0.0.1:{}", tls.port());
    let mut n = start(
        down_port,
        &[
            ("key_evt_amqp.uri", &uri),
            ("key_evt_amqp.tls_ca_file", &other.path()),
        ],
    );
    let keys = n.set_keys("wrong-ca:", 10);
    assert!(
        wait_until(WAIT, || n.fallback_len() == 10),
        "events wait in the fallback list; INFO:\n{}",
        n.server.module_info_text()
    );
    n.consumer.expect_none(QUIET);
    let error = n.info("last_error");
    assert!(
        error.contains("certificate"),
        "INFO's last_error says what is wrong: {error}"
    );
    assert_eq!(tls.handshakes(), 0, "the module refused the certificate");
    assert_ne!(n.info("connection"), "connected");

    // A file that is no CA bundle is refused and changes nothing.
    let before = config_get(&n, "key_evt_amqp.tls_ca_file");
    let e = n
        .server
        .config_set("key_evt_amqp.tls_ca_file", "/nonexistent/ca.pem")
        .unwrap_err();
    assert!(
        e.contains("invalid key_evt_amqp.tls_ca_file '/nonexistent/ca.pem': cannot read"),
        "{e}"
    );
    assert_eq!(config_get(&n, "key_evt_amqp.tls_ca_file"), before);

    // The right CA: the waiting events arrive, in order, and new ones after them.
    n.server
        .config_set("key_evt_amqp.tls_ca_file", &ca.path())
        .expect("CONFIG SET the right CA");
    let mut all = keys;
    all.extend(n.set_keys("right-ca:", 5));
    assert_eq!(n.received(15), all);
    assert!(tls.handshakes() >= 1);
}

#[test]
fn skipping_verification_accepts_any_certificate_and_says_so() {
    let ca = TestCa::new("unknown");
    let tls = TlsTerminator::start(&ca);
    let (_down, down_port) = refused_port();
    let uri = format!("amqps://guest:guest@127.0.0.1:{}/", tls.port());
    let mut n = start(
        down_port,
        &[
            ("key_evt_amqp.uri", &uri),
            ("key_evt_amqp.tls_skip_verify", "yes"),
        ],
    );
    let keys = n.set_keys("skip:", 5);
    assert_eq!(n.received(5), keys);
    assert!(
        n.server.log().contains("tls_skip_verify is on"),
        "a warning says that nothing is verified:\n{}",
        n.server.log()
    );
}

#[test]
fn brokers_are_tried_in_order_and_the_working_one_is_kept() {
    let first = FaultProxy::start();
    let second = FaultProxy::start();
    let (_down, down_port) = refused_port();
    let uri = format!(
        "amqp://guest:guest@127.0.0.1:{} , amqp://guest:guest@127.0.0.1:{}/%2f",
        first.port(),
        second.port()
    );
    let mut n = start(down_port, &[("key_evt_amqp.uri", &uri)]);
    let mut expected = n.set_keys("first:", 5);
    assert_eq!(n.received(5), expected, "through the first broker");
    assert!(first.bytes_forwarded() > 0);
    assert_eq!(second.accepted_total(), 0, "the second one is not needed");

    // The first one goes down: the publisher fails over to the second one.
    first.set_mode(Mode::Refuse);
    let more = n.set_keys("second:", 5);
    assert_eq!(n.received(5), more, "through the second broker");
    expected.extend(more);
    assert!(second.bytes_forwarded() > 0);
    let from = format!("amqp://guest@127.0.0.1:{}/%2f", first.port());
    let to = format!("amqp://guest@127.0.0.1:{}/%2f", second.port());
    let line = format!("failing over from {from} to {to}");
    assert!(
        n.server.log().contains(&line),
        "the log says so:\n{}",
        n.server.log()
    );

    // The first one is back: the publisher stays with the one that works.
    first.heal();
    let accepted = first.accepted_total();
    let later = n.set_keys("still-second:", 5);
    assert_eq!(n.received(5), later);
    assert_eq!(first.accepted_total(), accepted, "no switch back");
    assert_eq!(
        n.server.log().matches(&line).count(),
        1,
        "the failover is logged once:\n{}",
        n.server.log()
    );
    assert!(n.info("connection") == "connected");
}

/// The names of the redis-server process's threads.
fn thread_names(server: &RedisServer) -> Vec<String> {
    let pid = server.pid().expect("redis-server runs");
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(Result::ok)
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|comm| comm.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_silent_tls_peer_times_out_and_the_next_broker_takes_over() {
    let silent = FaultProxy::start();
    silent.set_mode(Mode::Blackhole);
    let (_down, down_port) = refused_port();
    let uri = format!(
        "amqps://guest:guest@127.0.0.1:{},amqp://guest:guest@127.0.0.1:5672",
        silent.port()
    );
    let mut n = start(down_port, &[("key_evt_amqp.uri", &uri)]);
    let keys = n.set_keys("silent:", 5);
    assert_eq!(n.received(5), keys, "through the second broker");
    assert!(
        n.server
            .log()
            .contains("failing over from amqps://guest@127.0.0.1"),
        "{}",
        n.server.log()
    );
    // The attempt on the silent peer left no thread behind: besides Redis's own, the module
    // runs its publisher thread and nothing else. The main thread bears the process's name
    // (`redis-server`, `valkey-server`).
    let pid = n.server.pid().expect("redis-server runs");
    let process = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    let ours = |names: &[String]| {
        names
            .iter()
            .filter(|n| {
                !(n.as_str() == process.trim()
                    || n.starts_with("bio_")
                    || n.starts_with("jemalloc_bg_thd"))
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(Duration::from_secs(5), || ours(&thread_names(&n.server))
            == ["kea-publisher"]),
        "threads: {:?}",
        thread_names(&n.server)
    );
}

#[test]
fn config_changes_reach_the_running_module() {
    let (_down, down_port) = refused_port();
    let mut n = start(down_port, &[]);
    let keys = n.set_keys("positional:", 5);
    assert!(
        wait_until(WAIT, || n.fallback_len() == 5),
        "the positional broker is down: events wait"
    );
    n.consumer.expect_none(QUIET);

    // A URI wins over the positional arguments, at once.
    n.server
        .config_set("key_evt_amqp.uri", "amqp://guest:guest@127.0.0.1:5672")
        .expect("CONFIG SET key_evt_amqp.uri");
    assert_eq!(n.received(5), keys);

    // A bad URI is refused and changes nothing.
    let e = n
        .server
        .config_set("key_evt_amqp.uri", "amqp://guest:guest@127.0.0.1:0")
        .unwrap_err();
    assert!(
        e.contains("invalid key_evt_amqp.uri 'amqp://guest:***@127.0.0.1:0'"),
        "{e}"
    );
    assert_eq!(
        config_get(&n, "key_evt_amqp.uri"),
        "key_evt_amqp.uri amqp://guest@127.0.0.1:5672"
    );
    let more = n.set_keys("uri:", 3);
    assert_eq!(n.received(3), more);

    // Empty: back to the positional broker, which is down.
    n.server
        .config_set("key_evt_amqp.uri", "")
        .expect("CONFIG SET empty");
    n.set_keys("again-positional:", 3);
    assert!(
        wait_until(WAIT, || n.fallback_len() == 3),
        "the positional broker is used again"
    );
    n.consumer.expect_none(QUIET);
}

#[test]
fn the_password_never_shows() {
    let (_down, down_port) = refused_port();
    let (_refused, refused) = refused_port();
    // The user does not exist: the real broker refuses the login too.
    let uri = format!(
        "amqp://leaky:{SECRET}@127.0.0.1:{refused},amqp://leaky@127.0.0.1:5672/?heartbeat=5"
    );
    let mut n = start(down_port, &[("key_evt_amqp.uri", &uri)]);
    n.set_keys("secret:", 3);
    assert!(
        wait_until(WAIT, || n.fallback_len() == 3),
        "no broker takes the events"
    );
    assert!(
        wait_until(WAIT, || n.server.log().contains("no broker reachable")),
        "the failure is logged:\n{}",
        n.server.log()
    );
    let error = n.info("last_error");
    assert!(error.contains("ACCESS_REFUSED"), "{error}");
    // Several retries later, still one line each: logged per transition, not per attempt.
    let connections = n.info("connections");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(n.info("connections"), connections, "no broker ever took it");
    let log = n.server.log();
    assert_eq!(log.matches("no broker reachable").count(), 1, "{log}");
    assert_eq!(log.matches("failing over from").count(), 1, "{log}");

    let mut replies = Vec::new();
    for (name, value) in [
        (
            "key_evt_amqp.uri",
            format!("amqp://leaky:{SECRET}@127.0.0.1:0"),
        ),
        ("key_evt_amqp.uri", format!("amqps://leaky:{SECRET}@[::1")),
        ("key_evt_amqp.uri", format!("amqp://leaky:{SECRET}%zz@h")),
        (
            "key_evt_amqp.uri",
            format!("amqp://a:{SECRET}@h1,amqp://a:other@h2"),
        ),
        ("key_evt_amqp.uri", format!("http://leaky:{SECRET}@h")),
    ] {
        let e = n.server.config_set(name, &value).unwrap_err();
        assert!(e.contains("invalid key_evt_amqp.uri"), "{e}");
        replies.push(e);
    }
    for args in [
        vec!["key_evt_amqp.config_set", "127.0.0.1", "x", "leaky", SECRET],
        vec!["key_evt_amqp.connect", "127.0.0.1", "0", "leaky", SECRET],
    ] {
        let e = run::<()>(&mut n.redis, &args).unwrap_err();
        replies.push(e);
    }

    let config = config_get(&n, "key_evt_amqp.*");
    let all_config = config_get(&n, "*");
    let info = n.server.module_info_text();
    let log = n.server.log();
    for (what, text) in [
        ("CONFIG GET key_evt_amqp.*", &config),
        ("CONFIG GET *", &all_config),
        ("INFO key_evt_amqp", &info),
        ("the log", &log),
        ("error replies", &replies.join("\n")),
    ] {
        assert!(!text.contains(SECRET), "{what} shows the password:\n{text}");
    }
    assert!(
        config.contains(&format!("amqp://leaky@127.0.0.1:{refused}")),
        "{config}"
    );
    // By its exact name, like Redis's own requirepass: what CONFIG REWRITE writes.
    assert_eq!(
        config_get(&n, "key_evt_amqp.password"),
        format!("key_evt_amqp.password {SECRET}")
    );
}
