//! A throw-away Redis Cluster of six [`RedisServer`]s (3 masters, 3 replicas), each running
//! the module.
//!
//! The cluster is formed by hand (`CLUSTER ADDSLOTSRANGE`, `SET-CONFIG-EPOCH`, `MEET`,
//! `REPLICATE`) rather than with `redis-cli --cluster create`, which sleeps a whole second
//! between its checks. Every node gets an explicit `cluster-port` (the bus port): the default,
//! port + 10000, may fall in the kernel's ephemeral range or be taken by another test.
//!
//! Roles are always read from the nodes themselves, never from the creation order: failovers
//! change them. Dead nodes (after [`RedisServer::kill9`]) are skipped by every query.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{tail_lines, wait_until, ModuleArgs, RedisServer};

/// `cluster-node-timeout`: how long a node may be unreachable before it is flagged as failing.
/// Small so that a failover after a `kill9` takes seconds; a replica takes over about
/// 2–4 node timeouts after its master died.
pub const NODE_TIMEOUT_MS: u64 = 2000;
/// The slot ranges the three masters get at creation. A replica taking over its master gets
/// the same range, so they hold whatever the failovers.
pub const SLOT_RANGES: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];
/// Number of nodes: masters first (nodes 0–2 at creation), then their replicas (node
/// `i + 3` replicates node `i` at creation).
pub const NODES: usize = 6;
const MASTERS: usize = SLOT_RANGES.len();
const SLOTS: u16 = 16384;
/// Deadline for the cluster to form (all nodes joined, replicas in sync, state ok).
const FORM_TIMEOUT: Duration = Duration::from_secs(30);
/// Redirections followed by [`Cluster::query`] before giving up.
const MAX_REDIRECTS: usize = 5;

/// Six cluster nodes on 127.0.0.1. Dropping it kills every node and removes their directories
/// (see [`RedisServer`]).
pub struct Cluster {
    nodes: Vec<RedisServer>,
    /// For [`Cluster::query`] and [`Cluster::set`].
    routes: Mutex<Routes>,
}

/// What [`Cluster::query`] remembers between calls: who served each slot, and one open
/// connection per node. Both are dropped and asked again when they turn out to be stale.
#[derive(Default)]
struct Routes {
    /// The port of each slot's master, as the masters claimed when last asked; empty when
    /// not known.
    owners: Vec<Option<u16>>,
    connections: HashMap<u16, ::redis::Connection>,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct NodeLine {
    id: String,
    flags: Vec<String>,
    /// The master's id, for a replica.
    master: Option<String>,
    connected: bool,
    /// Inclusive slot ranges (migration markers are left out).
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    fn is_master(&self) -> bool {
        self.has_flag("master")
    }

    fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }

    /// Flagged as failing, unreachable or not yet joined.
    fn is_troubled(&self) -> bool {
        ["fail", "fail?", "handshake", "noaddr"]
            .iter()
            .any(|f| self.has_flag(f))
    }
}

impl Cluster {
    /// Starts six nodes with the module loaded with `module_args`, forms the cluster and
    /// waits until it is ready: every node knows all six, every replica is in sync,
    /// `cluster_state:ok` everywhere. Panics with the cluster's state and log tails if that
    /// takes more than 30 s.
    pub fn start(module_args: &ModuleArgs) -> Cluster {
        Self::start_with(&[], Some(module_args))
    }

