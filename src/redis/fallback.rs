//! The fallback list in Redis: the [`ListStore`] the outbox spills to and refills from.
//!
//! Main thread only. Writes go through `RedisModule_Call` with replication on, so they reach
//! the AOF and the replicas like any write.

use std::time::{Duration, Instant};

use redis_module::{CallOptions, CallOptionsBuilder, CallReply, CallResult, Context};

use crate::core::cluster::{self, SlotSet};
use crate::core::outbox::ListStore;
use crate::redis::log;

/// The old C module's key: a backlog it left behind is drained after an upgrade.
pub const DEFAULT_KEY: &str = "REDIS_MODULE-key_evt_amqp-fallback_storage";

pub struct RedisList<'a> {
    ctx: &'a Context,
    key: &'a [u8],
    options: CallOptions,
}

impl<'a> RedisList<'a> {
    pub fn new(ctx: &'a Context, key: &'a [u8]) -> RedisList<'a> {
        RedisList {
            ctx,
            key,
            options: CallOptionsBuilder::new()
                .replicate()
                .errors_as_replies()
                .build(),
        }
    }

    fn call(&self, cmd: &str, args: &[&[u8]]) -> Result<CallReply<'static>, String> {
        let reply: CallResult = self.ctx.call_ext(cmd, &self.options, args);
        reply.map_err(|e| {
            format!(
                "{cmd} on the fallback list: {}",
                e.to_utf8_string().unwrap_or_default()
            )
        })
    }

    /// `cmd key item…`, the items in the given order or reversed.
    fn push(&self, cmd: &str, items: &[&[u8]], reversed: bool) -> Result<(), String> {
        let mut args: Vec<&[u8]> = Vec::with_capacity(items.len() + 1);
        args.push(self.key);
        if reversed {
            args.extend(items.iter().rev());
        } else {
            args.extend(items);
        }
        self.call(cmd, &args).map(|_| ())
    }

    pub fn exists(&self) -> Result<bool, String> {
        match self.call("EXISTS", &[self.key])? {
            CallReply::I64(n) => Ok(n.to_i64() > 0),
            _ => Ok(false),
        }
    }
}

impl ListStore for RedisList<'_> {
    fn push_front(&mut self, items: &[&[u8]]) -> Result<(), String> {
        // LPUSH inserts its arguments one by one at the front: give them newest first.
        self.push("LPUSH", items, true)
    }

    fn push_back(&mut self, items: &[&[u8]]) -> Result<(), String> {
        self.push("RPUSH", items, false)
    }

    fn peek(&mut self, start: u64, n: usize) -> Result<Vec<Vec<u8>>, String> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let (first, last) = (start.to_string(), (start + n as u64 - 1).to_string());
        match self.call("LRANGE", &[self.key, first.as_bytes(), last.as_bytes()])? {
            CallReply::Array(items) => Ok(items
                .iter()
                .filter_map(|item| match item {
                    Ok(CallReply::String(s)) => Some(s.as_bytes().to_vec()),
                    _ => None,
                })
                .collect()),
            _ => Ok(Vec::new()),
        }
    }

    fn remove_front(&mut self, n: u64) -> Result<(), String> {
        let start = n.to_string();
        self.call("LTRIM", &[self.key, start.as_bytes(), b"-1"])
            .map(|_| ())
    }

    fn keep_back(&mut self, n: u64) -> Result<(), String> {
        let start = format!("-{n}");
        self.call("LTRIM", &[self.key, start.as_bytes(), b"-1"])
            .map(|_| ())
    }

    fn len(&mut self) -> Result<u64, String> {
        match self.call("LLEN", &[self.key])? {
            CallReply::I64(n) => Ok(u64::try_from(n.to_i64()).unwrap_or(0)),
            _ => Ok(0),
        }
    }
}

/// Where this node's fallback list lives. On a single node: the old module's key. In a
/// cluster: a name hash-tagged into the first slot the node serves (see
/// [`cluster::fallback_key_in_slot`]), so the module's own writes are never refused and
/// `redis-cli --cluster check` stays clean. When slots move, the name follows, and lists left
/// in slots this node gains (a migrated slot, a failed master's slots) are moved into its own
/// list, a slice per step, so that they drain too.
pub struct Placement {
    cluster: bool,
    key: Option<Vec<u8>>,
    served: SlotSet,
    next_check: Instant,
    /// Slots whose list names are still to be looked at for a backlog left there.
    to_scan: Vec<u16>,
    /// Lists found in served slots, other than our own: moved into ours.
    foreign: Vec<Vec<u8>>,
    last_error: Option<String>,
}

/// How often a cluster node checks which slots it serves (one `CLUSTER NODES`).
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Slots looked at per step (one `EXISTS` each).
const SCAN_SLICE: usize = 256;

impl Placement {
    pub fn new(cluster: bool) -> Placement {
        Placement {
            cluster,
            key: (!cluster).then(|| DEFAULT_KEY.as_bytes().to_vec()),
            served: SlotSet::default(),
            next_check: Instant::now(),
            to_scan: Vec::new(),
            foreign: Vec::new(),
            last_error: None,
        }
    }

    /// Forgets what it knew of the slots (after a role change): the next step looks at all of
    /// them again.
    pub fn reset(&mut self) {
        *self = Placement::new(self.cluster);
    }

