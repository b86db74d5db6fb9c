//! Budgets under concurrency, soft budgets' webhook alerts, team and model rate limits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{config_text, header, split, start_with, Env, MASTER};

async fn create_key(env: &Env, body: Value) -> String {
    let r = env
        .http
        .post(format!("{}/admin/keys", env.url))
        .bearer_auth(MASTER)
        .json(&body)
        .send()
        .await
        .expect("create");
    let (status, _, v) = split(r).await;
    assert_eq!(status, 201, "{v}");
    v["key"].as_str().expect("secret").to_string()
}

async fn wait_ledger(env: &Env, n: i64) {
    let store = env.state.accounts().store();
    for _ in 0..200 {
        if store.ledger_count().await.expect("count") >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_hundred_concurrent_requests_never_overshoot_a_small_budget() {
    let env = start_with(config_text).await;
    // gpt-4.1 at $2/$8 per million: a request with max_tokens 10 costs ~0.1 m$; budget 2 m$
    let key = create_key(
        &env,
        json!({"name": "tight", "budget_usd": "0.002", "budget_period": "daily"}),
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let http = env.http.clone();
        let url = env.url.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&json!({"model": "gpt", "max_tokens": 10, "stream": i % 3 == 0,
                    "messages": [{"role": "user", "content": format!("request {i} [mock ttft_ms=20]")}]}))
                .send()
                .await
                .expect("send");
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            (status, body)
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let (status, body) = t.await.expect("join");
        match status {
            200 => ok += 1,
            429 => {
                refused += 1;
                assert!(
                    body.contains("daily budget of $0.002000") && body.contains("resets at"),
                    "{body}"
                );
                assert!(body.contains("insufficient_quota"), "{body}");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ok + refused, 200);
    assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
    wait_ledger(&env, 200).await;
    let store = env.state.accounts().store();
    let spent = store.spend_micros(None, None, 0).await.expect("spend");
    assert!(spent <= 2_000, "spent {spent} µ$ of a 2000 µ$ budget");
    assert!(spent > 0);
    // the refused requests never reached the upstream
    assert_eq!(env.mock_stats().await["requests"], ok);
}

fn team_config(webhook: String) -> impl Fn(&str) -> String {
    move |mock: &str| {
        format!(
            "{}  capped: {{ rpm: 1, deployments: [{{ provider: oai, model: capped }}] }}\nteams:\n  research: {{ rpm: 1000, budget: {{ usd: \"0.0001\", period: monthly, hard: false }} }}\n  small: {{ rpm: 2 }}\nbudgets:\n  alert_webhook: {webhook}\n",
            config_text(mock)
        )
    }
}

#[tokio::test]
async fn soft_budgets_alert_through_the_webhook_and_team_limits_apply() {
    // a webhook receiver
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().expect("lock").push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let env = start_with(team_config(hook)).await;
    tokio::spawn(tollway::server::budget_alerts(env.state.clone()));
    let research = create_key(&env, json!({"name": "r", "team": "research"})).await;
    for _ in 0..3 {
        let r = env
            .http
            .post(format!("{}/v1/chat/completions", env.url))
            .bearer_auth(&research)
            .json(&json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200, "a soft budget never refuses");
    }
    let mut alert = None;
    for _ in 0..100 {
        if let Some(v) = got.lock().expect("lock").first().cloned() {
            alert = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alert = alert.expect("the webhook received an alert");
    assert_eq!(alert["scope"], "team:research");
    assert_eq!(alert["limit_usd"], "0.000100");
    assert_eq!(alert["hard"], false);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(got.lock().expect("lock").len(), 1, "one alert per period");

    // a team's rpm holds across its keys
    let a = create_key(&env, json!({"name": "a", "team": "small"})).await;
    let b = create_key(&env, json!({"name": "b", "team": "small"})).await;
    let mut statuses = Vec::new();
    for k in [&a, &b, &a] {
        let r = env
            .http
            .post(format!("{}/v1/chat/completions", env.url))
            .bearer_auth(k)
            .json(&json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .expect("send");
        statuses.push((
            r.status().as_u16(),
            header(r.headers(), "x-ratelimit-remaining-requests").to_string(),
        ));
    }
    assert_eq!(statuses[0], (200, "1".to_string()));
    assert_eq!(statuses[1], (200, "0".to_string()));
    assert_eq!(statuses[2].0, 429);
    // a model-wide limit applies to every caller, the master key included
    let first = env
        .openai(json!({"model": "capped", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(first.0, 200);
    let second = env
        .openai(json!({"model": "capped", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(second.0, 429, "{}", second.2);
    assert!(second.2["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("model:capped"));
}

#[tokio::test]
async fn budget_config_errors_are_reported() {
    let errs = tollway::config::parse(
        "teams:\n  t: { budget: { usd: lots } }\nbudgets:\n  global: { usd: \"5\", period: hourly }\n  alert_webhook: ftp://x\n",
        &tollway::config::ProcessEnv,
    )
    .expect_err("invalid");
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let all = all.join("\n");
    assert!(all.contains("teams.t.budget.usd"), "{all}");
    assert!(all.contains("budgets.global.period"), "{all}");
    assert!(all.contains("budgets.alert_webhook"), "{all}");
}
