//! Small byte encodings shared by the event, its fallback-list envelope and the captured
//! values: decimal digits and LEB128 varints, by hand because they run per event.

/// `n` in decimal, written at the end of `buf` (20 digits hold any u64). By hand, not
/// `write!`: it runs for every event (see [`body`]).
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        start -= 1;
        if n == 0 {
            break;
        }
    }
    buf.get(start..).unwrap_or_default()
}

/// LEB128, as the fallback-list envelope writes its numbers.
pub fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

pub fn take_varint(input: &mut &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    for (i, &b) in input.iter().enumerate().take(10) {
        n |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            *input = input.get(i + 1..)?;
            return Some(n);
        }
    }
    None
}
