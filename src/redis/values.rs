//! `payload value`: reading a key's value through the module API, on the main thread, at the
//! moment of its event (the form it takes is `core/value.rs`'s), and the old value from the
//! server's `Key` event (Redis 7.2+, Valkey 8), which fires while the old value is readable.
//!
//! Reads have no effect on the data: keys are opened with NOTOUCH and, where the server has it,
//! NOEFFECTS. `RedisModule_StringDMA` would decode an `embstr` or integer string in place (the
//! server's value replaced inside the notification of the command that wrote it, which may
//! still use it), so it is only used on strings longer than 44 bytes (always `raw`) and on old
//! values (the server's `Key` event allows it); a short string is read with a `GET` through
//! `RedisModule_Call`, which INFO commandstats counts.

use std::ffi::{c_int, c_long, c_void};
use std::ptr::null_mut;

use redis_module::raw;

use crate::core::value::{Data, Kind, ValueWriter, Which, NO_TTL};
use crate::redis::config;

/// `OBJ_ENCODING_EMBSTR_SIZE_LIMIT` of Redis and Valkey: a longer string is always `raw`.
const EMBSTR_MAX: usize = 44;

/// The value of `keyname` right after its event (the keyspace callback), in the database the
/// context has selected.
/// `then` (the old value, if any) is appended in the same buffer: one allocation in all for
/// a string (each Vec growth is a Redis allocation; callgrind: 1,500 Ir per SET of growths).
pub fn capture(
    ctx: *mut raw::RedisModuleCtx,
    keyname: *mut raw::RedisModuleString,
    then: Option<&Data>,
) -> Data {
    let extra = then.map_or(0, |d| d.as_bytes().len());
    let mut out = Vec::new();
    // SAFETY: FFI with the callback's live context and key name; the key is closed below.
    unsafe {
        let Some(open) = raw::RedisModule_OpenKey else {
            return Data::default();
        };
        let key = open(ctx, keyname, open_mode());
        read_into(&mut out, Which::Now, ctx, keyname, key, extra);
        if let Some(then) = then {
            out.extend_from_slice(then.as_bytes());
        }
        if !key.is_null() {
            if let Some(close) = raw::RedisModule_CloseKey {
                close(key);
            }
        }
    }
    Data::from_bytes(out)
}

/// The value of a key the server opened (a snapshot's SCAN), as [`capture`] reads it.
pub fn read(
    ctx: *mut raw::RedisModuleCtx,
    keyname: *mut raw::RedisModuleString,
    key: *mut raw::RedisModuleKey,
) -> Option<Box<Data>> {
    if !config::payload_value() {
        return None;
    }
    let mut out = Vec::new();
    // SAFETY: FFI with a context, key name and open key that the caller's callback holds.
    unsafe { read_into(&mut out, Which::Now, ctx, keyname, key, 0) };
    Some(Box::new(Data::from_bytes(out)))
}

/// READ, NOTOUCH, and NOEFFECTS where the server knows it (Redis 7.2+, Valkey 8; Redis 7.0
/// refuses modes it does not know).
fn open_mode() -> c_int {
    let wanted = raw::REDISMODULE_READ
        | raw::REDISMODULE_OPEN_KEY_NOTOUCH
        | raw::REDISMODULE_OPEN_KEY_NOEFFECTS;
    // SAFETY: a pure query of the API, no arguments.
    let all = unsafe { raw::RedisModule_GetOpenKeyModesAll.map(|f| f()) };
    let all = all.map_or(
        (raw::REDISMODULE_READ | raw::REDISMODULE_OPEN_KEY_NOTOUCH) as c_int,
        |all| all | raw::REDISMODULE_READ as c_int,
    );
    wanted as c_int & all
}

fn kind_of(key_type: c_int) -> Kind {
    match key_type as isize {
        raw::REDISMODULE_KEYTYPE_EMPTY => Kind::None,
        raw::REDISMODULE_KEYTYPE_STRING => Kind::String,
        raw::REDISMODULE_KEYTYPE_LIST => Kind::List,
        raw::REDISMODULE_KEYTYPE_HASH => Kind::Hash,
        raw::REDISMODULE_KEYTYPE_SET => Kind::Set,
        raw::REDISMODULE_KEYTYPE_ZSET => Kind::Zset,
        raw::REDISMODULE_KEYTYPE_STREAM => Kind::Stream,
        // A module's type, or a type newer than this module: its name, not its value.
        _ => Kind::Module,
    }
}

