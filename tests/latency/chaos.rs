//! Chaos soak: under a steady write load, the broker link is refused, black-holed, cut, healed
//! and closed by the broker itself, at random; at the end every event has arrived, first
//! occurrences in order, and Redis kept answering PING quickly throughout.
//!
//! Runs alone (`--test-threads=1`): it measures latency. `CHAOS_SECONDS` sets the soak's length
//! (default 20), `CHAOS_SEED` replays a chaos schedule (the seed is printed at the start and in the
//! summary; the schedule of faults and pauses is replayed exactly, the module's timing relative to
//! it only roughly), `CHAOS_RATE` sets the writes per second (default 2000).
//! `scripts/chaos.sh [seconds]` runs it with its output shown.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use testkit::{
    tail_lines, unique_routing_key, Consumer, FaultProxy, Message, Mode, ModuleArgs, Pings,
    RedisServer, FALLBACK,
};

const DEFAULT_SECONDS: u64 = 20;
const DEFAULT_RATE: u64 = 2000;
/// Writes per pipeline at most: the writer catches up in pipelines, never in one huge burst.
const MAX_PIPELINE: u64 = 200;
const WRITER_TICK: Duration = Duration::from_millis(10);
const PING_EVERY: Duration = Duration::from_millis(10);
/// Pauses between faults.
const CHAOS_MIN_MS: u64 = 500;
const CHAOS_MAX_MS: u64 = 3000;
/// The module's heartbeat: a black-holed connection is noticed after about twice this.
const HEARTBEAT: u32 = 2;
/// Bound on the final drain (list and queue empty, consumer quiet).
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// The consumer must have been quiet this long before the drain counts as done, so that late
/// duplicates and stragglers are seen.
const QUIET: Duration = Duration::from_secs(3);
/// Bound on one `rabbitmqctl` run (it takes about half a second here).
const RABBITMQCTL_TIMEOUT_S: &str = "10";
const KEY_PREFIX: &str = "chaos:";

/// Worst PING round trip allowed over the whole soak.
///
/// Why 50 ms: the module's promise is that the network never blocks Redis, and in the
/// blackhole test a PING stays under 10 ms. Here, though, this machine's 2 cores run Redis, the
/// module's publisher and executor threads, RabbitMQ (persistent messages, bursts of tens of
/// thousands after each outage), the consumer, the writer, the pinger and the fault proxy's
/// threads all at once, so a PING also waits for the pinger thread to be scheduled and for Redis
/// to finish the writer's pipeline and a spill or refill slice (up to 2000 list items) ahead of
/// it. Measured on the 2-core development machine (other test binaries running alongside):
/// 20 s runs 4.2–22 ms worst (p99.9 2.4–7.4 ms) over 8 runs; 120 s runs 3.9–32.8 ms over 3.
/// One 120 s run hit 54 ms while `rabbitmqctl` (an Erlang VM starting) ran at normal priority;
/// it now runs under `nice -n 19`, and the same seed replayed stayed at 8.6 ms. The worst PINGs
/// still tend to fall while rabbitmqctl runs (the summary says so). A module that
/// blocked on the network would stall Redis for seconds (a confirm or connect timeout), which
/// this bound still catches with a wide margin.
const MAX_PING: Duration = Duration::from_millis(50);

