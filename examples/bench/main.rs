//! End-to-end benchmarks of `key_evt_amqp` (issue 5), driven by `scripts/bench.sh`.
//!
//! ```text
//! cargo run --release --example bench -- [--quick] [--only N,N] [--out DIR]
//! cargo run --release --example bench -- consume ROUTING_KEY [--distinct]   (internal helper)
//! ```
//!
//! Starts its own redis-server processes on free ports (never 6379), a counting AMQP consumer
//! (this same binary, `consume`), and a fault proxy in front of the local RabbitMQ
//! (127.0.0.1:5672, never reconfigured). Measures:
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
//!
//! Writes `results.md`, `results.json` and `chart.svg` to DIR (default `docs/bench`, or
//! `target/bench-quick` with `--quick`). Figures never make it fail; errors do.

#[allow(dead_code)]
#[path = "../../tests/support/proxy.rs"]
mod proxy;

use futures_lite::StreamExt;
use lapin::{
    options::{
        BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::FieldTable,
    BasicProperties, Connection, ConnectionProperties,
};
use serde::{Serialize, Serializer};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::future::Future;
use std::io::{BufRead, BufReader, Write as _};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

type Res<T> = Result<T, String>;

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const FALLBACK_KEY: &str = "REDIS_MODULE-key_evt_amqp-fallback_storage";
const EXCHANGE: &str = "amq.direct";

/// Used by the proxy module (`super::bind_local()`): a listener on a free local port.
fn bind_local() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

fn free_port() -> u16 {
    bind_local().local_addr().map(|a| a.port()).unwrap_or(0)
}

fn module_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/libkey_evt_amqp.so")
}

/// Builds docs/profiles/count_only.c, the floor of any module that subscribes to keyspace
/// events (its callback only counts), against the redismodule.h of the redis-module crate.
fn count_only_module() -> Res<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    let registries = std::fs::read_dir(cargo_home.join("registry/src"))
        .map_err(|e| format!("cargo registry sources: {e} (run scripts/setup.sh)"))?;
    let include = registries
        .filter_map(Result::ok)
        .map(|d| d.path().join("redis-module-2.0.8/src/include"))
        .find(|d| d.join("redismodule.h").exists())
        .ok_or(
            "no redismodule.h of redis-module 2.0.8 in cargo's registry (run scripts/setup.sh)",
        )?;
    let out = root.join("target/bench/count_only.so");
    std::fs::create_dir_all(root.join("target/bench")).map_err(|e| e.to_string())?;
    let status = Command::new("cc")
        .args(["-O2", "-shared", "-fPIC", "-I"])
        .arg(&include)
        .arg("-o")
        .arg(&out)
        .arg(root.join("docs/profiles/count_only.c"))
        .status()
        .map_err(|e| format!("cannot run cc: {e}"))?;
    if !status.success() {
        return Err(format!("cc failed to build count_only.so ({status})"));
    }
    Ok(out)
}

/// Children die with us (also when we are killed): SIGKILL on parent death.
fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

fn unique(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "kea-bench-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

// ------------------------------------------------------------------ sizes

struct Sizes {
    quick: bool,
    rounds: usize,
    bench_n: u64,
    deliver_n: u64,
    fault_secs: u64,
    drain_n: u64,
    capacity: u64,
    spill_n: u64,
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
            }
        }
    }
}

// ------------------------------------------------------------------ redis-server

struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

