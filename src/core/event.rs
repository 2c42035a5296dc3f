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
/// 214 instructions per event under callgrind, in `core::fmt`), a database 0-9 is one byte,
/// and the name and the key are copied without calls (see [`copy_short`] and
/// docs/profiles/README.md).
#[inline(always)]
pub fn body(db: i64, event: &[u8], key: &[u8]) -> Body {
    let mut digits = [0u8; 21];
    let db_text: &[u8] = match u8::try_from(db) {
        Ok(d @ 0..=9) => {
            digits[0] = b'0' + d;
            &digits[..1]
        }
        _ => signed_decimal(db, &mut digits),
    };
    let len = db_text.len() + event.len() + key.len() + 2;
    if len > INLINE_BODY {
        return Body::from_vec([db_text, b"\n", event, b"\n", key].concat());
    }
    let mut buf = [0u8; INLINE_BODY];
    let mut at = 0;
    for part in [db_text, event] {
        if let Some(to) = buf.get_mut(at..at + part.len()) {
            copy_short(to, part);
        }
        at += part.len();
        if let Some(newline) = buf.get_mut(at) {
            *newline = b'\n';
        }
        at += 1;
    }
    if let Some(to) = buf.get_mut(at..len) {
        copy_short(to, key);
    }
    Body::from_buf_and_len(buf, len)
}

/// `db` in decimal with its sign, at the end of `buf`.
#[cold]
fn signed_decimal(db: i64, buf: &mut [u8; 21]) -> &[u8] {
    let mut digits = [0u8; 20];
    let text = decimal(db.unsigned_abs(), &mut digits);
    let at = buf.len() - text.len();
    buf[at..].copy_from_slice(text);
    let start = at - usize::from(db < 0);
    if db < 0 {
        buf[start] = b'-';
    }
    &buf[start..]
}

/// `to.copy_from_slice(from)` for slices of one length, without a call to `memcpy` up to 32
/// bytes: two overlapping copies of the largest size that fits, the way `memcpy` itself does
/// short copies (the call, for the four parts of a body, cost about 55 instructions).
#[inline(always)]
fn copy_short(to: &mut [u8], from: &[u8]) {
    /// Copies the first and the last `N` bytes (all of them when `from` has `N` to `2N`).
    #[inline(always)]
    fn ends<const N: usize>(to: &mut [u8], from: &[u8]) {
        if let (Some(t), Some(f)) = (to.first_chunk_mut::<N>(), from.first_chunk::<N>()) {
            *t = *f;
        }
        if let (Some(t), Some(f)) = (to.last_chunk_mut::<N>(), from.last_chunk::<N>()) {
            *t = *f;
        }
    }
    if to.len() != from.len() {
        return;
    }
    match from.len() {
        0 => {}
        1 => to[0] = from[0],
        // The first, the middle and the last are all of them.
        2..=3 => {
            for i in [0, from.len() / 2, from.len() - 1] {
                to[i] = from[i];
            }
        }
        4..=7 => ends::<4>(to, from),
        8..=15 => ends::<8>(to, from),
        16..=32 => ends::<16>(to, from),
        _ => to.copy_from_slice(from),
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
    fn copy_short_copies_every_length() {
        let from: Vec<u8> = (1..=70).collect();
        for n in 0..=70 {
            let mut to = vec![0u8; n];
            copy_short(&mut to, &from[..n]);
            assert_eq!(to, &from[..n], "length {n}");
        }
    }

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
        fn body_is_what_format_writes(db in prop_oneof![any::<i64>(), -12i64..12],
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
