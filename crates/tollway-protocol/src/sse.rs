//! Server-sent events: an incremental parser for upstream streams (bytes arrive in arbitrary
//! pieces) and the writer for the streams Tollway sends its clients.
//!
//! The parser follows the HTML living standard's event-stream rules: lines end in LF, CRLF or CR;
//! `event:` names the event, `data:` lines are joined with LF, `:` starts a comment, `id:` and
//! `retry:` are ignored, and a blank line dispatches the event. A line longer than
//! [`MAX_LINE`] is an error rather than unbounded memory.

use tollway_core::{ErrorKind, ProviderError};

/// Longest SSE line accepted from an upstream (a single streamed chunk is far smaller).
pub const MAX_LINE: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, incomplete line.
    line: Vec<u8>,
    /// The previous chunk ended in CR: an LF at the start of the next one belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    /// A recycled event name's buffer, for the next `event:` line.
    spare_name: Option<String>,
}

fn bad(msg: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorKind::InvalidResponse, msg)
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes; returns the events they complete.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, ProviderError> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(ev) = self.next(&mut rest)? {
            out.push(ev);
        }
        Ok(out)
    }

    /// Reads lines from the front of `rest` until one completes an event, which it returns, with
    /// `rest` advanced past it. Without a complete event in `rest`, keeps what is there for the
    /// next call, leaves `rest` empty and returns `None`. So a burst of events can be taken one
    /// at a time, each handed on before the next is parsed.
    pub fn next(&mut self, rest: &mut &[u8]) -> Result<Option<SseEvent>, ProviderError> {
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                *rest = &rest[1..];
            }
        }
        while let Some(pos) = memchr::memchr2(b'\n', b'\r', rest) {
            let (head, tail) = rest.split_at(pos);
            let cr = tail[0] == b'\r';
            let mut after = &tail[1..];
            if cr {
                match after.first() {
                    Some(b'\n') => after = &after[1..],
                    None => self.after_cr = true,
                    _ => {}
                }
            }
            *rest = after;
            let done = if self.line.is_empty() {
                // the whole line is in this chunk: no copy
                self.line_done(head)?
            } else {
                self.line.extend_from_slice(head);
                let line = std::mem::take(&mut self.line);
                let done = self.line_done(&line);
                self.line = line;
                self.line.clear();
                done?
            };
            if let Some(ev) = done {
                return Ok(Some(ev));
            }
        }
        if self.line.len() + rest.len() > MAX_LINE {
            return Err(bad(format!(
                "the provider sent a stream line longer than {MAX_LINE} bytes"
            )));
        }
        self.line.extend_from_slice(rest);
        *rest = &[];
        Ok(None)
    }

    /// The stream ended: a final event not followed by a blank line is still delivered.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, ProviderError> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line)?;
        }
        Ok(self.dispatch())
    }

    /// Hands back an event the caller is done with, so that its buffers carry the next events
    /// (one allocation less per event on a long stream).
    pub fn recycle(&mut self, ev: SseEvent) {
        if self.data.capacity() == 0 {
            let mut data = ev.data;
            data.clear();
            self.data = data;
        }
        if let (None, Some(mut name)) = (&self.spare_name, ev.event) {
            name.clear();
            self.spare_name = Some(name);
        }
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        if !self.has_data && self.event.is_none() {
            return None;
        }
        self.has_data = false;
        Some(SseEvent {
            event: self.event.take(),
            data: std::mem::take(&mut self.data),
        })
    }

    fn line_done(&mut self, line: &[u8]) -> Result<Option<SseEvent>, ProviderError> {
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        let line = std::str::from_utf8(line)
            .map_err(|_| bad("the provider sent a stream line that is not valid UTF-8"))?;
        if line.starts_with(':') {
            return Ok(None);
        }
        // `memchr`: `split_once(':')` sets up a general pattern search on every line
        let (field, value) = match memchr::memchr(b':', line.as_bytes()) {
            // ':' is ASCII, so both sides are on character boundaries
            Some(at) => {
                let v = line.get(at + 1..).unwrap_or_default();
                (
                    line.get(..at).unwrap_or_default(),
                    v.strip_prefix(' ').unwrap_or(v),
                )
            }
            None => (line, ""),
        };
        match field {
            "event" => {
                let mut name = self.spare_name.take().unwrap_or_default();
                name.clear();
                name.push_str(value);
                self.event = Some(name);
            }
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        Ok(None)
    }
}

