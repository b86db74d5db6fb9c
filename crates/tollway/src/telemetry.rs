//! OpenTelemetry traces (`telemetry` in the config, or the `OTEL_*` environment variables),
//! exported as OTLP/HTTP JSON to a collector.
//!
//! Each chat or embeddings request is a SERVER span named as OpenTelemetry's GenAI conventions
//! name them (`chat gpt-4.1`), with the `gen_ai.*` attributes (operation, requested and answering
//! model, token usage) and Tollway's own (`tollway.*`: request id, key, team, cost, cache, attempts).
//! Each upstream attempt is a CLIENT span under it, which failed attempts mark as errors, and the
//! upstream request carries a W3C `traceparent` naming that span, so a provider's or a local
//! model server's own spans join the trace. A request that arrives with a `traceparent`
//! continues that trace (and its sampling decision); others are sampled at `sample_ratio`.
//!
//! Spans are buffered (bounded: beyond `MAX_QUEUE` they are dropped and counted) and exported
//! in batches by one background task, so a request never waits on the collector; nothing is
//! sent between the lanes and that task but the buffer's lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

/// Spans held for export at most; more are dropped (and counted).
pub const MAX_QUEUE: usize = 8192;
/// Spans per export request at most.
const MAX_BATCH: usize = 512;

/// The `telemetry` section (or what the `OTEL_*` variables say).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// The collector's traces URL (`…/v1/traces`).
    pub endpoint: String,
    pub service_name: String,
    /// Sent with every export (a vendor's API key, say).
    pub headers: Vec<(String, String)>,
    /// Share of new traces recorded (a request that arrives with a `traceparent` follows its
    /// caller's decision).
    pub sample_ratio: f64,
    /// How often buffered spans are sent.
    pub export_interval: Duration,
}

impl TraceConfig {
    /// From the standard variables, when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` names a collector (and `OTEL_TRACES_EXPORTER` is not
    /// `none`). `Err` names a variable that cannot be read.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<TraceConfig>, String> {
        let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        if get("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none")
            || get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        {
            return Ok(None);
        }
        let endpoint = match (
            get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(url), _) => url.trim().to_string(),
            (None, Some(base)) => traces_url(base.trim()),
            (None, None) => return Ok(None),
        };
        let headers = match get("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
            .or_else(|| get("OTEL_EXPORTER_OTLP_HEADERS"))
        {
            Some(h) => parse_headers(&h)?,
            None => Vec::new(),
        };
        let sample_ratio = match get("OTEL_TRACES_SAMPLER_ARG") {
            Some(r) => r
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    format!("OTEL_TRACES_SAMPLER_ARG: `{r}` is not a ratio between 0 and 1")
                })?,
            None => 1.0,
        };
        let cfg = TraceConfig {
            endpoint,
            service_name: get("OTEL_SERVICE_NAME").unwrap_or_else(|| "tollway".into()),
            headers,
            sample_ratio,
            export_interval: Duration::from_secs(2),
        };
        cfg.check()?;
        Ok(Some(cfg))
    }

    /// What is wrong with it, if anything.
    pub fn check(&self) -> Result<(), String> {
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            return Err(format!(
                "`{}` is not an http:// or https:// URL",
                self.endpoint
            ));
        }
        for (k, v) in &self.headers {
            HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("`{k}` is not a header name"))?;
            HeaderValue::from_str(v).map_err(|_| format!("the value of `{k}` is not text"))?;
        }
        Ok(())
    }
}

/// `base` + `/v1/traces`, as OTLP/HTTP builds a signal's URL from the common endpoint.
pub fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: `key1=value1,key2=value2`, values percent-encoded.
fn parse_headers(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            "OTEL_EXPORTER_OTLP_HEADERS: expected key=value pairs separated by commas".to_string()
        })?;
        let value = percent_encoding::percent_decode_str(v.trim()).decode_utf8_lossy();
        out.push((k.trim().to_string(), value.into_owned()));
    }
    Ok(out)
}

