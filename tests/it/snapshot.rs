//! `key_evt_amqp.snapshot` and `key_evt_amqp.snapshot_cancel`: a consumer that applies the
//! stream in order converges on the dataset while writes go on, in short main-thread steps
//! (their strict bound is `tests/latency/snapshot.rs`'s, run alone); the snapshot waits out a
//! broker outage and never floods the fallback list; cancel, refusals; in a cluster each key is snapshotted once, by its master.
//!
//! The keys are written while the module's masks forward nothing (`keymask_clean`), so what
//! the consumer knows of them comes from the snapshot alone.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::{
    run, unique_routing_key, wait_until, Cluster, Consumer, Message, Mode, ModuleArgs, Node,
};

const WAIT: Duration = Duration::from_secs(30);
const QUIET: Duration = Duration::from_millis(700);
const EVENTS: &str = "g$lshzxe";

type Key = (i64, Vec<u8>);

fn node(prefix: &str, config: &[(&str, &str)]) -> Node {
    let mut b = Node::builder(prefix).events(EVENTS).timeouts(WAIT, QUIET);
    for (name, value) in config {
        b = b.config(name, value);
    }
    b.start()
}

fn db_of(m: &Message) -> i64 {
    let (db, _, _) = m
        .parts()
        .unwrap_or_else(|| panic!("not a text body: {m:?}"));
    std::str::from_utf8(db).unwrap().parse().unwrap()
}

fn event_of(m: &Message) -> &str {
    std::str::from_utf8(m.parts().unwrap().1).unwrap()
}

/// Every key of every database up to `dbs`, by SCAN (which also deletes what has expired).
fn dataset(n: &Node, dbs: i64) -> BTreeSet<Key> {
    let mut r = n.server.client();
    let mut out = BTreeSet::new();
    for db in 0..dbs {
        redis::cmd("SELECT").arg(db).query::<()>(&mut r).unwrap();
        let keys: Vec<Vec<u8>> = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("COUNT")
            .arg(1000)
            .clone()
            .iter(&mut r)
            .unwrap()
            .collect();
        out.extend(keys.into_iter().map(|k| (db, k)));
    }
    out
}

/// A consumer's view: the stream applied in order.
#[derive(Default)]
struct Applied {
    present: BTreeSet<Key>,
    /// `snapshot` events per key.
    snapshotted: HashMap<Key, usize>,
    begins: Vec<Message>,
    ends: Vec<Message>,
    /// `snapshot` events outside a begin/end frame.
    unframed: usize,
}

impl Applied {
    fn apply(&mut self, m: &Message) {
        let key = (db_of(m), m.key().to_vec());
        match event_of(m) {
            "snapshot_begin" => self.begins.push(m.clone()),
            "snapshot_end" => self.ends.push(m.clone()),
            "snapshot" => {
                if self.begins.len() == self.ends.len() {
                    self.unframed += 1;
                }
                *self.snapshotted.entry(key.clone()).or_default() += 1;
                self.present.insert(key);
            }
            "del" | "expired" | "evicted" => {
                self.present.remove(&key);
            }
            _ => {
                self.present.insert(key);
            }
        }
    }
}

