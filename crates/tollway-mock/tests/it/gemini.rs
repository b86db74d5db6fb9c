//! The Gemini API as Google AI Studio serves it: `generateContent`, `streamGenerateContent` as SSE
//! (`alt=sse`) and as a JSON array, API keys, Google's validation messages and error shape, and
//! every fault.

use std::time::Duration;

use serde_json::{json, Value};

use crate::*;

pub const FLASH: &str = "gemini-2.5-flash";

pub const DEFAULT_TEXT: &str =
    "Hello! This is a deterministic reply from the tollway mock upstream server.";

pub fn generate_path(model: &str) -> String {
    format!("/v1beta/models/{model}:generateContent")
}

/// The stream path; `sse`: with `?alt=sse`, else the JSON-array form.
pub fn stream_path(model: &str, sse: bool) -> String {
    let alt = if sse { "?alt=sse" } else { "" };
    format!("/v1beta/models/{model}:streamGenerateContent{alt}")
}

pub fn say(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
}

pub fn with(mut body: Value, key: &str, v: Value) -> Value {
    body[key] = v;
    body
}

pub fn weather_decl() -> Value {
    json!({"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "OBJECT", "properties": {
            "city": {"type": "STRING"}, "days": {"type": "INTEGER"}}, "required": ["city"]}})
}

pub fn time_decl() -> Value {
    json!({"name": "get_time", "parametersJsonSchema": {"type": "object",
        "properties": {"zone": {"type": "string"}, "utc": {"type": "boolean"}}}})
}

pub fn tools(decls: &[Value]) -> Value {
    json!([{"functionDeclarations": decls}])
}

/// POSTs with an API key in `x-goog-api-key`.
async fn post(m: &Mock, path: &str, body: &Value) -> reqwest::Response {
    m.http
        .post(m.url(path))
        .header("x-goog-api-key", "AIza-mock-key")
        .json(body)
        .send()
        .await
        .expect("send")
}

pub async fn read_json(r: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, headers, v)
}

pub async fn generate(
    m: &Mock,
    model: &str,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    read_json(post(m, &generate_path(model), body).await).await
}

/// Google's SSE: `data: {json}\r\n\r\n` events, no `event:` names, no `[DONE]`.
pub fn parse_sse(body: &str) -> Vec<Value> {
    assert!(body.ends_with("\r\n\r\n"), "{body:?}");
    assert!(!body.contains("event:"), "{body}");
    body.split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let d = e
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data line: {e:?}"));
            assert!(!d.contains('\n'), "one line per event: {d:?}");
            serde_json::from_str(d).unwrap_or_else(|err| panic!("{err}: {d}"))
        })
        .collect()
}

/// Checks a stream answer's status and content type; the body.
pub async fn stream_body(r: reqwest::Response, sse: bool) -> String {
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"]
        .to_str()
        .expect("ct")
        .to_string();
    if sse {
        assert_eq!(ct, "text/event-stream");
    } else {
        assert!(ct.starts_with("application/json"), "{ct}");
    }
    r.text().await.expect("body")
}

pub async fn stream_sse(m: &Mock, model: &str, body: &Value) -> Vec<Value> {
    parse_sse(&stream_body(post(m, &stream_path(model, true), body).await, true).await)
}

pub async fn stream_array(m: &Mock, model: &str, body: &Value) -> Vec<Value> {
    let text = stream_body(post(m, &stream_path(model, false), body).await, false).await;
    match serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")) {
        Value::Array(a) => a,
        v => panic!("not an array: {v}"),
    }
}

/// Concatenated non-thought text of the first candidate, over chunks.
pub fn text_of(chunks: &[Value]) -> String {
    parts_of(chunks)
        .iter()
        .filter(|p| p.get("thought").is_none())
        .filter_map(|p| p["text"].as_str().map(str::to_string))
        .collect()
}

