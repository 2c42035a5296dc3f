//! A throw-away `redis-server` process, optionally with the module loaded.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{bind_local, unique_name, wait_until};

/// How long a server may take to answer PING after being spawned.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Read/write timeout of the connections handed out by [`RedisServer::client`], so that a
/// command that never gets an answer fails the test instead of hanging it.
const CLIENT_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at finding a port no other test grabbed in the meantime.
const PORT_ATTEMPTS: usize = 8;
const SETUP_HINT: &str = "run scripts/setup.sh to install the test services";

/// A `redis-server` child process with its own port and temporary directory.
///
/// Dropping it kills the process (also when the test panics; the log tail is then printed to
/// stderr) and removes the directory.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// Every argument after `--port <port>`; kept for [`RedisServer::restart`].
    args: Vec<String>,
    /// The second port of [`RedisServer::start_with_extra_port`].
    extra_port: Option<u16>,
    /// The `redis-server` binary, kept for [`RedisServer::restart`].
    binary: PathBuf,
}

/// What [`RedisServer::start_expect_load_failure`] observed.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    /// The error reply to `MODULE LOAD`.
    pub error: String,
    /// The whole server log after the failed load.
    pub log: String,
}

impl RedisServer {
    /// Starts `redis-server` with the module loaded with `module_args`.
    pub fn start(module_args: &[impl AsRef<str>]) -> RedisServer {
        Self::start_with(&[], Some(module_args))
    }

    /// Starts `redis-server` without the module, with extra config directives as in
    /// [`RedisServer::start_with`].
    pub fn start_without_module(config: &[(&str, &str)]) -> RedisServer {
        Self::start_with(config, None::<&[&str]>)
    }

    /// Starts `redis-server` with extra config directives (`("appendonly", "yes")`; a value
    /// holding several words is split on whitespace, `""` gives an empty argument) and,
    /// when `module_args` is `Some`, the module loaded with those arguments.
    pub fn start_with(
        config: &[(&str, &str)],
        module_args: Option<&[impl AsRef<str>]>,
    ) -> RedisServer {
        Self::start_inner(&redis_server_binary(), config, None, module_args)
    }

    /// Like [`RedisServer::start_with`], running `binary` instead of [`redis_server_binary`]
    /// (also at every [`RedisServer::restart`]): for a test that needs a server of a given
    /// kind whatever `$REDIS_SERVER` says (see [`ServerKind::of_binary`]).
    pub fn start_with_binary(
        binary: &Path,
        config: &[(&str, &str)],
        module_args: Option<&[impl AsRef<str>]>,
    ) -> RedisServer {
        assert!(
            binary.is_file(),
            "redis-server not found at {}; {SETUP_HINT}",
            binary.display()
        );
        Self::start_inner(binary, config, None, module_args)
    }

    /// Like [`RedisServer::start_with`], for a server that listens on a second port set by
    /// the config directive `port_directive` (`"cluster-port"`): that port is chosen like the
    /// main one, and both are chosen again when either turns out to be taken. See
    /// [`RedisServer::extra_port`].
    pub fn start_with_extra_port(
        config: &[(&str, &str)],
        port_directive: &str,
        module_args: Option<&[impl AsRef<str>]>,
    ) -> RedisServer {
        Self::start_inner(
            &redis_server_binary(),
            config,
            Some(port_directive),
            module_args,
        )
    }

