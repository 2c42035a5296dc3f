//! Key masks: Rob Pike's minimal matcher ("The Practice of Programming"), binary safe.
//!
//! Syntax, exactly as Pike's `match`/`matchhere`/`matchstar` read it:
//! - `c` matches the byte `c`, `.` matches any byte;
//! - `x*` matches zero or more `x` (a byte or `.`);
//! - `^` anchors at the start, but only as the first byte of the mask;
//! - `$` anchors at the end, but only as the last byte of the mask;
//! - without `^` the mask may match anywhere in the key.
//!
//! A `*` with nothing before it to repeat (first byte of the mask, or right after the leading `^`)
//! is a literal `*`, because Pike's `matchhere` only treats `*` specially as `regexp[1]`. For the
//! same reason `**` is "zero or more literal `*`", `$*` is "zero or more literal `$`", and `^`/`$`
//! anywhere else are literal bytes. The empty mask (and `^`, and `$`) match every key.
//!
//! Unlike Pike's C code, keys and masks are byte slices: NUL, `\n` and 0xff are ordinary bytes.
//! Nothing recurses: a mask without `*` (after dropping `*` tokens that cannot change the answer)
//! is compared in place (as plain bytes when it has no `.` either), others run as an automaton
//! over a bitset of mask positions, in O(mask × key) time, constant stack, and without
//! allocation for masks of up to 255 tokens.

use std::fmt;

use crate::core::escape::Escaped;

/// One compiled mask.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMask {
    src: Vec<u8>,
    anchored_start: bool,
    anchored_end: bool,
    /// Non-starred tokens: a key shorter than this cannot match.
    min_len: usize,
    engine: Engine,
}

#[derive(Clone, PartialEq, Eq)]
enum Engine {
    /// No `*` and no `.`: plain bytes (equality, prefix, suffix or substring).
    Literal(Literal),
    /// No `*`: a fixed-length pattern compared in place (`None` is `.`).
    Fixed(Vec<Option<u8>>),
    /// Up to 63 tokens: shift-and on one word. Bit i = "token i is next", bit `len` = matched.
    Small {
        /// Per byte, the tokens that accept it.
        accepts: Box<[u64; 256]>,
        star: u64,
        len: u32,
    },
    /// Any length: the same automaton, one token at a time over a multi-word bitset.
    Large(Vec<Token>),
}

/// A mask of plain bytes.
#[derive(Clone, PartialEq, Eq)]
struct Literal {
    /// Never empty when unanchored (the empty substring is made the empty prefix).
    bytes: Vec<u8>,
    /// `^`: a prefix, or with `at_end` the whole key.
    at_start: bool,
    /// `$`: a suffix.
    at_end: bool,
    /// The first and the last byte, 16 times each: the substring search's broadcasts, made once.
    firsts: Splat,
    lasts: Splat,
}

/// Aligned, so that SSE2 compares can read it in place.
#[derive(Clone, PartialEq, Eq)]
#[repr(align(16))]
struct Splat([u8; 16]);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Token {
    /// `None` is `.` (any byte).
    byte: Option<u8>,
    star: bool,
}

impl Token {
    const DOT_STAR: Token = Token {
        byte: None,
        star: true,
    };

    fn accepts(self, b: u8) -> bool {
        self.byte.is_none_or(|c| c == b)
    }
}

/// Large-engine states 0..=tokens.len() fit on the stack up to this many words.
const INLINE_WORDS: usize = 4;

impl KeyMask {
    /// Compiles `src`. Every byte string is a valid mask. `ALL` is not special here (see
    /// [`KeyMasks::from_args`]): as a `KeyMask` it is three literal bytes.
    pub fn new(src: &[u8]) -> KeyMask {
        let (mut anchored_start, body) = match src.split_first() {
            Some((b'^', rest)) => (true, rest),
            _ => (false, src),
        };
        let mut tokens = Vec::new();
        let mut anchored_end = false;
        let mut rest = body;
        // Same case order as Pike's matchhere: `x*` first, then a final `$`, then one byte.
        loop {
            match rest {
                [] => break,
                [c, b'*', tail @ ..] => {
                    tokens.push(Token {
                        byte: atom(*c),
                        star: true,
                    });
                    rest = tail;
                }
                [b'$'] => {
                    anchored_end = true;
                    break;
                }
                [c, tail @ ..] => {
                    tokens.push(Token {
                        byte: atom(*c),
                        star: false,
                    });
                    rest = tail;
                }
            }
        }
        // A starred token at an unanchored end can match nothing, so it never changes the
        // answer; `^.*` and `.*$` are the same as no anchor. This turns the usual `^prefix.*$`,
        // `.*word.*` and `suffix$` into plain comparisons.
        let mut start = 0;
        while let Some(&t) = tokens.get(start) {
            if !t.star || (anchored_start && t != Token::DOT_STAR) {
                break;
            }
            anchored_start = false;
            start += 1;
        }
        let mut end = tokens.len();
        while let Some(&t) = tokens.get(start..end).and_then(<[Token]>::last) {
            if !t.star || (anchored_end && t != Token::DOT_STAR) {
                break;
            }
            anchored_end = false;
            end -= 1;
        }
        tokens.truncate(end);
        tokens.drain(..start);
        let min_len = tokens.iter().filter(|t| !t.star).count();
        KeyMask {
            src: src.to_vec(),
            anchored_start,
            anchored_end,
            min_len,
            engine: Engine::new(tokens, anchored_start, anchored_end),
        }
    }

