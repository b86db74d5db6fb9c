//! Amazon Bedrock's Converse and ConverseStream: answers, the event stream decoded frame by
//! frame with its CRCs checked, faults, authentication (Bearer keys and SigV4) and validation.

use std::time::Duration;

use serde_json::{json, Value};
use tollway_mock::sigv4::{self, Credentials, SignableRequest};
use tollway_mock::MOCK_AWS_SECRET;

use crate::*;

/// A model id as the SDKs send it in the path: `:` encoded.
pub const HAIKU: &str = "anthropic.claude-3-haiku-20240307-v1%3A0";
const PROFILE_ARN: &str = "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-sonnet-4-5-20250929-v1%3A0";
const NAMESPACE: &str = ":http://internal.amazon.com/coral/com.amazon.bedrock/";

pub fn converse_path(model: &str, stream: bool) -> String {
    let op = if stream {
        "converse-stream"
    } else {
        "converse"
    };
    format!("/model/{model}/{op}")
}

pub fn say(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": [{"text": text}]}]})
}

pub fn top_song_tool() -> Value {
    json!({"toolSpec": {"name": "top_song", "description": "Get the most popular song played on a radio station.",
        "inputSchema": {"json": {"type": "object", "properties": {"sign": {"type": "string"}},
                                 "required": ["sign"]}}}})
}

fn with(mut body: Value, key: &str, v: Value) -> Value {
    body[key] = v;
    body
}

/// POSTs with a Bedrock API key.
async fn post(m: &Mock, path: &str, body: &Value) -> reqwest::Response {
    m.http
        .post(m.url(path))
        .bearer_auth("ABSKbW9jay1iZWRyb2Nr")
        .json(body)
        .send()
        .await
        .expect("send")
}

/// Converse: status, headers, JSON body.
pub async fn converse(
    m: &Mock,
    model: &str,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = post(m, &converse_path(model, false), body).await;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, headers, v)
}

/// One event-stream message.
#[derive(Debug)]
pub struct Frame {
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn event_type(&self) -> &str {
        self.header(":event-type").unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).expect("json payload")
    }
}

/// CRC-32 (IEEE, reflected), bit by bit: independent of the mock's.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn be32(b: &[u8]) -> usize {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
}

/// Decodes every message, checking both CRCs and that every header is a string; an error
/// names the first bad message.
pub fn decode(mut bytes: &[u8]) -> Result<Vec<Frame>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 16 {
            return Err(format!("{} trailing bytes", bytes.len()));
        }
        let total = be32(bytes);
        let hlen = be32(&bytes[4..]);
        if be32(&bytes[8..]) != crc32(&bytes[..8]) as usize {
            return Err(format!("message {}: bad prelude CRC", out.len()));
        }
        if total > bytes.len() || hlen + 16 > total {
            return Err(format!("message {}: bad lengths", out.len()));
        }
        let msg = &bytes[..total];
        if be32(&msg[total - 4..]) != crc32(&msg[..total - 4]) as usize {
            return Err(format!("message {}: bad message CRC", out.len()));
        }
        let mut h = &msg[12..12 + hlen];
        let mut headers = Vec::new();
        while !h.is_empty() {
            let n = h[0] as usize;
            let name = String::from_utf8(h[1..1 + n].to_vec()).expect("name");
            assert_eq!(h[1 + n], 7, "string header");
            let len = u16::from_be_bytes([h[2 + n], h[3 + n]]) as usize;
            let value = String::from_utf8(h[4 + n..4 + n + len].to_vec()).expect("value");
            headers.push((name, value));
            h = &h[4 + n + len..];
        }
        out.push(Frame {
            headers,
            payload: msg[12 + hlen..total - 4].to_vec(),
        });
        bytes = &bytes[total..];
    }
    Ok(out)
}

/// ConverseStream: the raw body, after checking the status and content type.
pub async fn stream_bytes(m: &Mock, model: &str, body: &Value) -> Vec<u8> {
    let r = post(m, &converse_path(model, true), body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.amazon.eventstream"
    );
    assert!(r.headers().contains_key("x-amzn-requestid"));
    r.bytes().await.expect("body").to_vec()
}