    fn start_inner(
        binary: &Path,
        config: &[(&str, &str)],
        extra_port_directive: Option<&str>,
        module_args: Option<&[impl AsRef<str>]>,
    ) -> RedisServer {
        let dir = std::env::temp_dir().join(unique_name("key_evt_amqp-redis-"));

        let mut args: Vec<String> = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--logfile".into(),
            dir.join("redis.log").display().to_string(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            // Redis 7 refuses MODULE LOAD/UNLOAD unless this is set.
            "--enable-module-command".into(),
            "yes".into(),
        ];
        // Later directives override earlier ones, so `config` can replace the defaults above.
        for (name, value) in config {
            args.push(format!("--{name}"));
            if value.is_empty() {
                args.push(String::new());
            } else {
                args.extend(value.split_whitespace().map(String::from));
            }
        }
        // The value is filled in at each attempt below.
        let extra_index = extra_port_directive.map(|directive| {
            args.push(format!("--{directive}"));
            args.push(String::new());
            args.len() - 1
        });
        if let Some(module_args) = module_args {
            args.push("--loadmodule".into());
            args.push(module_path().display().to_string());
            args.extend(module_args.iter().map(|a| a.as_ref().to_string()));
        }

        // Created only now that nothing above can panic; from here on `Drop` removes it.
        fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", dir.display()));
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            args,
            extra_port: None,
            binary: binary.to_path_buf(),
        };
        // A port that was free when we probed it may be taken by a parallel test before
        // redis binds it: detect that from the log and try another one.
        for attempt in 1..=PORT_ATTEMPTS {
            match extra_index {
                None => server.port = free_port(),
                Some(index) => {
                    // Both listeners are held at once, so the two ports differ.
                    let (main, extra) = (bind_local(), bind_local());
                    let port_of = |l: &std::net::TcpListener| {
                        l.local_addr()
                            .expect("local address of a bound listener")
                            .port()
                    };
                    server.port = port_of(&main);
                    let extra_port = port_of(&extra);
                    server.args[index] = extra_port.to_string();
                    server.extra_port = Some(extra_port);
                }
            }
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(log) if log.contains("Address already in use") && attempt < PORT_ATTEMPTS => {
                    continue
                }
                Err(log) => {
                    // The log goes into the panic message: remove the directory now so that
                    // `Drop` does not print it a second time.
                    let _ = fs::remove_dir_all(&server.dir);
                    panic!(
                        "redis-server (port {}, args {:?}) did not come up within \
                         {START_TIMEOUT:?}; log tail:\n{}",
                        server.port,
                        server.args,
                        tail_lines(&log, 40)
                    )
                }
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    /// Starts a server without the module, runs `MODULE LOAD <path> <module_args>` on it and
    /// returns the error and the log. Panics if the load succeeds or if the server stops
    /// answering PING afterwards (a bad argument must not take Redis down).
    pub fn start_expect_load_failure(module_args: &[impl AsRef<str>]) -> LoadFailure {
        let server = Self::start_without_module(&[]);
        let error = match server.load_module(module_args) {
            Ok(()) => panic!(
                "MODULE LOAD with {:?} succeeded but was expected to fail; log:\n{}",
                module_args.iter().map(AsRef::as_ref).collect::<Vec<&str>>(),
                tail_lines(&server.log(), 40)
            ),
            Err(error) => error,
        };
        server.assert_alive();
        LoadFailure {
            error,
            log: server.log(),
        }
    }

    /// Runs `MODULE LOAD <module path> <module_args>`; `Err` holds the error reply.
    pub fn load_module(&self, module_args: &[impl AsRef<str>]) -> Result<(), String> {
        let mut cmd = ::redis::cmd("MODULE");
        cmd.arg("LOAD")
            .arg(module_path().as_os_str().as_encoded_bytes());
        for arg in module_args {
            cmd.arg(arg.as_ref());
        }
        cmd.query::<()>(&mut self.client())
            .map_err(|e| server_error_text(&e))
    }

    /// Panics unless the server answers PING.
    pub fn assert_alive(&self) {
        let pong: String = ::redis::cmd("PING")
            .query(&mut self.client())
            .unwrap_or_else(|e| {
                panic!(
                    "redis-server on port {} does not answer PING: {e}; log tail:\n{}",
                    self.port,
                    tail_lines(&self.log(), 40)
                )
            });
        assert_eq!(pong, "PONG", "unexpected PING reply");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The second port of a server started with [`RedisServer::start_with_extra_port`]
    /// (the cluster bus port), `None` for the others.
    pub fn extra_port(&self) -> Option<u16> {
        self.extra_port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `redis-server` binary this server runs (see [`RedisServer::start_with_binary`]).
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The module file (see the free function [`module_path`]).
    pub fn module_path(&self) -> PathBuf {
        module_path()
    }

    /// A new synchronous connection with read/write timeouts of 10 s.
    pub fn client(&self) -> ::redis::Connection {
        try_connect(self.port).unwrap_or_else(|e| {
            panic!(
                "cannot connect to redis-server on port {}: {e}; log tail:\n{}",
                self.port,
                tail_lines(&self.log(), 40)
            )
        })
    }

    /// Like [`RedisServer::client`], but an error instead of a panic when the server does
    /// not accept the connection (it was killed, or is starting).
    pub fn try_client(&self) -> ::redis::RedisResult<::redis::Connection> {
        try_connect(self.port)
    }

    /// The server log (`<dir>/redis.log`) followed by anything the process wrote to stderr
    /// (fatal config errors are printed there before the log file is opened).
    pub fn log(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let mut log = read("redis.log");
        let stderr = read("stderr.log");
        if !stderr.is_empty() {
            log.push_str("\n--- stderr ---\n");
            log.push_str(&stderr);
        }
        log
    }

    /// The server process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL (no shutdown, no final save) and keeps its directory
    /// for [`RedisServer::restart`].
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL; fails only if the process was already reaped, which `take` rules out.
            let _ = child.kill();
            child.wait().expect("waiting for the killed redis-server");
        }
    }

    /// Starts the server again in the same directory with the same arguments and port.
    /// Kills it first if it is still running.
    pub fn restart(&mut self) {
        self.kill9();
        if let Err(log) = self.spawn_and_wait() {
            panic!(
                "redis-server did not come back on port {} within {START_TIMEOUT:?}; log tail:\n{}",
                self.port,
                tail_lines(&log, 40)
            );
        }
    }

    /// Spawns the process and waits until it answers PING. On failure the process is killed
    /// and the log is returned.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("stderr.log"))
            .expect("cannot create the redis-server stderr file");
        let binary = &self.binary;
        let child = Command::new(binary)
            .arg("--port")
            .arg(self.port.to_string())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {SETUP_HINT}", binary.display()));
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        let mut exited = false;
        let up = wait_until(START_TIMEOUT, || {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_status)) = child.try_wait() {
                    exited = true;
                    return true;
                }
            }
            try_connect(self.port)
                .and_then(|mut c| ::redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
        if up && !exited {
            return Ok(());
        }
        self.kill9();
        // The process may have died with the reason still being written: give the log a
        // moment only when we did not already hit the deadline.
        if Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(self.log())
    }
}

