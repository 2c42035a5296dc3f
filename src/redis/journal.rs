//! `key_evt_amqp.durability journal`: each forwarded event is appended to the fallback list by
//! a post-notification job (`RedisModule_AddPostNotificationJob`, Redis 7.2+ and Valkey 8),
//! which Redis runs at the end of the execution unit that raised the event (the command, the
//! MULTI/EXEC, the script, one expiry or eviction) and propagates with it: the AOF and the
//! replicas get the write and its journal entry in one MULTI/EXEC, or neither.
//!
//! One job per execution unit writes every event the unit raised, with one list write and one
//! replicated `RPUSH`. The write uses the key API (`RedisModule_ListPush`) and
//! `RedisModule_Replicate` rather than `RedisModule_Call`: no command dispatch, no keyspace
//! event of our own to filter out (what each part costs: docs/profiles/README.md).
//!
//! The callbacks never journal an event behind one that still waits in memory: switching on
//! happens at once only when nothing waits there (`journal_from_now`), else in the step, which
//! first appends what memory holds to the list (`sync_durability`). Events the step itself
//! raises (snapshot slices) and any no job took are written there too, after the fact.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Instant;

use parking_lot::Mutex;
use redis_module::{raw, Context};

use crate::core::flush::HOME_DB;
use crate::core::journal::Durability;
use crate::core::limits::Throttle;
use crate::core::outbox::Outbox;
use crate::core::policy::{JOURNAL_SWITCH_SLICE, SUMMARY_EVERY};
use crate::redis::fallback::{in_db, OwnWrites, RedisList};
use crate::redis::runtime::{self, Module};
use crate::redis::{hook, log};
use crate::state::stats::Stats;

/// The callbacks journal their events (main thread: the step, CONFIG SET and a promotion
/// change it).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// A job is scheduled for the current execution unit.
static JOB_SCHEDULED: AtomicBool = AtomicBool::new(false);
/// Which server this is (`Redis 7.0.15`), for the refusal.
static SERVER: Mutex<String> = Mutex::new(String::new());
/// A switch to the journal in progress: the events it moved from memory to the list so far,
/// and in how many steps (for its log line).
static SWITCH: Mutex<(u64, u32)> = Mutex::new((0, 0));
/// Failed journal writes are logged when they start, then summed every 10 s.
static ERRORS: Mutex<Option<Throttle>> = Mutex::new(None);

pub fn note_server(name: &str) {
    *SERVER.lock() = name.to_string();
}

/// Why this server cannot journal, if it cannot.
pub fn refusal() -> Option<String> {
    // SAFETY: a read of an API pointer Redis filled in at load (absent before 7.2).
    if unsafe { raw::RedisModule_AddPostNotificationJob }.is_some() {
        return None;
    }
    Some(format!(
        "journal needs post-notification jobs (RedisModule_AddPostNotificationJob): Redis 7.2 \
         or newer, or Valkey 8; this server is {}",
        SERVER.lock()
    ))
}

pub fn active() -> bool {
    ACTIVE.load(Relaxed)
}

/// At unload: the next load starts in memory mode until its first step.
pub fn forget() {
    ACTIVE.store(false, Relaxed);
    JOB_SCHEDULED.store(false, Relaxed);
}

impl Module {
    /// After a forwarded event, in a keyspace or server event callback: makes sure a job writes
    /// it at the end of this execution unit. If Redis refuses the job (it does while loading
    /// and on a read-only replica, where nothing is forwarded), the next step writes it.
    pub fn schedule_journal(&self, ctx: *mut raw::RedisModuleCtx) {
        if JOB_SCHEDULED.swap(true, Relaxed) {
            return;
        }
        // SAFETY: Redis's API pointer and a context it passed to this callback; the job takes
        // no data.
        let scheduled = unsafe {
            raw::RedisModule_AddPostNotificationJob.is_some_and(|add| {
                add(ctx, Some(journal_job), std::ptr::null_mut(), None)
                    == raw::REDISMODULE_OK as c_int
            })
        };
        if !scheduled {
            JOB_SCHEDULED.store(false, Relaxed);
        }
    }

