//! The durable spool: a buffered store's write-ahead log, one append-only file of framed
//! records, synced before a write is acknowledged.
//!
//! Record framing: `len: u32 LE | crc32 of body: u32 LE | body` with `body = tag: u8 |
//! seq: u64 LE | payload`. Tag 1 is an item (payload: its JSON), tag 2 a "flushed up to `seq`"
//! marker (no payload). A crash can only tear the tail, so recovery reads records until the
//! first incomplete or damaged one and cuts the file there.
//!
//! The file is rewritten (compacted) when it has grown past a threshold and at least half of it
//! is flushed: the new file holds a marker and the records not yet flushed, and replaces the old
//! one by an atomic rename followed by a sync of the directory.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::warn;

/// Record tag of an item.
const ITEM: u8 = 1;
/// Record tag of a flushed-up-to marker.
const MARKER: u8 = 2;
/// Bytes before the body: length and checksum.
const HEADER: usize = 8;
/// Bytes of a body before the payload: tag and sequence number.
const BODY_HEADER: usize = 9;
/// Longest record body accepted by recovery; a longer length is a torn or damaged header.
const MAX_BODY: usize = 1 << 30;

const LOG: &str = "spool.log";
const TMP: &str = "spool.log.tmp";
const LOCK: &str = "spool.lock";

/// How items become payloads and back; plain functions so a store that is not durable needs no
/// serde bounds on its item type.
pub(crate) struct Codec<T> {
    pub encode: fn(&T, &mut Vec<u8>) -> Result<(), String>,
    pub decode: fn(&[u8]) -> Result<T, String>,
}

impl<T> Clone for Codec<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Codec<T> {}

impl<T: Serialize + DeserializeOwned> Codec<T> {
    pub fn json() -> Self {
        Codec {
            encode: |item, out| serde_json::to_writer(out, item).map_err(|e| e.to_string()),
            decode: |bytes| serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        }
    }
}

/// Append one framed record for `seq` with `payload` to `out`.
pub(crate) fn frame(out: &mut Vec<u8>, tag: u8, seq: u64, payload: &[u8]) {
    let body_len = BODY_HEADER + payload.len();
    // Payloads are single items; the recovery limit keeps them far below u32::MAX.
    let len = u32::try_from(body_len).unwrap_or(u32::MAX);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[tag]);
    crc.update(&seq.to_le_bytes());
    crc.update(payload);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.push(tag);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Frame an item record.
pub(crate) fn frame_item(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    frame(out, ITEM, seq, payload);
}

/// Whether a payload of `len` bytes can be framed and read back.
pub(crate) fn payload_fits(len: usize) -> bool {
    len <= MAX_BODY - BODY_HEADER
}

/// What recovery found in a spool file.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Item records after the last marker, `(seq, payload)` in file order.
    pub items: Vec<(u64, Vec<u8>)>,
    /// The highest flushed-up-to marker.
    pub flushed: u64,
    /// The highest sequence number seen (item or marker).
    pub last_seq: u64,
    /// Length of the intact prefix of the file.
    pub valid_len: u64,
    /// Offset of the first item record with a sequence number above `flushed`.
    pub first_unflushed: Option<u64>,
}

/// Read the records of `bytes` up to the first torn or damaged one.
pub(crate) fn scan(bytes: &[u8]) -> Result<Scan, String> {
    let mut scan = Scan::default();
    let mut items: Vec<(u64, u64, &[u8])> = Vec::new();
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if !(BODY_HEADER..=MAX_BODY).contains(&len) {
            break;
        }
        let Some(body) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if crc32fast::hash(body) != crc {
            break;
        }
        let tag = body[0];
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&body[1..BODY_HEADER]);
        let seq = u64::from_le_bytes(seq_bytes);
        match tag {
            ITEM => {
                if items.last().is_some_and(|(s, _, _)| seq <= *s) {
                    return Err(format!("item seq {seq} at offset {at} is out of order"));
                }
                items.push((seq, at as u64, &body[BODY_HEADER..]));
            }
            MARKER => scan.flushed = scan.flushed.max(seq),
            other => return Err(format!("unknown record tag {other} at offset {at}")),
        }
        scan.last_seq = scan.last_seq.max(seq);
        at += HEADER + len;
    }
    scan.valid_len = at as u64;
    let flushed = scan.flushed;
    scan.first_unflushed = items
        .iter()
        .find(|(seq, _, _)| *seq > flushed)
        .map(|(_, offset, _)| *offset);
    scan.items = items
        .into_iter()
        .filter(|(seq, _, _)| *seq > flushed)
        .map(|(seq, _, payload)| (seq, payload.to_vec()))
        .collect();
    Ok(scan)
}

