//! Where this node's fallback list lives. On a single node: the old module's key. In a
//! cluster: a name hash-tagged into the first slot the node serves (see
//! [`cluster::fallback_key_in_slot`]), so the module's own writes are never refused and
//! `redis-cli --cluster check` stays clean. When slots move, the name follows, and lists left
//! in slots this node gains (a migrated slot, a failed master's slots) are moved into its own
//! list, a slice per step, so that they drain too.
//!
//! Pure decisions: Redis is reached through [`Keyspace`], so slot moves are unit-tested.

use crate::core::cluster::{self, SlotSet};
use crate::core::limits::LastLogged;
use crate::core::policy::{SCAN_SLICE, SLOT_CHECK_EVERY_MS};

/// The old C module's key: a backlog it left behind is drained after an upgrade.
pub const DEFAULT_KEY: &str = "REDIS_MODULE-key_evt_amqp-fallback_storage";

/// What placement needs of the server. Errors are messages for the log.
pub trait Keyspace {
    /// `CLUSTER NODES`, as text.
    fn cluster_nodes(&mut self) -> Result<Vec<u8>, String>;
    fn exists(&mut self, key: &[u8]) -> Result<bool, String>;
    /// Up to `n` items from the front of the list `key`, without removing them.
    fn peek(&mut self, key: &[u8], n: usize) -> Result<Vec<Vec<u8>>, String>;
    fn push_back(&mut self, key: &[u8], items: &[&[u8]]) -> Result<(), String>;
    fn remove_front(&mut self, key: &[u8], n: u64) -> Result<(), String>;
}

pub struct Placement {
    cluster: bool,
    key: Option<Vec<u8>>,
    served: SlotSet,
    /// When (ms, a monotonic clock) to look at the served slots next; 0: at the next step.
    next_check_ms: u64,
    /// Slots whose list names are still to be looked at for a backlog left there.
    to_scan: Vec<u16>,
    /// Lists found in served slots, other than our own: moved into ours.
    foreign: Vec<Vec<u8>>,
    last_error: LastLogged,
}

/// What a [`Placement::step`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PlacementStep {
    /// Items appended to our list from foreign ones.
    pub appended: u64,
    /// Our list has a new name.
    pub moved_list: bool,
    pub more: bool,
    /// Lines for the log (a new list name, a backlog found).
    pub notices: Vec<String>,
}

impl Placement {
    pub fn new(cluster: bool) -> Placement {
        Placement {
            cluster,
            key: (!cluster).then(|| DEFAULT_KEY.as_bytes().to_vec()),
            served: SlotSet::default(),
            next_check_ms: 0,
            to_scan: Vec::new(),
            foreign: Vec::new(),
            last_error: LastLogged::default(),
        }
    }