/// Inspection and replication helpers.
impl RedisServer {
    /// `CONFIG GET pattern` as a map (a new connection).
    pub fn config_get(&self, pattern: &str) -> HashMap<String, String> {
        ::redis::cmd("CONFIG")
            .arg("GET")
            .arg(pattern)
            .query(&mut self.client())
            .unwrap_or_else(|e| panic!("CONFIG GET {pattern} on port {}: {e}", self.port))
    }

    /// `CONFIG GET pattern` as `name value` lines, in the order the server sent them.
    pub fn config_text(&self, pattern: &str) -> String {
        let pairs: Vec<String> = ::redis::cmd("CONFIG")
            .arg("GET")
            .arg(pattern)
            .query(&mut self.client())
            .unwrap_or_else(|e| panic!("CONFIG GET {pattern} on port {}: {e}", self.port));
        pairs
            .chunks(2)
            .map(|c| c.join(" "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `CONFIG SET name value` (a new connection); `Err` holds the error reply.
    pub fn config_set(&self, name: &str, value: &str) -> Result<(), String> {
        ::redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query::<()>(&mut self.client())
            .map_err(|e| server_error_text(&e))
    }

    /// The value of `field` in `INFO <section>` (the text after `field:`), if present.
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let info: String = ::redis::cmd("INFO")
            .arg(section)
            .query(&mut self.client())
            .unwrap_or_else(|e| panic!("INFO {section} on port {} failed: {e}", self.port));
        let prefix = format!("{field}:");
        info.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .map(|value| value.trim().to_string())
    }

    /// Which server this is: Valkey by its `valkey_version` (it reports a compatible
    /// `redis_version`), Redis by `redis_version`.
    pub fn server_kind(&self) -> ServerKind {
        let version = |v: String| -> (u32, u32, u32) {
            let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
            let mut next = || parts.next().unwrap_or(0);
            (next(), next(), next())
        };
        match self.info_field("server", "valkey_version") {
            Some(v) => ServerKind {
                valkey: true,
                version: version(v),
            },
            None => ServerKind {
                valkey: false,
                version: version(
                    self.info_field("server", "redis_version")
                        .unwrap_or_else(|| panic!("no redis_version on port {}", self.port)),
                ),
            },
        }
    }

    /// The module's `INFO key_evt_amqp` field `key_evt_amqp_<name>`; panics (showing the
    /// section) if it is missing.
    pub fn module_info(&self, name: &str) -> String {
        let field = format!("key_evt_amqp_{name}");
        self.info_field("key_evt_amqp", &field).unwrap_or_else(|| {
            let info: String = ::redis::cmd("INFO")
                .arg("key_evt_amqp")
                .query(&mut self.client())
                .unwrap_or_default();
            panic!(
                "no {field} in INFO key_evt_amqp on port {}:\n{info}",
                self.port
            )
        })
    }

    /// The whole `INFO key_evt_amqp` section, for failure messages: `(INFO failed: …)` if
    /// the server does not answer.
    pub fn module_info_text(&self) -> String {
        try_connect(self.port)
            .and_then(|mut c| ::redis::cmd("INFO").arg("key_evt_amqp").query(&mut c))
            .unwrap_or_else(|e| format!("(INFO failed: {e})"))
    }

    /// A numeric [`RedisServer::module_info`] field.
    pub fn module_info_u64(&self, name: &str) -> u64 {
        let value = self.module_info(name);
        value
            .parse()
            .unwrap_or_else(|e| panic!("key_evt_amqp_{name} is {value:?}, not a number ({e})"))
    }

    /// The `run_id` of `INFO server` (40 hex digits): changes at every restart.
    pub fn run_id(&self) -> String {
        self.info_field("server", "run_id")
            .unwrap_or_else(|| panic!("no run_id in INFO server on port {}", self.port))
    }

    /// `REPLICAOF 127.0.0.1 <master port>`, then waits until the initial sync is done
    /// (`master_link_status:up`, not loading). Give the master `repl-diskless-sync-delay 0`
    /// or the sync waits 5 s for more replicas.
    pub fn replicate_from(&self, master: &RedisServer, timeout: Duration) {
        ::redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(master.port())
            .query::<()>(&mut self.client())
            .unwrap_or_else(|e| panic!("REPLICAOF on port {} failed: {e}", self.port));
        let synced = wait_until(timeout, || {
            self.info_field("replication", "master_link_status")
                .as_deref()
                == Some("up")
                && self.info_field("persistence", "loading").as_deref() == Some("0")
        });
        assert!(
            synced,
            "replica on port {} not in sync with the master on port {} within {timeout:?}; \
             replica log tail:\n{}\nmaster log tail:\n{}",
            self.port,
            master.port(),
            tail_lines(&self.log(), 30),
            tail_lines(&master.log(), 30)
        );
    }

    /// `REPLICAOF NO ONE`: promotes a replica to master.
    pub fn promote(&self) {
        ::redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query::<()>(&mut self.client())
            .unwrap_or_else(|e| panic!("REPLICAOF NO ONE on port {} failed: {e}", self.port));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
        let log = self.log();
        if std::thread::panicking() && !log.is_empty() {
            eprintln!(
                "--- redis-server (port {}) log tail ---\n{}",
                self.port,
                tail_lines(&log, 60)
            );
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            if e.kind() != ErrorKind::NotFound {
                eprintln!("cannot remove {}: {e}", self.dir.display());
            }
        }
    }
}

/// The module's load arguments (`MODULE LOAD` / `--loadmodule`), in their order. The
/// [`Default`] is string events (`$`) to `amq.direct` on 127.0.0.1:5672 as guest/guest,
/// heartbeat 30, an empty routing key, transient messages, no cap on the fallback list and
/// every key (`ALL`).
#[derive(Debug, Clone)]
pub struct ModuleArgs {
    pub events: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub pass: String,
    pub heartbeat: u32,
    pub exchange: String,
    pub routing_key: String,
    pub delivery_mode: u8,
    pub fallback_size: i64,
    pub masks: Vec<String>,
}

impl Default for ModuleArgs {
    fn default() -> ModuleArgs {
        ModuleArgs {
            events: "$".into(),
            host: "127.0.0.1".into(),
            port: 5672,
            user: "guest".into(),
            pass: "guest".into(),
            heartbeat: 30,
            exchange: "amq.direct".into(),
            routing_key: String::new(),
            delivery_mode: 1,
            fallback_size: 0,
            masks: vec!["ALL".into()],
        }
    }
}

impl ModuleArgs {
    /// The defaults, publishing with `routing_key`.
    pub fn with_routing_key(routing_key: &str) -> ModuleArgs {
        ModuleArgs {
            routing_key: routing_key.into(),
            ..ModuleArgs::default()
        }
    }

    /// `EVENTS HOST PORT USER PASS HEARTBEAT EXCHANGE ROUTING_KEY DELIVERY_MODE FALLBACK_SIZE
    /// KEYMASK…`
    pub fn to_vec(&self) -> Vec<String> {
        let mut args = vec![self.events.clone()];
        args.extend(self.broker_args());
        args
    }

    /// `name` followed by every argument but EVENTS: a `key_evt_amqp.connect` or
    /// `key_evt_amqp.config_set` command.
    pub fn command(&self, name: &str) -> Vec<String> {
        let mut args = vec![name.to_string()];
        args.extend(self.broker_args());
        args
    }

    /// `name` followed by the first `n` arguments after EVENTS (`HOST PORT …`): the ones left
    /// out keep the values in force (`short_command("key_evt_amqp.config_set", 7)` stops after
    /// ROUTING_KEY).
    pub fn short_command(&self, name: &str, n: usize) -> Vec<String> {
        let mut args = self.command(name);
        args.truncate(1 + n);
        args
    }

    fn broker_args(&self) -> Vec<String> {
        let mut args = vec![
            self.host.clone(),
            self.port.to_string(),
            self.user.clone(),
            self.pass.clone(),
            self.heartbeat.to_string(),
            self.exchange.clone(),
            self.routing_key.clone(),
            self.delivery_mode.to_string(),
            self.fallback_size.to_string(),
        ];
        args.extend(self.masks.iter().cloned());
        args
    }
}

/// The module's fallback list.
pub const FALLBACK: &str = "REDIS_MODULE-key_evt_amqp-fallback_storage";

/// `LLEN` of the fallback list.
pub fn fallback_len(redis: &mut ::redis::Connection) -> i64 {
    ::redis::cmd("LLEN")
        .arg(FALLBACK)
        .query(redis)
        .unwrap_or_else(|e| panic!("LLEN {FALLBACK} failed: {e}"))
}

/// Whether the fallback list exists.
pub fn fallback_exists(redis: &mut ::redis::Connection) -> bool {
    ::redis::cmd("EXISTS")
        .arg(FALLBACK)
        .query(redis)
        .unwrap_or_else(|e| panic!("EXISTS {FALLBACK} failed: {e}"))
}

/// Runs a command given as its words (`["HSET", "h", "f", "v"]`); the reply, or the error as
/// Redis sent it (see [`server_error_text`]).
pub fn run<T: ::redis::FromRedisValue>(
    redis: &mut ::redis::Connection,
    args: &[impl AsRef<[u8]>],
) -> Result<T, String> {
    let mut cmd = ::redis::Cmd::new();
    for arg in args {
        cmd.arg(arg.as_ref());
    }
    cmd.query(redis).map_err(|e| server_error_text(&e))
}

/// `SET key v`.
pub fn set(redis: &mut ::redis::Connection, key: &str) {
    ::redis::cmd("SET")
        .arg(key)
        .arg("v")
        .query::<()>(redis)
        .unwrap_or_else(|e| panic!("SET {key} failed: {e}"));
}

/// The module under test: `$KEY_EVT_AMQP_MODULE` if set, else `libkey_evt_amqp.so` next to
/// this test binary's profile directory (`target/<profile>/`, which also works with a custom
/// `CARGO_TARGET_DIR`), else `<workspace root>/target/{debug|release}/` (the root package's
/// target directory: this crate's manifest is one level down, in `testkit/`).
pub fn module_path() -> PathBuf {
    if let Some(path) = std::env::var_os("KEY_EVT_AMQP_MODULE") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "KEY_EVT_AMQP_MODULE={} does not exist",
            path.display()
        );
        return path;
    }
    const FILE: &str = "libkey_evt_amqp.so";
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    // Test binaries live in target/<profile>/deps/, examples in target/<profile>/examples/.
    let next_to_exe = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join(FILE)));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ lies inside the workspace root");
    let in_root = root.join("target").join(profile).join(FILE);
    next_to_exe
        .into_iter()
        .chain([in_root.clone()])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            let flag = if profile == "release" {
                " --release"
            } else {
                ""
            };
            panic!(
                "module not found at {}; build it: cargo build{flag}, or run scripts/test.sh \
                 (or point KEY_EVT_AMQP_MODULE at it)",
                in_root.display()
            )
        })
}

