//! Bad input: each gets its 4xx in the caller's API shape with a message naming the problem,
//! and the gateway stays healthy afterwards.

use serde_json::{json, Value};

use crate::harness::{split, start, MASTER};

fn openai_msg(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn anthropic_msg(v: &Value) -> String {
    assert_eq!(v["type"], "error", "{v}");
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn bad_requests_get_clear_errors_in_both_shapes() {
    let env = start().await;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("malformed json", b"{\"model\": \"gpt\", ".to_vec(), 400, "JSON"),
        ("not an object", b"[1,2,3]".to_vec(), 400, "expected a JSON object"),
        ("wrong type", br#"{"model":"gpt","messages":5,"max_tokens":5}"#.to_vec(), 400, "messages"),
        ("wrong nested type", br#"{"model":"gpt","max_tokens":5,"messages":[{"role":"user","content":5}]}"#.to_vec(), 400, "messages[0]"),
        ("wrong scalar type", br#"{"model":"gpt","max_tokens":"many","messages":[{"role":"user","content":"x"}]}"#.to_vec(), 400, "max_tokens"),
        ("missing field", br#"{"model":"gpt","max_tokens":5}"#.to_vec(), 400, "messages"),
        ("unknown model", br#"{"model":"no-such-model","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#.to_vec(), 404, "no-such-model"),
        ("invalid utf-8", b"{\"model\":\"gpt\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}".to_vec(), 400, "UTF-8"),
        ("empty body", Vec::new(), 400, ""),
    ];
    for path in [
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/messages/count_tokens",
    ] {
        for (name, body, status, needle) in &cases {
            let (got, _h, v) = split(env.post_raw(path, body.clone()).await).await;
            assert_eq!(got, *status, "{path} {name}: {v}");
            let msg = if path.starts_with("/v1/messages") {
                anthropic_msg(&v)
            } else {
                openai_msg(&v)
            };
            assert!(!msg.is_empty(), "{path} {name}: empty message");
            assert!(
                msg.contains(needle),
                "{path} {name}: `{msg}` does not name `{needle}`"
            );
        }
    }
    // the Responses API's own fields, in OpenAI's shape
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed json",
            b"{\"model\": \"gpt\", ".to_vec(),
            400,
            "JSON",
        ),
        (
            "not an object",
            b"[1,2,3]".to_vec(),
            400,
            "expected a JSON object",
        ),
        (
            "wrong type",
            br#"{"model":"gpt","input":5}"#.to_vec(),
            400,
            "input",
        ),
        (
            "wrong nested type",
            br#"{"model":"gpt","input":[{"role":"user","content":5}]}"#.to_vec(),
            400,
            "input[0].content",
        ),
        (
            "wrong scalar type",
            br#"{"model":"gpt","input":"x","max_output_tokens":"many"}"#.to_vec(),
            400,
            "max_output_tokens",
        ),
        (
            "missing field",
            br#"{"model":"gpt"}"#.to_vec(),
            400,
            "input",
        ),
        (
            "unknown model",
            br#"{"model":"no-such-model","input":"x"}"#.to_vec(),
            404,
            "no-such-model",
        ),
        (
            "invalid utf-8",
            b"{\"model\":\"gpt\",\"input\":\"\xff\xfe\"}".to_vec(),
            400,
            "UTF-8",
        ),
        ("empty body", Vec::new(), 400, ""),
    ];
    for (name, body, status, needle) in &cases {
        let (got, _h, v) = split(env.post_raw("/v1/responses", body.clone()).await).await;
        assert_eq!(got, *status, "/v1/responses {name}: {v}");
        let msg = openai_msg(&v);
        assert!(!msg.is_empty(), "/v1/responses {name}: empty message");
        assert!(
            msg.contains(needle),
            "/v1/responses {name}: `{msg}` does not name `{needle}`"
        );
    }
    assert!(env.healthy().await);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let env = start().await;
    let big = "x".repeat(200_000);
    let body = serde_json::to_vec(
        &json!({"model": "gpt", "messages": [{"role": "user", "content": big}]}),
    )
    .expect("json");
    let (status, _, v) = split(env.post_raw("/v1/chat/completions", body.clone()).await).await;
    assert_eq!(status, 413, "{v}");
    assert!(openai_msg(&v).contains("65536"));
    let (status, _, v) = split(env.post_raw("/v1/messages", body.clone()).await).await;
    assert_eq!(status, 413);
    assert_eq!(v["error"]["type"], "request_too_large");
    let (status, _, v) = split(
        env.post_raw("/v1/messages/count_tokens", body.clone())
            .await,
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(v["error"]["type"], "request_too_large");
    let (status, _, v) = split(env.post_raw("/v1/responses", body).await).await;
    assert_eq!(status, 413, "{v}");
    assert!(openai_msg(&v).contains("65536"));
    // chunked, without a content-length: still bounded
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..40).map(|_| Ok(vec![b' '; 4096])).collect();
    let r = env
        .http
        .post(format!("{}/v1/chat/completions", env.url))
        .bearer_auth(MASTER)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 413);
    assert!(env.healthy().await);
}

#[tokio::test]
async fn authentication_is_required_and_never_echoed() {
    let env = start().await;
    let body = json!({"model": "gpt", "messages": [{"role": "user", "content": "x"}]});
    let r = env
        .http
        .post(format!("{}/v1/chat/completions", env.url))
        .json(&body)
        .send()
        .await
        .expect("send");
    let (status, _, v) = split(r).await;
    assert_eq!(status, 401);
    assert!(openai_msg(&v).contains("API key"));
    let r = env
        .http
        .post(format!("{}/v1/messages", env.url))
        .header("x-api-key", "sk-wrong-key-123")
        .json(&body)
        .send()
        .await
        .expect("send");
    let (status, h, v) = split(r).await;
    assert_eq!(status, 401);
    assert_eq!(v["error"]["type"], "authentication_error");
    assert!(!v.to_string().contains("sk-wrong-key-123"));
    assert!(!format!("{h:?}").contains("sk-wrong-key-123"));
    // a key that differs only in length is rejected too
    let r = env
        .http
        .get(format!("{}/v1/models", env.url))
        .bearer_auth(format!("{MASTER}0"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    // health checks need no key
    assert!(env.healthy().await);
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let env = start().await;
    let r = env
        .http
        .post(format!("{}/v1/nope", env.url))
        .send()
        .await
        .expect("send");
    let (status, _, v) = split(r).await;
    assert_eq!(status, 404);
    assert!(openai_msg(&v).contains("/v1/nope"));
    let r = env
        .http
        .get(format!("{}/v1/messages", env.url))
        .send()
        .await
        .expect("send");
    let (status, _, v) = split(r).await;
    assert_eq!(status, 405);
    assert_eq!(v["type"], "error");
}
