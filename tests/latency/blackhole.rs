//! A black-holed broker (accepts bytes, never answers) does not slow Redis down, and loses no
//! event. Runs alone (`--test-threads=1`): it measures latency.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use testkit::{
    set, unique_routing_key, Consumer, FaultProxy, Mode, ModuleArgs, Pings, RedisServer,
};

/// A PING this slow counts as slow; the 99th percentile must stay under it.
const SLOW: Duration = Duration::from_millis(10);
/// No PING may take this long: far below the module's network timeouts (seconds).
const STALL: Duration = Duration::from_millis(100);

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

    // The same PINGs, interleaved, on an idle Redis without the module: the machine's noise.
    let control = RedisServer::start_without_module(&[]);
    let mut c = control.client();
    proxy.set_mode(Mode::Blackhole);
    let (mut pings, mut control_pings) = (Pings::new(Some(SLOW)), Pings::new(Some(SLOW)));
    let mut keys = Vec::new();
    let start = Instant::now();
    let mut i = 0;
    // Long enough for a confirm timeout, a failed reconnect and spills to the list.
    while start.elapsed() < Duration::from_secs(8) {
        let key = format!("k{i}");
        set(&mut r, &key);
        keys.push(key);
        for (conn, pings) in [(&mut r, &mut pings), (&mut c, &mut control_pings)] {
            let t = Instant::now();
            redis::cmd("PING").query::<String>(conn).unwrap();
            pings.record(start.elapsed(), t.elapsed());
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let p99 = pings.percentile(99.0);
    eprintln!(
        "{} PINGs while black-holed: worst {:?}, p99 {p99:?}, {} at or over {SLOW:?}; control \
         (idle Redis without the module): worst {:?}, {} at or over {SLOW:?}",
        pings.count(),
        pings.max,
        pings.slow.len(),
        control_pings.max,
        control_pings.slow.len()
    );
    // A main thread that waited on the broker would stall for its timeouts (the heartbeat is
    // 2 s). The one worst PING on this 2-core host is the scheduler's now and then (10.8 ms
    // once in CI, where 10 ms was the bound; the idle control shows such outliers too), so the
    // worst is bounded far below a timeout, and the 99th percentile tightly.
    assert!(
        pings.max < STALL,
        "PING took {:?} while the broker was black-holed (bound {STALL:?}); slow ones: {:?}",
        pings.max,
        &pings.slow[..pings.slow.len().min(20)]
    );
    assert!(
        p99 < SLOW,
        "the 99th percentile of PINGs was {p99:?} while the broker was black-holed"
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
    eprintln!("{} events, {} messages received", keys.len(), got.len());
}
