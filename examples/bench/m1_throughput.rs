//! Measurement 1: `redis-benchmark -t set,hset,lpush` at `-P 1` and `-P 16` against every
//! [`Variant`], interleaved per round: ops/s, p50, p99 and SET `usec_per_call` as ratios to no
//! module, and where the machine's CPU went.

use crate::consumer::Consumer;
use crate::cpu::CpuSplit;
use crate::harness::{
    count_only_module, die_with_parent, load_forwarding_module, module_args, prefill, unique,
    Redis, Res,
};
use crate::report::md::fixed;
use crate::report::Section;
use crate::stats::median;
use crate::Sizes;
use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the measured Redis loads.
enum Server {
    Plain,
    /// docs/profiles/count_only.c: a keyspace callback that only counts.
    CountOnly,
    /// Our module, forwarding the keys that match this mask to the consumer.
    Ours(&'static str),
}

/// The servers measurement 1 compares.
struct Variant {
    /// Its name in results.json.
    key: &'static str,
    /// Its name in results.md.
    name: &'static str,
    /// Its name on the chart.
    label: &'static str,
    server: Server,
    /// Another Redis drains a backlog through RabbitMQ to the consumer meanwhile (a control:
    /// the broker's and the consumer's load on the shared cores, without our module in the
    /// measured Redis).
    busy_broker: bool,
}

const fn variant(
    key: &'static str,
    name: &'static str,
    label: &'static str,
    server: Server,
    busy_broker: bool,
) -> Variant {
    Variant {
        key,
        name,
        label,
        server,
        busy_broker,
    }
}

/// The first is the baseline of the ratios.
const VARIANTS: [Variant; 6] = [
    variant("none", "no module", "", Server::Plain, false),
    variant(
        "count",
        "count-only C module (floor)",
        "count-only C",
        Server::CountOnly,
        false,
    ),
    variant(
        "nomatch",
        "mask matching nothing",
        "no match",
        Server::Ours("^no-such-key$"),
        false,
    ),
    variant("all", "ALL forwarded", "ALL", Server::Ours("ALL"), false),
    variant(
        "busy",
        "no module, RabbitMQ busy (control)",
        "control",
        Server::Plain,
        true,
    ),
    variant(
        "countbusy",
        "count-only C module, RabbitMQ busy (bound)",
        "count-only C, busy",
        Server::CountOnly,
        true,
    ),
];
const TESTS: [&str; 3] = ["SET", "HSET", "LPUSH"];
const PIPELINES: [u32; 2] = [1, 16];

/// A figure of redis-benchmark, a column of the first table with its ratio to no module.
struct Metric {
    /// Its name in results.json.
    json: &'static str,
    /// Its index in a row of [`run_redis_benchmark`].
    index: usize,
    digits: usize,
    ratio_digits: usize,
    /// The ratio's name in results.json, if it is there.
    ratio_json: Option<&'static str>,
}

const METRICS: [Metric; 3] = [
    Metric {
        json: "ops",
        index: 0,
        digits: 0,
        ratio_digits: 3,
        ratio_json: Some("ops_ratio"),
    },
    Metric {
        json: "p50_ms",
        index: 1,
        digits: 3,
        ratio_digits: 2,
        ratio_json: None,
    },
    Metric {
        json: "p99_ms",
        index: 2,
        digits: 3,
        ratio_digits: 2,
        ratio_json: Some("p99_ratio"),
    },
];

/// A column of the CPU table: cores used by one part of the machine.
struct CpuPart {
    of: fn(&CpuSplit) -> f64,
    /// Counted in the total (the publisher thread is part of redis-server's).
    in_total: bool,
    /// Its name in results.json, if it is there.
    json: Option<&'static str>,
}

const fn part(of: fn(&CpuSplit) -> f64, in_total: bool, json: Option<&'static str>) -> CpuPart {
    CpuPart { of, in_total, json }
}

const CPU_PARTS: [CpuPart; 6] = [
    part(|r| r.redis, true, Some("redis")),
    part(|r| r.publisher, false, None),
    part(|r| r.benchmark, true, None),
    part(|r| r.rabbitmq, true, Some("rabbitmq")),
    part(|r| r.consumer, true, None),
    part(|r| r.feeder, true, None),
];

impl Variant {
    fn ours(&self) -> bool {
        matches!(self.server, Server::Ours(_))
    }

