//! `INFO key_evt_amqp`: each field moves with the scenario that must move it. (`events_nacked`
//! and `events_returned` are checked in broker_failures.rs, `events_adopted` in cluster.rs.)

use std::time::Duration;

use testkit::{
    set, unique_routing_key, wait_until, Consumer, FaultProxy, Mode, ModuleArgs, RedisServer,
};

const WAIT: Duration = Duration::from_secs(20);

fn field(server: &RedisServer, name: &str) -> u64 {
    server.module_info_u64(name)
}

#[test]
fn a_healthy_broker_moves_seen_matched_published_confirmed() {
    let rk = unique_routing_key("info-");
    let mut consumer = Consumer::bind("amq.direct", &rk);
    let server = RedisServer::start(
        &ModuleArgs {
            masks: vec!["a:*".into()],
            ..ModuleArgs::with_routing_key(&rk)
        }
        .to_vec(),
    );
    assert_eq!(
        server.module_info("connection"),
        "idle",
        "lazy: no event yet"
    );
    assert_eq!(field(&server, "connections"), 0);
    assert_eq!(server.module_info("publishing"), "yes");
    assert_eq!(
        server.module_info("broker"),
        "amqp://guest@127.0.0.1:5672/%2f"
    );

    let mut redis = server.client();
    for k in ["a:1", "b:1", "a:2", "b:2", "b:3"] {
        set(&mut redis, k);
    }
    consumer.expect(2, WAIT);
    assert!(wait_until(WAIT, || field(&server, "events_confirmed") == 2));
    assert_eq!(field(&server, "events_seen"), 5);
    assert_eq!(field(&server, "events_matched"), 2);
    assert_eq!(field(&server, "events_published"), 2);
    assert_eq!(field(&server, "connections"), 1);
    assert_eq!(field(&server, "publisher_panics"), 0);
    assert_eq!(server.module_info("connection"), "connected");
    assert_eq!(server.module_info("last_error"), "");
    assert_eq!(field(&server, "queue_length"), 0);
    assert_eq!(field(&server, "queue_capacity"), 100_000);
}

#[test]
fn an_outage_moves_spilled_fallback_refilled_and_connections() {
    let proxy = FaultProxy::start();
    let rk = unique_routing_key("info-outage-");
    let mut consumer = Consumer::bind("amq.direct", &rk);
    let server = RedisServer::start(
        &ModuleArgs {
            port: proxy.port(),
            heartbeat: 5,
            ..ModuleArgs::with_routing_key(&rk)
        }
        .to_vec(),
    );
    let mut redis = server.client();
    set(&mut redis, "k:0");
    consumer.expect(1, WAIT);
    // Confirmed before the cut: otherwise it is sent again (and counted) after it.
    assert!(wait_until(WAIT, || field(&server, "events_confirmed") == 1));
    assert_eq!(field(&server, "connections"), 1);

    proxy.set_mode(Mode::Refuse);
    for i in 1..=30 {
        set(&mut redis, &format!("k:{i}"));
    }
    assert!(
        wait_until(WAIT, || field(&server, "fallback_length") == 30),
        "events wait in the list: {}",
        server.module_info_text()
    );
    assert_eq!(field(&server, "events_spilled"), 30);
    assert_eq!(field(&server, "queue_length"), 0);
    assert_eq!(server.module_info("connection"), "down");
    assert_ne!(server.module_info("last_error"), "");

    proxy.set_mode(Mode::Pass);
    consumer.expect(30, WAIT);
    assert!(wait_until(WAIT, || field(&server, "fallback_length") == 0));
    assert_eq!(field(&server, "events_refilled"), 30);
    assert_eq!(field(&server, "connections"), 2, "one reconnection");
    assert!(wait_until(WAIT, || server
        .module_info("last_error")
        .is_empty()));
}

#[test]
fn the_cap_moves_dropped() {
    let proxy = FaultProxy::start();
    proxy.set_mode(Mode::Refuse);
    let server = RedisServer::start(
        &ModuleArgs {
            port: proxy.port(),
            fallback_size: 4,
            ..ModuleArgs::default()
        }
        .to_vec(),
    );
    let mut redis = server.client();
    for i in 0..10 {
        set(&mut redis, &format!("k:{i}"));
    }
    assert!(
        wait_until(WAIT, || field(&server, "events_dropped") == 6),
        "{}",
        server.module_info_text()
    );
    assert_eq!(field(&server, "fallback_length"), 4);
    // Logged when drops start, then summed at most every 10 s: never a line per event.
    let drop_lines = || server.log().matches("events, the oldest").count();
    assert_eq!(drop_lines(), 1, "{}", server.log());
    assert!(server.log().contains("capped at FALLBACK_SIZE 4"));
    for i in 10..20 {
        set(&mut redis, &format!("k:{i}"));
    }
    assert!(wait_until(WAIT, || field(&server, "events_dropped") == 16));
    assert_eq!(drop_lines(), 1, "the next burst waits for the summary");

    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("key_evt_amqp.queue_capacity")
        .arg("10")
        .query(&mut redis)
        .unwrap();
    assert!(wait_until(WAIT, || field(&server, "queue_capacity") == 10));
}