    /// Like [`Cluster::start`], with extra config directives for every node (as in
    /// [`RedisServer::start_with`]; `("appendonly", "yes")`), and without the module when
    /// `module_args` is `None`.
    pub fn start_with(config: &[(&str, &str)], module_args: Option<&ModuleArgs>) -> Cluster {
        let node_timeout = NODE_TIMEOUT_MS.to_string();
        let mut all_config: Vec<(&str, &str)> = vec![
            ("cluster-enabled", "yes"),
            // Relative to the node's own directory.
            ("cluster-config-file", "nodes.conf"),
            ("cluster-node-timeout", &node_timeout),
            // Redis 7.0 waits 5 s for more replicas before a diskless full sync otherwise.
            ("repl-diskless-sync-delay", "0"),
        ];
        all_config.extend_from_slice(config);
        let module_args = module_args.map(ModuleArgs::to_vec);

        // Started in parallel: each start waits for PING. A failed start panics in its thread
        // (the hook prints why); the servers that did start are dropped, i.e. killed.
        let started: Vec<std::thread::Result<RedisServer>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..NODES)
                .map(|_| {
                    scope.spawn(|| {
                        RedisServer::start_with_extra_port(
                            &all_config,
                            "cluster-port",
                            module_args.as_deref(),
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        let mut nodes = Vec::with_capacity(NODES);
        let mut failure = None;
        for result in started {
            match result {
                Ok(node) => nodes.push(node),
                Err(payload) => failure = failure.or(Some(payload)),
            }
        }
        if let Some(payload) = failure {
            drop(nodes);
            std::panic::resume_unwind(payload);
        }

        let cluster = Cluster {
            nodes,
            routes: Mutex::new(Routes::default()),
        };
        cluster.form();
        cluster
    }

    /// Assigns the slots and epochs, introduces the nodes, makes 3–5 replicas of 0–2 and
    /// waits until all of that has settled.
    fn form(&self) {
        let ids: Vec<String> = self
            .nodes
            .iter()
            .map(|node| self.command(node, ::redis::cmd("CLUSTER").arg("MYID")))
            .collect();
        for (i, node) in self.nodes.iter().enumerate() {
            // Distinct epochs from the start (as redis-cli does): no collision to resolve.
            let () = self.command(
                node,
                ::redis::cmd("CLUSTER").arg("SET-CONFIG-EPOCH").arg(i + 1),
            );
            if let Some(&(first, last)) = SLOT_RANGES.get(i) {
                let () = self.command(
                    node,
                    ::redis::cmd("CLUSTER")
                        .arg("ADDSLOTSRANGE")
                        .arg(first)
                        .arg(last),
                );
            }
        }
        // Every pair meets directly: faster than learning of each other by gossip.
        for (i, from) in self.nodes.iter().enumerate() {
            for to in &self.nodes[i + 1..] {
                let bus_port = to.extra_port().expect("cluster nodes have a bus port");
                let () = self.command(
                    from,
                    ::redis::cmd("CLUSTER")
                        .arg("MEET")
                        .arg("127.0.0.1")
                        .arg(to.port())
                        .arg(bus_port),
                );
            }
        }
        // CLUSTER REPLICATE needs the replica to know its master.
        let all_met = || {
            self.nodes.iter().all(|node| {
                self.try_view(node).is_some_and(|view| {
                    ids.iter().all(|id| {
                        view.iter()
                            .any(|line| &line.id == id && !line.is_troubled() && line.connected)
                    })
                })
            })
        };
        if !wait_until(FORM_TIMEOUT, all_met) {
            panic!(
                "the cluster nodes did not all meet within {FORM_TIMEOUT:?}\n{}",
                self.describe()
            );
        }
        for (replica, master_id) in self.nodes[MASTERS..].iter().zip(&ids) {
            let () = self.command(
                replica,
                ::redis::cmd("CLUSTER").arg("REPLICATE").arg(master_id),
            );
        }
        let ready = || {
            self.converged_states().is_some_and(|states| {
                states.len() == NODES
                    && states.iter().filter(|s| s.me.is_master()).count() == MASTERS
                    && states
                        .iter()
                        .all(|s| field(&s.cluster_info, "cluster_known_nodes") == Some("6"))
            })
        };
        if !wait_until(FORM_TIMEOUT, ready) {
            panic!(
                "the cluster did not become ready (6 nodes known everywhere, 3 masters, 3 \
                 replicas in sync, cluster_state:ok) within {FORM_TIMEOUT:?}\n{}",
                self.describe()
            );
        }
    }

    /// Every node, dead or alive, in creation order (index = [`Cluster::node`]'s).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Node `i` (0–5).
    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    /// Node `i`, to [`RedisServer::kill9`] or [`RedisServer::restart`] it.
    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    /// The index of `node` (found by port); panics if it is not one of ours.
    pub fn index_of(&self, node: &RedisServer) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port() == node.port())
            .unwrap_or_else(|| panic!("port {} is not a node of this cluster", node.port()))
    }

    /// The nodes whose process runs (not killed).
    pub fn live_nodes(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|node| node.pid().is_some())
    }

    /// The live nodes that are masters now (`role:master` in their own `INFO replication`).
    pub fn masters(&self) -> Vec<&RedisServer> {
        self.live_nodes()
            .filter(|node| self.try_role(node).as_deref() == Some("master"))
            .collect()
    }

    /// The live nodes that are replicas now (`role:slave` in their own `INFO replication`).
    pub fn replicas(&self) -> Vec<&RedisServer> {
        self.live_nodes()
            .filter(|node| self.try_role(node).as_deref() == Some("slave"))
            .collect()
    }

    /// The live replica whose own `INFO replication` names `master`'s port; panics (with the
    /// cluster's state) if there is none.
    pub fn replica_of(&self, master: &RedisServer) -> &RedisServer {
        self.try_replica_of(master).unwrap_or_else(|| {
            panic!(
                "no live replica of the node on port {}\n{}",
                master.port(),
                self.describe()
            )
        })
    }

    /// Like [`Cluster::replica_of`], `None` when there is no such replica.
    pub fn try_replica_of(&self, master: &RedisServer) -> Option<&RedisServer> {
        let master_port = master.port().to_string();
        self.live_nodes().find(|node| {
            self.try_info(node, "replication").is_some_and(|info| {
                info.get("role").map(String::as_str) == Some("slave")
                    && info.get("master_port") == Some(&master_port)
            })
        })
    }

    /// The hash slot of `key`: the module's own computation (`key_evt_amqp::core::cluster::key_slot`),
    /// which the support selftest checks against `CLUSTER KEYSLOT`.
    pub fn slot(key: &[u8]) -> u16 {
        key_evt_amqp::core::cluster::key_slot(key)
    }

    /// The live master that owns `key`'s slot now: the one that claims it in its own
    /// `CLUSTER NODES` line, asked fresh. Panics (with the cluster's state) if none does,
    /// e.g. while its master is dead and not yet replaced.
    pub fn node_for_key(&self, key: &[u8]) -> &RedisServer {
        self.try_node_for_key(key).unwrap_or_else(|| {
            panic!(
                "no live master claims slot {} of key {:?}\n{}",
                Self::slot(key),
                String::from_utf8_lossy(key),
                self.describe()
            )
        })
    }

    /// Like [`Cluster::node_for_key`], `None` when no live master claims the slot.
    pub fn try_node_for_key(&self, key: &[u8]) -> Option<&RedisServer> {
        let slot = Self::slot(key);
        self.live_nodes().find(|node| {
            self.try_myself(node)
                .is_some_and(|me| me.is_master() && me.owns(slot))
        })
    }

    /// Runs `cmd` about `key` on the master that owns its slot and returns the reply.
    ///
    /// Routing is remembered between calls (who owns each slot, one open connection per
    /// node), so that many calls are cheap; it is asked again when a reply says `MOVED`, or
    /// when a remembered connection turns out to be dead (the node was killed or restarted;
    /// the command cannot have run then, so it is sent again). `ASK` is followed with
    /// `ASKING`. Panics on any other error, with the cluster's state.
    pub fn query<T: ::redis::FromRedisValue>(&self, key: &[u8], cmd: &::redis::Cmd) -> T {
        let slot = Self::slot(key);
        let key_text = String::from_utf8_lossy(key);
        let mut routes = self.routes();
        // Where the last reply sent us, if it did.
        let mut redirect: Option<(u16, bool)> = None;
        for _ in 0..MAX_REDIRECTS {
            let (port, asking) = match redirect.take() {
                Some(target) => target,
                None => (self.owner_port(&mut routes, slot, &key_text), false),
            };
            let node = self.by_port(port).unwrap_or_else(|| {
                panic!("slot {slot} redirected to port {port}, not a node of this cluster")
            });
            let reused = routes.connections.contains_key(&port);
            let conn = routes
                .connections
                .entry(port)
                .or_insert_with(|| node.client());
            let result = if asking {
                ::redis::cmd("ASKING")
                    .query::<()>(conn)
                    .and_then(|()| cmd.query::<T>(conn))
            } else {
                cmd.query::<T>(conn)
            };
            let error = match result {
                Ok(value) => return value,
                Err(e) => e,
            };
            let redirected_to = || {
                let (addr, _slot) = error.redirect_node()?;
                addr.rsplit(':').next()?.parse::<u16>().ok()
            };
            match error.kind() {
                ::redis::ErrorKind::Moved => {
                    routes.owners.clear();
                    redirect = Some((self.redirect_port(redirected_to(), &error), false));
                }
                ::redis::ErrorKind::Ask => {
                    redirect = Some((self.redirect_port(redirected_to(), &error), true));
                }
                // A remembered connection to a node that has been killed (and perhaps
                // restarted) since: the command never reached a running server.
                _ if reused
                    && !error.is_timeout()
                    && (error.is_io_error()
                        || error.is_connection_dropped()
                        || error.is_connection_refusal()) =>
                {
                    routes.connections.remove(&port);
                    routes.owners.clear();
                }
                _ => {
                    drop(routes);
                    panic!(
                        "command on port {port} for key {key_text:?} failed: {error}\n{}",
                        self.describe()
                    )
                }
            }
        }
        drop(routes);
        panic!(
            "more than {MAX_REDIRECTS} redirections or reconnections for key {key_text:?}\n{}",
            self.describe()
        )
    }

    /// `SET key v` on the master that owns `key` (see [`Cluster::query`]).
    pub fn set(&self, key: &str) {
        let () = self.query(key.as_bytes(), ::redis::cmd("SET").arg(key).arg("v"));
    }

    /// `n` keys (`key:<i>`) spread round-robin over the three slot ranges, so each master
    /// gets a third of them (± 1) whatever the failovers.
    pub fn keys_covering_all_masters(n: usize) -> Vec<String> {
        let mut keys = Vec::with_capacity(n);
        let mut i = 0u64;
        while keys.len() < n {
            let (first, last) = SLOT_RANGES[keys.len() % SLOT_RANGES.len()];
            // About one key in three fits: the loop ends quickly.
            loop {
                let key = format!("key:{i}");
                i += 1;
                if (first..=last).contains(&Self::slot(key.as_bytes())) {
                    keys.push(key);
                    break;
                }
            }
        }
        keys
    }

    /// Waits until every live node reports `cluster_state:ok`.
    pub fn wait_ok(&self, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.live_nodes().all(|node| {
                self.try_cluster_info(node)
                    .is_some_and(|info| info.get("cluster_state").map(String::as_str) == Some("ok"))
            })
        })
    }

    /// Waits until `node` reports `role:master`.
    pub fn wait_master(&self, node: &RedisServer, timeout: Duration) -> bool {
        wait_until(timeout, || self.try_role(node).as_deref() == Some("master"))
    }

    /// Waits until the live nodes agree: `cluster_state:ok` everywhere, every slot claimed
    /// by a live master, each live node seen by every live node with the role, master and
    /// slots it claims itself (not flagged as failing), and every live replica in sync
    /// (`master_link_status:up`). Use it after a failover or a restart, before asserting on
    /// roles.
    pub fn wait_converged(&self, timeout: Duration) -> bool {
        wait_until(timeout, || self.converged_states().is_some())
    }

    /// `CLUSTER FAILOVER` on `replica`, then waits (bounded by `timeout`) until it is a master
    /// and the live nodes agree ([`Cluster::wait_converged`]). Panics with the cluster's
    /// state if that does not happen.
    pub fn failover(&self, replica: &RedisServer, timeout: Duration) {
        let () = self.command(replica, ::redis::cmd("CLUSTER").arg("FAILOVER"));
        let deadline = std::time::Instant::now() + timeout;
        let promoted = self.wait_master(replica, timeout)
            && self.wait_converged(deadline.saturating_duration_since(std::time::Instant::now()));
        assert!(
            promoted,
            "CLUSTER FAILOVER on port {}: not a master with the cluster agreeing within \
             {timeout:?}\n{}",
            replica.port(),
            self.describe()
        );
    }

    /// The cluster's state for failure messages: each live node's `CLUSTER NODES`, its
    /// `cluster_state`, its replication link, and the tail of every node's log.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let alive = node.pid().is_some();
            out.push_str(&format!(
                "--- node {i}: port {} bus {} ({}) ---\n",
                node.port(),
                node.extra_port().unwrap_or(0),
                if alive { "running" } else { "killed" }
            ));
            if alive {
                let nodes_text: Result<String, _> = node
                    .try_client()
                    .and_then(|mut c| ::redis::cmd("CLUSTER").arg("NODES").query(&mut c));
                match nodes_text {
                    Ok(text) => out.push_str(&text),
                    Err(e) => out.push_str(&format!("(CLUSTER NODES failed: {e})\n")),
                }
                let info = self.try_cluster_info(node).unwrap_or_default();
                let repl = self.try_info(node, "replication").unwrap_or_default();
                let get = |map: &HashMap<String, String>, k: &str| {
                    map.get(k).cloned().unwrap_or_else(|| "?".into())
                };
                let keys: Result<u64, _> = node
                    .try_client()
                    .and_then(|mut c| ::redis::cmd("DBSIZE").query(&mut c));
                out.push_str(&format!(
                    "cluster_state:{} known_nodes:{} role:{} master_link_status:{} \
                     master_repl_offset:{} dbsize:{}\n",
                    get(&info, "cluster_state"),
                    get(&info, "cluster_known_nodes"),
                    get(&repl, "role"),
                    get(&repl, "master_link_status"),
                    get(&repl, "master_repl_offset"),
                    keys.map_or_else(|e| format!("? ({e})"), |n| n.to_string()),
                ));
            }
            out.push_str("log tail:\n");
            out.push_str(&tail_lines(&node.log(), 12));
            out.push('\n');
        }
        out
    }
}