    /// The mask as given.
    pub fn as_bytes(&self) -> &[u8] {
        &self.src
    }

    /// Whether the mask matches `key` (anywhere, unless anchored).
    ///
    /// Inlined into the keyspace callback, where the literal case is done without a call; the
    /// automata, which need many registers, stay out of line.
    #[inline]
    pub fn matches(&self, key: &[u8]) -> bool {
        match &self.engine {
            Engine::Literal(lit) => lit.matches(key),
            _ => self.run_engine(key),
        }
    }

    #[inline(never)]
    fn run_engine(&self, key: &[u8]) -> bool {
        if key.len() < self.min_len {
            return false;
        }
        match &self.engine {
            Engine::Literal(lit) => lit.matches(key),
            Engine::Fixed(pat) => self.fixed(pat, key),
            Engine::Small { accepts, star, len } => self.small(accepts, *star, *len, key),
            Engine::Large(tokens) => {
                let words = tokens.len() / 64 + 1;
                if words <= INLINE_WORDS {
                    let mut buf = [0u64; INLINE_WORDS];
                    self.large(tokens, key, buf.get_mut(..words).unwrap_or_default())
                } else {
                    // Only for masks of 256+ tokens, which nobody writes on purpose.
                    self.large(tokens, key, &mut vec![0u64; words])
                }
            }
        }
    }

    fn fixed(&self, pat: &[Option<u8>], key: &[u8]) -> bool {
        let n = pat.len();
        match (self.anchored_start, self.anchored_end) {
            (true, true) => fixed_eq(pat, key),
            (true, false) => key.get(..n).is_some_and(|k| fixed_eq(pat, k)),
            (false, true) => key
                .get(key.len().saturating_sub(n)..)
                .is_some_and(|k| fixed_eq(pat, k)),
            // `windows(0)` would panic; the empty pattern matches everywhere.
            (false, false) => n == 0 || key.windows(n).any(|k| fixed_eq(pat, k)),
        }
    }

    fn small(&self, accepts: &[u64; 256], star: u64, len: u32, key: &[u8]) -> bool {
        let accept = 1u64 << len;
        // Lets each `x*` match nothing; one round per token of the longest run of stars.
        let close = |mut d: u64| loop {
            let next = d | ((d & star) << 1);
            if next == d {
                return d;
            }
            d = next;
        };
        let mut d = close(1);
        if d & accept != 0 && !self.anchored_end {
            return true;
        }
        for &b in key {
            let live = d & accepts[usize::from(b)];
            // Plain tokens advance, starred ones stay put.
            d = ((live & !star) << 1) | (live & star);
            if !self.anchored_start {
                // Unanchored: a new attempt starts after every byte (Pike's outer loop).
                d |= 1;
            } else if d == 0 {
                return false;
            }
            d = close(d);
            if d & accept != 0 && !self.anchored_end {
                return true;
            }
        }
        d & accept != 0
    }

    fn large(&self, tokens: &[Token], key: &[u8], states: &mut [u64]) -> bool {
        let accept = tokens.len();
        set(states, 0);
        close(tokens, states);
        if get(states, accept) && !self.anchored_end {
            return true;
        }
        for &b in key {
            step(tokens, states, b);
            if !self.anchored_start {
                set(states, 0);
            } else if states.iter().all(|&w| w == 0) {
                return false;
            }
            close(tokens, states);
            if get(states, accept) && !self.anchored_end {
                return true;
            }
        }
        get(states, accept)
    }
}

impl Literal {
    fn new(bytes: Vec<u8>, anchored_start: bool, anchored_end: bool) -> Literal {
        // Every key starts with nothing: `""` and `"$"` become `^`.
        let at_start = anchored_start || bytes.is_empty();
        let at_end = anchored_end && (anchored_start || !bytes.is_empty());
        let (first, last) = (bytes.first(), bytes.last());
        Literal {
            firsts: Splat([first.copied().unwrap_or(0); 16]),
            lasts: Splat([last.copied().unwrap_or(0); 16]),
            bytes,
            at_start,
            at_end,
        }
    }

    /// The usual masks (`^prefix`, `suffix$`, `word`) end up here: this runs in the keyspace
    /// callback for every event, so short keys and literals are compared in registers, without
    /// calls (see docs/profiles/README.md). Branches on two flags rather than a `match` on
    /// one enum, which compiled to a jump table, a few instructions more.
    #[inline]
    fn matches(&self, key: &[u8]) -> bool {
        let lit = self.bytes.as_slice();
        if !self.at_start {
            if !self.at_end {
                return contains(key, lit, &self.firsts.0, &self.lasts.0);
            }
            return key
                .len()
                .checked_sub(lit.len())
                .and_then(|at| key.get(at..))
                .is_some_and(|k| same(k, lit));
        }
        if !self.at_end {
            return key.get(..lit.len()).is_some_and(|k| same(k, lit));
        }
        same(key, lit)
    }
}

impl Engine {
    fn new(tokens: Vec<Token>, anchored_start: bool, anchored_end: bool) -> Engine {
        if let Some(bytes) = tokens
            .iter()
            .map(|t| if t.star { None } else { t.byte })
            .collect::<Option<Vec<u8>>>()
        {
            return Engine::Literal(Literal::new(bytes, anchored_start, anchored_end));
        }
        if tokens.iter().all(|t| !t.star) {
            return Engine::Fixed(tokens.iter().map(|t| t.byte).collect());
        }
        let Ok(len @ 0..64) = u32::try_from(tokens.len()) else {
            return Engine::Large(tokens);
        };
        let mut accepts = Box::new([0u64; 256]);
        let mut star = 0;
        for (i, t) in tokens.iter().enumerate() {
            let bit = 1u64 << i;
            if t.star {
                star |= bit;
            }
            match t.byte {
                Some(c) => {
                    if let Some(a) = accepts.get_mut(usize::from(c)) {
                        *a |= bit;
                    }
                }
                None => accepts.iter_mut().for_each(|a| *a |= bit),
            }
        }
        Engine::Small { accepts, star, len }
    }
}

