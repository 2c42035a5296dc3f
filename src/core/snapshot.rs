//! `key_evt_amqp.snapshot [DB n] [MATCH mask …]`: a walk of the existing keys, emitted as
//! events in the one ordered stream with the live ones.
//!
//! The stream of one snapshot on one node:
//!
//! ```text
//!   snapshot_begin (key: the id, db: n or -1)
//!   snapshot       (key, db), one per key that passes the masks, read when it is emitted
//!   …              live events in between, in the order Redis produced them
//!   snapshot_end   (key: the id, db: n or -1; cancelled with key_evt_amqp.snapshot_cancel)
//! ```
//!
//! The db of `snapshot_begin` and `snapshot_end` is the database snapshotted, or -1 for every
//! database (as FLUSHALL's `flushall` event has -1). The id is `<run_id>-snapshot-<n>`: the
//! 40-hex run id of the node that took the command and a decimal count of the snapshots
//! started in that process, from 1. In a cluster every master emits the same id.
//!
//! Pure: the parsing of the arguments, the id, which database comes next, and when to pause.
//! The shell (`redis/snapshot.rs`) scans and emits.

use crate::core::arg_error::ArgError;
use crate::core::keymask::KeyMasks;

/// The event of one key, and the events that frame a snapshot.
pub const EVENT_KEY: &[u8] = b"snapshot";
pub const EVENT_BEGIN: &[u8] = b"snapshot_begin";
pub const EVENT_END: &[u8] = b"snapshot_end";

/// The database that `snapshot_begin`/`snapshot_end` carry for a snapshot of every database.
pub const EVERY_DB: i64 = -1;

/// Which databases a snapshot walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `DB n`.
    Db(u32),
    /// No `DB`: every database (only 0 in a cluster).
    All,
}

impl Scope {
    /// The db of the framing events.
    pub fn event_db(self) -> i64 {
        match self {
            Scope::Db(n) => i64::from(n),
            Scope::All => EVERY_DB,
        }
    }
}

/// What the command asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub scope: Scope,
    /// `MATCH`'s masks; `None`: the module's key masks.
    pub masks: Option<KeyMasks>,
}

const ACCEPTED_ARGS: &str = "DB n, MATCH mask ... (MATCH last: every argument after it is a mask)";
const ACCEPTED_DB: &str = "a database number, 0 to 2147483647, given once";

/// Parses `[DB n] [MATCH mask …]` (keywords in any ASCII case). `MATCH` takes every argument
/// after it, at least one, in the module's mask syntax (`core/keymask.rs`, `ALL` included).
pub fn parse(args: &[&[u8]]) -> Result<Request, ArgError> {
    let mut scope = Scope::All;
    let mut db_given = false;
    let mut rest = args;
    while let Some((&word, tail)) = rest.split_first() {
        if word.eq_ignore_ascii_case(b"DB") {
            let Some((&n, tail)) = tail.split_first() else {
                return Err(ArgError::new("DB", b"", ACCEPTED_DB));
            };
            if db_given {
                return Err(ArgError::new("DB", n, ACCEPTED_DB));
            }
            let db = parse_db(n).ok_or_else(|| ArgError::new("DB", n, ACCEPTED_DB))?;
            scope = Scope::Db(db);
            db_given = true;
            rest = tail;
        } else if word.eq_ignore_ascii_case(b"MATCH") {
            if tail.is_empty() {
                return Err(ArgError::new("MATCH", b"", "one or more key masks"));
            }
            return Ok(Request {
                scope,
                masks: Some(KeyMasks::from_args(tail)),
            });
        } else {
            return Err(ArgError::new("argument", word, ACCEPTED_ARGS));
        }
    }
    Ok(Request { scope, masks: None })
}

/// A canonical non-negative decimal that fits Redis's `int` database ids.
fn parse_db(n: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(n).ok()?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u32>().ok().filter(|&db| db <= i32::MAX as u32)
}

/// The id of the `n`-th snapshot started on the node with this run id (hex).
pub fn id(run_id_hex: &str, n: u64) -> String {
    format!("{run_id_hex}-snapshot-{n}")
}

/// What a snapshot id may look like when it comes over the cluster bus: printable ASCII
/// without spaces, at most this long.
pub const MAX_ID_LEN: usize = 200;

pub fn valid_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.iter().all(|b| b.is_ascii_graphic())
}

/// What the shell does next for a running snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Emit `snapshot_begin`, then [`Snapshot::began`].
    Begin,
    /// Scan this database (from where its cursor is).
    Scan(u32),
    /// Emit `snapshot_end` (with the cancelled marker if so); the snapshot is over.
    End { cancelled: bool },
}

