//! What `payload value` adds to an event: the key's value after the change, the value it had
//! before (delete, expiry, eviction, overwrite), in a compact binary form that the main thread
//! writes and the publisher turns into JSON fields.
//!
//! Pure: the shell reads the key through the module API and feeds a [`ValueWriter`]; the
//! fallback list stores the compact form as it is (the envelope, not the JSON).
//!
//! ```text
//! data    := section*
//! section := tag (V value | O old value | C cancelled) kind flags ttl(zigzag varint) count(u32 LE) item*
//! item    := string | string string (hash, stream fields) | string f64-LE (zset)
//! string  := len(varint) bytes          a stream starts with its entry's id, a string
//! ```

use crate::core::encoding::{decimal, put_varint, take_varint};
use crate::core::json::{base64_into, json_string};

/// What a key holds, as the module API's `KeyType` tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The key is gone (deleted, expired, evicted) or never was.
    None,
    String,
    List,
    Set,
    Zset,
    Hash,
    Stream,
    /// A module's type: its type is given, its value is not.
    Module,
}

impl Kind {
    const ALL: [Kind; 8] = [
        Kind::None,
        Kind::String,
        Kind::List,
        Kind::Set,
        Kind::Zset,
        Kind::Hash,
        Kind::Stream,
        Kind::Module,
    ];

    /// The json `type`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::None => "none",
            Kind::String => "string",
            Kind::List => "list",
            Kind::Set => "set",
            Kind::Zset => "zset",
            Kind::Hash => "hash",
            Kind::Stream => "stream",
            Kind::Module => "module",
        }
    }

    fn code(self) -> u8 {
        Kind::ALL.iter().position(|&k| k == self).unwrap_or(0) as u8
    }

    fn from_code(code: u8) -> Option<Kind> {
        Kind::ALL.get(usize::from(code)).copied()
    }
}

/// Which value a section holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// The value right after the change.
    Now,
    /// The value before it (the server's `Key` event).
    Old,
}

const TAG_NOW: u8 = b'V';
const TAG_OLD: u8 = b'O';
const TAG_CANCELLED: u8 = b'C';
/// Flags of a section: the value was over the cap (left out); no value was asked for
/// (`value_max_bytes` 0); a stream's section holds an entry (its id, then its fields).
const TRUNCATED: u8 = 1;
const NOT_READ: u8 = 2;
const ENTRY: u8 = 4;
/// No TTL (the module API's `REDISMODULE_NO_EXPIRE`).
pub const NO_TTL: i64 = -1;

/// The captured values of one event, in their compact form.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Data {
    bytes: Vec<u8>,
}

impl Data {
    pub fn from_bytes(bytes: Vec<u8>) -> Data {
        Data { bytes }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Bytes of memory this takes beyond its event.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Data>() + self.bytes.capacity()
    }

    /// The mark of a cancelled snapshot's `snapshot_end`: `"cancelled":true`.
    pub fn cancelled() -> Data {
        Data {
            bytes: vec![TAG_CANCELLED],
        }
    }

    /// The sections, in order. Stops at the first malformed one (a list item changed by hand):
    /// what cannot be read is left out, never guessed.
    fn sections(&self) -> Sections<'_> {
        Sections { rest: &self.bytes }
    }
}

/// Writes one section into a buffer, keeping its size within `max_bytes`: past it the items
/// written so far are taken back and the section is marked truncated. The size of a value is
/// the bytes of its strings, plus one per string and eight per score: an element always
/// counts, so the work a cap allows is bounded even for a list of empty strings.
pub struct ValueWriter<'a> {
    out: &'a mut Vec<u8>,
    flags_at: usize,
    /// Where the count is; the items follow it.
    count_at: usize,
    count: u32,
    size: usize,
    max_bytes: usize,
    truncated: bool,
}