    /// Appends the inbox's events that no journal write has taken yet to the list, in order,
    /// and marks them journaled (or, if the write fails, leaves them ordinary events, counted
    /// and logged).
    pub fn write_journal(&self, ctx: &Context) {
        let mut inbox = self.inbox.lock();
        let pending = inbox.unwritten();
        if pending.is_empty() {
            return;
        }
        let n = pending.len() as u64;
        let placement = self.placement.lock();
        let written = match placement.key() {
            Some(key) => {
                let mut buf = self.journal_buf.lock();
                let (bytes, lens) = &mut *buf;
                bytes.clear();
                lens.clear();
                // Compact items need what the outbox knows of the list's back; held through
                // the write, so that nothing else writes the back meanwhile. If the publisher
                // holds the outbox right now, full items (always readable) and no wait.
                let mut outbox = self.shared.outbox.try_lock();
                match outbox.as_mut() {
                    Some(o) => o.encode_back(pending, bytes, lens),
                    None => {
                        for e in pending {
                            let start = bytes.len();
                            e.write_list_item(bytes);
                            lens.push(bytes.len() - start);
                        }
                    }
                }
                let pushed =
                    in_db(ctx, HOME_DB, || push_items(ctx, key, bytes, lens)).and_then(|r| r);
                if let (Err(_), Some(o)) = (&pushed, outbox.as_mut()) {
                    o.forget_back();
                }
                pushed
            }
            // A cluster node that serves no slot yet has no list: its events wait in memory.
            None => Err("no slot to keep the journal in yet".into()),
        };
        drop(placement);
        inbox.written(written.is_ok());
        drop(inbox);
        let stats = &self.shared.stats;
        match written {
            Ok(()) => Stats::add(&stats.journaled, n),
            Err(e) => {
                Stats::add(&stats.journal_failed, n);
                let mut errors = ERRORS.lock();
                let throttle = errors.get_or_insert_with(|| Throttle::new(SUMMARY_EVERY));
                if let Some(k) = throttle.note(n, Instant::now()) {
                    log::warning(&format!(
                        "{k} events could not be journaled ({e}); they wait in memory as with \
                         durability memory; further failures are summed every 10 s"
                    ));
                }
            }
        }
    }

    /// In the step, holding the outbox: applies `key_evt_amqp.durability`. Switching to the
    /// journal first appends every event waiting in memory to the list (they come before the
    /// first journaled one); switching back needs nothing (what the list holds drains as
    /// usual). Then writes what no job took. A cluster node that has no list placed yet
    /// switches once it has.
    pub fn sync_durability(&self, ctx: &Context, outbox: &mut Outbox) {
        JOB_SCHEDULED.store(false, Relaxed);
        let wanted = self.shared.read_settings(|s| s.durability) == Durability::Journal;
        if wanted != active() {
            let key = self.placement.lock().key().map(<[u8]>::to_vec);
            if !wanted {
                ACTIVE.store(false, Relaxed);
                *SWITCH.lock() = (0, 0);
                log::notice("durability memory: events wait in memory until confirmed");
            } else if let Some(key) = key.as_deref() {
                self.move_inbox(outbox);
                let spilled = self.timed(|| {
                    let _own = OwnWrites::start(&self.own_io);
                    outbox.spill_tail(&mut RedisList::new(ctx, key), JOURNAL_SWITCH_SLICE)
                });
                match spilled {
                    Ok(n) => {
                        Stats::add(&self.shared.stats.spilled, n);
                        let mut switch = SWITCH.lock();
                        *switch = (switch.0 + n, switch.1 + 1);
                        if !outbox.waits_behind_list() {
                            ACTIVE.store(true, Relaxed);
                            let (moved, steps) = std::mem::take(&mut *switch);
                            log::notice(&format!(
                                "durability journal: every event is written to the fallback \
                                 list with its write ({moved} events waiting in memory moved \
                                 there first, in {steps} steps)"
                            ));
                        } else {
                            // The rest in the next steps, behind the events they bring.
                            hook::wake_main();
                        }
                    }
                    Err(e) => log::warning(&format!("cannot switch to the journal yet: {e}")),
                }
            }
        }
        if active() {
            self.write_journal(ctx);
        }
    }
}

