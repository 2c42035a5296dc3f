//! Why a connection failed, typed where the publisher acts on the reason.

use crate::amqp::wire::{CloseReason, WireError};

/// Why a connection failed. Its text is what the log and INFO's `last_error` show.
#[derive(Debug)]
pub enum ConnError {
    /// `channel.close` from the broker (a publish to a missing exchange, say).
    ChannelClosed(CloseReason),
    /// `connection.close` from the broker.
    ConnectionClosed(CloseReason),
    /// The broker broke the protocol.
    Protocol(WireError),
    /// The module is unloading: the wait was cut short.
    Unloading,
    /// The socket, a timeout, a refused login: as the log says it.
    Failed(String),
    /// What was being done when the error happened.
    During(String, Box<ConnError>),
}

impl ConnError {
    pub fn during(what: impl Into<String>) -> impl FnOnce(ConnError) -> ConnError {
        let what = what.into();
        move |e| ConnError::During(what, Box::new(e))
    }
}

impl From<String> for ConnError {
    fn from(e: String) -> ConnError {
        ConnError::Failed(e)
    }
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::ChannelClosed(reason) => write!(f, "channel closed by the broker: {reason}"),
            ConnError::ConnectionClosed(reason) => {
                write!(f, "connection closed by the broker: {reason}")
            }
            ConnError::Protocol(e) => write!(f, "protocol error: {e}"),
            ConnError::Unloading => f.write_str("module unloading"),
            ConnError::Failed(e) => f.write_str(e),
            ConnError::During(what, e) => write!(f, "{what}: {e}"),
        }
    }
}