pub fn parts_of(chunks: &[Value]) -> Vec<Value> {
    chunks
        .iter()
        .flat_map(|c| {
            c["candidates"][0]["content"]["parts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

/// Checks a Google error body: `{"error": {"code", "message", "status"}}`; the message.
pub fn google_error(v: &Value, code: u16, status: &str) -> String {
    let e = &v["error"];
    assert_eq!(e["code"], code, "{v}");
    assert_eq!(e["status"], status, "{v}");
    e["message"].as_str().expect("message").to_string()
}

#[tokio::test]
async fn generate_content_answers_text_with_usage() {
    let m = mock().await;
    let (s, h, v) = generate(&m, FLASH, &say("Hello")).await;
    assert_eq!(s, 200, "{v}");
    assert!(h["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("application/json"));
    let c = &v["candidates"][0];
    assert_eq!(
        c["content"],
        json!({"role": "model", "parts": [{"text": DEFAULT_TEXT}]})
    );
    assert_eq!(c["finishReason"], "STOP");
    assert_eq!(c["index"], 0);
    assert_eq!(v["candidates"].as_array().map(Vec::len), Some(1));
    let u = &v["usageMetadata"];
    assert_eq!(u["promptTokenCount"], 4 + 2);
    assert_eq!(u["candidatesTokenCount"], 12);
    assert_eq!(u["totalTokenCount"], 18);
    assert!(u.get("cachedContentTokenCount").is_none());
    assert!(u.get("thoughtsTokenCount").is_none());
    assert!(
        u.get("trafficType").is_none(),
        "AI Studio has no traffic type"
    );
    assert_eq!(v["modelVersion"], FLASH);
    let id = v["responseId"].as_str().expect("id");
    assert_eq!(id.len(), 22);
    assert!(v.get("createTime").is_none());
    let (_, _, v2) = generate(&m, FLASH, &say("Hello")).await;
    assert_ne!(v2["responseId"], id, "ids differ per request");
}

#[tokio::test]
async fn knobs_from_the_percent_encoded_model_and_directives() {
    let m = mock().await;
    let (s, _, v) = generate(&m, &format!("{FLASH}%3Ftokens%3D3"), &say("hi")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(text_of(std::slice::from_ref(&v)), "lorem ipsum dolor");
    assert_eq!(v["modelVersion"], FLASH);
    assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 3);
    let (_, _, v) = generate(&m, FLASH, &say("hi [mock tokens=2]")).await;
    assert_eq!(text_of(&[v]), "lorem ipsum");
    // the API key in the query instead of the header
    let r = m
        .http
        .post(m.url(&format!("{}?key=AIza-q", generate_path(FLASH))))
        .json(&say("hi [mock tokens=1]"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let log = m.requests().await;
    assert_eq!(
        log[0]["path"],
        format!("/v1beta/models/{FLASH}%3Ftokens%3D3:generateContent")
    );
    assert_eq!(log[0]["model_id"], format!("{FLASH}?tokens=3"));
    assert_eq!(
        log[0]["auth"],
        json!({"scheme": "api_key", "via": "header"})
    );
    assert_eq!(log[2]["auth"], json!({"scheme": "api_key", "via": "query"}));
    assert_eq!(
        log[2]["path"],
        format!("/v1beta/models/{FLASH}:generateContent?key=AIza-q")
    );
    let stats = m.stats().await;
    assert_eq!(
        stats["by_path"]["/v1beta/models/{model}:generateContent"],
        3
    );
}

#[tokio::test]
async fn max_output_tokens_stop_sequences_and_snake_case() {
    let m = mock().await;
    let body = with(
        say("hi [mock tokens=20]"),
        "generationConfig",
        json!({"maxOutputTokens": 5, "temperature": 0.2, "topP": 0.9, "topK": 40, "seed": 7}),
    );
    let (_, _, v) = generate(&m, FLASH, &body).await;
    assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(
        text_of(std::slice::from_ref(&v)),
        "lorem ipsum dolor sit amet"
    );
    assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 5);
    // proto3 JSON: snake_case names and integers as strings
    let body = json!({
        "system_instruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": "hi [mock tokens=20]"},
            {"inline_data": {"mime_type": "image/png", "data": "iVBORw0KGgo="}}]}],
        "generation_config": {"max_output_tokens": "4", "stop_sequences": ["END"]},
    });
    let (s, _, v) = generate(&m, FLASH, &body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 4);
    assert!(v["usageMetadata"]["promptTokenCount"].as_u64().expect("n") > 85);
    // a stop sequence ends the text early; Gemini still says STOP
    let body = with(
        say("hi [mock stop=1 tokens=10]"),
        "generationConfig",
        json!({"stopSequences": ["END"]}),
    );
    let (_, _, v) = generate(&m, FLASH, &body).await;
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 5);
    // a single object where a list is expected, as Google's parser takes it
    let body = json!({"contents": {"role": "user", "parts": {"text": "hi [mock tokens=1]"}}});
    let (s, _, v) = generate(&m, FLASH, &body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(text_of(&[v]), "lorem");
}

#[tokio::test]
async fn function_calls_choices_and_responses() {
    let m = mock().await;
    let decls = tools(&[weather_decl(), time_decl()]);
    let (s, _, v) = generate(
        &m,
        FLASH,
        &with(say("weather? [mock tool=1]"), "tools", decls.clone()),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let c = &v["candidates"][0];
    assert_eq!(c["finishReason"], "STOP");
    assert_eq!(
        c["content"]["parts"],
        json!([{"functionCall": {"name": "get_weather", "args": {"city": "Paris", "days": 1}}}])
    );
    assert!(
        v["usageMetadata"]["candidatesTokenCount"]
            .as_u64()
            .expect("n")
            > 0
    );

    // parallel calls; a named one; parametersJsonSchema
    let (_, _, v) = generate(
        &m,
        FLASH,
        &with(say("both [mock tools=2]"), "tools", decls.clone()),
    )
    .await;
    let parts = parts_of(&[v]);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[1]["functionCall"]["name"], "get_time");
    assert_eq!(
        parts[1]["functionCall"]["args"],
        json!({"zone": "example", "utc": true})
    );

    // mode ANY forces a call without a knob; allowedFunctionNames picks it; NONE forbids
    let any = |names: Value| {
        let mut b = with(say("time?"), "tools", decls.clone());
        b["toolConfig"] =
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": names}});
        b
    };
    let (_, _, v) = generate(&m, FLASH, &any(json!([]))).await;
    assert_eq!(parts_of(&[v])[0]["functionCall"]["name"], "get_weather");
    let (_, _, v) = generate(&m, FLASH, &any(json!(["get_time"]))).await;
    assert_eq!(parts_of(&[v])[0]["functionCall"]["name"], "get_time");
    let mut none = with(say("time? [mock tool=1]"), "tools", decls.clone());
    none["toolConfig"] = json!({"functionCallingConfig": {"mode": "NONE"}});
    let (_, _, v) = generate(&m, FLASH, &none).await;
    assert_eq!(text_of(&[v]), DEFAULT_TEXT);

    // the function's response comes back: text quoting it
    let body = json!({
        "contents": [
            {"role": "user", "parts": [{"text": "weather?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                                         "thoughtSignature": "EqQBCgIYAhAB"}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}]},
        ],
        "tools": decls,
    });
    let (s, _, v) = generate(&m, FLASH, &body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(text_of(&[v]), "The tool returned: {\"temp\":21}");
}

#[tokio::test]
async fn thinking_parts_cached_tokens_and_candidates() {
    let m = mock().await;
    let (_, _, v) = generate(&m, FLASH, &say("think [mock reasoning=3 tokens=2]")).await;
    let parts = parts_of(std::slice::from_ref(&v));
    assert_eq!(
        parts[0],
        json!({"text": "lorem ipsum dolor", "thought": true})
    );
    assert_eq!(parts[1]["text"], "lorem ipsum");
    assert!(
        parts[1]["thoughtSignature"]
            .as_str()
            .expect("signature")
            .len()
            > 40
    );
    let u = &v["usageMetadata"];
    assert_eq!(u["thoughtsTokenCount"], 3);
    assert_eq!(u["candidatesTokenCount"], 2);
    assert_eq!(
        u["totalTokenCount"].as_u64(),
        Some(u["promptTokenCount"].as_u64().expect("n") + 5)
    );
    // includeThoughts false: the thinking is counted, not shown
    let body = with(
        say("think [mock reasoning=3 tokens=2]"),
        "generationConfig",
        json!({"thinkingConfig": {"includeThoughts": false, "thinkingBudget": 1024}}),
    );
    let (_, _, v) = generate(&m, FLASH, &body).await;
    let parts = parts_of(std::slice::from_ref(&v));
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0]["text"], "lorem ipsum");
    assert_eq!(v["usageMetadata"]["thoughtsTokenCount"], 3);

    // cached tokens are inside promptTokenCount
    let (_, _, plain) = generate(&m, FLASH, &say("hi [mock cached=0]")).await;
    let (_, _, v) = generate(&m, FLASH, &say("hi [mock cached=100]")).await;
    let u = &v["usageMetadata"];
    assert_eq!(u["cachedContentTokenCount"], 100);
    assert_eq!(
        u["promptTokenCount"].as_u64(),
        Some(
            plain["usageMetadata"]["promptTokenCount"]
                .as_u64()
                .expect("n")
                + 100
        )
    );
    assert_eq!(
        u["totalTokenCount"].as_u64(),
        Some(u["promptTokenCount"].as_u64().expect("n") + 12)
    );

    // candidateCount: that many candidates, counted together
    let body = with(say("hi"), "generationConfig", json!({"candidateCount": 2}));
    let (_, _, v) = generate(&m, FLASH, &body).await;
    let cands = v["candidates"].as_array().expect("candidates");
    assert_eq!(cands.len(), 2);
    assert_eq!(cands[1]["index"], 1);
    assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 24);
}

#[tokio::test]
async fn structured_output_follows_the_schema() {
    let m = mock().await;
    let schema = json!({"type": "OBJECT", "properties": {
        "name": {"type": "STRING"}, "age": {"type": "INTEGER"},
        "tags": {"type": "ARRAY", "items": {"type": "STRING"}}}, "required": ["name", "age"]});
    let body = with(
        say("who?"),
        "generationConfig",
        json!({"responseMimeType": "application/json", "responseSchema": schema}),
    );
    let (s, _, v) = generate(&m, FLASH, &body).await;
    assert_eq!(s, 200, "{v}");
    let text = text_of(std::slice::from_ref(&v));
    let got: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(
        got,
        json!({"name": "example", "age": 1, "tags": ["example"]})
    );
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    // JSON Schema; streamed in pieces that join to it
    let body = with(
        say("who?"),
        "generationConfig",
        json!({"responseMimeType": "application/json", "responseJsonSchema": {"type": "object",
            "properties": {"ok": {"type": "boolean"}, "n": {"type": "number"}}}}),
    );
    let chunks = stream_sse(&m, FLASH, &body).await;
    assert!(chunks.len() >= 4);
    let got: Value = serde_json::from_str(&text_of(&chunks)).expect("json");
    assert_eq!(got, json!({"ok": true, "n": 1}));
    // JSON without a schema; an enum
    let body = with(
        say("hi"),
        "generationConfig",
        json!({"responseMimeType": "application/json"}),
    );
    let (_, _, v) = generate(&m, FLASH, &body).await;
    let got: Value = serde_json::from_str(&text_of(&[v])).expect("json");
    assert_eq!(got, json!({"response": DEFAULT_TEXT}));
    let body = with(
        say("which?"),
        "generationConfig",
        json!({"responseMimeType": "text/x.enum", "responseSchema": {"type": "STRING", "enum": ["red", "blue"]}}),
    );
    let (_, _, v) = generate(&m, FLASH, &body).await;
    assert_eq!(text_of(&[v]), "red");
}

#[tokio::test]
async fn sse_streams_one_chunk_per_token_then_the_finish() {
    let m = mock().await;
    let chunks = stream_sse(&m, FLASH, &say("Hello")).await;
    assert_eq!(chunks.len(), 12 + 1);
    assert_eq!(text_of(&chunks), DEFAULT_TEXT);
    for c in &chunks[..12] {
        let cand = &c["candidates"][0];
        assert_eq!(cand["content"]["role"], "model");
        assert!(cand.get("finishReason").is_none(), "{c}");
        assert_eq!(c["modelVersion"], FLASH);
        assert_eq!(c["responseId"], chunks[0]["responseId"]);
        // intermediate chunks carry the prompt's usage only
        assert_eq!(c["usageMetadata"]["promptTokenCount"], 6);
        assert!(c["usageMetadata"].get("candidatesTokenCount").is_none());
    }
    let last = &chunks[12];
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(
        last["candidates"][0]["content"]["parts"],
        json!([{"text": ""}])
    );
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 12);
    assert_eq!(last["usageMetadata"]["totalTokenCount"], 18);

    // thoughts, then a function call arriving whole in one chunk, carrying the signature
    let mut body = with(
        say("weather? [mock reasoning=3]"),
        "tools",
        tools(&[weather_decl()]),
    );
    body["toolConfig"] = json!({"functionCallingConfig": {"mode": "ANY"}});
    let chunks = stream_sse(&m, FLASH, &body).await;
    let parts = parts_of(&chunks);
    assert_eq!(parts.len(), 3 + 1 + 1);
    assert!(parts[..3].iter().all(|p| p["thought"] == true));
    assert_eq!(
        parts[3]["functionCall"],
        json!({"name": "get_weather", "args": {"city": "Paris", "days": 1}})
    );
    assert!(parts[3]["thoughtSignature"].is_string());
    let last = chunks.last().expect("last");
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["thoughtsTokenCount"], 3);

    // usage=0: no usageMetadata anywhere
    let chunks = stream_sse(&m, FLASH, &say("hi [mock usage=0 tokens=2]")).await;
    assert!(chunks.iter().all(|c| c.get("usageMetadata").is_none()));

    let stats = wait_stats(&m, |s| s["in_flight"] == 0).await;
    assert_eq!(stats["streams_completed"], 3);
    assert_eq!(
        stats["by_path"]["/v1beta/models/{model}:streamGenerateContent"],
        3
    );
}

#[tokio::test]
async fn without_alt_sse_the_stream_is_a_json_array() {
    let m = mock().await;
    let chunks = stream_array(&m, FLASH, &say("hi [mock tokens=4]")).await;
    assert_eq!(chunks.len(), 5);
    assert_eq!(text_of(&chunks), "lorem ipsum dolor sit");
    assert_eq!(chunks[4]["candidates"][0]["finishReason"], "STOP");
    // paced like the others
    let t = std::time::Instant::now();
    let chunks = stream_array(&m, FLASH, &say("hi [mock ttft_ms=100 tpt_ms=20 tokens=3]")).await;
    assert!(t.elapsed() >= Duration::from_millis(100 + 2 * 20));
    assert_eq!(text_of(&chunks), "lorem ipsum dolor");
    let log = m.requests().await;
    assert_eq!(log[0]["alt"], Value::Null);
}

#[tokio::test]
async fn status_faults_in_googles_error_shape() {
    let m = mock().await;
    let cases = [
        (400, 400, "INVALID_ARGUMENT"),
        (401, 401, "UNAUTHENTICATED"),
        (403, 403, "PERMISSION_DENIED"),
        (404, 404, "NOT_FOUND"),
        (429, 429, "RESOURCE_EXHAUSTED"),
        (500, 500, "INTERNAL"),
        (503, 503, "UNAVAILABLE"),
        (504, 504, "DEADLINE_EXCEEDED"),
        (529, 503, "UNAVAILABLE"),
    ];
    for (knob, status, name) in cases {
        for path in [generate_path(FLASH), stream_path(FLASH, true)] {
            let r = post(&m, &path, &say(&format!("hi [mock fault={knob}]"))).await;
            let (s, h, v) = read_json(r).await;
            assert_eq!(s, status, "{knob} {path}");
            let msg = google_error(&v, status, name);
            assert!(!msg.is_empty());
            assert!(!h.contains_key("retry-after"));
        }
    }
    let (_, _, v) = generate(&m, FLASH, &say("[mock fault=404]")).await;
    assert!(google_error(&v, 404, "NOT_FOUND").starts_with(&format!("models/{FLASH} is not found")));
    // Retry-After and RetryInfo when asked
    for knob in [429, 503] {
        let (s, h, v) = generate(
            &m,
            FLASH,
            &say(&format!("[mock fault={knob} retry_after=7]")),
        )
        .await;
        assert_eq!(s, knob);
        assert_eq!(h["retry-after"], "7");
        assert_eq!(
            v["error"]["details"],
            json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}])
        );
    }
    // context length: a 400 naming the counts
    let (s, _, v) = generate(&m, FLASH, &say("[mock fault=context_length]")).await;
    assert_eq!(s, 400);
    let msg = google_error(&v, 400, "INVALID_ARGUMENT");
    assert_eq!(
        msg,
        "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576)."
    );
    // error_event without a stream: a 500
    let (s, _, v) = generate(&m, FLASH, &say("[mock fault=error_event]")).await;
    assert_eq!(s, 500);
    google_error(&v, 500, "INTERNAL");
}

