//! A black-holed broker (accepts bytes, never answers) does not slow Redis down, and loses no
//! event. Runs alone (`--test-threads=1`): it measures latency.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use support::{unique_routing_key, Consumer, FaultProxy, Mode, RedisServer};

#[test]
fn redis_keeps_answering_while_the_broker_is_black_holed() {
    let proxy = FaultProxy::start();
    let rk = unique_routing_key("blackhole-");
    let mut consumer = Consumer::bind("amq.direct", &rk);
    let port = proxy.port().to_string();
    let server = RedisServer::start(&[
        "$",
        "127.0.0.1",
        &port,
        "guest",
        "guest",
        "2",
        "amq.direct",
        &rk,
        "1",
        "0",
        "ALL",
    ]);
    let mut r = server.client();
    redis::cmd("SET")
        .arg("k-before")
        .arg("v")
        .query::<()>(&mut r)
        .unwrap();
    consumer.expect(1, Duration::from_secs(10));

    proxy.set_mode(Mode::Blackhole);
    let mut worst = Duration::ZERO;
    let mut keys = Vec::new();
    let start = Instant::now();
    let mut i = 0;
    // Long enough for a confirm timeout, a failed reconnect and spills to the list.
    while start.elapsed() < Duration::from_secs(8) {
        let key = format!("k{i}");
        redis::cmd("SET")
            .arg(&key)
            .arg("v")
            .query::<()>(&mut r)
            .unwrap();
        keys.push(key);
        let t = Instant::now();
        redis::cmd("PING").query::<String>(&mut r).unwrap();
        worst = worst.max(t.elapsed());
        i += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        worst < Duration::from_millis(10),
        "PING took {worst:?} while the broker was black-holed"
    );

    proxy.heal();
    let got = consumer.drain_quiet(Duration::from_secs(8));
    let received: HashSet<Vec<u8>> = got.iter().map(|m| m.parts().unwrap().2.to_vec()).collect();
    let lost: Vec<&String> = keys
        .iter()
        .filter(|k| !received.contains(k.as_bytes()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} events lost, e.g. {:?}",
        lost.len(),
        keys.len(),
        &lost[..lost.len().min(5)]
    );
    eprintln!(
        "{} events, worst PING {worst:?}, {} messages received",
        keys.len(),
        got.len()
    );
}
