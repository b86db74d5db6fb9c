//! Both client APIs against both provider formats: text, streams, tools, images, failover, errors.

use serde_json::{json, Value};

use crate::harness::{header, split, sse, start, ANT_KEY, MASTER, OAI_KEY};

#[tokio::test]
async fn openai_client_reaches_both_provider_formats() {
    let env = start().await;
    for model in ["gpt", "claude"] {
        let (status, h, body) = env
            .openai(json!({
                "model": model,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hello"}
                ],
                "max_tokens": 64,
                "temperature": 0.2,
                "stop": ["END"]
            }))
            .await;
        assert_eq!(status, 200, "{model}: {body}");
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["choices"][0]["message"]["role"], "assistant");
        assert!(body["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        let u = &body["usage"];
        assert!(u["prompt_tokens"].as_u64().unwrap_or(0) > 0);
        assert!(u["completion_tokens"].as_u64().unwrap_or(0) > 0);
        assert_eq!(
            u["total_tokens"].as_u64(),
            Some(
                u["prompt_tokens"].as_u64().unwrap_or(0)
                    + u["completion_tokens"].as_u64().unwrap_or(0)
            )
        );
        assert!(header(&h, "x-tollway-request-id").starts_with("req_"));
        assert_eq!(header(&h, "x-tollway-attempts"), "1");
        let up = env.last_upstream().await;
        if model == "claude" {
            assert_eq!(header(&h, "x-tollway-model"), "ant/claude-sonnet-4-5");
            assert_eq!(header(&h, "x-tollway-provider"), "ant");
            assert_eq!(up["path"], "/v1/messages");
            assert_eq!(up["body"]["system"], "Be brief.");
            assert_eq!(up["body"]["stop_sequences"], json!(["END"]));
            assert_eq!(up["body"]["max_tokens"], 64);
            assert!(up["body"]["messages"]
                .as_array()
                .is_some_and(|m| m.iter().all(|m| m["role"] != "system")));
            assert_eq!(up["headers"]["x-api-key"], ANT_KEY);
        } else {
            assert_eq!(header(&h, "x-tollway-model"), "oai/gpt-4.1");
            assert_eq!(up["path"], "/v1/chat/completions");
            assert_eq!(up["body"]["messages"][0]["role"], "system");
            assert_eq!(up["headers"]["authorization"], format!("Bearer {OAI_KEY}"));
        }
        // the client's key never travels upstream
        assert!(!up.to_string().contains(MASTER));
    }
}

#[tokio::test]
async fn anthropic_client_reaches_both_provider_formats() {
    let env = start().await;
    for model in ["gpt", "claude"] {
        let (status, _h, body) = env
            .anthropic(json!({
                "model": model,
                "max_tokens": 100,
                "system": "Be brief.",
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": [{"type": "text", "text": "How are you?"}]}
                ]
            }))
            .await;
        assert_eq!(status, 200, "{model}: {body}");
        assert_eq!(body["type"], "message");
        assert_eq!(body["role"], "assistant");
        assert_eq!(body["content"][0]["type"], "text");
        assert_eq!(body["stop_reason"], "end_turn");
        assert!(body["usage"]["input_tokens"].as_u64().unwrap_or(0) > 0);
        assert!(body["usage"]["output_tokens"].as_u64().unwrap_or(0) > 0);
        let up = env.last_upstream().await;
        if model == "gpt" {
            let msgs = up["body"]["messages"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert_eq!(msgs.len(), 4, "{up}");
            assert_eq!(msgs[0]["role"], "system");
            assert_eq!(msgs[0]["content"], "Be brief.");
            assert_eq!(up["body"]["max_tokens"], 100);
        }
    }
}

fn text_of_openai_stream(body: &str) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut chunks = Vec::new();
    for (_, data) in sse(body) {
        if data == "[DONE]" {
            chunks.push(Value::String("[DONE]".into()));
            continue;
        }
        let v: Value = serde_json::from_str(&data).expect("chunk json");
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
        chunks.push(v);
    }
    (text, chunks)
}

