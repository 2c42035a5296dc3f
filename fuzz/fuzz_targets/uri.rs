//! `key_evt_amqp.uri` values (`CONFIG SET`, `MODULE LOADEX … CONFIG`, redis.conf): the list
//! parser, the redaction used in errors and logs, and the option that keeps the password apart.
#![no_main]

use key_evt_amqp::core::broker_options::parse_uri_option;
use key_evt_amqp::core::uri::{parse_list, redact_raw, UriEndpoint};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = redact_raw(text);

    if let Ok(list) = parse_list(text) {
        for item in &list {
            // What is shown (`CONFIG GET`) parses again, to the same endpoint less its password.
            let again = parse_list(&item.without_password)
                .unwrap_or_else(|e| panic!("{:?} no longer parses: {e}", item.without_password));
            assert_eq!(again.len(), 1, "{:?} split", item.without_password);
            assert_eq!(again[0].endpoint.password, None);
            assert_eq!(
                again[0].endpoint,
                UriEndpoint {
                    password: None,
                    ..item.endpoint.clone()
                }
            );
        }
    }

    match parse_uri_option(text) {
        Ok(opt) => {
            assert!(opt.uris.iter().all(|u| u.password.is_none()));
            // What CONFIG GET shows and CONFIG REWRITE saves sets the same URIs again.
            let again = parse_uri_option(&opt.shown)
                .unwrap_or_else(|e| panic!("shown {:?} no longer parses: {e}", opt.shown));
            assert_eq!(again.uris, opt.uris);
            assert_eq!(again.password, None);
            assert_eq!(again.shown, opt.shown);
        }
        Err(e) => assert!(e.starts_with("invalid key_evt_amqp.uri"), "{e}"),
    }

    if !text.contains(',') {
        password_is_never_shown(text);
    }
});

/// One item (no comma: no list split). The password, as the module doc defines it: after the
/// first `:` of the user info, which ends at the last `@` before any `?`. Nothing the item
/// shows (redacted form, error, text without password, Debug) may depend on it.
fn password_is_never_shown(text: &str) {
    let Some(scheme_end) = text.find("://").map(|i| i + 3) else {
        return;
    };
    let rest = &text[scheme_end..];
    let before_query = rest.find('?').map_or(rest, |q| &rest[..q]);
    let Some(at) = before_query.rfind('@') else {
        return;
    };
    let Some(colon) = rest[..at].find(':') else {
        return;
    };
    let (start, end) = (scheme_end + colon + 1, scheme_end + at);
    let password = &text[start..end];
    let other = format!("{}x{}", &text[..start], &text[end..]);
    let remainder = format!("{}{}", &text[..start], &text[end..]);

    // The redacted form does not depend on the password ...
    let redacted = redact_raw(text);
    assert_eq!(
        redacted,
        redact_raw(&other),
        "redact_raw depends on the password"
    );
    // ... so it cannot show one that is not elsewhere in the item (alphanumeric: the `:***@`
    // that redact_raw writes cannot form part of it; compared ignoring ASCII case, as the
    // text without password writes the scheme in lower case).
    let telling = !password.is_empty()
        && password.bytes().all(|b| b.is_ascii_alphanumeric())
        && !remainder
            .to_ascii_lowercase()
            .contains(&password.to_ascii_lowercase());
    if telling {
        assert!(
            !redacted.contains(password),
            "{redacted:?} shows {password:?}"
        );
    }

    match (parse_list(text), parse_list(&other)) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.len(), 1);
            assert_eq!(a[0].without_password, b[0].without_password);
            assert_eq!(
                format!("{:?}", a[0].endpoint),
                format!("{:?}", b[0].endpoint)
            );
            // (Debug adds text of its own, a default port for one: only its independence
            // from the password, above, is a property.)
            if telling {
                let shown = a[0].without_password.to_ascii_lowercase();
                assert!(!shown.contains(&password.to_ascii_lowercase()));
            }
        }
        (Ok(_), Err(e)) => panic!("a valid password made {other:?} fail: {e}"),
        (Err(e), _) if e.reason.contains("in the password") => {}
        (Err(e), b) => {
            let b = b.expect_err("only the password differs");
            assert_eq!(
                e.to_string(),
                b.to_string(),
                "the error depends on the password"
            );
            // The reason is fixed prose: only the quoted URI may not show the password.
            if telling {
                let shown = e.uri.as_deref().unwrap_or_default();
                assert!(!shown.contains(password), "{e} shows {password:?}");
            }
        }
    }
}
