//! The on-disk encoding: key layouts of the hub and node trees, and value formats.
//!
//! Keys start with a one-byte record class. Variable-length parts that are followed by more
//! key bytes are length-prefixed (one byte; every id and kind is at most 128 bytes), so no key
//! is a prefix of another class's key. Numbers are big-endian `u64`, so a range scan walks
//! them in numeric order.

use std::fmt::Display;

use synckit_types::{Error, Event, Result, Seq, StoredEvent};

use crate::error::corrupted;

/// The on-disk schema this build writes and reads. Bump it when a layout below changes.
pub const SCHEMA_VERSION: u32 = 4;

/// Name of the tree holding the schema marker.
pub(crate) const META_TREE: &str = "synckit_meta";
/// Name of the tree holding every tenant's hub log.
pub(crate) const HUB_TREE: &str = "synckit_hub";
/// Name of the tree holding the node's state.
pub(crate) const NODE_TREE: &str = "synckit_node";
/// Key of the schema version in [`META_TREE`].
pub(crate) const SCHEMA_KEY: &[u8] = b"schema_version";
/// Key naming the writer in [`META_TREE`], so a foreign sled database is recognised.
pub(crate) const FORMAT_KEY: &[u8] = b"format";
/// Value of [`FORMAT_KEY`].
pub(crate) const FORMAT: &[u8] = b"synckit-store-sled";

// Hub tree record classes.
/// `H tenant` -> head `u64`.
pub(crate) const HUB_HEAD: u8 = b'H';
/// `E lp(tenant) last-seq` -> a chunk of consecutive events (see [`ChunkBuilder`]).
pub(crate) const HUB_EVENT: u8 = b'E';
/// Schema 1 only, moved to [`HUB_ID_RUN`] at open: `I lp(tenant) event-id` -> seq `u64`.
pub(crate) const HUB_ID: u8 = b'I';
/// `J lp(tenant) first-event-id` -> a sorted run of ids and their seqs (see `idindex`).
pub(crate) const HUB_ID_RUN: u8 = b'J';
/// `A lp(tenant) lp(aggregate) last-seq` -> aggregate entries (see [`encode_aggregate`]).
pub(crate) const HUB_AGGREGATE: u8 = b'A';
/// `K lp(tenant) lp(kind) last-seq` -> the `seq`s (`u64` each) of that kind.
pub(crate) const HUB_KIND: u8 = b'K';

// Node tree record classes.
/// `M` -> node meta (JSON).
pub(crate) const NODE_META: u8 = b'M';
/// Schema 2 only, moved to [`NODE_CONFIRMED_CHUNK`] at open: `C seq` -> event record.
pub(crate) const NODE_CONFIRMED: u8 = b'C';
/// Since schema 3: `K last-seq` -> a chunk of confirmed event records by seq (see `chunks`).
pub(crate) const NODE_CONFIRMED_CHUNK: u8 = b'K';
/// Schema 1 only, moved to [`NODE_CONFIRMED_ID_RUN`] at open: `c event-id` -> seq `u64`.
pub(crate) const NODE_CONFIRMED_ID: u8 = b'c';
/// `d first-event-id` -> a sorted run of confirmed ids and their seqs (see `idindex`).
pub(crate) const NODE_CONFIRMED_ID_RUN: u8 = b'd';
/// `V aggregate` -> highest confirmed version `u64`.
pub(crate) const NODE_VERSION: u8 = b'V';
/// Schema 2 only, moved to [`NODE_OUTBOX_CHUNK`] at open: `O ordinal` -> outbox record.
pub(crate) const NODE_OUTBOX: u8 = b'O';
/// Schema 3 only, moved to [`NODE_OUTBOX_ID_RUN`] at open: `o event-id` -> ordinal `u64` ++
/// aggregate id.
pub(crate) const NODE_OUTBOX_ID: u8 = b'o';
/// Since schema 4: `p first-event-id` -> a sorted run of pending ids, each with its ordinal
/// and aggregate (see `idindex`).
pub(crate) const NODE_OUTBOX_ID_RUN: u8 = b'p';
/// Schema 2 only, moved to [`NODE_OUTBOX_AGGREGATE_CHUNK`] at open: `P lp(aggregate) ordinal`
/// -> empty.
pub(crate) const NODE_OUTBOX_AGGREGATE: u8 = b'P';
/// Since schema 3: `B last-ordinal` -> a chunk of outbox records by ordinal.
pub(crate) const NODE_OUTBOX_CHUNK: u8 = b'B';
/// Since schema 3: `G lp(aggregate) last-ordinal` -> a chunk of the aggregate's ordinals.
pub(crate) const NODE_OUTBOX_AGGREGATE_CHUNK: u8 = b'G';
/// Since schema 3: `Q aggregate` -> number of its pending events `u64`, absent when none.
pub(crate) const NODE_OUTBOX_COUNT: u8 = b'Q';
/// `R number` -> review entry (JSON).
pub(crate) const NODE_REVIEW: u8 = b'R';
/// `r review-id` -> number `u64`.
pub(crate) const NODE_REVIEW_ID: u8 = b'r';
/// `U number` -> audit record (JSON).
pub(crate) const NODE_AUDIT: u8 = b'U';
/// `u audit-id` -> number `u64`.
pub(crate) const NODE_AUDIT_ID: u8 = b'u';
/// `X lp(aggregate) number` -> empty.
pub(crate) const NODE_AUDIT_AGGREGATE: u8 = b'X';

