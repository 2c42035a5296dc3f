//! FLUSHALL, FLUSHDB and SWAPDB: the server's `FLUSHDB` and `SWAPDB` events. Each forwards its
//! own event (`key_evt_amqp.flush_events yes`) and saves the backlog the command is about to
//! destroy or strand; the next main-thread step writes it back ([`Module::put_back_list`]).
//! Why the writes wait for the step: `core/flush.rs`.

use std::ffi::c_void;
use std::sync::atomic::Ordering::Relaxed;

use redis_module::{raw, Context};

use crate::core::flush::{front_chunks, DbChange, HOME_DB, RESCUE_CHUNK};
use crate::core::outbox::ListStore;
use crate::redis::fallback::OwnWrites;
use crate::redis::fallback::{in_db, RedisList};
use crate::redis::runtime::{self, Module};
use crate::redis::{config, hook, journal, log};

pub extern "C" fn on_flushdb(
    ctx: *mut raw::RedisModuleCtx,
    _e: raw::RedisModuleEvent,
    sub: u64,
    data: *mut c_void,
) {
    if sub != raw::REDISMODULE_SUBEVENT_FLUSHDB_START || data.is_null() {
        return;
    }
    // SAFETY: Redis passes a RedisModuleFlushInfo with the FLUSHDB event, alive for the call.
    let dbnum = unsafe { (*data.cast::<raw::RedisModuleFlushInfo>()).dbnum };
    if let Some(m) = runtime::current() {
        m.on_db_change(&Context::new(ctx), DbChange::flush(i64::from(dbnum)));
    }
}

pub extern "C" fn on_swapdb(
    ctx: *mut raw::RedisModuleCtx,
    _e: raw::RedisModuleEvent,
    _sub: u64,
    data: *mut c_void,
) {
    if data.is_null() {
        return;
    }
    // SAFETY: Redis passes a RedisModuleSwapDbInfo with the SWAPDB event, alive for the call.
    let (a, b) = unsafe {
        let info = &*data.cast::<raw::RedisModuleSwapDbInfo>();
        (info.dbnum_first, info.dbnum_second)
    };
    if let Some(m) = runtime::current() {
        m.on_db_change(&Context::new(ctx), DbChange::SwapDb(a.into(), b.into()));
    }
}

impl Module {
    /// A flush is about to run (start subevent) or a swap has run. Only reads here: see
    /// `core/flush.rs`.
    fn on_db_change(&self, ctx: &Context, change: DbChange) {
        // A replica's list is its master's; while loading, the file replays what the master
        // did, writes included (and DEBUG RELOAD's flush precedes a load).
        if !self.publishes() {
            return;
        }
        if config::flush_events() {
            let (db, event, key) = change.event();
            self.enqueue(db, event, &key);
            if journal::active() {
                self.schedule_journal(ctx.ctx);
            }
        }
        let save_from = {
            let mut rescue = self.rescue.lock();
            match change {
                DbChange::SwapDb(a, b) => rescue.swapped(a, b),
                flush => rescue.flush_starts(flush),
            }
        };
        if let Some(db) = save_from {
            let items = self.read_list(ctx, db);
            self.rescue.lock().save(items);
        }
        let _ = hook::hook(ctx.ctx);
        hook::wake_main();
    }

    /// The whole list in database `db`, [`RESCUE_CHUNK`] items per read. An error is logged:
    /// what could not be read is lost with the flush, and found missing at the next step.
    fn read_list(&self, ctx: &Context, db: i64) -> Vec<Vec<u8>> {
        let Some(key) = self.placement.lock().key().map(<[u8]>::to_vec) else {
            return Vec::new();
        };
        let read = in_db(ctx, db, || {
            let mut list = RedisList::new(ctx, &key);
            let len = list.len()?;
            let mut items = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            while (items.len() as u64) < len {
                let chunk = list.peek(items.len() as u64, RESCUE_CHUNK)?;
                if chunk.is_empty() {
                    break;
                }
                items.extend(chunk);
            }
            Ok::<_, String>(items)
        });
        match read.and_then(|r| r) {
            Ok(items) => items,
            Err(e) => {
                log::warning(&format!(
                    "cannot read the fallback list before a flush or swap: {e}"
                ));
                Vec::new()
            }
        }
    }

    /// At the step after a FLUSHALL, FLUSHDB or SWAPDB that reached the list: deletes the copy
    /// a swap left in another database and puts the saved items back at the front of the
    /// list, in order, before anything else touches it. These writes reach the AOF and the
    /// replicas after the command. Returns whether anything was written (the list's length
    /// is then checked).
    pub fn put_back_list(&self, ctx: &Context) -> bool {
        let Some(plan) = self.rescue.lock().take_plan() else {
            return false;
        };
        let Some(key) = self.placement.lock().key().map(<[u8]>::to_vec) else {
            return false;
        };
        let _own = OwnWrites::start(&self.own_io);
        if let Some(db) = plan.delete_in {
            let deleted = in_db(ctx, db, || RedisList::new(ctx, &key).delete());
            if let Err(e) = deleted.and_then(|r| r) {
                log::warning(&format!(
                    "cannot delete the fallback list that SWAPDB moved to db {db}: {e}"
                ));
            }
        }
        let pushed = in_db(ctx, HOME_DB, || {
            let mut list = RedisList::new(ctx, &key);
            front_chunks(&plan.items, RESCUE_CHUNK).try_for_each(|chunk| {
                let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
                list.push_front(&refs)
            })
        });
        if let Err(e) = pushed.and_then(|r| r) {
            log::warning(&format!(
                "cannot put {} events back into the fallback list after a flush: {e}",
                plan.items.len()
            ));
        }
        if !plan.items.is_empty() {
            log::notice(&format!(
                "kept {} events of the fallback list through FLUSHALL/FLUSHDB/SWAPDB",
                plan.items.len()
            ));
        }
        self.list_checked_ms.store(0, Relaxed);
        true
    }
}
