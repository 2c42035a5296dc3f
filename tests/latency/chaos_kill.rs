//! Kill soak: under a steady INCR load, Redis is killed with SIGKILL at random moments and
//! restarted (the AOF, `appendfsync always`, brings data and journal back), with random broker
//! faults in between (refused, black-holed, cut, a backlog draining); at the end every write
//! Redis acknowledged has its event delivered (matched by key and value: json events with
//! `payload value`), the first deliveries of each server run in order. The longer version of
//! `tests/it/journal.rs`'s kill tests; see `testkit::Writer`, `Collector`, `Verdict`.
//!
//! The journal needs post-notification jobs (Redis 7.2+, Valkey), which the default server
//! (Redis 7.0) lacks: the soak runs its own server, `$CHAOS_KILL_SERVER` (a `redis-server`
//! path; `scripts/chaos.sh --kill` sets it from `scripts/servers.sh`), else the first of
//! valkey-8.0, redis-8.0, valkey-8.1 found in `target/servers/NAME/bin/` (`$SERVERS_DIR` if set),
//! and fails saying to run `scripts/servers.sh` when there is none.
//!
//! Environment: `CHAOS_SECONDS` (default 20), `CHAOS_SEED` (replays the schedule of kills and
//! faults, and the writer's keys), `CHAOS_DURABILITY=memory` (the same soak without the journal,
//! as a contrast: the events lost are reported, not asserted). `scripts/chaos.sh --kill
//! [SECONDS]` runs it with its output shown.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use testkit::{
    fallback_len, random_seed, tail_lines, unique_routing_key, wait_drained, Collector, Consumer,
    FaultProxy, Mode, ModuleArgs, RedisServer, ServerKind, SplitMix64, Verdict, Writer,
    WriterOptions,
};

const DEFAULT_SECONDS: u64 = 20;
/// The servers with post-notification jobs that `scripts/servers.sh` prepares, in the order
/// the soak prefers them.
const SERVERS: [&str; 3] = ["valkey-8.0", "redis-8.0", "valkey-8.1"];
/// Bound on the final drain (the publisher may be in its back-off after a fault, at most 5 s).
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// The consumer quiet this long before the drain counts as done: late duplicates are seen.
const QUIET: Duration = Duration::from_secs(2);
/// How long the load runs between a fault and the kill, and after a restart.
const BEFORE_KILL_MS: (u64, u64) = (300, 2500);
const AFTER_RESTART_MS: (u64, u64) = (200, 1000);

/// A fault applied to the broker link before a kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// None: the broker healthy.
    Healthy,
    Refuse,
    Blackhole,
    /// Every connection reset, then passing.
    Cut,
    /// Refused until a backlog is in the list, then healed: the kill falls while it drains.
    Drain,
}

#[derive(Default, Debug)]
struct Counts {
    kills: u64,
    healthy: u64,
    refuse: u64,
    blackhole: u64,
    cut: u64,
    drain: u64,
    /// Kills that fell while the fallback list held something.
    kills_with_a_list: u64,
}