/// A trace's place: its id, the span that is the parent of what comes next, and whether it is
/// recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`); `None` for anything else
    /// (all-zero ids, version `ff`, upper-case hex), which starts a new trace.
    pub fn parse(v: &str) -> Option<TraceParent> {
        let v = v.trim();
        let mut parts = v.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || !lower_hex(version) {
            return None;
        }
        // version 00 has exactly four fields; later versions may add more
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id: [u8; 16] = hex_bytes(trace)?;
        let span_id: [u8; 8] = hex_bytes(span)?;
        let flags: [u8; 1] = hex_bytes(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            sampled: flags[0] & 1 == 1,
        })
    }

    /// As a `traceparent` header.
    pub fn header(&self) -> HeaderValue {
        let s = format!(
            "00-{}-{}-{}",
            hex(&self.trace_id),
            hex(&self.span_id),
            if self.sampled { "01" } else { "00" }
        );
        HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static(
            "00-00000000000000000000000000000001-0000000000000001-00",
        ))
    }
}

fn lower_hex(s: &str) -> bool {
    s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !lower_hex(s) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 * b.len());
    for x in b {
        s.push(char::from(b"0123456789abcdef"[usize::from(x >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(x & 15)]));
    }
    s
}

fn random_id<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    loop {
        for o in out.iter_mut() {
            *o = fastrand::u8(..);
        }
        if out != [0u8; N] {
            return out;
        }
    }
}

/// Unix nanoseconds now.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
    F64(f64),
    Bool(bool),
}

/// Server: the client's request to the gateway; client: the gateway's request to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Server,
    Client,
}

/// A finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub name: String,
    pub kind: Kind,
    pub start_ns: u64,
    pub end_ns: u64,
    /// An error's description (status ERROR); `None`: status unset.
    pub error: Option<String>,
    pub attrs: Vec<(&'static str, Attr)>,
}

/// Appends `bytes` as lower-case hex in a JSON string (trace and span ids).
fn put_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for x in bytes {
        out.push(b"0123456789abcdef"[usize::from(x >> 4)]);
        out.push(b"0123456789abcdef"[usize::from(x & 15)]);
    }
    out.push(b'"');
}

/// Appends an integer as a JSON string, as OTLP/JSON writes 64-bit integers.
fn put_int_str(out: &mut Vec<u8>, v: impl itoa::Integer) {
    out.push(b'"');
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    out.push(b'"');
}

