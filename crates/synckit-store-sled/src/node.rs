//! The node role over one sled tree: validated, atomic commits and the node's queries.
//!
//! A commit is checked against the tree first (mirroring the memory store's rules and order),
//! then turned into one sled batch, so a refused write changes nothing and an accepted one is
//! applied whole or, after a crash, not at all.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;

use sled::{Batch, Tree};
use synckit_types::{
    AggregateHead, AggregateId, AuditQuery, AuditRecord, CommitSummary, Error, ErrorKind, Event,
    EventId, Hlc, NodeId, NodeState, NodeWrite, PendingEvent, ReviewEntry, Seq, StoredEvent,
};

use crate::chunks::Chunks;
use crate::codec::{
    CHUNK_EVENTS, Key, NODE_AUDIT, NODE_AUDIT_AGGREGATE, NODE_AUDIT_ID, NODE_CONFIRMED,
    NODE_CONFIRMED_CHUNK, NODE_CONFIRMED_ID, NODE_CONFIRMED_ID_RUN, NODE_META, NODE_OUTBOX,
    NODE_OUTBOX_AGGREGATE, NODE_OUTBOX_AGGREGATE_CHUNK, NODE_OUTBOX_CHUNK, NODE_OUTBOX_COUNT,
    NODE_OUTBOX_ID, NODE_OUTBOX_ID_RUN, NODE_REVIEW, NODE_REVIEW_ID, NODE_VERSION, decode_event,
    decode_json, decode_stored, encode_event, encode_json, encode_stored, key_suffix_u64, read_u64,
    u64_bytes,
};
use crate::error::{corrupted, sled_error};
use crate::idindex::{self, IdRuns, RunValue};

type Result<T> = std::result::Result<T, Error>;

/// Page size of an audit query with `limit: 0`.
const DEFAULT_AUDIT_LIMIT: usize = 100;

/// The node's small, always-needed state: one record, rewritten by every commit and kept in
/// memory between commits.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct NodeMeta {
    node_id: Option<NodeId>,
    hlc: Hlc,
    cursor: Seq,
    /// The ordinal the next new pending event gets; ordinals are never reused.
    next_ordinal: u64,
    /// Insertion number of the next review entry.
    next_review: u64,
    /// Insertion number of the next audit record.
    next_audit: u64,
    /// Number of pending events.
    pending: u64,
    /// Number of review entries.
    reviews: u64,
    /// Highest confirmed `seq`.
    confirmed_head: Seq,
}

impl Default for NodeMeta {
    fn default() -> Self {
        NodeMeta {
            node_id: None,
            hlc: Hlc::default(),
            cursor: Seq::ZERO,
            next_ordinal: 1,
            next_review: 1,
            next_audit: 1,
            pending: 0,
            reviews: 0,
            confirmed_head: Seq::ZERO,
        }
    }
}

impl NodeMeta {
    /// The node's state as the trait reports it.
    pub(crate) fn state(&self) -> NodeState {
        NodeState {
            node_id: self.node_id.clone(),
            hlc: self.hlc,
            cursor: self.cursor,
            pending: self.pending,
            reviews: self.reviews,
            confirmed_head: self.confirmed_head,
        }
    }
}

/// The stored meta record, or the defaults of a fresh node.
pub(crate) fn load_meta(tree: &Tree) -> Result<NodeMeta> {
    match tree
        .get([NODE_META])
        .map_err(|e| sled_error("loading the node state", e))?
    {
        None => Ok(NodeMeta::default()),
        Some(bytes) => {
            let meta: NodeMeta = decode_json(&bytes, &"the node state record")?;
            // The confirmed head is also the last confirmed seq: a cheap consistency check.
            let last = Seq(confirmed_log().last(tree)?.unwrap_or(0));
            if last != meta.confirmed_head {
                return Err(corrupted(format!(
                    "the node state says the confirmed log ends at {}, but it ends at {last}",
                    meta.confirmed_head
                )));
            }
            Ok(meta)
        }
    }
}

fn get(tree: &Tree, key: &[u8], what: &str) -> Result<Option<sled::IVec>> {
    tree.get(key).map_err(|e| sled_error(what, e))
}