#[test]
fn no_acknowledged_write_is_lost_across_kills() {
    let seconds = env_u64("CHAOS_SECONDS").unwrap_or(DEFAULT_SECONDS).max(1);
    let seed = env_u64("CHAOS_SEED").unwrap_or_else(random_seed);
    let durability = match std::env::var("CHAOS_DURABILITY").as_deref() {
        Ok("memory") => "memory",
        Ok("journal") | Err(_) => "journal",
        Ok(other) => panic!("CHAOS_DURABILITY={other:?}: memory or journal"),
    };
    let binary = kill_server();
    let kind = ServerKind::of_binary(&binary);
    assert!(
        kind.has_post_notification_jobs(),
        "{} is {kind}, without post-notification jobs: the journal needs Redis 7.2+ or Valkey",
        binary.display()
    );
    eprintln!(
        "chaos-kill: {kind} ({}), durability {durability}, {seconds} s, seed {seed} (replay with \
         CHAOS_SEED={seed})",
        binary.display()
    );

    let proxy = FaultProxy::start();
    let rk = unique_routing_key("chaos-kill-");
    let args = ModuleArgs {
        port: proxy.port(),
        heartbeat: 2,
        ..ModuleArgs::with_routing_key(&rk)
    };
    let consumer = Consumer::bind(&args.exchange, &rk);
    let mut configs = vec![
        ("appendonly", "yes"),
        ("appendfsync", "always"),
        ("key_evt_amqp.format", "json"),
        ("key_evt_amqp.payload", "value"),
    ];
    if durability == "journal" {
        configs.push(("key_evt_amqp.durability", "journal"));
    }
    let mut server = RedisServer::start_with_binary(&binary, &configs, Some(&args.to_vec()));
    // The mode takes effect at the module's first step.
    assert!(
        testkit::wait_until(Duration::from_secs(2), || server
            .info_field("key_evt_amqp", "key_evt_amqp_durability")
            .as_deref()
            == Some(durability)),
        "INFO key_evt_amqp shows durability {durability} (a module without the journal has no \
         such field):\n{}",
        server.module_info_text()
    );

    let mut rng = SplitMix64(seed);
    let collector = Collector::start(consumer);
    let writer = Writer::start(server.port(), WriterOptions::new("ck:", rng.next_u64()));
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let say = |what: &str, writer: &Writer| {
        eprintln!(
            "chaos-kill: [{:6.1} s] {what} ({} writes acknowledged)",
            start.elapsed().as_secs_f64(),
            writer.acked()
        );
    };
    let sleep_until_end = |d: Duration| {
        let until = (Instant::now() + d).min(end);
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
    };

    let mut counts = Counts::default();
    while Instant::now() < end {
        let fault = match rng.below(5) {
            0 => Fault::Healthy,
            1 => Fault::Refuse,
            2 => Fault::Blackhole,
            3 => Fault::Cut,
            _ => Fault::Drain,
        };
        say(&format!("{fault:?}"), &writer);
        match fault {
            Fault::Healthy => {
                counts.healthy += 1;
                proxy.heal();
            }
            Fault::Refuse => {
                counts.refuse += 1;
                proxy.set_mode(Mode::Refuse);
            }
            Fault::Blackhole => {
                counts.blackhole += 1;
                proxy.set_mode(Mode::Blackhole);
            }
            Fault::Cut => {
                counts.cut += 1;
                proxy.set_mode(Mode::CutMidStream);
            }
            Fault::Drain => {
                counts.drain += 1;
                proxy.set_mode(Mode::Refuse);
                sleep_until_end(rng.millis(1200, 2000));
                say(
                    &format!(
                        "backlog of {} in the list; healing",
                        fallback_len(&mut server.client())
                    ),
                    &writer,
                );
                proxy.heal();
            }
        }
        sleep_until_end(rng.millis(BEFORE_KILL_MS.0, BEFORE_KILL_MS.1));
        if Instant::now() >= end {
            break;
        }
        let list = fallback_len(&mut server.client());
        say(&format!("kill -9 (the list holds {list})"), &writer);
        counts.kills_with_a_list += u64::from(list > 0);
        server.kill9();
        counts.kills += 1;
        server.restart();
        if rng.below(2) == 0 {
            proxy.heal();
            say("restarted, healed", &writer);
        } else {
            say("restarted", &writer);
        }
        sleep_until_end(rng.millis(AFTER_RESTART_MS.0, AFTER_RESTART_MS.1));
    }

    let written = writer.stop();
    proxy.heal();
    eprintln!(
        "chaos-kill: [{:6.1} s] soak over; healed, draining",
        start.elapsed().as_secs_f64()
    );
    wait_drained(&server, &collector, DRAIN_LIMIT, QUIET);
    let delivered = collector.finish();
    let verdict = Verdict::of(&written, &delivered);
    eprintln!(
        "\n===== kill soak summary =====\n\
         server               {kind}\n\
         durability           {durability}\n\
         seed                 {seed} (replay: CHAOS_SEED={seed})\n\
         duration             {seconds} s\n\
         kills                {} ({} with a backlog in the list)\n\
         faults before kills  healthy {}, refuse {}, blackhole {}, cut {}, drain {}\n\
         acknowledged writes  {} ({} connects, {} round trips without a reply)\n\
         events delivered     {} distinct ({} messages)\n\
         missing              {}\n\
         duplicates           {}\n\
         out of order         {}\n\
         =============================\n{}",
        counts.kills,
        counts.kills_with_a_list,
        counts.healthy,
        counts.refuse,
        counts.blackhole,
        counts.cut,
        counts.drain,
        verdict.acked,
        written.connects,
        written.failed_round_trips,
        verdict.distinct,
        verdict.messages,
        verdict.missing.len(),
        verdict.duplicates.len(),
        verdict.out_of_order.len(),
        verdict.details(20)
    );
    let context = format!(
        "seed {seed} (replay: CHAOS_SEED={seed} scripts/chaos.sh --kill {seconds}); INFO:\n{}\n\
         log tail:\n{}",
        server.module_info_text(),
        tail_lines(&server.log(), 40)
    );
    if durability == "journal" {
        verdict.assert_complete(&context);
    } else {
        eprintln!(
            "memory mode: {} of {} acknowledged writes lost over {} kills (reported, not \
             asserted: without the journal a kill loses what is only in memory)",
            verdict.missing.len(),
            verdict.acked,
            counts.kills
        );
        assert!(
            verdict.out_of_order.is_empty() && verdict.foreign.is_empty(),
            "{}\n{context}",
            verdict.details(20)
        );
    }
}

/// `$CHAOS_KILL_SERVER`, else the first of [`SERVERS`] prepared in `target/servers/` (or
/// `$SERVERS_DIR`); panics saying to run `scripts/servers.sh` when there is none.
fn kill_server() -> PathBuf {
    if let Some(path) = std::env::var_os("CHAOS_KILL_SERVER") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "CHAOS_KILL_SERVER={} does not exist",
            path.display()
        );
        return path;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("SERVERS_DIR")
        .map(|d| root.join(d))
        .unwrap_or_else(|| root.join("target/servers"));
    SERVERS
        .iter()
        .map(|name| dir.join(name).join("bin/redis-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the kill soak needs a server with post-notification jobs (Redis 7.2+ or Valkey), \
                 one of {SERVERS:?} in {}: none is there. Run scripts/servers.sh (or set \
                 CHAOS_KILL_SERVER to a redis-server)",
                dir.display()
            )
        })
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim();
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={value:?} is not a number: {e}")))
}
