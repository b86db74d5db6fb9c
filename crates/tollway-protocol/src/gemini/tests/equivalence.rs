//! The Gemini module against `reference`, the Value-tree implementation it had before answers,
//! streams and request bodies moved onto typed structs: the same canonical answers, stream
//! events, usage and errors for the tests' fixtures, answers shaped as the mock and Google shape
//! them, and thousands of mutations of each (a field removed, of another type, `null`, an extra
//! field, unicode and escapes, text-level damage); the same request bodies, compared as parsed
//! JSON, for a broad set of requests.
//!
//! Where the two may differ, and why, the comparison says so by name ([`Tally`]); everything
//! else must be equal.
//!
//! Every answer and event is also read both ways the decoder can read it, by the scanner
//! (`crate::scan`, the fast path) and by serde, which must then give the same fields
//! ([`Tally::scanned`]).

use std::time::Duration;

use serde_json::{json, Value};
use tollway_core::{
    ApiFamily, ChatRequest, ChatResponse, ImageSource, Message, Part, ProviderError,
    ResponseFormat, Role, StreamEvent, ToolCall, ToolChoice, ToolDef, ToolResult,
};

use super::reference as old;
use crate::gemini as new;
use crate::sse::{SseEvent, SseParser};

/// What the comparisons met. Every input must be `same`, or one of the named differences.
#[derive(Debug, Default)]
struct Tally {
    /// Equal results (answers, events or errors; for input that is not JSON, errors of the same
    /// kind, [`same_error`]).
    same: usize,
    /// Of which the results were answers or events rather than errors.
    ok: usize,
    /// Answers and events the scanner read (the rest it left to serde), each read the same by
    /// serde, field by field (`super::event_scan_agrees`, `super::answer_scan_agrees`).
    scanned: usize,
    /// The input repeats a field the decoder reads (`{"responseId": "a", "responseId": "b"}`):
    /// a Value tree keeps the last; serde's derive refuses it as not fitting the format, as on
    /// the OpenAI and Anthropic paths (and names the repeat first when the text is not JSON
    /// further on). Upstreams do not repeat fields.
    duplicate: usize,
    /// serde_json refuses the input as a Value tree but reads it when it skips what it does not
    /// read ([`only_skipping_reads`]: a lone UTF-16 surrogate escape, a number beyond `f64`,
    /// nesting deeper than 128, in a field the decoder does not read): the reference refused
    /// the whole answer, the typed decoder reads it.
    lenient: usize,
}

/// Whether an error is the one for an answer or event that is not JSON.
fn not_json(e: &ProviderError) -> bool {
    e.message.contains("not valid JSON: ")
}

/// Both errors are the same; for input that is not JSON, of the same kind (serde_json names the
/// problem and its place, and a Value tree and a typed reading may name another: `trailing
/// comma` against `key must be a string`, one column apart, or the first of two problems when
/// the other is one only Value trees check, [`only_skipping_reads`]).
fn same_error(old: &ProviderError, new: &ProviderError) -> bool {
    if not_json(old) && not_json(new) {
        old.kind == new.kind && old.retry == new.retry
    } else {
        old == new
    }
}

