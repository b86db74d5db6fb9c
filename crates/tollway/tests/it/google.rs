//! Google's Gemini API (`kind: gemini`) and Vertex AI (`kind: vertex`: Gemini models, and Claude
//! through `rawPredict`) reached by both client APIs through tollway-mock, which issues Vertex's
//! access tokens only for a JWT signed with its service account's key: text, streams, tools and
//! their thought signatures, usage and price, token caching, errors and failover.

use serde_json::{json, Value};

use crate::harness::{
    config_text, header, ledger_row, openai_stream_text, sse, start_with, MASTER,
};

const GEMINI_KEY: &str = "gemini-test-key-0001";

/// A service account key file for the mock's token endpoint; `email` replaces the account's own
/// (the mock refuses a JWT from any other issuer).
fn key_file(mock: &str, email: Option<&str>) -> String {
    let mut key: Value = serde_json::from_str(&tollway_mock::mock_gcp_service_account(&format!(
        "{mock}/token"
    )))
    .expect("key json");
    if let Some(e) = email {
        key["client_email"] = json!(e);
    }
    let path = std::env::temp_dir().join(format!(
        "tollway-sa-{}-{}.json",
        std::process::id(),
        mock.rsplit(':').next().unwrap_or("0")
    ));
    let path = if email.is_some() {
        path.with_extension("wrong.json")
    } else {
        path
    };
    std::fs::write(&path, key.to_string()).expect("write key file");
    path.to_string_lossy().into_owned()
}

fn config(mock: &str) -> String {
    let good = key_file(mock, None);
    let wrong = key_file(mock, Some("intruder@elsewhere.iam.gserviceaccount.com"));
    let host = mock.trim_start_matches("http://");
    let providers = format!(
        "providers:\n  gem: {{ kind: gemini, base_url: \"{mock}/v1beta\", api_key: {GEMINI_KEY} }}\n  vx: {{ kind: vertex, location: us-central1, base_url: \"{mock}\", credentials: \"{good}\" }}\n  vx-wrong: {{ kind: vertex, project: p, location: us-central1, base_url: \"{mock}\", credentials: \"{wrong}\" }}\n  vx-meta: {{ kind: vertex, project: meta-proj, location: us-central1, base_url: \"{mock}\", credentials: metadata, metadata_host: \"{host}\" }}\n"
    );
    format!(
        r#"{base}  flash: {{ deployments: [{{ provider: gem, model: gemini-2.5-flash }}] }}
  flash-vx: {{ deployments: [{{ provider: vx, model: gemini-2.5-flash }}] }}
  claude-vx: {{ deployments: [{{ provider: vx, model: "claude-sonnet-4-5@20250929" }}] }}
  flash-meta: {{ deployments: [{{ provider: vx-meta, model: gemini-2.5-flash }}] }}
  flash-wrong:
    deployments:
      - {{ provider: vx-wrong, model: gemini-2.5-flash }}
      - {{ provider: gem, model: gemini-2.5-flash }}
  gem-throttled: {{ deployments: [{{ provider: gem, model: "gemini-2.5-flash?fault=429" }}] }}
  gem-blocked: {{ deployments: [{{ provider: gem, model: "gemini-2.5-flash?fault=content_policy" }}] }}
  gem-breaks: {{ deployments: [{{ provider: gem, model: "gemini-2.5-flash?fault=error_event&after=2&tokens=5" }}] }}
  gem-embed: {{ deployments: [{{ provider: gem, model: gemini-embedding-001 }}] }}
  vx-embed: {{ deployments: [{{ provider: vx, model: text-embedding-005 }}] }}
  gem-embed-down: {{ deployments: [{{ provider: gem, model: "gemini-embedding-001?fault=503" }}] }}
"#,
        base = config_text(mock).replacen("providers:\n", &providers, 1)
    )
}