    /// Logs an error once, not at every step while it lasts.
    pub fn log_error(&mut self, error: &str) {
        if self.last_error.as_deref() != Some(error) {
            log::warning(error);
            self.last_error = Some(error.to_string());
        }
    }

    /// The list's name; `None` for a cluster node that serves no slot (it has no keys, so no
    /// events, but neither can it keep a list).
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// Whether `key` is one of the module's own lists (its events are not forwarded).
    pub fn is_fallback_key(key: &[u8]) -> bool {
        key.strip_prefix(DEFAULT_KEY.as_bytes())
            .is_some_and(|rest| rest.is_empty() || rest.first() == Some(&b'{'))
    }

    /// Look at the slots again at the next [`Placement::step`] (a promotion, a refused write).
    pub fn recheck(&mut self) {
        self.next_check = Instant::now();
    }

    /// Checks which slots this node serves (at most every second), looks for lists left in
    /// newly served slots and moves one slice of them into ours. Returns how many items were
    /// appended to our list and whether our list's name changed (its length must be read
    /// again); `more` when work remains for the next step.
    pub fn step(&mut self, ctx: &Context, slice: usize) -> Result<PlacementStep, String> {
        let mut out = PlacementStep::default();
        if !self.cluster {
            return Ok(out);
        }
        if Instant::now() >= self.next_check {
            self.next_check = Instant::now() + CHECK_EVERY;
            out.moved_list = self.check_slots(ctx)?;
        }
        self.scan(ctx)?;
        out.appended = self.adopt(ctx, slice)?;
        out.more = !self.to_scan.is_empty() || !self.foreign.is_empty();
        self.last_error = None;
        Ok(out)
    }

    fn check_slots(&mut self, ctx: &Context) -> Result<bool, String> {
        let reply: CallResult =
            ctx.call_ext("CLUSTER", &CallOptionsBuilder::new().build(), &["NODES"]);
        let text = match reply {
            Ok(CallReply::String(s)) => s.as_bytes().to_vec(),
            Ok(CallReply::VerbatimString(s)) => {
                s.as_parts().map(|(_, b)| b.to_vec()).unwrap_or_default()
            }
            Ok(_) => return Err("CLUSTER NODES: unexpected reply".into()),
            Err(e) => {
                return Err(format!(
                    "CLUSTER NODES: {}",
                    e.to_utf8_string().unwrap_or_default()
                ))
            }
        };
        let Some(served) = cluster::served_slots(&text) else {
            return Err("CLUSTER NODES: no line for this node".into());
        };
        if served == self.served {
            return Ok(false);
        }
        let gained = served.difference(&self.served);
        self.to_scan.extend(gained.iter());
        let key = served
            .first()
            .map(|slot| cluster::fallback_key_in_slot(DEFAULT_KEY, slot));
        self.served = served;
        if key == self.key {
            return Ok(false);
        }
        // Our old list, if its slot is still ours, drains as a foreign one.
        if let Some(old) = self.key.take() {
            if self.served.contains(cluster::key_slot(&old)) {
                self.foreign.push(old);
            }
        }
        log::notice(&match &key {
            Some(k) => format!("fallback list: {}", crate::core::event::escape(k)),
            None => "this node serves no hash slot: no fallback list".into(),
        });
        self.key = key;
        Ok(true)
    }

    /// Looks for lists in the names of a slice of newly served slots (and for the old
    /// module's untagged list in its slot).
    fn scan(&mut self, ctx: &Context) -> Result<(), String> {
        let legacy_slot = cluster::key_slot(DEFAULT_KEY.as_bytes());
        for _ in 0..SCAN_SLICE {
            // Popped only once looked at: a refused EXISTS (cluster down) is tried again.
            let Some(&slot) = self.to_scan.last() else {
                break;
            };
            let mut names = vec![cluster::fallback_key_in_slot(DEFAULT_KEY, slot)];
            if slot == legacy_slot {
                names.push(DEFAULT_KEY.as_bytes().to_vec());
            }
            for name in names {
                if Some(name.as_slice()) != self.key()
                    && !self.foreign.contains(&name)
                    && RedisList::new(ctx, &name).exists()?
                {
                    log::notice(&format!(
                        "found a backlog in {}: it drains through this node's list",
                        crate::core::event::escape(&name)
                    ));
                    self.foreign.push(name);
                }
            }
            self.to_scan.pop();
        }
        Ok(())
    }

    /// Moves up to `slice` items from the first foreign list to the back of ours: pushed
    /// first, then trimmed, so a crash in between repeats items rather than losing them.
    fn adopt(&mut self, ctx: &Context, slice: usize) -> Result<u64, String> {
        let (Some(key), Some(from)) = (self.key.clone(), self.foreign.first().cloned()) else {
            return Ok(0);
        };
        if !self.served.contains(cluster::key_slot(&from)) {
            self.foreign.remove(0);
            return Ok(0);
        }
        let mut source = RedisList::new(ctx, &from);
        let items = source.peek(0, slice)?;
        if items.is_empty() {
            self.foreign.remove(0);
            return Ok(0);
        }
        let slices: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
        RedisList::new(ctx, &key).push_back(&slices)?;
        source.remove_front(items.len() as u64)?;
        Ok(items.len() as u64)
    }
}

#[derive(Debug, Default)]
pub struct PlacementStep {
    /// Items appended to our list from foreign ones.
    pub appended: u64,
    /// Our list has a new name.
    pub moved_list: bool,
    pub more: bool,
}
