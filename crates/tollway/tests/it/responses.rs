//! OpenAI's Responses API (`POST /v1/responses`) through the gateway: what each upstream format
//! receives, the answer and its stream, a stream cut by the upstream, errors in OpenAI's shape,
//! and the ledger.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{split, sse, start, Env};

async fn responses(env: &Env, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    split(env.post("/v1/responses", body).await).await
}

fn tools() -> Value {
    json!([{"type": "function", "name": "get_weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}])
}

#[tokio::test]
async fn each_upstream_format_gets_the_translated_request() {
    let env = start().await;
    let body = |model: &str| {
        json!({"model": model, "instructions": "Be brief.", "max_output_tokens": 40,
               "temperature": 0.3, "tools": tools(),
               "input": [{"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                         {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"},
                         {"type": "function_call_output", "call_id": "call_1", "output": "snow"}]})
    };
    // Anthropic Messages
    let (status, h, v) = responses(&env, body("claude")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(h["x-tollway-model"], "ant/claude-sonnet-4-5");
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert!(v["output"][0]["content"][0]["text"]
        .as_str()
        .is_some_and(|t| t.contains("snow")));
    let up = env.last_upstream().await;
    assert_eq!(up["path"], "/v1/messages");
    let b = &up["body"];
    assert_eq!(b["system"], "Be brief.");
    assert_eq!(b["max_tokens"], 40);
    assert_eq!(b["temperature"], 0.3);
    assert_eq!(b["tools"][0]["name"], "get_weather");
    assert_eq!(b["messages"][1]["content"][0]["type"], "tool_use");
    assert_eq!(
        b["messages"][1]["content"][0]["input"],
        json!({"city": "Oslo"})
    );
    assert_eq!(b["messages"][2]["content"][0]["type"], "tool_result");
    assert_eq!(b["messages"][2]["content"][0]["tool_use_id"], "call_1");
    // OpenAI Chat Completions
    let (status, _, v) = responses(&env, body("gpt")).await;
    assert_eq!(status, 200, "{v}");
    let up = env.last_upstream().await;
    assert_eq!(up["path"], "/v1/chat/completions");
    let b = &up["body"];
    assert_eq!(
        b["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(b["messages"][2]["tool_calls"][0]["id"], "call_1");
    assert_eq!(b["messages"][3]["role"], "tool");
    assert_eq!(b["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(
        v["usage"]["input_tokens"].as_u64().map(|n| n > 0),
        Some(true)
    );
}

#[tokio::test]
async fn streams_end_with_the_whole_response_or_say_they_failed() {
    let env = start().await;
    let r = env
        .post(
            "/v1/responses",
            json!({"model": "claude", "stream": true, "input": "Hi [mock tokens=5]"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .is_ok_and(|c| c.starts_with("text/event-stream")));
    let events = sse(&r.text().await.expect("body"));
    let names: Vec<&str> = events.iter().filter_map(|(e, _)| e.as_deref()).collect();
    assert_eq!(names.first(), Some(&"response.created"));
    assert_eq!(names.last(), Some(&"response.completed"));
    assert_eq!(
        names
            .iter()
            .filter(|n| **n == "response.output_text.delta")
            .count(),
        5
    );
    let done: Value = serde_json::from_str(&events[events.len() - 1].1).expect("json");
    assert_eq!(done["response"]["usage"]["output_tokens"], 5);
    assert!(done["response"]["usage"]["cost_usd"].is_string());
    // the upstream breaks off after two tokens: the client is told, in the stream
    let r = env
        .post(
            "/v1/responses",
            json!({"model": "gpt", "stream": true, "input": "Hi [mock tokens=5 fault=error_event after=2]"}),
        )
        .await;
    let events = sse(&r.text().await.expect("body"));
    let names: Vec<&str> = events.iter().filter_map(|(e, _)| e.as_deref()).collect();
    assert_eq!(
        &names[names.len() - 2..],
        ["error", "response.failed"],
        "{names:?}"
    );
    assert!(!names.contains(&"response.completed"));
    // every request is in the ledger, the failed stream too
    let store = env.state.accounts().store();
    for _ in 0..100 {
        if store.ledger_count().await.expect("count") >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.ledger_count().await.expect("count"), 2);
}

#[tokio::test]
async fn errors_come_in_openais_shape_and_name_the_field() {
    let env = start().await;
    for (body, status, needle) in [
        (
            json!({"model": "gpt", "input": "hi", "previous_response_id": "resp_1"}),
            400,
            "previous_response_id",
        ),
        (
            json!({"model": "gpt", "input": "hi", "tools": [{"type": "file_search"}]}),
            400,
            "file_search",
        ),
        (json!({"model": "gpt"}), 400, "input"),
        (json!({"model": "nope", "input": "hi"}), 404, "nope"),
        (
            json!({"model": "claude-noimg", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://example.com/a.png"}]}]}),
            400,
            "claude-noimg",
        ),
    ] {
        let (s, h, v) = responses(&env, body.clone()).await;
        assert_eq!(s, status, "{body}: {v}");
        assert!(h.contains_key("x-tollway-request-id"));
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(needle), "{body}: {msg}");
        assert!(v["error"]["type"].is_string());
    }
    let r = env
        .http
        .post(format!("{}/v1/responses", env.url))
        .json(&json!({"model": "gpt", "input": "hi"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    assert!(env.healthy().await);
}
