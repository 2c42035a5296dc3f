//! Print the keyspace events that `key_evt_amqp` publishes, one line each.
//!
//! ```text
//! cargo run --release --example tail -- [--count N] [--ready-file PATH] [EXCHANGE [ROUTING_KEY]]
//! ```
//!
//! Environment: `AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`), `EXCHANGE`
//! (default `amq.direct`), `ROUTING_KEY` (default `redis_keyspace_events`); positional
//! arguments win over the environment.
//!
//! The consumer (the testkit's `Consumer`) declares an exclusive, auto-delete, server-named
//! queue, binds it to EXCHANGE with ROUTING_KEY and prints every message as
//!
//! ```text
//! db=0 event=set key=hello  id=<message_id> ts=<timestamp>
//! ```
//!
//! Every format of `key_evt_amqp.format` is read: `text` (`content_type` `text/plain`), whose
//! body is `DB\nEVENT\nKEY`, split on the first two `\n` only, since the key may hold any byte;
//! `json` and `cloudevents` (`application/json`), whose body is one JSON object with `db`,
//! `event`, `key` (or `key_b64`, base64 of a key that is not UTF-8), `id` and `time`. A
//! CloudEvents message (a `ce-specversion` header, whichever the prefix) shows its `type` too,
//! as does each line of a batched one (a structured event, its `data` the `json` object). With `payload value` the line ends with the value, its TTL and the old
//! value as their JSON (`  value(hash)={"f":"v"} ttl_ms=-1  old(string)="before"`). The key is printed escaped as Rust's `escape_ascii` does: `\\` for a backslash, `\'` and
//! `\"` for quotes, `\n`, `\r`, `\t`, and `\xNN` for every other byte outside printable ASCII.
//!
//! `--verbose` prints each message whole instead: its routing key, properties, headers and body
//! (non-printable bytes escaped). `--count N` exits after N events (lines; a batched message is one line per event); `--ready-file PATH` creates PATH once the queue is bound
//! (scripts wait for it before they make Redis write).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use testkit::{redact_url as redact, Consumer, ConsumerOptions};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const DEFAULT_EXCHANGE: &str = "amq.direct";
const DEFAULT_ROUTING_KEY: &str = "redis_keyspace_events";

const USAGE: &str =
    "usage: tail [--count N] [--verbose] [--ready-file PATH] [EXCHANGE [ROUTING_KEY]]
env: AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f), EXCHANGE (default amq.direct),
     ROUTING_KEY (default redis_keyspace_events)";

struct Options {
    url: String,
    exchange: String,
    routing_key: String,
    count: Option<u64>,
    ready_file: Option<String>,
    verbose: bool,
}

fn parse_args() -> Result<Options, String> {
    let env_or = |name: &str, default: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_string())
    };
    let mut opts = Options {
        url: env_or("AMQP_URL", DEFAULT_URL),
        exchange: env_or("EXCHANGE", DEFAULT_EXCHANGE),
        routing_key: env_or("ROUTING_KEY", DEFAULT_ROUTING_KEY),
        count: None,
        ready_file: None,
        verbose: false,
    };
    let mut positional = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--count" | "-n" => {
                let value = args.next().ok_or("--count needs a number")?;
                let n = value
                    .parse::<u64>()
                    .map_err(|_| format!("--count: not a number: {value}"))?;
                opts.count = Some(n);
            }
            "--verbose" | "-v" => opts.verbose = true,
            "--ready-file" => {
                opts.ready_file = Some(args.next().ok_or("--ready-file needs a path")?);
            }
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            _ => positional.push(arg),
        }
    }
    let mut positional = positional.into_iter();
    if let Some(exchange) = positional.next() {
        opts.exchange = exchange;
    }
    if let Some(routing_key) = positional.next() {
        opts.routing_key = routing_key;
    }
    if positional.next().is_some() {
        return Err("too many arguments".to_string());
    }
    Ok(opts)
}

/// The key as one printable line: Rust's own byte escaping (`escape_ascii`).
fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// One output line for a `json` or `cloudevents` body: `None` if it is not the module's JSON.
fn format_json_line(body: &[u8], ce_type: Option<&str>) -> Option<String> {
    use base64::Engine;
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let db = v.get("db")?.as_i64()?;
    let event = v.get("event")?.as_str()?;
    let key = match (v.get("key"), v.get("key_b64")) {
        (Some(k), _) => k.as_str()?.as_bytes().to_vec(),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.as_str()?)
            .ok()?,
        (None, None) => return None,
    };
    let id = v.get("id").and_then(|i| i.as_str()).unwrap_or("-");
    let ts = v
        .get("time")
        .and_then(|t| t.as_u64())
        .map_or_else(|| "-".to_string(), |t| t.to_string());
    let ce = ce_type.map(|t| format!(" type={t}")).unwrap_or_default();
    Some(format!(
        "db={db} event={} key={}  id={id} ts={ts}{ce}{}",
        escape(event.as_bytes()),
        escape(&key),
        values_text(&v)
    ))
}