/// Bytes of a module string.
///
/// # Safety
/// `s` is a live module string (or null); the slice lives as long as it does.
pub unsafe fn bytes<'a>(s: *const raw::RedisModuleString) -> &'a [u8] {
    // SAFETY: what the caller guarantees (see # Safety above).
    unsafe {
        let Some(ptr_len) = raw::RedisModule_StringPtrLen else {
            return &[];
        };
        if s.is_null() {
            return &[];
        }
        let mut len = 0;
        let ptr = ptr_len(s, &mut len);
        if ptr.is_null() {
            return &[];
        }
        std::slice::from_raw_parts(ptr.cast::<u8>(), len)
    }
}

/// # Safety
/// `s` is a module string this code owns (or null).
unsafe fn free(s: *mut raw::RedisModuleString) {
    // SAFETY: what the caller guarantees (see # Safety above).
    unsafe {
        if let (false, Some(free)) = (s.is_null(), raw::RedisModule_FreeString) {
            free(null_mut(), s);
        }
    }
}

/// Writes the section `which` of the value of the open `key` (null: gone).
///
/// # Safety
/// Live context, key name and key (or a null key), on the main thread.
unsafe fn read_into(
    out: &mut Vec<u8>,
    which: Which,
    ctx: *mut raw::RedisModuleCtx,
    keyname: *mut raw::RedisModuleString,
    key: *mut raw::RedisModuleKey,
    extra: usize,
) {
    // SAFETY: what the caller guarantees (see # Safety above).
    unsafe {
        let kind = if key.is_null() {
            Kind::None
        } else {
            raw::RedisModule_KeyType.map_or(Kind::None, |f| kind_of(f(key)))
        };
        let ttl = match (kind, raw::RedisModule_GetExpire) {
            (Kind::None, _) | (_, None) => NO_TTL,
            (_, Some(get)) => match get(key) {
                t if t == raw::REDISMODULE_NO_EXPIRE as i64 => NO_TTL,
                // A key already past its time (not yet deleted) has none left.
                t => t.max(0),
            },
        };
        let max_bytes = config::value_max_bytes();
        let len = match kind {
            Kind::None | Kind::Module => 0,
            _ => raw::RedisModule_ValueLength.map_or(0, |f| f(key)),
        };
        // The whole section at once: the header, a string's bytes (a collection's grow as
        // they come), and what the caller appends.
        let room = if kind == Kind::String {
            len.min(max_bytes) + 10
        } else {
            64
        };
        out.reserve(17 + room + extra);
        let mut w = ValueWriter::begin(out, which, kind, ttl, max_bytes);
        if w.open() && kind != Kind::None && kind != Kind::Module {
            // A string's length is its bytes; a collection's, its elements (each counts one).
            let fits = if kind == Kind::String {
                w.fits(len, 1)
            } else {
                w.fits(0, len)
            };
            if !fits {
                w.too_large();
            } else {
                match kind {
                    Kind::String => read_string(&mut w, which, ctx, keyname, key, len),
                    Kind::List => read_list(&mut w, key, len),
                    Kind::Set | Kind::Hash => read_scan(&mut w, key, kind),
                    Kind::Zset => read_zset(&mut w, key),
                    Kind::Stream => read_stream(&mut w, key),
                    Kind::None | Kind::Module => {}
                }
            }
        }
        w.finish();
    }
}

/// # Safety
/// As [`read_into`], `key` a string.
unsafe fn read_string(
    w: &mut ValueWriter<'_>,
    which: Which,
    ctx: *mut raw::RedisModuleCtx,
    keyname: *mut raw::RedisModuleString,
    key: *mut raw::RedisModuleKey,
    len: usize,
) {
    // SAFETY: what the caller guarantees (see # Safety above).
    unsafe {
        if which == Which::Old || len > EMBSTR_MAX {
            if let Some(dma) = raw::RedisModule_StringDMA {
                let mut n = 0;
                let ptr = dma(key, &mut n, raw::REDISMODULE_READ as c_int);
                if !ptr.is_null() {
                    w.string(std::slice::from_raw_parts(ptr.cast::<u8>(), n));
                }
            }
            return;
        }
        let (Some(call), Some(ptr_of), Some(free_reply)) = (
            raw::RedisModule_Call,
            raw::RedisModule_CallReplyStringPtr,
            raw::RedisModule_FreeCallReply,
        ) else {
            return;
        };
        let reply = call(ctx, c"GET".as_ptr(), c"s".as_ptr(), keyname);
        if reply.is_null() {
            return;
        }
        let mut n = 0;
        let ptr = ptr_of(reply, &mut n);
        if !ptr.is_null() {
            w.string(std::slice::from_raw_parts(ptr.cast::<u8>(), n));
        }
        free_reply(reply);
    }
}

