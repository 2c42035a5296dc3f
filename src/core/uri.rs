//! AMQP URIs: `key_evt_amqp.uri` is a comma-separated list of `amqp://` and `amqps://` URIs,
//! tried in order (several addresses of one RabbitMQ cluster).
//!
//! Pure parsing: text in, [`UriEndpoint`]s or a [`UriError`] out. Nothing here knows Redis or
//! the network. The grammar is RabbitMQ's URI spec (`amqp[s]://[user[:password]@]host[:port][/vhost]
//! [?heartbeat=N]`) with these choices:
//! - The port defaults to 5672 for `amqp`, 5671 for `amqps`.
//! - No path or an empty one means the default vhost `/` (the spec reads `amqp://h/` as the
//!   vhost named "", which is never what anyone means). A vhost holding `/` is written `%2f`.
//! - The user info ends at the last `@` before any `?`, so a password may hold `/`, `#` or
//!   `@` unescaped; a `@` in a vhost must then be written `%40`.
//! - The list splits only at a comma followed by a scheme (`,amqp://` or `, amqps://`): a
//!   comma inside a password needs no escaping.
//! - `heartbeat` is the only query parameter: any other one is refused rather than ignored.
//!
//! Secrets: an error never quotes the password. It names the URI in its redacted form, where
//! everything between the user name and the last `@` is replaced by `***`.

use std::fmt;

/// The config option these URIs come from, for error messages.
pub const OPTION: &str = "key_evt_amqp.uri";

pub const AMQP_PORT: u16 = 5672;
pub const AMQPS_PORT: u16 = 5671;
pub const DEFAULT_VHOST: &str = "/";

/// One broker address as written in a URI. User, password and heartbeat are optional: what a
/// URI leaves out comes from elsewhere (see [`UriEndpoint::resolve`]).
#[derive(Clone, PartialEq, Eq)]
pub struct UriEndpoint {
    pub tls: bool,
    /// Without brackets for an IPv6 address.
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub vhost: String,
    pub heartbeat: Option<u16>,
}

/// A broker to connect to, every field known.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub vhost: String,
    pub heartbeat: u16,
}

impl UriEndpoint {
    /// The endpoint with what the URI left out filled in.
    pub fn resolve(&self, user: &str, password: &str, heartbeat: u16) -> Endpoint {
        Endpoint {
            tls: self.tls,
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone().unwrap_or_else(|| user.to_string()),
            password: self
                .password
                .clone()
                .unwrap_or_else(|| password.to_string()),
            vhost: self.vhost.clone(),
            heartbeat: self.heartbeat.unwrap_or(heartbeat),
        }
    }
}

/// The redacted form, for logs, INFO and errors: `amqps://user@host:5671/vhost`, never the
/// password.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_redacted(
            f,
            self.tls,
            Some(&self.user),
            &self.host,
            self.port,
            &self.vhost,
        )
    }
}

impl fmt::Display for UriEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_redacted(
            f,
            self.tls,
            self.user.as_deref(),
            &self.host,
            self.port,
            &self.vhost,
        )
    }
}

// The password never leaves through Debug (logs, panics).
impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({self}, heartbeat {})", self.heartbeat)
    }
}

impl fmt::Debug for UriEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "UriEndpoint({self}, password {}, heartbeat {:?})",
            if self.password.is_some() {
                "given"
            } else {
                "not given"
            },
            self.heartbeat
        )
    }
}

