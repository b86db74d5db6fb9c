//! Format-independent generation: the reply's token pieces, tool-call arguments from JSON
//! schemas, token estimates, and the timed SSE body with its abort-detecting guard.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value};

use crate::knobs::{Fault, Knobs};

/// The fixed reply (12 tokens) when no knob says otherwise.
const DEFAULT_REPLY: [&str; 12] = [
    "Hello!",
    " This",
    " is",
    " a",
    " deterministic",
    " reply",
    " from",
    " the",
    " tollway",
    " mock",
    " upstream",
    " server.",
];

/// Cycled for `tokens=N` and for thinking text.
const LOREM: [&str; 16] = [
    " lorem",
    " ipsum",
    " dolor",
    " sit",
    " amet",
    " consectetur",
    " adipiscing",
    " elit",
    " sed",
    " do",
    " eiusmod",
    " tempor",
    " incididunt",
    " ut",
    " labore",
    " et",
];

pub type Piece = Cow<'static, str>;

/// `n` lorem tokens, the first without its leading space.
pub fn lorem(n: usize) -> Vec<Piece> {
    (0..n)
        .map(|i| {
            let w = LOREM[i % LOREM.len()];
            Cow::Borrowed(if i == 0 { &w[1..] } else { w })
        })
        .collect()
}

/// The plain reply: the fixed sentence, or `tokens` lorem tokens.
pub fn reply(knobs: &Knobs) -> Vec<Piece> {
    match knobs.tokens {
        Some(n) => lorem(n),
        None => DEFAULT_REPLY.iter().map(|s| Cow::Borrowed(*s)).collect(),
    }
}

/// Splits `text` into word pieces (whitespace leads the next piece) on char boundaries;
/// the pieces concatenate back to `text` exactly.
pub fn words(text: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev_space = true;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        if space && !prev_space && i > start {
            out.push(Cow::Owned(text[start..i].to_string()));
            start = i;
        }
        prev_space = space;
    }
    if start < text.len() {
        out.push(Cow::Owned(text[start..].to_string()));
    }
    out
}

/// Splits `s` into at least 3 pieces (fewer only if it has fewer chars), at most ~12 chars each.
pub fn json_pieces(s: &str) -> Vec<String> {
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let n = chars.len();
    if n == 0 {
        return Vec::new();
    }
    let per = n.div_ceil(3).clamp(1, 12);
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let start = chars[i].0;
        let end = chars.get(i + per).map_or(s.len(), |(b, _)| *b);
        out.push(s[start..end].to_string());
        i += per;
    }
    out
}

/// Rough token count of a text: a token per 4 chars, rounded up.
pub fn text_tokens(s: &str) -> u64 {
    (s.chars().count() as u64).div_ceil(4)
}

/// Tokens charged for an image part.
pub const IMAGE_TOKENS: u64 = 85;

/// Arguments for a tool, generated from its JSON schema.
pub fn args_from_schema(schema: Option<&Value>) -> Value {
    let mut out = Map::new();
    if let Some(props) = schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
    {
        for (name, prop) in props {
            out.insert(name.clone(), value_for(name, prop));
        }
    }
    Value::Object(out)
}

/// A schema's type, lower-cased (Google's schemas spell it `STRING`, `OBJECT`...): the first
/// non-null one of a list; `object` for a schema with properties, else `string`.
fn schema_type(prop: &Value) -> String {
    let ty = match prop.get("type") {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .find(|t| !t.eq_ignore_ascii_case("null"))
            .unwrap_or("null"),
        _ if prop.get("properties").is_some() => "object",
        _ if prop.get("items").is_some() => "array",
        _ => "string",
    };
    ty.to_ascii_lowercase()
}

/// A JSON value valid for a simple schema (OpenAPI or JSON Schema): objects with every declared
/// property filled, arrays with one item, enums their first value, strings and numbers
/// placeholders; `anyOf`/`oneOf` take their first branch. For structured-output answers.
pub fn json_for_schema(schema: &Value) -> Value {
    json_at(schema, "value", 0)
}

