//! Injected faults: statuses with the providers' error bodies, malformed bodies, resets,
//! hangs and in-stream error events.

use std::time::Duration;

use serde_json::{json, Value};

use crate::*;

const CHAT: &str = "/v1/chat/completions";
const MSG: &str = "/v1/messages";

fn oai(text: &str) -> Value {
    json!({"model": "gpt-4.1", "messages": user(text)})
}

fn ant(text: &str) -> Value {
    json!({"model": "claude", "max_tokens": 100, "messages": user(text)})
}

fn streaming(mut v: Value) -> Value {
    v["stream"] = json!(true);
    v
}

#[tokio::test]
async fn status_faults_use_each_providers_error_shape() {
    let m = mock().await;
    let oai_types = [
        (400, "invalid_request_error"),
        (401, "invalid_request_error"),
        (403, "invalid_request_error"),
        (404, "invalid_request_error"),
        (429, "requests"),
        (500, "server_error"),
        (503, "server_error"),
        (529, "server_error"),
    ];
    for (code, typ) in oai_types {
        for body in [
            oai(&format!("hi [mock fault={code}]")),
            streaming(oai(&format!("hi [mock fault={code}]"))),
        ] {
            let (s, h, v) = m.json(CHAT, body).await;
            assert_eq!(s, code);
            assert_eq!(v["error"]["type"], typ, "{v}");
            assert!(v["error"]["message"].is_string());
            assert!(v["error"].get("param").is_some() && v["error"].get("code").is_some());
            assert!(!h.contains_key("retry-after"));
        }
    }
    let (_, _, v) = m.json(CHAT, oai("[mock fault=429]")).await;
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    let (_, _, v) = m.json(CHAT, oai("[mock fault=401]")).await;
    assert_eq!(v["error"]["code"], "invalid_api_key");

    let ant_types = [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "api_error"),
        (529, "overloaded_error"),
    ];
    for (code, typ) in ant_types {
        let (s, h, v) = m.json(MSG, ant(&format!("hi [mock fault={code}]"))).await;
        assert_eq!(s, code);
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": typ, "message": v["error"]["message"]}})
        );
        assert!(v["error"]["message"].is_string());
        assert!(h.contains_key("request-id"));
    }
}

#[tokio::test]
async fn retry_after_on_429_503_529_only() {
    let m = mock().await;
    for code in [429, 503, 529] {
        let (s, h, _) = m
            .json(CHAT, oai(&format!("[mock fault={code} retry_after=3]")))
            .await;
        assert_eq!(s, code);
        assert_eq!(h["retry-after"], "3");
        let (_, h, _) = m.json(MSG, json!({"model": format!("c?fault={code}&retry_after=7"), "max_tokens": 5, "messages": user("hi")})).await;
        assert_eq!(h["retry-after"], "7");
    }
    let (s, h, _) = m.json(CHAT, oai("[mock fault=500 retry_after=3]")).await;
    assert_eq!(s, 500);
    assert!(!h.contains_key("retry-after"));
}

#[tokio::test]
async fn malformed_bodies() {
    let m = mock().await;
    for (path, body) in [
        (CHAT, oai("[mock fault=malformed]")),
        (MSG, ant("[mock fault=malformed]")),
        (
            "/v1/embeddings",
            json!({"model": "e?fault=malformed", "input": "x"}),
        ),
    ] {
        let r = m.post(path, body).await;
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    }
    // streams: a broken data line after `after` tokens, then the end
    let body = m
        .stream(CHAT, streaming(oai("[mock fault=malformed after=2]")))
        .await;
    let events = sse(&body);
    assert_eq!(events.len(), 1 + 2 + 1, "{body}");
    assert!(serde_json::from_str::<Value>(&events[3].1).is_err());
    let body = m
        .stream(MSG, streaming(ant("[mock fault=malformed]")))
        .await;
    let events = sse(&body);
    let last = events.last().unwrap();
    assert_eq!(last.0.as_deref(), Some("content_block_delta"));
    assert!(serde_json::from_str::<Value>(&last.1).is_err());
    assert!(!body.contains("message_stop"));
}

#[tokio::test]
async fn reset_cuts_the_stream_after_n_tokens() {
    let m = mock().await;
    for (path, body) in [
        (CHAT, streaming(oai("[mock fault=reset after=3 tokens=20]"))),
        (MSG, streaming(ant("[mock fault=reset after=3 tokens=20]"))),
    ] {
        let mut r = m.post(path, body).await;
        assert_eq!(r.status(), 200);
        let mut got = Vec::new();
        let err = loop {
            match r.chunk().await {
                Ok(Some(c)) => got.extend_from_slice(&c),
                Ok(None) => panic!("clean end: {}", String::from_utf8_lossy(&got)),
                Err(e) => break e,
            }
        };
        assert!(
            err.is_body() || err.is_decode() || err.is_request(),
            "{err:?}"
        );
        let text = String::from_utf8_lossy(&got);
        let deltas = text.matches("\"content\":\"").count() - usize::from(path == CHAT)
            + text.matches("text_delta").count();
        assert_eq!(deltas, 3, "{text}");
    }
    // non-streaming: the body is cut
    for (path, body) in [
        (CHAT, oai("[mock fault=reset]")),
        (MSG, ant("[mock fault=reset]")),
    ] {
        let r = m.post(path, body).await;
        assert!(r.text().await.is_err());
    }
    // the server is still fine
    let (s, _, _) = m.json(CHAT, oai("hi")).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn hang_never_answers_and_is_released_when_the_client_leaves() {
    let m = mock().await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    for (path, body) in [
        (CHAT, oai("[mock fault=hang]")),
        (MSG, ant("[mock fault=hang]")),
    ] {
        let err = client
            .post(m.url(path))
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .expect_err("hangs");
        assert!(err.is_timeout(), "{err:?}");
    }
    let stats = wait_stats(&m, |s| s["in_flight"] == 0).await;
    assert_eq!(stats["requests"], 2);
}

#[tokio::test]
async fn error_events_end_the_stream_in_each_format() {
    let m = mock().await;
    let body = m
        .stream(
            CHAT,
            streaming(oai("[mock fault=error_event after=2 tokens=10]")),
        )
        .await;
    let events = sse_json(&body);
    assert_eq!(events.len(), 1 + 2 + 1);
    let last = &events.last().unwrap().1;
    assert_eq!(last["error"]["type"], "server_error");
    assert!(last["error"]["message"].is_string());
    assert!(!body.contains("[DONE]"));

    let body = m
        .stream(
            MSG,
            streaming(ant("[mock fault=error_event tokens=10 after=4]")),
        )
        .await;
    let events = sse_json(&body);
    let (name, last) = events.last().unwrap();
    assert_eq!(name.as_deref(), Some("error"));
    assert_eq!(
        last,
        &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    assert_eq!(ant_stream_text(&body).split(' ').count(), 4);
    assert!(!body.contains("message_stop"));

    // after beyond the reply length: the error comes after the last token
    let body = m
        .stream(
            CHAT,
            streaming(oai("[mock fault=error_event after=99 tokens=3]")),
        )
        .await;
    assert_eq!(oai_stream_text(&body), "lorem ipsum dolor");
    assert!(sse_json(&body).last().unwrap().1.get("error").is_some());
}
