//! The test kit of key-evt-amqp: a throw-away `redis-server` running the module
//! ([`RedisServer`]), an AMQP consumer on the real broker ([`Consumer`]), a fault-injecting
//! TCP proxy in front of the broker ([`FaultProxy`]), a TLS terminator with a CA of its own
//! ([`TlsTerminator`]) and a six-node Redis Cluster ([`Cluster`]).
//!
//! Everything talks to real services (RabbitMQ on 127.0.0.1:5672, `/usr/bin/redis-server`);
//! when one is missing the helpers panic and say to run `scripts/setup.sh`. Every wait has a
//! deadline so that a broken build fails a test instead of hanging it.
//!
//! Used by the integration tests (`tests/`) and the examples as a dev-dependency:
//! `testkit = { path = "testkit", package = "key-evt-amqp-testkit" }`.

// Private modules, everything re-exported below: a test doing `use testkit::*;` must not
// get a `redis` module shadowing the `redis` crate.
mod amqp;
mod cluster;
mod ledger;
mod node;
mod pings;
mod proxy;
mod redis;
mod tls;

use std::future::Future;
use std::time::{Duration, Instant};

pub use self::amqp::{
    amqp_channel, amqp_connect, amqp_publish, amqp_url, body, keys_of, nacking_queue, redact_url,
    unique_routing_key, Consumer, ConsumerOptions, Header, Message, OneAtATime,
};
pub use self::cluster::{Cluster, NODES, NODE_TIMEOUT_MS, SLOT_RANGES};
pub use self::ledger::{
    random_seed, wait_drained, Acked, Collector, Deliveries, Delivery, SplitMix64, Verdict, Writer,
    WriterOptions, Written,
};
pub use self::node::{set_keys, Node, NodeBuilder};
pub use self::pings::Pings;
pub use self::proxy::{FaultProxy, Mode};
pub use self::redis::{
    fallback_exists, fallback_len, module_path, redis_cli_binary, redis_server_binary, run,
    server_error_text, set, tail_lines, LoadFailure, ModuleArgs, RedisServer, ServerKind, FALLBACK,
};
pub use self::tls::{TestCa, TlsTerminator};

/// Polls `condition` every ~20 ms until it returns true or `timeout` has passed.
/// Returns whether the condition became true (it is checked one last time at the deadline).
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20).min(deadline - now));
    }
}

/// Runs `fut` to completion on the calling thread (async-global-executor, the runtime lapin
/// uses in this project), giving up after `timeout`. `None` means the deadline won.
pub fn block_on_timeout<T>(timeout: Duration, fut: impl Future<Output = T>) -> Option<T> {
    async_global_executor::block_on(futures_lite::future::or(async { Some(fut.await) }, async {
        async_io::Timer::after(timeout).await;
        None
    }))
}

/// A name that no other test (in this or another test binary running in parallel) uses:
/// `prefix` + pid + per-process counter + nanoseconds.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A listener on 127.0.0.1 at a random free port below the kernel's ephemeral range.
///
/// Ports from `bind(0)` and outgoing connections come from the ephemeral range, so a port
/// below it can only be taken by another test doing the same (which then retries), not by
/// the kernel handing it out: a redis-server can get it back after a restart. An explicitly
/// chosen port also stays with the socket when it stops listening (see `proxy`).
pub fn bind_local() -> std::net::TcpListener {
    use std::hash::{BuildHasher, Hasher};
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // Stay clear of well-known and commonly configured ports.
    const FROM: u16 = 10_000;
    assert!(
        low > FROM + 1000,
        "unexpected ephemeral port range starting at {low}"
    );
    for _ in 0..200 {
        // RandomState is randomly seeded: a cheap random number without a rand dependency.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let port = FROM + (hasher.finish() % u64::from(low - FROM)) as u16;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener;
        }
    }
    panic!("no free TCP port found on 127.0.0.1 between {FROM} and {low}");
}