    /// Checks which slots this node serves (at most every second), looks for lists left in
    /// newly served slots and moves one slice of them into ours. Returns how many items were
    /// appended to our list and whether our list's name changed (its length must be read
    /// again); `more` when work remains for the next step.
    pub fn step(
        &mut self,
        ks: &mut impl Keyspace,
        slice: usize,
        now_ms: u64,
    ) -> Result<PlacementStep, String> {
        let mut out = PlacementStep::default();
        if !self.cluster {
            return Ok(out);
        }
        if now_ms >= self.next_check_ms {
            self.next_check_ms = now_ms + SLOT_CHECK_EVERY_MS;
            out.moved_list = self.check_slots(ks, &mut out.notices)?;
        }
        self.scan(ks, &mut out.notices)?;
        out.appended = self.adopt(ks, slice)?;
        out.more = !self.to_scan.is_empty() || !self.foreign.is_empty();
        self.last_error.clear();
        Ok(out)
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

    /// Forgets what it knew of the slots (after a role change): the next step looks at all of
    /// them again.
    pub fn reset(&mut self) {
        *self = Placement::new(self.cluster);
    }

    /// Look at the slots again at the next [`Placement::step`] (a promotion, a refused write).
    pub fn recheck(&mut self) {
        self.next_check_ms = 0;
    }

    /// Whether a step's error is news: logged once, not at every step while it lasts.
    pub fn error_is_news(&mut self, error: &str) -> bool {
        self.last_error.changed(error)
    }

    fn check_slots(
        &mut self,
        ks: &mut impl Keyspace,
        notices: &mut Vec<String>,
    ) -> Result<bool, String> {
        let text = ks.cluster_nodes()?;
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
        notices.push(match &key {
            Some(k) => format!("fallback list: {}", crate::core::escape::escape(k)),
            None => "this node serves no hash slot: no fallback list".into(),
        });
        self.key = key;
        Ok(true)
    }

    /// Looks for lists in the names of a slice of newly served slots (and for the old
    /// module's untagged list in its slot).
    fn scan(&mut self, ks: &mut impl Keyspace, notices: &mut Vec<String>) -> Result<(), String> {
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
                    && ks.exists(&name)?
                {
                    notices.push(format!(
                        "found a backlog in {}: it drains through this node's list",
                        crate::core::escape::escape(&name)
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
    fn adopt(&mut self, ks: &mut impl Keyspace, slice: usize) -> Result<u64, String> {
        let (Some(key), Some(from)) = (self.key.clone(), self.foreign.first().cloned()) else {
            return Ok(0);
        };
        if !self.served.contains(cluster::key_slot(&from)) {
            self.foreign.remove(0);
            return Ok(0);
        }
        let items = ks.peek(&from, slice)?;
        if items.is_empty() {
            self.foreign.remove(0);
            return Ok(0);
        }
        let slices: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
        ks.push_back(&key, &slices)?;
        ks.remove_front(&from, items.len() as u64)?;
        Ok(items.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::core::memory_list::MemoryList;
    use crate::core::outbox::ListStore;

    /// A cluster node's keyspace in memory (its lists are [`MemoryList`]s); `nodes` is what
    /// CLUSTER NODES answers.
    #[derive(Default)]
    struct MemoryKeyspace {
        nodes: String,
        lists: HashMap<Vec<u8>, MemoryList>,
        refuse: Option<String>,
    }

    impl MemoryKeyspace {
        fn serving(ranges: &str) -> MemoryKeyspace {
            let mut ks = MemoryKeyspace::default();
            ks.serve(ranges);
            ks
        }

        fn serve(&mut self, ranges: &str) {
            self.nodes = format!(
                "07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 \
                 myself,master - 0 1426238317239 4 connected {ranges}\n"
            );
        }

        fn list(&self, key: &[u8]) -> Vec<Vec<u8>> {
            self.lists
                .get(key)
                .map(|l| l.0.iter().cloned().collect())
                .unwrap_or_default()
        }

        fn fill(&mut self, key: &[u8], items: &[&str]) {
            let items: Vec<&[u8]> = items.iter().map(|i| i.as_bytes()).collect();
            self.push_back(key, &items).unwrap();
        }

        fn list_mut(&mut self, key: &[u8]) -> &mut MemoryList {
            self.lists.entry(key.to_vec()).or_default()
        }

        fn check(&self) -> Result<(), String> {
            self.refuse.clone().map_or(Ok(()), Err)
        }
    }

    impl Keyspace for MemoryKeyspace {
        fn cluster_nodes(&mut self) -> Result<Vec<u8>, String> {
            self.check()?;
            Ok(self.nodes.as_bytes().to_vec())
        }
        fn exists(&mut self, key: &[u8]) -> Result<bool, String> {
            self.check()?;
            Ok(self.list_mut(key).len()? > 0)
        }
        fn peek(&mut self, key: &[u8], n: usize) -> Result<Vec<Vec<u8>>, String> {
            self.check()?;
            self.list_mut(key).peek(0, n)
        }
        fn push_back(&mut self, key: &[u8], items: &[&[u8]]) -> Result<(), String> {
            self.check()?;
            self.list_mut(key).push_back(items)
        }
        fn remove_front(&mut self, key: &[u8], n: u64) -> Result<(), String> {
            self.check()?;
            self.list_mut(key).remove_front(n)
        }
    }

    fn key_in(slot: u16) -> Vec<u8> {
        cluster::fallback_key_in_slot(DEFAULT_KEY, slot)
    }

    /// Steps until no work remains (at most `limit` steps), the clock advancing 1 ms a step.
    fn settle(p: &mut Placement, ks: &mut MemoryKeyspace, slice: usize, now: &mut u64) -> u64 {
        let mut appended = 0;
        for _ in 0..100 {
            let step = p.step(ks, slice, *now).unwrap();
            appended += step.appended;
            *now += 1;
            if !step.more {
                break;
            }
        }
        appended
    }

    #[test]
    fn a_single_node_keeps_the_old_modules_key_and_asks_nothing() {
        let mut p = Placement::new(false);
        let mut ks = MemoryKeyspace {
            refuse: Some("must not be asked".into()),
            ..MemoryKeyspace::default()
        };
        assert_eq!(p.key(), Some(DEFAULT_KEY.as_bytes()));
        assert_eq!(p.step(&mut ks, 500, 1), Ok(PlacementStep::default()));
    }

    #[test]
    fn a_cluster_node_keeps_its_list_in_its_first_slot() {
        let mut p = Placement::new(true);
        assert_eq!(p.key(), None, "unknown until the slots are read");
        let mut ks = MemoryKeyspace::serving("5461-10922");
        let step = p.step(&mut ks, 500, 1).unwrap();
        assert!(step.moved_list);
        assert_eq!(p.key(), Some(key_in(5461).as_slice()));
        assert_eq!(cluster::key_slot(p.key().unwrap()), 5461);
        let expected = format!(
            "fallback list: {}",
            crate::core::escape::escape(&key_in(5461))
        );
        assert_eq!(step.notices, vec![expected]);
        // Slots are read again only after a second.
        ks.serve("0-100");
        assert!(!p.step(&mut ks, 500, 500).unwrap().moved_list);
        assert!(
            p.step(&mut ks, 500, 1 + SLOT_CHECK_EVERY_MS)
                .unwrap()
                .moved_list
        );
        assert_eq!(p.key(), Some(key_in(0).as_slice()));
    }

    #[test]
    fn a_backlog_in_a_gained_slot_drains_into_our_list_in_order() {
        let mut p = Placement::new(true);
        let mut ks = MemoryKeyspace::serving("0-100");
        let mut now = 1;
        settle(&mut p, &mut ks, 2, &mut now);
        // Slot 200's list was left by a master that failed; this node takes the slot over.
        ks.fill(&key_in(200), &["a", "b", "c", "d", "e"]);
        ks.fill(&key_in(0), &["0"]);
        ks.serve("0-100 200");
        now += SLOT_CHECK_EVERY_MS;
        let appended = settle(&mut p, &mut ks, 2, &mut now);
        assert_eq!(appended, 5);
        let ours: Vec<&[u8]> = vec![b"0", b"a", b"b", b"c", b"d", b"e"];
        assert_eq!(ks.list(&key_in(0)), ours);
        assert!(ks.list(&key_in(200)).is_empty());
    }

    #[test]
    fn when_the_first_slot_moves_away_the_old_list_drains_only_if_still_served() {
        let mut p = Placement::new(true);
        let mut ks = MemoryKeyspace::serving("0-100");
        let mut now = 1;
        settle(&mut p, &mut ks, 500, &mut now);
        ks.fill(&key_in(0), &["x", "y"]);
        // Slot 0 migrates away: the list goes with it, to its new owner.
        ks.serve("1-100");
        now += SLOT_CHECK_EVERY_MS;
        assert!(p.step(&mut ks, 500, now).unwrap().moved_list);
        assert_eq!(p.key(), Some(key_in(1).as_slice()));
        settle(&mut p, &mut ks, 500, &mut now);
        assert_eq!(ks.list(&key_in(0)).len(), 2, "not ours any more");
        assert!(ks.list(&key_in(1)).is_empty());
    }

    #[test]
    fn the_old_modules_untagged_list_is_adopted_by_the_node_serving_its_slot() {
        let legacy = cluster::key_slot(DEFAULT_KEY.as_bytes());
        let mut p = Placement::new(true);
        let mut ks = MemoryKeyspace::serving(&format!("{legacy}"));
        ks.fill(DEFAULT_KEY.as_bytes(), &["old"]);
        let mut now = 1;
        let appended = settle(&mut p, &mut ks, 500, &mut now);
        assert_eq!(appended, 1);
        assert_eq!(ks.list(&key_in(legacy)), vec![b"old".to_vec()]);
    }

    #[test]
    fn a_node_serving_no_slot_has_no_list() {
        let mut p = Placement::new(true);
        let mut ks = MemoryKeyspace::serving("0-10");
        p.step(&mut ks, 500, 1).unwrap();
        ks.serve("");
        let step = p.step(&mut ks, 500, 1 + SLOT_CHECK_EVERY_MS).unwrap();
        assert!(step.moved_list);
        assert_eq!(p.key(), None);
        assert_eq!(
            step.notices,
            vec!["this node serves no hash slot: no fallback list".to_string()]
        );
    }

    #[test]
    fn errors_are_news_once_and_a_refused_scan_is_tried_again() {
        let mut p = Placement::new(true);
        let mut ks = MemoryKeyspace::serving("0-10");
        ks.fill(&key_in(5), &["e"]);
        ks.refuse = Some("CLUSTERDOWN".into());
        let e = p.step(&mut ks, 500, 1).unwrap_err();
        assert!(p.error_is_news(&e));
        assert!(!p.error_is_news(&e));
        ks.refuse = None;
        p.recheck();
        let mut now = 2;
        assert_eq!(settle(&mut p, &mut ks, 500, &mut now), 1);
        assert!(p.error_is_news(&e), "a success ends the condition");
    }

    #[test]
    fn only_the_modules_own_lists_are_fallback_keys() {
        assert!(Placement::is_fallback_key(DEFAULT_KEY.as_bytes()));
        assert!(Placement::is_fallback_key(&key_in(7)));
        assert!(!Placement::is_fallback_key(b"user:1"));
        let mut other = DEFAULT_KEY.as_bytes().to_vec();
        other.extend_from_slice(b"-mine");
        assert!(!Placement::is_fallback_key(&other));
    }
}
