//! Measurement 6: how long one event takes from the SET to the consumer, one event at a time
//! (what a cache invalidation waits for), beside a raw lapin publisher's publish → consumer
//! (the broker's own share). The variants set their own module configs: `KEA_BENCH_CONFIG`
//! does not apply here.

use crate::harness::{module_args, unique, with_deadline, Redis, Res, EXCHANGE};
use crate::m2_delivery::raw_channel;
use crate::report::md::fixed;
use crate::report::Section;
use crate::stats::{max, percentile};
use crate::Sizes;
use lapin::{options::BasicPublishOptions, BasicProperties};
use std::time::Duration;
use testkit::{Consumer, ConsumerOptions, Message, OneAtATime};

/// Events sent and received before the measured ones: the module's connection, the queue and
/// the first publishes settle.
const WARM_UP: usize = 10;
/// The longest any one event may take before the measurement fails.
const EVENT_LIMIT: Duration = Duration::from_secs(10);

/// Who publishes the events.
enum Source {
    /// This process, with lapin, on a confirm-mode channel (confirms not awaited).
    Raw,
    /// A Redis with the module forwarding every key, with these configs.
    Module(&'static [(&'static str, &'static str)]),
}

struct Variant {
    /// Its row in results.md, and its key in results.json.
    label: &'static str,
    key: &'static str,
    source: Source,
    /// The pause after each event has arrived: under `POLL_FOR` (20 ms) the publisher is
    /// still polling the outbox; over it, the publisher sleeps and the event loop's step wakes it.
    gap: Duration,
    /// Whether the variant takes `Sizes::latency_slow_n` events (long gaps) or `latency_n`.
    slow: bool,
}

const VARIANTS: [Variant; 4] = [
    Variant {
        label: "raw lapin publisher",
        key: "raw",
        source: Source::Raw,
        gap: Duration::from_millis(2),
        slow: false,
    },
    Variant {
        label: "module, text, publisher polling (handed over by the keyspace callback)",
        key: "text_polling",
        source: Source::Module(&[]),
        gap: Duration::from_millis(2),
        slow: false,
    },
    Variant {
        label: "module, text, publisher asleep (woken by the event loop's step)",
        key: "text_asleep",
        source: Source::Module(&[]),
        gap: Duration::from_millis(50),
        slow: true,
    },
    Variant {
        label: "module, json, batch 100 (linger 5 ms)",
        key: "json_batch100",
        source: Source::Module(&[
            ("key_evt_amqp.format", "json"),
            ("key_evt_amqp.batch", "100"),
            ("key_evt_amqp.batch_linger_ms", "5"),
        ]),
        gap: Duration::from_millis(2),
        slow: false,
    },
];

/// Makes the event of a key.
type Send<'a> = Box<dyn FnMut(&str) -> Res<()> + 'a>;

/// Sends `n` events one at a time (see [`OneAtATime`]); returns each one's time from the send
/// to its receipt, in ms.
fn one_at_a_time(consumer: &mut Consumer, send: Send, n: u64, gap: Duration) -> Res<Vec<f64>> {
    let events = OneAtATime {
        warm_up: WARM_UP,
        n: n as usize,
        gap,
        limit: EVENT_LIMIT,
    };
    // The key is in the body whatever the format (text's last line, json's "key").
    let names_key = |m: &Message, key: &str| {
        if m.body.windows(key.len()).any(|w| w == key.as_bytes()) {
            Ok(())
        } else {
            Err(format!("expected the event of {key}, got {m:?}"))
        }
    };
    let took = events.run(consumer, "lat", send, names_key)?;
    Ok(took.iter().map(|d| d.as_secs_f64() * 1e3).collect())
}

/// One variant's latencies, in ms.
fn measure(v: &Variant, n: u64) -> Res<Vec<f64>> {
    let rk = unique(&format!("m6{}", v.key));
    let mut consumer = Consumer::connect(&ConsumerOptions::new(EXCHANGE, &rk))?;
    match v.source {
        Source::Raw => {
            let (_conn, channel) = raw_channel()?;
            let send: Send = Box::new(|key| {
                let body = format!("0\nset\n{key}").into_bytes();
                with_deadline(EVENT_LIMIT, "raw publish", async {
                    channel
                        .basic_publish(
                            EXCHANGE.into(),
                            rk.as_str().into(),
                            BasicPublishOptions::default(),
                            &body,
                            BasicProperties::default().with_delivery_mode(1),
                        )
                        .await
                        .map(drop)
                        .map_err(|e| format!("publish: {e}"))
                })
            });
            one_at_a_time(&mut consumer, send, n, v.gap)
        }
        Source::Module(configs) => {
            let server = Redis::start_with(configs, Some(&module_args(5672, &rk, "ALL")))?;
            let mut c = server.conn()?;
            let send: Send = Box::new(move |key| {
                redis::cmd("SET")
                    .arg(key)
                    .arg("v")
                    .query::<()>(&mut c)
                    .map_err(|e| format!("SET: {e}"))
            });
            one_at_a_time(&mut consumer, send, n, v.gap)
        }
    }
}

pub fn run(s: &Sizes) -> Res<Section> {
    let mut rows = Vec::new();
    for v in &VARIANTS {
        let n = if v.slow {
            s.latency_slow_n
        } else {
            s.latency_n
        };
        let mut lat = measure(v, n)?;
        let (p50, p90, p99) = (
            percentile(&mut lat, 50.0),
            percentile(&mut lat, 90.0),
            percentile(&mut lat, 99.0),
        );
        let worst = max(&lat);
        eprintln!(
            "bench: 6: {}: p50 {p50:.3} p99 {p99:.3} max {worst:.3} ms",
            v.key
        );
        rows.push((v, n, [p50, p90, p99, worst]));
    }
    let mut out = Section::default();
    out.line("");
    out.line(format!(
        "## 6. Event latency: one event at a time, from the SET (or the raw publish) to its receipt by a consumer in this process ({WARM_UP} events first, not counted; the next one is sent when the last has arrived and the pause has passed)"
    ));
    out.line("");
    out.line("| publisher | pause ms | events | p50 ms | p90 ms | p99 ms | max ms |");
    out.line("|-----------|---------:|-------:|-------:|-------:|-------:|-------:|");
    for (v, n, figures) in &rows {
        let [p50, p90, p99, worst] = *figures;
        out.line(format!(
            "| {} | {} | {n} | {} | {} | {} | {} |",
            v.label,
            v.gap.as_millis(),
            fixed(p50, 3),
            fixed(p90, 3),
            fixed(p99, 3),
            fixed(worst, 3)
        ));
        for (name, value) in [
            ("p50_ms", p50),
            ("p90_ms", p90),
            ("p99_ms", p99),
            ("max_ms", worst),
        ] {
            out.put("6_latency", format!("{}_{name}", v.key), value);
        }
    }
    Ok(out)
}
