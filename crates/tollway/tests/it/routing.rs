//! Fault injection on tollway-mock: one deployment down, a 429 storm with Retry-After, every
//! deployment down, failover of streams before their first byte, per-request provider control,
//! and the health the admin API shows.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{header, metrics, sse, start_with, Env, MASTER};

fn config(mock: &str) -> String {
    format!(
        r#"
server:
  master_key: {MASTER}
providers:
  a: {{ kind: openai-compatible, base_url: "{mock}/v1", api_key: ka }}
  b: {{ kind: anthropic, base_url: "{mock}", api_key: kb }}
  c: {{ kind: openai-compatible, base_url: "{mock}/v1", api_key: kc }}
models:
  one-down:
    deployments:
      - {{ provider: a, model: "m-down?fault=500" }}
      - {{ provider: b, model: m-up }}
  storm:
    deployments:
      - {{ provider: a, model: "m-limited?fault=429&retry_after=30" }}
      - {{ provider: c, model: m-fine }}
  all-down:
    allowed_fails: 1
    deployments:
      - {{ provider: a, model: "x1?fault=503" }}
      - {{ provider: b, model: "x2?fault=529" }}
  even:
    strategy: lowest-usage
    deployments:
      - {{ provider: a, model: even-1 }}
      - {{ provider: c, model: even-2 }}
  quota:
    strategy: lowest-usage
    deployments:
      - {{ provider: a, model: small-quota, tpm: 100000 }}
      - {{ provider: c, model: big-quota, tpm: 300000 }}
  spread:
    strategy: least-outstanding
    deployments:
      - {{ provider: a, model: s1 }}
      - {{ provider: b, model: s2 }}
      - {{ provider: c, model: s3 }}
    fallbacks: [backup]
  backup:
    deployments: [{{ provider: c, model: backup-model }}]
  small-context:
    context_window_fallbacks: [big-context]
    deployments: [{{ provider: a, model: "small?fault=context_length" }}]
  small-context-anthropic:
    context_window_fallbacks: [big-context]
    deployments: [{{ provider: b, model: "small-a?fault=context_length" }}]
  big-context: {{ deployments: [{{ provider: c, model: big }}] }}
  slow-after-a-failure:
    deployments:
      - {{ provider: a, model: "m-down?fault=500" }}
      - {{ provider: b, model: "m-slow?ttft_ms=60" }}
  strict:
    content_policy_fallbacks: [lenient]
    deployments: [{{ provider: a, model: "strict?fault=content_policy" }}]
  lenient: {{ deployments: [{{ provider: b, model: lenient }}] }}
  regional:
    deployments:
      - {{ provider: a, model: r-us, region: us-east-1 }}
      - {{ provider: b, model: r-eu, region: eu-west-1 }}
  capacity:
    deployments:
      - {{ provider: a, model: cap-small, rpm: 2 }}
      - {{ provider: c, model: cap-big }}
  capacity-only: {{ deployments: [{{ provider: a, model: cap-one, rpm: 1 }}] }}
  probed:
    probe_interval_secs: 1
    allowed_fails: 2
    deployments:
      - {{ provider: a, model: "probed-down?fault=500" }}
      - {{ provider: b, model: probed-up }}
  cheapest:
    strategy: lowest-cost
    deployments:
      - {{ provider: c, model: unpriced-model }}
      - {{ provider: b, model: claude-sonnet-4-5 }}
      - {{ provider: a, model: gpt-4.1-mini }}
  weighted:
    strategy: weighted
    deployments:
      - {{ provider: a, model: w-heavy, weight: 9 }}
      - {{ provider: c, model: w-light, weight: 1 }}
routers:
  auto-rules:
    kind: rules
    default: backup
    rules:
      - {{ name: batch, when: {{ headers: {{ x-tollway-tier: batch }} }}, to: weighted }}
      - {{ name: long, when: {{ min_prompt_tokens: 500 }}, to: big-context }}
      - {{ name: agents, when: {{ has_tools: true }}, to: lenient }}
"#
    )
}

async fn chat(env: &Env, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    env.openai(body).await
}

