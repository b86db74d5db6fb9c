//! The load engine: open loop (requests scheduled at fixed times, latency measured from the
//! scheduled start so that a slow server cannot hide its queueing: no coordinated omission) and
//! closed loop (N connections, each sending its next request as soon as the last one ended).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::procfs::{self, ProcWatch};

/// How requests are issued.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// `rate` requests per second at fixed times; at most `requests` of them in all if given.
    Open { rate: f64, requests: Option<u64> },
    /// `connections` loops, each sending the next request when the previous one has ended.
    Closed { connections: usize },
}

/// One load run's parameters.
#[derive(Debug, Clone)]
pub struct Spec {
    pub label: String,
    pub url: Uri,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// The request asks for a stream: SSE events are counted and timed.
    pub stream: bool,
    /// What the server speaks (how a complete stream ends).
    pub api: Api,
    pub mode: Mode,
    /// Requests scheduled (open) or started (closed) during the warm-up are not recorded.
    pub warmup: Duration,
    /// The measured window, after the warm-up.
    pub duration: Duration,
    /// Per-request limit (headers and the whole body).
    pub timeout: Duration,
    /// Open loop: a request that would exceed this many in flight is not sent (counted as an
    /// error `client_cap`), so that a stalled server cannot exhaust the machine's sockets.
    pub max_in_flight: usize,
    /// Processes whose RSS and CPU time are sampled over the measured window.
    pub watch: Vec<(String, u32)>,
    pub clk_tck: u64,
    /// For an `https://` URL: a PEM file of authorities to trust besides the public roots.
    pub ca_file: Option<String>,
}

/// The API a load speaks to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Api {
    /// OpenAI's `POST /v1/chat/completions`.
    Openai,
    /// Anthropic's `POST /v1/messages`.
    Anthropic,
}

impl Api {
    /// How a complete stream ends: OpenAI's `data: [DONE]`, Anthropic's `message_stop` event.
    pub fn end_marker(self) -> &'static [u8] {
        match self {
            Api::Openai => b"[DONE]",
            Api::Anthropic => b"\"message_stop\"}",
        }
    }

    /// The request path.
    pub fn path(self) -> &'static str {
        match self {
            Api::Openai => "/v1/chat/completions",
            Api::Anthropic => "/v1/messages",
        }
    }
}

/// Builds the JSON body of a chat request in the shape of `api`. `prompt_bytes`: pad the prompt
/// with plain words to about this size (0: the short default prompt), as a long real prompt would
/// be. An Anthropic Messages body carries `max_tokens`, which that API requires, and streams
/// without `stream_options` (its streams always carry usage).
pub fn request_body(api: Api, model: &str, stream: bool, prompt_bytes: usize) -> Bytes {
    let mut prompt = String::from("Hello! Say something short.");
    while prompt.len() < prompt_bytes {
        prompt.push_str(" Summarise the quarterly report, citing figures and sources.");
    }
    let mut v = json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
    });
    match (api, stream) {
        (Api::Openai, true) => {
            v["stream"] = json!(true);
            v["stream_options"] = json!({"include_usage": true});
        }
        (Api::Anthropic, _) => {
            v["max_tokens"] = json!(1024);
            if stream {
                v["stream"] = json!(true);
            }
        }
        (Api::Openai, false) => {}
    }
    Bytes::from(v.to_string())
}

/// What one request measured (times from its scheduled start, in nanoseconds).
struct Sample {
    scheduled: Instant,
    sent: Instant,
    headers_at: Option<Instant>,
    first_byte_at: Option<Instant>,
    done_at: Instant,
    /// `None` on success, else the error's kind.
    error: Option<String>,
    events: u64,
    /// Gaps between consecutive SSE events' arrivals (ns).
    gaps: Vec<u64>,
    /// Each SSE event's arrival, from the scheduled start (ns).
    arrivals: Vec<u64>,
}

struct Hists {
    latency: Histogram<u64>,
    service: Histogram<u64>,
    ttfb: Histogram<u64>,
    headers: Histogram<u64>,
    stream_duration: Histogram<u64>,
    gaps: Histogram<u64>,
    arrivals: Histogram<u64>,
    events: Histogram<u64>,
}