/// ConverseStream, decoded; every event checked for its headers and padding.
pub async fn stream(m: &Mock, model: &str, body: &Value) -> Vec<Frame> {
    let frames = decode(&stream_bytes(m, model, body).await).expect("frames");
    for f in &frames {
        if f.header(":message-type") == Some("event") {
            assert_eq!(f.header(":content-type"), Some("application/json"));
            let p = f.json()["p"].as_str().expect("padding").to_string();
            assert!(
                !p.is_empty() && "abcdefghijklmnopqrstuvwxyz".starts_with(&p[..p.len().min(26)])
            );
        }
    }
    frames
}

fn stream_text(frames: &[Frame]) -> String {
    frames
        .iter()
        .filter_map(|f| f.json()["delta"]["text"].as_str().map(str::to_string))
        .collect()
}

fn event_types(frames: &[Frame]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for f in frames {
        let t = f.event_type();
        if out.last() != Some(&t) {
            out.push(t);
        }
    }
    out
}

fn error_type(h: &reqwest::header::HeaderMap) -> String {
    h["x-amzn-errortype"].to_str().expect("ascii").to_string()
}

#[tokio::test]
async fn converse_answers_text_with_usage_and_metrics() {
    let m = mock().await;
    let (s, h, v) = converse(&m, HAIKU, &say("Hello")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["x-amzn-requestid"].len(), 36);
    assert_eq!(v["output"]["message"]["role"], "assistant");
    assert_eq!(
        v["output"]["message"]["content"],
        json!([{"text": "Hello! This is a deterministic reply from the tollway mock upstream server."}])
    );
    assert_eq!(v["stopReason"], "end_turn");
    let u = &v["usage"];
    assert_eq!(u["outputTokens"], 12);
    assert_eq!(u["inputTokens"], 4 + 2);
    assert_eq!(u["totalTokens"], 18);
    assert!(u.get("cacheReadInputTokens").is_none());
    assert!(v["metrics"]["latencyMs"].is_u64());
}

#[tokio::test]
async fn model_ids_are_percent_decoded_and_carry_knobs() {
    let m = mock().await;
    // knobs in the model id's query, `?` and `=` encoded as the gateway sends them
    let (s, _, v) = converse(&m, &format!("{HAIKU}%3Ftokens%3D3"), &say("hi")).await;
    assert_eq!(s, 200);
    assert_eq!(
        v["output"]["message"]["content"][0]["text"],
        "lorem ipsum dolor"
    );
    // an inference profile ARN, its `/` encoded
    let (s, _, v) = converse(&m, PROFILE_ARN, &say("hi [mock tokens=2]")).await;
    assert_eq!(s, 200);
    assert_eq!(v["output"]["message"]["content"][0]["text"], "lorem ipsum");
    // a plain `:` works too
    let (s, _, _) = converse(&m, "amazon.nova-lite-v1:0", &say("hi")).await;
    assert_eq!(s, 200);
    let log = m.requests().await;
    assert_eq!(
        log[0]["path"],
        format!("/model/{HAIKU}%3Ftokens%3D3/converse")
    );
    assert_eq!(
        log[0]["model_id"],
        "anthropic.claude-3-haiku-20240307-v1:0?tokens=3"
    );
    assert_eq!(
        log[1]["model_id"],
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    );
    assert_eq!(log[1]["auth"], json!({"scheme": "bearer"}));
    let stats = m.stats().await;
    assert_eq!(stats["by_path"]["/model/{modelId}/converse"], 3);
    // an ARN whose `/` is not encoded is no operation
    let r = post(
        &m,
        "/model/arn:aws:bedrock:us-east-1:1:inference-profile/us.x/converse",
        &say("hi"),
    )
    .await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_type(r.headers()), "UnknownOperationException");
}