/// One running snapshot on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub id: String,
    pub scope: Scope,
    pub masks: Option<KeyMasks>,
    /// A cluster node has database 0 only.
    cluster: bool,
    next: Next,
    /// `snapshot` events emitted so far.
    pub keys: u64,
}

impl Snapshot {
    pub fn new(id: String, request: Request, cluster: bool) -> Snapshot {
        Snapshot {
            id,
            scope: request.scope,
            masks: request.masks,
            cluster,
            next: Next::Begin,
            keys: 0,
        }
    }

    pub fn next(&self) -> Next {
        self.next
    }

    /// `snapshot_begin` is emitted: the first database is next.
    pub fn began(&mut self) {
        if self.next == Next::Begin {
            self.next = Next::Scan(match self.scope {
                Scope::Db(n) => n,
                Scope::All => 0,
            });
        }
    }

    /// `n` more keys emitted from the database being scanned.
    pub fn emitted(&mut self, n: u64) {
        self.keys += n;
    }

    /// The scan of the current database is complete: the next one, or the end.
    pub fn db_done(&mut self) {
        let Next::Scan(db) = self.next else {
            return;
        };
        self.next = match self.scope {
            Scope::All if !self.cluster => match db.checked_add(1) {
                Some(next) if next <= i32::MAX as u32 => Next::Scan(next),
                _ => Next::End { cancelled: false },
            },
            _ => Next::End { cancelled: false },
        };
    }

    /// The server has no database to scan here (the one after the last, or `DB n` out of
    /// range on this node): the snapshot is over.
    pub fn db_missing(&mut self) {
        if matches!(self.next, Next::Scan(_)) {
            self.next = Next::End { cancelled: false };
        }
    }

    /// `snapshot_cancel`: the end comes next, marked cancelled (also before the begin was
    /// emitted: the consumer then sees both).
    pub fn cancel(&mut self) {
        self.next = Next::End { cancelled: true };
    }
}

/// How many more events a snapshot may add now, with `memory_len` events in the module's
/// memory queue (inbox included) of `capacity`: up to half of it, so that the live events
/// keep the other half and the snapshot alone never makes the queue spill to the fallback
/// list. 0: pause. While the broker is away the queue spills anyway, and the snapshot goes on
/// as fast as the list takes the events.
pub fn room(memory_len: usize, capacity: usize) -> usize {
    (capacity / 2).max(1).saturating_sub(memory_len)
}

/// The same for the bytes bound (`queue_capacity_bytes`): half of it, less what waits, counting
/// each key at `per_key` bytes (its value's cap, see [`KEY_BYTES_MAX`]). At least one key.
pub fn room_bytes(memory_bytes: usize, capacity_bytes: usize, per_key: usize) -> usize {
    let free = (capacity_bytes / 2).saturating_sub(memory_bytes);
    (free / per_key.max(1)).max(usize::from(memory_bytes == 0))
}