    fn start(&self, count_only: &Path, rk: &str) -> Res<Redis> {
        match self.server {
            Server::Plain => Redis::start(None),
            Server::CountOnly => Redis::start_loading(count_only),
            Server::Ours(mask) => Redis::start(Some(&module_args(5672, rk, mask))),
        }
    }
}

/// One `redis-benchmark -t set,hset,lpush -c 50 --csv` run: test → [ops/s, p50 ms, p99 ms].
fn run_redis_benchmark(port: u16, n: u64, pipeline: u32) -> Res<BTreeMap<String, [f64; 3]>> {
    let mut cmd = Command::new("redis-benchmark");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", "set,hset,lpush", "-n", &n.to_string(), "-c", "50"])
        .args(["-P", &pipeline.to_string(), "--csv"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = die_with_parent(&mut cmd)
        .spawn()
        .map_err(|e| format!("cannot run redis-benchmark: {e}"))?;
    let stdout = child.stdout.take().ok_or("redis-benchmark: no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stdout), &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("redis-benchmark did not finish within 300 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = reader.join().unwrap_or_default();
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let mut rows = BTreeMap::new();
    for line in out.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').map(|c| c.trim_matches('"')).collect();
        if cells.len() < 7 {
            continue;
        }
        let num = |i: usize| cells[i].parse::<f64>().unwrap_or(f64::NAN);
        rows.insert(cells[0].to_string(), [num(1), num(4), num(6)]);
    }
    if rows.len() < TESTS.len() {
        return Err(format!("cannot parse redis-benchmark output: {out}"));
    }
    Ok(rows)
}

/// usec / calls of `cmd` in INFO commandstats (since the last CONFIG RESETSTAT).
fn usec_per_call(r: &Redis, cmd: &str) -> Res<f64> {
    let info = r.info("commandstats")?;
    let line = info
        .get(&format!("cmdstat_{cmd}"))
        .ok_or_else(|| format!("no cmdstat_{cmd}"))?;
    // usec / calls: INFO rounds usec_per_call to 2 decimals, 5 % of a 0.2 µs SET.
    let field = |name: &str| {
        line.split(',')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse::<f64>().ok())
            .ok_or_else(|| format!("no {name} in {line}"))
    };
    Ok(field("usec")? / field("calls")?)
}

/// A Redis that drains a pre-filled backlog through RabbitMQ to the consumer (the control of
/// measurement 1); killed when dropped.
struct Feeder {
    redis: Redis,
}

impl Feeder {
    fn start(consumer: &Consumer, rk: &str, n: u64) -> Res<Feeder> {
        let redis = Redis::start(None)?;
        prefill(&redis, n)?;
        let base = consumer.count();
        load_forwarding_module(&redis, rk)?;
        consumer.wait_count(base + 1000, Duration::from_secs(20))?;
        Ok(Feeder { redis })
    }
}

/// One redis-benchmark run of one variant.
struct Run {
    /// test → [ops/s, p50 ms, p99 ms]
    rows: BTreeMap<String, [f64; 3]>,
    /// SET usec_per_call.
    usec: f64,
    cpu: CpuSplit,
    /// Messages per second the consumer received meanwhile.
    delivered: f64,
}

/// (pipeline, index in [`VARIANTS`]) → its runs, one per round.
type Runs = BTreeMap<(u32, usize), Vec<Run>>;

/// What every run shares: the consumer, its routing key, the events a feeder drains during a
/// control run (more than a run lasts at RabbitMQ's pace).
struct Bench<'a> {
    s: &'a Sizes,
    consumer: &'a Consumer,
    rk: &'a str,
    feed_n: u64,
}

impl Bench<'_> {
    fn run(&self, v: &Variant, server: &Redis, pipeline: u32) -> Res<Run> {
        let consumer = self.consumer;
        let feeder = if v.busy_broker {
            Some(Feeder::start(consumer, self.rk, self.feed_n)?)
        } else {
            None
        };
        let feeder_pid = feeder.as_ref().map(|f| f.redis.pid());
        server.cmd(&["CONFIG", "RESETSTAT"])?;
        let count = consumer.count();
        let (before, started) = (
            CpuSplit::now(server.pid(), consumer.pid(), feeder_pid),
            Instant::now(),
        );
        let rows = run_redis_benchmark(server.port(), self.s.bench_n, pipeline)?;
        let cpu = CpuSplit::now(server.pid(), consumer.pid(), feeder_pid)
            .since(before, started.elapsed().as_secs_f64());
        let count = consumer.count() - count;
        if let Some(feeder) = feeder {
            let left = feeder.redis.kea("fallback_length")?;
            if left == 0 {
                eprintln!("bench: 1: the control's backlog ran out during the run");
            }
            drop(feeder);
            consumer.wait_quiet(Duration::from_secs(60))?;
        }
        let usec = usec_per_call(server, "set")?;
        if v.ours() {
            server.wait_drained(Duration::from_secs(if self.s.quick { 30 } else { 180 }))?;
        }
        Ok(Run {
            rows,
            usec,
            cpu,
            delivered: count as f64 / cpu.wall,
        })
    }
}

