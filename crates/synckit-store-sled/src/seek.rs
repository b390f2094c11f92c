//! Range reads that seek afresh for every record, so long scans stay inside sled's cache.
//!
//! sled 0.34 tells its page cache about an access only in blocks: each of the LRU's 256 shards
//! queues accesses and accounts for them (and evicts) once 64 have queued. A `sled::Iter`
//! touches each leaf page once, however many records it yields from it, so a scan over a large
//! log brings in pages the cache has not yet counted, up to 63 per shard: with the hub's
//! leaves of 16 event chunks (about 60 KiB) that was 200–280 MiB of resident memory past the
//! configured capacity after a 1,000,000-event pull, whatever the capacity (BENCHMARKS.md).
//! [`Seek`] opens a new range for each record instead, so a leaf is touched once per record
//! it holds, the shards' queues fill with repeated accesses to the same few pages, and the
//! cache's accounting keeps up. A seek is a descent from the root, about a microsecond; a
//! record here is a chunk of up to 16 events, so the cost per event is small.

use std::ops::Bound;

use sled::{IVec, Tree};

/// The records of `tree` between two bounds, in key order, one seek each.
pub(crate) struct Seek<'t> {
    tree: &'t Tree,
    from: Bound<IVec>,
    to: Bound<IVec>,
    done: bool,
}

impl<'t> Seek<'t> {
    /// The records with keys within `(from, to)`.
    pub(crate) fn new(tree: &'t Tree, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Seek<'t> {
        let own = |b: Bound<&[u8]>| b.map(IVec::from);
        Seek {
            tree,
            from: own(from),
            to: own(to),
            done: false,
        }
    }
}

impl Iterator for Seek<'_> {
    type Item = sled::Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self
            .tree
            .range::<IVec, _>((self.from.clone(), self.to.clone()))
            .next();
        match &item {
            Some(Ok((key, _))) => self.from = Bound::Excluded(key.clone()),
            _ => self.done = true,
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A range of owned keys.
    type Range = (Bound<Vec<u8>>, Bound<Vec<u8>>);

    fn keys(items: impl Iterator<Item = sled::Result<(IVec, IVec)>>) -> sled::Result<Vec<Vec<u8>>> {
        items.map(|item| item.map(|(k, _)| k.to_vec())).collect()
    }

    #[test]
    fn a_seek_yields_what_the_range_does() -> sled::Result<()> {
        let db = sled::Config::new().temporary(true).open()?;
        let tree = db.open_tree("t")?;
        for n in (0u16..600).step_by(3) {
            tree.insert(n.to_be_bytes(), &n.to_be_bytes()[..])?;
        }
        let k = |n: u16| n.to_be_bytes().to_vec();
        let cases: Vec<Range> = vec![
            (Bound::Unbounded, Bound::Unbounded),
            (Bound::Excluded(k(3)), Bound::Included(k(300))),
            (Bound::Included(k(3)), Bound::Excluded(k(300))),
            (Bound::Excluded(k(4)), Bound::Included(k(5))),
            (Bound::Excluded(k(599)), Bound::Unbounded),
            (Bound::Included(k(6)), Bound::Included(k(6))),
            (Bound::Excluded(k(6)), Bound::Included(k(6))),
            (Bound::Unbounded, Bound::Excluded(k(0))),
        ];
        for (from, to) in cases {
            let seek = Seek::new(
                &tree,
                from.as_ref().map(Vec::as_slice),
                to.as_ref().map(Vec::as_slice),
            );
            let range = tree.range::<Vec<u8>, _>((from.clone(), to.clone()));
            assert_eq!(keys(seek)?, keys(range)?, "{from:?}..{to:?}");
        }
        Ok(())
    }

    #[test]
    fn a_seek_sees_records_written_between_its_steps() -> sled::Result<()> {
        let db = sled::Config::new().temporary(true).open()?;
        let tree = db.open_tree("t")?;
        tree.insert([1], &[][..])?;
        tree.insert([5], &[][..])?;
        let mut seek = Seek::new(&tree, Bound::Unbounded, Bound::Unbounded);
        assert_eq!(
            seek.next().transpose()?.map(|(k, _)| k.to_vec()),
            Some(vec![1])
        );
        tree.insert([3], &[][..])?;
        let rest = keys(seek)?;
        assert_eq!(rest, vec![vec![3], vec![5]]);
        Ok(())
    }
}