/// What [`room_bytes`] counts a key at, at most: an event's own size and a value of up to
/// 16 KiB. Keys with larger values may pass half the bound in one slice; the outbox's own
/// bound then spills them, as it does any event.
pub const KEY_BYTES_MAX: usize = 16 * 1024 + 256;

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<Vec<u8>> {
        s.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    fn parse_strs(s: &[&str]) -> Result<Request, ArgError> {
        let owned = args(s);
        let refs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        parse(&refs)
    }

    #[test]
    fn no_argument_is_every_database_with_the_modules_masks() {
        assert_eq!(
            parse_strs(&[]),
            Ok(Request {
                scope: Scope::All,
                masks: None
            })
        );
    }

    #[test]
    fn db_and_match_in_any_case() {
        let r = parse_strs(&["db", "3", "Match", "^user:", "log$"]).unwrap();
        assert_eq!(r.scope, Scope::Db(3));
        let masks = r.masks.unwrap();
        assert_eq!(masks.len(), 2);
        assert!(masks.matches(b"user:1") && masks.matches(b"a.log"));
        assert!(!masks.matches(b"x"));
        // ALL as everywhere else.
        let r = parse_strs(&["MATCH", "a", "all"]).unwrap();
        assert!(r.masks.unwrap().is_all());
    }

    #[test]
    fn match_takes_every_argument_after_it() {
        let r = parse_strs(&["MATCH", "a", "DB", "1"]).unwrap();
        assert_eq!(r.scope, Scope::All);
        assert_eq!(r.masks.unwrap().len(), 3);
    }

    #[test]
    fn bad_arguments_name_themselves_and_what_is_accepted() {
        for (input, name, value) in [
            (&["DB"][..], "DB", ""),
            (&["DB", "-1"][..], "DB", "-1"),
            (&["DB", "x"][..], "DB", "x"),
            (&["DB", "+1"][..], "DB", "+1"),
            (&["DB", "2147483648"][..], "DB", "2147483648"),
            (&["DB", ""][..], "DB", ""),
            (&["DB", "1", "DB", "2"][..], "DB", "2"),
            (&["MATCH"][..], "MATCH", ""),
            (&["COUNT", "10"][..], "argument", "COUNT"),
            (&["DB", "1", "bogus"][..], "argument", "bogus"),
        ] {
            let e = parse_strs(input).unwrap_err();
            assert_eq!(e.name, name, "{input:?}");
            assert_eq!(e.value.as_deref(), Some(value), "{input:?}");
            let text = e.to_string();
            assert!(text.contains(name) && text.contains("expected"), "{text}");
        }
        assert_eq!(
            parse_strs(&["DB", "2147483647"]).unwrap().scope,
            Scope::Db(2_147_483_647)
        );
    }

    #[test]
    fn ids_are_the_run_id_and_a_count() {
        let run = "ab".repeat(20);
        assert_eq!(id(&run, 7), format!("{run}-snapshot-7"));
        assert!(valid_id(id(&run, 7).as_bytes()));
        assert!(!valid_id(b""));
        assert!(!valid_id(b"a b"));
        assert!(!valid_id(&[b'a'; MAX_ID_LEN + 1]));
    }

    fn all(cluster: bool) -> Snapshot {
        Snapshot::new(
            "id".into(),
            Request {
                scope: Scope::All,
                masks: None,
            },
            cluster,
        )
    }

    #[test]
    fn every_database_in_turn_until_the_server_has_no_more() {
        let mut s = all(false);
        assert_eq!(s.next(), Next::Begin);
        assert_eq!(s.scope.event_db(), EVERY_DB);
        s.began();
        assert_eq!(s.next(), Next::Scan(0));
        s.emitted(5);
        s.db_done();
        assert_eq!(s.next(), Next::Scan(1));
        s.emitted(2);
        s.db_done();
        assert_eq!(s.next(), Next::Scan(2));
        s.db_missing();
        assert_eq!(s.next(), Next::End { cancelled: false });
        assert_eq!(s.keys, 7);
        // Nothing moves an ended snapshot.
        s.began();
        s.db_done();
        assert_eq!(s.next(), Next::End { cancelled: false });
    }

    #[test]
    fn a_cluster_node_scans_database_0_only() {
        let mut s = all(true);
        s.began();
        assert_eq!(s.next(), Next::Scan(0));
        s.db_done();
        assert_eq!(s.next(), Next::End { cancelled: false });
    }

    #[test]
    fn one_database_then_the_end() {
        let mut s = Snapshot::new(
            "id".into(),
            Request {
                scope: Scope::Db(4),
                masks: None,
            },
            false,
        );
        assert_eq!(s.scope.event_db(), 4);
        s.began();
        assert_eq!(s.next(), Next::Scan(4));
        s.db_done();
        assert_eq!(s.next(), Next::End { cancelled: false });
    }

    #[test]
    fn cancel_ends_it_marked_from_any_state() {
        let mut s = all(false);
        s.cancel();
        assert_eq!(s.next(), Next::End { cancelled: true });
        let mut s = all(false);
        s.began();
        s.db_done();
        s.cancel();
        assert_eq!(s.next(), Next::End { cancelled: true });
        s.db_missing();
        assert_eq!(s.next(), Next::End { cancelled: true });
    }

    #[test]
    fn room_is_half_the_capacity_less_what_waits() {
        assert_eq!(room(0, 100_000), 50_000);
        assert_eq!(room(49_000, 100_000), 1_000);
        assert_eq!(room(50_000, 100_000), 0);
        assert_eq!(room(150_000, 100_000), 0);
        // A capacity of 1 still lets one event through at a time.
        assert_eq!(room(0, 1), 1);
        assert_eq!(room(1, 1), 0);
        assert_eq!(room_bytes(0, 64 << 20, 1000), 33_554);
        assert_eq!(room_bytes(32 << 20, 64 << 20, 1000), 0);
        assert_eq!(
            room_bytes(0, 1000, 1 << 20),
            1,
            "one key when nothing waits"
        );
    }
}
