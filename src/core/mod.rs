//! The pure core: what the module decides, with no Redis, no sockets, no threads and no libc.
//! Everything here is unit-tested in milliseconds; the shells (`amqp`, `publisher`, `redis`)
//! only carry its decisions out.

pub mod cluster;
pub mod event;
pub mod keymask;
pub mod limits;
pub mod outbox;
pub mod settings;
pub mod uri;
