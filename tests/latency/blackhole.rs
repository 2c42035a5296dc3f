//! A black-holed broker (accepts bytes, never answers) does not slow Redis down, and loses no
//! event. Runs alone (`--test-threads=1`): it measures latency.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use testkit::{set, unique_routing_key, Consumer, FaultProxy, Mode, ModuleArgs, RedisServer};

#[test]
fn redis_keeps_answering_while_the_broker_is_black_holed() {
    let proxy = FaultProxy::start();
    let rk = unique_routing_key("blackhole-");
    let mut consumer = Consumer::bind("amq.direct", &rk);
    let args = ModuleArgs {
        port: proxy.port(),
        heartbeat: 2,
        ..ModuleArgs::with_routing_key(&rk)
    };
    let server = RedisServer::start(&args.to_vec());
    let mut r = server.client();
    set(&mut r, "k-before");
    consumer.expect(1, Duration::from_secs(10));

    proxy.set_mode(Mode::Blackhole);
    let mut worst = Duration::ZERO;
    let mut keys = Vec::new();
    let start = Instant::now();
    let mut i = 0;
    // Long enough for a confirm timeout, a failed reconnect and spills to the list.
    while start.elapsed() < Duration::from_secs(8) {
        let key = format!("k{i}");
        set(&mut r, &key);
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
    let received: HashSet<Vec<u8>> = got.iter().map(|m| m.key().to_vec()).collect();
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
