//! The node's confirmed log (schema 4): confirmed events in chunks keyed by their last `seq`.
//!
//! sled's cost is per key written, and a pull confirms every event it stores; one key per
//! event made a fresh node's pull cost about what the hub's append did before the hub log was
//! chunked. A chunk `K last-seq` holds the confirmed events with seqs in `(previous chunk's
//! last, last]`, ascending, so the chunks partition the seq space: the only chunk that can hold
//! a seq is the first one keyed at or after it (one forward seek), and every seq past the last
//! chunk is free. Events usually arrive in seq order and extend the last chunk or start new
//! ones; a seq that falls inside a chunk's range (a pull filling the gap below events this node
//! pushed) rewrites that chunk. Chunks are cut at [`CHUNK_EVENTS`] events or [`CHUNK_BYTES`]
//! of records, like the hub's.
//!
//! A chunk is `[format][entry]...`, each entry `seq u64, length u32, record` with the record as
//! [`encode_stored`](crate::codec::encode_stored) writes it (it was schema 3's value of the
//! one-event key `C seq`).

use std::ops::Bound;

use sled::{Batch, IVec, Tree};
use synckit_types::{Error, EventId, Seq, StoredEvent};

use crate::codec::{
    CHUNK_BYTES, CHUNK_EVENTS, Key, NODE_CONFIRMED, NODE_CONFIRMED_CHUNK, decode_stored,
    key_suffix_u64, read_u64,
};
use crate::error::{corrupted, sled_error};

type Result<T> = std::result::Result<T, Error>;

/// Format byte of a confirmed chunk.
const FORMAT_V1: u8 = 1;
/// Per-entry header: seq, record length.
const ENTRY_HEADER: usize = 8 + 4;
/// Schema-3 keys moved per migration step.
const MIGRATE_STEP: usize = 4_096;

fn chunk_key(last: u64) -> Vec<u8> {
    Key::new(NODE_CONFIRMED_CHUNK).num(last).into_vec()
}

/// The chunks keyed at `from` or later, in order.
fn chunks_from(tree: &Tree, from: u64) -> sled::Iter {
    tree.range((
        Bound::Included(chunk_key(from)),
        Bound::Included(chunk_key(u64::MAX)),
    ))
}

/// One chunk's entries as `(seq, record)`, checked: ascending, ending at the key's seq.
fn decode(key: &[u8], value: &[u8]) -> Result<Vec<(u64, Vec<u8>)>> {
    let last = key_suffix_u64(key, &"a confirmed chunk key")?;
    let what = format_args!("confirmed chunk ending at seq {last}");
    let Some((&FORMAT_V1, mut rest)) = value.split_first() else {
        return Err(corrupted(format!("{what}: unknown format")));
    };
    let mut entries = Vec::new();
    let mut previous = 0u64;
    while !rest.is_empty() {
        if rest.len() < ENTRY_HEADER {
            return Err(corrupted(format!("{what}: an entry header is cut short")));
        }
        let seq = read_u64(&rest[..8], &what)?;
        let len = u32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        let len = usize::try_from(len).map_err(|_| corrupted(format!("{what}: entry too long")))?;
        let record = rest
            .get(ENTRY_HEADER..ENTRY_HEADER + len)
            .ok_or_else(|| corrupted(format!("{what}: an entry is cut short")))?;
        if seq <= previous || seq > last {
            return Err(corrupted(format!(
                "{what}: seq {seq} is out of order or past the chunk"
            )));
        }
        previous = seq;
        entries.push((seq, record.to_vec()));
        rest = &rest[ENTRY_HEADER + len..];
    }
    if previous != last {
        return Err(corrupted(format!(
            "{what}: its last entry is seq {previous}"
        )));
    }
    Ok(entries)
}

fn encode(entries: &[(u64, Vec<u8>)]) -> Result<Vec<u8>> {
    let size: usize = entries.iter().map(|(_, r)| ENTRY_HEADER + r.len()).sum();
    let mut bytes = Vec::with_capacity(1 + size);
    bytes.push(FORMAT_V1);
    for (seq, record) in entries {
        let len = u32::try_from(record.len())
            .map_err(|_| Error::internal(format!("confirmed event at seq {seq} is over 4 GiB")))?;
        bytes.extend_from_slice(&seq.to_be_bytes());
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(record);
    }
    Ok(bytes)
}

/// Whether a chunk of these entries is full: no more events are added to it.
fn is_full(entries: &[(u64, Vec<u8>)]) -> bool {
    entries.len() >= CHUNK_EVENTS
        || entries.iter().map(|(_, r)| r.len()).sum::<usize>() >= CHUNK_BYTES
}

/// Insert `entries` (ascending) as chunks: each cut when full, keyed by its last seq.
fn put_chunks(batch: &mut Batch, entries: &[(u64, Vec<u8>)]) -> Result<()> {
    let mut start = 0;
    let mut bytes = 0;
    for (i, (_, record)) in entries.iter().enumerate() {
        bytes += record.len();
        let count = i + 1 - start;
        if count >= CHUNK_EVENTS || bytes >= CHUNK_BYTES || i + 1 == entries.len() {
            let piece = &entries[start..=i];
            batch.insert(chunk_key(piece[piece.len() - 1].0), encode(piece)?);
            start = i + 1;
            bytes = 0;
        }
    }
    Ok(())
}