pub fn run(s: &Sizes) -> Res<Section> {
    let rk = unique("m1");
    let consumer = Consumer::start(&rk, false)?;
    let count_only = count_only_module()?;
    let servers = VARIANTS
        .iter()
        .map(|v| v.start(&count_only, &rk))
        .collect::<Res<Vec<Redis>>>()?;
    let bench = Bench {
        s,
        consumer: &consumer,
        rk: &rk,
        feed_n: if s.quick { 100_000 } else { 600_000 },
    };
    let mut runs = Runs::new();
    for round in 0..s.rounds {
        for pipeline in PIPELINES {
            for (i, (v, server)) in VARIANTS.iter().zip(&servers).enumerate() {
                let run = bench.run(v, server, pipeline)?;
                eprintln!(
                    "bench: 1: round {} -P {pipeline} {}: SET {} ops/s",
                    round + 1,
                    v.name,
                    run.rows.get("SET").map_or(f64::NAN, |r| r[0])
                );
                runs.entry((pipeline, i)).or_default().push(run);
            }
        }
    }
    let mut out = Section::default();
    benchmark_table(&mut out, s, &runs);
    usec_table(&mut out, &runs);
    cpu_table(&mut out, &runs);
    Ok(out)
}

fn runs_of(runs: &Runs, pipeline: u32, v: usize) -> &[Run] {
    runs.get(&(pipeline, v)).map_or(&[][..], |r| r)
}

/// The median over the rounds of one figure of one variant's runs.
fn median_of(runs: &Runs, pipeline: u32, v: usize, figure: impl Fn(&Run) -> Option<f64>) -> f64 {
    median(
        &runs_of(runs, pipeline, v)
            .iter()
            .filter_map(figure)
            .collect::<Vec<_>>(),
    )
}

fn benchmark_table(out: &mut Section, s: &Sizes, runs: &Runs) {
    const SEC: &str = "1_redis_benchmark";
    out.line("");
    out.line(format!(
        "## 1. redis-benchmark -t set,hset,lpush -n {} -c 50 (median of {} round(s), interleaved)",
        s.bench_n, s.rounds
    ));
    out.line("");
    out.line("| -P | test | variant | ops/s | ratio | p50 ms | ratio | p99 ms | ratio |");
    out.line("|---:|------|---------|------:|------:|-------:|------:|-------:|------:|");
    for pipeline in PIPELINES {
        for t in TESTS {
            let med = |v: usize, i: usize| {
                median_of(runs, pipeline, v, |r| r.rows.get(t).map(|row| row[i]))
            };
            for (v, variant) in VARIANTS.iter().enumerate() {
                // (median, ratio to no module) of each metric
                let figures = METRICS
                    .each_ref()
                    .map(|m| (med(v, m.index), med(v, m.index) / med(0, m.index)));
                let cells: Vec<String> = METRICS
                    .iter()
                    .zip(&figures)
                    .map(|(metric, &(m, r))| {
                        format!(
                            "{} | {}",
                            fixed(m, metric.digits),
                            fixed(r, metric.ratio_digits)
                        )
                    })
                    .collect();
                out.line(format!(
                    "| {pipeline} | {t} | {} | {} |",
                    variant.name,
                    cells.join(" | ")
                ));
                let key = format!("P{pipeline}_{t}_{}", variant.key);
                for (metric, (m, _)) in METRICS.iter().zip(&figures) {
                    out.put(SEC, format!("{key}_{}", metric.json), *m);
                }
                if v > 0 {
                    for (metric, (_, r)) in METRICS.iter().zip(&figures) {
                        if let Some(name) = metric.ratio_json {
                            out.put(SEC, format!("{key}_{name}"), *r);
                        }
                    }
                    if t == "SET" {
                        out.ratio_bar(
                            format!("SET ops/s -P{pipeline} {}", variant.label),
                            figures[0].1,
                        );
                    }
                }
            }
        }
    }
}

