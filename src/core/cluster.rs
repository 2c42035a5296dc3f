//! Redis Cluster, the pure parts: hash slots, where this node's fallback list lives, which
//! slots a node serves (from `CLUSTER NODES`), and the cluster-bus message that carries a
//! command to the other nodes. Nothing here knows Redis's API.

use std::fmt::Write;

pub const SLOTS: usize = 16384;

/// CRC16/XMODEM, the checksum Redis Cluster hashes keys with.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// The hash slot of a key, hash tags (`{…}`) included, as `CLUSTER KEYSLOT` computes it.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS as u16
}

/// The fallback list's name for a list kept in `slot`: the old module's name plus a decimal
/// hash tag, the first one that lands in that slot. Every node finds the same name for a slot,
/// so a promoted replica, or a node that receives the slot, knows where to look.
pub fn fallback_key_in_slot(base: &str, slot: u16) -> Vec<u8> {
    format!("{base}{{{}}}", slot_tags()[usize::from(slot)]).into_bytes()
}

/// A key on which the server's slot function and [`key_slot`] disagree.
#[derive(Debug, PartialEq, Eq)]
pub struct SlotMismatch {
    pub key: Vec<u8>,
    pub ours: u16,
    pub server: u16,
}

/// Checks [`key_slot`] against the server's own function on every name the fallback list can
/// have (`base` and its name in each slot): a list written under a name the server hashes
/// elsewhere would land in a slot this node may not serve.
pub fn check_key_slots(base: &str, server: impl Fn(&[u8]) -> u16) -> Result<usize, SlotMismatch> {
    let names = std::iter::once(base.as_bytes().to_vec())
        .chain((0..SLOTS as u16).map(|slot| fallback_key_in_slot(base, slot)));
    let mut checked = 0;
    for key in names {
        let (ours, server) = (key_slot(&key), server(&key));
        if ours != server {
            return Err(SlotMismatch { key, ours, server });
        }
        checked += 1;
    }
    Ok(checked)
}

/// For each slot, the first decimal tag hashing to it. Built once (about 170,000 CRCs, a few
/// milliseconds, 64 KiB), the first time a cluster node places its list.
fn slot_tags() -> &'static [u32] {
    static TAGS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags = vec![u32::MAX; SLOTS];
        let mut missing = SLOTS;
        let mut text = String::new();
        for n in 0u32.. {
            text.clear();
            let _ = write!(text, "{n}");
            let slot = &mut tags[usize::from(crc16(text.as_bytes()) % SLOTS as u16)];
            if *slot == u32::MAX {
                *slot = n;
                missing -= 1;
                if missing == 0 {
                    break;
                }
            }
        }
        tags
    })
}

/// A set of hash slots.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotSet(Box<[u64; SLOTS / 64]>);

impl Default for SlotSet {
    fn default() -> Self {
        SlotSet(Box::new([0; SLOTS / 64]))
    }
}

impl std::fmt::Debug for SlotSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlotSet({} slots)", self.len())
    }
}

impl SlotSet {
    pub fn insert(&mut self, slot: u16) {
        self.0[usize::from(slot) / 64] |= 1 << (slot % 64);
    }

    pub fn contains(&self, slot: u16) -> bool {
        self.0[usize::from(slot) / 64] & (1 << (slot % 64)) != 0
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    pub fn first(&self) -> Option<u16> {
        self.iter().next()
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..SLOTS as u16).filter(|&s| self.contains(s))
    }

    /// Slots in `self` that are not in `other`.
    pub fn difference(&self, other: &SlotSet) -> SlotSet {
        let mut out = SlotSet::default();
        for (i, w) in out.0.iter_mut().enumerate() {
            *w = self.0[i] & !other.0[i];
        }
        out
    }
}

