//! Key masks (load arguments, `keymask_set`/`keymask_add`, `CONFIG SET key_evt_amqp.keymasks`)
//! against keys (anything a client writes): the compiled matcher against Pike's matcher as the
//! module doc defines it, here as a table (no backtracking, so any size is quick).
#![no_main]

use key_evt_amqp::core::keymask::{KeyMask, KeyMasks};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: the mask's length (at most 255), then the mask, then the key.
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n).min(rest.len());
    let (mask, key) = rest.split_at(n);
    let key = &key[..key.len().min(4096)];

    let m = KeyMask::new(mask);
    let got = m.matches(key);
    assert_eq!(got, pike(mask, key), "mask {mask:?} key {key:?}");
    assert_eq!(m.as_bytes(), mask);
    let _ = m.to_string();

    let set = KeyMasks::from_args([mask]);
    if mask.eq_ignore_ascii_case(b"ALL") {
        assert!(set.is_all() && set.matches(key));
    } else {
        assert_eq!(set.matches(key), got);
        assert_eq!(set.len(), 1);
    }
    let _ = set.to_string();
});

/// Pike's `match`: `^` first anchors, else any start; `matchhere` over (mask position, key
/// position), filled from the end of the mask.
fn pike(re: &[u8], text: &[u8]) -> bool {
    let (m, n) = (re.len(), text.len());
    let w = n + 1;
    // here[i * w + j]: matchhere(&re[i..], &text[j..]).
    let mut here = vec![false; (m + 1) * w];
    for i in (0..=m).rev() {
        for j in (0..=n).rev() {
            let r = &re[i..];
            let v = match r {
                [] => true,
                [c, b'*', ..] => {
                    // matchstar: the rest here, or one more `c` and try again.
                    here[(i + 2) * w + j]
                        || (j < n && (*c == b'.' || *c == text[j]) && here[i * w + j + 1])
                }
                [b'$'] => j == n,
                [c, ..] => j < n && (*c == b'.' || *c == text[j]) && here[(i + 1) * w + j + 1],
            };
            here[i * w + j] = v;
        }
    }
    if re.first() == Some(&b'^') {
        here[w]
    } else {
        (0..=n).any(|j| here[j])
    }
}