#[tokio::test]
async fn tools_forced_choices_and_tool_results() {
    let m = mock().await;
    let tools = json!({"tools": [top_song_tool()]});
    let (s, _, v) = converse(
        &m,
        HAIKU,
        &with(say("top song? [mock tool=1]"), "toolConfig", tools.clone()),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["stopReason"], "tool_use");
    let content = v["output"]["message"]["content"]
        .as_array()
        .expect("content");
    assert_eq!(content.len(), 1);
    let call = &content[0]["toolUse"];
    assert!(call["toolUseId"]
        .as_str()
        .expect("id")
        .starts_with("tooluse_"));
    assert_eq!(call["name"], "top_song");
    assert_eq!(call["input"], json!({"sign": "example"}));

    // forced without a knob: any, or a named tool
    for choice in [json!({"any": {}}), json!({"tool": {"name": "top_song"}})] {
        let mut cfg = tools.clone();
        cfg["toolChoice"] = choice;
        let (_, _, v) = converse(&m, HAIKU, &with(say("top song?"), "toolConfig", cfg)).await;
        assert_eq!(v["stopReason"], "tool_use");
    }
    // auto without a knob: text
    let mut cfg = tools.clone();
    cfg["toolChoice"] = json!({"auto": {}});
    let (_, _, v) = converse(&m, HAIKU, &with(say("top song?"), "toolConfig", cfg)).await;
    assert_eq!(v["stopReason"], "end_turn");

    // the tool's result comes back: text quoting it
    let body = json!({
        "messages": [
            {"role": "user", "content": [{"text": "top song?"}]},
            {"role": "assistant", "content": [{"toolUse": {"toolUseId": "tooluse_1", "name": "top_song", "input": {"sign": "WZPZ"}}}]},
            {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_1",
                "content": [{"json": {"song": "Elemental Hotel"}}, {"text": "by 8 Storey Hike"}], "status": "success"}}]},
        ],
        "toolConfig": tools,
    });
    let (s, _, v) = converse(&m, HAIKU, &body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["stopReason"], "end_turn");
    assert_eq!(
        v["output"]["message"]["content"][0]["text"],
        "The tool returned: {\"song\":\"Elemental Hotel\"}by 8 Storey Hike"
    );
}

#[tokio::test]
async fn reasoning_cache_max_tokens_and_stop_sequences() {
    let m = mock().await;
    let (_, _, v) = converse(&m, HAIKU, &say("think [mock reasoning=3 tokens=2]")).await;
    let content = &v["output"]["message"]["content"];
    let r = &content[0]["reasoningContent"]["reasoningText"];
    assert_eq!(r["text"], "lorem ipsum dolor");
    assert!(r["signature"].as_str().expect("signature").len() > 40);
    assert_eq!(content[1]["text"], "lorem ipsum");
    assert_eq!(v["usage"]["outputTokens"], 5);

    let (_, _, v) = converse(&m, HAIKU, &say("hi [mock cached=100 cache_write=50]")).await;
    let u = &v["usage"];
    assert_eq!(u["cacheReadInputTokens"], 100);
    assert_eq!(u["cacheWriteInputTokens"], 50);
    assert_eq!(
        u["totalTokens"].as_u64(),
        Some(u["inputTokens"].as_u64().expect("n") + 12 + 150)
    );
    // a cache point without knobs: the fields, zero
    let body = with(
        say("hi"),
        "system",
        json!([{"text": "Be brief."}, {"cachePoint": {"type": "default"}}]),
    );
    let (s, _, v) = converse(&m, HAIKU, &body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["usage"]["cacheReadInputTokens"], 0);

    let body = with(
        say("hi [mock tokens=20]"),
        "inferenceConfig",
        json!({"maxTokens": 5}),
    );
    let (_, _, v) = converse(&m, HAIKU, &body).await;
    assert_eq!(v["stopReason"], "max_tokens");
    assert_eq!(
        v["output"]["message"]["content"][0]["text"],
        "lorem ipsum dolor sit amet"
    );
    assert_eq!(v["usage"]["outputTokens"], 5);

    let body = with(
        say("hi [mock stop=1 tokens=10]"),
        "inferenceConfig",
        json!({"stopSequences": ["END"], "temperature": 0.5, "topP": 0.9}),
    );
    let (_, _, v) = converse(&m, HAIKU, &body).await;
    assert_eq!(v["stopReason"], "stop_sequence");
    assert_eq!(v["usage"]["outputTokens"], 5);

    // images, documents and reasoning in the history are accepted and counted
    let body = json!({"messages": [
        {"role": "user", "content": [{"text": "what is it?"},
            {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}]},
        {"role": "assistant", "content": [
            {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "sig"}}},
            {"text": "A pixel."}]},
        {"role": "user", "content": [{"text": "ok"}, {"cachePoint": {"type": "default"}}]},
    ], "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 1024}}});
    let (s, _, v) = converse(&m, HAIKU, &body).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["usage"]["inputTokens"].as_u64().expect("n") > 85);
}

