//! Questions over a node's audit trail: decisions by aggregate, time range, rule or group, page
//! by page, and a rollback analysis of which later decisions depend on one.
//!
//! Node stores keep the trail in decision order and answer only two questions fast (one
//! aggregate, or everything, after a cursor). The filters here page through those answers, so
//! a time-range or rule query reads the trail (or the aggregate's part of it) once, whatever its
//! page size; nothing beyond one store page is held in memory.

use std::collections::BTreeSet;

use synckit_types::{
    AggregateId, AuditQuery, AuditRecord, Error, ErrorKind, EventId, NodeStore, Result,
};

/// How many records each store read asks for while filtering.
const SCAN_PAGE: usize = 500;
/// The largest page [`query`] returns.
pub const MAX_AUDIT_PAGE: usize = 1_000;

/// Which decisions to list. Every field that is set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only decisions about this aggregate.
    pub aggregate_id: Option<AggregateId>,
    /// Only decisions at or after this time (milliseconds since the Unix epoch).
    pub from_ms: Option<u64>,
    /// Only decisions before this time (exclusive).
    pub to_ms: Option<u64>,
    /// Only decisions by this rule (its full `group.rule` name).
    pub rule: Option<String>,
    /// Only decisions in this group or its subgroups (`orders` matches `orders.eu`).
    pub group: Option<String>,
}

impl AuditFilter {
    /// Whether `record` passes every condition.
    pub fn matches(&self, record: &AuditRecord) -> bool {
        self.aggregate_id
            .as_ref()
            .is_none_or(|a| *a == record.conflict.aggregate_id)
            && self.from_ms.is_none_or(|from| record.at >= from)
            && self.to_ms.is_none_or(|to| record.at < to)
            && self
                .rule
                .as_ref()
                .is_none_or(|rule| record.rule.as_ref() == Some(rule))
            && self.group.as_ref().is_none_or(|group| {
                record.group.as_deref().is_some_and(|g| {
                    g == group
                        || g.strip_prefix(group.as_str())
                            .is_some_and(|rest| rest.starts_with('.'))
                })
            })
    }
}

/// One page of [`query`].
#[derive(Debug, Clone, PartialEq)]
pub struct AuditPage {
    /// Matching records, oldest first.
    pub records: Vec<AuditRecord>,
    /// Pass as `after` for the next page; `None` when the trail is exhausted.
    pub next: Option<String>,
}

/// Up to `limit` decisions matching `filter` after the record `after` (exclusive), oldest
/// first. `limit` 0 means 100; more than [`MAX_AUDIT_PAGE`] is an error.
pub async fn query(
    store: &dyn NodeStore,
    filter: &AuditFilter,
    after: Option<String>,
    limit: usize,
) -> Result<AuditPage> {
    let limit = match limit {
        0 => 100,
        n if n > MAX_AUDIT_PAGE => {
            return Err(Error::invalid_input(format!(
                "audit page size {n} is over the limit of {MAX_AUDIT_PAGE}"
            )));
        }
        n => n,
    };
    let mut records = Vec::new();
    let mut cursor = after;
    loop {
        let page = store
            .audit(&AuditQuery {
                aggregate_id: filter.aggregate_id.clone(),
                after: cursor.clone(),
                limit: SCAN_PAGE,
            })
            .await?;
        let exhausted = page.len() < SCAN_PAGE;
        for record in page {
            cursor = Some(record.id.clone());
            if filter.matches(&record) {
                records.push(record);
                if records.len() == limit {
                    return Ok(AuditPage {
                        records,
                        next: cursor,
                    });
                }
            }
        }
        if exhausted {
            return Ok(AuditPage {
                records,
                next: None,
            });
        }
    }
}

/// Why a later decision depends on the one analysed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dependency {
    /// Its conflict contains events the analysed decision (or a decision depending on it)
    /// wrote: rolling back removes what it decided about.
    Events(Vec<EventId>),
    /// It decided about the same aggregate later, from the state the analysed decision left.
    State,
}

/// A later decision and why it depends on the analysed one.
#[derive(Debug, Clone, PartialEq)]
pub struct Dependent {
    /// The later decision.
    pub record: AuditRecord,
    /// Why it depends.
    pub dependency: Dependency,
}

