//! One publisher session: connect to the first broker that answers, publish batches with
//! confirms until the connection fails or is no longer wanted, back off, and again. Several
//! brokers (`key_evt_amqp.uri` lists them) are tried in order, each with its own deadline,
//! before backing off; the session sticks to the one that works.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::amqp::connection::{Confirms, ConnError, Connection};
use crate::amqp::tls::tls_config;
use crate::core::event::RunId;
use crate::core::limits::{Backoff, LastLogged, LogBudget, Throttle};
use crate::core::link::{now_ms, LinkState};
use crate::core::policy::{
    ANSWER_WHILE_POLLING, AWAY_AFTER, BATCH, CLOSE_TIMEOUT, CONFIRM_TIMEOUT, CONNECT_TIMEOUT,
    IDLE_WAIT, POLL_EVERY, POLL_FOR, SUMMARY_EVERY,
};
use crate::core::settings::Settings;
use crate::core::uri::Endpoint;
use crate::publisher::batched::Batcher;
use crate::publisher::encode::{scrub, Encoder};
use crate::publisher::in_flight::InFlight;
use crate::publisher::plan::{Plan, PlanWatch};
use crate::state::shared::Shared;
use crate::state::stats::Stats;

pub struct Session {
    shared: Arc<Shared>,
    connection_name: String,
    /// Asks the main thread for a maintenance step (refill) without waiting for its next tick.
    wake_main: fn(),
    /// Unroutable events are counted in INFO; the log says so at most every 10 s.
    returned_log: Throttle,
    /// The last connection confirmed events or had none to send (see [`Session::healthy`]).
    healthy: bool,
    /// The brokers of the last connection round; per-broker state below refers to it.
    plan: Option<Plan>,
    /// Index of the broker tried first: the one that worked last.
    current: usize,
    /// Per broker, the failure last logged for it (a failover is logged once per reason).
    failover_logged: Vec<LastLogged>,
    /// The broker last logged as connected (a switch to another one is logged again).
    connected_logged: Option<Endpoint>,
    /// Caps the connection lines when brokers flap.
    link_log: LogBudget,
    /// Formats, headers and routing keys of each batch (its buffers kept between batches).
    encoder: Encoder,
    /// Batched messages (`key_evt_amqp.batch` over 1).
    batcher: Batcher,
    /// Since when fewer events than a batched message holds are ready: they wait up to
    /// `batch_linger_ms` for more.
    lingering_since: Option<Instant>,
    /// When the broker was last answered between batches: a long linger answers it (and
    /// heartbeats) every `IDLE_WAIT`, as idleness does.
    answered_at: Instant,
    /// When events were last ready: for [`POLL_FOR`] after that, this thread polls the
    /// outbox (see `Shared::publisher_polls`).
    ready_at: Option<Instant>,
}

/// Why a connection ended.
enum End {
    /// Stop, `disconnect`, `connect` or new connection settings: not an error.
    Asked,
    Failed(String),
}

/// A failure to log and show: what failed (`broker amqp://…` or `no broker reachable`) and why.
struct Failure {
    what: String,
    error: String,
}

impl Session {
    pub fn new(
        shared: Arc<Shared>,
        connection_name: String,
        run_id: RunId,
        wake_main: fn(),
    ) -> Session {
        Session {
            shared,
            connection_name,
            wake_main,
            returned_log: Throttle::new(SUMMARY_EVERY),
            healthy: false,
            plan: None,
            current: 0,
            failover_logged: Vec::new(),
            connected_logged: None,
            link_log: LogBudget::new(now_ms()),
            encoder: Encoder::new(run_id),
            batcher: Batcher::default(),
            lingering_since: None,
            answered_at: Instant::now(),
            ready_at: None,
        }
    }

    /// Connects, serves and reconnects until the module stops.
    pub fn run(&mut self) {
        let shared = self.shared.clone();
        let mut backoff = Backoff::default();
        while !shared.stopping() {
            if !shared.wants_connection() {
                let state = if shared.enabled.load(Relaxed) {
                    LinkState::Idle
                } else {
                    LinkState::Disabled
                };
                shared.link.set(state);
                shared.wait(IDLE_WAIT);
                continue;
            }
            let generation = shared.broker_generation();
            let plan = Plan::of(&shared, &shared.settings());
            self.adopt(&plan);
            shared.link.set(LinkState::Connecting);
            let requests = shared.reconnect_requests.load(Relaxed);
            let failure = self.connect_and_serve(&plan, requests);
            if self.healthy {
                backoff = Backoff::default();
            }
            if let Some(failure) = failure.filter(|_| !shared.stopping()) {
                self.fail(failure);
                self.pause(backoff.next_delay(clock_noise()), requests, generation);
            }
        }
        shared.link.set(LinkState::Idle);
    }

