//! Measurement 2: delivery rate Redis → consumer against a raw lapin publisher with confirms,
//! and the module's publisher CPU per confirmed event.

use crate::consumer::Consumer;
use crate::cpu::{self_cpu, threads_cpu, PUBLISHER_THREADS};
use crate::harness::{module_args, unique, with_deadline, Redis, Res, AMQP_URL, EXCHANGE};
use crate::report::md::fixed;
use crate::report::Section;
use crate::stats::median;
use crate::Sizes;
use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions},
    BasicProperties, Connection, ConnectionProperties,
};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

/// Awaits every future, polling them together.
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

/// A connection of this process to the local RabbitMQ, with a channel in confirm mode.
pub fn raw_channel() -> Res<(Connection, lapin::Channel)> {
    with_deadline(Duration::from_secs(15), "raw connect", async {
        let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok((conn, channel))
    })
}

/// Each round's figures.
#[derive(Default)]
struct Rounds {
    mod_rate: Vec<f64>,
    raw_rate: Vec<f64>,
    mod_cpu: Vec<f64>,
    raw_cpu: Vec<f64>,
    spilled: Vec<f64>,
}

/// The module: pipelined SETs, timed from the first SET to the last delivery. Returns
/// (events/s, publisher CPU µs per confirmed event, events spilled).
fn module_round(
    redis: &Redis,
    consumer: &Consumer,
    round: usize,
    n: u64,
    limit: Duration,
) -> Res<(f64, f64, f64)> {
    let base = consumer.count();
    let confirmed0 = redis.kea("events_confirmed")?;
    let spilled0 = redis.kea("events_spilled")?;
    let cpu0 = threads_cpu(redis.pid(), PUBLISHER_THREADS);
    let t0 = Instant::now();
    redis.fill_sets(&format!("d{round}:"), n)?;
    let t1 = consumer.wait_count(base + n, limit)?;
    redis.wait_drained(limit)?;
    let cpu = threads_cpu(redis.pid(), PUBLISHER_THREADS) - cpu0;
    let confirmed = redis.kea("events_confirmed")? - confirmed0;
    Ok((
        n as f64 / (t1 - t0).as_secs_f64(),
        cpu * 1e6 / confirmed.max(1) as f64,
        (redis.kea("events_spilled")? - spilled0) as f64,
    ))
}

/// The raw lapin publisher, same bodies, batches of 1000. Returns (events/s, this process's
/// CPU µs per confirmed event).
fn raw_round(
    channel: &lapin::Channel,
    consumer: &Consumer,
    rk: &str,
    round: usize,
    n: u64,
    limit: Duration,
) -> Res<(f64, f64)> {
    let base = consumer.count();
    let cpu0 = self_cpu();
    let t0 = Instant::now();
    let confirmed = raw_publish(channel, rk, round, n)?;
    let t1 = consumer.wait_count(base + n, limit)?;
    let cpu = (self_cpu() - cpu0) * 1e6 / confirmed.max(1) as f64;
    Ok((n as f64 / (t1 - t0).as_secs_f64(), cpu))
}

pub fn run(s: &Sizes) -> Res<Section> {
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
    let (conn, channel) = raw_channel()?;
    let limit = Duration::from_secs(if s.quick { 30 } else { 240 });
    let mut r = Rounds::default();
    for round in 0..s.rounds {
        let (mod_rate, mod_cpu, spilled) = module_round(&redis, &c_mod, round, n, limit)?;
        let (raw_rate, raw_cpu) = raw_round(&channel, &c_raw, &rk_raw, round, n, limit)?;
        eprintln!(
            "bench: 2: round {}: module {mod_rate:.0}/s, raw lapin {raw_rate:.0}/s",
            round + 1
        );
        r.mod_rate.push(mod_rate);
        r.mod_cpu.push(mod_cpu);
        r.spilled.push(spilled);
        r.raw_rate.push(raw_rate);
        r.raw_cpu.push(raw_cpu);
    }
    drop(conn);
    Ok(section(s, capacity_set, &r))
}

fn section(s: &Sizes, capacity_set: bool, r: &Rounds) -> Section {
    let n = s.deliver_n;
    let (mr, rr) = (median(&r.mod_rate), median(&r.raw_rate));
    let (mod_cpu, raw_cpu) = (median(&r.mod_cpu), median(&r.raw_cpu));
    let mut out = Section::default();
    out.line("");
    out.line(format!(
        "## 2. Delivery rate: {n} events to a consumer (median of {} round(s))",
        s.rounds
    ));
    out.line("");
    out.line(format!(
        "Module: filled by pipelined SETs (1000 per round trip) with the module forwarding every key, timed from the first SET to the last message received{}; events spilled to the fallback list meanwhile: {}. Raw: lapin 4.12 publisher with confirms in this process, same bodies (`0\\nset\\nk<i>`), batches of 1000 (all basic_publish issued, then confirms awaited), timed to the last message received.",
        if capacity_set { format!(" (queue_capacity set to {n})") } else { String::new() },
        fixed(median(&r.spilled), 0)
    ));
    out.line("");
    out.line("| publisher | events/s | ratio to raw lapin | CPU µs per confirmed event |");
    out.line("|-----------|---------:|-------------------:|---------------------------:|");
    out.line(format!(
        "| module (thread kea-publisher) | {} | {} | {} |",
        fixed(mr, 0),
        fixed(mr / rr, 3),
        fixed(mod_cpu, 2)
    ));
    out.line(format!(
        "| raw lapin (whole bench process) | {} | 1.000 | {} |",
        fixed(rr, 0),
        fixed(raw_cpu, 2)
    ));
    for (k, v) in [
        ("module_events_per_s", mr),
        ("raw_lapin_events_per_s", rr),
        ("ratio", mr / rr),
        ("module_cpu_us_per_event", mod_cpu),
        ("raw_cpu_us_per_event", raw_cpu),
    ] {
        out.put("2_delivery", k, v);
    }
    out.rate_bar("delivery: module", mr);
    out.rate_bar("delivery: raw lapin", rr);
    out
}