#[test]
fn nothing_is_lost_under_chaos() {
    let seconds = env_u64("CHAOS_SECONDS").unwrap_or(DEFAULT_SECONDS).max(1);
    let rate = env_u64("CHAOS_RATE").unwrap_or(DEFAULT_RATE).max(1);
    let seed = env_u64("CHAOS_SEED").unwrap_or_else(random_seed);
    let soak = Duration::from_secs(seconds);
    eprintln!("chaos: seed {seed} (replay with CHAOS_SEED={seed}), {seconds} s, {rate} writes/s");

    let proxy = FaultProxy::start();
    let rk = unique_routing_key("chaos-");
    let consumer = Consumer::bind("amq.direct", &rk);
    let args = ModuleArgs {
        port: proxy.port(),
        heartbeat: HEARTBEAT,
        delivery_mode: 2,
        ..ModuleArgs::with_routing_key(&rk)
    };
    let server = RedisServer::start(&args.to_vec());
    let mut admin = server.client();
    let run_id = server.run_id();
    assert_eq!(run_id.len(), 40, "run_id from INFO server: {run_id:?}");

    let ctl = Rabbitmqctl::find();
    let flags = Flags::default();
    let start = Instant::now();
    let end_of_soak = start + soak;

    let run = thread::scope(|s| {
        let (flags, proxy, ctl, run_id) = (&flags, &proxy, &ctl, run_id.as_str());
        // Whatever happens in this closure (a panic included), every thread is told to stop.
        let _abort_on_exit = AbortOnDrop(flags);

        let consumer_thread = s.spawn(move || consume(consumer, run_id, flags, start));
        let pinger = {
            let client = server.client();
            s.spawn(move || ping(client, flags))
        };
        let writer = {
            let client = server.client();
            s.spawn(move || write(client, rate, end_of_soak, flags))
        };
        let chaos = s.spawn(move || chaos(proxy, ctl, run_id, seed, start, end_of_soak, flags));

        let written = join(writer, "writer");
        let faults = join(chaos, "chaos");
        // Heal everything: a black-holed connection is closed so the module reconnects at once.
        proxy.heal();
        eprintln!(
            "chaos: [{:6.1} s] soak over, {} events written; healed, draining",
            start.elapsed().as_secs_f64(),
            written.as_ref().map_or(0, |w| *w)
        );
        let drain_start = Instant::now();
        // Drained: nothing in memory or in the list, and the consumer quiet for a while.
        // A consumer that died (it panics on a lost connection) ends the wait at once.
        let mut drained = false;
        while written.is_ok() && !consumer_thread.is_finished() {
            let queue = server.module_info("queue_length");
            let list_info = server.module_info("fallback_length");
            let llen: i64 = redis::cmd("LLEN")
                .arg(FALLBACK)
                .query(&mut admin)
                .unwrap_or(-1);
            let quiet_for = start
                .elapsed()
                .saturating_sub(Duration::from_millis(flags.last_rx_ms.load(SeqCst)));
            if queue == "0" && list_info == "0" && llen == 0 && quiet_for >= QUIET {
                drained = true;
                break;
            }
            if drain_start.elapsed() >= DRAIN_LIMIT {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let drain_time = drain_start.elapsed();
        flags.stop.store(true, SeqCst);
        let tally = join(consumer_thread, "consumer");
        let (pings, max_ping_during_ctl) = join(pinger, "pinger");
        Run {
            written,
            faults,
            drained,
            drain_time,
            tally,
            pings,
            max_ping_during_ctl,
        }
    });

    let info = server.module_info_text();
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("key_evt_amqp_{name}:")))
            .unwrap_or("?")
            .trim()
            .to_string()
    };
    let written = run.written.unwrap_or_else(|e| {
        panic!("the writer failed: {e}; INFO:\n{info}");
    });
    let tally = run.tally;
    let faults = run.faults;
    let pings = run.pings;
    let max_ping_during_ctl = run.max_ping_during_ctl;
    let lost = tally.missing(written);
    let heap_peak: u64 = field("heap_peak_bytes").parse().unwrap_or(0);

    eprintln!(
        "\n===== chaos soak summary =====\n\
         seed                 {seed}\n\
         duration             {seconds} s at {rate} writes/s, drain {:.1} s{}\n\
         events generated     {written}\n\
         events received      {} distinct ({} messages)\n\
         lost                 {}\n\
         duplicates           {}\n\
         out of order         {} (keys), {} (seq), {} identity mismatches, {} foreign\n\
         max PING latency     {:.2} ms (p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, {} pings, \
         {} over 10 ms; worst at {:.1} s{}; pinger oversleep up to {:.2} ms)\n\
         peak module heap     {} bytes ({:.1} MiB)\n\
         faults injected      {}\n\
         module counters      connections {}, published {}, confirmed {}, spilled {}, \
         refilled {}, nacked {}, dropped {}\n\
         ==============================",
        run.drain_time.as_secs_f64(),
        if run.drained { "" } else { " (NOT DRAINED)" },
        tally.distinct,
        tally.messages,
        lost.len(),
        tally.duplicates,
        tally.order_violations,
        tally.seq_violations,
        tally.identity_mismatches,
        tally.foreign,
        ms(pings.max),
        ms(pings.percentile(50.0)),
        ms(pings.percentile(99.0)),
        ms(pings.percentile(99.9)),
        pings.samples.len(),
        pings.samples.iter().filter(|&&us| us > 10_000).count(),
        pings.max_at.as_secs_f64(),
        if max_ping_during_ctl {
            ", while rabbitmqctl ran"
        } else {
            ""
        },
        ms(pings.max_oversleep),
        heap_peak,
        heap_peak as f64 / (1024.0 * 1024.0),
        faults.describe(),
        field("connections"),
        field("events_published"),
        field("events_confirmed"),
        field("events_spilled"),
        field("events_refilled"),
        field("events_nacked"),
        field("events_dropped"),
    );

    let evidence = || {
        format!(
            "seed {seed} (replay: CHAOS_SEED={seed} CHAOS_RATE={rate} scripts/chaos.sh \
             {seconds}); INFO key_evt_amqp:\n{info}\nredis log tail:\n{}",
            tail_lines(&server.log(), 40)
        )
    };
    assert!(
        run.drained,
        "the backlog did not drain within {DRAIN_LIMIT:?} after healing; {}",
        evidence()
    );
    assert!(
        lost.is_empty(),
        "{} of {written} events lost, first indices {:?}; {}",
        lost.len(),
        &lost[..lost.len().min(20)],
        evidence()
    );
    assert_eq!(
        tally.distinct,
        written,
        "events received that were never written; {}",
        evidence()
    );
    assert_eq!(
        tally.foreign,
        0,
        "unexpected messages, e.g. {:?}; {}",
        tally.first_foreign,
        evidence()
    );
    assert_eq!(
        tally.order_violations,
        0,
        "first occurrences of keys out of order, first: key index {:?}; {}",
        tally.first_order_violation,
        evidence()
    );
    assert_eq!(
        tally.seq_violations,
        0,
        "first occurrences of message_id seqs out of order, first: {:?}; {}",
        tally.first_seq_violation,
        evidence()
    );
    assert_eq!(
        tally.identity_mismatches,
        0,
        "a key seen for the first time with a seq seen before, or the other way round \
         (an event changed identity); {}",
        evidence()
    );
    assert_eq!(field("events_dropped"), "0", "{}", evidence());
    assert!(
        pings.max < MAX_PING,
        "PING took {:.2} ms (bound {MAX_PING:?}) at {:.1} s into the soak; {}",
        ms(pings.max),
        pings.max_at.as_secs_f64(),
        evidence()
    );
}