/// The open spool file, owned by the store's spool thread once the store runs.
#[derive(Debug)]
pub(crate) struct SpoolFile {
    dir: PathBuf,
    file: File,
    /// Held for the life of the spool: a second process must not append to the same file.
    _lock: File,
    len: u64,
    /// Item groups written and not yet known to be flushed: `(last_seq, offset of the group)`.
    groups: VecDeque<(u64, u64)>,
    flushed: u64,
    compact_bytes: u64,
    scratch: Vec<u8>,
}

/// What opening a spool found.
pub(crate) struct Opened {
    pub file: SpoolFile,
    /// Unflushed items, `(seq, payload)` in order.
    pub items: Vec<(u64, Vec<u8>)>,
    /// The flushed-up-to marker.
    pub flushed: u64,
    /// The highest sequence number ever used.
    pub last_seq: u64,
}

impl SpoolFile {
    /// Open (or create) the spool in `dir`, lock it, recover it and cut a torn tail.
    pub fn open(dir: &Path, compact_bytes: u64) -> Result<Opened, (String, std::io::Error)> {
        let ctx = |what: &str| {
            let what = format!("{what} in {}", dir.display());
            move |e: std::io::Error| (what, e)
        };
        std::fs::create_dir_all(dir).map_err(ctx("creating the spool directory"))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))
            .map_err(ctx("opening the spool lock"))?;
        lock_within(&lock, LOCK_WAIT).map_err(|e| {
            (
                format!(
                    "the spool in {} is in use by another buffered store",
                    dir.display()
                ),
                std::io::Error::other(e.to_string()),
            )
        })?;
        // A compaction that crashed before its rename left only a temporary file behind.
        let _ = std::fs::remove_file(dir.join(TMP));
        let path = dir.join(LOG);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(ctx("opening the spool"))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(ctx("reading the spool"))?;
        let found = scan(&bytes).map_err(|message| {
            (
                format!("the spool {} is damaged: {message}", path.display()),
                std::io::Error::from(std::io::ErrorKind::InvalidData),
            )
        })?;
        if found.valid_len < bytes.len() as u64 {
            warn!(
                spool = %path.display(),
                kept = found.valid_len,
                cut = bytes.len() as u64 - found.valid_len,
                "cutting the torn tail of the spool"
            );
            file.set_len(found.valid_len)
                .map_err(ctx("cutting the spool's torn tail"))?;
            file.sync_all().map_err(ctx("syncing the spool"))?;
        }
        file.seek(SeekFrom::Start(found.valid_len))
            .map_err(ctx("seeking in the spool"))?;
        let mut groups = VecDeque::new();
        if let (Some(offset), Some((last, _))) = (found.first_unflushed, found.items.last()) {
            groups.push_back((*last, offset));
        }
        Ok(Opened {
            file: SpoolFile {
                dir: dir.to_owned(),
                file,
                _lock: lock,
                len: found.valid_len,
                groups,
                flushed: found.flushed,
                compact_bytes,
                scratch: Vec::new(),
            },
            items: found.items,
            flushed: found.flushed,
            last_seq: found.last_seq,
        })
    }

    /// Append framed item records (`records`, the last of them numbered `last_seq`) and a
    /// marker, then sync; compact when the file has grown past its threshold.
    pub fn commit(
        &mut self,
        records: &[u8],
        last_seq: u64,
        marker: Option<u64>,
    ) -> std::io::Result<()> {
        self.scratch.clear();
        if !records.is_empty() {
            self.groups.push_back((last_seq, self.len));
        }
        if let Some(marker) = marker {
            frame(&mut self.scratch, MARKER, marker, &[]);
        }
        self.file.write_all(records)?;
        self.file.write_all(&self.scratch)?;
        self.file.sync_data()?;
        self.len += (records.len() + self.scratch.len()) as u64;
        if let Some(marker) = marker {
            self.flushed = self.flushed.max(marker);
            while self
                .groups
                .front()
                .is_some_and(|(last, _)| *last <= self.flushed)
            {
                self.groups.pop_front();
            }
            self.maybe_compact()?;
        }
        Ok(())
    }

    /// Rewrite the file without its flushed records once they are most of a large file.
    fn maybe_compact(&mut self) -> std::io::Result<()> {
        let keep_from = self.groups.front().map_or(self.len, |(_, offset)| *offset);
        if self.len < self.compact_bytes || keep_from < self.len / 2 {
            return Ok(());
        }
        let mut tail = Vec::new();
        let mut reader = File::open(self.dir.join(LOG))?;
        reader.seek(SeekFrom::Start(keep_from))?;
        reader.read_to_end(&mut tail)?;
        let mut head = Vec::new();
        frame(&mut head, MARKER, self.flushed, &[]);
        let tmp = self.dir.join(TMP);
        let mut out = File::create(&tmp)?;
        out.write_all(&head)?;
        out.write_all(&tail)?;
        out.sync_all()?;
        drop(out);
        std::fs::rename(&tmp, self.dir.join(LOG))?;
        sync_dir(&self.dir)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join(LOG))?;
        let len = file.seek(SeekFrom::End(0))?;
        self.file = file;
        let shift = head.len() as u64;
        for group in &mut self.groups {
            group.1 = group.1 - keep_from + shift;
        }
        self.len = len;
        Ok(())
    }

    /// Current length of the spool file, for tests of compaction.
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.len
    }
}

