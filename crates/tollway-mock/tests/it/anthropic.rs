//! Anthropic Messages: content, stream order, tools, thinking, usage, validation.

use serde_json::{json, Value};

use crate::*;

const MSG: &str = "/v1/messages";

fn req(model: &str, text: &str) -> Value {
    json!({"model": model, "max_tokens": 256, "messages": user(text)})
}

fn streaming(mut v: Value) -> Value {
    v["stream"] = json!(true);
    v
}

#[tokio::test]
async fn default_message_with_usage_and_request_id() {
    let m = mock().await;
    let (s, h, v) = m.json(MSG, req("claude-sonnet-4-5?tokens=12", "hi")).await;
    assert_eq!(s, 200);
    assert!(h["request-id"].to_str().unwrap().starts_with("req_"));
    assert_eq!(v["model"], "claude-sonnet-4-5");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["stop_sequence"].is_null());
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["usage"]["output_tokens"], 12);
    assert_eq!(v["usage"]["cache_read_input_tokens"], 0);
    assert_eq!(v["usage"]["service_tier"], "standard");
}

#[tokio::test]
async fn stream_emits_every_event_in_order() {
    let m = mock().await;
    let (_, _, full) = m.json(MSG, req("c", "hi")).await;
    let body = m.stream(MSG, streaming(req("c", "hi"))).await;
    let events = sse_json(&body);
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    let mut expect = vec!["message_start", "content_block_start", "ping"];
    expect.extend(std::iter::repeat_n("content_block_delta", 12));
    expect.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expect);
    for (e, v) in &events {
        assert_eq!(v["type"].as_str(), e.as_deref());
    }
    assert_eq!(ant_stream_text(&body), full["content"][0]["text"]);
    let start = &events[0].1["message"];
    assert_eq!(start["content"], json!([]));
    assert!(start["stop_reason"].is_null());
    assert_eq!(
        start["usage"]["input_tokens"],
        full["usage"]["input_tokens"]
    );
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(
        delta["usage"]["output_tokens"],
        full["usage"]["output_tokens"]
    );
    assert!(body.contains("event: ping\ndata: {\"type\":\"ping\"}\n\n"));
}

#[tokio::test]
async fn echo_and_directive_over_query() {
    let m = mock().await;
    let text = "¿Qué tal? — ünïcödé 🚀 [mock echo=1 tokens=3]";
    let (_, _, v) = m.json(MSG, req("c?tokens=40&echo=0", text)).await;
    assert_eq!(v["content"][0]["text"], text);
    let body = m.stream(MSG, streaming(req("c", text))).await;
    assert_eq!(ant_stream_text(&body), text);
}

#[tokio::test]
async fn max_tokens_and_stop_sequences() {
    let m = mock().await;
    let mut r = req("c?tokens=30", "hi");
    r["max_tokens"] = json!(5);
    let (_, _, v) = m.json(MSG, r.clone()).await;
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["output_tokens"], 5);
    let body = m.stream(MSG, streaming(r)).await;
    assert!(body.contains("\"stop_reason\":\"max_tokens\""));

    let mut r = req("c?tokens=10&stop=1", "hi");
    r["stop_sequences"] = json!(["###"]);
    let (_, _, v) = m.json(MSG, r.clone()).await;
    assert_eq!(v["stop_reason"], "stop_sequence");
    assert_eq!(v["stop_sequence"], "###");
    assert_eq!(v["content"][0]["text"], "lorem ipsum dolor sit amet");
    let body = m.stream(MSG, streaming(r)).await;
    let delta = sse_json(&body)
        .into_iter()
        .find(|(e, _)| e.as_deref() == Some("message_delta"))
        .unwrap()
        .1;
    assert_eq!(
        delta["delta"],
        json!({"stop_reason": "stop_sequence", "stop_sequence": "###"})
    );
}

