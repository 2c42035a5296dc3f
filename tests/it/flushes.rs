//! FLUSHALL, FLUSHDB, SWAPDB and maxmemory against the fallback list (issue 15): flush events
//! in order with the key events around them; a backlog that survives each flush on the master,
//! on its promoted replica and through the AOF; a list evicted, deleted by hand, or pushing
//! Redis to its maxmemory. INFO's `fallback_length` is checked against `LLEN` after each step.

use std::time::Duration;

use testkit::{
    fallback_len, run, tail_lines, wait_until, Message, Mode, Node, RedisServer, FALLBACK,
};

const WAIT: Duration = Duration::from_secs(30);
const QUIET: Duration = Duration::from_millis(1000);
const BACKLOG: usize = 10_000;

fn cmd(server: &RedisServer, args: &[&str]) -> String {
    run::<redis::Value>(&mut server.client(), args)
        .map(|v| format!("{v:?}"))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// `SET <prefix><i> v` for i in `range`, pipelined 1,000 at a time.
fn set_many(server: &RedisServer, prefix: &str, range: std::ops::Range<usize>) {
    let mut c = server.client();
    let keys: Vec<usize> = range.collect();
    for chunk in keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("SET")
                .arg(format!("{prefix}{i}"))
                .arg("v")
                .ignore();
        }
        let () = pipe.query(&mut c).unwrap();
    }
}

/// Waits until LLEN of the list is `n` and INFO's `fallback_length` says the same.
fn wait_backlog(server: &RedisServer, n: usize, what: &str) {
    let ok = wait_until(WAIT, || {
        fallback_len(&mut server.client()) == n as i64
            && server.module_info_u64("fallback_length") == n as u64
    });
    assert!(
        ok,
        "{what}: LLEN {} and fallback_length {}, expected {n}\nINFO:\n{}\nlog:\n{}",
        fallback_len(&mut server.client()),
        server.module_info("fallback_length"),
        server.module_info_text(),
        tail_lines(&server.log(), 20)
    );
}

fn bodies(got: &[Message]) -> Vec<Vec<u8>> {
    got.iter().map(|m| m.body.clone()).collect()
}

#[test]
fn flush_events_arrive_in_order_with_the_key_events() {
    let mut n = Node::builder("flushes-events-").events("g$").start();
    n.server
        .config_set("key_evt_amqp.flush_events", "yes")
        .unwrap();
    assert_eq!(
        n.server.config_get("key_evt_amqp.flush_events")["key_evt_amqp.flush_events"],
        "yes"
    );
    for args in [
        &["SET", "a", "1"][..],
        &["SET", "a2", "1"],
        &["FLUSHALL"],
        &["SET", "b", "1"],
        &["SWAPDB", "0", "3"],
        &["SET", "c", "1"],
        &["FLUSHDB"],
        &["SELECT", "2"],
        &["SET", "d", "1"],
        &["FLUSHDB"],
    ] {
        let _: redis::Value = run(&mut n.redis, args).unwrap();
    }
    let got = n.consumer.expect_exactly(9, WAIT, QUIET);
    let want: Vec<&[u8]> = vec![
        b"0\nset\na",
        b"0\nset\na2",
        b"-1\nflushall\n",
        b"0\nset\nb",
        b"0\nswapdb\n3",
        b"0\nset\nc",
        b"0\nflushdb\n",
        b"2\nset\nd",
        b"2\nflushdb\n",
    ];
    assert_eq!(
        bodies(&got),
        want.iter().map(|b| b.to_vec()).collect::<Vec<_>>(),
        "each once, in order; the keys a flush deletes raise no events"
    );
    // Off again: flushes are not forwarded.
    n.server
        .config_set("key_evt_amqp.flush_events", "no")
        .unwrap();
    let _: redis::Value = run(&mut n.redis, &["FLUSHALL"]).unwrap();
    let _: redis::Value = run(&mut n.redis, &["SET", "e", "1"]).unwrap();
    let got = n.consumer.expect_exactly(1, WAIT, QUIET);
    assert_eq!(bodies(&got), vec![b"2\nset\ne".to_vec()]);
}