/// How long opening a spool waits for its lock. A lock is briefly held on after its owner
/// closed it when a child process was forked meanwhile (the child shares the open file until
/// it execs), so a store reopened right after `close` may need a moment.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Take the lock of `file`, trying again for up to `wait` while another holder has it.
fn lock_within(file: &File, wait: std::time::Duration) -> Result<(), std::fs::TryLockError> {
    let start = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < wait => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Make a rename in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test.

    use super::*;

    fn items(range: std::ops::RangeInclusive<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        for seq in range {
            frame_item(&mut out, seq, format!("{seq}").as_bytes());
        }
        out
    }

    #[test]
    fn recovery_skips_flushed_items_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = SpoolFile::open(dir.path(), u64::MAX).unwrap().file;
            spool.commit(&items(1..=3), 3, None).unwrap();
            spool.commit(&items(4..=5), 5, Some(3)).unwrap();
        }
        // A torn record: half of a frame.
        let mut torn = items(6..=6);
        torn.truncate(torn.len() - 2);
        let path = dir.path().join(LOG);
        let mut bytes = std::fs::read(&path).unwrap();
        let intact = bytes.len();
        bytes.extend_from_slice(&torn);
        std::fs::write(&path, &bytes).unwrap();

        let opened = SpoolFile::open(dir.path(), u64::MAX).unwrap();
        assert_eq!(opened.flushed, 3);
        assert_eq!(opened.last_seq, 5);
        let seqs: Vec<u64> = opened.items.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [4, 5]);
        assert_eq!(opened.items[0].1, b"4");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), intact as u64);
    }

    #[test]
    fn a_flipped_bit_ends_the_log() {
        let mut bytes = items(1..=3);
        let second = bytes.len() / 3 + HEADER + 2;
        bytes[second] ^= 1;
        let scan = scan(&bytes).unwrap();
        assert_eq!(scan.items.len(), 1);
    }

    #[test]
    fn a_second_opener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SpoolFile::open(dir.path(), u64::MAX).unwrap();
        assert!(SpoolFile::open(dir.path(), u64::MAX).is_err());
    }

    #[test]
    fn compaction_keeps_unflushed_records_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = SpoolFile::open(dir.path(), 256).unwrap().file;
        for round in 0..20u64 {
            let first = round * 10 + 1;
            spool
                .commit(&items(first..=first + 9), first + 9, Some(first + 4))
                .unwrap();
        }
        // Ten records of ~15 bytes each per round: without compaction the file would hold
        // 200 records; with it, little more than the last round's unflushed half.
        assert!(spool.len() < 400, "compacted to {} bytes", spool.len());
        drop(spool);
        let opened = SpoolFile::open(dir.path(), 256).unwrap();
        assert_eq!(opened.flushed, 195);
        let seqs: Vec<u64> = opened.items.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (196..=200).collect::<Vec<_>>());
        assert_eq!(opened.last_seq, 200);
    }
}
