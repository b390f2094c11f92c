//! The hub role over one sled tree: append decisions and paged reads of a tenant's log.
//!
//! Every function here runs on a blocking thread while the caller holds the tenant's gate
//! (exclusively for appends), so the tree and the tenant's head cannot move underneath it.
//!
//! The log is stored in chunks of consecutive events keyed by their last `seq`; the aggregate
//! and kind indexes hold one record per aggregate (or kind) per append, also keyed by their
//! last `seq`; the id index keeps sorted runs of ids (see `idindex`). sled's cost is per key
//! written, so an append of 1,000 time-ordered events writes about 100 records, not four keys
//! per event (measured: four keys per event ran at a quarter of raw sled's rate). Keying by the last `seq` makes "the first
//! record that matters after cursor N" a single range seek.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;

use sled::{Batch, Tree};
use synckit_types::{
    AggregateId, AppendOutcome, AppendReport, AppendResult, Error, Event, EventId, MAX_KIND_LEN,
    Page, ReadRequest, RejectCode, Result, Seq, StoredEvent, TenantId,
};

use crate::codec::{
    Chunk, ChunkBuilder, HUB_AGGREGATE, HUB_EVENT, HUB_HEAD, HUB_ID, HUB_ID_RUN, HUB_KIND,
    INDEX_ENTRIES, Key, aggregate_last_version, decode_aggregate, decode_seqs, encode_aggregate,
    encode_seqs, key_suffix_u64, read_u64, u64_bytes,
};
use crate::error::{corrupted, sled_error};
use crate::idindex::{self, IdRuns};
use crate::seek::Seek;

/// Index entries a filtered read looks at before it returns a short page. A page whose filter
/// matches rarely would otherwise scan the whole log; the page's `next` then says how far it
/// got, which the `Page` contract allows ("skipped events count as read").
pub(crate) const SCAN_BUDGET: usize = 10_000;

/// The key prefixes of one tenant.
#[derive(Debug, Clone)]
pub(crate) struct TenantKeys {
    tenant: TenantId,
    events: Key,
    ids: Key,
    aggregates: Key,
    kinds: Key,
    head: Vec<u8>,
}

impl TenantKeys {
    /// The prefixes of `tenant`.
    pub(crate) fn new(tenant: &TenantId) -> Result<TenantKeys> {
        let t = tenant.as_str().as_bytes();
        Ok(TenantKeys {
            tenant: tenant.clone(),
            events: Key::new(HUB_EVENT).part(t)?,
            ids: Key::new(HUB_ID_RUN).part(t)?,
            aggregates: Key::new(HUB_AGGREGATE).part(t)?,
            kinds: Key::new(HUB_KIND).part(t)?,
            head: Key::new(HUB_HEAD).tail(t).into_vec(),
        })
    }

    /// The tenant these prefixes belong to.
    pub(crate) fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    fn aggregate_prefix(&self, aggregate: &AggregateId) -> Result<Key> {
        self.aggregates.clone().part(aggregate.as_str().as_bytes())
    }

    fn kind_prefix(&self, kind: &str) -> Result<Key> {
        self.kinds.clone().part(kind.as_bytes())
    }
}

/// Records whose key ends in a `seq` in `(after, head]`, in order.
fn records_after<'t>(tree: &'t Tree, prefix: &Key, after: Seq, head: Seq) -> Seek<'t> {
    Seek::new(
        tree,
        Bound::Excluded(&prefix.with_num(after.get())),
        Bound::Included(&prefix.with_num(head.get())),
    )
}

