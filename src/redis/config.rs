//! Options set with Redis's own `CONFIG SET key_evt_amqp.*` (module configs), beside the
//! positional load arguments.
//!
//! | config | default | |
//! |--------|---------|-|
//! | `key_evt_amqp.host`, `port`, `user`, `heartbeat`, `exchange`, `routing_key`, `delivery_mode`, `fallback_size`, `keymasks` | the load arguments | the positional load arguments, by name (`keymasks`: masks separated by spaces) |
//! | `key_evt_amqp.events` | the load argument | event classes; fixed once loaded (Redis refuses `CONFIG SET` of it) |
//! | `key_evt_amqp.queue_capacity` | 100000 | events held in memory before they spill |
//! | `key_evt_amqp.queue_capacity_bytes` | 67108864 (64 MiB) | bytes those events may take (in flight included, 1 MiB to 16 GiB) before they spill |
//! | `key_evt_amqp.uri` | empty | `amqp://` / `amqps://` URIs, comma-separated, tried in order |
//! | `key_evt_amqp.password` | empty | the broker password (hidden, see below) |
//! | `key_evt_amqp.tls_ca_file` | empty | PEM CA bundle for `amqps://`; empty: the system's CAs |
//! | `key_evt_amqp.tls_skip_verify` | no | do not verify the broker's certificate (tests only) |
//! | `key_evt_amqp.flush_events` | no | forward FLUSHALL, FLUSHDB and SWAPDB as events |
//! | `key_evt_amqp.format`, `headers`, `ce_source`, `ce_header_prefix` | text, no, empty, ce- | how messages are written (`core/format.rs`; below) |
//! | `key_evt_amqp.payload`, `value_max_bytes` | key, 65536 | values in json/cloudevents events (`core/value.rs`, `redis/values.rs`) |
//! | `key_evt_amqp.batch`, `batch_linger_ms` | 1, 5 | events per message and how long a message waits for more (`publisher/batched.rs`) |
//! | `key_evt_amqp.durability` | memory | `journal`: every event written to the fallback list with its write (`redis/journal.rs`; Redis 7.2+, Valkey 8) |
//!
//! The options that mirror the load arguments show the values in force (`CONFIG GET`), which
//! the commands change too; so `CONFIG REWRITE` saves what runs. Precedence at load: a config
//! given in redis.conf or `MODULE LOADEX … CONFIG` wins over the positional argument; one not
//! given (Redis then applies its default, the empty string) leaves the positional value.
//!
//! Broker precedence (see `Settings::endpoints`): a URI list, when set, replaces HOST and PORT;
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
//! The values live in the module's `Shared` state (the settings, the broker options); while
//! `MODULE LOAD` applies the configs, in the state of the module being loaded. The publisher
//! reads them each time it connects, and a change wakes it up, so it reconnects with the new
//! ones. Only `queue_capacity` and `queue_capacity_bytes` live in statics of their own: Redis's
//! integer config API needs one; each main-thread step applies them.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, Ordering, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;
use redis_module::configuration::{
    register_bool_configuration, register_i64_configuration, register_string_configuration,
    ConfigurationContext, ConfigurationFlags, ConfigurationValue,
};
use redis_module::{raw, Context, RedisError, RedisString};

use crate::amqp::tls;
use crate::core::broker_options::{
    parse_uri_option, BrokerOptions, CA_FILE_OPTION, PASSWORD_OPTION,
};
use crate::core::classes::{self, ServerClasses};
use crate::core::format::{
    Output, Payload, Refused, CE_PREFIXES, DEFAULT_BATCH_LINGER_MS, MAX_BATCH, MAX_BATCH_LINGER_MS,
};
use crate::core::policy::{
    DEFAULT_QUEUE_CAPACITY, DEFAULT_QUEUE_CAPACITY_BYTES, DEFAULT_VALUE_MAX_BYTES,
    MAX_QUEUE_CAPACITY, MAX_QUEUE_CAPACITY_BYTES, MAX_VALUE_MAX_BYTES, MIN_QUEUE_CAPACITY_BYTES,
};
use crate::core::settings::{self, Settings, OPTIONS};
use crate::core::uri;
use crate::redis::{hook, journal, log, runtime};
use crate::state::shared::Shared;

/// `key_evt_amqp.queue_capacity`: events held in memory before they spill to the fallback list.
/// Redis's i64 config API needs a static of its own; each main-thread step applies it.
pub static QUEUE_CAPACITY: AtomicI64 = AtomicI64::new(DEFAULT_QUEUE_CAPACITY);

pub fn queue_capacity() -> usize {
    usize::try_from(QUEUE_CAPACITY.load(Relaxed)).unwrap_or(1)
}

