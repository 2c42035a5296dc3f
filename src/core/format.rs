//! Message formats (`key_evt_amqp.format`), the `redis-*` headers (`key_evt_amqp.headers`) and
//! the CloudEvents options: what they accept, and the pure pieces of encoding a message body
//! that the publisher thread puts together with the AMQP frames (`publisher/encode.rs`).
//!
//! The main thread keeps building the text body `DB\nEVENT\nKEY` (`core/event.rs`); every
//! other form is derived from it on the publisher thread ([`split`]).
//!
//! - `text`: the body as it is, `content_type` `text/plain`.
//! - `json`: `{"db":0,"event":"set","key":"user:1","id":"<message_id>","time":1796155814}`,
//!   `content_type` `application/json`. A key that is not UTF-8 is `"key_b64"` (standard
//!   base64, padded) instead of `"key"`; an event without identity (an item of the old C
//!   module) has no `"id"`, and none with an unknown time has no `"time"`.
//! - `cloudevents`: CloudEvents 1.0 in binary content mode as the RabbitMQ protocol binding
//!   (knative eventing-rabbitmq, `cloudevents-protocol-spec/spec.md`) maps it: the `json` body,
//!   the attributes as message headers named `ce-<attribute>` (or the AMQP 1.0 binding's
//!   `cloudEvents_` / `cloudEvents:` prefixes, `key_evt_amqp.ce_header_prefix`).

use crate::core::event::{decimal, RunId};
pub use crate::core::json::base64_into;
use crate::core::json::{json_bytes, json_string};
use crate::core::value::{self, Data};

/// A refused option value: which option, and what it accepts (the caller adds the value, as
/// `ArgError` shows it; this file does not import `settings`, which imports it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub name: &'static str,
    pub accepted: &'static str,
}

impl Refused {
    fn new(name: &'static str, accepted: &'static str) -> Refused {
        Refused { name, accepted }
    }
}

pub const FORMAT_OPTION: &str = "key_evt_amqp.format";
pub const HEADERS_OPTION: &str = "key_evt_amqp.headers";
pub const CE_SOURCE_OPTION: &str = "key_evt_amqp.ce_source";
pub const CE_PREFIX_OPTION: &str = "key_evt_amqp.ce_header_prefix";
pub const PAYLOAD_OPTION: &str = "key_evt_amqp.payload";
pub const BATCH_OPTION: &str = "key_evt_amqp.batch";

/// `key_evt_amqp.batch`: events per message, at most (1: one event a message, as ever).
pub const MAX_BATCH: u32 = 10_000;
/// `key_evt_amqp.batch_linger_ms`: how long a message waits for more events, by default and
/// at most.
pub const DEFAULT_BATCH_LINGER_MS: u32 = 5;
pub const MAX_BATCH_LINGER_MS: u32 = 10_000;
/// The content type of a batched message: one JSON object a line.
pub const NDJSON: &str = "application/x-ndjson";

const FORMAT_ACCEPTED: &str = "text, json or cloudevents";
const PAYLOAD_ACCEPTED: &str = "key or value";
/// Values only travel in json and cloudevents: the text body has no place for them.
const PAYLOAD_UNDER_TEXT: &str =
    "key, or value once key_evt_amqp.format is json or cloudevents (text has no place for values)";
const BATCH_ACCEPTED: &str = "1 to 10000";
const BATCH_UNDER_TEXT: &str =
    "1, or 2 to 10000 once key_evt_amqp.format is json or cloudevents (text has one event a message)";
const TEXT_UNDER_BATCH: &str =
    "json or cloudevents while key_evt_amqp.batch is over 1 (set batch 1 first for text)";
const TEXT_UNDER_PAYLOAD: &str =
    "json or cloudevents while key_evt_amqp.payload is value (set payload key first for text)";
const CE_PREFIX_ACCEPTED: &str =
    "ce- (RabbitMQ binding), ce_, cloudEvents_ or cloudEvents: (AMQP 1.0 binding)";
const CE_SOURCE_ACCEPTED: &str =
    "a URI-reference of at most 1024 bytes of UTF-8 without spaces or control characters (empty: /key_evt_amqp/<run_id>)";

