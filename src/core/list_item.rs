//! The fallback list's items, read and written in sequence. First byte:
//!
//! ```text
//!   0x1E  full      run_id (20 bytes), seq, timestamp, body
//!   0x1D  full      run_id, seq, timestamp, body length, body, data     (`payload value`)
//!   0x1C  compact   seq, timestamp, body
//!   0x1B  compact   seq, timestamp, body length, body, data
//!   else  plain     the body as it is (the old C module's items)
//! ```
//!
//! Numbers are LEB128. A compact item's run id is that of the nearest full item before it in
//! the list, which is at most [`REACH`] positions before it (plain items do not count as full
//! items; a malformed item is a plain one). The list's front item is never compact, so that a
//! reader starting at the front needs no context, and every writer keeps it so:
//!
//! - appends at the back ([`ListBack`]) write compact only while the outbox can vouch for the
//!   back (the run of the last full item and how far back it is); unknown means full;
//! - a group pushed at the front starts with a full item;
//! - a trim of the front, having read the [`REACH`] items before the new front, writes the new
//!   front's full form over it when it is compact ([`full_form_of_last`]).
//!
//! A reader starting at position `p` reads from `p - REACH` ([`ListReader`]). A compact item
//! with no full item within its reach (only if someone cut the list by hand) is still
//! delivered, with no id, like the old module's items.

use crate::core::encoding::{put_varint, take_varint};
use crate::core::event::{Body, Event, EventId, RunId};
use crate::core::value::Data;

/// One full item every [`K`] items at most: compact items save 20 of about 50 bytes each
/// (bench measurement 5); a larger K saves at most 20/16 bytes more per item, while every trim
/// of the front and every refill reads up to K-1 items before the position it works at.
pub const K: usize = 16;
/// How far before a compact item its full item may be: K-1 positions.
pub const REACH: u64 = K as u64 - 1;

const FULL: u8 = 0x1e;
const FULL_DATA: u8 = 0x1d;
const COMPACT: u8 = 0x1c;
const COMPACT_DATA: u8 = 0x1b;

/// The nearest full item before a position: its run, and how many items lie after it, up to
/// the position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Anchor {
    run: RunId,
    since: u64,
}

impl Anchor {
    /// The run a compact item at the next position takes, if the full item is within reach.
    fn run_for_next(anchor: Option<Anchor>) -> Option<RunId> {
        anchor.filter(|a| a.since < REACH).map(|a| a.run)
    }

    /// One more item after the full one.
    fn step(anchor: &mut Option<Anchor>) {
        if let Some(a) = anchor {
            a.since = a.since.saturating_add(1);
        }
    }
}

/// What the writer of the list's back knows: the run of the last full item written there and
/// how many items followed it. Unknown (the default, and after [`ListBack::forget`]) means the
/// next item is written full. It may over-estimate the distance, never under-estimate it:
/// forgetting is always safe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListBack(Option<Anchor>);

impl ListBack {
    pub fn forget(&mut self) {
        self.0 = None;
    }

    pub fn is_known(&self) -> bool {
        self.0.is_some()
    }

    /// Appends `e` to `out` as the next item after the back: compact when the back's full item
    /// is of `e`'s run and within reach, full otherwise (which then becomes the back's).
    pub fn write(&mut self, e: &Event, out: &mut Vec<u8>) {
        match e.id {
            Some(id) if Anchor::run_for_next(self.0) == Some(id.run_id) => {
                write_compact(e, id, out);
                Anchor::step(&mut self.0);
            }
            Some(id) => {
                write_full(e, id, out);
                self.0 = Some(Anchor {
                    run: id.run_id,
                    since: 0,
                });
            }
            None => {
                out.extend_from_slice(&e.body);
                Anchor::step(&mut self.0);
            }
        }
    }
}

