//! Measurement 5: memory. The module's heap at full queue capacity, Redis bytes per event
//! waiting in the fallback list, and what remains after the drain (twice).

use crate::consumer::Consumer;
use crate::harness::{free_port, module_args, unique, Redis, Res, FALLBACK_KEY};
use crate::report::md::fixed;
use crate::report::Section;
use crate::Sizes;
use std::time::{Duration, Instant};

/// a) The module's heap with exactly `capacity` events in memory, the broker refused.
struct Heap {
    cap: u64,
    /// Seconds to write the `cap` SETs.
    fill_s: f64,
    /// heap_bytes before the SETs.
    heap0: u64,
    heap: u64,
    peak: u64,
    queued: u64,
    spilled: u64,
}

fn heap_at_capacity(cap: u64, dead: u16) -> Res<Heap> {
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
    Ok(Heap {
        cap,
        fill_s,
        heap0,
        heap: get("heap_bytes"),
        peak: get("heap_peak_bytes"),
        queued: get("queue_length"),
        spilled: get("fallback_length"),
    })
}

impl Heap {
    fn per_event(&self) -> f64 {
        (self.heap as f64 - self.heap0 as f64) / self.queued.max(1) as f64
    }
}

/// The same SETs go to a Redis with the module (its broker refused until connected) and to
/// one without it, whose used_memory is the key space's.
struct Pair {
    with: Redis,
    without: Redis,
}

impl Pair {
    /// used_memory of (with, without).
    fn used(&self) -> Res<(u64, u64)> {
        let used = |r: &Redis| r.info_u64("memory", "used_memory");
        Ok((used(&self.with)?, used(&self.without)?))
    }

    /// An outage: `n` SETs `prefix%08d` to both, until the module has spilled them all.
    fn outage(&self, prefix: &str, n: u64, limit: Duration) -> Res<()> {
        self.with.fill_sets(prefix, n)?;
        self.without.fill_sets(prefix, n)?;
        self.with.wait_spilled(n, limit)
    }

    /// Connects the module to the local RabbitMQ until the consumer has `total` events and
    /// the module holds none, then disconnects and leaves it idle: compared in the state of
    /// the baseline, after the module's next idle step has given back its buffers (Redis runs
    /// one every 100 ms).
    fn drain(&self, consumer: &Consumer, total: u64, limit: Duration) -> Res<()> {
        self.with
            .cmd(&["key_evt_amqp.connect", "127.0.0.1", "5672"])?;
        consumer.wait_count(total, limit)?;
        self.with.wait_drained(Duration::from_secs(30))?;
        self.with.cmd(&["key_evt_amqp.disconnect"])?;
        std::thread::sleep(Duration::from_secs(1));
        Ok(())
    }
}

/// b) Redis bytes per event waiting in the fallback list beyond the key space, and what the
/// drains leave.
struct Fallback {
    n: u64,
    warm_n: u64,
    /// What the warm-up outage left allocated once, in bytes.
    one_time: f64,
    /// used_memory growth during the outage, with the module and without (the key space).
    with_delta: i64,
    keyspace: f64,
    list_bytes: f64,
    heap_before: u64,
    heap_spilled: u64,
    heap_drained: u64,
    /// Bytes per event beyond the key space, with and without the module heap's growth.
    per_event: f64,
    per_event_no_heap: f64,
    /// Bytes per event left after the first drain and after a second outage's drain.
    retained: f64,
    retained_again: f64,
}

fn fallback(n: u64, dead: u16, quick: bool) -> Res<Fallback> {
    let rk = unique("m5b");
    let pair = Pair {
        with: Redis::start(Some(&module_args(dead, &rk, "ALL")))?,
        without: Redis::start(None)?,
    };
    let consumer = Consumer::start(&rk, false)?;
    let limit = Duration::from_secs(if quick { 30 } else { 120 });
    // One small outage and drain first: what is allocated once (the broker connection, Redis's
    // pool of temporary clients for a module's calls) is then in the baseline, and "retained"
    // is what grows with the number of events.
    let (w_start, p_start) = pair.used()?;
    let warm_n = (n / 100).max(1000);
    pair.outage("w:", warm_n, limit)?;
    pair.drain(&consumer, warm_n, Duration::from_secs(60))?;
    let (w0, p0) = pair.used()?;
    let one_time = (w0 as f64 - w_start as f64) - (p0 as f64 - p_start as f64);
    let heap_before = pair.with.kea("heap_bytes")?;
    pair.outage("m:", n, limit)?;
    let (w1, p1) = pair.used()?;
    let list_bytes = match pair
        .with
        .cmd(&["MEMORY", "USAGE", FALLBACK_KEY, "SAMPLES", "0"])?
    {
        redis::Value::Int(v) => v as f64,
        _ => f64::NAN,
    };
    let heap_spilled = pair.with.kea("heap_bytes")?;
    let keyspace = p1 as f64 - p0 as f64;
    let per_event_no_heap =
        (w1 as f64 - w0 as f64 - keyspace - (heap_spilled as f64 - heap_before as f64)) / n as f64;
    let per_event = (w1 as f64 - w0 as f64 - keyspace) / n as f64;
    pair.drain(&consumer, warm_n + n, limit)?;
    let (w2, p2) = pair.used()?;
    let heap_drained = pair.with.kea("heap_bytes")?;
    // The key space measured again: Redis may have been resizing its dict at p1.
    let retained = ((w2 as f64 - w0 as f64) - (p2 as f64 - p0 as f64)) / n as f64;
    // A second outage of the same size: whatever the first left must not grow again.
    pair.outage("r:", n, limit)?;
    pair.drain(&consumer, warm_n + 2 * n, limit)?;
    let (w3, p3) = pair.used()?;
    let retained_again = ((w3 as f64 - w2 as f64) - (p3 as f64 - p2 as f64)) / n as f64;
    Ok(Fallback {
        n,
        warm_n,
        one_time,
        with_delta: w1 as i64 - w0 as i64,
        keyspace,
        list_bytes,
        heap_before,
        heap_spilled,
        heap_drained,
        per_event,
        per_event_no_heap,
        retained,
        retained_again,
    })
}

