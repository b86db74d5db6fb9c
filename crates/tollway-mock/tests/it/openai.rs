//! OpenAI chat completions and embeddings: content, knobs, tools, usage, validation.

use serde_json::{json, Value};

use crate::*;

const CHAT: &str = "/v1/chat/completions";

#[tokio::test]
async fn default_reply_is_short_deterministic_and_echoes_the_bare_model() {
    let m = mock().await;
    let req = json!({"model": "gpt-4.1?ttft_ms=0", "messages": user("hi")});
    let (s, h, a) = m.json(CHAT, req.clone()).await;
    let (_, _, b) = m.json(CHAT, req).await;
    assert_eq!(s, 200);
    assert!(h.contains_key("x-request-id"));
    assert_eq!(a["model"], "gpt-4.1");
    assert!(a["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_ne!(a["id"], b["id"]);
    let text = a["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(text, b["choices"][0]["message"]["content"]);
    assert_eq!(a["choices"][0]["finish_reason"], "stop");
    let u = &a["usage"];
    assert_eq!(u["completion_tokens"], 12);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + 12
    );
    assert!(u["prompt_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn stream_matches_the_non_stream_text_and_ends_with_done() {
    let m = mock().await;
    let (_, _, full) = m
        .json(CHAT, json!({"model": "m", "messages": user("hi")}))
        .await;
    let body = m
        .stream(
            CHAT,
            json!({"model": "m", "messages": user("hi"), "stream": true}),
        )
        .await;
    assert_eq!(
        oai_stream_text(&body),
        full["choices"][0]["message"]["content"]
    );
    let events = sse(&body);
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks = sse_json(&body);
    // one token per content delta, after the role chunk; no usage key without include_usage
    assert_eq!(chunks.len(), 1 + 12 + 1);
    assert_eq!(
        chunks[0].1["choices"][0]["delta"],
        json!({"role": "assistant", "content": "", "refusal": null})
    );
    assert!(chunks.iter().all(|(_, c)| c.get("usage").is_none()));
    assert_eq!(chunks[13].1["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[13].1["choices"][0]["delta"], json!({}));
    assert!(chunks.iter().all(|(_, c)| c["id"] == chunks[0].1["id"]));

    // include_usage: usage null on each chunk, then a usage chunk with no choices
    let body = m
        .stream(
            CHAT,
            json!({"model": "m", "messages": user("hi"), "stream": true,
                   "stream_options": {"include_usage": true}}),
        )
        .await;
    let chunks = sse_json(&body);
    let (last, rest) = chunks.split_last().unwrap();
    assert!(rest
        .iter()
        .all(|(_, c)| c["usage"].is_null() && c.get("usage").is_some()));
    assert_eq!(last.1["choices"], json!([]));
    assert_eq!(last.1["usage"]["completion_tokens"], 12);
}

#[tokio::test]
async fn tokens_knob_by_query_and_directive_the_directive_wins() {
    let m = mock().await;
    let (_, _, v) = m
        .json(
            CHAT,
            json!({"model": "gpt-4.1?tokens=5", "messages": user("hi")}),
        )
        .await;
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "lorem ipsum dolor sit amet"
    );
    assert_eq!(v["usage"]["completion_tokens"], 5);
    let (_, _, v) = m
        .json(
            CHAT,
            json!({"model": "gpt-4.1?tokens=5", "messages": [
                {"role": "user", "content": "[mock tokens=50]"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [{"type": "text", "text": "again [mock tokens=3 nonsense=9]"}]}]}),
        )
        .await;
    assert_eq!(v["usage"]["completion_tokens"], 3);
    let body = m
        .stream(
            CHAT,
            json!({"model": "x?tokens=40", "messages": user("hi"), "stream": true}),
        )
        .await;
    assert_eq!(sse_json(&body).len(), 1 + 40 + 1);
}

#[tokio::test]
async fn echo_returns_the_last_user_text_exactly() {
    let m = mock().await;
    let text = "Grüße aus Köln — 日本語のテキスト [mock echo=1] ✓";
    let (_, _, v) = m
        .json(CHAT, json!({"model": "m", "messages": user(text)}))
        .await;
    assert_eq!(v["choices"][0]["message"]["content"], text);
    let body = m
        .stream(
            CHAT,
            json!({"model": "m", "messages": user(text), "stream": true}),
        )
        .await;
    assert_eq!(oai_stream_text(&body), text);
    assert!(sse_json(&body).len() > 4, "echo streams in several pieces");
}

#[tokio::test]
async fn max_tokens_truncates_with_length() {
    let m = mock().await;
    for key in ["max_tokens", "max_completion_tokens"] {
        let (_, _, v) = m
            .json(
                CHAT,
                json!({"model": "m?tokens=20", "messages": user("hi"), key: 4}),
            )
            .await;
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["completion_tokens"], 4);
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "lorem ipsum dolor sit"
        );
    }
    let body = m
        .stream(CHAT, json!({"model": "m?tokens=20", "messages": user("hi"), "max_tokens": 4, "stream": true}))
        .await;
    let chunks = sse_json(&body);
    assert_eq!(
        chunks.last().unwrap().1["choices"][0]["finish_reason"],
        "length"
    );
    assert_eq!(oai_stream_text(&body), "lorem ipsum dolor sit");
}

#[tokio::test]
async fn stop_sequences_end_the_reply_early() {
    let m = mock().await;
    let (_, _, v) = m
        .json(
            CHAT,
            json!({"model": "m?tokens=10&stop=1", "messages": user("hi"), "stop": ["END", "X"]}),
        )
        .await;
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(text, "lorem ipsum dolor sit amet");
    assert!(!text.contains("END"));
    // without stop sequences in the request, the knob does nothing
    let (_, _, v) = m
        .json(
            CHAT,
            json!({"model": "m?tokens=10&stop=1", "messages": user("hi")}),
        )
        .await;
    assert_eq!(v["usage"]["completion_tokens"], 10);
}

#[tokio::test]
async fn cached_and_reasoning_tokens_are_reported_like_openai() {
    let m = mock().await;
    let (_, _, plain) = m
        .json(
            CHAT,
            json!({"model": "m", "messages": user("hi [mock cached=0]")}),
        )
        .await;
    let (_, _, v) = m
        .json(
            CHAT,
            json!({"model": "m", "messages": user("hi [mock cached=7]")}),
        )
        .await;
    let u = &v["usage"];
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 7);
    assert_eq!(
        u["prompt_tokens"].as_u64().unwrap(),
        plain["usage"]["prompt_tokens"].as_u64().unwrap() + 7
    );
    let (_, _, v) = m
        .json(
            CHAT,
            json!({"model": "m?reasoning=30", "messages": user("hi")}),
        )
        .await;
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        30
    );
    assert_eq!(v["usage"]["completion_tokens"], 42);
}

fn tool_calls(v: &Value) -> &Vec<Value> {
    v["choices"][0]["message"]["tool_calls"]
        .as_array()
        .expect("tool_calls")
}

#[tokio::test]
async fn forced_and_knob_tool_calls() {
    let m = mock().await;
    let tools = json!([weather_tool_openai(), time_tool_openai()]);
    for (extra, name) in [
        (json!({"tool_choice": "required"}), "get_weather"),
        (
            json!({"tool_choice": {"type": "function", "function": {"name": "get_time"}}}),
            "get_time",
        ),
    ] {
        let mut req = json!({"model": "m", "messages": user("go"), "tools": tools});
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        let (_, _, v) = m.json(CHAT, req).await;
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert!(v["choices"][0]["message"]["content"].is_null());
        let calls = tool_calls(&v);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0]["function"]["name"], name);
        assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    }
    let (_, _, v) = m
        .json(
            CHAT,
            json!({"model": "m", "messages": user("go [mock tool=1]"), "tools": tools}),
        )
        .await;
    let args: Value =
        serde_json::from_str(tool_calls(&v)[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris", "unit": "celsius"}));
    let (_, _, v) = m
        .json(
            CHAT,
            json!({"model": "m?tool=get_time", "messages": user("go"), "tools": tools}),
        )
        .await;
    let args: Value =
        serde_json::from_str(tool_calls(&v)[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"zone": "example", "utc": true}));
    // no tool call without a knob or a forcing tool_choice
    let (_, _, v) = m
        .json(
            CHAT,
            json!({"model": "m", "messages": user("go"), "tools": tools}),
        )
        .await;
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn parallel_tool_calls_stream_in_pieces() {
    let m = mock().await;
    let tools = json!([weather_tool_openai(), time_tool_openai()]);
    let (_, _, full) = m
        .json(
            CHAT,
            json!({"model": "m?tools=2", "messages": user("go"), "tools": tools}),
        )
        .await;
    let calls = tool_calls(&full);
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(calls[1]["function"]["name"], "get_time");
    assert_ne!(calls[0]["id"], calls[1]["id"]);

    let body = m
        .stream(
            CHAT,
            json!({"model": "m?tools=2", "messages": user("go"), "tools": tools, "stream": true}),
        )
        .await;
    let mut args = [String::new(), String::new()];
    let mut pieces = [0, 0];
    let mut ids = Vec::new();
    let mut finish = Value::Null;
    for (_, c) in sse_json(&body) {
        let choice = &c["choices"][0];
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
        for tc in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = tc["index"].as_u64().unwrap() as usize;
            if let Some(id) = tc["id"].as_str() {
                assert_eq!(tc["type"], "function");
                assert_eq!(tc["function"]["arguments"], "");
                ids.push((
                    id.to_string(),
                    tc["function"]["name"].as_str().unwrap().to_string(),
                ));
            } else {
                pieces[i] += 1;
                args[i].push_str(tc["function"]["arguments"].as_str().unwrap());
            }
        }
    }
    assert_eq!(finish, "tool_calls");
    assert_eq!(ids.len(), 2);
    assert!(pieces.iter().all(|p| *p >= 3), "{pieces:?}");
    for i in 0..2 {
        let streamed: Value = serde_json::from_str(&args[i]).unwrap();
        let whole: Value =
            serde_json::from_str(calls[i]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(streamed, whole);
    }
}

#[tokio::test]
async fn a_tool_result_turn_is_answered_with_text() {
    let m = mock().await;
    let tools = json!([weather_tool_openai()]);
    let (_, _, first) = m
        .json(
            CHAT,
            json!({"model": "m", "messages": user("weather [mock tool=1]"), "tools": tools}),
        )
        .await;
    let call = tool_calls(&first)[0].clone();
    let messages = json!([
        {"role": "user", "content": "weather [mock tool=1]"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "22 degrees and sunny"}]);
    let (s, _, v) = m
        .json(
            CHAT,
            json!({"model": "m", "messages": messages, "tools": tools, "tool_choice": "required"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("22 degrees and sunny"));
    let body = m
        .stream(
            CHAT,
            json!({"model": "m", "messages": messages, "tools": tools, "stream": true}),
        )
        .await;
    assert!(oai_stream_text(&body).contains("22 degrees and sunny"));
}

#[tokio::test]
async fn invalid_requests_get_openai_400s() {
    let m = mock().await;
    let bad = |v: Value| v;
    let cases = [
        bad(json!({"messages": user("hi")})),
        bad(json!({"model": 3, "messages": user("hi")})),
        bad(json!({"model": "m"})),
        bad(json!({"model": "m", "messages": []})),
        bad(json!({"model": "m", "messages": [{"role": "robot", "content": "hi"}]})),
        bad(json!({"model": "m", "messages": [{"role": "user"}]})),
        bad(json!({"model": "m", "messages": [{"role": "user", "content": 5}]})),
        bad(
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}),
        ),
        bad(json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "video"}]}]})),
        bad(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "call_nope", "content": "x"}]}),
        ),
        bad(json!({"model": "m", "messages": user("hi"), "tools": [{"type": "retrieval"}]})),
        bad(
            json!({"model": "m", "messages": user("hi"), "tools": [{"type": "function", "function": {}}]}),
        ),
    ];
    for case in cases {
        let (s, _, v) = m.json(CHAT, case.clone()).await;
        assert_eq!(s, 400, "{case} -> {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(v["error"]["message"].is_string());
        assert!(v["error"].get("param").is_some() && v["error"].get("code").is_some());
    }
    for raw in ["not json", "[1, 2]"] {
        let r = m
            .http
            .post(m.url(CHAT))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    // a valid multimodal request passes
    let (s, _, v) = m
        .json(
            CHAT,
            json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn embeddings_are_deterministic_unit_vectors() {
    let m = mock().await;
    let (s, _, a) = m
        .json(
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small?x=1", "input": ["hello", "world"]}),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["model"], "text-embedding-3-small");
    let data = a["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let v0: Vec<f64> = data[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(v0.len(), 1536);
    let norm: f64 = v0.iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    assert_eq!(data[1]["index"], 1);
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    assert!(a["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(a["usage"]["prompt_tokens"], a["usage"]["total_tokens"]);

    let (_, _, b) = m
        .json(
            "/v1/embeddings",
            json!({"model": "e", "input": "hello", "dimensions": 8}),
        )
        .await;
    let (_, _, b2) = m
        .json(
            "/v1/embeddings",
            json!({"model": "e", "input": "hello", "dimensions": 8}),
        )
        .await;
    assert_eq!(b["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(b["data"], b2["data"]);

    let (_, _, c) = m
        .json(
            "/v1/embeddings",
            json!({"model": "e", "input": "hello", "dimensions": 8, "encoding_format": "base64"}),
        )
        .await;
    let b64 = c["data"][0]["embedding"].as_str().unwrap();
    assert_eq!(b64.len(), 44, "8 f32 = 32 bytes = 44 base64 chars");

    for bad in [
        json!({"input": "x"}),
        json!({"model": "e"}),
        json!({"model": "e", "input": ""}),
        json!({"model": "e", "input": "x", "encoding_format": "hex"}),
    ] {
        let (s, _, v) = m.json("/v1/embeddings", bad).await;
        assert_eq!(s, 400);
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
}

#[tokio::test]
async fn unknown_paths_are_404_in_openai_shape() {
    let m = mock().await;
    let r = m.http.post(m.url("/v1/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("/v1/nope"));
}