/// The prefixes `key_evt_amqp.ce_header_prefix` accepts.
pub const CE_PREFIXES: [&str; 4] = ["ce-", "ce_", "cloudEvents_", "cloudEvents:"];

/// The longest `key_evt_amqp.ce_source`.
pub const MAX_CE_SOURCE: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
    CloudEvents,
}

impl Format {
    pub fn parse(value: &[u8]) -> Result<Format, Refused> {
        match value {
            b"text" => Ok(Format::Text),
            b"json" => Ok(Format::Json),
            b"cloudevents" => Ok(Format::CloudEvents),
            _ => Err(Refused::new(FORMAT_OPTION, FORMAT_ACCEPTED)),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
            Format::CloudEvents => "cloudevents",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain",
            Format::Json | Format::CloudEvents => "application/json",
        }
    }
}

/// `key_evt_amqp.payload`: whether events carry the key's value (`core/value.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Payload {
    #[default]
    Key,
    Value,
}

impl Payload {
    pub fn name(self) -> &'static str {
        match self {
            Payload::Key => "key",
            Payload::Value => "value",
        }
    }
}

/// How messages are written: the format and header options together (part of `Settings`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub format: Format,
    /// `key_evt_amqp.headers yes`: `redis-db`, `redis-event`, `redis-key` headers.
    pub headers: bool,
    /// `key_evt_amqp.ce_source`; empty: `/key_evt_amqp/<run_id>` of the node that saw the event.
    pub ce_source: String,
    /// One of [`CE_PREFIXES`].
    pub ce_prefix: &'static str,
    /// `value` only with `json` or `cloudevents`.
    pub payload: Payload,
    /// Events per message (`key_evt_amqp.batch`); over 1 only with `json` or `cloudevents`.
    pub batch: u32,
    /// `key_evt_amqp.batch_linger_ms`.
    pub linger_ms: u32,
}

impl Default for Output {
    fn default() -> Self {
        Output {
            format: Format::Text,
            headers: false,
            ce_source: String::new(),
            ce_prefix: CE_PREFIXES[0],
            payload: Payload::Key,
            batch: 1,
            linger_ms: DEFAULT_BATCH_LINGER_MS,
        }
    }
}

impl Output {
    /// Whether messages are exactly today's text ones (no per-event work beyond that).
    pub fn is_plain(&self) -> bool {
        self.format == Format::Text && !self.headers
    }

    pub fn with_format(&self, value: &[u8]) -> Result<Output, Refused> {
        let format = Format::parse(value)?;
        if format == Format::Text && self.payload == Payload::Value {
            return Err(Refused::new(FORMAT_OPTION, TEXT_UNDER_PAYLOAD));
        }
        if format == Format::Text && self.batch > 1 {
            return Err(Refused::new(FORMAT_OPTION, TEXT_UNDER_BATCH));
        }
        Ok(Output {
            format,
            ..self.clone()
        })
    }

    pub fn with_batch(&self, n: i64) -> Result<Output, Refused> {
        let batch = u32::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_BATCH).contains(n))
            .ok_or(Refused::new(BATCH_OPTION, BATCH_ACCEPTED))?;
        if batch > 1 && self.format == Format::Text {
            return Err(Refused::new(BATCH_OPTION, BATCH_UNDER_TEXT));
        }
        Ok(Output {
            batch,
            ..self.clone()
        })
    }

    /// Whether events go several to a message (`application/x-ndjson`).
    pub fn batched(&self) -> bool {
        self.batch > 1
    }

    pub fn with_payload(&self, value: &[u8]) -> Result<Output, Refused> {
        let payload = match value {
            b"key" => Payload::Key,
            b"value" if self.format == Format::Text => {
                return Err(Refused::new(PAYLOAD_OPTION, PAYLOAD_UNDER_TEXT))
            }
            b"value" => Payload::Value,
            _ => return Err(Refused::new(PAYLOAD_OPTION, PAYLOAD_ACCEPTED)),
        };
        Ok(Output {
            payload,
            ..self.clone()
        })
    }

    pub fn with_ce_source(&self, value: &[u8]) -> Result<Output, Refused> {
        let bad = || Refused::new(CE_SOURCE_OPTION, CE_SOURCE_ACCEPTED);
        let text = std::str::from_utf8(value).map_err(|_| bad())?;
        if text.len() > MAX_CE_SOURCE || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        Ok(Output {
            ce_source: text.to_string(),
            ..self.clone()
        })
    }

    pub fn with_ce_prefix(&self, value: &[u8]) -> Result<Output, Refused> {
        let prefix = CE_PREFIXES
            .iter()
            .find(|p| p.as_bytes() == value)
            .ok_or(Refused::new(CE_PREFIX_OPTION, CE_PREFIX_ACCEPTED))?;
        Ok(Output {
            ce_prefix: prefix,
            ..self.clone()
        })
    }
}

