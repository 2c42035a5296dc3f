//! Frames from the broker (or from whatever answers on its port): `parse_frame` as the
//! connection's reader calls it, over a buffer that may hold several frames, part of one, or
//! garbage.
#![no_main]

use key_evt_amqp::amqp::wire::{parse_frame, Frame, FRAME_OVERHEAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first 4 bytes choose a negotiated frame_max; 0 (before tuning) and the minimum are
    // always tried as well.
    let (chosen, buf) = match data.split_first_chunk::<4>() {
        Some((fm, rest)) => (u32::from_be_bytes(*fm), rest),
        None => (0, data),
    };
    for frame_max in [0, 4096, chosen] {
        check(buf, frame_max);
        read_all(buf, frame_max);
    }
});

fn check(buf: &[u8], frame_max: u32) {
    let result = parse_frame(buf, frame_max);
    match &result {
        Ok(Some((frame, used))) => {
            let used = *used;
            assert!(used <= buf.len(), "took {used} of {} bytes", buf.len());
            assert!(used >= FRAME_OVERHEAD);
            if frame_max > 0 {
                assert!(used <= frame_max as usize, "{used} > frame_max {frame_max}");
            }
            if let Frame::Body { len, .. } = frame {
                assert_eq!(len + FRAME_OVERHEAD, used);
            }
            // A frame depends on its own bytes only, not on what follows it.
            assert_eq!(parse_frame(&buf[..used], frame_max), result);
            // Every shorter prefix is incomplete (or the same protocol-header error).
            let cut = &buf[..used - 1];
            match parse_frame(cut, frame_max) {
                Ok(None) => {}
                other => panic!("a cut frame gave {other:?}"),
            }
        }
        Ok(None) => {
            // Incomplete: so is every prefix.
            if let Some(cut) = buf.len().checked_sub(1) {
                assert_eq!(parse_frame(&buf[..cut], frame_max), Ok(None));
            }
        }
        Err(_) => {}
    }
}

/// The reader's loop: frames off the front until one is incomplete or an error.
fn read_all(mut buf: &[u8], frame_max: u32) {
    while let Ok(Some((_, used))) = parse_frame(buf, frame_max) {
        buf = &buf[used..];
    }
}
