//! The built-in strategies: last-write-wins, first-write-wins, additive merge, manual review.

use std::fmt::Write as _;
use std::sync::Arc;

use async_trait::async_trait;
use synckit_types::{
    Conflict, ConflictResolver, Decision, DynResolver, Error, Hlc, NodeId, Resolution,
    ResolutionContext, Result,
};

/// The side with the latest event wins, comparing `(hlc, origin)` of each side's latest event.
///
/// With no remote events the local side wins. Equal keys (impossible between two nodes) keep
/// the hub's order: the remote side wins.
#[derive(Debug, Clone, Copy, Default)]
pub struct LastWriteWins;

/// The side with the earliest event wins, comparing `(hlc, origin)` of each side's earliest
/// event: the mirror image of [`LastWriteWins`].
///
/// With no remote events the local side wins. Equal keys keep the hub's order: remote wins.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstWriteWins;

/// Keep both sides: the local events are rebased after the remote ones, unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdditiveMerge;

/// Park every conflict in the review queue; the application decides later.
#[derive(Debug, Clone, Copy, Default)]
pub struct ManualReview;

fn local_keys(conflict: &Conflict) -> impl Iterator<Item = (Hlc, &NodeId)> {
    conflict.local.iter().map(|e| e.order_key())
}

fn remote_keys(conflict: &Conflict) -> impl Iterator<Item = (Hlc, &NodeId)> {
    conflict.remote.iter().map(|e| e.event.order_key())
}

/// `<what> local write <key> vs <what> remote write <key>`, in one allocation: every decision
/// carries this reason, so it is built without the general formatting machinery.
fn reason(what: &str, local: Option<(Hlc, &NodeId)>, remote: Option<(Hlc, &NodeId)>) -> String {
    fn key(out: &mut String, key: Option<(Hlc, &NodeId)>) {
        match key {
            Some((hlc, node)) => {
                let _ = write!(out, "{hlc}");
                out.push_str(" from ");
                out.push_str(node.as_str());
            }
            None => out.push_str("none"),
        }
    }
    let mut out = String::with_capacity(112);
    out.push_str(what);
    out.push_str(" local write ");
    key(&mut out, local);
    out.push_str(" vs ");
    out.push_str(what);
    out.push_str(" remote write ");
    key(&mut out, remote);
    out
}

fn decide(local_wins: bool, strategy: &str, reason: String) -> Resolution {
    Resolution {
        decision: if local_wins {
            Decision::KeepLocal
        } else {
            Decision::KeepRemote
        },
        strategy: strategy.to_owned(),
        rule: None,
        group: None,
        reason,
    }
}

impl LastWriteWins {
    /// The decision, without the async wrapper.
    pub fn decide(&self, conflict: &Conflict) -> Resolution {
        let local = local_keys(conflict).max();
        let remote = remote_keys(conflict).max();
        let local_wins = match (local, remote) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => l > r,
        };
        decide(
            local_wins,
            "last_write_wins",
            reason("latest", local, remote),
        )
    }
}

impl FirstWriteWins {
    /// The decision, without the async wrapper.
    pub fn decide(&self, conflict: &Conflict) -> Resolution {
        let local = local_keys(conflict).min();
        let remote = remote_keys(conflict).min();
        let local_wins = match (local, remote) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => l < r,
        };
        decide(
            local_wins,
            "first_write_wins",
            reason("earliest", local, remote),
        )
    }
}

#[async_trait]
impl ConflictResolver for LastWriteWins {
    async fn resolve(&self, conflict: &Conflict, _: &ResolutionContext) -> Result<Resolution> {
        Ok(self.decide(conflict))
    }
}

#[async_trait]
impl ConflictResolver for FirstWriteWins {
    async fn resolve(&self, conflict: &Conflict, _: &ResolutionContext) -> Result<Resolution> {
        Ok(self.decide(conflict))
    }
}

impl AdditiveMerge {
    /// The decision, without the async wrapper.
    pub fn decide(&self, conflict: &Conflict) -> Resolution {
        Resolution {
            decision: Decision::Merge(conflict.local.clone()),
            strategy: "additive_merge".to_owned(),
            rule: None,
            group: None,
            reason: format!(
                "keep both: {} local event(s) rebased after {} remote event(s)",
                conflict.local.len(),
                conflict.remote.len()
            ),
        }
    }
}

impl ManualReview {
    /// The decision, without the async wrapper.
    pub fn decide(&self, conflict: &Conflict) -> Resolution {
        Resolution {
            decision: Decision::Review,
            strategy: "manual_review".to_owned(),
            rule: None,
            group: None,
            reason: format!(
                "{} local and {} remote event(s) await the application's decision",
                conflict.local.len(),
                conflict.remote.len()
            ),
        }
    }
}

#[async_trait]
impl ConflictResolver for AdditiveMerge {
    async fn resolve(&self, conflict: &Conflict, _: &ResolutionContext) -> Result<Resolution> {
        Ok(self.decide(conflict))
    }
}

#[async_trait]
impl ConflictResolver for ManualReview {
    async fn resolve(&self, conflict: &Conflict, _: &ResolutionContext) -> Result<Resolution> {
        Ok(self.decide(conflict))
    }
}