/// `key_evt_amqp.queue_capacity_bytes`: bytes the events in memory may take (in flight
/// included, see `Outbox::memory_bytes`) before they spill. Like `queue_capacity`.
pub static QUEUE_CAPACITY_BYTES: AtomicI64 = AtomicI64::new(DEFAULT_QUEUE_CAPACITY_BYTES);

pub fn queue_capacity_bytes() -> usize {
    usize::try_from(QUEUE_CAPACITY_BYTES.load(Relaxed)).unwrap_or(usize::MAX)
}

/// The next event-loop step applies the new capacity (a queue now over it spills then).
fn on_queue_capacity_changed(_ctx: &ConfigurationContext, _name: &str, _value: &'static AtomicI64) {
    hook::wake_main();
}

/// The module being loaded, while `MODULE LOAD` applies the configs: it is not running yet.
struct Loading {
    events: i32,
    /// What the server has, to check `key_evt_amqp.events` against.
    classes: ServerClasses,
    shared: Arc<Shared>,
}

static LOADING: Mutex<Option<Loading>> = Mutex::new(None);

/// Whose configs these are: the running module's, or the one being loaded.
fn target() -> Option<Arc<Shared>> {
    match runtime::current() {
        Some(m) => Some(m.shared.clone()),
        None => LOADING.lock().as_ref().map(|l| l.shared.clone()),
    }
}

/// Reads the broker options of [`target`] (empty when there is none).
fn broker<R: Default>(read: impl FnOnce(&BrokerOptions) -> R) -> R {
    target()
        .map(|shared| shared.broker(read))
        .unwrap_or_default()
}

fn update(change: impl FnOnce(&mut BrokerOptions)) -> Result<(), RedisError> {
    let shared = target().ok_or(RedisError::Str("key_evt_amqp is not loaded"))?;
    shared.update_broker(change);
    Ok(())
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
        self.0.hand_out(&broker(|b| b.uri_text.clone()))
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
        })
    }
}

impl ConfigurationValue<RedisString> for PasswordConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        self.0.hand_out(&broker(|b| b.password.clone()))
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        let password = utf8(&val, PASSWORD_OPTION)?;
        update(|b| b.password = password)
    }
}

impl ConfigurationValue<RedisString> for CaFileConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        self.0.hand_out(&broker(|b| b.tls.ca_file.clone()))
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        let path = utf8(&val, CA_FILE_OPTION)?;
        tls::check_ca_file(&path).map_err(RedisError::String)?;
        update(|b| b.tls.ca_file = path)
    }
}

impl ConfigurationValue<bool> for SkipVerifyConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> bool {
        broker(|b| b.tls.skip_verify)
    }

    fn set(&self, _ctx: &ConfigurationContext, val: bool) -> Result<(), RedisError> {
        if val && !broker(|b| b.tls.skip_verify) {
            log::warning(
                "key_evt_amqp.tls_skip_verify is on: the broker's TLS certificate is not \
                 verified, anyone in the path can read and change the events (use it for tests \
                 only)",
            );
        }
        update(|b| b.tls.skip_verify = val)
    }
}

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

