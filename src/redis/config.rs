//! Options set with Redis's own `CONFIG SET key_evt_amqp.*` (module configs), beside the
//! positional load arguments.
//!
//! | config | default | |
//! |--------|---------|-|
//! | `key_evt_amqp.host`, `port`, `user`, `heartbeat`, `exchange`, `routing_key`, `delivery_mode`, `fallback_size`, `keymasks` | the load arguments | the positional load arguments, by name (`keymasks`: masks separated by spaces) |
//! | `key_evt_amqp.events` | the load argument | event classes; fixed once loaded (Redis refuses `CONFIG SET` of it) |
//! | `key_evt_amqp.queue_capacity` | 100000 | events held in memory before they spill |
//! | `key_evt_amqp.uri` | empty | `amqp://` / `amqps://` URIs, comma-separated, tried in order |
//! | `key_evt_amqp.password` | empty | the broker password (hidden, see below) |
//! | `key_evt_amqp.tls_ca_file` | empty | PEM CA bundle for `amqps://`; empty: the system's CAs |
//! | `key_evt_amqp.tls_skip_verify` | no | do not verify the broker's certificate (tests only) |
//!
//! The options that mirror the load arguments show the values in force (`CONFIG GET`), which
//! the commands change too; so `CONFIG REWRITE` saves what runs. Precedence at load: a config
//! given in redis.conf or `MODULE LOADEX … CONFIG` wins over the positional argument; one not
//! given (Redis then applies its default, the empty string) leaves the positional value.
//!
//! Broker precedence (see [`Settings::endpoints`]): a URI list, when set, replaces HOST and PORT;
//! what a URI leaves out (user, heartbeat) comes from the positional arguments; a non-empty
//! password config replaces PASS. An empty URI config goes back to the positional broker.
//!
//! Where the password lives. Redis answers `CONFIG GET` and writes `CONFIG REWRITE` from the
//! same getter, so a config cannot both hide its value and survive a rewrite. Hence:
//! - `key_evt_amqp.uri` never holds a password. A password written in a URI is accepted, moved
//!   to `key_evt_amqp.password`, and the URI is kept (and shown) without it. All URIs of a list
//!   share that one password (a cluster's nodes share their users); URIs that give different
//!   passwords are refused.
//! - `key_evt_amqp.password` is `HIDDEN` (left out of `CONFIG GET key_evt_amqp.*` and
//!   `CONFIG GET *`; only `CONFIG GET key_evt_amqp.password`, by its exact name, shows it, as
//!   `CONFIG GET requirepass` does) and `SENSITIVE` (Redis redacts the value of a `CONFIG SET`
//!   from the slow log and MONITOR), and `CONFIG REWRITE` writes it, so a rewritten redis.conf
//!   still connects after a restart. `key_evt_amqp.uri` is `SENSITIVE` too, as its `CONFIG SET`
//!   may carry a password.
//! - Errors, logs and INFO show endpoints in their redacted form (`amqps://user@host:5671/v`).
//!
//! The values live here; the publisher reads them (with the settings) each time it connects,
//! and a change wakes it up, so it reconnects with the new ones. The module's own files need
//! no change for that.

use std::sync::atomic::{AtomicI64, AtomicPtr, AtomicU64, Ordering, Ordering::Relaxed};

use parking_lot::{Mutex, RwLock};
use redis_module::configuration::{
    register_bool_configuration, register_i64_configuration, register_string_configuration,
    ConfigurationContext, ConfigurationFlags, ConfigurationValue,
};
use redis_module::{raw, Context, RedisError, RedisString};

use crate::core::settings::{self, Settings, OPTIONS};
use crate::core::uri::{self, Endpoint, UriEndpoint};
use crate::redis::log;
use crate::redis::runtime;

