//! Acknowledged writes checked against delivered events: what a user of the module checks
//! after a crash or a failover.
//!
//! A [`Writer`] thread INCRs random counters (`<prefix><i>`) and keeps every reply it got: a
//! write Redis answered is acknowledged, the client was told it happened. A [`Collector`]
//! thread receives the module's events, published with `key_evt_amqp.format json` and
//! `key_evt_amqp.payload value`, so that each carries the key *and* the value right after the
//! write (`{"key":"jk:7","value":"12",…}`). [`Verdict::of`] then says which acknowledged
//! `(key, value)` has no event (matched with the run id of the server that answered the write,
//! so that a value a restarted server hands out again is not mistaken for the lost one), which
//! events came more than once (same `message_id`), and whether each node's first deliveries
//! came in the order of their sequence numbers (`message_id` = `<run_id>-<seq>`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{fallback_len, tail_lines, wait_until, Consumer, Message, RedisServer};

/// How [`Writer::start`] writes.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Keys are `<prefix><i>` for i in `0..keys`.
    pub prefix: String,
    pub keys: u64,
    /// INCRs per round trip (a pipeline; 1: one command at a time).
    pub pipeline: usize,
    /// The pause after each round trip.
    pub pause: Duration,
    /// `Some(n)`: each pipeline ends with `WAIT n 1000`, and its writes count as acknowledged
    /// only when WAIT says at least `n` replicas have them.
    pub wait_replicas: Option<i64>,
    /// Seeds the choice of keys.
    pub seed: u64,
}

impl WriterOptions {
    /// 200 keys, pipelines of 4 INCRs, a 1 ms pause, no WAIT.
    pub fn new(prefix: &str, seed: u64) -> WriterOptions {
        WriterOptions {
            prefix: prefix.into(),
            keys: 200,
            pipeline: 4,
            pause: Duration::from_millis(1),
            wait_replicas: None,
            seed,
        }
    }
}

/// One acknowledged write: `INCR key` answered `value` by the server whose `run_id` this is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Acked {
    pub run_id: Arc<str>,
    pub key: String,
    pub value: i64,
}

/// What a [`Writer`] did.
#[derive(Debug, Default)]
pub struct Written {
    /// Every acknowledged write, in the order of the replies.
    pub acked: Vec<Acked>,
    /// Round trips without a reply (the server was killed, or was loading): their writes may
    /// or may not have happened, and are not counted.
    pub failed_round_trips: u64,
    /// Pipelines whose WAIT saw fewer replicas than asked: not counted either.
    pub unreplicated: u64,
    /// Connections made (1 + reconnections).
    pub connects: u64,
    /// The last error of a round trip, if any.
    pub last_error: Option<String>,
}

/// A thread INCRing random counters on the server at a port, reconnecting whenever the
/// connection breaks (a kill, a restart), until [`Writer::stop`].
pub struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    handle: Option<JoinHandle<Written>>,
}

