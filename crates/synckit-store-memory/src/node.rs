//! The node role: confirmed log, outbox, cursor, node id and clock, review queue and audit trail.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use synckit_types::{
    AggregateHead, AggregateId, AuditQuery, AuditRecord, CommitSummary, Error, ErrorKind, Event,
    EventId, Hlc, NodeId, NodeState, NodeWrite, PendingEvent, ReviewEntry, Seq, StoredEvent,
};

use crate::hub::len_u64;

/// Page size of an audit query with `limit: 0`.
const DEFAULT_AUDIT_LIMIT: usize = 100;

/// Everything a node keeps, with the indexes its queries need.
#[derive(Debug)]
pub(crate) struct NodeData {
    node_id: Option<NodeId>,
    hlc: Hlc,
    cursor: Seq,
    /// Confirmed events by hub `seq`.
    confirmed: BTreeMap<Seq, StoredEvent>,
    /// Confirmed event id to its `seq`.
    confirmed_ids: HashMap<EventId, Seq>,
    /// Highest confirmed version of each aggregate.
    confirmed_versions: HashMap<AggregateId, u64>,
    /// The outbox by ordinal.
    outbox: BTreeMap<u64, Event>,
    /// Pending event id to its ordinal.
    outbox_ids: HashMap<EventId, u64>,
    /// Ordinals of each aggregate's pending events.
    outbox_aggregates: HashMap<AggregateId, BTreeSet<u64>>,
    /// The ordinal the next new pending event gets; ordinals are never reused.
    next_ordinal: u64,
    /// The review queue by insertion number, so it lists oldest first.
    reviews: BTreeMap<u64, ReviewEntry>,
    /// Review id to its insertion number.
    review_ids: HashMap<String, u64>,
    next_review: u64,
    /// The audit trail in insertion order.
    audit: Vec<AuditRecord>,
    /// Audit record id to its index in `audit`.
    audit_ids: HashMap<String, usize>,
    /// Indexes in `audit` of each aggregate's records, ascending.
    audit_aggregates: HashMap<AggregateId, Vec<usize>>,
}

impl Default for NodeData {
    fn default() -> Self {
        NodeData {
            node_id: None,
            hlc: Hlc::default(),
            cursor: Seq::ZERO,
            confirmed: BTreeMap::new(),
            confirmed_ids: HashMap::new(),
            confirmed_versions: HashMap::new(),
            outbox: BTreeMap::new(),
            outbox_ids: HashMap::new(),
            outbox_aggregates: HashMap::new(),
            next_ordinal: 1,
            reviews: BTreeMap::new(),
            review_ids: HashMap::new(),
            next_review: 1,
            audit: Vec::new(),
            audit_ids: HashMap::new(),
            audit_aggregates: HashMap::new(),
        }
    }
}

impl NodeData {
    /// A snapshot of the node's state.
    pub(crate) fn state(&self) -> NodeState {
        NodeState {
            node_id: self.node_id.clone(),
            hlc: self.hlc,
            cursor: self.cursor,
            pending: len_u64(self.outbox.len()),
            reviews: len_u64(self.reviews.len()),
            confirmed_head: self
                .confirmed
                .last_key_value()
                .map_or(Seq::ZERO, |(seq, _)| *seq),
        }
    }

    /// Apply `write` if all of it is valid; otherwise change nothing.
    pub(crate) fn commit(&mut self, write: NodeWrite) -> Result<CommitSummary, Error> {
        self.check(&write)?;
        Ok(self.apply(write))
    }