/// `key_evt_amqp.queue_capacity`: events held in memory before they spill to the fallback list.
pub static QUEUE_CAPACITY: AtomicI64 = AtomicI64::new(DEFAULT_QUEUE_CAPACITY);
pub const DEFAULT_QUEUE_CAPACITY: i64 = 100_000;
pub const MAX_QUEUE_CAPACITY: i64 = 100_000_000;

pub fn queue_capacity() -> usize {
    usize::try_from(QUEUE_CAPACITY.load(Relaxed)).unwrap_or(1)
}

/// The next event-loop step applies the new capacity (a queue now over it spills then).
pub fn on_queue_capacity_changed(
    _ctx: &ConfigurationContext,
    _name: &str,
    _value: &'static AtomicI64,
) {
    runtime::wake_main();
}

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

static BROKER: RwLock<BrokerOptions> = RwLock::new(BrokerOptions {
    uris: Vec::new(),
    uri_text: String::new(),
    password: String::new(),
    tls: TlsOptions {
        ca_file: String::new(),
        skip_verify: false,
    },
});

/// Bumped by every change of [`BROKER`]: the publisher's cheap "did anything change?".
static GENERATION: AtomicU64 = AtomicU64::new(0);

pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// The brokers to try, in order: the settings' positional ones unless the configs say
/// otherwise.
pub fn endpoints(settings: &Settings) -> Vec<Endpoint> {
    let b = BROKER.read();
    settings.endpoints(&b.uris, &b.password)
}

pub fn tls_options() -> TlsOptions {
    BROKER.read().tls.clone()
}

/// The brokers as logs and INFO may show them: redacted, comma-separated.
pub fn describe_endpoints(settings: &Settings) -> String {
    endpoints(settings)
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn update(change: impl FnOnce(&mut BrokerOptions)) {
    change(&mut BROKER.write());
    GENERATION.fetch_add(1, Ordering::AcqRel);
    // The publisher may be waiting out a back-off: it reconnects with the new values now.
    if let Some(m) = runtime::current() {
        m.shared.notify();
    }
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

/// Checks that a CA file holds usable certificates (the error names the option and the path).
pub fn check_ca_file(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Ok(());
    }
    crate::publisher::load_ca_roots(path)
        .map(|_| ())
        .map_err(|e| format!("invalid {CA_FILE_OPTION} '{path}': {e}"))
}

/// A config value as UTF-8; the error names the option (never the value: it may be secret).
fn utf8(val: &RedisString, option: &str) -> Result<String, RedisError> {
    std::str::from_utf8(val.as_slice())
        .map(str::to_string)
        .map_err(|_| RedisError::String(format!("invalid {option}: expected UTF-8 text")))
}

/// Redis copies the string a getter returns and never frees it (the module keeps ownership),
/// while redis-module 2.0.8 hands it over: each `CONFIG GET` would leak one. Each string option
/// keeps the last string it returned here and frees it at its next call, once Redis has copied
/// it.
struct Returned(AtomicPtr<raw::RedisModuleString>);

impl Returned {
    const fn new() -> Self {
        Returned(AtomicPtr::new(std::ptr::null_mut()))
    }

    fn hand_out(&self, text: &str) -> RedisString {
        // From a slice: a value may hold a NUL byte, which `RedisString::create` panics on.
        let s = RedisString::create_from_slice(std::ptr::null_mut(), text.as_bytes());
        let previous = self.0.swap(s.inner, Ordering::AcqRel);
        if !previous.is_null() {
            // Taking it back frees it when dropped (Redis copied it at the previous call).
            drop(RedisString::from_redis_module_string(
                std::ptr::null_mut(),
                previous,
            ));
        }
        s
    }
}

struct UriConfig(Returned);
struct PasswordConfig(Returned);
struct CaFileConfig(Returned);
struct SkipVerifyConfig;

static URI: UriConfig = UriConfig(Returned::new());
static PASSWORD: PasswordConfig = PasswordConfig(Returned::new());
static CA_FILE: CaFileConfig = CaFileConfig(Returned::new());
static SKIP_VERIFY: SkipVerifyConfig = SkipVerifyConfig;

impl ConfigurationValue<RedisString> for UriConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        self.0.hand_out(&BROKER.read().uri_text)
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        let text = utf8(&val, uri::OPTION)?;
        let parsed = parse_uri_option(&text).map_err(RedisError::String)?;
        update(|b| {
            b.uris = parsed.uris;
            b.uri_text = parsed.shown;
            if let Some(password) = parsed.password {
                b.password = password;
            }
        });
        Ok(())
    }
}

