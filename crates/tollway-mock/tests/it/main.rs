//! Integration tests: tollway-mock on an ephemeral loopback port, driven over HTTP with reqwest.

mod anthropic;
mod azure;
mod bedrock;
mod binary;
mod control;
mod faults;
mod gemini;
mod golden;
mod openai;
mod tls;
mod vertex;

use serde_json::{json, Value};
use tollway_mock::MockServer;

pub struct Mock {
    pub server: MockServer,
    pub http: reqwest::Client,
}

pub async fn mock() -> Mock {
    Mock {
        server: MockServer::start().await.expect("start mock"),
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .expect("client"),
    }
}

impl Mock {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    /// POST JSON; Anthropic requests get `anthropic-version` and an API key.
    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        let mut rb = self.http.post(self.url(path)).json(&body);
        if path.starts_with("/v1/messages") {
            rb = rb
                .header("anthropic-version", "2023-06-01")
                .header("x-api-key", "sk-ant-test");
        } else {
            rb = rb.bearer_auth("sk-test");
        }
        rb.send().await.expect("send")
    }

    /// POST and parse the JSON answer, with its status.
    pub async fn json(&self, path: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self.post(path, body).await;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, headers, v)
    }

    /// POST and read the whole SSE body.
    pub async fn stream(&self, path: &str, body: Value) -> String {
        let r = self.post(path, body).await;
        assert_eq!(r.status(), 200);
        let ct = r.headers()["content-type"]
            .to_str()
            .expect("ct")
            .to_string();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        r.text().await.expect("body")
    }

    pub async fn stats(&self) -> Value {
        self.get_json("/_mock/stats").await
    }

    /// The request log, `GET /_mock/requests`.
    pub async fn requests(&self) -> Value {
        self.get_json("/_mock/requests").await
    }

    pub async fn get_json(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }
}

/// SSE events as (event name, data).
pub fn sse(body: &str) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    for block in body.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut event = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(e) = line.strip_prefix("event: ") {
                event = Some(e.to_string());
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push_str(d);
            }
        }
        out.push((event, data));
    }
    out
}

/// The JSON data of every SSE event except `[DONE]`.
pub fn sse_json(body: &str) -> Vec<(Option<String>, Value)> {
    sse(body)
        .into_iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(e, d)| {
            let v = serde_json::from_str(&d).unwrap_or_else(|err| panic!("{err}: {d}"));
            (e, v)
        })
        .collect()
}

/// Concatenated OpenAI stream content.
pub fn oai_stream_text(body: &str) -> String {
    sse_json(body)
        .iter()
        .filter_map(|(_, v)| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// Concatenated Anthropic stream text.
pub fn ant_stream_text(body: &str) -> String {
    sse_json(body)
        .iter()
        .filter_map(|(_, v)| v["delta"]["text"].as_str().map(str::to_string))
        .collect()
}

pub fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

pub fn weather_tool_openai() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"]}}})
}

pub fn time_tool_openai() -> Value {
    json!({"type": "function", "function": {"name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}, "utc": {"type": "boolean"}}}}})
}

pub fn weather_tool_anthropic() -> Value {
    json!({"name": "get_weather", "description": "Weather in a city",
        "input_schema": {"type": "object", "properties": {
            "location": {"type": "string"}, "days": {"type": "integer"}}, "required": ["location"]}})
}

pub fn time_tool_anthropic() -> Value {
    json!({"name": "get_time", "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}}}})
}

/// Polls the stats until `pred` holds (bounded: ~10 s).
pub async fn wait_stats(m: &Mock, pred: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        last = m.stats().await;
        if pred(&last) {
            return last;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("stats never reached the expected state: {last}");
}