impl<'a> ValueWriter<'a> {
    /// Starts a section. `max_bytes` 0: no value at all (the type and TTL only).
    pub fn begin(
        out: &'a mut Vec<u8>,
        which: Which,
        kind: Kind,
        ttl_ms: i64,
        max_bytes: usize,
    ) -> ValueWriter<'a> {
        // The header: tag, kind, flags, TTL (up to 10), count.
        out.reserve(17);
        out.push(match which {
            Which::Now => TAG_NOW,
            Which::Old => TAG_OLD,
        });
        out.push(kind.code());
        let flags_at = out.len();
        out.push(if max_bytes == 0 { NOT_READ } else { 0 });
        put_varint(out, zigzag(ttl_ms));
        let count_at = out.len();
        out.extend_from_slice(&0u32.to_le_bytes());
        ValueWriter {
            out,
            flags_at,
            count_at,
            count: 0,
            size: 0,
            max_bytes,
            truncated: false,
        }
    }

    /// Whether more fits: the caller stops reading the key when this is false.
    pub fn open(&self) -> bool {
        !self.truncated && self.max_bytes > 0
    }

    /// Marks the value too large without reading it (its length alone tells).
    pub fn too_large(&mut self) {
        if self.max_bytes > 0 {
            self.truncate();
        }
    }

    /// Whether a value whose strings hold `bytes` bytes in `elements` strings can fit.
    pub fn fits(&self, bytes: usize, elements: usize) -> bool {
        bytes.saturating_add(elements) <= self.max_bytes
    }

    /// A string item (a string's value, a list or set element).
    pub fn string(&mut self, s: &[u8]) -> bool {
        self.item(&[s], None)
    }

    /// A pair item (a hash field and value, a stream entry's field and value).
    pub fn pair(&mut self, a: &[u8], b: &[u8]) -> bool {
        self.item(&[a, b], None)
    }

    /// A zset member and its score.
    pub fn scored(&mut self, member: &[u8], score: f64) -> bool {
        self.item(&[member], Some(score))
    }

    /// A stream entry's id, before its fields (not counted as an item).
    pub fn stream_id(&mut self, id: &[u8]) -> bool {
        if !self.charge(id.len() + 1) {
            return false;
        }
        put_bytes(self.out, id);
        self.set_flag(ENTRY);
        true
    }

    fn item(&mut self, strings: &[&[u8]], score: Option<f64>) -> bool {
        let size = strings.iter().map(|s| s.len() + 1).sum::<usize>() + score.map_or(0, |_| 8);
        if !self.charge(size) {
            return false;
        }
        // One growth for the item (each Vec growth is a Redis allocation and a free).
        self.out.reserve(size + 9 * strings.len());
        for s in strings {
            put_bytes(self.out, s);
        }
        if let Some(score) = score {
            self.out.extend_from_slice(&score.to_le_bytes());
        }
        self.count += 1;
        true
    }

    fn charge(&mut self, size: usize) -> bool {
        if !self.open() {
            return false;
        }
        self.size += size;
        if self.size > self.max_bytes {
            self.truncate();
            return false;
        }
        true
    }

    fn truncate(&mut self) {
        self.truncated = true;
        self.count = 0;
        self.out.truncate(self.count_at + 4);
        if let Some(flags) = self.out.get_mut(self.flags_at) {
            *flags = (*flags | TRUNCATED) & !ENTRY;
        }
    }

    fn set_flag(&mut self, flag: u8) {
        if let Some(flags) = self.out.get_mut(self.flags_at) {
            *flags |= flag;
        }
    }

    /// Ends the section: writes its count and flags.
    pub fn finish(self) {
        if let Some(slot) = self.out.get_mut(self.count_at..self.count_at + 4) {
            slot.copy_from_slice(&self.count.to_le_bytes());
        }
    }
}

/// One section, read back.
struct Section<'a> {
    tag: u8,
    kind: Kind,
    flags: u8,
    ttl_ms: i64,
    count: u32,
    items: &'a [u8],
}

struct Sections<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Sections<'a> {
    type Item = Section<'a>;

    fn next(&mut self) -> Option<Section<'a>> {
        let (&tag, rest) = self.rest.split_first()?;
        if tag == TAG_CANCELLED {
            self.rest = rest;
            return Some(Section {
                tag,
                kind: Kind::None,
                flags: 0,
                ttl_ms: NO_TTL,
                count: 0,
                items: &[],
            });
        }
        let parsed = (|| {
            let mut rest = rest;
            let kind = Kind::from_code(*rest.first()?)?;
            let flags = *rest.get(1)?;
            rest = rest.get(2..)?;
            let ttl_ms = unzigzag(take_varint(&mut rest)?);
            let count = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
            rest = rest.get(4..)?;
            let mut items = rest;
            walk(&mut items, kind, flags, count, &mut |_| {})?;
            let used = rest.len() - items.len();
            Some((
                Section {
                    tag,
                    kind,
                    flags,
                    ttl_ms,
                    count,
                    items: rest.get(..used)?,
                },
                items,
            ))
        })();
        match parsed {
            Some((section, rest)) if tag == TAG_NOW || tag == TAG_OLD => {
                self.rest = rest;
                Some(section)
            }
            _ => {
                self.rest = &[];
                None
            }
        }
    }
}

