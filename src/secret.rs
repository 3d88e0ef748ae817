//! The one type that holds credential material (passwords, tokens, secret keys).
//!
//! `Secret` cannot be printed: `Debug` shows only a fixed marker, there is no `Display`, and
//! serde serialisation is absent on purpose. The value is reachable only through
//! [`Secret::expose_secret`], a name that is easy to grep for in review. Clones share one
//! allocation (a hit in the cache hands out a reference count, not a copy), and the bytes are
//! zeroized when the last clone drops.

use std::fmt;
use std::sync::Arc;
use zeroize::Zeroizing;

/// A credential value that never reaches a log, a `Debug` dump or a serializer.
#[derive(Clone)]
pub struct Secret(Arc<Zeroizing<String>>);

impl Secret {
    /// Wraps a value; the caller gives up its copy.
    pub fn new(value: String) -> Self {
        Secret(Arc::new(Zeroizing::new(value)))
    }

    /// The raw value. Call only where it goes on the wire or to the one client that asked.
    pub fn expose_secret(&self) -> &str {
        self.0.as_str()
    }

    /// The value as `Bytes` for a response body, sharing this allocation (no copy): it is
    /// zeroized when the last clone and the last `Bytes` drop.
    pub fn to_bytes(&self) -> bytes::Bytes {
        bytes::Bytes::from_owner(SharedValue(Arc::clone(&self.0)))
    }

    /// Length in bytes, for diagnostics that must not show the value.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the value is empty (an upstream that answered with a blank field).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Lets `Bytes` own a reference to a secret's allocation.
struct SharedValue(Arc<Zeroizing<String>>);

impl AsRef<[u8]> for SharedValue {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value.to_owned())
    }
}

impl PartialEq for Secret {
    /// Constant-time in the value so comparisons do not leak its prefix through timing.
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.expose_secret().as_bytes(), other.expose_secret().as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(** redacted **)")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::from("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "Secret(** redacted **)");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(Secret(** redacted **))");
    }

    #[test]
    fn clones_share_one_allocation() {
        let s = Secret::from("abc");
        let t = s.clone();
        assert!(std::ptr::eq(s.expose_secret(), t.expose_secret()));
        assert_eq!(s, t);
        assert_ne!(s, Secret::from("abd"));
    }
}
