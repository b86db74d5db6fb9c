//! AWS event stream framing (`application/vnd.amazon.eventstream`), the binary framing of
//! Bedrock's `ConverseStream` answer: a reader, and a writer
//! ([`write_message`]) for tests and fuzzing.
//!
//! A message is a 12-byte prelude (total length and headers length, big-endian `u32`s, then the
//! CRC32 of those eight bytes), the headers, the payload and the CRC32 of everything before it.
//! A header is a one-byte name length, the name, a one-byte value type and the value (strings and
//! byte arrays carry a two-byte big-endian length). Both CRCs are checked: a corrupted frame is an
//! error, never a misread event.

use tollway_core::{ErrorKind, ProviderError};

/// Prelude (12 bytes) and message CRC (4 bytes).
const OVERHEAD: usize = 16;
/// Largest message accepted (AWS's own limit is 16 MiB).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// One decoded message: the string headers that matter to a reader, and the payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    /// `:message-type`: `event`, `exception` or `error`.
    pub message_type: String,
    /// `:event-type` of an event.
    pub event_type: String,
    /// `:exception-type` of an exception, or `:error-code` of an error.
    pub exception_type: String,
    /// `:error-message` of an error message (its payload is usually empty).
    pub error_message: String,
    pub payload: Vec<u8>,
}

/// Frames from a byte stream that arrives in arbitrary pieces.
#[derive(Debug, Default)]
pub struct EventStreamParser {
    /// The bytes of an incomplete message.
    buf: Vec<u8>,
}

fn bad(msg: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorKind::InvalidResponse, msg)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl EventStreamParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes bytes from the front of `rest` until a message is complete, which it returns, with
    /// `rest` advanced past it. Without a complete message, keeps what is there for the next
    /// call, leaves `rest` empty and returns `None` (as [`crate::sse::SseParser::next`]).
    pub fn next(&mut self, rest: &mut &[u8]) -> Result<Option<Frame>, ProviderError> {
        if self.buf.is_empty() {
            // the whole message in this chunk: no copy
            if let Some(total) = complete_len(rest)? {
                let (msg, tail) = rest.split_at(total);
                *rest = tail;
                return decode(msg).map(Some);
            }
        }
        // gather the prelude, then the rest of the message
        let need_prelude = 12usize.saturating_sub(self.buf.len());
        let take = need_prelude.min(rest.len());
        self.buf.extend_from_slice(&rest[..take]);
        *rest = &rest[take..];
        let Some(total) = prelude_len(&self.buf)? else {
            return Ok(None);
        };
        let take = (total - self.buf.len()).min(rest.len());
        self.buf.extend_from_slice(&rest[..take]);
        *rest = &rest[take..];
        if self.buf.len() < total {
            return Ok(None);
        }
        let msg = std::mem::take(&mut self.buf);
        decode(&msg).map(Some)
    }

    /// The end of the body: bytes of an unfinished message are an error.
    pub fn finish(&mut self) -> Result<(), ProviderError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            self.buf.clear();
            Err(bad("the provider's event stream ended inside a message"))
        }
    }
}

/// The total length of the message at the front of `b` when all of it is there.
fn complete_len(b: &[u8]) -> Result<Option<usize>, ProviderError> {
    Ok(prelude_len(b)?.filter(|&total| b.len() >= total))
}

/// The total length the prelude at the front of `b` announces, checked (`None`: fewer than 12
/// bytes).
fn prelude_len(b: &[u8]) -> Result<Option<usize>, ProviderError> {
    if b.len() < 12 {
        return Ok(None);
    }
    if crc32fast::hash(&b[..8]) != be32(&b[8..12]) {
        return Err(bad(
            "the provider's event stream is corrupt (prelude checksum mismatch)",
        ));
    }
    let total = be32(&b[..4]) as usize;
    let headers = be32(&b[4..8]) as usize;
    if total < OVERHEAD || headers > total - OVERHEAD || total > MAX_MESSAGE {
        return Err(bad(format!(
            "the provider's event stream announced a message of {total} bytes with {headers} bytes of headers"
        )));
    }
    Ok(Some(total))
}

/// Decodes one whole message (its length already checked by [`prelude_len`]).
fn decode(msg: &[u8]) -> Result<Frame, ProviderError> {
    let total = msg.len();
    if crc32fast::hash(&msg[..total - 4]) != be32(&msg[total - 4..]) {
        return Err(bad(
            "the provider's event stream is corrupt (message checksum mismatch)",
        ));
    }
    let headers_len = be32(&msg[4..8]) as usize;
    let mut h = &msg[12..12 + headers_len];
    let mut frame = Frame {
        payload: msg[12 + headers_len..total - 4].to_vec(),
        ..Frame::default()
    };
    let short = || bad("the provider's event stream has a truncated header");
    while !h.is_empty() {
        let name_len = h[0] as usize;
        let name = h.get(1..1 + name_len).ok_or_else(short)?;
        let kind = *h.get(1 + name_len).ok_or_else(short)?;
        h = &h[2 + name_len..];
        let value_len = match kind {
            0 | 1 => 0,
            2 => 1,
            3 => 2,
            4 => 4,
            5 | 8 => 8,
            9 => 16,
            6 | 7 => {
                let len = h.get(..2).ok_or_else(short)?;
                h = &h[2..];
                u16::from_be_bytes([len[0], len[1]]) as usize
            }
            other => {
                return Err(bad(format!(
                    "the provider's event stream has a header of unknown type {other}"
                )))
            }
        };
        let value = h.get(..value_len).ok_or_else(short)?;
        h = &h[value_len..];
        if kind != 7 {
            continue;
        }
        let slot = match name {
            b":message-type" => &mut frame.message_type,
            b":event-type" => &mut frame.event_type,
            b":exception-type" | b":error-code" => &mut frame.exception_type,
            b":error-message" => &mut frame.error_message,
            _ => continue,
        };
        *slot = String::from_utf8_lossy(value).into_owned();
    }
    Ok(frame)
}

