//! An AMQP consumer on the real broker, for asserting what the module published.

use std::fmt;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::{block_on_timeout, unique_name};

/// Deadline for connecting and for each setup step (declare, bind, consume, close).
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on [`Consumer::drain_quiet`] when messages keep coming.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
const SETUP_HINT: &str =
    "is RabbitMQ running on 127.0.0.1:5672 (guest/guest)? run scripts/setup.sh";

/// The broker URI: `$AMQP_URL`, else `amqp://guest:guest@127.0.0.1:5672/%2f`.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A routing key no other test uses, so that parallel tests never see each other's messages.
pub fn unique_routing_key(prefix: &str) -> String {
    unique_name(prefix)
}

/// The message body the module builds: `DB\nEVENT\nKEY`.
pub fn body(db: u32, event: &str, key: &[u8]) -> Vec<u8> {
    let mut body = format!("{db}\n{event}\n").into_bytes();
    body.extend_from_slice(key);
    body
}

/// Connects to `uri` with lapin on async-global-executor; `Err` holds a readable reason
/// (including a timeout after `timeout`).
pub fn amqp_connect(uri: &str, timeout: Duration) -> Result<Connection, String> {
    // `default_runtime()` is async-global-executor: the only lapin runtime feature enabled.
    let runtime = lapin::runtime::default_runtime().map_err(|e| e.to_string())?;
    match block_on_timeout(
        timeout,
        Connection::connect_with_runtime(uri, ConnectionProperties::default(), runtime),
    ) {
        Some(Ok(conn)) => Ok(conn),
        Some(Err(e)) => Err(e.to_string()),
        None => Err(format!("connect to {uri} timed out after {timeout:?}")),
    }
}

/// A connection to the broker and a channel on it, for tests that set up queues of their own.
pub fn amqp_channel() -> (Connection, Channel) {
    let url = amqp_url();
    let conn = amqp_connect(&url, SETUP_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot connect to RabbitMQ at {url}: {e}; {SETUP_HINT}"));
    let channel = step("channel open", conn.create_channel());
    (conn, channel)
}

/// A queue bound to `amq.direct` with `routing_key` that holds one message and refuses the
/// rest (`x-max-length 1`, `x-overflow reject-publish`): RabbitMQ nacks those publishes.
/// Exclusive to the returned connection; read it with `basic_get` on the channel.
pub fn nacking_queue(routing_key: &str) -> (Connection, Channel, String) {
    let (conn, channel) = amqp_channel();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(1));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let options = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let q = step(
        "queue.declare",
        channel.queue_declare("".into(), options, args),
    );
    step(
        "queue.bind",
        channel.queue_bind(
            q.name().clone(),
            "amq.direct".into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    );
    let name = q.name().to_string();
    (conn, channel, name)
}

/// Runs one setup step with the [`SETUP_TIMEOUT`] deadline, panicking with `what` on failure.
fn step<T, E: fmt::Display>(what: &str, fut: impl std::future::Future<Output = Result<T, E>>) -> T {
    match block_on_timeout(SETUP_TIMEOUT, fut) {
        Some(Ok(value)) => value,
        Some(Err(e)) => panic!("AMQP {what} failed: {e}"),
        None => panic!("AMQP {what} timed out after {SETUP_TIMEOUT:?}"),
    }
}

/// The outcome of a setup step of [`Consumer::connect`] run with `block_on_timeout(limit, …)`.
fn in_time<T>(
    shown: &str,
    limit: Duration,
    what: &str,
    result: Option<Result<T, lapin::Error>>,
) -> Result<T, String> {
    match result {
        Some(Ok(value)) => Ok(value),
        Some(Err(e)) => Err(format!("AMQP {what} on {shown} failed: {e}")),
        None => Err(format!("AMQP {what} on {shown} timed out after {limit:?}")),
    }
}

/// How events go one at a time: `warm_up` untimed, then `n` timed ones, a `gap` after each
/// arrival, each waited for at most `limit`.
#[derive(Clone, Copy, Debug)]
pub struct OneAtATime {
    pub warm_up: usize,
    pub n: usize,
    pub gap: Duration,
    pub limit: Duration,
}

impl OneAtATime {
    /// Times each event from `send(key)` (which makes the event of `key`, `{tag}:{i}`) to the
    /// consumer's next message, which `check(message, key)` accepts or refuses (events arrive
    /// in order, one message each). Returns the timed ones, in order.
    pub fn run(
        self,
        consumer: &mut Consumer,
        tag: &str,
        mut send: impl FnMut(&str) -> Result<(), String>,
        check: impl Fn(&Message, &str) -> Result<(), String>,
    ) -> Result<Vec<Duration>, String> {
        let mut took = Vec::with_capacity(self.n);
        for i in 0..self.warm_up + self.n {
            let key = format!("{tag}:{i}");
            let t = Instant::now();
            send(&key)?;
            let m = consumer
                .try_recv(Some(self.limit))?
                .ok_or_else(|| format!("{key} did not arrive within {:?}", self.limit))?;
            let elapsed = t.elapsed();
            check(&m, &key)?;
            if i >= self.warm_up {
                took.push(elapsed);
            }
            std::thread::sleep(self.gap);
        }
        Ok(took)
    }
}

/// Publishes `payload` to `exchange` with `routing_key` on a short-lived connection and
/// waits for the broker's confirm.
pub fn amqp_publish(
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    properties: BasicProperties,
) {
    let conn = amqp_connect(&amqp_url(), SETUP_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot connect to RabbitMQ: {e}; {SETUP_HINT}"));
    let channel = step("channel open", conn.create_channel());
    step(
        "confirm.select",
        channel.confirm_select(ConfirmSelectOptions::default()),
    );
    let confirm = step(
        "basic.publish",
        channel.basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            payload,
            properties,
        ),
    );
    let confirmation = step("publisher confirm", confirm);
    assert!(
        confirmation.is_ack(),
        "broker did not ack the publish: {confirmation:?}"
    );
    close(&conn);
}

fn close(conn: &Connection) {
    // Best effort: the broker also cleans up when the socket goes away.
    let _ = block_on_timeout(Duration::from_secs(2), conn.close(200, "bye".into()));
}

/// One received message.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    pub body: Vec<u8>,
    pub exchange: String,
    pub routing_key: String,
    pub content_type: Option<String>,
    pub delivery_mode: Option<u8>,
    pub message_id: Option<String>,
    pub timestamp: Option<u64>,
    pub app_id: Option<String>,
    /// The `headers` property, in the broker's order (by name); empty when there is none.
    pub headers: Vec<(String, Header)>,
}

