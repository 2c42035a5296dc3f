//! Positional arguments of `MODULE LOAD` and of the `config_set`/`connect` commands.
//!
//! Pure parsing: bytes in, [`Settings`] or an [`ArgError`] out. Nothing here knows Redis or AMQP.

use std::fmt;

pub use crate::core::arg_error::ArgError;
use crate::core::classes::{self, ServerClasses};
use crate::core::format::Output;
use crate::core::journal::{self, Durability};
use crate::core::keymask::KeyMasks;
use crate::core::template::Template;
use crate::core::uri::{Endpoint, UriEndpoint};

/// Everything configurable after load (all positional arguments but EVENTS).
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub heartbeat: u16,
    pub exchange: String,
    pub routing_key: String,
    /// 1 transient, 2 persistent.
    pub delivery_mode: u8,
    /// >0 keep at most N events, 0 unlimited, <0 no fallback list.
    pub fallback_size: i64,
    pub masks: KeyMasks,
    // Formats, headers and routing-key templates (issue 15).
    /// `routing_key` parsed: its placeholders, or `Literal` (no brace: no per-event work).
    pub routing: Template,
    /// `key_evt_amqp.format`, `.headers`, `.ce_source`, `.ce_header_prefix` (module configs only).
    pub output: Output,
    /// `key_evt_amqp.durability` (a module config only; `core/journal.rs`).
    pub durability: Durability,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            host: "127.0.0.1".into(),
            port: 5672,
            user: "guest".into(),
            password: "guest".into(),
            heartbeat: 30,
            exchange: "amq.direct".into(),
            routing_key: "redis_keyspace_events".into(),
            delivery_mode: 1,
            fallback_size: 10_000_000,
            masks: KeyMasks::default(),
            routing: Template::Literal,
            output: Output::default(),
            durability: Durability::Memory,
        }
    }
}

// The password never leaves through Debug (logs, panics).
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .field("heartbeat", &self.heartbeat)
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .field("delivery_mode", &self.delivery_mode)
            .field("fallback_size", &self.fallback_size)
            .field("masks", &self.masks)
            .field("routing", &self.routing)
            .field("output", &self.output)
            .field("durability", &self.durability)
            .finish()
    }
}

/// Names of the positional arguments after EVENTS, in order.
pub const ARG_NAMES: [&str; 9] = [
    "HOST",
    "PORT",
    "USER",
    "PASS",
    "HEARTBEAT",
    "EXCHANGE",
    "ROUTING_KEY",
    "DELIVERY_MODE",
    "FALLBACK_SIZE",
];

impl Settings {
    /// Returns a copy with the positional arguments `HOST [PORT … FALLBACK_SIZE [KEYMASK…]]`
    /// applied; missing ones keep their current value. Key masks, when given, replace the old ones.
    pub fn with_args<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<Settings, ArgError> {
        let mut s = self.clone();
        for (i, arg) in args.iter().take(ARG_NAMES.len()).enumerate() {
            s.set_arg(i, arg.as_ref())?;
        }
        if args.len() > ARG_NAMES.len() {
            s.masks = KeyMasks::from_args(&args[ARG_NAMES.len()..]);
        }
        Ok(s)
    }

    /// Sets positional argument `i` (0 = HOST … 8 = FALLBACK_SIZE).
    fn set_arg(&mut self, i: usize, v: &[u8]) -> Result<(), ArgError> {
        match i {
            0 => self.host = parse_host(v)?,
            1 => self.port = parse_int(v, "PORT", 1, 65535, "an integer from 1 to 65535")? as u16,
            2 => self.user = parse_text(v, "USER", "a UTF-8 user name")?,
            // Never echo the password, not even in an error.
            3 => {
                self.password = String::from_utf8(v.to_vec())
                    .map_err(|_| ArgError::hidden("PASS", "a UTF-8 password"))?
            }
            4 => {
                self.heartbeat = parse_int(
                    v,
                    "HEARTBEAT",
                    0,
                    65535,
                    "seconds from 0 to 65535 (0 disables heartbeats)",
                )? as u16
            }
            5 => self.exchange = parse_name(v, "EXCHANGE")?,
            6 => {
                let routing_key = parse_name(v, "ROUTING_KEY")?;
                self.routing = Template::parse(&routing_key)
                    .map_err(|accepted| ArgError::new("ROUTING_KEY", v, accepted))?;
                self.routing_key = routing_key;
            }
            7 => {
                self.delivery_mode =
                    parse_int(v, "DELIVERY_MODE", 1, 2, "1 (transient) or 2 (persistent)")? as u8
            }
            _ => {
                let size = parse_int(
                    v,
                    "FALLBACK_SIZE",
                    i64::MIN,
                    i64::MAX,
                    "an integer: >0 keep at most N events, 0 unlimited, <0 no fallback list",
                )?;
                *self = self.with_fallback_size(size, v)?;
            }
        }
        Ok(())
    }

