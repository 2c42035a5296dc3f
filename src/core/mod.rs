//! The pure core: what the module decides, with no Redis, no sockets, no threads and no libc.
//! Everything here is unit-tested in milliseconds; the shells (`amqp`, `publisher`, `redis`)
//! only carry its decisions out.

pub mod broker_options;
pub mod cluster;
pub mod escape;
pub mod event;
pub mod format;
pub mod keymask;
pub mod limits;
pub mod link;
pub mod memory_list;
pub mod outbox;
pub mod placement;
pub mod policy;
pub mod settings;
pub mod template;
pub mod uri;
