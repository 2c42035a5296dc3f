//! Measurement 4: drain of a pre-filled fallback list after MODULE LOAD: events/s, and the
//! latency of PINGs meanwhile.

use crate::consumer::Consumer;
use crate::harness::{load_forwarding_module, prefill, unique, Redis, Res};
use crate::report::md::fixed;
use crate::report::Section;
use crate::stats::{max, median, percentile};
use crate::Sizes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// PINGs `redis` every 2 ms from its own connection until `stop`; yields their latencies in ms.
fn pinger(redis: &Redis, stop: Arc<AtomicBool>) -> Res<JoinHandle<Vec<f64>>> {
    let mut c = redis.conn()?;
    Ok(std::thread::spawn(move || {
        let mut lat = vec![];
        while !stop.load(Ordering::SeqCst) {
            let t = Instant::now();
            if redis::cmd("PING").query::<String>(&mut c).is_err() {
                break;
            }
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            std::thread::sleep(Duration::from_millis(2));
        }
        lat
    }))
}

/// One drain: a fresh Redis, `n` plain bodies RPUSHed, MODULE LOAD, until the consumer has them.
/// Returns (events/s, PING latencies in ms, main_thread_step_max_us).
fn drain_once(consumer: &Consumer, rk: &str, n: u64, limit: Duration) -> Res<(f64, Vec<f64>, u64)> {
    let redis = Redis::start(None)?;
    prefill(&redis, n)?;
    let base = consumer.count();
    let stop = Arc::new(AtomicBool::new(false));
    let pinger = pinger(&redis, stop.clone())?;
    let t0 = Instant::now();
    let loaded = load_forwarding_module(&redis, rk);
    let waited = loaded.and_then(|_| consumer.wait_count(base + n, limit));
    stop.store(true, Ordering::SeqCst);
    let lat = pinger.join().unwrap_or_default();
    let t1 = waited?;
    redis.wait_drained(Duration::from_secs(30))?;
    let step = redis.kea("main_thread_step_max_us")?;
    Ok((n as f64 / (t1 - t0).as_secs_f64(), lat, step))
}

/// Each round's figures.
#[derive(Default)]
struct Rounds {
    rates: Vec<f64>,
    p99s: Vec<f64>,
    maxes: Vec<f64>,
    steps: Vec<f64>,
    pings: usize,
}

pub fn run(s: &Sizes) -> Res<Section> {
    let rk = unique("m4");
    let consumer = Consumer::start(&rk, false)?;
    let limit = Duration::from_secs(if s.quick { 30 } else { 180 });
    let mut r = Rounds::default();
    for round in 0..s.rounds {
        let (rate, mut lat, step) = drain_once(&consumer, &rk, s.drain_n, limit)?;
        r.pings += lat.len();
        r.maxes.push(max(&lat));
        r.p99s.push(percentile(&mut lat, 99.0));
        r.rates.push(rate);
        r.steps.push(step as f64);
        eprintln!(
            "bench: 4: round {}: {rate:.0} events/s, PING p99 {:.3} max {:.3} ms, step max {step} us",
            round + 1,
            r.p99s[round],
            r.maxes[round]
        );
    }
    Ok(section(s, &r))
}

fn section(s: &Sizes, r: &Rounds) -> Section {
    let n = s.drain_n;
    let (rate, p99, max_med) = (median(&r.rates), median(&r.p99s), median(&r.maxes));
    let (worst, step_worst) = (max(&r.maxes), max(&r.steps));
    let mut out = Section::default();
    out.line("");
    out.line(format!(
        "## 4. Drain of a {n}-event backlog (median of {} round(s); fallback list pre-filled by pipelined RPUSH of plain bodies `0\\nset\\nk<i>` in a Redis without the module, then MODULE LOAD; PING every 2 ms from another connection)",
        s.rounds
    ));
    out.line("");
    out.line("| events/s | PINGs (all rounds) | PING p99 ms | PING max ms (median) | PING max ms (worst round) | main_thread_step_max_us (worst) |");
    out.line(
        "|---------:|------:|------------:|------------:|------------:|------------------------:|",
    );
    out.line(format!(
        "| {} | {} | {} | {} | {} | {} |",
        fixed(rate, 0),
        r.pings,
        fixed(p99, 3),
        fixed(max_med, 3),
        fixed(worst, 3),
        fixed(step_worst, 0)
    ));
    for (k, v) in [
        ("events", n as f64),
        ("events_per_s", rate),
        ("ping_p99_ms", p99),
        ("ping_max_ms", max_med),
        ("ping_max_ms_worst", worst),
        ("main_thread_step_max_us", step_worst),
    ] {
        out.put("4_drain", k, v);
    }
    out.rate_bar("backlog drain", rate);
    out
}
