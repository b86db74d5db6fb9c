//! Starts a mock upstream and a gateway in-process on ephemeral ports; helpers to call them.

use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tollway::config::{self, ProcessEnv};
use tollway::{AppState, Runtime};
use tollway_mock::MockServer;

pub const MASTER: &str = "sk-test-master-0001";
pub const OAI_KEY: &str = "sk-upstream-openai-secret";
pub const ANT_KEY: &str = "sk-upstream-anthropic-secret";

pub struct Env {
    pub mock: MockServer,
    pub url: String,
    pub http: reqwest::Client,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    pub done: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub fn config_text(mock: &str) -> String {
    format!(
        r#"
server:
  master_key: {MASTER}
  max_body_bytes: 65536
  shutdown_timeout_secs: 5
providers:
  oai: {{ kind: openai-compatible, base_url: "{mock}/v1", api_key: {OAI_KEY} }}
  ant: {{ kind: anthropic, base_url: "{mock}", api_key: {ANT_KEY} }}
  oai-quick: {{ kind: openai-compatible, base_url: "{mock}/v1", api_key: x, timeouts: {{ first_byte_ms: 300, idle_ms: 300 }} }}
  dead: {{ kind: openai-compatible, base_url: "http://127.0.0.1:9/v1", api_key: x, timeouts: {{ connect_ms: 500 }} }}
models:
  gpt: {{ deployments: [{{ provider: oai, model: gpt-4.1 }}] }}
  gpt2: {{ deployments: [{{ provider: oai, model: gpt-4.1-two }}] }}
  gpt3: {{ deployments: [{{ provider: oai, model: gpt-4.1-three }}] }}
  claude: {{ deployments: [{{ provider: ant, model: claude-sonnet-4-5 }}] }}
  claude-noimg: {{ deployments: [{{ provider: ant, model: claude-haiku, capabilities: {{ vision: false }} }}] }}
  flaky:
    deployments:
      - {{ provider: oai, model: "gpt-down?fault=500" }}
      - {{ provider: ant, model: claude-backup }}
  unreachable:
    deployments: [{{ provider: dead, model: gpt-4.1 }}]
    fallbacks: [gpt]
  hangs: {{ deployments: [{{ provider: oai-quick, model: "gpt-hang?fault=hang" }}] }}
  stalls: {{ deployments: [{{ provider: oai-quick, model: "gpt-stall?ttft_ms=0&tpt_ms=2000&tokens=5" }}] }}
"#
    )
}

pub async fn start() -> Env {
    start_with(config_text).await
}

/// Starts a mock and a gateway whose config `config(mock_url)` returns.
pub async fn start_with(config: impl Fn(&str) -> String) -> Env {
    start_on(MockServer::start().await.expect("mock"), None, config).await
}

/// As [`start_with`], on a mock already started (over TLS, say); the test's client trusts the
/// authority `ca_pem` too, to reach such a mock's stats and log.
pub async fn start_on(
    mock: MockServer,
    ca_pem: Option<&str>,
    config: impl Fn(&str) -> String,
) -> Env {
    let text = config(&mock.url());
    let cfg = match config::parse(&text, &ProcessEnv) {
        Ok(c) => c,
        Err(errs) => panic!("test config invalid: {errs:?}"),
    };
    let rt = Runtime::build(cfg).await.expect("runtime");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    let accounts = tollway::accounts::Accounts::open("sqlite::memory:", Duration::from_millis(50))
        .await
        .expect("accounts");
    let state = AppState::new(rt, accounts);
    state
        .sync_keys(&state.runtime())
        .await
        .expect("the config's keys");
    let done = tokio::spawn(tollway::serve(listener, state.clone(), async move {
        let _ = rx.await;
    }));
    let mut http = reqwest::Client::builder().timeout(Duration::from_secs(20));
    if let Some(pem) = ca_pem {
        http = http.add_root_certificate(
            reqwest::Certificate::from_pem(pem.as_bytes()).expect("CA certificate"),
        );
    }
    let http = http.build().expect("client");
    Env {
        mock,
        url: format!("http://{addr}"),
        http,
        state,
        stop: Some(tx),
        done: Some(done),
    }
}

impl Env {
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(MASTER)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .header("x-api-key", MASTER)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn openai(&self, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self.post("/v1/chat/completions", body).await;
        split(r).await
    }

    pub async fn anthropic(&self, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
        self.anthropic_at("/v1/messages", body).await
    }

    /// POSTs `body` to `path` as an Anthropic client does (`x-api-key`, `anthropic-version`).
    pub async fn anthropic_at(
        &self,
        path: &str,
        body: Value,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("x-api-key", MASTER)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .expect("request");
        split(r).await
    }