/// What the soak's threads produced.
struct Run {
    /// Events written (one SET of a new key each), or why the writer stopped.
    written: Result<u64, String>,
    faults: Faults,
    drained: bool,
    drain_time: Duration,
    tally: Tally,
    pings: Pings,
    /// Whether a `rabbitmqctl` was running during the worst PING.
    max_ping_during_ctl: bool,
}

#[derive(Default)]
struct Flags {
    /// The drain is over: the consumer and the pinger stop.
    stop: AtomicBool,
    /// Something failed or the test is unwinding: every thread stops at once.
    abort: AtomicBool,
    /// When the consumer last received a message, in ms since the start.
    last_rx_ms: AtomicU64,
    /// A `rabbitmqctl` is running (an Erlang VM starting: a CPU hog on a 2-core machine).
    /// Shared with the thread that runs it.
    ctl_running: Arc<AtomicBool>,
}

impl Flags {
    fn aborted(&self) -> bool {
        self.abort.load(SeqCst)
    }
}

struct AbortOnDrop<'a>(&'a Flags);

impl Drop for AbortOnDrop<'_> {
    fn drop(&mut self) {
        self.0.abort.store(true, SeqCst);
    }
}

fn join<T>(handle: thread::ScopedJoinHandle<'_, T>, name: &str) -> T {
    handle
        .join()
        .unwrap_or_else(|_| panic!("the {name} thread panicked (see above)"))
}

// ------------------------------------------------------------------------------------ writer