    /// A copy with FALLBACK_SIZE `size` (`given`: as written, for the error). The journal is
    /// the fallback list: no list (a negative size) is refused under `durability journal`.
    pub fn with_fallback_size(&self, size: i64, given: &[u8]) -> Result<Settings, ArgError> {
        if size < 0 && self.durability == Durability::Journal {
            return Err(ArgError::new(
                "FALLBACK_SIZE",
                given,
                "0 (unlimited) or more while key_evt_amqp.durability is journal: the journal \
                 is the fallback list",
            ));
        }
        Ok(Settings {
            fallback_size: size,
            ..self.clone()
        })
    }

    /// A copy with `key_evt_amqp.durability` `value`; `journal_refusal`: why this server cannot
    /// journal (no post-notification jobs), if it cannot.
    pub fn with_durability(
        &self,
        value: &[u8],
        journal_refusal: Option<&str>,
    ) -> Result<Settings, ArgError> {
        const NAME: &str = "key_evt_amqp.durability";
        let durability = Durability::parse(value)
            .ok_or_else(|| ArgError::new(NAME, value, journal::ACCEPTED))?;
        if durability == Durability::Journal {
            if let Some(why) = journal_refusal {
                return Err(ArgError::new(NAME, value, format!("memory: {why}")));
            }
            if self.fallback_size < 0 {
                return Err(ArgError::new(
                    NAME,
                    value,
                    format!(
                        "memory while FALLBACK_SIZE is {} (no fallback list): the journal is \
                         the fallback list",
                        self.fallback_size
                    ),
                ));
            }
        }
        Ok(Settings {
            durability,
            ..self.clone()
        })
    }
}

/// The module configs that mirror the load arguments (`key_evt_amqp.<name>`), with the
/// positional argument each stands for (`None`: the key masks, all arguments after
/// FALLBACK_SIZE). The password has its own config, kept out of `CONFIG GET` (see config.rs).
pub const OPTIONS: [(&str, Option<usize>); 9] = [
    ("key_evt_amqp.host", Some(0)),
    ("key_evt_amqp.port", Some(1)),
    ("key_evt_amqp.user", Some(2)),
    ("key_evt_amqp.heartbeat", Some(4)),
    ("key_evt_amqp.exchange", Some(5)),
    ("key_evt_amqp.routing_key", Some(6)),
    ("key_evt_amqp.delivery_mode", Some(7)),
    ("key_evt_amqp.fallback_size", Some(8)),
    ("key_evt_amqp.keymasks", None),
];

impl Settings {
    /// The value of option `name` (one of [`OPTIONS`]) as `CONFIG GET` shows it. Key masks are
    /// separated by spaces (`ALL` for every key, empty for none).
    pub fn option(&self, name: &str) -> Option<String> {
        Some(match name.strip_prefix("key_evt_amqp.")? {
            "host" => self.host.clone(),
            "port" => self.port.to_string(),
            "user" => self.user.clone(),
            "heartbeat" => self.heartbeat.to_string(),
            "exchange" => self.exchange.clone(),
            "routing_key" => self.routing_key.clone(),
            "delivery_mode" => self.delivery_mode.to_string(),
            "fallback_size" => self.fallback_size.to_string(),
            "keymasks" => match &self.masks {
                KeyMasks::None => String::new(),
                KeyMasks::All => "ALL".into(),
                // The masks as given, not their escaped Display form (`\\`, `\x00`), which
                // would set other masks when CONFIG GET's value is set again (CONFIG REWRITE).
                KeyMasks::Some(v) => v
                    .iter()
                    .map(|m| String::from_utf8_lossy(m.as_bytes()))
                    .collect::<Vec<_>>()
                    .join(" "),
            },
            _ => return None,
        })
    }

    /// A copy with option `name` set to `value`, validated as the load argument it mirrors;
    /// the error names the option.
    pub fn with_option(&self, name: &'static str, value: &[u8]) -> Result<Settings, ArgError> {
        let mut s = self.clone();
        match OPTIONS.iter().find(|(n, _)| *n == name) {
            Some((_, Some(i))) => s.set_arg(*i, value).map_err(|e| ArgError { name, ..e })?,
            Some((_, None)) => {
                s.masks = KeyMasks::from_args(
                    value
                        .split(|b| b.is_ascii_whitespace())
                        .filter(|m| !m.is_empty()),
                )
            }
            None => return Err(ArgError::new(name, value, "a key_evt_amqp option")),
        }
        Ok(s)
    }
}