/// Appends an attribute list: `[{"key": ..., "value": {"stringValue": ...}}, ...]` (OTLP/JSON's
/// `KeyValue` and `AnyValue`).
fn put_attrs(out: &mut Vec<u8>, attrs: &[(&'static str, Attr)]) {
    out.push(b'[');
    for (i, (key, value)) in attrs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // keys are the gateway's own names, none with a character JSON escapes
        debug_assert!(key.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'));
        out.extend_from_slice(b"{\"key\":\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\",\"value\":{");
        match value {
            Attr::Str(s) => {
                out.extend_from_slice(b"\"stringValue\":");
                tollway_protocol::put_str(out, s);
            }
            Attr::Int(v) => {
                out.extend_from_slice(b"\"intValue\":");
                put_int_str(out, *v);
            }
            Attr::F64(v) => {
                out.extend_from_slice(b"\"doubleValue\":");
                // a non-finite number has no JSON form: null, as serde_json writes it
                if serde_json::to_writer(&mut *out, v).is_err() {
                    out.extend_from_slice(b"null");
                }
            }
            Attr::Bool(v) => {
                out.extend_from_slice(b"\"boolValue\":");
                out.extend_from_slice(if *v { b"true" } else { b"false" });
            }
        }
        out.extend_from_slice(b"}}");
    }
    out.push(b']');
}

/// Appends a span as OTLP/JSON writes it.
fn put_span(out: &mut Vec<u8>, s: &Span) {
    out.extend_from_slice(b"{\"traceId\":");
    put_hex(out, &s.trace_id);
    out.extend_from_slice(b",\"spanId\":");
    put_hex(out, &s.span_id);
    if let Some(p) = &s.parent {
        out.extend_from_slice(b",\"parentSpanId\":");
        put_hex(out, p);
    }
    out.extend_from_slice(b",\"name\":");
    tollway_protocol::put_str(out, &s.name);
    // SPAN_KIND_SERVER = 2, SPAN_KIND_CLIENT = 3
    out.extend_from_slice(match s.kind {
        Kind::Server => b",\"kind\":2",
        Kind::Client => b",\"kind\":3",
    });
    out.extend_from_slice(b",\"startTimeUnixNano\":");
    put_int_str(out, s.start_ns);
    out.extend_from_slice(b",\"endTimeUnixNano\":");
    put_int_str(out, s.end_ns);
    out.extend_from_slice(b",\"attributes\":");
    put_attrs(out, &s.attrs);
    if let Some(e) = &s.error {
        // STATUS_CODE_ERROR = 2
        out.extend_from_slice(b",\"status\":{\"code\":2,\"message\":");
        tollway_protocol::put_str(out, e);
        out.push(b'}');
    }
    out.push(b'}');
}

/// The OTLP/JSON body of an export: one resource (this gateway), one scope. Written by hand
/// like the gateway's other hot JSON (`put_str` copies the usual string in one piece).
pub fn export_body(service_name: &str, spans: &[Span]) -> Vec<u8> {
    let mut out = Vec::with_capacity(512 + 1536 * spans.len());
    out.extend_from_slice(b"{\"resourceSpans\":[{\"resource\":{\"attributes\":");
    put_attrs(
        &mut out,
        &[
            ("service.name", Attr::Str(service_name.to_string())),
            (
                "service.version",
                Attr::Str(env!("CARGO_PKG_VERSION").to_string()),
            ),
            ("telemetry.sdk.name", Attr::Str("tollway".to_string())),
        ],
    );
    out.extend_from_slice(b"},\"scopeSpans\":[{\"scope\":{\"name\":\"tollway\",\"version\":");
    tollway_protocol::put_str(&mut out, env!("CARGO_PKG_VERSION"));
    out.extend_from_slice(b"},\"spans\":[");
    for (i, s) in spans.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        put_span(&mut out, s);
    }
    out.extend_from_slice(b"]}]}]}");
    out
}

/// The span buffer, shared by every lane; one per process, kept across reloads.
#[derive(Default)]
pub struct Tracer {
    queue: Mutex<Vec<Span>>,
    pub dropped: AtomicU64,
    pub exported: AtomicU64,
    pub failed: AtomicU64,
}

impl Tracer {
    pub fn record(&self, span: Span) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= MAX_QUEUE {
            drop(q);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.push(span);
    }

    /// Everything buffered, oldest first.
    pub fn take(&self) -> Vec<Span> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sends what is buffered to `cfg`'s collector, in batches; spans a failed batch held are
    /// counted as failed and let go (a collector that is down must not grow the gateway).
    pub async fn export(&self, cfg: &TraceConfig, client: &tollway_providers::JsonPoster) {
        let spans = self.take();
        if spans.is_empty() {
            return;
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                headers.insert(k, v);
            }
        }
        for batch in spans.chunks(MAX_BATCH) {
            let body = export_body(&cfg.service_name, batch);
            match client.post_with(&cfg.endpoint, &headers, body).await {
                Ok(status) if (200..300).contains(&status) => {
                    self.exported
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
                other => {
                    let why = match other {
                        Ok(status) => format!("HTTP {status}"),
                        Err(e) => e,
                    };
                    if self.failed.fetch_add(batch.len() as u64, Ordering::Relaxed) == 0 {
                        tracing::warn!(error = %why, endpoint = %cfg.endpoint, "could not export traces (said once; see tollway_trace_spans_total)");
                    }
                }
            }
        }
    }
}

/// One request's trace: its server span's ids and start, and the tracer it goes to.
#[derive(Clone)]
pub struct RequestTrace {
    pub tracer: Arc<Tracer>,
    pub trace_id: [u8; 16],
    /// The server span's id.
    pub span_id: [u8; 8],
    /// The caller's span, when the request came with a `traceparent`.
    pub parent: Option<[u8; 8]>,
    pub sampled: bool,
    pub start_ns: u64,
}

impl RequestTrace {
    /// A request's trace: continuing the caller's (`traceparent`) or new, sampled at `ratio`.
    pub fn start(tracer: Arc<Tracer>, headers: &HeaderMap, ratio: f64) -> RequestTrace {
        let caller = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(TraceParent::parse);
        let (trace_id, parent, sampled) = match caller {
            Some(p) => (p.trace_id, Some(p.span_id), p.sampled),
            None => (random_id(), None, ratio >= 1.0 || fastrand::f64() < ratio),
        };
        RequestTrace {
            tracer,
            trace_id,
            span_id: random_id(),
            parent,
            sampled,
            start_ns: now_ns(),
        }
    }

    /// `traceresponse` (W3C Trace Context level 2): the trace and the request's own span, so a
    /// client can find its request in the tracing backend.
    pub fn response_header(&self) -> (HeaderName, HeaderValue) {
        let tp = TraceParent {
            trace_id: self.trace_id,
            span_id: self.span_id,
            sampled: self.sampled,
        };
        (HeaderName::from_static("traceresponse"), tp.header())
    }

    /// A new child span's id, and the `traceparent` that names it (for the upstream request).
    pub fn child(&self) -> ([u8; 8], HeaderValue) {
        let id = random_id();
        let tp = TraceParent {
            trace_id: self.trace_id,
            span_id: id,
            sampled: self.sampled,
        };
        (id, tp.header())
    }

    /// Records an upstream attempt (a CLIENT span under the request's).
    pub fn attempt(
        &self,
        span_id: [u8; 8],
        start_ns: u64,
        operation: &str,
        model: &str,
        attrs: Vec<(&'static str, Attr)>,
        error: Option<String>,
    ) {
        if !self.sampled {
            return;
        }
        self.tracer.record(Span {
            trace_id: self.trace_id,
            span_id,
            parent: Some(self.span_id),
            name: format!("{operation} {model}"),
            kind: Kind::Client,
            start_ns,
            end_ns: now_ns(),
            error,
            attrs,
        });
    }

    /// Records the request's own span, ending now.
    pub fn finish(&self, name: String, attrs: Vec<(&'static str, Attr)>, error: Option<String>) {
        if !self.sampled {
            return;
        }
        self.tracer.record(Span {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent: self.parent,
            name,
            kind: Kind::Server,
            start_ns: self.start_ns,
            end_ns: now_ns(),
            error,
            attrs,
        });
    }
}

/// The request span's attributes, from its ledger row (and the request, when there is one):
/// OpenTelemetry's GenAI and HTTP names where they have one, `tollway.*` for the rest.
pub fn request_attrs(
    row: &tollway_store::LedgerRow,
    operation: &'static str,
    route: &'static str,
    req: Option<&tollway_core::ChatRequest>,
) -> Vec<(&'static str, Attr)> {
    let mut a = Vec::with_capacity(20);
    a.push(("gen_ai.operation.name", Attr::Str(operation.into())));
    a.push(("gen_ai.request.model", Attr::Str(row.model.clone())));
    if let Some((_, model)) = row.deployment.split_once('/') {
        a.push(("gen_ai.response.model", Attr::Str(model.to_string())));
    }
    if let Some(r) = req {
        if let Some(m) = r.max_tokens {
            a.push(("gen_ai.request.max_tokens", Attr::Int(i64::from(m))));
        }
        if let Some(t) = r.temperature {
            a.push(("gen_ai.request.temperature", Attr::F64(t)));
        }
        if let Some(p) = r.top_p {
            a.push(("gen_ai.request.top_p", Attr::F64(p)));
        }
    }
    let input = row.input_tokens + row.cache_read_tokens + row.cache_write_tokens;
    a.push(("gen_ai.usage.input_tokens", Attr::Int(input)));
    a.push(("gen_ai.usage.output_tokens", Attr::Int(row.output_tokens)));
    a.push(("http.request.method", Attr::Str("POST".into())));
    a.push(("http.route", Attr::Str(route.into())));
    a.push(("http.response.status_code", Attr::Int(row.status)));
    a.push(("tollway.request_id", Attr::Str(row.request_id.clone())));
    a.push(("tollway.api", Attr::Str(row.api.clone())));
    a.push(("tollway.stream", Attr::Bool(row.stream)));
    a.push(("tollway.attempts", Attr::Int(row.attempts)));
    if !row.provider.is_empty() {
        a.push(("tollway.provider", Attr::Str(row.provider.clone())));
        a.push(("tollway.deployment", Attr::Str(row.deployment.clone())));
    }
    if let Some(k) = &row.key_id {
        a.push(("tollway.key_id", Attr::Str(k.clone())));
    }
    if let Some(t) = &row.team {
        a.push(("tollway.team", Attr::Str(t.clone())));
    }
    if let Some(c) = row.cost_micros {
        a.push(("tollway.cost_usd", Attr::F64(c as f64 / 1e6)));
    }
    a.push(("tollway.cache_hit", Attr::Bool(row.cache_hit)));
    if row.status >= 400 {
        a.push(("error.type", Attr::Str(row.status.to_string())));
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn traceparents_are_read_as_w3c_writes_them() {
        let p = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("valid");
        assert_eq!(hex(&p.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&p.span_id), "00f067aa0ba902b7");
        assert!(p.sampled);
        assert_eq!(
            p.header(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let unsampled =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .expect("valid");
        assert!(!unsampled.sampled);
        // a later version may carry more fields
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn requests_continue_their_callers_trace_or_start_one() {
        let tracer = Arc::new(Tracer::default());
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        let t = RequestTrace::start(tracer.clone(), &h, 1.0);
        assert_eq!(hex(&t.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.parent.map(|p| hex(&p)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert!(!t.sampled, "the caller's decision, not the ratio");
        t.finish("chat m".into(), Vec::new(), None);
        assert!(tracer.take().is_empty(), "not sampled: not recorded");

        let fresh = RequestTrace::start(tracer.clone(), &HeaderMap::new(), 1.0);
        assert!(fresh.sampled && fresh.parent.is_none());
        let (child, tp) = fresh.child();
        let back = TraceParent::parse(tp.to_str().expect("text")).expect("valid");
        assert_eq!(
            (back.trace_id, back.span_id, back.sampled),
            (fresh.trace_id, child, true)
        );
        fresh.attempt(
            child,
            1,
            "chat",
            "gpt-4.1",
            vec![("k", Attr::Int(3))],
            Some("503".into()),
        );
        fresh.finish("chat gpt".into(), Vec::new(), None);
        let spans = tracer.take();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].parent, Some(fresh.span_id));
        assert_eq!(spans[0].kind, Kind::Client);
        assert_eq!(spans[1].span_id, fresh.span_id);
        assert!(!RequestTrace::start(tracer, &HeaderMap::new(), 0.0).sampled);
    }

    #[test]
    fn spans_are_written_in_otlp_json() {
        let s = Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: Some([3; 8]),
            name: "chat gpt".into(),
            kind: Kind::Server,
            start_ns: 1_700_000_000_000_000_001,
            end_ns: 1_700_000_000_000_000_002,
            error: Some("boom".into()),
            attrs: vec![
                ("gen_ai.request.model", Attr::Str("gpt".into())),
                ("gen_ai.usage.input_tokens", Attr::Int(12)),
                ("tollway.cost_usd", Attr::F64(0.5)),
                ("tollway.cache_hit", Attr::Bool(false)),
            ],
        };
        let body: Value = serde_json::from_slice(&export_body("gw", &[s])).expect("JSON");
        let rs = &body["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0]["value"]["stringValue"],
            "gw"
        );
        let span = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "01".repeat(16));
        assert_eq!(span["spanId"], "02".repeat(8));
        assert_eq!(span["parentSpanId"], "03".repeat(8));
        assert_eq!(span["kind"], 2);
        assert_eq!(span["startTimeUnixNano"], "1700000000000000001");
        assert_eq!(span["status"], json!({"code": 2, "message": "boom"}));
        assert_eq!(
            span["attributes"][1],
            json!({"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}})
        );
        assert_eq!(span["attributes"][2]["value"], json!({"doubleValue": 0.5}));
        assert_eq!(span["attributes"][3]["value"], json!({"boolValue": false}));
    }

    #[test]
    fn exports_are_valid_json_whatever_the_strings_and_numbers() {
        let span = |name: &str| Span {
            trace_id: [0xab; 16],
            span_id: [0x01; 8],
            parent: None,
            name: name.into(),
            kind: Kind::Client,
            start_ns: u64::MAX,
            end_ns: 0,
            error: Some("quote \" backslash \\ newline \n nul \u{0} é 🚀".into()),
            attrs: vec![
                ("s", Attr::Str("\u{1f}\t".into())),
                ("nan", Attr::F64(f64::NAN)),
                ("neg", Attr::Int(i64::MIN)),
                ("b", Attr::Bool(true)),
            ],
        };
        let bytes = export_body("svc \"x\"", &[span("chat \"m\""), span("second")]);
        let v: Value = serde_json::from_slice(&bytes).expect("valid JSON");
        assert_eq!(
            v["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "svc \"x\""
        );
        let spans = v["resourceSpans"][0]["scopeSpans"][0]["spans"]
            .as_array()
            .expect("spans");
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0]["name"], "chat \"m\"");
        assert_eq!(spans[0]["kind"], 3);
        assert!(spans[0].get("parentSpanId").is_none());
        assert_eq!(spans[0]["startTimeUnixNano"], u64::MAX.to_string());
        assert_eq!(
            spans[0]["status"]["message"],
            "quote \" backslash \\ newline \n nul \u{0} é 🚀"
        );
        assert_eq!(
            spans[0]["attributes"][0]["value"]["stringValue"],
            "\u{1f}\t"
        );
        assert_eq!(
            spans[0]["attributes"][1]["value"]["doubleValue"],
            Value::Null
        );
        assert_eq!(
            spans[0]["attributes"][2]["value"]["intValue"],
            i64::MIN.to_string()
        );
        assert_eq!(spans[0]["attributes"][3]["value"]["boolValue"], true);
        assert_eq!(
            v["resourceSpans"][0]["scopeSpans"][0]["scope"]["name"],
            "tollway"
        );
        let empty: Value = serde_json::from_slice(&export_body("s", &[])).expect("valid JSON");
        assert_eq!(
            empty["resourceSpans"][0]["scopeSpans"][0]["spans"],
            json!([])
        );
    }

    #[test]
    fn the_buffer_is_bounded() {
        let t = Tracer::default();
        let span = Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: None,
            name: "x".into(),
            kind: Kind::Server,
            start_ns: 0,
            end_ns: 0,
            error: None,
            attrs: Vec::new(),
        };
        for _ in 0..MAX_QUEUE + 5 {
            t.record(span.clone());
        }
        assert_eq!(t.dropped.load(Ordering::Relaxed), 5);
        assert_eq!(t.take().len(), MAX_QUEUE);
        assert!(t.take().is_empty());
    }

    #[test]
    fn the_environment_configures_export_as_the_otel_sdks_do() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(TraceConfig::from_env(&env(&[])), Ok(None));
        let c = TraceConfig::from_env(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_SERVICE_NAME", "gw-eu"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-api-key=abc%3D%3D, x-team = core",
            ),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ]))
        .expect("valid")
        .expect("on");
        assert_eq!(c.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(c.service_name, "gw-eu");
        assert_eq!(
            c.headers,
            vec![
                ("x-api-key".to_string(), "abc==".to_string()),
                ("x-team".to_string(), "core".to_string())
            ]
        );
        assert_eq!(c.sample_ratio, 0.25);
        let c = TraceConfig::from_env(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://b/otlp/traces",
            ),
        ]))
        .expect("valid")
        .expect("on");
        assert_eq!(
            c.endpoint, "https://b/otlp/traces",
            "the signal's own URL as given"
        );
        assert_eq!(
            TraceConfig::from_env(&env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
                ("OTEL_TRACES_EXPORTER", "none"),
            ])),
            Ok(None)
        );
        for bad in [
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ][..],
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")][..],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign"),
            ][..],
        ] {
            let pairs: Vec<(String, String)> = bad
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let lookup = move |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            assert!(TraceConfig::from_env(&lookup).is_err(), "{bad:?}");
        }
    }
}