/// Whether serde_json reads `text` as JSON when it skips through it, but not as a Value tree
/// (it checks strings' surrogate escapes, numbers' range and the nesting depth only for values
/// it builds).
fn only_skipping_reads(text: &str) -> bool {
    serde_json::from_str::<Value>(text).is_err()
        && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// Compares the results of one input (`input`, shown as `shown`); panics, naming it, if they
/// differ other than as [`Tally`] allows.
fn check<T: PartialEq + std::fmt::Debug>(
    input: &str,
    shown: &dyn Fn() -> String,
    old: Result<T, ProviderError>,
    new: Result<T, ProviderError>,
    tally: &mut Tally,
) {
    match (&old, &new) {
        (Ok(a), Ok(b)) if a == b => {
            tally.same += 1;
            tally.ok += 1;
        }
        (Err(a), Err(b)) if same_error(a, b) => tally.same += 1,
        (Ok(_), Err(b)) if b.message.contains("duplicate field") => tally.duplicate += 1,
        _ if only_skipping_reads(input) => tally.lenient += 1,
        // the repeat comes before what the reference refuses (a syntax error further on)
        (Err(a), Err(b)) if not_json(a) && b.message.contains("duplicate field") => {
            tally.duplicate += 1
        }
        _ => panic!(
            "the implementations differ on\n{}\nreference: {old:?}\ntyped:     {new:?}",
            shown()
        ),
    }
}

// ------------------------------------------------------------------------------------------------
// Inputs
// ------------------------------------------------------------------------------------------------

/// Answers: the tests' fixtures, the fuzz seed, and answers as the mock and Google write them.
fn answers() -> Vec<String> {
    let mut a: Vec<Value> = vec![
        json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "Let me think.", "thought": true},
                {"text": "It is "}, {"text": "sunny."}]},
                "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 8,
                              "totalTokenCount": 178, "cachedContentTokenCount": 100,
                              "thoughtsTokenCount": 50},
            "modelVersion": "gemini-2.5-flash", "responseId": "resp-1"
        }),
        json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                 "thoughtSignature": "c2ln"},
                {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]},
                "finishReason": "STOP"}],
            "responseId": "abc-123"
        }),
        json!({"promptFeedback": {"blockReason": "SAFETY", "blockReasonMessage": "unsafe"},
               "usageMetadata": {"promptTokenCount": 5}}),
        json!({}),
        // the mock: a thought, the text signed, usage with details, Vertex's traffic type
        json!({
            "candidates": [{"content": {"parts": [
                {"text": "Thinking it over.", "thought": true},
                {"text": "Paris is the capital of France.", "thoughtSignature": "bW9jaw=="}],
                "role": "model"}, "index": 0, "finishReason": "STOP"}],
            "modelVersion": "gemini-2.5-flash", "responseId": "mock-gemini-0000000000000001",
            "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 30,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}],
                "candidatesTokenCount": 14, "thoughtsTokenCount": 4,
                "cachedContentTokenCount": 8,
                "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 8}],
                "trafficType": "ON_DEMAND"},
            "createTime": "2026-12-07T10:00:00.000000Z"
        }),
        // the mock: function calls, the first signed; two candidates
        json!({
            "candidates": [
                {"content": {"parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris", "units": "c"}},
                     "thoughtSignature": "c2lnbmF0dXJl"},
                    {"functionCall": {"name": "get_time", "args": {}}}], "role": "model"},
                 "index": 0, "finishReason": "STOP"},
                {"content": {"parts": [{"text": "other"}], "role": "model"}, "index": 1,
                 "finishReason": "STOP"}],
            "modelVersion": "gemini-3-pro-preview", "responseId": "mock-gemini-2",
            "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 10,
                              "totalTokenCount": 40, "toolUsePromptTokenCount": 6}
        }),
        // the mock: blocked, with safety ratings
        json!({
            "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
                {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH",
                 "blocked": true}]},
            "modelVersion": "gemini-2.5-flash", "responseId": "mock-gemini-3",
            "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}
        }),
        // ids given, args absent, empty and odd text, a call and text in one answer
        json!({
            "candidates": [{"content": {"parts": [
                {"text": ""},
                {"functionCall": {"name": "lookup", "id": "fc-1"}},
                {"functionCall": {"name": "lookup", "id": "", "args": {"q": "caf\u{e9} \"x\"\n",
                    "n": [1, 2.5, -3, 1e21], "nested": {"z": null, "a": true}}}},
                {"text": "caf\u{e9} \u{1F600} \"quoted\" back\\slash\ttab\u{1}", "thought": false},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"executableCode": {"language": "PYTHON", "code": "print(1)"}},
                {"thoughtSignature": "bG9uZWx5"}]},
                "finishReason": "MAX_TOKENS", "safetyRatings": [], "citationMetadata": {}}],
            "responseId": "id with spaces & symbols: 12/34",
            "modelVersion": ""
        }),
        json!({"candidates": [{"finishReason": "MALFORMED_FUNCTION_CALL"}],
               "usageMetadata": {}}),
        json!({"candidates": [{"content": {"parts": []}, "finishReason": "SAFETY"}],
               "promptFeedback": {"blockReason": "OTHER"}}),
        json!({"candidates": [], "promptFeedback": {"blockReason": "BLOCKLIST",
               "blockReasonMessage": "caf\u{e9} \"no\""}}),
    ];
    for reason in [
        "MAX_TOKENS",
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "MALFORMED_FUNCTION_CALL",
        "FINISH_REASON_UNSPECIFIED",
        "stop",
    ] {
        a.push(json!({"candidates": [{"content": {"parts": []}, "finishReason": reason}]}));
    }
    let mut texts: Vec<String> = a.iter().map(Value::to_string).collect();
    // Google's non-streamed answers are pretty-printed, in its own key order
    texts.push(serde_json::to_string_pretty(&a[4]).expect("json"));
    texts.push(include_str!("../../../../../fuzz/seeds/upstream_answer/gemini_answer.json").into());
    texts.push(
        r#"{
  "candidates": [
    {
      "content": {
        "parts": [
          {
            "text": "Escapes: \u00e9 \ud83d\ude00 \"q\" \\ \/ \b\f\n\r\t"
          },
          {
            "functionCall": {
              "name": "f\u0041",
              "args": {"b": 1, "a": "\u00e9", "b": 2}
            },
            "thoughtSignature": "s\u0031"
          }
        ],
        "role": "model"
      },
      "finishReason": "STOP"
    }
  ],
  "responseId": "r\u00e9",
  "modelVersion": "m\ud83d\ude00"
}"#
        .into(),
    );
    texts
}

