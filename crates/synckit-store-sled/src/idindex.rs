//! Id indexes in sorted runs of ids: the hub's (id to seq), the node's confirmed ids (id to
//! seq) and its outbox ids (id to ordinal and aggregate).
//!
//! sled's cost is per key written, and a key inserted into a leaf costs a copy of that leaf,
//! so one small key per event made the id index the whole of an append's cost above raw sled
//! (measured: an append without it ran at twice raw sled's rate, with it at 0.7×). Runs cut
//! that to about one key per [`RUN_ENTRIES`] events when ids are ordered by time, as the
//! default UUIDv7 ids are.
//!
//! A run is one record keyed by its first id, holding its ids sorted with their values. The runs
//! of a tenant partition the id space: a run holds only ids at or after its own key and before
//! the next run's key. So the one run that can hold an id is the last run keyed at or before
//! it, found with one reverse seek. New ids are merged into the run that covers them (or, below
//! the first run, into new runs), and a run that grows past [`RUN_ENTRIES`] is written as equal
//! parts, each keyed by its first id, all inside the old run's range. An id removed from a
//! run (the node's outbox ids leave when confirmed) shrinks it; a run left empty is deleted,
//! and one whose first id left is rekeyed by its new first id. Its old range then falls to the
//! run before it, which holds nothing there, so the partition holds after every atomic batch.
//!
//! Time-ordered ids land past every stored id, in the last run: an append reads one run and
//! writes about `n / RUN_ENTRIES` records. Random ids touch one run each, which costs about what
//! one key per event cost before.

use std::ops::Bound;

use sled::{Batch, Tree};
use synckit_types::Result;

use crate::codec::Key;
use crate::error::{corrupted, sled_error};

/// The most entries a run is written with; larger merges are split into equal parts.
pub(crate) const RUN_ENTRIES: usize = 64;

/// What a run stores beside each id, and how it is written.
pub(crate) trait RunValue: Clone + std::fmt::Debug + Sized {
    /// First byte of a run record: the format of its entries.
    const FORMAT: u8;
    /// Append the value's bytes to `out`.
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()>;
    /// Read one value from the front of `input`, advancing it; `None` when malformed.
    fn decode_from(input: &mut &[u8]) -> Option<Self>;
}

/// A seq (hub ids, the node's confirmed ids): `[seq: u64 BE]`, format 1.
impl RunValue for u64 {
    const FORMAT: u8 = 1;

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(&self.to_be_bytes());
        Ok(())
    }

    fn decode_from(input: &mut &[u8]) -> Option<u64> {
        let (head, tail) = input.split_first_chunk::<8>()?;
        *input = tail;
        Some(u64::from_be_bytes(*head))
    }
}

/// One run of the index, as read (or, below the first run, as it will be created).
#[derive(Debug)]
struct Run<V> {
    /// The run's key (its first id); `None` for the space below the tenant's first run.
    first: Option<Vec<u8>>,
    /// The next run's key: every id of this run is below it. `None`: no run follows.
    end: Option<Vec<u8>>,
    /// Stored entries, sorted by id.
    entries: Vec<(Vec<u8>, V)>,
    /// Changes of this write, in order: `Some(value)` adds the id, `None` removes it.
    changes: Vec<(Vec<u8>, Option<V>)>,
}

impl<V: RunValue> Run<V> {
    /// Whether `id` falls in this run's part of the id space.
    fn covers(&self, id: &[u8]) -> bool {
        self.first.as_deref().is_none_or(|first| first <= id)
            && self.end.as_deref().is_none_or(|end| id < end)
    }

    fn get(&self, id: &[u8]) -> Option<&V> {
        self.entries
            .binary_search_by(|(stored, _)| stored.as_slice().cmp(id))
            .ok()
            .map(|i| &self.entries[i].1)
    }
}

/// The runs covering one batch's ids, read once; answers lookups and takes the new entries.
#[derive(Debug)]
pub(crate) struct IdRuns<V = u64> {
    prefix: Key,
    /// Disjoint and in id order.
    runs: Vec<Run<V>>,
}

