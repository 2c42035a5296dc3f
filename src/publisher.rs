//! The publisher thread: owns the AMQP connection, publishes batches with publisher confirms,
//! and connections with capped exponential back-off. Every network wait has a deadline: lapin
//! alone can hang for good on a peer that accepts TCP and never answers (DESIGN section 5).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

use crate::args::Settings;
use crate::event::Event;
use crate::outbox::Broker;
use crate::redis_log;
use crate::shared::{Shared, BATCH};
use crate::stats::{LinkState, Stats};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A batch not confirmed within this time means a dead or stuck connection.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
const IDLE_WAIT: Duration = Duration::from_millis(200);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub const APP_ID: &str = "key_evt_amqp";
const FRAME_MAX: u32 = 16 * 1024;

/// Starts the publisher thread.
/// `connection_name` shows in RabbitMQ's management tools (we use the node's run id in it).
pub fn spawn(
    shared: Arc<Shared>,
    connection_name: String,
    wake_main: fn(),
) -> std::io::Result<JoinHandle<()>> {
    init_executor();
    std::thread::Builder::new()
        .name("kea-publisher".into())
        .spawn(move || {
            Publisher {
                shared,
                connection_name,
                returned_logged_at: Cell::new(0),
                healthy: Cell::new(false),
                wake_main,
            }
            .run()
        })
}

/// lapin's tasks run on async-global-executor; one thread is plenty next to ours (2-core hosts).
fn init_executor() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        async_global_executor::init_with_config(
            async_global_executor::GlobalExecutorConfig::default()
                .with_min_threads(1)
                .with_max_threads(1)
                .with_thread_name_fn(|| "kea-executor".into()),
        )
    });
}

struct Publisher {
    shared: Arc<Shared>,
    connection_name: String,
    /// When unroutable events were last logged (milliseconds, see `stats::now_ms`).
    returned_logged_at: Cell<u64>,
    /// The last session confirmed events or had none to send (see [`Publisher::healthy`]).
    healthy: Cell<bool>,
    /// Asks the main thread for a maintenance step (refill) without waiting for its next tick.
    wake_main: fn(),
}

/// Why a session ended.
enum End {
    /// Stop, `disconnect`, `connect` or new connection settings: not an error.
    Asked,
    Failed(String),
}

impl Publisher {
    fn run(self) {
        let mut backoff = Backoff::default();
        while !self.shared.stopping() {
            if !self.shared.wants_connection() {
                let state = if self.shared.enabled.load(Relaxed) {
                    LinkState::Idle
                } else {
                    LinkState::Disabled
                };
                self.shared.link.set(state);
                self.shared.wait(IDLE_WAIT);
                continue;
            }
            let settings = self.shared.settings();
            self.shared.link.set(LinkState::Connecting);
            let requests = self.shared.reconnect_requests.load(Relaxed);
            let failure = match block_on_deadline(
                &self.shared,
                CONNECT_TIMEOUT,
                connect(&settings, &self.connection_name),
            )
            .and_then(|r| r)
            {
                Ok((conn, channel)) => {
                    Stats::add(&self.shared.stats.connections, 1);
                    self.shared.link.set(LinkState::Connected);
                    let end = self.serve(&settings, &channel, &conn, requests);
                    // Close politely, but never wait long for a peer that may be gone.
                    let _ = block_on_deadline(&self.shared, CLOSE_TIMEOUT, async {
                        conn.close(200, "bye".into())
                            .await
                            .map_err(|e| e.to_string())
                    });
                    match end {
                        End::Asked => None,
                        End::Failed(e) => Some(e),
                    }
                }
                Err(e) => Some(e),
            };
            if self.healthy.get() {
                backoff = Backoff::default();
            }
            if let Some(e) = failure.filter(|_| !self.shared.stopping()) {
                self.fail(&settings, e);
                self.pause(backoff.next_delay(), requests);
            }
        }
        self.shared.link.set(LinkState::Idle);
    }

    /// The broker takes events (a batch was confirmed, or nothing waits): logs the recovery once.
    fn healthy(&self, s: &Settings) {
        self.shared.link.mark_healthy();
        if !self.healthy.replace(true) {
            redis_log::notice(&format!("connected to broker {}:{}", s.host, s.port));
            self.shared.link.set_error(String::new());
        }
    }