/// SETs `chaos:0`, `chaos:1`, … at `rate` per second until `end`, in pipelines every 10 ms.
fn write(
    mut redis: redis::Connection,
    rate: u64,
    end: Instant,
    flags: &Flags,
) -> Result<u64, String> {
    let start = Instant::now();
    let mut written: u64 = 0;
    let result = loop {
        let now = Instant::now();
        if now >= end {
            break Ok(written);
        }
        if flags.aborted() {
            break Err(format!("aborted after {written} writes"));
        }
        let due = (now - start).as_micros() as u64 * rate / 1_000_000;
        let n = due.saturating_sub(written).min(MAX_PIPELINE);
        if n > 0 {
            let mut pipe = redis::pipe();
            for i in written..written + n {
                pipe.cmd("SET")
                    .arg(format!("{KEY_PREFIX}{i}"))
                    .arg("v")
                    .ignore();
            }
            if let Err(e) = pipe.query::<()>(&mut redis) {
                break Err(format!("SET pipeline after {written} writes: {e}"));
            }
            written += n;
        }
        thread::sleep(WRITER_TICK);
    };
    if result.is_err() {
        flags.abort.store(true, SeqCst);
    }
    result
}

// ------------------------------------------------------------------------------------ pinger

/// PINGs every 10 ms on its own connection until the drain is over. Also returns whether a
/// `rabbitmqctl` was running during the worst PING.
fn ping(mut redis: redis::Connection, flags: &Flags) -> (Pings, bool) {
    let start = Instant::now();
    let mut pings = Pings::new(None);
    let mut max_during_ctl = false;
    while !flags.stop.load(SeqCst) && !flags.aborted() {
        let ctl_before = flags.ctl_running.load(SeqCst);
        let t = Instant::now();
        match redis::cmd("PING").query::<String>(&mut redis) {
            Ok(_) => {}
            Err(e) => {
                eprintln!("chaos: PING failed: {e}");
                flags.abort.store(true, SeqCst);
                // A failed PING is as bad as a very slow one.
                pings.max = Duration::from_secs(3600);
                break;
            }
        }
        let took = t.elapsed();
        if pings.record(t - start, took) {
            max_during_ctl = ctl_before || flags.ctl_running.load(SeqCst);
        }
        let slept = Instant::now();
        thread::sleep(PING_EVERY);
        pings.record_oversleep(slept.elapsed().saturating_sub(PING_EVERY));
    }
    (pings, max_during_ctl)
}

// ---------------------------------------------------------------------------------- consumer

/// A growable bit set of indices.
#[derive(Default)]
struct Bits(Vec<u64>);

