//! The pure core: what the module decides, with no Redis, no sockets, no threads and no libc.
//! Everything here is unit-tested in milliseconds; the shells (`amqp`, `publisher`, `redis`)
//! only carry its decisions out.

pub mod arg_error;
pub mod broker_options;
pub mod classes;
pub mod cluster;
pub mod encoding;
pub mod escape;
pub mod event;
pub mod flush;
pub mod format;
pub mod journal;
pub mod json;
pub mod keymask;
pub mod limits;
pub mod link;
pub mod list_item;
pub mod memory_list;
pub mod outbox;
pub mod placement;
pub mod policy;
pub mod server;
pub mod settings;
pub mod snapshot;
pub mod template;
pub mod uri;
pub mod value;