/// A writer on its own connection: SET, list/set/hash/zset writes, DEL and short PEXPIREs
/// across `dbs` databases, on keys of its own and on the populated ones, until `stop`.
/// Returns the populated keys it touched.
fn writer(
    n: &Node,
    dbs: i64,
    per_db: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<HashSet<Key>> {
    let mut r = n.server.client();
    std::thread::spawn(move || {
        let mut touched = HashSet::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        while !stop.load(Ordering::Relaxed) {
            let mut p = redis::pipe();
            for _ in 0..10 {
                let db = (next() % dbs as u64) as i64;
                p.cmd("SELECT").arg(db).ignore();
                let populated = next() % 4 == 0;
                let key = if populated {
                    let k = format!("k:{db}:{}", next() % per_db as u64);
                    touched.insert((db, k.clone().into_bytes()));
                    k
                } else {
                    format!("w:{}", next() % 2000)
                };
                match next() % 8 {
                    0 | 1 => p.cmd("SET").arg(&key).arg("w"),
                    2 => p.cmd("DEL").arg(&key),
                    3 => p.cmd("PEXPIRE").arg(&key).arg(1 + next() % 20),
                    4 if !populated => p.cmd("RPUSH").arg(&key).arg("x"),
                    5 if !populated => p.cmd("SADD").arg(&key).arg("x"),
                    6 if !populated => p.cmd("HSET").arg(&key).arg("f").arg("x"),
                    7 if !populated => p.cmd("ZADD").arg(&key).arg(2).arg("x"),
                    _ => p.cmd("DEL").arg(&key),
                }
                .ignore();
            }
            // A WRONGTYPE reply (a write of another type on a live key) is expected now and then.
            let _ = p.query::<()>(&mut r);
            // About 5,000 writes a second: a steady load the consumer keeps up with.
            std::thread::sleep(Duration::from_millis(2));
        }
        touched
    })
}

fn receive_all(consumer: &mut Consumer, applied: &mut Applied, until: impl Fn(&Applied) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !until(applied) {
        assert!(
            Instant::now() < deadline,
            "the snapshot did not end in time"
        );
        if let Some(m) = consumer.recv(WAIT) {
            applied.apply(&m);
        } else {
            panic!("no message for {WAIT:?}");
        }
    }
}

#[test]
fn a_consumer_applying_the_stream_converges_on_the_dataset_while_writes_go_on() {
    const DBS: i64 = 4;
    const PER_DB: usize = 25_000;
    let mut n = node("snap-conv-", &[]);
    let populated = n.populate(DBS, PER_DB);
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(&n, DBS, PER_DB, stop.clone());
    std::thread::sleep(Duration::from_millis(100));

    let started = Instant::now();
    let id = n.cmd(&["key_evt_amqp.snapshot"]).unwrap();
    assert!(id.starts_with(&n.server.run_id()), "id {id}");
    let mut applied = Applied::default();
    receive_all(&mut n.consumer, &mut applied, |a| !a.ends.is_empty());
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let touched = w.join().unwrap();
    // Let the short expiries run out, SCAN (which expires what is left), and take what that
    // raised.
    std::thread::sleep(Duration::from_millis(200));
    let _ = dataset(&n, DBS);
    for m in n.consumer.drain_quiet(QUIET) {
        applied.apply(&m);
    }
    let truth = dataset(&n, DBS);

    assert_eq!(applied.begins.len(), 1);
    assert_eq!(applied.ends.len(), 1);
    for frame in [&applied.begins[0], &applied.ends[0]] {
        assert_eq!(frame.key_lossy(), id);
        assert_eq!(db_of(frame), -1, "every database: db -1");
    }
    assert_eq!(
        applied.unframed, 0,
        "snapshot events only between begin and end"
    );
    let twice: Vec<_> = applied
        .snapshotted
        .iter()
        .filter(|(_, &c)| c > 1)
        .take(5)
        .collect();
    assert!(twice.is_empty(), "snapshotted more than once: {twice:?}");
    let untouched: Vec<&Key> = populated.iter().filter(|k| !touched.contains(*k)).collect();
    let missing: Vec<_> = untouched
        .iter()
        .filter(|k| !applied.snapshotted.contains_key(**k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "keys present throughout, not snapshotted: {missing:?}"
    );
    let emitted: usize = applied.snapshotted.values().sum();
    assert_eq!(n.info("snapshot_keys"), emitted.to_string());
    assert_eq!(n.info("snapshots_completed"), "1");
    assert!(
        !applied
            .snapshotted
            .keys()
            .any(|(_, k)| k.starts_with(b"REDIS_MODULE-")),
        "the module's own list is not snapshotted"
    );
    let only_applied: Vec<_> = applied.present.difference(&truth).take(5).collect();
    let only_redis: Vec<_> = truth.difference(&applied.present).take(5).collect();
    assert!(
        only_applied.is_empty() && only_redis.is_empty(),
        "the applied state differs from Redis: only applied {only_applied:?}, only in Redis \
         {only_redis:?} ({} vs {} keys)",
        applied.present.len(),
        truth.len()
    );
    let step_max: u64 = n.info("main_thread_step_max_us").parse().unwrap();
    eprintln!(
        "snapshot of {emitted} keys ({} populated, {} touched by the writer) in {took:?}; \
         longest main-thread step {step_max} us; {} keys at the end",
        populated.len(),
        touched.len(),
        truth.len()
    );
    // The snapshot works in slices of SNAPSHOT_SLICE (1 ms). This test runs beside others on
    // 2 cores, so its bound is loose (20 ms; 5.7 ms was seen once in CI); the strict one (5 ms
    // of CPU, run alone) is `tests/latency/snapshot.rs`'s, where an unsliced snapshot of
    // 100,000 keys held the main thread for 48.7 ms.
    assert!(step_max < 20_000, "main_thread_step_max_us {step_max}");
    assert_eq!(
        n.info("events_spilled"),
        "0",
        "nothing went to the fallback list"
    );
}

#[test]
fn a_snapshot_during_a_broker_outage_completes_once_the_broker_is_back() {
    let mut n = Node::builder("snap-outage-")
        .events(EVENTS)
        .through_proxy(Mode::Refuse)
        .timeouts(WAIT, QUIET)
        .start();
    let populated = n.populate(2, 5_000);
    let id = n.cmd(&["key_evt_amqp.snapshot"]).unwrap();
    assert!(
        wait_until(WAIT, || n.info("snapshot_running") == "no"),
        "the snapshot runs to its end while the broker is away"
    );
    // Everything waits in the fallback list: begin, 10,000 keys, end.
    assert!(
        wait_until(Duration::from_secs(10), || n.fallback_len() == 10_002),
        "fallback list {}",
        n.fallback_len()
    );
    n.consumer.expect_none(QUIET);
    n.proxy().heal();
    let got = n.consumer.expect_exactly(10_002, WAIT, QUIET);
    assert_eq!(event_of(&got[0]), "snapshot_begin");
    assert_eq!(got[0].key_lossy(), id);
    assert_eq!(event_of(&got[10_001]), "snapshot_end");
    let keys: BTreeSet<Key> = got[1..10_001]
        .iter()
        .map(|m| {
            assert_eq!(event_of(m), "snapshot");
            (db_of(m), m.key().to_vec())
        })
        .collect();
    assert_eq!(keys, populated, "every key once");
    let seqs: Vec<u64> = got.iter().map(|m| m.identity().1).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order");
}

#[test]
fn a_snapshot_waits_for_room_instead_of_spilling() {
    // A queue of 1,000: unchecked, one slice (a millisecond of scanning) would overflow it.
    let mut n = node("snap-room-", &[("key_evt_amqp.queue_capacity", "1000")]);
    let populated = n.populate(1, 20_000);
    n.cmd(&["key_evt_amqp.snapshot", "DB", "0"]).unwrap();
    let got = n.consumer.expect_exactly(20_002, WAIT, QUIET);
    let keys: BTreeSet<Key> = got[1..20_001]
        .iter()
        .map(|m| (db_of(m), m.key().to_vec()))
        .collect();
    assert_eq!(keys, populated);
    assert_eq!(db_of(&got[0]), 0, "DB 0: the frame carries db 0");
    assert_eq!(
        n.info("events_spilled"),
        "0",
        "no event went to the fallback list"
    );
}

#[test]
fn cancel_ends_it_marked_and_one_runs_at_a_time_and_bad_arguments_are_refused() {
    // A small queue keeps the snapshot running long enough to be cancelled.
    let mut n = node(
        "snap-cancel-",
        &[
            ("key_evt_amqp.queue_capacity", "100"),
            ("key_evt_amqp.format", "json"),
        ],
    );
    n.populate(1, 20_000);
    for (args, words) in [
        (&["DB"][..], &["DB", "expected"][..]),
        (&["DB", "x"][..], &["DB", "'x'"][..]),
        (&["DB", "99999"][..], &["DB", "99999"][..]),
        (&["COUNT", "1"][..], &["argument", "COUNT"][..]),
        (&["MATCH"][..], &["MATCH"][..]),
    ] {
        let mut cmd = vec!["key_evt_amqp.snapshot"];
        cmd.extend(args);
        let e = n.cmd(&cmd).unwrap_err();
        assert!(words.iter().all(|w| e.contains(w)), "{args:?}: {e}");
    }
    assert_eq!(
        n.info("snapshot_running"),
        "no",
        "a refused snapshot changes nothing"
    );
    assert_eq!(
        run::<Option<String>>(&mut n.redis, &["key_evt_amqp.snapshot_cancel"]).unwrap(),
        None,
        "cancel with none running: nil"
    );

    let id = n
        .cmd(&["key_evt_amqp.snapshot", "MATCH", "^k:0:1"])
        .unwrap();
    let second = n.cmd(&["key_evt_amqp.snapshot"]).unwrap_err();
    assert!(
        second.contains(&id) && second.contains("running"),
        "{second}"
    );
    // Some keys come, then cancel.
    let first = n.consumer.expect(50, WAIT);
    assert_eq!(
        run::<Option<String>>(&mut n.redis, &["key_evt_amqp.snapshot_cancel"]).unwrap(),
        Some(id.clone())
    );
    assert_eq!(n.info("snapshot_running"), "no");
    let rest = n.consumer.drain_quiet(QUIET);
    let all: Vec<serde_json::Value> = first
        .iter()
        .chain(&rest)
        .map(|m| serde_json::from_slice(&m.body).unwrap())
        .collect();
    assert_eq!(all[0]["event"], "snapshot_begin");
    assert_eq!(all[0]["key"], id.as_str());
    assert_eq!(all[0]["db"], -1);
    let last = all.last().unwrap();
    assert_eq!(last["event"], "snapshot_end", "the end comes last: {last}");
    assert_eq!(last["key"], id.as_str());
    let keys = &all[1..all.len() - 1];
    assert!(keys
        .iter()
        .all(|k| k["event"] == "snapshot" && k["key"].as_str().unwrap().starts_with("k:0:1")));
    assert!(
        keys.len() < 11_111,
        "cancelled before the end ({} keys)",
        keys.len()
    );
    assert_eq!(n.info("snapshots_cancelled"), "1");
    // Only true once Data::cancelled and the json of payload values land (merge): the
    // stand-in on this branch is not rendered yet.
    assert_eq!(last["cancelled"], true, "snapshot_end of a cancel: {last}");
}

#[test]
fn a_replica_refuses_a_snapshot() {
    let n = node("snap-replica-", &[]);
    let replica = testkit::RedisServer::start(&n.args.to_vec());
    replica.replicate_from(&n.server, WAIT);
    let mut r = replica.client();
    let e = run::<String>(&mut r, &["key_evt_amqp.snapshot"]).unwrap_err();
    assert!(e.contains("replica"), "{e}");
}

#[test]
fn in_a_cluster_each_key_is_snapshotted_once_by_its_master() {
    let rk = unique_routing_key("snap-cluster-");
    let mut consumer = Consumer::bind("amq.direct", &rk);
    let cluster = Cluster::start(&ModuleArgs {
        events: EVENTS.into(),
        ..ModuleArgs::with_routing_key(&rk)
    });
    let keys = Cluster::keys_covering_all_masters(600);
    for k in &keys {
        cluster.set(k);
    }
    let masters: BTreeMap<String, u16> = cluster
        .masters()
        .iter()
        .map(|m| (m.run_id(), m.port()))
        .collect();
    // Sent to one master, it runs on all three under the same id.
    let first = cluster.masters()[0];
    let id: String = run(&mut first.client(), &["key_evt_amqp.snapshot"]).unwrap();
    let mut ends = Vec::new();
    let mut snapshotted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut begins = BTreeSet::new();
    let deadline = Instant::now() + WAIT;
    while ends.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "3 snapshot_end within {WAIT:?}, got {ends:?}"
        );
        let Some(m) = consumer.recv(WAIT) else { break };
        match event_of(&m) {
            "snapshot" => snapshotted
                .entry(m.key_lossy())
                .or_default()
                .push(m.identity().0),
            "snapshot_begin" => {
                assert_eq!(m.key_lossy(), id);
                begins.insert(m.identity().0);
            }
            "snapshot_end" => {
                assert_eq!(m.key_lossy(), id);
                ends.push(m.identity().0);
            }
            _ => {}
        }
    }
    for m in consumer.drain_quiet(QUIET) {
        assert_ne!(event_of(&m), "snapshot_end", "a fourth end: {m:?}");
        if event_of(&m) == "snapshot" {
            snapshotted
                .entry(m.key_lossy())
                .or_default()
                .push(m.identity().0);
        }
    }
    let senders: BTreeSet<String> = ends.iter().cloned().collect();
    assert_eq!(
        senders,
        masters.keys().cloned().collect(),
        "one end per master"
    );
    assert_eq!(begins, senders, "one begin per master");
    let want: BTreeSet<&String> = keys.iter().collect();
    let have: BTreeSet<&String> = snapshotted.keys().collect();
    assert_eq!(have, want, "every key, and only those");
    for (key, by) in &snapshotted {
        assert_eq!(by.len(), 1, "{key} snapshotted {} times", by.len());
        let owner = cluster.node_for_key(key.as_bytes()).run_id();
        assert_eq!(by[0], owner, "{key} snapshotted by its master");
    }
}