fn hist() -> anyhow::Result<Histogram<u64>> {
    // Nanoseconds, three significant digits, growing as needed.
    Histogram::<u64>::new(3).context("histogram")
}

impl Hists {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latency: hist()?,
            service: hist()?,
            ttfb: hist()?,
            headers: hist()?,
            stream_duration: hist()?,
            gaps: hist()?,
            arrivals: hist()?,
            events: hist()?,
        })
    }
}

struct Recorder {
    measure_start: Instant,
    hists: Hists,
    ok: u64,
    errors: BTreeMap<String, u64>,
    first_scheduled: Option<Instant>,
    last_done: Option<Instant>,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Recorder {
    fn record(&mut self, s: Sample) {
        if s.scheduled < self.measure_start {
            return;
        }
        self.first_scheduled = Some(
            self.first_scheduled
                .map_or(s.scheduled, |f| f.min(s.scheduled)),
        );
        self.last_done = Some(self.last_done.map_or(s.done_at, |l| l.max(s.done_at)));
        if let Some(e) = s.error {
            *self.errors.entry(e).or_insert(0) += 1;
            return;
        }
        self.ok += 1;
        let h = &mut self.hists;
        let _ = h.latency.record(ns(s.done_at - s.scheduled));
        let _ = h.service.record(ns(s.done_at - s.sent));
        if let Some(t) = s.headers_at {
            let _ = h.headers.record(ns(t - s.scheduled));
        }
        if let Some(t) = s.first_byte_at {
            let _ = h.ttfb.record(ns(t - s.scheduled));
            if s.events > 0 {
                let _ = h.stream_duration.record(ns(s.done_at - t));
            }
        }
        if s.events > 0 {
            let _ = h.events.record(s.events);
        }
        for g in s.gaps {
            let _ = h.gaps.record(g);
        }
        for a in s.arrivals {
            let _ = h.arrivals.record(a);
        }
    }
}

/// Counts SSE event terminators (a blank line) across body frames.
#[derive(Default)]
struct SseCounter {
    last_nl: bool,
    /// The last bytes seen, to check the stream's end (`[DONE]`).
    tail: Vec<u8>,
}

impl SseCounter {
    fn feed(&mut self, chunk: &[u8]) -> u64 {
        let mut n = 0;
        for &b in chunk {
            if b == b'\n' {
                if self.last_nl {
                    n += 1;
                    self.last_nl = false;
                } else {
                    self.last_nl = true;
                }
            } else if b != b'\r' {
                self.last_nl = false;
            }
        }
        let keep = 32usize;
        if chunk.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - keep..]);
        } else {
            self.tail.extend_from_slice(chunk);
            let excess = self.tail.len().saturating_sub(keep);
            self.tail.drain(..excess);
        }
        n
    }

    /// Whether the stream's last event ended with `marker` (whitespace after it aside).
    fn ended_with(&self, marker: &[u8]) -> bool {
        let end = self
            .tail
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        self.tail[..end].ends_with(marker)
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds the load generator's pooled HTTP/1.1 client: plain HTTP, or HTTPS (TLS by rustls, no
/// ALPN, so HTTP/1.1) to the public roots and `ca_file`'s authorities.
pub fn client(ca_file: Option<&str>) -> anyhow::Result<HttpClient> {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    conn.enforce_http(false);
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS set-up")?
    .with_root_certificates(tollway_providers::root_store(ca_file).map_err(anyhow::Error::msg)?)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(conn);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(usize::MAX)
        .build(https))
}

async fn one(client: &HttpClient, spec: &Spec, scheduled: Instant) -> Sample {
    let sent = Instant::now();
    let mut s = Sample {
        scheduled,
        sent,
        headers_at: None,
        first_byte_at: None,
        done_at: sent,
        error: None,
        events: 0,
        gaps: Vec::new(),
        arrivals: Vec::new(),
    };
    let r = tokio::time::timeout(spec.timeout, exchange(client, spec, &mut s)).await;
    s.done_at = Instant::now();
    match r {
        Err(_) => s.error = Some("timeout".into()),
        Ok(Err(e)) => s.error = Some(e),
        Ok(Ok(())) => {}
    }
    s
}