fn write_redacted(
    f: &mut fmt::Formatter<'_>,
    tls: bool,
    user: Option<&str>,
    host: &str,
    port: u16,
    vhost: &str,
) -> fmt::Result {
    f.write_str(if tls { "amqps://" } else { "amqp://" })?;
    if let Some(user) = user {
        write!(f, "{}@", encode(user))?;
    }
    if host.contains(':') {
        write!(f, "[{host}]:{port}/{}", encode(vhost))
    } else {
        write!(f, "{host}:{port}/{}", encode(vhost))
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// A bad `key_evt_amqp.uri` value: the URI at fault (redacted) and what is wrong.
#[derive(Clone, PartialEq, Eq)]
pub struct UriError {
    /// The redacted URI, or `None` when the fault is in the list as a whole.
    pub uri: Option<String>,
    pub reason: String,
}

impl UriError {
    fn list(reason: impl Into<String>) -> Self {
        UriError {
            uri: None,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.uri {
            Some(uri) => write!(f, "invalid {OPTION} '{uri}': {}", self.reason),
            None => write!(f, "invalid {OPTION}: {}", self.reason),
        }
    }
}

impl fmt::Debug for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One parsed list item: the endpoint, and the item's text without its password (what
/// `CONFIG GET` may show).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedUri {
    pub endpoint: UriEndpoint,
    pub without_password: String,
}

/// Parses a comma-separated list of URIs (whitespace around the commas is ignored). An empty
/// list is an error: the caller decides what an empty config means.
pub fn parse_list(text: &str) -> Result<Vec<ParsedUri>, UriError> {
    let items = split_list(text);
    if items.iter().all(|s| s.is_empty()) {
        return Err(UriError::list(
            "expected one or more amqp:// or amqps:// URIs separated by commas",
        ));
    }
    items
        .into_iter()
        .map(|item| {
            if item.is_empty() {
                return Err(UriError::list(
                    "an empty item in the list (two commas in a row, or one at an end)",
                ));
            }
            parse_one(item).map_err(|reason| UriError {
                uri: Some(redact_raw(item)),
                reason,
            })
        })
        .collect()
}

/// Splits at each comma that a scheme follows, trimming whitespace around the items.
fn split_list(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut start = 0;
    for (i, _) in text.match_indices(',') {
        let next = text[i + 1..].trim_start().to_ascii_lowercase();
        let starts_uri = next.starts_with("amqp://") || next.starts_with("amqps://");
        // A comma at the end or before another comma also splits (and makes an empty item).
        if starts_uri || next.is_empty() || next.starts_with(',') {
            items.push(text[start..i].trim());
            start = i + 1;
        }
    }
    items.push(text[start..].trim());
    items
}

/// The item with anything that may be a password hidden: everything between the first `:`
/// after the user name and the last `@` of the whole item becomes `***`.
pub fn redact_raw(item: &str) -> String {
    let Some(scheme_end) = item.find("://").map(|i| i + 3) else {
        // Not even a scheme: show nothing of an item that may be all secret.
        return match item.rfind('@') {
            Some(_) => "***".to_string(),
            None => item.to_string(),
        };
    };
    let rest = &item[scheme_end..];
    match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***@{}",
                    &item[..scheme_end],
                    &userinfo[..colon],
                    &rest[at + 1..]
                ),
                None => item.to_string(),
            }
        }
        None => item.to_string(),
    }
}

fn parse_one(item: &str) -> Result<ParsedUri, String> {
    let (scheme, rest) = item
        .split_once("://")
        .ok_or("expected amqp://… or amqps://…")?;
    let (tls, scheme_text) = match scheme.to_ascii_lowercase().as_str() {
        "amqp" => (false, "amqp://"),
        "amqps" => (true, "amqps://"),
        _ => return Err("the scheme must be amqp:// or amqps://".into()),
    };
    // The user info ends at the last '@' before the query.
    let before_query = rest.find('?').map_or(rest, |q| &rest[..q]);
    let (userinfo, after) = match before_query.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, password) = match info.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (info, None),
            };
            let user = decode(user).map_err(|e| format!("{e} in the user name"))?;
            let password = password
                .map(decode)
                .transpose()
                .map_err(|e| format!("{e} in the password"))?;
            (Some(user).filter(|u| !u.is_empty()), password)
        }
    };
    let authority_end = after.find(['/', '?']).unwrap_or(after.len());
    let (authority, tail) = after.split_at(authority_end);
    let (host, port) = parse_host_port(authority)?;
    let port = port.unwrap_or(if tls { AMQPS_PORT } else { AMQP_PORT });
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    let vhost = match path.strip_prefix('/') {
        None | Some("") => DEFAULT_VHOST.to_string(),
        Some(v) if v.contains('/') => {
            return Err("a vhost that contains '/' must be written %2f".into())
        }
        Some(v) => decode(v).map_err(|e| format!("{e} in the vhost"))?,
    };
    let heartbeat = query.map(parse_query).transpose()?.flatten();
    // The item as given, less its password.
    let without_password = match userinfo {
        Some(info) => {
            let user = info.split_once(':').map_or(info, |(u, _)| u);
            format!("{scheme_text}{user}@{after}")
        }
        None => format!("{scheme_text}{rest}"),
    };
    Ok(ParsedUri {
        endpoint: UriEndpoint {
            tls,
            host,
            port,
            user,
            password,
            vhost,
            heartbeat,
        },
        without_password,
    })
}

fn parse_host_port(authority: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or("an IPv6 address must be closed with ']'")?;
        if addr.is_empty()
            || !addr
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err("invalid IPv6 address".into());
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or("expected ':' after the IPv6 address")?,
            ),
        };
        (addr.to_string(), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if host.is_empty() {
            return Err("the host is missing".into());
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        if host.len() > 253 || !host.chars().all(valid) {
            return Err("the host must be a host name or an IP address".into());
        }
        (host.to_string(), port)
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or("the port must be a number from 1 to 65535")?,
        ),
    };
    Ok((host, port))
}