/// The prefix of the confirmed ids' runs (see `idindex`).
fn confirmed_ids_prefix() -> Key {
    Key::new(NODE_CONFIRMED_ID_RUN)
}

/// The runs of confirmed ids covering every id `write` confirms or puts in the outbox.
fn load_confirmed_ids(tree: &Tree, write: &NodeWrite) -> Result<IdRuns> {
    let ids: Vec<&[u8]> = write
        .confirm
        .iter()
        .map(|e| e.event.id.as_str().as_bytes())
        .chain(write.put_pending.iter().map(|e| e.id.as_str().as_bytes()))
        .collect();
    IdRuns::load(tree, &confirmed_ids_prefix(), &ids)
}

/// Move schema 1's confirmed-id keys (one per event) into runs. Returns how many moved.
pub(crate) fn migrate_confirmed_ids(tree: &Tree) -> Result<u64> {
    idindex::migrate_keys(tree, &[NODE_CONFIRMED_ID], &confirmed_ids_prefix())
}

/// Where a pending event sits: its outbox ordinal and its aggregate. Format 2 of an id run:
/// `[ordinal: u64 BE] [aggregate length: u8] [aggregate id]`.
impl RunValue for (u64, AggregateId) {
    const FORMAT: u8 = 2;

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        let aggregate = self.1.as_str().as_bytes();
        // Aggregate ids are at most 128 bytes, so this holds for any valid id.
        let len = u8::try_from(aggregate.len()).map_err(|_| {
            Error::internal(format!("an aggregate id of {} bytes", aggregate.len()))
        })?;
        out.extend_from_slice(&u64_bytes(self.0));
        out.push(len);
        out.extend_from_slice(aggregate);
        Ok(())
    }

    fn decode_from(input: &mut &[u8]) -> Option<(u64, AggregateId)> {
        let (ordinal, rest) = input.split_first_chunk::<8>()?;
        let (&len, rest) = rest.split_first()?;
        let (aggregate, rest) = rest.split_at_checked(usize::from(len))?;
        let aggregate = AggregateId::new(std::str::from_utf8(aggregate).ok()?).ok()?;
        *input = rest;
        Some((u64::from_be_bytes(*ordinal), aggregate))
    }
}

/// The prefix of the outbox ids' runs: each pending id with its ordinal and aggregate.
fn outbox_ids_prefix() -> Key {
    Key::new(NODE_OUTBOX_ID_RUN)
}

/// The runs of outbox ids covering every id `write` removes from, puts in or confirms out of
/// the outbox.
fn load_outbox_ids(tree: &Tree, write: &NodeWrite) -> Result<IdRuns<(u64, AggregateId)>> {
    let ids: Vec<&[u8]> = write
        .remove_pending
        .iter()
        .map(|id| id.as_str().as_bytes())
        .chain(write.put_pending.iter().map(|e| e.id.as_str().as_bytes()))
        .chain(write.confirm.iter().map(|e| e.event.id.as_str().as_bytes()))
        .collect();
    IdRuns::load(tree, &outbox_ids_prefix(), &ids)
}

/// Schema 3 -> 4: move the outbox ids (one key per pending event) into runs. Returns how many
/// moved.
pub(crate) fn migrate_outbox_ids(tree: &Tree) -> Result<u64> {
    idindex::migrate_keys_with(tree, &[NODE_OUTBOX_ID], &outbox_ids_prefix(), |value| {
        decode_pending_value(value, &"an outbox id entry").ok()
    })
}

/// The confirmed log: event records by seq.
fn confirmed_log() -> Chunks {
    Chunks::new(
        Key::new(NODE_CONFIRMED_CHUNK),
        "the confirmed log",
        CHUNK_EVENTS,
    )
}

/// The outbox: event records by ordinal.
fn outbox() -> Chunks {
    Chunks::new(Key::new(NODE_OUTBOX_CHUNK), "the outbox", CHUNK_EVENTS)
}

/// Most ordinals in one chunk of an aggregate's outbox index (12 bytes each).
const INDEX_CHUNK_ENTRIES: usize = 64;