#[tokio::test]
async fn cache_usage_is_reported_outside_input_tokens() {
    let m = mock().await;
    let (_, _, plain) = m
        .json(MSG, req("c", "hi [mock cached=0 cache_write=00]"))
        .await;
    let (_, _, v) = m
        .json(MSG, req("c", "hi [mock cached=7 cache_write=11]"))
        .await;
    assert_eq!(v["usage"]["cache_read_input_tokens"], 7);
    assert_eq!(v["usage"]["cache_creation_input_tokens"], 11);
    assert_eq!(v["usage"]["input_tokens"], plain["usage"]["input_tokens"]);
    let body = m.stream(MSG, streaming(req("c?cached=9", "hi"))).await;
    let start = &sse_json(&body)[0].1;
    assert_eq!(start["message"]["usage"]["cache_read_input_tokens"], 9);
}

#[tokio::test]
async fn reasoning_adds_a_signed_thinking_block() {
    let m = mock().await;
    let (_, _, v) = m.json(MSG, req("c?reasoning=6", "hi")).await;
    assert_eq!(v["content"][0]["type"], "thinking");
    assert!(!v["content"][0]["signature"].as_str().unwrap().is_empty());
    assert_eq!(v["content"][1]["type"], "text");
    assert_eq!(v["usage"]["output_tokens"], 18);
    let body = m.stream(MSG, streaming(req("c?reasoning=6", "hi"))).await;
    let events = sse_json(&body);
    let thinking: Vec<&Value> = events
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["delta"]["type"] == "thinking_delta")
        .collect();
    assert_eq!(thinking.len(), 6);
    let sig_at = events
        .iter()
        .position(|(_, v)| v["delta"]["type"] == "signature_delta")
        .unwrap();
    let first_text = events
        .iter()
        .position(|(_, v)| v["delta"]["type"] == "text_delta")
        .unwrap();
    assert!(sig_at < first_text);
    assert_eq!(events[sig_at].1["index"], 0);
    assert_eq!(events[first_text].1["index"], 1);
}

#[tokio::test]
async fn tool_use_forced_parallel_and_streamed() {
    let m = mock().await;
    let tools = json!([weather_tool_anthropic(), time_tool_anthropic()]);
    let mut r = req("c", "weather");
    r["tools"] = tools.clone();
    r["tool_choice"] = json!({"type": "tool", "name": "get_time"});
    let (_, _, v) = m.json(MSG, r).await;
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["content"][0]["name"], "get_time");
    assert_eq!(v["content"][0]["input"], json!({"zone": "example"}));

    let mut r = req("c", "weather [mock tools=2]");
    r["tools"] = tools;
    let (_, _, v) = m.json(MSG, r.clone()).await;
    let blocks = v["content"].as_array().unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0]["input"], json!({"location": "Paris", "days": 1}));
    assert!(blocks[0]["id"].as_str().unwrap().starts_with("toolu_"));
    assert_ne!(blocks[0]["id"], blocks[1]["id"]);

    let body = m.stream(MSG, streaming(r)).await;
    let events = sse_json(&body);
    let mut json_by_index = [String::new(), String::new()];
    let mut pieces = [0, 0];
    for (_, e) in &events {
        if e["delta"]["type"] == "input_json_delta" {
            let i = e["index"].as_u64().unwrap() as usize;
            json_by_index[i].push_str(e["delta"]["partial_json"].as_str().unwrap());
            pieces[i] += 1;
        }
    }
    assert!(pieces.iter().all(|p| *p >= 3), "{pieces:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&json_by_index[0]).unwrap(),
        blocks[0]["input"]
    );
    assert_eq!(
        serde_json::from_str::<Value>(&json_by_index[1]).unwrap(),
        blocks[1]["input"]
    );
    assert!(body.contains("\"stop_reason\":\"tool_use\""));
    let starts: Vec<&Value> = events
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["type"] == "content_block_start")
        .collect();
    assert_eq!(starts[0]["content_block"]["input"], json!({}));
}

