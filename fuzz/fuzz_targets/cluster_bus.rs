//! Cluster-bus payloads from the other nodes (`decode_command`) and the text of
//! `CLUSTER NODES` (`served_slots`).
#![no_main]

use key_evt_amqp::core::cluster::{decode_command, encode_command, served_slots, SLOTS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // decode is the exact inverse of encode: what it accepts, encode gives back byte for byte.
    if let Some(args) = decode_command(data) {
        assert!(!args.is_empty());
        assert!(args.iter().all(|a| a.len() <= data.len()));
        assert_eq!(encode_command(&args), data);
    }

    // encode then decode gives the arguments back: the first byte splits the rest into them.
    if let Some((&sep, rest)) = data.split_first() {
        let args: Vec<&[u8]> = rest.split(|&b| b == sep).collect();
        let payload = encode_command(&args);
        assert_eq!(decode_command(&payload), Some(args));
    }
    assert_eq!(decode_command(&encode_command(&[])), None);

    if let Some(slots) = served_slots(data) {
        assert!(slots.len() <= SLOTS);
        if let Some(first) = slots.first() {
            assert!(usize::from(first) < SLOTS);
            assert!(slots.contains(first));
        }
    }
});