/// Where the broker is: the positional arguments, unless named configs say otherwise.
///
/// Precedence: a named config that is set wins over its positional argument. When
/// `key_evt_amqp.uri` lists URIs they replace HOST and PORT; what a URI leaves out comes from
/// the positional arguments (USER, HEARTBEAT). A non-empty `key_evt_amqp.password` replaces
/// PASS, for the positional broker as for every URI (a password written in a URI is moved to
/// that config when the URI is set).
impl Settings {
    /// The one broker the positional arguments describe (plain AMQP, default vhost).
    pub fn positional_endpoint(&self) -> Endpoint {
        Endpoint {
            tls: false,
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            password: self.password.clone(),
            vhost: crate::core::uri::DEFAULT_VHOST.to_string(),
            heartbeat: self.heartbeat,
        }
    }

    /// The brokers to try, in order, given the URIs of `key_evt_amqp.uri` (empty: not set) and
    /// the `key_evt_amqp.password` (empty: not set).
    pub fn endpoints(&self, uris: &[UriEndpoint], password: &str) -> Vec<Endpoint> {
        let password = if password.is_empty() {
            self.password.as_str()
        } else {
            password
        };
        if uris.is_empty() {
            return vec![Endpoint {
                password: password.to_string(),
                ..self.positional_endpoint()
            }];
        }
        uris.iter()
            .map(|u| u.resolve(&self.user, password, self.heartbeat))
            .collect()
    }
}

/// Parses the whole `MODULE LOAD` argument list: `[EVENTS [HOST … [KEYMASK…]]]`, with the
/// event classes of the server it is given to.
pub fn parse_load_args<A: AsRef<[u8]>>(
    args: &[A],
    server: &ServerClasses,
) -> Result<(i32, Settings), ArgError> {
    let events = match args.first() {
        Some(e) => server.parse("EVENTS", e.as_ref())?,
        None => classes::EXPIRED | classes::EVICTED,
    };
    let rest = args.get(1..).unwrap_or(&[]);
    Ok((events, Settings::default().with_args(rest)?))
}

fn parse_text(v: &[u8], name: &'static str, accepted: &'static str) -> Result<String, ArgError> {
    String::from_utf8(v.to_vec()).map_err(|_| ArgError::new(name, v, accepted))
}

fn parse_host(v: &[u8]) -> Result<String, ArgError> {
    const ACCEPTED: &str = "a host name or IP address";
    let host = parse_text(v, "HOST", ACCEPTED)?;
    if host.is_empty() || host.len() > 253 || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(ArgError::new("HOST", v, ACCEPTED));
    }
    Ok(host)
}

/// Exchange and routing key: AMQP short strings (at most 255 bytes).
fn parse_name(v: &[u8], name: &'static str) -> Result<String, ArgError> {
    const ACCEPTED: &str = "a UTF-8 string of at most 255 bytes";
    let s = parse_text(v, name, ACCEPTED)?;
    if s.len() > 255 {
        return Err(ArgError::new(name, v, ACCEPTED));
    }
    Ok(s)
}

