//! JSON and base64 writers shared by the formats (`format.rs`) and the values (`value.rs`):
//! appended to a buffer the publisher reuses, no allocation of their own.

/// A JSON string of bytes that are UTF-8 (event names, ids) or else made so (U+FFFD). Checked
/// with `from_utf8` first: `from_utf8_lossy`'s chunk iterator cost 900 instructions per event.
pub fn json_bytes(out: &mut Vec<u8>, s: &[u8]) {
    match std::str::from_utf8(s) {
        Ok(text) => json_string(out, text),
        Err(_) => json_string(out, &String::from_utf8_lossy(s)),
    }
}

/// A JSON string. Bytes that are not UTF-8 only an event name could hold (keys that are not
/// UTF-8 go as base64): the caller makes them U+FFFD first.
pub fn json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let text = s.as_bytes();
    out.reserve(text.len() + 2);
    out.push(b'"');
    let mut rest = text;
    // Copies the runs that need no escape whole (most keys are one run).
    while let Some(i) = rest
        .iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
    {
        let (run, tail) = rest.split_at(i);
        out.extend_from_slice(run);
        let Some((&b, tail)) = tail.split_first() else {
            break;
        };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
        }
        rest = tail;
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// Standard base64 with padding (RFC 4648 §4), appended. The `base64` crate (no SIMD feature:
/// keys are short) rather than our own: it is the well-kept one, and it writes in place.
pub fn base64_into(out: &mut Vec<u8>, bytes: &[u8]) {
    use base64::Engine;
    let start = out.len();
    let len = base64::encoded_len(bytes.len(), true).unwrap_or(0);
    out.resize(start + len, 0);
    let written = out
        .get_mut(start..)
        .and_then(|slot| {
            base64::engine::general_purpose::STANDARD
                .encode_slice(bytes, slot)
                .ok()
        })
        .unwrap_or(0);
    out.truncate(start + written);
}