fn atom(c: u8) -> Option<u8> {
    (c != b'.').then_some(c)
}

/// Whether `needle` occurs in `hay`, without SSE2. Candidates are the starts where the needle's
/// first and last bytes both are, found eight starts at a time (SWAR: a zero byte in
/// `(hay[at..] ^ first) | (hay[at + len - 1..] ^ last)` marks one), then compared in full.
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
fn contains_swar(hay: &[u8], needle: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let (Some(&first), Some(&last)) = (needle.first(), needle.last()) else {
        return true;
    };
    let Some(starts) = (hay.len() + 1).checked_sub(needle.len()) else {
        return false;
    };
    let tail = needle.len() - 1;
    let is_at = |at: usize| hay.get(at..at + needle.len()) == Some(needle);
    let word = |at: usize| {
        hay.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    let (firsts, lasts) = (ONES * u64::from(first), ONES * u64::from(last));
    // Whether a match starts at one of the 8 positions from `at`.
    let in_word = |at: usize| {
        let x = (word(at) ^ firsts) | (word(at + tail) ^ lasts);
        // High bit set in each zero byte of x (and maybe in bytes above one: checked anyway).
        let mut zeros = x.wrapping_sub(ONES) & !x & HIGHS;
        while zeros != 0 {
            if is_at(at + zeros.trailing_zeros() as usize / 8) {
                return true;
            }
            zeros &= zeros - 1;
        }
        false
    };
    let mut at = 0;
    while at + 8 <= starts {
        if in_word(at) {
            return true;
        }
        at += 8;
    }
    if at == starts {
        return false;
    }
    if starts >= 8 {
        // The last few positions as one more word, overlapping the one before (a position
        // tested twice does no harm): cheaper than one by one.
        return in_word(starts - 8);
    }
    (at..starts)
        .any(|at| hay.get(at) == Some(&first) && hay.get(at + tail) == Some(&last) && is_at(at))
}

/// Whether the non-empty `needle` occurs in `hay`; `firsts` and `lasts` are its first and last
/// byte, 16 times each.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn contains(hay: &[u8], needle: &[u8], _: &[u8; 16], _: &[u8; 16]) -> bool {
    contains_swar(hay, needle)
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn contains(hay: &[u8], needle: &[u8], firsts: &[u8; 16], lasts: &[u8; 16]) -> bool {
    sse2::contains(hay, needle, firsts, lasts)
}

/// The substring search with SSE2 (baseline on x86_64): as the SWAR one, candidates are the
/// starts where the needle's first and last bytes both are, but 16 at a time, one bit each
/// (a compare and a `movemask`). Keys of up to 32 bytes, or with at most 16 starts, take one
/// look, inline; longer ones, and checking candidates, are out of line, so that the short path
/// saves no registers.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    // safe_arch: the SSE2 intrinsics as safe functions (no `unsafe` of ours outside the FFI).
    use safe_arch::{
        bitand_m128i, cmp_eq_mask_i8_m128i, load_unaligned_m128i as load, m128i,
        move_mask_i8_m128i, set_i64_m128i,
    };

    /// Bit i: byte i of `v` is `c`'s byte.
    #[inline]
    fn eq(v: m128i, c: m128i) -> u32 {
        // movemask sets only the low 16 bits.
        move_mask_i8_m128i(cmp_eq_mask_i8_m128i(v, c)) as u32
    }

    /// The bytes of `s` (fewer than 16), zeros after them, read without a call to `memcpy`:
    /// overlapping loads, whose common bytes are the same, ORed together.
    #[inline]
    fn padded(s: &[u8]) -> m128i {
        let n = s.len();
        let (lo, hi) = if let (Some(a), Some(b)) = (s.first_chunk::<8>(), s.last_chunk::<8>()) {
            // b holds bytes n-8..n: shifted down, bytes 8..n (none when n is 8).
            let hi = u64::from_le_bytes(*b).checked_shr(8 * (16 - n) as u32);
            (u64::from_le_bytes(*a), hi.unwrap_or(0))
        } else if let (Some(a), Some(b)) = (s.first_chunk::<4>(), s.last_chunk::<4>()) {
            let (a, b) = (u32::from_le_bytes(*a), u32::from_le_bytes(*b));
            (u64::from(a) | (u64::from(b) << (8 * (n - 4))), 0)
        } else {
            // 0 to 3 bytes: the first, middle and last are all of them.
            let at = |i: usize| s.get(i).map_or(0, |&b| u64::from(b) << (8 * i));
            (at(0) | at(n / 2) | at(n.wrapping_sub(1)), 0)
        };
        set_i64_m128i(hi as i64, lo as i64)
    }

    /// Whether `needle`, not empty ([`super::Literal`] sees to it), occurs in `hay`. An empty
    /// one gives some answer, without a panic (shifts by `tail` wrap): a test for it here
    /// cost 5 instructions per event.
    #[inline]
    pub(super) fn contains(hay: &[u8], needle: &[u8], firsts: &[u8; 16], lasts: &[u8; 16]) -> bool {
        if hay.len() < needle.len() {
            return false;
        }
        // A match at i ends at i + tail; there are `starts` places for one (1 to len).
        let tail = needle.len().wrapping_sub(1);
        let starts = hay.len().wrapping_sub(tail);
        let (f, l) = (load(firsts), load(lasts));
        // Candidate bit i: a match may start at i.
        let cands = 'cands: {
            // Nested: a match on the pair compiles to more tests.
            if let Some(head) = hay.first_chunk::<16>() {
                if let Some(end) = hay.last_chunk::<16>() {
                    // Bit j of `end` is byte len - 16 + j.
                    let shift = hay.len() - 16;
                    if starts <= 16 {
                        // Last bytes at i + tail = shift + (i + 16 - starts): the key's first
                        // and last 16 bytes hold all that matter.
                        break 'cands eq(load(head), f) & (eq(load(end), l) >> (16 - starts));
                    }
                    if shift > 16 {
                        return long(hay, needle, firsts, lasts);
                    }
                    // Up to 32 bytes: one bit per byte, from two loads that may overlap (where
                    // they do, their bits agree).
                    let (head, end) = (load(head), load(end));
                    let firsts = eq(head, f) | (eq(end, f) << shift);
                    let lasts = eq(head, l) | (eq(end, l) << shift);
                    break 'cands firsts & lasts.wrapping_shr(tail as u32);
                }
            }
            let v = padded(hay);
            // The padding's zeros may look like first or last bytes.
            eq(v, f) & eq(v, l).wrapping_shr(tail as u32) & ((1 << starts) - 1)
        };
        cands != 0 && found(hay, needle, 0, cands)
    }

    /// Whether the needle is at one of the starts `at + i` for the bits i of `cands`.
    #[inline(never)]
    fn found(hay: &[u8], needle: &[u8], at: usize, mut cands: u32) -> bool {
        while cands != 0 {
            let i = at + cands.trailing_zeros() as usize;
            if hay.get(i..i + needle.len()) == Some(needle) {
                return true;
            }
            cands &= cands - 1;
        }
        false
    }

    /// Keys over 32 bytes with more than 16 starts: 16 starts at a time, from the bytes their
    /// matches would begin and end with (blocks at `at` and `at + tail`), the last block
    /// overlapping the one before.
    #[inline(never)]
    fn long(hay: &[u8], needle: &[u8], firsts: &[u8; 16], lasts: &[u8; 16]) -> bool {
        let (f, l) = (load(firsts), load(lasts));
        let tail = needle.len().saturating_sub(1);
        let block = |at: usize, a: &[u8; 16], b: &[u8; 16]| {
            let both = bitand_m128i(
                cmp_eq_mask_i8_m128i(load(a), f),
                cmp_eq_mask_i8_m128i(load(b), l),
            );
            let cands = move_mask_i8_m128i(both) as u32;
            cands != 0 && found(hay, needle, at, cands)
        };
        let ends = hay.get(tail..).unwrap_or_default();
        // `ends` is as long as there are starts: whole blocks of both, without bounds checks.
        let (a, _) = hay.as_chunks::<16>();
        let (b, rest) = ends.as_chunks::<16>();
        for (i, (a, b)) in a.iter().zip(b).enumerate() {
            if block(16 * i, a, b) {
                return true;
            }
        }
        if rest.is_empty() {
            return false;
        }
        // The last 16 starts: they end at the last 16 bytes.
        let starts = ends.len();
        match (
            hay.get(..starts).and_then(<[u8]>::last_chunk),
            ends.last_chunk(),
        ) {
            (Some(a), Some(b)) => block(starts - 16, a, b),
            _ => false,
        }
    }
}

