//! The hybrid logical clock: stamps that follow wall time, never go backwards, and order events.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, ErrorKind, Result};

/// A hybrid logical clock stamp: wall-clock milliseconds and a counter for events in the same
/// millisecond. Ordered by `(wall_ms, counter)`; ties between nodes are broken by node id where a
/// total order is needed (see [`crate::Event::order_key`]).
///
/// The string form is `WWWWWWWWWWWWWWWW-CCCCCCCC` (16 and 8 lower-case hex digits), so sorting
/// the strings sorts the clocks.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch, as seen by the clock that stamped it.
    pub wall_ms: u64,
    /// Logical counter within one millisecond.
    pub counter: u32,
}

impl Hlc {
    /// A stamp from its parts.
    pub const fn new(wall_ms: u64, counter: u32) -> Hlc {
        Hlc { wall_ms, counter }
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // By hand rather than `{:016x}-{:08x}`: resolvers write clocks into every decision's
        // reason, and the padded-integer path of `fmt` costs several times more.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; 25];
        for (i, digit) in out[..16].iter_mut().enumerate() {
            *digit = HEX[((self.wall_ms >> (60 - 4 * i)) & 0xf) as usize];
        }
        for (i, digit) in out[17..].iter_mut().enumerate() {
            *digit = HEX[((self.counter >> (28 - 4 * i)) & 0xf) as usize];
        }
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hlc({}.{})", self.wall_ms, self.counter)
    }
}

impl FromStr for Hlc {
    type Err = Error;

    fn from_str(s: &str) -> Result<Hlc> {
        let bad = || {
            Error::invalid_input(format!(
                "hlc {s:?} is not of the form <16 hex digits>-<8 hex digits>"
            ))
        };
        let (wall, counter) = s.split_once('-').ok_or_else(bad)?;
        let hex = |part: &str, len: usize| {
            part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !hex(wall, 16) || !hex(counter, 8) {
            return Err(bad());
        }
        let wall_ms = u64::from_str_radix(wall, 16).map_err(|_| bad())?;
        let counter = u32::from_str_radix(counter, 16).map_err(|_| bad())?;
        Ok(Hlc { wall_ms, counter })
    }
}

impl serde::Serialize for Hlc {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Hlc {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Hlc, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Default bound on how far in the future a remote stamp may be: 5 minutes.
pub const DEFAULT_MAX_DRIFT_MS: u64 = 5 * 60 * 1000;

/// The state machine of a node's hybrid logical clock. Sans-IO: the caller passes the physical
/// time, so tests drive it with a manual clock.
#[derive(Debug, Clone)]
pub struct HlcState {
    last: Hlc,
    max_drift_ms: u64,
}

impl HlcState {
    /// Resume from the last stamp issued (persisted with the node's store).
    pub fn new(last: Hlc, max_drift_ms: u64) -> HlcState {
        HlcState { last, max_drift_ms }
    }

    /// The last stamp issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A new stamp for a local event, strictly greater than every stamp seen so far.
    pub fn tick(&mut self, now_ms: u64) -> Result<Hlc> {
        let next = if now_ms > self.last.wall_ms {
            Hlc::new(now_ms, 0)
        } else {
            Hlc::new(self.last.wall_ms, bump(self.last.counter)?)
        };
        self.last = next;
        Ok(next)
    }

    /// Merge a stamp received from another node, so later local stamps order after it.
    ///
    /// Fails with [`ErrorKind::ClockDrift`] when `remote` is more than the allowed drift ahead of
    /// `now_ms`; the state is unchanged then.
    pub fn observe(&mut self, remote: Hlc, now_ms: u64) -> Result<Hlc> {
        if remote.wall_ms > now_ms.saturating_add(self.max_drift_ms) {
            return Err(Error::new(
                ErrorKind::ClockDrift,
                format!(
                    "remote clock {} ms is {} ms ahead of local time {} ms; the limit is {} ms",
                    remote.wall_ms,
                    remote.wall_ms - now_ms,
                    now_ms,
                    self.max_drift_ms
                ),
            ));
        }
        let wall = now_ms.max(self.last.wall_ms).max(remote.wall_ms);
        let counter = if wall == self.last.wall_ms && wall == remote.wall_ms {
            bump(self.last.counter.max(remote.counter))?
        } else if wall == self.last.wall_ms {
            bump(self.last.counter)?
        } else if wall == remote.wall_ms {
            bump(remote.counter)?
        } else {
            0
        };
        self.last = Hlc::new(wall, counter);
        Ok(self.last)
    }
}

fn bump(counter: u32) -> Result<u32> {
    counter.checked_add(1).ok_or_else(|| {
        Error::new(
            ErrorKind::ClockDrift,
            "hybrid logical clock counter exhausted within one millisecond",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tick_is_monotonic_when_wall_clock_goes_back() {
        let mut s = HlcState::new(Hlc::default(), DEFAULT_MAX_DRIFT_MS);
        let a = s.tick(1000).unwrap();
        let b = s.tick(900).unwrap();
        let c = s.tick(1000).unwrap();
        assert!(a < b && b < c);
        assert_eq!(b, Hlc::new(1000, 1));
    }

    #[test]
    fn observe_orders_after_remote_and_bounds_drift() {
        let mut s = HlcState::new(Hlc::default(), 1000);
        let after = s.observe(Hlc::new(1500, 7), 1000).unwrap();
        assert!(after > Hlc::new(1500, 7));
        assert!(s.tick(1000).unwrap() > after);
        let before = s.last();
        let err = s.observe(Hlc::new(5000, 0), 1000).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ClockDrift);
        assert_eq!(s.last(), before, "a rejected stamp leaves the clock alone");
    }

    #[test]
    fn parse_rejects_malformed() {
        for bad in [
            "",
            "1-1",
            "000000000000000g-00000000",
            "0000000000000000_00000000",
            "0000000000000000-0000000A",
        ] {
            assert!(bad.parse::<Hlc>().is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn string_order_is_clock_order(a: (u64, u32), b: (u64, u32)) {
            let (x, y) = (Hlc::new(a.0, a.1), Hlc::new(b.0, b.1));
            prop_assert_eq!(x.cmp(&y), x.to_string().cmp(&y.to_string()));
            prop_assert_eq!(x.to_string().parse::<Hlc>().unwrap(), x);
            prop_assert_eq!(x.to_string(), format!("{:016x}-{:08x}", a.0, a.1));
        }

        #[test]
        fn stamps_strictly_increase(steps in proptest::collection::vec((0u64..2000, any::<bool>(), 0u64..2000, 0u32..5), 1..50)) {
            let mut s = HlcState::new(Hlc::default(), 10_000);
            let mut prev = Hlc::default();
            for (now, remote, rwall, rcount) in steps {
                let next = if remote { s.observe(Hlc::new(rwall, rcount), now).unwrap() } else { s.tick(now).unwrap() };
                prop_assert!(next > prev);
                if remote { prop_assert!(next > Hlc::new(rwall, rcount)); }
                prev = next;
            }
        }
    }
}
