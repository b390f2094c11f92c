//! The sans-IO core of sync: turns hub answers and resolver decisions into atomic store writes.
//!
//! Nothing here does I/O, so every rule (what a push outcome does to the outbox, what a pulled
//! page may contain, how a decision rebases events) is tested without a store or a hub.

use std::collections::{BTreeMap, HashSet};

use synckit_types::{
    AggregateId, AppendOutcome, AppendReport, AuditRecord, Conflict, Decision, Error, ErrorSummary,
    Event, EventId, Filter, HlcState, NodeId, NodeWrite, Page, Resolution, ResolutionContext,
    Result, ReviewEntry, Seq, StoredEvent, new_record_id,
};

/// What one push round changes.
#[derive(Debug, Default)]
pub(crate) struct PushPlan {
    /// Confirmations, and rejected events moved to the review queue.
    pub write: NodeWrite,
    /// Events now in the hub's log (accepted or duplicate).
    pub stored: u64,
    /// Aggregates whose events conflicted, with the hub's current version.
    pub conflicts: BTreeMap<AggregateId, u64>,
    /// Rejected events, reported in the sync result.
    pub rejections: Vec<ErrorSummary>,
}

/// Plan the effect of the hub's answer to pushing `batch`.
///
/// The answer must have one result per event, in order, with matching ids, and the events it
/// accepts must take rising seqs after `floor` (the node's cursor: every seq up to it is an
/// event the node already holds); anything else is a protocol error and changes nothing.
pub(crate) fn plan_push(
    batch: &[Event],
    report: &AppendReport,
    floor: Seq,
    context: &ResolutionContext,
    now_ms: u64,
) -> Result<PushPlan> {
    if report.results.len() != batch.len() {
        return Err(Error::protocol(format!(
            "hub answered {} results for a batch of {} events",
            report.results.len(),
            batch.len()
        )));
    }
    let mut plan = PushPlan::default();
    // The hub appends a batch in order, so the events it accepts take rising seqs, and no two
    // results of one answer can share a seq.
    let mut last_accepted = floor;
    let mut seen = HashSet::new();
    for (event, result) in batch.iter().zip(&report.results) {
        if result.id != event.id {
            return Err(Error::protocol(format!(
                "hub answered for event {} where {} was expected",
                result.id, event.id
            )));
        }
        match &result.outcome {
            AppendOutcome::Accepted {
                seq,
                aggregate_version,
                recorded_at,
            }
            | AppendOutcome::Duplicate {
                seq,
                aggregate_version,
                recorded_at,
            } => {
                if seq.get() == 0 || *aggregate_version == 0 || *seq > report.head {
                    return Err(Error::protocol(format!(
                        "hub stored event {} at impossible position seq {seq}, version \
                         {aggregate_version} (head {})",
                        event.id, report.head
                    )));
                }
                if !seen.insert(*seq) {
                    return Err(Error::protocol(format!(
                        "hub answered seq {seq} for two events of one push"
                    )));
                }
                if matches!(result.outcome, AppendOutcome::Accepted { .. }) {
                    if *seq <= last_accepted {
                        return Err(Error::protocol(format!(
                            "hub accepted event {} at seq {seq}, not after seq {last_accepted} \
                             (the node's cursor, or an event accepted before it in this push)",
                            event.id
                        )));
                    }
                    last_accepted = *seq;
                }
                plan.write.confirm.push(StoredEvent {
                    event: event.clone(),
                    seq: *seq,
                    aggregate_version: *aggregate_version,
                    recorded_at: *recorded_at,
                });
                plan.stored += 1;
            }
            AppendOutcome::Conflict { current_version } => {
                let entry = plan
                    .conflicts
                    .entry(event.aggregate_id.clone())
                    .or_insert(0);
                *entry = (*entry).max(*current_version);
            }
            AppendOutcome::Rejected { code, message } => {
                let reason = format!("rejected by the hub: {}: {message}", code.as_str());
                let conflict = Conflict {
                    aggregate_id: event.aggregate_id.clone(),
                    base_version: event.expected_version.unwrap_or(0),
                    current_version: event.expected_version.unwrap_or(0),
                    local: vec![event.clone()],
                    remote: Vec::new(),
                };
                let resolution = Resolution::new(Decision::Review, "hub_rejection", reason.clone());
                plan.write.remove_pending.push(event.id.clone());
                plan.write
                    .put_reviews
                    .push(review_entry(&conflict, &resolution, now_ms));
                let decided_by = context.node_id.as_ref().map_or("node", NodeId::as_str);
                plan.write.audit.push(audit_record(
                    &conflict,
                    &resolution,
                    Vec::new(),
                    AuditInputs {
                        context,
                        decided_by,
                        now_ms,
                        duration_us: 0,
                    },
                ));
                plan.rejections.extend(result.rejection());
            }
        }
    }
    Ok(plan)
}

