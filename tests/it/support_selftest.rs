//! Checks the testkit itself against the real services (no module involved).

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use testkit::{
    amqp_connect, amqp_publish, body, unique_routing_key, wait_until, Consumer, FaultProxy, Mode,
    RedisServer,
};

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn plain_redis_server_starts_answers_and_restarts() {
    let mut server = RedisServer::start_without_module(&[("appendonly", "yes")]);
    let mut client = server.client();
    let pong: String = redis::cmd("PING").query(&mut client).expect("PING");
    assert_eq!(pong, "PONG");
    let aof: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query(&mut client)
        .expect("CONFIG GET");
    assert_eq!(aof, ["appendonly", "yes"]);

    // Binary-safe keys round-trip, and survive a SIGKILL thanks to the AOF.
    let key = &b"a\nb\x00\xff"[..];
    let () = redis::cmd("SET")
        .arg(key)
        .arg("v")
        .query(&mut client)
        .expect("SET");
    let dir = server.dir().to_owned();
    let port = server.port();
    server.kill9();
    assert!(dir.is_dir(), "kill9 must keep the directory");
    server.restart();
    assert_eq!(server.port(), port);
    let value: Option<String> = redis::cmd("GET")
        .arg(key)
        .query(&mut server.client())
        .expect("GET");
    assert_eq!(value.as_deref(), Some("v"));
    assert!(server.log().contains("Ready to accept connections"));

    drop(server);
    assert!(!dir.exists(), "drop must remove the directory");
}

#[test]
fn wait_until_reports_success_and_timeout() {
    let start = Instant::now();
    assert!(wait_until(SECOND, || start.elapsed() > Duration::from_millis(60)));
    assert!(!wait_until(Duration::from_millis(100), || false));
    assert!(start.elapsed() < SECOND);
}

#[test]
fn consumer_receives_what_is_published() {
    let routing_key = unique_routing_key("selftest-");
    let mut consumer = Consumer::bind("amq.direct", &routing_key);
    let payload = body(3, "set", b"k\ney\x00\xff");
    amqp_publish(
        "amq.direct",
        &routing_key,
        &payload,
        BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_delivery_mode(2)
            .with_message_id("run-1".into())
            .with_timestamp(1_700_000_000)
            .with_app_id("key_evt_amqp".into()),
    );
    let got = consumer.expect(1, 5 * SECOND).remove(0);
    assert_eq!(got.body, b"3\nset\nk\ney\x00\xff");
    let parts = got.parts().expect("three parts");
    assert_eq!(parts, (&b"3"[..], &b"set"[..], &b"k\ney\x00\xff"[..]));
    assert_eq!(got.exchange, "amq.direct");
    assert_eq!(got.routing_key, routing_key);
    assert_eq!(got.content_type.as_deref(), Some("text/plain"));
    assert_eq!(got.delivery_mode, Some(2));
    assert_eq!(got.message_id.as_deref(), Some("run-1"));
    assert_eq!(got.timestamp, Some(1_700_000_000));
    assert_eq!(got.app_id.as_deref(), Some("key_evt_amqp"));
    consumer.expect_none(Duration::from_millis(200));
}

#[test]
fn proxy_pass_refuse_blackhole_heal() {
    let proxy = FaultProxy::start();
    let url = proxy.amqp_url();

    // Pass: a full AMQP handshake goes through.
    let conn = amqp_connect(&url, 5 * SECOND).expect("AMQP through the proxy in Pass mode");
    assert_eq!(proxy.connections(), 1);
    assert!(proxy.bytes_forwarded() > 0);

    // Refuse: the open connection is closed and new connects fail at once.
    proxy.set_mode(Mode::Refuse);
    assert_eq!(proxy.connections(), 0);
    assert!(
        wait_until(2 * SECOND, || !conn.status().connected()),
        "lapin did not notice the closed connection"
    );
    let err = TcpStream::connect(("127.0.0.1", proxy.port())).expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    let start = Instant::now();
    let err = amqp_connect(&url, 5 * SECOND).expect_err("AMQP connect while refusing");
    assert!(
        start.elapsed() < SECOND,
        "refusal took {:?}",
        start.elapsed()
    );
    assert!(!err.contains("timed out"), "expected a refusal, got: {err}");
    // The port stays ours while refusing: a listener with SO_REUSEADDR (std's and
    // redis-server's) cannot take it, so resuming cannot fail with EADDRINUSE.
    let taken = std::net::TcpListener::bind(("127.0.0.1", proxy.port()));
    assert_eq!(
        taken.map(|_| ()).map_err(|e| e.kind()),
        Err(ErrorKind::AddrInUse),
        "another socket bound the refusing proxy's port"
    );

    // Blackhole: TCP connects, AMQP never completes.
    proxy.set_mode(Mode::Blackhole);
    let _raw = TcpStream::connect(("127.0.0.1", proxy.port())).expect("TCP connect in Blackhole");
    let err = amqp_connect(&url, 2 * SECOND).expect_err("AMQP connect in Blackhole");
    assert!(err.contains("timed out"), "expected a timeout, got: {err}");
    assert!(wait_until(SECOND, || proxy.connections() >= 2));

    // Heal: the stalled connections are closed and AMQP works again.
    proxy.heal();
    assert!(proxy.connections() <= 1);
    let conn = amqp_connect(&url, 5 * SECOND).expect("AMQP through the proxy after heal");
    assert!(conn.status().connected());
    assert_eq!(proxy.connections(), 1);

    // CutMidStream: the live connection drops, the next one works.
    proxy.set_mode(Mode::CutMidStream);
    assert_eq!(proxy.mode(), Mode::Pass);
    assert!(
        wait_until(2 * SECOND, || !conn.status().connected()),
        "lapin did not notice the cut"
    );
    amqp_connect(&url, 5 * SECOND).expect("AMQP through the proxy after a cut");
    assert!(proxy.accepted_total() >= 5);
}

#[test]
fn proxy_blackhole_then_pass_resumes_stalled_connection() {
    let proxy = FaultProxy::start();
    let conn = amqp_connect(&proxy.amqp_url(), 5 * SECOND).expect("AMQP through the proxy");
    proxy.set_mode(Mode::Blackhole);
    // A request that needs the broker's answer stalls...
    let pending = testkit::block_on_timeout(Duration::from_millis(300), conn.create_channel());
    assert!(pending.is_none(), "channel opened through a black hole");
    let before = proxy.bytes_forwarded();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        proxy.bytes_forwarded(),
        before,
        "bytes crossed the black hole"
    );
    // ...and completes once the hole lifts without closing the connection.
    proxy.set_mode(Mode::Pass);
    testkit::block_on_timeout(5 * SECOND, conn.create_channel())
        .expect("channel open after the hole lifted")
        .expect("channel open");
}
