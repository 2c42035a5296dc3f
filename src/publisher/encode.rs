//! A batch of events as AMQP publishes, and error texts made safe to show.
//!
//! The format, the headers and the routing-key template are applied here, on the publisher
//! thread, from the text body the main thread built; the pieces are pure code in
//! `core/format.rs` and `core/template.rs`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::amqp::connection::CHANNEL;
use crate::amqp::wire::{self, Properties};
use crate::core::event::{Event, RunId};
use crate::core::format::{self, CeNames, Format, Parts};
use crate::core::settings::Settings;
use crate::core::template::Fields;

/// The `app_id` of every message.
pub const APP_ID: &str = "key_evt_amqp";

/// Header frames carry every property in one frame: headers that would not fit with this much
/// room left for the other properties (content type, message id, app id: under 200 bytes) lose
/// the key-bearing ones (`redis-key`, `ce-subject`).
const OTHER_PROPERTIES: usize = 512;

/// `ce-id`s of events without identity (items of the old C module) on this node: unique with
/// the node's run id in front, as the CloudEvents spec asks of `source` + `id`.
static LEGACY_IDS: AtomicU64 = AtomicU64::new(0);

/// Buffers reused from event to event and batch to batch: no allocation per event.
pub struct Encoder {
    /// This node's run id: the default `ce-source` of events without identity.
    node: RunId,
    /// The same in hex, in their `ce-id`.
    node_hex: Vec<u8>,
    message_id: Vec<u8>,
    routing_key: Vec<u8>,
    body: Vec<u8>,
    headers: Vec<u8>,
    value: Vec<u8>,
    /// The CloudEvents header names of the prefix in force.
    ce_names: Option<(&'static str, CeNames)>,
    /// The last `ce-time` and `ce-source` written, for the timestamp and run id they are of:
    /// most events of a batch share both.
    last_time: (u32, Vec<u8>),
    last_source: (Option<RunId>, Vec<u8>),
}

/// What the headers of one event are made of.
struct HeaderInput<'a> {
    node: &'a RunId,
    node_hex: &'a [u8],
    ce_names: Option<&'a CeNames>,
    event: &'a Event,
    parts: &'a Parts<'a>,
    message_id: Option<&'a [u8]>,
}

impl Encoder {
    pub fn new(node: RunId) -> Encoder {
        Encoder {
            node,
            node_hex: node.to_hex().into_bytes(),
            message_id: Vec::with_capacity(64),
            routing_key: Vec::with_capacity(256),
            body: Vec::with_capacity(256),
            headers: Vec::with_capacity(512),
            value: Vec::with_capacity(128),
            ce_names: None,
            last_time: (0, Vec::with_capacity(20)),
            last_source: (None, Vec::with_capacity(60)),
        }
    }

    /// Writes a batch of publishes: mandatory, so unroutable events are reported (returned).
    /// Returns how many routing keys were cut to 255 bytes.
    pub fn encode(
        &mut self,
        out: &mut Vec<u8>,
        frame_max: u32,
        s: &Settings,
        batch: &[Event],
    ) -> u64 {
        let o = &s.output;
        if o.format == Format::CloudEvents
            && self
                .ce_names
                .as_ref()
                .is_none_or(|(p, _)| *p != o.ce_prefix)
        {
            self.ce_names = Some((o.ce_prefix, CeNames::new(o.ce_prefix)));
        }
        let Encoder {
            node,
            node_hex,
            message_id,
            routing_key,
            body,
            headers,
            value,
            ce_names,
            last_time,
            last_source,
        } = self;
        let plain = o.is_plain() && s.routing.is_literal();
        let room = (frame_max as usize).saturating_sub(OTHER_PROPERTIES);
        let mut cut = 0;
        for e in batch {
            message_id.clear();
            if let Some(id) = e.id {
                id.write_message_id(message_id);
            }
            let message_id = e.id.is_some().then_some(message_id.as_slice());
            let timestamp = (e.timestamp > 0).then_some(u64::from(e.timestamp));
            // Today's message, byte for byte, with no work per event beyond it.
            if plain {
                let props = Properties {
                    content_type: "text/plain",
                    headers: None,
                    delivery_mode: s.delivery_mode,
                    message_id,
                    timestamp,
                    app_id: APP_ID,
                };
                wire::publish(
                    out,
                    CHANNEL,
                    frame_max,
                    &s.exchange,
                    s.routing_key.as_bytes(),
                    true,
                    &props,
                    &e.body,
                );
                continue;
            }
            let parts = format::split(&e.body);
            let fields = parts.map_or(
                Fields {
                    db: b"",
                    event: b"",
                    key: b"",
                },
                |p| Fields {
                    db: p.db_text,
                    event: p.event,
                    key: p.key,
                },
            );
            if s.routing.render(&s.routing_key, &fields, routing_key) {
                cut += 1;
            }
            headers.clear();
            // A body that does not split (an odd item of the old module) goes as text, with
            // no headers.
            let (format, payload): (Format, &[u8]) = match parts {
                None => (Format::Text, &e.body),
                Some(p) => {
                    let input = HeaderInput {
                        node,
                        node_hex,
                        ce_names: ce_names.as_ref().map(|(_, n)| n),
                        event: e,
                        parts: &p,
                        message_id,
                    };
                    let mut scratch = Scratch {
                        value,
                        last_time,
                        last_source,
                    };
                    write_headers(headers, &mut scratch, s, &input, true);
                    if headers.len() > room {
                        headers.clear();
                        write_headers(headers, &mut scratch, s, &input, false);
                    }
                    if o.format == Format::Text {
                        (Format::Text, &e.body)
                    } else {
                        body.clear();
                        format::write_json(body, &p, message_id, e.timestamp, e.data.as_deref());
                        (o.format, body.as_slice())
                    }
                }
            };
            let props = Properties {
                content_type: format.content_type(),
                headers: (!headers.is_empty()).then_some(headers.as_slice()),
                delivery_mode: s.delivery_mode,
                message_id,
                timestamp,
                app_id: APP_ID,
            };
            wire::publish(
                out,
                CHANNEL,
                frame_max,
                &s.exchange,
                routing_key,
                true,
                &props,
                payload,
            );
        }
        cut
    }