/// A built-in resolver by its short name: `lww`, `fww`, `merge` or `review` (or the long names
/// `last_write_wins`, `first_write_wins`, `additive_merge`, `manual_review`).
pub fn by_name(name: &str) -> Result<DynResolver> {
    Ok(match name {
        "lww" | "last_write_wins" => Arc::new(LastWriteWins),
        "fww" | "first_write_wins" => Arc::new(FirstWriteWins),
        "merge" | "additive_merge" => Arc::new(AdditiveMerge),
        "review" | "manual_review" => Arc::new(ManualReview),
        other => {
            return Err(Error::config(format!(
                "unknown resolver {other:?}; expected one of lww, fww, merge, review"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use synckit_types::{AggregateId, Event, Seq, StoredEvent};

    fn event(id: &str, origin: &str, wall: u64, counter: u32) -> Event {
        Event::builder("K", "a")
            .id(id)
            .origin(origin)
            .hlc(Hlc::new(wall, counter))
            .build()
            .unwrap()
    }

    fn conflict(local: Vec<Event>, remote: Vec<Event>) -> Conflict {
        Conflict {
            aggregate_id: AggregateId::new("a").unwrap(),
            base_version: 0,
            current_version: remote.len() as u64,
            local,
            remote: remote
                .into_iter()
                .enumerate()
                .map(|(i, e)| StoredEvent {
                    event: e,
                    seq: Seq(i as u64 + 1),
                    aggregate_version: i as u64 + 1,
                    recorded_at: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn lww_picks_latest_and_breaks_ties_by_node() {
        let c = conflict(vec![event("l", "n1", 10, 0)], vec![event("r", "n2", 12, 0)]);
        assert_eq!(LastWriteWins.decide(&c).decision, Decision::KeepRemote);
        assert_eq!(FirstWriteWins.decide(&c).decision, Decision::KeepLocal);
        let tie = conflict(vec![event("l", "n2", 10, 0)], vec![event("r", "n1", 10, 0)]);
        assert_eq!(LastWriteWins.decide(&tie).decision, Decision::KeepLocal);
        assert_eq!(FirstWriteWins.decide(&tie).decision, Decision::KeepRemote);
    }

    #[test]
    fn no_remote_events_keeps_local() {
        let c = conflict(vec![event("l", "n1", 10, 0)], vec![]);
        assert_eq!(LastWriteWins.decide(&c).decision, Decision::KeepLocal);
        assert_eq!(FirstWriteWins.decide(&c).decision, Decision::KeepLocal);
    }

    #[tokio::test]
    async fn merge_and_review() {
        let c = conflict(
            vec![event("l1", "n1", 1, 0), event("l2", "n1", 2, 0)],
            vec![event("r", "n2", 1, 0)],
        );
        let ctx = ResolutionContext::default();
        let merged = AdditiveMerge.resolve(&c, &ctx).await.unwrap();
        assert_eq!(merged.decision, Decision::Merge(c.local.clone()));
        let review = ManualReview.resolve(&c, &ctx).await.unwrap();
        assert_eq!(review.decision, Decision::Review);
        assert!(by_name("nope").is_err());
        for name in ["lww", "fww", "merge", "review"] {
            assert!(by_name(name).is_ok());
        }
    }

    fn side() -> impl Strategy<Value = Vec<(u8, u64, u32)>> {
        proptest::collection::vec((0u8..4, 0u64..20, 0u32..3), 1..4)
    }

    fn build(side: &[(u8, u64, u32)], prefix: &str) -> Vec<Event> {
        side.iter()
            .enumerate()
            .map(|(i, (n, w, c))| event(&format!("{prefix}{i}"), &format!("n{n}"), *w, *c))
            .collect()
    }

    proptest! {
        #[test]
        fn lww_and_fww_are_mirror_images(l in (0u8..4, 0u64..20, 0u32..3), r in (0u8..4, 0u64..20, 0u32..3)) {
            prop_assume!(l != r);
            let c = conflict(build(&[l], "l"), build(&[r], "r"));
            let lww = LastWriteWins.decide(&c).decision;
            let fww = FirstWriteWins.decide(&c).decision;
            prop_assert_ne!(lww, fww);
        }

        #[test]
        fn strategies_are_deterministic(l in side(), r in side()) {
            let c = conflict(build(&l, "l"), build(&r, "r"));
            let again = c.clone();
            prop_assert_eq!(LastWriteWins.decide(&c), LastWriteWins.decide(&again));
            prop_assert_eq!(FirstWriteWins.decide(&c), FirstWriteWins.decide(&again));
            // The decision does not depend on the order the remote events are listed in.
            let mut shuffled = c.clone();
            shuffled.remote.reverse();
            prop_assert_eq!(LastWriteWins.decide(&c).decision, LastWriteWins.decide(&shuffled).decision);
            prop_assert_eq!(FirstWriteWins.decide(&c).decision, FirstWriteWins.decide(&shuffled).decision);
            prop_assert_eq!(AdditiveMerge.decide(&c), AdditiveMerge.decide(&again));
            prop_assert_eq!(ManualReview.decide(&c), ManualReview.decide(&again));
        }

        #[test]
        fn merge_keeps_every_local_event_exactly_once(l in side(), r in side()) {
            let c = conflict(build(&l, "l"), build(&r, "r"));
            let Decision::Merge(events) = AdditiveMerge.decide(&c).decision else {
                panic!("additive merge always merges");
            };
            // Exactly the local events, each once, in local order; no remote event is re-sent.
            let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
            let local: Vec<&str> = c.local.iter().map(|e| e.id.as_str()).collect();
            prop_assert_eq!(&ids, &local);
            let unique: std::collections::BTreeSet<_> = ids.iter().collect();
            prop_assert_eq!(unique.len(), ids.len());
            prop_assert!(c.remote.iter().all(|r| !ids.contains(&r.event.id.as_str())));
        }
    }
}