#[tokio::test]
async fn streams_frame_by_frame() {
    let m = mock().await;
    let frames = stream(&m, HAIKU, &say("Hello")).await;
    assert_eq!(
        event_types(&frames),
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    assert_eq!(frames.len(), 1 + 12 + 3);
    assert_eq!(frames[0].json()["role"], "assistant");
    assert_eq!(
        stream_text(&frames),
        "Hello! This is a deterministic reply from the tollway mock upstream server."
    );
    assert!(frames[1..13]
        .iter()
        .all(|f| f.json()["contentBlockIndex"] == 0));
    assert_eq!(frames[14].json()["stopReason"], "end_turn");
    let meta = frames[15].json();
    assert_eq!(meta["usage"]["outputTokens"], 12);
    assert_eq!(meta["usage"]["totalTokens"], 18);
    assert!(meta["metrics"]["latencyMs"].is_u64());
    // the padding varies
    let pads: std::collections::HashSet<usize> = frames
        .iter()
        .map(|f| f.json()["p"].as_str().map_or(0, str::len))
        .collect();
    assert!(pads.len() > 3, "{pads:?}");

    // reasoning, then a forced tool call
    let body = with(
        say("top song? [mock reasoning=2]"),
        "toolConfig",
        json!({"tools": [top_song_tool()], "toolChoice": {"tool": {"name": "top_song"}}}),
    );
    let frames = stream(&m, HAIKU, &body).await;
    assert_eq!(
        event_types(&frames),
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockStop",
            "contentBlockStart",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    let deltas: Vec<Value> = frames.iter().map(|f| f.json()).collect();
    assert_eq!(deltas[1]["delta"]["reasoningContent"]["text"], "lorem");
    assert!(deltas[3]["delta"]["reasoningContent"]["signature"].is_string());
    let start = &deltas[5];
    assert_eq!(start["contentBlockIndex"], 1);
    assert_eq!(start["start"]["toolUse"]["name"], "top_song");
    assert!(start["start"]["toolUse"]["toolUseId"].is_string());
    let input: String = deltas
        .iter()
        .filter_map(|d| d["delta"]["toolUse"]["input"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&input).expect("input"),
        json!({"sign": "example"})
    );
    assert!(
        deltas
            .iter()
            .filter(|d| d["delta"].get("toolUse").is_some())
            .count()
            >= 3
    );
    assert_eq!(deltas[deltas.len() - 2]["stopReason"], "tool_use");

    let stats = wait_stats(&m, |s| s["in_flight"] == 0).await;
    assert_eq!(stats["streams_started"], 2);
    assert_eq!(stats["streams_completed"], 2);
    assert_eq!(stats["by_path"]["/model/{modelId}/converse-stream"], 2);
}

#[tokio::test]
async fn streams_are_paced_by_ttft_and_tpt() {
    let m = mock().await;
    let t = std::time::Instant::now();
    let frames = stream(&m, HAIKU, &say("hi [mock ttft_ms=150 tpt_ms=30 tokens=5]")).await;
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(150 + 4 * 30), "{took:?}");
    assert_eq!(stream_text(&frames), "lorem ipsum dolor sit amet");
    let meta = frames.last().expect("metadata").json();
    assert_eq!(meta["metrics"]["latencyMs"], 150 + 5 * 30);
}

#[tokio::test]
async fn status_faults_in_bedrocks_error_shape() {
    let m = mock().await;
    let types = [
        (400, 400, "ValidationException"),
        (403, 403, "AccessDeniedException"),
        (404, 404, "ResourceNotFoundException"),
        (408, 408, "ModelTimeoutException"),
        (424, 424, "ModelErrorException"),
        (429, 429, "ThrottlingException"),
        (500, 500, "InternalServerException"),
        (503, 503, "ServiceUnavailableException"),
        (529, 503, "ServiceUnavailableException"),
    ];
    for (knob, status, typ) in types {
        for stream in [false, true] {
            let r = post(
                &m,
                &converse_path(HAIKU, stream),
                &say(&format!("hi [mock fault={knob} retry_after=3]")),
            )
            .await;
            assert_eq!(r.status(), status);
            let h = r.headers().clone();
            assert_eq!(error_type(&h), format!("{typ}{NAMESPACE}"));
            assert!(h.contains_key("x-amzn-requestid"));
            assert!(
                !h.contains_key("retry-after"),
                "Bedrock sends no Retry-After"
            );
            let v: Value = r.json().await.expect("json");
            assert!(v["message"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
            assert_eq!(v.as_object().map(|o| o.len()), Some(1));
        }
    }
    // non-streaming: error_event is a 500; context length a 400
    let (s, h, _) = converse(&m, HAIKU, &say("[mock fault=error_event]")).await;
    assert_eq!(s, 500);
    assert!(error_type(&h).starts_with("InternalServerException:"));
    let (s, _, v) = converse(&m, HAIKU, &say("[mock fault=context_length]")).await;
    assert_eq!(s, 400);
    assert_eq!(v["message"], "Input is too long for requested model.");
}

#[tokio::test]
async fn in_stream_faults() {
    let m = mock().await;
    // an exception message after `after` tokens, then the end
    let frames = stream(
        &m,
        HAIKU,
        &say("[mock fault=error_event after=3 tokens=10]"),
    )
    .await;
    assert_eq!(stream_text(&frames), "lorem ipsum dolor");
    let last = frames.last().expect("exception");
    assert_eq!(last.header(":message-type"), Some("exception"));
    assert_eq!(last.header(":exception-type"), Some("throttlingException"));
    assert_eq!(last.header(":content-type"), Some("application/json"));
    assert!(last.json()["message"].is_string());
    assert!(!frames.iter().any(|f| f.event_type() == "messageStop"));

    // a frame whose message CRC is wrong
    let bytes = stream_bytes(&m, HAIKU, &say("[mock fault=malformed after=2]")).await;
    let err = decode(&bytes).expect_err("bad CRC");
    assert_eq!(err, "message 3: bad message CRC");

    // the connection cut after N tokens
    let mut r = post(
        &m,
        &converse_path(HAIKU, true),
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
    let frames = decode(&got).expect("whole frames before the cut");
    assert_eq!(stream_text(&frames), "lorem ipsum");

    // non-streaming: a cut body, a body that is not JSON
    let r = post(&m, &converse_path(HAIKU, false), &say("[mock fault=reset]")).await;
    assert!(r.text().await.is_err());
    let r = post(
        &m,
        &converse_path(HAIKU, false),
        &say("[mock fault=malformed]"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(serde_json::from_str::<Value>(&r.text().await.expect("text")).is_err());

    // hang: never answers, released when the client leaves
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    for stream in [false, true] {
        let err = client
            .post(m.url(&converse_path(HAIKU, stream)))
            .bearer_auth("k")
            .json(&say("[mock fault=hang]"))
            .send()
            .await
            .expect_err("hangs");
        assert!(err.is_timeout(), "{err:?}");
    }
    wait_stats(&m, |s| s["in_flight"] == 0).await;
}

const DATE: &str = "20251207T120000Z";

/// A request signed with SigV4 by the mock's own signer, over `signed_path` (normally the
/// path sent) with `secret`.
async fn signed(
    m: &Mock,
    path: &str,
    signed_path: &str,
    body: &[u8],
    secret: &str,
    service: &str,
) -> reqwest::Response {
    let host = m.server.addr().to_string();
    let headers = [
        ("host", host.as_str()),
        ("x-amz-date", DATE),
        ("x-amz-security-token", "session-token"),
        ("content-type", "application/json"),
    ];
    let auth = sigv4::sign(
        &SignableRequest {
            method: "POST",
            path: signed_path,
            query: "",
            headers: &headers,
            body,
        },
        &Credentials {
            access_key_id: "AKIDTOLLWAY",
            secret_access_key: secret,
            region: "eu-central-1",
            service,
        },
    )
    .expect("signed");
    let mut rb = m.http.post(m.url(path)).header("authorization", auth);
    for (n, v) in headers {
        rb = rb.header(n, v);
    }
    rb.body(body.to_vec()).send().await.expect("send")
}

#[tokio::test]
async fn authentication_sigv4_and_api_keys() {
    let m = mock().await;
    let body = serde_json::to_vec(&say("hi [mock tokens=1]")).expect("json");
    for stream in [false, true] {
        let path = converse_path(HAIKU, stream);
        let r = signed(&m, &path, &path, &body, MOCK_AWS_SECRET, "bedrock").await;
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }
    let path = converse_path(PROFILE_ARN, false);
    let r = signed(&m, &path, &path, &body, MOCK_AWS_SECRET, "bedrock").await;
    assert_eq!(r.status(), 200);
    let log = m.requests().await;
    assert_eq!(
        log[0]["auth"],
        json!({"scheme": "sigv4", "access_key_id": "AKIDTOLLWAY", "region": "eu-central-1",
               "signed_headers": "content-type;host;x-amz-date;x-amz-security-token"})
    );

    let bad = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
    let path = converse_path(HAIKU, false);
    // wrong secret; path signed without the second encoding; wrong service
    let single = "/model/anthropic.claude-3-haiku-20240307-v1:0/converse";
    for (signed_path, secret, service) in [
        (path.as_str(), "not-the-secret", "bedrock"),
        (single, MOCK_AWS_SECRET, "bedrock"),
        (path.as_str(), MOCK_AWS_SECRET, "bedrock-runtime"),
    ] {
        let r = signed(&m, &path, signed_path, &body, secret, service).await;
        assert_eq!(r.status(), 403);
        assert_eq!(error_type(r.headers()), "InvalidSignatureException");
        let v: Value = r.json().await.expect("json");
        if service == "bedrock" {
            assert_eq!(v["message"], bad);
        }
    }
    // a body changed after signing
    let host = m.server.addr().to_string();
    let headers = [("host", host.as_str()), ("x-amz-date", DATE)];
    let auth = sigv4::sign(
        &SignableRequest {
            method: "POST",
            path: &path,
            query: "",
            headers: &headers,
            body: &body,
        },
        &Credentials {
            access_key_id: "AKID",
            secret_access_key: MOCK_AWS_SECRET,
            region: "us-east-1",
            service: "bedrock",
        },
    )
    .expect("signed");
    let r = m
        .http
        .post(m.url(&path))
        .header("authorization", auth)
        .header("x-amz-date", DATE)
        .body(serde_json::to_vec(&say("other")).expect("json"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.expect("json")["message"], bad);

    // no authentication at all
    let r = m
        .http
        .post(m.url(&path))
        .json(&say("hi"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 403);
    assert_eq!(
        error_type(r.headers()),
        "MissingAuthenticationTokenException"
    );
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"message": "Missing Authentication Token"})
    );
    // authentication comes before the knobs
    let r = m
        .http
        .post(m.url(&path))
        .json(&say("[mock fault=429]"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn validation_as_bedrock_refuses() {
    let m = mock().await;
    let user = |c: Value| json!({"messages": [{"role": "user", "content": [c]}]});
    let cases = [
        (json!({"messages": [], }), "must start with a user message"),
        (
            with(say("hi"), "modelId", json!("x")),
            "extraneous key [modelId]",
        ),
        (
            with(say("hi"), "max_tokens", json!(5)),
            "extraneous key [max_tokens]",
        ),
        (
            json!({"system": [{"text": "x"}]}),
            "'messages' failed to satisfy constraint: Member must not be null",
        ),
        (
            json!({"messages": [{"role": "assistant", "content": [{"text": "hi"}]}]}),
            "must start with a user message",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"text": "a"}]}, {"role": "user", "content": [{"text": "b"}]}]}),
            "must alternate",
        ),
        (
            json!({"messages": [{"role": "system", "content": [{"text": "a"}]}]}),
            "enum value set: [user, assistant]",
        ),
        (
            json!({"messages": [{"role": "user", "content": []}]}),
            "is empty",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}]}),
            "must be an array",
        ),
        (
            user(json!({"text": "a", "image": {"format": "png", "source": {"bytes": "AA=="}}})),
            "exactly one",
        ),
        (user(json!({})), "exactly one"),
        (
            user(json!({"type": "text", "text": "a"})),
            "extraneous key [type]",
        ),
        (user(json!({"text": "  "})), "is blank"),
        (
            user(json!({"image": {"format": "bmp", "source": {"bytes": "AA=="}}})),
            "[png, jpeg, gif, webp]",
        ),
        (
            user(json!({"image": {"format": "png", "source": {"bytes": "not base64!"}}})),
            "base64",
        ),
        (
            user(json!({"toolResult": {"toolUseId": "t", "content": [{"text": "x"}]}})),
            "toolConfig field must be defined",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"toolUse": {"toolUseId": "t", "name": "n", "input": {}}}]}]}),
            "not allowed in a user message",
        ),
        (
            with(
                say("hi"),
                "toolConfig",
                json!({"tools": [{"toolSpec": {"name": "bad name", "inputSchema": {"json": {}}}}]}),
            ),
            "[a-zA-Z0-9_-]+",
        ),
        (
            with(say("hi"), "toolConfig", json!({"tools": []})),
            "length greater than or equal to 1",
        ),
        (
            with(
                say("hi"),
                "toolConfig",
                json!({"tools": [top_song_tool()], "toolChoice": {"required": {}}}),
            ),
            "extraneous key [required]",
        ),
        (
            with(say("hi"), "inferenceConfig", json!({"maxTokens": 0})),
            "greater than or equal to 1",
        ),
        (
            with(say("hi"), "inferenceConfig", json!({"temperature": 3})),
            "less than or equal to 1",
        ),
        (
            with(say("hi"), "inferenceConfig", json!({"max_tokens": 5})),
            "extraneous key [max_tokens]",
        ),
        (
            with(
                say("hi"),
                "system",
                json!([{"cachePoint": {"type": "ephemeral"}}]),
            ),
            "[default]",
        ),
        (
            with(
                say("hi"),
                "outputConfig",
                json!({"textFormat": {"type": "json_object"}}),
            ),
            "[json_schema]",
        ),
        (
            with(
                say("hi"),
                "outputConfig",
                json!({"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {"schema": {"type": "object"}}}}}),
            ),
            "must be a string",
        ),
        (
            with(
                say("hi"),
                "outputConfig",
                json!({"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {"schema": "{oops"}}}}),
            ),
            "not a valid JSON object",
        ),
        (
            with(
                say("hi"),
                "outputConfig",
                json!({"textFormat": {"type": "json_schema", "structure": {}}}),
            ),
            "exactly one",
        ),
    ];
    // a well-formed schema is taken
    let ok = with(
        say("hi"),
        "outputConfig",
        json!({"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {
            "schema": "{\"type\": \"object\"}", "name": "answer", "description": "d"}}}}),
    );
    let (s, _, v) = converse(&m, HAIKU, &ok).await;
    assert_eq!(s, 200, "{v}");
    for (body, want) in cases {
        let (s, h, v) = converse(&m, HAIKU, &body).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(error_type(&h), format!("ValidationException{NAMESPACE}"));
        let msg = v["message"].as_str().expect("message");
        assert!(msg.contains(want), "{body}: {msg}");
    }
    // not JSON
    let r = m
        .http
        .post(m.url(&converse_path(HAIKU, true)))
        .bearer_auth("k")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    assert!(error_type(r.headers()).starts_with("ValidationException:"));
}