impl Writer {
    pub fn start(port: u16, options: WriterOptions) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let handle = {
            let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
            thread::Builder::new()
                .name(format!("writer-{port}"))
                .spawn(move || write_loop(port, &options, &stop, &acked))
                .expect("cannot spawn the writer thread")
        };
        Writer {
            stop,
            acked,
            handle: Some(handle),
        }
    }

    /// Writes acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(SeqCst)
    }

    /// Waits until at least `n` more writes than now are acknowledged; false after `timeout`.
    pub fn wait_for_more(&self, n: u64, timeout: Duration) -> bool {
        let target = self.acked() + n;
        wait_until(timeout, || self.acked() >= target)
    }

    /// Stops the thread (after its round trip in progress) and returns what it did.
    pub fn stop(mut self) -> Written {
        self.stop.store(true, SeqCst);
        let handle = self.handle.take().expect("the writer is stopped once");
        handle
            .join()
            .unwrap_or_else(|_| panic!("the writer thread panicked"))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn write_loop(port: u16, o: &WriterOptions, stop: &AtomicBool, acked_count: &AtomicU64) -> Written {
    let mut rng = SplitMix64(o.seed);
    let mut out = Written::default();
    let mut conn: Option<(::redis::Connection, Arc<str>)> = None;
    while !stop.load(SeqCst) {
        if conn.is_none() {
            match connect(port) {
                Ok(c) => {
                    out.connects += 1;
                    conn = Some(c);
                }
                Err(_) => {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        let Some((c, run_id)) = conn.as_mut() else {
            continue;
        };
        let keys: Vec<String> = (0..o.pipeline.max(1))
            .map(|_| format!("{}{}", o.prefix, rng.below(o.keys)))
            .collect();
        let mut pipe = ::redis::pipe();
        for k in &keys {
            pipe.cmd("INCR").arg(k);
        }
        if let Some(n) = o.wait_replicas {
            pipe.cmd("WAIT").arg(n).arg(1000);
        }
        match pipe.query::<Vec<i64>>(c) {
            Ok(replies) => {
                let replicated = match o.wait_replicas {
                    Some(n) => replies.get(keys.len()).is_some_and(|&got| got >= n),
                    None => true,
                };
                if replicated {
                    for (key, &value) in keys.into_iter().zip(&replies) {
                        out.acked.push(Acked {
                            run_id: Arc::clone(run_id),
                            key,
                            value,
                        });
                    }
                    acked_count.store(out.acked.len() as u64, SeqCst);
                } else {
                    out.unreplicated += 1;
                }
            }
            Err(e) => {
                out.failed_round_trips += 1;
                out.last_error = Some(e.to_string());
                conn = None;
                continue;
            }
        }
        if !o.pause.is_zero() {
            thread::sleep(o.pause);
        }
    }
    out
}

/// A connection (2 s timeouts: a killed server fails a round trip at once anyway) and the
/// server's `run_id`, which stays the same as long as the connection does.
fn connect(port: u16) -> ::redis::RedisResult<(::redis::Connection, Arc<str>)> {
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let info: String = ::redis::cmd("INFO").arg("server").query(&mut conn)?;
    let run_id = info
        .lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(str::trim)
        .unwrap_or_default();
    if run_id.is_empty() {
        return Err(::redis::RedisError::from((
            ::redis::ErrorKind::ResponseError,
            "no run_id in INFO server",
        )));
    }
    Ok((conn, Arc::from(run_id)))
}

/// One delivered event, as [`Collector`] parsed it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub run_id: Arc<str>,
    pub seq: u64,
    pub key: String,
    pub value: i64,
}

impl std::fmt::Display for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}={} ({}-{})",
            self.key,
            self.value,
            short(&self.run_id),
            self.seq
        )
    }
}

/// What the consumer received, without keeping the messages.
#[derive(Debug, Default)]
pub struct Deliveries {
    /// `(run_id, key, value)` of every message.
    pairs: HashSet<(Arc<str>, String, i64)>,
    /// `(run_id, seq)` of every message.
    ids: HashSet<(Arc<str>, u64)>,
    run_ids: HashSet<Arc<str>>,
    /// The highest seq of a first delivery, per run id.
    last_first_seq: HashMap<Arc<str>, u64>,
    pub messages: u64,
    /// Messages whose `message_id` came before.
    pub duplicates: Vec<Delivery>,
    /// First deliveries with a seq lower than one delivered before them (the higher seq).
    pub out_of_order: Vec<(Delivery, u64)>,
    /// Messages that are not an INCR event with a value and a `message_id` (shown).
    pub foreign: Vec<String>,
    pub last_rx: Option<Instant>,
    /// The consumer failed (lost its connection): what it said.
    pub consumer_error: Option<String>,
}

impl Deliveries {
    /// Takes one message into account.
    pub fn add(&mut self, m: &Message) {
        self.messages += 1;
        self.last_rx = Some(Instant::now());
        let Some((run_id, seq, key, value)) = parse(m) else {
            if self.foreign.len() < 20 {
                self.foreign.push(format!("{m:?}"));
            }
            return;
        };
        let run_id = match self.run_ids.get(run_id.as_str()) {
            Some(r) => Arc::clone(r),
            None => {
                let r: Arc<str> = Arc::from(run_id.as_str());
                self.run_ids.insert(Arc::clone(&r));
                r
            }
        };
        let d = Delivery {
            run_id: Arc::clone(&run_id),
            seq,
            key,
            value,
        };
        if !self.ids.insert((Arc::clone(&run_id), seq)) {
            self.duplicates.push(d);
            return;
        }
        self.pairs
            .insert((Arc::clone(&run_id), d.key.clone(), d.value));
        let last = self.last_first_seq.entry(run_id).or_insert(0);
        if seq < *last {
            let before = *last;
            self.out_of_order.push((d, before));
        } else {
            *last = seq;
        }
    }

    /// Distinct events (by `message_id`).
    pub fn distinct(&self) -> usize {
        self.ids.len()
    }

    /// Whether an event of `INCR key → value` on the server `run_id` arrived.
    pub fn has(&self, run_id: &Arc<str>, key: &str, value: i64) -> bool {
        self.pairs
            .contains(&(Arc::clone(run_id), key.to_string(), value))
    }
}

