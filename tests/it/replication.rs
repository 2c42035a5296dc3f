//! Plain master/replica setups: commands given to the master reach the replica through the
//! replication stream, so a promoted replica behaves like its old master; replayed from the
//! AOF at startup they are not applied (a restart starts from the load arguments).

use std::time::Duration;

use testkit::{set, unique_routing_key, wait_until, Consumer, Message, ModuleArgs, RedisServer};

const WAIT: Duration = Duration::from_secs(20);

fn command(server: &RedisServer, name: &str, args: &[&str]) {
    let () = redis::cmd(name)
        .arg(args)
        .query(&mut server.client())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
}

#[test]
fn a_promoted_replica_forwards_like_its_old_master() {
    let rk = unique_routing_key("replication-");
    let mut consumer = Consumer::bind("amq.direct", &rk);
    let args = ModuleArgs::with_routing_key(&rk).to_vec();
    let master = RedisServer::start(&args);
    let replica = RedisServer::start(&args);
    replica.replicate_from(&master, WAIT);

    command(&master, "key_evt_amqp.keymask_set", &["order:*"]);
    command(&master, "key_evt_amqp.fallback_storage_size_set", &["77"]);
    assert!(
        wait_until(Duration::from_secs(5), || replica.module_info("keymasks")
            == "\"order:*\""
            && replica.module_info("fallback_size") == "77"),
        "the replica applied the master's commands: keymasks '{}', fallback_size '{}'",
        replica.module_info("keymasks"),
        replica.module_info("fallback_size")
    );
    // The replica sees the master's writes but publishes none of them.
    let mut m = master.client();
    set(&mut m, "order:1");
    set(&mut m, "cart:1");
    let got = consumer.expect(1, WAIT);
    assert_eq!(got[0].key_lossy(), "order:1");
    consumer.expect_none(Duration::from_millis(500));
    assert_eq!(replica.module_info("events_published"), "0");

    drop(m);
    drop(master);
    replica.promote();
    let mut r = replica.client();
    set(&mut r, "order:2");
    set(&mut r, "cart:2");
    let got: Vec<Message> = consumer.expect(1, WAIT);
    assert_eq!(got[0].key_lossy(), "order:2", "the old master's mask holds");
    consumer.expect_none(Duration::from_millis(500));
}

#[test]
fn commands_are_not_replayed_from_the_aof() {
    let rk = unique_routing_key("replication-aof-");
    let mut consumer = Consumer::bind("amq.direct", &rk);
    let args = ModuleArgs::with_routing_key(&rk).to_vec();
    let mut server = RedisServer::start_with(
        &[("appendonly", "yes"), ("appendfsync", "always")],
        Some(&args),
    );
    command(&server, "key_evt_amqp.keymask_set", &["order:*"]);
    set(&mut server.client(), "written:before-restart");
    server.restart();

    assert_eq!(
        server.module_info("keymasks"),
        "ALL",
        "a restart starts from the load arguments"
    );
    set(&mut server.client(), "cart:1");
    let got = consumer.expect(1, WAIT);
    assert_eq!(got[0].key_lossy(), "cart:1");
    consumer.expect_none(Duration::from_millis(500));
}