fn msg(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

async fn upstream_models(env: &Env) -> Vec<String> {
    let all: Value = env
        .http
        .get(format!("{}/_mock/requests", env.mock.url()))
        .send()
        .await
        .expect("mock")
        .json()
        .await
        .expect("json");
    all.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["body"]["model"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn reset(env: &Env) {
    env.http
        .post(format!("{}/_mock/reset", env.mock.url()))
        .send()
        .await
        .expect("reset");
}

#[tokio::test]
async fn one_deployment_down_clients_see_no_error_and_it_is_skipped_after_cooling() {
    let env = start_with(config).await;
    for i in 0..6 {
        let (status, h, body) = chat(&env, msg("one-down")).await;
        assert_eq!(status, 200, "request {i}: {body}");
        assert_eq!(header(&h, "x-tollway-provider"), "b");
        let attempts: u32 = header(&h, "x-tollway-attempts").parse().expect("attempts");
        // the first three requests pay one failed attempt each; then the circuit is open
        assert_eq!(attempts, if i < 3 { 2 } else { 1 }, "request {i}");
    }
    let ups = upstream_models(&env).await;
    assert_eq!(
        ups.iter().filter(|m| m.starts_with("m-down")).count(),
        3,
        "{ups:?}"
    );
}

#[tokio::test]
async fn a_429_storm_honours_retry_after_and_moves_traffic() {
    let env = start_with(config).await;
    for _ in 0..20 {
        let (status, h, body) = chat(&env, msg("storm")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(header(&h, "x-tollway-provider"), "c");
    }
    let ups = upstream_models(&env).await;
    assert_eq!(
        ups.iter().filter(|m| m.starts_with("m-limited")).count(),
        1,
        "the rate-limited deployment is left alone for its Retry-After: {ups:?}"
    );
    // the admin API shows it cooling down for about the Retry-After
    let r = env
        .http
        .get(format!("{}/admin/health", env.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .expect("health");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    let limited = v["deployments"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|d| d["deployment"] == "a/m-limited?fault=429&retry_after=30")
        })
        .cloned()
        .expect("listed");
    assert_eq!(limited["state"], "cooling_down", "{v}");
    let left = limited["cooldown_remaining_ms"]
        .as_u64()
        .expect("remaining");
    assert!(left > 20_000 && left <= 30_000, "{left}");
    let fine = v["deployments"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["deployment"] == "c/m-fine"))
        .cloned()
        .expect("listed");
    assert_eq!(fine["state"], "healthy");
    assert_eq!(fine["successes"], 20);
    // and Prometheus sees the same
    let text = metrics(&env.http, &env.url).await;
    assert!(
        text.contains(
            "tollway_deployment_up{deployment=\"a/m-limited?fault=429&retry_after=30\"} 0"
        ),
        "{text}"
    );
    assert!(
        text.contains("tollway_deployment_up{deployment=\"c/m-fine\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("tollway_requests_total{api=\"openai\",status=\"2xx\"} 20"),
        "{text}"
    );
    assert!(text.contains("tollway_failovers_total 1"), "{text}");
    // and it needs the master key
    let r = env
        .http
        .get(format!("{}/admin/health", env.url))
        .send()
        .await
        .expect("health");
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn when_every_deployment_is_down_clients_get_one_clear_error() {
    let env = start_with(config).await;
    let (status, h, body) = chat(&env, msg("all-down")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(header(&h, "x-tollway-attempts"), "2");
    assert!(body["error"]["message"].is_string());
    // both are now cooling down: the next request is refused at once, naming the model
    reset(&env).await;
    let (status, h, body) = env
        .anthropic(json!({"model": "all-down", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 529, "{body}");
    assert_eq!(body["error"]["type"], "overloaded_error");
    let m = body["error"]["message"].as_str().unwrap_or("");
    assert!(m.contains("all-down") && m.contains("cooling down"), "{m}");
    assert!(!header(&h, "retry-after").is_empty());
    assert_eq!(env.mock_stats().await["requests"], 0);
}

#[tokio::test]
async fn streams_fail_over_before_their_first_byte() {
    let env = start_with(config).await;
    let r = env
        .post(
            "/v1/chat/completions",
            json!({"model": "one-down", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "x-tollway-attempts"), "2");
    let body = r.text().await.expect("body");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    assert!(sse(&body).len() > 3);
}

#[tokio::test]
async fn per_request_provider_control_is_never_bypassed() {
    let env = start_with(config).await;
    // only: c — never a or b, whatever the strategy picks
    for _ in 0..10 {
        let mut b = msg("spread");
        b["provider"] = json!({"only": ["c"]});
        let (status, h, body) = chat(&env, b).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(header(&h, "x-tollway-provider"), "c");
    }
    // ignore: a and c, even through the fallback group (which only has c)
    for _ in 0..10 {
        let mut b = msg("spread");
        b["provider"] = json!({"ignore": ["a", "c"]});
        let (status, h, body) = chat(&env, b).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(header(&h, "x-tollway-provider"), "b");
    }
    // order: b first
    let mut b = msg("spread");
    b["provider"] = json!({"order": ["b"]});
    let (_, h, _) = chat(&env, b).await;
    assert_eq!(header(&h, "x-tollway-provider"), "b");
    // nothing allowed: a clear error, and nothing sent upstream
    reset(&env).await;
    let mut b = msg("weighted");
    b["provider"] = json!({"only": ["b"]});
    let (status, _, body) = chat(&env, b).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("provider"));
    assert_eq!(env.mock_stats().await["requests"], 0);
    // a request-level fallback list, and the extension fields never reach the upstream
    let mut b = msg("all-down");
    b["models"] = json!(["backup"]);
    b["provider"] = json!({"ignore": ["b"]});
    let (status, h, body) = chat(&env, b).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&h, "x-tollway-model"), "c/backup-model");
    let up = env.last_upstream().await;
    assert!(
        up["body"].get("models").is_none() && up["body"].get("provider").is_none(),
        "{up}"
    );
    let ups = upstream_models(&env).await;
    assert!(
        !ups.iter().any(|m| m.starts_with("x2")),
        "an ignored provider was reached: {ups:?}"
    );
    // bad extension values are named
    let mut b = msg("spread");
    b["provider"] = json!({"only": "c"});
    let (status, _, body) = chat(&env, b).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("provider.only"));
    let mut b = msg("spread");
    b["models"] = json!(["nope"]);
    let (status, _, body) = chat(&env, b).await;
    assert_eq!(status, 404);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("nope"));
}

#[tokio::test]
async fn weighted_and_least_outstanding_spread_traffic() {
    let env = start_with(config).await;
    for _ in 0..200 {
        let (status, _, _) = chat(&env, msg("weighted")).await;
        assert_eq!(status, 200);
    }
    let ups = upstream_models(&env).await;
    let heavy = ups.iter().filter(|m| *m == "w-heavy").count();
    // 9:1 expected (180); a wide band keeps this deterministic in practice
    assert!((140..=200).contains(&heavy), "{heavy} of 200");
    reset(&env).await;
    // least outstanding: concurrent slow requests spread over all three deployments
    let mut tasks = Vec::new();
    for _ in 0..9 {
        let http = env.http.clone();
        let url = format!("{}/v1/chat/completions", env.url);
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(MASTER)
                .json(&json!({"model": "spread", "messages": [{"role": "user", "content": "hi [mock ttft_ms=300]"}]}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join").expect("send"), 200);
    }
    let ups = upstream_models(&env).await;
    for m in ["s1", "s2", "s3"] {
        assert!(ups.iter().any(|u| u == m), "{m} got nothing: {ups:?}");
    }
}

#[tokio::test]
async fn the_admin_api_shows_the_groups_deployments_prices_and_routers() {
    let env = start_with(config).await;
    let (status, v) = env.admin_get("/admin/models", Some(MASTER)).await;
    assert_eq!(status, 200, "{v}");
    let models = v["models"].as_array().expect("models");
    let names: Vec<&str> = models.iter().filter_map(|m| m["name"].as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "by name");
    assert!(
        names.contains(&"one-down") && names.contains(&"quota"),
        "{names:?}"
    );
    let group = |name: &str| {
        models
            .iter()
            .find(|m| m["name"] == name)
            .expect(name)
            .clone()
    };
    let cheapest = group("cheapest");
    assert_eq!(cheapest["strategy"], "lowest-cost");
    let deps = cheapest["deployments"].as_array().expect("deployments");
    assert_eq!(deps[0]["deployment"], "c/unpriced-model");
    assert!(
        deps[0]["input_per_million"].is_null(),
        "unpriced: {}",
        deps[0]
    );
    assert_eq!(deps[2]["deployment"], "a/gpt-4.1-mini");
    assert!(deps[2]["input_per_million"].is_string(), "{}", deps[2]);
    assert_eq!(group("quota")["deployments"][1]["tpm"], 300_000);
    assert_eq!(group("quota")["strategy"], "lowest-usage");
    assert_eq!(group("weighted")["deployments"][0]["weight"], 9);
    assert_eq!(group("spread")["fallbacks"], json!(["backup"]));
    let router = &v["routers"][0];
    assert_eq!(router["name"], "auto-rules");
    assert_eq!(router["kind"], "rules");
    assert_eq!(router["default"], "backup");
    assert_eq!(
        router["rules"][0],
        json!({"name": "batch", "to": "weighted"})
    );
    // accounts by name only: no credential of any kind
    for secret in ["ka", "kb", "kc"] {
        assert!(
            !v.to_string().contains(&format!("\"{secret}\"")),
            "{secret} in {v}"
        );
    }
    assert_eq!(env.admin_get("/admin/models", None).await.0, 401);
}

#[tokio::test]
async fn lowest_usage_spreads_tokens_evenly_or_by_each_deployments_quota() {
    let env = start_with(config).await;
    // the same request each time (the same tokens): turn about
    for _ in 0..10 {
        assert_eq!(chat(&env, msg("even")).await.0, 200);
    }
    let ups = upstream_models(&env).await;
    let count = |m: &str| ups.iter().filter(|u| *u == m).count();
    assert_eq!((count("even-1"), count("even-2")), (5, 5), "{ups:?}");
    // quotas of 100k and 300k tokens a minute: three to the larger for each to the smaller
    reset(&env).await;
    for _ in 0..8 {
        assert_eq!(chat(&env, msg("quota")).await.0, 200);
    }
    let ups = upstream_models(&env).await;
    let count = |m: &str| ups.iter().filter(|u| *u == m).count();
    assert_eq!(
        (count("small-quota"), count("big-quota")),
        (2, 6),
        "{ups:?}"
    );
    // streams count too: a streamed answer's usage moves the next request on, so each pair of
    // streams goes to both deployments (were streams not counted, three pairs would all split by
    // chance one time in eight)
    reset(&env).await;
    let mut stream = msg("even");
    stream["stream"] = json!(true);
    stream["stream_options"] = json!({"include_usage": true});
    for _ in 0..6 {
        let r = env
            .http
            .post(format!("{}/v1/chat/completions", env.url))
            .bearer_auth(MASTER)
            .json(&stream)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 200);
        let _ = r.text().await;
    }
    let ups = upstream_models(&env).await;
    assert_eq!(ups.len(), 6);
    for pair in ups.chunks(2) {
        assert_ne!(pair[0], pair[1], "each pair of streams split: {ups:?}");
    }
}

#[tokio::test]
async fn context_window_and_content_policy_failures_use_their_own_fallbacks() {
    let env = start_with(config).await;
    for model in ["small-context", "small-context-anthropic"] {
        let (status, h, body) = chat(&env, msg(model)).await;
        assert_eq!(status, 200, "{model}: {body}");
        assert_eq!(header(&h, "x-tollway-model"), "c/big");
        assert_eq!(header(&h, "x-tollway-attempts"), "2");
    }
    let r = env
        .post(
            "/v1/chat/completions",
            json!({"model": "strict", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "x-tollway-model"), "b/lenient");
    // without a configured fallback the client gets the 400 with the upstream's reason
    let (status, _, body) = chat(&env, msg("big-context")).await;
    assert_eq!(status, 200, "{body}");
    let mut b = msg("small-context");
    b["provider"] = json!({"allow_fallbacks": false});
    let (status, _, body) = chat(&env, b).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("maximum context length"));
    // these are the request's fault, not the deployment's: no cooldown
    let (status, _, _) = chat(&env, msg("small-context")).await;
    assert_eq!(status, 200);
    let v: Value = env
        .http
        .get(format!("{}/admin/health", env.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert!(
        v["deployments"]
            .as_array()
            .expect("list")
            .iter()
            .all(|d| d["state"] == "healthy"),
        "{v}"
    );
}

#[tokio::test]
async fn rule_based_routers_choose_by_metadata_and_say_why() {
    let env = start_with(config).await;
    let (status, h, body) = chat(&env, msg("auto-rules")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&h, "x-tollway-model"), "c/backup-model");
    assert!(
        header(&h, "x-tollway-route").starts_with("router=auto-rules; rule=default; target=backup")
    );
    let r = env
        .http
        .post(format!("{}/v1/chat/completions", env.url))
        .bearer_auth(MASTER)
        .header("x-tollway-tier", "batch")
        .json(&msg("auto-rules"))
        .send()
        .await
        .expect("send");
    assert_eq!(
        header(r.headers(), "x-tollway-route").split("; ").nth(1),
        Some("rule=batch")
    );
    assert!(header(r.headers(), "x-tollway-model").contains("/w-"));
    let long = json!({"model": "auto-rules", "messages": [{"role": "user", "content": "word ".repeat(600)}]});
    let (_, h, _) = chat(&env, long).await;
    assert_eq!(header(&h, "x-tollway-model"), "c/big");
    assert!(header(&h, "x-tollway-route").contains("rule=long"));
    let (_, h, _) = env
        .anthropic(json!({"model": "auto-rules", "max_tokens": 20,
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert!(header(&h, "x-tollway-route").contains("rule=agents; target=lenient"));
    // routers are listed with the models
    let v: Value = env
        .http
        .get(format!("{}/v1/models", env.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    assert!(v["data"]
        .as_array()
        .expect("list")
        .iter()
        .any(|m| m["id"] == "auto-rules"));
}

#[tokio::test]
async fn lowest_cost_prefers_the_cheapest_priced_deployment() {
    let env = start_with(config).await;
    for _ in 0..3 {
        let (status, h, _) = chat(&env, msg("cheapest")).await;
        assert_eq!(status, 200);
        assert_eq!(header(&h, "x-tollway-model"), "a/gpt-4.1-mini");
    }
    // when it is down, the next cheapest
    let mut b = msg("cheapest");
    b["provider"] = json!({"ignore": ["a"]});
    let (_, h, _) = chat(&env, b).await;
    assert_eq!(header(&h, "x-tollway-model"), "b/claude-sonnet-4-5");
}

#[tokio::test]
async fn capacity_moves_traffic_on_and_regions_bind_keys() {
    let env = start_with(config).await;
    let mut models = Vec::new();
    for _ in 0..4 {
        let (status, h, _) = chat(&env, msg("capacity")).await;
        assert_eq!(status, 200);
        models.push(header(&h, "x-tollway-model").to_string());
    }
    assert_eq!(
        models,
        ["a/cap-small", "a/cap-small", "c/cap-big", "c/cap-big"]
    );
    assert_eq!(chat(&env, msg("capacity-only")).await.0, 200);
    let (status, h, body) = chat(&env, msg("capacity-only")).await;
    assert_eq!(status, 429, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("capacity"));
    assert!(!header(&h, "retry-after").is_empty());

    // a key bound to EU regions never reaches the US deployment, even when it is first
    let r = env
        .http
        .post(format!("{}/admin/keys", env.url))
        .bearer_auth(MASTER)
        .json(&json!({"name": "eu-only", "regions": ["eu-west-1"]}))
        .send()
        .await
        .expect("create");
    let key: Value = r.json().await.expect("json");
    let secret = key["key"].as_str().expect("secret");
    for _ in 0..3 {
        let r = env
            .http
            .post(format!("{}/v1/chat/completions", env.url))
            .bearer_auth(secret)
            .json(&msg("regional"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        assert_eq!(header(r.headers(), "x-tollway-model"), "b/r-eu");
    }
    // no deployment in its regions: refused before any upstream call
    let r = env
        .http
        .post(format!("{}/v1/chat/completions", env.url))
        .bearer_auth(secret)
        .json(&msg("capacity"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn active_probes_find_a_dead_deployment_before_users_do() {
    let env = start_with(config).await;
    tokio::spawn(tollway::server::active_probes(env.state.clone()));
    let mut state = Value::Null;
    for _ in 0..100 {
        let v: Value = env
            .http
            .get(format!("{}/admin/health", env.url))
            .bearer_auth(MASTER)
            .send()
            .await
            .expect("health")
            .json()
            .await
            .expect("json");
        state = v["deployments"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|d| d["deployment"] == "a/probed-down?fault=500")
            })
            .cloned()
            .unwrap_or(Value::Null);
        if state["state"] == "cooling_down" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state["state"], "cooling_down", "{state}");
    // the first user request goes straight to the healthy deployment
    let (status, h, _) = chat(&env, msg("probed")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-tollway-attempts"), "1");
    assert_eq!(header(&h, "x-tollway-model"), "b/probed-up");
}

fn learned_config(mock: &str) -> String {
    format!(
        "{}routers:\n  auto-always: {{ kind: learned, candidates: [strong-tier, weak-tier], threshold: 0.0 }}\n  auto-never: {{ kind: learned, candidates: [strong-tier, weak-tier], threshold: 1.0 }}\n  auto: {{ kind: learned, candidates: [strong-tier, weak-tier], strong_share: 0.3, log_prompts: true }}\n  auto3: {{ kind: learned, candidates: [strong-tier, weak-tier, gpt], shares: [0.0, 1.0] }}\n  auto-floor-0: {{ kind: learned, candidates: [strong-tier, weak-tier], quality_floor: 0.0 }}\n  auto-floor-1: {{ kind: learned, candidates: [strong-tier, weak-tier], quality_floor: 1.0 }}\n  auto-thrifty: {{ kind: learned, candidates: [strong-tier, weak-tier], cost_weight: 100 }}\n",
        crate::harness::config_text(mock)
            + "  strong-tier: { deployments: [{ provider: ant, model: claude-sonnet-4-5 }] }\n  weak-tier: { deployments: [{ provider: oai, model: gpt-4.1-mini }] }\n"
    )
}

#[tokio::test]
async fn learned_routers_choose_per_request_and_say_why() {
    let env = start_with(learned_config).await;
    let (status, h, _) = chat(&env, msg("auto-always")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-tollway-model"), "ant/claude-sonnet-4-5");
    let route = header(&h, "x-tollway-route").to_string();
    assert!(
        route.starts_with("router=auto-always; kind=learned; model=lexical; score=0."),
        "{route}"
    );
    assert!(
        route.contains("threshold=0.0000; target=strong-tier"),
        "{route}"
    );
    let (_, h, _) = chat(&env, msg("auto-never")).await;
    assert_eq!(header(&h, "x-tollway-model"), "oai/gpt-4.1-mini");
    // three tiers: no share for the strongest, the rest for the middle one
    let (_, h, _) = chat(&env, msg("auto3")).await;
    assert!(
        header(&h, "x-tollway-route").ends_with("target=weak-tier"),
        "{}",
        header(&h, "x-tollway-route")
    );
    // a share-based threshold: scores differ by prompt, and the header says which won
    let hard = json!({"model": "auto", "messages": [{"role": "user", "content":
        "Let f(x) = x^3 - 6x^2 + 11x - 6. Find all real roots, prove there are no others, and compute the integral of f from 0 to 3."}]});
    let easy = json!({"model": "auto", "messages": [{"role": "user", "content": "Say hello."}]});
    let (_, h1, _) = chat(&env, hard).await;
    let (_, h2, _) = chat(&env, easy).await;
    let score = |h: &reqwest::header::HeaderMap| -> f64 {
        header(h, "x-tollway-route")
            .split("; ")
            .find_map(|p| p.strip_prefix("score="))
            .and_then(|s| s.parse().ok())
            .expect("score")
    };
    let (s1, s2) = (score(&h1), score(&h2));
    assert!((0.0..=1.0).contains(&s1) && (0.0..=1.0).contains(&s2));
    for h in [&h1, &h2] {
        let r = header(h, "x-tollway-route");
        let target = if r.ends_with("target=strong-tier") {
            "ant/claude-sonnet-4-5"
        } else {
            "oai/gpt-4.1-mini"
        };
        assert_eq!(header(h, "x-tollway-model"), target, "{r}");
    }
    // the decisions were logged with their prompts; feedback joins them for retraining
    let id = header(&h2, "x-tollway-request-id").to_string();
    let r = env
        .http
        .post(format!("{}/v1/feedback", env.url))
        .bearer_auth(MASTER)
        .json(&json!({"request_id": id, "rating": "bad"}))
        .send()
        .await
        .expect("feedback");
    assert_eq!(r.status(), 200);
    let store = env.state.accounts().store();
    let mut rows = Vec::new();
    for _ in 0..50 {
        rows = store.routing_feedback().await.expect("db");
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "Say hello.");
}

fn route_field<'a>(route: &'a str, name: &str) -> &'a str {
    route
        .split("; ")
        .find_map(|p| p.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
        .unwrap_or("")
}

#[tokio::test]
async fn learned_routers_pick_by_predicted_quality_or_cost() {
    let env = start_with(learned_config).await;
    // every candidate clears a floor of 0: the cheapest serves
    let (status, h, _) = chat(&env, msg("auto-floor-0")).await;
    assert_eq!(status, 200);
    let route = header(&h, "x-tollway-route").to_string();
    assert_eq!(header(&h, "x-tollway-model"), "oai/gpt-4.1-mini", "{route}");
    assert_eq!(route_field(&route, "floor"), "0");
    // the header shows each candidate's predicted quality, a probability
    let q = route_field(&route, "quality");
    let parts: Vec<(&str, f64)> = q
        .split(',')
        .filter_map(|p| p.split_once(':'))
        .map(|(c, v)| (c, v.parse::<f64>().expect("quality number")))
        .collect();
    assert_eq!(parts.len(), 2, "{route}");
    assert_eq!((parts[0].0, parts[1].0), ("strong-tier", "weak-tier"));
    assert!(
        parts.iter().all(|(_, v)| (0.0..=1.0).contains(v)),
        "{route}"
    );
    // nobody is certain to answer well: no candidate clears 1, so the strongest serves
    let (_, h, _) = chat(&env, msg("auto-floor-1")).await;
    assert_eq!(header(&h, "x-tollway-model"), "ant/claude-sonnet-4-5");
    // cost dominates quality: the cheaper candidate, whatever the prompt
    let hard = json!({"model": "auto-thrifty", "messages": [{"role": "user", "content":
        "Prove that there are infinitely many primes p such that p + 2 is also prime, or explain why this is open."}]});
    let (_, h, _) = chat(&env, hard).await;
    let route = header(&h, "x-tollway-route").to_string();
    assert_eq!(header(&h, "x-tollway-model"), "oai/gpt-4.1-mini", "{route}");
    assert_eq!(route_field(&route, "cost_weight"), "100");
}

#[tokio::test]
async fn a_virtual_key_can_override_a_learned_routers_knob() {
    let env = start_with(learned_config).await;
    let create = |body: Value| {
        let env = &env;
        async move {
            let r = env
                .http
                .post(format!("{}/admin/keys", env.url))
                .bearer_auth(MASTER)
                .json(&body)
                .send()
                .await
                .expect("create");
            crate::harness::split(r).await
        }
    };
    // auto-never sends everything to the weak tier; this key's override sends everything strong
    let (status, _, v) =
        create(json!({"name": "vip", "routing": {"auto-never": {"threshold": 0.0}}})).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["routing"]["auto-never"]["threshold"], 0.0);
    let secret = v["key"].as_str().expect("secret").to_string();
    let ask = |key: String| {
        let env = &env;
        async move {
            let r = env
                .http
                .post(format!("{}/v1/chat/completions", env.url))
                .bearer_auth(key)
                .json(&msg("auto-never"))
                .send()
                .await
                .expect("send");
            crate::harness::split(r).await
        }
    };
    let (status, h, body) = ask(secret).await;
    assert_eq!(status, 200, "{body}");
    let route = header(&h, "x-tollway-route").to_string();
    assert_eq!(
        header(&h, "x-tollway-model"),
        "ant/claude-sonnet-4-5",
        "{route}"
    );
    assert!(route.ends_with("target=strong-tier; knob=key"), "{route}");
    // other callers keep the router's own knob
    let (_, h, _) = chat(&env, msg("auto-never")).await;
    assert_eq!(header(&h, "x-tollway-model"), "oai/gpt-4.1-mini");
    // overrides are checked against the live routers when the key is made
    for (routing, needle) in [
        (
            json!({"auto": {"quality_floor": 2}}),
            "routing.auto: quality_floor must be between 0 and 1",
        ),
        (
            json!({"nope": {"threshold": 0.5}}),
            "routing.nope: there is no router `nope`",
        ),
        (
            json!({"auto": {"strong_share": 0.1, "threshold": 0.5}}),
            "give only one of",
        ),
        (json!({"auto": {"share": 0.1}}), "unknown field `share`"),
        (
            json!({"auto3": {"strong_share": 0.1}}),
            "for two candidates",
        ),
    ] {
        let (status, _, v) = create(json!({"name": "bad", "routing": routing})).await;
        assert_eq!(status, 400, "{v}");
        let m = v["error"]["message"].as_str().unwrap_or("");
        assert!(m.contains(needle), "{m}");
    }
}

#[test]
fn learned_router_knobs_are_checked() {
    let text = format!(
        "{}  strong-tier: {{ deployments: [{{ provider: ant, model: s }}] }}\n  weak-tier: {{ deployments: [{{ provider: oai, model: w }}] }}\nrouters:\n  two: {{ kind: learned, candidates: [strong-tier, weak-tier], strong_share: 0.5, quality_floor: 0.8 }}\n  three: {{ kind: learned, candidates: [strong-tier, weak-tier, gpt], quality_floor: 0.8 }}\n  mapped: {{ kind: learned, candidates: [strong-tier, weak-tier, gpt], predicts: [gpt-4-1106-preview, x, mixtral-8x7b-instruct-v0.1], quality_floor: 0.8 }}\n  ok: {{ kind: learned, candidates: [strong-tier, weak-tier, gpt], predicts: [gpt-4-1106-preview, mixtral-8x7b-instruct-v0.1, mixtral-8x7b-instruct-v0.1], cost_weight: 0.5 }}\n",
        crate::harness::config_text("http://127.0.0.1:9")
    );
    let errs = tollway::config::parse(&text, &tollway::config::ProcessEnv).expect_err("invalid");
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let has = |path: &str, needle: &str| {
        assert!(
            all.iter().any(|e| e.contains(path) && e.contains(needle)),
            "{path} / {needle}: {all:?}"
        )
    };
    has("routers.two", "give only one of");
    has("routers.three", "map each candidate to one with `predicts`");
    has("routers.mapped.predicts[1]", "predicts no `x`");
    assert!(!all.iter().any(|e| e.contains("routers.ok")), "{all:?}");
}

#[test]
fn learned_router_shares_are_checked() {
    let text = format!(
        "{}  strong-tier: {{ deployments: [{{ provider: ant, model: s }}] }}\n  weak-tier: {{ deployments: [{{ provider: oai, model: w }}] }}\nrouters:\n  a: {{ kind: learned, candidates: [strong-tier, weak-tier, gpt], shares: [0.5] }}\n  b: {{ kind: learned, candidates: [strong-tier], strong_share: 0.5 }}\n",
        crate::harness::config_text("http://127.0.0.1:9")
    );
    let errs = tollway::config::parse(&text, &tollway::config::ProcessEnv).expect_err("invalid");
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        all.iter()
            .any(|e| e.contains("routers.a.shares") && e.contains("2 shares")),
        "{all:?}"
    );
    assert!(
        all.iter().any(|e| e.contains("routers.b.candidates")),
        "{all:?}"
    );
}

#[test]
fn a_corrupt_or_missing_router_file_is_a_clear_config_error() {
    let dir = std::env::temp_dir().join(format!("tollway-router-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\"format_version\": 99}").expect("write");
    for (file, needle) in [
        (bad.display().to_string(), "not a usable router model"),
        ("/nonexistent/r.json".to_string(), "cannot read"),
    ] {
        let text = format!(
            "{}  strong-tier: {{ deployments: [{{ provider: ant, model: s }}] }}\n  weak-tier: {{ deployments: [{{ provider: oai, model: w }}] }}\nrouters:\n  auto: {{ kind: learned, candidates: [strong-tier, weak-tier], model_file: \"{file}\" }}\n",
            crate::harness::config_text("http://127.0.0.1:9")
        );
        let errs =
            tollway::config::parse(&text, &tollway::config::ProcessEnv).expect_err("invalid");
        let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            all.iter()
                .any(|e| e.contains("routers.auto.model_file") && e.contains(needle)),
            "{all:?}"
        );
    }
}

fn embedding_router_file() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tollway-engine/data/router-embed.json")
        .display()
        .to_string()
}

#[tokio::test]
async fn the_embedding_router_routes_by_the_prompts_meaning_and_says_so() {
    let file = embedding_router_file();
    let env = start_with(|mock| {
        format!(
            "{}routers:\n  auto: {{ kind: learned, model: embedding, model_file: \"{file}\", candidates: [strong-tier, weak-tier], strong_share: 0.5 }}\n  careful: {{ kind: learned, model: embedding, model_file: \"{file}\", candidates: [strong-tier, weak-tier], quality_floor: 1.0 }}\n",
            crate::harness::config_text(mock)
                + "  strong-tier: { deployments: [{ provider: ant, model: claude-sonnet-4-5 }] }\n  weak-tier: { deployments: [{ provider: oai, model: gpt-4.1-mini }] }\n"
        )
    })
    .await;
    let hard = json!({"model": "auto", "messages": [{"role": "user", "content":
        "Let f(x) = x^3 - 6x^2 + 11x - 6. Find all real roots, prove there are no others, and compute the integral of f from 0 to 3."}]});
    let (status, h, _) = chat(&env, hard).await;
    assert_eq!(status, 200);
    let route = header(&h, "x-tollway-route").to_string();
    assert!(
        route.starts_with("router=auto; kind=learned; model=embedding; score=0."),
        "{route}"
    );
    let target = route_field(&route, "target");
    let expected = if target == "strong-tier" {
        "ant/claude-sonnet-4-5"
    } else {
        "oai/gpt-4.1-mini"
    };
    assert_eq!(header(&h, "x-tollway-model"), expected, "{route}");
    // per-candidate quality from the embedding model: nobody is certain, so the strongest serves
    let (_, h, _) = chat(&env, msg("careful")).await;
    let route = header(&h, "x-tollway-route").to_string();
    assert!(route.contains("quality=strong-tier:0."), "{route}");
    assert_eq!(header(&h, "x-tollway-model"), "ant/claude-sonnet-4-5");
}

#[tokio::test]
async fn the_static_embedding_router_reads_whole_prompts_and_says_so() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tollway-engine/data/router-static.json")
        .display()
        .to_string();
    let env = start_with(|mock| {
        format!(
            "{}routers:\n  fast: {{ kind: learned, model: embedding-static, model_file: \"{file}\", candidates: [strong-tier, weak-tier], strong_share: 0.5 }}\n",
            crate::harness::config_text(mock)
                + "  strong-tier: { deployments: [{ provider: ant, model: claude-sonnet-4-5 }] }\n  weak-tier: { deployments: [{ provider: oai, model: gpt-4.1-mini }] }\n"
        )
    })
    .await;
    let mut scores = Vec::new();
    for text in [
        "Let f(x) = x^3 - 6x^2 + 11x - 6. Find all real roots, prove there are no others, and compute the integral of f from 0 to 3.".to_string(),
        "What is the capital of France?".to_string(),
        // far past the full encoder's 512 positions
        "Summarise the following notes on the quarterly sales meeting. ".repeat(300),
    ] {
        let (status, h, _) = chat(
            &env,
            json!({"model": "fast", "messages": [{"role": "user", "content": text}]}),
        )
        .await;
        assert_eq!(status, 200);
        let route = header(&h, "x-tollway-route").to_string();
        assert!(
            route.starts_with("router=fast; kind=learned; model=embedding-static; score=0."),
            "{route}"
        );
        let score: f64 = route_field(&route, "score").parse().expect("score");
        let threshold: f64 = route_field(&route, "threshold").parse().expect("threshold");
        let expected = if score >= threshold {
            "ant/claude-sonnet-4-5"
        } else {
            "oai/gpt-4.1-mini"
        };
        assert_eq!(header(&h, "x-tollway-model"), expected, "{route}");
        scores.push(score);
    }
    // the proof needs the strong model more than the capital of France does
    assert!(scores[0] > scores[1], "{scores:?}");
}

#[test]
fn an_embedding_router_without_its_encoder_is_a_clear_config_error() {
    let file = embedding_router_file();
    let text = format!(
        "{}  strong-tier: {{ deployments: [{{ provider: ant, model: s }}] }}\n  weak-tier: {{ deployments: [{{ provider: oai, model: w }}] }}\nrouters:\n  auto: {{ kind: learned, model: embedding, model_file: \"{file}\", encoder_dir: /nonexistent, candidates: [strong-tier, weak-tier] }}\n  odd: {{ kind: learned, model: transformer, candidates: [strong-tier, weak-tier] }}\n",
        crate::harness::config_text("http://127.0.0.1:9")
    );
    let errs = tollway::config::parse(&text, &tollway::config::ProcessEnv).expect_err("invalid");
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        all.iter().any(
            |e| e.contains("routers.auto.model_file") && e.contains("scripts/fetch-encoder.sh")
        ),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|e| e.contains("routers.odd")
                && e.contains("lexical, embedding or embedding-static")),
        "{all:?}"
    );
}

/// The value of one series in a Prometheus text (0 when absent).
fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// `/metrics` splits each chat request's time into the gateway's own (`tollway_overhead_seconds`)
/// and the upstreams' (`tollway_upstream_seconds`): failed attempts and stream heads count as
/// upstream time, a request refused before any attempt has none.
#[tokio::test]
async fn metrics_tell_the_gateways_time_from_the_upstreams() {
    let env = start_with(config).await;
    // `server-timing: gateway;dur=MS, upstream;dur=MS`: its parts, in ms
    let timing = |h: &reqwest::header::HeaderMap| -> Vec<(String, f64)> {
        header(h, "server-timing")
            .split(", ")
            .filter_map(|p| {
                let (name, dur) = p.split_once(";dur=")?;
                Some((name.to_string(), dur.parse().ok()?))
            })
            .collect()
    };
    let started = std::time::Instant::now();
    let (status, h, body) = chat(&env, msg("slow-after-a-failure")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&h, "x-tollway-attempts"), "2");
    let answered = timing(&h);
    assert_eq!(
        answered.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
        ["gateway", "upstream"]
    );
    assert!(answered[1].1 >= 60.0, "{answered:?}");
    let r = env
        .http
        .post(format!("{}/v1/messages", env.url))
        .header("x-api-key", MASTER)
        .header("anthropic-version", "2023-06-01")
        .json(
            &json!({"model": "lenient", "max_tokens": 50, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .expect("stream");
    assert_eq!(r.status(), 200);
    assert_eq!(timing(r.headers()).len(), 2, "{:?}", r.headers());
    let events = sse(&r.text().await.expect("events"));
    assert!(events.len() > 3, "{events:?}");
    let (status, h, body) = chat(&env, msg("no-such-model")).await;
    assert_eq!(status, 404, "{body}");
    // refused before any upstream: the gateway's time only
    let refused = timing(&h);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, "gateway");
    let wall = started.elapsed().as_secs_f64();

    let text = metrics(&env.http, &env.url).await;
    let get = |name: &str, labels: &str| series(&text, &format!("{name}{{{labels}}}"));
    let (plain, streamed) = (
        r#"api="openai",stream="false""#,
        r#"api="anthropic",stream="true""#,
    );
    // every chat request has its own time; only those that reached an upstream have its time
    assert_eq!(get("tollway_overhead_seconds_count", plain), 2.0, "{text}");
    assert_eq!(get("tollway_upstream_seconds_count", plain), 1.0, "{text}");
    assert_eq!(
        get("tollway_overhead_seconds_count", streamed),
        1.0,
        "{text}"
    );
    assert_eq!(
        get("tollway_upstream_seconds_count", streamed),
        1.0,
        "{text}"
    );
    assert_eq!(
        get(
            "tollway_overhead_seconds_count",
            r#"api="anthropic",stream="false""#
        ),
        0.0
    );
    // the answer took the upstream at least its 60 ms, the failed attempt included
    let upstream = get("tollway_upstream_seconds_sum", plain);
    assert!(upstream >= 0.06, "{upstream}");
    // buckets are cumulative and end with every request; none is below the upstream's delay
    assert_eq!(
        get(
            "tollway_overhead_seconds_bucket",
            &format!("{plain},le=\"+Inf\"")
        ),
        2.0
    );
    assert_eq!(
        get(
            "tollway_upstream_seconds_bucket",
            &format!("{plain},le=\"0.05\"")
        ),
        0.0,
        "{text}"
    );
    // the headers told the clients what the histogram counts (to the microsecond they show)
    let own = get("tollway_overhead_seconds_sum", plain);
    let shown = (answered[0].1 + refused[0].1) / 1000.0;
    assert!((own - shown).abs() < 3e-6, "{own} against {shown}");
    // each measured part lies inside what the client saw
    let measured = [plain, streamed]
        .iter()
        .map(|l| get("tollway_overhead_seconds_sum", l) + get("tollway_upstream_seconds_sum", l))
        .sum::<f64>();
    assert!(measured > 0.0 && measured <= wall, "{measured} of {wall}");
}
