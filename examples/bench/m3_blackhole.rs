//! Measurement 3: the broker black-holed (fault proxy) under 5,000 paced SET/s: SET latency
//! against a healthy window, and events lost.

use crate::consumer::Consumer;
use crate::harness::{module_args, no_panic, unique, Redis, Res};
use crate::report::md::fixed;
use crate::report::Section;
use crate::stats::{max, median, percentile};
use crate::Sizes;
use std::time::{Duration, Instant};
use testkit::{FaultProxy, Mode};

/// SETs per second in both windows.
const RATE: u64 = 5000;

/// SETs `prefix<i>` at `rate`/s for `secs`; returns each SET's latency in ms.
fn paced_sets(redis: &Redis, prefix: &str, secs: u64, rate: u64) -> Res<Vec<f64>> {
    let mut c = redis.conn()?;
    let period = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut lat = Vec::with_capacity((secs * rate) as usize);
    let mut i = 0u32;
    loop {
        let target = start + period * i;
        if target >= end {
            break;
        }
        let now = Instant::now();
        if now < target {
            std::thread::sleep(target - now);
        }
        let t = Instant::now();
        redis::cmd("SET")
            .arg(format!("{prefix}{i}"))
            .arg("v")
            .query::<()>(&mut c)
            .map_err(|e| format!("SET: {e}"))?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        i += 1;
    }
    Ok(lat)
}

/// What the rounds measured.
#[derive(Default)]
struct Blackhole {
    /// Events written (the warm-up SET included).
    total: u64,
    n_healthy: usize,
    n_fault: usize,
    /// The module's events_spilled after the last fault window.
    spilled: u64,
    /// The longest wait for the consumer after a heal, in seconds.
    waited: f64,
    /// Per round, in ms: the healthy window's SET p99 and max, the black-holed one's.
    hp99: Vec<f64>,
    hmax: Vec<f64>,
    fp99: Vec<f64>,
    fmax: Vec<f64>,
    /// Distinct keys the consumer received in all.
    got: u64,
    step_max: u64,
    slowlog_len: i64,
}

impl Blackhole {
    /// Medians over the rounds: (healthy p99, healthy max, black-holed p99, black-holed max).
    fn medians(&self) -> (f64, f64, f64, f64) {
        (
            median(&self.hp99),
            median(&self.hmax),
            median(&self.fp99),
            median(&self.fmax),
        )
    }

    fn lost(&self) -> u64 {
        self.total.saturating_sub(self.got)
    }
}

/// The Redis under test forwards to RabbitMQ through `proxy`, one warm-up event delivered and
/// the slow log reset.
fn start(proxy: &FaultProxy, consumer: &Consumer, rk: &str) -> Res<Redis> {
    let redis = Redis::start(Some(&module_args(proxy.port(), rk, "ALL")))?;
    redis.cmd(&["SET", "warmup", "v"])?;
    consumer.wait_count(1, Duration::from_secs(20))?;
    // Commands that run 1 ms or more inside Redis (the module's list writes included).
    redis.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "1000"])?;
    redis.cmd(&["SLOWLOG", "RESET"])?;
    Ok(redis)
}

/// One healthy window, one black-holed window, then healed until the consumer has every
/// distinct key (or `limit`).
fn round(
    b: &mut Blackhole,
    (redis, proxy, consumer): (&Redis, &FaultProxy, &Consumer),
    round: usize,
    secs: u64,
    limit: Duration,
) -> Res<()> {
    let mut healthy = paced_sets(redis, &format!("h{round}:"), secs, RATE)?;
    proxy.set_mode(Mode::Blackhole);
    let fault = paced_sets(redis, &format!("f{round}:"), secs, RATE);
    b.spilled = redis.kea("events_spilled")?;
    proxy.heal();
    let mut fault = fault?;
    b.total += healthy.len() as u64 + fault.len() as u64;
    b.n_healthy += healthy.len();
    b.n_fault += fault.len();
    let t0 = Instant::now();
    while consumer.distinct() < b.total && t0.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
    b.waited = b.waited.max(t0.elapsed().as_secs_f64());
    b.hmax.push(max(&healthy));
    b.fmax.push(max(&fault));
    b.hp99.push(percentile(&mut healthy, 99.0));
    b.fp99.push(percentile(&mut fault, 99.0));
    eprintln!(
        "bench: 3: round {}: healthy p99 {:.3} max {:.3} ms, black-holed p99 {:.3} max {:.3} ms",
        round + 1,
        b.hp99[round],
        b.hmax[round],
        b.fp99[round],
        b.fmax[round]
    );
    Ok(())
}