/// The ordinals of `aggregate`'s pending events (empty records).
fn outbox_index(aggregate: &AggregateId) -> Result<Chunks> {
    let prefix = Key::new(NODE_OUTBOX_AGGREGATE_CHUNK).part(aggregate.as_str().as_bytes())?;
    Ok(Chunks::new(prefix, "the outbox index", INDEX_CHUNK_ENTRIES))
}

/// Schema 2 -> 3: the outbox and its aggregate index move from one key per event into chunks,
/// and the confirmed log likewise. Each step is atomic and can run again. Returns how many
/// events moved.
pub(crate) fn migrate_to_chunks(tree: &Tree) -> Result<u64> {
    let mut moved = confirmed_log().migrate_from(tree, &Key::new(NODE_CONFIRMED))?;
    moved += outbox().migrate_from(tree, &Key::new(NODE_OUTBOX))?;
    // The aggregate index, one aggregate per step, rebuilt from the outbox id index (whose
    // values name ordinal and aggregate).
    let mut by_aggregate: BTreeMap<AggregateId, Vec<u64>> = BTreeMap::new();
    for item in tree.scan_prefix([NODE_OUTBOX_ID]) {
        let (key, value) = item.map_err(|e| sled_error("migrating the outbox index", e))?;
        let (ordinal, aggregate) = decode_pending_value(&value, &format_args!("{key:?}"))?;
        by_aggregate.entry(aggregate).or_default().push(ordinal);
    }
    for (aggregate, mut ordinals) in by_aggregate {
        ordinals.sort_unstable();
        let entries = ordinals.into_iter().map(|o| (o, Vec::new())).collect();
        let mut batch = Batch::default();
        outbox_index(&aggregate)?.replace_all(tree, &mut batch, &entries)?;
        let old = Key::new(NODE_OUTBOX_AGGREGATE).part(aggregate.as_str().as_bytes())?;
        for key in tree.scan_prefix(old.bytes()).keys() {
            batch.remove(key.map_err(|e| sled_error("migrating the outbox index", e))?);
        }
        tree.apply_batch(batch)
            .map_err(|e| sled_error("migrating the outbox index", e))?;
    }
    // Index keys of events no longer pending (there should be none).
    let mut batch = Batch::default();
    for key in tree.scan_prefix([NODE_OUTBOX_AGGREGATE]).keys() {
        batch.remove(key.map_err(|e| sled_error("migrating the outbox index", e))?);
    }
    tree.apply_batch(batch)
        .map_err(|e| sled_error("migrating the outbox index", e))?;
    Ok(moved)
}

fn outbox_count_key(aggregate: &AggregateId) -> Vec<u8> {
    Key::new(NODE_OUTBOX_COUNT)
        .tail(aggregate.as_str().as_bytes())
        .into_vec()
}

/// How many pending events `aggregate` has, as stored.
fn stored_outbox_count(tree: &Tree, aggregate: &AggregateId) -> Result<u64> {
    get(
        tree,
        &outbox_count_key(aggregate),
        "reading an outbox count",
    )?
    .map_or(Ok(0), |v| {
        read_u64(&v, &format_args!("outbox count of {aggregate}"))
    })
}

/// Schema 2 -> 3: write each aggregate's pending count, counted from the outbox id index
/// (whose values name the aggregate). Replaces any counts already there, so it can run again.
pub(crate) fn migrate_outbox_counts(tree: &Tree) -> Result<u64> {
    let mut counts: HashMap<AggregateId, u64> = HashMap::new();
    for item in tree.scan_prefix([NODE_OUTBOX_ID]) {
        let (key, value) = item.map_err(|e| sled_error("counting the outbox", e))?;
        let (_, aggregate) = decode_pending_value(&value, &format_args!("{key:?}"))?;
        *counts.entry(aggregate).or_insert(0) += 1;
    }
    let mut batch = Batch::default();
    for item in tree.scan_prefix([NODE_OUTBOX_COUNT]).keys() {
        batch.remove(item.map_err(|e| sled_error("reading the outbox counts", e))?);
    }
    let aggregates = len_u64(counts.len());
    for (aggregate, count) in counts {
        batch.insert(outbox_count_key(&aggregate), &u64_bytes(count)[..]);
    }
    tree.apply_batch(batch)
        .map_err(|e| sled_error("writing the outbox counts", e))?;
    Ok(aggregates)
}

