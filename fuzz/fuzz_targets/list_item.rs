//! Fallback-list items: the module's own full and compact items, the old module's plain bodies,
//! and whatever an operator RPUSHes into the list. The input is one item, and also a list of
//! items separated by 0xFF bytes, read in sequence as a refill or a trim reads them.
#![no_main]

use key_evt_amqp::core::event::Event;
use key_evt_amqp::core::list_item::{full_form_of_last, ListBack, ListReader, REACH};
use libfuzzer_sys::fuzz_target;

/// Compact items (0x1C, 0x1B) read alone: no run, so no id.
fn is_compact(item: &[u8]) -> bool {
    matches!(item.first(), Some(0x1b | 0x1c))
}

fn one_item(item: &[u8]) {
    let e = Event::from_list_item(item);
    assert_eq!(e.list_copy, 0);
    // The body (and the values after it) is what follows the envelope, or the whole item.
    let data = e.data.as_ref().map_or(&[][..], |d| d.as_bytes());
    assert!(
        item.ends_with(&[&e.body[..], data].concat()),
        "the body and values are not the item's tail"
    );
    let encoded = e.to_list_item();
    assert!(encoded.len() <= e.list_item_len_max());
    match e.id {
        // A compact item without its full item: delivered, its body and time, no id.
        None if is_compact(item) && e.body.len() < item.len() => {}
        // Not an item of ours: delivered and stored again exactly as it came.
        None => {
            assert_eq!(e.body.as_slice(), item);
            assert_eq!(e.timestamp, 0);
            assert_eq!(encoded, item);
        }
        // A full item (maybe with non-shortest varints): re-encoding reads back the same event.
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
}

fn a_list(items: &[&[u8]]) {
    let all: Vec<Event> = ListReader::read_after(items, 0).collect();
    assert_eq!(all.len(), items.len());
    let reach = REACH as usize;
    for p in 0..items.len() {
        // From any position, with the REACH items before it: the same events as from the front.
        let start = p.saturating_sub(reach);
        let from_p: Vec<Event> = ListReader::read_after(&items[start..], p - start).collect();
        assert_eq!(from_p, all[p..]);
        // A trim's full form of the new front reads alone as it did in the list.
        if let Some(full) = full_form_of_last(&items[start..=p]) {
            assert!(is_compact(items[p]));
            assert_eq!(Event::from_list_item(&full), all[p]);
        }
    }
    // Written again as a spill writes them: the events with an id read back the same.
    let mut back = ListBack::default();
    let mut written = vec![];
    for e in all.iter().filter(|e| e.id.is_some()) {
        let mut out = vec![];
        back.write(e, &mut out);
        written.push(out);
    }
    let again: Vec<Event> = ListReader::read_after(&written, 0).collect();
    let with_id: Vec<&Event> = all.iter().filter(|e| e.id.is_some()).collect();
    assert_eq!(again.iter().collect::<Vec<_>>(), with_id);
}

fuzz_target!(|data: &[u8]| {
    one_item(data);
    let items: Vec<&[u8]> = data.split(|&b| b == 0xff).take(64).collect();
    a_list(&items);
});