fn json_at(schema: &Value, name: &str, depth: usize) -> Value {
    if depth > 16 {
        return Value::Null;
    }
    for key in ["anyOf", "oneOf", "any_of", "one_of"] {
        if let Some(first) = schema
            .get(key)
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            return json_at(first, name, depth + 1);
        }
    }
    match schema_type(schema).as_str() {
        "object" if schema.get("enum").is_none() && schema.get("const").is_none() => {
            let mut out = Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, p) in props {
                    out.insert(k.clone(), json_at(p, k, depth + 1));
                }
            }
            Value::Object(out)
        }
        "array" if schema.get("enum").is_none() => {
            let item = schema
                .get("items")
                .map_or(Value::from("example"), |i| json_at(i, name, depth + 1));
            let min = schema
                .get("minItems")
                .or_else(|| schema.get("min_items"))
                .and_then(|m| m.as_u64().or_else(|| m.as_str()?.parse().ok()))
                .unwrap_or(1)
                .clamp(1, 16);
            Value::Array(vec![item; min as usize])
        }
        _ => value_for(name, schema),
    }
}

fn value_for(name: &str, prop: &Value) -> Value {
    if let Some(first) = prop
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        return first.clone();
    }
    if let Some(c) = prop.get("const") {
        return c.clone();
    }
    match schema_type(prop).as_str() {
        "number" | "integer" => Value::from(1),
        "boolean" => Value::Bool(true),
        "array" => Value::Array(Vec::new()),
        "object" => Value::Object(Map::new()),
        "null" => Value::Null,
        _ => {
            let n = name.to_ascii_lowercase();
            if n.contains("city") || n.contains("location") {
                Value::from("Paris")
            } else {
                Value::from("example")
            }
        }
    }
}

/// One tool call the mock decided to make.
#[derive(Debug, Clone)]
pub struct Call {
    pub id: String,
    pub name: String,
    pub input: Value,
    /// `input` serialised compactly.
    pub arguments: String,
}

impl Call {
    pub fn tokens(&self) -> u64 {
        text_tokens(&self.arguments) + text_tokens(&self.name) + 4
    }
}

/// A tool offered by the request: name and schema.
pub struct ToolDef<'a> {
    pub name: &'a str,
    pub schema: Option<&'a Value>,
}

/// Which tool calls to make, given the knobs and what the request forces.
/// `forced`: `Some(None)` = "some tool" (required/any), `Some(Some(name))` = that tool.
pub fn choose_calls(
    knobs: &Knobs,
    tools: &[ToolDef<'_>],
    forced: Option<Option<&str>>,
    none: bool,
    id_prefix: &str,
    seq: u64,
) -> Vec<Call> {
    if none {
        return Vec::new();
    }
    let count = knobs.tools.unwrap_or(1);
    let wanted = knobs.tools.is_some_and(|n| n > 0) || knobs.tool.is_some() || forced.is_some();
    if !wanted || count == 0 {
        return Vec::new();
    }
    let named = match (&knobs.tool, forced) {
        (_, Some(Some(name))) => Some(name),
        (Some(t), _) if t != "1" && t != "true" => Some(t.as_str()),
        _ => None,
    };
    let mut picks: Vec<(&str, Option<&Value>)> = Vec::new();
    for i in 0..count {
        match named {
            Some(name) => {
                let schema = tools.iter().find(|t| t.name == name).and_then(|t| t.schema);
                picks.push((name, schema));
            }
            None => {
                if tools.is_empty() {
                    return Vec::new();
                }
                let t = &tools[i.min(tools.len() - 1)];
                picks.push((t.name, t.schema));
            }
        }
    }
    picks
        .into_iter()
        .enumerate()
        .map(|(i, (name, schema))| {
            let input = args_from_schema(schema);
            let arguments = input.to_string();
            Call {
                id: format!("{id_prefix}{seq:016x}{i:04}"),
                name: name.to_string(),
                input,
                arguments,
            }
        })
        .collect()
}

/// What a reply says, independent of the wire format.
pub struct Answer {
    /// A leading reasoning block (`reasoning=N`), with its signature.
    pub thinking: Vec<Piece>,
    pub signature: String,
    /// The text (empty when the reply calls tools).
    pub pieces: Vec<Piece>,
    pub calls: Vec<Call>,
    pub finish: Finish,
}

impl Answer {
    /// Reasoning, text and tool-call tokens.
    pub fn output_tokens(&self) -> u64 {
        (self.thinking.len() + self.pieces.len()) as u64
            + self.calls.iter().map(Call::tokens).sum::<u64>()
    }
}

/// What decides the reply, read from a request of any format.
pub struct Ask<'a> {
    pub knobs: &'a Knobs,
    pub tools: &'a [ToolDef<'a>],
    /// As [`choose_calls`] takes it.
    pub forced: Option<Option<&'a str>>,
    pub tool_choice_none: bool,
    /// The last message's tool results as text: the reply quotes them.
    pub tool_results: Option<&'a str>,
    pub last_user_text: Option<&'a str>,
    pub stop: &'a [String],
    pub max_tokens: Option<u64>,
}