fn usec_table(out: &mut Section, runs: &Runs) {
    out.line("");
    out.line("SET main-thread time (`INFO commandstats` usec_per_call, CONFIG RESETSTAT before each run):");
    out.line("");
    out.line("| -P | variant | usec_per_call | ratio to no module |");
    out.line("|---:|---------|--------------:|-------------------:|");
    for pipeline in PIPELINES {
        let base = median_of(runs, pipeline, 0, |r| Some(r.usec));
        for (v, variant) in VARIANTS.iter().enumerate() {
            let m = median_of(runs, pipeline, v, |r| Some(r.usec));
            out.line(format!(
                "| {pipeline} | {} | {} | {} |",
                variant.name,
                fixed(m, 3),
                fixed(m / base, 3)
            ));
            let key = format!("P{pipeline}_{}", variant.key);
            out.put("1_usec_per_call", key.clone(), m);
            if v > 0 {
                out.put("1_usec_per_call", format!("{key}_ratio"), m / base);
                out.ratio_bar(
                    format!("SET usec/call -P{pipeline} {}", variant.label),
                    m / base,
                );
            }
        }
    }
}

fn cpu_table(out: &mut Section, runs: &Runs) {
    out.line("");
    out.line("Where the 2 cores went during the runs (CPU seconds over wall seconds, so 2.00 is the whole machine; median over rounds, the three tests together; the consumer is this bench's counting lapin consumer; in the runs marked \"RabbitMQ busy\" a second Redis with our module drains a pre-filled backlog to the same consumer, so RabbitMQ and the consumer work as hard as when the measured Redis forwards every key, but the measured Redis has no module or only the count-only one):");
    out.line("");
    out.line("| -P | variant | redis-server | of which kea-publisher | redis-benchmark | RabbitMQ | consumer | feeder Redis | total | messages/s to the consumer |");
    out.line("|---:|---------|-------------:|-----------------------:|----------------:|---------:|---------:|-------------:|------:|---------------------------:|");
    for pipeline in PIPELINES {
        for (v, variant) in VARIANTS.iter().enumerate() {
            let parts = CPU_PARTS
                .each_ref()
                .map(|part| median_of(runs, pipeline, v, |r| Some((part.of)(&r.cpu) / r.cpu.wall)));
            let total: f64 = CPU_PARTS
                .iter()
                .zip(&parts)
                .filter(|(part, _)| part.in_total)
                .map(|(_, p)| *p)
                .sum();
            let rate = median_of(runs, pipeline, v, |r| Some(r.delivered));
            let cells: Vec<String> = parts.iter().map(|p| fixed(*p, 2)).collect();
            out.line(format!(
                "| {pipeline} | {} | {} | {} | {} |",
                variant.name,
                cells.join(" | "),
                fixed(total, 2),
                fixed(rate, 0)
            ));
            let key = format!("P{pipeline}_{}", variant.key);
            for (part, p) in CPU_PARTS.iter().zip(&parts) {
                if let Some(name) = part.json {
                    out.put("1_cpu_cores", format!("{key}_{name}"), *p);
                }
            }
            out.put("1_cpu_cores", format!("{key}_messages_per_s"), rate);
        }
    }
}
