//! Redis Cluster: six nodes (3 masters, 3 replicas) with the module on each. Every event is
//! published once, by the master that owns its key; commands given to one node reach all;
//! failovers, a killed master and a moved slot lose nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use testkit::{
    unique_routing_key, wait_until, Cluster, Consumer, FaultProxy, Message, Mode, ModuleArgs,
    RedisServer,
};

const WAIT: Duration = Duration::from_secs(30);
const QUIET: Duration = Duration::from_millis(700);

/// A cluster whose masters have placed their fallback lists (they look at their slots every
/// second).
fn cluster_to(port: u16, rk: &str) -> Cluster {
    let cluster = Cluster::start(&ModuleArgs {
        port,
        heartbeat: 5,
        ..ModuleArgs::with_routing_key(rk)
    });
    assert!(
        wait_until(Duration::from_secs(5), || cluster
            .masters()
            .iter()
            .all(|m| !m.module_info("fallback_key").is_empty())),
        "every master names its fallback list in INFO"
    );
    cluster
}

/// The `run_id` part of a `message_id` (`<run_id>-<seq>`).
fn sender(m: &Message) -> String {
    m.identity().0
}

/// Receives until `expected` keys arrived (then a quiet period) and checks each came once.
fn expect_each_once(consumer: &mut Consumer, expected: &[String]) -> Vec<Message> {
    let got = consumer.expect(expected.len(), WAIT);
    let extra = consumer.drain_quiet(QUIET);
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for m in got.iter().chain(&extra) {
        *count.entry(m.key_lossy()).or_default() += 1;
    }
    let dups: Vec<_> = count.iter().filter(|(_, &n)| n > 1).collect();
    assert!(dups.is_empty(), "published more than once: {dups:?}");
    let want: BTreeSet<&String> = expected.iter().collect();
    let have: BTreeSet<&String> = count.keys().collect();
    assert_eq!(have, want, "exactly the keys written, each once");
    got
}

/// Of 600 keys that cover every master, those `master` owns.
fn keys_owned_by(cluster: &Cluster, master: &RedisServer) -> Vec<String> {
    Cluster::keys_covering_all_masters(600)
        .into_iter()
        .filter(|k| cluster.node_for_key(k.as_bytes()).port() == master.port())
        .collect()
}

/// Kills node `victim` with SIGKILL and waits until node `replica` has taken over; returns it.
fn kill_and_wait_takeover(cluster: &mut Cluster, victim: usize, replica: usize) -> &RedisServer {
    cluster.node_mut(victim).kill9();
    let replica = cluster.node(replica);
    assert!(
        cluster.wait_master(replica, WAIT),
        "the replica takes over:\n{}",
        cluster.describe()
    );
    replica
}

#[test]
fn every_event_is_published_once_by_the_master_that_owns_it() {
    let rk = unique_routing_key("cluster-");
    let mut consumer = Consumer::bind("amq.direct", &rk);
    let cluster = cluster_to(5672, &rk);
    let masters: BTreeSet<String> = cluster.masters().iter().map(|m| m.run_id()).collect();
    let replicas: BTreeSet<String> = cluster.replicas().iter().map(|r| r.run_id()).collect();
    assert_eq!((masters.len(), replicas.len()), (3, 3));

    let keys = Cluster::keys_covering_all_masters(900);
    for k in &keys {
        cluster.set(k);
    }
    let got = expect_each_once(&mut consumer, &keys);

    let senders: BTreeSet<String> = got.iter().map(sender).collect();
    assert_eq!(
        senders, masters,
        "the three masters publish, replicas stay silent"
    );
    for m in &got {
        let owner = cluster.node_for_key(m.key());
        assert_eq!(sender(m), owner.run_id(), "published by the key's owner");
    }
    for r in cluster.replicas() {
        assert_eq!(r.module_info("publishing"), "no");
        assert_eq!(r.module_info("events_published"), "0");
    }
}

