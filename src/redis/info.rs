//! The `INFO key_evt_amqp` section. Never shows the password.

use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use redis_module::raw;

use crate::core::classes;
use crate::core::journal::Durability;
use crate::core::link::LinkState;
use crate::redis::runtime::{self, Module};
use crate::redis::{heap, journal};
use crate::state::shared::Shared;

/// Registers [`add_section`] as the module's INFO callback.
pub fn register(ctx: *mut raw::RedisModuleCtx) -> bool {
    // SAFETY: FFI registration with the load context and a callback defined here.
    unsafe {
        raw::RedisModule_RegisterInfoFunc
            .is_some_and(|f| f(ctx, Some(add_section)) == raw::REDISMODULE_OK as i32)
    }
}

/// The list's name, or empty for a cluster node serving no slot (or busy: INFO never waits).
fn fallback_key(m: &Module) -> String {
    m.placement
        .try_lock()
        .and_then(|p| p.key().map(crate::core::escape::escape))
        .unwrap_or_default()
}

extern "C" fn add_section(ctx: *mut raw::RedisModuleInfoCtx, _for_crash_report: i32) {
    let Some(m) = runtime::current() else {
        return;
    };
    let shared = &m.shared;
    let settings = shared.settings();
    let s = &shared.stats;
    let counter = |c: &AtomicU64| c.load(Relaxed).to_string();
    let fields: Vec<(&str, String)> = vec![
        ("connection", shared.link.state().name().into()),
        ("broker", describe_broker(shared)),
        ("last_error", shared.link.last_error()),
        (
            "publishing",
            if m.publishes() { "yes" } else { "no" }.into(),
        ),
        ("run_id", m.run_id.to_hex()),
        ("events", classes::describe(m.events)),
        ("exchange", settings.exchange.clone()),
        ("routing_key", settings.routing_key.clone()),
        ("keymasks", settings.masks.to_string()),
        ("events_seen", counter(&s.main.seen)),
        ("events_matched", counter(&s.main.matched)),
        ("events_published", counter(&s.published)),
        ("events_confirmed", counter(&s.confirmed)),
        ("events_returned", counter(&s.returned)),
        ("events_nacked", counter(&s.nacked)),
        ("events_spilled", counter(&s.spilled)),
        ("events_refilled", counter(&s.refilled)),
        ("events_adopted", counter(&s.adopted)),
        ("events_dropped", counter(&s.dropped)),
        ("events_dropped_memory", counter(&s.dropped_memory)),
        ("events_lost_external", counter(&s.lost_external)),
        ("events_lost_evicted", counter(&s.lost_evicted)),
        ("connections", counter(&s.connections)),
        ("publisher_panics", counter(&s.publisher_panics)),
        ("main_thread_step_max_us", counter(&s.step_max_us)),
        ("queue_length", counter(&s.queue_length)),
        ("queue_capacity", counter(&s.queue_capacity)),
        ("queue_bytes", counter(&s.queue_bytes)),
        ("queue_capacity_bytes", counter(&s.queue_capacity_bytes)),
        ("in_flight", counter(&s.in_flight)),
        ("fallback_length", counter(&s.fallback_length)),
        ("fallback_size", settings.fallback_size.to_string()),
        // The mode in force (a switch to the journal takes effect at the next step).
        (
            "durability",
            if journal::active() {
                Durability::Journal
            } else {
                Durability::Memory
            }
            .name()
            .into(),
        ),
        ("events_journaled", counter(&s.journaled)),
        ("events_journal_failed", counter(&s.journal_failed)),
        ("fallback_key", fallback_key(&m)),
        ("heap_bytes", heap::current().to_string()),
        ("heap_peak_bytes", heap::peak().to_string()),
        // Formats, headers and routing-key templates (issue 15).
        ("format", settings.output.format.name().into()),
        ("routing_keys_cut", counter(&s.routing_keys_cut)),
        // Snapshots (key_evt_amqp.snapshot).
        (
            "snapshot_running",
            if m.snapshot.try_lock().is_some_and(|r| r.is_some()) {
                "yes"
            } else {
                "no"
            }
            .into(),
        ),
        ("snapshot_keys", counter(&s.snapshot_keys)),
        ("snapshots_completed", counter(&s.snapshots_completed)),
        ("snapshots_cancelled", counter(&s.snapshots_cancelled)),
    ];
    // SAFETY: the info context Redis passed; names and values are NUL-terminated copies.
    unsafe {
        let (Some(section), Some(field)) = (
            raw::RedisModule_InfoAddSection,
            raw::RedisModule_InfoAddFieldCString,
        ) else {
            return;
        };
        // An empty name makes the section `key_evt_amqp`, so `INFO key_evt_amqp` shows it.
        section(ctx, c"".as_ptr().cast_mut());
        for (name, value) in fields {
            let (Ok(name), Ok(value)) = (
                CString::new(name),
                CString::new(value.replace(['\r', '\n', '\0'], " ")),
            ) else {
                continue;
            };
            field(ctx, name.as_ptr().cast_mut(), value.as_ptr().cast_mut());
        }
    }
}

/// What INFO shows as the broker: the one in use or being tried, else the first one to try.
fn describe_broker(shared: &Shared) -> String {
    let in_use = match shared.link.state() {
        LinkState::Connecting | LinkState::Connected | LinkState::Down => shared.link.endpoint(),
        LinkState::Idle | LinkState::Disabled => String::new(),
    };
    if !in_use.is_empty() {
        return in_use;
    }
    shared
        .endpoints(&shared.settings())
        .first()
        .map(ToString::to_string)
        .unwrap_or_default()
}
