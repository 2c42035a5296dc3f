//! Checks the testkit's cluster against real processes: six redis-servers running the
//! module form a 3-master, 3-replica cluster, writes are routed to their slot's owner, and a
//! manual failover is seen by the helpers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use testkit::{unique_routing_key, Cluster, Consumer, ModuleArgs, NODES, SLOT_RANGES};

const SECOND: Duration = Duration::from_secs(1);
const WAIT: Duration = Duration::from_secs(30);

/// A cluster whose nodes publish to a routing key of their own, and a consumer bound to it
/// (so that the events go to a queue and are thrown away with it).
fn cluster() -> (Cluster, Consumer) {
    let routing_key = unique_routing_key("cluster-selftest-");
    let consumer = Consumer::bind("amq.direct", &routing_key);
    let started = Instant::now();
    let cluster = Cluster::start(&ModuleArgs::with_routing_key(&routing_key));
    eprintln!("cluster ready in {:?}", started.elapsed());
    (cluster, consumer)
}

fn dbsize(node: &testkit::RedisServer) -> u64 {
    redis::cmd("DBSIZE")
        .query(&mut node.client())
        .unwrap_or_else(|e| panic!("DBSIZE on port {} failed: {e}", node.port()))
}

#[test]
fn slot_computation_matches_redis() {
    // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
    assert_eq!(Cluster::slot(b"123456789"), 12739);
    assert_eq!(Cluster::slot(b"foo"), 12182);
    assert_eq!(
        Cluster::slot(b"{user1000}.following"),
        Cluster::slot(b"user1000")
    );
    assert_eq!(Cluster::slot(b"foo{{bar}}zap"), Cluster::slot(b"{bar"));

    let keys = Cluster::keys_covering_all_masters(30);
    assert_eq!(keys.len(), 30);
    for (first, last) in SLOT_RANGES {
        let in_range = keys
            .iter()
            .filter(|k| (first..=last).contains(&Cluster::slot(k.as_bytes())))
            .count();
        assert_eq!(in_range, 10, "keys in slots {first}-{last}: {keys:?}");
    }
}

#[test]
fn cluster_forms_with_the_module_and_routes_writes() {
    let started = Instant::now();
    let (cluster, _consumer) = cluster();

    assert_eq!(cluster.nodes().len(), NODES);
    assert_eq!(cluster.masters().len(), 3, "{}", cluster.describe());
    assert_eq!(cluster.replicas().len(), 3, "{}", cluster.describe());
    assert!(cluster.wait_ok(SECOND), "{}", cluster.describe());
    for node in cluster.nodes() {
        let state = node.info_field("cluster", "cluster_enabled");
        assert_eq!(state.as_deref(), Some("1"), "port {}", node.port());
        let modules: Vec<HashMap<String, redis::Value>> = redis::cmd("MODULE")
            .arg("LIST")
            .query(&mut node.client())
            .expect("MODULE LIST");
        let names: Vec<String> = modules
            .iter()
            .filter_map(|m| redis::from_redis_value(m.get("name")?).ok())
            .collect();
        assert!(
            names.iter().any(|n| n == "key_evt_amqp"),
            "module not loaded on port {}: {names:?}",
            node.port()
        );
    }

    // The slots computed here are those of Redis.
    for key in [
        &b"foo"[..],
        b"{user}.x",
        b"foo{}{bar}",
        b"a{b}c{d}",
        b"\xff\n\x00",
        b"",
    ] {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut cluster.node(0).client())
            .expect("CLUSTER KEYSLOT");
        assert_eq!(Cluster::slot(key), slot, "key {key:?}");
    }

    // At load, each node checked the module's slots against the server's own function where
    // the server has one (RedisModule_ClusterKeySlot: Redis 7.4+, Valkey 8).
    let server = cluster.node(0).server_kind();
    let has_api = server.valkey || server.redis_at_least(7, 4);
    let said = if has_api {
        "slots: our CRC16 agrees with RedisModule_ClusterKeySlot on all 16385 list names"
    } else {
        "slots: not checked: the server has no RedisModule_ClusterKeySlot"
    };
    for node in cluster.nodes() {
        assert!(
            node.log().contains(said),
            "{server}, port {}: no '{said}'",
            node.port()
        );
    }

    // Every master has a replica, and the replica knows it.
    for master in cluster.masters() {
        let replica = cluster.replica_of(master);
        assert_ne!(replica.port(), master.port());
        assert_eq!(
            replica
                .info_field("replication", "master_port")
                .and_then(|p| p.parse::<u16>().ok()),
            Some(master.port())
        );
    }

    // Plain keys (no hash tag), routed to their slot's owner.
    let keys: Vec<String> = (0..100).map(|i| format!("key:{i}")).collect();
    for key in &keys {
        cluster.set(key);
        let owner = cluster.node_for_key(key.as_bytes());
        let value: Option<String> = redis::cmd("GET")
            .arg(key)
            .query(&mut owner.client())
            .expect("GET on the owner");
        assert_eq!(
            value.as_deref(),
            Some("v"),
            "{key} on port {}",
            owner.port()
        );
    }
    let sizes: Vec<u64> = cluster.masters().into_iter().map(dbsize).collect();
    assert_eq!(sizes.len(), 3);
    assert!(sizes.iter().all(|&n| n > 0), "keys per master: {sizes:?}");
    assert_eq!(sizes.iter().sum::<u64>(), 100, "keys per master: {sizes:?}");

    // The generic routed query follows the same routing.
    let value: Option<String> = cluster.query(b"key:7", redis::cmd("GET").arg("key:7"));
    assert_eq!(value.as_deref(), Some("v"));

    eprintln!("test done in {:?}", started.elapsed());
}

