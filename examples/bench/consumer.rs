//! The counting AMQP consumer: a child process (this same binary, `bench consume ROUTING_KEY
//! [--distinct]`, [`consume_main`]) that prints its counts, read back by [`Consumer`].

use crate::harness::{die_with_parent, with_deadline, Res, AMQP_URL, EXCHANGE};
use futures_lite::StreamExt;
use lapin::{
    options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
    Connection, ConnectionProperties,
};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The consumer child process: how many messages it received, and how many distinct keys
/// (with `--distinct`).
pub struct Consumer {
    child: Child,
    count: Arc<AtomicU64>,
    distinct: Arc<AtomicU64>,
}

impl Consumer {
    /// Starts it bound to `routing_key` on amq.direct; returns once its queue is bound.
    pub fn start(routing_key: &str, distinct: bool) -> Res<Consumer> {
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

    /// Messages received so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Distinct keys received so far (a consumer started with `distinct`).
    pub fn distinct(&self) -> u64 {
        self.distinct.load(Ordering::SeqCst)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until no message has come for 300 ms.
    pub fn wait_quiet(&self, limit: Duration) -> Res<()> {
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
    pub fn wait_count(&self, n: u64, limit: Duration) -> Res<Instant> {
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

/// Connects to the local RabbitMQ and consumes (no ack) from an exclusive queue bound to
/// `routing_key` on amq.direct. The channel is returned too: it must outlive the stream.
fn subscribe(routing_key: &str) -> Res<(Connection, lapin::Channel, lapin::Consumer)> {
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
    Ok((conn, channel, consumer))
}

/// Prints `ready`, then `count keys` every 2 ms when they changed; exits the process when
/// stdout is closed (the bench has gone).
fn report_counts(count: Arc<AtomicU64>, keys: Arc<AtomicU64>) {
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

/// The child process: consumes until its stream ends, printing `count distinct` on every change.
pub fn consume_main(routing_key: &str, distinct: bool) -> Res<()> {
    let (conn, _channel, consumer) = subscribe(routing_key)?;
    let count = Arc::new(AtomicU64::new(0));
    let keys = Arc::new(AtomicU64::new(0));
    report_counts(count.clone(), keys.clone());
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    async_global_executor::block_on(async {
        let mut consumer = consumer;
        while let Some(delivery) = consumer.next().await {
            let Ok(d) = delivery else { break };
            // A batched message (`key_evt_amqp.batch`) counts its events, one a line.
            let batched = d
                .properties
                .content_type()
                .as_ref()
                .is_some_and(|c| c.as_str() == "application/x-ndjson");
            let events: Vec<&[u8]> = if batched {
                d.data
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .collect()
            } else {
                vec![&d.data[..]]
            };
            if distinct {
                for event in &events {
                    let key = if batched {
                        serde_json::from_slice::<serde_json::Value>(event)
                            .ok()
                            .and_then(|v| v["key"].as_str().map(|k| k.as_bytes().to_vec()))
                            .unwrap_or_default()
                    } else {
                        event
                            .splitn(3, |&b| b == b'\n')
                            .nth(2)
                            .unwrap_or(&[])
                            .to_vec()
                    };
                    if seen.insert(key) {
                        keys.store(seen.len() as u64, Ordering::SeqCst);
                    }
                }
            }
            count.fetch_add(events.len() as u64, Ordering::SeqCst);
        }
    });
    drop(conn);
    Err("the consumer stream ended".into())
}
