//! The broker options among the module configs (`key_evt_amqp.uri`, `password`,
//! `tls_ca_file`, `tls_skip_verify`), parsed and checked. Where the password lives and why is
//! in `redis/config.rs`.

use crate::core::uri::{self, UriEndpoint};

pub const PASSWORD_OPTION: &str = "key_evt_amqp.password";
pub const CA_FILE_OPTION: &str = "key_evt_amqp.tls_ca_file";

/// TLS options of `amqps://` endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM CA bundle; empty: the system's CA store.
    pub ca_file: String,
    /// Accept any certificate (tests only; a warning is logged when it is turned on).
    pub skip_verify: bool,
}

/// The broker options among the module configs.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct BrokerOptions {
    /// `key_evt_amqp.uri`, parsed, without passwords (see `password`). Empty: not set.
    pub uris: Vec<UriEndpoint>,
    /// `key_evt_amqp.uri` as `CONFIG GET` shows it: the URIs less their passwords.
    pub uri_text: String,
    /// `key_evt_amqp.password`; empty: not set (PASS applies).
    pub password: String,
    pub tls: TlsOptions,
}

/// A `key_evt_amqp.uri` value, parsed.
#[derive(Debug, PartialEq, Eq)]
pub struct UriOption {
    /// Without passwords.
    pub uris: Vec<UriEndpoint>,
    /// What `CONFIG GET` shows: the URIs as given less their passwords.
    pub shown: String,
    /// The password the URIs gave, if any.
    pub password: Option<String>,
}

/// Parses a `key_evt_amqp.uri` value; empty (or blank) means "not set".
pub fn parse_uri_option(text: &str) -> Result<UriOption, String> {
    if text.trim().is_empty() {
        return Ok(UriOption {
            uris: Vec::new(),
            shown: String::new(),
            password: None,
        });
    }
    let parsed = uri::parse_list(text).map_err(|e| e.to_string())?;
    let mut password: Option<String> = None;
    for p in &parsed {
        if let Some(pw) = &p.endpoint.password {
            if password.as_ref().is_some_and(|known| known != pw) {
                return Err(format!(
                    "invalid {}: its URIs give different passwords; one password serves \
                     every URI of the list (or set it apart in {PASSWORD_OPTION})",
                    uri::OPTION
                ));
            }
            password = Some(pw.clone());
        }
    }
    let shown = parsed
        .iter()
        .map(|p| p.without_password.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let uris = parsed
        .into_iter()
        .map(|p| UriEndpoint {
            password: None,
            ..p.endpoint
        })
        .collect();
    Ok(UriOption {
        uris,
        shown,
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_uri_means_not_set() {
        let o = parse_uri_option("  ").unwrap();
        assert!(o.uris.is_empty() && o.shown.is_empty() && o.password.is_none());
    }

    #[test]
    fn the_password_leaves_the_uri() {
        let o = parse_uri_option("amqps://u:s3cret@h1:5671/v, amqp://h2?heartbeat=4").unwrap();
        assert_eq!(o.shown, "amqps://u@h1:5671/v,amqp://h2?heartbeat=4");
        assert_eq!(o.password.as_deref(), Some("s3cret"));
        assert!(o.uris.iter().all(|u| u.password.is_none()));
        assert_eq!(o.uris.len(), 2);
        // What CONFIG GET shows is accepted back, and means the same.
        let again = parse_uri_option(&o.shown).unwrap();
        assert_eq!((again.uris, again.shown), (o.uris, o.shown));
        assert_eq!(again.password, None);
    }

    #[test]
    fn one_password_per_list() {
        let e = parse_uri_option("amqp://u:a@h1,amqp://u:b@h2").unwrap_err();
        assert!(e.contains("different passwords"), "{e}");
        assert!(!e.contains(":a@") && !e.contains(":b@"), "{e}");
        let o = parse_uri_option("amqp://u:a@h1,amqp://u:a@h2,amqp://h3").unwrap();
        assert_eq!(o.password.as_deref(), Some("a"));
    }

    #[test]
    fn bad_uris_are_refused_without_the_password() {
        let e = parse_uri_option("amqp://u:hunter2@h:0").unwrap_err();
        assert!(
            e.starts_with("invalid key_evt_amqp.uri 'amqp://u:***@h:0'"),
            "{e}"
        );
    }
}