/// An upper bound of the length [`ListBack::write`] gives `e` (varints take at most 10 bytes).
pub fn len_max(e: &Event) -> usize {
    let envelope = if e.id.is_some() { 1 + 20 + 3 * 10 } else { 0 };
    envelope + e.body.len() + e.data.as_ref().map_or(0, |d| d.as_bytes().len())
}

fn data_of(e: &Event) -> Option<&Data> {
    e.data.as_deref().filter(|d| !d.is_empty())
}

/// The full item: `0x1E, run_id, seq, timestamp, body` or with values `0x1D, run_id, seq,
/// timestamp, body length, body, data`.
pub fn write_full(e: &Event, id: EventId, out: &mut Vec<u8>) {
    let data = data_of(e);
    out.push(if data.is_some() { FULL_DATA } else { FULL });
    out.extend_from_slice(&id.run_id.0);
    write_rest(e, id, data, out);
}

/// The compact item: the full one without its run id, marked `0x1C` or `0x1B`.
fn write_compact(e: &Event, id: EventId, out: &mut Vec<u8>) {
    let data = data_of(e);
    out.push(if data.is_some() {
        COMPACT_DATA
    } else {
        COMPACT
    });
    write_rest(e, id, data, out);
}

fn write_rest(e: &Event, id: EventId, data: Option<&Data>, out: &mut Vec<u8>) {
    put_varint(out, id.seq);
    put_varint(out, u64::from(e.timestamp));
    if let Some(data) = data {
        put_varint(out, e.body.len() as u64);
        out.extend_from_slice(&e.body);
        out.extend_from_slice(data.as_bytes());
    } else {
        out.extend_from_slice(&e.body);
    }
}

/// An item taken apart, borrowing its bytes.
struct Parts<'a> {
    /// The run id of a full item; `None` for a compact one.
    run: Option<RunId>,
    seq: u64,
    timestamp: u32,
    body: &'a [u8],
    data: Option<&'a [u8]>,
}

/// A well-formed full or compact item; `None` for anything else (a plain body).
fn parse(item: &[u8]) -> Option<Parts<'_>> {
    let (&mark, rest) = item.split_first()?;
    let (run, mut rest) = match mark {
        FULL | FULL_DATA => (
            Some(RunId(rest.get(..20)?.try_into().ok()?)),
            rest.get(20..)?,
        ),
        COMPACT | COMPACT_DATA => (None, rest),
        _ => return None,
    };
    let seq = take_varint(&mut rest)?;
    // Beyond 32 bits is not a time this module wrote: unknown.
    let timestamp = u32::try_from(take_varint(&mut rest)?).unwrap_or(0);
    let (body, data) = if mark == FULL_DATA || mark == COMPACT_DATA {
        let len = usize::try_from(take_varint(&mut rest)?).ok()?;
        // No values is no data, as the writer has it (it writes none).
        let data = rest.get(len..)?;
        (rest.get(..len)?, Some(data).filter(|d| !d.is_empty()))
    } else {
        (rest, None)
    };
    Some(Parts {
        run,
        seq,
        timestamp,
        body,
        data,
    })
}

/// Reads items in list order, each compact one taking the run of the nearest full item before
/// it. To read from position `p` of a list, start at `p - REACH` (or 0) and [`skip`] the
/// items before `p`: the result is the same as reading from the front.
///
/// [`skip`]: ListReader::skip
#[derive(Clone, Copy, Debug, Default)]
pub struct ListReader(Option<Anchor>);

impl ListReader {
    /// Takes note of an item before the ones wanted (no event is built).
    pub fn skip(&mut self, item: &[u8]) {
        match parse(item).and_then(|p| p.run) {
            Some(run) => self.0 = Some(Anchor { run, since: 0 }),
            None => Anchor::step(&mut self.0),
        }
    }

