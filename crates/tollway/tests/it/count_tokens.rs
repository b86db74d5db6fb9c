//! Anthropic's token count, `POST /v1/messages/count_tokens`: asked of Anthropic upstreams (their
//! own endpoint, with the count's own fields only), counted locally for other deployments, failed
//! over like a message, errors in Anthropic's shape, and nothing in the ledger.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{config_text, split, start_with, Env, MASTER};

async fn count(env: &Env, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    env.anthropic_at("/v1/messages/count_tokens", body).await
}

fn header<'h>(h: &'h reqwest::header::HeaderMap, name: &str) -> &'h str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn config(mock: &str) -> String {
    format!(
        "{}  claude-failover:\n    deployments:\n      - {{ provider: ant, model: \"claude-down?fault=529\" }}\n      - {{ provider: ant, model: claude-sonnet-4-5 }}\n  claude-refuses: {{ deployments: [{{ provider: ant, model: \"claude-x?fault=400\" }}] }}\n",
        config_text(mock)
    )
}

fn request(model: &str) -> Value {
    json!({
        "model": model,
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": [{"type": "text", "text": "hello world"}]}
        ],
        "tools": [{"name": "lookup", "description": "Look a city up",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    })
}

#[tokio::test]
async fn anthropic_upstreams_count_and_other_deployments_are_counted_locally() {
    let env = start_with(config).await;
    // an Anthropic deployment: the upstream's own count, equal to what a message reports
    let (status, h, v) = count(&env, request("claude")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(header(&h, "x-tollway-token-count"), "upstream");
    assert_eq!(header(&h, "x-tollway-model"), "ant/claude-sonnet-4-5");
    assert!(header(&h, "x-tollway-request-id").starts_with("req_"));
    let counted = v["input_tokens"].as_u64().expect("input_tokens");
    let up = env.last_upstream().await;
    assert_eq!(up["path"], "/v1/messages/count_tokens");
    let sent = up["body"].as_object().expect("body");
    let mut keys: Vec<&str> = sent.keys().map(String::as_str).collect();
    keys.sort_unstable();
    // the count's own fields only: the API refuses max_tokens and the sampling fields there
    assert_eq!(keys, ["messages", "model", "system", "tools"]);
    assert_eq!(sent["model"], "claude-sonnet-4-5");
    let mut message = request("claude");
    message["max_tokens"] = json!(20);
    let (status, _, m) = env.anthropic(message).await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(Some(counted), m["usage"]["input_tokens"].as_u64());
    assert!(counted > 0);

    // an OpenAI deployment: counted here (o200k_base and the chat format), the upstream not asked
    let before = env.mock_stats().await["requests"].as_u64();
    let (status, h, v) = count(
        &env,
        json!({"model": "gpt", "messages": [{"role": "user", "content": "hello world"}]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(header(&h, "x-tollway-token-count"), "local");
    assert_eq!(header(&h, "x-tollway-model"), "oai/gpt-4.1");
    // 3 to prime the reply, 3 for the message, "hello", " world" and the line end
    assert_eq!(v["input_tokens"], 9);
    assert_eq!(env.mock_stats().await["requests"].as_u64(), before);
    // a max_tokens, which the count does not need, is accepted (and checked)
    let (status, _, v) = count(
        &env,
        json!({"model": "gpt", "max_tokens": 5, "messages": [{"role": "user", "content": "hello world"}]}),
    )
    .await;
    assert_eq!((status, &v["input_tokens"]), (200, &json!(9)));

    // counts cost nothing and leave no ledger row: only the one message above is there
    let store = env.state.accounts().store();
    for _ in 0..100 {
        if store.ledger_count().await.expect("count") >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(store.ledger_count().await.expect("count"), 1);
}

#[tokio::test]
async fn counts_fail_over_and_errors_come_in_anthropics_shape() {
    let env = start_with(config).await;
    // the first deployment overloaded (529): the second counts
    let (status, h, v) = count(&env, request("claude-failover")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(header(&h, "x-tollway-attempts"), "2");
    assert_eq!(header(&h, "x-tollway-model"), "ant/claude-sonnet-4-5");
    assert!(v["input_tokens"].as_u64().is_some_and(|n| n > 0));
    // the upstream's own refusal (400) is the answer: not retried elsewhere
    let (status, h, v) = count(&env, request("claude-refuses")).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(header(&h, "x-tollway-attempts"), "1");
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    // unknown model, bad input, no key, wrong method: each in Anthropic's shape
    let (status, _, v) = count(&env, request("no-such-model")).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["type"], "not_found_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("no-such-model"));
    let (status, _, v) = count(&env, json!({"model": "claude", "messages": []})).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("messages"));
    let (status, _, v) = count(
        &env,
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("model"));
    let r = env
        .post_raw(
            "/v1/messages/count_tokens",
            b"{\"model\": \"claude\", ".to_vec(),
        )
        .await;
    let (status, _, v) = split(r).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["type"], "error");
    let r = env
        .http
        .post(format!("{}/v1/messages/count_tokens", env.url))
        .json(&request("claude"))
        .send()
        .await
        .expect("request");
    let (status, _, v) = split(r).await;
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["error"]["type"], "authentication_error");
    let r = env
        .http
        .get(format!("{}/v1/messages/count_tokens", env.url))
        .header("x-api-key", MASTER)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 405);
    assert!(env.healthy().await);
}