pub fn run(s: &Sizes) -> Res<Section> {
    let dead = free_port(); // nothing listens there: the broker refuses
    let heap = heap_at_capacity(s.capacity, dead)?;
    let fallback = fallback(s.spill_n, dead, s.quick)?;
    let mut out = Section::default();
    out.line("");
    out.line("## 5. Memory");
    heap_table(&mut out, &heap);
    fallback_table(&mut out, &fallback);
    out.line("");
    out.line("The module's heap is allocated through Redis's allocator, so it is part of used_memory. What is retained beyond it is Redis's own, most likely the pool in which Redis keeps the temporary clients of a module's calls (the steps seen are one such client, about 24.6 KB), sized by the deepest nesting seen so far (a list command inside the event-loop hook, its keyspace event inside that): the first outages may add one; it does not grow with the number of events.");
    figures(&mut out, &heap, &fallback);
    Ok(out)
}

fn heap_table(out: &mut Section, h: &Heap) {
    let cap = h.cap;
    out.line("");
    out.line(format!(
        "Module heap with the broker refused, queue_capacity {cap}, {cap} SETs written in {:.2} s:",
        h.fill_s
    ));
    out.line("");
    out.line("| events in memory | in fallback list | heap_bytes | heap_peak_bytes | heap bytes per event in memory |");
    out.line("|-----------------:|-----------------:|-----------:|----------------:|-------------------------------:|");
    out.line(format!(
        "| {} | {} | {} | {} | {} |",
        h.queued,
        h.spilled,
        h.heap,
        h.peak,
        fixed(h.per_event(), 1)
    ));
}

fn fallback_table(out: &mut Section, b: &Fallback) {
    let n = b.n;
    out.line("");
    out.line(format!("Redis memory for {n} events waiting in the fallback list (keys `m:%08d`, value `v`; key space measured on a Redis without the module). Before it, one outage of {} events spilled to the list and drained: what the first outage leaves allocated once (the broker connection, Redis's pool of temporary clients for the module's list commands) is {} bytes, part of the baseline below.", b.warm_n, b.one_time as i64));
    out.line("");
    out.line("| | bytes | per waiting event |");
    out.line("|---|---:|---:|");
    out.line(format!(
        "| used_memory delta, Redis with the module | {} | |",
        b.with_delta
    ));
    out.line(format!(
        "| used_memory delta, same SETs without the module (key space) | {} | |",
        b.keyspace as i64
    ));
    out.line(format!(
        "| **beyond the key space** (list + module heap) | {} | **{}** |",
        (b.with_delta as f64 - b.keyspace) as i64,
        fixed(b.per_event, 1)
    ));
    out.line(format!(
        "| beyond the key space, without the module heap's growth ({} → {} bytes) | {} | {} |",
        b.heap_before,
        b.heap_spilled,
        (b.per_event_no_heap * n as f64) as i64,
        fixed(b.per_event_no_heap, 1)
    ));
    out.line(format!(
        "| MEMORY USAGE of the fallback list | {} | {} |",
        b.list_bytes as i64,
        fixed(b.list_bytes / n as f64, 1)
    ));
    out.line(format!(
        "| retained after the drain (used_memory after − before − key space, both disconnected and idle) | {} | {} |",
        (b.retained * n as f64) as i64,
        fixed(b.retained, 3)
    ));
    out.line(format!(
        "| of which module heap_bytes growth ({} → {} bytes after the drain) | {} | {} |",
        b.heap_before,
        b.heap_drained,
        b.heap_drained as i64 - b.heap_before as i64,
        fixed((b.heap_drained as f64 - b.heap_before as f64) / n as f64, 3)
    ));
    out.line(format!(
        "| retained after a second outage of {n} events, drained (same measure) | {} | {} |",
        (b.retained_again * n as f64) as i64,
        fixed(b.retained_again, 3)
    ));
}

fn figures(out: &mut Section, h: &Heap, b: &Fallback) {
    for (k, v) in [
        ("capacity", h.cap as f64),
        ("events_in_memory", h.queued as f64),
        ("heap_bytes", h.heap as f64),
        ("heap_peak_bytes", h.peak as f64),
        ("heap_bytes_per_event", h.per_event()),
        ("fallback_bytes_per_event", b.per_event),
        ("retained_bytes_per_event", b.retained),
        ("retained_bytes_per_event_second_outage", b.retained_again),
        ("one_time_bytes", b.one_time),
        ("list_memory_usage_per_event", b.list_bytes / b.n as f64),
        ("heap_bytes_spilled", b.heap_spilled as f64),
        ("heap_bytes_after_drain", b.heap_drained as f64),
        ("heap_bytes_before", b.heap_before as f64),
        ("fallback_bytes_per_event_without_heap", b.per_event_no_heap),
    ] {
        out.put("5_memory", k, v);
    }
}