impl ConfigurationValue<RedisString> for SettingConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        let value = target()
            .and_then(|shared| shared.settings().option(self.name))
            .unwrap_or_default();
        self.returned.hand_out(&value)
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        let value = val.as_slice();
        let invalid = |e: settings::ArgError| RedisError::String(e.to_string());
        if let Some(loading) = LOADING.lock().as_ref() {
            // Not given at load: Redis applies the default (empty); the positional value stays.
            if !value.is_empty() {
                let shared = &loading.shared;
                shared.set_settings(
                    shared
                        .settings()
                        .with_option(self.name, value)
                        .map_err(invalid)?,
                );
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
        hook::wake_main();
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
            None => LOADING.lock().as_ref().map_or(0, |l| l.events),
        };
        self.0.hand_out(&classes::describe(events))
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        let mut loading = LOADING.lock();
        let Some(Loading {
            events, classes, ..
        }) = loading.as_mut()
        else {
            return Err(RedisError::Str(
                "key_evt_amqp.events is fixed once the module is loaded (MODULE UNLOAD, then MODULE LOADEX … CONFIG key_evt_amqp.events …)",
            ));
        };
        if !val.as_slice().is_empty() {
            *events = classes
                .parse("key_evt_amqp.events", val.as_slice())
                .map_err(|e| RedisError::String(e.to_string()))?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------ formats and headers (issue 15)
//
// `key_evt_amqp.format`, `.headers`, `.ce_source`, `.ce_header_prefix`: fields of
// `Settings::output`, replaced with the settings as a whole like the options above (the
// publisher picks them up at its next batch). Module configs only, per node like every config.

/// A string config of `Settings::output`: how it reads and how a value changes it.
struct OutputConfig {
    read: fn(&Output) -> String,
    change: fn(&Output, &[u8]) -> Result<Output, Refused>,
    returned: Returned,
}

struct HeadersConfig;

fn read_format(o: &Output) -> String {
    o.format.name().into()
}

fn read_ce_source(o: &Output) -> String {
    o.ce_source.clone()
}

fn read_ce_prefix(o: &Output) -> String {
    o.ce_prefix.into()
}

fn read_payload(o: &Output) -> String {
    o.payload.name().into()
}

static FORMAT: OutputConfig = OutputConfig {
    read: read_format,
    change: Output::with_format,
    returned: Returned::new(),
};
static CE_SOURCE: OutputConfig = OutputConfig {
    read: read_ce_source,
    change: Output::with_ce_source,
    returned: Returned::new(),
};
static CE_PREFIX: OutputConfig = OutputConfig {
    read: read_ce_prefix,
    change: Output::with_ce_prefix,
    returned: Returned::new(),
};
static PAYLOAD: OutputConfig = OutputConfig {
    read: read_payload,
    change: Output::with_payload,
    returned: Returned::new(),
};
static HEADERS: HeadersConfig = HeadersConfig;

/// An integer config of `Settings::output` (`batch`, `batch_linger_ms`).
struct OutputNumber {
    read: fn(&Output) -> i64,
    change: fn(&Output, i64) -> Result<Output, Refused>,
}

static BATCH: OutputNumber = OutputNumber {
    read: |o| i64::from(o.batch),
    change: Output::with_batch,
};
static BATCH_LINGER: OutputNumber = OutputNumber {
    read: |o| i64::from(o.linger_ms),
    // Redis checks the range (0 to MAX_BATCH_LINGER_MS) before this.
    change: |o, ms| {
        Ok(Output {
            linger_ms: u32::try_from(ms).unwrap_or(MAX_BATCH_LINGER_MS),
            ..o.clone()
        })
    },
};

impl ConfigurationValue<i64> for OutputNumber {
    fn get(&self, _ctx: &ConfigurationContext) -> i64 {
        target().map_or(0, |shared| (self.read)(&shared.settings().output))
    }

    fn set(&self, _ctx: &ConfigurationContext, val: i64) -> Result<(), RedisError> {
        change_output(val.to_string().as_bytes(), |o| (self.change)(o, val))
    }
}

/// `key_evt_amqp.payload value`, for the keyspace callback (a mirror of the settings' field:
/// one atomic load per forwarded event, no lock).
static PAYLOAD_VALUE: AtomicBool = AtomicBool::new(false);

pub fn payload_value() -> bool {
    PAYLOAD_VALUE.load(Relaxed)
}

/// `key_evt_amqp.value_max_bytes`: values larger than this are left out (0: no values).
pub static VALUE_MAX_BYTES: AtomicI64 = AtomicI64::new(DEFAULT_VALUE_MAX_BYTES);

pub fn value_max_bytes() -> usize {
    usize::try_from(VALUE_MAX_BYTES.load(Relaxed)).unwrap_or(0)
}

/// Replaces the output options of [`target`]'s settings with what `change` makes of them.
/// `value` is what was given, for the error.
fn change_output(
    value: &[u8],
    change: impl FnOnce(&Output) -> Result<Output, Refused>,
) -> Result<(), RedisError> {
    let shared = target().ok_or(RedisError::Str("key_evt_amqp is not loaded"))?;
    let current = shared.settings();
    let output = change(&current.output).map_err(|r| {
        RedisError::String(settings::ArgError::new(r.name, value, r.accepted).to_string())
    })?;
    PAYLOAD_VALUE.store(output.payload == Payload::Value, Relaxed);
    shared.set_settings(Settings {
        output,
        ..(*current).clone()
    });
    // The step (un)subscribes the old-value event to match.
    hook::wake_main();
    Ok(())
}

impl ConfigurationValue<RedisString> for OutputConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        let value = target()
            .map(|shared| (self.read)(&shared.settings().output))
            .unwrap_or_default();
        self.returned.hand_out(&value)
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        change_output(val.as_slice(), |o| (self.change)(o, val.as_slice()))
    }
}

impl ConfigurationValue<bool> for HeadersConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> bool {
        target().is_some_and(|shared| shared.settings().output.headers)
    }

    fn set(&self, _ctx: &ConfigurationContext, val: bool) -> Result<(), RedisError> {
        change_output(b"", |o| {
            Ok(Output {
                headers: val,
                ..o.clone()
            })
        })
    }
}