    /// The next item's event. Never fails: what is not a well-formed item is a plain body,
    /// and a compact item with no full item within reach has no id.
    pub fn read(&mut self, item: &[u8]) -> Event {
        let Some(p) = parse(item) else {
            Anchor::step(&mut self.0);
            return Event {
                id: None,
                timestamp: 0,
                body: Body::from_slice(item),
                list_copy: 0,
                data: None,
            };
        };
        let run = match p.run {
            Some(run) => {
                self.0 = Some(Anchor { run, since: 0 });
                Some(run)
            }
            None => {
                let run = Anchor::run_for_next(self.0);
                Anchor::step(&mut self.0);
                run
            }
        };
        Event {
            id: run.map(|run_id| EventId { run_id, seq: p.seq }),
            timestamp: p.timestamp,
            body: Body::from_slice(p.body),
            list_copy: 0,
            data: p.data.map(|d| Box::new(Data::from_bytes(d.to_vec()))),
        }
    }

    /// The events of `items[skip..]`, read after the items before them.
    pub fn read_after<T: AsRef<[u8]>>(
        items: &[T],
        skip: usize,
    ) -> impl Iterator<Item = Event> + '_ {
        let mut reader = ListReader::default();
        let (before, wanted) = items.split_at(skip.min(items.len()));
        for item in before {
            reader.skip(item.as_ref());
        }
        wanted.iter().map(move |item| reader.read(item.as_ref()))
    }
}

/// The full form of `window`'s last item when it is compact and a full item within reach
/// precedes it in `window`; `None` otherwise (full, plain, or with no run to give it). Before
/// the front of a list is trimmed, `window` is the new front and the [`REACH`] items before it:
/// what this returns is written over the new front.
pub fn full_form_of_last<T: AsRef<[u8]>>(window: &[T]) -> Option<Vec<u8>> {
    let (last, before) = window.split_last()?;
    let last = last.as_ref();
    let p = parse(last)?;
    if p.run.is_some() {
        return None;
    }
    let mut reader = ListReader::default();
    for item in before {
        reader.skip(item.as_ref());
    }
    let run = Anchor::run_for_next(reader.0)?;
    // The same layout after the run id: only the mark changes.
    let (&mark, rest) = last.split_first()?;
    let mark = if mark == COMPACT_DATA {
        FULL_DATA
    } else {
        FULL
    };
    let mut out = Vec::with_capacity(last.len() + 20);
    out.push(mark);
    out.extend_from_slice(&run.0);
    out.extend_from_slice(rest);
    Some(out)
}

/// The first index of the window [`full_form_of_last`] needs before `n` items leave the front:
/// `n - REACH`, or 0. The window ends at index `n` (the new front).
pub fn trim_window_start(n: u64) -> u64 {
    n.saturating_sub(REACH)
}

/// The item of one event on its own, full: for benches, fuzzing and tests. The outbox writes
/// items in sequence through [`ListBack`], and reads them through [`ListReader`].
impl Event {
    /// The full list item (`0x1E` or `0x1D`, see the file's comment); events without identity
    /// are stored as their plain body, as the old module did.
    pub fn to_list_item(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(len_max(self));
        self.write_list_item(&mut out);
        out
    }

    /// Appends the full list item to `out`.
    pub fn write_list_item(&self, out: &mut Vec<u8>) {
        match self.id {
            Some(id) => write_full(self, id, out),
            None => out.extend_from_slice(&self.body),
        }
    }

    /// An upper bound of the list item's length (varints take at most 10 bytes).
    pub fn list_item_len_max(&self) -> usize {
        len_max(self)
    }

