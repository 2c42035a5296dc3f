//! `MODULE LOAD` arguments (and `key_evt_amqp.config_set`, `CONFIG SET key_evt_amqp.*`): the
//! first byte of the input separates the arguments in the rest.
#![no_main]

use key_evt_amqp::core::classes::ServerClasses;
use key_evt_amqp::core::settings::{parse_load_args, Settings, OPTIONS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sep, rest)) = data.split_first() else {
        return;
    };
    let args: Vec<&[u8]> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split(|&b| b == sep).collect()
    };

    let classes = ServerClasses::all_known();
    if let Some(first) = args.first() {
        if let Ok(mask) = classes.parse("EVENTS", first) {
            assert_ne!(mask, 0);
        }
    }

    let base = match parse_load_args(&args, &classes) {
        Ok((events, settings)) => {
            assert_ne!(events, 0);
            settings
        }
        Err(e) => {
            if e.name == "PASS" {
                assert_eq!(e.value, None, "the password is echoed");
            }
            let _ = e.to_string();
            Settings::default()
        }
    };
    let _ = base.with_args(args.get(1..).unwrap_or(&[]));

    // Each option: what CONFIG GET shows sets the same settings again (what CONFIG REWRITE
    // relies on). Key masks are shown as UTF-8 text separated by spaces, so this holds for
    // masks that are UTF-8, not empty and without whitespace (a mask `a b`, ``, or one that is
    // not UTF-8 cannot be written in that option).
    round_trip(&base);
    for (name, _) in OPTIONS {
        for value in &args {
            if let Ok(s) = base.with_option(name, value) {
                round_trip(&s);
            }
        }
    }
});

fn round_trip(s: &Settings) {
    for (name, _) in OPTIONS {
        let shown = s.option(name).expect("every option has a value");
        if name == "key_evt_amqp.keymasks" && !masks_survive(s) {
            continue;
        }
        let again = s
            .with_option(name, shown.as_bytes())
            .unwrap_or_else(|e| panic!("{name} {shown:?} does not set again: {e}"));
        assert!(
            again == *s,
            "{name} {shown:?} sets something else: {again:?} vs {s:?}"
        );
    }
}

fn masks_survive(s: &Settings) -> bool {
    use key_evt_amqp::core::keymask::KeyMasks;
    match &s.masks {
        KeyMasks::Some(v) => v.iter().all(|m| {
            let b = m.as_bytes();
            !b.is_empty()
                && !b.iter().any(u8::is_ascii_whitespace)
                && std::str::from_utf8(b).is_ok()
        }),
        _ => true,
    }
}