/// The fields of `payload value` as `  value(hash)={…} ttl_ms=… old(string)="…"`, their JSON
/// as it came (a value in base64 keeps its `_b64` name); empty without them.
fn values_text(v: &serde_json::Value) -> String {
    let mut out = String::new();
    for (prefix, name) in [("", "value"), ("old_", "old")] {
        let Some(kind) = v.get(format!("{prefix}type")).and_then(|t| t.as_str()) else {
            continue;
        };
        let shown = [
            (format!("{prefix}value"), ""),
            (format!("{prefix}value_b64"), "_b64"),
        ]
        .iter()
        .find_map(|(field, tag)| v.get(field).map(|x| format!("{tag}={x}")))
        .or_else(|| {
            v.get(format!("{prefix}value_truncated"))
                .map(|_| " truncated".into())
        })
        .unwrap_or_default();
        out.push_str(&format!("  {name}({kind}){shown}"));
        if let Some(ttl) = v.get(format!("{prefix}ttl_ms")) {
            out.push_str(&format!(" ttl_ms={ttl}"));
        }
    }
    if v.get("cancelled").is_some() {
        out.push_str("  cancelled");
    }
    out
}

/// The whole message, one field a line (`--verbose`).
fn verbose_text(m: &testkit::Message) -> String {
    let mut out = format!("routing_key: {}\n", m.routing_key);
    let props = [
        ("content_type", m.content_type.clone()),
        ("delivery_mode", m.delivery_mode.map(|d| d.to_string())),
        ("message_id", m.message_id.clone()),
        ("timestamp", m.timestamp.map(|t| t.to_string())),
        ("app_id", m.app_id.clone()),
    ];
    for (name, value) in props {
        if let Some(value) = value {
            out.push_str(&format!("{name}: {value}\n"));
        }
    }
    for (name, value) in &m.headers {
        let shown = match value {
            testkit::Header::Bytes(b) => format!("\"{}\"", escape(b)),
            testkit::Header::Int(n) => n.to_string(),
            testkit::Header::Other(o) => o.clone(),
        };
        out.push_str(&format!("header {name}: {shown}\n"));
    }
    out.push_str(&format!("body: {}\n", escape(&m.body)));
    out
}

/// The output lines of a message, whatever its format: one per event, so a batched message
/// (`application/x-ndjson`, `key_evt_amqp.batch`) gives one line per JSON line.
fn message_lines(message: &testkit::Message) -> Vec<String> {
    if message.content_type.as_deref() == Some("application/x-ndjson") {
        return ndjson_lines(&message.body);
    }
    vec![message_line(message)]
}

/// The lines of a batched body; one that is not the module's JSON is shown escaped.
fn ndjson_lines(body: &[u8]) -> Vec<String> {
    body.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            structured_ce_line(l)
                .or_else(|| format_json_line(l, None))
                .unwrap_or_else(|| escape(l))
        })
        .collect()
}

/// A line of batched `cloudevents`, a structured CloudEvent: its `data` shown as a `json` body
/// with its `type`. `None` if the line is not one.
fn structured_ce_line(line: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    v.get("specversion")?;
    let data = serde_json::to_vec(v.get("data")?).ok()?;
    format_json_line(&data, v.get("type")?.as_str())
}

/// One output line for a message of one event.
fn message_line(message: &testkit::Message) -> String {
    if message.content_type.as_deref() == Some("application/json") {
        // The CloudEvents type under any of the prefixes the module may use.
        let ce_type = ["ce-", "ce_", "cloudEvents_", "cloudEvents:"]
            .iter()
            .find_map(|p| message.header(&format!("{p}type")).and_then(|h| h.text()));
        if let Some(line) = format_json_line(&message.body, ce_type) {
            return line;
        }
    }
    format_line(
        &message.body,
        message.message_id.as_deref(),
        message.timestamp,
    )
}

/// One output line for a text body and its identity.
fn format_line(body: &[u8], id: Option<&str>, ts: Option<u64>) -> String {
    let id = id.unwrap_or("-");
    let ts = ts.map_or_else(|| "-".to_string(), |t| t.to_string());
    let mut parts = body.splitn(3, |&b| b == b'\n');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(db), Some(event), Some(key)) => format!(
            "db={} event={} key={}  id={id} ts={ts}",
            escape(db),
            escape(event),
            escape(key)
        ),
        _ => format!("malformed body={}  id={id} ts={ts}", escape(body)),
    }
}