/// `a == b`, without a call to `memcmp` for up to 16 bytes: two loads that may overlap.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let n = a.len();
    if n > 16 {
        return long_eq(a, b);
    }
    fn pair<const N: usize>(s: &[u8]) -> Option<(&[u8; N], &[u8; N])> {
        Some((s.first_chunk::<N>()?, s.last_chunk::<N>()?))
    }
    if let (Some((a0, a1)), Some((b0, b1))) = (pair::<8>(a), pair::<8>(b)) {
        (u64::from_le_bytes(*a0) ^ u64::from_le_bytes(*b0))
            | (u64::from_le_bytes(*a1) ^ u64::from_le_bytes(*b1))
            == 0
    } else if let (Some((a0, a1)), Some((b0, b1))) = (pair::<4>(a), pair::<4>(b)) {
        (u32::from_le_bytes(*a0) ^ u32::from_le_bytes(*b0))
            | (u32::from_le_bytes(*a1) ^ u32::from_le_bytes(*b1))
            == 0
    } else {
        // 0 to 3 bytes: the first, middle and last are all of them.
        [0, n / 2, n.wrapping_sub(1)]
            .iter()
            .all(|&i| a.get(i) == b.get(i))
    }
}

/// Out of line: a call to `memcmp` would make `same`'s callers save registers.
#[inline(never)]
fn long_eq(a: &[u8], b: &[u8]) -> bool {
    a == b
}

fn fixed_eq(pat: &[Option<u8>], s: &[u8]) -> bool {
    pat.len() == s.len() && pat.iter().zip(s).all(|(p, b)| p.is_none_or(|p| p == *b))
}

