//! `key_evt_amqp.snapshot [DB n] [MATCH mask …]` and `key_evt_amqp.snapshot_cancel`: the
//! commands, and the slice of the scan that each main-thread step runs (`step.rs`).
//!
//! A slice switches the step's context to the database being scanned, calls
//! `RedisModule_Scan` until about [`SNAPSHOT_SLICE`] has passed, the database is done or the
//! memory queue has no more room for the snapshot ([`room`]), and switches back. Each key
//! that passes the masks is read and enqueued at once ([`Module::enqueue_with`]): its event
//! takes its place in the one ordered stream, after every live event of the writes before it
//! and before those of the writes after it. The pure part (arguments, id, order of the
//! databases, the room) is `core/snapshot.rs`.
//!
//! In a cluster the command starts (and cancel ends) the snapshot on every master, with the
//! same id, over the cluster bus; each master scans only its own keys.

use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use redis_module::{raw, Context, ContextFlags, RedisError, RedisResult, RedisString, RedisValue};

use crate::core::arg_error::ArgError;
use crate::core::keymask::KeyMasks;
use crate::core::placement::Placement;
use crate::core::policy::{SNAPSHOT_CHECK_EVERY, SNAPSHOT_SLICE};
use crate::core::snapshot::{
    self, room, Next, Request, Scope, Snapshot, EVENT_BEGIN, EVENT_END, EVENT_KEY,
};
use crate::core::value::Data;
use crate::redis::commands::{self, Apply};
use crate::redis::fallback::in_db;
use crate::redis::runtime::Module;
use crate::redis::scan::ScanCursor;
use crate::redis::{acl, hook, log, values};
use crate::state::stats::Stats;

pub const SNAPSHOT: &str = "key_evt_amqp.snapshot";
pub const SNAPSHOT_CANCEL: &str = "key_evt_amqp.snapshot_cancel";

/// The commands as other nodes send them over the cluster bus: the snapshot with its id
/// first (`ID [DB n] [MATCH mask …]`), the cancel as given.
pub const BUS_TABLE: &[(&str, Apply)] = &[
    (SNAPSHOT, apply_bus_snapshot),
    (SNAPSHOT_CANCEL, apply_bus_cancel),
];

/// Snapshots started in this process, for their ids. The library stays mapped across MODULE
/// UNLOAD, so ids stay unique under one run id.
static STARTED: AtomicU64 = AtomicU64::new(0);

fn err(text: String) -> RedisError {
    RedisError::String(format!("ERR {text}"))
}

fn arg_err(e: &ArgError) -> RedisError {
    err(format!("{SNAPSHOT}: {e}"))
}

/// Refuses what a node that is loading, or not a master, cannot do.
fn check_node(ctx: &Context, m: &Module, name: &str) -> Result<(), RedisError> {
    if ctx.get_flags().contains(ContextFlags::LOADING) || m.loading.load(Relaxed) {
        return Err(err(format!(
            "{name}: this node is loading its data; try again once it has loaded"
        )));
    }
    if !m.shared.master.load(Relaxed) {
        return Err(err(format!(
            "{name}: this node is a replica, which does not publish; send it to a master \
             (in a cluster, any master starts it on every master)"
        )));
    }
    Ok(())
}

/// `key_evt_amqp.snapshot [DB n] [MATCH mask …]`: replies with the snapshot's id.
pub fn snapshot(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    acl::require_config_permission(ctx, SNAPSHOT)?;
    let m = commands::module()?;
    check_node(ctx, &m, SNAPSHOT)?;
    let argv: Vec<&[u8]> = args.iter().map(RedisString::as_slice).collect();
    let argv = argv.get(1..).unwrap_or_default();
    let request = snapshot::parse(argv).map_err(|e| arg_err(&e))?;
    if let Scope::Db(n) = request.scope {
        let accepted = if m.cluster {
            "0: a cluster has database 0 only"
        } else {
            "a database of this server, 0 to `databases` - 1"
        };
        let exists = !m.cluster || n == 0;
        if !exists || in_db(ctx, i64::from(n), || ()).is_err() {
            return Err(arg_err(&ArgError::new(
                "DB",
                n.to_string().as_bytes(),
                accepted,
            )));
        }
    }
    let id = m.start_snapshot(None, request)?;
    if m.cluster {
        let mut bus: Vec<&[u8]> = Vec::with_capacity(argv.len() + 1);
        bus.push(id.as_bytes());
        bus.extend_from_slice(argv);
        commands::broadcast(ctx, SNAPSHOT, &bus);
    }
    Ok(RedisValue::BulkString(id))
}