/// Streams, each a list of event data: the tests' fixtures, the fuzz seed, and streams as the
/// mock writes them (every chunk with the prompt's usage, a last chunk with an empty text part).
fn streams() -> Vec<Vec<String>> {
    let mock_usage = json!({"promptTokenCount": 12, "totalTokenCount": 12,
                            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}]});
    let chunk = |parts: Value, finish: Option<&str>, usage: &Value| {
        let mut c = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        if let Some(f) = finish {
            c["finishReason"] = json!(f);
        }
        json!({"candidates": [c], "modelVersion": "gemini-2.5-flash",
               "responseId": "mock-gemini-7", "usageMetadata": usage})
    };
    let done = json!({"promptTokenCount": 12, "candidatesTokenCount": 3, "thoughtsTokenCount": 2,
                      "totalTokenCount": 17, "cachedContentTokenCount": 4,
                      "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}],
                      "trafficType": "ON_DEMAND"});
    let streams: Vec<Vec<Value>> = vec![
        vec![
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hmm", "thought": true}]}}],
                   "responseId": "r1", "modelVersion": "gemini-2.5-flash",
                   "usageMetadata": {"promptTokenCount": 10}}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}],
                   "responseId": "r1"}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}}]}),
            json!({"candidates": [{"content": {"role": "model", "parts": [
                     {"functionCall": {"name": "f", "args": {"x": 1}}, "thoughtSignature": "s1"}]},
                   "finishReason": "STOP"}],
                   "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 4,
                                     "thoughtsTokenCount": 3, "totalTokenCount": 17}}),
        ],
        vec![
            json!({"candidates": [{"content": {"parts": [{"text": "Hi"}]}}]}),
            json!({"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}}),
        ],
        vec![json!({"candidates": [{"content": {"parts": [{"text": "Hi"}]}}]})],
        vec![json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})],
        // the mock: thoughts, signed text pieces, the closing chunk
        vec![
            chunk(
                json!([{"text": "Let me ", "thought": true}]),
                None,
                &mock_usage,
            ),
            chunk(
                json!([{"text": "see.", "thought": true}]),
                None,
                &mock_usage,
            ),
            chunk(
                json!([{"text": "Paris", "thoughtSignature": "bW9jaw=="}]),
                None,
                &mock_usage,
            ),
            chunk(
                json!([{"text": " is \u{e9}\u{1F600} \"it\".\n"}]),
                None,
                &mock_usage,
            ),
            chunk(json!([{"text": ""}]), Some("STOP"), &done),
        ],
        // the mock: a signed function call, a second call, then the end
        vec![
            chunk(
                json!([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": "c2ln"}]),
                None,
                &mock_usage,
            ),
            chunk(
                json!([{"functionCall": {"name": "get_time", "id": "call-given", "args": {}}}]),
                None,
                &mock_usage,
            ),
            chunk(json!([{"text": ""}]), Some("STOP"), &done),
        ],
        // a thought with its signature, text, a thought again, a call without args, the
        // length limit
        vec![
            json!({"candidates": [{"content": {"parts": [
                {"text": "a", "thought": true, "thoughtSignature": "t1"},
                {"text": "", "thought": true},
                {"text": "b"}, {"text": ""}, {"text": "c", "thought": true},
                {"functionCall": {"name": "g"}}, {"text": "d"}]}}],
                "responseId": "", "modelVersion": "gemini-3-flash"}),
            json!({"candidates": [{"content": {"parts": [{"text": "e"}]},
                "finishReason": "MAX_TOKENS"}]}),
            json!({"candidates": [{"content": {"parts": [{"text": "after the end"}]}}]}),
        ],
        // a mid-stream error without a code, and one with a code out of range
        vec![
            json!({"candidates": [{"content": {"parts": [{"text": "x"}]}}]}),
            json!({"error": {"message": "The model is overloaded.", "status": "UNAVAILABLE"}}),
        ],
        vec![json!({"error": {"code": 70000, "message": "odd", "status": "DEADLINE_EXCEEDED"}})],
        // an empty event between two
        vec![
            json!({"candidates": [{"content": {"parts": [{"text": "x"}]}}]}),
            json!({}),
            json!({"candidates": [{"finishReason": "SAFETY"}]}),
        ],
    ];
    let mut out: Vec<Vec<String>> = streams
        .iter()
        .map(|s| s.iter().map(Value::to_string).collect())
        .collect();
    out.push(
        include_str!("../../../../../fuzz/seeds/upstream_stream/gemini_stream.txt")
            .split("\n\n")
            .filter_map(|e| e.trim().strip_prefix("data: "))
            .map(str::to_string)
            .collect(),
    );
    out.push(vec![
        r#"{"candidates":[{"content":{"parts":[{"text":"\u00e9\ud83d\ude00\"\\\n"}]}}],"responseId":"\u0041b"}"#.into(),
        r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"\u0066","args":{"k":"\u00e9","k":2}}}]},"finishReason":"STOP"}]}"#.into(),
    ]);
    out
}

/// Error bodies, with the statuses they come with.
fn errors() -> Vec<(u16, String)> {
    let body = |code: u16, status: &str, msg: &str| {
        json!({"error": {"code": code, "message": msg, "status": status}}).to_string()
    };
    let mut out = vec![
        (429, body(429, "RESOURCE_EXHAUSTED", "Quota exceeded")),
        (503, body(503, "UNAVAILABLE", "overloaded")),
        (
            400,
            body(
                400,
                "INVALID_ARGUMENT",
                "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
            ),
        ),
        (400, body(400, "INVALID_ARGUMENT", "Request too long")),
        (400, body(400, "INVALID_ARGUMENT", "past the context window")),
        (400, body(400, "INVALID_ARGUMENT", "bad")),
        (403, body(403, "PERMISSION_DENIED", "no key")),
        (504, body(504, "DEADLINE_EXCEEDED", "slow")),
        (404, body(404, "NOT_FOUND", "models/x is not found")),
        (500, format!("[{}]", body(500, "INTERNAL", "oops"))),
        (500, format!("[{}, {}]", body(500, "INTERNAL", "first"), body(400, "X", "second"))),
        (502, "<html>bad gateway</html>".into()),
        (500, String::new()),
        (500, "[]".into()),
        (429, r#"{"error": {"code": 429, "message": "caf\u00e9 \"quota\"", "status": "RESOURCE_EXHAUSTED",
                "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]}}"#.into()),
    ];
    // Google's pretty-printed form
    out.push((
        400,
        serde_json::to_string_pretty(
            &json!({"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}),
        )
        .expect("json"),
    ));
    out
}

/// Field names the decoders read, put where they are absent by the mutations.
const KNOWN: &[&str] = &[
    "candidates",
    "content",
    "parts",
    "text",
    "thought",
    "thoughtSignature",
    "functionCall",
    "name",
    "id",
    "args",
    "finishReason",
    "usageMetadata",
    "promptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "cachedContentTokenCount",
    "toolUsePromptTokenCount",
    "promptFeedback",
    "blockReason",
    "blockReasonMessage",
    "responseId",
    "modelVersion",
    "error",
    "message",
    "code",
    "status",
];

/// Values a node is replaced by.
fn replacements() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(false),
        json!(0),
        json!(7),
        json!(-1),
        json!(2.5),
        json!(u64::MAX),
        json!(-9_000_000_000_000_000_000i64),
        json!(""),
        json!("STOP"),
        json!("x\"y\\z\n\u{1}\u{e9}\u{1F600}"),
        json!([]),
        json!([null]),
        json!([{}]),
        json!({}),
        json!({"extra": [1, {"a": null}]}),
    ]
}

/// Values a known field is given where it was absent (the plain ones, and a few that reach
/// further into the decoders).
fn insertions() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(3),
        json!("s"),
        json!({}),
        json!([]),
        json!([{"text": "t"}]),
        json!({"name": "f", "id": "", "args": null}),
        json!({"blockReason": "OTHER"}),
        json!([{"content": {"parts": [{"text": "x", "thought": true}]}, "finishReason": "MAX_TOKENS"}]),
    ]
}