#[tokio::test]
async fn count_tokens_counts_converse_and_invoke_model_inputs() {
    let m = mock().await;
    let count = |model: &'static str, body: Value| {
        let m = &m;
        async move {
            let r = post(m, &format!("/model/{model}/count-tokens"), &body).await;
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.expect("json"))
        }
    };
    let sonnet = "anthropic.claude-sonnet-4-5-20250929-v1%3A0";
    // Converse input: what a Converse answer reports as its input
    let (_, _, answer) = converse(&m, sonnet, &say("How many tokens is this?")).await;
    let (status, v) = count(
        sonnet,
        json!({"input": {"converse": say("How many tokens is this?")}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["inputTokens"], answer["usage"]["inputTokens"], "{v}");
    // a Claude InvokeModel body
    let invoke = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10,
                        "messages": [{"role": "user", "content": "How many tokens is this?"}]});
    let (status, v) = count(
        sonnet,
        json!({"input": {"invokeModel": {"body": invoke.to_string()}}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["inputTokens"].as_u64().is_some_and(|n| n > 0), "{v}");
    // inference profiles, both members of the union, fields Converse's count lacks: refused
    let (status, _) = count(
        "us.anthropic.claude-sonnet-4-5-20250929-v1%3A0",
        json!({"input": {"converse": say("hi")}}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = count(
        sonnet,
        json!({"input": {"converse": say("hi"), "invokeModel": {"body": "{}"}}}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = count(
        sonnet,
        json!({"input": {"converse": with(say("hi"), "inferenceConfig", json!({"maxTokens": 5}))}}),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_instance_and_container_endpoints_hand_out_credentials_that_sign() {
    let m = mock().await;
    let r = m
        .http
        .put(m.url("/latest/api/token"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400, "IMDSv2 wants a TTL");
    let r = m
        .http
        .put(m.url("/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "21600")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let token = r.text().await.expect("token");
    let roles = m.url("/latest/meta-data/iam/security-credentials/");
    let r = m.http.get(&roles).send().await.expect("send");
    assert_eq!(r.status(), 401, "no session token");
    let r = m
        .http
        .get(&roles)
        .header("X-aws-ec2-metadata-token", &token)
        .send()
        .await
        .expect("send");
    let role = r.text().await.expect("role");
    assert_eq!(role, tollway_mock::MOCK_INSTANCE_ROLE);
    let r = m
        .http
        .get(format!("{roles}{role}"))
        .header("X-aws-ec2-metadata-token", &token)
        .send()
        .await
        .expect("send");
    let v: Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(v["Code"], "Success");
    assert_eq!(v["SecretAccessKey"], tollway_mock::MOCK_AWS_SECRET);
    assert!(v["AccessKeyId"]
        .as_str()
        .is_some_and(|k| k.starts_with("ASIA")));
    assert!(v["Expiration"].as_str().is_some_and(|e| e.ends_with('Z')));
    // the container endpoint: the same document without IMDS's extras
    let r = m
        .http
        .get(m.url("/v2/credentials/task-1"))
        .send()
        .await
        .expect("send");
    let v: Value = r.json().await.expect("json");
    assert!(v["RoleArn"].as_str().is_some_and(|a| a.contains(":role/")));
    assert!(v["Token"].as_str().is_some_and(|t| !t.is_empty()));
    let r = m
        .http
        .get(m.url("/v2/credentials/task-1"))
        .header("Authorization", "")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    assert_eq!(m.stats().await["tokens_issued"], 2);
}