/// `$REDIS_SERVER` if set, else `/usr/bin/redis-server`.
pub fn redis_server_binary() -> PathBuf {
    let path = std::env::var_os("REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/redis-server"));
    assert!(
        path.is_file(),
        "redis-server not found at {}; {SETUP_HINT}",
        path.display()
    );
    path
}

/// `$REDIS_CLI` if set, else `redis-cli` (found on `PATH`): the client matching `$REDIS_SERVER`
/// (scripts/servers.sh prints both).
pub fn redis_cli_binary() -> PathBuf {
    std::env::var_os("REDIS_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-cli"))
}

fn try_connect(port: u16) -> ::redis::RedisResult<::redis::Connection> {
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    conn.set_read_timeout(Some(CLIENT_IO_TIMEOUT))?;
    conn.set_write_timeout(Some(CLIENT_IO_TIMEOUT))?;
    Ok(conn)
}

/// A port that is free right now (see [`bind_local`]); redis binds it after we let go.
fn free_port() -> u16 {
    bind_local()
        .local_addr()
        .expect("local address of a bound listener")
        .port()
}

/// A server error as Redis sent it (`ERR what is wrong`); other errors as displayed.
pub fn server_error_text(error: &::redis::RedisError) -> String {
    match (error.code(), error.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => error.to_string(),
    }
}