/// Every tenant's head, from the `H` records, checked against the end of its log.
pub(crate) fn load_heads(tree: &Tree) -> Result<Vec<(TenantId, Seq)>> {
    let mut heads = Vec::new();
    for item in tree.scan_prefix([HUB_HEAD]) {
        let (key, value) = item.map_err(|e| sled_error("loading tenant heads", e))?;
        let name = std::str::from_utf8(&key[1..])
            .map_err(|_| corrupted("a tenant head record has a tenant id that is not UTF-8"))?;
        let tenant = TenantId::new(name)
            .map_err(|e| corrupted(format!("a tenant head record has a bad tenant id: {e}")))?;
        let head = Seq(read_u64(&value, &format_args!("head of tenant {tenant}"))?);
        let keys = TenantKeys::new(&tenant)?;
        // The head record and the events are written in one atomic batch, so they agree
        // unless the files were damaged.
        let last = match tree.scan_prefix(keys.events.bytes()).next_back() {
            None => Seq::ZERO,
            Some(item) => {
                let (key, _) = item.map_err(|e| sled_error("checking a tenant head", e))?;
                Seq(key_suffix_u64(&key, &format_args!("tenant {tenant}"))?)
            }
        };
        if last != head {
            return Err(corrupted(format!(
                "tenant {tenant}: the head record says {head}, but the log ends at {last}"
            )));
        }
        heads.push((tenant, head));
    }
    Ok(heads)
}

/// Move schema 1's id index (one key per event) into runs, for every tenant in `heads`.
/// Returns how many ids moved; run again after an interruption, it moves the rest.
pub(crate) fn migrate_id_index(tree: &Tree, heads: &[(TenantId, Seq)]) -> Result<u64> {
    let mut moved = 0;
    for (tenant, _) in heads {
        let keys = TenantKeys::new(tenant)?;
        let old = Key::new(HUB_ID).part(tenant.as_str().as_bytes())?;
        moved += idindex::migrate_keys(tree, old.bytes(), &keys.ids)?;
    }
    Ok(moved)
}

/// What the log already holds under an event id.
struct Known {
    seq: Seq,
    aggregate_version: u64,
    recorded_at: u64,
    same_content: bool,
}

/// An accepted event, staged until the batch is written.
struct Staged {
    index: usize,
    seq: Seq,
    aggregate_version: u64,
}

/// An append decided against the tree: the answer and the writes that make it true.
pub(crate) struct Prepared {
    /// The per-event answers and the head after the append.
    pub(crate) report: AppendReport,
    /// The writes, `None` when nothing was accepted.
    pub(crate) batch: Option<Batch>,
}

