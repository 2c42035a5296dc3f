//! Keyspace event classes: the letters of `notify-keyspace-events`, their bits in the module
//! API (`REDISMODULE_NOTIFY_*`), and which of them the running server has.
//!
//! The server says what it has (`RedisModule_GetKeyspaceNotificationFlagsAll`): Redis 8.2 adds
//! `o` and `c`, and a letter the server lacks would subscribe to nothing, so it is refused with
//! the server's name instead of being accepted and never firing.

use crate::core::arg_error::ArgError;

pub const GENERIC: i32 = 1 << 2;
pub const STRING: i32 = 1 << 3;
pub const LIST: i32 = 1 << 4;
pub const SET: i32 = 1 << 5;
pub const HASH: i32 = 1 << 6;
pub const ZSET: i32 = 1 << 7;
pub const EXPIRED: i32 = 1 << 8;
pub const EVICTED: i32 = 1 << 9;
pub const STREAM: i32 = 1 << 10;
pub const KEY_MISS: i32 = 1 << 11;
pub const MODULE: i32 = 1 << 13;
pub const NEW: i32 = 1 << 14;
/// Redis 8.2+: a key's value replaced (SET over an existing key…); not in `A`.
pub const OVERWRITTEN: i32 = 1 << 15;
/// Redis 8.2+: a key's type changed; not in `A`.
pub const TYPE_CHANGED: i32 = 1 << 16;
/// What `A` stands for in `notify-keyspace-events` (`g$lshzxetd`), on every server so far.
pub const ALL: i32 =
    GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE;

/// Every class letter the module knows, in the order Redis documents them, with its name.
const CLASSES: [(u8, i32, &str); 14] = [
    (b'g', GENERIC, "generic"),
    (b'$', STRING, "string"),
    (b'l', LIST, "list"),
    (b's', SET, "set"),
    (b'h', HASH, "hash"),
    (b'z', ZSET, "zset"),
    (b'x', EXPIRED, "expired"),
    (b'e', EVICTED, "evicted"),
    (b't', STREAM, "stream"),
    (b'd', MODULE, "module"),
    (b'n', NEW, "new"),
    (b'm', KEY_MISS, "keymiss"),
    (b'o', OVERWRITTEN, "overwritten"),
    (b'c', TYPE_CHANGED, "type_changed"),
];

/// The classes a server has, and its name for error messages (`Redis 7.0.15`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerClasses {
    pub flags: i32,
    pub server: String,
}

impl ServerClasses {
    /// Every class the module knows (for tools that have no server to ask).
    pub fn all_known() -> Self {
        ServerClasses {
            flags: CLASSES.iter().fold(0, |m, (_, bit, _)| m | bit),
            server: "any server".into(),
        }
    }

    /// The letters this server accepts, as an error message lists them.
    fn accepted(&self) -> String {
        let mut out = String::from("class letters");
        for (letter, bit, _) in CLASSES {
            if self.flags & bit != 0 {
                out.push(' ');
                out.push(char::from(letter));
            }
        }
        out.push_str(" or A");
        out
    }

    /// Parses an EVENTS value (`name` is the argument or config it came from) into a mask of
    /// classes this server has. `K` and `E` (channel selectors) are accepted and ignored.
    pub fn parse(&self, name: &'static str, arg: &[u8]) -> Result<i32, ArgError> {
        let refuse = |detail: String| ArgError::new(name, arg, detail);
        let mut mask = 0;
        for &c in arg {
            mask |= match c {
                b'A' => ALL & self.flags,
                b'K' | b'E' => 0,
                _ => match CLASSES.iter().find(|(letter, _, _)| *letter == c) {
                    Some((_, bit, _)) if self.flags & bit != 0 => *bit,
                    Some((_, _, class)) => {
                        return Err(refuse(format!(
                            "{} ({} has no class '{}', {class}; K and E are ignored)",
                            self.accepted(),
                            self.server,
                            char::from(c)
                        )))
                    }
                    None => {
                        return Err(refuse(format!(
                            "{} (as in notify-keyspace-events; K and E are ignored)",
                            self.accepted()
                        )))
                    }
                },
            };
        }
        if mask == 0 {
            return Err(refuse(format!(
                "{} (at least one class; K and E are ignored)",
                self.accepted()
            )));
        }
        Ok(mask)
    }

    /// This server's classes as letters, for the load log.
    pub fn describe(&self) -> String {
        describe(self.flags)
    }
}

/// Renders a mask as its class letters, for logs and INFO.
pub fn describe(mask: i32) -> String {
    CLASSES
        .iter()
        .filter(|(_, bit, _)| mask & bit != 0)
        .map(|(letter, _, _)| char::from(*letter))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Redis 7.0 to 8.0 and Valkey 8 report: every bit below 1 << 15.
    fn redis_7_0() -> ServerClasses {
        ServerClasses {
            flags: (1 << 15) - 1,
            server: "Redis 7.0.15".into(),
        }
    }

    fn redis_8_2() -> ServerClasses {
        ServerClasses {
            flags: (1 << 17) - 1,
            server: "Redis 8.2.0".into(),
        }
    }

    #[test]
    fn letters_become_classes() {
        let s = redis_7_0();
        assert_eq!(s.parse("EVENTS", b"$").unwrap(), STRING);
        assert_eq!(s.parse("EVENTS", b"KEA").unwrap(), ALL);
        assert_eq!(s.parse("EVENTS", b"nm").unwrap(), NEW | KEY_MISS);
        assert_eq!(describe(s.parse("EVENTS", b"A").unwrap()), "g$lshzxetd");
        assert_eq!(describe(s.parse("EVENTS", b"xe$").unwrap()), "$xe");
        assert_eq!(ALL & (NEW | KEY_MISS | OVERWRITTEN | TYPE_CHANGED), 0);
        assert_eq!(s.describe(), "g$lshzxetdnm");
        assert_eq!(redis_8_2().describe(), "g$lshzxetdnmoc");
    }

    #[test]
    fn a_class_the_server_lacks_is_refused_with_the_servers_name() {
        let e = redis_7_0().parse("EVENTS", b"xo").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid EVENTS 'xo': expected class letters g $ l s h z x e t d n m or A \
             (Redis 7.0.15 has no class 'o', overwritten; K and E are ignored)"
        );
        let e = redis_7_0().parse("key_evt_amqp.events", b"c").unwrap_err();
        assert_eq!(e.name, "key_evt_amqp.events");
        assert!(e.to_string().contains("no class 'c', type_changed"), "{e}");
        assert_eq!(
            redis_8_2().parse("EVENTS", b"oc").unwrap(),
            OVERWRITTEN | TYPE_CHANGED
        );
    }

    #[test]
    fn a_means_what_the_server_has_of_it() {
        let without_streams = ServerClasses {
            flags: (1 << 15) - 1 - STREAM,
            server: "an old server".into(),
        };
        assert_eq!(without_streams.parse("EVENTS", b"A").unwrap(), ALL - STREAM);
        assert!(without_streams.parse("EVENTS", b"t").is_err());
    }

    #[test]
    fn unknown_letters_and_nothing_are_refused() {
        for bad in [&b"q"[..], b"", b"K", b"xq", b"KE"] {
            let e = redis_7_0().parse("EVENTS", bad).unwrap_err();
            assert_eq!(e.name, "EVENTS");
            assert!(e.to_string().contains("class letters g $"), "{e}");
        }
    }
}