/// First byte of an event or outbox record: the value format.
const RECORD_V1: u8 = 1;
/// Bytes before the event JSON in an event record: format, aggregate version, recorded_at.
const EVENT_HEADER: usize = 1 + 8 + 8;

/// Build keys by appending parts.
#[derive(Debug, Clone)]
pub(crate) struct Key(Vec<u8>);

impl Key {
    /// A key of record class `class`.
    pub(crate) fn new(class: u8) -> Key {
        let mut bytes = Vec::with_capacity(48);
        bytes.push(class);
        Key(bytes)
    }

    /// Append a length-prefixed part. Longer than 255 bytes is a bug: callers bound it.
    pub(crate) fn part(mut self, bytes: &[u8]) -> Result<Key> {
        let len = u8::try_from(bytes.len()).map_err(|_| {
            Error::internal(format!("key part of {} bytes is too long", bytes.len()))
        })?;
        self.0.push(len);
        self.0.extend_from_slice(bytes);
        Ok(self)
    }

    /// Append the final, unprefixed part.
    pub(crate) fn tail(mut self, bytes: &[u8]) -> Key {
        self.0.extend_from_slice(bytes);
        self
    }

    /// Append a big-endian number.
    pub(crate) fn num(mut self, n: u64) -> Key {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }

    /// The bytes built so far.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// This prefix followed by `n`, without consuming the prefix.
    pub(crate) fn with_num(&self, n: u64) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.0.len() + 8);
        bytes.extend_from_slice(&self.0);
        bytes.extend_from_slice(&n.to_be_bytes());
        bytes
    }

    /// This prefix followed by `tail`, without consuming the prefix.
    pub(crate) fn with_tail(&self, tail: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.0.len() + tail.len());
        bytes.extend_from_slice(&self.0);
        bytes.extend_from_slice(tail);
        bytes
    }

    /// The bytes.
    pub(crate) fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

/// A big-endian `u64` value or key suffix.
pub(crate) fn u64_bytes(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Decode the big-endian `u64` at the start of `bytes`.
pub(crate) fn read_u64(bytes: &[u8], what: &dyn Display) -> Result<u64> {
    bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| {
            corrupted(format!(
                "{what}: expected an 8-byte number, found {} bytes",
                bytes.len()
            ))
        })
}

/// Decode the big-endian `u64` at the end of a key.
pub(crate) fn key_suffix_u64(key: &[u8], what: &dyn Display) -> Result<u64> {
    let start = key
        .len()
        .checked_sub(8)
        .ok_or_else(|| corrupted(format!("{what}: key of {} bytes is too short", key.len())))?;
    read_u64(&key[start..], what)
}

/// Encode an event with its hub position (the `seq` is in the key).
pub(crate) fn encode_stored(
    event: &Event,
    aggregate_version: u64,
    recorded_at: u64,
) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(EVENT_HEADER + 256);
    bytes.push(RECORD_V1);
    bytes.extend_from_slice(&aggregate_version.to_be_bytes());
    bytes.extend_from_slice(&recorded_at.to_be_bytes());
    serde_json::to_writer(&mut bytes, event)
        .map_err(|e| Error::internal(format!("encoding event {}: {e}", event.id)).with_source(e))?;
    Ok(bytes)
}

