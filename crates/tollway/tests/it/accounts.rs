//! Virtual keys through the admin API, their policies and limits, and the usage ledger: every
//! request recorded (errors and abandoned streams included), reports, feedback, and nothing lost
//! on a graceful shutdown.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{config_text, header, split, start, start_with, Env, MASTER};

async fn create_key(env: &Env, body: Value) -> Value {
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
    v
}

async fn call(env: &Env, key: &str, model: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = env
        .http
        .post(format!("{}/v1/chat/completions", env.url))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send");
    split(r).await
}

async fn ledger_rows(env: &Env, want: i64) -> i64 {
    let store = env.state.accounts().store();
    for _ in 0..100 {
        let n = store.ledger_count().await.expect("count");
        if n >= want {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.ledger_count().await.expect("count")
}

#[tokio::test]
async fn keys_are_created_once_used_restricted_rotated_and_revoked() {
    let env = start().await;
    let k = create_key(&env, json!({"name": "ci", "team": "platform", "models": ["gpt", "flaky", "unreachable"], "providers": ["ant"]})).await;
    let secret = k["key"].as_str().expect("secret").to_string();
    assert!(secret.starts_with("sk-tw-"));
    // listed without the secret
    let r = env
        .http
        .get(format!("{}/admin/keys", env.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .expect("list");
    let text = r.text().await.expect("text");
    assert!(
        text.contains(k["id"].as_str().expect("id")) && !text.contains(&secret[6..]),
        "{text}"
    );

    // allowed model, but its only deployment is on a provider the key may not reach
    let (status, _, body) = call(&env, &secret, "gpt").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(env.mock_stats().await["requests"], 0);
    // a model whose first deployment is excluded: always the allowed provider
    for _ in 0..3 {
        let (status, h, body) = call(&env, &secret, "flaky").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(header(&h, "x-tollway-provider"), "ant");
    }
    // not through fallbacks either (unreachable → dead, then fallback gpt → oai): nothing allowed
    let (status, _, _) = call(&env, &secret, "unreachable").await;
    assert_eq!(status, 404);
    // a model outside its list
    let (status, _, body) = call(&env, &secret, "claude").await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("`claude`"));
    // /v1/models shows only its models
    let r = env
        .http
        .get(format!("{}/v1/models", env.url))
        .bearer_auth(&secret)
        .send()
        .await
        .expect("models");
    let v: Value = r.json().await.expect("json");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["flaky", "gpt", "unreachable"]);
    // not an admin
    let r = env
        .http
        .get(format!("{}/admin/keys", env.url))
        .bearer_auth(&secret)
        .send()
        .await
        .expect("admin");
    assert_eq!(r.status(), 403);

    // rotate: the old secret stops working, the new one works
    let id = k["id"].as_str().expect("id");
    let r = env
        .http
        .post(format!("{}/admin/keys/{id}/rotate", env.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .expect("rotate");
    let rotated: Value = r.json().await.expect("json");
    let new_secret = rotated["key"].as_str().expect("new secret");
    assert_eq!(call(&env, &secret, "flaky").await.0, 401);
    assert_eq!(call(&env, new_secret, "flaky").await.0, 200);
    // revoke: refused with a clear message
    let r = env
        .http
        .post(format!("{}/admin/keys/{id}/revoke", env.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 200);
    let (status, _, body) = call(&env, new_secret, "flaky").await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("revoked"),
        "{body}"
    );
    assert!(!body.to_string().contains(&new_secret[6..]));
    let r = env
        .http
        .post(format!("{}/admin/keys/{id}/revoke", env.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 404);
    // bad requests are named
    let r = env
        .http
        .post(format!("{}/admin/keys", env.url))
        .bearer_auth(MASTER)
        .json(&json!({"name": "x", "budget_usd": "lots"}))
        .send()
        .await
        .expect("create");
    let (status, _, v) = split(r).await;
    assert_eq!(status, 400);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("lots"));
}

/// A request under several limits (its key's, its team's, its model's) gets the headers of the
/// tightest one for requests and for tokens, each on its own, and is refused by whichever runs out
/// first, without being counted against the others.
#[tokio::test]
async fn rate_limit_headers_name_the_tightest_of_key_team_and_model() {
    let env = start_with(|mock| {
        config_text(mock).replace(
            "  gpt: { deployments: [{ provider: oai, model: gpt-4.1 }] }",
            "  gpt: { rpm: 4, tpm: 1000000, deployments: [{ provider: oai, model: gpt-4.1 }] }",
        ) + "teams:\n  eng: { rpm: 50, tpm: 900 }\n"
    })
    .await;
    let k = create_key(
        &env,
        json!({"name": "three", "team": "eng", "rpm": 10, "tpm": 5000}),
    )
    .await;
    let secret = k["key"].as_str().expect("secret");
    let (status, h, body) = call(&env, secret, "gpt").await;
    assert_eq!(status, 200, "{body}");
    // requests: the model's 4 is tightest (key 10, team 50); tokens: the team's 900 (key 5,000,
    // model 1,000,000), nothing used yet
    assert_eq!(header(&h, "x-ratelimit-limit-requests"), "4");
    assert_eq!(header(&h, "x-ratelimit-remaining-requests"), "3");
    assert_eq!(header(&h, "x-ratelimit-limit-tokens"), "900");
    assert_eq!(header(&h, "x-ratelimit-remaining-tokens"), "900");
    for left in ["2", "1", "0"] {
        let (status, h, _) = call(&env, secret, "gpt").await;
        assert_eq!(status, 200);
        assert_eq!(header(&h, "x-ratelimit-remaining-requests"), left);
        // the tokens of the answers so far are counted against the team's 900
        let tokens_left: u64 = header(&h, "x-ratelimit-remaining-tokens")
            .parse()
            .expect("a number");
        assert!(tokens_left < 900, "{tokens_left}");
    }
    let (status, _, body) = call(&env, secret, "gpt").await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("model:gpt"),
        "the model's limit ran out first: {body}"
    );
    // the refused request was counted against no limit: the key has used 4 of its 10, and this
    // request to another model is the 5th
    let (status, h, body) = call(&env, secret, "gpt2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&h, "x-ratelimit-limit-requests"), "10");
    assert_eq!(header(&h, "x-ratelimit-remaining-requests"), "5");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_and_headers() {
    let env = start().await;
    let k = create_key(&env, json!({"name": "limited", "rpm": 3})).await;
    let secret = k["key"].as_str().expect("secret");
    for left in ["2", "1", "0"] {
        let (status, h, _) = call(&env, secret, "gpt").await;
        assert_eq!(status, 200);
        assert_eq!(header(&h, "x-ratelimit-limit-requests"), "3");
        assert_eq!(header(&h, "x-ratelimit-remaining-requests"), left);
    }
    let (status, h, body) = call(&env, secret, "gpt").await;
    assert_eq!(status, 429, "{body}");
    assert!(
        header(&h, "retry-after")
            .parse::<u64>()
            .expect("retry-after")
            >= 1
    );
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("3 requests per minute"));
    assert_eq!(
        env.mock_stats().await["requests"],
        3,
        "the refused request never went upstream"
    );
    // the master key is not limited by a virtual key's limit
    assert_eq!(call(&env, MASTER, "gpt").await.0, 200);
}

#[tokio::test]
async fn every_request_is_in_the_ledger_and_reports_read_it() {
    let env = start().await;
    let k = create_key(&env, json!({"name": "reporter", "team": "research"})).await;
    let secret = k["key"].as_str().expect("secret").to_string();
    let id = k["id"].as_str().expect("id").to_string();
    let (status, h, _) = call(&env, &secret, "gpt").await;
    assert_eq!(status, 200);
    let first_request = header(&h, "x-tollway-request-id").to_string();
    assert_eq!(call(&env, &secret, "claude").await.0, 200);
    // an upstream error is recorded with its status
    let r = env.http.post(format!("{}/v1/chat/completions", env.url)).bearer_auth(&secret)
        .json(&json!({"model": "gpt", "messages": [{"role": "user", "content": "hi [mock fault=400]"}]}))
        .send().await.expect("send");
    assert_eq!(r.status(), 400);
    // a completed stream with usage, and one the client abandons
    let r = env.http.post(format!("{}/v1/messages", env.url)).header("x-api-key", &secret)
        .json(&json!({"model": "gpt", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "hi [mock tokens=7]"}]}))
        .send().await.expect("send");
    assert!(r.text().await.expect("body").contains("message_stop"));
    let mut r = env.http.post(format!("{}/v1/chat/completions", env.url)).bearer_auth(&secret)
        .json(&json!({"model": "claude", "stream": true, "messages": [{"role": "user", "content": "hi [mock tokens=500 tpt_ms=20]"}]}))
        .send().await.expect("send");
    let _ = r.chunk().await;
    drop(r);
    assert_eq!(ledger_rows(&env, 5).await, 5);

    let store = env.state.accounts().store();
    let first = store
        .ledger_row(&first_request)
        .await
        .expect("db")
        .expect("row");
    assert_eq!(first.key_id.as_deref(), Some(id.as_str()));
    assert_eq!(first.team.as_deref(), Some("research"));
    assert_eq!(
        (
            first.status,
            first.model.as_str(),
            first.deployment.as_str()
        ),
        (200, "gpt", "oai/gpt-4.1")
    );
    assert!(first.input_tokens > 0 && first.output_tokens > 0);
    let usage: Value = env
        .http
        .get(format!("{}/admin/usage?group_by=model", env.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .expect("usage")
        .json()
        .await
        .expect("json");
    let rows = usage["rows"].as_array().expect("rows");
    let gpt = rows.iter().find(|r| r["model"] == "gpt").expect("gpt row");
    assert_eq!(gpt["requests"], 3);
    assert_eq!(usage["total"]["requests"], 5);
    assert!(usage["forecast"]["forecast_month_end_usd"].is_string());
    // statuses: 200 ×3 (two chats and the finished stream), 400, and 499 for the abandoned stream
    let all = store
        .usage(&tollway_store::UsageQuery::default())
        .await
        .expect("usage");
    assert_eq!(all[0].requests, 5);
    let csv = env
        .http
        .get(format!(
            "{}/admin/usage?group_by=key,model&format=csv",
            env.url
        ))
        .bearer_auth(MASTER)
        .send()
        .await
        .expect("csv")
        .text()
        .await
        .expect("text");
    assert!(csv.starts_with("key,model,requests,"), "{csv}");
    assert!(csv.contains(&format!("{id},claude,2,")), "{csv}");
    // feedback on an answer
    let r = env
        .http
        .post(format!("{}/v1/feedback", env.url))
        .bearer_auth(&secret)
        .json(&json!({"request_id": first_request, "rating": "bad", "comment": "wrong"}))
        .send()
        .await
        .expect("fb");
    assert_eq!(r.status(), 200);
    assert_eq!(
        store.feedback(&first_request).await.expect("db").as_deref(),
        Some("bad")
    );
    let r = env
        .http
        .post(format!("{}/v1/feedback", env.url))
        .bearer_auth(&secret)
        .json(&json!({"request_id": first_request, "rating": "meh"}))
        .send()
        .await
        .expect("fb");
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_graceful_shutdown_loses_no_ledger_row() {
    let mut env = start().await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let http = env.http.clone();
        let url = env.url.clone();
        tasks.push(tokio::spawn(async move {
            http.post(format!("{url}/v1/chat/completions"))
                .bearer_auth(MASTER)
                .json(&json!({"model": "gpt", "stream": i % 2 == 0, "messages": [{"role": "user", "content": "hi [mock tokens=5 tpt_ms=5]"}]}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.expect("join").expect("send") == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 60);
    env.stop();
    if let Some(done) = env.done.take() {
        let _ = done.await;
    }
    env.state.accounts().flush_and_stop().await;
    assert_eq!(
        env.state
            .accounts()
            .store()
            .ledger_count()
            .await
            .expect("count"),
        60
    );
}

/// Dollars per million tokens × tokens, in micro-dollars, rounded half up — computed by hand.
fn expected_micros(
    input: u64,
    cached: u64,
    output: u64,
    in_pm: u64,
    cached_pm: u64,
    out_pm: u64,
) -> String {
    // prices are in micro-dollars per million tokens = pico-dollars per token
    let picos = u128::from(input) * u128::from(in_pm)
        + u128::from(cached) * u128::from(cached_pm)
        + u128::from(output) * u128::from(out_pm);
    let micros = (picos + 500_000) / 1_000_000;
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

#[tokio::test]
async fn every_answer_is_priced_exactly_in_headers_streams_and_the_ledger() {
    let env = start().await;
    // gpt → oai/gpt-4.1 at OpenAI's list price: $2 in, $0.50 cached, $8 out per million
    let (status, h, body) = env
        .openai(json!({"model": "gpt", "messages": [{"role": "user", "content": "Hello there [mock cached=7 tokens=40]"}]}))
        .await;
    assert_eq!(status, 200);
    let u = &body["usage"];
    let prompt = u["prompt_tokens"].as_u64().expect("prompt");
    let cached = u["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .expect("cached");
    let output = u["completion_tokens"].as_u64().expect("completion");
    assert_eq!((cached, output), (7, 40));
    let want = expected_micros(
        prompt - cached,
        cached,
        output,
        2_000_000,
        500_000,
        8_000_000,
    );
    assert_eq!(header(&h, "x-tollway-cost-usd"), want);
    let id = header(&h, "x-tollway-request-id").to_string();

    // claude → ant/claude-sonnet-4-5: $3 in, $0.30 cache read, $15 out; streamed through the
    // Anthropic API, the cost arrives in message_delta's usage
    let r = env
        .http
        .post(format!("{}/v1/messages", env.url))
        .header("x-api-key", MASTER)
        .json(
            &json!({"model": "claude", "max_tokens": 100, "stream": true,
            "messages": [{"role": "user", "content": "Hi [mock cached=3 tokens=12]"}]}),
        )
        .send()
        .await
        .expect("send");
    let sid = header(r.headers(), "x-tollway-request-id").to_string();
    let text = r.text().await.expect("body");
    let delta: Value = crate::harness::sse(&text)
        .into_iter()
        .find(|(e, _)| e.as_deref() == Some("message_delta"))
        .map(|(_, d)| serde_json::from_str(&d).expect("json"))
        .expect("message_delta");
    let du = &delta["usage"];
    let want_stream = expected_micros(
        du["input_tokens"].as_u64().expect("in"),
        du["cache_read_input_tokens"].as_u64().expect("read"),
        du["output_tokens"].as_u64().expect("out"),
        3_000_000,
        300_000,
        15_000_000,
    );
    assert_eq!(du["cost_usd"], want_stream.as_str(), "{delta}");
    // OpenAI streams carry it in the final usage chunk
    let r = env
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    let text = r.text().await.expect("body");
    let last_usage: Value = crate::harness::sse(&text)
        .into_iter()
        .rfind(|(_, d)| d.contains("\"usage\":{"))
        .map(|(_, d)| serde_json::from_str(&d).expect("json"))
        .expect("usage chunk");
    assert!(
        last_usage["usage"]["cost_usd"]
            .as_str()
            .is_some_and(|c| c.starts_with("0.0")),
        "{last_usage}"
    );

    // an unpriced model still works; the ledger says the cost is unknown
    let (status, h, _) = env
        .openai(json!({"model": "gpt2", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-tollway-cost-usd"), "unknown");

    assert_eq!(ledger_rows(&env, 4).await, 4);
    let store = env.state.accounts().store();
    let row = store.ledger_row(&id).await.expect("db").expect("row");
    let micros: i64 = want.replace('.', "").parse().expect("micros");
    assert_eq!(row.cost_micros, Some(micros));
    assert!(!row.cost_estimated);
    let srow = store.ledger_row(&sid).await.expect("db").expect("row");
    assert_eq!(
        srow.cost_micros,
        Some(want_stream.replace('.', "").parse().expect("micros"))
    );
    let usage = store
        .usage(&tollway_store::UsageQuery::default())
        .await
        .expect("usage");
    assert_eq!(usage[0].unpriced_requests, 1);
}

#[tokio::test]
async fn answers_without_reported_usage_are_counted_locally_and_marked_estimated() {
    let env = start().await;
    let (status, h, body) = env
        .openai(json!({"model": "gpt", "messages": [{"role": "user", "content": "Hello there [mock usage=0 tokens=30]"}]}))
        .await;
    assert_eq!(status, 200);
    assert!(
        body.get("usage").is_some(),
        "the client still gets usage: {body}"
    );
    let id = header(&h, "x-tollway-request-id").to_string();
    assert_ne!(header(&h, "x-tollway-cost-usd"), "unknown");
    let r = env
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt", "stream": true,
        "messages": [{"role": "user", "content": "Hi [mock usage=0 tokens=20]"}]}),
        )
        .await;
    let sid = header(r.headers(), "x-tollway-request-id").to_string();
    let _ = r.text().await;
    assert_eq!(ledger_rows(&env, 2).await, 2);
    let store = env.state.accounts().store();
    for rid in [&id, &sid] {
        let row = store.ledger_row(rid).await.expect("db").expect("row");
        assert!(row.cost_estimated, "{row:?}");
        assert!(row.input_tokens > 0 && row.output_tokens > 0, "{row:?}");
        assert!(row.cost_micros.unwrap_or(0) > 0);
    }
    // an answer in one part longer than what is counted exactly (about 380 KB): its start counted,
    // the rest extrapolated, never dropped
    let (status, h, _) = env
        .openai(json!({"model": "gpt", "messages": [{"role": "user", "content": "Long [mock usage=0 tokens=60000]"}]}))
        .await;
    assert_eq!(status, 200);
    let lid = header(&h, "x-tollway-request-id").to_string();
    assert_eq!(ledger_rows(&env, 3).await, 3);
    let row = store.ledger_row(&lid).await.expect("db").expect("row");
    assert!(row.cost_estimated, "{row:?}");
    assert!((40_000..=130_000).contains(&row.output_tokens), "{row:?}");
    // with reported usage, nothing is estimated
    let (_, h, _) = env
        .openai(json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    let rid = header(&h, "x-tollway-request-id").to_string();
    assert_eq!(ledger_rows(&env, 4).await, 4);
    assert!(
        !store
            .ledger_row(&rid)
            .await
            .expect("db")
            .expect("row")
            .cost_estimated
    );
}

#[tokio::test]
async fn the_request_log_pages_newest_first_and_filters() {
    let env = start().await;
    let k = create_key(
        &env,
        json!({"name": "log", "team": "web", "models": ["gpt"]}),
    )
    .await;
    let secret = k["key"].as_str().expect("secret");
    let key_id = k["id"].as_str().expect("id");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, h, _) = call(&env, secret, "gpt").await;
        assert_eq!(status, 200);
        ids.push(header(&h, "x-tollway-request-id").to_string());
    }
    // a model the key may not use: refused, and logged
    let (status, h, _) = call(&env, secret, "claude").await;
    assert_eq!(status, 403);
    ids.push(header(&h, "x-tollway-request-id").to_string());
    // another caller's request
    let (status, _, _) = call(&env, MASTER, "gpt").await;
    assert_eq!(status, 200);
    assert_eq!(ledger_rows(&env, 5).await, 5);

    // the key's requests, two a page, newest first, nothing skipped or repeated
    let mut seen = Vec::new();
    let mut q = format!("/admin/requests?limit=2&key={key_id}");
    loop {
        let (status, v) = env.admin_get(&q, Some(MASTER)).await;
        assert_eq!(status, 200, "{v}");
        let page = v["data"].as_array().expect("data");
        assert!(page.len() <= 2);
        seen.extend(
            page.iter()
                .map(|r| r["request_id"].as_str().unwrap_or("").to_string()),
        );
        match v["next"].as_str() {
            Some(next) => q = format!("/admin/requests?limit=2&key={key_id}&before={next}"),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);

    // one row whole: what answered, how, and what it cost
    let (_, v) = env
        .admin_get(
            &format!("/admin/requests?key={key_id}&status=ok&limit=1"),
            Some(MASTER),
        )
        .await;
    let row = &v["data"][0];
    assert_eq!(row["request_id"], ids[1]);
    assert_eq!(row["key_id"], key_id);
    assert_eq!(row["team"], "web");
    assert_eq!(row["model"], "gpt");
    assert_eq!(row["deployment"], "oai/gpt-4.1");
    assert_eq!(row["status"], 200);
    assert_eq!(row["api"], "openai");
    assert!(row["input_tokens"].as_i64().unwrap_or(0) > 0, "{row}");
    assert!(
        row["cost_usd"]
            .as_str()
            .is_some_and(|c| c.parse::<f64>().unwrap_or(0.0) > 0.0),
        "{row}"
    );
    let time = row["time"].as_str().unwrap_or("");
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.starts_with("20"),
        "{time}"
    );

    // filters: failures only, by model, by team
    let (_, v) = env
        .admin_get("/admin/requests?status=error", Some(MASTER))
        .await;
    let failed: Vec<_> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| r["request_id"].clone())
        .collect();
    assert_eq!(failed, [json!(ids[0])]);
    let (_, v) = env
        .admin_get(
            "/admin/requests?status=403&model=claude&team=web",
            Some(MASTER),
        )
        .await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(1), "{v}");
    assert!(v["next"].is_null());

    // bad parameters are named; the log is the master key's
    for (q, word) in [
        ("limit=0", "`limit`"),
        ("limit=lots", "`limit`"),
        ("before=yesterday", "`before`"),
        ("status=fine", "`status`"),
        ("limit=1&limit=2", "query string"),
    ] {
        let (status, v) = env
            .admin_get(&format!("/admin/requests?{q}"), Some(MASTER))
            .await;
        assert_eq!(status, 400, "{q}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(word)),
            "{q}: {v}"
        );
    }
    let (status, _) = env.admin_get("/admin/requests", Some(secret)).await;
    assert_eq!(status, 403);
}