/// Plan applying a pulled page read after `cursor` with `filter`.
///
/// Checks what a broken or lying hub could send: events out of order or repeated, events at or
/// before the cursor or past `next`, events the filter excludes, a cursor moving backwards, and
/// a page that claims more but makes no progress. Any of these is a protocol error that changes
/// nothing.
pub(crate) fn plan_page(cursor: Seq, filter: &Filter, page: &Page) -> Result<NodeWrite> {
    if page.next < cursor {
        return Err(Error::protocol(format!(
            "hub moved the cursor backwards from {cursor} to {}",
            page.next
        )));
    }
    if page.head < page.next {
        return Err(Error::protocol(format!(
            "hub page ends at {} past its head {}",
            page.next, page.head
        )));
    }
    if page.has_more && page.next == cursor {
        return Err(Error::protocol(format!(
            "hub claims more events after {cursor} but returned none"
        )));
    }
    let mut last = cursor;
    let mut ids = HashSet::with_capacity(page.events.len());
    for stored in &page.events {
        if stored.seq <= last || stored.seq > page.next {
            return Err(Error::protocol(format!(
                "hub sent seq {} out of order (after {last}, page ends at {})",
                stored.seq, page.next
            )));
        }
        if !ids.insert(&stored.event.id) {
            return Err(Error::protocol(format!(
                "hub sent event {} twice in one page",
                stored.event.id
            )));
        }
        if stored.aggregate_version == 0 {
            return Err(Error::protocol(format!(
                "hub sent event {} with aggregate version 0",
                stored.event.id
            )));
        }
        if !filter.matches(&stored.event) {
            return Err(Error::protocol(format!(
                "hub sent event {} that the pull filter excludes",
                stored.event.id
            )));
        }
        last = stored.seq;
    }
    Ok(NodeWrite {
        confirm: page.events.clone(),
        cursor: Some(page.next),
        ..NodeWrite::default()
    })
}

/// Give each event that carries an expected version the version it will have after
/// `current`: the first `current`, the next `current + 1`, and so on. Events without one stay
/// unchecked but still count, since the hub gives them a version too.
pub(crate) fn rebase(events: &[Event], current: u64) -> Vec<Event> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut e = e.clone();
            if e.expected_version.is_some() {
                e.expected_version = Some(current.saturating_add(i as u64));
            }
            e
        })
        .collect()
}

/// Inputs of [`plan_resolution`] beyond the conflict and the decision.
pub(crate) struct ResolutionInputs<'a> {
    pub node: &'a NodeId,
    pub hlc: &'a mut HlcState,
    pub now_ms: u64,
    pub duration_us: u64,
    pub decided_by: &'a str,
    pub context: &'a ResolutionContext,
}