/// The aggregate version and `recorded_at` of an event record, without decoding the event.
pub(crate) fn stored_header(bytes: &[u8], what: &dyn Display) -> Result<(u64, u64)> {
    if bytes.len() < EVENT_HEADER || bytes[0] != RECORD_V1 {
        return Err(corrupted(format!(
            "{what}: the event record is malformed ({} bytes, format byte {:?})",
            bytes.len(),
            bytes.first()
        )));
    }
    Ok((
        read_u64(&bytes[1..9], what)?,
        read_u64(&bytes[9..17], what)?,
    ))
}

/// Decode an event record stored at `seq`.
pub(crate) fn decode_stored(seq: Seq, bytes: &[u8], what: &dyn Display) -> Result<StoredEvent> {
    let (aggregate_version, recorded_at) = stored_header(bytes, what)?;
    let event: Event = serde_json::from_slice(&bytes[EVENT_HEADER..]).map_err(|e| {
        corrupted(format!(
            "{what}: the event at seq {seq} does not decode: {e}"
        ))
        .with_source(e)
    })?;
    Ok(StoredEvent {
        event,
        seq,
        aggregate_version,
        recorded_at,
    })
}

/// Encode an outbox event.
pub(crate) fn encode_event(event: &Event) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(1 + 256);
    bytes.push(RECORD_V1);
    serde_json::to_writer(&mut bytes, event)
        .map_err(|e| Error::internal(format!("encoding event {}: {e}", event.id)).with_source(e))?;
    Ok(bytes)
}

/// Decode an outbox event.
pub(crate) fn decode_event(bytes: &[u8], what: &dyn Display) -> Result<Event> {
    match bytes.split_first() {
        Some((&RECORD_V1, json)) => serde_json::from_slice(json).map_err(|e| {
            corrupted(format!("{what}: the outbox event does not decode: {e}")).with_source(e)
        }),
        _ => Err(corrupted(format!("{what}: the outbox record is malformed"))),
    }
}

/// Encode a JSON record (review entries, audit records, node meta).
pub(crate) fn encode_json<T: serde::Serialize>(value: &T, what: &str) -> Result<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|e| Error::internal(format!("encoding {what}: {e}")).with_source(e))
}

/// Decode a JSON record.
pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &dyn Display,
) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| corrupted(format!("{what} does not decode: {e}")).with_source(e))
}

/// Format byte of an event chunk.
const CHUNK_V1: u8 = 1;
/// Chunk header: format, first seq, count, recorded_at.
const CHUNK_HEADER: usize = 1 + 8 + 4 + 8;
/// Per-event table entry of a chunk: aggregate version, JSON length.
const CHUNK_ENTRY: usize = 8 + 4;
/// Most events in one chunk. sled's cost is per key written, so chunks make an append write a
/// few dozen values instead of one per event. They stay small because sled splits a leaf at 17
/// entries and writes a leaf over 128 KiB (a quarter of its 512 KiB segment) as a separate blob
/// file: 16 events of ~330 bytes, or at most [`CHUNK_BYTES`] of JSON plus one event, keep a full
/// leaf of chunks under that. A page read decodes at most one partial chunk at each end.
pub(crate) const CHUNK_EVENTS: usize = 16;
/// A chunk is closed once its JSON reaches this many bytes (a larger event gets its own).
pub(crate) const CHUNK_BYTES: usize = 6 * 1024;
/// Most entries in one aggregate or kind index record (about 3.5 KiB), for the same reason.
pub(crate) const INDEX_ENTRIES: usize = 128;

/// Builds event chunks: consecutive events, each encoded once, straight into the chunk.
///
/// Layout: `[1][first_seq u64][count u32][recorded_at u64]`, then per event
/// `[aggregate_version u64][json_len u32]`, then the events' JSON back to back.
#[derive(Debug)]
pub(crate) struct ChunkBuilder {
    first: Seq,
    recorded_at: u64,
    count: u32,
    table: Vec<u8>,
    json: Vec<u8>,
}

impl ChunkBuilder {
    /// An empty chunk of events appended at `recorded_at`.
    pub(crate) fn new(recorded_at: u64) -> ChunkBuilder {
        ChunkBuilder {
            first: Seq::ZERO,
            recorded_at,
            count: 0,
            table: Vec::with_capacity(CHUNK_EVENTS * CHUNK_ENTRY),
            json: Vec::with_capacity(CHUNK_BYTES),
        }
    }