impl ConfigurationValue<RedisString> for PasswordConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        self.0.hand_out(&BROKER.read().password)
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        let password = utf8(&val, PASSWORD_OPTION)?;
        update(|b| b.password = password);
        Ok(())
    }
}

impl ConfigurationValue<RedisString> for CaFileConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        self.0.hand_out(&BROKER.read().tls.ca_file)
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        let path = utf8(&val, CA_FILE_OPTION)?;
        check_ca_file(&path).map_err(RedisError::String)?;
        update(|b| b.tls.ca_file = path);
        Ok(())
    }
}

impl ConfigurationValue<bool> for SkipVerifyConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> bool {
        BROKER.read().tls.skip_verify
    }

    fn set(&self, _ctx: &ConfigurationContext, val: bool) -> Result<(), RedisError> {
        if val && !BROKER.read().tls.skip_verify {
            log::warning(
                "key_evt_amqp.tls_skip_verify is on: the broker's TLS certificate is not \
                 verified, anyone in the path can read and change the events (use it for tests \
                 only)",
            );
        }
        update(|b| b.tls.skip_verify = val);
        Ok(())
    }
}

/// The event classes and settings from the load arguments while `MODULE LOAD` applies the
/// configs, before the module exists.
static AT_LOAD: Mutex<Option<(i32, Settings)>> = Mutex::new(None);

/// A config mirroring a load argument (see [`OPTIONS`]).
struct SettingConfig {
    name: &'static str,
    returned: Returned,
}

const fn setting(i: usize) -> SettingConfig {
    SettingConfig {
        name: OPTIONS[i].0,
        returned: Returned::new(),
    }
}

static SETTING_CONFIGS: [SettingConfig; OPTIONS.len()] = [
    setting(0),
    setting(1),
    setting(2),
    setting(3),
    setting(4),
    setting(5),
    setting(6),
    setting(7),
    setting(8),
];

/// The settings in force: the running module's, or those being loaded.
fn current_settings() -> Option<Settings> {
    match runtime::current() {
        Some(m) => Some((*m.shared.settings()).clone()),
        None => AT_LOAD.lock().as_ref().map(|(_, s)| s.clone()),
    }
}

impl ConfigurationValue<RedisString> for SettingConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        let value = current_settings()
            .and_then(|s| s.option(self.name))
            .unwrap_or_default();
        self.returned.hand_out(&value)
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        let value = val.as_slice();
        let invalid = |e: settings::ArgError| RedisError::String(e.to_string());
        if let Some((_, at_load)) = AT_LOAD.lock().as_mut() {
            // Not given at load: Redis applies the default (empty); the positional value stays.
            if !value.is_empty() {
                *at_load = at_load.with_option(self.name, value).map_err(invalid)?;
            }
            return Ok(());
        }
        let m = runtime::current().ok_or(RedisError::Str("key_evt_amqp is not loaded"))?;
        let new = m
            .shared
            .settings()
            .with_option(self.name, value)
            .map_err(invalid)?;
        m.shared.set_settings(new);
        // A new fallback size or masks apply from the next event-loop step.
        runtime::wake_main();
        Ok(())
    }
}

/// `key_evt_amqp.events`: immutable, so only redis.conf or `MODULE LOADEX … CONFIG` set it.
struct EventsConfig(Returned);