#[tokio::test]
async fn content_policy_blocks_the_prompt() {
    let m = mock().await;
    let check = |v: &Value| {
        assert!(v.get("candidates").is_none(), "{v}");
        assert_eq!(v["promptFeedback"]["blockReason"], "SAFETY");
        assert!(v["promptFeedback"]["safetyRatings"].is_array());
        assert!(v["usageMetadata"]["promptTokenCount"].as_u64().expect("n") > 0);
    };
    let (s, _, v) = generate(&m, FLASH, &say("[mock fault=content_policy]")).await;
    assert_eq!(s, 200);
    check(&v);
    let chunks = stream_sse(&m, FLASH, &say("[mock fault=content_policy]")).await;
    assert_eq!(chunks.len(), 1);
    check(&chunks[0]);
    let chunks = stream_array(&m, FLASH, &say("[mock fault=content_policy]")).await;
    assert_eq!(chunks.len(), 1);
    check(&chunks[0]);
}

#[tokio::test]
async fn in_stream_faults() {
    let m = mock().await;
    // an error object after `after` tokens, then the end (no finish)
    let chunks = stream_sse(&m, FLASH, &say("[mock fault=error_event after=2 tokens=9]")).await;
    assert_eq!(chunks.len(), 3);
    assert_eq!(text_of(&chunks[..2]), "lorem ipsum");
    google_error(&chunks[2], 503, "UNAVAILABLE");
    assert!(chunks
        .iter()
        .all(|c| c["candidates"][0].get("finishReason").is_none()));
    // the same in the array form: still a valid array
    let chunks = stream_array(&m, FLASH, &say("[mock fault=error_event after=1 tokens=9]")).await;
    assert_eq!(chunks.len(), 2);
    google_error(&chunks[1], 503, "UNAVAILABLE");

    // a data line that is not JSON
    let body = stream_body(
        post(
            &m,
            &stream_path(FLASH, true),
            &say("[mock fault=malformed after=2]"),
        )
        .await,
        true,
    )
    .await;
    let events: Vec<&str> = body.split("\r\n\r\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 3);
    let bad = events[2].strip_prefix("data: ").expect("data");
    assert!(serde_json::from_str::<Value>(bad).is_err());
    let body = stream_body(
        post(
            &m,
            &stream_path(FLASH, false),
            &say("[mock fault=malformed]"),
        )
        .await,
        false,
    )
    .await;
    assert!(serde_json::from_str::<Value>(&body).is_err());

    // the connection cut after N tokens
    for sse in [true, false] {
        let mut r = post(
            &m,
            &stream_path(FLASH, sse),
            &say("[mock fault=reset after=2 tokens=20]"),
        )
        .await;
        assert_eq!(r.status(), 200);
        let mut got = Vec::new();
        let err = loop {
            match r.chunk().await {
                Ok(Some(c)) => got.extend_from_slice(&c),
                Ok(None) => panic!("clean end"),
                Err(e) => break e,
            }
        };
        assert!(
            err.is_body() || err.is_decode() || err.is_request(),
            "{err:?}"
        );
        let text = String::from_utf8(got).expect("utf-8");
        assert!(text.contains("ipsum") && !text.contains("dolor"), "{text}");
    }

    // non-streaming: a cut body, a body that is not JSON
    let r = post(&m, &generate_path(FLASH), &say("[mock fault=reset]")).await;
    assert!(r.text().await.is_err());
    let r = post(&m, &generate_path(FLASH), &say("[mock fault=malformed]")).await;
    assert_eq!(r.status(), 200);
    assert!(serde_json::from_str::<Value>(&r.text().await.expect("text")).is_err());

    // hang: never answers
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    for path in [generate_path(FLASH), stream_path(FLASH, true)] {
        let err = client
            .post(m.url(&path))
            .header("x-goog-api-key", "k")
            .json(&say("[mock fault=hang]"))
            .send()
            .await
            .expect_err("hangs");
        assert!(err.is_timeout(), "{err:?}");
    }
    wait_stats(&m, |s| s["in_flight"] == 0).await;
}

#[tokio::test]
async fn api_keys_are_required() {
    let m = mock().await;
    let unregistered = "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.";
    for path in [
        generate_path(FLASH),
        stream_path(FLASH, true),
        format!("{}?key=", generate_path(FLASH)),
    ] {
        let r = m
            .http
            .post(m.url(&path))
            .json(&say("[mock fault=429]"))
            .send()
            .await
            .expect("send");
        let (s, _, v) = read_json(r).await;
        assert_eq!(s, 403, "{path}");
        assert_eq!(google_error(&v, 403, "PERMISSION_DENIED"), unregistered);
    }
    let r = m
        .http
        .post(m.url(&generate_path(FLASH)))
        .header("x-goog-api-key", "")
        .json(&say("hi"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 403);
    // an OpenAI-style key is no Google API key
    let r = m
        .http
        .post(m.url(&generate_path(FLASH)))
        .bearer_auth("sk-x")
        .json(&say("hi"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 403);
    let log = m.requests().await;
    assert_eq!(
        log[0]["auth"],
        json!({"scheme": "rejected", "error": "PERMISSION_DENIED"})
    );
}

#[tokio::test]
async fn unknown_methods_and_paths_are_googles_404() {
    let m = mock().await;
    for path in [
        format!("/v1beta/models/{FLASH}:embedContent"),
        format!("/v1beta/models/{FLASH}"),
        "/v1beta/tunedModels/x:generateContent".to_string(),
    ] {
        let (s, _, v) = read_json(post(&m, &path, &say("hi")).await).await;
        assert_eq!(s, 404, "{path}");
        google_error(&v, 404, "NOT_FOUND");
    }
    assert_eq!(m.stats().await["requests"], 0);
}

#[tokio::test]
async fn validation_as_gemini_refuses() {
    let m = mock().await;
    let user = |parts: Value| json!({"contents": [{"role": "user", "parts": parts}]});
    let decls = tools(&[weather_decl()]);
    let call_turns = |response: Value| {
        json!({"contents": [
            {"role": "user", "parts": [{"text": "weather?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": response}]},
        ]})
    };
    let cases = [
        (json!({}), "* GenerateContentRequest.contents: contents is not specified\n"),
        (json!({"contents": []}), "contents is not specified"),
        (
            json!({"contents": [{"role": "assistant", "parts": [{"text": "hi"}]}]}),
            "Please use a valid role: user, model.",
        ),
        (
            json!({"contents": [{"parts": [{"text": "a"}]}, {"role": "model", "parts": [{"text": "b"}]}]}),
            "Please use a valid role: user, model.",
        ),
        (
            json!({"contents": [{"role": "user", "parts": []}]}),
            "GenerateContentRequest.contents[0].parts: contents.parts must not be empty.",
        ),
        (
            user(json!([{}])),
            "GenerateContentRequest.contents[0].parts[0].data: required oneof field 'data' must have one initialized field",
        ),
        (
            user(json!([{"text": "a", "inlineData": {"mimeType": "image/png", "data": "AA=="}}])),
            "Oneof field 'data' is already set. Cannot set 'inlineData'",
        ),
        (
            user(json!([{"text": 5}])),
            "Invalid value at 'contents[0].parts[0].text' (TYPE_STRING), 5",
        ),
        (
            user(json!([{"inlineData": {"mimeType": "image/png", "data": "not base64!"}}])),
            "Invalid value at 'contents[0].parts[0].inline_data.data' (TYPE_BYTES), Base64 decoding failed for \"not base64!\"",
        ),
        (
            user(json!([{"inlineData": {"data": "AA=="}}])),
            "contents[0].parts[0].inline_data.mime_type",
        ),
        (
            user(json!([{"fileData": {"mimeType": "application/pdf"}}])),
            "contents[0].parts[0].file_data.file_uri",
        ),
        (
            user(json!([{"text": "a", "thoughtSignature": "%%%"}])),
            "thought_signature' (TYPE_BYTES)",
        ),
        (
            user(json!([{"type": "text", "text": "a"}])),
            "Invalid JSON payload received. Unknown name \"type\" at 'contents[0].parts[0]': Cannot find field.",
        ),
        (
            with(say("hi"), "messages", json!([])),
            "Invalid JSON payload received. Unknown name \"messages\": Cannot find field.",
        ),
        (
            with(say("hi"), "generationConfig", json!({"max_tokens": 5})),
            "Invalid JSON payload received. Unknown name \"max_tokens\" at 'generation_config': Cannot find field.",
        ),
        (
            with(say("hi"), "generationConfig", json!({"thinkingConfig": {"budget": 5}})),
            "Unknown name \"budget\" at 'generation_config.thinking_config'",
        ),
        (
            with(say("hi"), "generationConfig", json!({"maxOutputTokens": "many"})),
            "Invalid value at 'generation_config.max_output_tokens' (TYPE_INT32), \"many\"",
        ),
        (
            with(say("hi"), "generationConfig", json!({"temperature": 3})),
            "generation_config.temperature: temperature must be in the range [0.0, 2.0].",
        ),
        (
            with(say("hi"), "generationConfig", json!({"candidateCount": 9})),
            "candidate_count",
        ),
        (
            with(say("hi"), "generationConfig", json!({"responseMimeType": "text/html"})),
            "allowed mimetypes are",
        ),
        (
            with(say("hi"), "generationConfig", json!({"responseSchema": {"type": "STRING"}})),
            "When response_schema is set",
        ),
        (
            with(
                say("hi"),
                "generationConfig",
                json!({"thinkingConfig": {"thinkingBudget": 100, "thinkingLevel": "low"}}),
            ),
            "You can only set only one of thinking budget and thinking level.",
        ),
        (
            with(say("hi"), "systemInstruction", json!({"parts": []})),
            "GenerateContentRequest.system_instruction.parts",
        ),
        (
            json!({"contents": [
                {"role": "user", "parts": [{"text": "weather?"}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {}}}]}]}),
            "Please ensure that function response turn comes immediately after a function call turn.",
        ),
        (
            call_turns(json!({"name": "get_time", "response": {"t": 1}})),
            "contents[2].parts[0].function_response.name",
        ),
        (
            call_turns(json!({"name": "get_weather", "response": "sunny"})),
            "Invalid value at 'contents[2].parts[0].function_response.response'",
        ),
        (
            json!({"contents": [{"role": "model", "parts": [{"functionCall": {"name": "f"}}]}]}),
            "Please ensure that function call turn comes immediately after a user turn or after a function response turn.",
        ),
        (
            with(say("hi"), "tools", tools(&[json!({"name": "bad name"})])),
            "tools[0].function_declarations[0].name: Invalid function name.",
        ),
        (
            with(
                say("hi"),
                "tools",
                tools(&[json!({"name": "f", "parameters": {}, "parametersJsonSchema": {}})]),
            ),
            "parameters and parameters_json_schema cannot both be set",
        ),
        (
            with(
                with(say("hi"), "tools", decls.clone()),
                "toolConfig",
                json!({"functionCallingConfig": {"mode": "SOMETIMES"}}),
            ),
            "Invalid value at 'tool_config.function_calling_config.mode'",
        ),
        (
            with(
                with(say("hi"), "tools", decls.clone()),
                "toolConfig",
                json!({"functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["get_weather"]}}),
            ),
            "tool_config.function_calling_config.allowed_function_names",
        ),
        (
            with(say("hi"), "toolConfig", json!({"functionCallingConfig": {"mode": "ANY"}})),
            "Function calling config is set without function_declarations.",
        ),
        (
            with(say("hi"), "safetySettings", json!([{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_SOME"}])),
            "Invalid value at 'safety_settings[0].threshold'",
        ),
    ];
    for (body, want) in cases {
        let (s, _, v) = generate(&m, FLASH, &body).await;
        assert_eq!(s, 400, "{body}: {v}");
        let msg = google_error(&v, 400, "INVALID_ARGUMENT");
        assert!(msg.contains(want), "{body}:\n{msg}\nwanted: {want}");
    }
    // unknown names come with a field violation
    let (_, _, v) = generate(
        &m,
        FLASH,
        &with(say("hi"), "generationConfig", json!({"max_tokens": 5})),
    )
    .await;
    assert_eq!(
        v["error"]["details"][0]["fieldViolations"][0]["field"],
        "generation_config"
    );
    // not JSON; not an object
    for body in ["{not json", "[1]"] {
        let r = m
            .http
            .post(m.url(&generate_path(FLASH)))
            .header("x-goog-api-key", "k")
            .body(body)
            .send()
            .await
            .expect("send");
        let (s, _, v) = read_json(r).await;
        assert_eq!(s, 400);
        assert!(
            google_error(&v, 400, "INVALID_ARGUMENT").starts_with("Invalid JSON payload received.")
        );
    }
    // what Gemini takes: every part kind, settings, a thinking level, a cached content name
    let body = json!({
        "systemInstruction": {"role": "system", "parts": [{"text": "Be brief."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "look"},
                {"inlineData": {"mimeType": "image/jpeg", "data": "_-8="}},
                {"fileData": {"fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc"}}]},
            {"role": "model", "parts": [{"text": "hmm", "thought": true}, {"text": "A picture."}]},
            {"role": "user", "parts": [{"text": "ok"}]}],
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "generationConfig": {"thinkingConfig": {"thinkingLevel": "high", "includeThoughts": true},
            "responseModalities": ["TEXT"], "presencePenalty": 0.5, "frequencyPenalty": -0.5,
            "candidateCount": 1},
        "cachedContent": "cachedContents/abc",
        "tools": [{"googleSearch": {}}],
    });
    let (s, _, v) = generate(&m, FLASH, &body).await;
    assert_eq!(s, 200, "{v}");
}
