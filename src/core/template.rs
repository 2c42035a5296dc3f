//! Routing-key templates: `ROUTING_KEY` may hold placeholders rendered per event.
//!
//! | placeholder | rendered as |
//! |---|---|
//! | `{db}` | the database number in decimal (`-1` for FLUSHALL) |
//! | `{event}` | the event name (`set`, `expired`…) |
//! | `{key}` | the key's bytes as they are |
//! | `{prefix}` | the key up to its first `:` (the whole key if it has none) |
//! | `{partition:N}` | [`crc32`] of the key's bytes modulo N, in decimal (N from 1 to 1024) |
//! | `{{`, `}}` | a literal `{`, `}` |
//!
//! A routing key without any brace is [`Template::Literal`]: it is published as it is, with no
//! per-event work. A rendered key longer than AMQP's 255 bytes is cut (see [`render`]).
//!
//! [`render`]: Template::render

use crate::core::event::decimal;

/// AMQP's limit on a routing key (a short string).
pub const MAX_ROUTING_KEY: usize = 255;

/// The largest N of `{partition:N}`.
pub const MAX_PARTITIONS: u32 = 1024;

// What ROUTING_KEY accepts, for its errors, each saying what is wrong.
// Short: Redis cuts a CONFIG SET error at 255 bytes, the value included.
pub const UNKNOWN: &str =
    "only the placeholders {db} {event} {key} {prefix} {partition:N}, {{ }} for braces (unknown placeholder)";
pub const UNBALANCED: &str =
    "braces in pairs: {placeholder}, or {{ and }} for a literal brace (unpaired brace)";
pub const OUT_OF_RANGE: &str = "{partition:N} with N from 1 to 1024 (N out of range)";

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Text(Vec<u8>),
    Db,
    Event,
    Key,
    Prefix,
    Partition(u32),
}

/// A parsed ROUTING_KEY.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Template {
    /// No brace at all: the routing key as it is (no per-event work).
    #[default]
    Literal,
    Parts(Vec<Part>),
}

/// What one event gives a template.
#[derive(Clone, Copy, Debug)]
pub struct Fields<'a> {
    /// The database number in decimal, as the body has it.
    pub db: &'a [u8],
    pub event: &'a [u8],
    pub key: &'a [u8],
}

impl Template {
    /// Parses a routing key; the error is the `accepted` text of ROUTING_KEY's [`ArgError`]
    /// (saying what is wrong).
    ///
    /// [`ArgError`]: crate::core::settings::ArgError
    pub fn parse(text: &str) -> Result<Template, &'static str> {
        let bytes = text.as_bytes();
        if !bytes.iter().any(|&b| b == b'{' || b == b'}') {
            return Ok(Template::Literal);
        }
        let mut parts = Vec::new();
        let mut literal = Vec::new();
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            match b {
                b'{' if bytes.get(i + 1) == Some(&b'{') => {
                    literal.push(b'{');
                    i += 2;
                }
                b'}' if bytes.get(i + 1) == Some(&b'}') => {
                    literal.push(b'}');
                    i += 2;
                }
                b'}' => return Err(UNBALANCED),
                b'{' => {
                    let rest = bytes.get(i + 1..).unwrap_or_default();
                    let Some(end) = rest.iter().position(|&c| c == b'}') else {
                        return Err(UNBALANCED);
                    };
                    let name = rest.get(..end).unwrap_or_default();
                    if name.contains(&b'{') {
                        return Err(UNBALANCED);
                    }
                    let part = placeholder(name)?;
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(part);
                    i += end + 2;
                }
                _ => {
                    literal.push(b);
                    i += 1;
                }
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template::Parts(parts))
    }

    /// Whether the routing key is the same for every event.
    pub fn is_literal(&self) -> bool {
        matches!(self, Template::Literal)
    }

    /// Writes the routing key of one event to `out` (cleared first). Returns whether it was
    /// cut to [`MAX_ROUTING_KEY`] bytes (at a UTF-8 character boundary when the cut would fall
    /// inside one). A literal template writes `literal`.
    pub fn render(&self, literal: &str, f: &Fields<'_>, out: &mut Vec<u8>) -> bool {
        out.clear();
        let Template::Parts(parts) = self else {
            out.extend_from_slice(literal.as_bytes());
            return false;
        };
        for part in parts {
            match part {
                Part::Text(t) => out.extend_from_slice(t),
                Part::Db => out.extend_from_slice(f.db),
                Part::Event => out.extend_from_slice(f.event),
                Part::Key => out.extend_from_slice(f.key),
                Part::Prefix => out.extend_from_slice(prefix(f.key)),
                Part::Partition(n) => {
                    let mut digits = [0u8; 20];
                    out.extend_from_slice(decimal(u64::from(partition(f.key, *n)), &mut digits));
                }
            }
            if out.len() > MAX_ROUTING_KEY {
                break;
            }
        }
        cut(out)
    }
}

