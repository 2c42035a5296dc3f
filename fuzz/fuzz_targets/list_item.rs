//! Fallback-list items: the module's own envelopes, the old module's plain bodies, and whatever
//! an operator RPUSHes into the list.
#![no_main]

use key_evt_amqp::core::event::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|item: &[u8]| {
    let e = Event::from_list_item(item);
    assert_eq!(e.list_copy, 0);
    // The body is what follows the envelope, or the whole item.
    assert!(item.ends_with(&e.body), "the body is not the item's tail");
    let encoded = e.to_list_item();
    assert!(encoded.len() <= e.list_item_len_max());
    match e.id {
        // Not an envelope: delivered and stored again exactly as it came.
        None => {
            assert_eq!(e.body.as_slice(), item);
            assert_eq!(e.timestamp, 0);
            assert_eq!(encoded, item);
        }
        // An envelope (maybe with non-shortest varints): re-encoding reads back the same event.
        Some(_) => {
            assert!(encoded.len() <= item.len(), "re-encoding grew the item");
            assert_eq!(Event::from_list_item(&encoded), e);
        }
    }
    // write_list_item appends (a spill writes many items into one buffer).
    let mut out = b"prefix".to_vec();
    e.write_list_item(&mut out);
    assert_eq!(&out[..6], b"prefix");
    assert_eq!(&out[6..], encoded.as_slice());
});
