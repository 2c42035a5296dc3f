//! [`Node`]: the fixture most tests start from. A `redis-server` with the module loaded,
//! publishing under a routing key no other test uses, a connection to it, and a consumer bound
//! to that routing key (bound before the server starts, so that no event is missed).

use std::collections::BTreeSet;
use std::ops::Range;
use std::time::Duration;

use super::{
    keys_of, run, set, unique_routing_key, Consumer, FaultProxy, Message, Mode, ModuleArgs,
    RedisServer,
};

/// A started [`RedisServer`] with the module, a connection to it and a [`Consumer`] of what
/// it publishes. Made by [`Node::builder`] (or [`Node::start`] with every default).
///
/// The fields are public: tests reach the server (`n.server.restart()`), the connection and the
/// consumer directly; the methods are the jobs most tests repeat.
pub struct Node {
    pub server: RedisServer,
    /// A connection to `server`.
    pub redis: ::redis::Connection,
    /// Bound to the exchange and routing key the module publishes with.
    pub consumer: Consumer,
    /// The module's load arguments, routing key included: a second server (a replica) can
    /// be started with the same ones (`RedisServer::start(&n.args.to_vec())`).
    pub args: ModuleArgs,
    /// The routing key (unique to this node), also in `args.routing_key`.
    pub rk: String,
    /// See [`Node::proxy`].
    proxy: Option<FaultProxy>,
    wait: Duration,
    quiet: Duration,
}

/// How [`Node::builder`] starts a node: the module's load arguments (as [`ModuleArgs`], the
/// routing key chosen by the builder), extra config directives and an optional proxy.
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    prefix: String,
    args: ModuleArgs,
    config: Vec<(String, String)>,
    proxy: Option<Mode>,
    wait: Duration,
    quiet: Duration,
}

impl Node {
    /// How long [`Node::received`] waits for the messages it expects, by default.
    pub const WAIT: Duration = Duration::from_secs(20);
    /// How long nothing more may arrive after them, by default.
    pub const QUIET: Duration = Duration::from_millis(500);

    /// A builder for a node whose routing key starts with `prefix` (followed by what makes it
    /// unique); the load arguments start as [`ModuleArgs::default`].
    pub fn builder(prefix: &str) -> NodeBuilder {
        NodeBuilder {
            prefix: prefix.into(),
            args: ModuleArgs::default(),
            config: Vec::new(),
            proxy: None,
            wait: Node::WAIT,
            quiet: Node::QUIET,
        }
    }

    /// A node with every default: `Node::builder(prefix).start()`.
    #[track_caller]
    pub fn start(prefix: &str) -> Node {
        Node::builder(prefix).start()
    }

    /// The proxy between the module and the broker. Panics if the node was not built
    /// [`NodeBuilder::through_proxy`].
    pub fn proxy(&self) -> &FaultProxy {
        self.proxy
            .as_ref()
            .expect("this node was built without through_proxy: it has no proxy")
    }

    /// `SET <prefix><i> v` for i in `0..n`, one command at a time; returns the keys.
    pub fn set_keys(&mut self, prefix: &str, n: usize) -> Vec<String> {
        set_keys(&mut self.redis, prefix, 0..n)
    }

    /// Exactly `n` messages arrive within the node's wait, then nothing for its quiet period;
    /// their keys in order.
    pub fn received(&mut self, n: usize) -> Vec<String> {
        keys_of(&self.consumer.expect_exactly(n, self.wait, self.quiet))
    }

    /// SETs each key, then receives until nothing came for the node's quiet period; the keys
    /// whose events arrived.
    pub fn forwarded(&mut self, keys: &[&str]) -> Vec<String> {
        for k in keys {
            set(&mut self.redis, k);
        }
        keys_of(&self.consumer.drain_quiet(self.quiet))
    }

    /// Runs a command given as its words on the node's connection; a string reply, or the
    /// error as Redis sent it.
    pub fn cmd(&mut self, args: &[impl AsRef<[u8]>]) -> Result<String, String> {
        run(&mut self.redis, args)
    }

    /// Runs a command and asserts that it replies `OK`.
    pub fn ok(&mut self, args: &[impl AsRef<[u8]>]) {
        let shown: Vec<String> = args
            .iter()
            .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
            .collect();
        assert_eq!(self.cmd(args), Ok("OK".to_string()), "{shown:?}");
    }

    /// The module's `INFO key_evt_amqp` field `key_evt_amqp_<name>` (see
    /// [`RedisServer::module_info`]).
    pub fn info(&self, name: &str) -> String {
        self.server.module_info(name)
    }

    /// `LLEN` of the fallback list.
    pub fn fallback_len(&mut self) -> i64 {
        super::fallback_len(&mut self.redis)
    }