static EVENTS: EventsConfig = EventsConfig(Returned::new());

impl ConfigurationValue<RedisString> for EventsConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        let events = match runtime::current() {
            Some(m) => m.events,
            None => AT_LOAD.lock().as_ref().map_or(0, |(e, _)| *e),
        };
        self.0.hand_out(&settings::describe_events(events))
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        let mut at_load = AT_LOAD.lock();
        let Some((events, _)) = at_load.as_mut() else {
            return Err(RedisError::Str(
                "key_evt_amqp.events is fixed once the module is loaded (MODULE UNLOAD, then MODULE LOADEX … CONFIG key_evt_amqp.events …)",
            ));
        };
        if !val.as_slice().is_empty() {
            *events = settings::parse_events(val.as_slice()).map_err(|e| {
                RedisError::String(
                    settings::ArgError {
                        name: "key_evt_amqp.events",
                        ..e
                    }
                    .to_string(),
                )
            })?;
        }
        Ok(())
    }
}

/// Registers the configs and applies what redis.conf or `MODULE LOADEX … CONFIG` set (at load)
/// over the load arguments; returns the event classes and settings to start with.
pub fn register(ctx: &Context, events: i32, settings: Settings) -> Result<(i32, Settings), String> {
    *AT_LOAD.lock() = Some((events, settings));
    let loaded = register_and_load(ctx);
    let at_load = AT_LOAD.lock().take();
    loaded?;
    at_load.ok_or_else(|| "the load arguments vanished while loading configs".into())
}

fn register_and_load(ctx: &Context) -> Result<(), String> {
    register_string_configuration(
        ctx,
        "events",
        &EVENTS,
        "",
        ConfigurationFlags::IMMUTABLE,
        None,
    );
    for option in &SETTING_CONFIGS {
        let name = option.name.trim_start_matches("key_evt_amqp.");
        register_string_configuration(ctx, name, option, "", ConfigurationFlags::DEFAULT, None);
    }
    register_i64_configuration(
        ctx,
        "queue_capacity",
        &QUEUE_CAPACITY,
        DEFAULT_QUEUE_CAPACITY,
        1,
        MAX_QUEUE_CAPACITY,
        ConfigurationFlags::DEFAULT,
        Some(Box::new(on_queue_capacity_changed)),
    );
    // The password before the URI: Redis applies the configs at load in this order (a config
    // not given gets its default), and a password written in the URI must win over that.
    register_string_configuration(
        ctx,
        "password",
        &PASSWORD,
        "",
        ConfigurationFlags::SENSITIVE | ConfigurationFlags::HIDDEN,
        None,
    );
    register_string_configuration(ctx, "uri", &URI, "", ConfigurationFlags::SENSITIVE, None);
    register_string_configuration(
        ctx,
        "tls_ca_file",
        &CA_FILE,
        "",
        ConfigurationFlags::DEFAULT,
        None,
    );
    register_bool_configuration(
        ctx,
        "tls_skip_verify",
        &SKIP_VERIFY,
        false,
        ConfigurationFlags::DEFAULT,
        None,
    );
    // SAFETY: FFI call with the load context, once every config is registered.
    let loaded = unsafe { raw::RedisModule_LoadConfigs.map(|f| f(ctx.ctx)) };
    match loaded {
        Some(status) if status == raw::REDISMODULE_OK as i32 => Ok(()),
        _ => Err("invalid key_evt_amqp.* config value (see the line above)".into()),
    }
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

    #[test]
    fn a_ca_file_must_hold_certificates() {
        assert_eq!(check_ca_file(""), Ok(()));
        let e = check_ca_file("/nonexistent/ca.pem").unwrap_err();
        assert!(
            e.starts_with("invalid key_evt_amqp.tls_ca_file '/nonexistent/ca.pem': cannot read"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("kea-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = check_ca_file(empty.to_str().unwrap()).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
