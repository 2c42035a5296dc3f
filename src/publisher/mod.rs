//! The publisher thread: owns the AMQP connection (`amqp.rs`), publishes batches with
//! publisher confirms, and reconnects with capped exponential back-off. Every network wait
//! has a deadline, and none is longer than a slice that notices an unload.
//!
//! Several brokers (`key_evt_amqp.uri` lists them) are tried in order, each with its own
//! deadline, before backing off; the publisher sticks to the one that works. `amqps://` uses
//! our own rustls client configuration (a CA file, the system's CAs, or, for tests, no
//! verification).

use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::amqp::connection::{Confirms, Connection};
use crate::amqp::wire::{self as wire, Properties};
use crate::core::event::Event;
use crate::core::outbox::Broker;
use crate::core::settings::Settings;
use crate::core::uri::Endpoint;
use crate::redis::config::{self, TlsOptions};
use crate::redis::log;
use crate::state::shared::{Shared, BATCH};
use crate::state::stats::{LinkState, Stats};

/// For the TCP connection, the TLS handshake, the login, the channel and confirm mode together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A batch not confirmed within this time means a dead or stuck connection.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
const IDLE_WAIT: Duration = Duration::from_millis(200);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub const APP_ID: &str = "key_evt_amqp";

/// Starts the publisher thread.
/// `connection_name` shows in RabbitMQ's management tools (we use the node's run id in it).
pub fn spawn(
    shared: Arc<Shared>,
    connection_name: String,
    wake_main: fn(),
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kea-publisher".into())
        .spawn(move || {
            lower_priority();
            Publisher {
                shared,
                connection_name,
                returned_logged_at: Cell::new(0),
                healthy: Cell::new(false),
                wake_main,
                plan: RefCell::new(None),
                current: Cell::new(0),
                failover_logged: RefCell::new(Vec::new()),
                connected_logged: RefCell::new(None),
                link_log: LogBudget::new(crate::state::stats::now_ms()),
            }
            .run()
        })
}

/// The publisher runs at nice 10: on a busy host Redis's main thread gets the CPU first.
fn lower_priority() {
    // SAFETY: setpriority on this thread's own id; a failure leaves the priority unchanged.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
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
    /// The brokers of the last connection round; per-broker state below refers to it.
    plan: RefCell<Option<Plan>>,
    /// Index of the broker tried first: the one that worked last.
    current: Cell<usize>,
    /// Per broker, the failure last logged for it (a failover is logged once per reason).
    failover_logged: RefCell<Vec<Option<String>>>,
    /// The broker last logged as connected (a switch to another one is logged again).
    connected_logged: RefCell<Option<Endpoint>>,
    /// Caps the connection lines when brokers flap.
    link_log: LogBudget,
}

/// Why a session ended.
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

/// What a connection is made with: the brokers in order and the TLS options, from the
/// settings and the named configs. Any change means a new connection.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Plan {
    endpoints: Vec<Endpoint>,
    tls: TlsOptions,
}

impl Plan {
    fn of(settings: &Settings) -> Plan {
        Plan {
            endpoints: config::endpoints(settings),
            tls: config::tls_options(),
        }
    }
}

/// Tells cheaply whether the [`Plan`] changed: only when the settings or the named configs
/// changed is it built again and compared.
struct PlanWatch {
    settings: Arc<Settings>,
    generation: u64,
}

impl PlanWatch {
    fn new(shared: &Shared) -> PlanWatch {
        PlanWatch {
            generation: config::generation(),
            settings: shared.settings(),
        }
    }

