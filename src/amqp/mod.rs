//! The AMQP 0-9-1 client of the publisher: the wire codec (pure bytes) and one blocking
//! connection over TCP or TLS. No Redis.

pub(crate) mod connection;
pub(crate) mod error;
pub(crate) mod tls;
pub(crate) mod transport;
pub mod wire;