/// What rolling back one decision touches.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackAnalysis {
    /// The decision analysed.
    pub decision: AuditRecord,
    /// Every later decision on the same aggregate, oldest first: those whose conflicts hold
    /// events written by the decision (directly or through another dependent) are
    /// [`Dependency::Events`], the rest [`Dependency::State`].
    pub dependents: Vec<Dependent>,
}

/// Which later decisions on the same aggregate depend on decision `id`.
///
/// Finding `id` reads the trail up to it; the dependents are then read from the aggregate's
/// part of the trail only.
pub async fn rollback_analysis(store: &dyn NodeStore, id: &str) -> Result<RollbackAnalysis> {
    let decision = find(store, id).await?;
    // Events written by the decision or by anything depending on it through events.
    let mut written: BTreeSet<EventId> = decision.result.iter().map(|e| e.id.clone()).collect();
    let filter = AuditFilter {
        aggregate_id: Some(decision.conflict.aggregate_id.clone()),
        ..AuditFilter::default()
    };
    let mut dependents = Vec::new();
    let mut after = Some(decision.id.clone());
    loop {
        let page = query(store, &filter, after, MAX_AUDIT_PAGE).await?;
        for record in page.records {
            let touched: Vec<EventId> = record
                .conflict
                .local
                .iter()
                .map(|e| &e.id)
                .chain(record.conflict.remote.iter().map(|e| &e.event.id))
                .filter(|id| written.contains(*id))
                .cloned()
                .collect();
            let dependency = if touched.is_empty() {
                Dependency::State
            } else {
                written.extend(record.result.iter().map(|e| e.id.clone()));
                Dependency::Events(touched)
            };
            dependents.push(Dependent { record, dependency });
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(RollbackAnalysis {
        decision,
        dependents,
    })
}

/// The record `id`, by reading the trail in order.
async fn find(store: &dyn NodeStore, id: &str) -> Result<AuditRecord> {
    let mut after = None;
    loop {
        let page = store
            .audit(&AuditQuery {
                aggregate_id: None,
                after,
                limit: SCAN_PAGE,
            })
            .await?;
        let exhausted = page.len() < SCAN_PAGE;
        after = page.last().map(|r| r.id.clone());
        if let Some(record) = page.into_iter().find(|r| r.id == id) {
            return Ok(record);
        }
        if exhausted {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no audit record {id}"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synckit_store_memory::MemoryStore;
    use synckit_types::{
        Conflict, DecisionKind, Event, Hlc, NodeWrite, ResolutionContext, StoredEvent,
    };

    fn event(id: &str, aggregate: &str) -> Event {
        Event::builder("Renamed", aggregate)
            .id(id)
            .origin("n1")
            .hlc(Hlc::new(1, 0))
            .build()
            .unwrap()
    }

    /// A decision on `aggregate` at `at` whose conflict holds `local` and `remote` events and
    /// which wrote `result`.
    fn record(
        id: &str,
        aggregate: &str,
        at: u64,
        rule: Option<&str>,
        local: &[&str],
        remote: &[&str],
        result: &[&str],
    ) -> AuditRecord {
        AuditRecord {
            id: id.to_owned(),
            at,
            decision: DecisionKind::KeepLocal,
            strategy: "last_write_wins".to_owned(),
            rule: rule.map(str::to_owned),
            group: rule
                .and_then(|r| r.rsplit_once('.'))
                .map(|(g, _)| g.to_owned()),
            reason: "test".to_owned(),
            kind: "Renamed".to_owned(),
            changed_fields: Vec::new(),
            context: ResolutionContext::default(),
            conflict: Conflict {
                aggregate_id: AggregateId::new(aggregate).unwrap(),
                base_version: 1,
                current_version: 2,
                local: local.iter().map(|id| event(id, aggregate)).collect(),
                remote: remote
                    .iter()
                    .map(|id| StoredEvent {
                        event: event(id, aggregate),
                        seq: synckit_types::Seq(1),
                        aggregate_version: 1,
                        recorded_at: 0,
                    })
                    .collect(),
            },
            result: result.iter().map(|id| event(id, aggregate)).collect(),
            decided_by: "n1".to_owned(),
            duration_us: 1,
        }
    }

    async fn store_with(records: Vec<AuditRecord>) -> MemoryStore {
        let store = MemoryStore::new();
        store
            .commit(NodeWrite {
                audit: records,
                ..NodeWrite::default()
            })
            .await
            .unwrap();
        store
    }

    fn ids(records: &[AuditRecord]) -> Vec<&str> {
        records.iter().map(|r| r.id.as_str()).collect()
    }

    #[tokio::test]
    async fn filters_combine_and_page() {
        let mut records = Vec::new();
        for i in 0..1_200u64 {
            let aggregate = if i % 2 == 0 { "even" } else { "odd" };
            let rule = if i % 3 == 0 {
                "orders.eu.lww"
            } else {
                "users.fww"
            };
            records.push(record(
                &format!("r{i:05}"),
                aggregate,
                1_000 + i,
                Some(rule),
                &[],
                &[],
                &[],
            ));
        }
        let store = store_with(records).await;

        // Time range [1_100, 1_110): ten records, in order.
        let range = AuditFilter {
            from_ms: Some(1_100),
            to_ms: Some(1_110),
            ..AuditFilter::default()
        };
        let page = query(&store, &range, None, 0).await.unwrap();
        assert_eq!(
            ids(&page.records),
            (100..110).map(|i| format!("r{i:05}")).collect::<Vec<_>>()
        );
        assert_eq!(page.next, None);

        // Rule and aggregate together, paged by 70 across store pages of 500.
        let filter = AuditFilter {
            aggregate_id: Some(AggregateId::new("even").unwrap()),
            rule: Some("orders.eu.lww".to_owned()),
            ..AuditFilter::default()
        };
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = query(&store, &filter, after, 70).await.unwrap();
            assert!(page.records.len() <= 70);
            seen.extend(page.records.iter().map(|r| r.id.clone()));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let expected: Vec<String> = (0..1_200u64)
            .filter(|i| i % 6 == 0)
            .map(|i| format!("r{i:05}"))
            .collect();
        assert_eq!(seen, expected);

        // A group matches itself and its subgroups, not a name that merely starts the same.
        let group = |g: &str| AuditFilter {
            group: Some(g.to_owned()),
            ..AuditFilter::default()
        };
        let orders = query(&store, &group("orders"), None, 1_000).await.unwrap();
        assert_eq!(orders.records.len(), 400);
        assert!(
            query(&store, &group("order"), None, 10)
                .await
                .unwrap()
                .records
                .is_empty()
        );
        assert!(query(&store, &range, None, 1_001).await.is_err());
    }

    #[tokio::test]
    async fn rollback_lists_later_decisions_on_the_aggregate_and_why() {
        let store = store_with(vec![
            record("a1", "task", 1, Some("g.r"), &["e1"], &["h1"], &["e1"]),
            record("b1", "other", 2, None, &["x1"], &[], &["x1"]),
            // Decides about e1, which a1 wrote, and writes m1.
            record("a2", "task", 3, None, &["e2"], &["e1"], &["m1"]),
            // Decides about m1, which a2 wrote: transitively dependent.
            record("a3", "task", 4, None, &["e3"], &["m1"], &[]),
            // Same aggregate, none of the written events: depends by state only.
            record("a4", "task", 5, None, &["e4"], &["h9"], &[]),
        ])
        .await;
        let analysis = rollback_analysis(&store, "a1").await.unwrap();
        assert_eq!(analysis.decision.id, "a1");
        let got: Vec<(&str, &Dependency)> = analysis
            .dependents
            .iter()
            .map(|d| (d.record.id.as_str(), &d.dependency))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a2", &Dependency::Events(vec![EventId::new("e1").unwrap()])),
                ("a3", &Dependency::Events(vec![EventId::new("m1").unwrap()])),
                ("a4", &Dependency::State),
            ]
        );
        // The last decision has no dependents; an unknown id is NotFound.
        assert!(
            rollback_analysis(&store, "a4")
                .await
                .unwrap()
                .dependents
                .is_empty()
        );
        let missing = rollback_analysis(&store, "nope").await.unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound);
    }
}
