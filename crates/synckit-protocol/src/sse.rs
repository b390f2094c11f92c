//! Server-Sent Events framing for `GET /v1/stream`: encoding on the hub, an incremental parser
//! with a frame-size bound on the client.

use synckit_types::{Error, Result, StoredEvent};

/// The comment line a hub sends to keep an idle stream alive.
pub const HEARTBEAT: &str = ": keep-alive\n\n";

/// The frame for one event: `id: <seq>`, `event: event`, `data: <json>`.
pub fn encode_event(event: &StoredEvent) -> Result<String> {
    let json = serde_json::to_string(event)
        .map_err(|e| Error::internal(format!("encoding event {}: {e}", event.event.id)))?;
    Ok(format!("id: {}\nevent: event\ndata: {json}\n\n", event.seq))
}

/// The frame a hub sends before closing a stream on purpose (for example a slow subscriber).
pub fn encode_close(code: &str, message: &str) -> String {
    let body = serde_json::json!({"code": code, "message": message});
    format!("event: close\ndata: {body}\n\n")
}

/// One parsed frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frame {
    /// The `id:` field, if any.
    pub id: Option<String>,
    /// The `event:` field (`message` when absent).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// An incremental SSE parser: feed it bytes as they arrive, take frames out.
#[derive(Debug)]
pub struct Parser {
    /// Bytes of frames not complete yet.
    buffer: Vec<u8>,
    /// How much of `buffer` has been searched for a blank line already.
    scanned: usize,
    max_frame: usize,
}

impl Parser {
    /// A parser that refuses frames longer than `max_frame` bytes, counting the blank line
    /// that ends a frame.
    pub fn new(max_frame: usize) -> Parser {
        Parser {
            buffer: Vec::new(),
            scanned: 0,
            max_frame,
        }
    }

    /// Add bytes; returns the frames they complete. Comment-only frames (heartbeats) are
    /// skipped. Fails when a frame grows past the bound or is not UTF-8.
    ///
    /// The bound holds however the stream is cut into chunks: a frame that arrives whole in
    /// one chunk is measured like one that arrives a byte at a time. Each byte is searched for
    /// the end of its frame once, and completed frames are removed from the buffer in one step,
    /// so a feed costs time linear in the bytes it adds, whatever the chunking.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Frame>> {
        self.buffer.extend_from_slice(bytes);
        let mut frames = Vec::new();
        let mut start = 0;
        // A blank line may straddle the old end of the buffer: step back over its first 3 bytes.
        let mut from = self.scanned.saturating_sub(3);
        let result = loop {
            let Some((end, skip)) = frame_end(&self.buffer, from) else {
                break if self.buffer.len() - start > self.max_frame {
                    Err(self.too_long())
                } else {
                    Ok(frames)
                };
            };
            if end + skip - start > self.max_frame {
                break Err(self.too_long());
            }
            let Ok(text) = std::str::from_utf8(&self.buffer[start..end]) else {
                break Err(Error::protocol("event-stream frame is not UTF-8"));
            };
            if let Some(frame) = parse_frame(text) {
                frames.push(frame);
            }
            start = end + skip;
            from = start;
        };
        self.buffer.drain(..start);
        self.scanned = self.buffer.len();
        result
    }

    fn too_long(&self) -> Error {
        Error::protocol(format!(
            "event-stream frame longer than {} bytes",
            self.max_frame
        ))
    }
}

/// Where the first blank line at or after `from` ends a frame: (its offset, its length).
fn frame_end(buffer: &[u8], from: usize) -> Option<(usize, usize)> {
    (from..buffer.len()).find_map(|i| {
        let rest = &buffer[i..];
        if rest.starts_with(b"\n\n") {
            Some((i, 2))
        } else if rest.starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else {
            None
        }
    })
}

fn parse_frame(text: &str) -> Option<Frame> {
    let mut frame = Frame {
        event: "message".to_owned(),
        ..Frame::default()
    };
    let mut data: Vec<&str> = Vec::new();
    let mut any = false;
    for line in text.lines() {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        any = true;
        match field {
            "id" => frame.id = Some(value.to_owned()),
            "event" => frame.event = value.to_owned(),
            "data" => data.push(value),
            _ => {}
        }
    }
    frame.data = data.join("\n");
    any.then_some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use synckit_types::{Event, Hlc, Seq};

    fn stored(seq: u64) -> StoredEvent {
        StoredEvent {
            event: Event::builder("K", "a")
                .id(format!("e{seq}"))
                .origin("n")
                .hlc(Hlc::new(1, 0))
                .data(serde_json::json!({"text": "line\nbreak"}))
                .build()
                .unwrap(),
            seq: Seq(seq),
            aggregate_version: 1,
            recorded_at: 0,
        }
    }

    #[test]
    fn frames_survive_any_chunking() {
        let mut wire = String::new();
        wire.push_str(&encode_event(&stored(1)).unwrap());
        wire.push_str(HEARTBEAT);
        wire.push_str(&encode_event(&stored(2)).unwrap());
        for chunk in 1..wire.len() {
            let mut parser = Parser::new(1 << 16);
            let mut frames = Vec::new();
            for piece in wire.as_bytes().chunks(chunk) {
                frames.extend(parser.feed(piece).unwrap());
            }
            assert_eq!(frames.len(), 2, "chunk {chunk}");
            assert_eq!(frames[1].id.as_deref(), Some("2"));
            let back: StoredEvent = serde_json::from_str(&frames[0].data).unwrap();
            assert_eq!(back, stored(1));
        }
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut parser = Parser::new(16);
        assert!(parser.feed(&[b'x'; 17]).is_err());
    }

    #[test]
    fn the_bound_does_not_depend_on_chunking() {
        // Found by fuzzing (fuzz/corpus/sse_frames/oversized): a frame longer than the bound
        // was accepted when it arrived complete in one chunk.
        let wire = format!("data: {}\n\n", "x".repeat(40));
        assert!(Parser::new(9).feed(wire.as_bytes()).is_err());
        let mut parser = Parser::new(wire.len());
        assert_eq!(parser.feed(wire.as_bytes()).unwrap().len(), 1);
        let mut parser = Parser::new(wire.len() - 1);
        let fed: Result<Vec<_>> = wire.as_bytes().chunks(16).map(|c| parser.feed(c)).collect();
        assert!(fed.is_err());
    }

    #[test]
    fn a_blank_line_split_across_chunks_ends_the_frame() {
        for wire in ["data: a\r\n\r\ndata: b\n\n", "data: a\n\ndata: b\r\n\r\n"] {
            for cut in 0..wire.len() {
                let mut parser = Parser::new(64);
                let mut frames = parser.feed(&wire.as_bytes()[..cut]).unwrap();
                frames.extend(parser.feed(&wire.as_bytes()[cut..]).unwrap());
                let data: Vec<_> = frames.iter().map(|f| f.data.as_str()).collect();
                assert_eq!(data, ["a", "b"], "{wire:?} cut at {cut}");
            }
        }
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut parser = Parser::new(128);
            let _ = parser.feed(&bytes);
        }
    }
}