impl<V: RunValue> IdRuns<V> {
    /// Read the runs that cover `ids` (any order, duplicates allowed) under `prefix`.
    pub(crate) fn load(tree: &Tree, prefix: &Key, ids: &[&[u8]]) -> Result<IdRuns<V>> {
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut runs: Vec<Run<V>> = Vec::new();
        for id in sorted {
            if runs.last().is_some_and(|run| run.covers(id)) {
                continue;
            }
            runs.push(cover(tree, prefix, id)?);
        }
        Ok(IdRuns {
            prefix: prefix.clone(),
            runs,
        })
    }

    /// The value stored under `id`, if `id` was among the loaded ids and is stored. Changes
    /// recorded with [`IdRuns::add`] and [`IdRuns::remove`] are not seen before they are
    /// written.
    pub(crate) fn get(&self, id: &[u8]) -> Option<&V> {
        self.run_for(id).and_then(|i| self.runs[i].get(id))
    }

    /// Record that `id` (one of the loaded ids) is stored with `value`, replacing any value
    /// it had.
    pub(crate) fn add(&mut self, id: &[u8], value: V) -> Result<()> {
        self.change(id, Some(value))
    }

    /// Record that `id` (one of the loaded ids) is no longer stored.
    pub(crate) fn remove(&mut self, id: &[u8]) -> Result<()> {
        self.change(id, None)
    }

    fn change(&mut self, id: &[u8], change: Option<V>) -> Result<()> {
        let i = self.run_for(id).ok_or_else(|| {
            synckit_types::Error::internal("an id changed in the index was not loaded first")
        })?;
        self.runs[i].changes.push((id.to_vec(), change));
        Ok(())
    }

    /// Put the rewritten and new runs into `batch`.
    pub(crate) fn write(self, batch: &mut Batch) -> Result<()> {
        for run in self.runs {
            if run.changes.is_empty() {
                continue;
            }
            let mut merged: std::collections::BTreeMap<Vec<u8>, V> =
                run.entries.into_iter().collect();
            for (id, change) in run.changes {
                match change {
                    Some(value) => merged.insert(id, value),
                    None => merged.remove(&id),
                };
            }
            let merged: Vec<(Vec<u8>, V)> = merged.into_iter().collect();
            // The old key goes unless the first part takes it again.
            if let Some(first) = &run.first
                && merged.first().is_none_or(|(id, _)| id != first)
            {
                batch.remove(self.prefix.with_tail(first));
            }
            if merged.is_empty() {
                continue;
            }
            let parts = merged.len().div_ceil(RUN_ENTRIES);
            let per_part = merged.len().div_ceil(parts);
            for part in merged.chunks(per_part) {
                batch.insert(self.prefix.with_tail(&part[0].0), encode(part)?);
            }
        }
        Ok(())
    }

    fn run_for(&self, id: &[u8]) -> Option<usize> {
        // Runs are disjoint and ordered: the first whose end is past `id`.
        let i = self
            .runs
            .partition_point(|run| run.end.as_deref().is_some_and(|end| end <= id));
        (i < self.runs.len() && self.runs[i].covers(id)).then_some(i)
    }
}

/// The run covering `id`: the last run keyed at or before it, bounded by the next run.
fn cover<V: RunValue>(tree: &Tree, prefix: &Key, id: &[u8]) -> Result<Run<V>> {
    let key = prefix.with_tail(id);
    let err = |e| sled_error("reading the id index", e);
    // Every key between the prefix and `key` starts with the prefix.
    let before = tree
        .range(prefix.bytes()..=key.as_slice())
        .next_back()
        .transpose()
        .map_err(err)?;
    let after = tree
        .range::<&[u8], _>((Bound::Excluded(key.as_slice()), Bound::Unbounded))
        .next()
        .transpose()
        .map_err(err)?
        .filter(|(k, _)| k.starts_with(prefix.bytes()));
    let end = after.map(|(k, _)| k[prefix.bytes().len()..].to_vec());
    Ok(match before {
        None => Run {
            first: None,
            end,
            entries: Vec::new(),
            changes: Vec::new(),
        },
        Some((k, value)) => {
            let first = k[prefix.bytes().len()..].to_vec();
            let entries = decode(&value)?;
            check_run(&first, end.as_deref(), &entries)?;
            Run {
                first: Some(first),
                end,
                entries,
                changes: Vec::new(),
            }
        }
    })
}

