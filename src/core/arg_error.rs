//! A bad argument or option: which one, the value given (never a secret), and what is accepted.

use std::borrow::Cow;
use std::fmt;

/// A bad argument: which one, the value given, and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError {
    pub name: &'static str,
    /// `None` for secrets.
    pub value: Option<String>,
    pub accepted: Cow<'static, str>,
}

impl ArgError {
    pub fn new(name: &'static str, value: &[u8], accepted: impl Into<Cow<'static, str>>) -> Self {
        ArgError {
            name,
            value: Some(crate::core::escape::escape(value)),
            accepted: accepted.into(),
        }
    }

    pub(crate) fn hidden(name: &'static str, accepted: &'static str) -> Self {
        ArgError {
            name,
            value: None,
            accepted: accepted.into(),
        }
    }
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(
                f,
                "invalid {} '{}': expected {}",
                self.name, v, self.accepted
            ),
            None => write!(f, "invalid {}: expected {}", self.name, self.accepted),
        }
    }
}