/// Queries that tolerate dead or unresponsive nodes (`None`), for polling.
impl Cluster {
    /// Runs `cmd` on `node`, panicking with the cluster's state on any error.
    fn command<T: ::redis::FromRedisValue>(&self, node: &RedisServer, cmd: &::redis::Cmd) -> T {
        cmd.query(&mut node.client()).unwrap_or_else(|e| {
            panic!(
                "command on port {} failed: {e}\n{}",
                node.port(),
                self.describe()
            )
        })
    }

    fn by_port(&self, port: u16) -> Option<&RedisServer> {
        self.nodes.iter().find(|node| node.port() == port)
    }

    fn routes(&self) -> MutexGuard<'_, Routes> {
        // A panic while the lock was held leaves nothing half-updated that matters: the
        // routes are only a cache.
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The port of the live master of `slot`: remembered, or asked afresh (the claims of
    /// the live masters) when not known or when that node has been killed. Panics when no
    /// live master claims it.
    fn owner_port(&self, routes: &mut Routes, slot: u16, key: &str) -> u16 {
        let remembered = routes
            .owners
            .get(usize::from(slot))
            .copied()
            .flatten()
            .filter(|&port| self.by_port(port).is_some_and(|n| n.pid().is_some()));
        if let Some(port) = remembered {
            return port;
        }
        let mut owners = vec![None; usize::from(SLOTS)];
        for node in self.live_nodes() {
            let Some(me) = self.try_myself(node).filter(NodeLine::is_master) else {
                continue;
            };
            for &(first, last) in &me.slots {
                for owner in &mut owners[usize::from(first)..=usize::from(last)] {
                    *owner = Some(node.port());
                }
            }
        }
        routes.owners = owners;
        routes.owners[usize::from(slot)].unwrap_or_else(|| {
            panic!(
                "no live master claims slot {slot} of key {key:?}\n{}",
                self.describe()
            )
        })
    }

    /// The node a `MOVED` or `ASK` error points to.
    fn redirect_port(&self, port: Option<u16>, error: &::redis::RedisError) -> u16 {
        port.filter(|&port| self.by_port(port).is_some())
            .unwrap_or_else(|| panic!("{error} points to no node of this cluster"))
    }

    /// The `field:value` lines of the reply to `cmd` (`INFO …`, `CLUSTER INFO`).
    fn try_fields(
        &self,
        node: &RedisServer,
        cmd: &::redis::Cmd,
    ) -> Option<HashMap<String, String>> {
        node.pid()?;
        let text: String = cmd.query(&mut node.try_client().ok()?).ok()?;
        Some(parse_fields(&text))
    }

    fn try_info(&self, node: &RedisServer, section: &str) -> Option<HashMap<String, String>> {
        self.try_fields(node, ::redis::cmd("INFO").arg(section))
    }

    fn try_cluster_info(&self, node: &RedisServer) -> Option<HashMap<String, String>> {
        self.try_fields(node, ::redis::cmd("CLUSTER").arg("INFO"))
    }

    fn try_role(&self, node: &RedisServer) -> Option<String> {
        self.try_info(node, "replication")?.remove("role")
    }

    /// `node`'s `CLUSTER NODES`, parsed.
    fn try_view(&self, node: &RedisServer) -> Option<Vec<NodeLine>> {
        node.pid()?;
        let text: String = ::redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut node.try_client().ok()?)
            .ok()?;
        parse_nodes(&text)
    }

