//! Posting lists: which positions of the log hold the events of one aggregate or one kind.
//!
//! An append writes, for each aggregate and each kind it touched, one row per chunk of the
//! positions it added, instead of one index entry per event: a batch of 1,000 events on ten
//! aggregates of one kind writes a handful of rows, not 2,000 index entries. A row is keyed by
//! `(key, last position)`, so a filtered page seeks to the first row that ends after its
//! cursor and reads on in order.
//!
//! A list is stored as runs of consecutive positions, each run as two LEB128 varints: its start
//! (the first run's as is, later ones as the distance from the previous run's last position)
//! and its length minus one. Kinds come in long runs (a batch is often of one kind) and cost a
//! few bytes per batch; events of interleaved aggregates cost about two bytes each.

use synckit_types::{Error, ErrorKind, Result};

/// A chunk is closed once its encoding reaches this many bytes, so rows stay small (SQLite
/// keeps rows of a few hundred bytes in their B-tree page, without overflow pages).
const CHUNK_BYTES: usize = 256;

/// One chunk of a posting list, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// The last position in the chunk (the row's key with the aggregate or kind).
    pub(crate) last: i64,
    /// The encoded runs.
    pub(crate) runs: Vec<u8>,
}

/// Collects increasing positions and cuts them into encoded chunks.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    chunks: Vec<Chunk>,
    /// The run being built: its start and last position.
    run: Option<(i64, i64)>,
    /// The encoding of the finished runs of the current chunk.
    buf: Vec<u8>,
    /// The last position of the finished runs of the current chunk.
    buf_last: Option<i64>,
}

impl Builder {
    /// Add `position`, greater than every position added before.
    pub(crate) fn push(&mut self, position: i64) {
        match &mut self.run {
            Some((_, last)) if *last + 1 == position => *last = position,
            _ => {
                self.finish_run();
                self.run = Some((position, position));
            }
        }
    }

    fn finish_run(&mut self) {
        let Some((start, last)) = self.run.take() else {
            return;
        };
        match self.buf_last {
            None => put_varint(&mut self.buf, start.unsigned_abs()),
            Some(prev) => put_varint(&mut self.buf, (start - prev).unsigned_abs()),
        }
        put_varint(&mut self.buf, (last - start).unsigned_abs());
        self.buf_last = Some(last);
        if self.buf.len() >= CHUNK_BYTES {
            self.finish_chunk();
        }
    }

    fn finish_chunk(&mut self) {
        if let Some(last) = self.buf_last.take() {
            self.chunks.push(Chunk {
                last,
                runs: std::mem::take(&mut self.buf),
            });
        }
    }

    /// The chunks, in position order.
    pub(crate) fn finish(mut self) -> Vec<Chunk> {
        self.finish_run();
        self.finish_chunk();
        self.chunks
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(u8::try_from(value & 0x7f).unwrap_or(0) | 0x80);
        value >>= 7;
    }
    out.push(u8::try_from(value).unwrap_or(0));
}

fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Append to `out` the positions of chunk `runs` that are greater than `after`, until `out`
/// holds `limit` positions. `what` names the row in errors.
pub(crate) fn decode_after(
    runs: &[u8],
    after: i64,
    limit: usize,
    out: &mut Vec<i64>,
    what: &dyn Fn() -> String,
) -> Result<()> {
    let damaged = || {
        Error::new(
            ErrorKind::Corrupted,
            format!("{} is damaged: its posting list does not decode", what()),
        )
    };
    let mut at = 0;
    let mut prev_last: Option<i64> = None;
    while at < runs.len() && out.len() < limit {
        let gap =
            i64::try_from(get_varint(runs, &mut at).ok_or_else(damaged)?).map_err(|_| damaged())?;
        let start = match prev_last {
            None => gap,
            Some(prev) => prev.checked_add(gap).ok_or_else(damaged)?,
        };
        let len =
            i64::try_from(get_varint(runs, &mut at).ok_or_else(damaged)?).map_err(|_| damaged())?;
        let last = start.checked_add(len).ok_or_else(damaged)?;
        if prev_last.is_some_and(|prev| start <= prev) {
            return Err(damaged());
        }
        let mut p = start.max(after.saturating_add(1));
        while p <= last && out.len() < limit {
            out.push(p);
            p += 1;
        }
        prev_last = Some(last);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(positions: &[i64]) -> Vec<Chunk> {
        let mut b = Builder::default();
        for &p in positions {
            b.push(p);
        }
        b.finish()
    }

    fn decode_all(chunks: &[Chunk], after: i64, limit: usize) -> Vec<i64> {
        let mut out = Vec::new();
        for c in chunks.iter().filter(|c| c.last > after) {
            decode_after(&c.runs, after, limit, &mut out, &|| "test".into()).unwrap();
        }
        out
    }

    #[test]
    fn runs_round_trip_and_stay_small() {
        let base = 7i64 << 40;
        let contiguous: Vec<i64> = (1..=1000).map(|s| base + s).collect();
        let chunks = build(&contiguous);
        assert_eq!(chunks.len(), 1, "one run, one small row");
        assert!(chunks[0].runs.len() < 16);
        assert_eq!(decode_all(&chunks, 0, usize::MAX), contiguous);

        let strided: Vec<i64> = (0..1000).map(|i| base + 3 + 10 * i).collect();
        let chunks = build(&strided);
        assert!(chunks.len() > 1, "long lists are cut into chunks");
        assert!(chunks.iter().all(|c| c.runs.len() < CHUNK_BYTES + 24));
        assert!(chunks.windows(2).all(|w| w[0].last < w[1].last));
        assert_eq!(decode_all(&chunks, 0, usize::MAX), strided);
        let after = base + 503;
        let want: Vec<i64> = strided
            .iter()
            .copied()
            .filter(|&p| p > after)
            .take(7)
            .collect();
        assert_eq!(decode_all(&chunks, after, 7), want);
    }

    #[test]
    fn mixed_runs_round_trip() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..200 {
            let mut p = rng.i64(0..1 << 50);
            let positions: Vec<i64> = (0..rng.usize(1..400))
                .map(|_| {
                    p += if rng.bool() { 1 } else { rng.i64(2..5000) };
                    p
                })
                .collect();
            let chunks = build(&positions);
            assert_eq!(decode_all(&chunks, 0, usize::MAX), positions);
            let cut = positions[rng.usize(0..positions.len())];
            let want: Vec<i64> = positions.iter().copied().filter(|&x| x > cut).collect();
            assert_eq!(decode_all(&chunks, cut, usize::MAX), want);
        }
    }

    #[test]
    fn damage_is_reported() {
        // A cut varint, a cut run length, and a run that starts inside the previous one.
        for bad in [&[0x80u8][..], &[0x05, 0xff], &[0x05, 0x01, 0x00, 0x00]] {
            let err = decode_after(bad, 0, 10, &mut Vec::new(), &|| "row".into()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupted, "{bad:?}");
            assert!(err.to_string().contains("row is damaged"), "{err}");
        }
    }
}