/// A key's state as the module writes it (`type`, `value`), sets sorted (their order is the
/// server's), zset scores as numbers.
fn normalized(kind: &str, value: &serde_json::Value) -> (String, serde_json::Value) {
    let mut value = value.clone();
    if kind == "set" {
        if let Some(items) = value.as_array_mut() {
            items.sort_by_key(|v| v.to_string());
        }
    }
    (kind.to_string(), value)
}

/// Every key's (type, value) in Redis, read with the commands of its type.
fn dataset_values(n: &Node, dbs: i64) -> BTreeMap<Key, (String, serde_json::Value)> {
    use serde_json::{json, Value};
    let mut r = n.server.client();
    let mut out = BTreeMap::new();
    for (db, key) in dataset(n, dbs) {
        redis::cmd("SELECT").arg(db).query::<()>(&mut r).unwrap();
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut r).unwrap();
        let q = |name: &str, args: &[&str], r: &mut redis::Connection| -> Vec<String> {
            let mut c = redis::cmd(name);
            c.arg(&key);
            for a in args {
                c.arg(*a);
            }
            c.query(r).unwrap()
        };
        let value = match kind.as_str() {
            "none" => continue, // expired between SCAN and TYPE
            "string" => {
                let v: String = redis::cmd("GET").arg(&key).query(&mut r).unwrap();
                json!(v)
            }
            "list" => json!(q("LRANGE", &["0", "-1"], &mut r)),
            "set" => json!(q("SMEMBERS", &[], &mut r)),
            "hash" => {
                let flat = q("HGETALL", &[], &mut r);
                Value::Object(
                    flat.chunks(2)
                        .map(|p| (p[0].clone(), json!(p[1])))
                        .collect(),
                )
            }
            "zset" => {
                let flat = q("ZRANGE", &["0", "-1", "WITHSCORES"], &mut r);
                json!(flat
                    .chunks(2)
                    .map(|p| json!([p[0], p[1].parse::<f64>().unwrap()]))
                    .collect::<Vec<_>>())
            }
            other => panic!("unexpected type {other}"),
        };
        out.insert((db, key), normalized(&kind, &value));
    }
    out
}

