//! A batch of events as AMQP publishes, and error texts made safe to show.

use crate::amqp::connection::CHANNEL;
use crate::amqp::wire::{self, Properties};
use crate::core::event::Event;
use crate::core::settings::Settings;

/// The `app_id` of every message.
pub const APP_ID: &str = "key_evt_amqp";

/// Writes a batch of publishes: mandatory, so unroutable events are reported (returned).
pub fn encode(out: &mut Vec<u8>, frame_max: u32, s: &Settings, batch: &[Event]) {
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
            CHANNEL,
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
