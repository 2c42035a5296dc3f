//! The fallback list in Redis: the [`ListStore`] the outbox spills to and refills from, and the
//! [`Keyspace`] the list's [`Placement`](crate::core::placement::Placement) follows slots in.
//!
//! Main thread only. Writes go through `RedisModule_Call` with replication on, so they reach
//! the AOF and the replicas like any write.

use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use redis_module::{
    raw, CallOptions, CallOptionsBuilder, CallReply, CallResult, Context, RedisString,
};

use crate::core::cluster;
use crate::core::escape::escape;
use crate::core::list_item::{full_form_of_last, trim_window_start, REACH};
use crate::core::outbox::ListStore;
use crate::core::placement::{Keyspace, DEFAULT_KEY};

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

    /// `LRANGE key first last` (Redis's indices, negative from the back).
    fn range(&self, first: &str, last: &str) -> Result<Vec<Vec<u8>>, String> {
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

    /// After a trim of the front: writes the new front's full form over it, when it was
    /// compact (`core/list_item.rs`: the front item is never compact).
    fn make_front(&self, full: Option<Vec<u8>>) -> Result<(), String> {
        match full {
            Some(full) => self.call("LSET", &[self.key, b"0", &full]).map(|_| ()),
            None => Ok(()),
        }
    }

    /// `DUMP key`: the list serialized whole (`None` when there is no list). Copies the
    /// list's nodes, not each item: the fast way to keep a backlog through a flush.
    pub fn dump(&self) -> Result<Option<Vec<u8>>, String> {
        match self.call("DUMP", &[self.key])? {
            CallReply::String(s) => Ok(Some(s.as_bytes().to_vec())),
            _ => Ok(None),
        }
    }

    /// `RESTORE key 0 dump REPLACE`: the list as [`RedisList::dump`] read it.
    pub fn restore(&self, dump: &[u8]) -> Result<(), String> {
        self.call("RESTORE", &[self.key, b"0", dump, b"REPLACE"])
            .map(|_| ())
    }

    /// `RENAME key to`: this list replaces the one at `to` (in the same slot).
    pub fn rename_to(&self, to: &[u8]) -> Result<(), String> {
        self.call("RENAME", &[self.key, to]).map(|_| ())
    }

    /// Every item, front to back.
    pub fn items(&self) -> Result<Vec<Vec<u8>>, String> {
        self.range("0", "-1")
    }

    pub fn delete(&self) -> Result<(), String> {
        self.call("DEL", &[self.key]).map(|_| ())
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
        self.range(&first, &last)
    }

    fn remove_front(&mut self, n: u64) -> Result<(), String> {
        if n == 0 {
            return Ok(());
        }
        // The new front (index n) and the items its run may come from.
        let first = trim_window_start(n);
        let window = self.range(&first.to_string(), &n.to_string())?;
        let full = (window.len() as u64 == n - first + 1)
            .then(|| full_form_of_last(&window))
            .flatten();
        let start = n.to_string();
        self.call("LTRIM", &[self.key, start.as_bytes(), b"-1"])?;
        self.make_front(full)
    }

    fn keep_back(&mut self, n: u64) -> Result<(), String> {
        if n == 0 {
            // `LTRIM key -0 -1` would keep everything.
            return self.delete();
        }
        // The new front (index -n) and the items before it, if the list is longer than n
        // (otherwise the range is empty, or ends at the front, which is full).
        let first = format!("-{}", n.saturating_add(REACH));
        let window = self.range(&first, &format!("-{n}"))?;
        let full = full_form_of_last(&window);
        let start = format!("-{n}");
        self.call("LTRIM", &[self.key, start.as_bytes(), b"-1"])?;
        self.make_front(full)
    }

    fn len(&mut self) -> Result<u64, String> {
        match self.call("LLEN", &[self.key])? {
            CallReply::I64(n) => Ok(u64::try_from(n.to_i64()).unwrap_or(0)),
            _ => Ok(0),
        }
    }
}