impl Ask<'_> {
    /// Text quoting the tool results; otherwise a reasoning block if asked, then tool calls
    /// (ids `{id_prefix}...`) or the text reply, cut by `max_tokens` and stop sequences.
    pub fn answer(&self, id_prefix: &str, seq: u64) -> Answer {
        let mut a = Answer {
            thinking: Vec::new(),
            signature: String::new(),
            pieces: Vec::new(),
            calls: Vec::new(),
            finish: Finish::Stop,
        };
        let k = self.knobs;
        if let Some(results) = self.tool_results {
            a.pieces = words(&format!("The tool returned: {results}"));
            a.finish = finish_text(&mut a.pieces, k, self.stop, self.max_tokens);
            return a;
        }
        if k.reasoning > 0 {
            a.thinking = lorem(k.reasoning);
            a.signature = signature(seq);
        }
        a.calls = choose_calls(
            k,
            self.tools,
            self.forced,
            self.tool_choice_none,
            id_prefix,
            seq,
        );
        if a.calls.is_empty() {
            a.pieces = if k.echo {
                words(self.last_user_text.unwrap_or(""))
            } else {
                reply(k)
            };
            a.finish = finish_text(&mut a.pieces, k, self.stop, self.max_tokens);
        } else {
            a.finish = Finish::ToolCalls;
        }
        a
    }
}

/// Why the reply ended, independent of the wire format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    ToolCalls,
    StopSequence(String),
}

/// Truncates `pieces` for `max_tokens` / a stop sequence and says why the reply ended.
pub fn finish_text(
    pieces: &mut Vec<Piece>,
    knobs: &Knobs,
    stop_sequences: &[String],
    max_tokens: Option<u64>,
) -> Finish {
    if knobs.stop {
        if let Some(seq) = stop_sequences.iter().find(|s| !s.is_empty()) {
            let keep = pieces.len().div_ceil(2).max(1).min(pieces.len());
            pieces.truncate(keep);
            if max_tokens.is_none_or(|m| keep as u64 <= m) {
                return Finish::StopSequence(seq.clone());
            }
        }
    }
    if let Some(max) = max_tokens {
        if pieces.len() as u64 > max {
            pieces.truncate(max as usize);
            return Finish::Length;
        }
    }
    Finish::Stop
}

// ---- timed SSE bodies ----

/// One step of a streamed body.
enum Step {
    Data(Bytes),
    Sleep(Duration),
    /// Abort the body with an error: hyper cuts the connection without the final chunk.
    Cut,
}

/// Builds a body as data and pauses; consecutive data without pauses is coalesced into one write.
#[derive(Default)]
pub struct Script {
    steps: VecDeque<Step>,
    buf: BytesMut,
}