#[test]
fn a_command_on_one_node_applies_on_every_node() {
    let rk = unique_routing_key("cluster-cmd-");
    let mut consumer = Consumer::bind("amq.direct", &rk);
    let cluster = cluster_to(5672, &rk);

    // Given to a replica, to show it is not a master-only path either.
    let replica = cluster.replicas()[0];
    let () = redis::cmd("key_evt_amqp.keymask_set")
        .arg("wanted:*")
        .query(&mut replica.client())
        .expect("keymask_set");
    assert!(
        wait_until(Duration::from_secs(5), || cluster
            .nodes()
            .iter()
            .all(|n| n.module_info("keymasks") == "\"wanted:*\"")),
        "every node has the new mask: {:?}",
        cluster
            .nodes()
            .iter()
            .map(|n| n.module_info("keymasks"))
            .collect::<Vec<_>>()
    );

    let wanted: Vec<String> = (0..90).map(|i| format!("wanted:{i}")).collect();
    for (i, key) in wanted.iter().enumerate() {
        cluster.set(&format!("other:{i}"));
        cluster.set(key);
    }
    let got = expect_each_once(&mut consumer, &wanted);
    let senders: BTreeSet<String> = got.iter().map(sender).collect();
    assert_eq!(
        senders.len(),
        3,
        "every master applied the mask and publishes"
    );

    // A bad command is refused where it is given and reaches no node.
    let master = cluster.masters()[0];
    let err = redis::cmd("key_evt_amqp.config_set")
        .arg("127.0.0.1")
        .arg("notaport")
        .query::<()>(&mut master.client())
        .expect_err("a bad port is refused");
    assert!(err.to_string().contains("PORT"), "{err}");
    std::thread::sleep(Duration::from_millis(500));
    for n in cluster.nodes() {
        assert!(
            n.module_info("broker").contains("127.0.0.1:5672"),
            "{}",
            n.module_info("broker")
        );
        assert_eq!(n.module_info("keymasks"), "\"wanted:*\"");
    }
}

#[test]
fn cluster_failover_keeps_events_flowing_exactly_once() {
    let rk = unique_routing_key("cluster-failover-");
    let mut consumer = Consumer::bind("amq.direct", &rk);
    let cluster = cluster_to(5672, &rk);
    let before = Cluster::keys_covering_all_masters(300);
    for k in &before {
        cluster.set(k);
    }
    expect_each_once(&mut consumer, &before);

    let old_master = cluster.masters()[0];
    let replica = cluster.replica_of(old_master);
    cluster.failover(replica, WAIT);
    assert!(
        wait_until(Duration::from_secs(5), || replica.module_info("publishing")
            == "yes"
            && old_master.module_info("publishing") == "no"),
        "roles follow the failover at once: new master publishing {}, old master {}",
        replica.module_info("publishing"),
        old_master.module_info("publishing")
    );

    let after: Vec<String> = (0..300).map(|i| format!("after:{i}")).collect();
    for k in &after {
        cluster.set(k);
    }
    let got = expect_each_once(&mut consumer, &after);
    let promoted = replica.run_id();
    assert!(
        got.iter().any(|m| sender(m) == promoted),
        "the promoted replica publishes for its slots"
    );
    assert!(
        got.iter().all(|m| sender(m) != old_master.run_id()),
        "the demoted master is silent"
    );
}