fn run(opts: Options) -> Result<(), String> {
    let shown_url = redact(&opts.url);
    // The testkit's consumer: an exclusive, auto-delete, server-named queue bound to EXCHANGE
    // with ROUTING_KEY, automatic acks; each setup step bounded (lapin waits forever on a peer
    // that accepts TCP and never answers).
    let mut consumer = Consumer::connect(&ConsumerOptions {
        url: opts.url.clone(),
        tag: "tail".into(),
        timeout: CONNECT_TIMEOUT,
        ..ConsumerOptions::new(&opts.exchange, &opts.routing_key)
    })?;

    eprintln!(
        "tail: listening on {shown_url}, exchange '{}', routing key '{}' (queue {})",
        opts.exchange,
        opts.routing_key,
        consumer.queue()
    );
    if let Some(path) = &opts.ready_file {
        std::fs::write(path, b"ready\n")
            .map_err(|e| format!("cannot write ready file {path}: {e}"))?;
    }

    if opts.count == Some(0) {
        return Ok(());
    }
    let stdout = std::io::stdout();
    let mut seen: u64 = 0;
    loop {
        let message = consumer
            .try_recv(None)
            .map_err(|e| format!("lost the broker: {e}"))?
            .ok_or("the consumer stopped waiting")?;
        let lines = if opts.verbose {
            vec![verbose_text(&message)]
        } else {
            message_lines(&message)
        };
        for line in lines {
            let mut out = stdout.lock();
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                // Reader went away (e.g. `| head`): nothing left to do.
                return Ok(());
            }
            seen += 1;
            if opts.count.is_some_and(|n| seen >= n) {
                // Dropping the consumer closes the connection.
                return Ok(());
            }
        }
    }
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(opts) => opts,
        Err(msg) => {
            if msg.is_empty() {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            eprintln!("tail: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("tail: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_the_first_two_newlines_only() {
        let line = format_line(b"0\nset\nhel\nlo", Some("abc-1"), Some(42));
        assert_eq!(line, "db=0 event=set key=hel\\nlo  id=abc-1 ts=42");
    }

    #[test]
    fn reads_json_bodies() {
        let line = format_json_line(
            br#"{"db":0,"event":"set","key":"user:1","id":"abc-1","time":42}"#,
            None,
        );
        assert_eq!(line.unwrap(), "db=0 event=set key=user:1  id=abc-1 ts=42");
        let line = format_json_line(
            br#"{"db":-1,"event":"flushall","key_b64":"/wA="}"#,
            Some("redis.keyspace.flushall"),
        );
        assert_eq!(
            line.unwrap(),
            "db=-1 event=flushall key=\\xff\\x00  id=- ts=- type=redis.keyspace.flushall"
        );
        assert_eq!(format_json_line(b"0\nset\nk", None), None);
    }

    #[test]
    fn unpacks_batches() {
        let lines = ndjson_lines(
            b"{\"db\":0,\"event\":\"set\",\"key\":\"a\",\"id\":\"r-1\",\"time\":1}\n{\"db\":0,\"event\":\"del\",\"key\":\"b\",\"id\":\"r-2\",\"time\":1}\n",
        );
        assert_eq!(
            lines,
            [
                "db=0 event=set key=a  id=r-1 ts=1",
                "db=0 event=del key=b  id=r-2 ts=1"
            ]
        );
        let ce = ndjson_lines(
            br#"{"specversion":"1.0","id":"r-3","source":"/s","type":"redis.keyspace.set","datacontenttype":"application/json","data":{"db":0,"event":"set","key":"c","id":"r-3","time":2}}"#,
        );
        assert_eq!(
            ce,
            ["db=0 event=set key=c  id=r-3 ts=2 type=redis.keyspace.set"]
        );
    }

    #[test]
    fn shows_values_and_old_values() {
        let line = format_json_line(
            br#"{"db":0,"event":"set","key":"k","type":"hash","value":{"f":"v"},"ttl_ms":-1,"old_type":"string","old_value_b64":"/w=="}"#,
            None,
        );
        assert_eq!(
            line.unwrap(),
            r#"db=0 event=set key=k  id=- ts=-  value(hash)={"f":"v"} ttl_ms=-1  old(string)_b64="/w==""#
        );
        let line = format_json_line(
            br#"{"db":0,"event":"del","key":"k","type":"none","old_type":"list","old_value_truncated":true}"#,
            None,
        );
        assert_eq!(
            line.unwrap(),
            "db=0 event=del key=k  id=- ts=-  value(none)  old(list) truncated"
        );
    }

    #[test]
    fn escapes_binary_keys() {
        assert_eq!(escape(b"a\0b\xff\\ c"), "a\\x00b\\xff\\\\ c");
        assert_eq!(escape(b"it's \"x\"\n"), "it\\'s \\\"x\\\"\\n");
        assert_eq!(escape(b""), "");
    }

    #[test]
    fn missing_identity_and_malformed_body() {
        assert_eq!(
            format_line(b"0\nset\n", None, None),
            "db=0 event=set key=  id=- ts=-"
        );
        assert_eq!(
            format_line(b"junk", None, None),
            "malformed body=junk  id=- ts=-"
        );
    }

    #[test]
    fn hides_the_password() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://127.0.0.1/%2f"), "amqp://127.0.0.1/%2f");
    }
}