fn version_key(aggregate: &AggregateId) -> Vec<u8> {
    Key::new(NODE_VERSION)
        .tail(aggregate.as_str().as_bytes())
        .into_vec()
}

fn review_id_key(id: &str) -> Vec<u8> {
    Key::new(NODE_REVIEW_ID).tail(id.as_bytes()).into_vec()
}

fn review_key(number: u64) -> Vec<u8> {
    Key::new(NODE_REVIEW).num(number).into_vec()
}

fn audit_id_key(id: &str) -> Vec<u8> {
    Key::new(NODE_AUDIT_ID).tail(id.as_bytes()).into_vec()
}

fn audit_key(number: u64) -> Vec<u8> {
    Key::new(NODE_AUDIT).num(number).into_vec()
}

fn audit_aggregate_prefix(aggregate: &AggregateId) -> Result<Key> {
    Key::new(NODE_AUDIT_AGGREGATE).part(aggregate.as_str().as_bytes())
}

fn is_confirmed(confirmed_ids: &IdRuns, id: &EventId) -> bool {
    confirmed_ids.get(id.as_str().as_bytes()).is_some()
}

/// A schema-3 outbox id entry's value: the ordinal and the aggregate.
fn decode_pending_value(value: &[u8], what: &dyn std::fmt::Display) -> Result<(u64, AggregateId)> {
    let ordinal = read_u64(value, what)?;
    let aggregate = std::str::from_utf8(&value[8..])
        .ok()
        .and_then(|a| AggregateId::new(a).ok())
        .ok_or_else(|| corrupted(format!("{what}: the aggregate id is malformed")))?;
    Ok((ordinal, aggregate))
}

fn review_number(tree: &Tree, id: &str) -> Result<Option<u64>> {
    get(tree, &review_id_key(id), "looking up a review id")?
        .map(|v| read_u64(&v, &format_args!("review entry {id}")))
        .transpose()
}

fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// Validate `write` against the stored state, in the order it would be applied, so that
/// [`prepare_commit`] cannot fail on a rule. Mirrors the memory store's checks and error kinds.
fn check(
    tree: &Tree,
    confirmed_ids: &IdRuns,
    outbox_ids: &IdRuns<(u64, AggregateId)>,
    meta: &NodeMeta,
    write: &NodeWrite,
) -> Result<()> {
    if let (Some(new), Some(old)) = (&write.node_id, &meta.node_id)
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
        if confirming.contains(&event.id) || is_confirmed(confirmed_ids, &event.id) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "event {} is confirmed; it cannot go back to the outbox",
                    event.id
                ),
            ));
        }
        let still_pending =
            !removed.contains(&event.id) && outbox_ids.get(event.id.as_str().as_bytes()).is_some();
        if !still_pending {
            new_pending.insert(&event.id);
        }
    }
    meta.next_ordinal
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
        if !confirm_ids.insert(id) || is_confirmed(confirmed_ids, id) {
            continue; // skipped when applied
        }
        // No confirmed event lies past the confirmed head (checked at open), so only seqs at
        // or below it need a look.
        let stored_holder = if stored.seq > meta.confirmed_head {
            None
        } else {
            match confirmed_log().get(tree, stored.seq.get())? {
                Some(bytes) => {
                    let what = format_args!("confirmed event at seq {}", stored.seq);
                    Some(decode_stored(stored.seq, &bytes, &what)?.event.id)
                }
                None => None,
            }
        };
        let holder =
            stored_holder.or_else(|| confirm_seqs.get(&stored.seq).map(|id| (*id).clone()));
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
        && cursor < meta.cursor
    {
        return Err(Error::invalid_input(format!(
            "the pull cursor cannot move backwards from {} to {cursor}",
            meta.cursor
        )));
    }

    // Review queue: additions, then removals (which may remove an entry added just before).
    let mut new_reviews: HashSet<&str> = HashSet::new();
    for entry in &write.put_reviews {
        if entry.id.is_empty() {
            return Err(Error::invalid_input("review entry id must not be empty"));
        }
        if !new_reviews.insert(&entry.id) || review_number(tree, &entry.id)?.is_some() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("review entry {} already exists", entry.id),
            ));
        }
    }
    meta.next_review
        .checked_add(len_u64(new_reviews.len()))
        .ok_or_else(|| Error::new(ErrorKind::LimitExceeded, "review numbers exhausted"))?;
    let mut removed_reviews: HashSet<&str> = HashSet::new();
    for id in &write.remove_reviews {
        let exists = new_reviews.contains(id.as_str()) || review_number(tree, id)?.is_some();
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
        let exists = tree
            .contains_key(audit_id_key(&record.id))
            .map_err(|e| sled_error("looking up an audit id", e))?;
        if exists || !new_audit.insert(&record.id) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("audit record {} already exists", record.id),
            ));
        }
    }
    Ok(())
}

