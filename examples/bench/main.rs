//! End-to-end benchmarks of `key_evt_amqp` (issue 5), driven by `scripts/bench.sh`.
//!
//! ```text
//! cargo run --release --example bench -- [--quick] [--only N,N] [--out DIR]
//! cargo run --release --example bench -- consume ROUTING_KEY [--distinct]   (internal helper)
//! ```
//!
//! Starts its own redis-server processes on free ports (never 6379; the testkit's `RedisServer`,
//! so `$REDIS_SERVER` runs another server binary and `$KEY_EVT_AMQP_MODULE` another module
//! build), a counting AMQP consumer (this same binary, `consume`), and a fault proxy in front
//! of the local RabbitMQ (127.0.0.1:5672, never reconfigured). Measures:
//!
//! 1. `redis-benchmark -t set,hset,lpush` at `-P 1` and `-P 16`: no module / mask matching
//!    nothing / every key forwarded, interleaved per round; ops/s, p50, p99 and SET
//!    `usec_per_call`, as ratios to no module.
//! 2. delivery rate Redis → consumer against a raw lapin publisher with confirms, and the
//!    module's publisher CPU per confirmed event (from /proc/<pid>/task/*/stat).
//! 3. broker black-holed under 5,000 paced SET/s: SET latency vs a healthy window; events lost.
//! 4. drain of a pre-filled fallback list after MODULE LOAD: events/s, PING p99/max.
//! 5. memory: module heap at full queue capacity, Redis bytes per event in the fallback list,
//!    and what remains after the drain.
//! 6. event latency, one event at a time: SET → consumer with the publisher polling, asleep,
//!    and batching, beside a raw lapin publisher's publish → consumer.
//!
//! Writes `results.md`, `results.json` and `chart.svg` to DIR (default `docs/bench`, or
//! `target/bench-quick` with `--quick`). Figures never make it fail; errors do.
//!
//! This file: the command line and the order of the measurements. `harness` starts the
//! redis-servers, `consumer` the counting consumer; `m1_throughput` … `m6_latency` each measure
//! and hand back their [`report::Section`]; `targets` compares the figures with issue 5's
//! targets; `report` writes results.md, results.json and chart.svg.

mod consumer;
mod cpu;
mod harness;
mod m1_throughput;
mod m2_delivery;
mod m3_blackhole;
mod m4_drain;
mod m5_memory;
mod m6_latency;
mod report;
mod stats;
mod targets;

use harness::{machine, module_path, Res};
use report::{Report, Section};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// How much each measurement does: `--quick` or the full run.
pub struct Sizes {
    pub quick: bool,
    /// Rounds of measurements 1 to 4 (each figure is the median over them).
    pub rounds: usize,
    /// redis-benchmark `-n` (measurement 1).
    pub bench_n: u64,
    /// Events delivered per round (measurement 2).
    pub deliver_n: u64,
    /// Seconds of each window, healthy and black-holed (measurement 3).
    pub fault_secs: u64,
    /// Events in the backlog drained (measurement 4).
    pub drain_n: u64,
    /// The queue capacity filled, and the events per outage (measurement 5).
    pub capacity: u64,
    pub spill_n: u64,
    /// Events timed one at a time with short pauses, and with long ones (measurement 6).
    pub latency_n: u64,
    pub latency_slow_n: u64,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                quick,
                rounds: 1,
                bench_n: 20_000,
                deliver_n: 50_000,
                fault_secs: 5,
                drain_n: 200_000,
                capacity: 20_000,
                spill_n: 100_000,
                latency_n: 100,
                latency_slow_n: 20,
            }
        } else {
            Sizes {
                quick,
                rounds: 3,
                bench_n: 200_000,
                deliver_n: 500_000,
                fault_secs: 15,
                drain_n: 1_000_000,
                capacity: 100_000,
                spill_n: 1_000_000,
                latency_n: 2_000,
                latency_slow_n: 200,
            }
        }
    }
}