/// A header value as the module sends them: long strings (any bytes) and integers; anything
/// else shown as its debug text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Header {
    Bytes(Vec<u8>),
    Int(i64),
    Other(String),
}

impl Header {
    fn of(value: &AMQPValue) -> Header {
        match value {
            AMQPValue::LongString(s) => Header::Bytes(s.as_bytes().to_vec()),
            AMQPValue::ShortString(s) => Header::Bytes(s.as_str().as_bytes().to_vec()),
            AMQPValue::LongLongInt(n) => Header::Int(*n),
            AMQPValue::LongInt(n) => Header::Int(i64::from(*n)),
            AMQPValue::ShortInt(n) => Header::Int(i64::from(*n)),
            AMQPValue::ShortShortInt(n) => Header::Int(i64::from(*n)),
            other => Header::Other(format!("{other:?}")),
        }
    }

    /// The value as text, if it is a UTF-8 string.
    pub fn text(&self) -> Option<&str> {
        match self {
            Header::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

impl Message {
    /// Splits the body on its first two `\n` into (db, event, key); `None` if it has fewer.
    pub fn parts(&self) -> Option<(&[u8], &[u8], &[u8])> {
        let mut it = self.body.splitn(3, |&b| b == b'\n');
        Some((it.next()?, it.next()?, it.next()?))
    }

    /// The key: the body after its second `\n`. Panics if the body has fewer.
    pub fn key(&self) -> &[u8] {
        match self.parts() {
            Some((_, _, key)) => key,
            None => panic!("not a DB\\nEVENT\\nKEY body: {self:?}"),
        }
    }

    /// [`Message::key`] as a string (invalid UTF-8 replaced).
    pub fn key_lossy(&self) -> String {
        String::from_utf8_lossy(self.key()).into_owned()
    }

    /// `(run_id, seq)` from `message_id = <run_id>-<seq>`; panics if there is none or it has
    /// another form.
    pub fn identity(&self) -> (String, u64) {
        let id = self
            .message_id
            .as_deref()
            .unwrap_or_else(|| panic!("no message_id on {self:?}"));
        let (run_id, seq) = id
            .rsplit_once('-')
            .unwrap_or_else(|| panic!("message_id {id:?} is not <run_id>-<seq>"));
        let seq = seq
            .parse()
            .unwrap_or_else(|e| panic!("message_id {id:?}: bad seq ({e})"));
        (run_id.to_string(), seq)
    }

    /// The header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&Header> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The header `name` as text; panics if it is absent or not a UTF-8 string.
    pub fn header_text(&self, name: &str) -> &str {
        self.header(name)
            .and_then(Header::text)
            .unwrap_or_else(|| panic!("no text header {name:?} on {self:?}"))
    }

    fn from_delivery(d: lapin::message::Delivery) -> Message {
        let p = &d.properties;
        let headers = p
            .headers()
            .as_ref()
            .map(|t| {
                t.inner()
                    .iter()
                    .map(|(k, v)| (k.to_string(), Header::of(v)))
                    .collect()
            })
            .unwrap_or_default();
        let string = |s: &Option<lapin::types::ShortString>| s.as_ref().map(|s| s.to_string());
        Message {
            exchange: d.exchange.to_string(),
            routing_key: d.routing_key.to_string(),
            content_type: string(p.content_type()),
            delivery_mode: *p.delivery_mode(),
            message_id: string(p.message_id()),
            timestamp: *p.timestamp(),
            app_id: string(p.app_id()),
            headers,
            body: d.data,
        }
    }
}

/// The keys of `messages` ([`Message::key_lossy`]), in order.
pub fn keys_of(messages: &[Message]) -> Vec<String> {
    messages.iter().map(Message::key_lossy).collect()
}

/// `url` with the password replaced by `***` (`amqp://user:***@host`), for messages.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &rest[..colon],
                &rest[at..]
            ),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl fmt::Debug for Message {
    // Bodies hold arbitrary key bytes: show them escaped rather than as a list of numbers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("body", &format_args!("b\"{}\"", self.body.escape_ascii()))
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .field("content_type", &self.content_type)
            .field("delivery_mode", &self.delivery_mode)
            .field("message_id", &self.message_id)
            .field("timestamp", &self.timestamp)
            .field("app_id", &self.app_id)
            .field("headers", &self.headers)
            .finish()
    }
}

/// How [`Consumer::connect`] sets up: the broker, what the queue is bound to, and whether
/// deliveries are acknowledged. [`ConsumerOptions::new`] gives `$AMQP_URL` (see [`amqp_url`]),
/// automatic acks, an empty consumer tag and a 10 s deadline for each setup step.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub url: String,
    pub exchange: String,
    pub routing_key: String,
    /// `false`: the broker counts a message delivered once sent (`no_ack`). `true`: each one is
    /// acknowledged when [`Consumer::recv`] hands it out, so unreceived ones stay with the
    /// broker.
    pub ack: bool,
    /// The consumer tag; empty lets the broker choose one.
    pub tag: String,
    /// Deadline of the connect and of each setup step.
    pub timeout: Duration,
    /// The binding's arguments (a headers exchange's `x-match` and headers); none by default.
    pub bind_arguments: FieldTable,
}

