//! What every measurement uses: redis-servers ([`Redis`]: the testkit's [`RedisServer`] with the
//! bench's errors, connection and waits on top), the module's arguments, child processes that
//! die with the bench, deadlines, and the machine's description.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use testkit::{ModuleArgs, RedisServer};

pub type Res<T> = Result<T, String>;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const FALLBACK_KEY: &str = "REDIS_MODULE-key_evt_amqp-fallback_storage";
pub const EXCHANGE: &str = "amq.direct";

/// A port nothing listens on (the listener is closed again).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
}

/// The module the testkit loads (the release build next to this binary's profile directory,
/// or `$KEY_EVT_AMQP_MODULE`).
pub fn module_path() -> Res<PathBuf> {
    no_panic("module", testkit::module_path)
}

/// `f()`, with a panic (the testkit's way of failing) turned into an error: a measurement that
/// fails is reported and the next one runs.
pub fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> Res<T> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let text = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("panic");
        format!("{what}: {text}")
    })
}

/// Builds docs/profiles/count_only.c, the floor of any module that subscribes to keyspace
/// events (its callback only counts), against the redismodule.h of the redis-module crate.
pub fn count_only_module() -> Res<PathBuf> {
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
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

/// A routing key (or other name) no other run or measurement uses.
pub fn unique(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "kea-bench-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A redis-server child process on a free port with its own directory (the testkit's); killed
/// when dropped.
pub struct Redis {
    server: RedisServer,
}

/// The module's load arguments: events `A` to amq.direct at 127.0.0.1:`broker_port`, heartbeat 2 s,
/// transient messages, no cap on the fallback list, keys matching `mask`.
pub fn module_args(broker_port: u16, routing_key: &str, mask: &str) -> Vec<String> {
    ModuleArgs {
        events: "A".into(),
        port: broker_port,
        heartbeat: 2,
        exchange: EXCHANGE.into(),
        routing_key: routing_key.into(),
        masks: vec![mask.into()],
        ..ModuleArgs::default()
    }
    .to_vec()
}

impl Redis {
    /// A redis-server with our module loaded with `module`'s arguments, or without any module.
    /// `KEA_BENCH_CONFIG="name=value,name=value"` adds module configs to every server that
    /// loads our module (`key_evt_amqp.format=cloudevents`: the bench of another format).
    pub fn start(module: Option<&[String]>) -> Res<Redis> {
        let extra = std::env::var("KEA_BENCH_CONFIG").unwrap_or_default();
        let pairs: Vec<(&str, &str)> = if module.is_some() {
            extra.split(',').filter_map(|p| p.split_once('=')).collect()
        } else {
            Vec::new()
        };
        Redis::start_with(&pairs, module)
    }

    /// A redis-server that loads the module at `path` (without arguments) instead of ours.
    pub fn start_loading(path: &Path) -> Res<Redis> {
        let path = path.to_str().filter(|p| !p.contains(char::is_whitespace));
        let path = path.ok_or("a module path for --loadmodule must be UTF-8 without spaces")?;
        Redis::start_with(&[("loadmodule", path)], None)
    }

    pub fn start_with(config: &[(&str, &str)], module: Option<&[String]>) -> Res<Redis> {
        let server = no_panic("redis-server", || RedisServer::start_with(config, module))?;
        Ok(Redis { server })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Its process id (0 once the testkit has killed it: no CPU time then).
    pub fn pid(&self) -> u32 {
        self.server.pid().unwrap_or(0)
    }

    /// A connection with the bench's timeouts (5 s to connect, 60 s for a reply: a pipeline of
    /// 1000 SETs may wait behind a module step), not the testkit's.
    fn try_conn(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port()))?
            .get_connection_with_timeout(Duration::from_secs(5))
    }

    pub fn conn(&self) -> Res<redis::Connection> {
        let c = self
            .try_conn()
            .map_err(|e| format!("connect to redis {}: {e}", self.port()))?;
        c.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        Ok(c)
    }

    pub fn info(&self, section: &str) -> Res<BTreeMap<String, String>> {
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

    pub fn info_u64(&self, section: &str, field: &str) -> Res<u64> {
        self.info(section)?
            .get(field)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("INFO {section}: no numeric {field}"))
    }

    pub fn kea(&self, field: &str) -> Res<u64> {
        self.info_u64("key_evt_amqp", &format!("key_evt_amqp_{field}"))
    }

    pub fn cmd(&self, args: &[&str]) -> Res<redis::Value> {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query(&mut self.conn()?)
            .map_err(|e| format!("{}: {e}", args.join(" ")))
    }

    /// Polls the module's queue and fallback-list lengths until `done(queue, fallback)`.
    pub fn wait_lengths(
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
    pub fn wait_drained(&self, limit: Duration) -> Res<Duration> {
        self.wait_lengths("backlog not drained", limit, |q, f| q == 0 && f == 0)
    }

    /// Waits until nothing is in memory and the fallback list holds at least `n` events.
    pub fn wait_spilled(&self, n: u64, limit: Duration) -> Res<()> {
        self.wait_lengths("events did not spill", limit, |q, f| q == 0 && f >= n)
            .map(|_| ())
    }

    /// Pipelined `SET prefix<i> v` for i in 0..n, 1000 per round trip.
    pub fn fill_sets(&self, prefix: &str, n: u64) -> Res<()> {
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

/// Runs `fut` on this thread; an error if it has not finished within `limit`.
pub fn with_deadline<T>(limit: Duration, what: &str, fut: impl Future<Output = Res<T>>) -> Res<T> {
    async_global_executor::block_on(futures_lite::future::or(fut, async {
        async_io::Timer::after(limit).await;
        Err(format!("{what}: no answer within {} s", limit.as_secs()))
    }))
}

/// RPUSHes `n` plain bodies `0\nset\nk<i>` to the fallback list, 1000 per command, 10 commands per
/// round trip.
pub fn prefill(redis: &Redis, n: u64) -> Res<()> {
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
pub fn load_forwarding_module(redis: &Redis, rk: &str) -> Res<()> {
    // `MODULE LOADEX … CONFIG … ARGS …`, so that KEA_BENCH_CONFIG reaches a module loaded
    // after the server started (the drain) as it reaches one loaded at start.
    let mut load = redis::cmd("MODULE");
    load.arg("LOADEX")
        .arg(module_path()?.to_string_lossy().as_ref());
    let extra = std::env::var("KEA_BENCH_CONFIG").unwrap_or_default();
    for (name, value) in extra.split(',').filter_map(|p| p.split_once('=')) {
        load.arg("CONFIG").arg(name).arg(value);
    }
    load.arg("ARGS");
    for a in module_args(5672, rk, "ALL") {
        load.arg(a);
    }
    load.query::<()>(&mut redis.conn()?)
        .map_err(|e| format!("MODULE LOADEX: {e}"))
}

/// The trimmed stdout of a command that finishes within 15 s, if it printed anything.
pub fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
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

/// The machine lines of the report: cores, Redis, RabbitMQ, CPU.
pub fn machine() -> Vec<(String, String)> {
    // The testkit runs $REDIS_SERVER if set.
    let redis_server = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
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
            command_output(&redis_server, &["--version"]).unwrap_or_default(),
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