    /// Appends `e` as one structured CloudEvent (a line of a batched `cloudevents` message,
    /// [`format::write_ce_json`]), with the attributes binary mode sends as headers.
    pub fn write_ce_line(
        &mut self,
        out: &mut Vec<u8>,
        s: &Settings,
        e: &Event,
        p: &Parts<'_>,
        message_id: Option<&[u8]>,
    ) {
        let time: &[u8] = if e.timestamp > 0 {
            ce_time(e.timestamp, &mut self.last_time)
        } else {
            b""
        };
        let ce = format::CeAttributes {
            id: ce_id(message_id, &self.node_hex, &mut self.value),
            source: ce_source(s, e, &self.node, &mut self.last_source),
            time,
        };
        format::write_ce_json(out, p, &ce, message_id, e.timestamp, e.data.as_deref());
    }
}

/// The encoder's buffers [`write_headers`] uses.
struct Scratch<'a> {
    value: &'a mut Vec<u8>,
    last_time: &'a mut (u32, Vec<u8>),
    last_source: &'a mut (Option<RunId>, Vec<u8>),
}

/// The `redis-*` headers (`key_evt_amqp.headers yes`) and the CloudEvents attributes, appended
/// to `h`; `with_key`: also those that carry the key.
fn write_headers(
    h: &mut Vec<u8>,
    scratch: &mut Scratch<'_>,
    s: &Settings,
    input: &HeaderInput<'_>,
    with_key: bool,
) {
    let HeaderInput {
        node,
        node_hex,
        ce_names,
        event: e,
        parts: p,
        message_id,
    } = *input;
    if s.output.headers {
        wire::header_i64(h, "redis-db", p.db);
        wire::header_str(h, "redis-event", p.event);
        if with_key {
            wire::header_str(h, "redis-key", p.key);
        }
    }
    let (Format::CloudEvents, Some(names)) = (s.output.format, ce_names) else {
        return;
    };
    wire::header_str(h, &names.specversion, b"1.0");
    wire::header_str(h, &names.id, ce_id(message_id, node_hex, scratch.value));
    wire::header_str(h, &names.source, ce_source(s, e, node, scratch.last_source));
    let v = &mut *scratch.value;
    v.clear();
    format::ce_type(v, p.event);
    wire::header_str(h, &names.kind, v);
    if e.timestamp > 0 {
        wire::header_str(h, &names.time, ce_time(e.timestamp, scratch.last_time));
    }
    // CloudEvents: a subject, when present, is a non-empty string.
    if with_key && !p.key.is_empty() && std::str::from_utf8(p.key).is_ok() {
        wire::header_str(h, &names.subject, p.key);
    }
}

/// The CloudEvents `id`: the message id, or for an event without identity (an item of the old
/// C module) `<node>-legacy-<n>`, written in `v`.
fn ce_id<'a>(message_id: Option<&'a [u8]>, node_hex: &[u8], v: &'a mut Vec<u8>) -> &'a [u8] {
    if let Some(id) = message_id {
        return id;
    }
    v.clear();
    v.extend_from_slice(node_hex);
    v.extend_from_slice(b"-legacy-");
    let n = LEGACY_IDS.fetch_add(1, Relaxed) + 1;
    v.extend_from_slice(n.to_string().as_bytes());
    v
}

/// The CloudEvents `source`: `key_evt_amqp.ce_source`, or by default that of the node that saw
/// the event (kept in `last` for the next event of the same node).
fn ce_source<'a>(
    s: &'a Settings,
    e: &Event,
    node: &RunId,
    last: &'a mut (Option<RunId>, Vec<u8>),
) -> &'a [u8] {
    if !s.output.ce_source.is_empty() {
        return s.output.ce_source.as_bytes();
    }
    let run_id = e.id.map_or(*node, |id| id.run_id);
    let (of, source) = last;
    if *of != Some(run_id) {
        source.clear();
        format::default_ce_source(source, &run_id);
        *of = Some(run_id);
    }
    source
}

/// The CloudEvents `time` of a known timestamp (kept in `last` for the next event of the same
/// second).
fn ce_time(timestamp: u32, last: &mut (u32, Vec<u8>)) -> &[u8] {
    let (of, time) = last;
    if *of != timestamp || time.is_empty() {
        time.clear();
        format::rfc3339(time, timestamp);
        *of = timestamp;
    }
    time
}

/// Removes the password from a message that may quote it (a URI in an error, say).
pub fn scrub(message: &str, password: &str) -> String {
    if password.is_empty() {
        message.to_string()
    } else {
        message.replace(password, "<hidden>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_scrubbed() {
        assert_eq!(scrub("amqp://u:s3cret@h", "s3cret"), "amqp://u:<hidden>@h");
        assert_eq!(scrub("refused", ""), "refused");
    }
}