#[test]
fn flush_events_are_off_by_default() {
    let mut n = Node::start("flushes-default-");
    assert_eq!(
        n.server.config_get("key_evt_amqp.flush_events")["key_evt_amqp.flush_events"],
        "no"
    );
    let _: redis::Value = run(&mut n.redis, &["SET", "a", "1"]).unwrap();
    let _: redis::Value = run(&mut n.redis, &["FLUSHALL"]).unwrap();
    let _: redis::Value = run(&mut n.redis, &["SET", "b", "1"]).unwrap();
    assert_eq!(n.received(2), vec!["a", "b"]);
}

/// 10,000 events wait in the list (the broker refused); FLUSHALL, FLUSHDB and SWAPDB 0 1 each
/// keep them all, on the master, on its replica (checked after a promotion) and through the
/// AOF; once the broker is back they arrive once, in order, before the flushes' own events.
#[test]
fn a_backlog_survives_flushall_flushdb_and_swapdb() {
    let mut n = Node::builder("flushes-backlog-")
        .through_proxy(Mode::Refuse)
        .heartbeat(5)
        .config("appendonly", "yes")
        .config("appendfsync", "always")
        .config("repl-diskless-sync-delay", "0")
        .timeouts(WAIT, QUIET)
        .start();
    let replica = RedisServer::start_with(&[("appendonly", "yes")], Some(&n.args.to_vec()));
    replica.replicate_from(&n.server, WAIT);
    n.server
        .config_set("key_evt_amqp.flush_events", "yes")
        .unwrap();

    set_many(&n.server, "key:", 0..BACKLOG);
    wait_backlog(&n.server, BACKLOG, "before the flushes");
    // Each flush's own event joins the list behind the backlog.
    for (i, args) in [&["FLUSHALL"][..], &["FLUSHDB"], &["SWAPDB", "0", "1"]]
        .iter()
        .enumerate()
    {
        cmd(&n.server, args);
        let what = format!("after {args:?}");
        wait_backlog(&n.server, BACKLOG + i + 1, &what);
        assert!(
            wait_until(WAIT, || fallback_len(&mut replica.client())
                == (BACKLOG + i + 1) as i64),
            "{what}: the replica's list holds {}",
            fallback_len(&mut replica.client())
        );
    }
    let mut db1 = n.server.client();
    let _: () = redis::cmd("SELECT").arg(1).query(&mut db1).unwrap();
    let stranded: i64 = redis::cmd("EXISTS").arg(FALLBACK).query(&mut db1).unwrap();
    assert_eq!(stranded, 0, "no copy left in db 1");
    assert!(n.server.log().contains("kept 10000 events"), "logged");
    assert_eq!(n.server.module_info_u64("events_lost_external"), 0);
    assert_eq!(n.server.module_info_u64("events_dropped"), 0);

    // The replica, promoted, has the whole backlog and counts it.
    n.server.kill9();
    replica.promote();
    wait_backlog(&replica, BACKLOG + 3, "on the promoted replica");
    drop(replica);

    // The master's AOF replays the flushes and the module's writes after them.
    n.server.restart();
    wait_backlog(&n.server, BACKLOG + 3, "after an AOF restart");

    n.proxy().heal();
    let got = n
        .consumer
        .expect_exactly(BACKLOG + 3, Duration::from_secs(60), QUIET);
    let mut want: Vec<Vec<u8>> = (0..BACKLOG)
        .map(|i| format!("0\nset\nkey:{i}").into_bytes())
        .collect();
    want.push(b"-1\nflushall\n".to_vec());
    want.push(b"0\nflushdb\n".to_vec());
    want.push(b"0\nswapdb\n1".to_vec());
    assert!(bodies(&got) == want, "every event once, in order");
    let seqs: Vec<u64> = got.iter().map(|m| m.identity().1).collect();
    assert_eq!(seqs, (1..=(BACKLOG as u64 + 3)).collect::<Vec<_>>());
    wait_backlog(&n.server, 0, "drained");
}