impl ConsumerOptions {
    pub fn new(exchange: &str, routing_key: &str) -> ConsumerOptions {
        ConsumerOptions {
            url: amqp_url(),
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            ack: false,
            tag: String::new(),
            timeout: SETUP_TIMEOUT,
            bind_arguments: FieldTable::default(),
        }
    }
}

/// A consumer on a server-named, exclusive, auto-delete queue bound to one exchange and
/// routing key. Messages are auto-acked unless [`ConsumerOptions::ack`] says otherwise; lapin
/// buffers them until they are received.
pub struct Consumer {
    conn: Connection,
    // Kept so that the channel outlives the consumer stream.
    _channel: Channel,
    stream: lapin::Consumer,
    queue: String,
    ack: bool,
}

impl Consumer {
    /// Declares the queue, binds it to `exchange` with `routing_key` and starts consuming.
    /// Once this returns, every message routed there is received. Panics (saying to run
    /// `scripts/setup.sh`) when the broker cannot be reached.
    #[track_caller]
    pub fn bind(exchange: &str, routing_key: &str) -> Consumer {
        match Consumer::connect(&ConsumerOptions::new(exchange, routing_key)) {
            Ok(consumer) => consumer,
            Err(e) => panic!("{e}; {SETUP_HINT}"),
        }
    }

    /// Like [`Consumer::bind`] with every option; `Err` says which step failed and why (the
    /// URL shown without its password).
    pub fn connect(options: &ConsumerOptions) -> Result<Consumer, String> {
        let shown = redact_url(&options.url);
        let limit = options.timeout;
        let conn = amqp_connect(&options.url, limit).map_err(|e| {
            format!(
                "cannot connect to {shown}: {}",
                e.replace(&options.url, &shown)
            )
        })?;
        let channel = in_time(
            &shown,
            limit,
            "channel open",
            block_on_timeout(limit, conn.create_channel()),
        )?;
        let queue = in_time(
            &shown,
            limit,
            "queue.declare",
            block_on_timeout(
                limit,
                channel.queue_declare(
                    "".into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                ),
            ),
        )?;
        let queue = queue.name().to_string();
        in_time(
            &shown,
            limit,
            &format!(
                "queue.bind to {:?} with {:?}",
                options.exchange, options.routing_key
            ),
            block_on_timeout(
                limit,
                channel.queue_bind(
                    queue.as_str().into(),
                    options.exchange.as_str().into(),
                    options.routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    options.bind_arguments.clone(),
                ),
            ),
        )?;
        let stream = in_time(
            &shown,
            limit,
            "basic.consume",
            block_on_timeout(
                limit,
                channel.basic_consume(
                    queue.as_str().into(),
                    options.tag.as_str().into(),
                    BasicConsumeOptions {
                        no_ack: !options.ack,
                        ..BasicConsumeOptions::default()
                    },
                    FieldTable::default(),
                ),
            ),
        )?;
        Ok(Consumer {
            conn,
            _channel: channel,
            stream,
            queue,
            ack: options.ack,
        })
    }

