//! `Seq`, the hub-assigned position of an event in its tenant's order, and strict number parsing.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Parse a cursor, version or count written as plain decimal digits.
///
/// Accepts only `[0-9]+` that fits in a `u64`: rejects "", "-1", "+1", "1.5", " 1", "12abc" and
/// anything past `u64::MAX`, each with a message that names `what`.
pub fn parse_u64(what: &str, text: &str) -> Result<u64> {
    if text.is_empty() {
        return Err(Error::invalid_input(format!("{what} is empty")));
    }
    if let Some(c) = text.chars().find(|c| !c.is_ascii_digit()) {
        return Err(Error::invalid_input(format!(
            "{what} {text:?} is not a non-negative integer (unexpected {c:?})"
        )));
    }
    text.parse::<u64>().map_err(|_| {
        Error::invalid_input(format!(
            "{what} {text:?} is larger than the largest allowed value {}",
            u64::MAX
        ))
    })
}

/// A position in a tenant's global order, assigned by the hub. `Seq(0)` means "before the first
/// event"; the first event has `Seq(1)`. Pull cursors are `Seq`s of the hub, never a local count.
#[derive(
    Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// Before the first event.
    pub const ZERO: Seq = Seq(0);

    /// The raw number.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The following position, or an error when the sequence space is exhausted.
    pub fn next(self) -> Result<Seq> {
        self.0
            .checked_add(1)
            .map(Seq)
            .ok_or_else(|| Error::new(crate::ErrorKind::LimitExceeded, "sequence space exhausted"))
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seq({})", self.0)
    }
}

impl FromStr for Seq {
    type Err = Error;
    fn from_str(s: &str) -> Result<Seq> {
        parse_u64("cursor", s).map(Seq)
    }
}

impl From<u64> for Seq {
    fn from(value: u64) -> Seq {
        Seq(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parsing() {
        for bad in [
            "",
            "-1",
            "+1",
            "1.5",
            "12abc",
            " 1",
            "1 ",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            let err = parse_u64("cursor", bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidInput, "{bad:?}");
            assert!(err.to_string().contains("cursor"), "{err}");
        }
        assert_eq!(parse_u64("cursor", "0").unwrap(), 0);
        assert_eq!(
            parse_u64("cursor", "18446744073709551615").unwrap(),
            u64::MAX
        );
        assert_eq!("42".parse::<Seq>().unwrap(), Seq(42));
    }

    #[test]
    fn next_is_checked() {
        assert_eq!(Seq(1).next().unwrap(), Seq(2));
        assert!(Seq(u64::MAX).next().is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_u64_round_trips(n: u64) {
            proptest::prop_assert_eq!(n.to_string().parse::<Seq>().unwrap(), Seq(n));
        }

        #[test]
        fn garbage_never_panics(s in "\\PC*") {
            let _ = parse_u64("version", &s);
        }
    }
}