    fn changed(&mut self, shared: &Shared, plan: &Plan) -> bool {
        let settings = shared.settings();
        let generation = config::generation();
        if Arc::ptr_eq(&settings, &self.settings) && generation == self.generation {
            return false;
        }
        self.settings = settings;
        self.generation = generation;
        Plan::of(&self.settings) != *plan
    }
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
            let generation = config::generation();
            let plan = Plan::of(&self.shared.settings());
            self.adopt(&plan);
            self.shared.link.set(LinkState::Connecting);
            let requests = self.shared.reconnect_requests.load(Relaxed);
            let failure = match self.connect_any(&plan) {
                Ok((mut conn, endpoint)) => {
                    Stats::add(&self.shared.stats.connections, 1);
                    self.shared.link.set(LinkState::Connected);
                    let end = self.serve(&plan, &endpoint, &mut conn, requests);
                    // Close politely, but never wait long for a peer that may be gone.
                    conn.close(CLOSE_TIMEOUT, &|| self.shared.stopping());
                    match end {
                        End::Asked => None,
                        End::Failed(e) => Some(Failure {
                            what: format!("broker {endpoint}"),
                            error: scrub(&e, &endpoint.password),
                        }),
                    }
                }
                Err(failure) => Some(failure),
            };
            if self.healthy.get() {
                backoff = Backoff::default();
            }
            if let Some(failure) = failure.filter(|_| !self.shared.stopping()) {
                self.fail(failure);
                self.pause(backoff.next_delay(), requests, generation);
            }
        }
        self.shared.link.set(LinkState::Idle);
    }

    /// Starts over with a new list of brokers (the first one first), or keeps the state of
    /// the same list.
    fn adopt(&self, plan: &Plan) {
        let mut known = self.plan.borrow_mut();
        if known.as_ref() != Some(plan) {
            *known = Some(plan.clone());
            self.current.set(0);
            *self.failover_logged.borrow_mut() = vec![None; plan.endpoints.len()];
        }
    }

    /// Connects to the first broker that answers, starting with the one that worked last.
    fn connect_any(&self, plan: &Plan) -> Result<(Connection, Endpoint), Failure> {
        let n = plan.endpoints.len();
        let start = self.current.get().min(n.saturating_sub(1));
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
            self.shared.link.set_endpoint(endpoint.to_string());
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
                        &|| self.shared.stopping(),
                    )
                    .map_err(|e| format!("connect: {e}"))
                }
            };
            match attempt {
                Ok(conn) => {
                    self.current.set(i);
                    if let Some(logged) = self.failover_logged.borrow_mut().get_mut(i) {
                        *logged = None;
                    }
                    return Ok((conn, endpoint.clone()));
                }
                Err(e) => {
                    let e = scrub(&e, &endpoint.password);
                    if self.shared.stopping() {
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
        Err(match errors.as_slice() {
            [(endpoint, error)] => Failure {
                what: format!("broker {endpoint}"),
                error: error.clone(),
            },
            _ => Failure {
                what: "no broker reachable".into(),
                error: errors
                    .iter()
                    .map(|(endpoint, error)| format!("{endpoint}: {error}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            },
        })
    }

    /// Logs a failover once per broker and reason (not at every retry of an outage).
    fn log_failover(&self, i: usize, from: &Endpoint, to: &Endpoint, error: &str) {
        let mut logged = self.failover_logged.borrow_mut();
        let Some(last) = logged.get_mut(i) else {
            return;
        };
        if last.as_deref() != Some(error) {
            *last = Some(error.to_string());
            self.link_log
                .warning(&format!("failing over from {from} to {to}: {error}"));
        }
    }

    /// The broker takes events (a batch was confirmed, or nothing waits): logs the recovery
    /// once, and a switch to another broker.
    fn healthy(&self, endpoint: &Endpoint) {
        self.shared.link.mark_healthy();
        let was_healthy = self.healthy.replace(true);
        if !was_healthy || self.connected_logged.borrow().as_ref() != Some(endpoint) {
            self.link_log
                .notice(&format!("connected to broker {endpoint}"));
            self.shared.link.set_error(String::new());
            *self.connected_logged.borrow_mut() = Some(endpoint.clone());
        }
    }

    /// Waits out a back-off delay. New events do not cut it short (they would turn the back-off
    /// into a busy loop during an outage); unloading, `connect`, new settings or broker
    /// configs, and running out of work do (the next event then gets a prompt attempt instead
    /// of a stale verdict).
    fn pause(&self, delay: Duration, requests: u64, generation: u64) {
        let until = std::time::Instant::now() + delay;
        let settings = self.shared.settings();
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero()
                || self.shared.stopping()
                || self.shared.reconnect_requests.load(Relaxed) != requests
                || !Arc::ptr_eq(&settings, &self.shared.settings())
                || config::generation() != generation
                || !self.shared.wants_connection()
            {
                return;
            }
            self.shared.wait(left);
        }
    }

    /// Unroutable events are counted in INFO; the log says so at most once every 10 s.
    fn log_returned(&self, s: &Settings) {
        let now = crate::state::stats::now_ms();
        let last = self.returned_logged_at.get();
        if last == 0 || now.saturating_sub(last) >= 10_000 {
            self.returned_logged_at.set(now);
            log::warning(&format!(
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
    fn fail(&self, failure: Failure) {
        let Failure { what, error } = failure;
        let was_healthy = self.healthy.replace(false);
        if was_healthy || error != self.shared.link.last_error() {
            self.link_log.warning(&format!("{what}: {error}"));
        }
        self.shared.link.set_error(error);
        self.shared.link.set(LinkState::Down);
    }

    /// Publishes batches on one connection until it fails or is no longer wanted.
    fn serve(&self, plan: &Plan, endpoint: &Endpoint, conn: &mut Connection, requests: u64) -> End {
        let shared = &*self.shared;
        let mut watch = PlanWatch::new(shared);
        if Plan::of(&watch.settings) != *plan {
            return End::Asked;
        }
        loop {
            let settings = shared.settings();
            if shared.stopping()
                || !shared.enabled.load(Relaxed)
                || shared.reconnect_requests.load(Relaxed) != requests
                || watch.changed(shared, plan)
            {
                return End::Asked;
            }
            let batch = {
                let mut outbox = shared.outbox.lock();
                if !outbox.has_ready() {
                    // Connected and not stalled: nothing to send, or a refill is on its way
                    // (which needs the broker not to be considered away).
                    shared.link.mark_healthy();
                    let idle = !outbox.has_work();
                    drop(outbox);
                    if idle {
                        self.healthy(endpoint);
                    }
                    // Heartbeats and what the broker sent, without holding the outbox.
                    if let Err(e) = conn.keep_alive() {
                        return End::Failed(e);
                    }
                    outbox = shared.outbox.lock();
                    if !outbox.has_ready() && !shared.stopping() {
                        shared.wake.wait_for(&mut outbox, IDLE_WAIT);
                    }
                    continue;
                }
                outbox.take_batch(BATCH)
            };
            shared.link.batch_sent(true);
            let mut confirms = Confirms::default();
            let result = conn.publish_batch(
                batch.len(),
                |out, frame_max| encode(out, frame_max, &settings, &batch),
                CONFIRM_TIMEOUT,
                &|| shared.stopping(),
                &mut confirms,
            );
            shared.link.batch_sent(false);
            let confirmed = confirms.acked_prefix();
            let failure = match result {
                Err(e) if e.starts_with("channel closed") => Some(format!(
                    "publish to exchange '{}' with routing key '{}': {e}",
                    settings.exchange, settings.routing_key
                )),
                Err(e) => Some(e),
                Ok(()) if confirms.nacked() => Some(format!(
                    "exchange '{}' refused (nack) an event; it will be retried",
                    settings.exchange
                )),
                Ok(()) => None,
            };
            let stats = &shared.stats;
            Stats::add(&stats.published, confirms.written as u64);
            Stats::add(&stats.confirmed, confirmed as u64);
            Stats::add(&stats.returned, confirms.returned);
            Stats::add(&stats.nacked, u64::from(confirms.nacked()));
            if failure.is_none() {
                self.healthy(endpoint);
            }
            if confirms.returned > 0 {
                self.log_returned(&settings);
            }
            let wants_refill = {
                let mut outbox = shared.outbox.lock();
                outbox.confirmed(&batch[..confirmed]);
                outbox.give_back(batch.into_iter().skip(confirmed).collect());
                outbox.wants_tick(
                    Broker::Ready,
                    settings.fallback_size,
                    crate::state::stats::now_ms(),
                )
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

/// The CA certificates of a PEM file, as a root store.
pub fn load_ca_roots(path: &str) -> Result<rustls::RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("unusable CA certificate: {e}"))?;
    }
    Ok(roots)
}

/// The rustls client configuration for `amqps://` brokers.
fn tls_config(options: &TlsOptions) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = if options.skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    } else if options.ca_file.is_empty() {
        let mut roots = rustls::RootCertStore::empty();
        let (added, _) =
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if added == 0 {
            return Err(format!(
                "TLS setup: no CA certificate in the system's store; set {}",
                config::CA_FILE_OPTION
            ));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        let roots = load_ca_roots(&options.ca_file).map_err(|e| {
            format!(
                "TLS setup: {} '{}': {e}",
                config::CA_FILE_OPTION,
                options.ca_file
            )
        })?;
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// `key_evt_amqp.tls_skip_verify`: accepts any certificate, but still checks that the
/// handshake is signed by the key of the certificate presented.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What INFO shows as the broker: the one in use or being tried, else the first one to try.
pub fn describe_broker(shared: &Shared) -> String {
    let in_use = match shared.link.state() {
        LinkState::Connecting | LinkState::Connected | LinkState::Down => shared.link.endpoint(),
        LinkState::Idle | LinkState::Disabled => String::new(),
    };
    if !in_use.is_empty() {
        return in_use;
    }
    config::endpoints(&shared.settings())
        .first()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// Connection lines (connected, failing over, failed) are logged once per transition; this
/// caps them further when brokers flap: a burst of [`LogBudget::BURST`], then one line every
/// [`LogBudget::EVERY_MS`]. A line that follows suppressed ones says how many.
struct LogBudget {
    tokens: Cell<u64>,
    refilled_at: Cell<u64>,
    suppressed: Cell<u64>,
}

impl LogBudget {
    const BURST: u64 = 10;
    const EVERY_MS: u64 = 6_000;

    fn new(now_ms: u64) -> LogBudget {
        LogBudget {
            tokens: Cell::new(Self::BURST),
            refilled_at: Cell::new(now_ms),
            suppressed: Cell::new(0),
        }
    }

    /// Whether a line may be logged at `now_ms`; `Some(n)`: yes, after `n` suppressed ones.
    fn take(&self, now_ms: u64) -> Option<u64> {
        let earned = now_ms.saturating_sub(self.refilled_at.get()) / Self::EVERY_MS;
        if earned > 0 {
            self.tokens
                .set((self.tokens.get() + earned).min(Self::BURST));
            self.refilled_at
                .set(self.refilled_at.get() + earned * Self::EVERY_MS);
        }
        if self.tokens.get() == 0 {
            self.suppressed.set(self.suppressed.get() + 1);
            return None;
        }
        self.tokens.set(self.tokens.get() - 1);
        Some(self.suppressed.replace(0))
    }

    fn line(&self, msg: &str) -> Option<String> {
        self.take(crate::state::stats::now_ms()).map(|n| match n {
            0 => msg.to_string(),
            n => format!("{msg} ({n} connection messages suppressed before this one)"),
        })
    }

    fn warning(&self, msg: &str) {
        if let Some(line) = self.line(msg) {
            log::warning(&line);
        }
    }

    fn notice(&self, msg: &str) {
        if let Some(line) = self.line(msg) {
            log::notice(&line);
        }
    }
}

/// Writes a batch of publishes: mandatory, so unroutable events are reported (returned).
fn encode(out: &mut Vec<u8>, frame_max: u32, s: &Settings, batch: &[Event]) {
    let mut message_id = Vec::with_capacity(64);
    for e in batch {
        message_id.clear();
        if let Some(id) = e.id {
            id.write_message_id(&mut message_id);
        }
        let props = Properties {
            content_type: "text/plain",
            delivery_mode: s.delivery_mode,
            message_id: e.id.is_some().then_some(message_id.as_slice()),
            timestamp: (e.timestamp > 0).then_some(u64::from(e.timestamp)),
            app_id: APP_ID,
        };
        wire::publish(
            out,
            crate::amqp::connection::CHANNEL,
            frame_max,
            &s.exchange,
            &s.routing_key,
            true,
            &props,
            &e.body,
        );
    }
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
    fn connection_lines_are_capped_when_brokers_flap() {
        let budget = LogBudget::new(1_000);
        for _ in 0..LogBudget::BURST {
            assert_eq!(budget.take(1_000), Some(0));
        }
        assert_eq!(budget.take(1_001), None);
        assert_eq!(budget.take(1_002), None);
        // One more line per period; it says how many were left out.
        assert_eq!(budget.take(1_000 + LogBudget::EVERY_MS), Some(2));
        assert_eq!(budget.take(1_000 + LogBudget::EVERY_MS), None);
        // A long quiet time gives the whole burst back, no more.
        let later = 1_000 + 100 * LogBudget::EVERY_MS;
        for _ in 0..LogBudget::BURST {
            assert!(budget.take(later).is_some());
        }
        assert_eq!(budget.take(later), None);
    }

    #[test]
    fn tls_configurations() {
        let options = TlsOptions {
            ca_file: String::new(),
            skip_verify: true,
        };
        assert!(tls_config(&options).is_ok());
        let options = TlsOptions {
            ca_file: "/nonexistent/ca.pem".into(),
            skip_verify: false,
        };
        let e = tls_config(&options).unwrap_err();
        assert!(
            e.contains("key_evt_amqp.tls_ca_file '/nonexistent/ca.pem'"),
            "{e}"
        );
    }
}