/// The last `lines` lines of `text`.
pub fn tail_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A server's product and version, as [`RedisServer::server_kind`] reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerKind {
    pub valkey: bool,
    pub version: (u32, u32, u32),
}

impl ServerKind {
    /// The kind of the server `binary` runs, from `binary --version` (`Redis server v=7.0.15
    /// …`, `Valkey server v=8.0.1 …`), without starting it: a test can choose its configs
    /// before the server starts. Panics if the output has another form.
    pub fn of_binary(binary: &Path) -> ServerKind {
        let out = Command::new(binary)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} --version: {e}; {SETUP_HINT}",
                    binary.display()
                )
            });
        let text = String::from_utf8_lossy(&out.stdout);
        let parse = || -> Option<ServerKind> {
            let mut words = text.split_whitespace();
            let valkey = match words.next()? {
                "Valkey" => true,
                "Redis" => false,
                _ => return None,
            };
            let version = words.find_map(|w| w.strip_prefix("v="))?;
            let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
            let mut next = || parts.next().flatten();
            Some(ServerKind {
                valkey,
                version: (next()?, next()?, next().unwrap_or(0)),
            })
        };
        parse().unwrap_or_else(|| {
            panic!(
                "{} --version printed {:?}, not `Redis|Valkey server v=X.Y.Z …`",
                binary.display(),
                text.trim()
            )
        })
    }

    /// Whether the server has `RedisModule_AddPostNotificationJob` (Redis 7.2+, every
    /// Valkey from 7.2 on): what `key_evt_amqp.durability journal` needs.
    pub fn has_post_notification_jobs(&self) -> bool {
        self.redis_at_least(7, 2) || self.valkey_at_least(7, 2)
    }

    /// Redis at `version` or later (false on Valkey).
    pub fn redis_at_least(&self, major: u32, minor: u32) -> bool {
        !self.valkey && (self.version.0, self.version.1) >= (major, minor)
    }

    /// Valkey at `version` or later (false on Redis).
    pub fn valkey_at_least(&self, major: u32, minor: u32) -> bool {
        self.valkey && (self.version.0, self.version.1) >= (major, minor)
    }
}

impl std::fmt::Display for ServerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (a, b, c) = self.version;
        let name = if self.valkey { "Valkey" } else { "Redis" };
        write!(f, "{name} {a}.{b}.{c}")
    }
}