#[tokio::test]
async fn openai_streams_from_both_formats_with_usage_when_asked() {
    let env = start().await;
    for model in ["gpt", "claude"] {
        let (_, _, whole) = env
            .openai(json!({"model": model, "messages": [{"role": "user", "content": "Hello"}]}))
            .await;
        let expected = whole["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .to_string();
        for include_usage in [true, false] {
            let r = env
                .post(
                    "/v1/chat/completions",
                    json!({"model": model, "stream": true,
                           "stream_options": {"include_usage": include_usage},
                           "messages": [{"role": "user", "content": "Hello"}]}),
                )
                .await;
            assert_eq!(r.status(), 200);
            assert_eq!(header(r.headers(), "content-type"), "text/event-stream");
            let body = r.text().await.expect("body");
            let (text, chunks) = text_of_openai_stream(&body);
            assert_eq!(text, expected, "{model}");
            assert_eq!(chunks.last(), Some(&Value::String("[DONE]".into())));
            assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
            let finish: Vec<&Value> = chunks
                .iter()
                .filter(|c| !c["choices"][0]["finish_reason"].is_null() && c.is_object())
                .collect();
            assert_eq!(finish.len(), 1, "{body}");
            assert_eq!(finish[0]["choices"][0]["finish_reason"], "stop");
            let usage: Vec<&Value> = chunks.iter().filter(|c| c["usage"].is_object()).collect();
            if include_usage {
                assert_eq!(usage.len(), 1, "{body}");
                assert_eq!(usage[0]["choices"], json!([]));
                assert!(usage[0]["usage"]["completion_tokens"].as_u64().unwrap_or(0) > 0);
            } else {
                assert!(usage.is_empty(), "{body}");
            }
        }
    }
}

#[tokio::test]
async fn anthropic_streams_from_both_formats_with_every_event_type() {
    let env = start().await;
    for model in ["gpt", "claude"] {
        let r = env
            .http
            .post(format!("{}/v1/messages", env.url))
            .header("x-api-key", MASTER)
            .json(&json!({"model": model, "max_tokens": 50, "stream": true,
                          "messages": [{"role": "user", "content": "Hello [mock cached=7]"}]}))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        let body = r.text().await.expect("body");
        let events = sse(&body);
        let names: Vec<&str> = events.iter().filter_map(|(e, _)| e.as_deref()).collect();
        assert_eq!(
            names.iter().filter(|n| **n == "message_start").count(),
            1,
            "{body}"
        );
        assert_eq!(names.first(), Some(&"message_start"));
        assert!(names.contains(&"ping"));
        assert!(names.contains(&"content_block_start"));
        assert!(names.contains(&"content_block_delta"));
        assert!(names.contains(&"content_block_stop"));
        assert_eq!(names.iter().filter(|n| **n == "message_delta").count(), 1);
        assert_eq!(names.last(), Some(&"message_stop"));
        // every data payload carries its own type, equal to the event name
        for (e, d) in &events {
            let v: Value = serde_json::from_str(d).expect("event json");
            assert_eq!(v["type"].as_str(), e.as_deref());
        }
        // Anthropic upstreams report prompt usage up front; OpenAI ones only at the end, so the
        // final message_delta carries the whole usage either way.
        let start: Value = serde_json::from_str(&events[0].1).expect("json");
        if model == "claude" {
            assert_eq!(
                start["message"]["usage"]["cache_read_input_tokens"], 7,
                "{model}: {body}"
            );
        }
        let delta = events
            .iter()
            .find(|(e, _)| e.as_deref() == Some("message_delta"))
            .map(|(_, d)| serde_json::from_str::<Value>(d).expect("json"))
            .expect("message_delta");
        assert_eq!(delta["delta"]["stop_reason"], "end_turn");
        assert!(delta["usage"]["output_tokens"].as_u64().unwrap_or(0) > 0);
        assert_eq!(
            delta["usage"]["cache_read_input_tokens"], 7,
            "{model}: {body}"
        );
    }
}

fn weather_tool_openai() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

#[tokio::test]
async fn tool_calls_cross_both_ways_and_results_come_back() {
    let env = start().await;
    // OpenAI client → Anthropic upstream
    let (status, _, body) = env
        .openai(json!({"model": "claude", "tools": weather_tool_openai(),
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "messages": [{"role": "user", "content": "Weather in Paris?"}]}))
        .await;
    assert_eq!(status, 200, "{body}");
    let up = env.last_upstream().await;
    assert_eq!(up["body"]["tools"][0]["name"], "get_weather");
    assert_eq!(up["body"]["tools"][0]["input_schema"]["type"], "object");
    assert_eq!(
        up["body"]["tool_choice"],
        json!({"type": "tool", "name": "get_weather"})
    );
    let call = &body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap_or(""))
        .expect("args json");
    assert!(args.is_object());
    let id = call["id"].as_str().unwrap_or_default().to_string();
    // second turn with the tool result
    let (status, _, body) = env
        .openai(json!({"model": "claude", "tools": weather_tool_openai(),
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [call.clone()]},
            {"role": "tool", "tool_call_id": id, "content": "18C and sunny"}
        ]}))
        .await;
    assert_eq!(status, 200, "{body}");
    let up = env.last_upstream().await;
    let msgs = up["body"]["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[1]["content"][0]["type"], "tool_use");
    assert_eq!(msgs[1]["content"][0]["id"], id.as_str());
    assert_eq!(msgs[2]["role"], "user");
    assert_eq!(msgs[2]["content"][0]["type"], "tool_result");
    assert_eq!(msgs[2]["content"][0]["tool_use_id"], id.as_str());

    // Anthropic client → OpenAI upstream, streamed: arguments arrive as input_json_delta pieces
    let r = env
        .http
        .post(format!("{}/v1/messages", env.url))
        .header("x-api-key", MASTER)
        .json(&json!({"model": "gpt", "max_tokens": 200, "stream": true,
            "tools": [{"name": "get_weather", "description": "Weather",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "tool", "name": "get_weather"},
            "messages": [{"role": "user", "content": "Weather in Oslo?"}]}))
        .send()
        .await
        .expect("send");
    let body = r.text().await.expect("body");
    let mut partial = String::new();
    let mut saw_tool_start = false;
    let mut stop_reason = Value::Null;
    for (e, d) in sse(&body) {
        let v: Value = serde_json::from_str(&d).expect("json");
        match e.as_deref() {
            Some("content_block_start") if v["content_block"]["type"] == "tool_use" => {
                saw_tool_start = true;
                assert_eq!(v["content_block"]["name"], "get_weather");
                assert_eq!(v["content_block"]["input"], json!({}));
            }
            Some("content_block_delta") if v["delta"]["type"] == "input_json_delta" => {
                partial.push_str(v["delta"]["partial_json"].as_str().unwrap_or(""));
            }
            Some("message_delta") => stop_reason = v["delta"]["stop_reason"].clone(),
            _ => {}
        }
    }
    assert!(saw_tool_start, "{body}");
    let args: Value = serde_json::from_str(&partial).expect("reassembled args are JSON");
    assert!(args.is_object());
    assert_eq!(stop_reason, "tool_use");
    let up = env.last_upstream().await;
    assert_eq!(up["body"]["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(up["body"]["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn images_cross_both_ways_and_unsupported_features_are_refused() {
    let env = start().await;
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let (status, _, body) = env
        .openai(
            json!({"model": "claude", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
            ]}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let up = env.last_upstream().await;
    let parts = &up["body"]["messages"][0]["content"];
    assert_eq!(parts[1]["type"], "image");
    assert_eq!(
        parts[1]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": png})
    );
    assert_eq!(
        parts[2]["source"],
        json!({"type": "url", "url": "https://example.com/cat.jpg"})
    );

    let (status, _, body) = env
        .anthropic(json!({"model": "gpt", "max_tokens": 10, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
            {"type": "text", "text": "What is this?"}
        ]}]}))
        .await;
    assert_eq!(status, 200, "{body}");
    let up = env.last_upstream().await;
    assert_eq!(
        up["body"]["messages"][0]["content"][0]["image_url"]["url"],
        format!("data:image/png;base64,{png}")
    );

    // a deployment without vision refuses images, naming the feature and the model
    let (status, _, body) = env
        .openai(
            json!({"model": "claude-noimg", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("image") && msg.contains("claude-noimg"),
        "{msg}"
    );

    // json_object to an Anthropic model: refused, not silently dropped (Anthropic needs a schema)
    let (status, _, body) = env
        .openai(
            json!({"model": "claude", "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_object"}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or("");
    // named as provider/upstream model
    assert!(
        msg.contains("json_object") && msg.contains("ant/claude-sonnet-4-5"),
        "{msg}"
    );
    // json_schema reaches an Anthropic model as its structured-output `output_config.format`
    let (status, _, body) = env
        .openai(json!({"model": "claude", "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}}))
        .await;
    assert_eq!(status, 200, "{body}");
    let up = env.last_upstream().await;
    assert_eq!(
        up["body"]["output_config"]["format"],
        json!({"type": "json_schema", "schema": {"type": "object"}})
    );
    // ... and carried to an OpenAI model
    let (status, _, _) = env
        .openai(json!({"model": "gpt", "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}}))
        .await;
    assert_eq!(status, 200);
    let up = env.last_upstream().await;
    assert_eq!(up["body"]["response_format"]["json_schema"]["name"], "x");
    // an OpenAI-only sampling field cannot reach an Anthropic model silently
    let (status, _, body) = env
        .openai(
            json!({"model": "claude", "seed": 7, "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("seed"));
}

#[tokio::test]
async fn cached_tokens_keep_their_meaning_across_formats() {
    let env = start().await;
    // Anthropic-format upstream reports cache reads outside input_tokens; an OpenAI client sees
    // them inside prompt_tokens and in prompt_tokens_details.cached_tokens.
    let (_, _, body) = env
        .openai(json!({"model": "claude", "messages": [{"role": "user", "content": "hi [mock cached=7]"}]}))
        .await;
    let u = &body["usage"];
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 7, "{body}");
    let (_, _, plain) = env
        .openai(json!({"model": "claude", "messages": [{"role": "user", "content": "hi [mock cached=0]"}]}))
        .await;
    assert_eq!(
        u["prompt_tokens"].as_u64().unwrap_or(0),
        plain["usage"]["prompt_tokens"].as_u64().unwrap_or(0) + 7,
        "cached tokens are part of prompt_tokens"
    );
    // OpenAI-format upstream counts cached tokens inside prompt_tokens; an Anthropic client sees
    // them as cache_read_input_tokens, outside input_tokens.
    let (_, _, body) = env
        .anthropic(json!({"model": "gpt", "max_tokens": 10, "messages": [{"role": "user", "content": "hi [mock cached=7]"}]}))
        .await;
    assert_eq!(body["usage"]["cache_read_input_tokens"], 7, "{body}");
}

#[tokio::test]
async fn failover_and_upstream_errors_map_to_the_right_status() {
    let env = start().await;
    let (status, h, body) = env
        .openai(json!({"model": "flaky", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&h, "x-tollway-attempts"), "2");
    assert_eq!(header(&h, "x-tollway-model"), "ant/claude-backup");

    let (status, h, body) = env
        .openai(json!({"model": "unreachable", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 200, "connection refused falls back: {body}");
    assert_eq!(header(&h, "x-tollway-attempts"), "2");

    let (status, _, body) = env
        .openai(json!({"model": "gpt3", "messages": [{"role": "user", "content": "hi [mock fault=malformed]"}]}))
        .await;
    assert_eq!(status, 502, "{body}");
    let (status, _, body) = env
        .anthropic(json!({"model": "gpt", "max_tokens": 5, "messages": [{"role": "user", "content": "hi [mock fault=500]"}]}))
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["type"], "error");

    let (status, _, body) = env
        .anthropic(json!({"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi [mock fault=529]"}]}))
        .await;
    assert_eq!(status, 529, "{body}");
    assert_eq!(body["error"]["type"], "overloaded_error");

    let (status, _, body) = env
        .openai(json!({"model": "hangs", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 504, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("300 ms"));

    // the upstream's 400 is the client's problem: passed on, not retried
    let (status, h, body) = env
        .openai(json!({"model": "flaky", "messages": [{"role": "user", "content": "hi [mock fault=400]"}]}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(header(&h, "x-tollway-attempts"), "1");
    // no secret in any of it
    assert!(!body.to_string().contains(OAI_KEY));

    // a 429 with Retry-After is passed on, and puts the deployment in cooldown for that long:
    // the next request is answered at once, without reaching the upstream
    let (status, h, body) = env
        .openai(json!({"model": "gpt2", "messages": [{"role": "user", "content": "hi [mock fault=429 retry_after=2]"}]}))
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(header(&h, "retry-after"), "2");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    let before = env.mock_stats().await["requests"].clone();
    let (status, h, body) = env
        .openai(json!({"model": "gpt2", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("cooling down"),
        "{body}"
    );
    assert!(!header(&h, "retry-after").is_empty());
    assert_eq!(env.mock_stats().await["requests"], before);
    assert!(env.healthy().await);
}

#[tokio::test]
async fn mid_stream_failures_end_in_an_error_event_of_the_callers_shape() {
    let env = start().await;
    let r = env
        .http
        .post(format!("{}/v1/messages", env.url))
        .header("x-api-key", MASTER)
        .json(&json!({"model": "gpt", "max_tokens": 50, "stream": true,
                      "messages": [{"role": "user", "content": "hi [mock fault=reset after=3 tokens=20]"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("body");
    let events = sse(&body);
    let last = events.last().cloned().expect("events");
    assert_eq!(last.0.as_deref(), Some("error"), "{body}");
    let v: Value = serde_json::from_str(&last.1).expect("json");
    assert_eq!(v["type"], "error");
    assert!(!body.contains("message_stop"));

    let r = env
        .post(
            "/v1/chat/completions",
            json!({"model": "claude", "stream": true,
                   "messages": [{"role": "user", "content": "hi [mock fault=error_event tokens=20]"}]}),
        )
        .await;
    let body = r.text().await.expect("body");
    let events = sse(&body);
    let last = &events.last().expect("events").1;
    let v: Value = serde_json::from_str(last).expect("json");
    assert!(v["error"]["message"].is_string(), "{body}");
    assert!(!body.contains("[DONE]"));

    // an upstream that goes silent mid-stream hits the idle timeout
    let r = env
        .post(
            "/v1/chat/completions",
            json!({"model": "stalls", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    let body = r.text().await.expect("body");
    assert!(body.contains("\"error\""), "{body}");
    assert!(env.healthy().await);
}

#[tokio::test]
async fn streams_are_passed_on_as_they_arrive_and_cancelled_with_the_client() {
    let env = start().await;
    let mut r = env
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt", "stream": true,
                   "messages": [{"role": "user", "content": "hi [mock tpt_ms=100 tokens=2000]"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    // the first chunk arrives while the upstream is still producing
    let first = r.chunk().await.expect("chunk").expect("some chunk");
    assert!(!first.is_empty());
    let stats = env.mock_stats().await;
    assert_eq!(stats["streams_started"], 1, "{stats}");
    assert_eq!(stats["streams_completed"], 0, "{stats}");
    // the client goes away: the upstream request is cancelled
    drop(r);
    let mut aborted = false;
    for _ in 0..100 {
        let stats = env.mock_stats().await;
        if stats["streams_aborted"] == 1 {
            aborted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(aborted, "the upstream stream was not cancelled");
}

#[tokio::test]
async fn models_lists_public_names_in_both_shapes() {
    let env = start().await;
    let r = env
        .http
        .get(format!("{}/v1/models", env.url))
        .bearer_auth(crate::harness::MASTER)
        .send()
        .await
        .expect("send");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["id"].as_str()).collect())
        .unwrap_or_default();
    assert!(ids.contains(&"gpt") && ids.contains(&"claude"), "{v}");
    let r = env
        .http
        .get(format!("{}/v1/models", env.url))
        .header("x-api-key", crate::harness::MASTER)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .expect("send");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["has_more"], false);
}

#[tokio::test]
async fn embeddings_reach_openai_format_models_and_are_refused_elsewhere() {
    let env = start().await;
    let (status, _, body) = split(
        env.post(
            "/v1/embeddings",
            json!({"model": "gpt", "input": ["hello", "world"], "dimensions": 8}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list", "{body}");
    assert_eq!(body["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        body["data"][1]["embedding"].as_array().map(Vec::len),
        Some(8)
    );
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > 0);
    let up = env.last_upstream().await;
    assert_eq!(up["path"], "/v1/embeddings");
    assert_eq!(up["body"]["model"], "gpt-4.1");
    // base64 vectors decode to the same numbers
    let r = env
        .post(
            "/v1/embeddings",
            json!({"model": "gpt", "input": "hello", "dimensions": 8, "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(!header(r.headers(), "x-tollway-cost-usd").is_empty());
    let v: Value = r.json().await.expect("json");
    assert!(
        v["data"][0]["embedding"]
            .as_str()
            .is_some_and(|s| s.len() == 44),
        "{v}"
    );
    // Anthropic-format deployments cannot embed: a 400 naming the feature
    let (status, _, body) = split(
        env.post("/v1/embeddings", json!({"model": "claude", "input": "x"}))
            .await,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("embeddings"));
    let (status, _, body) = split(
        env.post(
            "/v1/embeddings",
            json!({"model": "gpt", "input": [[1, 2, 3]]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("token-array"));
}

/// The listener speaks HTTP/2 without TLS to a client that knows it does (prior knowledge, as
/// a proxy or mesh in front of the gateway may), answers and streams included; HTTP/1.1
/// clients on the same listener are unaffected.
#[tokio::test]
async fn clients_may_speak_http2_with_prior_knowledge() {
    let env = start().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let post = |body: Value| {
        h2.post(format!("{}/v1/chat/completions", env.url))
            .bearer_auth(MASTER)
            .json(&body)
            .send()
    };
    let r = post(json!({"model": "claude", "messages": [{"role": "user", "content": "Hello"}]}))
        .await
        .expect("request");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let (status, h, body) = split(r).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&h, "x-tollway-provider"), "ant");
    assert_eq!(body["object"], "chat.completion");

    let r = post(json!({"model": "gpt", "stream": true,
        "messages": [{"role": "user", "content": "Hello"}]}))
    .await
    .expect("request");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let events = sse(&r.text().await.expect("body"));
    assert!(events.len() > 2, "{events:?}");
    assert_eq!(events.last().map(|(_, d)| d.as_str()), Some("[DONE]"));

    let (status, _, _) = env
        .openai(json!({"model": "gpt", "messages": [{"role": "user", "content": "Hello"}]}))
        .await;
    assert_eq!(status, 200);
}

/// A client's `anthropic-beta` features reach Anthropic-format upstreams (after the account's
/// own, each once) for messages, streams and token counts; other upstreams do not get them.
#[tokio::test]
async fn anthropic_beta_headers_reach_anthropic_upstreams_only() {
    let env = crate::harness::start_with(|mock| {
        crate::harness::config_text(mock).replace(
            &format!("ant: {{ kind: anthropic, base_url: \"{mock}\", api_key: {ANT_KEY} }}"),
            &format!("ant: {{ kind: anthropic, base_url: \"{mock}\", api_key: {ANT_KEY}, headers: {{ anthropic-beta: account-beta }} }}"),
        )
    })
    .await;
    let send = |path: &'static str, model: &'static str, stream: bool| {
        let env = &env;
        async move {
            let r = env
                .http
                .post(format!("{}{path}", env.url))
                .header("x-api-key", MASTER)
                .header("anthropic-version", "2023-06-01")
                .header("anthropic-beta", "context-1m-2025-08-07, account-beta")
                .header("anthropic-beta", "interleaved-thinking-2025-05-14")
                .json(&json!({"model": model, "max_tokens": 20, "stream": stream,
                              "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .expect("send");
            assert_eq!(r.status(), 200, "{path} {model}");
            let _ = r.text().await;
            env.last_upstream().await
        }
    };
    let want = "account-beta,context-1m-2025-08-07,interleaved-thinking-2025-05-14";
    for stream in [false, true] {
        let up = send("/v1/messages", "claude", stream).await;
        assert_eq!(up["headers"]["anthropic-beta"], want, "stream {stream}");
    }
    let r = env
        .http
        .post(format!("{}/v1/messages/count_tokens", env.url))
        .header("x-api-key", MASTER)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "context-1m-2025-08-07")
        .json(&json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let up = env.last_upstream().await;
    assert_eq!(up["path"], "/v1/messages/count_tokens");
    assert_eq!(
        up["headers"]["anthropic-beta"],
        "account-beta,context-1m-2025-08-07"
    );
    // an OpenAI-format upstream gets no such header
    let up = send("/v1/messages", "gpt", false).await;
    assert_eq!(up["path"], "/v1/chat/completions");
    assert!(
        up["headers"].get("anthropic-beta").is_none(),
        "{}",
        up["headers"]
    );
    // without the client's header, the account's own is sent as it was
    let (status, _, _) = env
        .anthropic(json!({"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        env.last_upstream().await["headers"]["anthropic-beta"],
        "account-beta"
    );
}