/// Runs `f` with `ctx` switched to the database `db`, then switches back (the module's own
/// calls go to the database of their context's client).
pub fn in_db<R>(ctx: &Context, db: i64, f: impl FnOnce() -> R) -> Result<R, String> {
    // SAFETY: Redis's API pointers, set at load, with a live context Redis passed us.
    let (get, select) = unsafe {
        match (raw::RedisModule_GetSelectedDb, raw::RedisModule_SelectDb) {
            (Some(get), Some(select)) => (get, select),
            _ => return Err("no database selection API".into()),
        }
    };
    let db = c_int::try_from(db).map_err(|_| format!("no database {db}"))?;
    // SAFETY: as above.
    let before = unsafe { get(ctx.ctx) };
    if before == db {
        return Ok(f());
    }
    // SAFETY: as above; an id out of range is refused (REDISMODULE_ERR).
    if unsafe { select(ctx.ctx, db) } != raw::REDISMODULE_OK as c_int {
        return Err(format!("cannot select database {db}"));
    }
    let out = f();
    // SAFETY: as above, back to the database the context had.
    unsafe { select(ctx.ctx, before) };
    Ok(out)
}

/// The keyspace as [`Placement`](crate::core::placement::Placement) sees it: `CLUSTER NODES` and the lists of any slot.
pub struct RedisKeyspace<'a> {
    pub ctx: &'a Context,
}

impl Keyspace for RedisKeyspace<'_> {
    fn cluster_nodes(&mut self) -> Result<Vec<u8>, String> {
        let reply: CallResult =
            self.ctx
                .call_ext("CLUSTER", &CallOptionsBuilder::new().build(), &["NODES"]);
        match reply {
            Ok(CallReply::String(s)) => Ok(s.as_bytes().to_vec()),
            Ok(CallReply::VerbatimString(s)) => {
                Ok(s.as_parts().map(|(_, b)| b.to_vec()).unwrap_or_default())
            }
            Ok(_) => Err("CLUSTER NODES: unexpected reply".into()),
            Err(e) => Err(format!(
                "CLUSTER NODES: {}",
                e.to_utf8_string().unwrap_or_default()
            )),
        }
    }

    fn exists(&mut self, key: &[u8]) -> Result<bool, String> {
        RedisList::new(self.ctx, key).exists()
    }

    fn peek(&mut self, key: &[u8], n: usize) -> Result<Vec<Vec<u8>>, String> {
        RedisList::new(self.ctx, key).peek(0, n)
    }

    fn push_back(&mut self, key: &[u8], items: &[&[u8]]) -> Result<(), String> {
        RedisList::new(self.ctx, key).push_back(items)
    }

    fn remove_front(&mut self, key: &[u8], n: u64) -> Result<(), String> {
        RedisList::new(self.ctx, key).remove_front(n)
    }
}

/// On a cluster node, checks our slot function against the server's
/// (`RedisModule_ClusterKeySlot`, Redis 7.4+ and Valkey 8) on every name the list can have,
/// once at load (16,385 names, a few milliseconds). `Ok` says what was checked.
pub fn check_key_slots() -> Result<String, String> {
    // SAFETY: a read of an API pointer Redis filled in before the module's init ran.
    let Some(server_slot) = (unsafe { raw::RedisModule_ClusterKeySlot }) else {
        return Ok("not checked: the server has no RedisModule_ClusterKeySlot".into());
    };
    let server = |key: &[u8]| {
        let key = RedisString::create_from_slice(std::ptr::null_mut(), key);
        // SAFETY: the server reads a string we own and keeps no pointer to it.
        let slot = unsafe { server_slot(key.inner) };
        u16::try_from(slot).unwrap_or(u16::MAX)
    };
    match cluster::check_key_slots(DEFAULT_KEY, server) {
        Ok(n) => Ok(format!(
            "our CRC16 agrees with RedisModule_ClusterKeySlot on all {n} list names"
        )),
        Err(m) => Err(format!(
            "the server puts key '{}' in slot {} where this module computes {}: refusing to \
             place the fallback list",
            escape(&m.key),
            m.server,
            m.ours
        )),
    }
}

/// While it lives, the module writes the fallback list itself: the keyspace callback does not
/// forward the events those writes raise. Cleared when dropped, also on an early return.
pub struct OwnWrites<'a>(&'a AtomicBool);

impl<'a> OwnWrites<'a> {
    pub fn start(flag: &'a AtomicBool) -> OwnWrites<'a> {
        flag.store(true, Relaxed);
        OwnWrites(flag)
    }
}

impl Drop for OwnWrites<'_> {
    fn drop(&mut self) {
        self.0.store(false, Relaxed);
    }
}
