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
    buffer: Vec<u8>,
    max_frame: usize,
}

impl Parser {
    /// A parser that refuses frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Parser {
        Parser {
            buffer: Vec::new(),
            max_frame,
        }
    }

    /// Add bytes; returns the frames they complete. Comment-only frames (heartbeats) are
    /// skipped. Fails when a frame grows past the bound or is not UTF-8.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Frame>> {
        self.buffer.extend_from_slice(bytes);
        let mut frames = Vec::new();
        loop {
            let Some((end, skip)) = frame_end(&self.buffer) else {
                if self.buffer.len() > self.max_frame {
                    return Err(Error::protocol(format!(
                        "event-stream frame longer than {} bytes",
                        self.max_frame
                    )));
                }
                return Ok(frames);
            };
            let raw: Vec<u8> = self.buffer.drain(..end + skip).collect();
            let text = std::str::from_utf8(&raw[..end])
                .map_err(|_| Error::protocol("event-stream frame is not UTF-8"))?;
            if let Some(frame) = parse_frame(text) {
                frames.push(frame);
            }
        }
    }
}

/// Where the first blank line ends a frame: (frame length, separator length).
fn frame_end(buffer: &[u8]) -> Option<(usize, usize)> {
    (0..buffer.len()).find_map(|i| {
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

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut parser = Parser::new(128);
            let _ = parser.feed(&bytes);
        }
    }
}