/// `(run_id, seq, key, value)` of a json INCR event with a value.
fn parse(m: &Message) -> Option<(String, u64, String, i64)> {
    let (run_id, seq) = m.message_id.as_deref()?.rsplit_once('-')?;
    let seq = seq.parse().ok()?;
    let body: serde_json::Value = serde_json::from_slice(&m.body).ok()?;
    let key = body.get("key")?.as_str()?.to_string();
    let value = match body.get("value")? {
        serde_json::Value::String(s) => s.parse().ok()?,
        serde_json::Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    Some((run_id.to_string(), seq, key, value))
}

/// A thread receiving every message of a [`Consumer`] into [`Deliveries`], until
/// [`Collector::finish`].
pub struct Collector {
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Deliveries>>,
    handle: Option<JoinHandle<()>>,
    started: Instant,
}

impl Collector {
    pub fn start(mut consumer: Consumer) -> Collector {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(Deliveries::default()));
        let handle = {
            let (stop, shared) = (Arc::clone(&stop), Arc::clone(&shared));
            thread::Builder::new()
                .name("collector".into())
                .spawn(move || {
                    while !stop.load(SeqCst) {
                        match consumer.try_recv(Some(Duration::from_millis(100))) {
                            Ok(Some(m)) => lock(&shared).add(&m),
                            Ok(None) => {}
                            Err(e) => {
                                lock(&shared).consumer_error = Some(e);
                                break;
                            }
                        }
                    }
                })
                .expect("cannot spawn the collector thread")
        };
        Collector {
            stop,
            shared,
            handle: Some(handle),
            started: Instant::now(),
        }
    }

    /// Messages received so far.
    pub fn messages(&self) -> u64 {
        lock(&self.shared).messages
    }

    /// How long since the last message (since the start if none came).
    pub fn quiet_for(&self) -> Duration {
        lock(&self.shared).last_rx.unwrap_or(self.started).elapsed()
    }

    /// The consumer's error, if it failed.
    pub fn error(&self) -> Option<String> {
        lock(&self.shared).consumer_error.clone()
    }

    /// Stops the thread and returns what it received.
    pub fn finish(mut self) -> Deliveries {
        self.stop.store(true, SeqCst);
        if let Some(handle) = self.handle.take() {
            handle
                .join()
                .unwrap_or_else(|_| panic!("the collector thread panicked"));
        }
        std::mem::take(&mut *lock(&self.shared))
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn lock(m: &Mutex<Deliveries>) -> MutexGuard<'_, Deliveries> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits until the module holds nothing (INFO `queue_length` and `fallback_length` 0, the
/// fallback list empty or gone) and the collector has been quiet for `quiet`. Panics after
/// `limit` with the module's INFO, the log tail and what the collector has.
pub fn wait_drained(server: &RedisServer, collector: &Collector, limit: Duration, quiet: Duration) {
    let started = Instant::now();
    let drained = wait_until(limit, || {
        if collector.error().is_some() {
            return true;
        }
        let Ok(mut r) = server.try_client() else {
            return false;
        };
        let field = |r: &mut ::redis::Connection, name: &str| -> Option<String> {
            let info: String = ::redis::cmd("INFO").arg("key_evt_amqp").query(r).ok()?;
            let prefix = format!("key_evt_amqp_{name}:");
            info.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .map(|v| v.trim().to_string())
        };
        field(&mut r, "queue_length").as_deref() == Some("0")
            && field(&mut r, "fallback_length").as_deref() == Some("0")
            && fallback_len(&mut r) == 0
            && collector.quiet_for() >= quiet
    });
    if let Some(e) = collector.error() {
        panic!("the consumer failed: {e}");
    }
    assert!(
        drained,
        "the module did not drain within {limit:?} ({} messages received, the last {:?} ago)\n\
         INFO key_evt_amqp:\n{}\nlog tail:\n{}",
        collector.messages(),
        collector.quiet_for(),
        server.module_info_text(),
        tail_lines(&server.log(), 40)
    );
    eprintln!(
        "drained in {:.1} s ({} messages received)",
        started.elapsed().as_secs_f64(),
        collector.messages()
    );
}

/// The check: acknowledged writes against deliveries.
#[derive(Debug)]
pub struct Verdict {
    pub acked: usize,
    pub messages: u64,
    pub distinct: usize,
    /// Acknowledged writes without an event, with their index among the writes.
    pub missing: Vec<(usize, Acked)>,
    pub duplicates: Vec<Delivery>,
    pub out_of_order: Vec<(Delivery, u64)>,
    pub foreign: Vec<String>,
    pub consumer_error: Option<String>,
    /// Acknowledged writes per run id (in the order the writer first met them).
    pub runs: Vec<(Arc<str>, usize)>,
}

impl Verdict {
    pub fn of(written: &Written, delivered: &Deliveries) -> Verdict {
        let mut runs: Vec<(Arc<str>, usize)> = Vec::new();
        let mut missing = Vec::new();
        for (i, a) in written.acked.iter().enumerate() {
            match runs.last_mut() {
                Some((r, n)) if *r == a.run_id => *n += 1,
                _ => runs.push((Arc::clone(&a.run_id), 1)),
            }
            if !delivered.has(&a.run_id, &a.key, a.value) {
                missing.push((i, a.clone()));
            }
        }
        Verdict {
            acked: written.acked.len(),
            messages: delivered.messages,
            distinct: delivered.distinct(),
            missing,
            duplicates: delivered.duplicates.clone(),
            out_of_order: delivered.out_of_order.clone(),
            foreign: delivered.foreign.clone(),
            consumer_error: delivered.consumer_error.clone(),
            runs,
        }
    }

    /// One line: the figures.
    pub fn summary(&self) -> String {
        format!(
            "{} acknowledged writes, {} messages ({} distinct events), {} missing, {} \
             duplicates, {} out of order, {} foreign",
            self.acked,
            self.messages,
            self.distinct,
            self.missing.len(),
            self.duplicates.len(),
            self.out_of_order.len(),
            self.foreign.len()
        )
    }

    /// The summary, then, per server run, how many writes it acknowledged and which of them
    /// have no event (`key=value #index`: the write's place among all acknowledged writes, so
    /// that losses clustered just before a kill show as such), the duplicates and what came
    /// out of order; at most `max` items of each list.
    pub fn details(&self, max: usize) -> String {
        let mut s = self.summary();
        let mut by_run: BTreeMap<usize, Vec<&(usize, Acked)>> = BTreeMap::new();
        for m in &self.missing {
            let run = self
                .runs
                .iter()
                .position(|(r, _)| *r == m.1.run_id)
                .unwrap_or(0);
            by_run.entry(run).or_default().push(m);
        }
        let mut first = 0;
        for (i, (run_id, n)) in self.runs.iter().enumerate() {
            let lost = by_run.get(&i).map_or(&[][..], Vec::as_slice);
            s.push_str(&format!(
                "\n  run {} (writes #{first}..#{}): {n} acknowledged, {} missing",
                short(run_id),
                first + n - 1,
                lost.len()
            ));
            if let (Some(lo), Some(hi)) = (lost.first(), lost.last()) {
                s.push_str(&format!(" (writes #{}..#{}):", lo.0, hi.0));
                for (index, a) in lost.iter().take(max) {
                    s.push_str(&format!(" {}={} #{index}", a.key, a.value));
                }
                if lost.len() > max {
                    s.push_str(&format!(" … and {} more", lost.len() - max));
                }
            }
            first += n;
        }
        let list = |title: &str, items: Vec<String>| -> String {
            if items.is_empty() {
                return String::new();
            }
            let shown: Vec<&str> = items.iter().take(max).map(String::as_str).collect();
            let more = if items.len() > max {
                format!(" … and {} more", items.len() - max)
            } else {
                String::new()
            };
            format!("\n  {title} ({}): {}{more}", items.len(), shown.join(", "))
        };
        s.push_str(&list(
            "duplicates",
            self.duplicates.iter().map(ToString::to_string).collect(),
        ));
        s.push_str(&list(
            "out of order (first delivery after a higher seq)",
            self.out_of_order
                .iter()
                .map(|(d, after)| format!("{d} after seq {after}"))
                .collect(),
        ));
        s.push_str(&list("foreign messages", self.foreign.clone()));
        if let Some(e) = &self.consumer_error {
            s.push_str(&format!("\n  the consumer failed: {e}"));
        }
        s
    }

    /// Whether nothing is missing, nothing came out of order and nothing foreign came.
    pub fn complete(&self) -> bool {
        self.missing.is_empty()
            && self.out_of_order.is_empty()
            && self.foreign.is_empty()
            && self.consumer_error.is_none()
    }

    /// Panics with [`Verdict::details`] and `context` unless [`Verdict::complete`].
    #[track_caller]
    pub fn assert_complete(&self, context: &str) {
        assert!(
            self.complete(),
            "every acknowledged write has its event, first deliveries in order: NOT SO\n{}\n{context}",
            self.details(40)
        );
    }
}

/// The first 8 characters of a run id.
fn short(run_id: &str) -> &str {
    &run_id[..run_id.len().min(8)]
}

/// A small, seedable generator (SplitMix64): a test's random schedule replays from its seed.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 for n = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A duration in `lo..=hi`, in whole milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo) + 1))
    }
}

/// A seed from the clock and the process's random hasher state.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}