/// A measurement: its name in the progress lines and errors, and how it runs.
type Measurement = (&'static str, fn(&Sizes) -> Res<Section>);

/// Numbered from 1 as in the results (`--only`).
const MEASUREMENTS: [Measurement; 6] = [
    ("1 redis-benchmark", m1_throughput::run),
    ("2 delivery", m2_delivery::run),
    ("3 black-holed broker", m3_blackhole::run),
    ("4 backlog drain", m4_drain::run),
    ("5 memory", m5_memory::run),
    ("6 event latency", m6_latency::run),
];

/// Runs the measurements whose numbers are in `only` (all when empty), then writes the
/// results to `out`. Ok(false) when a measurement failed.
fn run(quick: bool, only: &[usize], out: &Path) -> Res<bool> {
    module_path()?;
    let s = Sizes::new(quick);
    let command = if quick {
        "scripts/bench.sh --quick"
    } else {
        "scripts/bench.sh"
    };
    let mach = machine();
    let mut rep = Report::default();
    rep.add(report::md::header(quick, command, &mach));
    let started = Instant::now();
    for (i, (name, measure)) in MEASUREMENTS.into_iter().enumerate() {
        if !only.is_empty() && !only.contains(&(i + 1)) {
            continue;
        }
        let t = Instant::now();
        eprintln!("bench: measurement {name} ...");
        match measure(&s) {
            Ok(section) => rep.add(section),
            Err(e) => {
                eprintln!("bench: ERROR in measurement {name}: {e}");
                rep.error(name, &e);
            }
        }
        eprintln!(
            "bench: measurement {name} took {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let targets = targets::section(&rep);
    rep.add(targets);
    rep.add(report::md::footer(started.elapsed().as_secs_f64()));
    std::fs::create_dir_all(out).map_err(|e| format!("mkdir {}: {e}", out.display()))?;
    let write = |name: &str, text: &str| {
        std::fs::write(out.join(name), text).map_err(|e| format!("write {name}: {e}"))
    };
    write("results.md", rep.md())?;
    write("results.json", &report::json::write(&rep, &mach, command)?)?;
    write("chart.svg", &report::svg::write(&rep))?;
    eprintln!(
        "bench: wrote {}/results.md, results.json, chart.svg",
        out.display()
    );
    Ok(rep.ok())
}

/// What the command line asks for.
enum Cli {
    /// `consume ROUTING_KEY [--distinct]`: the consumer child process.
    Consume { routing_key: String, distinct: bool },
    /// `[--quick] [--only N,N] [--out DIR]`
    Bench {
        quick: bool,
        only: Vec<usize>,
        out: PathBuf,
    },
}

/// The command line, or the message to print before exiting with status 2.
fn parse_args(args: &[String]) -> Result<Cli, String> {
    if args.first().map(String::as_str) == Some("consume") {
        let Some(rk) = args.get(1) else {
            return Err("usage: bench consume ROUTING_KEY [--distinct]".into());
        };
        return Ok(Cli::Consume {
            routing_key: rk.clone(),
            distinct: args.iter().any(|a| a == "--distinct"),
        });
    }
    let quick = args.iter().any(|a| a == "--quick");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let only: Vec<usize> = match value("--only").map(|v| {
        v.split(',')
            .map(|n| {
                n.parse()
                    .ok()
                    .filter(|n| (1..=MEASUREMENTS.len()).contains(n))
            })
            .collect::<Option<Vec<usize>>>()
    }) {
        None => Vec::new(),
        Some(Some(list)) => list,
        Some(None) => {
            return Err(format!(
                "bench: --only takes measurement numbers from 1 to {}, comma-separated",
                MEASUREMENTS.len()
            ))
        }
    };
    let out = value("--out").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(if quick {
            "target/bench-quick"
        } else {
            "docs/bench"
        })
    });
    if let Some(bad) = args
        .iter()
        .enumerate()
        .find(|(i, a)| {
            let takes_value = |f: &str| f == "--out" || f == "--only";
            *a != "--quick" && !takes_value(a) && !(*i > 0 && takes_value(&args[i - 1]))
        })
        .map(|(_, a)| a)
    {
        return Err(format!(
            "usage: bench [--quick] [--only N,N] [--out DIR]   (unknown argument {bad})"
        ));
    }
    Ok(Cli::Bench { quick, only, out })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse_args(&args) {
        Err(usage) => {
            eprintln!("{usage}");
            ExitCode::from(2)
        }
        Ok(Cli::Consume {
            routing_key,
            distinct,
        }) => match consumer::consume_main(&routing_key, distinct) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench consume: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(Cli::Bench { quick, only, out }) => match run(quick, &only, &out) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("bench: some measurements failed (see above)");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("bench: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