    /// The server-generated queue name.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The next message, or `None` if none arrives within `timeout`. Panics if the consumer
    /// fails (connection or channel lost).
    pub fn recv(&mut self, timeout: Duration) -> Option<Message> {
        self.try_recv(Some(timeout))
            .unwrap_or_else(|e| panic!("AMQP consumer on {} failed: {e}", self.queue))
    }

    /// The next message, waiting at most `timeout` (`None`: as long as it takes); `Ok(None)`
    /// when the deadline won, `Err` when the consumer failed or was cancelled. With
    /// [`ConsumerOptions::ack`] the message is acknowledged before it is returned.
    pub fn try_recv(&mut self, timeout: Option<Duration>) -> Result<Option<Message>, String> {
        let next = match timeout {
            Some(timeout) => match block_on_timeout(timeout, self.stream.next()) {
                None => return Ok(None),
                Some(next) => next,
            },
            None => async_global_executor::block_on(self.stream.next()),
        };
        match next {
            Some(Ok(delivery)) => {
                if self.ack {
                    let acked =
                        block_on_timeout(SETUP_TIMEOUT, delivery.ack(BasicAckOptions::default()));
                    match acked {
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(format!("basic.ack failed: {e}")),
                        None => return Err(format!("basic.ack timed out after {SETUP_TIMEOUT:?}")),
                    }
                }
                Ok(Some(Message::from_delivery(delivery)))
            }
            Some(Err(e)) => Err(e.to_string()),
            None => Err("the consumer was cancelled".into()),
        }
    }

    /// Exactly the next `n` messages, all within `timeout`; panics listing what arrived if
    /// fewer do. Does not check that no more follow (see [`Consumer::expect_none`]).
    pub fn expect(&mut self, n: usize, timeout: Duration) -> Vec<Message> {
        self.take_within(n, timeout).unwrap_or_else(|got| {
            panic!(
                "expected {n} messages within {timeout:?}, got {}: {got:#?}",
                got.len()
            )
        })
    }

    /// Exactly `n` messages within `timeout`, then none for `quiet`. Panics if fewer arrive
    /// (with how many, their keys when there are few, and the last one) or if one more does.
    pub fn expect_exactly(&mut self, n: usize, timeout: Duration, quiet: Duration) -> Vec<Message> {
        let got = self.take_within(n, timeout).unwrap_or_else(|got| {
            let keys = if got.len() <= 50 {
                format!("keys {:?}; ", keys_of(&got))
            } else {
                String::new()
            };
            panic!(
                "expected {n} messages within {timeout:?}, got {}: {keys}last: {:?}",
                got.len(),
                got.last()
            )
        });
        if let Some(extra) = self.recv(quiet) {
            panic!("expected exactly {n} messages, an extra one came: {extra:?}");
        }
        got
    }

    /// The next `n` messages if they all arrive within `timeout`; else what did.
    fn take_within(&mut self, n: usize, timeout: Duration) -> Result<Vec<Message>, Vec<Message>> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            match self.recv(deadline.saturating_duration_since(Instant::now())) {
                Some(message) => got.push(message),
                None => return Err(got),
            }
        }
        Ok(got)
    }

    /// Panics if any message arrives within `duration`.
    pub fn expect_none(&mut self, duration: Duration) {
        if let Some(message) = self.recv(duration) {
            panic!("expected no message for {duration:?}, got {message:#?}");
        }
    }

    /// Receives until no message has arrived for `quiet`, and returns what came. Panics if
    /// messages are still flowing after 30 s.
    pub fn drain_quiet(&mut self, quiet: Duration) -> Vec<Message> {
        let deadline = Instant::now() + DRAIN_LIMIT;
        let mut got = Vec::new();
        while let Some(message) = self.recv(quiet) {
            got.push(message);
            assert!(
                Instant::now() < deadline,
                "messages still arriving after {DRAIN_LIMIT:?} ({} drained)",
                got.len()
            );
        }
        got
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Closing the connection deletes the exclusive queue at once.
        close(&self.conn);
    }
}
