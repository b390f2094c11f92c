//! Chunked maps from `u64` to records, for the node's confirmed log, outbox and outbox index.
//!
//! sled's cost is per key written, and the node writes or removes an entry for every event it
//! appends, pushes or pulls; one key per entry made a node commit cost several times what the
//! hub's chunked append does. A chunk `prefix last` holds the entries with numbers in
//! `(previous chunk's last, last]`, ascending, so the chunks partition the number space: the
//! only chunk that can hold `n` is the first one keyed at or after it (one forward seek), and
//! every number past the last chunk is free. New numbers usually arrive in order and extend the
//! last chunk or start new ones; a change inside a chunk's range rewrites that chunk (still
//! inside its range, so the partition holds after every atomic batch). A chunk is cut at its
//! map's entry limit or at [`CHUNK_BYTES`] of records, like the hub's chunks.
//!
//! A chunk is `[format][entry]...`, each entry `number u64, length u32, record`.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::ops::Bound;

use sled::{Batch, IVec, Tree};
use synckit_types::Error;

use crate::codec::{CHUNK_BYTES, Key, key_suffix_u64, read_u64};
use crate::error::{corrupted, sled_error};
use crate::seek::Seek;

type Result<T> = std::result::Result<T, Error>;

/// Format byte of a chunk.
const FORMAT_V1: u8 = 1;
/// Per-entry header: number, record length.
const ENTRY_HEADER: usize = 8 + 4;
/// One-key-per-entry keys moved per migration step.
const MIGRATE_STEP: usize = 4_096;

/// Entries of one chunk: `(number, record)`, ascending.
pub(crate) type Entries = Vec<(u64, Vec<u8>)>;

/// One chunked map: its key prefix, what it holds (for messages) and its entry limit.
#[derive(Debug, Clone)]
pub(crate) struct Chunks {
    prefix: Key,
    what: &'static str,
    max_entries: usize,
}

impl Chunks {
    /// The map under `prefix`, cutting chunks at `max_entries`.
    pub(crate) fn new(prefix: Key, what: &'static str, max_entries: usize) -> Chunks {
        Chunks {
            prefix,
            what,
            max_entries: max_entries.max(1),
        }
    }

    fn key(&self, last: u64) -> Vec<u8> {
        self.prefix.with_num(last)
    }

    fn error(&self, e: sled::Error) -> Error {
        sled_error(format!("reading {}", self.what), e)
    }

