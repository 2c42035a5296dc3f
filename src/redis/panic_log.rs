//! A panic hook that writes the panic to the Redis log, as RedisJSON does. A panic on Redis's
//! main thread aborts Redis (it cannot unwind out of a callback): this at least tells the
//! operator why. On the publisher thread the supervisor catches it and goes on (see
//! `publisher::supervise`); the line then says where it happened.

use std::sync::Once;

use crate::publisher::panic_message;
use crate::redis::log;

/// Installs the hook once per process (the library stays mapped across reloads), in front of
/// the one that was there, which still runs.
pub fn install() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let location = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            log::warning(&format!(
                "panic in thread '{}'{location}: {}",
                thread.name().unwrap_or("main"),
                panic_message(info.payload())
            ));
            previous(info);
        }));
    });
}