/// A text body `DB\nEVENT\nKEY` taken apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parts<'a> {
    /// The database number as the body writes it (canonical decimal, `-1` for FLUSHALL).
    pub db_text: &'a [u8],
    pub db: i64,
    pub event: &'a [u8],
    pub key: &'a [u8],
}

/// Splits a body on its first two `\n`. `None` for a body that is not of that form with a
/// canonical decimal database (an odd item left in the fallback list by the old module): such a
/// body is published as text whatever the format.
pub fn split(body: &[u8]) -> Option<Parts<'_>> {
    let first = body.iter().position(|&b| b == b'\n')?;
    let db_text = body.get(..first)?;
    let rest = body.get(first + 1..)?;
    let second = rest.iter().position(|&b| b == b'\n')?;
    let event = rest.get(..second)?;
    let key = rest.get(second + 1..)?;
    let digits = db_text.strip_prefix(b"-").unwrap_or(db_text);
    let canonical = match digits {
        [] => false,
        [b'0'] => db_text.len() == 1,
        [first, ..] => *first != b'0' && digits.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return None;
    }
    let db = std::str::from_utf8(db_text).ok()?.parse::<i64>().ok()?;
    Some(Parts {
        db_text,
        db,
        event,
        key,
    })
}

/// Appends the `json` body: `{"db":…,"event":…,"key":…|"key_b64":…[,"id":…][,"time":…]`
/// `[,values…]}` (the values of `payload value`, `core/value.rs`).
/// `time` 0 (unknown) is left out.
pub fn write_json(
    out: &mut Vec<u8>,
    p: &Parts<'_>,
    id: Option<&[u8]>,
    time: u32,
    data: Option<&Data>,
) {
    out.extend_from_slice(b"{\"db\":");
    out.extend_from_slice(p.db_text);
    out.extend_from_slice(b",\"event\":");
    json_bytes(out, p.event);
    match std::str::from_utf8(p.key) {
        Ok(key) => {
            out.extend_from_slice(b",\"key\":");
            json_string(out, key);
        }
        Err(_) => {
            out.extend_from_slice(b",\"key_b64\":\"");
            base64_into(out, p.key);
            out.push(b'"');
        }
    }
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        json_bytes(out, id);
    }
    if time > 0 {
        out.extend_from_slice(b",\"time\":");
        let mut digits = [0u8; 20];
        out.extend_from_slice(decimal(u64::from(time), &mut digits));
    }
    if let Some(data) = data {
        value::write_json_fields(out, data);
    }
    out.push(b'}');
}

/// The CloudEvents attributes of one event that are not derived from its body.
pub struct CeAttributes<'a> {
    /// `id`: the message id, or a node-unique id for an event without identity.
    pub id: &'a [u8],
    pub source: &'a [u8],
    /// The `time` attribute, RFC 3339 (empty: unknown, left out).
    pub time: &'a [u8],
}