/// One element of a value as read back.
enum Item<'a> {
    String(&'a [u8]),
    Pair(&'a [u8], &'a [u8]),
    Scored(&'a [u8], f64),
    StreamId(&'a [u8]),
}

fn walk<'a>(
    items: &mut &'a [u8],
    kind: Kind,
    flags: u8,
    count: u32,
    visit: &mut impl FnMut(Item<'a>),
) -> Option<()> {
    if flags & ENTRY != 0 {
        visit(Item::StreamId(take_bytes(items)?));
    }
    for _ in 0..count {
        match kind {
            Kind::String | Kind::List | Kind::Set => visit(Item::String(take_bytes(items)?)),
            Kind::Hash | Kind::Stream => {
                let a = take_bytes(items)?;
                visit(Item::Pair(a, take_bytes(items)?));
            }
            Kind::Zset => {
                let member = take_bytes(items)?;
                let score = f64::from_le_bytes(items.get(..8)?.try_into().ok()?);
                *items = items.get(8..)?;
                visit(Item::Scored(member, score));
            }
            Kind::None | Kind::Module => return None,
        }
    }
    Some(())
}

/// Appends the JSON fields of `data` to an object being written (each with its leading comma):
/// `"type"`, `"value"` or `"value_b64"`, `"value_truncated"`, `"ttl_ms"`, and the same with
/// `old_` in front for the old value; `"cancelled":true` for a cancelled snapshot.
pub fn write_json_fields(out: &mut Vec<u8>, data: &Data) {
    for s in data.sections() {
        if s.tag == TAG_CANCELLED {
            out.extend_from_slice(b",\"cancelled\":true");
            continue;
        }
        let prefix: &[u8] = if s.tag == TAG_OLD { b"old_" } else { b"" };
        let field = |out: &mut Vec<u8>, name: &[u8]| {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(prefix);
            out.extend_from_slice(name);
            out.extend_from_slice(b"\":");
        };
        field(out, b"type");
        json_string(out, s.kind.name());
        let shaped = !matches!(s.kind, Kind::None | Kind::Module);
        if s.flags & TRUNCATED != 0 {
            field(out, b"value_truncated");
            out.extend_from_slice(b"true");
        } else if shaped && s.flags & NOT_READ == 0 {
            let b64 = !all_utf8(&s);
            field(out, if b64 { b"value_b64" } else { b"value" });
            write_value(out, &s, b64);
        }
        if s.tag == TAG_NOW && s.kind != Kind::None {
            field(out, b"ttl_ms");
            let mut digits = [0u8; 20];
            if s.ttl_ms < 0 {
                out.push(b'-');
            }
            out.extend_from_slice(decimal(s.ttl_ms.unsigned_abs(), &mut digits));
        }
    }
}

/// Whether every string of the section is UTF-8 (else all of them go as base64).
fn all_utf8(section: &Section<'_>) -> bool {
    let mut ok = true;
    let mut check = |s: &[u8]| ok &= std::str::from_utf8(s).is_ok();
    let mut rest = section.items;
    let _ = walk(
        &mut rest,
        section.kind,
        section.flags,
        section.count,
        &mut |item| match item {
            Item::String(s) | Item::StreamId(s) | Item::Scored(s, _) => check(s),
            Item::Pair(a, b) => {
                check(a);
                check(b);
            }
        },
    );
    ok
}

fn write_value(out: &mut Vec<u8>, s: &Section<'_>, b64: bool) {
    let string = |out: &mut Vec<u8>, bytes: &[u8]| {
        if b64 {
            out.push(b'"');
            base64_into(out, bytes);
            out.push(b'"');
        } else {
            json_string(out, std::str::from_utf8(bytes).unwrap_or_default());
        }
    };
    let (open, close): (&[u8], &[u8]) = match s.kind {
        Kind::String => (b"", b""),
        Kind::Hash => (b"{", b"}"),
        // A stream's last entry `[id,{field:value…}]`; `null` for a stream with no entry.
        Kind::Stream if s.flags & ENTRY == 0 => (b"null", b""),
        Kind::Stream => (b"[", b"}]"),
        _ => (b"[", b"]"),
    };
    out.extend_from_slice(open);
    let mut first = true;
    let mut rest = s.items;
    let _ = walk(&mut rest, s.kind, s.flags, s.count, &mut |item| {
        match item {
            Item::StreamId(id) => {
                string(out, id);
                out.extend_from_slice(b",{");
                return;
            }
            _ if !first => out.push(b','),
            _ => {}
        }
        first = false;
        match item {
            Item::String(v) => string(out, v),
            Item::Pair(a, b) => {
                string(out, a);
                out.push(b':');
                string(out, b);
            }
            Item::Scored(member, score) => {
                out.push(b'[');
                string(out, member);
                out.push(b',');
                write_score(out, score);
                out.push(b']');
            }
            Item::StreamId(_) => {}
        }
    });
    out.extend_from_slice(close);
}

/// A score as a JSON number (shortest form that reads back the same double); JSON has no
/// infinities, so `inf` and `-inf` (valid Redis scores) are strings.
fn write_score(out: &mut Vec<u8>, score: f64) {
    use std::io::Write;
    if score.is_finite() {
        let _ = write!(out, "{score:?}");
    } else if score > 0.0 {
        out.extend_from_slice(b"\"inf\"");
    } else {
        out.extend_from_slice(b"\"-inf\"");
    }
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

fn put_bytes(out: &mut Vec<u8>, s: &[u8]) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s);
}

fn take_bytes<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(take_varint(input)?).ok()?;
    let s = input.get(..len)?;
    *input = input.get(len..)?;
    Some(s)
}