#[test]
fn a_killed_masters_backlog_is_drained_by_its_promoted_replica() {
    let proxy = FaultProxy::start();
    proxy.set_mode(Mode::Refuse);
    let rk = unique_routing_key("cluster-kill-");
    let mut consumer = Consumer::bind("amq.direct", &rk);
    let mut cluster = cluster_to(proxy.port(), &rk);

    let victim = cluster.masters()[0];
    let victim_index = cluster.index_of(victim);
    let victim_id = victim.run_id();
    let replica_index = cluster.index_of(cluster.replica_of(victim));
    let keys = keys_owned_by(&cluster, victim);
    for k in &keys {
        cluster.set(k);
    }

    // The list lives in a slot the node serves, and reaches the replica.
    let list = victim.module_info("fallback_key");
    assert!(list.starts_with(testkit::FALLBACK), "{list}");
    assert_eq!(
        cluster.node_for_key(list.as_bytes()).port(),
        victim.port(),
        "the list {list} is in one of the node's own slots"
    );
    let replica = cluster.node(replica_index);
    assert!(
        wait_until(WAIT, || {
            // READONLY: a replica answers reads of its master's slots only when asked so.
            redis::pipe()
                .cmd("READONLY")
                .ignore()
                .cmd("LLEN")
                .arg(&list)
                .query::<(usize,)>(&mut replica.client())
                .map_or(0, |(n,)| n)
                == keys.len()
        }),
        "the {} events reach the list on the replica (master has {})",
        keys.len(),
        victim.module_info("fallback_length")
    );
    consumer.expect_none(QUIET);
    let check = std::process::Command::new(testkit::redis_cli_binary())
        .args([
            "--cluster",
            "check",
            &format!("127.0.0.1:{}", victim.port()),
        ])
        .output()
        .expect("redis-cli runs");
    let check = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.contains("[OK] All 16384 slots covered") && !check.contains("[WARNING]"),
        "redis-cli --cluster check stays clean with lists waiting:\n{check}"
    );

    let replica = kill_and_wait_takeover(&mut cluster, victim_index, replica_index);
    proxy.set_mode(Mode::Pass);
    let got = expect_each_once(&mut consumer, &keys);
    assert!(
        got.iter().all(|m| sender(m) == victim_id),
        "the events keep their identity (the dead master's run id)"
    );
    assert!(wait_until(Duration::from_secs(5), || replica
        .module_info("fallback_length")
        == "0"));
}

#[test]
fn a_list_in_a_moved_slot_still_drains() {
    let proxy = FaultProxy::start();
    proxy.set_mode(Mode::Refuse);
    let rk = unique_routing_key("cluster-move-");
    let mut consumer = Consumer::bind("amq.direct", &rk);
    let cluster = cluster_to(proxy.port(), &rk);

    // The slot goes to a master whose own list sits in a lower slot: that one keeps its list
    // and moves the arriving one into it (a master whose lowest slot this became would simply
    // take the arriving list as its own).
    let mut masters = cluster.masters();
    masters.sort_by_key(|m| Cluster::slot(m.module_info("fallback_key").as_bytes()));
    let (to, from) = (masters[0], masters[2]);
    let keys: Vec<String> = Cluster::keys_covering_all_masters(300)
        .into_iter()
        .filter(|k| cluster.node_for_key(k.as_bytes()).port() == from.port())
        .collect();
    for k in &keys {
        cluster.set(k);
    }
    assert!(
        wait_until(WAIT, || from.module_info("fallback_length")
            == keys.len().to_string()),
        "events wait in the list: {}",
        from.module_info("fallback_length")
    );
    let list = from.module_info("fallback_key");

    // Move the list's slot to another master, as `redis-cli --cluster reshard` does.
    let slot = Cluster::slot(list.as_bytes());
    let id = |n: &RedisServer| -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut n.client())
            .unwrap()
    };
    let (from_id, to_id) = (id(from), id(to));
    let setslot = |n: &RedisServer, how: &str, node: &str| {
        let () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(how)
            .arg(node)
            .query(&mut n.client())
            .unwrap_or_else(|e| panic!("SETSLOT {how} on {}: {e}", n.port()));
    };
    setslot(to, "IMPORTING", &from_id);
    setslot(from, "MIGRATING", &to_id);
    let () = redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(to.port())
        .arg("")
        .arg(0)
        .arg(5000)
        .arg("KEYS")
        .arg(&list)
        .query(&mut from.client())
        .expect("MIGRATE the list");
    for n in [to, from] {
        setslot(n, "NODE", &to_id);
    }
    assert!(cluster.wait_converged(WAIT), "{}", cluster.describe());

    // `from` now keeps its list elsewhere; `to` found the old one in its new slot.
    assert!(
        wait_until(WAIT, || from.module_info("fallback_key") != list),
        "the node moved its list out of the slot it gave away"
    );
    assert!(
        wait_until(WAIT, || to.module_info("events_adopted")
            == keys.len().to_string()),
        "the node that took the slot takes the list over: adopted {}",
        to.module_info("events_adopted")
    );
    let later: Vec<String> = (0..50).map(|i| format!("later:{i}")).collect();
    for k in &later {
        cluster.set(k);
    }
    proxy.set_mode(Mode::Pass);
    let all: Vec<String> = keys.iter().chain(&later).cloned().collect();
    expect_each_once(&mut consumer, &all);
    for n in cluster.masters() {
        assert!(
            wait_until(Duration::from_secs(5), || n.module_info("fallback_length")
                == "0"),
            "lists drained"
        );
    }
}