/// With `durability journal`, the events of a MULTI holding FLUSHALL and writes (the flush's
/// own, and the writes') reach the emptied list at EXEC, before the module puts the backlog
/// back: the backlog goes in front of them, and all arrive once, in order. On a server
/// without the journal (Redis 7.0), `journal` is refused.
#[test]
fn a_journaled_backlog_goes_back_in_front_of_what_the_flush_let_in() {
    let mut n = Node::builder("flushes-journal-")
        .through_proxy(Mode::Refuse)
        .config("key_evt_amqp.flush_events", "yes")
        .timeouts(WAIT, QUIET)
        .start();
    if !n.server.server_kind().has_post_notification_jobs() {
        let refused = n.server.config_set("key_evt_amqp.durability", "journal");
        assert!(
            refused.is_err_and(|e| e.contains("7.2")),
            "refused, naming 7.2"
        );
        return;
    }
    n.server
        .config_set("key_evt_amqp.durability", "journal")
        .unwrap();
    assert!(wait_until(WAIT, || n.info("durability") == "journal"));
    set_many(&n.server, "key:", 0..BACKLOG);
    wait_backlog(&n.server, BACKLOG, "journaled");
    let mut pipe = redis::pipe();
    pipe.atomic().cmd("FLUSHALL").ignore();
    for i in 0..3 {
        pipe.cmd("SET").arg(format!("after:{i}")).arg("v").ignore();
    }
    let () = pipe.query(&mut n.redis).unwrap();
    wait_backlog(&n.server, BACKLOG + 4, "after FLUSHALL and 3 SETs");
    assert!(n.server.log().contains("kept 10000 events"), "logged");
    assert_eq!(n.server.module_info_u64("events_lost_external"), 0);

    n.proxy().heal();
    let got = n
        .consumer
        .expect_exactly(BACKLOG + 4, Duration::from_secs(60), QUIET);
    let mut want: Vec<Vec<u8>> = (0..BACKLOG)
        .map(|i| format!("0\nset\nkey:{i}").into_bytes())
        .collect();
    want.push(b"-1\nflushall\n".to_vec());
    want.extend((0..3).map(|i| format!("0\nset\nafter:{i}").into_bytes()));
    assert!(bodies(&got) == want, "every event once, in order");
    wait_backlog(&n.server, 0, "drained");
}

/// A list deleted or trimmed by hand: noticed, counted, logged, and the count follows LLEN.
#[test]
fn a_list_changed_by_hand_is_counted() {
    let n = Node::builder("flushes-byhand-")
        .through_proxy(Mode::Refuse)
        .timeouts(WAIT, QUIET)
        .start();
    set_many(&n.server, "key:", 0..100);
    wait_backlog(&n.server, 100, "before");
    cmd(&n.server, &["LTRIM", FALLBACK, "-40", "-1"]);
    wait_backlog(&n.server, 40, "after LTRIM");
    assert_eq!(n.server.module_info_u64("events_lost_external"), 60);
    cmd(&n.server, &["RENAME", FALLBACK, "elsewhere"]);
    wait_backlog(&n.server, 0, "after RENAME");
    assert_eq!(n.server.module_info_u64("events_lost_external"), 100);
    assert_eq!(
        n.server
            .log()
            .matches("deleted, renamed or trimmed by someone else")
            .count(),
        2,
        "logged once each"
    );
    // New events go to a new list as before.
    set_many(&n.server, "more:", 0..10);
    wait_backlog(&n.server, 10, "new events");
}