/// `v` changed in one place, every way [`replacements`] and [`insertions`] and a few structural
/// changes allow, at every node.
fn variants(v: &Value) -> Vec<Value> {
    let mut out = replacements();
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let mut without = m.clone();
                without.remove(k);
                out.push(Value::Object(without));
                for c in variants(child) {
                    let mut m2 = m.clone();
                    m2.insert(k.clone(), c);
                    out.push(Value::Object(m2));
                }
            }
            for k in KNOWN {
                if !m.contains_key(*k) {
                    for x in insertions() {
                        let mut m2 = m.clone();
                        m2.insert((*k).to_string(), x);
                        out.push(Value::Object(m2));
                    }
                }
            }
            let mut m2 = m.clone();
            m2.insert(
                "unknownField".into(),
                json!({"deep": [1, "two", {"three": null}]}),
            );
            out.push(Value::Object(m2));
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let mut without = a.clone();
                without.remove(i);
                out.push(Value::Array(without));
                for c in variants(child) {
                    let mut a2 = a.clone();
                    a2[i] = c;
                    out.push(Value::Array(a2));
                }
            }
            for x in [Value::Null, json!({}), json!("s")] {
                let mut a2 = a.clone();
                a2.insert(0, x);
                out.push(Value::Array(a2));
            }
            if let Some(first) = a.first() {
                let mut a2 = a.clone();
                a2.push(first.clone());
                out.push(Value::Array(a2));
            }
        }
        Value::String(s) => {
            out.push(json!(format!("{s}\u{e9}\u{1F600}")));
            out.push(json!(format!("\"{s}\"\\\n\t\u{0}")));
        }
        Value::Number(_) => {
            out.push(json!(1u64 << 40));
            out.push(json!(3.0));
        }
        Value::Bool(_) | Value::Null => {}
    }
    out
}

// ------------------------------------------------------------------------------------------------
// Comparisons
// ------------------------------------------------------------------------------------------------

fn answer_agrees(text: &str, tally: &mut Tally) {
    tally.scanned += usize::from(super::answer_scan_agrees(text));
    let old = old::decode_response(text.as_bytes(), "asked").map(|mut r| {
        r.created = 0;
        r
    });
    let new = new::decode_response(text.as_bytes(), "asked").map(|mut r: ChatResponse| {
        r.created = 0;
        r
    });
    check(text, &|| text.to_string(), old, new, tally);
}

fn error_agrees(status: u16, body: &str, tally: &mut Tally) {
    for retry in [None, Some(Duration::from_secs(7))] {
        let old = Ok(old::decode_error(status, body.as_bytes(), retry));
        let new = Ok(new::decode_error(status, body.as_bytes(), retry));
        check(body, &|| body.to_string(), old, new, tally);
    }
}

/// Feeds both decoders the same events, comparing what each event gives; the stream ends at
/// the first error (as the gateway ends it), and both must then end the same way.
fn stream_agrees(events: &[SseEvent], tally: &mut Tally) {
    let mut o = old::StreamDecoder::new("asked");
    let mut n = new::StreamDecoder::new("asked");
    let input = || {
        events
            .iter()
            .map(|e| e.data.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    };
    for ev in events {
        tally.scanned += usize::from(super::event_scan_agrees(ev.data.trim()));
    }
    for ev in events {
        let mut out = Vec::new();
        let old = o.feed_into(ev, &mut out).map(|()| out);
        let mut out: Vec<StreamEvent> = Vec::new();
        let new = n.feed_into(ev, &mut out).map(|()| out);
        // an error ends the stream (as the gateway ends it), and so does a difference `Tally`
        // allows (the two decoders are no longer in the same state)
        let ended = old.is_err() || new.is_err();
        check(&ev.data, &input, old, new, tally);
        if ended {
            return;
        }
    }
    check("", &input, o.finish(), n.finish(), tally);
}

fn data_events(events: &[String]) -> Vec<SseEvent> {
    events
        .iter()
        .map(|d| SseEvent {
            event: None,
            data: d.clone(),
        })
        .collect()
}

fn sse_text(events: &[String]) -> String {
    events
        .iter()
        .map(|d| format!("data: {d}\r\n\r\n"))
        .collect()
}

/// The events of an SSE text, as the parser finds them (`None` if the framing fails: that is the
/// parser's part, the same for both decoders).
fn parse_sse(text: &str) -> Option<Vec<SseEvent>> {
    let mut p = SseParser::new();
    let mut out = p.push(text.as_bytes()).ok()?;
    out.extend(p.finish().ok()?);
    Some(out)
}

#[test]
fn answers_decode_as_the_reference_decoded_them() {
    let mut tally = Tally::default();
    for text in answers() {
        answer_agrees(&text, &mut tally);
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            for m in variants(&v) {
                answer_agrees(&m.to_string(), &mut tally);
            }
        }
    }
    eprintln!("answers, structured mutations: {tally:?}");
    assert!(tally.same > 20_000 && tally.ok > 10_000, "{tally:?}");
    assert!(tally.scanned > 10_000, "{tally:?}");
    // what a Value tree writes has no repeated keys, and reads back as a Value tree
    assert_eq!((tally.duplicate, tally.lenient), (0, 0));
}