/// `heartbeat=N`, the only parameter we know; returns it.
fn parse_query(query: &str) -> Result<Option<u16>, String> {
    let mut heartbeat = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "heartbeat" => {
                heartbeat = Some(value.parse::<u16>().map_err(|_| {
                    "heartbeat must be a number of seconds from 0 to 65535 (0 disables it)"
                })?)
            }
            // Quoted only when it cannot be the tail of a password that held an unescaped
            // '?' (the user info then ends at a '@' after it).
            _ if !query.contains('@')
                && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
            {
                return Err(format!(
                    "unsupported query parameter '{key}' (only heartbeat is supported)"
                ))
            }
            _ => return Err("unsupported query parameter (only heartbeat is supported)".into()),
        }
    }
    Ok(heartbeat)
}

/// Percent-decoding into UTF-8; the error never quotes the input.
fn decode(s: &str) -> Result<String, &'static str> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("bad percent-encoding")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-encoding that is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(text: &str) -> UriEndpoint {
        let mut list = parse_list(text).unwrap();
        assert_eq!(list.len(), 1);
        list.remove(0).endpoint
    }

    fn err(text: &str) -> String {
        parse_list(text).unwrap_err().to_string()
    }

    #[test]
    fn a_full_uri() {
        let e = one("amqps://u%40x:p%3As@rabbit.example:5700/v%2fh?heartbeat=7");
        assert!(e.tls);
        assert_eq!((e.host.as_str(), e.port), ("rabbit.example", 5700));
        assert_eq!(e.user.as_deref(), Some("u@x"));
        assert_eq!(e.password.as_deref(), Some("p:s"));
        assert_eq!((e.vhost.as_str(), e.heartbeat), ("v/h", Some(7)));
    }

    #[test]
    fn defaults() {
        let e = one("amqp://h");
        assert_eq!((e.tls, e.port, e.vhost.as_str()), (false, 5672, "/"));
        assert_eq!((e.user, e.password, e.heartbeat), (None, None, None));
        assert_eq!(one("amqps://h/").port, 5671);
        assert_eq!(one("amqps://h/").vhost, "/");
        assert_eq!(one("AMQP://h:").port, 5672);
        assert_eq!(one("amqp://h/%2f").vhost, "/");
        assert_eq!(one("amqp://u@h").user.as_deref(), Some("u"));
        assert_eq!(one("amqp://u@h").password, None);
        assert_eq!(one("amqp://:p@h").user, None);
        assert_eq!(one("amqp://h?heartbeat=0").heartbeat, Some(0));
    }

    #[test]
    fn ip_addresses() {
        let e = one("amqp://10.1.2.3:5673");
        assert_eq!((e.host.as_str(), e.port), ("10.1.2.3", 5673));
        let e = one("amqps://guest:guest@[::1]:5671/");
        assert_eq!((e.host.as_str(), e.port), ("::1", 5671));
        assert_eq!(
            e.resolve("x", "y", 1).to_string(),
            "amqps://guest@[::1]:5671/%2f"
        );
    }

    #[test]
    fn a_list_tolerates_whitespace_and_keeps_its_order() {
        let list = parse_list(" amqp://a:1 ,amqps://b,\tamqp://c/v ").unwrap();
        let hosts: Vec<&str> = list.iter().map(|p| p.endpoint.host.as_str()).collect();
        assert_eq!(hosts, ["a", "b", "c"]);
        assert_eq!(list[0].endpoint.port, 1);
        assert!(list[1].endpoint.tls);
    }

    #[test]
    fn passwords_may_hold_separators() {
        let e = one("amqp://u:a,b/c#d@e@h:1/v");
        assert_eq!(e.password.as_deref(), Some("a,b/c#d@e"));
        assert_eq!((e.host.as_str(), e.port, e.vhost.as_str()), ("h", 1, "v"));
        let list = parse_list("amqp://u:x,amqp@h1,amqp://h2").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].endpoint.password.as_deref(), Some("x,amqp"));
    }

    #[test]
    fn the_password_is_removed_from_the_text_to_show() {
        let list = parse_list("amqps://u:s3cr3t@h:1/v?heartbeat=5, amqp://h2").unwrap();
        assert_eq!(list[0].without_password, "amqps://u@h:1/v?heartbeat=5");
        assert_eq!(list[1].without_password, "amqp://h2");
        assert_eq!(
            parse_list("amqp://:pw@h").unwrap()[0].without_password,
            "amqp://@h"
        );
        // What is shown parses again, to the same endpoint less its password.
        let again = one(&list[0].without_password);
        assert_eq!(again.password, None);
        assert_eq!(
            again,
            UriEndpoint {
                password: None,
                ..list[0].endpoint.clone()
            }
        );
    }

    #[test]
    fn resolving_fills_what_the_uri_left_out() {
        let e = one("amqp://h").resolve("guest", "pw", 30);
        assert_eq!((e.user.as_str(), e.password.as_str()), ("guest", "pw"));
        assert_eq!(e.heartbeat, 30);
        let e = one("amqp://bob:x@h?heartbeat=3").resolve("guest", "pw", 30);
        assert_eq!((e.user.as_str(), e.password.as_str()), ("bob", "x"));
        assert_eq!(e.heartbeat, 3);
    }

    #[test]
    fn display_is_redacted() {
        let e = one("amqps://us%20er:secret@host:5671/my%2fvhost").resolve("", "", 0);
        assert_eq!(e.to_string(), "amqps://us%20er@host:5671/my%2fvhost");
        assert!(!format!("{e:?}").contains("secret"));
        let u = one("amqp://u:secret@h");
        assert!(!format!("{u:?} {u}").contains("secret"), "{u:?}");
    }

    #[test]
    fn errors_name_the_option_and_the_reason() {
        assert_eq!(
            err("http://h"),
            "invalid key_evt_amqp.uri 'http://h': the scheme must be amqp:// or amqps://"
        );
        assert!(err("").contains("expected one or more"));
        assert!(err("  ").starts_with("invalid key_evt_amqp.uri: "));
        assert!(err("amqp://a,,amqp://b").contains("empty item"));
        assert!(err("amqp://a,").contains("empty item"));
        assert!(err("amqp://h:0").contains("port must be"));
        assert!(err("amqp://h:99999").contains("port must be"));
        assert!(err("amqp://h:x").contains("port must be"));
        assert!(err("amqp://").contains("host is missing"));
        assert!(err("amqp://h a").contains("host name"));
        assert!(err("amqp://h/a/b").contains("%2f"));
        assert!(err("amqp://h?heartbeat=-1").contains("heartbeat"));
        assert!(err("amqp://h?frame_max=1").contains("'frame_max'"));
        assert!(err("amqp://[::1").contains("IPv6"));
        assert!(err("amqp://h/%zz").contains("percent-encoding in the vhost"));
        assert!(err("h:5672").contains("expected amqp://"));
        // The second item is the one at fault.
        assert!(err("amqp://ok, amqp://bad:port").contains("'amqp://bad:port'"));
    }

    #[test]
    fn errors_never_quote_the_password() {
        for bad in [
            "amqp://u:hunter2@h:0",
            "amqp://u:hunter2@h/a/b",
            "amqp://u:hunter2%zz@h",
            "amqp://u:hunter2%ff@h",
            "amqp://u:hunter2@h?x=1",
            "amqp://u:hun?ter2@h:1",
            "amqp://u:12?ter2@h",
            "ftp://u:hunter2@h",
            "u:hunter2@h",
            "amqp://ok,amqp://u:hunter2@",
        ] {
            let e = err(bad);
            assert!(
                !e.contains("hunter2") && !e.contains("ter2"),
                "{bad} gave {e}"
            );
            assert!(e.starts_with("invalid key_evt_amqp.uri"), "{e}");
        }
        assert_eq!(redact_raw("amqp://u:pw@h"), "amqp://u:***@h");
        assert_eq!(redact_raw("amqp://u@h"), "amqp://u@h");
        assert_eq!(redact_raw("amqp://h"), "amqp://h");
    }

    proptest! {
        #[test]
        fn parsing_never_panics(text in "\\PC{0,60}") {
            let _ = parse_list(&text);
        }

        #[test]
        fn a_password_never_shows_in_an_error_or_in_what_is_shown(
            password in "[a-zA-Z0-9!$&'()*+,;=/#@:._~-]{6,20}",
            tail in "(:[0-9a-z]{0,6})?(/[a-z%/]{0,6})?(\\?[a-z=0-9]{0,10})?",
        ) {
            prop_assume!(password.chars().any(|c| c.is_ascii_alphabetic()));
            let text = format!("amqp://user:{password}@host{tail}");
            match parse_list(&text) {
                Ok(list) => {
                    for item in &list {
                        prop_assert!(!item.without_password.contains(&password));
                        let shown = format!("{:?}", item.endpoint);
                        prop_assert!(!shown.contains(&password));
                    }
                }
                Err(e) => prop_assert!(!e.to_string().contains(&password), "{}", e),
            }
        }
    }
}