fn module_args(broker_port: u16, routing_key: &str, mask: &str) -> Vec<String> {
    [
        "A",
        "127.0.0.1",
        &broker_port.to_string(),
        "guest",
        "guest",
        "2",
        EXCHANGE,
        routing_key,
        "1",
        "0",
        mask,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Redis {
    /// A redis-server with our module loaded with `module`'s arguments, or without any module.
    fn start(module: Option<&[String]>) -> Res<Redis> {
        Redis::start_with(module.map(|args| (module_path(), args)))
    }

    /// A redis-server with the module at the given path loaded with the given arguments.
    fn start_with(module: Option<(PathBuf, &[String])>) -> Res<Redis> {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("kea-bench-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--enable-module-command", "yes"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"));
        if let Some((path, args)) = module {
            cmd.arg("--loadmodule").arg(path).args(args);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = die_with_parent(&mut cmd)
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        let mut redis = Redis { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = redis.try_conn() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return Ok(redis);
                }
            }
            if let Ok(Some(status)) = redis.child.try_wait() {
                let log = std::fs::read_to_string(redis.dir.join("redis.log")).unwrap_or_default();
                return Err(format!("redis-server exited ({status}): {log}"));
            }
            if Instant::now() > deadline {
                return Err(format!("redis-server on port {port} not ready within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn try_conn(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?
            .get_connection_with_timeout(Duration::from_secs(5))
    }

    fn conn(&self) -> Res<redis::Connection> {
        let c = self
            .try_conn()
            .map_err(|e| format!("connect to redis {}: {e}", self.port))?;
        c.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        Ok(c)
    }

    fn info(&self, section: &str) -> Res<BTreeMap<String, String>> {
        let text: String = redis::cmd("INFO")
            .arg(section)
            .query(&mut self.conn()?)
            .map_err(|e| format!("INFO {section}: {e}"))?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect())
    }

    fn info_u64(&self, section: &str, field: &str) -> Res<u64> {
        self.info(section)?
            .get(field)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("INFO {section}: no numeric {field}"))
    }

    fn kea(&self, field: &str) -> Res<u64> {
        self.info_u64("key_evt_amqp", &format!("key_evt_amqp_{field}"))
    }

    fn cmd(&self, args: &[&str]) -> Res<redis::Value> {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query(&mut self.conn()?)
            .map_err(|e| format!("{}: {e}", args.join(" ")))
    }

    /// Polls the module's queue and fallback-list lengths until `done(queue, fallback)`.
    fn wait_lengths(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(u64, u64) -> bool,
    ) -> Res<Duration> {
        let start = Instant::now();
        loop {
            let (queue, fallback) = (self.kea("queue_length")?, self.kea("fallback_length")?);
            if done(queue, fallback) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "{what} within {} s (queue {queue}, fallback {fallback})",
                    limit.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the module holds nothing: memory queue and fallback list empty.
    fn wait_drained(&self, limit: Duration) -> Res<Duration> {
        self.wait_lengths("backlog not drained", limit, |q, f| q == 0 && f == 0)
    }

    /// Waits until nothing is in memory and the fallback list holds at least `n` events.
    fn wait_spilled(&self, n: u64, limit: Duration) -> Res<()> {
        self.wait_lengths("events did not spill", limit, |q, f| q == 0 && f >= n)
            .map(|_| ())
    }

    /// Pipelined `SET prefix<i> v` for i in 0..n, 1000 per round trip.
    fn fill_sets(&self, prefix: &str, n: u64) -> Res<()> {
        let mut c = self.conn()?;
        let mut i = 0;
        while i < n {
            let mut p = redis::pipe();
            for j in i..(i + 1000).min(n) {
                p.cmd("SET")
                    .arg(format!("{prefix}{j:08}"))
                    .arg("v")
                    .ignore();
            }
            p.query::<()>(&mut c).map_err(|e| format!("SET: {e}"))?;
            i += 1000;
        }
        Ok(())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// CPU seconds (utime+stime) of the threads of `pid` whose name is in `names`.
fn threads_cpu(pid: u32, names: &[&str]) -> f64 {
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut ticks = 0u64;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in dir.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let name = &stat[open + 1..close];
            if !names.iter().any(|n| name.starts_with(n)) {
                continue;
            }
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            // After ")": state is field 3, utime 14, stime 15 (1-based over the whole line).
            let get = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok());
            ticks += get(14).unwrap_or(0) + get(15).unwrap_or(0);
        }
    }
    ticks as f64 / tck
}

fn self_cpu() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU seconds of every process named `comm` (RabbitMQ's Erlang VM: `beam.smp`).
fn processes_cpu(comm: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .map(|pid| threads_cpu(pid, &[""]))
        .sum()
}

/// CPU seconds of the children this process has waited for (redis-benchmark runs).
fn children_cpu() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Where the machine's CPU went during one redis-benchmark run, in CPU seconds.
#[derive(Clone, Copy, Default)]
struct CpuSplit {
    wall: f64,
    redis: f64,
    publisher: f64,
    benchmark: f64,
    rabbitmq: f64,
    consumer: f64,
    /// The Redis that keeps RabbitMQ busy in the control run (0 elsewhere).
    feeder: f64,
}

impl CpuSplit {
    fn now(redis: u32, consumer: u32, feeder: Option<u32>) -> CpuSplit {
        CpuSplit {
            wall: 0.0,
            redis: threads_cpu(redis, &[""]),
            publisher: threads_cpu(redis, PUBLISHER_THREADS),
            benchmark: children_cpu(),
            rabbitmq: processes_cpu("beam.smp"),
            consumer: threads_cpu(consumer, &[""]),
            feeder: feeder.map_or(0.0, |pid| threads_cpu(pid, &[""])),
        }
    }

    fn since(self, before: CpuSplit, wall: f64) -> CpuSplit {
        CpuSplit {
            wall,
            redis: self.redis - before.redis,
            publisher: self.publisher - before.publisher,
            benchmark: self.benchmark - before.benchmark,
            rabbitmq: self.rabbitmq - before.rabbitmq,
            consumer: self.consumer - before.consumer,
            feeder: self.feeder - before.feeder,
        }
    }
}

/// The module's only thread of its own: it connects, publishes and reads confirms.
const PUBLISHER_THREADS: &[&str] = &["kea-publisher"];

// ------------------------------------------------------------------ consumer (child process)

struct Consumer {
    child: Child,
    count: Arc<AtomicU64>,
    distinct: Arc<AtomicU64>,
}

impl Consumer {
    fn start(routing_key: &str, distinct: bool) -> Res<Consumer> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        cmd.arg("consume").arg(routing_key);
        if distinct {
            cmd.arg("--distinct");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = die_with_parent(&mut cmd)
            .spawn()
            .map_err(|e| format!("cannot start the consumer: {e}"))?;
        let stdout = child.stdout.take().ok_or("consumer: no stdout")?;
        let count = Arc::new(AtomicU64::new(0));
        let distinct = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (c, d) = (count.clone(), distinct.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "ready" {
                    let _ = ready_tx.send(());
                    continue;
                }
                let mut parts = line
                    .split_whitespace()
                    .map(|v| v.parse::<u64>().unwrap_or(0));
                c.store(parts.next().unwrap_or(0), Ordering::SeqCst);
                d.store(parts.next().unwrap_or(0), Ordering::SeqCst);
            }
        });
        let mut consumer = Consumer {
            child,
            count,
            distinct,
        };
        if ready_rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = consumer.child.kill();
            return Err("the consumer did not bind its queue within 20 s".into());
        }
        Ok(consumer)
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until no message has come for 300 ms.
    fn wait_quiet(&self, limit: Duration) -> Res<()> {
        let start = Instant::now();
        let (mut last, mut since) = (self.count(), Instant::now());
        while since.elapsed() < Duration::from_millis(300) {
            if start.elapsed() > limit {
                return Err(format!(
                    "messages still arriving after {} s",
                    limit.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
            if self.count() != last {
                (last, since) = (self.count(), Instant::now());
            }
        }
        Ok(())
    }

    /// Waits until at least `n` messages arrived; returns when it saw the last one.
    fn wait_count(&self, n: u64, limit: Duration) -> Res<Instant> {
        let start = Instant::now();
        while self.count() < n {
            if start.elapsed() > limit {
                return Err(format!(
                    "consumer got {} of {n} messages within {} s",
                    self.count(),
                    limit.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(Instant::now())
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn with_deadline<T>(limit: Duration, what: &str, fut: impl Future<Output = Res<T>>) -> Res<T> {
    async_global_executor::block_on(futures_lite::future::or(fut, async {
        async_io::Timer::after(limit).await;
        Err(format!("{what}: no answer within {} s", limit.as_secs()))
    }))
}

fn consume_main(routing_key: &str, distinct: bool) -> Res<()> {
    let (conn, channel) = with_deadline(Duration::from_secs(15), "consumer connect", async {
        let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
        Ok((conn, channel))
    })?;
    let consumer = with_deadline(Duration::from_secs(15), "consumer setup", async {
        let q = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("queue_declare: {e}"))?;
        channel
            .queue_bind(
                q.name().clone(),
                EXCHANGE.into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("queue_bind: {e}"))?;
        channel
            .basic_consume(
                q.name().clone(),
                "bench".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("basic_consume: {e}"))
    })?;
    let count = Arc::new(AtomicU64::new(0));
    let keys = Arc::new(AtomicU64::new(0));
    {
        let (count, keys) = (count.clone(), keys.clone());
        std::thread::spawn(move || {
            let mut last = (u64::MAX, u64::MAX);
            let mut out = std::io::stdout();
            let _ = writeln!(out, "ready");
            let _ = out.flush();
            loop {
                let now = (count.load(Ordering::SeqCst), keys.load(Ordering::SeqCst));
                if now != last {
                    last = now;
                    if writeln!(out, "{} {}", now.0, now.1)
                        .and_then(|_| out.flush())
                        .is_err()
                    {
                        std::process::exit(0);
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
    }
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    async_global_executor::block_on(async {
        let mut consumer = consumer;
        while let Some(delivery) = consumer.next().await {
            let Ok(d) = delivery else { break };
            if distinct {
                let key = d.data.splitn(3, |&b| b == b'\n').nth(2).unwrap_or(&[]);
                if seen.insert(key.to_vec()) {
                    keys.store(seen.len() as u64, Ordering::SeqCst);
                }
            }
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    drop(conn);
    Err("the consumer stream ended".into())
}

// ------------------------------------------------------------------ statistics

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

// ------------------------------------------------------------------ report

#[derive(Default)]
struct Report {
    md: String,
    /// section → (name → value)
    json: BTreeMap<String, Vec<(String, f64)>>,
    /// chart panels: title → bars (label, value)
    ratio_bars: Vec<(String, f64)>,
    rate_bars: Vec<(String, f64)>,
    notes: Vec<String>,
}

impl Report {
    fn put(&mut self, section: &str, name: &str, v: f64) {
        self.json
            .entry(section.to_string())
            .or_default()
            .push((name.to_string(), v));
    }
    fn line(&mut self, s: &str) {
        println!("{s}");
        self.md.push_str(s);
        self.md.push('\n');
    }
}

fn f(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "n/a".into()
    }
}

// ------------------------------------------------------------------ 1. redis-benchmark

/// The servers measurement 1 compares.
struct Variant {
    /// Its name in results.json.
    key: &'static str,
    /// Its name in results.md.
    name: &'static str,
    /// Its name on the chart.
    label: &'static str,
    /// Our module is loaded (it has a backlog to wait for).
    ours: bool,
    /// Another Redis drains a backlog through RabbitMQ to the consumer meanwhile (a control:
    /// the broker's and the consumer's load on the shared cores, without our module in the
    /// measured Redis).
    busy_broker: bool,
}

const VARIANTS: [Variant; 6] = [
    Variant {
        key: "none",
        name: "no module",
        label: "",
        ours: false,
        busy_broker: false,
    },
    Variant {
        key: "count",
        name: "count-only C module (floor)",
        label: "count-only C",
        ours: false,
        busy_broker: false,
    },
    Variant {
        key: "nomatch",
        name: "mask matching nothing",
        label: "no match",
        ours: true,
        busy_broker: false,
    },
    Variant {
        key: "all",
        name: "ALL forwarded",
        label: "ALL",
        ours: true,
        busy_broker: false,
    },
    Variant {
        key: "busy",
        name: "no module, RabbitMQ busy (control)",
        label: "control",
        ours: false,
        busy_broker: true,
    },
    Variant {
        key: "countbusy",
        name: "count-only C module, RabbitMQ busy (bound)",
        label: "count-only C, busy",
        ours: false,
        busy_broker: true,
    },
];
const TESTS: [&str; 3] = ["SET", "HSET", "LPUSH"];

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

fn m1(s: &Sizes, rep: &mut Report) -> Res<()> {
    let rk = unique("m1");
    let consumer = Consumer::start(&rk, false)?;
    let count_only = count_only_module()?;
    let servers = [
        Redis::start(None)?,
        Redis::start_with(Some((count_only.clone(), &[])))?,
        Redis::start(Some(&module_args(5672, &rk, "^no-such-key$")))?,
        Redis::start(Some(&module_args(5672, &rk, "ALL")))?,
        Redis::start(None)?,
        Redis::start_with(Some((count_only, &[])))?,
    ];
    // Events a feeder drains during a control run: more than a run lasts at RabbitMQ's pace.
    let feed_n = if s.quick { 100_000 } else { 600_000 };
    // (pipeline, variant, test) → samples of [rps, p50, p99]; (pipeline, variant) → usec_per_call
    let mut samples: BTreeMap<(u32, usize, &str), Vec<[f64; 3]>> = BTreeMap::new();
    let mut upc: BTreeMap<(u32, usize), Vec<f64>> = BTreeMap::new();
    let mut cpu: BTreeMap<(u32, usize), Vec<CpuSplit>> = BTreeMap::new();
    // (pipeline, variant) → messages/s the consumer received during the runs
    let mut delivered: BTreeMap<(u32, usize), Vec<f64>> = BTreeMap::new();
    let consumer_pid = consumer.child.id();
    for round in 0..s.rounds {
        for pipeline in [1u32, 16] {
            for (v, server) in servers.iter().enumerate() {
                let feeder = if VARIANTS[v].busy_broker {
                    Some(Feeder::start(&consumer, &rk, feed_n)?)
                } else {
                    None
                };
                let feeder_pid = feeder.as_ref().map(|f| f.redis.pid());
                server.cmd(&["CONFIG", "RESETSTAT"])?;
                let count = consumer.count();
                let (before, started) = (
                    CpuSplit::now(server.pid(), consumer_pid, feeder_pid),
                    Instant::now(),
                );
                let rows = run_redis_benchmark(server.port, s.bench_n, pipeline)?;
                let split = CpuSplit::now(server.pid(), consumer_pid, feeder_pid)
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
                delivered
                    .entry((pipeline, v))
                    .or_default()
                    .push(count as f64 / split.wall);
                cpu.entry((pipeline, v)).or_default().push(split);
                upc.entry((pipeline, v))
                    .or_default()
                    .push(usec_per_call(server, "set")?);
                for t in TESTS {
                    if let Some(r) = rows.get(t) {
                        samples.entry((pipeline, v, t)).or_default().push(*r);
                    }
                }
                if VARIANTS[v].ours {
                    server.wait_drained(Duration::from_secs(if s.quick { 30 } else { 180 }))?;
                }
                eprintln!(
                    "bench: 1: round {} -P {pipeline} {}: SET {} ops/s",
                    round + 1,
                    VARIANTS[v].name,
                    rows.get("SET").map_or(f64::NAN, |r| r[0])
                );
            }
        }
    }
    rep.line("");
    rep.line(&format!(
        "## 1. redis-benchmark -t set,hset,lpush -n {} -c 50 (median of {} round(s), interleaved)",
        s.bench_n, s.rounds
    ));
    rep.line("");
    rep.line("| -P | test | variant | ops/s | ratio | p50 ms | ratio | p99 ms | ratio |");
    rep.line("|---:|------|---------|------:|------:|-------:|------:|-------:|------:|");
    for pipeline in [1u32, 16] {
        for t in TESTS {
            let med = |v: usize, i: usize| {
                median(
                    &samples
                        .get(&(pipeline, v, t))
                        .map(|x| x.iter().map(|r| r[i]).collect::<Vec<_>>())
                        .unwrap_or_default(),
                )
            };
            for (v, variant) in VARIANTS.iter().enumerate() {
                let name = variant.name;
                let (ops, p50, p99) = (med(v, 0), med(v, 1), med(v, 2));
                let (r0, r1, r2) = (ops / med(0, 0), p50 / med(0, 1), p99 / med(0, 2));
                rep.line(&format!(
                    "| {pipeline} | {t} | {name} | {} | {} | {} | {} | {} | {} |",
                    f(ops, 0),
                    f(r0, 3),
                    f(p50, 3),
                    f(r1, 2),
                    f(p99, 3),
                    f(r2, 2)
                ));
                let key = format!("P{pipeline}_{t}_{}", variant.key);
                rep.put("1_redis_benchmark", &format!("{key}_ops"), ops);
                rep.put("1_redis_benchmark", &format!("{key}_p50_ms"), p50);
                rep.put("1_redis_benchmark", &format!("{key}_p99_ms"), p99);
                if v > 0 {
                    rep.put("1_redis_benchmark", &format!("{key}_ops_ratio"), r0);
                    rep.put("1_redis_benchmark", &format!("{key}_p99_ratio"), r2);
                    if t == "SET" {
                        rep.ratio_bars
                            .push((format!("SET ops/s -P{pipeline} {}", variant.label), r0));
                    }
                }
            }
        }
    }
    rep.line("");
    rep.line("SET main-thread time (`INFO commandstats` usec_per_call, CONFIG RESETSTAT before each run):");
    rep.line("");
    rep.line("| -P | variant | usec_per_call | ratio to no module |");
    rep.line("|---:|---------|--------------:|-------------------:|");
    for pipeline in [1u32, 16] {
        let base = median(upc.get(&(pipeline, 0)).map_or(&[][..], |v| v));
        for (v, variant) in VARIANTS.iter().enumerate() {
            let name = variant.name;
            let m = median(upc.get(&(pipeline, v)).map_or(&[][..], |v| v));
            rep.line(&format!(
                "| {pipeline} | {name} | {} | {} |",
                f(m, 3),
                f(m / base, 3)
            ));
            let key = format!("P{pipeline}_{}", variant.key);
            rep.put("1_usec_per_call", &key, m);
            if v > 0 {
                rep.put("1_usec_per_call", &format!("{key}_ratio"), m / base);
                rep.ratio_bars.push((
                    format!("SET usec/call -P{pipeline} {}", variant.label),
                    m / base,
                ));
            }
        }
    }
    rep.line("");
    rep.line("Where the 2 cores went during the runs (CPU seconds over wall seconds, so 2.00 is the whole machine; median over rounds, the three tests together; the consumer is this bench's counting lapin consumer; in the runs marked \"RabbitMQ busy\" a second Redis with our module drains a pre-filled backlog to the same consumer, so RabbitMQ and the consumer work as hard as when the measured Redis forwards every key, but the measured Redis has no module or only the count-only one):");
    rep.line("");
    rep.line("| -P | variant | redis-server | of which kea-publisher | redis-benchmark | RabbitMQ | consumer | feeder Redis | total | messages/s to the consumer |");
    rep.line("|---:|---------|-------------:|-----------------------:|----------------:|---------:|---------:|-------------:|------:|---------------------------:|");
    for pipeline in [1u32, 16] {
        for (v, variant) in VARIANTS.iter().enumerate() {
            let name = variant.name;
            let runs = cpu.get(&(pipeline, v)).map_or(&[][..], |r| r);
            let cores = |part: fn(&CpuSplit) -> f64| {
                median(&runs.iter().map(|r| part(r) / r.wall).collect::<Vec<_>>())
            };
            let parts = [
                cores(|r| r.redis),
                cores(|r| r.publisher),
                cores(|r| r.benchmark),
                cores(|r| r.rabbitmq),
                cores(|r| r.consumer),
                cores(|r| r.feeder),
            ];
            let total = parts[0] + parts[2] + parts[3] + parts[4] + parts[5];
            let rate = median(delivered.get(&(pipeline, v)).map_or(&[][..], |r| r));
            rep.line(&format!(
                "| {pipeline} | {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
                f(parts[0], 2),
                f(parts[1], 2),
                f(parts[2], 2),
                f(parts[3], 2),
                f(parts[4], 2),
                f(parts[5], 2),
                f(total, 2),
                f(rate, 0)
            ));
            let key = format!("P{pipeline}_{}", variant.key);
            rep.put("1_cpu_cores", &format!("{key}_redis"), parts[0]);
            rep.put("1_cpu_cores", &format!("{key}_rabbitmq"), parts[3]);
            rep.put("1_cpu_cores", &format!("{key}_messages_per_s"), rate);
        }
    }
    drop(consumer);
    Ok(())
}

// ------------------------------------------------------------------ 2. delivery rate

async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pending: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(move |cx| {
        let mut all = true;
        for (fut, out) in pending.iter_mut().zip(done.iter_mut()) {
            if out.is_none() {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => all = false,
                }
            }
        }
        if all {
            Poll::Ready(done.iter_mut().filter_map(Option::take).collect())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Publishes `n` bodies `0\nset\nk<i>` in batches of 1000 with confirms; returns confirmed.
fn raw_publish(channel: &lapin::Channel, routing_key: &str, round: usize, n: u64) -> Res<u64> {
    let bodies: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("0\nset\nk{round}:{i:08}").into_bytes())
        .collect();
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    with_deadline(Duration::from_secs(300), "raw publish", async {
        let mut confirmed = 0u64;
        for (b, chunk) in bodies.chunks(1000).enumerate() {
            let sends = chunk.iter().enumerate().map(|(i, body)| {
                let props = BasicProperties::default()
                    .with_content_type("text/plain".into())
                    .with_delivery_mode(1)
                    .with_app_id("key_evt_amqp".into())
                    .with_message_id(format!("bench-{round}-{}", b * 1000 + i).into())
                    .with_timestamp(1);
                channel.basic_publish(EXCHANGE.into(), routing_key.into(), options, body, props)
            });
            let sent = join_all(sends.collect()).await;
            for confirm in sent {
                let c = confirm.map_err(|e| format!("publish: {e}"))?;
                match c.await.map_err(|e| format!("confirm: {e}"))? {
                    lapin::Confirmation::Nack(_) => return Err("raw publish: nack".into()),
                    _ => confirmed += 1,
                }
            }
        }
        Ok(confirmed)
    })
}

fn m2(s: &Sizes, rep: &mut Report) -> Res<()> {
    let n = s.deliver_n;
    let rk_mod = unique("m2mod");
    let rk_raw = unique("m2raw");
    let c_mod = Consumer::start(&rk_mod, false)?;
    let c_raw = Consumer::start(&rk_raw, false)?;
    let redis = Redis::start(Some(&module_args(5672, &rk_mod, "ALL")))?;
    let capacity_set = redis
        .cmd(&[
            "CONFIG",
            "SET",
            "key_evt_amqp.queue_capacity",
            &n.to_string(),
        ])
        .is_ok();
    let (conn, channel) = with_deadline(Duration::from_secs(15), "raw connect", async {
        let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok((conn, channel))
    })?;
    let limit = Duration::from_secs(if s.quick { 30 } else { 240 });
    let (mut mod_rate, mut raw_rate, mut mod_cpu, mut raw_cpu, mut spilled) =
        (vec![], vec![], vec![], vec![], vec![]);
    for round in 0..s.rounds {
        // module: pipelined SETs, timed from the first SET to the last delivery
        let base = c_mod.count();
        let confirmed0 = redis.kea("events_confirmed")?;
        let spilled0 = redis.kea("events_spilled")?;
        let cpu0 = threads_cpu(redis.pid(), PUBLISHER_THREADS);
        let t0 = Instant::now();
        redis.fill_sets(&format!("d{round}:"), n)?;
        let t1 = c_mod.wait_count(base + n, limit)?;
        redis.wait_drained(limit)?;
        let cpu = threads_cpu(redis.pid(), PUBLISHER_THREADS) - cpu0;
        let confirmed = redis.kea("events_confirmed")? - confirmed0;
        mod_rate.push(n as f64 / (t1 - t0).as_secs_f64());
        mod_cpu.push(cpu * 1e6 / confirmed.max(1) as f64);
        spilled.push((redis.kea("events_spilled")? - spilled0) as f64);
        // raw lapin publisher, same bodies, batches of 1000
        let base = c_raw.count();
        let cpu0 = self_cpu();
        let t0 = Instant::now();
        let confirmed = raw_publish(&channel, &rk_raw, round, n)?;
        let t1 = c_raw.wait_count(base + n, limit)?;
        raw_cpu.push((self_cpu() - cpu0) * 1e6 / confirmed.max(1) as f64);
        raw_rate.push(n as f64 / (t1 - t0).as_secs_f64());
        eprintln!(
            "bench: 2: round {}: module {:.0}/s, raw lapin {:.0}/s",
            round + 1,
            mod_rate[round],
            raw_rate[round]
        );
    }
    drop(conn);
    let (mr, rr) = (median(&mod_rate), median(&raw_rate));
    rep.line("");
    rep.line(&format!(
        "## 2. Delivery rate: {n} events to a consumer (median of {} round(s))",
        s.rounds
    ));
    rep.line("");
    rep.line(&format!(
        "Module: filled by pipelined SETs (1000 per round trip) with the module forwarding every key, timed from the first SET to the last message received{}; events spilled to the fallback list meanwhile: {}. Raw: lapin 4.12 publisher with confirms in this process, same bodies (`0\\nset\\nk<i>`), batches of 1000 (all basic_publish issued, then confirms awaited), timed to the last message received.",
        if capacity_set { format!(" (queue_capacity set to {n})") } else { String::new() },
        f(median(&spilled), 0)
    ));
    rep.line("");
    rep.line("| publisher | events/s | ratio to raw lapin | CPU µs per confirmed event |");
    rep.line("|-----------|---------:|-------------------:|---------------------------:|");
    rep.line(&format!(
        "| module (thread kea-publisher) | {} | {} | {} |",
        f(mr, 0),
        f(mr / rr, 3),
        f(median(&mod_cpu), 2)
    ));
    rep.line(&format!(
        "| raw lapin (whole bench process) | {} | 1.000 | {} |",
        f(rr, 0),
        f(median(&raw_cpu), 2)
    ));
    rep.put("2_delivery", "module_events_per_s", mr);
    rep.put("2_delivery", "raw_lapin_events_per_s", rr);
    rep.put("2_delivery", "ratio", mr / rr);
    rep.put("2_delivery", "module_cpu_us_per_event", median(&mod_cpu));
    rep.put("2_delivery", "raw_cpu_us_per_event", median(&raw_cpu));
    rep.rate_bars.push(("delivery: module".into(), mr));
    rep.rate_bars.push(("delivery: raw lapin".into(), rr));
    Ok(())
}

// ------------------------------------------------------------------ 3. black-holed broker

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

fn m3(s: &Sizes, rep: &mut Report) -> Res<()> {
    let secs = s.fault_secs;
    let rk = unique("m3");
    let consumer = Consumer::start(&rk, true)?;
    let proxy = proxy::FaultProxy::start();
    let redis = Redis::start(Some(&module_args(proxy.port(), &rk, "ALL")))?;
    redis.cmd(&["SET", "warmup", "v"])?;
    consumer.wait_count(1, Duration::from_secs(20))?;
    // Commands that run 1 ms or more inside Redis (the module's list writes included).
    redis.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "1000"])?;
    redis.cmd(&["SLOWLOG", "RESET"])?;
    let mut total = 1u64;
    let (mut hp99, mut hmax, mut fp99, mut fmax) = (vec![], vec![], vec![], vec![]);
    let (mut n_healthy, mut n_fault, mut spilled, mut waited) = (0, 0, 0, 0.0f64);
    let limit = Duration::from_secs(if s.quick { 20 } else { 60 });
    for round in 0..s.rounds {
        let mut healthy = paced_sets(&redis, &format!("h{round}:"), secs, 5000)?;
        proxy.set_mode(proxy::Mode::Blackhole);
        let fault = paced_sets(&redis, &format!("f{round}:"), secs, 5000);
        spilled = redis.kea("events_spilled")?;
        proxy.heal();
        let mut fault = fault?;
        total += healthy.len() as u64 + fault.len() as u64;
        n_healthy += healthy.len();
        n_fault += fault.len();
        let t0 = Instant::now();
        while consumer.distinct.load(Ordering::SeqCst) < total && t0.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(20));
        }
        waited = waited.max(t0.elapsed().as_secs_f64());
        hmax.push(healthy.iter().cloned().fold(0.0, f64::max));
        fmax.push(fault.iter().cloned().fold(0.0, f64::max));
        hp99.push(percentile(&mut healthy, 99.0));
        fp99.push(percentile(&mut fault, 99.0));
        eprintln!(
            "bench: 3: round {}: healthy p99 {:.3} max {:.3} ms, black-holed p99 {:.3} max {:.3} ms",
            round + 1,
            hp99[round],
            hmax[round],
            fp99[round],
            fmax[round]
        );
    }
    let got = consumer.distinct.load(Ordering::SeqCst);
    let lost = total.saturating_sub(got);
    let step_max = redis.kea("main_thread_step_max_us")?;
    let slow = match redis.cmd(&["SLOWLOG", "LEN"])? {
        redis::Value::Int(n) => n,
        _ => -1,
    };
    let (hp99, hmax_med, fp99, fmax_med) =
        (median(&hp99), median(&hmax), median(&fp99), median(&fmax));
    let fmax_all = fmax.iter().cloned().fold(0.0, f64::max);
    rep.line("");
    rep.line(&format!(
        "## 3. Broker black-holed for {secs} s under 5,000 SET/s (fault proxy, heartbeat 2 s; median of {} round(s))",
        s.rounds
    ));
    rep.line("");
    rep.line("| window | SETs (all rounds) | p99 ms | max ms (median) | max ms (worst round) |");
    rep.line("|--------|------------------:|-------:|----------------:|---------------------:|");
    rep.line(&format!(
        "| healthy | {n_healthy} | {} | {} | {} |",
        f(hp99, 3),
        f(hmax_med, 3),
        f(hmax.iter().cloned().fold(0.0, f64::max), 3)
    ));
    rep.line(&format!(
        "| black-holed | {n_fault} | {} | {} | {} |",
        f(fp99, 3),
        f(fmax_med, 3),
        f(fmax_all, 3)
    ));
    rep.line(&format!(
        "| ratio | | {} | {} | |",
        f(fp99 / hp99, 2),
        f(fmax_med / hmax_med, 2)
    ));
    rep.line("");
    rep.line(&format!(
        "Events written {total}, distinct keys received after healing {got} (longest wait after a heal {waited:.1} s): **lost {lost}**. Events spilled to the fallback list during the faults: {spilled}."
    ));
    rep.line("");
    rep.line(&format!(
        "Inside Redis over all rounds: the module's longest main-thread step {step_max} µs (CPU time), commands that ran 1 ms or more (SLOWLOG LEN) {slow}. A SET slower than both spent its time outside the module's steps and outside command execution (waiting for a CPU on this host shared with RabbitMQ and the consumer is the usual cause; Redis's own cron is the other)."
    ));
    for (k, v) in [
        ("healthy_p99_ms", hp99),
        ("healthy_max_ms", hmax_med),
        ("fault_p99_ms", fp99),
        ("fault_max_ms", fmax_med),
        ("fault_max_ms_worst", fmax_all),
        ("p99_ratio", fp99 / hp99),
        ("max_ratio", fmax_med / hmax_med),
        ("events", total as f64),
        ("lost", lost as f64),
        ("step_max_us", step_max as f64),
        ("slowlog_len", slow as f64),
    ] {
        rep.put("3_blackhole", k, v);
    }
    Ok(())
}

// ------------------------------------------------------------------ 4. backlog drain

fn prefill(redis: &Redis, n: u64) -> Res<()> {
    let mut c = redis.conn()?;
    let mut i = 0;
    while i < n {
        let mut p = redis::pipe();
        for _ in 0..10 {
            if i >= n {
                break;
            }
            let mut cmd = redis::cmd("RPUSH");
            cmd.arg(FALLBACK_KEY);
            for j in i..(i + 1000).min(n) {
                cmd.arg(format!("0\nset\nk{j:08}"));
            }
            p.add_command(cmd).ignore();
            i += 1000;
        }
        p.query::<()>(&mut c).map_err(|e| format!("RPUSH: {e}"))?;
    }
    Ok(())
}

/// MODULE LOAD of our module into a running Redis, forwarding every key to the local RabbitMQ.
fn load_forwarding_module(redis: &Redis, rk: &str) -> Res<()> {
    let mut load = redis::cmd("MODULE");
    load.arg("LOAD")
        .arg(module_path().to_string_lossy().as_ref());
    for a in module_args(5672, rk, "ALL") {
        load.arg(a);
    }
    load.query::<()>(&mut redis.conn()?)
        .map_err(|e| format!("MODULE LOAD: {e}"))
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

/// One drain: a fresh Redis, `n` plain bodies RPUSHed, MODULE LOAD, until the consumer has them.
/// Returns (events/s, PING latencies in ms, main_thread_step_max_us).
fn drain_once(consumer: &Consumer, rk: &str, n: u64, limit: Duration) -> Res<(f64, Vec<f64>, u64)> {
    let redis = Redis::start(None)?;
    prefill(&redis, n)?;
    let base = consumer.count();
    let stop = Arc::new(AtomicBool::new(false));
    let pinger = {
        let mut c = redis.conn()?;
        let stop = stop.clone();
        std::thread::spawn(move || {
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
        })
    };
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

fn m4(s: &Sizes, rep: &mut Report) -> Res<()> {
    let n = s.drain_n;
    let rk = unique("m4");
    let consumer = Consumer::start(&rk, false)?;
    let limit = Duration::from_secs(if s.quick { 30 } else { 180 });
    let (mut rates, mut p99s, mut maxes, mut steps, mut pings) =
        (vec![], vec![], vec![], vec![], 0);
    for round in 0..s.rounds {
        let (rate, mut lat, step) = drain_once(&consumer, &rk, n, limit)?;
        pings += lat.len();
        maxes.push(lat.iter().cloned().fold(0.0, f64::max));
        p99s.push(percentile(&mut lat, 99.0));
        rates.push(rate);
        steps.push(step as f64);
        eprintln!(
            "bench: 4: round {}: {rate:.0} events/s, PING p99 {:.3} max {:.3} ms, step max {step} us",
            round + 1,
            p99s[round],
            maxes[round]
        );
    }
    let (rate, p99, max) = (median(&rates), median(&p99s), median(&maxes));
    let worst = maxes.iter().cloned().fold(0.0, f64::max);
    let step_worst = steps.iter().cloned().fold(0.0, f64::max);
    rep.line("");
    rep.line(&format!(
        "## 4. Drain of a {n}-event backlog (median of {} round(s); fallback list pre-filled by pipelined RPUSH of plain bodies `0\\nset\\nk<i>` in a Redis without the module, then MODULE LOAD; PING every 2 ms from another connection)",
        s.rounds
    ));
    rep.line("");
    rep.line("| events/s | PINGs (all rounds) | PING p99 ms | PING max ms (median) | PING max ms (worst round) | main_thread_step_max_us (worst) |");
    rep.line(
        "|---------:|------:|------------:|------------:|------------:|------------------------:|",
    );
    rep.line(&format!(
        "| {} | {pings} | {} | {} | {} | {} |",
        f(rate, 0),
        f(p99, 3),
        f(max, 3),
        f(worst, 3),
        f(step_worst, 0)
    ));
    rep.put("4_drain", "events", n as f64);
    rep.put("4_drain", "events_per_s", rate);
    rep.put("4_drain", "ping_p99_ms", p99);
    rep.put("4_drain", "ping_max_ms", max);
    rep.put("4_drain", "ping_max_ms_worst", worst);
    rep.put("4_drain", "main_thread_step_max_us", step_worst);
    rep.rate_bars.push(("backlog drain".into(), rate));
    Ok(())
}

// ------------------------------------------------------------------ 5. memory

fn m5(s: &Sizes, rep: &mut Report) -> Res<()> {
    let dead = free_port(); // nothing listens there: the broker refuses
    let cap = s.capacity;
    // a) heap with exactly `capacity` events in memory
    let redis = Redis::start(Some(&module_args(dead, &unique("m5"), "ALL")))?;
    redis.cmd(&[
        "CONFIG",
        "SET",
        "key_evt_amqp.queue_capacity",
        &cap.to_string(),
    ])?;
    let heap0 = redis.kea("heap_bytes")?;
    let t0 = Instant::now();
    redis.fill_sets("c:", cap)?;
    let fill_s = t0.elapsed().as_secs_f64();
    let info = redis.info("key_evt_amqp")?;
    let get = |k: &str| {
        info.get(&format!("key_evt_amqp_{k}"))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (heap, peak, queued, spilled) = (
        get("heap_bytes"),
        get("heap_peak_bytes"),
        get("queue_length"),
        get("fallback_length"),
    );
    drop(redis);
    // b) Redis bytes per event in the fallback list, minus the key space itself
    let n = s.spill_n;
    let rk = unique("m5b");
    let with = Redis::start(Some(&module_args(dead, &rk, "ALL")))?;
    let without = Redis::start(None)?;
    let used = |r: &Redis| r.info_u64("memory", "used_memory");
    let consumer = Consumer::start(&rk, false)?;
    // One small outage and drain first: what is allocated once (the broker connection, Redis's
    // pool of temporary clients for a module's calls) is then in the baseline, and "retained"
    // is what grows with the number of events.
    let (w_start, p_start) = (used(&with)?, used(&without)?);
    let warm_n = (n / 100).max(1000);
    let limit = Duration::from_secs(if s.quick { 30 } else { 120 });
    with.fill_sets("w:", warm_n)?;
    without.fill_sets("w:", warm_n)?;
    with.wait_spilled(warm_n, limit)?;
    with.cmd(&["key_evt_amqp.connect", "127.0.0.1", "5672"])?;
    consumer.wait_count(warm_n, Duration::from_secs(60))?;
    with.wait_drained(Duration::from_secs(30))?;
    with.cmd(&["key_evt_amqp.disconnect"])?;
    std::thread::sleep(Duration::from_secs(1));
    let (w0, p0) = (used(&with)?, used(&without)?);
    let one_time = (w0 as f64 - w_start as f64) - (p0 as f64 - p_start as f64);
    let heap_before = with.kea("heap_bytes")?;
    with.fill_sets("m:", n)?;
    without.fill_sets("m:", n)?;
    with.wait_spilled(n, limit)?;
    let (w1, p1) = (used(&with)?, used(&without)?);
    let list_bytes = match with.cmd(&["MEMORY", "USAGE", FALLBACK_KEY, "SAMPLES", "0"])? {
        redis::Value::Int(v) => v as f64,
        _ => f64::NAN,
    };
    let heap_spilled = with.kea("heap_bytes")?;
    let keyspace = p1 as f64 - p0 as f64;
    let per_event_no_heap =
        (w1 as f64 - w0 as f64 - keyspace - (heap_spilled as f64 - heap_before as f64)) / n as f64;
    let per_event = (w1 as f64 - w0 as f64 - keyspace) / n as f64;
    // drain to the consumer, then compare
    with.cmd(&["key_evt_amqp.connect", "127.0.0.1", "5672"])?;
    consumer.wait_count(
        warm_n + n,
        Duration::from_secs(if s.quick { 30 } else { 120 }),
    )?;
    with.wait_drained(Duration::from_secs(30))?;
    // Compared in the state of the baseline (disconnected, idle), after the module's next idle
    // step has given back its buffers (Redis runs one every 100 ms).
    with.cmd(&["key_evt_amqp.disconnect"])?;
    std::thread::sleep(Duration::from_secs(1));
    let (w2, p2) = (used(&with)?, used(&without)?);
    let heap_drained = with.kea("heap_bytes")?;
    // The key space measured again: Redis may have been resizing its dict at p1.
    let retained = ((w2 as f64 - w0 as f64) - (p2 as f64 - p0 as f64)) / n as f64;
    // A second outage of the same size: whatever the first left must not grow again.
    with.fill_sets("r:", n)?;
    without.fill_sets("r:", n)?;
    with.wait_spilled(n, limit)?;
    with.cmd(&["key_evt_amqp.connect", "127.0.0.1", "5672"])?;
    consumer.wait_count(
        warm_n + 2 * n,
        Duration::from_secs(if s.quick { 30 } else { 120 }),
    )?;
    with.wait_drained(Duration::from_secs(30))?;
    with.cmd(&["key_evt_amqp.disconnect"])?;
    std::thread::sleep(Duration::from_secs(1));
    let (w3, p3) = (used(&with)?, used(&without)?);
    let retained_again = ((w3 as f64 - w2 as f64) - (p3 as f64 - p2 as f64)) / n as f64;
    rep.line("");
    rep.line("## 5. Memory");
    rep.line("");
    rep.line(&format!(
        "Module heap with the broker refused, queue_capacity {cap}, {cap} SETs written in {fill_s:.2} s:"
    ));
    rep.line("");
    rep.line("| events in memory | in fallback list | heap_bytes | heap_peak_bytes | heap bytes per event in memory |");
    rep.line("|-----------------:|-----------------:|-----------:|----------------:|-------------------------------:|");
    let heap_per = (heap as f64 - heap0 as f64) / queued.max(1) as f64;
    rep.line(&format!(
        "| {queued} | {spilled} | {heap} | {peak} | {} |",
        f(heap_per, 1)
    ));
    rep.line("");
    rep.line(&format!("Redis memory for {n} events waiting in the fallback list (keys `m:%08d`, value `v`; key space measured on a Redis without the module). Before it, one outage of {warm_n} events spilled to the list and drained: what the first outage leaves allocated once (the broker connection, Redis's pool of temporary clients for the module's list commands) is {} bytes, part of the baseline below.", one_time as i64));
    rep.line("");
    rep.line("| | bytes | per waiting event |");
    rep.line("|---|---:|---:|");
    rep.line(&format!(
        "| used_memory delta, Redis with the module | {} | |",
        w1 as i64 - w0 as i64
    ));
    rep.line(&format!(
        "| used_memory delta, same SETs without the module (key space) | {} | |",
        keyspace as i64
    ));
    rep.line(&format!(
        "| **beyond the key space** (list + module heap) | {} | **{}** |",
        (w1 as f64 - w0 as f64 - keyspace) as i64,
        f(per_event, 1)
    ));
    rep.line(&format!(
        "| beyond the key space, without the module heap's growth ({} → {} bytes) | {} | {} |",
        heap_before,
        heap_spilled,
        (per_event_no_heap * n as f64) as i64,
        f(per_event_no_heap, 1)
    ));
    rep.line(&format!(
        "| MEMORY USAGE of the fallback list | {} | {} |",
        list_bytes as i64,
        f(list_bytes / n as f64, 1)
    ));
    rep.line(&format!(
        "| retained after the drain (used_memory after − before − key space, both disconnected and idle) | {} | {} |",
        (retained * n as f64) as i64,
        f(retained, 3)
    ));
    rep.line(&format!(
        "| of which module heap_bytes growth ({} → {} bytes after the drain) | {} | {} |",
        heap_before,
        heap_drained,
        heap_drained as i64 - heap_before as i64,
        f((heap_drained as f64 - heap_before as f64) / n as f64, 3)
    ));
    rep.line(&format!(
        "| retained after a second outage of {n} events, drained (same measure) | {} | {} |",
        (retained_again * n as f64) as i64,
        f(retained_again, 3)
    ));
    rep.line("");
    rep.line("The module's heap is allocated through Redis's allocator, so it is part of used_memory. What is retained beyond it is Redis's own, most likely the pool in which Redis keeps the temporary clients of a module's calls (the steps seen are one such client, about 24.6 KB), sized by the deepest nesting seen so far (a list command inside the event-loop hook, its keyspace event inside that): the first outages may add one; it does not grow with the number of events.");
    rep.put("5_memory", "capacity", cap as f64);
    rep.put("5_memory", "events_in_memory", queued as f64);
    rep.put("5_memory", "heap_bytes", heap as f64);
    rep.put("5_memory", "heap_peak_bytes", peak as f64);
    rep.put("5_memory", "heap_bytes_per_event", heap_per);
    rep.put("5_memory", "fallback_bytes_per_event", per_event);
    rep.put("5_memory", "retained_bytes_per_event", retained);
    rep.put(
        "5_memory",
        "retained_bytes_per_event_second_outage",
        retained_again,
    );
    rep.put("5_memory", "one_time_bytes", one_time);
    rep.put(
        "5_memory",
        "list_memory_usage_per_event",
        list_bytes / n as f64,
    );
    rep.put("5_memory", "heap_bytes_spilled", heap_spilled as f64);
    rep.put("5_memory", "heap_bytes_after_drain", heap_drained as f64);
    rep.put("5_memory", "heap_bytes_before", heap_before as f64);
    rep.put(
        "5_memory",
        "fallback_bytes_per_event_without_heap",
        per_event_no_heap,
    );
    Ok(())
}

/// The issue's targets next to the figures (for the issue note; never a failure).
fn targets(rep: &mut Report) {
    let get = |sec: &str, k: &str| {
        rep.json
            .get(sec)
            .and_then(|v| v.iter().find(|(n, _)| n == k))
            .map_or(f64::NAN, |(_, v)| *v)
    };
    let b = "1_redis_benchmark";
    let u = "1_usec_per_call";
    // (what, measured, target, higher is better, the count-only C module's figure, the
    // control's: no module while RabbitMQ and the consumer are as busy as with ALL, and the
    // bound: the count-only C module while they are as busy)
    let rows = [
        (
            "SET usec_per_call ratio, ALL, -P 1",
            get(u, "P1_all_ratio"),
            1.15,
            false,
            get(u, "P1_count_ratio"),
            f64::NAN,
            f64::NAN,
        ),
        (
            "SET usec_per_call ratio, mask matching nothing, -P 1",
            get(u, "P1_nomatch_ratio"),
            1.03,
            false,
            get(u, "P1_count_ratio"),
            f64::NAN,
            f64::NAN,
        ),
        (
            "SET ops/s ratio, ALL, -P 1",
            get(b, "P1_SET_all_ops_ratio"),
            0.80,
            true,
            get(b, "P1_SET_count_ops_ratio"),
            get(b, "P1_SET_busy_ops_ratio"),
            get(b, "P1_SET_countbusy_ops_ratio"),
        ),
        (
            "SET ops/s ratio, ALL, -P 16",
            get(b, "P16_SET_all_ops_ratio"),
            0.50,
            true,
            get(b, "P16_SET_count_ops_ratio"),
            get(b, "P16_SET_busy_ops_ratio"),
            get(b, "P16_SET_countbusy_ops_ratio"),
        ),
        (
            "SET p99 ratio, ALL, -P 1",
            get(b, "P1_SET_all_p99_ratio"),
            2.0,
            false,
            get(b, "P1_SET_count_p99_ratio"),
            get(b, "P1_SET_busy_p99_ratio"),
            get(b, "P1_SET_countbusy_p99_ratio"),
        ),
        (
            "SET p99 ratio, ALL, -P 16",
            get(b, "P16_SET_all_p99_ratio"),
            2.0,
            false,
            get(b, "P16_SET_count_p99_ratio"),
            get(b, "P16_SET_busy_p99_ratio"),
            get(b, "P16_SET_countbusy_p99_ratio"),
        ),
        (
            "SET ops/s ratio, mask matching nothing, -P 1",
            get(b, "P1_SET_nomatch_ops_ratio"),
            0.98,
            true,
            get(b, "P1_SET_count_ops_ratio"),
            f64::NAN,
            f64::NAN,
        ),
        (
            "SET ops/s ratio, mask matching nothing, -P 16",
            get(b, "P16_SET_nomatch_ops_ratio"),
            0.98,
            true,
            get(b, "P16_SET_count_ops_ratio"),
            f64::NAN,
            f64::NAN,
        ),
        (
            "publisher CPU µs per confirmed event",
            get("2_delivery", "module_cpu_us_per_event"),
            8.0,
            false,
            f64::NAN,
            f64::NAN,
            f64::NAN,
        ),
        (
            "delivery events/s ratio to raw lapin",
            get("2_delivery", "ratio"),
            1.0,
            true,
            f64::NAN,
            f64::NAN,
            f64::NAN,
        ),
        (
            "black-holed broker: Redis max latency ms (worst round)",
            get("3_blackhole", "fault_max_ms_worst"),
            10.0,
            false,
            f64::NAN,
            f64::NAN,
            f64::NAN,
        ),
        (
            "black-holed broker: events lost",
            get("3_blackhole", "lost"),
            0.0,
            false,
            f64::NAN,
            f64::NAN,
            f64::NAN,
        ),
        (
            "backlog drain events/s",
            get("4_drain", "events_per_s"),
            30_000.0,
            true,
            f64::NAN,
            f64::NAN,
            f64::NAN,
        ),
        (
            "backlog drain: PING max ms (worst round)",
            get("4_drain", "ping_max_ms_worst"),
            5.0,
            false,
            f64::NAN,
            f64::NAN,
            f64::NAN,
        ),
        (
            "fallback bytes per waiting event beyond the key space",
            get("5_memory", "fallback_bytes_per_event"),
            60.0,
            false,
            f64::NAN,
            f64::NAN,
            f64::NAN,
        ),
        (
            "retained bytes per event after the drain",
            get("5_memory", "retained_bytes_per_event"),
            0.0,
            false,
            f64::NAN,
            f64::NAN,
            f64::NAN,
        ),
        (
            "retained bytes per event after a second outage's drain",
            get("5_memory", "retained_bytes_per_event_second_outage"),
            0.0,
            false,
            f64::NAN,
            f64::NAN,
            f64::NAN,
        ),
    ];
    rep.line("");
    rep.line("## Targets of issue 5");
    rep.line("");
    rep.line("| figure | measured | target | met | count-only C module (floor) | no module, RabbitMQ busy (control) | count-only C module, RabbitMQ busy (bound) |");
    rep.line("|--------|---------:|-------:|:---:|----------------------------:|-----------------------------------:|-------------------------------------------:|");
    for (what, v, t, higher, floor, control, bound) in rows {
        let met = if !v.is_finite() {
            "n/a"
        } else if (higher && v >= t) || (!higher && v <= t) {
            "yes"
        } else {
            "**no**"
        };
        let cmp = if higher { "≥" } else { "≤" };
        let or_blank = |x: f64| {
            if x.is_finite() {
                f(x, 3)
            } else {
                String::new()
            }
        };
        rep.line(&format!(
            "| {what} | {} | {cmp} {t} | {met} | {} | {} | {} |",
            f(v, 3),
            or_blank(floor),
            or_blank(control),
            or_blank(bound)
        ));
        rep.put("targets_met", what, if met == "yes" { 1.0 } else { 0.0 });
    }
    rep.line("");
    rep.line("The last three columns are the same figure measured side by side for docs/profiles/count_only.c, a C module whose keyspace callback only counts (what any module subscribed to keyspace events costs on this Redis, whatever its callback does: Redis creates a temporary client and context per event and subscriber), for Redis without any module while another Redis drains a backlog through the same RabbitMQ to the same consumer (what the broker's and the consumer's work on the same cores costs Redis), and for both at once: the count-only module while RabbitMQ is as busy, the best any module that forwards events can do on this machine (it pays Redis's per-event cost and shares the cores with the broker, yet does no work of its own).");
    rep.line("");
    rep.line("Retained memory is measured through used_memory (section 5): the first outage's figure includes what Redis keeps once for a module's calls; the second outage's shows whether anything grows with the events.");
}

// ------------------------------------------------------------------ output files

fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    let mut c = Command::new(cmd);
    c.args(args).stdin(Stdio::null()).stderr(Stdio::null());
    let mut child = die_with_parent(&mut c)
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().ok()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut s = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut s).ok()?;
    let s = s.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn machine() -> Vec<(String, String)> {
    let rabbit = command_output("rabbitmqctl", &["version"])
        .or_else(|| command_output("/usr/sbin/rabbitmqctl", &["version"]))
        .or_else(|| {
            command_output("dpkg-query", &["-W", "-f=${Version}", "rabbitmq-server"])
                .map(|v| format!("{v} (package)"))
        })
        .unwrap_or_else(|| "unknown".into());
    vec![
        (
            "nproc".into(),
            std::thread::available_parallelism()
                .map(|n| n.to_string())
                .unwrap_or_default(),
        ),
        (
            "redis".into(),
            command_output("redis-server", &["--version"]).unwrap_or_default(),
        ),
        ("rabbitmq".into(), rabbit),
        (
            "cpu".into(),
            std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("model name"))
                        .and_then(|l| l.split_once(':'))
                        .map(|(_, v)| v.trim().to_string())
                })
                .unwrap_or_default(),
        ),
    ]
}

/// Figures rounded to 3 decimals, as readers of results.json have had them: an integral value
/// is written without a fraction (`0`, `1000000`), one that is not finite as `null`.
struct Num(f64);

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let v = (self.0 * 1000.0).round() / 1000.0;
        if !v.is_finite() {
            ser.serialize_none()
        } else if v.fract() == 0.0 && v.abs() < 9e15 {
            ser.serialize_i64(v as i64)
        } else {
            ser.serialize_f64(v)
        }
    }
}

/// (name, value) pairs written as a JSON object in their order (serde_json's own map sorts).
struct Ordered<'a, V>(&'a [(String, V)]);

impl<V: Serialize> Serialize for Ordered<'_, V> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// Serialized as a section of results.json: its figures in the order they were measured.
struct Figures<'a>(&'a [(String, f64)]);

impl Serialize for Figures<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_map(self.0.iter().map(|(k, v)| (k, Num(*v))))
    }
}

/// results.json: the command, the machine, the errors, then one object per section.
#[derive(Serialize)]
struct Json<'a> {
    command: &'a str,
    machine: Ordered<'a, String>,
    errors: &'a [String],
    #[serde(flatten)]
    sections: BTreeMap<&'a str, Figures<'a>>,
}

fn write_json(rep: &Report, mach: &[(String, String)], command: &str) -> Res<String> {
    let json = Json {
        command,
        machine: Ordered(mach),
        errors: &rep.notes,
        sections: rep
            .json
            .iter()
            .map(|(sec, vals)| (sec.as_str(), Figures(vals)))
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&json).map_err(|e| format!("results.json: {e}"))?;
    text.push('\n');
    Ok(text)
}

fn svg_panel(
    out: &mut String,
    y0: f64,
    title: &str,
    bars: &[(String, f64)],
    unit: &str,
    reference: Option<f64>,
) -> f64 {
    let (left, width, bar_h, gap) = (230.0, 520.0, 18.0, 6.0);
    let max = bars
        .iter()
        .map(|b| b.1)
        .filter(|v| v.is_finite())
        .fold(reference.unwrap_or(0.0), f64::max)
        .max(1e-9)
        * 1.1;
    let _ = writeln!(
        out,
        r#"<text x="10" y="{:.0}" font-weight="bold">{title}</text>"#,
        y0 + 14.0
    );
    let mut y = y0 + 26.0;
    for (label, v) in bars {
        let w = if v.is_finite() { v / max * width } else { 0.0 };
        let _ = writeln!(
            out,
            r##"<text x="{:.0}" y="{:.0}" text-anchor="end">{label}</text><rect x="{left}" y="{y:.0}" width="{w:.1}" height="{bar_h}" fill="#4e79a7"/><text x="{:.1}" y="{:.0}">{}{unit}</text>"##,
            left - 6.0,
            y + 13.0,
            left + w + 4.0,
            y + 13.0,
            if *v >= 100.0 { f(*v, 0) } else { f(*v, 3) }
        );
        y += bar_h + gap;
    }
    if let Some(r) = reference {
        let x = left + r / max * width;
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{:.0}" x2="{x:.1}" y2="{y:.0}" stroke="#e15759" stroke-dasharray="4 3"/>"##,
            y0 + 22.0
        );
    }
    y + 16.0
}

fn write_svg(rep: &Report) -> String {
    let mut body = String::new();
    let mut y = 10.0;
    y = svg_panel(
        &mut body,
        y,
        "1. Ratio to Redis without the module (dashed: 1.0)",
        &rep.ratio_bars,
        "",
        Some(1.0),
    );
    y = svg_panel(
        &mut body,
        y,
        "2 and 4. Events per second",
        &rep.rate_bars,
        "/s",
        None,
    );
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"860\" height=\"{:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n",
        y
    )
}

// ------------------------------------------------------------------ main

/// Runs the measurements whose numbers are in `only` (all when empty).
fn run(quick: bool, only: &[usize], out: &Path) -> Res<bool> {
    if !module_path().exists() {
        return Err(format!(
            "{} is missing: run cargo build --release first",
            module_path().display()
        ));
    }
    let s = Sizes::new(quick);
    let command = if quick {
        "scripts/bench.sh --quick"
    } else {
        "scripts/bench.sh"
    };
    let mach = machine();
    let mut rep = Report::default();
    rep.line(&format!(
        "# key_evt_amqp benchmarks{}",
        if quick {
            " (--quick: small sizes, 1 round)"
        } else {
            ""
        }
    ));
    rep.line("");
    rep.line(&format!("Command: `{command}`"));
    rep.line("");
    rep.line("| machine | |");
    rep.line("|---|---|");
    for (k, v) in &mach {
        rep.line(&format!("| {k} | {v} |"));
    }
    let started = Instant::now();
    type Step = fn(&Sizes, &mut Report) -> Res<()>;
    let steps: [(&str, Step); 5] = [
        ("1 redis-benchmark", m1),
        ("2 delivery", m2),
        ("3 black-holed broker", m3),
        ("4 backlog drain", m4),
        ("5 memory", m5),
    ];
    for (i, (name, step)) in steps.into_iter().enumerate() {
        if !only.is_empty() && !only.contains(&(i + 1)) {
            continue;
        }
        let t = Instant::now();
        eprintln!("bench: measurement {name} ...");
        if let Err(e) = step(&s, &mut rep) {
            eprintln!("bench: ERROR in measurement {name}: {e}");
            rep.notes.push(format!("{name}: {e}"));
            rep.line("");
            rep.line(&format!("## {name}: ERROR: {e}"));
        }
        eprintln!(
            "bench: measurement {name} took {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    targets(&mut rep);
    rep.line("");
    rep.line(&format!(
        "Total time {:.0} s. Chart: chart.svg. Machine figures are noisy when other work shares the cores.",
        started.elapsed().as_secs_f64()
    ));
    std::fs::create_dir_all(out).map_err(|e| format!("mkdir {}: {e}", out.display()))?;
    let write = |name: &str, text: &str| {
        std::fs::write(out.join(name), text).map_err(|e| format!("write {name}: {e}"))
    };
    write("results.md", &rep.md)?;
    write("results.json", &write_json(&rep, &mach, command)?)?;
    write("chart.svg", &write_svg(&rep))?;
    eprintln!(
        "bench: wrote {}/results.md, results.json, chart.svg",
        out.display()
    );
    Ok(rep.notes.is_empty())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("consume") {
        let Some(rk) = args.get(1) else {
            eprintln!("usage: bench consume ROUTING_KEY [--distinct]");
            return ExitCode::from(2);
        };
        let distinct = args.iter().any(|a| a == "--distinct");
        if let Err(e) = consume_main(rk, distinct) {
            eprintln!("bench consume: {e}");
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let only: Vec<usize> = match value("--only").map(|v| {
        v.split(',')
            .map(|n| n.parse().ok().filter(|n| (1..=5).contains(n)))
            .collect::<Option<Vec<usize>>>()
    }) {
        None => Vec::new(),
        Some(Some(list)) => list,
        Some(None) => {
            eprintln!("bench: --only takes measurement numbers from 1 to 5, comma-separated");
            return ExitCode::from(2);
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
        eprintln!("usage: bench [--quick] [--only N,N] [--out DIR]   (unknown argument {bad})");
        return ExitCode::from(2);
    }
    match run(quick, &only, &out) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench: some measurements failed (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}