/// # Safety
/// As [`read_into`], `key` a list of `len` elements.
unsafe fn read_list(w: &mut ValueWriter<'_>, key: *mut raw::RedisModuleKey, len: usize) {
    // SAFETY: what the caller guarantees (see # Safety above).
    unsafe {
        let Some(get) = raw::RedisModule_ListGet else {
            return;
        };
        // In order: the server keeps its iterator between neighbouring indexes.
        for i in 0..len {
            let item = get(key, i as c_long);
            let more = w.string(bytes(item));
            free(item);
            if !more {
                break;
            }
        }
    }
}

/// The writer and the kind, for the scan callback.
struct ScanInto<'w, 'o> {
    w: &'w mut ValueWriter<'o>,
    kind: Kind,
}

/// # Safety
/// As [`read_into`], `key` a set or a hash.
unsafe fn read_scan(w: &mut ValueWriter<'_>, key: *mut raw::RedisModuleKey, kind: Kind) {
    // SAFETY: what the caller guarantees (see # Safety above).
    unsafe {
        let (Some(create), Some(scan), Some(destroy)) = (
            raw::RedisModule_ScanCursorCreate,
            raw::RedisModule_ScanKey,
            raw::RedisModule_ScanCursorDestroy,
        ) else {
            return;
        };
        let cursor = create();
        let mut into = ScanInto { w, kind };
        while into.w.open()
            && scan(
                key,
                cursor,
                Some(on_element),
                (&raw mut into).cast::<c_void>(),
            ) != 0
        {}
        destroy(cursor);
    }
}

extern "C" fn on_element(
    _key: *mut raw::RedisModuleKey,
    field: *mut raw::RedisModuleString,
    value: *mut raw::RedisModuleString,
    privdata: *mut c_void,
) {
    // SAFETY: `privdata` is the `ScanInto` that `read_scan` lent for this scan; the strings are
    // the server's, alive for this call.
    unsafe {
        let into = &mut *privdata.cast::<ScanInto<'_, '_>>();
        if into.kind == Kind::Hash {
            into.w.pair(bytes(field), bytes(value));
        } else {
            into.w.string(bytes(field));
        }
    }
}

/// # Safety
/// As [`read_into`], `key` a sorted set.
unsafe fn read_zset(w: &mut ValueWriter<'_>, key: *mut raw::RedisModuleKey) {
    // SAFETY: what the caller guarantees (see # Safety above).
    unsafe {
        let (Some(first), Some(current), Some(next), Some(stop)) = (
            raw::RedisModule_ZsetFirstInScoreRange,
            raw::RedisModule_ZsetRangeCurrentElement,
            raw::RedisModule_ZsetRangeNext,
            raw::RedisModule_ZsetRangeStop,
        ) else {
            return;
        };
        // By score, as ZRANGE gives them.
        if first(key, f64::NEG_INFINITY, f64::INFINITY, 0, 0) != raw::REDISMODULE_OK as c_int {
            return;
        }
        loop {
            let mut score = 0.0;
            let member = current(key, &mut score);
            if member.is_null() {
                break;
            }
            let more = w.scored(bytes(member), score);
            free(member);
            if !more || next(key) == 0 {
                break;
            }
        }
        stop(key);
    }
}