/// The batch under construction, with the state it changes as seen so far.
struct Tx<'a> {
    tree: &'a Tree,
    batch: Batch,
    meta: NodeMeta,
    /// Outbox changes of this write: `Some` pending at (ordinal, aggregate), `None` removed.
    outbox: HashMap<EventId, Option<(u64, AggregateId)>>,
    confirmed: HashSet<EventId>,
    /// Records of the events this write confirms, by seq.
    confirmed_records: BTreeMap<u64, Option<Vec<u8>>>,
    /// Outbox records this write puts (`Some`) or removes (`None`), by ordinal.
    outbox_changes: BTreeMap<u64, Option<Vec<u8>>>,
    /// Outbox index changes of each aggregate, by ordinal.
    index_changes: HashMap<AggregateId, BTreeMap<u64, Option<Vec<u8>>>>,
    /// The stored confirmed ids this write can meet; takes the ones it confirms.
    confirmed_ids: IdRuns,
    /// The stored outbox ids this write can meet; takes its outbox changes.
    outbox_ids: IdRuns<(u64, AggregateId)>,
    versions: HashMap<AggregateId, u64>,
    /// Pending counts of the aggregates this write touches, as they will be.
    counts: HashMap<AggregateId, u64>,
    reviews: HashMap<String, Option<u64>>,
}

