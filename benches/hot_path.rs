//! What the keyspace callback and the publisher do per event, in ns: mask matching, encoding
//! the body, the list envelope, and the outbox's push / take / confirm cycle. Timings need a
//! quiet machine; `scripts/profile.sh` counts the callback's instructions inside Redis instead
//! (docs/profiles/README.md).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;

use key_evt_amqp::core::event::{self, Event, EventId, RunId};
use key_evt_amqp::core::keymask::KeyMasks;
use key_evt_amqp::core::list_item::{ListBack, ListReader};
use key_evt_amqp::core::outbox::Outbox;

const KEY: &[u8] = b"user:1234567:session:abcdef0123"; // 31 bytes, a typical key

fn masks(c: &mut Criterion) {
    let mut g = c.benchmark_group("mask");
    g.throughput(Throughput::Elements(1));
    let sets: [(&str, Vec<&str>); 7] = [
        ("ALL", vec!["ALL"]),
        ("prefix ^user:.*$", vec!["^user:.*$"]),
        ("contains .*session.*", vec![".*session.*"]),
        ("no match ^nope$", vec!["^nope$"]),
        // scripts/bench.sh's "mask matching nothing": a substring search through the key.
        ("no match nomatch:*", vec!["nomatch:*"]),
        ("three masks", vec!["^order:", "log$", ".*session.*"]),
        // Neither plain bytes nor a fixed length: the shift-and automaton.
        ("automaton ^user:.*:session", vec!["^user:.*:session"]),
    ];
    for (name, m) in sets {
        let masks = KeyMasks::from_args(&m);
        g.bench_function(name, |b| b.iter(|| masks.matches(black_box(KEY))));
    }
    g.finish();
}

fn sample() -> Event {
    Event {
        id: Some(EventId {
            run_id: RunId([7; 20]),
            seq: 123_456_789,
        }),
        timestamp: 1_795_000_000,
        body: event::body(0, b"set", KEY),
        list_copy: 0,
        data: None,
    }
}

fn encoding(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("body", |b| {
        b.iter(|| event::body(black_box(0), black_box(b"set"), black_box(KEY)))
    });
    g.bench_function("body, db 12", |b| {
        b.iter(|| event::body(black_box(12), black_box(b"set"), black_box(KEY)))
    });
    let e = sample();
    let item = e.to_list_item();
    g.bench_function("list item (spill)", |b| {
        b.iter(|| black_box(&e).to_list_item())
    });
    g.bench_function("from list item (refill)", |b| {
        b.iter(|| Event::from_list_item(black_box(&item)))
    });
    // What a spill did per event before compact items: a full item into the spill's buffer.
    let mut out = Vec::with_capacity(4096);
    g.bench_function("full list item (spill, into the buffer)", |b| {
        b.iter(|| {
            if out.len() > 4000 {
                out.clear();
            }
            black_box(&e).write_list_item(&mut out);
        })
    });
    // What a spill does per event: the next item of the list's back, compact 15 times in 16.
    let mut back = ListBack::default();
    out.clear();
    g.bench_function("compact list item (spill)", |b| {
        b.iter(|| {
            if out.len() > 4000 {
                out.clear();
            }
            back.write(black_box(&e), &mut out);
        })
    });
    // What a refill does per event: 16 items (a full one, 15 compact ones) read in sequence.
    let mut back = ListBack::default();
    let items: Vec<Vec<u8>> = (0..16)
        .map(|_| {
            let mut out = vec![];
            back.write(&e, &mut out);
            out
        })
        .collect();
    g.throughput(Throughput::Elements(16));
    g.bench_function("compact list items (refill, per 16)", |b| {
        b.iter(|| ListReader::read_after(black_box(&items), 0).for_each(|e| drop(black_box(e))))
    });
    g.finish();
}

fn outbox(c: &mut Criterion) {
    const N: usize = 1000;
    let mut g = c.benchmark_group("outbox");
    g.throughput(Throughput::Elements(N as u64));
    // Per event: push (the callback), then taken in a batch and confirmed (the publisher).
    g.bench_function("push, take, confirm (per 1000)", |b| {
        b.iter_batched(
            || (Outbox::new(100_000, 2000), vec![sample(); N]),
            |(mut o, events)| {
                for e in events {
                    o.push(e);
                }
                let batch = o.take_batch(N);
                o.confirmed(&batch);
                batch
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, masks, encoding, outbox);
criterion_main!(benches);