/// `key_evt_amqp.snapshot_cancel`: ends the running snapshot with a cancelled
/// `snapshot_end`. Replies with its id, or nil when none runs on this node (in a cluster the
/// cancel goes to every other node all the same).
pub fn snapshot_cancel(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    acl::require_config_permission(ctx, SNAPSHOT_CANCEL)?;
    if args.len() > 1 {
        return Err(RedisError::WrongArity);
    }
    let m = commands::module()?;
    check_node(ctx, &m, SNAPSHOT_CANCEL)?;
    let cancelled = m.cancel_snapshot();
    if m.cluster {
        commands::broadcast(ctx, SNAPSHOT_CANCEL, &[]);
    }
    Ok(cancelled.map_or(RedisValue::Null, RedisValue::BulkString))
}

/// A snapshot another master started: `ID [DB n] [MATCH mask …]`.
fn apply_bus_snapshot(args: &[&[u8]]) -> RedisResult {
    let Some((&id, rest)) = args.split_first() else {
        return Err(RedisError::WrongArity);
    };
    if !snapshot::valid_id(id) {
        return Err(err(format!(
            "{SNAPSHOT}: invalid snapshot id '{}'",
            crate::core::escape::escape(id)
        )));
    }
    let m = commands::module()?;
    if !m.publishes() {
        // Replicas (and a node loading) do not snapshot: their masters do.
        return Ok(RedisValue::Null);
    }
    let request = snapshot::parse(rest).map_err(|e| arg_err(&e))?;
    let id = String::from_utf8_lossy(id).into_owned();
    m.start_snapshot(Some(id), request)
        .map(RedisValue::BulkString)
}

fn apply_bus_cancel(args: &[&[u8]]) -> RedisResult {
    if !args.is_empty() {
        return Err(RedisError::WrongArity);
    }
    let m = commands::module()?;
    match m.cancel_snapshot() {
        Some(id) => Ok(RedisValue::BulkString(id)),
        None => Err(err(format!(
            "{SNAPSHOT_CANCEL}: no snapshot is running here"
        ))),
    }
}

/// What one call of `RedisModule_Scan` hands the key callback.
struct Slice<'a> {
    module: &'a Module,
    masks: &'a KeyMasks,
    db: i64,
    emitted: u64,
}

/// Why a slice stopped.
enum Stop {
    /// The database is scanned to its end.
    DbDone,
    /// Time or room ran out: the next step goes on.
    Later,
}

impl Module {
    /// Starts a snapshot with `id` (from another node) or a new one. Refused while one runs.
    fn start_snapshot(&self, id: Option<String>, request: Request) -> Result<String, RedisError> {
        let mut running = self.snapshot.lock();
        if let Some(s) = running.as_ref() {
            return Err(err(format!(
                "{SNAPSHOT}: snapshot {} is running; cancel it ({SNAPSHOT_CANCEL}) or wait for \
                 its snapshot_end",
                s.id
            )));
        }
        let id = id.unwrap_or_else(|| {
            snapshot::id(&self.run_id.to_hex(), STARTED.fetch_add(1, Relaxed) + 1)
        });
        let scope = match request.scope {
            Scope::Db(n) => format!("database {n}"),
            Scope::All => "every database".into(),
        };
        let masks = request
            .masks
            .as_ref()
            .map_or_else(|| "the module's masks".into(), |m| format!("masks {m}"));
        *running = Some(Snapshot::new(id.clone(), request, self.cluster));
        *self.scan_cursor.lock() = None;
        self.shared.stats.snapshot_keys.store(0, Relaxed);
        drop(running);
        log::notice(&format!("snapshot {id} started: {scope}, {masks}"));
        let _ = hook::hook(self.detached.ctx());
        hook::wake_main();
        Ok(id)
    }

    /// Ends the running snapshot, if any, with a cancelled `snapshot_end` emitted now.
    /// Returns its id.
    fn cancel_snapshot(&self) -> Option<String> {
        let mut running = self.snapshot.lock();
        let s = running.as_mut()?;
        s.cancel();
        let id = s.id.clone();
        self.end_snapshot(&mut running, true);
        Some(id)
    }

    /// Emits `snapshot_end` and forgets the snapshot.
    fn end_snapshot(&self, running: &mut Option<Snapshot>, cancelled: bool) {
        let Some(s) = running.take() else {
            return;
        };
        *self.scan_cursor.lock() = None;
        let data = cancelled.then(|| Box::new(Data::cancelled()));
        self.enqueue_with(s.scope.event_db(), EVENT_END, s.id.as_bytes(), data);
        let stats = &self.shared.stats;
        stats.snapshot_keys.store(s.keys, Relaxed);
        if cancelled {
            Stats::add(&stats.snapshots_cancelled, 1);
        } else {
            Stats::add(&stats.snapshots_completed, 1);
        }
        log::notice(&format!(
            "snapshot {} {}: {} keys",
            s.id,
            if cancelled { "cancelled" } else { "complete" },
            s.keys
        ));
    }