#[tokio::test]
async fn a_tool_result_turn_ends_the_loop() {
    let m = mock().await;
    let tools = json!([weather_tool_anthropic()]);
    let mut r = req("c", "weather [mock tool=1]");
    r["tools"] = tools.clone();
    let (_, _, first) = m.json(MSG, r).await;
    let tool_use = first["content"][0].clone();
    let messages = json!([
        {"role": "user", "content": "weather [mock tool=1]"},
        {"role": "assistant", "content": [tool_use.clone()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use["id"],
                                      "content": [{"type": "text", "text": "Sunny, 22C"}]}]}]);
    let r = json!({"model": "c", "max_tokens": 100, "messages": messages, "tools": tools,
                   "tool_choice": {"type": "any"}});
    let (s, _, v) = m.json(MSG, r.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("Sunny, 22C"));
    let body = m.stream(MSG, streaming(r)).await;
    assert!(ant_stream_text(&body).contains("Sunny, 22C"));
}

#[tokio::test]
async fn invalid_requests_get_anthropic_400s() {
    let m = mock().await;
    // no anthropic-version header
    let r = m
        .http
        .post(m.url(MSG))
        .json(&req("c", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().contains_key("request-id"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("anthropic-version"));

    let tool_use = json!({"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}});
    let cases = [
        json!({"max_tokens": 5, "messages": user("hi")}),
        json!({"model": "c", "messages": user("hi")}),
        json!({"model": "c", "max_tokens": 0, "messages": user("hi")}),
        json!({"model": "c", "max_tokens": "5", "messages": user("hi")}),
        json!({"model": "c", "max_tokens": 5, "messages": []}),
        json!({"model": "c", "max_tokens": 5, "messages": [{"role": "system", "content": "hi"}]}),
        json!({"model": "c", "max_tokens": 5, "system": [{"type": "image"}], "messages": user("hi")}),
        json!({"model": "c", "max_tokens": 5, "system": 3, "messages": user("hi")}),
        json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}]}),
        json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
        json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "a"},
            {"role": "assistant", "content": [tool_use]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_other", "content": "x"}]}]}),
        json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]}]}),
        json!({"model": "c", "max_tokens": 5, "messages": user("hi"), "tools": [{"name": "f"}]}),
        json!({"model": "c", "max_tokens": 5, "messages": user("hi"), "tools": [{"input_schema": {"type": "object"}}]}),
    ];
    for case in cases {
        let (s, h, v) = m.json(MSG, case.clone()).await;
        assert_eq!(s, 400, "{case} -> {v}");
        assert!(h.contains_key("request-id"));
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    }
    // a valid one with images, a thinking turn and a system array passes
    let ok = json!({"model": "c", "max_tokens": 5, "system": [{"type": "text", "text": "be brief"}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "ok"}]},
            {"role": "user", "content": "more"}]});
    let (s, _, v) = m.json(MSG, ok).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn token_counts_match_the_message_usage_and_take_only_their_own_fields() {
    let m = mock().await;
    let body = json!({"model": "claude-sonnet-4-5", "system": "Be brief.",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}]});
    let (s, h, v) = m.json("/v1/messages/count_tokens", body.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert!(h["request-id"].to_str().unwrap().starts_with("req_"));
    let counted = v["input_tokens"].as_u64().expect("input_tokens");
    assert_eq!(v.as_object().map(|o| o.len()), Some(1));
    let mut message = body.clone();
    message["max_tokens"] = json!(10);
    let (s, _, v) = m.json(MSG, message.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["usage"]["input_tokens"], counted);
    // the count refuses what only a message takes, naming the field
    let (s, _, v) = m.json("/v1/messages/count_tokens", message).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(
        v["error"]["message"],
        "max_tokens: Extra inputs are not permitted"
    );
    let (s, _, _) = m
        .json(
            "/v1/messages/count_tokens",
            json!({"model": "c", "messages": []}),
        )
        .await;
    assert_eq!(s, 400);
    // fault knobs apply, as on messages
    let (s, _, v) = m
        .json(
            "/v1/messages/count_tokens",
            json!({"model": "c?fault=529", "messages": user("hi")}),
        )
        .await;
    assert_eq!(s, 529, "{v}");
    assert_eq!(v["error"]["type"], "overloaded_error");
    let stats = m.stats().await;
    assert_eq!(stats["by_path"]["/v1/messages/count_tokens"], 4);
}