    /// The chunks keyed at `from` or later, in order, one seek each ([`Seek`]).
    fn chunks_from<'t>(&self, tree: &'t Tree, from: u64) -> Seek<'t> {
        Seek::new(
            tree,
            Bound::Included(&self.key(from)),
            Bound::Included(&self.key(u64::MAX)),
        )
    }

    /// One chunk's entries, checked: ascending, ending at the key's number.
    fn decode(&self, key: &[u8], value: &[u8]) -> Result<Entries> {
        let last = key_suffix_u64(key, &format_args!("a chunk key of {}", self.what))?;
        decode(
            value,
            last,
            &format_args!("{} chunk ending at {last}", self.what),
        )
    }

    /// The highest number stored, if any.
    pub(crate) fn last(&self, tree: &Tree) -> Result<Option<u64>> {
        match tree.scan_prefix(self.prefix.bytes()).next_back() {
            None => Ok(None),
            Some(item) => {
                let (key, _) = item.map_err(|e| self.error(e))?;
                let what = format_args!("a chunk key of {}", self.what);
                Ok(Some(key_suffix_u64(&key, &what)?))
            }
        }
    }

    /// The record at `n`, if any.
    pub(crate) fn get(&self, tree: &Tree, n: u64) -> Result<Option<Vec<u8>>> {
        let Some(item) = self.chunks_from(tree, n).next() else {
            return Ok(None);
        };
        let (key, value) = item.map_err(|e| self.error(e))?;
        let mut entries = self.decode(&key, &value)?;
        Ok(match entries.binary_search_by_key(&n, |(m, _)| *m) {
            Ok(i) => Some(entries.swap_remove(i).1),
            Err(_) => None,
        })
    }

    /// The records at `numbers` (ascending), each read through its chunk once.
    pub(crate) fn get_many(&self, tree: &Tree, numbers: &[u64]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::with_capacity(numbers.len());
        let mut current: Option<(u64, BTreeMap<u64, Vec<u8>>)> = None;
        for &n in numbers {
            if current.as_ref().is_none_or(|(last, _)| n > *last) {
                current = match self.chunks_from(tree, n).next() {
                    None => None,
                    Some(item) => {
                        let (key, value) = item.map_err(|e| self.error(e))?;
                        let what = format_args!("a chunk key of {}", self.what);
                        let last = key_suffix_u64(&key, &what)?;
                        Some((last, self.decode(&key, &value)?.into_iter().collect()))
                    }
                };
            }
            out.push(current.as_mut().and_then(|(_, entries)| entries.remove(&n)));
        }
        Ok(out)
    }

    /// Up to `limit` entries numbered past `after`, in order.
    pub(crate) fn read(&self, tree: &Tree, after: u64, limit: usize) -> Result<Entries> {
        let mut out = Vec::new();
        if limit == 0 || after == u64::MAX {
            return Ok(out);
        }
        for item in self.chunks_from(tree, after + 1) {
            let (key, value) = item.map_err(|e| self.error(e))?;
            for entry in self.decode(&key, &value)? {
                if entry.0 > after {
                    out.push(entry);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Add `changes` to the batch: `Some(record)` puts the record at its number, `None`
    /// removes the entry there (if any). Each change lands in the chunk whose range holds it,
    /// or after the last chunk, extending it while it has room.
    pub(crate) fn write(
        &self,
        tree: &Tree,
        batch: &mut Batch,
        changes: BTreeMap<u64, Option<Vec<u8>>>,
    ) -> Result<()> {
        let mut changes = changes.into_iter().peekable();
        // Chunks this write rewrote: the tree does not show the batch, so they must not be
        // read again as the chunk to extend.
        let mut rewrote: Vec<IVec> = Vec::new();
        while let Some(&(first, _)) = changes.peek() {
            let covering = self.chunks_from(tree, first).next().transpose();
            match covering.map_err(|e| self.error(e))? {
                Some((key, value)) => {
                    let what = format_args!("a chunk key of {}", self.what);
                    let last = key_suffix_u64(&key, &what)?;
                    let mut entries: BTreeMap<u64, Vec<u8>> =
                        self.decode(&key, &value)?.into_iter().collect();
                    while let Some((n, change)) = changes.next_if(|(n, _)| *n <= last) {
                        match change {
                            Some(record) => entries.insert(n, record),
                            None => entries.remove(&n),
                        };
                    }
                    // Every piece lies inside the old range.
                    batch.remove(key.clone());
                    let entries: Entries = entries.into_iter().collect();
                    self.put_chunks(batch, &entries)?;
                    rewrote.push(key);
                }
                None => {
                    // Past every chunk: removals find nothing.
                    let mut entries = Vec::new();
                    if let Some(item) = tree.scan_prefix(self.prefix.bytes()).next_back() {
                        let (key, value) = item.map_err(|e| self.error(e))?;
                        if !rewrote.contains(&key) {
                            let tail = self.decode(&key, &value)?;
                            if !self.is_full(&tail) {
                                batch.remove(key);
                                entries = tail;
                            }
                        }
                    }
                    entries.extend(changes.by_ref().filter_map(|(n, c)| Some((n, c?))));
                    self.put_chunks(batch, &entries)?;
                }
            }
        }
        Ok(())
    }

    /// Whether a chunk of these entries takes no more.
    fn is_full(&self, entries: &[(u64, Vec<u8>)]) -> bool {
        entries.len() >= self.max_entries
            || entries.iter().map(|(_, r)| r.len()).sum::<usize>() >= CHUNK_BYTES
    }

    /// Insert `entries` (ascending) as chunks, each cut when full and keyed by its last number.
    fn put_chunks(&self, batch: &mut Batch, entries: &[(u64, Vec<u8>)]) -> Result<()> {
        let mut start = 0;
        let mut bytes = 0;
        for (i, (_, record)) in entries.iter().enumerate() {
            bytes += record.len();
            if i + 1 - start >= self.max_entries || bytes >= CHUNK_BYTES || i + 1 == entries.len() {
                let piece = &entries[start..=i];
                batch.insert(self.key(piece[piece.len() - 1].0), encode(piece)?);
                start = i + 1;
                bytes = 0;
            }
        }
        Ok(())
    }

    /// Replace the whole map with `entries` (ascending), in `batch`.
    pub(crate) fn replace_all(
        &self,
        tree: &Tree,
        batch: &mut Batch,
        entries: &Entries,
    ) -> Result<()> {
        for key in tree.scan_prefix(self.prefix.bytes()).keys() {
            batch.remove(key.map_err(|e| self.error(e))?);
        }
        self.put_chunks(batch, entries)
    }

    /// Move one-key-per-entry records `old_prefix number` -> record into chunks, in order, a
    /// step at a time. Each step is one atomic batch that writes chunks past every chunk
    /// already written and removes the keys it moved, so a crash leaves a store the next open
    /// finishes migrating. Returns how many moved.
    pub(crate) fn migrate_from(&self, tree: &Tree, old_prefix: &Key) -> Result<u64> {
        let err = |e| sled_error(format!("migrating {}", self.what), e);
        let mut moved = 0u64;
        loop {
            let mut entries = Vec::with_capacity(MIGRATE_STEP);
            let mut old_keys = Vec::with_capacity(MIGRATE_STEP);
            for item in tree.scan_prefix(old_prefix.bytes()).take(MIGRATE_STEP) {
                let (key, value) = item.map_err(err)?;
                let n = key_suffix_u64(&key, &format_args!("an old key of {}", self.what))?;
                entries.push((n, value.to_vec()));
                old_keys.push(key);
            }
            if entries.is_empty() {
                return Ok(moved);
            }
            let mut batch = Batch::default();
            self.put_chunks(&mut batch, &entries)?;
            for key in old_keys {
                batch.remove(key);
            }
            tree.apply_batch(batch).map_err(err)?;
            moved += entries.len() as u64;
        }
    }
}

fn decode(value: &[u8], last: u64, what: &dyn Display) -> Result<Entries> {
    let Some((&FORMAT_V1, mut rest)) = value.split_first() else {
        return Err(corrupted(format!("{what}: unknown format")));
    };
    let mut entries = Vec::new();
    let mut previous: Option<u64> = None;
    while !rest.is_empty() {
        if rest.len() < ENTRY_HEADER {
            return Err(corrupted(format!("{what}: an entry header is cut short")));
        }
        let n = read_u64(&rest[..8], what)?;
        let len = u32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        let len = usize::try_from(len).map_err(|_| corrupted(format!("{what}: entry too long")))?;
        let record = rest
            .get(ENTRY_HEADER..ENTRY_HEADER + len)
            .ok_or_else(|| corrupted(format!("{what}: an entry is cut short")))?;
        if previous.is_some_and(|p| n <= p) || n > last {
            return Err(corrupted(format!(
                "{what}: entry {n} is out of order or past the chunk"
            )));
        }
        previous = Some(n);
        entries.push((n, record.to_vec()));
        rest = &rest[ENTRY_HEADER + len..];
    }
    if previous != Some(last) {
        return Err(corrupted(format!("{what}: its last entry is {previous:?}")));
    }
    Ok(entries)
}

fn encode(entries: &[(u64, Vec<u8>)]) -> Result<Vec<u8>> {
    let size: usize = entries.iter().map(|(_, r)| ENTRY_HEADER + r.len()).sum();
    let mut bytes = Vec::with_capacity(1 + size);
    bytes.push(FORMAT_V1);
    for (n, record) in entries {
        let len = u32::try_from(record.len())
            .map_err(|_| Error::internal(format!("chunk entry {n} is over 4 GiB")))?;
        bytes.extend_from_slice(&n.to_be_bytes());
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(record);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::codec::CHUNK_EVENTS;

    const CLASS: u8 = b'K';

    fn tree() -> Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree("node").unwrap()
    }

    fn map() -> Chunks {
        Chunks::new(Key::new(CLASS), "test entries", CHUNK_EVENTS)
    }

    fn record(n: u64, size: usize) -> Vec<u8> {
        let mut r = n.to_be_bytes().to_vec();
        r.resize(size.max(8), 7);
        r
    }

    /// The chunks partition the number space, are cut at the limits, and hold exactly `model`.
    fn check(tree: &Tree, model: &BTreeMap<u64, Vec<u8>>) {
        let chunks = map();
        let mut all = Vec::new();
        for item in tree.scan_prefix([CLASS]) {
            let (key, value) = item.unwrap();
            let entries = chunks.decode(&key, &value).unwrap();
            assert!(!entries.is_empty());
            assert!(entries.len() <= CHUNK_EVENTS);
            all.extend(entries);
        }
        let expected: Entries = model.iter().map(|(s, r)| (*s, r.clone())).collect();
        assert!(all == expected, "the chunks hold what the model holds");
        assert_eq!(
            chunks.last(tree).unwrap(),
            model.keys().next_back().copied()
        );
        // `read` returns entries past `after`, so entry 0 is never read.
        let past_zero: Entries = expected.into_iter().filter(|(n, _)| *n > 0).collect();
        assert!(chunks.read(tree, 0, usize::MAX).unwrap() == past_zero);
    }

    fn apply(tree: &Tree, model: &mut BTreeMap<u64, Vec<u8>>, puts: &[u64], removes: &[u64]) {
        let mut changes = BTreeMap::new();
        for &n in removes {
            changes.insert(n, None);
            model.remove(&n);
        }
        for &n in puts {
            changes.insert(n, Some(record(n, 50)));
            model.insert(n, record(n, 50));
        }
        let mut batch = Batch::default();
        map().write(tree, &mut batch, changes).unwrap();
        tree.apply_batch(batch).unwrap();
        check(tree, model);
    }

    #[test]
    fn in_order_writes_fill_chunks_and_gaps_are_filled_in_place() {
        let tree = tree();
        let mut model = BTreeMap::new();
        // One at a time, then in one batch, leaving every third number out.
        for n in (1..40).filter(|n| n % 3 != 0) {
            apply(&tree, &mut model, &[n], &[]);
        }
        let batch: Vec<u64> = (40..400).filter(|n| n % 3 != 0).collect();
        apply(&tree, &mut model, &batch, &[]);
        let chunks = tree.scan_prefix([CLASS]).count();
        assert!(chunks <= model.len() / CHUNK_EVENTS + 2, "{chunks} chunks");
        // The gaps, in one write that spans many chunks and the tail.
        let gaps: Vec<u64> = (1..420).filter(|n| n % 3 == 0).collect();
        apply(&tree, &mut model, &gaps, &[]);
        for n in [1, 2, 3, 299, 300, 399, 417] {
            assert_eq!(map().get(&tree, n).unwrap(), Some(record(n, 50)), "{n}");
        }
        assert_eq!(map().get(&tree, 400).unwrap(), None);
        assert_eq!(map().get(&tree, 418).unwrap(), None);
        let many = map().get_many(&tree, &[2, 3, 400, 417, 418]).unwrap();
        let expected = [
            Some(record(2, 50)),
            Some(record(3, 50)),
            None,
            Some(record(417, 50)),
            None,
        ];
        assert_eq!(many, expected);
    }

    #[test]
    fn removals_anywhere_keep_the_partition() {
        let tree = tree();
        let mut model = BTreeMap::new();
        let all: Vec<u64> = (1..=300).collect();
        apply(&tree, &mut model, &all, &[]);
        // The oldest first, as a push confirms them, with a put in the same write.
        let oldest: Vec<u64> = (1..=100).collect();
        apply(&tree, &mut model, &[301], &oldest);
        // Scattered ones, a chunk's last entry among them, and numbers never stored.
        apply(&tree, &mut model, &[], &[150, 160, 176, 200, 999, 5]);
        // Then the whole tail, and appends after it.
        let tail: Vec<u64> = (250..=301).collect();
        apply(&tree, &mut model, &[], &tail);
        apply(&tree, &mut model, &[400, 401], &[]);
        // Replacing records in place.
        let mut changes = BTreeMap::new();
        changes.insert(120, Some(b"replaced".to_vec()));
        let mut batch = Batch::default();
        map().write(&tree, &mut batch, changes).unwrap();
        tree.apply_batch(batch).unwrap();
        model.insert(120, b"replaced".to_vec());
        check(&tree, &model);
        // Everything.
        let rest: Vec<u64> = model.keys().copied().collect();
        apply(&tree, &mut model, &[], &rest);
        assert_eq!(tree.scan_prefix([CLASS]).count(), 0);
    }

    #[test]
    fn large_records_cut_chunks_by_bytes() {
        let tree = tree();
        let mut changes = BTreeMap::new();
        for n in 1..=40 {
            changes.insert(n, Some(record(n, CHUNK_BYTES / 2)));
        }
        let mut batch = Batch::default();
        map().write(&tree, &mut batch, changes).unwrap();
        tree.apply_batch(batch).unwrap();
        for item in tree.scan_prefix([CLASS]) {
            let (key, value) = item.unwrap();
            assert!(map().decode(&key, &value).unwrap().len() <= 2);
        }
    }

    #[test]
    fn damaged_chunks_are_reported() {
        let good = encode(&[(3, vec![1, 2]), (5, vec![3])]).unwrap();
        assert_eq!(decode(&good, 5, &"t").unwrap().len(), 2);
        for bad in [
            vec![],
            vec![9],
            good[..good.len() - 1].to_vec(),
            encode(&[(5, vec![1]), (3, vec![2])]).unwrap(),
            encode(&[(3, vec![1])]).unwrap(),
            encode(&[(6, vec![1])]).unwrap(),
        ] {
            let e = decode(&bad, 5, &"t").unwrap_err();
            assert_eq!(e.kind(), synckit_types::ErrorKind::Corrupted, "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Any sequence of writes (puts and removes anywhere, in batches of any size, records
        /// of any size) leaves chunks that partition the numbers, respect the limits and hold
        /// exactly what a plain map holds; point, batch and range reads agree with it.
        #[test]
        fn any_writes_match_a_plain_map(
            writes in proptest::collection::vec(
                proptest::collection::vec((0u64..300, proptest::option::of(0usize..900)), 0..40),
                1..25,
            ),
            after in 0u64..300,
            limit in 1usize..50,
        ) {
            let tree = tree();
            let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            for write in writes {
                let mut changes = BTreeMap::new();
                for (n, size) in write {
                    let record = size.map(|s| record(n, s));
                    match &record {
                        Some(r) => model.insert(n, r.clone()),
                        None => model.remove(&n),
                    };
                    changes.insert(n, record);
                }
                let mut batch = Batch::default();
                map().write(&tree, &mut batch, changes).unwrap();
                tree.apply_batch(batch).unwrap();
                check(&tree, &model);
            }
            for n in [0, 1, 150, 299, after] {
                proptest::prop_assert_eq!(map().get(&tree, n).unwrap(), model.get(&n).cloned());
            }
            let numbers: Vec<u64> = (0..300).step_by(7).collect();
            let many = map().get_many(&tree, &numbers).unwrap();
            let expected: Vec<_> = numbers.iter().map(|n| model.get(n).cloned()).collect();
            proptest::prop_assert_eq!(many, expected);
            let page = map().read(&tree, after, limit).unwrap();
            let expected: Entries = model
                .range(after + 1..)
                .take(limit)
                .map(|(n, r)| (*n, r.clone()))
                .collect();
            proptest::prop_assert_eq!(page, expected);
        }
    }

    #[test]
    fn one_key_per_entry_records_migrate_into_chunks() {
        let tree = tree();
        let old = Key::new(b'C');
        let mut model = BTreeMap::new();
        for n in (1..=10_000u64).filter(|n| n % 7 != 0) {
            let r = record(n, 20);
            tree.insert(old.with_num(n), r.clone()).unwrap();
            model.insert(n, r);
        }
        assert_eq!(map().migrate_from(&tree, &old).unwrap(), model.len() as u64);
        assert_eq!(tree.scan_prefix([b'C']).count(), 0);
        check(&tree, &model);
        assert_eq!(
            map().migrate_from(&tree, &old).unwrap(),
            0,
            "a second run moves nothing"
        );
    }
}