impl Module {
    /// Applies `key_evt_amqp.durability` at once when that needs no list write: a promoted
    /// replica journals from its first write, not from its first step (a client's write may
    /// come in the same event-loop iteration), and so does a `CONFIG SET … journal` while
    /// nothing waits in memory behind the list; otherwise the step switches. Switching back
    /// to memory is always immediate.
    pub fn journal_from_now(&self) {
        let wanted = self.shared.settings().durability == Durability::Journal;
        if !wanted {
            ACTIVE.store(false, Relaxed);
            return;
        }
        let nothing_waits = self.inbox.lock().is_empty()
            && self
                .shared
                .outbox
                .try_lock()
                .is_some_and(|o| !o.waits_behind_list());
        if nothing_waits && self.placement.lock().key().is_some() {
            ACTIVE.store(true, Relaxed);
        }
    }
}

/// The post-notification job: Redis runs it after the execution unit's notifications, before
/// propagating the unit.
extern "C" fn journal_job(ctx: *mut raw::RedisModuleCtx, _pd: *mut c_void) {
    JOB_SCHEDULED.store(false, Relaxed);
    if let Some(m) = runtime::current() {
        m.write_journal(&Context::new(ctx));
    }
}

/// `RPUSH key item…` through the key API, replicated as one `RPUSH`. `lens` cut `bytes` into
/// the items.
fn push_items(ctx: &Context, key: &[u8], bytes: &[u8], lens: &[usize]) -> Result<(), String> {
    // SAFETY: Redis's API pointers, set at load, with a live context Redis passed us; every
    // string and key created here is freed here, and Redis keeps no pointer to them (ListPush
    // copies the bytes, Replicate takes its own references).
    unsafe {
        let (
            Some(create),
            Some(free),
            Some(open),
            Some(key_type),
            Some(push),
            Some(close),
            Some(replicate),
        ) = (
            raw::RedisModule_CreateString,
            raw::RedisModule_FreeString,
            raw::RedisModule_OpenKey,
            raw::RedisModule_KeyType,
            raw::RedisModule_ListPush,
            raw::RedisModule_CloseKey,
            raw::RedisModule_Replicate,
        )
        else {
            return Err("no list API".into());
        };
        let ctx = ctx.ctx;
        let name = create(ctx, key.as_ptr().cast(), key.len());
        let k = open(ctx, name, raw::REDISMODULE_WRITE as c_int);
        let t = key_type(k);
        if t != raw::REDISMODULE_KEYTYPE_EMPTY as c_int
            && t != raw::REDISMODULE_KEYTYPE_LIST as c_int
        {
            close(k);
            free(ctx, name);
            return Err("the fallback list's key holds another type".into());
        }
        let mut items = Vec::with_capacity(lens.len());
        let mut rest = bytes;
        let mut result = Ok(());
        for &len in lens {
            let Some((item, after)) = rest.split_at_checked(len) else {
                result = Err("journal items cut wrong".into());
                break;
            };
            rest = after;
            let s = create(ctx, item.as_ptr().cast(), item.len());
            if push(k, raw::REDISMODULE_LIST_TAIL as c_int, s) != raw::REDISMODULE_OK as c_int {
                free(ctx, s);
                result = Err("RedisModule_ListPush refused an item".into());
                break;
            }
            items.push(s);
        }
        close(k);
        // What was pushed is replicated, even after a failure: the replicas keep the same list.
        if !items.is_empty() {
            replicate(
                ctx,
                c"RPUSH".as_ptr(),
                c"sv".as_ptr(),
                name,
                items.as_mut_ptr(),
                items.len(),
            );
        }
        for s in items {
            free(ctx, s);
        }
        free(ctx, name);
        result
    }
}