#[test]
fn damaged_answers_decode_as_the_reference_decoded_them() {
    let texts = answers();
    let samples: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut tally = Tally::default();
    let (ok, total) = crate::scan::mutate_and_check(&samples, 20_000, |t| {
        let before = tally.ok;
        answer_agrees(t, &mut tally);
        tally.ok > before
    });
    eprintln!("answers, text mutations: {tally:?}");
    // both outcomes are reached
    assert!(ok > 1000 && total - ok > 1000, "{ok} of {total}");
    assert_eq!(tally.same + tally.duplicate + tally.lenient, total);
    assert!(tally.scanned > 2_000, "{tally:?}");
}

#[test]
fn errors_decode_as_the_reference_decoded_them() {
    let mut tally = Tally::default();
    let errs = errors();
    for (status, body) in &errs {
        for s in [
            *status, 400, 401, 403, 404, 408, 413, 429, 500, 503, 504, 599,
        ] {
            error_agrees(s, body, &mut tally);
        }
        if let Ok(v) = serde_json::from_str::<Value>(body) {
            for m in variants(&v) {
                error_agrees(*status, &m.to_string(), &mut tally);
            }
        }
    }
    let samples: Vec<&str> = errs.iter().map(|(_, b)| b.as_str()).collect();
    let (_, total) = crate::scan::mutate_and_check(&samples, 10_000, |t| {
        error_agrees(400, t, &mut tally);
        true
    });
    eprintln!("errors: {tally:?}");
    assert!(total == 10_000 && tally.same > 20_000, "{tally:?}");
}

#[test]
fn streams_decode_as_the_reference_decoded_them() {
    let mut tally = Tally::default();
    for stream in streams() {
        stream_agrees(&data_events(&stream), &mut tally);
        // each event changed in turn, the others as they were
        for (i, event) in stream.iter().enumerate() {
            let Ok(v) = serde_json::from_str::<Value>(event) else {
                continue;
            };
            for m in variants(&v) {
                let mut changed = stream.clone();
                changed[i] = m.to_string();
                stream_agrees(&data_events(&changed), &mut tally);
            }
        }
    }
    eprintln!("streams, structured mutations: {tally:?}");
    assert!(tally.same > 50_000 && tally.ok > 20_000, "{tally:?}");
    assert!(tally.scanned > 50_000, "{tally:?}");
    // what a Value tree writes has no repeated keys, and reads back as a Value tree
    assert_eq!((tally.duplicate, tally.lenient), (0, 0));
}

#[test]
fn damaged_streams_decode_as_the_reference_decoded_them() {
    let texts: Vec<String> = streams().iter().map(|s| sse_text(s)).collect();
    let samples: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut tally = Tally::default();
    let (_, total) = crate::scan::mutate_and_check(&samples, 20_000, |t| {
        if let Some(events) = parse_sse(t) {
            stream_agrees(&events, &mut tally);
        }
        true
    });
    eprintln!("streams, text mutations: {tally:?}");
    assert!(total == 20_000 && tally.same > 40_000, "{tally:?}");
    assert!(tally.scanned > 10_000, "{tally:?}");
}

// ------------------------------------------------------------------------------------------------
// Request bodies
// ------------------------------------------------------------------------------------------------

fn tool(name: &str, description: Option<&str>, parameters: Value) -> ToolDef {
    ToolDef {
        name: name.into(),
        description: description.map(str::to_string),
        parameters,
        strict: Some(true),
    }
}

fn call(id: &str, name: &str, args: &str) -> Part {
    Part::ToolCall(ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: args.into(),
    })
}

fn result(id: &str, content: Vec<Part>, is_error: bool) -> Part {
    Part::ToolResult(ToolResult {
        tool_call_id: id.into(),
        content,
        is_error,
    })
}

fn msg(role: Role, content: Vec<Part>) -> Message {
    Message { role, content }
}

fn signed(sig: &str) -> Part {
    Part::Thinking {
        text: "thought".into(),
        signature: Some(sig.into()),
    }
}