/// The highest confirmed seq, from the last chunk's key (0 when none).
pub(crate) fn last_seq(tree: &Tree) -> Result<Seq> {
    match tree.scan_prefix([NODE_CONFIRMED_CHUNK]).next_back() {
        None => Ok(Seq::ZERO),
        Some(item) => {
            let (key, _) = item.map_err(|e| sled_error("checking the confirmed log", e))?;
            Ok(Seq(key_suffix_u64(&key, &"the confirmed log")?))
        }
    }
}

/// The id of the event confirmed at `seq`, if any.
pub(crate) fn holder(tree: &Tree, seq: Seq) -> Result<Option<EventId>> {
    let Some(item) = chunks_from(tree, seq.get()).next() else {
        return Ok(None);
    };
    let (key, value) = item.map_err(|e| sled_error("reading the confirmed log", e))?;
    let entries = decode(&key, &value)?;
    match entries.binary_search_by_key(&seq.get(), |(s, _)| *s) {
        Ok(i) => {
            let what = format_args!("confirmed event at seq {seq}");
            Ok(Some(decode_stored(seq, &entries[i].1, &what)?.event.id))
        }
        Err(_) => Ok(None),
    }
}

/// Up to `limit` confirmed events with seq past `after`, in seq order.
pub(crate) fn read(tree: &Tree, after: Seq, limit: usize) -> Result<Vec<StoredEvent>> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    for item in chunks_from(tree, after.get().saturating_add(1)) {
        let (key, value) = item.map_err(|e| sled_error("reading the confirmed log", e))?;
        for (seq, record) in decode(&key, &value)? {
            if seq <= after.get() {
                continue;
            }
            let seq = Seq(seq);
            let what = format_args!("confirmed log, seq {seq}");
            out.push(decode_stored(seq, &record, &what)?);
            if out.len() == limit {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// Add `new` (records by seq, ascending, none already stored) to the batch: merged into the
/// chunk whose range holds them, or after the last chunk, extending it while it has room.
pub(crate) fn write(tree: &Tree, batch: &mut Batch, new: Vec<(u64, Vec<u8>)>) -> Result<()> {
    let err = |e| sled_error("reading the confirmed log", e);
    let mut new = new.into_iter().peekable();
    // The last chunk this write rewrote: the tree does not show the batch, so it must not be
    // read again as the chunk to extend.
    let mut rewrote_last: Option<IVec> = None;
    while let Some(&(first, _)) = new.peek() {
        let covering = chunks_from(tree, first).next().transpose().map_err(err)?;
        match covering {
            Some((key, value)) => {
                let last = key_suffix_u64(&key, &"a confirmed chunk key")?;
                let mut entries = decode(&key, &value)?;
                while let Some(entry) = new.next_if(|(seq, _)| *seq <= last) {
                    entries.push(entry);
                }
                entries.sort_by_key(|(seq, _)| *seq);
                // Every piece lies inside the old range, and the last piece keeps its key.
                batch.remove(key.clone());
                put_chunks(batch, &entries)?;
                rewrote_last = Some(key);
            }
            None => {
                let mut entries = Vec::new();
                if let Some(item) = tree.scan_prefix([NODE_CONFIRMED_CHUNK]).next_back() {
                    let (key, value) = item.map_err(err)?;
                    if rewrote_last.as_ref() != Some(&key) {
                        let tail = decode(&key, &value)?;
                        if !is_full(&tail) {
                            batch.remove(key);
                            entries = tail;
                        }
                    }
                }
                entries.extend(new.by_ref());
                put_chunks(batch, &entries)?;
            }
        }
    }
    Ok(())
}

/// Schema 3 -> 4: move the one-event keys `C seq` into chunks, in seq order, a step at a time.
/// Each step is one atomic batch that writes chunks past every chunk already written and
/// removes the keys it moved, so a crash leaves a store the next open finishes migrating.
pub(crate) fn migrate(tree: &Tree) -> Result<u64> {
    let err = |e| sled_error("migrating the confirmed log", e);
    let mut moved = 0u64;
    loop {
        let mut entries = Vec::with_capacity(MIGRATE_STEP);
        let mut old_keys = Vec::with_capacity(MIGRATE_STEP);
        for item in tree.scan_prefix([NODE_CONFIRMED]).take(MIGRATE_STEP) {
            let (key, value) = item.map_err(err)?;
            let seq = key_suffix_u64(&key, &"a schema-3 confirmed key")?;
            entries.push((seq, value.to_vec()));
            old_keys.push(key);
        }
        if entries.is_empty() {
            return Ok(moved);
        }
        let mut batch = Batch::default();
        put_chunks(&mut batch, &entries)?;
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
        db.open_tree("node").unwrap()
    }

    fn record(seq: u64, size: usize) -> Vec<u8> {
        let mut r = seq.to_be_bytes().to_vec();
        r.resize(size.max(8), 7);
        r
    }

    /// The chunks partition the seq space, are cut at the limits, and hold exactly `model`.
    fn check(tree: &Tree, model: &BTreeMap<u64, Vec<u8>>) {
        let mut all = Vec::new();
        for item in tree.scan_prefix([NODE_CONFIRMED_CHUNK]) {
            let (key, value) = item.unwrap();
            let entries = decode(&key, &value).unwrap();
            assert!(!entries.is_empty());
            assert!(entries.len() <= CHUNK_EVENTS);
            all.extend(entries);
        }
        let expected: Vec<(u64, Vec<u8>)> = model.iter().map(|(s, r)| (*s, r.clone())).collect();
        assert_eq!(all, expected);
        let last = model.keys().next_back().copied().unwrap_or(0);
        assert_eq!(last_seq(tree).unwrap(), Seq(last));
    }

    fn apply(tree: &Tree, model: &mut BTreeMap<u64, Vec<u8>>, seqs: &[u64], size: usize) {
        let mut new: Vec<(u64, Vec<u8>)> = seqs.iter().map(|&s| (s, record(s, size))).collect();
        new.sort_by_key(|(s, _)| *s);
        let mut batch = Batch::default();
        write(tree, &mut batch, new.clone()).unwrap();
        tree.apply_batch(batch).unwrap();
        model.extend(new);
        check(tree, model);
    }

    #[test]
    fn in_order_writes_fill_chunks_and_gaps_are_filled_in_place() {
        let tree = tree();
        let mut model = BTreeMap::new();
        // One at a time, then in batches, leaving every third seq out.
        for s in (1..40).filter(|s| s % 3 != 0) {
            apply(&tree, &mut model, &[s], 50);
        }
        let batch: Vec<u64> = (40..400).filter(|s| s % 3 != 0).collect();
        apply(&tree, &mut model, &batch, 50);
        let chunks = tree.scan_prefix([NODE_CONFIRMED_CHUNK]).count();
        assert!(chunks <= model.len() / CHUNK_EVENTS + 2, "{chunks} chunks");
        // The gaps, in one write that spans many chunks and the tail.
        let gaps: Vec<u64> = (1..420).filter(|s| s % 3 == 0).collect();
        apply(&tree, &mut model, &gaps, 50);
        for s in [1, 2, 3, 299, 300, 399, 417] {
            let expected = record(s, 50);
            let found = read_raw(&tree, s);
            assert_eq!(found.as_deref(), Some(&expected[..]), "seq {s}");
        }
        assert_eq!(read_raw(&tree, 400), None);
        assert_eq!(read_raw(&tree, 418), None);
    }

    #[test]
    fn large_records_cut_chunks_by_bytes() {
        let tree = tree();
        let mut model = BTreeMap::new();
        let seqs: Vec<u64> = (1..=40).collect();
        apply(&tree, &mut model, &seqs, CHUNK_BYTES / 2);
        for item in tree.scan_prefix([NODE_CONFIRMED_CHUNK]) {
            let (key, value) = item.unwrap();
            assert!(decode(&key, &value).unwrap().len() <= 2);
        }
    }

    #[test]
    fn damaged_chunks_are_reported() {
        let key = chunk_key(5);
        let good = encode(&[(3, vec![1, 2]), (5, vec![3])]).unwrap();
        assert_eq!(decode(&key, &good).unwrap().len(), 2);
        for bad in [
            vec![],
            vec![9],
            good[..good.len() - 1].to_vec(),
            encode(&[(5, vec![1]), (3, vec![2])]).unwrap(),
            encode(&[(3, vec![1])]).unwrap(),
            encode(&[(6, vec![1])]).unwrap(),
        ] {
            let e = decode(&key, &bad).unwrap_err();
            assert_eq!(e.kind(), synckit_types::ErrorKind::Corrupted, "{bad:?}");
        }
    }

    #[test]
    fn schema_three_keys_migrate_into_chunks() {
        let tree = tree();
        let mut model = BTreeMap::new();
        for s in (1..=10_000u64).filter(|s| s % 7 != 0) {
            let r = record(s, 20);
            tree.insert(Key::new(NODE_CONFIRMED).num(s).into_vec(), r.clone())
                .unwrap();
            model.insert(s, r);
        }
        assert_eq!(migrate(&tree).unwrap(), model.len() as u64);
        assert_eq!(tree.scan_prefix([NODE_CONFIRMED]).count(), 0);
        check(&tree, &model);
        assert_eq!(migrate(&tree).unwrap(), 0, "running it again moves nothing");
    }

    /// The raw record at `seq`, found through its covering chunk.
    fn read_raw(tree: &Tree, seq: u64) -> Option<Vec<u8>> {
        let (key, value) = chunks_from(tree, seq).next()?.unwrap();
        let entries = decode(&key, &value).unwrap();
        entries.into_iter().find(|(s, _)| *s == seq).map(|(_, r)| r)
    }
}
