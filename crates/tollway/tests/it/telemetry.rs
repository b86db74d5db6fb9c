//! OpenTelemetry traces through a stand-in OTLP/HTTP collector: a request's span and its
//! attempts' spans, the caller's trace continued, `traceparent` sent upstream, streams, sampling,
//! and a collector that is down costing nothing but the spans.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use serde_json::{json, Value};

use crate::harness::{config_errors, config_text, header, metrics, start_with, Env, MASTER};

/// A collector on a loopback port: keeps every export's body, answers `status`.
struct Collector {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

async fn collector(status: u16) -> Collector {
    let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
    let kept = bodies.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(
            move |headers: axum::http::HeaderMap, body: axum::Json<Value>| {
                let kept = kept.clone();
                async move {
                    let mut body = body.0;
                    // the header the config names, sent with every export
                    body["_key"] = json!(headers
                        .get("x-collector-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or(""));
                    kept.lock().expect("lock").push(body);
                    (
                        axum::http::StatusCode::from_u16(status).expect("status"),
                        "{}",
                    )
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Collector {
        url: format!("http://{addr}"),
        bodies,
    }
}

impl Collector {
    /// Every span received so far.
    fn spans(&self) -> Vec<Value> {
        let bodies = self.bodies.lock().expect("lock");
        let mut out = Vec::new();
        for b in bodies.iter() {
            assert_eq!(
                b["resourceSpans"][0]["resource"]["attributes"][0],
                json!({"key": "service.name", "value": {"stringValue": "tollway-test"}})
            );
            if let Some(spans) = b["resourceSpans"][0]["scopeSpans"][0]["spans"].as_array() {
                out.extend(spans.iter().cloned());
            }
        }
        out
    }

    /// Waits for the span of the request `request_id` (its `tollway.request_id`).
    async fn request_span(&self, request_id: &str) -> Value {
        for _ in 0..200 {
            let found = self
                .spans()
                .into_iter()
                .find(|s| attr(s, "tollway.request_id")["stringValue"] == request_id);
            if let Some(s) = found {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no span of request {request_id}: {:?}", self.spans());
    }

    /// Waits until a span named `name` of the trace `trace_id` arrived; all of that trace's.
    async fn trace(&self, trace_id: &str, name: &str) -> Vec<Value> {
        for _ in 0..200 {
            let spans: Vec<Value> = self
                .spans()
                .into_iter()
                .filter(|s| s["traceId"] == trace_id)
                .collect();
            if spans.iter().any(|s| s["name"] == name) {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no span `{name}` of trace {trace_id}: {:?}", self.spans());
    }
}

/// A span's time field (OTLP/JSON writes 64-bit integers as strings).
fn nanos(span: &Value, field: &str) -> u64 {
    span[field]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {span}"))
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    span["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["key"] == key))
        .map_or(&Value::Null, |x| &x["value"])
}

async fn traced(c: &Collector, sample_ratio: f64) -> Env {
    let endpoint = c.url.clone();
    let env = start_with(move |mock| {
        format!(
            "{}telemetry: {{ otlp_endpoint: \"{endpoint}\", service_name: tollway-test, export_interval_ms: 20, sample_ratio: {sample_ratio}, headers: {{ x-collector-key: k123 }} }}\n",
            config_text(mock)
        )
    })
    .await;
    tokio::spawn(tollway::server::export_traces(env.state.clone()));
    env
}

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn a_request_and_its_attempts_are_spans_of_the_callers_trace() {
    let c = collector(200).await;
    let env = traced(&c, 1.0).await;
    // `flaky`: its first deployment answers 500, the second answers
    let r = env
        .http
        .post(format!("{}/v1/chat/completions", env.url))
        .bearer_auth(MASTER)
        .header("traceparent", CALLER)
        .json(
            &json!({"model": "flaky", "max_tokens": 20, "temperature": 0.5,
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let request_id = header(r.headers(), "x-tollway-request-id").to_string();
    let traceresponse = header(r.headers(), "traceresponse").to_string();
    let spans = c
        .trace("4bf92f3577b34da6a3ce929d0e0e4736", "chat flaky")
        .await;
    let server = spans
        .iter()
        .find(|s| s["kind"] == 2)
        .expect("the request's span");
    assert_eq!(server["name"], "chat flaky");
    assert_eq!(
        server["parentSpanId"], "00f067aa0ba902b7",
        "under the caller's span"
    );
    assert_eq!(
        traceresponse,
        format!(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
            server["spanId"].as_str().unwrap_or("")
        ),
        "the client is told its request's span"
    );
    assert!(server.get("status").is_none(), "{server}");
    for (k, v) in [
        ("gen_ai.operation.name", json!({"stringValue": "chat"})),
        ("gen_ai.request.model", json!({"stringValue": "flaky"})),
        (
            "gen_ai.response.model",
            json!({"stringValue": "claude-backup"}),
        ),
        ("gen_ai.request.max_tokens", json!({"intValue": "20"})),
        ("gen_ai.request.temperature", json!({"doubleValue": 0.5})),
        ("http.route", json!({"stringValue": "/v1/chat/completions"})),
        ("http.response.status_code", json!({"intValue": "200"})),
        ("tollway.request_id", json!({"stringValue": request_id})),
        ("tollway.attempts", json!({"intValue": "2"})),
        (
            "tollway.deployment",
            json!({"stringValue": "ant/claude-backup"}),
        ),
        ("tollway.cache_hit", json!({"boolValue": false})),
    ] {
        assert_eq!(attr(server, k), &v, "{k} in {server}");
    }
    assert!(
        attr(server, "gen_ai.usage.output_tokens")["intValue"]
            .as_str()
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > 0),
        "{server}"
    );
    let (start, end) = (
        nanos(server, "startTimeUnixNano"),
        nanos(server, "endTimeUnixNano"),
    );
    assert!(end >= start);

    // two attempts, under the request's span, the failed one an error
    let mut attempts: Vec<&Value> = spans.iter().filter(|s| s["kind"] == 3).collect();
    attempts.sort_by_key(|s| nanos(s, "startTimeUnixNano"));
    assert_eq!(attempts.len(), 2, "{spans:?}");
    for a in &attempts {
        assert_eq!(a["parentSpanId"], server["spanId"]);
    }
    assert_eq!(attempts[0]["name"], "chat gpt-down?fault=500");
    assert_eq!(attempts[0]["status"]["code"], 2, "{}", attempts[0]);
    assert!(attr(attempts[0], "error.type")["stringValue"].is_string());
    assert_eq!(attempts[1]["name"], "chat claude-backup");
    assert!(attempts[1].get("status").is_none());

    // each upstream request carried its attempt's traceparent
    let ups = env.upstream_log().await;
    let sent: Vec<String> = ups
        .iter()
        .map(|u| {
            u["headers"]["traceparent"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let want: Vec<String> = attempts
        .iter()
        .map(|a| {
            format!(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
                a["spanId"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(sent, want);
    let m = metrics(&env.http, &env.url).await;
    assert!(
        m.contains("tollway_trace_spans_total{result=\"exported\"}"),
        "{m}"
    );
}

#[tokio::test]
async fn a_streams_span_ends_with_the_stream_and_new_traces_follow_the_ratio() {
    let c = collector(200).await;
    let env = traced(&c, 1.0).await;
    let r = env
        .http
        .post(format!("{}/v1/messages", env.url))
        .header("x-api-key", MASTER)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "gpt", "max_tokens": 50, "stream": true,
            "messages": [{"role": "user", "content": "stream [mock tokens=8 tpt_ms=5]"}]}))
        .send()
        .await
        .expect("send");
    let request_id = header(r.headers(), "x-tollway-request-id").to_string();
    let body = r.text().await.expect("body");
    assert!(body.contains("message_stop"), "{body}");
    // a new trace: find it by the request id
    let server = c.request_span(&request_id).await;
    assert!(
        server.get("parentSpanId").is_none(),
        "a new trace: {server}"
    );
    assert_eq!(attr(&server, "tollway.stream"), &json!({"boolValue": true}));
    assert_eq!(
        attr(&server, "http.route"),
        &json!({"stringValue": "/v1/messages"})
    );
    assert_eq!(
        attr(&server, "gen_ai.usage.output_tokens"),
        &json!({"intValue": "8"})
    );
    let (start, end) = (
        nanos(&server, "startTimeUnixNano"),
        nanos(&server, "endTimeUnixNano"),
    );
    assert!(
        end - start >= 35_000_000,
        "covers the whole stream: {} ns",
        end - start
    );
    // the attempt's span covers the upstream's whole stream too, with its usage
    let trace_id = server["traceId"].as_str().unwrap_or("").to_string();
    let spans = c.trace(&trace_id, "chat gpt-4.1").await;
    let attempt = spans
        .iter()
        .find(|s| s["kind"] == 3)
        .expect("the attempt's span");
    assert_eq!(attempt["parentSpanId"], server["spanId"]);
    assert_eq!(
        attr(attempt, "gen_ai.usage.output_tokens"),
        &json!({"intValue": "8"})
    );
    assert!(
        nanos(attempt, "endTimeUnixNano") - nanos(attempt, "startTimeUnixNano") >= 35_000_000,
        "{attempt}"
    );
    assert!(attempt.get("status").is_none(), "{attempt}");

    // a stream the upstream breaks off: its attempt's span is an error
    let r = env
        .http
        .post(format!("{}/v1/chat/completions", env.url))
        .bearer_auth(MASTER)
        .json(&json!({"model": "gpt", "stream": true,
            "messages": [{"role": "user", "content": "cut [mock tokens=20 after=3 fault=error_event]"}]}))
        .send()
        .await
        .expect("send");
    let request_id = header(r.headers(), "x-tollway-request-id").to_string();
    let _ = r.text().await;
    let broken = c.request_span(&request_id).await;
    let trace_id = broken["traceId"].as_str().unwrap_or("").to_string();
    let spans = c.trace(&trace_id, "chat gpt-4.1").await;
    let attempt = spans
        .iter()
        .find(|s| s["kind"] == 3)
        .expect("the attempt's span");
    assert_eq!(attempt["status"]["code"], 2, "{attempt}");

    // ratio 0: nothing recorded, the decision still sent upstream
    let c0 = collector(200).await;
    let env0 = traced(&c0, 0.0).await;
    let (status, _, _) = env0
        .openai(json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 200);
    let tp = env0.last_upstream().await["headers"]["traceparent"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(tp.starts_with("00-") && tp.ends_with("-00"), "{tp}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(c0.spans().is_empty());
}

#[tokio::test]
async fn without_telemetry_nothing_is_added_and_a_dead_collector_costs_only_spans() {
    let env = start_with(config_text).await;
    let (status, _, _) = env
        .openai(json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 200);
    assert!(env.last_upstream().await["headers"]
        .get("traceparent")
        .is_none());
    let r = env
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert!(r.headers().get("traceresponse").is_none());

    let c = collector(503).await;
    let env = traced(&c, 1.0).await;
    for _ in 0..3 {
        let (status, _, _) = env
            .openai(json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}))
            .await;
        assert_eq!(status, 200);
    }
    let mut m = String::new();
    for _ in 0..100 {
        m = metrics(&env.http, &env.url).await;
        if !m.contains("tollway_trace_spans_total{result=\"failed\"} 0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !m.contains("tollway_trace_spans_total{result=\"failed\"} 0"),
        "{m}"
    );
    assert!(
        m.contains("tollway_trace_spans_total{result=\"exported\"} 0"),
        "{m}"
    );
    // the collector was sent the configured header
    let bodies = c.bodies.lock().expect("lock");
    assert!(!bodies.is_empty());
    assert!(bodies.iter().all(|b| b["_key"] == "k123"));
}

#[tokio::test]
async fn telemetry_config_errors_are_named() {
    for (text, want) in [
        ("telemetry: { service_name: x }", "telemetry.otlp_endpoint"),
        (
            "telemetry: { otlp_endpoint: \"collector:4318\" }",
            "not an http",
        ),
        (
            "telemetry: { otlp_endpoint: \"http://a\", traces_endpoint: \"http://b/v1/traces\" }",
            "not both",
        ),
        (
            "telemetry: { otlp_endpoint: \"http://a\", sample_ratio: 1.5 }",
            "between 0 and 1",
        ),
        (
            "telemetry: { otlp_endpoint: \"http://a\", headers: { \"bad name\": x } }",
            "header name",
        ),
    ] {
        let all = config_errors(text);
        assert!(all.contains(want), "{text}: {all}");
    }
}
