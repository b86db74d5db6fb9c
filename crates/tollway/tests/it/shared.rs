//! Two gateway instances against the local PostgreSQL and Redis: one rate limit, one budget and
//! one cooldown held across both; and an instance whose Redis is gone keeps serving on local state.

use std::time::Duration;

use serde_json::{json, Value};
use tollway_mock::MockServer;

use crate::harness::{config_text, gateway, Gateway, MASTER};

pub fn unique() -> String {
    format!(
        "t{}_{}",
        std::process::id(),
        &tollway_store::generate_secret()[6..14].to_lowercase()
    )
}

pub fn postgres_base() -> String {
    std::env::var("TOLLWAY_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn redis_url() -> String {
    std::env::var("TOLLWAY_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// For instances that share state: a mock, a unique name (also the Redis key prefix), a fresh
/// schema in the local PostgreSQL named after it, and the shared-state settings.
pub async fn shared_setup() -> (MockServer, String, String, Option<(String, String)>) {
    let mock = MockServer::start().await.expect("mock");
    let name = unique();
    let storage = tollway_store::fresh_postgres_schema(&postgres_base(), &name)
        .await
        .expect("a fresh schema in the local PostgreSQL");
    let shared = Some((redis_url(), format!("{name}:")));
    (mock, name, storage, shared)
}

async fn chat(
    http: &reqwest::Client,
    gw: &Gateway,
    key: &str,
    model: &str,
    content: &str,
) -> (u16, String) {
    let r = http
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(key)
        .json(&json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": content}]}))
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

#[tokio::test]
async fn two_instances_share_one_rate_limit_one_budget_and_cooldowns() {
    let (mock, _, storage, shared) = shared_setup().await;
    let text = format!(
        "{}  capped: {{ rpm: 2, deployments: [{{ provider: oai, model: capped }}] }}\n",
        config_text(&mock.url())
    );
    let a = gateway(&text, &storage, shared.clone()).await;
    let b = gateway(&text, &storage, shared.clone()).await;
    assert_eq!(a.state.accounts().shared_up(), Some(true));
    let http = reqwest::Client::new();

    // keys created on A are known to B after its cache refresh
    let mk = |body: Value| {
        let http = http.clone();
        let url = a.url.clone();
        async move {
            let v: Value = http
                .post(format!("{url}/admin/keys"))
                .bearer_auth(MASTER)
                .json(&body)
                .send()
                .await
                .expect("create")
                .json()
                .await
                .expect("json");
            v["key"].as_str().expect("secret").to_string()
        }
    };
    let limited = mk(json!({"name": "limited", "rpm": 4})).await;
    let multi = mk(json!({"name": "multi", "rpm": 5})).await;
    let budgeted =
        mk(json!({"name": "budgeted", "budget_usd": "0.001", "budget_period": "daily"})).await;
    b.state.accounts().refresh().await.expect("refresh");

    // one rate limit: 4 requests per minute across both instances
    for gw in [&a, &b, &a, &b] {
        assert_eq!(chat(&http, gw, &limited, "gpt", "hi").await.0, 200);
    }
    for gw in [&a, &b] {
        let (status, body) = chat(&http, gw, &limited, "gpt", "hi").await;
        assert_eq!(status, 429, "{body}");
        assert!(body.contains("shared across instances"), "{body}");
    }

    // several limits (the key's 5, the model's 2) are admitted all or nothing across instances:
    // the request the model's limit refuses is not counted against the key
    for gw in [&a, &b] {
        assert_eq!(chat(&http, gw, &multi, "capped", "hi").await.0, 200);
    }
    let (status, body) = chat(&http, &a, &multi, "capped", "hi").await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("model:capped"), "{body}");
    let r = http
        .post(format!("{}/v1/chat/completions", b.url))
        .bearer_auth(&multi)
        .json(&json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("x-ratelimit-remaining-requests")
            .and_then(|v| v.to_str().ok()),
        Some("2"),
        "the key counted 2 answered requests and this one, not the refused one"
    );

    // one budget: concurrent requests through both instances never overshoot it
    let mut tasks = Vec::new();
    for i in 0..60 {
        let http = http.clone();
        let url = if i % 2 == 0 {
            a.url.clone()
        } else {
            b.url.clone()
        };
        let key = budgeted.clone();
        tasks.push(tokio::spawn(async move {
            http.post(format!("{url}/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&json!({"model": "gpt", "max_tokens": 10, "messages": [{"role": "user", "content": format!("q{i} [mock ttft_ms=10]")}]}))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.expect("join") {
            200 => ok += 1,
            429 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok > 0 && refused > 0, "ok {ok} refused {refused}");
    // both ledgers flush into the one PostgreSQL ledger
    let store = a.state.accounts().store();
    let key_id = store
        .list_keys()
        .await
        .expect("keys")
        .into_iter()
        .find(|k| k.name == "budgeted")
        .expect("key")
        .id;
    let mut spent = 0;
    for _ in 0..100 {
        let rows = store
            .usage(&tollway_store::UsageQuery {
                key_id: Some(key_id.clone()),
                ..Default::default()
            })
            .await
            .expect("usage");
        if rows.first().map_or(0, |r| r.requests) >= 60 {
            spent = rows[0].cost_micros;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        spent > 0 && spent <= 1_000,
        "spent {spent} µ$ of a 1000 µ$ budget across two instances"
    );

    // one cooldown: a deployment rate-limited on A is left alone by B too
    tokio::spawn(tollway::server::sync_cooldowns(a.state.clone()));
    tokio::spawn(tollway::server::sync_cooldowns(b.state.clone()));
    // B must know the deployment to apply the cooldown: one request there first
    assert_eq!(chat(&http, &b, MASTER, "gpt2", "hi").await.0, 200);
    let (status, _) = chat(
        &http,
        &a,
        MASTER,
        "gpt2",
        "hi [mock fault=429 retry_after=30]",
    )
    .await;
    assert_eq!(status, 429);
    let before = crate::harness::mock_stats(&http, &mock.url()).await["requests"]
        .as_u64()
        .unwrap_or(0);
    let mut cooled = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, body) = chat(&http, &b, MASTER, "gpt2", "hi").await;
        if status == 503 && body.contains("cooling down") {
            cooled = true;
            break;
        }
    }
    assert!(cooled, "B never saw A's cooldown");
    let s = crate::harness::mock_stats(&http, &mock.url()).await;
    // at most the requests B sent before the cooldown arrived reached the upstream
    assert!(s["requests"].as_u64().unwrap_or(0) - before <= 40);
}

#[tokio::test]
async fn without_redis_an_instance_serves_on_local_state_and_says_so() {
    let mock = MockServer::start().await.expect("mock");
    let text = format!(
        "{}  capped: {{ rpm: 2, deployments: [{{ provider: oai, model: capped }}] }}\n",
        config_text(&mock.url())
    );
    let gw = gateway(
        &text,
        "sqlite::memory:",
        Some(("redis://127.0.0.1:1".into(), "x:".into())),
    )
    .await;
    assert_eq!(gw.state.accounts().shared_up(), Some(false));
    let http = reqwest::Client::new();
    assert_eq!(chat(&http, &gw, MASTER, "capped", "hi").await.0, 200);
    assert_eq!(chat(&http, &gw, MASTER, "capped", "hi").await.0, 200);
    let (status, body) = chat(&http, &gw, MASTER, "capped", "hi").await;
    assert_eq!(status, 429, "the local limit still holds: {body}");
    let metrics = crate::harness::metrics(&http, &gw.url).await;
    assert!(metrics.contains("tollway_shared_state_up 0"), "{metrics}");
}