    /// Reads one list item with no context: a compact item then has no id (see
    /// [`ListReader`]). Anything that is not a well-formed item is a plain body, delivered as
    /// it is: an item is never thrown away for its format.
    pub fn from_list_item(item: &[u8]) -> Event {
        ListReader::default().read(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::test_event as ev;
    use proptest::prelude::*;

    fn plain(seq: u64) -> Event {
        Event {
            id: None,
            timestamp: 0,
            ..ev(0, seq)
        }
    }

    fn write_all(events: &[Event], back: &mut ListBack) -> Vec<Vec<u8>> {
        events
            .iter()
            .map(|e| {
                let mut out = vec![];
                back.write(e, &mut out);
                assert!(out.len() <= len_max(e));
                out
            })
            .collect()
    }

    #[test]
    fn one_full_item_then_compact_ones_up_to_the_reach() {
        let events: Vec<Event> = (1..=40).map(|i| ev(7, i)).collect();
        let items = write_all(&events, &mut ListBack::default());
        let marks: Vec<u8> = items.iter().map(|i| i[0]).collect();
        for (i, m) in marks.iter().enumerate() {
            assert_eq!(*m == FULL, i % K == 0, "item {i}: {m:#x}");
        }
        // 20 bytes less than the full item.
        assert_eq!(items[1].len() + 20, events[1].to_list_item().len());
        let read: Vec<Event> = ListReader::read_after(&items, 0).collect();
        assert_eq!(read, events);
    }

    #[test]
    fn another_run_or_an_unknown_back_writes_full() {
        let mut back = ListBack::default();
        let events = [ev(1, 1), ev(1, 2), ev(2, 3), ev(2, 4), ev(1, 5)];
        let items = write_all(&events, &mut back);
        let marks: Vec<u8> = items.iter().map(|i| i[0]).collect();
        assert_eq!(marks, [FULL, COMPACT, FULL, COMPACT, FULL]);
        back.forget();
        assert!(!back.is_known());
        assert_eq!(write_all(&[ev(1, 6)], &mut back)[0][0], FULL);
        assert!(back.is_known());
        let read: Vec<Event> = ListReader::read_after(&items, 0).collect();
        assert_eq!(read, events);
    }

    #[test]
    fn plain_items_count_as_positions_not_as_full_items() {
        let mut back = ListBack::default();
        let mut events = vec![ev(3, 1)];
        events.extend((0..14).map(plain));
        events.push(ev(3, 2)); // 15 after the full item: compact
        events.push(ev(3, 3)); // 16 after: full
        let items = write_all(&events, &mut back);
        assert_eq!(items[15][0], COMPACT);
        assert_eq!(items[16][0], FULL);
        assert_eq!(
            ListReader::read_after(&items, 0).collect::<Vec<_>>(),
            events
        );
        // A plain item first: the back stays unknown.
        let mut back = ListBack::default();
        write_all(&[plain(1)], &mut back);
        assert!(!back.is_known());
    }

    #[test]
    fn values_have_their_own_marks() {
        let with = |seq| Event {
            data: Some(Box::new(Data::from_bytes(vec![1, 2, 3]))),
            ..ev(5, seq)
        };
        let events = [with(1), with(2), ev(5, 3), with(4)];
        let items = write_all(&events, &mut ListBack::default());
        let marks: Vec<u8> = items.iter().map(|i| i[0]).collect();
        assert_eq!(marks, [FULL_DATA, COMPACT_DATA, COMPACT, COMPACT_DATA]);
        assert_eq!(
            ListReader::read_after(&items, 0).collect::<Vec<_>>(),
            events
        );
        assert_eq!(
            full_form_of_last(&items[..2]).unwrap(),
            events[1].to_list_item()
        );
    }

    #[test]
    fn a_compact_item_out_of_reach_has_no_id_but_is_delivered() {
        let items = write_all(&[ev(9, 1), ev(9, 2), ev(9, 3)], &mut ListBack::default());
        // Read without its full item (the list cut by hand): the body, the time, no id.
        let e = ListReader::default().read(&items[2]);
        assert_eq!((e.id, e.timestamp), (None, 1_700_000_000));
        assert_eq!(&e.body[..], b"0\nset\nk3");
        assert_eq!(Event::from_list_item(&items[1]).id, None);
        assert_eq!(full_form_of_last(&items[1..]), None);
        // Too far from its full item.
        let mut items = vec![items[0].clone()];
        items.extend((0..15).map(|i| plain(i).body.to_vec()));
        items.push(write_all(&[ev(9, 2), ev(9, 3)], &mut ListBack::default())[1].clone());
        let last = ListReader::read_after(&items, 0).last().unwrap();
        assert_eq!(last.id, None);
        assert_eq!(full_form_of_last(&items), None);
        // Truncated compact items are plain bodies.
        let e = ListReader::default().read(&[COMPACT_DATA, 5, 1, 9]);
        assert_eq!((e.id, &e.body[..]), (None, &[COMPACT_DATA, 5, 1, 9][..]));
    }

    #[test]
    fn old_items_still_read() {
        let old_full = ev(4, 10).to_list_item();
        assert_eq!(old_full[0], FULL);
        let items = vec![b"0\nset\nlegacy".to_vec(), old_full];
        let read: Vec<Event> = ListReader::read_after(&items, 0).collect();
        assert_eq!(read[0].id, None);
        assert_eq!(&read[0].body[..], b"0\nset\nlegacy");
        assert_eq!(read[1], ev(4, 10));
    }

    #[test]
    fn empty_values_are_no_values() {
        // Never written (the writer leaves empty values out), but read alike, full form too.
        let full = [&[FULL_DATA][..], &[4; 20], &[1, 2, 3], b"abc"].concat();
        let compact = [COMPACT_DATA, 2, 2, 3, b'x', b'y', b'z'];
        let window = [full.clone(), compact.to_vec()];
        let read: Vec<Event> = ListReader::read_after(&window, 0).collect();
        assert_eq!(
            (read[0].data.is_none(), read[1].data.is_none()),
            (true, true)
        );
        let front = full_form_of_last(&window).unwrap();
        assert_eq!(front[0], FULL_DATA);
        assert_eq!(Event::from_list_item(&front), read[1]);
    }

    #[test]
    fn trim_windows() {
        assert_eq!(trim_window_start(0), 0);
        assert_eq!(trim_window_start(15), 0);
        assert_eq!(trim_window_start(16), 1);
        assert_eq!(trim_window_start(100), 85);
        assert_eq!(full_form_of_last::<Vec<u8>>(&[]), None);
        assert_eq!(full_form_of_last(&[b"plain".to_vec()]), None);
    }

    #[test]
    fn legacy_items_are_plain_bodies() {
        let e = Event::from_list_item(b"0\nset\nkey");
        assert_eq!(
            (e.id, e.timestamp, e.body.as_slice()),
            (None, 0, &b"0\nset\nkey"[..])
        );
        assert_eq!(e.to_list_item(), b"0\nset\nkey");
        // A truncated envelope is still delivered, as bytes.
        assert_eq!(&Event::from_list_item(&[FULL, 1, 2]).body[..], [FULL, 1, 2]);
    }

    fn event() -> impl Strategy<Value = Event> {
        (
            prop_oneof![4 => Just(Some(1u8)), 2 => Just(Some(2u8)), 1 => Just(None)],
            any::<u64>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..24),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 1..8)),
        )
            .prop_map(|(run, seq, timestamp, body, data)| {
                let mut body = body;
                if run.is_none() {
                    // A plain body as the old module wrote it (a database digit first).
                    body.insert(0, b'0');
                }
                Event {
                    id: run.map(|r| EventId {
                        run_id: RunId([r; 20]),
                        seq,
                    }),
                    timestamp: if run.is_some() { timestamp } else { 0 },
                    body: body.into(),
                    list_copy: 0,
                    data: if run.is_some() {
                        data.map(|d| Box::new(Data::from_bytes(d)))
                    } else {
                        None
                    },
                }
            })
    }

    proptest! {
        #[test]
        fn envelope_round_trips(seq in any::<u64>(), ts in any::<u32>(), raw in any::<[u8; 20]>(),
                                body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let e = Event { id: Some(EventId { run_id: RunId(raw), seq }), timestamp: ts, body: body.into(), list_copy: 0, data: None };
            prop_assert_eq!(Event::from_list_item(&e.to_list_item()), e);
        }

        #[test]
        fn envelope_with_data_round_trips(seq in any::<u64>(), ts in any::<u32>(),
                                          body in proptest::collection::vec(any::<u8>(), 0..64),
                                          data in proptest::collection::vec(any::<u8>(), 1..64)) {
            let e = Event { id: Some(EventId { run_id: RunId([7; 20]), seq }), timestamp: ts, body: body.into(),
                            list_copy: 0, data: Some(Box::new(Data::from_bytes(data))) };
            prop_assert_eq!(Event::from_list_item(&e.to_list_item()), e);
        }

        #[test]
        fn any_item_decodes_without_panic(item in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Event::from_list_item(&item);
        }

        /// Written in one run of appends, read from any position with the window before it:
        /// every event back, ids included; the full form of any item is that of its event.
        #[test]
        fn any_position_reads_back_with_its_window(events in proptest::collection::vec(event(), 1..80),
                                                   forget in proptest::collection::vec(any::<bool>(), 80)) {
            let mut back = ListBack::default();
            let mut items = vec![];
            for (e, f) in events.iter().zip(&forget) {
                if *f && items.len() % 7 == 0 { back.forget(); }
                let mut out = vec![];
                back.write(e, &mut out);
                prop_assert!(out.len() <= len_max(e));
                items.push(out);
            }
            for p in 0..items.len() {
                let start = trim_window_start(p as u64) as usize;
                let read: Vec<Event> = ListReader::read_after(&items[start..], p - start).collect();
                prop_assert_eq!(&read[..], &events[p..]);
                let full = full_form_of_last(&items[start..=p]);
                if items[p][0] == COMPACT || items[p][0] == COMPACT_DATA {
                    let full = full.unwrap();
                    prop_assert_eq!(&full, &events[p].to_list_item());
                    prop_assert_eq!(ListReader::default().read(&full), events[p].clone());
                } else {
                    prop_assert!(full.is_none());
                }
            }
        }

        #[test]
        fn any_bytes_read_without_panic(items in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..40), 0..20)) {
            let events: Vec<Event> = ListReader::read_after(&items, items.len() / 2).collect();
            prop_assert_eq!(events.len(), items.len() - items.len() / 2);
            let _ = full_form_of_last(&items);
        }

        /// Any list, ours or cut or written by hand (full and compact items of two runs, plain
        /// bodies, garbage): read from any position with the REACH items before it, it reads
        /// as from the front, and a trim's full form reads alone as the item did in the list.
        #[test]
        fn any_list_reads_alike_from_any_position(items in proptest::collection::vec(prop_oneof![
            2 => (1u8..3, any::<u64>()).prop_map(|(r, q)| ev(r, q).to_list_item()),
            6 => (1u8..3, any::<u64>()).prop_map(|(r, q)| {
                let mut back = ListBack(Some(Anchor { run: RunId([r; 20]), since: 0 }));
                let mut out = vec![];
                back.write(&ev(r, q), &mut out);
                out
            }),
            1 => proptest::collection::vec(any::<u8>(), 0..12),
        ], 0..60)) {
            let all: Vec<Event> = ListReader::read_after(&items, 0).collect();
            for p in 0..items.len() {
                let start = trim_window_start(p as u64) as usize;
                let from_p: Vec<Event> = ListReader::read_after(&items[start..], p - start).collect();
                prop_assert_eq!(&from_p[..], &all[p..]);
                if let Some(full) = full_form_of_last(&items[start..=p]) {
                    prop_assert!(all[p].id.is_some());
                    prop_assert_eq!(&Event::from_list_item(&full), &all[p]);
                } else if items[p].first() == Some(&COMPACT) {
                    prop_assert!(all[p].id.is_none() || p == 0 || parse(&items[p]).is_none());
                }
            }
        }
    }
}