    /// `node`'s own line of its `CLUSTER NODES` (flag `myself`).
    fn try_myself(&self, node: &RedisServer) -> Option<NodeLine> {
        self.try_view(node)?
            .into_iter()
            .find(|line| line.has_flag("myself"))
    }

    /// What `node` says about itself and the cluster, asked on one connection.
    fn try_state(&self, node: &RedisServer) -> Option<NodeState> {
        node.pid()?;
        let (nodes, cluster_info, replication): (String, String, String) = ::redis::pipe()
            .cmd("CLUSTER")
            .arg("NODES")
            .cmd("CLUSTER")
            .arg("INFO")
            .cmd("INFO")
            .arg("replication")
            .query(&mut node.try_client().ok()?)
            .ok()?;
        let view = parse_nodes(&nodes)?;
        let me = view.iter().find(|line| line.has_flag("myself"))?.clone();
        Some(NodeState {
            view,
            me,
            cluster_info: parse_fields(&cluster_info),
            replication: parse_fields(&replication),
        })
    }

    /// The state of every live node when they agree (see [`Cluster::wait_converged`]),
    /// `None` while they do not.
    fn converged_states(&self) -> Option<Vec<NodeState>> {
        let states = self
            .live_nodes()
            .map(|node| self.try_state(node))
            .collect::<Option<Vec<NodeState>>>()?;
        let settled = |state: &NodeState| {
            field(&state.cluster_info, "cluster_state") == Some("ok")
                && (state.me.is_master()
                    || field(&state.replication, "master_link_status") == Some("up"))
        };
        if !states.iter().all(settled) {
            return None;
        }
        // Every slot is served by a live master (not by one that was killed and is not
        // replaced yet).
        let mut covered = vec![false; usize::from(SLOTS)];
        for me in states.iter().map(|s| &s.me).filter(|me| me.is_master()) {
            for &(first, last) in &me.slots {
                for slot in first..=last {
                    covered[usize::from(slot)] = true;
                }
            }
        }
        if covered.contains(&false) {
            return None;
        }
        // Everybody sees everybody as it sees itself.
        let agree = states.iter().all(|state| {
            states.iter().map(|s| &s.me).all(|me| {
                state.view.iter().any(|seen| {
                    seen.id == me.id
                        && !seen.is_troubled()
                        && seen.is_master() == me.is_master()
                        && seen.master == me.master
                        && seen.slots == me.slots
                })
            })
        });
        // Valkey 8.0 refuses to start from a nodes.conf where a replica's shard-id differs
        // from its master's (valkey-io/valkey#774), which it writes while the ids settle after
        // the cluster forms: a node killed then would not come back.
        let consistent = self.live_nodes().all(|node| {
            std::fs::read_to_string(node.dir().join("nodes.conf"))
                .is_ok_and(|conf| shard_ids_agree(&conf))
        });
        (agree && consistent).then_some(states)
    }
}