async fn exchange(client: &HttpClient, spec: &Spec, s: &mut Sample) -> Result<(), String> {
    let mut b = Request::post(spec.url.clone());
    for (k, v) in &spec.headers {
        b = b.header(k, v);
    }
    let req = b
        .body(Full::new(spec.body.clone()))
        .map_err(|e| format!("request: {e}"))?;
    let resp = client.request(req).await.map_err(|e| {
        if e.is_connect() {
            "connect".to_string()
        } else {
            "http".to_string()
        }
    })?;
    s.headers_at = Some(Instant::now());
    let status = resp.status();
    let mut body = resp.into_body();
    let mut sse = SseCounter::default();
    let mut last_event: Option<Instant> = None;
    let mut bytes = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| "body".to_string())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        let now = Instant::now();
        if s.first_byte_at.is_none() {
            s.first_byte_at = Some(now);
        }
        bytes += data.len();
        if spec.stream && status.is_success() {
            let n = sse.feed(&data);
            for i in 0..n {
                if let Some(prev) = last_event {
                    s.gaps.push(if i == 0 { ns(now - prev) } else { 0 });
                }
                s.arrivals.push(ns(now - s.scheduled));
                last_event = Some(now);
            }
            s.events += n;
        }
    }
    if !status.is_success() {
        return Err(format!("status_{}", status.as_u16()));
    }
    if bytes == 0 {
        return Err("empty_body".into());
    }
    if spec.stream && !sse.ended_with(spec.api.end_marker()) {
        return Err("stream_without_done".into());
    }
    Ok(())
}