/// Conversations: every kind of part in every role, and the requests that are refused.
fn conversations() -> Vec<Vec<Message>> {
    let odd = "caf\u{e9} \u{1F600} \"quoted\" back\\slash\ttab\nline\u{1}\u{7f}\u{2028}</script>";
    let png = || {
        Part::Image(ImageSource::Base64 {
            media_type: "image/png".into(),
            data: "iVBORw0KGgo=".into(),
        })
    };
    let url = |u: &str| Part::Image(ImageSource::Url(u.into()));
    vec![
        vec![Message::text(Role::User, "Hello")],
        vec![Message::text(Role::User, odd)],
        vec![
            Message::text(Role::System, "Be brief."),
            Message::text(Role::System, ""),
            msg(Role::System, vec![Part::text("Two"), Part::text(odd)]),
            Message::text(Role::User, "Hi"),
        ],
        vec![
            msg(Role::System, vec![png()]),
            Message::text(Role::User, "x"),
        ],
        vec![
            msg(Role::User, vec![Part::text("Look"), png()]),
            Message::text(Role::Assistant, "A cat."),
            Message::text(Role::Assistant, ""),
            Message::text(Role::User, ""),
            Message::text(Role::User, "And these?"),
            msg(
                Role::User,
                vec![
                    url("gs://bucket/dog.JPG"),
                    url("https://x.test/a.webp?size=2#frag"),
                    url("https://x.test/a.heic"),
                    url("https://x.test/a.gif"),
                    url("https://x.test/b.jpeg"),
                    url("https://x.test/c.HEIF"),
                ],
            ),
        ],
        vec![msg(Role::User, vec![url("https://example.com/pic")])],
        vec![msg(
            Role::User,
            vec![url(&format!("https://x.test/{}", "y".repeat(300)))],
        )],
        // calls and results, names found from ids, results merged into one user turn
        vec![
            Message::text(Role::User, "Weather?"),
            msg(
                Role::Assistant,
                vec![
                    Part::text("Checking."),
                    call(
                        "c1",
                        "get_weather",
                        r#"{"city":"Paris","n":[1,2.5,-3,1e21],"z":null}"#,
                    ),
                    call("c2", "get_weather", ""),
                    call("c3", "other", "  \n "),
                    call("c4", "other", &format!(r#" {{"s": "{}"}} "#, "\\u00e9\\\"")),
                ],
            ),
            msg(
                Role::Tool,
                vec![result(
                    "c1",
                    vec![Part::text(r#"{"temp_c": 18, "sky": "clear"}"#)],
                    false,
                )],
            ),
            msg(
                Role::Tool,
                vec![result("c2", vec![Part::text("no such city")], true)],
            ),
            msg(
                Role::Tool,
                vec![result("c3", vec![Part::text(r#"{"error_obj": 1}"#)], true)],
            ),
            msg(
                Role::Tool,
                vec![result(
                    "c4",
                    vec![
                        Part::text("[1, 2]"),
                        Part::text(odd),
                        png(),
                        url("gs://b/x.png"),
                    ],
                    false,
                )],
            ),
            Message::text(Role::User, "Thanks"),
            msg(
                Role::User,
                vec![result("c1", vec![], false), Part::text("again")],
            ),
        ],
        // the same id called twice: the later name wins
        vec![
            msg(Role::Assistant, vec![call("same", "first", "{}")]),
            msg(Role::Assistant, vec![call("same", "second", "{}")]),
            msg(
                Role::Tool,
                vec![result("same", vec![Part::text("ok")], false)],
            ),
        ],
        vec![msg(
            Role::Tool,
            vec![result("nowhere", vec![Part::text("x")], false)],
        )],
        vec![msg(Role::Assistant, vec![call("c", "f", "[1, 2]")])],
        vec![msg(Role::Assistant, vec![call("c", "f", "{oops")])],
        vec![
            msg(Role::Assistant, vec![call("c", "f", "{}")]),
            msg(
                Role::Tool,
                vec![result(
                    "c",
                    vec![Part::Thinking {
                        text: "t".into(),
                        signature: None,
                    }],
                    false,
                )],
            ),
        ],
        // thought signatures: Gemini's on the call after them, others' and users' ignored, the
        // stand-in for Gemini 3's first unsigned call of a turn
        vec![
            Message::text(Role::User, "Weather?"),
            msg(
                Role::Assistant,
                vec![
                    signed("gemini:c2lnbmVk"),
                    Part::text("Let me check."),
                    call("a", "get_weather", "{}"),
                    call("b", "get_weather", "{}"),
                    signed("gemini:c2Vjb25k"),
                    call("c", "get_weather", "{}"),
                    signed("gemini:dW51c2Vk"),
                ],
            ),
            msg(
                Role::User,
                vec![signed("gemini:dXNlcg=="), Part::text("user")],
            ),
            msg(
                Role::Assistant,
                vec![
                    signed("EqQBCkYIB..."),
                    Part::Thinking {
                        text: "no signature".into(),
                        signature: None,
                    },
                    call("d", "get_weather", "{}"),
                    call("e", "get_weather", "{}"),
                ],
            ),
            msg(Role::Assistant, vec![call("f", "get_weather", "{}")]),
            msg(
                Role::Tool,
                vec![
                    result("a", vec![Part::text("{}")], false),
                    result("f", vec![Part::text("{}")], false),
                ],
            ),
        ],
        vec![msg(Role::Assistant, vec![signed("gemini:only")])],
    ]
}

/// A change to a request.
type Setting = Box<dyn Fn(&mut ChatRequest)>;

/// The other fields of a request, each on one request.
fn settings() -> Vec<Setting> {
    let openai = |k: &'static str, v: Value| -> Setting {
        Box::new(move |r: &mut ChatRequest| {
            r.extra.family = ApiFamily::OpenAi;
            r.extra.fields.insert(k.into(), v.clone());
        })
    };
    let anthropic = |k: &'static str, v: Value| -> Setting {
        Box::new(move |r: &mut ChatRequest| {
            r.extra.family = ApiFamily::Anthropic;
            r.extra.fields.insert(k.into(), v.clone());
        })
    };
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}},
                        "required": ["a"], "additionalProperties": false});
    let weather = tool(
        "get_weather",
        Some("Weather in a city"),
        json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    );
    let mut out: Vec<Setting> = vec![
        Box::new(|_| {}),
        Box::new(|r| {
            r.max_tokens = Some(100);
            r.temperature = Some(0.2);
            r.top_p = Some(0.9);
            r.top_k = Some(40);
            r.stop = vec!["END".into(), "caf\u{e9}\n".into()];
        }),
        Box::new(|r| {
            r.max_tokens = Some(0);
            r.temperature = Some(0.0);
            r.top_p = Some(1.0);
            r.top_k = Some(u32::MAX);
            r.stop = vec![String::new()];
        }),
        Box::new(|r| r.temperature = Some(1e-300)),
        Box::new(|r| r.temperature = Some(f64::NAN)),
        Box::new(|r| r.response_format = Some(ResponseFormat::Text)),
        Box::new(|r| r.response_format = Some(ResponseFormat::JsonObject)),
        Box::new(move |r| {
            r.response_format = Some(ResponseFormat::JsonSchema {
                name: "thing".into(),
                description: Some("d".into()),
                schema: schema.clone(),
                strict: Some(true),
            })
        }),
        Box::new(|r| {
            // unused by Gemini
            r.stream = true;
            r.include_usage = true;
            r.parallel_tool_calls = Some(false);
            r.user = Some("u".into());
            r.betas = vec!["b".into()];
        }),
        {
            let weather = weather.clone();
            Box::new(move |r| r.tools = vec![weather.clone()])
        },
        {
            let weather = weather.clone();
            Box::new(move |r| {
                r.tools = vec![
                    weather.clone(),
                    tool("no_params", None, Value::Null),
                    tool("empty_params", Some(""), json!({})),
                    tool("odd \"name\"", Some("caf\u{e9}"), json!({"type": "object"})),
                    tool("false_params", None, json!(false)),
                ];
                r.tool_choice = Some(ToolChoice::Tool("get_weather".into()));
            })
        },
    ];
    for choice in [ToolChoice::Auto, ToolChoice::None, ToolChoice::Required] {
        let weather = weather.clone();
        out.push(Box::new(move |r| {
            r.tools = vec![weather.clone()];
            r.tool_choice = Some(choice.clone());
        }));
    }
    // a tool choice without tools
    out.push(Box::new(|r| r.tool_choice = Some(ToolChoice::Required)));
    for (k, v) in [
        ("seed", json!(7)),
        ("seed", json!(-7)),
        ("seed", json!(1.5)),
        ("seed", json!(0.0)),
        ("seed", json!("7")),
        ("presence_penalty", json!(0.5)),
        ("presence_penalty", json!(-2)),
        ("presence_penalty", json!("x")),
        ("frequency_penalty", json!(0.25)),
        ("frequency_penalty", Value::Null),
        ("reasoning_effort", json!("none")),
        ("reasoning_effort", json!("minimal")),
        ("reasoning_effort", json!("low")),
        ("reasoning_effort", json!("medium")),
        ("reasoning_effort", json!("high")),
        ("reasoning_effort", json!("xhigh")),
        ("reasoning_effort", json!(3)),
        ("reasoning_effort", Value::Null),
        ("store", json!(true)),
        ("metadata", json!({"a": "b"})),
        ("n", json!(1)),
        ("logprobs", json!(true)),
        ("logprobs", json!(false)),
        ("logit_bias", json!({})),
        ("modalities", json!([])),
        ("audio", json!({"voice": "x"})),
    ] {
        out.push(openai(k, v));
    }
    out.push(Box::new(|r| {
        r.extra.family = ApiFamily::OpenAi;
        for (k, v) in [
            ("seed", json!(3)),
            ("presence_penalty", json!(0.1)),
            ("frequency_penalty", json!(0.2)),
            ("reasoning_effort", json!("medium")),
            ("store", json!(false)),
        ] {
            r.extra.fields.insert(k.into(), v);
        }
    }));
    for (k, v) in [
        (
            "thinking",
            json!({"type": "enabled", "budget_tokens": 2048}),
        ),
        ("thinking", json!({"type": "enabled"})),
        (
            "thinking",
            json!({"type": "enabled", "budget_tokens": "many"}),
        ),
        ("thinking", json!({"type": "disabled"})),
        ("thinking", json!({"type": "adaptive", "budget_tokens": 0})),
        ("thinking", json!("on")),
        ("thinking", Value::Null),
        ("metadata", json!({"user_id": "u"})),
        ("service_tier", json!("auto")),
        ("container", json!("c")),
        ("top_k", json!(3)),
    ] {
        out.push(anthropic(k, v));
    }
    out
}

const MODELS: &[&str] = &[
    "gemini-2.5-flash",
    "gemini-2.0-flash",
    "gemini-1.5-pro",
    "gemini-pro",
    "gemini-3-pro-preview",
    "gemini-3-flash-preview",
    "publishers/google/models/gemini-3-pro",
    "projects/p/locations/l/publishers/google/models/gemini-2.5-pro",
    "learnlm-2.0-flash",
    "",
];

#[test]
fn request_bodies_are_the_reference_bodies() {
    let (mut bodies, mut refused) = (0, 0);
    for messages in conversations() {
        for set in settings() {
            let mut req = ChatRequest::simple("ignored", "");
            req.messages = messages.clone();
            set(&mut req);
            for model in MODELS {
                let label = tollway_core::Label::new("gemini", model);
                let old = old::encode_request_as(&req, model, label);
                let new = new::encode_request_as(&req, model, label);
                match (old, new) {
                    (Ok(a), Ok(b)) => {
                        let a: Value = serde_json::from_slice(&a).expect("reference JSON");
                        let b: Value = serde_json::from_slice(&b).expect("typed JSON");
                        assert_eq!(a, b, "{model}: {req:?}");
                        bodies += 1;
                    }
                    (Err(a), Err(b)) => {
                        assert_eq!(a, b, "{model}: {req:?}");
                        refused += 1;
                    }
                    (a, b) => panic!("{model}: {req:?}\nreference: {a:?}\ntyped: {b:?}"),
                }
            }
        }
    }
    eprintln!("{bodies} bodies, {refused} refused");
    assert!(
        bodies > 3000 && refused > 1000,
        "{bodies} bodies, {refused} refused"
    );
}

/// Bodies that are not UTF-8, not objects, empty, or deeply nested.
#[test]
fn odd_bodies_decode_as_the_reference_decoded_them() {
    let deep = |n: usize, inner: &str| format!("{}{inner}{}", "[".repeat(n), "]".repeat(n));
    let ok = r#"{"candidates":[{"content":{"parts":[{"text":"hi"}]},"finishReason":"STOP"}]"#;
    let mut bodies: Vec<Vec<u8>> = [
        "",
        " ",
        "[]",
        "[{}]",
        "5",
        "\"text\"",
        "null",
        "true",
        "{} {}",
        "\u{feff}{}",
        &format!("{ok}}}"),
        &format!("{ok}, \"x\": {}}}", deep(100, "1")),
        // nesting beyond a Value tree's limit where nothing is read, and where arguments are
        &format!("{ok}, \"x\": {}}}", deep(200, "1")),
        &format!(
            r#"{{"candidates":[{{"content":{{"parts":[{{"functionCall":{{"name":"f","args":{{"a":{}}}}}}}]}}}}]}}"#,
            deep(200, "1")
        ),
        &format!("{ok}, \"x\": 1e400}}"),
        &format!("{ok}, \"x\": \"\\ud800\"}}"),
        r#"{"candidates":[{"content":{"parts":[{"text":"\ud800"}]}}]}"#,
        r#"{"candidates":[{"content":{"parts":[{"text":"\udc00\ud800"}]}}]}"#,
        r#"{"candidates":[{"content":{"parts":[{"text":"\ud83d\ude00"}]}}]}"#,
        r#"{"usageMetadata":{"promptTokenCount":1e400},"candidates":[{}]}"#,
        r#"{"usageMetadata":{"promptTokenCount":-0},"candidates":[{}]}"#,
        r#"{"usageMetadata":{"promptTokenCount":18446744073709551616},"candidates":[{}]}"#,
        r#"{"error":{"code":429,"message":"m","status":"RESOURCE_EXHAUSTED"}}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    // not UTF-8: in a field that is read, one that is not, and outside strings
    for (at, byte) in [(30, 0xff), (ok.len() - 3, 0xc3), (2, 0x80)] {
        let mut b = format!("{ok}, \"pad\": \"padding\"}}").into_bytes();
        b.insert(at.min(b.len()), byte);
        bodies.push(b);
        let mut b = format!("{ok}, \"pad\": \"padding\"}}").into_bytes();
        let end = b.len() - 4;
        b.insert(end, byte);
        bodies.push(b);
    }
    let mut tally = Tally::default();
    for b in &bodies {
        let shown = || String::from_utf8_lossy(b).into_owned();
        let text = shown();
        let input = std::str::from_utf8(b).unwrap_or("");
        let old = old::decode_response(b, "asked").map(|mut r| {
            r.created = 0;
            r
        });
        let new = new::decode_response(b, "asked").map(|mut r| {
            r.created = 0;
            r
        });
        check(input, &shown, old, new, &mut tally);
        if let Ok(t) = std::str::from_utf8(b) {
            tally.scanned += usize::from(super::answer_scan_agrees(t));
        }
        for status in [400, 500] {
            let old = Ok(old::decode_error(status, b, None));
            let new = Ok(new::decode_error(status, b, None));
            check(input, &shown, old, new, &mut tally);
        }
        // as a stream event (text only: an event's data is text)
        let ev = [SseEvent {
            event: None,
            data: text,
        }];
        stream_agrees(&ev, &mut tally);
    }
    eprintln!("odd bodies: {tally:?}");
    assert_eq!(tally.duplicate, 0);
    // nesting, 1e400 and a lone surrogate where nothing is read, as body and as event
    assert!(tally.lenient <= 6, "{tally:?}");
}

/// The one difference on JSON a Value tree reads: `candidates` as an object keyed `"0"`, which
/// the reference's JSON pointer (`/candidates/0`) took for the first candidate of a list. The
/// typed reading wants the list Gemini sends.
#[test]
fn candidates_keyed_by_index_are_not_a_list() {
    let body = r#"{"candidates": {"0": {"content": {"parts": [{"text": "hi"}]}, "finishReason": "STOP"}}}"#;
    let old = old::decode_response(body.as_bytes(), "m").expect("the reference read it");
    assert_eq!(old.text(), "hi");
    let e = new::decode_response(body.as_bytes(), "m").unwrap_err();
    assert!(e.message.contains("no candidates"), "{}", e.message);
    let mut o = old::StreamDecoder::new("m");
    let mut n = new::StreamDecoder::new("m");
    let ev = SseEvent {
        event: None,
        data: body.into(),
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    o.feed_into(&ev, &mut a).expect("reference");
    n.feed_into(&ev, &mut b).expect("typed");
    // the reference streamed the text and finished; the typed decoder only starts
    assert_eq!((a.len(), b.len()), (4, 1), "{a:?} {b:?}");
}