pub fn run(s: &Sizes) -> Res<Section> {
    let rk = unique("m3");
    let consumer = Consumer::start(&rk, true)?;
    let proxy = no_panic("fault proxy", FaultProxy::start)?;
    let redis = start(&proxy, &consumer, &rk)?;
    let limit = Duration::from_secs(if s.quick { 20 } else { 60 });
    let mut b = Blackhole {
        total: 1,
        ..Blackhole::default()
    };
    for r in 0..s.rounds {
        round(&mut b, (&redis, &proxy, &consumer), r, s.fault_secs, limit)?;
    }
    b.got = consumer.distinct();
    b.step_max = redis.kea("main_thread_step_max_us")?;
    b.slowlog_len = match redis.cmd(&["SLOWLOG", "LEN"])? {
        redis::Value::Int(n) => n,
        _ => -1,
    };
    Ok(section(s, &b))
}

fn section(s: &Sizes, b: &Blackhole) -> Section {
    let secs = s.fault_secs;
    let lost = b.lost();
    let (hp99, hmax_med, fp99, fmax_med) = b.medians();
    let fmax_all = max(&b.fmax);
    let mut out = Section::default();
    out.line("");
    out.line(format!(
        "## 3. Broker black-holed for {secs} s under 5,000 SET/s (fault proxy, heartbeat 2 s; median of {} round(s))",
        s.rounds
    ));
    out.line("");
    out.line("| window | SETs (all rounds) | p99 ms | max ms (median) | max ms (worst round) |");
    out.line("|--------|------------------:|-------:|----------------:|---------------------:|");
    out.line(format!(
        "| healthy | {} | {} | {} | {} |",
        b.n_healthy,
        fixed(hp99, 3),
        fixed(hmax_med, 3),
        fixed(max(&b.hmax), 3)
    ));
    out.line(format!(
        "| black-holed | {} | {} | {} | {} |",
        b.n_fault,
        fixed(fp99, 3),
        fixed(fmax_med, 3),
        fixed(fmax_all, 3)
    ));
    out.line(format!(
        "| ratio | | {} | {} | |",
        fixed(fp99 / hp99, 2),
        fixed(fmax_med / hmax_med, 2)
    ));
    out.line("");
    out.line(format!(
        "Events written {}, distinct keys received after healing {} (longest wait after a heal {:.1} s): **lost {lost}**. Events spilled to the fallback list during the faults: {}.",
        b.total, b.got, b.waited, b.spilled
    ));
    out.line("");
    out.line(format!(
        "Inside Redis over all rounds: the module's longest main-thread step {} µs (CPU time), commands that ran 1 ms or more (SLOWLOG LEN) {}. A SET slower than both spent its time outside the module's steps and outside command execution (waiting for a CPU on this host shared with RabbitMQ and the consumer is the usual cause; Redis's own cron is the other).",
        b.step_max, b.slowlog_len
    ));
    figures(&mut out, b);
    out
}

fn figures(out: &mut Section, b: &Blackhole) {
    let (hp99, hmax_med, fp99, fmax_med) = b.medians();
    let lost = b.lost();
    for (k, v) in [
        ("healthy_p99_ms", hp99),
        ("healthy_max_ms", hmax_med),
        ("fault_p99_ms", fp99),
        ("fault_max_ms", fmax_med),
        ("fault_max_ms_worst", max(&b.fmax)),
        ("p99_ratio", fp99 / hp99),
        ("max_ratio", fmax_med / hmax_med),
        ("events", b.total as f64),
        ("lost", lost as f64),
        ("step_max_us", b.step_max as f64),
        ("slowlog_len", b.slowlog_len as f64),
    ] {
        out.put("3_blackhole", k, v);
    }
}