/// A run read from disk must hold what its key and its neighbour say, or the index would
/// answer wrongly.
fn check_run<V>(first: &[u8], end: Option<&[u8]>, entries: &[(Vec<u8>, V)]) -> Result<()> {
    let in_order = entries.windows(2).all(|w| w[0].0 < w[1].0);
    let starts = entries
        .first()
        .is_some_and(|(id, _)| id.as_slice() == first);
    let bounded = match (end, entries.last()) {
        (Some(end), Some((last, _))) => last.as_slice() < end,
        _ => true,
    };
    if in_order && starts && bounded {
        Ok(())
    } else {
        Err(corrupted(format!(
            "an id-index run (first id {:?}) is not sorted or leaves its range",
            String::from_utf8_lossy(first)
        )))
    }
}

/// `[V::FORMAT] ([id len: u8] [id] [value])*`.
fn encode<V: RunValue>(entries: &[(Vec<u8>, V)]) -> Result<Vec<u8>> {
    let size: usize = entries.iter().map(|(id, _)| 1 + id.len() + 8).sum();
    let mut out = Vec::with_capacity(1 + size);
    out.push(V::FORMAT);
    for (id, value) in entries {
        // Event ids are at most `MAX_ID_LEN` (128) bytes, so this holds for any valid id.
        let len = u8::try_from(id.len()).map_err(|_| {
            synckit_types::Error::internal(format!("an event id of {} bytes", id.len()))
        })?;
        out.push(len);
        out.extend_from_slice(id);
        value.encode_into(&mut out)?;
    }
    Ok(out)
}

fn decode<V: RunValue>(value: &[u8]) -> Result<Vec<(Vec<u8>, V)>> {
    let bad = || corrupted("an id-index run is malformed");
    let (&format, mut rest) = value.split_first().ok_or_else(bad)?;
    if format != V::FORMAT {
        return Err(corrupted(format!(
            "an id-index run has the format {format}; this index is written in format {}",
            V::FORMAT
        )));
    }
    let mut entries = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if tail.len() < len {
            return Err(bad());
        }
        let (id, mut tail) = tail.split_at(len);
        let value = V::decode_from(&mut tail).ok_or_else(bad)?;
        entries.push((id.to_vec(), value));
        rest = tail;
    }
    Ok(entries)
}

/// Rewrite a schema-1 id index (one key per id under `old`, the seq as its value) as runs
/// under `new`, removing the old keys; in atomic steps of whole runs, in id order, so an
/// interrupted migration continues where it stopped when it is run again.
pub(crate) fn migrate_keys(tree: &Tree, old: &[u8], new: &Key) -> Result<u64> {
    migrate_keys_with(tree, old, new, |value| {
        <[u8; 8]>::try_from(value).ok().map(u64::from_be_bytes)
    })
}