    /// Validate `write` against the current state, following the order of application, so
    /// that [`NodeData::apply`] cannot fail.
    fn check(&self, write: &NodeWrite) -> Result<(), Error> {
        if let (Some(new), Some(old)) = (&write.node_id, &self.node_id)
            && new != old
        {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("node id is already {old}; it cannot change to {new}"),
            ));
        }

        // Outbox additions.
        let removed: HashSet<&EventId> = write.remove_pending.iter().collect();
        let confirming: HashSet<&EventId> = write.confirm.iter().map(|e| &e.event.id).collect();
        let mut new_pending: HashSet<&EventId> = HashSet::new();
        for event in &write.put_pending {
            event
                .validate()
                .map_err(|e| e.context(format!("pending event {}", event.id)))?;
            if self.confirmed_ids.contains_key(&event.id) || confirming.contains(&event.id) {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "event {} is confirmed; it cannot go back to the outbox",
                        event.id
                    ),
                ));
            }
            let still_pending =
                self.outbox_ids.contains_key(&event.id) && !removed.contains(&event.id);
            if !still_pending {
                new_pending.insert(&event.id);
            }
        }
        self.next_ordinal
            .checked_add(len_u64(new_pending.len()))
            .ok_or_else(|| Error::new(ErrorKind::LimitExceeded, "outbox ordinals exhausted"))?;

        // Confirmed events: the ones that will be recorded must not clash on `seq`.
        let mut confirm_ids: HashSet<&EventId> = HashSet::new();
        let mut confirm_seqs: HashMap<Seq, &EventId> = HashMap::new();
        for stored in &write.confirm {
            let id = &stored.event.id;
            stored
                .event
                .validate()
                .map_err(|e| e.context(format!("confirmed event {id}")))?;
            if stored.seq == Seq::ZERO || stored.aggregate_version == 0 {
                return Err(Error::invalid_input(format!(
                    "confirmed event {id} has seq {} and aggregate version {}; both start at 1",
                    stored.seq, stored.aggregate_version
                )));
            }
            if self.confirmed_ids.contains_key(id) || !confirm_ids.insert(id) {
                continue; // skipped when applied
            }
            let holder = self
                .confirmed
                .get(&stored.seq)
                .map(|e| &e.event.id)
                .or_else(|| confirm_seqs.get(&stored.seq).copied());
            if let Some(holder) = holder {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "cannot confirm event {id} at seq {}: event {holder} is already there",
                        stored.seq
                    ),
                ));
            }
            confirm_seqs.insert(stored.seq, id);
        }

        if let Some(cursor) = write.cursor
            && cursor < self.cursor
        {
            return Err(Error::invalid_input(format!(
                "the pull cursor cannot move backwards from {} to {cursor}",
                self.cursor
            )));
        }

        // Review queue: additions, then removals (which may remove an entry added just before).
        let mut new_reviews: HashSet<&str> = HashSet::new();
        for entry in &write.put_reviews {
            if entry.id.is_empty() {
                return Err(Error::invalid_input("review entry id must not be empty"));
            }
            if self.review_ids.contains_key(&entry.id) || !new_reviews.insert(&entry.id) {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("review entry {} already exists", entry.id),
                ));
            }
        }
        self.next_review
            .checked_add(len_u64(new_reviews.len()))
            .ok_or_else(|| Error::new(ErrorKind::LimitExceeded, "review numbers exhausted"))?;
        let mut removed_reviews: HashSet<&str> = HashSet::new();
        for id in &write.remove_reviews {
            let exists = self.review_ids.contains_key(id) || new_reviews.contains(id.as_str());
            if !exists || !removed_reviews.insert(id) {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("review entry {id} is not in the review queue"),
                ));
            }
        }

        let mut new_audit: HashSet<&str> = HashSet::new();
        for record in &write.audit {
            if record.id.is_empty() {
                return Err(Error::invalid_input("audit record id must not be empty"));
            }
            if self.audit_ids.contains_key(&record.id) || !new_audit.insert(&record.id) {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("audit record {} already exists", record.id),
                ));
            }
        }
        Ok(())
    }

    /// Apply a write that [`NodeData::check`] accepted, in the documented order.
    fn apply(&mut self, write: NodeWrite) -> CommitSummary {
        let mut summary = CommitSummary::default();
        if let Some(node_id) = write.node_id {
            self.node_id = Some(node_id);
        }
        if let Some(hlc) = write.hlc {
            self.hlc = self.hlc.max(hlc);
        }
        for id in &write.remove_pending {
            self.remove_pending(id);
        }
        for event in write.put_pending {
            self.put_pending(event);
        }
        for stored in write.confirm {
            let id = &stored.event.id;
            if self.confirmed_ids.contains_key(id) {
                continue;
            }
            self.remove_pending(id);
            let version = self
                .confirmed_versions
                .entry(stored.event.aggregate_id.clone())
                .or_default();
            *version = (*version).max(stored.aggregate_version);
            self.confirmed_ids.insert(id.clone(), stored.seq);
            self.confirmed.insert(stored.seq, stored);
            summary.newly_confirmed = summary.newly_confirmed.saturating_add(1);
        }
        if let Some(cursor) = write.cursor {
            self.cursor = cursor;
        }
        for entry in write.put_reviews {
            let number = self.next_review;
            self.next_review = number.saturating_add(1);
            self.review_ids.insert(entry.id.clone(), number);
            self.reviews.insert(number, entry);
        }
        for id in &write.remove_reviews {
            if let Some(number) = self.review_ids.remove(id) {
                self.reviews.remove(&number);
            }
        }
        for record in write.audit {
            let index = self.audit.len();
            self.audit_ids.insert(record.id.clone(), index);
            self.audit_aggregates
                .entry(record.conflict.aggregate_id.clone())
                .or_default()
                .push(index);
            self.audit.push(record);
        }
        summary
    }

    fn remove_pending(&mut self, id: &EventId) {
        let Some(ordinal) = self.outbox_ids.remove(id) else {
            return;
        };
        if let Some(event) = self.outbox.remove(&ordinal) {
            self.unindex_pending(&event.aggregate_id, ordinal);
        }
    }

    fn put_pending(&mut self, event: Event) {
        let aggregate = event.aggregate_id.clone();
        let ordinal = match self.outbox_ids.get(&event.id) {
            Some(&ordinal) => ordinal,
            None => {
                let ordinal = self.next_ordinal;
                self.next_ordinal = ordinal.saturating_add(1);
                self.outbox_ids.insert(event.id.clone(), ordinal);
                ordinal
            }
        };
        if let Some(old) = self.outbox.insert(ordinal, event) {
            self.unindex_pending(&old.aggregate_id, ordinal);
        }
        self.outbox_aggregates
            .entry(aggregate)
            .or_default()
            .insert(ordinal);
    }

    fn unindex_pending(&mut self, aggregate: &AggregateId, ordinal: u64) {
        if let Some(ordinals) = self.outbox_aggregates.get_mut(aggregate) {
            ordinals.remove(&ordinal);
            if ordinals.is_empty() {
                self.outbox_aggregates.remove(aggregate);
            }
        }
    }

    /// Pending events with `ordinal > after`, at most `limit`.
    pub(crate) fn pending(&self, after: u64, limit: usize) -> Vec<PendingEvent> {
        self.outbox
            .range((Bound::Excluded(after), Bound::Unbounded))
            .take(limit)
            .map(|(&ordinal, event)| PendingEvent {
                ordinal,
                event: event.clone(),
            })
            .collect()
    }

    /// Every pending event of one aggregate, in outbox order.
    pub(crate) fn pending_for(&self, aggregate_id: &AggregateId) -> Vec<PendingEvent> {
        let Some(ordinals) = self.outbox_aggregates.get(aggregate_id) else {
            return Vec::new();
        };
        ordinals
            .iter()
            .filter_map(|ordinal| {
                self.outbox.get(ordinal).map(|event| PendingEvent {
                    ordinal: *ordinal,
                    event: event.clone(),
                })
            })
            .collect()
    }

    /// Confirmed events with `seq > after`, at most `limit`.
    pub(crate) fn confirmed(&self, after: Seq, limit: usize) -> Vec<StoredEvent> {
        self.confirmed
            .range((Bound::Excluded(after), Bound::Unbounded))
            .take(limit)
            .map(|(_, stored)| stored.clone())
            .collect()
    }

    /// Confirmed version and pending count of one aggregate.
    pub(crate) fn aggregate_head(&self, aggregate_id: &AggregateId) -> AggregateHead {
        AggregateHead {
            confirmed_version: self
                .confirmed_versions
                .get(aggregate_id)
                .copied()
                .unwrap_or(0),
            pending: self
                .outbox_aggregates
                .get(aggregate_id)
                .map_or(0, |ordinals| len_u64(ordinals.len())),
        }
    }

    /// Review-queue entries, oldest first, at most `limit`.
    pub(crate) fn reviews(&self, limit: usize) -> Vec<ReviewEntry> {
        self.reviews.values().take(limit).cloned().collect()
    }

    /// One review-queue entry.
    pub(crate) fn review(&self, id: &str) -> Option<ReviewEntry> {
        let number = self.review_ids.get(id)?;
        self.reviews.get(number).cloned()
    }

    /// Audit records, oldest first. An `after` id that is not in the trail is an error: it
    /// cannot be a cursor this store handed out, as records are never removed.
    pub(crate) fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, Error> {
        let limit = if query.limit == 0 {
            DEFAULT_AUDIT_LIMIT
        } else {
            query.limit
        };
        let start = match &query.after {
            None => 0,
            Some(id) => match self.audit_ids.get(id) {
                Some(index) => index.saturating_add(1),
                None => {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("audit record {id} (the `after` cursor) is not in the trail"),
                    ));
                }
            },
        };
        let records = match &query.aggregate_id {
            None => self
                .audit
                .get(start..)
                .unwrap_or_default()
                .iter()
                .take(limit)
                .cloned()
                .collect(),
            Some(aggregate) => {
                let indexes = self
                    .audit_aggregates
                    .get(aggregate)
                    .map_or(&[][..], Vec::as_slice);
                let from = indexes.partition_point(|&i| i < start);
                indexes[from..]
                    .iter()
                    .take(limit)
                    .filter_map(|&i| self.audit.get(i).cloned())
                    .collect()
            }
        };
        Ok(records)
    }
}