/// Old values waiting for their event, at most this many (a deletion whose event EVENTS
/// leaves out leaves one behind until the next step).
const PENDING_MAX: usize = 256;

/// An old value captured by the `Key` event, waiting for the keyspace event of the same key.
struct Pending {
    db: i64,
    key: Vec<u8>,
    data: Data,
}

/// Old values waiting for their events (the shell's `Module::pending_old`, main thread only).
#[derive(Default)]
pub struct PendingOld(Vec<Pending>);

impl PendingOld {
    /// The old value of `key` in `db`, if one waits: it leaves the queue.
    pub fn take(&mut self, db: i64, key: &[u8]) -> Option<Data> {
        let at = self.0.iter().position(|p| p.db == db && p.key == key)?;
        Some(self.0.remove(at).data)
    }

    pub fn put(&mut self, db: i64, key: &[u8], data: Data) {
        if self.0.len() >= PENDING_MAX {
            self.0.remove(0);
        }
        // A newer capture of the same key replaces the older one (its event never came).
        self.0.retain(|p| p.db != db || p.key != key);
        self.0.push(Pending {
            db,
            key: key.to_vec(),
            data,
        });
    }

    /// At the end of an event-loop iteration: what is left had no event.
    pub fn clear(&mut self) {
        if self.0.capacity() == 0 {
            return;
        }
        self.0.clear();
        if self.0.capacity() > PENDING_MAX {
            self.0.shrink_to(16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json(data: &Data) -> String {
        let mut out = Vec::new();
        write_json_fields(&mut out, data);
        String::from_utf8(out).unwrap()
    }

    fn capture(
        which: Which,
        kind: Kind,
        ttl: i64,
        max: usize,
        fill: impl FnOnce(&mut ValueWriter<'_>),
    ) -> Data {
        let mut out = Vec::new();
        let mut w = ValueWriter::begin(&mut out, which, kind, ttl, max);
        fill(&mut w);
        w.finish();
        Data::from_bytes(out)
    }

    #[test]
    fn every_type_in_json() {
        let s = capture(Which::Now, Kind::String, NO_TTL, 100, |w| {
            w.string(b"a\"b\n");
        });
        assert_eq!(json(&s), r#","type":"string","value":"a\"b\n","ttl_ms":-1"#);
        let l = capture(Which::Now, Kind::List, 5000, 100, |w| {
            w.string(b"x");
            w.string(b"");
        });
        assert_eq!(json(&l), r#","type":"list","value":["x",""],"ttl_ms":5000"#);
        let h = capture(Which::Now, Kind::Hash, NO_TTL, 100, |w| {
            w.pair(b"f", b"v");
            w.pair(b"g", b"w");
        });
        assert_eq!(
            json(&h),
            r#","type":"hash","value":{"f":"v","g":"w"},"ttl_ms":-1"#
        );
        let z = capture(Which::Now, Kind::Zset, NO_TTL, 100, |w| {
            w.scored(b"m", 1.5);
            w.scored(b"n", f64::INFINITY);
            w.scored(b"o", -2.0);
        });
        assert_eq!(
            json(&z),
            r#","type":"zset","value":[["m",1.5],["n","inf"],["o",-2.0]],"ttl_ms":-1"#
        );
        let x = capture(Which::Now, Kind::Stream, NO_TTL, 100, |w| {
            w.stream_id(b"1-2");
            w.pair(b"a", b"1");
            w.pair(b"b", b"2");
        });
        assert_eq!(
            json(&x),
            r#","type":"stream","value":["1-2",{"a":"1","b":"2"}],"ttl_ms":-1"#
        );
        let empty_stream = capture(Which::Now, Kind::Stream, NO_TTL, 100, |_| {});
        assert_eq!(
            json(&empty_stream),
            r#","type":"stream","value":null,"ttl_ms":-1"#
        );
        let gone = capture(Which::Now, Kind::None, NO_TTL, 100, |_| {});
        assert_eq!(json(&gone), r#","type":"none""#);
        let module = capture(Which::Now, Kind::Module, 7, 100, |_| {});
        assert_eq!(json(&module), r#","type":"module","ttl_ms":7"#);
    }

    #[test]
    fn a_binary_string_makes_the_whole_value_base64() {
        let h = capture(Which::Now, Kind::Hash, NO_TTL, 100, |w| {
            w.pair(b"f", b"\xff");
            w.pair(b"ok", b"ok");
        });
        assert_eq!(
            json(&h),
            r#","type":"hash","value_b64":{"Zg==":"/w==","b2s=":"b2s="},"ttl_ms":-1"#
        );
    }

    #[test]
    fn over_the_cap_the_value_is_left_out_and_marked() {
        // 3 strings of 3 bytes: 12 with one per string.
        let fill = |w: &mut ValueWriter<'_>| {
            for s in [b"abc", b"def", b"ghi"] {
                if !w.string(s) {
                    break;
                }
            }
        };
        let fits = capture(Which::Now, Kind::Set, NO_TTL, 12, fill);
        assert_eq!(
            json(&fits),
            r#","type":"set","value":["abc","def","ghi"],"ttl_ms":-1"#
        );
        let cut = capture(Which::Now, Kind::Set, NO_TTL, 11, fill);
        assert_eq!(
            json(&cut),
            r#","type":"set","value_truncated":true,"ttl_ms":-1"#
        );
        let none = capture(Which::Now, Kind::Set, NO_TTL, 0, fill);
        assert_eq!(
            json(&none),
            r#","type":"set","ttl_ms":-1"#,
            "value_max_bytes 0"
        );
        let mut out = Vec::new();
        let mut w = ValueWriter::begin(&mut out, Which::Now, Kind::String, NO_TTL, 10);
        assert!(!w.fits(10, 1));
        w.too_large();
        assert!(!w.open() && !w.string(b"x"));
        w.finish();
        assert_eq!(
            json(&Data::from_bytes(out)),
            r#","type":"string","value_truncated":true,"ttl_ms":-1"#
        );
    }

    #[test]
    fn old_value_then_value_then_cancelled() {
        // Sections render in the order they were written (the shell writes the value first).
        let now = capture(Which::Now, Kind::None, NO_TTL, 100, |_| {});
        let old = capture(Which::Old, Kind::String, 900, 100, |w| {
            w.string(b"before");
        });
        let data = Data::from_bytes([old.as_bytes(), now.as_bytes()].concat());
        assert_eq!(
            json(&data),
            r#","old_type":"string","old_value":"before","type":"none""#
        );
        assert_eq!(json(&Data::cancelled()), r#","cancelled":true"#);
    }

    #[test]
    fn an_old_value_waits_for_its_key_once() {
        let mut p = PendingOld::default();
        p.put(0, b"a", Data::cancelled());
        p.put(1, b"a", Data::default());
        assert_eq!(p.take(0, b"b"), None);
        assert_eq!(p.take(0, b"a"), Some(Data::cancelled()));
        assert_eq!(p.take(0, b"a"), None, "taken once");
        assert_eq!(p.0.len(), 1, "the other database's waits");
        for i in 0..1000u32 {
            p.put(0, &i.to_be_bytes(), Data::default());
        }
        assert_eq!(p.0.len(), PENDING_MAX, "bounded");
        p.clear();
        assert!(p.0.is_empty());
    }

    proptest! {
        #[test]
        fn any_bytes_render_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = json(&Data::from_bytes(bytes));
        }

        #[test]
        fn strings_round_trip(items in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..10),
                              ttl in any::<i64>()) {
            let data = capture(Which::Now, Kind::List, ttl, usize::MAX, |w| {
                for i in &items { w.string(i); }
            });
            let s = data.sections().next().unwrap();
            prop_assert_eq!(s.ttl_ms, ttl);
            let mut got = Vec::new();
            let mut rest = s.items;
            walk(&mut rest, s.kind, s.flags, s.count, &mut |i| if let Item::String(v) = i { got.push(v.to_vec()) }).unwrap();
            prop_assert_eq!(got, items);
        }
    }
}