/// [`migrate_keys`] with each old value read by `value_of` (`None`: malformed).
pub(crate) fn migrate_keys_with<V: RunValue>(
    tree: &Tree,
    old: &[u8],
    new: &Key,
    value_of: impl Fn(&[u8]) -> Option<V>,
) -> Result<u64> {
    let err = |e| sled_error("migrating the id index", e);
    let mut moved = 0;
    loop {
        let mut entries = Vec::with_capacity(RUN_ENTRIES * 256);
        let mut old_keys = Vec::with_capacity(RUN_ENTRIES * 256);
        for item in tree.scan_prefix(old).take(RUN_ENTRIES * 256) {
            let (key, value) = item.map_err(err)?;
            let value = value_of(value.as_ref())
                .ok_or_else(|| corrupted("an old id-index entry is malformed"))?;
            entries.push((key[old.len()..].to_vec(), value));
            old_keys.push(key);
        }
        if entries.is_empty() {
            return Ok(moved);
        }
        // The scan is in key order, so each step's ids are past every id moved before.
        let mut batch = Batch::default();
        for part in entries.chunks(RUN_ENTRIES) {
            batch.insert(new.with_tail(&part[0].0), encode(part)?);
        }
        for key in old_keys {
            batch.remove(key);
        }
        tree.apply_batch(batch).map_err(err)?;
        moved += entries.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use super::*;

    fn tree() -> Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree("hub").unwrap()
    }

    /// Every run is sorted, starts at its key, ends before the next run's key and is at most
    /// `RUN_ENTRIES` long; together they hold exactly `model`.
    fn check_index(tree: &Tree, prefix: &Key, model: &BTreeMap<Vec<u8>, u64>) {
        let mut all = Vec::new();
        let mut previous_end: Option<Vec<u8>> = None;
        for item in tree.scan_prefix(prefix.bytes()) {
            let (key, value) = item.unwrap();
            let first = key[prefix.bytes().len()..].to_vec();
            let entries = decode(&value).unwrap();
            assert!(entries.len() <= RUN_ENTRIES, "run of {}", entries.len());
            check_run(&first, None, &entries).unwrap();
            if let Some(end) = &previous_end {
                assert!(end < &first, "runs overlap");
            }
            previous_end = entries.last().map(|(id, _)| id.clone());
            all.extend(entries);
        }
        let expected: Vec<(Vec<u8>, u64)> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(all, expected);
    }

    /// Random batches, ordered or scattered, with ids already stored and repeated: every
    /// lookup matches a map, and the runs stay a valid partition beside another tenant's.
    #[test]
    fn runs_answer_like_a_map() {
        let tree = tree();
        let prefix = Key::new(b'I').part(b"t").unwrap();
        let other = Key::new(b'I').part(b"u").unwrap();
        let mut rng = fastrand::Rng::with_seed(11);
        let mut model: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        let mut next_seq = 1;
        let mut clock = 10_000_u32;
        for round in 0..300 {
            let ordered = rng.bool();
            let ids: Vec<Vec<u8>> = (0..rng.usize(1..200))
                .map(|_| {
                    if ordered {
                        clock += rng.u32(0..3);
                        format!("id-{clock:06}").into_bytes()
                    } else {
                        format!("id-{:06}", rng.u32(0..clock + 500)).into_bytes()
                    }
                })
                .collect();
            let refs: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
            let mut runs = IdRuns::load(&tree, &prefix, &refs).unwrap();
            let mut added = BTreeMap::new();
            for id in &ids {
                assert_eq!(
                    runs.get(id).copied(),
                    model.get(id).copied(),
                    "round {round}, id {}",
                    String::from_utf8_lossy(id)
                );
                if !model.contains_key(id) && !added.contains_key(id) {
                    runs.add(id, next_seq).unwrap();
                    added.insert(id.clone(), next_seq);
                    next_seq += 1;
                }
            }
            let mut batch = Batch::default();
            runs.write(&mut batch).unwrap();
            let stray = encode(&[(b"id-000500".to_vec(), 1)]).unwrap();
            batch.insert(other.with_tail(b"id-000500"), stray);
            tree.apply_batch(batch).unwrap();
            model.extend(added);
            check_index(&tree, &prefix, &model);
        }
        assert!(model.len() > 10_000, "the test covered many ids");
    }

    /// Adds and removals in any order and mix (an id removed and added again in one write, or
    /// added and removed) leave runs that answer like a map.
    #[test]
    fn removals_keep_runs_answering_like_a_map() {
        let tree = tree();
        let prefix = Key::new(b'p');
        let mut rng = fastrand::Rng::with_seed(5);
        let mut model: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        let mut clock = 0_u32;
        for round in 0..400_u32 {
            let mut ops: Vec<(Vec<u8>, Option<u64>)> = Vec::new();
            for _ in 0..rng.usize(1..150) {
                let add = rng.u8(0..3) > 0 || model.is_empty();
                if add && rng.bool() {
                    clock += 1;
                    ops.push((
                        format!("id-{clock:06}").into_bytes(),
                        Some(u64::from(clock)),
                    ));
                } else if add {
                    let id = format!("id-{:06}", rng.u32(0..clock + 1));
                    ops.push((id.into_bytes(), Some(u64::from(round) + 1_000_000)));
                } else {
                    // Oldest first, as a push confirms, or anywhere.
                    let id = if rng.bool() {
                        model.keys().next().cloned().unwrap_or_default()
                    } else {
                        format!("id-{:06}", rng.u32(0..clock + 1)).into_bytes()
                    };
                    ops.push((id, None));
                }
            }
            let refs: Vec<&[u8]> = ops.iter().map(|(id, _)| id.as_slice()).collect();
            let mut runs = IdRuns::load(&tree, &prefix, &refs).unwrap();
            for (id, op) in &ops {
                match op {
                    Some(seq) => {
                        runs.add(id, *seq).unwrap();
                        model.insert(id.clone(), *seq);
                    }
                    None => {
                        runs.remove(id).unwrap();
                        model.remove(id);
                    }
                }
            }
            let mut batch = Batch::default();
            runs.write(&mut batch).unwrap();
            tree.apply_batch(batch).unwrap();
            check_index(&tree, &prefix, &model);
            let ids: Vec<Vec<u8>> = (0..50)
                .map(|_| format!("id-{:06}", rng.u32(0..clock + 2)).into_bytes())
                .collect();
            let refs: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
            let runs = IdRuns::load(&tree, &prefix, &refs).unwrap();
            for id in &ids {
                assert_eq!(
                    runs.get(id).copied(),
                    model.get(id).copied(),
                    "round {round}"
                );
            }
        }
    }

    /// Time-ordered appends write about one record per `RUN_ENTRIES` ids.
    #[test]
    fn ordered_ids_write_few_records() {
        let tree = tree();
        let prefix = Key::new(b'I').part(b"t").unwrap();
        for b in 0..10_u64 {
            let ids: Vec<Vec<u8>> = (0..1_000)
                .map(|i| format!("{:08}", b * 1_000 + i).into_bytes())
                .collect();
            let refs: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
            let mut runs = IdRuns::load(&tree, &prefix, &refs).unwrap();
            // One read: the last run covers every new id.
            assert_eq!(runs.runs.len(), 1);
            for (i, id) in ids.iter().enumerate() {
                runs.add(id, b * 1_000 + i as u64 + 1).unwrap();
            }
            let mut batch = Batch::default();
            runs.write(&mut batch).unwrap();
            tree.apply_batch(batch).unwrap();
        }
        // Each append rewrites at most the last run and adds full ones: few records in all.
        let records = tree.scan_prefix(prefix.bytes()).count();
        assert!(
            records <= 10 * (1_000 / RUN_ENTRIES + 1),
            "{records} records"
        );
        assert!(records >= 10_000 / RUN_ENTRIES, "{records} records");
    }

    #[test]
    fn damaged_runs_are_reported() {
        assert!(decode::<u64>(&[]).is_err());
        assert!(decode::<u64>(&[9]).is_err());
        assert!(decode::<u64>(&[1, 3, b'a']).is_err());
        let unsorted = [(b"b".to_vec(), 1), (b"a".to_vec(), 2)];
        assert!(check_run(b"b", None, &unsorted).is_err());
        let tree = tree();
        let prefix = Key::new(b'I').part(b"t").unwrap();
        tree.insert(prefix.with_tail(b"b"), encode(&unsorted).unwrap())
            .unwrap();
        let error = IdRuns::<u64>::load(&tree, &prefix, &[b"c"]).unwrap_err();
        assert!(error.to_string().contains("id-index run"), "{error}");
    }

    #[test]
    fn schema_one_keys_migrate_to_runs() {
        let tree = tree();
        let old = Key::new(b'I').part(b"t").unwrap();
        let new = Key::new(b'J').part(b"t").unwrap();
        let mut model = BTreeMap::new();
        for n in 0..40_000_u64 {
            let id = format!("evt-{:08}", n * 7 % 40_000).into_bytes();
            tree.insert(old.with_tail(&id), &n.to_be_bytes()[..])
                .unwrap();
            model.insert(id, n);
        }
        assert_eq!(migrate_keys(&tree, old.bytes(), &new).unwrap(), 40_000);
        assert_eq!(tree.scan_prefix(old.bytes()).count(), 0);
        check_index(&tree, &new, &model);
        // Again: nothing left to move.
        assert_eq!(migrate_keys(&tree, old.bytes(), &new).unwrap(), 0);
    }
}