    /// A master's share of the snapshot for this step (see the module comment): at most about
    /// [`SNAPSHOT_SLICE`] of scanning, and none while the memory queue, holding `memory_len`
    /// events of `capacity`, or its bytes (`bytes_room` keys left), has no room for it. Asks
    /// for the next step while there is more.
    pub fn snapshot_step(
        &self,
        ctx: &Context,
        memory_len: usize,
        capacity: usize,
        bytes_room: usize,
    ) {
        let mut running = self.snapshot.lock();
        let deadline = Instant::now() + SNAPSHOT_SLICE;
        loop {
            let Some(s) = running.as_mut() else {
                return;
            };
            match s.next() {
                Next::Begin => {
                    self.enqueue(s.scope.event_db(), EVENT_BEGIN, s.id.as_bytes());
                    s.began();
                }
                Next::End { cancelled } => {
                    self.end_snapshot(&mut running, cancelled);
                    return;
                }
                Next::Scan(db) => {
                    let room = room(memory_len + self.inbox.lock().len(), capacity).min(bytes_room);
                    if room == 0 {
                        // Paused: the publisher wakes this thread once it has made room (or,
                        // with the broker away, the spill steps go on).
                        self.shared.room_wanted.store(true, Relaxed);
                        return;
                    }
                    match self.scan_slice(ctx, s, db, room, deadline) {
                        Ok(Stop::DbDone) => s.db_done(),
                        Ok(Stop::Later) => break,
                        Err(e) => {
                            if matches!(s.scope, Scope::Db(_)) {
                                log::warning(&format!("snapshot {}: {e}", s.id));
                            }
                            s.db_missing();
                        }
                    }
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        hook::wake_main();
    }

    /// Scans database `db` until it is done, `room` keys were emitted or `deadline` passed.
    /// `Err`: the server has no database `db`.
    fn scan_slice(
        &self,
        ctx: &Context,
        s: &mut Snapshot,
        db: u32,
        room: usize,
        deadline: Instant,
    ) -> Result<Stop, String> {
        let mut guard = self.scan_cursor.lock();
        if guard.as_ref().is_none_or(|c| c.db != db) {
            *guard = Some(ScanCursor::new(db).ok_or("no scan cursor API")?);
        }
        let Some(cursor) = guard.as_mut() else {
            return Ok(Stop::Later);
        };
        let settings = self.shared.settings();
        let mut slice = Slice {
            module: self,
            masks: s.masks.as_ref().unwrap_or(&settings.masks),
            db: i64::from(db),
            emitted: 0,
        };
        let stop = in_db(ctx, i64::from(db), || {
            let mut calls = 0u32;
            loop {
                let privdata = std::ptr::from_mut(&mut slice).cast::<c_void>();
                // SAFETY: the step's live context, switched to `db`, the cursor's database;
                // `on_key` only reads its key and takes `privdata` as this `Slice`.
                let more = unsafe { cursor.scan(ctx.ctx, Some(on_key), privdata) };
                if !more {
                    return Stop::DbDone;
                }
                calls += 1;
                if slice.emitted >= room as u64
                    || calls.is_multiple_of(SNAPSHOT_CHECK_EVERY) && Instant::now() >= deadline
                {
                    return Stop::Later;
                }
            }
        });
        let emitted = slice.emitted;
        s.emitted(emitted);
        Stats::add(&self.shared.stats.snapshot_keys, emitted);
        let stop = stop?;
        if matches!(stop, Stop::DbDone) {
            *guard = None;
        }
        Ok(stop)
    }
}

/// One key of the scan: skipped when it is the module's own list, does not pass the masks, or
/// is logically expired (its `expired` event comes when Redis deletes it); else read and
/// emitted as a `snapshot` event.
extern "C" fn on_key(
    ctx: *mut raw::RedisModuleCtx,
    keyname: *mut raw::RedisModuleString,
    key: *mut raw::RedisModuleKey,
    privdata: *mut c_void,
) {
    if privdata.is_null() || keyname.is_null() {
        return;
    }
    // SAFETY: `privdata` is the `Slice` that `scan_slice` passed, alive and not otherwise
    // borrowed during the scan call.
    let slice = unsafe { &mut *privdata.cast::<Slice>() };
    // SAFETY: Redis passes the key's name, alive for the duration of this call.
    let name = unsafe { values::bytes(keyname) };
    if Placement::is_fallback_key(name) || !slice.masks.matches(name) {
        return;
    }
    if !key.is_null() {
        // SAFETY: the open key Redis passes, valid for the duration of this call.
        let ttl = unsafe { raw::RedisModule_GetExpire.map_or(-1, |f| f(key)) };
        // 0: the time has passed (Redis says 0 rather than a negative remainder).
        if ttl == 0 {
            return;
        }
    }
    let data = if key.is_null() {
        None
    } else {
        values::read(ctx, keyname, key)
    };
    slice.module.enqueue_with(slice.db, EVENT_KEY, name, data);
    slice.emitted += 1;
}
