//! One keyspace event: its message body, its identity, and its form in the fallback list.

use std::fmt::Write;

use smallvec::SmallVec;

pub use crate::core::encoding::decimal;
use crate::core::value::Data;

/// Bodies up to this many bytes are stored inside the [`Event`] (a database digit, an event
/// name and a key of up to about 30 bytes): 40 keeps an event at 104 bytes (96 before the
/// pointer to `payload value` data).
pub const INLINE_BODY: usize = 40;

/// A message body `DB\nEVENT\nKEY`: inline when short, on the heap otherwise.
pub type Body = SmallVec<[u8; INLINE_BODY]>;

/// The `run_id` of the node that saw an event (`INFO server`), kept as its 20 raw bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct RunId(pub [u8; 20]);

impl RunId {
    /// Parses the 40 hex digits Redis reports.
    pub fn from_hex(hex: &[u8]) -> Option<RunId> {
        if hex.len() != 40 {
            return None;
        }
        let mut out = [0u8; 20];
        for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let s = std::str::from_utf8(pair).ok()?;
            *o = u8::from_str_radix(s, 16).ok()?;
        }
        Some(RunId(out))
    }

    pub fn to_hex(self) -> String {
        self.0.iter().fold(String::with_capacity(40), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

/// Who saw an event, and where in that node's sequence it stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EventId {
    pub run_id: RunId,
    pub seq: u64,
}

impl EventId {
    /// The AMQP `message_id`: `<run_id>-<seq>`.
    pub fn message_id(&self) -> String {
        let mut out = Vec::with_capacity(61);
        self.write_message_id(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Appends the `message_id` to `out` (the publisher writes it straight into its frames).
    pub fn write_message_id(&self, out: &mut Vec<u8>) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        // On the stack first, then one copy: a push per digit cost 450 instructions per event
        // on the publisher thread (callgrind).
        let mut hex = [0u8; 41];
        for (pair, b) in hex.chunks_exact_mut(2).zip(self.run_id.0) {
            pair.copy_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
        hex[40] = b'-';
        out.extend_from_slice(&hex);
        let mut digits = [0u8; 20];
        out.extend_from_slice(decimal(self.seq, &mut digits));
    }
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Event {
    /// `None` for items left in the fallback list by the old C module (plain bodies).
    pub id: Option<EventId>,
    /// Seconds since the Unix epoch (the AMQP `timestamp`); 0 when unknown. 32 bits last
    /// until 2106 and keep the event 8 bytes smaller.
    pub timestamp: u32,
    /// `DB\nEVENT\nKEY`.
    pub body: Body,
    /// Non-zero when this is a copy of an item still in the fallback list (set by the outbox).
    pub list_copy: u32,
    /// The value and old value with `payload value` (`None` otherwise: one pointer of cost).
    pub data: Option<Box<Data>>,
}

/// Builds the message body `DB\nEVENT\nKEY` (DB in decimal, as `{db}` formats it): inside the
/// event when it fits, else with a single allocation of exactly its length. This runs inside
/// every forwarded write command: the digits are written by hand (`write!(out, "{db}")` took
/// 214 instructions per event under callgrind, in `core::fmt`; see docs/profiles/README.md).
pub fn body(db: i64, event: &[u8], key: &[u8]) -> Body {
    let mut digits = [0u8; 20];
    let db_text = decimal(db.unsigned_abs(), &mut digits);
    let sign: &[u8] = if db < 0 { b"-" } else { b"" };
    let parts = [sign, db_text, b"\n", event, b"\n", key];
    let len = parts.iter().map(|p| p.len()).sum();
    if len <= INLINE_BODY {
        // Written in place: SmallVec's own `extend_from_slice` costs more than the copies.
        let mut buf = [0u8; INLINE_BODY];
        let mut free = &mut buf[..];
        for part in parts {
            let (to, rest) = free.split_at_mut(part.len());
            to.copy_from_slice(part);
            free = rest;
        }
        Body::from_buf_and_len(buf, len)
    } else {
        let mut out = Vec::with_capacity(len);
        for part in parts {
            out.extend_from_slice(part);
        }
        Body::from_vec(out)
    }
}

impl Event {
    /// Bytes of memory the event takes beyond its own size: a body too long to be inline,
    /// and the captured values.
    pub fn heap_bytes(&self) -> usize {
        let body = if self.body.spilled() {
            self.body.capacity()
        } else {
            0
        };
        body + self.data.as_ref().map_or(0, |d| d.heap_bytes())
    }
}

/// A `set` of key `k{seq}` in db 0, event `seq` of the run whose id is 20 bytes `run`: the
/// event the unit tests of the outbox, the list items and the journal build on.
#[cfg(test)]
pub fn test_event(run: u8, seq: u64) -> Event {
    Event {
        id: Some(EventId {
            run_id: RunId([run; 20]),
            seq,
        }),
        timestamp: 1_700_000_000,
        body: body(0, b"set", format!("k{seq}").as_bytes()),
        list_copy: 0,
        data: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEX: &[u8] = b"0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn body_is_db_event_key() {
        assert_eq!(&body(0, b"set", b"k")[..], b"0\nset\nk");
        assert_eq!(
            &body(15, b"hset", b"a\nb\0\xff")[..],
            b"15\nhset\na\nb\0\xff"
        );
    }

    #[test]
    fn run_id_round_trips_and_rejects_garbage() {
        let id = RunId::from_hex(HEX).unwrap();
        assert_eq!(id.to_hex().as_bytes(), HEX);
        assert!(RunId::from_hex(b"xyz").is_none());
        assert!(RunId::from_hex(&[b'g'; 40]).is_none());
        let e = EventId { run_id: id, seq: 7 };
        assert_eq!(
            e.message_id(),
            format!("{}-7", std::str::from_utf8(HEX).unwrap())
        );
    }

    #[test]
    fn an_event_takes_104_bytes_of_queue() {
        // The memory queue holds up to `queue_capacity` of them (README, Tuning).
        assert_eq!(std::mem::size_of::<Event>(), 104);
    }

    #[test]
    fn body_db_extremes() {
        assert_eq!(&body(-1, b"del", b"")[..], b"-1\ndel\n");
        assert_eq!(
            &body(i64::MIN, b"e", b"k")[..],
            b"-9223372036854775808\ne\nk"
        );
        assert_eq!(
            &body(i64::MAX, b"e", b"k")[..],
            b"9223372036854775807\ne\nk"
        );
        assert_eq!(&body(10, b"", b"")[..], b"10\n\n");
    }

    proptest! {
        #[test]
        fn body_is_what_format_writes(db in any::<i64>(),
                                      event in proptest::collection::vec(any::<u8>(), 0..16),
                                      key in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut expected = format!("{db}\n").into_bytes();
            expected.extend_from_slice(&event);
            expected.push(b'\n');
            expected.extend_from_slice(&key);
            let got = body(db, &event, &key);
            prop_assert_eq!(got.spilled(), expected.len() > INLINE_BODY, "inline when it fits");
            prop_assert_eq!(got.capacity(), expected.len().max(INLINE_BODY));
            prop_assert_eq!(&got[..], &expected[..]);
        }
    }
}