    /// One connection: open, serve, close. Returns why it failed, if it did.
    fn connect_and_serve(&mut self, plan: &Plan, requests: u64) -> Option<Failure> {
        let shared = self.shared.clone();
        let (mut conn, endpoint) = match self.connect_any(plan) {
            Ok(opened) => opened,
            Err(failure) => return Some(failure),
        };
        Stats::add(&shared.stats.connections, 1);
        shared.link.set(LinkState::Connected);
        let end = self.serve(plan, &endpoint, &mut conn, requests);
        self.stop_polling();
        // Close politely, but never wait long for a peer that may be gone.
        conn.close(CLOSE_TIMEOUT, &|| shared.stopping());
        match end {
            End::Asked => None,
            End::Failed(e) => Some(Failure {
                what: format!("broker {endpoint}"),
                error: scrub(&e, &endpoint.password),
            }),
        }
    }

    /// Starts over with a new list of brokers (the first one first), or keeps the state of
    /// the same list.
    fn adopt(&mut self, plan: &Plan) {
        if self.plan.as_ref() != Some(plan) {
            self.plan = Some(plan.clone());
            self.current = 0;
            self.failover_logged = vec![LastLogged::default(); plan.endpoints.len()];
        }
    }

    /// Connects to the first broker that answers, starting with the one that worked last.
    fn connect_any(&mut self, plan: &Plan) -> Result<(Connection, Endpoint), Failure> {
        let shared = self.shared.clone();
        let n = plan.endpoints.len();
        let start = self.current.min(n.saturating_sub(1));
        // Built once per round, and only when a broker needs it.
        let tls = plan
            .endpoints
            .iter()
            .any(|e| e.tls)
            .then(|| tls_config(&plan.tls));
        let mut errors: Vec<(String, String)> = Vec::new();
        for k in 0..n {
            let i = (start + k) % n;
            let Some(endpoint) = plan.endpoints.get(i) else {
                break;
            };
            shared.link.set_endpoint(endpoint.to_string());
            let attempt = match (&tls, endpoint.tls) {
                (Some(Err(e)), true) => Err(e.clone()),
                (tls, uses_tls) => {
                    let config = tls
                        .as_ref()
                        .and_then(|t| t.as_ref().ok())
                        .filter(|_| uses_tls);
                    Connection::open(
                        endpoint,
                        config,
                        &self.connection_name,
                        CONNECT_TIMEOUT,
                        &|| shared.stopping(),
                    )
                    .map_err(|e| format!("connect: {e}"))
                }
            };
            match attempt {
                Ok(conn) => {
                    self.current = i;
                    if let Some(logged) = self.failover_logged.get_mut(i) {
                        logged.clear();
                    }
                    return Ok((conn, endpoint.clone()));
                }
                Err(e) => {
                    let e = scrub(&e, &endpoint.password);
                    if shared.stopping() {
                        errors.push((endpoint.to_string(), e));
                        break;
                    }
                    if k + 1 < n {
                        let next = &plan.endpoints[(i + 1) % n];
                        self.log_failover(i, endpoint, next, &e);
                    }
                    errors.push((endpoint.to_string(), e));
                }
            }
        }
        Err(Failure::of_attempts(errors))
    }

    /// Logs a failover once per broker and reason (not at every retry of an outage).
    fn log_failover(&mut self, i: usize, from: &Endpoint, to: &Endpoint, error: &str) {
        let Some(last) = self.failover_logged.get_mut(i) else {
            return;
        };
        if last.changed(error) {
            self.link_warning(&format!("failing over from {from} to {to}: {error}"));
        }
    }

    /// The broker takes events (a batch was confirmed, or nothing waits): logs the recovery
    /// once, and a switch to another broker.
    fn healthy(&mut self, endpoint: &Endpoint) {
        self.shared.link.mark_healthy();
        let was_healthy = std::mem::replace(&mut self.healthy, true);
        if !was_healthy || self.connected_logged.as_ref() != Some(endpoint) {
            self.link_notice(&format!("connected to broker {endpoint}"));
            self.shared.link.set_error(String::new());
            self.connected_logged = Some(endpoint.clone());
        }
    }