    /// Waits out a back-off delay. New events do not cut it short (they would turn the back-off
    /// into a busy loop during an outage); unloading, `connect`, new settings, and running out
    /// of work do (the next event then gets a prompt attempt instead of a stale verdict).
    fn pause(&self, delay: Duration, requests: u64) {
        let until = std::time::Instant::now() + delay;
        let settings = self.shared.settings();
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero()
                || self.shared.stopping()
                || self.shared.reconnect_requests.load(Relaxed) != requests
                || !Arc::ptr_eq(&settings, &self.shared.settings())
                || !self.shared.wants_connection()
            {
                return;
            }
            self.shared.wait(left);
        }
    }

    /// Unroutable events are counted in INFO; the log says so at most once every 10 s.
    fn log_returned(&self, s: &Settings) {
        let now = crate::stats::now_ms();
        let last = self.returned_logged_at.get();
        if last == 0 || now.saturating_sub(last) >= 10_000 {
            self.returned_logged_at.set(now);
            redis_log::warning(&format!(
                "events are unroutable: no queue is bound to exchange '{}' with routing key '{}' \
                 ({} so far, see events_returned in INFO)",
                s.exchange,
                s.routing_key,
                self.shared.stats.returned.load(Relaxed)
            ));
        }
    }

    /// Records a failure; logs it when the broker stops taking events or the reason changes,
    /// so an outage makes one log line, not one per retry.
    fn fail(&self, settings: &Settings, error: String) {
        let error = scrub(&error, &settings.password);
        if self.healthy.replace(false) || error != self.shared.link.last_error() {
            redis_log::warning(&format!(
                "broker {}:{}: {error}",
                settings.host, settings.port
            ));
        }
        self.shared.link.set_error(error);
        self.shared.link.set(LinkState::Down);
    }

    /// Publishes batches on one connection until it fails or is no longer wanted.
    fn serve(
        &self,
        connected: &Settings,
        channel: &Channel,
        conn: &Connection,
        requests: u64,
    ) -> End {
        let shared = &*self.shared;
        loop {
            let settings = shared.settings();
            if shared.stopping()
                || !shared.enabled.load(Relaxed)
                || shared.reconnect_requests.load(Relaxed) != requests
                || !same_broker(connected, &settings)
            {
                return End::Asked;
            }
            if !conn.status().connected() || !channel.status().connected() {
                return End::Failed("connection lost".into());
            }
            let batch = {
                let mut outbox = shared.outbox.lock();
                if !outbox.has_ready() {
                    // Connected and not stalled: nothing to send, or a refill is on its way
                    // (which needs the broker not to be considered away).
                    shared.link.mark_healthy();
                    if !outbox.has_work() {
                        drop(outbox);
                        self.healthy(&settings);
                        outbox = shared.outbox.lock();
                    }
                    shared.wake.wait_for(&mut outbox, IDLE_WAIT);
                    continue;
                }
                outbox.take_batch(BATCH)
            };
            shared.link.batch_sent(true);
            let progress = Progress::default();
            let result = block_on_deadline(
                shared,
                CONFIRM_TIMEOUT,
                publish(channel, &settings, &batch, &progress),
            );
            shared.link.batch_sent(false);
            let confirmed = progress.confirmed.get();
            let failure = match result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(e) => Some(format!(
                    "no confirm for {} of {} events: {e}",
                    batch.len() - confirmed,
                    batch.len()
                )),
            };
            let stats = &shared.stats;
            Stats::add(&stats.published, progress.sent.get() as u64);
            Stats::add(&stats.confirmed, confirmed as u64);
            Stats::add(&stats.returned, progress.returned.get());
            Stats::add(&stats.nacked, u64::from(progress.nacked.get()));
            if failure.is_none() {
                self.healthy(&settings);
            }
            if progress.returned.get() > 0 {
                self.log_returned(&settings);
            }
            let wants_refill = {
                let mut outbox = shared.outbox.lock();
                outbox.confirmed(&batch[..confirmed]);
                outbox.give_back(batch.into_iter().skip(confirmed).collect());
                outbox.wants_tick(Broker::Ready, settings.fallback_size)
            };
            if wants_refill {
                (self.wake_main)();
            }
            if let Some(e) = failure {
                return End::Failed(e);
            }
        }
    }
}

fn same_broker(a: &Settings, b: &Settings) -> bool {
    (&a.host, a.port, &a.user, &a.password, a.heartbeat)
        == (&b.host, b.port, &b.user, &b.password, b.heartbeat)
}

async fn connect(s: &Settings, name: &str) -> Result<(Connection, Channel), String> {
    let uri = AMQPUri {
        scheme: AMQPScheme::AMQP,
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username: s.user.clone(),
                password: s.password.clone(),
            },
            host: s.host.clone(),
            port: s.port,
        },
        vhost: "/".into(),
        query: AMQPQueryString {
            heartbeat: Some(s.heartbeat),
            // lapin keeps 32 frames of buffer each way: 8 MB at RabbitMQ's default frame size
            // of 128 KiB, 1 MB at 16 KiB. Events are small; a larger one spans more frames.
            frame_max: Some(FRAME_MAX),
            ..AMQPQueryString::default()
        },
    };
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let conn = Connection::connect_uri(uri, props)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| format!("open channel: {e}"))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| format!("enable publisher confirms: {e}"))?;
    Ok((conn, channel))
}