/// With `payload value`, the consumer keeps each key's value from the events alone (the
/// snapshot's, then the live ones'): at the end it holds exactly what Redis holds, value for
/// value.
#[test]
fn with_values_the_consumer_converges_value_for_value() {
    const DBS: i64 = 2;
    const PER_DB: usize = 10_000;
    let mut n = node(
        "snap-values-",
        &[
            ("key_evt_amqp.format", "json"),
            ("key_evt_amqp.payload", "value"),
        ],
    );
    n.populate(DBS, PER_DB);
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(&n, DBS, PER_DB, stop.clone());
    std::thread::sleep(Duration::from_millis(100));
    let id = n.cmd(&["key_evt_amqp.snapshot"]).unwrap();
    let mut state: BTreeMap<Key, (String, serde_json::Value)> = BTreeMap::new();
    let apply = |m: &Message, state: &mut BTreeMap<Key, (String, serde_json::Value)>| {
        let v: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
        let event = v["event"].as_str().unwrap();
        if event == "snapshot_end" {
            return true;
        }
        if event == "snapshot_begin" {
            return false;
        }
        let key = (
            v["db"].as_i64().unwrap(),
            v["key"].as_str().unwrap().as_bytes().to_vec(),
        );
        match v["type"].as_str().unwrap() {
            "none" => {
                state.remove(&key);
            }
            kind => {
                assert!(v.get("value").is_some(), "a value: {v}");
                state.insert(key, normalized(kind, &v["value"]));
            }
        }
        false
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert!(
            Instant::now() < deadline,
            "the snapshot did not end in time"
        );
        let m = n.consumer.recv(WAIT).expect("a message");
        if apply(&m, &mut state) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    w.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let _ = dataset(&n, DBS);
    for m in n.consumer.drain_quiet(QUIET) {
        apply(&m, &mut state);
    }
    let truth = dataset_values(&n, DBS);
    let differ: Vec<_> = truth
        .iter()
        .filter(|(k, v)| state.get(*k) != Some(v))
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k.1).into_owned(),
                v.clone(),
                state.get(k).cloned(),
            )
        })
        .take(5)
        .collect();
    let extra: Vec<_> = state
        .keys()
        .filter(|k| !truth.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        differ.is_empty() && extra.is_empty() && state.len() == truth.len(),
        "snapshot {id}: the consumer's values differ from Redis: {differ:?}; only the consumer \
         has {extra:?} ({} vs {} keys)",
        state.len(),
        truth.len()
    );
    assert!(truth.len() > PER_DB, "{} keys", truth.len());
}
