//! Azure OpenAI: deployment routes with `api-version`, the v1 API, `api-key` and Bearer
//! authentication, content-filter annotations (the stream's first `prompt_filter_results` chunk),
//! and Azure's own errors.

use std::time::Duration;

use serde_json::{json, Value};

use crate::*;

const VERSION: &str = "2024-10-21";

fn chat_path(deployment: &str) -> String {
    format!("/openai/deployments/{deployment}/chat/completions?api-version={VERSION}")
}

fn embeddings_path(deployment: &str) -> String {
    format!("/openai/deployments/{deployment}/embeddings?api-version={VERSION}")
}

fn chat(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": text}]})
}

async fn post(m: &Mock, path: &str, body: &Value) -> reqwest::Response {
    m.http
        .post(m.url(path))
        .header("api-key", "azure-key")
        .json(body)
        .send()
        .await
        .expect("send")
}

async fn call(m: &Mock, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = post(m, path, body).await;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, headers, v)
}

async fn stream(m: &Mock, path: &str, body: &Value) -> String {
    let r = post(m, path, body).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("text/event-stream"));
    r.text().await.expect("body")
}

fn safe_choice_filter(v: &Value) {
    for k in ["hate", "self_harm", "sexual", "violence"] {
        assert_eq!(
            v[k],
            json!({"filtered": false, "severity": "safe"}),
            "{k}: {v}"
        );
    }
}

#[tokio::test]
async fn deployment_chat_answers_with_content_filter_results() {
    let m = mock().await;
    // no model in the body: the deployment is the model
    let (s, h, v) = call(&m, &chat_path("my-gpt"), &chat("Hello")).await;
    assert_eq!(s, 200, "{v}");
    assert!(h.contains_key("x-request-id"));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "my-gpt");
    assert!(v.get("service_tier").is_none());
    let choice = &v["choices"][0];
    assert_eq!(
        choice["message"]["content"],
        "Hello! This is a deterministic reply from the tollway mock upstream server."
    );
    assert_eq!(choice["finish_reason"], "stop");
    safe_choice_filter(&choice["content_filter_results"]);
    let p = &v["prompt_filter_results"][0];
    assert_eq!(p["prompt_index"], 0);
    safe_choice_filter(&p["content_filter_results"]);
    assert_eq!(
        p["content_filter_results"]["jailbreak"],
        json!({"filtered": false, "detected": false})
    );
    assert_eq!(v["usage"]["completion_tokens"], 12);

    // knobs in the encoded deployment name; the body's model is ignored
    let mut body = chat("hi");
    body["model"] = json!("gpt-4o?fault=429");
    let (s, _, v) = call(&m, &chat_path("my-gpt%3Ftokens%3D3"), &body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "lorem ipsum dolor");
    assert_eq!(v["model"], "my-gpt");
    // a tool call: its choice has no text to filter
    let mut body = chat("weather? [mock tool=1]");
    body["tools"] = json!([weather_tool_openai()]);
    let (_, _, v) = call(&m, &chat_path("my-gpt"), &body).await;
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(v["choices"][0]["content_filter_results"], json!({}));

    let log = m.requests().await;
    assert_eq!(
        log[1]["path"],
        format!("/openai/deployments/my-gpt%3Ftokens%3D3/chat/completions?api-version={VERSION}")
    );
    assert_eq!(log[1]["deployment"], "my-gpt?tokens=3");
    assert_eq!(log[1]["api_version"], VERSION);
    assert_eq!(log[1]["auth"], json!({"scheme": "api-key"}));
    assert_eq!(
        m.stats().await["by_path"]["/openai/deployments/{deployment}/chat/completions"],
        3
    );
}

