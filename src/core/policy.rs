//! The module's policy figures in one place: how much work one main-thread step may do, how
//! long the publisher waits for what, how the logs are rate-limited. Each says why it has its
//! value; the code that applies it names it from here.

use std::time::Duration;

// ------------------------------------------------------------------ main thread

/// Events moved between memory and the fallback list per main-thread step (well under 1 ms).
pub const SLICE: usize = 500;

/// Events appended per step when switching to the journal moves what waits in memory to the
/// list (one RPUSH of this many: about 1 ms); the switch ends in the step that empties the
/// memory tail, which outpaces the events each step brings.
pub const JOURNAL_SWITCH_SLICE: usize = 5_000;

/// While the broker is away, events spill to the list together after waiting this long in
/// memory (or at once when memory is full): Redis's own cron wakes the event loop every 100 ms,
/// so they reach the list within about 0.2 s (the README promises about a second).
pub const SPILL_DELAY: Duration = Duration::from_millis(100);

/// Grace period before events waiting on an unusable broker go to the fallback list.
pub const AWAY_AFTER: Duration = Duration::from_secs(1);

/// `key_evt_amqp.queue_capacity`: events held in memory before they spill, by default and at
/// most.
pub const DEFAULT_QUEUE_CAPACITY: i64 = 100_000;
pub const MAX_QUEUE_CAPACITY: i64 = 100_000_000;

/// `key_evt_amqp.value_max_bytes`: a value larger than this is left out of its event (marked
/// `value_truncated`), so one event's capture on the main thread is bounded; at most 512 MiB,
/// Redis's own limit of a string.
pub const DEFAULT_VALUE_MAX_BYTES: i64 = 65_536;
pub const MAX_VALUE_MAX_BYTES: i64 = 512 * 1024 * 1024;
/// `key_evt_amqp.queue_capacity_bytes`: bytes the events in memory may take (in flight
/// included) before they spill, by default, at least and at most. Values make events large;
/// 64 MiB holds the default 100,000 events of short keys (about 130 bytes each) four times
/// over. At least 1 MiB: a publisher batch (1000 events) of keys up to about 900 bytes still
/// fits, so a small bound does not shrink batches to a few events. At most 16 GiB.
pub const DEFAULT_QUEUE_CAPACITY_BYTES: i64 = 64 << 20;
pub const MIN_QUEUE_CAPACITY_BYTES: i64 = 1 << 20;
pub const MAX_QUEUE_CAPACITY_BYTES: i64 = 16 << 30;

/// Redis counts the module's memory queue and its list towards `maxmemory`. Once
/// `RedisModule_GetUsedMemoryRatio` (used memory over `maxmemory`, as Redis computes it for
/// eviction) reaches this, the module stops growing: the list keeps its length (each event
/// that joins it pushes the oldest out, counted as dropped) and memory holds at most
/// [`MEMORY_FULL_QUEUE`] events. The 10 % margin leaves room for users' writes and for the
/// module's own working memory.
pub const MEMORY_FULL_RATIO: f32 = 0.9;

/// Events the memory queue holds while Redis is near `maxmemory` (a publisher batch's worth
/// twice over, about 200 KB).
pub const MEMORY_FULL_QUEUE: usize = 2 * BATCH;

/// The module checks the list's length (LLEN, O(1)) at least this often while it counts
/// items there, to notice a list deleted, renamed or trimmed by hand.
pub const LIST_CHECK_EVERY_MS: u64 = 1000;

/// Events the inbox keeps room for once the outbox is idle.
pub const INBOX_IDLE: usize = 64;

/// The event-loop hook is dropped after this long without work (see `redis::hook`).
pub const UNHOOK_AFTER_MS: u64 = 1000;

/// How long a shutdown waits for the broker to confirm what is in memory.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// How often a cluster node checks which slots it serves (one `CLUSTER NODES`).
pub const SLOT_CHECK_EVERY_MS: u64 = 1000;

/// A snapshot (`key_evt_amqp.snapshot`) scans keys for at most about this long per
/// event-loop iteration (wall clock, checked every [`SNAPSHOT_CHECK_EVERY`] scan calls): the
/// acceptance bound on the longest main-thread step is 2 ms.
pub const SNAPSHOT_SLICE: Duration = Duration::from_micros(1000);

/// Scan calls (each one hash bucket, usually one key) between two looks at the clock.
pub const SNAPSHOT_CHECK_EVERY: u32 = 8;

/// Slots looked at per step for a backlog left there (one `EXISTS` each).
pub const SCAN_SLICE: usize = 256;

// ------------------------------------------------------------------ publisher

/// Events published per batch: written in one go, their confirms read together.
pub const BATCH: usize = 1000;

/// Confirmed items leave the list's front in trims of at least this many, or once the first of
/// them has waited [`TRIM_DELAY`]: each trim costs a few list commands (LLEN, LRANGE of the 16
/// items before the new front, LTRIM, maybe LSET), which small confirmed batches would pay at
/// every step (callgrind, `durability journal`, Valkey 8.0: 1,651 Ir per SET at -P 16, 9,875
/// at -P 1). The price: after a crash, the events confirmed in the last 100 ms (at most 1,000
/// more) may be sent again.
pub const TRIM_MIN: u64 = 1000;
pub const TRIM_DELAY: Duration = Duration::from_millis(100);

/// The outbox refills from the list when fewer than this many events are in flight or ready.
pub const REFILL_BELOW: usize = 2 * BATCH;

/// For the TCP connection, the TLS handshake, the login, the channel and confirm mode together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A batch not confirmed within this time means a dead or stuck connection.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// A polite close never waits longer for a peer that may be gone.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the idle publisher sleeps between looks at its work (a notify cuts it short).
pub const IDLE_WAIT: Duration = Duration::from_millis(200);

/// While events flow, the publisher looks at the outbox at least this often without being
/// woken, so that the keyspace callback can hand events over without a system call (the
/// delay it adds to an event, at most).
pub const POLL_EVERY: Duration = Duration::from_millis(1);

/// The publisher polls for this long after it last found events ready; then it sleeps until
/// notified (a slower trickle goes through the main thread's step, which wakes it).
pub const POLL_FOR: Duration = Duration::from_millis(20);

/// While it polls, the publisher answers the broker (heartbeats, a close, a block) at most
/// this often, not at every look: an answer is three system calls.
pub const ANSWER_WHILE_POLLING: Duration = Duration::from_millis(10);

/// Reconnection back-off: doubles from the first to the cap, with jitter.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

// ------------------------------------------------------------------ logs

/// Drops and unroutable events are logged at once, then summed at most this often.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// Connection lines: a burst of this many, then one line every [`LINK_LOG_EVERY_MS`].
pub const LINK_LOG_BURST: u64 = 10;
pub const LINK_LOG_EVERY_MS: u64 = 6_000;
