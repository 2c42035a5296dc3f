//! Batched messages (`key_evt_amqp.batch` N > 1, `json` or `cloudevents`): up to N events in
//! one message, in order, one JSON object a line (`application/x-ndjson`): under `json` the
//! object the unbatched format sends, under `cloudevents` the event in structured mode (its
//! attributes, and the `json` object as `data`). The message's `message_id` and `timestamp`
//! are its first event's; headers `x-event-count` and `x-last-id` tell the rest. A message
//! holds consecutive events of one routing key: with a template, a new message starts where
//! the rendered key changes.
//!
//! Confirms stay per event to the outbox: the session maps the messages the broker confirmed
//! back to their events with the plan's ends.

use crate::amqp::connection::CHANNEL;
use crate::amqp::wire::{self, Properties};
use crate::core::event::Event;
use crate::core::format::{self, Format, NDJSON};
use crate::core::settings::Settings;
use crate::core::template::Fields;
use crate::publisher::encode::{Encoder, APP_ID};

/// Buffers reused from message to message.
#[derive(Default)]
pub struct Batcher {
    key: Vec<u8>,
    next_key: Vec<u8>,
    body: Vec<u8>,
    headers: Vec<u8>,
    id: Vec<u8>,
    last_id: Vec<u8>,
}

impl Batcher {
    /// Where each message of `events` ends (exclusive indexes, increasing, the last one
    /// `events.len()`). Unbatched settings: one event a message. An event whose body does not
    /// split (an item of the old C module) goes alone, as the unbatched encoder sends it.
    pub fn plan(&mut self, s: &Settings, events: &[Event]) -> Vec<usize> {
        let n = events.len();
        if !s.output.batched() {
            return (1..=n).collect();
        }
        let max = s.output.batch as usize;
        let mut ends = Vec::with_capacity(n / max + 1);
        let mut start = 0;
        while start < n {
            let mut end = start + 1;
            if render(s, &events[start], &mut self.key).is_some() {
                while end < n
                    && end - start < max
                    && render(s, &events[end], &mut self.next_key).is_some()
                    && self.next_key == self.key
                {
                    end += 1;
                }
            }
            ends.push(end);
            start = end;
        }
        ends
    }

    /// Writes the messages `ends` plans (see [`Batcher::plan`]); returns how many routing keys
    /// were cut to 255 bytes. Messages of one event that does not split, and every message of
    /// unbatched settings, are the unbatched encoder's.
    pub fn encode(
        &mut self,
        out: &mut Vec<u8>,
        frame_max: u32,
        s: &Settings,
        events: &[Event],
        ends: &[usize],
        single: &mut Encoder,
    ) -> u64 {
        if !s.output.batched() {
            return single.encode(out, frame_max, s, events);
        }
        let mut cut = 0;
        let mut start = 0;
        for &end in ends {
            let group = events.get(start..end).unwrap_or_default();
            start = end;
            let Some(first) = group.first() else {
                continue;
            };
            let Some(was_cut) = render(s, first, &mut self.key) else {
                cut += single.encode(out, frame_max, s, group);
                continue;
            };
            cut += u64::from(was_cut);
            self.body.clear();
            for e in group {
                let Some(p) = format::split(&e.body) else {
                    continue; // the plan keeps such events alone: not reached
                };
                self.id.clear();
                if let Some(id) = e.id {
                    id.write_message_id(&mut self.id);
                }
                let id = e.id.is_some().then_some(self.id.as_slice());
                match s.output.format {
                    Format::CloudEvents => single.write_ce_line(&mut self.body, s, e, &p, id),
                    _ => format::write_json(&mut self.body, &p, id, e.timestamp, e.data.as_deref()),
                }
                self.body.push(b'\n');
                if e.id.is_some() {
                    std::mem::swap(&mut self.id, &mut self.last_id);
                }
            }
            self.headers.clear();
            wire::header_i64(&mut self.headers, "x-event-count", group.len() as i64);
            if group.last().is_some_and(|e| e.id.is_some()) {
                wire::header_str(&mut self.headers, "x-last-id", &self.last_id);
            }
            self.id.clear();
            if let Some(id) = first.id {
                id.write_message_id(&mut self.id);
            }
            let props = Properties {
                content_type: NDJSON,
                headers: Some(self.headers.as_slice()),
                delivery_mode: s.delivery_mode,
                message_id: first.id.is_some().then_some(self.id.as_slice()),
                timestamp: (first.timestamp > 0).then_some(u64::from(first.timestamp)),
                app_id: APP_ID,
            };
            wire::publish(
                out,
                CHANNEL,
                frame_max,
                &s.exchange,
                &self.key,
                true,
                &props,
                &self.body,
            );
        }
        cut
    }
}

/// Renders `e`'s routing key into `key`: `None` when its body does not split (it goes alone),
/// else whether the key was cut.
fn render(s: &Settings, e: &Event, key: &mut Vec<u8>) -> Option<bool> {
    let p = format::split(&e.body)?;
    let fields = Fields {
        db: p.db_text,
        event: p.event,
        key: p.key,
    };
    Some(s.routing.render(&s.routing_key, &fields, key))
}