#[tokio::test]
async fn streams_start_with_the_prompt_filter_results() {
    let m = mock().await;
    let mut body = chat("hi [mock tokens=3]");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let text = stream(&m, &chat_path("my-gpt"), &body).await;
    assert!(text.ends_with("data: [DONE]\n\n"));
    let events: Vec<Value> = sse_json(&text).into_iter().map(|(_, v)| v).collect();
    let first = &events[0];
    assert_eq!(first["choices"], json!([]));
    assert_eq!(first["id"], "");
    assert_eq!(first["model"], "");
    assert_eq!(first["object"], "");
    assert_eq!(first["created"], 0);
    safe_choice_filter(&first["prompt_filter_results"][0]["content_filter_results"]);
    // role, three tokens, finish, usage
    assert_eq!(events.len(), 1 + 1 + 3 + 1 + 1);
    assert_eq!(events[1]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(events[1]["choices"][0]["content_filter_results"], json!({}));
    for e in &events[2..5] {
        assert_eq!(e["object"], "chat.completion.chunk");
        assert_eq!(e["model"], "my-gpt");
        assert!(e.get("service_tier").is_none());
        safe_choice_filter(&e["choices"][0]["content_filter_results"]);
    }
    assert_eq!(oai_stream_text(&text), "lorem ipsum dolor");
    assert_eq!(events[5]["choices"][0]["finish_reason"], "stop");
    assert_eq!(events[5]["choices"][0]["content_filter_results"], json!({}));
    assert_eq!(events[6]["choices"], json!([]));
    assert_eq!(events[6]["usage"]["completion_tokens"], 3);

    // tool-call chunks carry empty filter results
    let mut body = chat("weather? [mock tool=1]");
    body["stream"] = json!(true);
    body["tools"] = json!([weather_tool_openai()]);
    let text = stream(&m, &chat_path("my-gpt"), &body).await;
    let events: Vec<Value> = sse_json(&text).into_iter().map(|(_, v)| v).collect();
    assert!(events[1..]
        .iter()
        .all(|e| e["choices"][0]["content_filter_results"] == json!({})));
    assert_eq!(
        events.last().expect("last")["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test]
async fn api_version_is_required_on_deployment_routes() {
    let m = mock().await;
    let not_found = json!({"error": {"code": "404", "message": "Resource not found"}});
    for path in [
        "/openai/deployments/my-gpt/chat/completions".to_string(),
        "/openai/deployments/my-gpt/chat/completions?api-version=".to_string(),
        "/openai/deployments/my-gpt/chat/completions?api-version=latest".to_string(),
        "/openai/deployments/my-gpt/embeddings".to_string(),
        "/openai/deployments/my-gpt/completions?api-version=2024-10-21".to_string(),
        "/openai/models?api-version=2024-10-21".to_string(),
    ] {
        let (s, _, v) = call(&m, &path, &chat("hi")).await;
        assert_eq!(s, 404, "{path}");
        assert_eq!(v, not_found, "{path}");
    }
    let (s, _, _) = call(
        &m,
        "/openai/deployments/my-gpt/chat/completions?api-version=2025-04-01-preview",
        &chat("hi"),
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn api_key_or_bearer_else_401() {
    let m = mock().await;
    let denied = json!({"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}});
    for path in [
        chat_path("d"),
        embeddings_path("d"),
        "/openai/v1/chat/completions".to_string(),
    ] {
        let r = m
            .http
            .post(m.url(&path))
            .json(&json!({"model": "d", "input": "x", "messages": [{"role": "user", "content": "[mock fault=429]"}]}))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(r.json::<Value>().await.expect("json"), denied);
    }
    let r = m
        .http
        .post(m.url(&chat_path("d")))
        .header("api-key", "")
        .json(&chat("hi"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    // Entra ID tokens come as Bearer
    let r = m
        .http
        .post(m.url(&chat_path("d")))
        .bearer_auth("eyJ0eXAiOiJKV1Qi")
        .json(&chat("hi"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let log = m.requests().await;
    assert_eq!(
        log[0]["auth"],
        json!({"scheme": "rejected", "error": "401"})
    );
    assert_eq!(
        log.as_array().expect("log").last().expect("last")["auth"],
        json!({"scheme": "bearer"})
    );
}

#[tokio::test]
async fn the_v1_api_takes_the_deployment_from_the_body() {
    let m = mock().await;
    let mut body = chat("hi [mock tokens=2]");
    body["model"] = json!("my-gpt");
    let (s, _, v) = call(&m, "/openai/v1/chat/completions", &body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["model"], "my-gpt");
    assert_eq!(v["choices"][0]["message"]["content"], "lorem ipsum");
    assert!(v["prompt_filter_results"].is_array());
    let (s, _, v) = call(&m, "/openai/v1/chat/completions", &chat("hi")).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "missing_required_parameter");
    let (s, _, v) = call(
        &m,
        "/openai/v1/embeddings",
        &json!({"model": "emb", "input": ["a", "b"], "dimensions": 8}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["model"], "emb");
    let log = m.requests().await;
    assert_eq!(log[0]["deployment"], Value::Null);
    let stats = m.stats().await;
    assert_eq!(stats["by_path"]["/openai/v1/chat/completions"], 2);
    assert_eq!(stats["by_path"]["/openai/v1/embeddings"], 1);
}

#[tokio::test]
async fn deployment_embeddings() {
    let m = mock().await;
    let (s, _, v) = call(
        &m,
        &embeddings_path("emb-small"),
        &json!({"input": "hello", "dimensions": 4}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["model"], "emb-small");
    assert_eq!(v["data"][0]["embedding"].as_array().map(Vec::len), Some(4));
    let (s, h, v) = call(
        &m,
        &embeddings_path("emb-small"),
        &json!({"input": "x [mock fault=429 retry_after=2]"}),
    )
    .await;
    assert_eq!(s, 429);
    assert_eq!(h["retry-after"], "2");
    assert!(v["error"]["message"]
        .as_str()
        .expect("m")
        .starts_with(&format!(
            "Requests to the Embeddings_Create Operation under Azure OpenAI API version {VERSION}"
        )));
}

#[tokio::test]
async fn validation_as_openai_plus_azures_own() {
    let m = mock().await;
    let mut body = chat("hi");
    body["max_tokens"] = json!(5);
    body["max_completion_tokens"] = json!(5);
    let (s, _, v) = call(&m, &chat_path("d"), &body).await;
    assert_eq!(s, 400);
    assert!(v["error"]["message"]
        .as_str()
        .expect("m")
        .contains("max_tokens and max_completion_tokens"));
    // either alone cuts the reply
    for k in ["max_tokens", "max_completion_tokens"] {
        let mut body = chat("hi [mock tokens=9]");
        body[k] = json!(2);
        let (s, _, v) = call(&m, &chat_path("d"), &body).await;
        assert_eq!(s, 200);
        assert_eq!(v["choices"][0]["finish_reason"], "length");
    }
    let (s, _, v) = call(&m, &chat_path("d"), &json!({"messages": []})).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "empty_array");
}

#[tokio::test]
async fn faults_in_azures_shapes() {
    let m = mock().await;
    let (s, h, v) = call(&m, &chat_path("d"), &chat("[mock fault=429 retry_after=7]")).await;
    assert_eq!(s, 429);
    assert_eq!(h["retry-after"], "7");
    assert_eq!(v["error"]["code"], "429");
    let msg = v["error"]["message"].as_str().expect("m");
    assert!(msg.starts_with(&format!(
        "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version {VERSION} have exceeded"
    )));
    assert!(msg.contains("Please retry after 7 seconds."), "{msg}");
    let (s, _, v) = call(&m, &chat_path("d"), &chat("[mock fault=404]")).await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["code"], "DeploymentNotFound");
    let (s, _, v) = call(&m, &chat_path("d"), &chat("[mock fault=401]")).await;
    assert_eq!(s, 401);
    assert_eq!(v["error"]["code"], "401");
    let (s, _, v) = call(&m, &chat_path("d"), &chat("[mock fault=403]")).await;
    assert_eq!(s, 403);
    assert_eq!(v["error"]["code"], "403");
    // the model service's own: OpenAI's shape
    for (knob, typ) in [
        (500, "server_error"),
        (503, "server_error"),
        (400, "invalid_request_error"),
    ] {
        let (s, _, v) = call(&m, &chat_path("d"), &chat(&format!("[mock fault={knob}]"))).await;
        assert_eq!(s, knob);
        assert_eq!(v["error"]["type"], typ);
    }
    // the content filter blocks the prompt
    let (s, _, v) = call(&m, &chat_path("d"), &chat("[mock fault=content_policy]")).await;
    assert_eq!(s, 400);
    let e = &v["error"];
    assert_eq!(e["code"], "content_filter");
    assert_eq!(e["param"], "prompt");
    assert_eq!(e["status"], 400);
    assert!(e["type"].is_null());
    assert!(e["message"]
        .as_str()
        .expect("m")
        .starts_with("The response was filtered due to the prompt triggering Azure OpenAI's content management policy."));
    assert_eq!(e["innererror"]["code"], "ResponsibleAIPolicyViolation");
    assert_eq!(
        e["innererror"]["content_filter_result"]["hate"],
        json!({"filtered": true, "severity": "high"})
    );
    // context length as OpenAI's
    let (s, _, v) = call(&m, &chat_path("d"), &chat("[mock fault=context_length]")).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "context_length_exceeded");

    // in a stream: after the prompt filter chunk, an error event
    let mut body = chat("[mock fault=error_event after=1 tokens=5]");
    body["stream"] = json!(true);
    let text = stream(&m, &chat_path("d"), &body).await;
    let events = sse_json(&text);
    assert!(events[0].1["prompt_filter_results"].is_array());
    assert_eq!(
        events.last().expect("last").1["error"]["type"],
        "server_error"
    );
    assert_eq!(oai_stream_text(&text), "lorem");
    // malformed, reset, hang
    let mut body = chat("[mock fault=malformed]");
    body["stream"] = json!(true);
    let text = stream(&m, &chat_path("d"), &body).await;
    assert!(sse(&text)
        .iter()
        .any(|(_, d)| serde_json::from_str::<Value>(d).is_err()));
    let r = post(&m, &chat_path("d"), &chat("[mock fault=reset]")).await;
    assert!(r.text().await.is_err());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let err = client
        .post(m.url(&chat_path("d")))
        .header("api-key", "k")
        .json(&chat("[mock fault=hang]"))
        .send()
        .await
        .expect_err("hangs");
    assert!(err.is_timeout());
    wait_stats(&m, |s| s["in_flight"] == 0).await;
}

#[tokio::test]
async fn entra_id_issues_tokens_for_the_application_secret_and_scope() {
    let m = mock().await;
    let grant = |secret: &str, scope: &str| {
        format!(
            "grant_type=client_credentials&client_id=app-1&client_secret={secret}&scope={}",
            scope.replace(':', "%3A").replace('/', "%2F")
        )
    };
    let post = |form: String| {
        let m = &m;
        async move {
            let r = m
                .http
                .post(m.url("/contoso/oauth2/v2.0/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .expect("send");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.expect("json"))
        }
    };
    let scope = "https://cognitiveservices.azure.com/.default";
    let (status, v) = post(grant(tollway_mock::MOCK_AZURE_CLIENT_SECRET, scope)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    assert!(v["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(m.stats().await["tokens_issued"], 1);
    let (status, v) = post(grant("wrong", scope)).await;
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["error"], "invalid_client");
    let (status, v) = post(grant(
        tollway_mock::MOCK_AZURE_CLIENT_SECRET,
        "https://management.azure.com/.default",
    ))
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"], "invalid_scope");
    assert_eq!(m.stats().await["tokens_issued"], 1);
}
