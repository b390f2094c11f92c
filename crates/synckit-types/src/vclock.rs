//! Vector clocks for mesh mode: per-node counters compared as before, after, equal or concurrent.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::id::NodeId;

/// How two vector clocks relate causally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    /// Every entry of the left clock is <= the right one, and one is smaller.
    Before,
    /// The mirror of `Before`.
    After,
    /// Both clocks are identical.
    Equal,
    /// Neither happened before the other.
    Concurrent,
}

/// A vector clock: a counter per node. Missing entries count as zero.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct VectorClock(BTreeMap<NodeId, u64>);

impl VectorClock {
    /// An empty clock (all zero).
    pub fn new() -> Self {
        VectorClock::default()
    }

    /// The counter of `node` (zero when absent).
    pub fn get(&self, node: &NodeId) -> u64 {
        self.0.get(node).copied().unwrap_or(0)
    }

    /// Count one local event on `node`; returns the new counter.
    pub fn increment(&mut self, node: &NodeId) -> u64 {
        let entry = self.0.entry(node.clone()).or_insert(0);
        *entry = entry.saturating_add(1);
        *entry
    }

    /// Take the entry-wise maximum with `other`.
    pub fn merge(&mut self, other: &VectorClock) {
        for (node, &count) in &other.0 {
            let entry = self.0.entry(node.clone()).or_insert(0);
            *entry = (*entry).max(count);
        }
    }

    /// How `self` relates to `other`.
    pub fn compare(&self, other: &VectorClock) -> Causality {
        let mut less = false;
        let mut greater = false;
        for node in self.0.keys().chain(other.0.keys()) {
            match self.get(node).cmp(&other.get(node)) {
                Ordering::Less => less = true,
                Ordering::Greater => greater = true,
                Ordering::Equal => {}
            }
        }
        match (less, greater) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::Before,
            (false, true) => Causality::After,
            (true, true) => Causality::Concurrent,
        }
    }

    /// The entries with a non-zero counter, by node id.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, u64)> {
        self.0.iter().filter(|(_, c)| **c > 0).map(|(n, c)| (n, *c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    #[test]
    fn relations() {
        let mut a = VectorClock::new();
        let mut b = VectorClock::new();
        assert_eq!(a.compare(&b), Causality::Equal);
        a.increment(&n("a"));
        assert_eq!(a.compare(&b), Causality::After);
        assert_eq!(b.compare(&a), Causality::Before);
        b.increment(&n("b"));
        assert_eq!(a.compare(&b), Causality::Concurrent);
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!(a.compare(&m), Causality::Before);
        assert_eq!(m.get(&n("a")), 1);
        assert_eq!(m.get(&n("b")), 1);
    }

    fn clock() -> impl Strategy<Value = VectorClock> {
        proptest::collection::btree_map(0u8..4, 0u64..4, 0..4).prop_map(|m| {
            VectorClock(
                m.into_iter()
                    .map(|(k, v)| (n(&format!("n{k}")), v))
                    .collect(),
            )
        })
    }

    proptest! {
        #[test]
        fn merge_is_an_upper_bound(a in clock(), b in clock()) {
            let mut m = a.clone();
            m.merge(&b);
            prop_assert!(matches!(a.compare(&m), Causality::Before | Causality::Equal));
            prop_assert!(matches!(b.compare(&m), Causality::Before | Causality::Equal));
            let mut m2 = b.clone();
            m2.merge(&a);
            prop_assert_eq!(m.compare(&m2), Causality::Equal);
        }

        #[test]
        fn compare_is_antisymmetric(a in clock(), b in clock()) {
            let flipped = match a.compare(&b) {
                Causality::Before => Causality::After,
                Causality::After => Causality::Before,
                other => other,
            };
            prop_assert_eq!(b.compare(&a), flipped);
        }
    }
}
