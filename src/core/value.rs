//! What `payload value` adds to an event: the key's value after the change, and the value it
//! had before (delete, expiry, eviction, overwrite), in a compact binary form that the main
//! thread writes and the publisher turns into JSON.
//!
//! Pure: the shell reads the key through the module API and feeds a [`ValueWriter`].

/// The captured values of one event, in their compact form (stored as they are in the
/// fallback list).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Data {
    bytes: Vec<u8>,
}

impl Data {
    pub fn from_bytes(bytes: Vec<u8>) -> Data {
        Data { bytes }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The marker that makes the json of `snapshot_end` carry `"cancelled": true`.
    ///
    /// TEMPORARY (branch `snap`): a stand-in until the real one lands with `payload value`
    /// (another engineer's work, which replaces this at merge); the encoder ignores it so far.
    pub fn cancelled() -> Data {
        Data::from_bytes(b"C".to_vec())
    }

    /// Bytes of memory this takes beyond its event.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Data>() + self.bytes.capacity()
    }
}