impl Script {
    pub fn data(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// One SSE event with an `event:` line (Anthropic style).
    pub fn event(&mut self, name: &str, data: &Value) {
        self.data(b"event: ");
        self.data(name.as_bytes());
        self.data(b"\ndata: ");
        self.json_line(data);
    }

    /// One `data:` event (OpenAI style).
    pub fn data_event(&mut self, data: &Value) {
        self.data(b"data: ");
        self.json_line(data);
    }

    /// One `data:` event ended by `\r\n\r\n` (Google style).
    pub fn data_event_crlf(&mut self, data: &Value) {
        self.data(b"data: ");
        self.json(data);
        self.data(b"\r\n\r\n");
    }

    /// A JSON value, compact, nothing around it.
    pub fn json(&mut self, data: &Value) {
        use bytes::BufMut;
        // Serialising a Value into memory cannot fail.
        let _ = serde_json::to_writer((&mut self.buf).writer(), data);
    }

    fn json_line(&mut self, data: &Value) {
        self.json(data);
        self.data(b"\n\n");
    }

    pub fn sleep(&mut self, d: Duration) {
        if d.is_zero() {
            return;
        }
        self.flush();
        self.steps.push_back(Step::Sleep(d));
    }

    /// Cuts the connection. A short pause first lets hyper flush what was written, so the
    /// client sees the data and then a broken body (hyper drops its buffer on a body error).
    pub fn cut(&mut self) {
        self.flush();
        self.steps.push_back(Step::Sleep(Duration::from_millis(20)));
        self.steps.push_back(Step::Cut);
    }

    fn flush(&mut self) {
        if !self.buf.is_empty() {
            let b = std::mem::take(&mut self.buf).freeze();
            self.steps.push_back(Step::Data(b));
        }
    }

    /// The body, counting the stream in the stats until it ends or the client goes away.
    pub fn into_body(mut self, guard: crate::InFlight) -> axum::body::Body {
        self.flush();
        guard.shared.stream_started();
        let state = StreamState {
            steps: self.steps,
            guard: StreamGuard {
                flight: guard,
                done: false,
            },
        };
        let stream = futures_util::stream::unfold(state, |mut st| async move {
            loop {
                match st.steps.pop_front() {
                    Some(Step::Sleep(d)) => tokio::time::sleep(d).await,
                    Some(Step::Data(b)) => return Some((Ok(b), st)),
                    Some(Step::Cut) => {
                        st.steps.clear();
                        st.guard.complete();
                        let e = std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "tollway-mock: injected connection reset",
                        );
                        return Some((Err(e), st));
                    }
                    None => {
                        st.guard.complete();
                        return None;
                    }
                }
            }
        });
        axum::body::Body::from_stream(stream)
    }
}

struct StreamState {
    steps: VecDeque<Step>,
    guard: StreamGuard,
}

/// Counts the stream as completed when it ran to its end, as aborted when dropped before.
struct StreamGuard {
    flight: crate::InFlight,
    done: bool,
}

impl StreamGuard {
    fn complete(&mut self) {
        if !self.done {
            self.done = true;
            self.flight.shared.stream_finished(true);
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.done {
            self.flight.shared.stream_finished(false);
        }
    }
}

/// Paces a stream's tokens (ttft before the first, tpt between) and fires its in-stream fault
/// (`malformed`, `reset`, `error_event`) once `after` tokens went out.
pub struct Gate {
    fault: Option<Fault>,
    after: usize,
    emitted: usize,
    first: bool,
    ttft: Duration,
    tpt: Duration,
}

impl Gate {
    pub fn new(k: &Knobs) -> Gate {
        let fault = match &k.fault {
            Some(f @ (Fault::Malformed | Fault::Reset | Fault::ErrorEvent)) => Some(f.clone()),
            _ => None,
        };
        Gate {
            fault,
            after: k.after,
            emitted: 0,
            first: true,
            ttft: k.ttft,
            tpt: k.tpt,
        }
    }

    /// Call before writing a token: sleeps as due, and returns the fault to inject instead.
    #[must_use]
    pub fn token(&mut self, script: &mut Script) -> Option<Fault> {
        script.sleep(if self.first { self.ttft } else { self.tpt });
        self.first = false;
        if self.fault.is_some() && self.emitted >= self.after {
            return self.fault.take();
        }
        self.emitted += 1;
        None
    }