    /// Waits out a back-off delay. New events do not cut it short (they would turn the back-off
    /// into a busy loop during an outage); unloading, `connect`, new settings or broker
    /// configs, and running out of work do (the next event then gets a prompt attempt instead
    /// of a stale verdict).
    fn pause(&self, delay: Duration, requests: u64, generation: u64) {
        let shared = &*self.shared;
        let until = Instant::now() + delay;
        let settings = shared.settings();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero()
                || shared.stopping()
                || shared.reconnect_requests.load(Relaxed) != requests
                || !Arc::ptr_eq(&settings, &shared.settings())
                || shared.broker_generation() != generation
                || !shared.wants_connection()
            {
                return;
            }
            shared.wait(left);
        }
    }

    /// Unroutable events are counted in INFO; the log says so at most once every 10 s.
    fn log_returned(&mut self, s: &Settings, returned: u64) {
        if self.returned_log.note(returned, Instant::now()).is_some() {
            self.shared.log.warning(&format!(
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
    fn fail(&mut self, failure: Failure) {
        let Failure { what, error } = failure;
        let was_healthy = std::mem::replace(&mut self.healthy, false);
        if was_healthy || error != self.shared.link.last_error() {
            self.link_warning(&format!("{what}: {error}"));
        }
        self.shared.link.set_error(error);
        self.shared.link.set(LinkState::Down);
    }

    /// Publishes batches on one connection until it fails or is no longer wanted.
    fn serve(
        &mut self,
        plan: &Plan,
        endpoint: &Endpoint,
        conn: &mut Connection,
        requests: u64,
    ) -> End {
        let shared = self.shared.clone();
        let mut watch = PlanWatch::new(&shared);
        if watch.plan(&shared) != *plan {
            return End::Asked;
        }
        loop {
            let settings = shared.settings();
            if shared.stopping()
                || !shared.enabled.load(Relaxed)
                || shared.reconnect_requests.load(Relaxed) != requests
                || watch.changed(&shared, plan)
            {
                return End::Asked;
            }
            let Some(batch) = self.next_batch(endpoint, conn) else {
                continue;
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(e) => return End::Failed(e.to_string()),
            };
            if let Err(e) = self.publish(endpoint, conn, &settings, batch) {
                return End::Failed(e);
            }
        }
    }

    /// The next batch to publish; `None` when there is none yet (after answering the broker
    /// and waiting a little). An error means the connection is gone.
    fn next_batch(
        &mut self,
        endpoint: &Endpoint,
        conn: &mut Connection,
    ) -> Option<Result<InFlight, ConnError>> {
        let shared = self.shared.clone();
        let (per_message, linger_ms) = {
            let o = &shared.settings().output;
            (o.batch as usize, o.linger_ms)
        };
        let mut outbox = shared.outbox.lock();
        if outbox.has_ready() {
            self.ready_at = Some(Instant::now());
            shared.publisher_polls.store(true, Relaxed);
            // Batched: a message that is not full waits up to the linger for more events
            // (looking every POLL_EVERY), so a trickle is delayed by at most that.
            if per_message > 1 && outbox.ready_len() < per_message && !shared.stopping() {
                let since = *self.lingering_since.get_or_insert_with(Instant::now);
                let linger = Duration::from_millis(u64::from(linger_ms));
                if let Some(left) = linger.checked_sub(since.elapsed()).filter(|d| !d.is_zero()) {
                    // A linger may outlast the heartbeat (10 s against 1 s): the broker is
                    // answered every IDLE_WAIT meanwhile, or it would close the connection.
                    if self.answered_at.elapsed() >= IDLE_WAIT {
                        drop(outbox);
                        if let Err(e) = self.answer(conn) {
                            return Some(Err(e));
                        }
                        outbox = shared.outbox.lock();
                    }
                    // Events handed over directly do not wake this thread: poll for them.
                    shared.wake.wait_for(&mut outbox, left.min(POLL_EVERY));
                    return None;
                }
            }
            self.lingering_since = None;
            // Room for whole messages: a batch of up to 10,000 events goes in one take.
            let max = BATCH.max(per_message);
            return Some(Ok(InFlight::take(&shared, &mut outbox, max)));
        }
        // Connected and not stalled: nothing to send, or a refill is on its way (which needs
        // the broker not to be considered away).
        shared.link.mark_healthy();
        let idle = !outbox.has_work();
        drop(outbox);
        if idle {
            self.healthy(endpoint);
        }
        // Heartbeats and what the broker sent, without holding the outbox.
        let polls = self.ready_at.is_some_and(|at| at.elapsed() < POLL_FOR);
        if !polls || self.answered_at.elapsed() >= ANSWER_WHILE_POLLING {
            if let Err(e) = self.answer(conn) {
                return Some(Err(e));
            }
        }
        let mut outbox = shared.outbox.lock();
        if !outbox.has_ready() && !shared.stopping() {
            if shared.publisher_polls.swap(polls, Relaxed) && !polls {
                // Events come through the main thread's step again, which wakes this thread;
                // one step now tidies up after the flow (see `Shared::direct`).
                drop(outbox);
                (self.wake_main)();
                return None;
            }
            shared
                .wake
                .wait_for(&mut outbox, if polls { POLL_EVERY } else { IDLE_WAIT });
        }
        None
    }

    /// The connection ended: events no longer go straight to the outbox, and the main
    /// thread's next step sees the link as it is (it spills once the broker is away).
    fn stop_polling(&mut self) {
        self.ready_at = None;
        if self.shared.stop_polling() {
            (self.wake_main)();
        }
    }

    /// Heartbeats and what the broker sent between batches (see [`Connection::keep_alive`]).
    fn answer(&mut self, conn: &mut Connection) -> Result<(), ConnError> {
        self.answered_at = Instant::now();
        conn.keep_alive()
    }

    /// Publishes one batch and settles it: what the broker confirmed leaves the outbox, the
    /// rest goes back to its front.
    fn publish(
        &mut self,
        endpoint: &Endpoint,
        conn: &mut Connection,
        settings: &Settings,
        batch: InFlight,
    ) -> Result<(), String> {
        let shared = self.shared.clone();
        shared.link.batch_sent(true);
        let sent_at = Instant::now();
        let wake_main = self.wake_main;
        let woke_main = std::cell::Cell::new(false);
        // While events skip the main thread's step, nothing but this thread sees a batch go
        // unconfirmed: once it has for `AWAY_AFTER`, the main thread is asked for a step,
        // which finds the broker away and spills (as it would have by itself).
        let cancel = || {
            if !woke_main.get() && sent_at.elapsed() >= AWAY_AFTER && shared.direct.load(Relaxed) {
                woke_main.set(true);
                wake_main();
            }
            shared.stopping()
        };
        let mut confirms = Confirms::default();
        let (encoder, batcher) = (&mut self.encoder, &mut self.batcher);
        // Where each message ends: one event each, unless batched.
        let ends = batcher.plan(settings, batch.events());
        let mut cut = 0;
        let result = conn.publish_batch(
            ends.len(),
            |out, frame_max| {
                cut = batcher.encode(out, frame_max, settings, batch.events(), &ends, encoder)
            },
            CONFIRM_TIMEOUT,
            &cancel,
            &mut confirms,
        );
        shared.link.batch_sent(false);
        // Confirms are per message; the outbox counts events.
        let events_of = |messages: usize| {
            messages
                .checked_sub(1)
                .and_then(|i| ends.get(i))
                .map_or(0, |&end| end)
        };
        let confirmed = events_of(confirms.acked_prefix());
        let failure = match result {
            Err(e @ ConnError::ChannelClosed(_)) => Some(format!(
                "publish to exchange '{}' with routing key '{}': {e}",
                settings.exchange, settings.routing_key
            )),
            Err(e) => Some(e.to_string()),
            Ok(()) if confirms.nacked() => Some(format!(
                "exchange '{}' refused (nack) an event; it will be retried",
                settings.exchange
            )),
            Ok(()) => None,
        };
        // Settled first: once INFO counts these events confirmed, they have left the queue.
        // A snapshot paused for room goes on once a batch has left memory.
        if batch.settle(confirmed, settings.fallback_size)
            || shared.room_wanted.swap(false, Relaxed)
        {
            (self.wake_main)();
        }
        let stats = &shared.stats;
        Stats::add(&stats.routing_keys_cut, cut);
        Stats::add(&stats.published, events_of(confirms.written) as u64);
        Stats::add(&stats.confirmed, confirmed as u64);
        Stats::add(&stats.returned, confirms.returned);
        Stats::add(&stats.nacked, u64::from(confirms.nacked()));
        if failure.is_none() {
            self.healthy(endpoint);
        }
        if confirms.returned > 0 {
            self.log_returned(settings, confirms.returned);
        }
        failure.map_or(Ok(()), Err)
    }

    fn link_warning(&mut self, msg: &str) {
        if let Some(line) = self.link_log.line(msg, now_ms()) {
            self.shared.log.warning(&line);
        }
    }

    fn link_notice(&mut self, msg: &str) {
        if let Some(line) = self.link_log.line(msg, now_ms()) {
            self.shared.log.notice(&line);
        }
    }
}

impl Failure {
    /// One broker's failure as it is; several as "no broker reachable" with each reason.
    fn of_attempts(errors: Vec<(String, String)>) -> Failure {
        match <[_; 1]>::try_from(errors) {
            Ok([(endpoint, error)]) => Failure {
                what: format!("broker {endpoint}"),
                error,
            },
            Err(errors) => Failure {
                what: "no broker reachable".into(),
                error: errors
                    .iter()
                    .map(|(endpoint, error)| format!("{endpoint}: {error}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            },
        }
    }
}

/// Jitter for the back-off: the clock's nanoseconds.
fn clock_noise() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}