    /// Add the event at `seq`, which follows the previous one.
    pub(crate) fn push(&mut self, seq: Seq, event: &Event, aggregate_version: u64) -> Result<()> {
        if self.count == 0 {
            self.first = seq;
        }
        let start = self.json.len();
        serde_json::to_writer(&mut self.json, event).map_err(|e| {
            Error::internal(format!("encoding event {}: {e}", event.id)).with_source(e)
        })?;
        let len = u32::try_from(self.json.len() - start)
            .map_err(|_| Error::internal(format!("event {} is over 4 GiB", event.id)))?;
        self.table
            .extend_from_slice(&aggregate_version.to_be_bytes());
        self.table.extend_from_slice(&len.to_be_bytes());
        self.count += 1;
        Ok(())
    }

    /// Whether the chunk should be closed.
    pub(crate) fn is_full(&self) -> bool {
        self.count as usize >= CHUNK_EVENTS || self.json.len() >= CHUNK_BYTES
    }

    /// Close the chunk: its last seq and bytes (`None` when empty); the builder starts over.
    pub(crate) fn finish(&mut self) -> Option<(Seq, Vec<u8>)> {
        if self.count == 0 {
            return None;
        }
        let last = Seq(self.first.get() + u64::from(self.count) - 1);
        let mut bytes = Vec::with_capacity(CHUNK_HEADER + self.table.len() + self.json.len());
        bytes.push(CHUNK_V1);
        bytes.extend_from_slice(&self.first.get().to_be_bytes());
        bytes.extend_from_slice(&self.count.to_be_bytes());
        bytes.extend_from_slice(&self.recorded_at.to_be_bytes());
        bytes.append(&mut self.table);
        bytes.append(&mut self.json);
        self.count = 0;
        Some((last, bytes))
    }
}

/// A decoded chunk header and table; events are decoded one at a time.
#[derive(Debug)]
pub(crate) struct Chunk {
    bytes: sled::IVec,
    first: u64,
    recorded_at: u64,
    /// Per event: aggregate version and the byte range of its JSON.
    entries: Vec<(u64, usize, usize)>,
}

impl Chunk {
    /// Parse and check a chunk stored under a key ending in `last_seq`.
    pub(crate) fn parse(bytes: sled::IVec, last_seq: u64, what: &dyn Display) -> Result<Chunk> {
        let bad = |why: &str| {
            corrupted(format!(
                "{what}: event chunk ending at seq {last_seq} {why}"
            ))
        };
        if bytes.len() < CHUNK_HEADER || bytes[0] != CHUNK_V1 {
            return Err(bad("has a malformed header"));
        }
        let first = read_u64(&bytes[1..9], what)?;
        let count = bytes[9..13]
            .try_into()
            .map(u32::from_be_bytes)
            .map_err(|_| bad("has a malformed count"))?;
        let recorded_at = read_u64(&bytes[13..21], what)?;
        let count = usize::try_from(count).map_err(|_| bad("has a malformed count"))?;
        if count == 0 || first.checked_add(len_u64(count) - 1) != Some(last_seq) {
            return Err(bad("does not hold the seqs its key names"));
        }
        let table_end = count
            .checked_mul(CHUNK_ENTRY)
            .and_then(|t| t.checked_add(CHUNK_HEADER))
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| bad("is truncated"))?;
        let mut entries = Vec::with_capacity(count);
        let mut start = table_end;
        for entry in bytes[CHUNK_HEADER..table_end].chunks_exact(CHUNK_ENTRY) {
            let version = read_u64(&entry[..8], what)?;
            let len = entry[8..12]
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| bad("has a malformed length"))?;
            let end = usize::try_from(len)
                .ok()
                .and_then(|len| start.checked_add(len))
                .filter(|&end| end <= bytes.len())
                .ok_or_else(|| bad("is truncated"))?;
            entries.push((version, start, end));
            start = end;
        }
        if start != bytes.len() {
            return Err(bad("has trailing bytes"));
        }
        Ok(Chunk {
            bytes,
            first,
            recorded_at,
            entries,
        })
    }

    /// The first seq in the chunk.
    pub(crate) fn first(&self) -> Seq {
        Seq(self.first)
    }

    /// The last seq in the chunk.
    pub(crate) fn last(&self) -> Seq {
        Seq(self.first + len_u64(self.entries.len()) - 1)
    }

    /// Whether `seq` is in this chunk.
    pub(crate) fn holds(&self, seq: Seq) -> bool {
        self.first() <= seq && seq <= self.last()
    }

    /// Decode the event at `seq`, which must be in the chunk.
    pub(crate) fn event(&self, seq: Seq, what: &dyn Display) -> Result<StoredEvent> {
        let index = seq
            .get()
            .checked_sub(self.first)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.entries.get(i))
            .ok_or_else(|| Error::internal(format!("{what}: seq {seq} is not in this chunk")))?;
        let (aggregate_version, start, end) = *index;
        let event: Event = serde_json::from_slice(&self.bytes[start..end]).map_err(|e| {
            corrupted(format!(
                "{what}: the event at seq {seq} does not decode: {e}"
            ))
            .with_source(e)
        })?;
        Ok(StoredEvent {
            event,
            seq,
            aggregate_version,
            recorded_at: self.recorded_at,
        })
    }
}