/// Under allkeys-lru the list is a key like any other: its eviction shows in INFO and the log,
/// and the count follows LLEN.
#[test]
fn an_evicted_list_is_counted_and_logged() {
    let n = Node::builder("flushes-evicted-")
        .through_proxy(Mode::Refuse)
        .masks(&["^key:"])
        .timeouts(WAIT, QUIET)
        .start();
    // 2,000 events on one key: the list and `key:0` are the only keys.
    let mut c = n.server.client();
    for _ in 0..2 {
        let mut pipe = redis::pipe();
        for _ in 0..1000 {
            pipe.cmd("SET").arg("key:0").arg("v").ignore();
        }
        let () = pipe.query(&mut c).unwrap();
    }
    wait_backlog(&n.server, 2000, "before");
    limit_memory(&n.server, 2_000_000, "allkeys-lru");
    // Fresh keys the masks ignore fill memory; Redis evicts the idlest keys.
    let big = "x".repeat(10_000);
    let evicted = wait_until(WAIT, || {
        let mut pipe = redis::pipe();
        for _ in 0..50 {
            pipe.cmd("SET")
                .arg(testkit::unique_name("big:"))
                .arg(&big)
                .ignore();
        }
        let _: redis::RedisResult<()> = pipe.query(&mut c);
        n.server.module_info_u64("events_lost_evicted") > 0
    });
    assert!(evicted, "INFO:\n{}", n.server.module_info_text());
    assert_eq!(n.server.module_info_u64("events_lost_evicted"), 2000);
    assert!(n.server.log().contains("Redis evicted the fallback list"));
    wait_backlog(&n.server, 0, "after the eviction");
}

/// Sets `maxmemory` to `headroom` bytes above what the server uses now, with `policy`.
fn limit_memory(server: &RedisServer, headroom: u64, policy: &str) {
    let used: u64 = server
        .info_field("memory", "used_memory")
        .unwrap()
        .parse()
        .unwrap();
    server
        .config_set("maxmemory", &(used + headroom).to_string())
        .unwrap();
    server.config_set("maxmemory-policy", policy).unwrap();
}

/// With noeviction and a small maxmemory, a long outage never makes a user's write fail: the
/// module stops growing below maxmemory and drops the oldest events, counted.
#[test]
fn near_maxmemory_the_backlog_gives_way_to_users_writes() {
    let n = Node::builder("flushes-maxmemory-")
        .through_proxy(Mode::Refuse)
        .timeouts(WAIT, QUIET)
        .start();
    limit_memory(&n.server, 4_000_000, "noeviction");
    // 200,000 writes to 100 keys: the events alone would need about 14 MB in the list.
    let mut c = n.server.client();
    for round in 0..200 {
        let mut pipe = redis::pipe();
        for i in 0..1000 {
            pipe.cmd("SET")
                .arg(format!("key:{}", i % 100))
                .arg(round)
                .ignore();
        }
        // A refused write (OOM) fails the whole pipeline's reply.
        let written: redis::RedisResult<()> = pipe.query(&mut c);
        if let Err(e) = written {
            panic!(
                "round {round}: a user's write failed: {e}\nINFO:\n{}\nused_memory {:?} of {:?}",
                n.server.module_info_text(),
                n.server.info_field("memory", "used_memory"),
                n.server.info_field("memory", "maxmemory")
            );
        }
    }
    assert!(
        wait_until(WAIT, || n.server.module_info_u64("events_dropped_memory")
            > 0),
        "drops near maxmemory are counted: INFO:\n{}",
        n.server.module_info_text()
    );
    assert!(n.server.log().contains("Redis is near maxmemory"));
    // Once the writes stop, what the module kept is accounted for exactly, and INFO's
    // fallback_length is LLEN.
    let settled = wait_until(WAIT, || {
        let len = fallback_len(&mut n.server.client()) as u64;
        len == n.server.module_info_u64("fallback_length")
            && len
                + n.server.module_info_u64("queue_length")
                + n.server.module_info_u64("events_dropped")
                == 200_000
    });
    assert!(
        settled,
        "every event kept or counted as dropped: LLEN {}, INFO:\n{}",
        fallback_len(&mut n.server.client()),
        n.server.module_info_text()
    );
}

/// The option given in the server's configuration (as redis.conf would) applies from the load.
#[test]
fn flush_events_from_the_server_config() {
    let mut n = Node::builder("flushes-conf-")
        .config("key_evt_amqp.flush_events", "yes")
        .start();
    assert_eq!(
        n.server.config_get("key_evt_amqp.flush_events")["key_evt_amqp.flush_events"],
        "yes"
    );
    let _: redis::Value = run(&mut n.redis, &["FLUSHDB"]).unwrap();
    let got = n.consumer.expect_exactly(1, WAIT, QUIET);
    assert_eq!(bodies(&got), vec![b"0\nflushdb\n".to_vec()]);
}
