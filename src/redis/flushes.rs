//! FLUSHALL, FLUSHDB and SWAPDB: the server's `FLUSHDB` and `SWAPDB` events. Each forwards its
//! own event (`key_evt_amqp.flush_events yes`) and saves the backlog the command is about to
//! destroy or strand; the next main-thread step writes it back ([`Module::put_back_list`]).
//! Why the writes wait for the step: `core/flush.rs`.

use std::ffi::c_void;
use std::sync::atomic::Ordering::Relaxed;

use redis_module::{raw, Context};

use crate::core::flush::{DbChange, Saved, HOME_DB};
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
            let saved = self.dump_list(ctx, db);
            self.rescue.lock().save(saved);
        }
        let _ = hook::hook(ctx.ctx);
        hook::wake_main();
    }

    /// The list in database `db`, as one `DUMP`. An error is logged: what could not be read is
    /// lost with the flush, and found missing at the next step.
    fn dump_list(&self, ctx: &Context, db: i64) -> Saved {
        let Some(key) = self.placement.lock().key().map(<[u8]>::to_vec) else {
            return Saved::default();
        };
        let read = in_db(ctx, db, || {
            let mut list = RedisList::new(ctx, &key);
            let len = list.len()?;
            let dump = list.dump()?.unwrap_or_default();
            Ok::<_, String>(Saved { dump, len })
        });
        match read.and_then(|r| r) {
            Ok(saved) => saved,
            Err(e) => {
                log::warning(&format!(
                    "cannot read the fallback list before a flush or swap: {e}"
                ));
                Saved::default()
            }
        }
    }

    /// At the step after a FLUSHALL, FLUSHDB or SWAPDB that reached the list: deletes the copy
    /// a swap left in another database and puts the saved list back in front of what the list
    /// holds now, before anything else touches it. These writes reach the AOF and the
    /// replicas after the command. Returns whether anything was written (the list's length
    /// is then checked).
    pub fn put_back_list(&self, ctx: &Context) -> bool {
        let Some(plan) = self.rescue.lock().take_plan() else {
            return false;
        };
        let Some(key) = self.placement.lock().key().map(<[u8]>::to_vec) else {
            return false;
        };
        // Measured like the list's work: proportional to the backlog, once per flush.
        self.timed(|| {
            let _own = OwnWrites::start(&self.own_io);
            if let Some(db) = plan.delete_in {
                let deleted = in_db(ctx, db, || RedisList::new(ctx, &key).delete());
                if let Err(e) = deleted.and_then(|r| r) {
                    log::warning(&format!(
                        "cannot delete the fallback list that SWAPDB moved to db {db}: {e}"
                    ));
                }
            }
            let saved = &plan.saved;
            if !saved.dump.is_empty() {
                let put_back = in_db(ctx, HOME_DB, || restore_in_front(ctx, &key, &saved.dump));
                match put_back.and_then(|r| r) {
                    Ok(()) => log::notice(&format!(
                        "kept {} events of the fallback list through FLUSHALL/FLUSHDB/SWAPDB",
                        saved.len
                    )),
                    Err(e) => log::warning(&format!(
                        "cannot put {} events back into the fallback list after a flush: {e}",
                        saved.len
                    )),
                }
            }
        });
        self.list_checked_ms.store(0, Relaxed);
        true
    }
}

/// Restores `dump` under a name of the same slot, appends what the list `key` holds now
/// (events the journal wrote after the command: few), and renames it over `key`. RESTORE
/// and RENAME move the list's nodes whole; only the new events are copied one by one.
fn restore_in_front(ctx: &Context, key: &[u8], dump: &[u8]) -> Result<(), String> {
    let spare = rescue_key(key);
    let mut restored = RedisList::new(ctx, &spare);
    restored.restore(dump)?;
    let home = RedisList::new(ctx, key);
    if home.exists()? {
        let newer = home.items()?;
        let refs: Vec<&[u8]> = newer.iter().map(Vec::as_slice).collect();
        restored.push_back(&refs)?;
    }
    restored.rename_to(key)
}

/// The name a rescued list is restored under before it takes the list's place: the list's
/// own, so in the same cluster slot (its hash tag comes first) and never forwarded as a user's
/// key (see `Placement::is_fallback_key`).
fn rescue_key(key: &[u8]) -> Vec<u8> {
    let mut spare = key.to_vec();
    // A cluster's list ends with its hash tag; a single node's has none.
    spare.extend_from_slice(if key.ends_with(b"}") {
        b"-rescue".as_slice()
    } else {
        b"{rescue}"
    });
    spare
}
