//! Validated identifiers: event ids, aggregate ids, node ids and tenant ids.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

fn validate_id(what: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid_input(format!("{what} must not be empty")));
    }
    if value.len() > MAX_ID_LEN {
        return Err(Error::invalid_input(format!(
            "{what} is {} bytes long; the limit is {MAX_ID_LEN}",
            value.len()
        )));
    }
    // Most ids are printable ASCII; only others need the per-char test.
    let printable_ascii = value.bytes().all(|b| (0x20..0x7f).contains(&b));
    if !printable_ascii && let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(Error::invalid_input(format!(
            "{what} contains the control character {c:?}"
        )));
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validate and wrap `value`: 1 to 128 bytes, no control characters.
            pub fn new(value: impl Into<String>) -> Result<Self> {
                let value = value.into();
                validate_id($what, &value)?;
                Ok($name(value))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                $name::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(value: String) -> Result<Self> {
                $name::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = Error;
            fn try_from(value: &str) -> Result<Self> {
                $name::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// The unique, client-chosen id of an event: its idempotency key. UUIDv7 by default.
    EventId,
    "event id"
);
string_id!(
    /// The id of the entity an event belongs to.
    AggregateId,
    "aggregate id"
);
string_id!(
    /// The id of a node (a device or service holding a local store).
    NodeId,
    "node id"
);
string_id!(
    /// The tenant a hub log belongs to. Tenants never see each other's events.
    TenantId,
    "tenant id"
);

impl EventId {
    /// A fresh UUIDv7 id: unique, and roughly ordered by creation time.
    pub fn generate() -> Self {
        EventId(uuid::Uuid::now_v7().to_string())
    }
}

impl NodeId {
    /// A fresh random node id (`node-` and a UUIDv7).
    pub fn generate() -> Self {
        NodeId(format!("node-{}", uuid::Uuid::now_v7()))
    }
}

impl TenantId {
    /// The tenant of an anonymous hub.
    pub fn default_tenant() -> Self {
        TenantId("default".to_owned())
    }
}

/// A fresh UUIDv7 as a string, for record ids (audit records, review entries).
pub fn new_record_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(EventId::new("").is_err());
        assert!(EventId::new("a".repeat(129)).is_err());
        assert!(EventId::new("a".repeat(128)).is_ok());
        assert!(AggregateId::new("task\n1").is_err());
        assert!(EventId::new("del\u{7f}").is_err());
        assert!(EventId::new("c1\u{85}").is_err());
        assert!(EventId::new("tâche-1").is_ok());
        assert!(NodeId::new("n1").is_ok());
    }

    #[test]
    fn serde_validates() {
        let ok: EventId = serde_json::from_str("\"e1\"").unwrap();
        assert_eq!(ok.as_str(), "e1");
        assert!(serde_json::from_str::<EventId>("\"\"").is_err());
    }

    #[test]
    fn generated_ids_are_unique_and_valid() {
        let a = EventId::generate();
        let b = EventId::generate();
        assert_ne!(a, b);
        assert!(EventId::new(a.as_str()).is_ok());
    }
}