/// The slots this node serves, from the text of `CLUSTER NODES`: its own, or, for a replica,
/// its master's (a replica holds the master's data, its fallback list included). Slots being
/// imported or migrated (`[…]` entries) do not count until the move completes. `None` when the
/// text has no `myself` line.
pub fn served_slots(cluster_nodes: &[u8]) -> Option<SlotSet> {
    let lines: Vec<Vec<&[u8]>> = cluster_nodes
        .split(|&b| b == b'\n')
        .map(|line| {
            line.split(|&b| b == b' ')
                .filter(|f| !f.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|fields| fields.len() >= 8)
        .collect();
    let myself = lines
        .iter()
        .find(|f| f[2].split(|&b| b == b',').any(|flag| flag == b"myself"))?;
    let is_replica = myself[2].split(|&b| b == b',').any(|flag| flag == b"slave");
    let owner = if is_replica {
        lines.iter().find(|f| f[0] == myself[3])?
    } else {
        myself
    };
    let mut slots = SlotSet::default();
    for range in &owner[8..] {
        let Ok(range) = std::str::from_utf8(range) else {
            continue;
        };
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        if let (Ok(first), Ok(last)) = (first.parse::<u16>(), last.parse::<u16>()) {
            for slot in first..=last.min(SLOTS as u16 - 1) {
                slots.insert(slot);
            }
        }
    }
    Some(slots)
}

/// Cluster-bus message type of a `key_evt_amqp.*` command forwarded to the other nodes.
pub const COMMAND_MESSAGE: u8 = 0x4b;

/// A command and its arguments as one cluster-bus payload: for each, a 4-byte big-endian
/// length and the bytes.
pub fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(args.iter().map(|a| 4 + a.len()).sum());
    for arg in args {
        out.extend_from_slice(&(arg.len() as u32).to_be_bytes());
        out.extend_from_slice(arg);
    }
    out
}

/// The inverse of [`encode_command`]; `None` for a payload it did not make.
pub fn decode_command(mut payload: &[u8]) -> Option<Vec<&[u8]>> {
    let mut args = Vec::new();
    while !payload.is_empty() {
        let (len, rest) = payload.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        args.push(&rest[..len]);
        payload = &rest[len..];
    }
    (!args.is_empty()).then_some(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_check_covers_every_list_name_and_reports_a_disagreement() {
        assert_eq!(check_key_slots("fb", key_slot), Ok(SLOTS + 1));
        let off_by_one = |k: &[u8]| (key_slot(k) + 1) % SLOTS as u16;
        let e = check_key_slots("fb", off_by_one).unwrap_err();
        assert_eq!(e.key, b"fb");
        assert_eq!((e.ours + 1) % SLOTS as u16, e.server);
        let only_tagged = |k: &[u8]| if k.contains(&b'{') { 0 } else { key_slot(k) };
        let e = check_key_slots("fb", only_tagged).unwrap_err();
        assert_eq!(e.key, fallback_key_in_slot("fb", 1));
    }

    #[test]
    fn slots_match_redis_cluster_keyslot() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.0.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }

    #[test]
    fn the_fallback_key_lands_in_the_slot_asked_for() {
        let base = "REDIS_MODULE-key_evt_amqp-fallback_storage";
        for slot in [0, 1, 5460, 5461, 10922, 16383] {
            let key = fallback_key_in_slot(base, slot);
            assert_eq!(key_slot(&key), slot, "{}", String::from_utf8_lossy(&key));
            assert!(key.starts_with(base.as_bytes()));
        }
        assert_eq!(
            fallback_key_in_slot(base, 7),
            fallback_key_in_slot(base, 7),
            "every node must find the same name"
        );
    }

    const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383 [16383->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 slave 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238316232 5 connected
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006 slave,myself 292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 0 1426238317741 6 connected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 master - 0 0 1 connected 0-5460 7000
";

    #[test]
    fn a_master_serves_its_slots_and_a_replica_its_masters() {
        let replica = served_slots(NODES.as_bytes()).unwrap();
        assert_eq!(replica.len(), 16383 - 10923 + 1);
        assert_eq!(replica.first(), Some(10923));
        assert!(replica.contains(16383), "a migrating slot is still served");

        let master = NODES.replace("slave,myself", "slave").replace(
            "127.0.0.1:30001@31001 master",
            "127.0.0.1:30001@31001 myself,master",
        );
        let master = served_slots(master.as_bytes()).unwrap();
        assert_eq!(master.len(), 5461 + 1);
        assert!(master.contains(0) && master.contains(5460) && master.contains(7000));
        assert!(!master.contains(5461));

        assert_eq!(served_slots(b"garbage"), None);
    }

    #[test]
    fn slot_sets_compare() {
        let mut a = SlotSet::default();
        let mut b = SlotSet::default();
        assert!(a.is_empty() && a.first().is_none());
        a.insert(3);
        a.insert(16383);
        b.insert(3);
        let gained = a.difference(&b);
        assert_eq!(gained.iter().collect::<Vec<_>>(), vec![16383]);
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn commands_survive_the_cluster_bus() {
        let args: [&[u8]; 3] = [b"key_evt_amqp.keymask_set", b"user:*", b"\0\xff{}"];
        let payload = encode_command(&args);
        assert_eq!(decode_command(&payload).unwrap(), args.to_vec());
        assert_eq!(decode_command(&payload[..payload.len() - 1]), None);
        assert_eq!(decode_command(b""), None);
        assert_eq!(decode_command(b"\0\0"), None);
    }
}