/// What a batch achieved so far: kept up to date while it runs, so that a timeout still knows
/// which events were confirmed.
#[derive(Default)]
struct Progress {
    sent: Cell<usize>,
    /// Confirmed events, a prefix of the batch.
    confirmed: Cell<usize>,
    /// Of those, returned as unroutable (confirmed all the same: retrying cannot route them).
    returned: Cell<u64>,
    nacked: Cell<bool>,
}

/// Publishes a batch (mandatory, so unroutable events are reported) and waits for its confirms,
/// in order, stopping at the first failure.
async fn publish(
    channel: &Channel,
    s: &Settings,
    batch: &[Event],
    progress: &Progress,
) -> Result<(), String> {
    let exchange: ShortString = s.exchange.as_str().into();
    let routing_key: ShortString = s.routing_key.as_str().into();
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let failed = |e: lapin::Error| {
        format!(
            "publish to exchange '{}' with routing key '{}': {e}",
            s.exchange, s.routing_key
        )
    };
    // Every publish is issued before any confirm is awaited, so lapin writes them together.
    let sends = batch.iter().map(|e| {
        channel.basic_publish(
            exchange.clone(),
            routing_key.clone(),
            options,
            &e.body,
            properties(e, s.delivery_mode),
        )
    });
    let sent = join_all(sends.collect()).await;
    progress.sent.set(sent.iter().filter(|r| r.is_ok()).count());
    for (i, confirm) in sent.into_iter().enumerate() {
        match confirm.map_err(failed)?.await.map_err(failed)? {
            Confirmation::Ack(returned) => {
                if returned.is_some() {
                    progress.returned.set(progress.returned.get() + 1);
                }
            }
            Confirmation::NotRequested => {}
            Confirmation::Nack(_) => {
                progress.nacked.set(true);
                return Err(format!(
                    "exchange '{}' refused (nack) an event; it will be retried",
                    s.exchange
                ));
            }
        }
        progress.confirmed.set(i + 1);
    }
    Ok(())
}

fn properties(e: &Event, delivery_mode: u8) -> BasicProperties {
    let mut p = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_delivery_mode(delivery_mode)
        .with_app_id(APP_ID.into());
    if let Some(id) = e.id {
        p = p.with_message_id(id.message_id().into());
    }
    if e.timestamp > 0 {
        p = p.with_timestamp(e.timestamp);
    }
    p
}

/// Polls every future to completion, all of them from the first poll on.
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

/// Runs `fut` on this thread, giving up after `limit` or as soon as the module is stopping.
fn block_on_deadline<T>(
    shared: &Shared,
    limit: Duration,
    fut: impl Future<Output = T>,
) -> Result<T, String> {
    const STEP: Duration = Duration::from_millis(20);
    async_global_executor::block_on(futures_lite::future::or(async { Ok(fut.await) }, async {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if shared.stopping() {
                return Err("module unloading".to_string());
            }
            async_io::Timer::after(STEP.min(limit)).await;
        }
        Err(format!("timed out after {} ms", limit.as_millis()))
    }))
}

/// Removes the password from a message that may quote it (a URI in an error, say).
fn scrub(message: &str, password: &str) -> String {
    if password.is_empty() {
        message.to_string()
    } else {
        message.replace(password, "<hidden>")
    }
}

/// Capped exponential back-off with jitter, so many nodes do not reconnect in step.
#[derive(Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let base = BACKOFF_MIN
            .saturating_mul(1 << self.attempt.min(10))
            .min(BACKOFF_MAX);
        self.attempt = self.attempt.saturating_add(1);
        // Jitter from the clock's low bits: -25% .. +25%.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let quarter = base / 4;
        let jitter = quarter.mul_f64(f64::from(nanos % 1000) / 500.0);
        (base - quarter + jitter).min(BACKOFF_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap() {
        let mut b = Backoff::default();
        let delays: Vec<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= BACKOFF_MIN * 3 / 4 && delays[0] <= BACKOFF_MIN * 5 / 4);
        assert!(delays[3] > delays[0]);
        assert!(delays.iter().all(|d| *d <= BACKOFF_MAX));
        assert!(delays[19] >= BACKOFF_MAX * 3 / 4);
    }

    #[test]
    fn passwords_are_scrubbed() {
        assert_eq!(scrub("amqp://u:s3cret@h", "s3cret"), "amqp://u:<hidden>@h");
        assert_eq!(scrub("refused", ""), "refused");
    }

    #[test]
    fn a_deadline_ends_a_future_that_never_completes() {
        let shared = Shared::new(Settings::default());
        let r = block_on_deadline(
            &shared,
            Duration::from_millis(50),
            std::future::pending::<()>(),
        );
        assert!(r.unwrap_err().contains("timed out"));
    }
}
