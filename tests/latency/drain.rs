//! Draining a backlog of 1,000,000 events left by the old C module (plain bodies in the
//! fallback list) does not slow Redis down (the module's longest step stays under
//! [`crate::STEP_BOUND`] of CPU time), and delivers every event once, in order. Runs alone
//! (`--test-threads=1`): it measures latency.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use testkit::{
    fallback_exists, fallback_len, tail_lines, unique_routing_key, Consumer, ModuleArgs,
    RedisServer, FALLBACK,
};

use crate::{set_thread_nice, spawn_pinger, within_step_bound, StopOnDrop, PING_BOUND};

const EVENTS: usize = 1_000_000;
/// RPUSH arguments per command, and commands per pipeline, when filling the list.
const PUSH_ARGS: usize = 1_000;
const PUSH_PIPELINE: usize = 10;
/// The whole drain must end within this.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

fn plain_body(i: usize) -> Vec<u8> {
    format!("0\nset\nk{i}").into_bytes()
}

/// utime + stime, in clock ticks (1/100 s), from a `/proc/.../stat` file.
fn cpu_ticks(stat_path: &str) -> u64 {
    let stat = std::fs::read_to_string(stat_path)
        .unwrap_or_else(|e| panic!("cannot read {stat_path}: {e}"));
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("a /proc stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// CPU time of the Redis main thread and of the whole process, in ticks.
fn redis_cpu(pid: u32) -> (u64, u64) {
    (
        cpu_ticks(&format!("/proc/{pid}/task/{pid}/stat")),
        cpu_ticks(&format!("/proc/{pid}/stat")),
    )
}

#[test]
fn a_million_event_backlog_drains_without_slowing_redis() {
    within_step_bound("drain", drain_backlog);
}

/// One run: a new node drains 1,000,000 plain bodies left in its list. Checks what the
/// consumer gets and what PINGs see; returns the module's longest main-thread step.
fn drain_backlog() -> Duration {
    let server = RedisServer::start_without_module(&[]);
    let mut r = server.client();

    // Fill the list as the old module would have left it: plain bodies, oldest first.
    let fill_started = Instant::now();
    let mut next = 0;
    while next < EVENTS {
        let mut pipe = redis::pipe();
        for _ in 0..PUSH_PIPELINE {
            if next >= EVENTS {
                break;
            }
            let end = (next + PUSH_ARGS).min(EVENTS);
            let cmd = pipe.cmd("RPUSH").arg(FALLBACK);
            for i in next..end {
                cmd.arg(plain_body(i));
            }
            cmd.ignore();
            next = end;
        }
        pipe.query::<()>(&mut r)
            .expect("RPUSH into the fallback list");
    }
    assert_eq!(fallback_len(&mut r), EVENTS as i64);
    eprintln!(
        "filled the list with {EVENTS} plain bodies in {:?}",
        fill_started.elapsed()
    );

    let rk = unique_routing_key("latency-drain-");

    // PING from its own connection every ~2 ms, from just before the load to the end. The same
    // on an idle Redis without the module (the control) tells machine noise (2 cores shared
    // with RabbitMQ, the publisher and this consumer) from the module holding the main thread.
    let control = RedisServer::start_without_module(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let pinger = spawn_pinger(server.client(), Arc::clone(&stop));
    let control_pinger = spawn_pinger(control.client(), Arc::clone(&stop));
    // Commands the module runs (its LPOPs) taking 1 ms or more are logged.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(1000)
        .query::<()>(&mut r)
        .expect("CONFIG SET slowlog-log-slower-than");
    redis::cmd("SLOWLOG")
        .arg("RESET")
        .query::<()>(&mut r)
        .unwrap();
    let _stop_pinger = StopOnDrop(Arc::clone(&stop));
    // The consumer stands in for one on another machine: it runs (with lapin's threads, which
    // start now and inherit this) at a lower priority than the PING threads, so that the
    // CPU it takes on this 2-core machine does not delay their measurements.
    set_thread_nice(10);
    let mut consumer = Consumer::bind("amq.direct", &rk);
    thread::sleep(Duration::from_millis(50));

    let pid = server.pid().expect("redis-server runs");
    let cpu_before = redis_cpu(pid);
    let load_started = Instant::now();
    server
        .load_module(&ModuleArgs::with_routing_key(&rk).to_vec())
        .unwrap_or_else(|e| panic!("MODULE LOAD failed: {e}"));

    // Check order as messages stream in; keep none of them.
    let deadline = load_started + DRAIN_LIMIT;
    let mut first_at = None;
    for i in 0..EVENTS {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(m) = consumer.recv(left) else {
            panic!(
                "only {i} of {EVENTS} events arrived within {DRAIN_LIMIT:?}\nINFO:\n{}\n\
                 log tail:\n{}",
                server.module_info_text(),
                tail_lines(&server.log(), 30)
            );
        };
        first_at.get_or_insert_with(Instant::now);
        if m.body != plain_body(i) {
            panic!("message {i} should be k{i}: got {m:?}");
        }
        assert_eq!(m.message_id, None, "a plain body has no identity: {m:?}");
    }
    let drained_in = load_started.elapsed();
    let cpu_after = redis_cpu(pid);
    if let Some(extra) = consumer.recv(Duration::from_secs(1)) {
        panic!("expected exactly {EVENTS} messages, an extra one came: {extra:?}");
    }
    stop.store(true, Ordering::Relaxed);
    let pings = pinger.join().expect("the PING thread failed");
    let control_pings = control_pinger
        .join()
        .expect("the control PING thread failed");
    let slowlog: Vec<(i64, i64, i64, Vec<String>)> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(20)
        .query::<Vec<redis::Value>>(&mut r)
        .unwrap()
        .into_iter()
        .filter_map(|entry| {
            let redis::Value::Array(fields) = entry else {
                return None;
            };
            let id = redis::from_redis_value(fields.first()?).ok()?;
            let at = redis::from_redis_value(fields.get(1)?).ok()?;
            let micros = redis::from_redis_value(fields.get(2)?).ok()?;
            let args: Vec<String> = redis::from_redis_value(fields.get(3)?).ok()?;
            Some((id, at, micros, args.into_iter().take(4).collect()))
        })
        .collect();

    let exists = fallback_exists(&mut r);
    let rate = EVENTS as f64 / drained_in.as_secs_f64();
    eprintln!(
        "drained {EVENTS} events in {drained_in:?} ({rate:.0} events/s; first after {:?}); \
         {} PINGs, worst {:?}, {} at or over {PING_BOUND:?}",
        first_at.map(|t| t - load_started),
        pings.count(),
        pings.max,
        pings.slow.len()
    );
    eprintln!(
        "CPU during the drain: Redis main thread {} ms, whole redis-server process {} ms",
        (cpu_after.0 - cpu_before.0) * 10,
        (cpu_after.1 - cpu_before.1) * 10
    );
    eprintln!(
        "control (idle Redis without the module): {} PINGs, worst {:?}, {} at or over \
         {PING_BOUND:?}; slowlog (>= 1 ms) of the draining Redis: {slowlog:?}",
        control_pings.count(),
        control_pings.max,
        control_pings.slow.len()
    );
    assert!(!exists, "the list is gone once drained");
    assert!(
        pings.count() > 1000,
        "too few PINGs ({}) to say anything",
        pings.count()
    );
    // The slowlog (printed above) is not asserted: it times commands by the wall clock, and on
    // this host the main thread is sometimes descheduled in the middle of one (seen: a
    // 500-item LRANGE logged at 3.1 ms while the longest step took 435 µs of CPU).
    // What a client sees. On this 2-core host RabbitMQ, the consumer and the publisher keep
    // both cores busy during the drain, and the scheduler then delays any process now and
    // then: the idle control Redis above, without the module, shows the same outliers
    // (measured: worst 8-23 ms for both, 0.05-0.2% of PINGs over 5 ms for both). So the
    // bound is on the 99th percentile, not on the one worst PING, which is reported.
    assert!(
        pings.slow.len() as u64 * 100 <= pings.count(),
        "{} of {} PINGs took {PING_BOUND:?} or more while the backlog drained (control: {} of {}); \
         slow ones (time since start, duration): {:?}",
        pings.slow.len(),
        pings.count(),
        control_pings.slow.len(),
        control_pings.count(),
        &pings.slow[..pings.slow.len().min(20)]
    );
    // What the module itself costs Redis: its longest hold of the main thread (bounded by the
    // caller).
    Duration::from_micros(server.module_info_u64("main_thread_step_max_us"))
}