/// One event of an aggregate index record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AggregateEntry {
    pub(crate) seq: Seq,
    pub(crate) version: u64,
    pub(crate) kind: String,
}

/// Encode aggregate index entries: `[last version u64]`, then per event
/// `[seq u64][version u64][kind_len u8][kind]`.
pub(crate) fn encode_aggregate(entries: &[(Seq, u64, &str)]) -> Result<Vec<u8>> {
    let last_version = entries.last().map_or(0, |e| e.1);
    let mut bytes = Vec::with_capacity(8 + entries.len() * 32);
    bytes.extend_from_slice(&last_version.to_be_bytes());
    for (seq, version, kind) in entries {
        let len = u8::try_from(kind.len())
            .map_err(|_| Error::internal(format!("kind {kind:?} is too long for the index")))?;
        bytes.extend_from_slice(&seq.get().to_be_bytes());
        bytes.extend_from_slice(&version.to_be_bytes());
        bytes.push(len);
        bytes.extend_from_slice(kind.as_bytes());
    }
    Ok(bytes)
}

/// The version of the last event in an aggregate index record.
pub(crate) fn aggregate_last_version(bytes: &[u8], what: &dyn Display) -> Result<u64> {
    read_u64(bytes, what)
}

/// Decode aggregate index entries.
pub(crate) fn decode_aggregate(bytes: &[u8], what: &dyn Display) -> Result<Vec<AggregateEntry>> {
    let bad = || corrupted(format!("{what}: an aggregate index record is malformed"));
    let mut rest = bytes.get(8..).ok_or_else(bad)?;
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let seq = Seq(read_u64(rest, what)?);
        let version = read_u64(rest.get(8..).ok_or_else(bad)?, what)?;
        let len = usize::from(*rest.get(16).ok_or_else(bad)?);
        let kind = rest.get(17..17 + len).ok_or_else(bad)?;
        let kind = std::str::from_utf8(kind).map_err(|_| bad())?.to_owned();
        entries.push(AggregateEntry { seq, version, kind });
        rest = &rest[17 + len..];
    }
    Ok(entries)
}

/// Encode a kind index record: the seqs, big-endian.
pub(crate) fn encode_seqs(seqs: &[Seq]) -> Vec<u8> {
    seqs.iter().flat_map(|s| s.get().to_be_bytes()).collect()
}

/// Decode a kind index record.
pub(crate) fn decode_seqs(bytes: &[u8], what: &dyn Display) -> Result<Vec<Seq>> {
    if !bytes.len().is_multiple_of(8) {
        return Err(corrupted(format!(
            "{what}: a kind index record is malformed"
        )));
    }
    bytes
        .chunks_exact(8)
        .map(|b| read_u64(b, what).map(Seq))
        .collect()
}

fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use synckit_types::{ErrorKind, Hlc};

    fn event() -> Event {
        Event::builder("K", "a")
            .id("e1")
            .origin("n")
            .hlc(Hlc::new(1, 2))
            .data(serde_json::json!({"x": 1}))
            .expected_version(4)
            .build()
            .unwrap()
    }

    #[test]
    fn stored_round_trip() {
        let bytes = encode_stored(&event(), 3, 99).unwrap();
        let back = decode_stored(Seq(7), &bytes, &"test").unwrap();
        assert_eq!(back.event, event());
        assert_eq!(
            (back.seq, back.aggregate_version, back.recorded_at),
            (Seq(7), 3, 99)
        );
        assert_eq!(stored_header(&bytes, &"test").unwrap(), (3, 99));
    }

    #[test]
    fn damaged_records_are_corrupted_errors() {
        let mut bytes = encode_stored(&event(), 3, 99).unwrap();
        let err = decode_stored(Seq(1), &bytes[..5], &"t").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted);
        bytes[0] = 9;
        assert_eq!(
            decode_stored(Seq(1), &bytes, &"t").unwrap_err().kind(),
            ErrorKind::Corrupted
        );
        let mut bytes = encode_stored(&event(), 3, 99).unwrap();
        let last = bytes.len() - 1;
        bytes[last] = b'!';
        assert_eq!(
            decode_stored(Seq(1), &bytes, &"t").unwrap_err().kind(),
            ErrorKind::Corrupted
        );
        assert_eq!(
            decode_event(b"", &"t").unwrap_err().kind(),
            ErrorKind::Corrupted
        );
        assert_eq!(
            read_u64(b"abc", &"t").unwrap_err().kind(),
            ErrorKind::Corrupted
        );
    }

    #[test]
    fn chunks_round_trip_and_reject_damage() {
        let (a, mut b) = (event(), event());
        b.id = synckit_types::EventId::new("e2").unwrap();
        let mut builder = ChunkBuilder::new(77);
        builder.push(Seq(10), &a, 1).unwrap();
        builder.push(Seq(11), &b, 2).unwrap();
        let (last, bytes) = builder.finish().unwrap();
        assert_eq!(last, Seq(11));
        assert!(builder.finish().is_none(), "the builder starts over");
        let chunk = Chunk::parse(sled::IVec::from(bytes.clone()), 11, &"t").unwrap();
        assert_eq!((chunk.first(), chunk.last()), (Seq(10), Seq(11)));
        assert!(chunk.holds(Seq(11)) && !chunk.holds(Seq(12)));
        let second = chunk.event(Seq(11), &"t").unwrap();
        assert_eq!(
            (
                second.event.id.as_str(),
                second.aggregate_version,
                second.recorded_at
            ),
            ("e2", 2, 77)
        );
        // Wrong key, truncation, trailing bytes, bad JSON.
        assert!(Chunk::parse(sled::IVec::from(bytes.clone()), 12, &"t").is_err());
        assert!(Chunk::parse(sled::IVec::from(&bytes[..bytes.len() - 1]), 11, &"t").is_err());
        let mut longer = bytes.clone();
        longer.push(b' ');
        assert!(Chunk::parse(sled::IVec::from(longer), 11, &"t").is_err());
        let mut bad = bytes;
        let last = bad.len() - 1;
        bad[last] = b'!';
        let chunk = Chunk::parse(sled::IVec::from(bad), 11, &"t").unwrap();
        assert_eq!(
            chunk.event(Seq(11), &"t").unwrap_err().kind(),
            ErrorKind::Corrupted
        );
    }

    #[test]
    fn index_records_round_trip() {
        let bytes = encode_aggregate(&[(Seq(3), 1, "K1"), (Seq(9), 2, "K2")]).unwrap();
        assert_eq!(aggregate_last_version(&bytes, &"t").unwrap(), 2);
        let entries = decode_aggregate(&bytes, &"t").unwrap();
        assert_eq!(
            entries[1],
            AggregateEntry {
                seq: Seq(9),
                version: 2,
                kind: "K2".into()
            }
        );
        assert!(decode_aggregate(&bytes[..bytes.len() - 1], &"t").is_err());
        let seqs = [Seq(1), Seq(5)];
        assert_eq!(decode_seqs(&encode_seqs(&seqs), &"t").unwrap(), seqs);
        assert!(decode_seqs(b"abc", &"t").is_err());
    }

    #[test]
    fn keys_sort_numerically_and_parts_are_prefix_free() {
        let prefix = Key::new(HUB_EVENT).part(b"t").unwrap();
        assert!(prefix.with_num(255) < prefix.with_num(256));
        let a = Key::new(HUB_EVENT).part(b"t").unwrap().num(1).into_vec();
        let b = Key::new(HUB_EVENT).part(b"tt").unwrap().into_vec();
        assert!(!a.starts_with(&b) && !b.starts_with(&a));
        assert!(Key::new(HUB_KIND).part(&[b'k'; 300]).is_err());
        assert_eq!(key_suffix_u64(&a, &"t").unwrap(), 1);
    }
}
