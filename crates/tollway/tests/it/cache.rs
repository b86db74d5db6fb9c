//! The exact-match response cache through the mock: an answer kept and repeated (whole or as a
//! stream, to either client API) without reaching the provider, recorded at no cost; the
//! request's `Cache-Control`; callers kept apart by team or key; models that opt out; failures
//! never kept; and answers shared between two instances through Redis.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{
    config_errors, config_text, gateway, header, openai_stream_text, split, sse, start_with, Env,
    MASTER,
};

fn cached_config(mock: &str) -> String {
    format!(
        "{}  nocache: {{ cache: false, deployments: [{{ provider: oai, model: gpt-4.1 }}] }}\ncache: {{ ttl_secs: 600, max_mb: 8 }}\n",
        config_text(mock)
    )
}

async fn upstream_requests(env: &Env) -> u64 {
    env.mock_stats().await["requests"].as_u64().unwrap_or(0)
}

async fn chat_as(
    env: &Env,
    key: &str,
    body: Value,
    extra: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut r = env
        .http
        .post(format!("{}/v1/chat/completions", env.url))
        .bearer_auth(key);
    for (k, v) in extra {
        r = r.header(*k, *v);
    }
    let r = r.json(&body).send().await.expect("send");
    let status = r.status().as_u16();
    let h = r.headers().clone();
    (status, h, r.text().await.expect("body"))
}

