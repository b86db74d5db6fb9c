//! The control API: stats (including streams aborted by the client), the request log, reset;
//! server lifecycle.

use serde_json::{json, Value};
use tollway_mock::MockServer;

use crate::*;

#[tokio::test]
async fn stats_count_requests_paths_and_streams() {
    let m = mock().await;
    let (_, _, _) = m
        .json(
            "/v1/chat/completions",
            json!({"model": "m", "messages": user("hi")}),
        )
        .await;
    let _ = m
        .stream(
            "/v1/chat/completions",
            json!({"model": "m", "messages": user("hi"), "stream": true}),
        )
        .await;
    let _ = m
        .stream(
            "/v1/messages",
            json!({"model": "c", "max_tokens": 9, "messages": user("hi"), "stream": true}),
        )
        .await;
    let (s, _, _) = m
        .json(
            "/v1/messages",
            json!({"model": "c", "max_tokens": 9, "messages": user("[mock fault=429]")}),
        )
        .await;
    assert_eq!(s, 429);
    let (s, _, _) = m
        .json("/v1/embeddings", json!({"model": "e", "input": "x"}))
        .await;
    assert_eq!(s, 200);
    let _ = m.http.get(m.url("/v1/models")).send().await.unwrap();
    let _ = m.http.get(m.url("/nope")).send().await.unwrap();
    let stats = wait_stats(&m, |s| s["in_flight"] == 0).await;
    assert_eq!(stats["requests"], 6, "{stats}");
    assert_eq!(
        stats["by_path"],
        json!({"/v1/chat/completions": 2, "/v1/messages": 2, "/v1/embeddings": 1, "/v1/models": 1})
    );
    assert_eq!(stats["streams_started"], 2);
    assert_eq!(stats["streams_completed"], 2);
    assert_eq!(stats["streams_aborted"], 0);
}

#[tokio::test]
async fn a_client_leaving_mid_stream_counts_as_aborted() {
    let m = mock().await;
    let mut r = m
        .post(
            "/v1/chat/completions",
            json!({"model": "m", "stream": true, "messages": user("hi [mock tpt_ms=50 tokens=2000]")}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().expect("a first chunk");
    assert!(!first.is_empty());
    let stats = m.stats().await;
    assert_eq!(stats["streams_started"], 1);
    assert_eq!(stats["streams_completed"], 0);
    assert_eq!(stats["in_flight"], 1);
    drop(r);
    let stats = wait_stats(&m, |s| s["streams_aborted"] == 1).await;
    assert_eq!(stats["in_flight"], 0);
    assert_eq!(stats["streams_completed"], 0);
}

#[tokio::test]
async fn request_log_keeps_headers_and_bodies_and_reset_clears_it() {
    let m = mock().await;
    let _ = m
        .http
        .post(m.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .header("X-Api-Key", "sk-ant-secret")
        .json(&json!({"model": "c", "max_tokens": 3, "messages": user("one")}))
        .send()
        .await
        .unwrap();
    let _ = m
        .http
        .post(m.url("/v1/chat/completions"))
        .body("this is not json")
        .send()
        .await
        .unwrap();
    let log: Value = m
        .http
        .get(m.url("/_mock/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["path"], "/v1/messages");
    assert_eq!(log[0]["headers"]["x-api-key"], "sk-ant-secret");
    assert_eq!(log[0]["headers"]["anthropic-version"], "2023-06-01");
    assert_eq!(log[0]["body"]["messages"][0]["content"], "one");
    assert_eq!(log[1]["path"], "/v1/chat/completions");
    assert_eq!(log[1]["body"], "this is not json");

    let r = m.http.post(m.url("/_mock/reset")).send().await.unwrap();
    assert!(r.status().is_success());
    let log: Value = m
        .http
        .get(m.url("/_mock/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log, json!([]));
    let stats = m.stats().await;
    assert_eq!(stats["requests"], 0);
    assert_eq!(stats["by_path"], json!({}));
}

#[tokio::test]
async fn the_log_is_bounded_and_keeps_the_newest() {
    let m = mock().await;
    for i in 0..1010 {
        let _ = m
            .http
            .post(m.url("/v1/embeddings"))
            .json(&json!({"model": "e", "input": format!("n{i}"), "dimensions": 1}))
            .send()
            .await
            .unwrap();
    }
    let log: Value = m
        .http
        .get(m.url("/_mock/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 1000);
    assert_eq!(log[0]["body"]["input"], "n10");
    assert_eq!(log[999]["body"]["input"], "n1009");
    assert_eq!(m.stats().await["requests"], 1010);
}

#[tokio::test]
async fn serve_stops_on_its_shutdown_signal_and_drop_stops_the_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(tollway_mock::serve(listener, async move {
        let _ = rx.await;
    }));
    let r = reqwest::get(format!("http://{addr}/v1/models"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = tx.send(());
    let done = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
    assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");

    let server = MockServer::start().await.unwrap();
    let url = server.url();
    assert!(url.starts_with("http://127.0.0.1:") && !url.ends_with('/'));
    assert_eq!(url, format!("http://{}", server.addr()));
    drop(server);
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(refused, "the dropped server still accepts connections");
}