impl Bits {
    /// Sets bit `i`; returns whether it was clear.
    fn insert(&mut self, i: u64) -> bool {
        let (word, bit) = ((i / 64) as usize, i % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let fresh = self.0[word] & (1 << bit) == 0;
        self.0[word] |= 1 << bit;
        fresh
    }

    fn contains(&self, i: u64) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// What the consumer saw, without keeping the messages.
#[derive(Default)]
struct Tally {
    keys: Bits,
    seqs: Bits,
    messages: u64,
    distinct: u64,
    duplicates: u64,
    last_first_index: Option<u64>,
    order_violations: u64,
    /// (index, the larger index seen first before it)
    first_order_violation: Option<(u64, u64)>,
    last_first_seq: Option<u64>,
    seq_violations: u64,
    first_seq_violation: Option<(u64, u64)>,
    identity_mismatches: u64,
    foreign: u64,
    first_foreign: Option<String>,
}

impl Tally {
    fn add(&mut self, m: &Message, run_id: &str) {
        self.messages += 1;
        let parsed = (|| {
            let (db, event, key) = m.parts()?;
            if db != b"0" || event != b"set" {
                return None;
            }
            let index: u64 = std::str::from_utf8(key.strip_prefix(KEY_PREFIX.as_bytes())?)
                .ok()?
                .parse()
                .ok()?;
            let (node, seq) = m.message_id.as_deref()?.split_once('-')?;
            if node != run_id {
                return None;
            }
            Some((index, seq.parse::<u64>().ok()?))
        })();
        let Some((index, seq)) = parsed else {
            self.foreign += 1;
            self.first_foreign.get_or_insert_with(|| format!("{m:?}"));
            return;
        };
        let new_key = self.keys.insert(index);
        let new_seq = self.seqs.insert(seq);
        if new_key != new_seq {
            self.identity_mismatches += 1;
        }
        if new_key {
            self.distinct += 1;
            if let Some(last) = self.last_first_index.filter(|&last| index < last) {
                self.order_violations += 1;
                self.first_order_violation.get_or_insert((index, last));
            }
            self.last_first_index = Some(self.last_first_index.map_or(index, |l| l.max(index)));
        } else {
            self.duplicates += 1;
        }
        if new_seq {
            if let Some(last) = self.last_first_seq.filter(|&last| seq <= last) {
                self.seq_violations += 1;
                self.first_seq_violation.get_or_insert((seq, last));
            }
            self.last_first_seq = Some(self.last_first_seq.map_or(seq, |l| l.max(seq)));
        }
    }

    /// Indices below `written` never received.
    fn missing(&self, written: u64) -> Vec<u64> {
        (0..written).filter(|&i| !self.keys.contains(i)).collect()
    }
}

/// Receives until the drain is over, keeping only a tally.
fn consume(mut consumer: Consumer, run_id: &str, flags: &Flags, start: Instant) -> Tally {
    let mut tally = Tally::default();
    while !flags.stop.load(SeqCst) && !flags.aborted() {
        if let Some(m) = consumer.recv(Duration::from_millis(100)) {
            tally.add(&m, run_id);
            flags
                .last_rx_ms
                .store(start.elapsed().as_millis() as u64, SeqCst);
        }
    }
    tally
}

// ------------------------------------------------------------------------------------- chaos

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Refuse,
    Blackhole,
    Cut,
    /// Back to pass; stalled (black-holed) connections are closed.
    Heal,
    /// Back to pass; stalled connections resume where they were.
    Resume,
    /// `rabbitmqctl close_connection` on the module's connection.
    BrokerClose,
}

#[derive(Default)]
struct Faults {
    refuse: u64,
    blackhole: u64,
    cut: u64,
    heal: u64,
    resume: u64,
    broker_close: Arc<BrokerCloses>,
}

#[derive(Default)]
struct BrokerCloses {
    tried: AtomicU64,
    closed: AtomicU64,
    /// No connection of ours was open (say, the proxy was refusing).
    absent: AtomicU64,
    /// A previous close was still running.
    skipped: AtomicU64,
    failed: AtomicU64,
}

impl Faults {
    fn describe(&self) -> String {
        let b = &self.broker_close;
        format!(
            "refuse {}, blackhole {}, cut {}, heal {}, resume {}, broker close {} \
             (closed {}, no connection {}, skipped {}, failed {})",
            self.refuse,
            self.blackhole,
            self.cut,
            self.heal,
            self.resume,
            b.tried.load(SeqCst),
            b.closed.load(SeqCst),
            b.absent.load(SeqCst),
            b.skipped.load(SeqCst),
            b.failed.load(SeqCst),
        )
    }
}

/// Injects a random fault every 0.5–3 s until `end`. The schedule depends on `seed` only.
fn chaos(
    proxy: &FaultProxy,
    ctl: &Rabbitmqctl,
    run_id: &str,
    seed: u64,
    start: Instant,
    end: Instant,
    flags: &Flags,
) -> Faults {
    let mut rng = SplitMix64(seed);
    let mut faults = Faults::default();
    let mut closer: Option<thread::JoinHandle<()>> = None;
    loop {
        let pause =
            Duration::from_millis(CHAOS_MIN_MS + rng.below(CHAOS_MAX_MS - CHAOS_MIN_MS + 1));
        let fault = match rng.below(5) {
            0 => Fault::Refuse,
            1 => Fault::Blackhole,
            2 => Fault::Cut,
            3 if rng.below(2) == 0 => Fault::Heal,
            3 => Fault::Resume,
            _ => Fault::BrokerClose,
        };
        let at = Instant::now() + pause;
        while Instant::now() < at.min(end) && !flags.aborted() {
            thread::sleep(Duration::from_millis(20));
        }
        if Instant::now() >= end || flags.aborted() {
            break;
        }
        eprintln!("chaos: [{:6.1} s] {fault:?}", start.elapsed().as_secs_f64());
        match fault {
            Fault::Refuse => {
                faults.refuse += 1;
                proxy.set_mode(Mode::Refuse);
            }
            Fault::Blackhole => {
                faults.blackhole += 1;
                proxy.set_mode(Mode::Blackhole);
            }
            Fault::Cut => {
                faults.cut += 1;
                proxy.set_mode(Mode::CutMidStream);
            }
            Fault::Heal => {
                faults.heal += 1;
                proxy.heal();
            }
            Fault::Resume => {
                faults.resume += 1;
                proxy.set_mode(Mode::Pass);
            }
            Fault::BrokerClose => {
                let counts = Arc::clone(&faults.broker_close);
                let ctl_running = Arc::clone(&flags.ctl_running);
                counts.tried.fetch_add(1, SeqCst);
                if closer.as_ref().is_some_and(|c| !c.is_finished()) {
                    counts.skipped.fetch_add(1, SeqCst);
                } else {
                    if let Some(done) = closer.take() {
                        let _ = done.join();
                    }
                    // rabbitmqctl takes about a second: off this thread, so the schedule holds.
                    let (ctl, run_id) = (ctl.clone(), run_id.to_string());
                    flags.ctl_running.store(true, SeqCst);
                    closer = Some(thread::spawn(move || {
                        let result = ctl.close_module_connection(&run_id);
                        ctl_running.store(false, SeqCst);
                        match result {
                            Ok(true) => counts.closed.fetch_add(1, SeqCst),
                            Ok(false) => counts.absent.fetch_add(1, SeqCst),
                            Err(e) => {
                                eprintln!("chaos: broker close failed: {e}");
                                counts.failed.fetch_add(1, SeqCst)
                            }
                        };
                    }));
                }
            }
        }
    }
    // Bounded: each rabbitmqctl run is under `timeout`.
    if let Some(closer) = closer {
        let _ = closer.join();
    }
    faults
}

/// `rabbitmqctl`, to have the broker close the module's connection (never any other).
#[derive(Clone)]
struct Rabbitmqctl {
    path: String,
}

impl Rabbitmqctl {
    fn find() -> Rabbitmqctl {
        let path = ["/usr/sbin/rabbitmqctl", "/usr/lib/rabbitmq/bin/rabbitmqctl"]
            .into_iter()
            .find(|p| std::path::Path::new(p).is_file())
            .unwrap_or("rabbitmqctl");
        Rabbitmqctl { path: path.into() }
    }