/// Large engine: consumes one byte, in place.
fn step(tokens: &[Token], states: &mut [u64], b: u8) {
    // The accept state consumes nothing.
    clear(states, tokens.len());
    // Descending, so state i+1 is read before the move from state i writes it.
    for (i, tok) in tokens.iter().enumerate().rev() {
        if !get(states, i) {
            continue;
        }
        clear(states, i);
        if tok.accepts(b) {
            set(states, if tok.star { i } else { i + 1 });
        }
    }
}

/// Large engine: adds the states reachable by letting `x*` match nothing.
fn close(tokens: &[Token], states: &mut [u64]) {
    // Ascending, so chains like `a*b*c*` propagate in one pass.
    for (i, tok) in tokens.iter().enumerate() {
        if tok.star && get(states, i) {
            set(states, i + 1);
        }
    }
}

fn get(bits: &[u64], i: usize) -> bool {
    bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

fn set(bits: &mut [u64], i: usize) {
    if let Some(w) = bits.get_mut(i / 64) {
        *w |= 1 << (i % 64);
    }
}

fn clear(bits: &mut [u64], i: usize) {
    if let Some(w) = bits.get_mut(i / 64) {
        *w &= !(1 << (i % 64));
    }
}

impl fmt::Display for KeyMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Escaped::quoted(&self.src).fmt(f)
    }
}

impl fmt::Debug for KeyMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyMask(\"{self}\")")
    }
}

/// The set of masks an event's key is checked against.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
// A tag byte instead of a niche in the Vec: one compare to tell the variants apart.
#[repr(u8)]
pub enum KeyMasks {
    /// Nothing is forwarded.
    #[default]
    None,
    /// `ALL`: every key is forwarded.
    All,
    /// Forwarded when any mask matches. Built by [`KeyMasks::from_args`], never empty.
    Some(Vec<KeyMask>),
}

/// The argument that stands for every key, compared ASCII case-insensitively (`ALL`, `all`, `All`).
fn is_all_arg(arg: &[u8]) -> bool {
    arg.eq_ignore_ascii_case(b"ALL")
}

impl KeyMasks {
    /// Builds the set from command/load arguments. `ALL` (any ASCII case) anywhere makes the set
    /// [`KeyMasks::All`] and the other masks irrelevant, so a literal mask `all` cannot be
    /// expressed (`^all$` can). No argument gives [`KeyMasks::None`]. Duplicates are dropped.
    pub fn from_args<I>(masks: I) -> KeyMasks
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        KeyMasks::None.add(masks)
    }

    /// This set plus `more`, with the same rules as [`KeyMasks::from_args`]; adding to `All`
    /// stays `All`.
    pub fn add<I>(&self, more: I) -> KeyMasks
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut list = match self {
            KeyMasks::All => return KeyMasks::All,
            KeyMasks::None => Vec::new(),
            KeyMasks::Some(v) => v.clone(),
        };
        for arg in more {
            let arg = arg.as_ref();
            if is_all_arg(arg) {
                return KeyMasks::All;
            }
            if !list.iter().any(|m| m.as_bytes() == arg) {
                list.push(KeyMask::new(arg));
            }
        }
        if list.is_empty() {
            KeyMasks::None
        } else {
            KeyMasks::Some(list)
        }
    }

    /// Whether an event on `key` is forwarded. Inlined into the keyspace callback.
    #[inline]
    pub fn matches(&self, key: &[u8]) -> bool {
        match self {
            KeyMasks::None => false,
            KeyMasks::All => true,
            // One mask, the usual case, without a loop. The loop is out of line: inlined, it
            // makes the callback save six registers, and the compiler hoists key-dependent
            // setup of every engine out of it, paid even when nothing uses it.
            KeyMasks::Some(v) => match v.as_slice() {
                [one] => one.matches(key),
                many => any_matches(many, key),
            },
        }
    }

    pub fn is_all(&self) -> bool {
        matches!(self, KeyMasks::All)
    }

    /// Number of masks; `All` counts as one (the `ALL` mask).
    pub fn len(&self) -> usize {
        match self {
            KeyMasks::None => 0,
            KeyMasks::All => 1,
            KeyMasks::Some(v) => v.len(),
        }
    }

    /// True when nothing is forwarded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[inline(never)]
fn any_matches(masks: &[KeyMask], key: &[u8]) -> bool {
    masks.iter().any(|m| m.matches(key))
}