/// Plan carrying out `resolution` of `conflict`: one atomic write with the audit record.
pub(crate) fn plan_resolution(
    conflict: &Conflict,
    resolution: &Resolution,
    inputs: ResolutionInputs<'_>,
) -> Result<NodeWrite> {
    let mut write = NodeWrite::default();
    let local_ids: Vec<EventId> = conflict.local.iter().map(|e| e.id.clone()).collect();
    let result = match &resolution.decision {
        Decision::KeepLocal => {
            let rebased = rebase(&conflict.local, conflict.current_version);
            write.put_pending = rebased.clone();
            rebased
        }
        Decision::KeepRemote => {
            write.remove_pending = local_ids;
            Vec::new()
        }
        Decision::Merge(events) => {
            let known: HashSet<&EventId> = conflict.local.iter().map(|e| &e.id).collect();
            let mut merged = Vec::with_capacity(events.len());
            let mut seen = HashSet::new();
            for event in events {
                if event.aggregate_id != conflict.aggregate_id {
                    return Err(Error::invalid_input(format!(
                        "merge produced event {} for aggregate {}, not {}",
                        event.id, event.aggregate_id, conflict.aggregate_id
                    )));
                }
                if !seen.insert(event.id.clone()) {
                    return Err(Error::invalid_input(format!(
                        "merge produced event {} twice",
                        event.id
                    )));
                }
                event.validate()?;
                let mut event = event.clone();
                if !known.contains(&event.id) {
                    event.origin = inputs.node.clone();
                    event.hlc = inputs.hlc.tick(inputs.now_ms)?;
                    write.hlc = Some(inputs.hlc.last());
                }
                event.expected_version = Some(0);
                merged.push(event);
            }
            let merged = rebase(&merged, conflict.current_version);
            write.remove_pending = local_ids;
            write.put_pending = merged.clone();
            merged
        }
        Decision::Review => {
            write.remove_pending = local_ids;
            write
                .put_reviews
                .push(review_entry(conflict, resolution, inputs.now_ms));
            Vec::new()
        }
    };
    write.audit.push(audit_record(
        conflict,
        resolution,
        result,
        AuditInputs {
            context: inputs.context,
            decided_by: inputs.decided_by,
            now_ms: inputs.now_ms,
            duration_us: inputs.duration_us,
        },
    ));
    Ok(write)
}

pub(crate) fn review_entry(conflict: &Conflict, resolution: &Resolution, now: u64) -> ReviewEntry {
    ReviewEntry {
        id: new_record_id(),
        conflict: conflict.clone(),
        reason: resolution.reason.clone(),
        strategy: resolution.strategy.clone(),
        rule: resolution.rule.clone(),
        created_at: now,
    }
}

/// Who, when and how long, for one audit record.
pub(crate) struct AuditInputs<'a> {
    pub context: &'a ResolutionContext,
    pub decided_by: &'a str,
    pub now_ms: u64,
    pub duration_us: u64,
}