/// Appends one CloudEvent in the JSON event format (structured mode), the line of a batched
/// `cloudevents` message: `{"specversion":"1.0","id":…,"source":…,"type":…[,"subject":…]`
/// `[,"time":…],"datacontenttype":"application/json","data":<the json body>}`. The attributes
/// are those binary mode sends as headers; `subject` only for a non-empty UTF-8 key.
pub fn write_ce_json(
    out: &mut Vec<u8>,
    p: &Parts<'_>,
    ce: &CeAttributes<'_>,
    message_id: Option<&[u8]>,
    timestamp: u32,
    data: Option<&Data>,
) {
    out.extend_from_slice(b"{\"specversion\":\"1.0\",\"id\":");
    json_bytes(out, ce.id);
    out.extend_from_slice(b",\"source\":");
    json_bytes(out, ce.source);
    out.extend_from_slice(b",\"type\":\"redis.keyspace.");
    // `redis.keyspace.<event>` as one JSON string: the escaped event name loses its opening
    // quote (a move of its own few bytes only: it is the buffer's end).
    let start = out.len();
    json_bytes(out, p.event);
    out.remove(start);
    if !p.key.is_empty() {
        if let Ok(key) = std::str::from_utf8(p.key) {
            out.extend_from_slice(b",\"subject\":");
            json_string(out, key);
        }
    }
    if !ce.time.is_empty() {
        out.extend_from_slice(b",\"time\":");
        json_bytes(out, ce.time);
    }
    out.extend_from_slice(b",\"datacontenttype\":\"application/json\",\"data\":");
    write_json(out, p, message_id, timestamp, data);
    out.push(b'}');
}

/// `secs` since the Unix epoch as RFC 3339 in UTC: `2026-12-02T00:35:18Z`, appended.
pub fn rfc3339(out: &mut Vec<u8>, secs: u32) {
    let days = i64::from(secs / 86_400);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let two = |out: &mut Vec<u8>, n: u32| {
        out.push(b'0' + (n / 10 % 10) as u8);
        out.push(b'0' + (n % 10) as u8);
    };
    // Years from 1970 to 2106 (u32 seconds): always four digits.
    two(out, (y / 100) as u32);
    two(out, (y % 100) as u32);
    out.push(b'-');
    two(out, m);
    out.push(b'-');
    two(out, d);
    out.push(b'T');
    two(out, rem / 3600);
    out.push(b':');
    two(out, rem / 60 % 60);
    out.push(b':');
    two(out, rem % 60);
    out.push(b'Z');
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days >= 0).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The CloudEvents header names for one prefix, built once per batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CeNames {
    pub specversion: String,
    pub id: String,
    pub source: String,
    pub kind: String,
    pub time: String,
    pub subject: String,
}

impl CeNames {
    pub fn new(prefix: &str) -> CeNames {
        let name = |attr: &str| format!("{prefix}{attr}");
        CeNames {
            specversion: name("specversion"),
            id: name("id"),
            source: name("source"),
            kind: name("type"),
            time: name("time"),
            subject: name("subject"),
        }
    }
}

/// The CloudEvents `type` of an event: `redis.keyspace.<event>`, appended.
pub fn ce_type(out: &mut Vec<u8>, event: &[u8]) {
    out.extend_from_slice(b"redis.keyspace.");
    out.extend_from_slice(event);
}