/// Decide every event of a batch under the rules of `EventStore::append` (mirroring the
/// memory store), and build the one atomic sled batch that stores the accepted ones.
pub(crate) fn prepare_append(
    tree: &Tree,
    keys: &TenantKeys,
    head: Seq,
    events: &[Event],
    now_ms: u64,
) -> Result<Prepared> {
    let mut staged: Vec<Staged> = Vec::new();
    let mut staged_ids: HashMap<&EventId, usize> = HashMap::new();
    // Current versions of aggregates this batch touched: read once, then kept up to date.
    let mut versions: HashMap<&AggregateId, u64> = HashMap::new();
    // Aggregates where an earlier event of this batch was not stored.
    let mut blocked: HashSet<&AggregateId> = HashSet::new();
    let mut next_head = head;
    let mut results = Vec::with_capacity(events.len());
    let mut reader = ChunkReader::new(tree, keys, head);
    let ids: Vec<&[u8]> = events.iter().map(|e| e.id.as_str().as_bytes()).collect();
    let id_runs = IdRuns::load(tree, &keys.ids, &ids)?;

    for (index, event) in events.iter().enumerate() {
        let aggregate = &event.aggregate_id;
        let outcome = if let Err(error) = event.validate() {
            blocked.insert(aggregate);
            AppendOutcome::Rejected {
                code: RejectCode::InvalidEvent,
                message: error.message().to_owned(),
            }
        } else if let Some(known) = match staged_ids.get(&event.id) {
            Some(&i) => {
                let s = &staged[i];
                Some(Known {
                    seq: s.seq,
                    aggregate_version: s.aggregate_version,
                    recorded_at: now_ms,
                    same_content: events[s.index].same_content(event),
                })
            }
            None => known(&id_runs, &mut reader, event)?,
        } {
            if known.same_content {
                AppendOutcome::Duplicate {
                    seq: known.seq,
                    aggregate_version: known.aggregate_version,
                    recorded_at: known.recorded_at,
                }
            } else {
                blocked.insert(aggregate);
                AppendOutcome::Rejected {
                    code: RejectCode::IdConflict,
                    message: format!(
                        "event id {} is already stored at seq {} with different content",
                        event.id, known.seq
                    ),
                }
            }
        } else {
            let current = match versions.get(aggregate) {
                Some(&v) => v,
                None => {
                    let v = aggregate_version(tree, keys, aggregate, head)?;
                    versions.insert(aggregate, v);
                    v
                }
            };
            // An event written after one of this batch that was not stored must not overtake
            // it, so it conflicts too, checked or not.
            let stale = event
                .expected_version
                .is_some_and(|expected| expected != current);
            if stale || blocked.contains(aggregate) {
                blocked.insert(aggregate);
                AppendOutcome::Conflict {
                    current_version: current,
                }
            } else {
                next_head = next_head.next()?;
                let aggregate_version = current.checked_add(1).ok_or_else(|| {
                    Error::internal(format!("aggregate {aggregate} version overflow"))
                })?;
                versions.insert(aggregate, aggregate_version);
                staged_ids.insert(&event.id, staged.len());
                staged.push(Staged {
                    index,
                    seq: next_head,
                    aggregate_version,
                });
                AppendOutcome::Accepted {
                    seq: next_head,
                    aggregate_version,
                    recorded_at: now_ms,
                }
            }
        };
        results.push(AppendResult {
            id: event.id.clone(),
            outcome,
        });
    }

    let batch = if staged.is_empty() {
        None
    } else {
        Some(build_batch(
            keys, events, &staged, id_runs, next_head, now_ms,
        )?)
    };
    Ok(Prepared {
        report: AppendReport {
            results,
            head: next_head,
        },
        batch,
    })
}

/// The writes that store `staged` (consecutive seqs ending at `head`) and move the head.
fn build_batch(
    keys: &TenantKeys,
    events: &[Event],
    staged: &[Staged],
    mut id_runs: IdRuns,
    head: Seq,
    now_ms: u64,
) -> Result<Batch> {
    let mut batch = Batch::default();

    // Event chunks.
    let mut chunk = ChunkBuilder::new(now_ms);
    for s in staged {
        chunk.push(s.seq, &events[s.index], s.aggregate_version)?;
        if chunk.is_full()
            && let Some((last, bytes)) = chunk.finish()
        {
            batch.insert(keys.events.with_num(last.get()), bytes);
        }
    }
    if let Some((last, bytes)) = chunk.finish() {
        batch.insert(keys.events.with_num(last.get()), bytes);
    }

    // Id index, aggregate and kind records.
    let mut by_aggregate: BTreeMap<&AggregateId, Vec<(Seq, u64, &str)>> = BTreeMap::new();
    let mut by_kind: BTreeMap<&str, Vec<Seq>> = BTreeMap::new();
    for s in staged {
        let event = &events[s.index];
        id_runs.add(event.id.as_str().as_bytes(), s.seq.get())?;
        by_aggregate.entry(&event.aggregate_id).or_default().push((
            s.seq,
            s.aggregate_version,
            event.kind.as_str(),
        ));
        by_kind.entry(event.kind.as_str()).or_default().push(s.seq);
    }
    id_runs.write(&mut batch)?;
    for (aggregate, entries) in by_aggregate {
        let prefix = keys.aggregate_prefix(aggregate)?;
        for part in entries.chunks(INDEX_ENTRIES) {
            if let Some(last) = part.last() {
                batch.insert(prefix.with_num(last.0.get()), encode_aggregate(part)?);
            }
        }
    }
    for (kind, seqs) in by_kind {
        let prefix = keys.kind_prefix(kind)?;
        for part in seqs.chunks(INDEX_ENTRIES) {
            if let Some(last) = part.last() {
                batch.insert(prefix.with_num(last.get()), encode_seqs(part));
            }
        }
    }
    batch.insert(keys.head.clone(), &u64_bytes(head.get())[..]);
    Ok(batch)
}