/// Appends one event: `event: NAME` (when given), `data: ...` (one line per line of `data`), blank line.
pub fn write_event(out: &mut Vec<u8>, event: Option<&str>, data: &str) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Writes one event whose data is `value` as compact JSON (which holds no newline), serialised
/// straight into `out`.
pub fn write_json_event<T: serde::Serialize + ?Sized>(
    out: &mut Vec<u8>,
    event: Option<&str>,
    value: &T,
) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    let start = out.len();
    // Plain data with string keys: serialising cannot fail (and on failure nothing is half-written).
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.truncate(start);
        out.extend_from_slice(b"null");
    }
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.push(c).unwrap());
        }
        out.extend(p.finish().unwrap());
        out
    }

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_string),
            data: data.to_string(),
        }
    }

    #[test]
    fn events_split_anywhere_parse_the_same() {
        let text = b"event: message_start\ndata: {\"a\":1}\n\n: comment\ndata: x\ndata: y\n\ndata: [DONE]\n\n";
        let whole = all(&[text]);
        assert_eq!(
            whole,
            vec![
                ev(Some("message_start"), "{\"a\":1}"),
                ev(None, "x\ny"),
                ev(None, "[DONE]")
            ]
        );
        for split in 0..text.len() {
            let (a, b) = text.split_at(split);
            assert_eq!(all(&[a, b]), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(all(&bytes), whole);
    }

    #[test]
    fn a_burst_is_taken_one_event_at_a_time() {
        let burst = b"data: a\r\n\r\n: note\nevent: e\ndata: b\n\ndata: c\r\rdata: d";
        let mut p = SseParser::new();
        let mut rest = &burst[..];
        let ev = p.next(&mut rest).unwrap().unwrap();
        assert_eq!(ev.data, "a");
        assert_eq!(rest, &burst[11..], "stopped right after the first event");
        let ev = p.next(&mut rest).unwrap().unwrap();
        assert_eq!((ev.event.as_deref(), ev.data.as_str()), (Some("e"), "b"));
        assert_eq!(p.next(&mut rest).unwrap().unwrap().data, "c");
        // an unfinished event: kept, and `rest` is used up
        assert_eq!(p.next(&mut rest).unwrap(), None);
        assert!(rest.is_empty());
        let mut more = &b"\n\n"[..];
        assert_eq!(p.next(&mut more).unwrap().unwrap().data, "d");
        // a CR at the very end: its LF, if it comes next, is not a second line end
        let mut p = SseParser::new();
        let mut a = &b"data: x\r"[..];
        assert_eq!(p.next(&mut a).unwrap(), None);
        let mut b = &b"\n\r\n"[..];
        assert_eq!(p.next(&mut b).unwrap().unwrap().data, "x");
        assert!(b.is_empty());
    }

    /// Events handed back carry the next ones: the same events come out, in the same buffers.
    #[test]
    fn recycled_events_carry_the_next_ones() {
        // the first event the longest, so the buffer it leaves never needs to grow
        let text = b"event: a\ndata: the longest one\n\nevent: bb\ndata: two\ndata: 2\n\ndata: three\n\nevent: c\ndata: 4\n\n";
        let mut fresh = SseParser::new();
        let expected = fresh.push(text).unwrap();
        let mut p = SseParser::new();
        let mut rest = &text[..];
        let mut got = Vec::new();
        let mut buffers = Vec::new();
        while let Some(ev) = p.next(&mut rest).unwrap() {
            buffers.push(ev.data.as_ptr());
            got.push(ev.clone());
            p.recycle(ev);
        }
        assert_eq!(got, expected);
        assert_eq!(
            got.iter().map(|e| e.event.as_deref()).collect::<Vec<_>>(),
            [Some("a"), Some("bb"), None, Some("c")]
        );
        assert_eq!(got[1].data, "two\n2");
        assert!(
            buffers.windows(2).all(|w| w[0] == w[1]),
            "one data buffer throughout"
        );
    }

    #[test]
    fn crlf_and_cr_line_endings() {
        assert_eq!(
            all(&[b"data: a\r", b"\n\r\ndata:b\r\rdata: c"]),
            vec![ev(None, "a"), ev(None, "b"), ev(None, "c")]
        );
    }

    #[test]
    fn overlong_lines_and_bad_utf8_are_errors() {
        let mut p = SseParser::new();
        let big = vec![b'a'; MAX_LINE + 1];
        assert!(p.push(&big).is_err());
        let mut p = SseParser::new();
        assert!(p.push(b"data: \xff\n\n").is_err());
    }

    #[test]
    fn writer_round_trips() {
        let mut out = Vec::new();
        write_event(&mut out, Some("ping"), "{\"type\": \"ping\"}");
        write_event(&mut out, None, "two\nlines");
        assert_eq!(
            all(&[&out]),
            vec![
                ev(Some("ping"), "{\"type\": \"ping\"}"),
                ev(None, "two\nlines")
            ]
        );
    }
}
