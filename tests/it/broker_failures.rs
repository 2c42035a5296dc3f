//! Failures on the broker side: unroutable events, a missing exchange, negative
//! acknowledgements. None is fatal, none loses events, none is retried forever.

use std::time::Duration;

use testkit::{
    run, set, unique_routing_key, wait_until, Consumer, Message, ModuleArgs, RedisServer,
};

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn unroutable_events_are_counted_and_logged_not_retried() {
    let rk = unique_routing_key("nobody-listens-");
    let server = RedisServer::start(&ModuleArgs::with_routing_key(&rk).to_vec());
    let mut r = server.client();
    for i in 0..20 {
        set(&mut r, &format!("k{i}"));
    }
    assert!(
        wait_until(WAIT, || server.module_info("events_returned") == "20"),
        "returned: {}",
        server.module_info("events_returned")
    );
    assert_eq!(server.module_info("events_confirmed"), "20");
    assert_eq!(
        server.module_info("connections"),
        "1",
        "an unroutable event is not a connection failure"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.module_info("events_published"), "20", "not retried");
    let log = server.log();
    assert_eq!(
        log.matches("unroutable").count(),
        1,
        "logged once, not per event:\n{log}"
    );
    assert!(log.contains(&rk));
}

#[test]
fn a_missing_exchange_is_logged_once_and_keeps_the_events() {
    let rk = unique_routing_key("noexch-");
    let missing = unique_routing_key("missing-exchange-");
    let mut consumer = Consumer::bind("amq.direct", &rk);
    let args = ModuleArgs {
        exchange: missing.clone(),
        ..ModuleArgs::with_routing_key(&rk)
    };
    let server = RedisServer::start(&args.to_vec());
    let mut r = server.client();
    let expected: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    for k in &expected {
        set(&mut r, k);
    }
    assert!(
        wait_until(WAIT, || server.module_info("fallback_length") == "10"),
        "events wait in the list"
    );
    assert!(
        wait_until(WAIT, || server.module_info_u64("connections") >= 2),
        "keeps retrying"
    );
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&missing)).collect();
    assert!(
        lines.iter().any(|l| l.contains("NOT_FOUND")),
        "the log names the exchange and the reason:\n{log}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains("NOT_FOUND")).count(),
        1,
        "logged once:\n{log}"
    );
    assert!(server.module_info("last_error").contains(&missing));

    // Only HOST … ROUTING_KEY: the arguments left out keep their values.
    let config_set = ModuleArgs::with_routing_key(&rk).short_command("key_evt_amqp.config_set", 7);
    run::<()>(&mut r, &config_set).unwrap();
    let got: Vec<String> = consumer
        .expect(10, WAIT)
        .iter()
        .map(Message::key_lossy)
        .collect();
    assert_eq!(got, expected);
    consumer.expect_none(Duration::from_millis(500));
}

#[test]
fn nacked_events_are_retried_in_order() {
    // A queue that holds one message and refuses the rest: RabbitMQ nacks them.
    let rk = unique_routing_key("nack-");
    let (conn, channel, queue) = testkit::nacking_queue(&rk);

    let server = RedisServer::start(&ModuleArgs::with_routing_key(&rk).to_vec());
    let mut r = server.client();
    let expected: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
    for k in &expected {
        set(&mut r, k);
    }
    assert!(
        wait_until(WAIT, || server.module_info("events_nacked") != "0"),
        "the broker refused some"
    );

    // Take messages one at a time; each frees room for the next retry.
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while got.len() < 5 && std::time::Instant::now() < deadline {
        let m = testkit::block_on_timeout(Duration::from_secs(5), async {
            use lapin::options::BasicGetOptions;
            channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
        })
        .flatten();
        match m {
            Some(m) => got.push(
                String::from_utf8_lossy(&m.delivery.data)
                    .rsplit('\n')
                    .next()
                    .unwrap()
                    .to_string(),
            ),
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let mut seen = std::collections::HashSet::new();
    got.retain(|k| seen.insert(k.clone()));
    assert_eq!(got, expected, "every event, first occurrences in order");
    drop(conn);
}