/// # Safety
/// As [`read_into`], `key` a stream.
unsafe fn read_stream(w: &mut ValueWriter<'_>, key: *mut raw::RedisModuleKey) {
    // SAFETY: what the caller guarantees (see # Safety above).
    unsafe {
        let (Some(start), Some(next_id), Some(next_field), Some(stop)) = (
            raw::RedisModule_StreamIteratorStart,
            raw::RedisModule_StreamIteratorNextID,
            raw::RedisModule_StreamIteratorNextField,
            raw::RedisModule_StreamIteratorStop,
        ) else {
            return;
        };
        let reverse = raw::REDISMODULE_STREAM_ITERATOR_REVERSE as c_int;
        if start(key, reverse, null_mut(), null_mut()) != raw::REDISMODULE_OK as c_int {
            return;
        }
        let mut id = raw::RedisModuleStreamID { ms: 0, seq: 0 };
        let mut fields: c_long = 0;
        // The last entry only: the stream's latest state, not its history.
        if next_id(key, &mut id, &mut fields) == raw::REDISMODULE_OK as c_int
            && w.stream_id(format!("{}-{}", id.ms, id.seq).as_bytes())
        {
            for _ in 0..fields {
                let (mut f, mut v) = (null_mut(), null_mut());
                if next_field(key, &mut f, &mut v) != raw::REDISMODULE_OK as c_int {
                    break;
                }
                let more = w.pair(bytes(f), bytes(v));
                free(f);
                free(v);
                if !more {
                    break;
                }
            }
        }
        stop(key);
    }
}

/// `RedisModuleKeyInfoV1`, the data of the `Key` server event (redismodule.h).
#[repr(C)]
struct KeyInfo {
    version: u64,
    key: *mut raw::RedisModuleKey,
}

/// Whether the `Key` event's subscription is in place (main thread only).
static SUBSCRIBED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Subscribes to the `Key` event while `payload value` is on, and only then: it fires at every
/// overwrite and deletion, and costs the server a context per call. Returns false where the
/// server has no such event (Redis 7.0: old values are absent there).
pub fn sync_old_values(ctx: *mut raw::RedisModuleCtx, wanted: bool) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    if SUBSCRIBED.load(Relaxed) == wanted {
        return true;
    }
    let event = raw::RedisModuleEvent {
        id: raw::REDISMODULE_EVENT_KEY,
        dataver: 1,
    };
    // SAFETY: FFI with a live module context (the step's); the callback is ours.
    let (supported, done) = unsafe {
        let supported = raw::RedisModule_IsSubEventSupported
            .is_some_and(|f| f(event, raw::REDISMODULE_SUBEVENT_KEY_DELETED) != 0);
        let done = match raw::RedisModule_SubscribeToServerEvent {
            Some(sub) if supported => {
                let callback: raw::RedisModuleEventCallback = wanted.then_some(on_key_event);
                sub(ctx, event, callback) == raw::REDISMODULE_OK as c_int
            }
            _ => false,
        };
        (supported, done)
    };
    // Where the server lacks the event there is nothing to retry at the next step.
    if done || !supported {
        SUBSCRIBED.store(wanted, Relaxed);
    }
    done
}

/// Forgets the subscription (the module is unloading: Redis drops its subscriptions).
pub fn forget_subscription() {
    SUBSCRIBED.store(false, std::sync::atomic::Ordering::Relaxed);
}

/// The `Key` event: a key is about to be deleted, expired, evicted or overwritten, its value
/// still readable. Captured for the keyspace event that follows (see `Module::on_event`).
extern "C" fn on_key_event(
    ctx: *mut raw::RedisModuleCtx,
    _e: raw::RedisModuleEvent,
    _sub: u64,
    data: *mut c_void,
) {
    let Some(module) = crate::redis::runtime::current() else {
        return;
    };
    if !config::payload_value() || data.is_null() {
        return;
    }
    // SAFETY: Redis passes a `RedisModuleKeyInfoV1` with a key it opened for reading, alive
    // for this call; the context has the key's database selected.
    unsafe {
        let info = &*data.cast::<KeyInfo>();
        let Some(name_of) = raw::RedisModule_GetKeyNameFromModuleKey else {
            return;
        };
        if info.key.is_null() {
            return;
        }
        let name = name_of(info.key);
        let key = bytes(name);
        if !module.captures_old_value(&redis_module::Context::new(ctx), key) {
            return;
        }
        let db = i64::from(raw::RedisModule_GetSelectedDb.map_or(0, |f| f(ctx)));
        let mut out = Vec::new();
        read_into(&mut out, Which::Old, ctx, name.cast_mut(), info.key, 0);
        module
            .pending_old
            .lock()
            .put(db, key, Data::from_bytes(out));
    }
}