    /// Call after the last token: the fault still pending (the reply was shorter than `after`).
    #[must_use]
    pub fn end(&mut self, script: &mut Script) -> Option<Fault> {
        if self.first {
            script.sleep(self.ttft);
            self.first = false;
        }
        self.fault.take()
    }
}

/// Sleeps for the non-streaming delay: ttft plus tpt per output token.
pub async fn answer_delay(knobs: &Knobs, tokens: u64) {
    let total = knobs.ttft + knobs.tpt.saturating_mul(tokens.min(u32::MAX as u64) as u32);
    if !total.is_zero() {
        tokio::time::sleep(total).await;
    }
}

/// `fault=hang`: wait until the client goes away (the handler future is dropped).
pub async fn hang() -> ! {
    std::future::pending::<()>().await;
    unreachable!("pending never completes")
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A deterministic pseudo-signature for thinking blocks (base64 alphabet).
pub fn signature(seq: u64) -> String {
    let mut out = String::with_capacity(88);
    let mut x = seq ^ 0x9e37_79b9_7f4a_7c15;
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    out.push_str("Eq");
    for _ in 0..86 {
        x = splitmix(x);
        out.push(ALPHA[(x % 64) as usize] as char);
    }
    out
}

pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// RFC 3339 UTC time of `secs` since the Unix epoch, to the second (`2026-12-07T19:00:00Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn words_round_trip() {
        let s = "héllo  wörld, ça va? 日本語 ok";
        let w = words(s);
        assert!(w.len() >= 4);
        assert_eq!(w.concat(), s);
        assert!(words("").is_empty());
    }

    #[test]
    fn json_pieces_at_least_three() {
        for s in [
            "{}",
            "{\"a\":1}",
            "{\"city\":\"Paris\",\"unit\":\"celsius\",\"x\":[]}",
        ] {
            let p = json_pieces(s);
            assert_eq!(p.concat(), s);
            assert!(p.len() >= 3 || s.chars().count() < 3, "{p:?}");
        }
    }

    #[test]
    fn schema_args() {
        let schema = json!({"type": "object", "properties": {
            "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "f"]},
            "days": {"type": "integer"}, "exact": {"type": "boolean"}, "tags": {"type": "array"},
            "opts": {"type": "object"}, "note": {"type": ["string", "null"]}, "ratio": {"type": "number"}}});
        assert_eq!(
            args_from_schema(Some(&schema)),
            json!({"city": "Paris", "unit": "celsius", "days": 1, "exact": true, "tags": [],
                   "opts": {}, "note": "example", "ratio": 1})
        );
        assert_eq!(args_from_schema(None), json!({}));
    }

    #[test]
    fn schema_json() {
        let schema = json!({"type": "OBJECT", "properties": {
            "name": {"type": "STRING"}, "age": {"type": "INTEGER"}, "ok": {"type": "BOOLEAN"},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
            "kind": {"type": "STRING", "enum": ["a", "b"]},
            "inner": {"type": "object", "properties": {"city": {"type": "string"}}},
            "either": {"anyOf": [{"type": "number"}, {"type": "string"}]}},
            "required": ["name"]});
        assert_eq!(
            json_for_schema(&schema),
            json!({"name": "example", "age": 1, "ok": true, "tags": ["example"], "kind": "a",
                   "inner": {"city": "Paris"}, "either": 1})
        );
        assert_eq!(
            json_for_schema(&json!({"type": "array", "items": {"type": "integer"}, "minItems": 2})),
            json!([1, 1])
        );
        assert_eq!(
            args_from_schema(Some(
                &json!({"type": "OBJECT", "properties": {"n": {"type": "NUMBER"}}})
            )),
            json!({"n": 1})
        );
    }

    #[test]
    fn truncation() {
        let k = Knobs::default();
        let mut p = lorem(10);
        assert_eq!(finish_text(&mut p, &k, &[], Some(4)), Finish::Length);
        assert_eq!(p.len(), 4);
        let mut p = lorem(10);
        assert_eq!(
            finish_text(&mut p, &k, &["x".into()], Some(40)),
            Finish::Stop
        );
        let k = Knobs {
            stop: true,
            ..Knobs::default()
        };
        let mut p = lorem(10);
        assert_eq!(
            finish_text(&mut p, &k, &["END".into()], None),
            Finish::StopSequence("END".into())
        );
        assert_eq!(p.len(), 5);
    }
}