impl Tx<'_> {
    /// Count one pending event more (`up`) or fewer for `aggregate`.
    fn count(&mut self, aggregate: &AggregateId, up: bool) -> Result<()> {
        let count = match self.counts.get(aggregate) {
            Some(&count) => count,
            None => stored_outbox_count(self.tree, aggregate)?,
        };
        let count = if up {
            count.saturating_add(1)
        } else {
            count.saturating_sub(1)
        };
        self.counts.insert(aggregate.clone(), count);
        Ok(())
    }

    /// Write the changed pending counts into the batch.
    fn write_counts(&mut self) {
        for (aggregate, &count) in &self.counts {
            let key = outbox_count_key(aggregate);
            if count == 0 {
                self.batch.remove(key);
            } else {
                self.batch.insert(key, &u64_bytes(count)[..]);
            }
        }
    }

    /// Add (`present`) or remove `ordinal` in the outbox index of `aggregate`.
    fn index_change(&mut self, aggregate: &AggregateId, ordinal: u64, present: bool) {
        self.index_changes
            .entry(aggregate.clone())
            .or_default()
            .insert(ordinal, present.then(Vec::new));
    }

    /// Write the chunked maps' changes into the batch.
    fn write_chunks(&mut self) -> Result<()> {
        let confirmed = std::mem::take(&mut self.confirmed_records);
        confirmed_log().write(self.tree, &mut self.batch, confirmed)?;
        let changes = std::mem::take(&mut self.outbox_changes);
        outbox().write(self.tree, &mut self.batch, changes)?;
        for (aggregate, changes) in std::mem::take(&mut self.index_changes) {
            outbox_index(&aggregate)?.write(self.tree, &mut self.batch, changes)?;
        }
        Ok(())
    }

    fn pending_of(&self, id: &EventId) -> Result<Option<(u64, AggregateId)>> {
        match self.outbox.get(id) {
            Some(entry) => Ok(entry.clone()),
            None => Ok(self.outbox_ids.get(id.as_str().as_bytes()).cloned()),
        }
    }

    fn remove_pending(&mut self, id: &EventId) -> Result<()> {
        let Some((ordinal, aggregate)) = self.pending_of(id)? else {
            return Ok(());
        };
        self.outbox_changes.insert(ordinal, None);
        self.outbox_ids.remove(id.as_str().as_bytes())?;
        self.index_change(&aggregate, ordinal, false);
        self.count(&aggregate, false)?;
        self.outbox.insert(id.clone(), None);
        self.meta.pending = self.meta.pending.saturating_sub(1);
        Ok(())
    }

    fn put_pending(&mut self, event: &Event) -> Result<()> {
        let ordinal = match self.pending_of(&event.id)? {
            Some((ordinal, old_aggregate)) => {
                if old_aggregate != event.aggregate_id {
                    self.index_change(&old_aggregate, ordinal, false);
                    self.count(&old_aggregate, false)?;
                    self.count(&event.aggregate_id, true)?;
                }
                ordinal
            }
            None => {
                let ordinal = self.meta.next_ordinal;
                self.meta.next_ordinal = ordinal.saturating_add(1);
                self.meta.pending = self.meta.pending.saturating_add(1);
                self.count(&event.aggregate_id, true)?;
                ordinal
            }
        };
        self.outbox_changes
            .insert(ordinal, Some(encode_event(event)?));
        self.outbox_ids.add(
            event.id.as_str().as_bytes(),
            (ordinal, event.aggregate_id.clone()),
        )?;
        self.index_change(&event.aggregate_id, ordinal, true);
        self.outbox.insert(
            event.id.clone(),
            Some((ordinal, event.aggregate_id.clone())),
        );
        Ok(())
    }

    fn confirmed_version(&self, aggregate: &AggregateId) -> Result<u64> {
        if let Some(&v) = self.versions.get(aggregate) {
            return Ok(v);
        }
        get(
            self.tree,
            &version_key(aggregate),
            "reading a confirmed version",
        )?
        .map_or(Ok(0), |v| {
            read_u64(&v, &format_args!("confirmed version of {aggregate}"))
        })
    }

    fn confirm(&mut self, stored: &StoredEvent) -> Result<bool> {
        let id = &stored.event.id;
        if self.confirmed.contains(id) || is_confirmed(&self.confirmed_ids, id) {
            return Ok(false);
        }
        self.remove_pending(id)?;
        let aggregate = &stored.event.aggregate_id;
        let version = self
            .confirmed_version(aggregate)?
            .max(stored.aggregate_version);
        self.versions.insert(aggregate.clone(), version);
        self.batch
            .insert(version_key(aggregate), &u64_bytes(version)[..]);
        self.confirmed_records.insert(
            stored.seq.get(),
            Some(encode_stored(
                &stored.event,
                stored.aggregate_version,
                stored.recorded_at,
            )?),
        );
        self.confirmed_ids
            .add(id.as_str().as_bytes(), stored.seq.get())?;
        self.confirmed.insert(id.clone());
        self.meta.confirmed_head = self.meta.confirmed_head.max(stored.seq);
        Ok(true)
    }

    fn put_review(&mut self, entry: &ReviewEntry) -> Result<()> {
        let number = self.meta.next_review;
        self.meta.next_review = number.saturating_add(1);
        self.meta.reviews = self.meta.reviews.saturating_add(1);
        self.batch
            .insert(review_key(number), encode_json(entry, "a review entry")?);
        self.batch
            .insert(review_id_key(&entry.id), &u64_bytes(number)[..]);
        self.reviews.insert(entry.id.clone(), Some(number));
        Ok(())
    }

    fn remove_review(&mut self, id: &str) -> Result<()> {
        let number = match self.reviews.get(id) {
            Some(entry) => *entry,
            None => review_number(self.tree, id)?,
        };
        if let Some(number) = number {
            self.batch.remove(review_key(number));
            self.batch.remove(review_id_key(id));
            self.meta.reviews = self.meta.reviews.saturating_sub(1);
            self.reviews.insert(id.to_owned(), None);
        }
        Ok(())
    }

    fn put_audit(&mut self, record: &AuditRecord) -> Result<()> {
        let number = self.meta.next_audit;
        self.meta.next_audit = number.saturating_add(1);
        self.batch
            .insert(audit_key(number), encode_json(record, "an audit record")?);
        self.batch
            .insert(audit_id_key(&record.id), &u64_bytes(number)[..]);
        self.batch.insert(
            audit_aggregate_prefix(&record.conflict.aggregate_id)?
                .num(number)
                .into_vec(),
            &[][..],
        );
        Ok(())
    }
}