/// What the stored log holds under `event`'s id, compared with `event`.
fn known(id_runs: &IdRuns, reader: &mut ChunkReader<'_>, event: &Event) -> Result<Option<Known>> {
    let Some(seq) = id_runs.get(event.id.as_str().as_bytes()).copied() else {
        return Ok(None);
    };
    let seq = Seq(seq);
    let stored = reader.event(seq)?;
    Ok(Some(Known {
        seq,
        aggregate_version: stored.aggregate_version,
        recorded_at: stored.recorded_at,
        same_content: stored.event.same_content(event),
    }))
}

/// Reads events by ascending `seq`, one seek per chunk. Stepping to a following chunk would
/// be a seek as well ([`Seek`]), so every chunk change seeks straight to the one holding `seq`.
struct ChunkReader<'a> {
    tree: &'a Tree,
    keys: &'a TenantKeys,
    head: Seq,
    /// The chunk of the last event read.
    current: Option<Chunk>,
}

impl<'a> ChunkReader<'a> {
    fn new(tree: &'a Tree, keys: &'a TenantKeys, head: Seq) -> ChunkReader<'a> {
        ChunkReader {
            tree,
            keys,
            head,
            current: None,
        }
    }

    /// The event at `seq`, which an index or the head says exists.
    fn event(&mut self, seq: Seq) -> Result<StoredEvent> {
        let what = format_args!("tenant {}", self.keys.tenant);
        if !self.current.as_ref().is_some_and(|c| c.holds(seq)) {
            let after = Seq(seq.get().saturating_sub(1));
            self.current = match records_after(self.tree, &self.keys.events, after, self.head)
                .next()
            {
                None => None,
                Some(item) => {
                    let (key, value) = item.map_err(|e| sled_error("reading an event chunk", e))?;
                    Some(Chunk::parse(value, key_suffix_u64(&key, &what)?, &what)?)
                }
            };
        }
        match &self.current {
            Some(chunk) if chunk.holds(seq) => chunk.event(seq, &what),
            _ => Err(corrupted(format!(
                "{what}: an index points at seq {seq}, which is not in the log"
            ))),
        }
    }
}

/// The aggregate's current version at `head`: the version of its last event, 0 when it has
/// none. Records past `head` (only possible after a failed write) are not counted.
pub(crate) fn aggregate_version(
    tree: &Tree,
    keys: &TenantKeys,
    aggregate: &AggregateId,
    head: Seq,
) -> Result<u64> {
    let prefix = keys.aggregate_prefix(aggregate)?;
    let last = tree
        .range((
            Bound::Included(prefix.with_num(0)),
            Bound::Included(prefix.with_num(head.get())),
        ))
        .next_back();
    match last {
        None => Ok(0),
        Some(item) => {
            let (_, value) = item.map_err(|e| sled_error("reading an aggregate version", e))?;
            aggregate_last_version(
                &value,
                &format_args!("tenant {}, aggregate {aggregate}", keys.tenant),
            )
        }
    }
}