    /// The last request the mock received, parsed.
    /// An admin GET (`key`: the bearer key, `None` for none): its status and JSON body.
    pub async fn admin_get(&self, path_and_query: &str, key: Option<&str>) -> (u16, Value) {
        let mut r = self.http.get(format!("{}{path_and_query}", self.url));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        let (status, _, v) = split(r.send().await.expect("get")).await;
        (status, v)
    }

    pub async fn last_upstream(&self) -> Value {
        self.upstream_log().await.pop().unwrap_or(Value::Null)
    }

    /// The requests the mock received (its last 1,000), oldest first.
    pub async fn upstream_log(&self) -> Vec<Value> {
        let all: Value = self
            .http
            .get(format!("{}/_mock/requests", self.mock.url()))
            .send()
            .await
            .expect("mock")
            .json()
            .await
            .expect("json");
        match all {
            Value::Array(log) => log,
            other => panic!("the mock's log is not an array: {other}"),
        }
    }

    pub async fn mock_stats(&self) -> Value {
        mock_stats(&self.http, &self.mock.url()).await
    }

    pub async fn healthy(&self) -> bool {
        match self.http.get(format!("{}/healthz", self.url)).send().await {
            Ok(r) => r.status() == 200,
            Err(_) => false,
        }
    }
}

pub async fn split(r: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, v)
}

/// The `/_mock/stats` of the mock at `url`.
pub async fn mock_stats(http: &reqwest::Client, url: &str) -> Value {
    http.get(format!("{url}/_mock/stats"))
        .send()
        .await
        .expect("mock")
        .json()
        .await
        .expect("json")
}

/// Parses an SSE body into (event name, data) pairs.
pub fn sse(body: &str) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    for block in body.split("\n\n") {
        let mut event = None;
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(e) = line.strip_prefix("event:") {
                event = Some(e.trim().to_string());
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push(d.trim_start().to_string());
            }
        }
        if event.is_some() || !data.is_empty() {
            out.push((event, data.join("\n")));
        }
    }
    out
}

/// The Prometheus text of the gateway at `url` (master key).
pub async fn metrics(http: &reqwest::Client, url: &str) -> String {
    http.get(format!("{url}/metrics"))
        .bearer_auth(MASTER)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// Asks Anthropic's token count for `body` and checks that the gateway counted it itself: a
/// count, and no upstream request.
pub async fn counted_locally(env: &Env, body: Value) {
    let before = env.upstream_log().await.len();
    let (status, _, v) = env.anthropic_at("/v1/messages/count_tokens", body).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["input_tokens"].as_u64().unwrap_or(0) > 0, "{v}");
    assert_eq!(env.upstream_log().await.len(), before);
}

/// The ledger row of request `id`, once the writer has written it (within 2 s).
pub async fn ledger_row(env: &Env, id: &str) -> tollway_store::LedgerRow {
    let store = env.state.accounts().store();
    for _ in 0..100 {
        if let Some(row) = store.ledger_row(id).await.expect("db") {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no ledger row for {id}");
}

/// The errors of a config that must be invalid, one per line.
pub fn config_errors(text: &str) -> String {
    let errs = config::parse(text, &ProcessEnv).expect_err("an invalid config");
    errs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// A gateway without its own mock, on `storage` and (optionally) shared state: for tests that run
/// several instances against one upstream.
pub struct Gateway {
    pub url: String,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub async fn gateway(text: &str, storage: &str, shared: Option<(String, String)>) -> Gateway {
    let cfg = match config::parse(text, &ProcessEnv) {
        Ok(c) => c,
        Err(errs) => panic!("test config invalid: {errs:?}"),
    };
    let rt = Runtime::build(cfg).await.expect("runtime");
    let accounts =
        tollway::accounts::Accounts::open_shared(storage, Duration::from_millis(50), shared)
            .await
            .expect("accounts");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    let state = AppState::new(rt, accounts);
    state
        .sync_keys(&state.runtime())
        .await
        .expect("the config's keys");
    tokio::spawn(tollway::serve(listener, state.clone(), async move {
        let _ = rx.await;
    }));
    Gateway {
        url: format!("http://{addr}"),
        state,
        stop: Some(tx),
    }
}

/// The text of an OpenAI stream's body (its `delta.content` pieces joined) and every chunk as
/// JSON (a chunk that is not JSON as a string), `[DONE]` left out.
pub fn openai_stream_text(body: &str) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut chunks = Vec::new();
    for (_, data) in sse(body) {
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(&data).unwrap_or(Value::String(data));
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
        chunks.push(v);
    }
    (text, chunks)
}