fn register_output_configs(ctx: &Context) {
    // `payload` after `format`: Redis applies the configs at load in this order, and `payload
    // value` needs the format that allows it already in place.
    let strings: [(&str, &OutputConfig, &str); 4] = [
        ("format", &FORMAT, "text"),
        ("ce_source", &CE_SOURCE, ""),
        ("ce_header_prefix", &CE_PREFIX, CE_PREFIXES[0]),
        ("payload", &PAYLOAD, "key"),
    ];
    for (name, config, default) in strings {
        register_string_configuration(
            ctx,
            name,
            config,
            default,
            ConfigurationFlags::DEFAULT,
            None,
        );
    }
    register_bool_configuration(
        ctx,
        "headers",
        &HEADERS,
        false,
        ConfigurationFlags::DEFAULT,
        None,
    );
    // After `format`, for the same reason as `payload`.
    register_i64_configuration(
        ctx,
        "batch",
        &BATCH,
        1,
        1,
        i64::from(MAX_BATCH),
        ConfigurationFlags::DEFAULT,
        None,
    );
    register_i64_configuration(
        ctx,
        "batch_linger_ms",
        &BATCH_LINGER,
        i64::from(DEFAULT_BATCH_LINGER_MS),
        0,
        i64::from(MAX_BATCH_LINGER_MS),
        ConfigurationFlags::DEFAULT,
        None,
    );
    register_i64_configuration(
        ctx,
        "value_max_bytes",
        &VALUE_MAX_BYTES,
        DEFAULT_VALUE_MAX_BYTES,
        0,
        MAX_VALUE_MAX_BYTES,
        ConfigurationFlags::DEFAULT,
        None,
    );
}

/// Registers the configs and applies what redis.conf or `MODULE LOADEX … CONFIG` set (at load)
/// over the load arguments, to the settings and broker options of `shared` (the module being
/// loaded); returns the event classes to subscribe to.
pub fn register(
    ctx: &Context,
    events: i32,
    classes: &ServerClasses,
    shared: &Arc<Shared>,
) -> Result<i32, String> {
    *LOADING.lock() = Some(Loading {
        events,
        classes: classes.clone(),
        shared: shared.clone(),
    });
    let loaded = register_and_load(ctx);
    let loading = LOADING.lock().take();
    loaded?;
    let loading = loading.ok_or("the load arguments vanished while loading configs")?;
    let mut outbox = shared.outbox.lock();
    outbox.set_capacity(queue_capacity());
    outbox.set_capacity_bytes(queue_capacity_bytes());
    // INFO shows the bounds in force from the start, not from the first step.
    shared.stats.observe(&outbox);
    drop(outbox);
    Ok(loading.events)
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
    register_i64_configuration(
        ctx,
        "queue_capacity_bytes",
        &QUEUE_CAPACITY_BYTES,
        DEFAULT_QUEUE_CAPACITY_BYTES,
        MIN_QUEUE_CAPACITY_BYTES,
        MAX_QUEUE_CAPACITY_BYTES,
        // Accepts units as `maxmemory` does (`64mb`, `1gb`); shown in bytes.
        ConfigurationFlags::MEMORY,
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
    register_flush_configs(ctx);
    register_output_configs(ctx);
    register_string_configuration(
        ctx,
        "durability",
        &DURABILITY,
        "memory",
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

// ------------------------------------------------------------------ flushes (issue 15)

/// `key_evt_amqp.flush_events`: forward FLUSHALL, FLUSHDB and SWAPDB as events `flushall`,
/// `flushdb` and `swapdb` (see `flushes`). Read by the flush callbacks on the main thread;
/// like `queue_capacity`, a static of its own (Redis's bool config API needs one).
pub static FLUSH_EVENTS: AtomicBool = AtomicBool::new(false);

pub fn flush_events() -> bool {
    FLUSH_EVENTS.load(Relaxed)
}

fn register_flush_configs(ctx: &Context) {
    register_bool_configuration(
        ctx,
        "flush_events",
        &FLUSH_EVENTS,
        false,
        ConfigurationFlags::DEFAULT,
        None,
    );
}

// ------------------------------------------------------------------ durability (issue 17)

/// `key_evt_amqp.durability`: `memory` or `journal` (refused on a server without
/// post-notification jobs, and without a fallback list). The step applies it.
struct DurabilityConfig(Returned);

static DURABILITY: DurabilityConfig = DurabilityConfig(Returned::new());

impl ConfigurationValue<RedisString> for DurabilityConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        let value = target()
            .map(|shared| shared.settings().durability.name())
            .unwrap_or_default();
        self.0.hand_out(value)
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        let shared = target().ok_or(RedisError::Str("key_evt_amqp is not loaded"))?;
        let new = shared
            .settings()
            .with_durability(val.as_slice(), journal::refusal().as_deref())
            .map_err(|e| RedisError::String(e.to_string()))?;
        shared.set_settings(new);
        // At once when nothing waits in memory; else the next step moves that first.
        if let Some(m) = runtime::current() {
            m.journal_from_now();
        }
        hook::wake_main();
        Ok(())
    }
}