fn placeholder(name: &[u8]) -> Result<Part, &'static str> {
    Ok(match name {
        b"db" => Part::Db,
        b"event" => Part::Event,
        b"key" => Part::Key,
        b"prefix" => Part::Prefix,
        _ => {
            let Some(n) = name.strip_prefix(b"partition:") else {
                return Err(UNKNOWN);
            };
            let n = std::str::from_utf8(n)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .ok_or(UNKNOWN)?;
            match n.parse::<u32>() {
                Ok(n) if (1..=MAX_PARTITIONS).contains(&n) => Part::Partition(n),
                _ => return Err(OUT_OF_RANGE),
            }
        }
    })
}

/// Cuts `out` to [`MAX_ROUTING_KEY`] bytes; never in the middle of a UTF-8 character (a
/// continuation byte at the cut moves it back to the character's start).
fn cut(out: &mut Vec<u8>) -> bool {
    if out.len() <= MAX_ROUTING_KEY {
        return false;
    }
    let mut at = MAX_ROUTING_KEY;
    // Up to 3 continuation bytes (10xxxxxx) belong to the character that starts before them.
    for _ in 0..3 {
        match out.get(at) {
            Some(&b) if b & 0xC0 == 0x80 && at > 0 => at -= 1,
            _ => break,
        }
    }
    out.truncate(at);
    true
}

/// The key up to its first `:`, the whole key if it has none.
pub fn prefix(key: &[u8]) -> &[u8] {
    match key.iter().position(|&b| b == b':') {
        Some(i) => key.get(..i).unwrap_or(key),
        None => key,
    }
}

/// The partition of a key among `n`: `crc32(key) % n` (0 when `n` is 0).
pub fn partition(key: &[u8], n: u32) -> u32 {
    crc32(key).checked_rem(n).unwrap_or(0)
}