#[tokio::test]
async fn an_openai_client_reaches_gemini_priced_and_streamed() {
    let env = start_with(config).await;
    let (status, h, v) = env
        .openai(
            json!({"model": "flash", "max_tokens": 100, "temperature": 0.5,
                       "messages": [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Hello there"}]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(header(&h, "x-tollway-model"), "gem/gemini-2.5-flash");
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(!text.is_empty(), "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > 0, "{v}");
    let cost: f64 = header(&h, "x-tollway-cost-usd").parse().unwrap_or(0.0);
    assert!(cost > 0.0, "priced from the gemini table: {h:?}");
    let up = env.last_upstream().await;
    assert_eq!(
        up["path"],
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(up["headers"]["x-goog-api-key"], GEMINI_KEY);
    assert!(!up.to_string().contains(MASTER));
    let body = &up["body"];
    assert_eq!(
        body["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );
    assert_eq!(
        body["contents"],
        json!([{"role": "user", "parts": [{"text": "Hello there"}]}])
    );
    assert_eq!(
        body["generationConfig"],
        json!({"maxOutputTokens": 100, "temperature": 0.5})
    );

    // the same answer streamed, with its usage
    let r = env
        .post(
            "/v1/chat/completions",
            json!({"model": "flash", "stream": true, "stream_options": {"include_usage": true},
                   "max_tokens": 100, "temperature": 0.5,
                   "messages": [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Hello there"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("body");
    let (streamed, chunks) = openai_stream_text(&body);
    assert_eq!(streamed, text, "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    let usage = chunks
        .iter()
        .find(|c| c["usage"].is_object())
        .expect("a usage chunk");
    assert_eq!(usage["usage"]["prompt_tokens"], v["usage"]["prompt_tokens"]);
    let up = env.last_upstream().await;
    assert!(
        up["path"]
            .as_str()
            .unwrap_or("")
            .starts_with("/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
        "{up}"
    );
}

#[tokio::test]
async fn an_anthropic_client_streams_gemini_thinking_and_tool_calls() {
    let env = start_with(config).await;
    let r = env
        .http
        .post(format!("{}/v1/messages", env.url))
        .header("x-api-key", MASTER)
        .json(&json!({"model": "flash", "max_tokens": 200, "stream": true,
                      "tool_choice": {"type": "any"},
                      "tools": [{"name": "get_weather", "input_schema": {"type": "object",
                                 "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
                      "messages": [{"role": "user", "content": "Weather in Paris? [mock reasoning=4]"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("body");
    let events = sse(&body);
    let names: Vec<&str> = events.iter().filter_map(|(e, _)| e.as_deref()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{body}");
    assert_eq!(names.iter().filter(|n| **n == "message_start").count(), 1);
    // the prompt's tokens are in message_start, where Anthropic clients read them
    let start: Value = serde_json::from_str(&events[0].1).expect("json");
    assert!(
        start["message"]["usage"]["input_tokens"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{start}"
    );
    assert_eq!(names.last(), Some(&"message_stop"), "{body}");
    let mut json_text = String::new();
    let mut kinds = Vec::new();
    let mut stop = Value::Null;
    for (e, d) in &events {
        let v: Value = serde_json::from_str(d).expect("json");
        match e.as_deref() {
            Some("content_block_start") => kinds.push(v["content_block"]["type"].clone()),
            Some("content_block_delta") if v["delta"]["type"] == "input_json_delta" => {
                json_text.push_str(v["delta"]["partial_json"].as_str().unwrap_or(""))
            }
            Some("message_delta") => stop = v["delta"]["stop_reason"].clone(),
            _ => {}
        }
    }
    assert!(kinds.contains(&json!("thinking")), "{body}");
    assert!(kinds.contains(&json!("tool_use")), "{body}");
    assert_eq!(stop, "tool_use", "{body}");
    let input: Value = serde_json::from_str(&json_text).expect("the arguments are JSON");
    assert!(input["city"].is_string(), "{input}");
    let up = env.last_upstream().await;
    assert_eq!(
        up["body"]["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY"}})
    );
    assert_eq!(
        up["body"]["tools"][0]["functionDeclarations"][0]["name"],
        "get_weather"
    );
}

#[tokio::test]
async fn tool_results_go_back_to_gemini_by_the_called_functions_name() {
    let env = start_with(config).await;
    let tools = json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let (status, _, v) = env
        .openai(
            json!({"model": "flash", "tools": tools, "tool_choice": "required",
                       "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    let call = v["choices"][0]["message"]["tool_calls"][0].clone();
    let id = call["id"].as_str().unwrap_or("").to_string();
    assert!(!id.is_empty(), "{v}");
    let (status, _, v) = env
        .openai(json!({"model": "flash", "tools": tools,
                       "messages": [
                           {"role": "user", "content": "Weather in Paris?"},
                           {"role": "assistant", "content": null, "tool_calls": [call]},
                           {"role": "tool", "tool_call_id": id, "content": "{\"temp_c\": 18}"}]}))
        .await;
    assert_eq!(status, 200, "{v}");
    let up = env.last_upstream().await;
    let contents = up["body"]["contents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(contents.len(), 3, "{up}");
    assert_eq!(contents[1]["role"], "model");
    assert_eq!(
        contents[1]["parts"][0]["functionCall"]["name"],
        "get_weather"
    );
    assert_eq!(
        contents[2]["parts"][0]["functionResponse"],
        json!({"name": "get_weather", "response": {"temp_c": 18}})
    );
}

#[tokio::test]
async fn vertex_gets_its_token_once_and_serves_gemini_and_claude() {
    let env = start_with(config).await;
    for _ in 0..3 {
        let (status, h, v) = env
            .openai(json!({"model": "flash-vx", "messages": [{"role": "user", "content": "Hi"}]}))
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(header(&h, "x-tollway-provider"), "vx");
    }
    let up = env.last_upstream().await;
    assert_eq!(
        up["path"],
        "/v1/projects/tollway-test/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
    );
    let authz = up["headers"]["authorization"].as_str().unwrap_or("");
    assert!(authz.starts_with("Bearer ya29."), "{authz}");
    assert_eq!(
        env.mock_stats().await["tokens_issued"],
        1,
        "one token for three requests"
    );
    // a token revoked before its time: the 401 drops it, the retry fetches a new one
    let r = env
        .http
        .post(format!("{}/_mock/revoke_tokens", env.mock.url()))
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 204);
    let (status, h, v) = env
        .openai(json!({"model": "flash-vx", "messages": [{"role": "user", "content": "Hi"}]}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(header(&h, "x-tollway-attempts"), "2");
    assert_eq!(env.mock_stats().await["tokens_issued"], 2);

    // Claude on Vertex: Anthropic's body without its model, through rawPredict, priced
    let (status, h, v) = env
        .anthropic(json!({"model": "claude-vx", "max_tokens": 50,
                          "messages": [{"role": "user", "content": "Hello"}]}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["type"], "message");
    assert!(v["usage"]["output_tokens"].as_u64().unwrap_or(0) > 0, "{v}");
    let cost: f64 = header(&h, "x-tollway-cost-usd").parse().unwrap_or(0.0);
    assert!(cost > 0.0, "{h:?}");
    let up = env.last_upstream().await;
    assert_eq!(
        up["path"],
        "/v1/projects/tollway-test/locations/us-central1/publishers/anthropic/models/claude-sonnet-4-5%4020250929:rawPredict"
    );
    assert_eq!(up["body"]["anthropic_version"], "vertex-2023-10-16");
    assert!(up["body"].get("model").is_none(), "{up}");

    // and streamed to an OpenAI client
    let r = env
        .post(
            "/v1/chat/completions",
            json!({"model": "claude-vx", "stream": true,
                   "messages": [{"role": "user", "content": "Hello"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("body");
    let (text, _) = openai_stream_text(&body);
    assert!(!text.is_empty(), "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    let up = env.last_upstream().await;
    assert!(
        up["path"]
            .as_str()
            .unwrap_or("")
            .ends_with(":streamRawPredict"),
        "{up}"
    );
    assert_eq!(up["body"]["stream"], true);
}

#[tokio::test]
async fn google_errors_are_classified_and_failed_over() {
    let env = start_with(config).await;
    // the token endpoint refuses a JWT from another account: the next deployment answers
    let (status, h, v) = env
        .openai(json!({"model": "flash-wrong", "messages": [{"role": "user", "content": "Hi"}]}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(header(&h, "x-tollway-attempts"), "2");
    assert_eq!(header(&h, "x-tollway-provider"), "gem");

    let (status, _, v) = env
        .openai(json!({"model": "gem-throttled", "messages": [{"role": "user", "content": "Hi"}]}))
        .await;
    assert_eq!(status, 429, "{v}");
    let (status, _, v) = env
        .anthropic(json!({"model": "gem-blocked", "max_tokens": 10,
                          "messages": [{"role": "user", "content": "Hi"}]}))
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("blocked"),
        "{v}"
    );

    // an error mid-stream ends the client's stream with an error chunk
    let r = env
        .post(
            "/v1/chat/completions",
            json!({"model": "gem-breaks", "stream": true,
                   "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("body");
    let (_, chunks) = openai_stream_text(&body);
    assert!(
        chunks.iter().any(|c| c["error"].is_object()),
        "an error chunk: {body}"
    );

    // an image URL Gemini cannot type is refused before it leaves, naming it
    let (status, _, v) = env
        .openai(json!({"model": "flash",
                       "messages": [{"role": "user", "content": [
                           {"type": "text", "text": "What is this?"},
                           {"type": "image_url", "image_url": {"url": "https://example.com/picture"}}]}]}))
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("https://example.com/picture"),
        "{v}"
    );
    assert!(env.healthy().await);
}

#[tokio::test]
async fn claude_on_vertex_counts_tokens_upstream_and_gemini_locally() {
    let env = start_with(config).await;
    let body = |model: &str| {
        json!({"model": model, "system": "Be brief.",
               "messages": [{"role": "user", "content": "What is the capital of France?"}]})
    };
    let (status, _, v) = env
        .anthropic_at("/v1/messages/count_tokens", body("claude-vx"))
        .await;
    assert_eq!(status, 200, "{v}");
    let counted = v["input_tokens"].as_u64().unwrap_or(0);
    assert!(counted > 0, "{v}");
    let up = env.last_upstream().await;
    assert_eq!(
        up["path"],
        "/v1/projects/tollway-test/locations/us-central1/publishers/anthropic/models/count-tokens:rawPredict"
    );
    assert_eq!(up["body"]["model"], "claude-sonnet-4-5@20250929");
    assert!(up["headers"]["authorization"]
        .as_str()
        .unwrap_or("")
        .starts_with("Bearer ya29."));
    // the count is what a message reports as its input
    let (_, _, m) = env
        .anthropic(json!({"model": "claude-vx", "max_tokens": 10, "system": "Be brief.",
                          "messages": [{"role": "user", "content": "What is the capital of France?"}]}))
        .await;
    assert_eq!(m["usage"]["input_tokens"], counted, "{m}");
    // Gemini has no Anthropic count: counted locally, nothing sent
    crate::harness::counted_locally(&env, body("flash")).await;
}

#[tokio::test]
async fn on_a_google_cloud_machine_the_token_comes_from_the_metadata_server() {
    let env = start_with(config).await;
    for _ in 0..2 {
        let (status, h, v) = env
            .openai(json!({"model": "flash-meta", "messages": [{"role": "user", "content": "Hi"}]}))
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(header(&h, "x-tollway-provider"), "vx-meta");
    }
    let log = env.upstream_log().await;
    let asked: Vec<&Value> = log
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .unwrap_or("")
                .starts_with("/computeMetadata/")
        })
        .collect();
    assert_eq!(asked.len(), 1, "one token for both requests: {log:?}");
    assert_eq!(asked[0]["headers"]["metadata-flavor"], "Google");
    let up = env.last_upstream().await;
    assert!(
        up["path"]
            .as_str()
            .unwrap_or("")
            .starts_with("/v1/projects/meta-proj/locations/us-central1/publishers/google/"),
        "{up}"
    );
    assert!(up["headers"]["authorization"]
        .as_str()
        .unwrap_or("")
        .starts_with("Bearer ya29.mock-"));
}

#[tokio::test]
async fn embeddings_reach_gemini_and_vertex_counted_and_priced() {
    let env = start_with(config).await;
    // Google AI Studio: batchEmbedContents, no token count in the answer
    let r = env.post("/v1/embeddings", 
        json!({"model": "gem-embed", "input": ["hello world", "second text"], "dimensions": 16}),
    ).await;
    let (status, h) = (r.status().as_u16(), r.headers().clone());
    let v: Value = r.json().await.expect("json");
    assert_eq!(status, 200, "{v}");
    assert_eq!(header(&h, "x-tollway-model"), "gem/gemini-embedding-001");
    let data = v["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["embedding"].as_array().map(Vec::len), Some(16));
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    let counted = v["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
    assert!(counted > 0, "counted by the gateway: {v}");
    let cost: f64 = header(&h, "x-tollway-cost-usd").parse().unwrap_or(0.0);
    assert!(cost > 0.0, "priced from the gemini table: {h:?}");
    let up = env.last_upstream().await;
    assert!(
        up["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("/models/gemini-embedding-001:batchEmbedContents")),
        "{up}"
    );
    assert_eq!(up["headers"]["x-goog-api-key"], GEMINI_KEY);
    assert_eq!(
        up["body"],
        json!({"requests": [
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hello world"}]}, "outputDimensionality": 16},
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "second text"}]}, "outputDimensionality": 16},
        ]})
    );
    // the ledger says the count was the gateway's
    let row = ledger_row(&env, header(&h, "x-tollway-request-id")).await;
    assert!(
        row.cost_estimated && row.input_tokens as u64 == counted,
        "{row:?}"
    );

    // Vertex AI: predict, the token count from the answer's statistics
    let r = env
        .post(
            "/v1/embeddings",
            json!({"model": "vx-embed", "input": "one two three", "encoding_format": "base64"}),
        )
        .await;
    let status = r.status().as_u16();
    let v: Value = r.json().await.expect("json");
    assert_eq!(status, 200, "{v}");
    assert!(
        v["data"][0]["embedding"].is_string(),
        "base64 as asked: {v}"
    );
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > 0, "{v}");
    let up = env.last_upstream().await;
    assert!(
        up["path"].as_str().is_some_and(|p| p.ends_with(
            "/locations/us-central1/publishers/google/models/text-embedding-005:predict"
        )),
        "{up}"
    );
    assert_eq!(
        up["body"],
        json!({"instances": [{"content": "one two three"}]})
    );
    assert_eq!(up["auth"]["scheme"], "oauth2");

    // a chat model is not an embedding model: refused by name, no upstream request
    let before = env.upstream_log().await.len();
    let r = env
        .post("/v1/embeddings", json!({"model": "flash", "input": "x"}))
        .await;
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.expect("json");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("embeddings")),
        "{v}"
    );
    assert_eq!(env.upstream_log().await.len(), before);
    // Google's error, in OpenAI's shape
    let r = env
        .post(
            "/v1/embeddings",
            json!({"model": "gem-embed-down", "input": "x"}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 503);
}