/// One page of the log at `head`; `request` is already validated.
pub(crate) fn read(
    tree: &Tree,
    keys: &TenantKeys,
    head: Seq,
    request: &ReadRequest,
) -> Result<Page> {
    let after = request.after;
    if after >= head {
        return Ok(Page {
            events: Vec::new(),
            next: after,
            has_more: false,
            head,
        });
    }
    let limit = request.limit;
    let filter = &request.filter;
    // How far a filtered scan got when it stopped on its budget before filling the page.
    let mut scanned_to: Option<Seq> = None;
    let events = if let Some(aggregate) = &filter.aggregate_id {
        let what = format_args!("tenant {}, aggregate {aggregate}", keys.tenant);
        let prefix = keys.aggregate_prefix(aggregate)?;
        let mut seqs = Vec::new();
        let mut scanned = 0usize;
        'records: for item in records_after(tree, &prefix, after, head) {
            let (_, value) = item.map_err(|e| sled_error("reading an aggregate index", e))?;
            for entry in decode_aggregate(&value, &what)? {
                if entry.seq <= after {
                    continue;
                }
                if filter.kinds.is_empty() || filter.kinds.contains(&entry.kind) {
                    seqs.push(entry.seq);
                    if seqs.len() == limit {
                        break 'records;
                    }
                }
                scanned += 1;
                if scanned >= SCAN_BUDGET {
                    scanned_to = Some(entry.seq);
                    break 'records;
                }
            }
        }
        fetch(tree, keys, head, &seqs)?
    } else if !filter.kinds.is_empty() {
        // The first `limit` matches overall are among the first `limit` of each kind.
        let mut seqs = Vec::new();
        for kind in &filter.kinds {
            if kind.is_empty() || kind.len() > MAX_KIND_LEN {
                continue; // no stored event has such a kind
            }
            let what = format_args!("tenant {}, kind {kind}", keys.tenant);
            let prefix = keys.kind_prefix(kind)?;
            let mut taken = 0usize;
            'kind: for item in records_after(tree, &prefix, after, head) {
                let (_, value) = item.map_err(|e| sled_error("reading a kind index", e))?;
                for seq in decode_seqs(&value, &what)? {
                    if seq > after {
                        seqs.push(seq);
                        taken += 1;
                        if taken == limit {
                            break 'kind;
                        }
                    }
                }
            }
        }
        seqs.sort_unstable();
        seqs.truncate(limit);
        fetch(tree, keys, head, &seqs)?
    } else {
        scan(tree, keys, head, after, limit)?
    };
    let next = match (events.last(), scanned_to) {
        (Some(last), _) if events.len() == limit => last.seq,
        (_, Some(to)) => to,
        _ => head,
    };
    Ok(Page {
        events,
        next,
        has_more: next < head,
        head,
    })
}

/// Up to `limit` events after `after`, walking the chunks and checking they leave no gap.
fn scan(
    tree: &Tree,
    keys: &TenantKeys,
    head: Seq,
    after: Seq,
    limit: usize,
) -> Result<Vec<StoredEvent>> {
    let what = format_args!("tenant {}", keys.tenant);
    let mut events = Vec::with_capacity(limit.min(1024));
    let mut expected = after.next()?;
    for item in records_after(tree, &keys.events, after, head) {
        let (key, value) = item.map_err(|e| sled_error("reading events", e))?;
        let chunk = Chunk::parse(value, key_suffix_u64(&key, &what)?, &what)?;
        if !chunk.holds(expected) {
            return Err(corrupted(format!(
                "{what}: the log has a gap: seq {expected} is missing (next chunk holds {}..={})",
                chunk.first(),
                chunk.last()
            )));
        }
        while expected <= chunk.last() {
            events.push(chunk.event(expected, &what)?);
            if events.len() == limit {
                return Ok(events);
            }
            expected = expected.next()?;
        }
    }
    if expected <= head {
        return Err(corrupted(format!(
            "{what}: the log ends before seq {expected}, but its head is {head}"
        )));
    }
    Ok(events)
}

/// The events at `seqs` (ascending), reading each chunk once.
fn fetch(tree: &Tree, keys: &TenantKeys, head: Seq, seqs: &[Seq]) -> Result<Vec<StoredEvent>> {
    let mut reader = ChunkReader::new(tree, keys, head);
    seqs.iter().map(|&seq| reader.event(seq)).collect()
}