/// A checked write turned into one batch, and the meta it leaves behind.
pub(crate) struct PreparedCommit {
    /// The writes, including the new meta record.
    pub(crate) batch: Batch,
    /// The meta after the commit, to keep in memory once the batch is durable.
    pub(crate) meta: NodeMeta,
    /// What the caller is told.
    pub(crate) summary: CommitSummary,
}

/// Check `write` and build its batch, in the documented order of application.
pub(crate) fn prepare_commit(
    tree: &Tree,
    meta: &NodeMeta,
    write: &NodeWrite,
) -> Result<PreparedCommit> {
    let confirmed_ids = load_confirmed_ids(tree, write)?;
    let outbox_ids = load_outbox_ids(tree, write)?;
    check(tree, &confirmed_ids, &outbox_ids, meta, write)?;
    let mut tx = Tx {
        tree,
        batch: Batch::default(),
        meta: meta.clone(),
        outbox: HashMap::new(),
        confirmed: HashSet::new(),
        confirmed_records: BTreeMap::new(),
        outbox_changes: BTreeMap::new(),
        index_changes: HashMap::new(),
        confirmed_ids,
        outbox_ids,
        versions: HashMap::new(),
        counts: HashMap::new(),
        reviews: HashMap::new(),
    };
    let mut summary = CommitSummary::default();
    if let Some(node_id) = &write.node_id {
        tx.meta.node_id = Some(node_id.clone());
    }
    if let Some(hlc) = write.hlc {
        tx.meta.hlc = tx.meta.hlc.max(hlc);
    }
    for id in &write.remove_pending {
        tx.remove_pending(id)?;
    }
    for event in &write.put_pending {
        tx.put_pending(event)?;
    }
    for stored in &write.confirm {
        if tx.confirm(stored)? {
            summary.newly_confirmed = summary.newly_confirmed.saturating_add(1);
        }
    }
    if let Some(cursor) = write.cursor {
        tx.meta.cursor = cursor;
    }
    for entry in &write.put_reviews {
        tx.put_review(entry)?;
    }
    for id in &write.remove_reviews {
        tx.remove_review(id)?;
    }
    for record in &write.audit {
        tx.put_audit(record)?;
    }
    tx.write_counts();
    tx.write_chunks()?;
    tx.confirmed_ids.write(&mut tx.batch)?;
    tx.outbox_ids.write(&mut tx.batch)?;
    tx.batch
        .insert(&[NODE_META][..], encode_json(&tx.meta, "the node state")?);
    Ok(PreparedCommit {
        batch: tx.batch,
        meta: tx.meta,
        summary,
    })
}

/// Pending events with `ordinal > after`, at most `limit`.
pub(crate) fn pending(tree: &Tree, after: u64, limit: usize) -> Result<Vec<PendingEvent>> {
    outbox()
        .read(tree, after, limit)?
        .into_iter()
        .map(|(ordinal, record)| {
            let event = decode_event(&record, &format_args!("outbox ordinal {ordinal}"))?;
            Ok(PendingEvent { ordinal, event })
        })
        .collect()
}

/// Every pending event of one aggregate, in outbox order.
pub(crate) fn pending_for(tree: &Tree, aggregate: &AggregateId) -> Result<Vec<PendingEvent>> {
    let ordinals: Vec<u64> = outbox_index(aggregate)?
        .read(tree, 0, usize::MAX)?
        .into_iter()
        .map(|(ordinal, _)| ordinal)
        .collect();
    let records = outbox().get_many(tree, &ordinals)?;
    ordinals
        .into_iter()
        .zip(records)
        .map(|(ordinal, record)| {
            let record = record.ok_or_else(|| {
                corrupted(format!(
                    "outbox index of {aggregate}: ordinal {ordinal} is indexed but not in the \
                     outbox"
                ))
            })?;
            let event = decode_event(&record, &format_args!("outbox ordinal {ordinal}"))?;
            Ok(PendingEvent { ordinal, event })
        })
        .collect()
}