/// The default CloudEvents `source`: `/key_evt_amqp/<run_id>` (40 hex digits), appended.
pub fn default_ce_source(out: &mut Vec<u8>, run_id: &RunId) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"/key_evt_amqp/");
    for b in run_id.0 {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json(body: &[u8], id: Option<&[u8]>, time: u32) -> String {
        let mut out = Vec::new();
        write_json(&mut out, &split(body).unwrap(), id, time, None);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_documented_json_body() {
        assert_eq!(
            json(b"0\nset\nuser:1", Some(b"abc-1"), 1_796_155_814),
            r#"{"db":0,"event":"set","key":"user:1","id":"abc-1","time":1796155814}"#
        );
    }

    #[test]
    fn flush_events_and_odd_keys_render() {
        assert_eq!(
            json(b"-1\nflushall\n", None, 5),
            r#"{"db":-1,"event":"flushall","key":"","time":5}"#
        );
        assert_eq!(
            json(b"0\nswapdb\n1", None, 0),
            r#"{"db":0,"event":"swapdb","key":"1"}"#
        );
        assert_eq!(
            json(b"12\nset\na\"b\\c\nd\te\x01\x7f\xc3\xa9", None, 0),
            "{\"db\":12,\"event\":\"set\",\"key\":\"a\\\"b\\\\c\\nd\\te\\u0001\x7f\u{e9}\"}"
        );
        assert_eq!(
            json(b"0\nset\n\xff\x00k", None, 0),
            r#"{"db":0,"event":"set","key_b64":"/wBr"}"#
        );
        assert_eq!(
            json(b"0\nset\n\xff", None, 0),
            r#"{"db":0,"event":"set","key_b64":"/w=="}"#
        );
    }

    #[test]
    fn only_canonical_bodies_split() {
        assert_eq!(
            split(b"-1\nflushall\n"),
            Some(Parts {
                db_text: b"-1",
                db: -1,
                event: b"flushall",
                key: b""
            })
        );
        assert_eq!(split(b"0\nset\na\nb").unwrap().key, b"a\nb");
        for bad in [
            &b"0\nset"[..],
            b"",
            b"x\nset\nk",
            b"\nset\nk",
            b"01\nset\nk",
            b"-0\nset\nk",
            b"-\nset\nk",
            b"+1\nset\nk",
            b"99999999999999999999\nset\nk",
        ] {
            assert_eq!(split(bad), None, "{:?}", bad.escape_ascii().to_string());
        }
    }

    #[test]
    fn rfc3339_in_utc() {
        let t = |s| {
            let mut out = Vec::new();
            rfc3339(&mut out, s);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(t(0), "1970-01-01T00:00:00Z");
        assert_eq!(t(1_796_155_814), "2026-12-01T20:10:14Z");
        assert_eq!(t(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(t(u32::MAX), "2106-02-07T06:28:15Z");
    }

    #[test]
    fn options_refuse_what_they_do_not_accept() {
        let o = Output::default();
        assert!(o.is_plain());
        assert_eq!(o.with_format(b"json").unwrap().format, Format::Json);
        let e = o.with_format(b"xml").unwrap_err();
        assert_eq!(
            (e.name, e.accepted),
            ("key_evt_amqp.format", "text, json or cloudevents")
        );
        for p in CE_PREFIXES {
            assert_eq!(o.with_ce_prefix(p.as_bytes()).unwrap().ce_prefix, p);
        }
        let e = o.with_ce_prefix(b"x-ce-").unwrap_err();
        assert_eq!(e.name, CE_PREFIX_OPTION);
        assert!(e.accepted.contains("cloudEvents_"), "{e:?}");
        assert_eq!(o.with_ce_source(b"/orders").unwrap().ce_source, "/orders");
        assert_eq!(o.with_ce_source(b"").unwrap().ce_source, "");
        assert_eq!(o.with_ce_source(b"a b").unwrap_err().name, CE_SOURCE_OPTION);
        assert!(o.with_ce_source(b"\xff").is_err());
        assert!(o.with_ce_source(&[b'a'; 1025]).is_err());
    }

    #[test]
    fn payload_value_and_text_refuse_each_other_in_either_order() {
        let text = Output::default();
        let e = text.with_payload(b"value").unwrap_err();
        assert_eq!(e.name, PAYLOAD_OPTION);
        assert!(e.accepted.contains(FORMAT_OPTION), "{e:?}");
        assert_eq!(
            text.with_payload(b"x").unwrap_err().accepted,
            "key or value"
        );
        let json = text.with_format(b"json").unwrap();
        let values = json.with_payload(b"value").unwrap();
        assert_eq!(values.payload, Payload::Value);
        let e = values.with_format(b"text").unwrap_err();
        assert_eq!(e.name, FORMAT_OPTION);
        assert!(e.accepted.contains(PAYLOAD_OPTION), "{e:?}");
        assert!(values.with_format(b"cloudevents").is_ok());
        assert_eq!(values.with_payload(b"key").unwrap().payload, Payload::Key);
    }

    #[test]
    fn batch_and_text_refuse_each_other_in_either_order() {
        let text = Output::default();
        assert_eq!(text.with_batch(1).unwrap().batch, 1, "1 is today's message");
        let e = text.with_batch(100).unwrap_err();
        assert!(
            e.name == BATCH_OPTION && e.accepted.contains(FORMAT_OPTION),
            "{e:?}"
        );
        let json = text.with_format(b"json").unwrap();
        let batched = json.with_batch(100).unwrap();
        assert!(batched.batched());
        let e = batched.with_format(b"text").unwrap_err();
        assert!(
            e.name == FORMAT_OPTION && e.accepted.contains(BATCH_OPTION),
            "{e:?}"
        );
        for bad in [0, 10_001, -1] {
            assert_eq!(json.with_batch(bad).unwrap_err().accepted, "1 to 10000");
        }
    }

    #[test]
    fn ce_names_and_values() {
        let n = CeNames::new("cloudEvents:");
        assert_eq!(n.kind, "cloudEvents:type");
        assert_eq!(CeNames::new("ce-").specversion, "ce-specversion");
        let mut out = Vec::new();
        ce_type(&mut out, b"expired");
        assert_eq!(out, b"redis.keyspace.expired");
        out.clear();
        let mut raw = [0u8; 20];
        raw[0] = 0xab;
        raw[19] = 0x01;
        default_ce_source(&mut out, &RunId(raw));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("/key_evt_amqp/ab{}01", "0".repeat(36))
        );
    }

    #[test]
    fn a_structured_cloudevent_carries_the_attributes_and_the_json_body_as_data() {
        let ce = |body: &[u8], id: Option<&[u8]>, time: &[u8]| {
            let attrs = CeAttributes {
                id: id.unwrap_or(b"node-legacy-1"),
                source: b"/key_evt_amqp/r\"1",
                time,
            };
            let mut out = Vec::new();
            write_ce_json(
                &mut out,
                &split(body).unwrap(),
                &attrs,
                id,
                1_796_175_107,
                None,
            );
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            ce(b"0\nset\nuser:1", Some(b"r-1"), b"2026-12-02T01:31:47Z"),
            concat!(
                r#"{"specversion":"1.0","id":"r-1","source":"/key_evt_amqp/r\"1","#,
                r#""type":"redis.keyspace.set","subject":"user:1","time":"2026-12-02T01:31:47Z","#,
                r#""datacontenttype":"application/json","data":{"db":0,"event":"set","#,
                r#""key":"user:1","id":"r-1","time":1796175107}}"#
            )
        );
        // No subject for an empty or binary key, no time when unknown, the legacy id.
        let v: serde_json::Value = serde_json::from_str(&ce(b"-1\nflushall\n", None, b"")).unwrap();
        assert_eq!(v["type"], "redis.keyspace.flushall");
        assert_eq!(v["id"], "node-legacy-1");
        assert!(v.get("subject").is_none() && v.get("time").is_none(), "{v}");
        assert!(v["data"].get("id").is_none(), "{v}");
        let v: serde_json::Value = serde_json::from_str(&ce(b"3\nd\"el\n\xff", None, b"")).unwrap();
        assert_eq!(v["type"], "redis.keyspace.d\"el");
        assert!(v.get("subject").is_none(), "{v}");
        assert_eq!(v["data"]["key_b64"], "/w==");
    }

    proptest! {
        #[test]
        fn json_parses_and_round_trips(db in any::<i64>(), event in "[a-z]{0,10}",
                                       key in proptest::collection::vec(any::<u8>(), 0..64),
                                       time in any::<u32>()) {
            let body = crate::core::event::body(db, event.as_bytes(), &key);
            let mut out = Vec::new();
            write_json(&mut out, &split(&body).unwrap(), Some(b"id-1"), time, None);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(v["db"].as_i64(), Some(db));
            prop_assert_eq!(v["event"].as_str(), Some(event.as_str()));
            match std::str::from_utf8(&key) {
                Ok(k) => prop_assert_eq!(v["key"].as_str(), Some(k)),
                Err(_) => {
                    use base64::Engine;
                    let b64 = v["key_b64"].as_str().unwrap();
                    prop_assert_eq!(base64::engine::general_purpose::STANDARD.decode(b64).unwrap(), key);
                }
            }
            if time > 0 {
                prop_assert_eq!(v["time"].as_u64(), Some(u64::from(time)));
            } else {
                prop_assert!(v.get("time").is_none());
            }
        }

        #[test]
        fn split_never_panics(body in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = split(&body);
        }
    }
}