/// Whether every replica in a `nodes.conf` carries its master's `shard-id` (trivially true
/// for servers that write none, such as Redis 7.0).
fn shard_ids_agree(conf: &str) -> bool {
    let lines: Vec<Vec<&str>> = conf
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 8)
        .collect();
    let shard_of = |id: &str| -> Option<&str> {
        let line = lines.iter().find(|f| f[0] == id)?;
        line[1]
            .split(',')
            .find_map(|aux| aux.strip_prefix("shard-id="))
    };
    lines
        .iter()
        .filter(|f| f[3] != "-")
        .all(|replica| shard_of(replica[0]) == shard_of(replica[3]))
}

/// What one node says, see [`Cluster::try_state`].
struct NodeState {
    /// Its `CLUSTER NODES`.
    view: Vec<NodeLine>,
    /// Its own line there (flag `myself`).
    me: NodeLine,
    /// `CLUSTER INFO`.
    cluster_info: HashMap<String, String>,
    /// `INFO replication`.
    replication: HashMap<String, String>,
}

fn field<'a>(fields: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    fields.get(name).map(String::as_str)
}

/// The `field:value` lines of an `INFO`-like reply.
fn parse_fields(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// A whole `CLUSTER NODES` reply; `None` if a line does not parse.
fn parse_nodes(text: &str) -> Option<Vec<NodeLine>> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(parse_node_line)
        .collect()
}