pub(crate) fn audit_record(
    conflict: &Conflict,
    resolution: &Resolution,
    result: Vec<Event>,
    inputs: AuditInputs<'_>,
) -> AuditRecord {
    AuditRecord {
        id: new_record_id(),
        at: inputs.now_ms,
        decision: resolution.decision.kind(),
        strategy: resolution.strategy.clone(),
        rule: resolution.rule.clone(),
        group: resolution.group.clone(),
        reason: resolution.reason.clone(),
        kind: conflict
            .local
            .last()
            .map(|e| e.kind.clone())
            .unwrap_or_default(),
        changed_fields: conflict.changed_fields(),
        context: inputs.context.clone(),
        conflict: conflict.clone(),
        result,
        decided_by: inputs.decided_by.to_owned(),
        duration_us: inputs.duration_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synckit_types::{AppendResult, Hlc, RejectCode};

    fn node() -> NodeId {
        NodeId::new("n1").unwrap()
    }

    fn context() -> ResolutionContext {
        ResolutionContext {
            node_id: Some(node()),
            ..ResolutionContext::default()
        }
    }

    fn event(id: &str, agg: &str, expected: Option<u64>) -> Event {
        let b = Event::builder("K", agg)
            .id(id)
            .origin("n1")
            .hlc(Hlc::new(1, 0));
        match expected {
            Some(v) => b.expected_version(v),
            None => b.unchecked(),
        }
        .build()
        .unwrap()
    }

    fn stored(e: Event, seq: u64) -> StoredEvent {
        StoredEvent {
            event: e,
            seq: Seq(seq),
            aggregate_version: 1,
            recorded_at: 0,
        }
    }

    fn result(id: &str, outcome: AppendOutcome) -> AppendResult {
        AppendResult {
            id: EventId::new(id).unwrap(),
            outcome,
        }
    }

    #[test]
    fn push_outcomes_map_to_confirmations_conflicts_and_reviews() {
        let batch = vec![
            event("a", "x", Some(0)),
            event("b", "y", Some(3)),
            event("c", "z", None),
            event("d", "x", Some(1)),
        ];
        let report = AppendReport {
            results: vec![
                result(
                    "a",
                    AppendOutcome::Accepted {
                        seq: Seq(5),
                        aggregate_version: 1,
                        recorded_at: 9,
                    },
                ),
                result("b", AppendOutcome::Conflict { current_version: 4 }),
                result(
                    "c",
                    AppendOutcome::Rejected {
                        code: RejectCode::IdConflict,
                        message: "different content".into(),
                    },
                ),
                result(
                    "d",
                    AppendOutcome::Duplicate {
                        seq: Seq(6),
                        aggregate_version: 2,
                        recorded_at: 9,
                    },
                ),
            ],
            head: Seq(6),
        };
        let plan = plan_push(&batch, &report, Seq::ZERO, &context(), 0).unwrap();
        assert_eq!(plan.stored, 2);
        assert_eq!(plan.write.confirm.len(), 2);
        assert_eq!(plan.write.confirm[1].seq, Seq(6));
        assert_eq!(
            plan.conflicts.get(&AggregateId::new("y").unwrap()),
            Some(&4)
        );
        assert_eq!(plan.write.remove_pending, vec![EventId::new("c").unwrap()]);
        assert_eq!(plan.write.put_reviews.len(), 1);
        assert_eq!(plan.write.audit.len(), 1);
        assert_eq!(plan.rejections[0].code, "id_conflict");
    }

    #[test]
    fn push_answers_that_do_not_match_the_batch_are_refused() {
        let batch = vec![event("a", "x", None)];
        let short = AppendReport {
            results: vec![],
            head: Seq(0),
        };
        assert!(plan_push(&batch, &short, Seq::ZERO, &context(), 0).is_err());
        let wrong_id = AppendReport {
            results: vec![result("zz", AppendOutcome::Conflict { current_version: 1 })],
            head: Seq(0),
        };
        assert!(plan_push(&batch, &wrong_id, Seq::ZERO, &context(), 0).is_err());
        let past_head = AppendReport {
            results: vec![result(
                "a",
                AppendOutcome::Accepted {
                    seq: Seq(9),
                    aggregate_version: 1,
                    recorded_at: 0,
                },
            )],
            head: Seq(3),
        };
        assert!(plan_push(&batch, &past_head, Seq::ZERO, &context(), 0).is_err());
        let two = vec![event("a", "x", None), event("b", "x", None)];
        let accepted = |id: &str, seq: u64| {
            result(
                id,
                AppendOutcome::Accepted {
                    seq: Seq(seq),
                    aggregate_version: 1,
                    recorded_at: 0,
                },
            )
        };
        let report = |seqs: [u64; 2]| AppendReport {
            results: vec![accepted("a", seqs[0]), accepted("b", seqs[1])],
            head: Seq(5),
        };
        assert!(plan_push(&two, &report([4, 5]), Seq::ZERO, &context(), 0).is_ok());
        let same = plan_push(&two, &report([4, 4]), Seq::ZERO, &context(), 0).unwrap_err();
        assert!(same.to_string().contains("two events"), "{same}");
        let backwards = plan_push(&two, &report([5, 4]), Seq::ZERO, &context(), 0).unwrap_err();
        assert!(backwards.to_string().contains("not after"), "{backwards}");
        let held = plan_push(&two, &report([4, 5]), Seq(4), &context(), 0).unwrap_err();
        assert!(held.to_string().contains("cursor"), "{held}");
    }

    fn page(events: Vec<StoredEvent>, next: u64, has_more: bool, head: u64) -> Page {
        Page {
            events,
            next: Seq(next),
            has_more,
            head: Seq(head),
        }
    }

    #[test]
    fn lying_pages_are_refused() {
        let f = Filter::all();
        let e = |id: &str, seq| stored(event(id, "x", None), seq);
        assert!(plan_page(Seq(2), &f, &page(vec![e("a", 3)], 3, false, 3)).is_ok());
        // Backwards cursor, past head, no progress, out of order, repeated, at cursor, past next.
        assert!(plan_page(Seq(5), &f, &page(vec![], 4, false, 9)).is_err());
        assert!(plan_page(Seq(0), &f, &page(vec![], 5, false, 4)).is_err());
        assert!(plan_page(Seq(2), &f, &page(vec![], 2, true, 9)).is_err());
        assert!(plan_page(Seq(0), &f, &page(vec![e("a", 2), e("b", 1)], 2, false, 2)).is_err());
        assert!(plan_page(Seq(0), &f, &page(vec![e("a", 1), e("a", 2)], 2, false, 2)).is_err());
        assert!(plan_page(Seq(1), &f, &page(vec![e("a", 1)], 1, false, 1)).is_err());
        assert!(plan_page(Seq(0), &f, &page(vec![e("a", 3)], 2, true, 3)).is_err());
        let only_y = Filter::aggregate(AggregateId::new("y").unwrap());
        assert!(plan_page(Seq(0), &only_y, &page(vec![e("a", 1)], 1, false, 1)).is_err());
    }

    #[test]
    fn rebase_counts_every_event_but_checks_only_checked_ones() {
        let events = vec![
            event("a", "x", Some(1)),
            event("b", "x", None),
            event("c", "x", Some(3)),
        ];
        let rebased = rebase(&events, 7);
        let versions: Vec<_> = rebased.iter().map(|e| e.expected_version).collect();
        assert_eq!(versions, vec![Some(7), None, Some(9)]);
    }

    fn conflict() -> Conflict {
        Conflict {
            aggregate_id: AggregateId::new("x").unwrap(),
            base_version: 1,
            current_version: 3,
            local: vec![event("a", "x", Some(1)), event("b", "x", Some(2))],
            remote: vec![],
        }
    }

    fn resolve(decision: Decision) -> Result<NodeWrite> {
        let mut hlc = HlcState::new(Hlc::new(5, 0), 1000);
        let resolution = Resolution::new(decision, "s", "r");
        plan_resolution(
            &conflict(),
            &resolution,
            ResolutionInputs {
                node: &node(),
                hlc: &mut hlc,
                now_ms: 10,
                duration_us: 1,
                decided_by: "n1",
                context: &context(),
            },
        )
    }

    #[test]
    fn each_decision_writes_its_outbox_change_and_an_audit_record() {
        let keep = resolve(Decision::KeepLocal).unwrap();
        let versions: Vec<_> = keep
            .put_pending
            .iter()
            .map(|e| e.expected_version)
            .collect();
        assert_eq!(versions, vec![Some(3), Some(4)]);
        assert!(keep.remove_pending.is_empty());
        assert_eq!(keep.audit.len(), 1);

        let drop = resolve(Decision::KeepRemote).unwrap();
        assert_eq!(drop.remove_pending.len(), 2);
        assert!(drop.put_pending.is_empty());
        assert_eq!(
            drop.audit[0].decision,
            synckit_types::DecisionKind::KeepRemote
        );

        let review = resolve(Decision::Review).unwrap();
        assert_eq!(review.remove_pending.len(), 2);
        assert_eq!(review.put_reviews.len(), 1);

        let merged_event = event("m", "x", None);
        let merge = resolve(Decision::Merge(vec![merged_event])).unwrap();
        assert_eq!(merge.put_pending.len(), 1);
        assert_eq!(merge.put_pending[0].expected_version, Some(3));
        assert!(
            merge.put_pending[0].hlc > Hlc::new(5, 0),
            "new events are stamped"
        );
        assert_eq!(merge.remove_pending.len(), 2);

        let wrong = resolve(Decision::Merge(vec![event("m", "other", None)]));
        assert!(wrong.is_err());
    }
}