#[test]
fn manual_failover_promotes_the_replica() {
    let started = Instant::now();
    let (cluster, _consumer) = cluster();
    let key = "failover-key";
    cluster.set(key);

    let old_master = cluster.node_for_key(key.as_bytes());
    let replica = cluster.replica_of(old_master);
    let (old_index, new_index) = (cluster.index_of(old_master), cluster.index_of(replica));

    let t0 = Instant::now();
    cluster.failover(replica, WAIT);
    eprintln!("manual failover done in {:?}", t0.elapsed());

    let new_master = cluster.node(new_index);
    assert!(cluster.wait_master(new_master, SECOND));
    assert_eq!(
        cluster.index_of(cluster.node_for_key(key.as_bytes())),
        new_index
    );
    let masters: Vec<usize> = cluster
        .masters()
        .into_iter()
        .map(|n| cluster.index_of(n))
        .collect();
    assert!(masters.contains(&new_index) && !masters.contains(&old_index));
    assert_eq!(masters.len(), 3);
    // The old master follows the new one.
    assert_eq!(
        cluster.index_of(cluster.replica_of(new_master)),
        old_index,
        "{}",
        cluster.describe()
    );
    // The write made before the failover is on the new master, and routing still works.
    let value: Option<String> = cluster.query(key.as_bytes(), redis::cmd("GET").arg(key));
    assert_eq!(value.as_deref(), Some("v"), "{}", cluster.describe());
    cluster.set("after-failover");
    assert!(cluster.wait_ok(SECOND));

    eprintln!("test done in {:?}", started.elapsed());
}

#[test]
fn killed_master_is_replaced_and_rejoins_as_replica() {
    let started = Instant::now();
    let (mut cluster, _consumer) = cluster();
    let key = "kill-key";
    cluster.set(key);
    let old_index = cluster.index_of(cluster.node_for_key(key.as_bytes()));
    let new_index = cluster.index_of(cluster.replica_of(cluster.node(old_index)));
    // The SET reaches the replica before the master dies.
    let acked: i64 = cluster.query(key.as_bytes(), redis::cmd("WAIT").arg(1).arg(5000));
    assert_eq!(acked, 1, "{}", cluster.describe());

    let t0 = Instant::now();
    cluster.node_mut(old_index).kill9();
    assert!(cluster.live_nodes().count() == NODES - 1);
    assert!(
        cluster.wait_master(cluster.node(new_index), WAIT),
        "replica not promoted\n{}",
        cluster.describe()
    );
    assert!(cluster.wait_converged(WAIT), "{}", cluster.describe());
    eprintln!("failover after kill9 in {:?}", t0.elapsed());
    assert_eq!(
        cluster.index_of(cluster.node_for_key(key.as_bytes())),
        new_index
    );
    assert_eq!(cluster.masters().len(), 3);
    assert_eq!(cluster.replicas().len(), 2);
    assert!(cluster.try_replica_of(cluster.node(new_index)).is_none());
    let value: Option<String> = cluster.query(key.as_bytes(), redis::cmd("GET").arg(key));
    assert_eq!(value.as_deref(), Some("v"), "{}", cluster.describe());

    // Back from the dead, the old master learns it was replaced and follows its successor.
    let t0 = Instant::now();
    cluster.node_mut(old_index).restart();
    assert!(
        cluster.wait_converged(WAIT) && cluster.replicas().len() == 3,
        "{}",
        cluster.describe()
    );
    eprintln!("rejoined in {:?}", t0.elapsed());
    assert_eq!(
        cluster.index_of(cluster.replica_of(cluster.node(new_index))),
        old_index
    );
    assert!(cluster.wait_ok(SECOND));

    // Failing back: the routes remembered by `set` now point to a replica (MOVED) and hold a
    // connection to the killed process; both are renewed.
    cluster.failover(cluster.node(old_index), WAIT);
    cluster.set(key);
    let value: Option<String> = cluster.query(key.as_bytes(), redis::cmd("GET").arg(key));
    assert_eq!(value.as_deref(), Some("v"), "{}", cluster.describe());
    assert_eq!(
        cluster.index_of(cluster.node_for_key(key.as_bytes())),
        old_index
    );

    eprintln!("test done in {:?}", started.elapsed());
}