/// Confirmed events with `seq > after`, at most `limit`.
pub(crate) fn confirmed(tree: &Tree, after: Seq, limit: usize) -> Result<Vec<StoredEvent>> {
    confirmed_log()
        .read(tree, after.get(), limit)?
        .into_iter()
        .map(|(seq, record)| {
            let seq = Seq(seq);
            decode_stored(seq, &record, &format_args!("confirmed log, seq {seq}"))
        })
        .collect()
}

/// Confirmed version and pending count of one aggregate.
pub(crate) fn aggregate_head(tree: &Tree, aggregate: &AggregateId) -> Result<AggregateHead> {
    let confirmed_version = get(tree, &version_key(aggregate), "reading a confirmed version")?
        .map_or(Ok(0), |v| {
            read_u64(&v, &format_args!("confirmed version of {aggregate}"))
        })?;
    Ok(AggregateHead {
        confirmed_version,
        pending: stored_outbox_count(tree, aggregate)?,
    })
}

/// Review-queue entries, oldest first, at most `limit`.
pub(crate) fn reviews(tree: &Tree, limit: usize) -> Result<Vec<ReviewEntry>> {
    let mut out = Vec::new();
    for item in tree.scan_prefix([NODE_REVIEW]).take(limit) {
        let (key, value) = item.map_err(|e| sled_error("reading the review queue", e))?;
        let number = key_suffix_u64(&key, &"the review queue")?;
        out.push(decode_json(
            &value,
            &format_args!("review entry number {number}"),
        )?);
    }
    Ok(out)
}

/// One review-queue entry.
pub(crate) fn review(tree: &Tree, id: &str) -> Result<Option<ReviewEntry>> {
    let Some(number) = review_number(tree, id)? else {
        return Ok(None);
    };
    let bytes = get(tree, &review_key(number), "reading the review queue")?.ok_or_else(|| {
        corrupted(format!(
            "review entry {id} is indexed at {number} but missing"
        ))
    })?;
    decode_json(&bytes, &format_args!("review entry {id}")).map(Some)
}

/// Audit records, oldest first. An `after` id that is not in the trail is `NotFound`.
pub(crate) fn audit(tree: &Tree, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
    let limit = if query.limit == 0 {
        DEFAULT_AUDIT_LIMIT
    } else {
        query.limit
    };
    let after = match &query.after {
        None => 0,
        Some(id) => match get(tree, &audit_id_key(id), "looking up an audit id")? {
            Some(v) => read_u64(&v, &format_args!("audit record {id}"))?,
            None => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("audit record {id} (the `after` cursor) is not in the trail"),
                ));
            }
        },
    };
    let decode = |number: u64, bytes: &[u8]| -> Result<AuditRecord> {
        decode_json(bytes, &format_args!("audit record number {number}"))
    };
    let mut out = Vec::new();
    match &query.aggregate_id {
        None => {
            let range = (
                Bound::Excluded(audit_key(after)),
                Bound::Included(audit_key(u64::MAX)),
            );
            for item in tree.range(range).take(limit) {
                let (key, value) = item.map_err(|e| sled_error("reading the audit trail", e))?;
                let number = key_suffix_u64(&key, &"the audit trail")?;
                out.push(decode(number, &value)?);
            }
        }
        Some(aggregate) => {
            let prefix = audit_aggregate_prefix(aggregate)?;
            let range = (
                Bound::Excluded(prefix.with_num(after)),
                Bound::Included(prefix.with_num(u64::MAX)),
            );
            for item in tree.range(range).take(limit) {
                let (key, _) = item.map_err(|e| sled_error("reading the audit index", e))?;
                let number = key_suffix_u64(&key, &"the audit index")?;
                let bytes =
                    get(tree, &audit_key(number), "reading the audit trail")?.ok_or_else(|| {
                        corrupted(format!(
                            "audit record number {number} is indexed but missing"
                        ))
                    })?;
                out.push(decode(number, &bytes)?);
            }
        }
    }
    Ok(out)
}