fn parse_int(
    v: &[u8],
    name: &'static str,
    min: i64,
    max: i64,
    accepted: &'static str,
) -> Result<i64, ArgError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| ArgError::new(name, v, accepted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn options_read_back_what_they_set() {
        let s = Settings::default();
        for (name, value) in [
            ("key_evt_amqp.host", "rabbit.example"),
            ("key_evt_amqp.port", "5671"),
            ("key_evt_amqp.user", "app"),
            ("key_evt_amqp.heartbeat", "0"),
            ("key_evt_amqp.exchange", "events"),
            ("key_evt_amqp.routing_key", ""),
            ("key_evt_amqp.delivery_mode", "2"),
            ("key_evt_amqp.fallback_size", "-1"),
            ("key_evt_amqp.keymasks", "user:* order:?"),
            ("key_evt_amqp.keymasks", "ALL"),
            ("key_evt_amqp.keymasks", ""),
        ] {
            let changed = s.with_option(name, value.as_bytes()).unwrap();
            assert_eq!(changed.option(name).as_deref(), Some(value), "{name}");
        }
        assert_eq!(
            s.with_option("key_evt_amqp.keymasks", b"  a  b ")
                .unwrap()
                .masks,
            KeyMasks::from_args(["a", "b"])
        );
        assert_eq!(
            s.option("key_evt_amqp.password"),
            None,
            "never through this path"
        );
    }

    #[test]
    fn keymasks_read_back_as_given_not_escaped() {
        // Found by fuzz/fuzz_targets/load_args.rs: CONFIG GET showed `a\\b` for the mask `a\b`.
        let s = Settings::default();
        for value in ["a\\b", "say\"hi\"", "nul\0x", "caf\u{e9}:*"] {
            let set = s
                .with_option("key_evt_amqp.keymasks", value.as_bytes())
                .unwrap();
            let shown = set.option("key_evt_amqp.keymasks").unwrap();
            assert_eq!(shown, value);
            let again = set.with_option("key_evt_amqp.keymasks", shown.as_bytes());
            assert_eq!(again.unwrap(), set, "{value:?}");
        }
    }

    #[test]
    fn a_bad_option_names_the_option_and_what_is_accepted() {
        let s = Settings::default();
        let e = s.with_option("key_evt_amqp.port", b"abc").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid key_evt_amqp.port 'abc': expected an integer from 1 to 65535"
        );
        let e = s
            .with_option("key_evt_amqp.delivery_mode", b"3")
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid key_evt_amqp.delivery_mode '3'"),
            "{e}"
        );
        assert!(s.with_option("key_evt_amqp.host", b"").is_err());
    }

    #[test]
    fn defaults_without_arguments() {
        let (events, s) = parse_load_args::<&[u8]>(&[], &ServerClasses::all_known()).unwrap();
        assert_eq!(events, classes::EXPIRED | classes::EVICTED);
        assert_eq!(s, Settings::default());
        assert!(!s.masks.matches(b"anything"), "no mask forwards nothing");
    }

    #[test]
    fn the_documented_example_parses() {
        let args =
            "xe 127.0.0.1 5672 guest guest 30 amq.direct redis_keyspace_events 1 10000000 ALL";
        let args: Vec<&str> = args.split(' ').collect();
        let (events, s) = parse_load_args(&args, &ServerClasses::all_known()).unwrap();
        assert_eq!(events, classes::EXPIRED | classes::EVICTED);
        assert_eq!(s.port, 5672);
        assert_eq!(s.delivery_mode, 1);
        assert!(s.masks.is_all());
    }

    #[test]
    fn every_argument_lands_in_its_field() {
        let args = [
            "A$", "rabbit", "5673", "u", "p w", "0", "ex", "rk", "2", "-1", "^a", "b$",
        ];
        let (events, s) = parse_load_args(&args, &ServerClasses::all_known()).unwrap();
        assert_eq!(events, classes::ALL);
        assert_eq!(
            (
                s.host.as_str(),
                s.port,
                s.user.as_str(),
                s.password.as_str()
            ),
            ("rabbit", 5673, "u", "p w")
        );
        assert_eq!((s.heartbeat, s.exchange.as_str()), (0, "ex"));
        assert_eq!((s.routing_key.as_str(), s.delivery_mode), ("rk", 2));
        assert_eq!(s.fallback_size, -1);
        assert_eq!(s.masks.len(), 2);
        assert!(s.masks.matches(b"ab") && !s.masks.matches(b"ba"));
    }

    fn err(args: &[&str]) -> ArgError {
        parse_load_args(args, &ServerClasses::all_known()).unwrap_err()
    }

    #[test]
    fn bad_values_name_the_argument_and_what_is_accepted() {
        let e = err(&["x", "h", "abc"]);
        assert_eq!(
            e.to_string(),
            "invalid PORT 'abc': expected an integer from 1 to 65535"
        );
        assert_eq!(err(&["x", "h", "70000"]).name, "PORT");
        assert_eq!(err(&["x", "h", "0"]).name, "PORT");
        assert_eq!(err(&["x", "h", "1", "u", "p", "-1"]).name, "HEARTBEAT");
        let e = err(&["x", "h", "1", "u", "p", "1", "e", "r", "3"]);
        assert_eq!(e.name, "DELIVERY_MODE");
        assert!(e.to_string().contains("1 (transient) or 2 (persistent)"));
        assert_eq!(
            err(&["x", "h", "1", "u", "p", "1", "e", "r", "1", "1e3"]).name,
            "FALLBACK_SIZE"
        );
        assert_eq!(err(&["x", ""]).name, "HOST");
        assert_eq!(err(&["x", "a b"]).name, "HOST");
        assert_eq!(
            err(&["x", "h", "1", "u", "p", "1", &"e".repeat(256)]).name,
            "EXCHANGE"
        );
    }

    #[test]
    fn a_bad_password_is_never_echoed() {
        let e = parse_load_args(
            &[&b"x"[..], b"h", b"1", b"u", b"secret\xff"],
            &ServerClasses::all_known(),
        )
        .unwrap_err();
        assert_eq!(e.name, "PASS");
        assert!(!e.to_string().contains("secret"));
        let s = Settings {
            password: "hunter2".into(),
            ..Settings::default()
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn with_args_keeps_what_is_not_given() {
        let base = Settings::default()
            .with_args(&["h", "1", "u", "p", "5", "e", "r", "2", "7", "ALL"])
            .unwrap();
        let s = base.with_args(&["other"]).unwrap();
        assert_eq!(s.host, "other");
        assert_eq!((s.port, s.fallback_size), (1, 7));
        assert!(s.masks.is_all(), "masks are replaced only when given");
        let s = base
            .with_args(&["h", "1", "u", "p", "5", "e", "r", "2", "7", "^k"])
            .unwrap();
        assert!(!s.masks.is_all() && s.masks.matches(b"key"));
    }

    #[test]
    fn named_configs_win_over_positional_arguments() {
        let s = Settings::default()
            .with_args(&["rabbit", "5673", "bob", "pw", "7"])
            .unwrap();
        let e = s.endpoints(&[], "");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].to_string(), "amqp://bob@rabbit:5673/%2f");
        assert_eq!((e[0].password.as_str(), e[0].heartbeat), ("pw", 7));
        assert_eq!(s.endpoints(&[], "other")[0].password, "other");

        let uris: Vec<UriEndpoint> =
            crate::core::uri::parse_list("amqps://h1, amqp://alice@h2:1/v?heartbeat=3")
                .unwrap()
                .into_iter()
                .map(|p| p.endpoint)
                .collect();
        let e = s.endpoints(&uris, "");
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["amqps://bob@h1:5671/%2f", "amqp://alice@h2:1/v"]);
        assert_eq!((e[0].heartbeat, e[1].heartbeat), (7, 3));
        assert!(e.iter().all(|e| e.password == "pw"));
        assert!(s.endpoints(&uris, "x").iter().all(|e| e.password == "x"));
    }

    #[test]
    fn routing_key_templates_are_checked_everywhere() {
        let s = Settings::default();
        let t = s
            .with_option("key_evt_amqp.routing_key", b"redis.{db}.{event}")
            .unwrap();
        assert!(!t.routing.is_literal());
        assert_eq!(t.routing_key, "redis.{db}.{event}");
        assert!(Settings::default().routing.is_literal());
        let e = s
            .with_option("key_evt_amqp.routing_key", b"r.{nope}")
            .unwrap_err();
        assert_eq!(e.name, "key_evt_amqp.routing_key");
        assert!(
            e.to_string().starts_with(
                "invalid key_evt_amqp.routing_key 'r.{nope}': expected only the placeholders {db} {event}"
            ),
            "{e}"
        );
        assert!(e.to_string().contains("unknown placeholder"), "{e}");
        let e = err(&["x", "h", "1", "u", "p", "1", "e", "r.{partition:0}"]);
        assert_eq!(e.name, "ROUTING_KEY");
        assert!(e.to_string().contains("out of range"), "{e}");
        let e = t
            .with_args(&["h", "1", "u", "p", "1", "e", "r.{db"])
            .unwrap_err();
        assert!(e.to_string().contains("unpaired brace"), "{e}");
        let kept = t
            .with_args(&["h", "1", "u", "p", "1", "e", "plain"])
            .unwrap();
        assert!(kept.routing.is_literal(), "a plain key replaces a template");
    }

    proptest! {
        #[test]
        fn parsing_never_panics(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 0..14)) {
            let _ = parse_load_args(&args, &ServerClasses::all_known());
            let _ = Settings::default().with_args(&args);
        }

        #[test]
        fn numbers_round_trip(port in 1u16.., hb in any::<u16>(), fb in any::<i64>()) {
            let args = ["h".to_string(), port.to_string(), "u".into(), "p".into(), hb.to_string(),
                "e".into(), "r".into(), "2".into(), fb.to_string()];
            let s = Settings::default().with_args(&args).unwrap();
            prop_assert_eq!((s.port, s.heartbeat, s.fallback_size), (port, hb, fb));
        }
    }
}
