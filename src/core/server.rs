//! Which server the module runs in, read from `INFO server` at load.
//!
//! Valkey reports a Redis-compatible `redis_version` (7.2.4 for every 8.x) beside its own
//! `valkey_version`; the latter names it.

use std::fmt;

use crate::core::event::RunId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    /// `Redis` or `Valkey`.
    pub product: &'static str,
    /// As the server writes it (`7.0.15`).
    pub version: String,
    pub run_id: RunId,
}

impl ServerInfo {
    /// Reads the fields of an `INFO server` reply; `None` without a valid `run_id`.
    pub fn parse(info: &[u8]) -> Option<ServerInfo> {
        let field = |name: &[u8]| {
            info.split(|&b| b == b'\n').find_map(|line| {
                line.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(b":"))
                    .map(<[u8]>::trim_ascii)
            })
        };
        let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        let run_id = RunId::from_hex(field(b"run_id")?)?;
        let (product, version) = match field(b"valkey_version") {
            Some(v) => ("Valkey", text(v)),
            None => (
                "Redis",
                field(b"redis_version").map(text).unwrap_or_default(),
            ),
        };
        Some(ServerInfo {
            product,
            version,
            run_id,
        })
    }
}

impl fmt::Display for ServerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.product, self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN_ID: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn redis_is_named_by_its_version() {
        let info = format!("# Server\r\nredis_version:7.0.15\r\nrun_id:{RUN_ID}\r\n");
        let s = ServerInfo::parse(info.as_bytes()).unwrap();
        assert_eq!(s.to_string(), "Redis 7.0.15");
        assert_eq!(s.run_id.to_hex(), RUN_ID);
    }

    #[test]
    fn valkey_is_named_by_its_own_version_not_the_compatible_one() {
        let info = format!(
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.1.1\r\n\
             redis_git_sha1:0\r\nrun_id:{RUN_ID}\r\n"
        );
        assert_eq!(
            ServerInfo::parse(info.as_bytes()).unwrap().to_string(),
            "Valkey 8.1.1"
        );
    }

    #[test]
    fn a_prefix_of_a_field_name_is_not_the_field() {
        let info = format!("run_id_x:1\r\nrun_id:{RUN_ID}\r\nredis_version_x:9\r\n");
        let s = ServerInfo::parse(info.as_bytes()).unwrap();
        assert_eq!(s.to_string(), "Redis ");
        assert!(ServerInfo::parse(b"redis_version:7.0.15\r\nrun_id:zz\r\n").is_none());
    }
}