/// Under `durability journal` a master's events are in its list, and on its replica, with the
/// writes themselves: a master killed right after its writes (before any memory queue could
/// spill: the broker is refused and the list would only be written after a second) loses none,
/// and its promoted replica delivers them. On a server without post-notification jobs (Redis
/// 7.0) the option is refused instead, on every node, and nothing changes.
#[test]
fn a_journaling_master_killed_at_once_loses_nothing() {
    let proxy = FaultProxy::start();
    proxy.set_mode(Mode::Refuse);
    let rk = unique_routing_key("cluster-journal-");
    let mut consumer = Consumer::bind("amq.direct", &rk);
    let mut cluster = cluster_to(proxy.port(), &rk);
    let kind = cluster.masters()[0].server_kind();
    let supported = kind.redis_at_least(7, 2) || kind.valkey_at_least(8, 0);
    for node in cluster.nodes() {
        let set = node.config_set("key_evt_amqp.durability", "journal");
        if supported {
            set.unwrap_or_else(|e| panic!("{kind}: journal refused: {e}"));
        } else {
            let e = set.expect_err("Redis 7.0 has no post-notification jobs");
            assert!(e.contains("durability") && e.contains("7.2"), "{e}");
            assert_eq!(
                node.config_get("key_evt_amqp.durability")["key_evt_amqp.durability"],
                "memory"
            );
        }
    }
    if !supported {
        eprintln!("{kind}: durability journal refused on every node, as it must be");
        return;
    }
    assert!(
        wait_until(WAIT, || cluster
            .masters()
            .iter()
            .all(|m| m.module_info("durability") == "journal")),
        "every master journals"
    );
    let victim = cluster.masters()[0];
    let victim_index = cluster.index_of(victim);
    let victim_id = victim.run_id();
    let replica_index = cluster.index_of(cluster.replica_of(victim));
    let keys = keys_owned_by(&cluster, victim);
    let mut client = victim.client();
    for k in &keys {
        let _: () = redis::cmd("SET")
            .arg(k)
            .arg("v")
            .query(&mut client)
            .unwrap();
    }
    let replicated: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut client)
        .unwrap();
    assert_eq!(replicated, 1, "the replica acknowledged the writes");
    assert_eq!(
        victim.module_info_u64("events_journaled"),
        keys.len() as u64,
        "every event journaled with its write"
    );
    assert_eq!(
        victim.module_info_u64("events_spilled"),
        0,
        "none waited in memory first"
    );

    kill_and_wait_takeover(&mut cluster, victim_index, replica_index);
    proxy.set_mode(Mode::Pass);
    let got = expect_each_once(&mut consumer, &keys);
    assert!(
        got.iter().all(|m| sender(m) == victim_id),
        "the events keep the dead master's identity"
    );
}