/// Runs one load and returns its result as JSON.
pub async fn run(spec: Spec) -> anyhow::Result<Value> {
    let spec = Arc::new(spec);
    let client = client(spec.ca_file.as_deref())?;
    let start = Instant::now() + Duration::from_millis(20);
    let measure_start = start + spec.warmup;
    let end = measure_start + spec.duration;
    let rec = Arc::new(Mutex::new(Recorder {
        measure_start,
        hists: Hists::new()?,
        ok: 0,
        errors: BTreeMap::new(),
        first_scheduled: None,
        last_done: None,
    }));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight_seen = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicU64::new(0));

    // Resource sampling over the measured window.
    let watch = ProcWatch::new(spec.watch.clone(), spec.clk_tck);
    let sampler = {
        let watch = watch.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_start.into()).await;
            watch.begin();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                watch.sample_rss();
            }
        })
    };

    match spec.mode {
        Mode::Open { rate, requests } => {
            anyhow::ensure!(rate > 0.0, "the rate must be positive");
            let handle = tokio::runtime::Handle::current();
            let (spec2, client2, rec2, inf2, max2, sent2) = (
                spec.clone(),
                client.clone(),
                rec.clone(),
                in_flight.clone(),
                max_in_flight_seen.clone(),
                sent.clone(),
            );
            // The pacer is an OS thread: its sleeps are finer than the runtime's 1 ms timer.
            let pacer = std::thread::spawn(move || {
                let interval_ns = 1e9 / rate;
                let mut i: u64 = 0;
                loop {
                    if requests.is_some_and(|n| i >= n) {
                        break;
                    }
                    // Precision loss only past 2^53 ns (104 days).
                    #[allow(
                        clippy::cast_possible_truncation,
                        clippy::cast_sign_loss,
                        clippy::cast_precision_loss
                    )]
                    let at = start + Duration::from_nanos((i as f64 * interval_ns) as u64);
                    if at >= end {
                        break;
                    }
                    let now = Instant::now();
                    if at > now {
                        std::thread::sleep(at - now);
                    }
                    i += 1;
                    let n = inf2.fetch_add(1, Ordering::AcqRel) + 1;
                    if n > spec2.max_in_flight {
                        inf2.fetch_sub(1, Ordering::AcqRel);
                        if let Ok(mut r) = rec2.lock() {
                            r.record(Sample {
                                scheduled: at,
                                sent: at,
                                headers_at: None,
                                first_byte_at: None,
                                done_at: Instant::now(),
                                error: Some("client_cap".into()),
                                events: 0,
                                gaps: Vec::new(),
                                arrivals: Vec::new(),
                            });
                        }
                        continue;
                    }
                    max2.fetch_max(n, Ordering::AcqRel);
                    if at >= measure_start {
                        sent2.fetch_add(1, Ordering::Relaxed);
                    }
                    let (spec3, client3, rec3, inf3) =
                        (spec2.clone(), client2.clone(), rec2.clone(), inf2.clone());
                    handle.spawn(async move {
                        let s = one(&client3, &spec3, at).await;
                        if let Ok(mut r) = rec3.lock() {
                            r.record(s);
                        }
                        inf3.fetch_sub(1, Ordering::AcqRel);
                    });
                }
            });
            // Wait for the pacer without blocking the runtime.
            let pacer_done = tokio::task::spawn_blocking(move || pacer.join().is_ok());
            let ok = pacer_done.await.unwrap_or(false);
            anyhow::ensure!(ok, "the pacer thread failed");
        }
        Mode::Closed { connections } => {
            let mut tasks = Vec::with_capacity(connections);
            for _ in 0..connections {
                let (spec, client, rec, inf, max, sent) = (
                    spec.clone(),
                    client.clone(),
                    rec.clone(),
                    in_flight.clone(),
                    max_in_flight_seen.clone(),
                    sent.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep_until(start.into()).await;
                    loop {
                        let now = Instant::now();
                        if now >= end {
                            break;
                        }
                        if now >= measure_start {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        let n = inf.fetch_add(1, Ordering::AcqRel) + 1;
                        max.fetch_max(n, Ordering::AcqRel);
                        let s = one(&client, &spec, now).await;
                        inf.fetch_sub(1, Ordering::AcqRel);
                        if let Ok(mut r) = rec.lock() {
                            r.record(s);
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        }
    }
    // Drain: every request in flight ends by its timeout.
    let drain_deadline = Instant::now() + spec.timeout + Duration::from_secs(2);
    while in_flight.load(Ordering::Acquire) > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let leftover = in_flight.load(Ordering::Acquire);
    sampler.abort();
    let procs = watch.finish();

    let r = rec
        .lock()
        .map_err(|_| anyhow::anyhow!("recorder poisoned"))?;
    let window = match (r.first_scheduled, r.last_done) {
        (Some(f), Some(l)) if l > f => (l - f).max(spec.duration),
        _ => spec.duration,
    };
    let errors: u64 = r.errors.values().sum();
    let sent_n = sent.load(Ordering::Relaxed);
    let mut procs_json = serde_json::Map::new();
    for p in &procs {
        let mut v = p.to_json();
        if let (Some(cpu), true) = (p.cpu_s, r.ok + errors > 0) {
            #[allow(clippy::cast_precision_loss)]
            let per_1k = cpu / ((r.ok + errors) as f64) * 1000.0;
            v["cpu_s_per_1k_requests"] = json!(round3(per_1k));
        }
        if let (Some(cpu), Some(sys)) = (p.cpu_s, p.sys_cpu_s) {
            if cpu > 0.0 {
                v["cpu_system_share"] = json!(round3(sys / cpu));
            }
        }
        procs_json.insert(p.name.clone(), v);
    }
    let (mode, rate, conns, requests) = match spec.mode {
        Mode::Open { rate, requests } => ("open", Some(rate), None, requests),
        Mode::Closed { connections } => ("closed", None, Some(connections), None),
    };
    let h = &r.hists;
    #[allow(clippy::cast_precision_loss)]
    let achieved = r.ok as f64 / window.as_secs_f64();
    let mut out = json!({
        "label": spec.label,
        "url": spec.url.to_string(),
        "mode": mode,
        "target_rps": rate,
        "connections": conns,
        "request_cap": requests,
        "stream": spec.stream,
        "warmup_s": spec.warmup.as_secs_f64(),
        "duration_s": spec.duration.as_secs_f64(),
        "sent": sent_n,
        "ok": r.ok,
        "errors": errors,
        "error_kinds": r.errors,
        "unfinished": leftover,
        "achieved_rps": round3(achieved),
        "window_s": round3(window.as_secs_f64()),
        "max_in_flight": max_in_flight_seen.load(Ordering::Relaxed),
        "latency_us": summary(&h.latency),
        "service_us": summary(&h.service),
        "headers_us": summary(&h.headers),
        "ttfb_us": summary(&h.ttfb),
        "procs": procs_json,
    });
    if spec.stream {
        out["stream_stats"] = json!({
            "events_per_stream": {
                "mean": round3(h.events.mean()),
                "min": h.events.min(),
                "max": h.events.max(),
            },
            "stream_duration_us": summary(&h.stream_duration),
            "event_gap_us": summary(&h.gaps),
            "event_arrival_us": summary(&h.arrivals),
        });
    }
    Ok(out)
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Percentiles of a nanosecond histogram, in microseconds.
fn summary(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    #[allow(clippy::cast_precision_loss)]
    let us = |v: u64| round3(v as f64 / 1000.0);
    json!({
        "count": h.len(),
        "mean": round3(h.mean() / 1000.0),
        "p50": us(h.value_at_quantile(0.50)),
        "p90": us(h.value_at_quantile(0.90)),
        "p99": us(h.value_at_quantile(0.99)),
        "p99.9": us(h.value_at_quantile(0.999)),
        "max": us(h.max()),
    })
}

/// Reads `procfs` once so that a missing `/proc` fails early rather than mid-run.
pub fn check_watch(watch: &[(String, u32)]) -> anyhow::Result<()> {
    for (name, pid) in watch {
        procfs::rss_kb(*pid).with_context(|| format!("cannot read /proc/{pid} ({name})"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_counter_counts_across_frames() {
        let mut c = SseCounter::default();
        assert_eq!(c.feed(b"data: 1\n\ndata: 2\n"), 1);
        assert_eq!(c.feed(b"\ndata: [DONE]\r\n\r\n"), 2);
        assert!(c.ended_with(Api::Openai.end_marker()));
        assert_eq!(c.feed(b"event: x\ndata: y\n\n"), 1);
        assert!(!c.ended_with(Api::Openai.end_marker()));
        let end = b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        assert_eq!(c.feed(end), 1);
        assert!(c.ended_with(Api::Anthropic.end_marker()));
    }

    fn spec(url: String, ca_file: Option<String>) -> Spec {
        Spec {
            label: "t".into(),
            url: format!("{url}/v1/chat/completions").parse().unwrap(),
            headers: Vec::new(),
            body: request_body(Api::Openai, "bench-small", false, 0),
            stream: false,
            api: Api::Openai,
            mode: Mode::Open {
                rate: 200.0,
                requests: Some(10),
            },
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            max_in_flight: 64,
            watch: Vec::new(),
            clk_tck: 100,
            ca_file,
        }
    }

    #[tokio::test]
    async fn speaks_https_to_a_private_authority() {
        use tollway_mock::tls::{Alpn, TestCerts};
        let certs = TestCerts::generate().unwrap();
        let mock = tollway_mock::MockServer::start_tls(certs.server_config(Alpn::Both).unwrap())
            .await
            .unwrap();
        let dir = std::env::temp_dir().join(format!("tollway-bench-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, &certs.ca_pem).unwrap();
        let ok = run(spec(mock.url(), Some(ca.display().to_string())))
            .await
            .unwrap();
        assert_eq!(
            (ok["ok"].as_u64(), ok["errors"].as_u64()),
            (Some(10), Some(0))
        );
        // without the authority, every request fails to connect (the certificate is unknown)
        let refused = run(spec(mock.url(), None)).await.unwrap();
        assert_eq!(refused["ok"].as_u64(), Some(0));
        assert_eq!(
            refused["error_kinds"]["connect"].as_u64(),
            Some(10),
            "{refused}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bodies_have_each_apis_shape() {
        let v = |b: Bytes| serde_json::from_slice::<Value>(&b).unwrap();
        let o = v(request_body(Api::Openai, "m", true, 100));
        assert_eq!(o["stream_options"]["include_usage"], true);
        assert!(o["messages"][0]["content"].as_str().unwrap().len() >= 100);
        assert!(o.get("max_tokens").is_none());
        let a = v(request_body(Api::Anthropic, "m", true, 0));
        assert_eq!(
            (a["max_tokens"].as_u64(), a["stream"].as_bool()),
            (Some(1024), Some(true))
        );
        assert!(a.get("stream_options").is_none());
        assert!(v(request_body(Api::Anthropic, "m", false, 0))
            .get("stream")
            .is_none());
    }
}