/// Waits for the ledger to hold `want` rows.
async fn ledger_settled(env: &Env, want: i64) {
    let store = env.state.accounts().store();
    for _ in 0..200 {
        if store.ledger_count().await.expect("count") >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the ledger never reached {want} rows");
}

#[tokio::test]
async fn an_answer_is_repeated_whole_or_streamed_to_either_api_without_the_provider() {
    let env = start_with(cached_config).await;
    let body = json!({"model": "gpt", "max_tokens": 50,
        "messages": [{"role": "user", "content": "What is the capital of France?"}]});

    let (status, h, first) = chat_as(&env, MASTER, body.clone(), &[]).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(header(&h, "x-tollway-cache"), "miss");
    assert_eq!(header(&h, "x-tollway-attempts"), "1");
    let first_request = header(&h, "x-tollway-request-id").to_string();
    assert_eq!(upstream_requests(&env).await, 1);
    let first: Value = serde_json::from_str(&first).expect("json");

    // the same request again: the kept answer, no upstream request, no cost
    let (status, h, again) = chat_as(&env, MASTER, body.clone(), &[]).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(header(&h, "x-tollway-cache"), "hit");
    assert_eq!(header(&h, "age"), "0");
    assert_eq!(header(&h, "x-tollway-attempts"), "0");
    assert_eq!(header(&h, "x-tollway-cost-usd"), "0.000000");
    assert_eq!(header(&h, "x-tollway-model"), "oai/gpt-4.1");
    assert_eq!(header(&h, "x-tollway-provider"), "oai");
    let hit_request = header(&h, "x-tollway-request-id").to_string();
    assert_ne!(hit_request, first_request);
    let again: Value = serde_json::from_str(&again).expect("json");
    assert_eq!(again["choices"], first["choices"]);
    assert_eq!(again["usage"], first["usage"], "the answer's own usage");
    assert_eq!(upstream_requests(&env).await, 1);

    // streamed to an OpenAI client, from the whole answer
    let mut stream = body.clone();
    stream["stream"] = json!(true);
    stream["stream_options"] = json!({"include_usage": true});
    let (status, h, text) = chat_as(&env, MASTER, stream, &[]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(header(&h, "x-tollway-cache"), "hit");
    assert!(header(&h, "content-type").starts_with("text/event-stream"));
    let (streamed, chunks) = openai_stream_text(&text);
    assert_eq!(
        streamed,
        first["choices"][0]["message"]["content"]
            .as_str()
            .expect("text")
    );
    let usage = chunks
        .iter()
        .rev()
        .find(|c| !c["usage"].is_null())
        .expect("a usage chunk");
    assert_eq!(
        usage["usage"]["completion_tokens"],
        first["usage"]["completion_tokens"]
    );
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    // an Anthropic client asking the same (same model, same limit, same message) gets it too
    let (status, h, v) = env
        .anthropic(json!({"model": "gpt", "max_tokens": 50,
            "messages": [{"role": "user", "content": "What is the capital of France?"}]}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(header(&h, "x-tollway-cache"), "hit");
    assert_eq!(
        v["content"][0]["text"],
        first["choices"][0]["message"]["content"]
    );
    assert_eq!(upstream_requests(&env).await, 1);

    // the ledger: the first request paid for, the hits recorded at no cost and no tokens
    ledger_settled(&env, 4).await;
    let store = env.state.accounts().store();
    let paid = store
        .ledger_row(&first_request)
        .await
        .expect("db")
        .expect("row");
    assert!(!paid.cache_hit);
    assert!(
        paid.input_tokens > 0 && paid.cost_micros.unwrap_or(0) > 0,
        "{paid:?}"
    );
    let hit = store
        .ledger_row(&hit_request)
        .await
        .expect("db")
        .expect("row");
    assert!(hit.cache_hit, "{hit:?}");
    assert_eq!(
        (
            hit.status,
            hit.attempts,
            hit.input_tokens,
            hit.output_tokens,
            hit.cost_micros,
            hit.deployment.as_str()
        ),
        (200, 0, 0, 0, Some(0), "oai/gpt-4.1")
    );
    let (status, _, report) = split(
        env.http
            .get(format!("{}/admin/usage?group_by=model", env.url))
            .bearer_auth(MASTER)
            .send()
            .await
            .expect("usage"),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    let row = report["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["model"] == "gpt"))
        .unwrap_or_else(|| panic!("no row for gpt: {report}"));
    assert_eq!(
        (row["requests"].as_i64(), row["cache_hits"].as_i64()),
        (Some(4), Some(3))
    );

    let m = crate::harness::metrics(&env.http, &env.url).await;
    assert!(
        m.contains("tollway_cache_lookups_total{result=\"hit\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("tollway_cache_lookups_total{result=\"miss\"} 1"),
        "{m}"
    );
    assert!(m.contains("tollway_cache_entries 1"), "{m}");

    // the admin API forgets every kept answer
    let cleared = |key: &'static str| {
        env.http
            .delete(format!("{}/admin/cache", env.url))
            .bearer_auth(key)
            .send()
    };
    let (status, _, v) = split(cleared("sk-not-the-master").await.expect("delete")).await;
    assert_eq!(status, 401, "{v}");
    let (status, _, v) = split(cleared(MASTER).await.expect("delete")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"cleared": 1, "shared_cleared": null}));
    let (_, h, _) = chat_as(&env, MASTER, body.clone(), &[]).await;
    assert_eq!(header(&h, "x-tollway-cache"), "miss");
    assert_eq!(upstream_requests(&env).await, 2);
}

#[tokio::test]
async fn a_streamed_answer_is_kept_once_it_finished() {
    let env = start_with(cached_config).await;
    let stream = json!({"model": "claude", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "Tell me a story [mock tokens=12]"}]});
    let r = env
        .http
        .post(format!("{}/v1/messages", env.url))
        .header("x-api-key", MASTER)
        .header("anthropic-version", "2023-06-01")
        .json(&stream)
        .send()
        .await
        .expect("send");
    assert_eq!(header(r.headers(), "x-tollway-cache"), "miss");
    let text = r.text().await.expect("body");
    let deltas: String = sse(&text)
        .into_iter()
        .filter(|(e, _)| e.as_deref() == Some("content_block_delta"))
        .filter_map(|(_, d)| {
            serde_json::from_str::<Value>(&d).ok()?["delta"]["text"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert!(!deltas.is_empty(), "{text}");
    assert_eq!(upstream_requests(&env).await, 1);

    // the same request whole: the streamed answer, gathered
    let mut whole = stream.clone();
    whole["stream"] = json!(false);
    let (status, h, v) = env.anthropic(whole).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(header(&h, "x-tollway-cache"), "hit");
    assert_eq!(v["content"][0]["text"], json!(deltas));
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["usage"]["output_tokens"].as_u64().unwrap_or(0) > 0, "{v}");

    // a stream the client left half-way is not kept
    let broken = json!({"model": "claude", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "A long one [mock tokens=400 tpt_ms=10]"}]});
    let mut r = env
        .http
        .post(format!("{}/v1/messages", env.url))
        .header("x-api-key", MASTER)
        .header("anthropic-version", "2023-06-01")
        .json(&broken)
        .send()
        .await
        .expect("send");
    let _ = r.chunk().await;
    drop(r);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut whole = broken.clone();
    whole["stream"] = json!(false);
    let (status, h, _) = env.anthropic(whole).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-tollway-cache"), "miss");
}

#[tokio::test]
async fn requests_choose_with_cache_control_and_bad_directives_are_refused() {
    let env = start_with(cached_config).await;
    let body = json!({"model": "gpt", "messages": [{"role": "user", "content": "hello"}]});
    let (_, h, _) = chat_as(&env, MASTER, body.clone(), &[]).await;
    assert_eq!(header(&h, "x-tollway-cache"), "miss");

    // no-store: neither read nor kept
    let (_, h, _) = chat_as(&env, MASTER, body.clone(), &[("cache-control", "no-store")]).await;
    assert_eq!(header(&h, "x-tollway-cache"), "bypass");
    assert_eq!(upstream_requests(&env).await, 2);
    // no-cache: a fresh answer, which replaces the kept one
    let (_, h, _) = chat_as(&env, MASTER, body.clone(), &[("cache-control", "no-cache")]).await;
    assert_eq!(header(&h, "x-tollway-cache"), "refresh");
    assert_eq!(upstream_requests(&env).await, 3);
    let (_, h, _) = chat_as(
        &env,
        MASTER,
        body.clone(),
        &[("cache-control", "max-age=3600")],
    )
    .await;
    assert_eq!(header(&h, "x-tollway-cache"), "hit");
    assert_eq!(upstream_requests(&env).await, 3);

    // x-tollway-cache-ttl: 0 keeps nothing
    let other = json!({"model": "gpt", "messages": [{"role": "user", "content": "not kept"}]});
    chat_as(&env, MASTER, other.clone(), &[("x-tollway-cache-ttl", "0")]).await;
    let (_, h, _) = chat_as(&env, MASTER, other.clone(), &[]).await;
    assert_eq!(header(&h, "x-tollway-cache"), "miss");

    // a directive that cannot be read: 400 in the caller's shape, naming it
    let (status, _, text) = chat_as(
        &env,
        MASTER,
        body.clone(),
        &[("cache-control", "max-age=soon")],
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max-age")),
        "{v}"
    );

    // a model that opts out: no cache header, every request upstream
    let before = upstream_requests(&env).await;
    let no = json!({"model": "nocache", "messages": [{"role": "user", "content": "hello"}]});
    for _ in 0..2 {
        let (status, h, _) = chat_as(&env, MASTER, no.clone(), &[]).await;
        assert_eq!(status, 200);
        assert!(h.get("x-tollway-cache").is_none());
    }
    assert_eq!(upstream_requests(&env).await, before + 2);

    // failures are never kept
    let flaky = json!({"model": "unreachable", "messages": [{"role": "user", "content": "x"}]});
    let (status, h, _) = chat_as(&env, MASTER, flaky.clone(), &[]).await;
    assert_eq!(status, 200, "the fallback answers");
    assert_eq!(header(&h, "x-tollway-cache"), "miss");
    let down = json!({"model": "hangs", "messages": [{"role": "user", "content": "x"}]});
    let (status, _, _) = chat_as(&env, MASTER, down.clone(), &[]).await;
    assert!(status >= 500);
    let (status, h, _) = chat_as(&env, MASTER, down.clone(), &[]).await;
    assert!(status >= 500);
    assert_ne!(header(&h, "x-tollway-cache"), "hit");
}

async fn key(env: &Env, body: Value) -> String {
    let (status, _, v) = split(
        env.http
            .post(format!("{}/admin/keys", env.url))
            .bearer_auth(MASTER)
            .json(&body)
            .send()
            .await
            .expect("create"),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    v["key"].as_str().expect("secret").to_string()
}

#[tokio::test]
async fn callers_share_answers_within_their_team_only() {
    let env = start_with(cached_config).await;
    let a = key(&env, json!({"name": "a", "team": "ops"})).await;
    let b = key(&env, json!({"name": "b", "team": "ops"})).await;
    let c = key(&env, json!({"name": "c", "team": "research"})).await;
    let d = key(&env, json!({"name": "d"})).await;
    let body = json!({"model": "gpt", "messages": [{"role": "user", "content": "shared?"}]});
    let mut seen = Vec::new();
    for k in [&a, &b, &c, &d, &d, &a] {
        let (status, h, text) = chat_as(&env, k, body.clone(), &[]).await;
        assert_eq!(status, 200, "{text}");
        seen.push(header(&h, "x-tollway-cache").to_string());
    }
    assert_eq!(seen, ["miss", "hit", "miss", "miss", "hit", "hit"]);
    // the master key is its own caller
    let (_, h, _) = chat_as(&env, MASTER, body.clone(), &[]).await;
    assert_eq!(header(&h, "x-tollway-cache"), "miss");
}

#[tokio::test]
async fn under_opt_in_only_asking_requests_and_opted_in_models_are_cached() {
    let env = start_with(|mock| {
        format!(
            "{}  kept: {{ cache: true, deployments: [{{ provider: oai, model: gpt-4.1 }}] }}\ncache: {{ mode: opt-in }}\n",
            config_text(mock)
        )
    })
    .await;
    let body = json!({"model": "gpt", "messages": [{"role": "user", "content": "opt in?"}]});
    for _ in 0..2 {
        let (status, h, _) = chat_as(&env, MASTER, body.clone(), &[]).await;
        assert_eq!(status, 200);
        assert!(h.get("x-tollway-cache").is_none(), "not asked: not cached");
    }
    let ask = [("cache-control", "max-age=600")];
    let (_, h, _) = chat_as(&env, MASTER, body.clone(), &ask).await;
    assert_eq!(header(&h, "x-tollway-cache"), "miss");
    let (_, h, _) = chat_as(&env, MASTER, body.clone(), &ask).await;
    assert_eq!(header(&h, "x-tollway-cache"), "hit");
    assert_eq!(upstream_requests(&env).await, 3);
    let kept = json!({"model": "kept", "messages": [{"role": "user", "content": "opt in?"}]});
    let (_, h, _) = chat_as(&env, MASTER, kept.clone(), &[]).await;
    assert_eq!(header(&h, "x-tollway-cache"), "miss");
    let (_, h, _) = chat_as(&env, MASTER, kept.clone(), &[]).await;
    assert_eq!(header(&h, "x-tollway-cache"), "hit");
    assert_eq!(upstream_requests(&env).await, 4);
}

#[tokio::test]
async fn cache_config_errors_are_named() {
    for (text, want) in [
        ("cache: { ttl_secs: 0 }", "cache.ttl_secs"),
        ("cache: { scope: tenant }", "unknown scope `tenant`"),
        ("cache: { shared: true }", "needs `shared_state`"),
        ("cache: { ttl: 5 }", "ttl"),
        ("cache: { mode: sometimes }", "unknown mode `sometimes`"),
        ("models: { m: { cache: maybe, deployments: [] } }", "cache"),
    ] {
        let all = config_errors(text);
        assert!(all.contains(want), "{text}: {all}");
    }
}

#[tokio::test]
async fn two_instances_share_answers_through_redis() {
    use crate::shared::{redis_url, shared_setup};
    let (mock, name, storage, shared) = shared_setup().await;
    let text = format!(
        "{}shared_state: {{ url: \"{}\", prefix: \"{name}:\" }}\ncache: {{ shared: true, scope: global }}\n",
        config_text(&mock.url()),
        redis_url()
    );
    let a = gateway(&text, &storage, shared.clone()).await;
    let b = gateway(&text, &storage, shared.clone()).await;
    let http = reqwest::Client::new();
    let ask = |url: String| {
        let http = http.clone();
        async move {
            let r = http
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(MASTER)
                .json(&json!({"model": "gpt", "messages": [{"role": "user", "content": "across instances"}]}))
                .send()
                .await
                .expect("send");
            let cache = header(r.headers(), "x-tollway-cache").to_string();
            let v: Value = r.json().await.expect("json");
            (cache, v["choices"][0]["message"]["content"].clone())
        }
    };
    let (first, answer) = ask(a.url.clone()).await;
    assert_eq!(first, "miss");
    // the answer reaches Redis off the request path: wait for it there
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let mut kept: Vec<String> = Vec::new();
    for _ in 0..100 {
        kept = redis::cmd("KEYS")
            .arg(format!("{name}:cache:*"))
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        if !kept.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(kept.len(), 1, "one answer in Redis");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&kept[0])
        .query_async(&mut conn)
        .await
        .expect("PTTL");
    assert!(
        ttl > 3_000_000 && ttl <= 3_600_000,
        "kept for the configured hour: {ttl} ms"
    );
    assert_eq!(ask(b.url.clone()).await, ("hit".to_string(), answer));

    // cleared through one instance: gone from Redis and from that instance
    let v: Value = http
        .delete(format!("{}/admin/cache", a.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .expect("delete")
        .json()
        .await
        .expect("json");
    assert_eq!(v, json!({"cleared": 1, "shared_cleared": 1}));
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{name}:cache:*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(ask(a.url.clone()).await.0, "miss");
    let stats = crate::harness::mock_stats(&http, &mock.url()).await;
    assert_eq!(
        stats["requests"], 2,
        "one upstream request for both instances, and one after clearing"
    );
}

/// A Redis user for one test, deleted when the test ends (even by a panic).
struct AclUser {
    url: String,
    name: String,
}

impl Drop for AclUser {
    fn drop(&mut self) {
        if let Ok(mut conn) =
            redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection())
        {
            let _: Result<i64, _> = redis::cmd("ACL")
                .arg("DELUSER")
                .arg(&self.name)
                .query(&mut conn);
        }
    }
}

#[tokio::test]
async fn a_cache_write_redis_refuses_loses_only_that_copy() {
    use crate::shared::{redis_url, shared_setup};
    let (_mock, name, storage, _) = shared_setup().await;
    // a Redis user that may read the cache's keys but not write them (as a full Redis refuses
    // writes), and may use every key the shared limits, budgets and cooldowns use
    let admin = redis_url();
    let client = redis::Client::open(admin.as_str()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let password = tollway_store::generate_secret();
    let _user = AclUser {
        url: admin.clone(),
        name: name.clone(),
    };
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&name)
        .arg("reset")
        .arg("on")
        .arg(format!(">{password}"))
        .arg("+@all")
        .arg(format!("~{name}:rl:*"))
        .arg(format!("~{name}:budget:*"))
        .arg(format!("~{name}:cooldown:*"))
        .arg(format!("%R~{name}:cache:*"))
        .query_async(&mut conn)
        .await
        .expect("ACL SETUSER");
    let url = admin.replacen("redis://", &format!("redis://{name}:{password}@"), 1);
    let text = format!(
        "{}shared_state: {{ url: \"{url}\", prefix: \"{name}:\" }}\ncache: {{ shared: true }}\n",
        config_text(&_mock.url()),
    );
    let gw = gateway(&text, &storage, Some((url, format!("{name}:")))).await;
    let http = reqwest::Client::new();
    let ask = || async {
        let r = http
            .post(format!("{}/v1/chat/completions", gw.url))
            .bearer_auth(MASTER)
            .json(&json!({"model": "gpt", "messages": [{"role": "user", "content": "refused"}]}))
            .send()
            .await
            .expect("send");
        (
            r.status().as_u16(),
            header(r.headers(), "x-tollway-cache").to_string(),
        )
    };
    assert_eq!(ask().await, (200, "miss".to_string()));
    // wait for Redis to refuse the copy (its ACL log names the user and the key)
    let mut refused = false;
    for _ in 0..100 {
        let log: Vec<redis::Value> = redis::cmd("ACL")
            .arg("LOG")
            .query_async(&mut conn)
            .await
            .expect("ACL LOG");
        refused = format!("{log:?}").contains(&format!("{name}:cache:"));
        if refused {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the cache write reached Redis and was refused");
    // the instance still counts its limits and budgets in Redis, and answers from its own copy
    let m = crate::harness::metrics(&http, &gw.url).await;
    assert!(m.contains("tollway_shared_state_up 1"), "{m}");
    assert!(m.contains("tollway_shared_state_outages_total 0"), "{m}");
    assert_eq!(ask().await, (200, "hit".to_string()));
    let kept: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{name}:cache:*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert!(kept.is_empty(), "{kept:?}");
}

#[tokio::test]
async fn embeddings_are_kept_too_whatever_encoding_the_client_asks() {
    let env = start_with(cached_config).await;
    let body = json!({"model": "gpt", "input": ["hello", "world"], "dimensions": 8});
    let (status, h, first) = split(env.post("/v1/embeddings", body.clone()).await).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(header(&h, "x-tollway-cache"), "miss");
    let (status, h, again) = split(env.post("/v1/embeddings", body.clone()).await).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(header(&h, "x-tollway-cache"), "hit");
    assert_eq!(header(&h, "x-tollway-cost-usd"), "0.000000");
    assert_eq!(
        again["data"], first["data"],
        "the same vectors, bit for bit"
    );
    assert_eq!(again["usage"], first["usage"]);
    let mut b64 = body.clone();
    b64["encoding_format"] = json!("base64");
    let (status, h, v) = split(env.post("/v1/embeddings", b64).await).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(header(&h, "x-tollway-cache"), "hit");
    assert!(v["data"][0]["embedding"].is_string(), "{v}");
    // other inputs, or the same inputs as a chat, are other requests
    let (_, h, _) = split(
        env.post(
            "/v1/embeddings",
            json!({"model": "gpt", "input": ["hello"], "dimensions": 8}),
        )
        .await,
    )
    .await;
    assert_eq!(header(&h, "x-tollway-cache"), "miss");
    let (_, h, _) = chat_as(
        &env,
        MASTER,
        json!({"model": "gpt", "messages": [{"role": "user", "content": "hello\nworld"}]}),
        &[],
    )
    .await;
    assert_eq!(header(&h, "x-tollway-cache"), "miss");
    assert_eq!(upstream_requests(&env).await, 3);
    ledger_settled(&env, 5).await;
}

#[tokio::test]
async fn requests_that_rule_deployments_out_are_not_answered_from_others() {
    let env = start_with(cached_config).await;
    let plain = json!({"model": "flaky", "messages": [{"role": "user", "content": "where from?"}]});
    let (status, h, _) = chat_as(&env, MASTER, plain.clone(), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-tollway-cache"), "miss");
    assert_eq!(header(&h, "x-tollway-provider"), "ant");
    // only `oai` may answer this one: the kept answer (from `ant`) does not serve it
    let mut only = plain.clone();
    only["provider"] = json!({"only": ["oai"]});
    let (status, h, _) = chat_as(&env, MASTER, only.clone(), &[]).await;
    assert!(status >= 500, "oai's deployment of `flaky` always fails");
    assert_ne!(header(&h, "x-tollway-cache"), "hit");
    // the same restriction twice is the same request
    let mut order = plain.clone();
    order["provider"] = json!({"order": ["ant"]});
    let (_, h, _) = chat_as(&env, MASTER, order.clone(), &[]).await;
    assert_eq!(header(&h, "x-tollway-cache"), "miss");
    let (_, h, _) = chat_as(&env, MASTER, order.clone(), &[]).await;
    assert_eq!(header(&h, "x-tollway-cache"), "hit");
    let (_, h, _) = chat_as(&env, MASTER, plain.clone(), &[]).await;
    assert_eq!(header(&h, "x-tollway-cache"), "hit");
}