/// Parses `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link>
/// <slot>...`.
fn parse_node_line(line: &str) -> Option<NodeLine> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return None;
    }
    let slots = fields[8..]
        .iter()
        // `[slot->-id]` / `[slot-<-id]`: a slot being migrated, not owned.
        .filter(|s| !s.starts_with('['))
        .map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|n| (n, n)),
        })
        .collect::<Option<Vec<(u16, u16)>>>()?;
    Some(NodeLine {
        id: fields[0].to_string(),
        flags: fields[2].split(',').map(String::from).collect(),
        master: (fields[3] != "-").then(|| fields[3].to_string()),
        connected: fields[7] == "connected",
        slots,
    })
}

#[cfg(test)]
mod tests {
    use super::shard_ids_agree;

    #[test]
    fn a_replica_must_carry_its_masters_shard_id() {
        let ok = "a 127.0.0.1:1@2,,tls-port=0,shard-id=s1 myself,master - 0 0 1 connected 0-5\n\
                  b 127.0.0.1:3@4,,tls-port=0,shard-id=s1 slave a 0 0 1 connected\n";
        assert!(shard_ids_agree(ok));
        let bad = ok.replace("shard-id=s1 slave", "shard-id=s2 slave");
        assert!(!shard_ids_agree(&bad));
        // Redis 7.0 writes no shard-id.
        assert!(shard_ids_agree(
            "a 127.0.0.1:1@2 myself,master - 0 0 1 connected 0-5\nb 127.0.0.1:3@4 slave a 0 0 1 connected\n"
        ));
    }
}