/// One printable line for logs and INFO: `none`, `ALL`, or the masks quoted and escaped,
/// separated by spaces (`"^user:.*$" "log$"`).
impl fmt::Display for KeyMasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyMasks::None => f.write_str("none"),
            KeyMasks::All => f.write_str("ALL"),
            KeyMasks::Some(v) => {
                for (i, m) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "\"{m}\"")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, Instant};

    fn m(mask: &[u8], key: &[u8]) -> bool {
        KeyMask::new(mask).matches(key)
    }

    /// Pike's C code translated line by line onto slices; exponential in the worst case, so only
    /// for small inputs.
    fn reference(re: &[u8], text: &[u8]) -> bool {
        if let Some((b'^', rest)) = re.split_first() {
            return here(rest, text);
        }
        (0..=text.len()).any(|i| here(re, text.get(i..).unwrap_or_default()))
    }

    fn here(re: &[u8], text: &[u8]) -> bool {
        match re {
            [] => true,
            [c, b'*', rest @ ..] => star(*c, rest, text),
            [b'$'] => text.is_empty(),
            [c, rest @ ..] => match text.split_first() {
                Some((t, tail)) if *c == b'.' || c == t => here(rest, tail),
                _ => false,
            },
        }
    }

    fn star(c: u8, re: &[u8], mut text: &[u8]) -> bool {
        loop {
            if here(re, text) {
                return true;
            }
            match text.split_first() {
                Some((t, tail)) if *t == c || c == b'.' => text = tail,
                _ => return false,
            }
        }
    }

    #[test]
    fn literals() {
        assert!(m(b"abc", b"abc"));
        assert!(m(b"abc", b"xxabcxx"));
        assert!(!m(b"abc", b"abx"));
        assert!(!m(b"abc", b"ab"));
    }

    #[test]
    fn dot() {
        assert!(m(b"a.c", b"abc"));
        assert!(m(b"a.c", b"a\0c"));
        assert!(!m(b"a.c", b"ac"));
        assert!(!m(b"^.$", b""));
        assert!(m(b"^.$", b"\xff"));
    }

    #[test]
    fn star_after_literal() {
        assert!(m(b"^ab*c$", b"ac"));
        assert!(m(b"^ab*c$", b"abbbc"));
        assert!(!m(b"^ab*c$", b"abxc"));
        assert!(m(b"a*", b"zzz"), "zero repetitions match anywhere");
    }

    #[test]
    fn star_after_dot() {
        assert!(m(b"^a.*z$", b"az"));
        assert!(m(b"^a.*z$", b"a\n\0\xffz"));
        assert!(!m(b"^a.*z$", b"a\n\0\xffzy"));
    }

    #[test]
    fn anchors() {
        assert!(m(b"^ab", b"abc"));
        assert!(!m(b"^ab", b"cab"));
        assert!(m(b"bc$", b"abc"));
        assert!(!m(b"bc$", b"abcd"));
        assert!(m(b"^abc$", b"abc"));
        assert!(!m(b"^abc$", b"abcabc"));
        assert!(!m(b"^abc$", b"xabc"));
    }

    #[test]
    fn design_examples() {
        let user = KeyMask::new(b"^user:.*$");
        assert!(user.matches(b"user:"));
        assert!(user.matches(b"user:42\nx"));
        assert!(!user.matches(b"xuser:42"));
        assert!(!user.matches(b"user"));

        let session = KeyMask::new(b".*session.*");
        assert!(session.matches(b"session"));
        assert!(session.matches(b"app:session:1"));
        assert!(!session.matches(b"sess"));

        let log = KeyMask::new(b"log$");
        assert!(log.matches(b"app:log"));
        assert!(!log.matches(b"app:logs"));
        assert!(!log.matches(b"lo"));
    }

    #[test]
    fn empty_mask_matches_everything() {
        assert!(m(b"", b""));
        assert!(m(b"", b"anything"));
        assert!(m(b"^", b""));
        assert!(m(b"$", b"abc"));
    }

    #[test]
    fn leading_star_is_literal() {
        assert!(m(b"*a", b"x*a"));
        assert!(!m(b"*a", b"a"));
        assert!(!m(b"*", b"abc"));
        assert!(m(b"*", b"a*c"));
        assert!(m(b"^*", b"*abc"));
        assert!(!m(b"^*", b"abc"));
        // `**` is zero or more literal stars.
        assert!(m(b"^**$", b""));
        assert!(m(b"^**$", b"***"));
        assert!(!m(b"^**$", b"a"));
    }

    #[test]
    fn caret_dollar_matches_only_empty_key() {
        assert!(m(b"^$", b""));
        assert!(!m(b"^$", b"a"));
        assert!(!m(b"^$", b"\0"));
    }

    #[test]
    fn dot_star_and_all_match_everything() {
        let dot_star = KeyMasks::from_args([".*"]);
        let all = KeyMasks::from_args(["ALL"]);
        for key in [&b""[..], b"a", b"\0\n\xff", b"ALL"] {
            assert!(dot_star.matches(key));
            assert!(all.matches(key));
        }
        assert_eq!(dot_star, KeyMasks::Some(vec![KeyMask::new(b".*")]));
        assert!(!dot_star.is_all());
        assert_eq!(all, KeyMasks::All);
    }

    #[test]
    fn mask_longer_than_key() {
        assert!(!m(b"abcdef", b"abc"));
        assert!(!m(b"......", b"abc"));
        assert!(
            m(b"^a*b*c*d*e*f*abc$", b"abc"),
            "starred tokens may be empty"
        );
    }

    #[test]
    fn binary_keys() {
        assert!(m(b"a\nb", b"x\na\nb"));
        assert!(m(b"^\0$", b"\0"));
        assert!(m(b"\0*x", b"\0\0\0x"));
        assert!(m(b"\xff.", b"\xff\0"));
        assert!(!m(b"a$", b"a\0"), "NUL does not end the key");
        assert!(m(b"^.*\0.*$", b"ab\0cd"));
    }

    #[test]
    fn caret_and_dollar_in_the_middle_are_literal() {
        assert!(m(b"a$b", b"xa$by"));
        assert!(!m(b"a$b", b"ab"));
        assert!(m(b"a^b", b"a^b"));
        assert!(!m(b"a^b", b"ab"));
        assert!(m(b"^^", b"^x"));
        assert!(m(b"$$", b"a$"), "first `$` is literal, last is the anchor");
        assert!(!m(b"$$", b"$a"));
        assert!(m(b"^a$*$", b"a$$"), "`$*` repeats a literal `$`");
    }

    #[test]
    fn long_masks() {
        let mask = vec![b'a'; 300];
        assert!(m(&mask, &[b'a'; 301]));
        assert!(!m(&mask, &[b'a'; 299]));
        let mut stars = b"^".to_vec();
        stars.extend(b"a*".repeat(300));
        stars.extend(b"b$");
        assert!(m(&stars, b"aaab"));
        assert!(!m(&stars, b"aaa"));
    }

    #[test]
    fn engines() {
        let engine = |mask: &[u8]| match KeyMask::new(mask).engine {
            Engine::Literal(_) => "literal",
            Engine::Fixed(_) => "fixed",
            Engine::Small { .. } => "small",
            Engine::Large(_) => "large",
        };
        for mask in [
            &b"^user:.*$"[..],
            b".*session.*",
            b"log$",
            b"a*b*",
            b"^.*$",
            b"nomatch:*",
        ] {
            assert_eq!(engine(mask), "literal", "{mask:?}");
        }
        assert_eq!(engine(b"^a.b"), "fixed");
        assert_eq!(engine(b"a.$"), "fixed");
        assert_eq!(engine(b"^a*b"), "small");
        assert_eq!(engine(b"a.*b"), "small");
        assert_eq!(
            engine(&[b"^".to_vec(), b"x*".repeat(62), b"y".to_vec()].concat()),
            "small"
        );
        assert_eq!(
            engine(&[b"^".to_vec(), b"x*".repeat(63), b"y".to_vec()].concat()),
            "large"
        );
    }

    #[test]
    fn long_key_is_fast_and_iterative() {
        let key = vec![b'a'; 1 << 20];
        let start = Instant::now();
        assert!(!m(b"a*b", &key));
        assert!(!m(b".*.*.*x", &key));
        assert!(!m(b"^a*a*a*a*a*a*b", &key));
        assert!(!m(b"a.*a.*x", &key));
        assert!(m(b"^a*$", &key));
        assert!(m(b"^.*.*.*a$", &key));
        assert!(m(b"a$", &key));
        assert!(m(b"a.*a.*a$", &key));
        // 81 tokens: one bit per token per byte, so a shorter key keeps debug builds quick.
        let large = [b"a.*".repeat(40), b"x".to_vec()].concat();
        assert!(!m(&large, key.get(..1 << 16).unwrap_or_default()));
        // Exponential backtracking would not finish at all; this is a loose guard.
        assert!(start.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn long_mask_compiles_and_fails_fast() {
        let start = Instant::now();
        let stars = b"a*".repeat(1 << 19);
        assert!(m(&stars, b"b"), "nothing but stars matches everything");
        let anchored = [b"^".to_vec(), stars, b"$".to_vec()].concat();
        assert!(m(&anchored, b"aaa"));
        assert!(!m(&anchored, b"aab"));
        assert!(!m(&vec![b'a'; 1 << 20], b"aaa"));
        assert!(start.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn set_from_args() {
        assert_eq!(KeyMasks::default(), KeyMasks::None);
        assert_eq!(KeyMasks::from_args(Vec::<Vec<u8>>::new()), KeyMasks::None);
        assert!(!KeyMasks::None.matches(b""));
        assert_eq!(KeyMasks::from_args(["a", "all", "b"]), KeyMasks::All);
        assert_eq!(KeyMasks::from_args(["a", "a", "b"]).len(), 2);

        let s = KeyMasks::from_args(["^user:", "log$"]);
        assert!(s.matches(b"user:1") && s.matches(b"x:log") && !s.matches(b"x"));
    }

    #[test]
    fn add_to_set() {
        let s = KeyMasks::from_args(["a"]).add(["b", "a"]);
        assert_eq!(s.len(), 2);
        assert!(s.matches(b"b"));
        assert_eq!(s.add(["All"]), KeyMasks::All);
        assert_eq!(KeyMasks::All.add(["x"]), KeyMasks::All);
        assert_eq!(KeyMasks::None.add(["x"]).len(), 1);
        assert_eq!(KeyMasks::None.add(Vec::<&str>::new()), KeyMasks::None);
        assert!(KeyMasks::None.is_empty() && !KeyMasks::All.is_empty());
    }

    #[test]
    fn display_escapes() {
        assert_eq!(KeyMasks::None.to_string(), "none");
        assert_eq!(KeyMasks::All.to_string(), "ALL");
        let s = KeyMasks::from_args([&b"^user:.*$"[..], b"a\0\n\xff\"\\ b"]);
        assert_eq!(s.to_string(), r#""^user:.*$" "a\x00\x0a\xff\"\\ b""#);
        assert_eq!(format!("{:?}", KeyMask::new(b"\x01")), r#"KeyMask("\x01")"#);
    }

    /// Every key length to 70 and needle length to 20 (each SSE2 path and their borders), the
    /// needle at every start, and the same with its second byte changed (first and last bytes
    /// found, the rest not), against `windows`.
    #[test]
    fn substring_search_at_every_length_and_start() {
        for n in 1..=20usize {
            let needle: Vec<u8> = (0..n).map(|i| b'a' + (i % 3) as u8).collect();
            let lit = Literal::new(needle.clone(), false, false);
            for len in 0..=70usize {
                for at in 0..=len.saturating_sub(n) {
                    for near in [false, true] {
                        let mut hay = vec![b'x'; len];
                        if let Some(w) = hay.get_mut(at..at + n) {
                            w.copy_from_slice(&needle);
                            if near && n > 2 {
                                if let Some(b) = w.get_mut(1) {
                                    *b = b'x';
                                }
                            }
                        }
                        let expected = hay.windows(n).any(|w| w == needle.as_slice());
                        assert_eq!(lit.matches(&hay), expected, "{needle:?} in {hay:?}");
                        assert_eq!(contains_swar(&hay, &needle), expected);
                    }
                }
            }
        }
    }

    /// Bytes chosen so that random masks and keys often match.
    fn mask_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            3 => Just(b'a'),
            2 => Just(b'b'),
            1 => Just(0u8),
            1 => Just(b'\n'),
            1 => Just(0xff),
            2 => Just(b'.'),
            3 => Just(b'*'),
            1 => Just(b'^'),
            1 => Just(b'$'),
        ]
    }

    fn key_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            6 => Just(b'a'),
            4 => Just(b'b'),
            1 => Just(0u8),
            1 => Just(b'\n'),
            1 => Just(0xff),
            1 => Just(b'*'),
            1 => Just(b'$'),
            1 => Just(b'^'),
        ]
    }

    /// Bytes at the edges of the SWAR zero-byte test.
    fn edge_byte() -> impl Strategy<Value = u8> {
        prop_oneof![Just(0u8), Just(1), Just(0x7f), Just(0x80), Just(0xff)]
    }

    fn small_mask() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(mask_byte(), 0..10)
    }

    fn small_key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(key_byte(), 0..14)
    }

    #[test]
    fn generated_cases_are_not_vacuous() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let cases = (small_mask(), small_key());
        let total = 2000;
        let hits = (0..total)
            .filter(|_| {
                let (mask, key) = cases.new_tree(&mut runner).unwrap().current();
                reference(&mask, &key)
            })
            .count();
        assert!(
            hits > total / 5 && hits < total * 4 / 5,
            "{hits} of {total} match"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn agrees_with_pike(mask in small_mask(), key in small_key()) {
            prop_assert_eq!(m(&mask, &key), reference(&mask, &key));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Literal masks (no `.` or `*`) over a two-letter alphabet: many partial matches, so
        /// the substring search must restart right after each failed candidate.
        #[test]
        fn literal_masks_agree_with_pike(
            start in any::<bool>(),
            end in any::<bool>(),
            lit in prop::collection::vec(prop_oneof![Just(b'a'), Just(b'b')], 0..6),
            key in prop::collection::vec(prop_oneof![Just(b'a'), Just(b'b')], 0..16),
            pad in prop_oneof![Just(0usize), 0usize..150],
        ) {
            // Padding makes keys of many eight-start words.
            let key = [&b"a".repeat(pad)[..], &key].concat();
            let caret: &[u8] = if start { b"^" } else { b"" };
            let dollar: &[u8] = if end { b"$" } else { b"" };
            let mask = [caret, &lit, dollar].concat();
            prop_assert_eq!(m(&mask, &key), reference(&mask, &key));
        }

        /// The substring searches (SWAR, and SSE2 where built) against the obvious one, on
        /// bytes that stress the SWAR zero-byte test (0x00, 0x01, 0x7f, 0x80, 0xff: borrows and
        /// high bits) and the SSE2 paths (padded short key, one look, blocks of 16).
        #[test]
        fn substring_search_agrees_with_windows(
            needle in prop::collection::vec(edge_byte(), 1..20),
            hay in prop::collection::vec(edge_byte(), 0..80),
        ) {
            let expected = hay.windows(needle.len()).any(|w| w == needle.as_slice());
            prop_assert_eq!(contains_swar(&hay, &needle), expected);
            let lit = Literal::new(needle.clone(), false, false);
            prop_assert_eq!(contains(&hay, &needle, &lit.firsts.0, &lit.lasts.0), expected);
            prop_assert_eq!(lit.matches(&hay), expected);
        }

        /// Every place of a literal, and `same`'s widths (0-3, 4-7, 8-16, longer), against
        /// the slice methods, on keys about as long as the literal.
        #[test]
        fn literals_agree_with_slice_methods(
            lit in prop::collection::vec(edge_byte(), 0..24),
            extra in prop::collection::vec(edge_byte(), 0..24),
            at in 0usize..24,
            flip in prop::option::of(0usize..48),
        ) {
            // The literal somewhere in the key, then maybe one byte changed.
            let cut = at.min(extra.len());
            let (pre, post) = extra.split_at(cut);
            let mut key = [pre, &lit, post].concat();
            if let Some(b) = flip.and_then(|i| key.get_mut(i)) {
                *b ^= 1;
            }
            for (start, end) in [(false, false), (true, false), (false, true), (true, true)] {
                let expected = match (start, end) {
                    (false, false) => key.windows(lit.len().max(1)).any(|w| w == lit.as_slice())
                        || lit.is_empty(),
                    (true, false) => key.starts_with(&lit),
                    (false, true) => key.ends_with(&lit),
                    (true, true) => key == lit,
                };
                prop_assert_eq!(Literal::new(lit.clone(), start, end).matches(&key), expected);
            }
            prop_assert_eq!(same(&key, &lit), key == lit);
        }

        #[test]
        fn agrees_with_pike_on_long_masks(
            mask in small_mask(),
            key in small_key(),
            pad in 0usize..300,
        ) {
            // A run of `.` makes the mask long (every engine) without making the reference
            // exponential.
            let mask = [&b".".repeat(pad)[..], &mask].concat();
            let key = [&b"a".repeat(pad)[..], &key].concat();
            prop_assert_eq!(m(&mask, &key), reference(&mask, &key));
        }

        #[test]
        fn never_panics(
            mask in prop::collection::vec(any::<u8>(), 0..64),
            key in prop::collection::vec(any::<u8>(), 0..4096),
        ) {
            let masks = KeyMasks::from_args([&mask]);
            let _ = masks.matches(&key);
            let _ = masks.to_string();
        }
    }
}