    fn run(&self, args: &[&str]) -> Result<String, String> {
        // At the lowest CPU priority: this Erlang VM is harness, not the system under test.
        let out = Command::new("nice")
            .args([
                "-n",
                "19",
                "timeout",
                "-k",
                "2",
                RABBITMQCTL_TIMEOUT_S,
                &self.path,
            ])
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.path))?;
        if !out.status.success() {
            return Err(format!(
                "rabbitmqctl {args:?}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Closes the connection named `key_evt_amqp <run_id>` (the module names its connection
    /// so); `Ok(false)` when there is none.
    fn close_module_connection(&self, run_id: &str) -> Result<bool, String> {
        // On RabbitMQ 3.10, `name` is the peer address; the name the client gave is in
        // client_properties as {"connection_name","…"}.
        let listing = self.run(&[
            "list_connections",
            "-q",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])?;
        let wanted = format!("{{\"connection_name\",\"key_evt_amqp {run_id}\"}}");
        let pids: Vec<&str> = listing
            .lines()
            .filter(|line| line.contains(&wanted))
            .filter_map(|line| line.split('\t').next())
            .filter(|pid| pid.starts_with('<') && pid.ends_with('>'))
            .collect();
        for pid in &pids {
            self.run(&["close_connection", pid, "chaos"])?;
        }
        Ok(!pids.is_empty())
    }
}

/// A small, seedable generator (SplitMix64): the chaos schedule must replay from its seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

// ------------------------------------------------------------------------------------ helpers

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim();
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={value:?} is not a number: {e}")))
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
