//! The fallback list in Redis: the [`ListStore`] the outbox spills to and refills from.
//!
//! Main thread only. Writes go through `RedisModule_Call` with replication on, so they reach
//! the AOF and the replicas like any write.

use redis_module::{CallOptions, CallOptionsBuilder, CallReply, CallResult, Context};

use crate::outbox::ListStore;

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
    fn push(&self, cmd: &str, items: &[Vec<u8>], reversed: bool) -> Result<(), String> {
        let mut args: Vec<&[u8]> = Vec::with_capacity(items.len() + 1);
        args.push(self.key);
        if reversed {
            args.extend(items.iter().rev().map(Vec::as_slice));
        } else {
            args.extend(items.iter().map(Vec::as_slice));
        }
        self.call(cmd, &args).map(|_| ())
    }
}

impl ListStore for RedisList<'_> {
    fn push_front(&mut self, items: &[Vec<u8>]) -> Result<(), String> {
        // LPUSH inserts its arguments one by one at the front: give them newest first.
        self.push("LPUSH", items, true)
    }

    fn push_back(&mut self, items: &[Vec<u8>]) -> Result<(), String> {
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