/// Writes one message with string headers (value type 7) and `payload`, both checksums computed:
/// what a Bedrock upstream sends, for tests and fuzzing.
pub fn write_message(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = (OVERHEAD + h.len() + payload.len()) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, payload: &str) -> Vec<u8> {
        write_message(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.as_bytes(),
        )
    }

    #[test]
    fn reads_messages_whole_and_split_at_every_byte() {
        let mut bytes = event("messageStart", r#"{"role":"assistant"}"#);
        bytes.extend(event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Hi"},"p":"abc"}"#,
        ));
        for cut in 0..=bytes.len() {
            let mut p = EventStreamParser::new();
            let mut frames = Vec::new();
            for piece in [&bytes[..cut], &bytes[cut..]] {
                let mut rest = piece;
                while let Some(f) = p.next(&mut rest).expect("valid") {
                    frames.push(f);
                }
                assert!(rest.is_empty());
            }
            p.finish().expect("nothing left over");
            assert_eq!(frames.len(), 2, "cut at {cut}");
            assert_eq!(frames[0].event_type, "messageStart");
            assert_eq!(frames[0].message_type, "event");
            assert_eq!(frames[1].event_type, "contentBlockDelta");
            assert_eq!(
                frames[1].payload,
                br#"{"contentBlockIndex":0,"delta":{"text":"Hi"},"p":"abc"}"#
            );
        }
    }

    #[test]
    fn skips_headers_of_other_types_and_reads_exceptions() {
        let mut h = Vec::new();
        // a timestamp header (type 8), a bool (0) and a byte array (6) before the strings
        h.push(5);
        h.extend_from_slice(b":date");
        h.push(8);
        h.extend_from_slice(&[0; 8]);
        h.push(2);
        h.extend_from_slice(b"ok");
        h.push(0);
        h.push(3);
        h.extend_from_slice(b"raw");
        h.push(6);
        h.extend_from_slice(&3u16.to_be_bytes());
        h.extend_from_slice(b"xyz");
        let tail = write_message(
            &[
                (":message-type", "exception"),
                (":exception-type", "throttlingException"),
            ],
            br#"{"message":"Too many requests"}"#,
        );
        // splice the extra headers in front of the frame's own and fix lengths and CRCs
        let own_headers = be32(&tail[4..8]) as usize;
        let mut headers = h.clone();
        headers.extend_from_slice(&tail[12..12 + own_headers]);
        let payload = &tail[12 + own_headers..tail.len() - 4];
        let total = (16 + headers.len() + payload.len()) as u32;
        let mut msg = Vec::new();
        msg.extend_from_slice(&total.to_be_bytes());
        msg.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        let crc = crc32fast::hash(&msg);
        msg.extend_from_slice(&crc.to_be_bytes());
        msg.extend_from_slice(&headers);
        msg.extend_from_slice(payload);
        let crc = crc32fast::hash(&msg);
        msg.extend_from_slice(&crc.to_be_bytes());
        let f = EventStreamParser::new()
            .next(&mut &msg[..])
            .expect("valid")
            .expect("complete");
        assert_eq!(f.message_type, "exception");
        assert_eq!(f.exception_type, "throttlingException");
        assert_eq!(f.payload, br#"{"message":"Too many requests"}"#);
    }

    #[test]
    fn corrupt_frames_are_errors() {
        let good = event("messageStop", r#"{"stopReason":"end_turn"}"#);
        let mut payload_flip = good.clone();
        let n = payload_flip.len();
        payload_flip[n - 6] ^= 1;
        let e = EventStreamParser::new()
            .next(&mut &payload_flip[..])
            .expect_err("bad message crc");
        assert!(e.message.contains("message checksum"), "{}", e.message);
        let mut prelude_flip = good.clone();
        prelude_flip[3] ^= 1;
        let e = EventStreamParser::new()
            .next(&mut &prelude_flip[..])
            .expect_err("bad prelude crc");
        assert!(e.message.contains("prelude checksum"), "{}", e.message);
        let mut p = EventStreamParser::new();
        assert_eq!(p.next(&mut &good[..10]).expect("incomplete"), None);
        assert!(p.finish().is_err(), "a stream may not end inside a message");
        // a length below the minimum, with a valid prelude checksum
        let mut tiny = vec![0, 0, 0, 8, 0, 0, 0, 0];
        let crc = crc32fast::hash(&tiny);
        tiny.extend_from_slice(&crc.to_be_bytes());
        assert!(EventStreamParser::new().next(&mut &tiny[..]).is_err());
    }
}