/// CRC-32 as zlib, gzip, PNG and Ethernet compute it (IEEE 802.3, reflected polynomial
/// 0xEDB88320, initial value and final XOR 0xFFFFFFFF): Python's `zlib.crc32`, Java's
/// `java.util.zip.CRC32`, Go's `crc32.ChecksumIEEE`. Written here (a 1 KB table built at
/// compile time): the routing key needs a few bytes hashed, not a crate's SIMD paths.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        let i = usize::from((crc as u8) ^ b);
        crc = CRC_TABLE.get(i).copied().unwrap_or(0) ^ (crc >> 8);
    }
    !crc
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn render(t: &str, db: &str, event: &str, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let f = Fields {
            db: db.as_bytes(),
            event: event.as_bytes(),
            key,
        };
        Template::parse(t).unwrap().render(t, &f, &mut out);
        out
    }

    #[test]
    fn crc32_is_the_ieee_one() {
        // The check value of CRC-32/ISO-HDLC, and zlib.crc32(b"user:1").
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"user:1"), 0x7BA5_C282);
    }

    #[test]
    fn placeholders_render() {
        assert_eq!(
            render("redis.{db}.{event}", "0", "expired", b"k"),
            b"redis.0.expired"
        );
        assert_eq!(
            render("{prefix}/{key}", "3", "set", b"user:1:x"),
            b"user/user:1:x"
        );
        assert_eq!(render("{prefix}", "3", "set", b"plain"), b"plain");
        assert_eq!(render("{prefix}|{key}|", "-1", "flushall", b""), b"||");
        assert_eq!(render("{{{db}}}", "-1", "flushall", b""), b"{-1}");
        assert_eq!(render("a}}b{{c", "0", "set", b"k"), b"a}b{c");
        let p = partition(b"user:1", 4);
        assert_eq!(
            render("orders.{partition:4}", "0", "set", b"user:1"),
            format!("orders.{p}").as_bytes()
        );
        assert_eq!(p, 0x7BA5_C282 % 4);
        assert_eq!(render("{partition:1}", "0", "set", b"anything"), b"0");
        // Key bytes go in as they are, `.` and `#` included.
        assert_eq!(render("k.{key}", "0", "set", b"a.b#\xff"), b"k.a.b#\xff");
    }

    #[test]
    fn no_brace_is_literal() {
        assert!(Template::parse("redis_keyspace_events")
            .unwrap()
            .is_literal());
        assert!(Template::parse("").unwrap().is_literal());
        assert!(!Template::parse("a{{b").unwrap().is_literal());
        assert_eq!(render("plain", "0", "set", b"k"), b"plain");
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        for (t, why) in [
            ("{foo}", UNKNOWN),
            ("{}", UNKNOWN),
            ("{DB}", UNKNOWN),
            ("{partition}", UNKNOWN),
            ("{partition:}", UNKNOWN),
            ("{partition:x}", UNKNOWN),
            ("{partition:+4}", UNKNOWN),
            ("{partition:0}", OUT_OF_RANGE),
            ("{partition:1025}", OUT_OF_RANGE),
            ("{partition:99999999999}", OUT_OF_RANGE),
            ("a{db", UNBALANCED),
            ("a}b", UNBALANCED),
            ("{", UNBALANCED),
            ("}", UNBALANCED),
            ("{{db}", UNBALANCED),
            ("{d{b}", UNBALANCED),
        ] {
            assert_eq!(Template::parse(t), Err(why), "{t}");
        }
        assert_eq!(
            Template::parse("{partition:1024}"),
            Ok(Template::Parts(vec![Part::Partition(1024)]))
        );
    }

    #[test]
    fn long_keys_are_cut_at_255_bytes_on_a_character() {
        let key = vec![b'k'; 300];
        let mut out = Vec::new();
        let t = Template::parse("x.{key}").unwrap();
        let f = Fields {
            db: b"0",
            event: b"set",
            key: &key,
        };
        assert!(t.render("", &f, &mut out));
        assert_eq!(out.len(), 255);
        // A 2-byte character straddling byte 255 is left out whole.
        let key = format!("{}é", "k".repeat(252));
        let f = Fields {
            key: key.as_bytes(),
            ..f
        };
        assert!(t.render("", &f, &mut out));
        assert_eq!(out.len(), 254);
        assert!(std::str::from_utf8(&out).is_ok());
        // Exactly 255 is not cut.
        let key = "k".repeat(253);
        let f = Fields {
            key: key.as_bytes(),
            ..f
        };
        assert!(!t.render("", &f, &mut out));
        assert_eq!(out.len(), 255);
    }

    proptest! {
        #[test]
        fn parse_and_render_never_panic(t in "[a-z{}:0-9.]{0,24}",
                                        key in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(template) = Template::parse(&t) {
                let mut out = Vec::new();
                let f = Fields { db: b"0", event: b"set", key: &key };
                template.render(&t, &f, &mut out);
                prop_assert!(out.len() <= MAX_ROUTING_KEY);
            }
        }

        #[test]
        fn partitions_are_in_range(key in proptest::collection::vec(any::<u8>(), 0..64), n in 1u32..=1024) {
            prop_assert!(partition(&key, n) < n);
        }
    }
}