    /// Writes `per_db` keys of mixed types (string, list, set, zset, hash) in each of `dbs`
    /// databases, pipelined, while the module forwards nothing (`keymask_clean`); the masks
    /// are back to ALL after. Returns the keys as `(db, name)`: a dataset that only a
    /// snapshot tells a consumer about.
    pub fn populate(&mut self, dbs: i64, per_db: usize) -> BTreeSet<(i64, Vec<u8>)> {
        self.ok(&["key_evt_amqp.keymask_clean"]);
        let mut keys = BTreeSet::new();
        for db in 0..dbs {
            let mut p = ::redis::pipe();
            p.cmd("SELECT").arg(db).ignore();
            for i in 0..per_db {
                let key = format!("k:{db}:{i}");
                match i % 5 {
                    0 => p.cmd("SET").arg(&key).arg("v"),
                    1 => p.cmd("RPUSH").arg(&key).arg("a").arg("b"),
                    2 => p.cmd("SADD").arg(&key).arg("m"),
                    3 => p.cmd("ZADD").arg(&key).arg(1).arg("m"),
                    _ => p.cmd("HSET").arg(&key).arg("f").arg("v"),
                }
                .ignore();
                keys.insert((db, key.into_bytes()));
            }
            p.cmd("SELECT").arg(0).ignore();
            p.query::<()>(&mut self.redis)
                .unwrap_or_else(|e| panic!("populating database {db} failed: {e}"));
        }
        self.ok(&["key_evt_amqp.keymask_set", "ALL"]);
        keys
    }

    /// The messages of the consumer, all within the node's wait (see [`Consumer::expect`]).
    pub fn expect(&mut self, n: usize) -> Vec<Message> {
        self.consumer.expect(n, self.wait)
    }
}

impl NodeBuilder {
    /// All load arguments at once; the routing key is still the builder's.
    pub fn args(mut self, args: ModuleArgs) -> NodeBuilder {
        self.args = args;
        self
    }

    /// The EVENTS argument (`"$"` by default, `"A"` for every class).
    pub fn events(mut self, events: &str) -> NodeBuilder {
        self.args.events = events.into();
        self
    }

    /// The broker port of the positional arguments (5672 by default).
    pub fn port(mut self, port: u16) -> NodeBuilder {
        self.args.port = port;
        self
    }

    pub fn heartbeat(mut self, heartbeat: u32) -> NodeBuilder {
        self.args.heartbeat = heartbeat;
        self
    }

    /// The exchange the module publishes to, and the consumer is bound to (`amq.direct`).
    pub fn exchange(mut self, exchange: &str) -> NodeBuilder {
        self.args.exchange = exchange.into();
        self
    }

    /// 1 transient (the default), 2 persistent.
    pub fn delivery_mode(mut self, delivery_mode: u8) -> NodeBuilder {
        self.args.delivery_mode = delivery_mode;
        self
    }

    /// The cap on the fallback list: 0 none (the default), -1 no list.
    pub fn fallback_size(mut self, fallback_size: i64) -> NodeBuilder {
        self.args.fallback_size = fallback_size;
        self
    }

    /// The key masks (`["ALL"]` by default; none: nothing is forwarded).
    pub fn masks(mut self, masks: &[&str]) -> NodeBuilder {
        self.args.masks = masks.iter().map(|m| m.to_string()).collect();
        self
    }

    /// An extra config directive for the server, as in [`RedisServer::start_with`]
    /// (`("appendonly", "yes")`, `("key_evt_amqp.uri", …)`).
    pub fn config(mut self, name: &str, value: &str) -> NodeBuilder {
        self.config.push((name.into(), value.into()));
        self
    }

    /// Publishes through a [`FaultProxy`] in front of the broker, in `mode` from the start
    /// (the positional port becomes the proxy's); see [`Node::proxy`].
    pub fn through_proxy(mut self, mode: Mode) -> NodeBuilder {
        self.proxy = Some(mode);
        self
    }

    /// The wait and the quiet period of [`Node::received`] and [`Node::forwarded`]
    /// ([`Node::WAIT`] and [`Node::QUIET`] by default).
    pub fn timeouts(mut self, wait: Duration, quiet: Duration) -> NodeBuilder {
        self.wait = wait;
        self.quiet = quiet;
        self
    }

    /// Starts the proxy (if asked), binds the consumer, then starts the server and connects.
    #[track_caller]
    pub fn start(self) -> Node {
        let proxy = self.proxy.map(|mode| {
            let proxy = FaultProxy::start();
            if mode != Mode::Pass {
                proxy.set_mode(mode);
            }
            proxy
        });
        let rk = unique_routing_key(&self.prefix);
        let mut args = self.args;
        args.routing_key = rk.clone();
        if let Some(proxy) = &proxy {
            args.port = proxy.port();
        }
        let consumer = Consumer::bind(&args.exchange, &rk);
        let config: Vec<(&str, &str)> = self
            .config
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let server = RedisServer::start_with(&config, Some(&args.to_vec()));
        let redis = server.client();
        Node {
            server,
            redis,
            consumer,
            args,
            rk,
            proxy,
            wait: self.wait,
            quiet: self.quiet,
        }
    }
}

/// `SET <prefix><i> v` for each i in `range`, one command at a time; returns the keys.
pub fn set_keys(redis: &mut ::redis::Connection, prefix: &str, range: Range<usize>) -> Vec<String> {
    let keys: Vec<String> = range.map(|i| format!("{prefix}{i}")).collect();
    for k in &keys {
        set(redis, k);
    }
    keys
}
