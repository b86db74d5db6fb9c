//! The HTTP engine shared by every provider kind: one pooled client per account, the four timeouts
//! (connect, first byte, idle between chunks, total), bounded reads of error bodies, upstream SSE
//! streams decoded chunk by chunk as they arrive, and classified errors.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use tollway_core::{
    ApiFamily, BoxFuture, ChatRequest, ChatResponse, ErrorKind, EventStream, Provider,
    ProviderError, ProviderInfo, StreamEvent,
};
use tollway_protocol::sse::SseParser;
use tollway_protocol::{anthropic, openai};

use crate::config::{AnthropicConfig, OpenAiConfig, Timeouts};

/// Largest upstream body read whole (non-streaming answers and error bodies).
const MAX_UPSTREAM_BODY: usize = 64 * 1024 * 1024;
/// Largest error body kept for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A provider reached over HTTP in one of the supported wire formats.
pub struct HttpProvider {
    info: ProviderInfo,
    client: reqwest::Client,
    /// Parsed once: parsing a URL per request is measurable on the hot path.
    chat_url: reqwest::Url,
    /// OpenAI-format accounts only.
    embeddings_url: Option<reqwest::Url>,
    headers: HeaderMap,
    timeouts: Timeouts,
    dialect: openai::Dialect,
}

fn header_map(pairs: &[(String, String)], provider: &str) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("provider `{provider}`: `{k}` is not a valid header name"))?;
        let mut value = HeaderValue::from_str(v).map_err(|_| {
            format!("provider `{provider}`: the value of header `{k}` is not valid")
        })?;
        if name == AUTHORIZATION || name.as_str() == "x-api-key" {
            value.set_sensitive(true);
        }
        map.insert(name, value);
    }
    Ok(map)
}

fn client(timeouts: &Timeouts) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect())
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        // An upstream's redirect is its answer: following it would resend the provider key to
        // another address (and costs a URL parse per request).
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("could not build the HTTP client: {e}"))
}

impl HttpProvider {
    /// `compatible`: an OpenAI-compatible server rather than OpenAI itself (spells `max_tokens`
    /// the older way, which every such server knows).
    pub fn openai(name: &str, c: &OpenAiConfig, compatible: bool) -> Result<Self, String> {
        let base = c
            .base_url
            .as_deref()
            .unwrap_or("https://api.openai.com/v1")
            .trim_end_matches('/');
        let mut pairs: Vec<(String, String)> = Vec::new();
        if !c.api_key.is_none() {
            pairs.push((
                "authorization".into(),
                format!("Bearer {}", c.api_key.expose()),
            ));
        }
        if let Some(org) = &c.organization {
            pairs.push(("openai-organization".into(), org.clone()));
        }
        pairs.extend(c.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(HttpProvider {
            info: ProviderInfo {
                name: name.to_string(),
                family: ApiFamily::OpenAi,
            },
            client: client(&c.timeouts)?,
            chat_url: parse_url(&format!("{base}/chat/completions"), name)?,
            embeddings_url: Some(parse_url(&format!("{base}/embeddings"), name)?),
            headers: header_map(&pairs, name)?,
            timeouts: c.timeouts,
            dialect: openai::Dialect {
                legacy_max_tokens: compatible,
            },
        })
    }

    pub fn anthropic(name: &str, c: &AnthropicConfig) -> Result<Self, String> {
        let base = c
            .base_url
            .as_deref()
            .unwrap_or("https://api.anthropic.com")
            .trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        let mut pairs: Vec<(String, String)> = vec![(
            "anthropic-version".into(),
            c.version.clone().unwrap_or_else(|| "2023-06-01".into()),
        )];
        if !c.api_key.is_none() {
            pairs.push(("x-api-key".into(), c.api_key.expose().to_string()));
        }
        pairs.extend(c.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(HttpProvider {
            info: ProviderInfo {
                name: name.to_string(),
                family: ApiFamily::Anthropic,
            },
            client: client(&c.timeouts)?,
            chat_url: parse_url(&format!("{base}/v1/messages"), name)?,
            embeddings_url: None,
            headers: header_map(&pairs, name)?,
            timeouts: c.timeouts,
            dialect: openai::Dialect::default(),
        })
    }

    fn label(&self, model: &str) -> String {
        format!("{}/{}", self.info.name, model)
    }

    fn encode(&self, req: &ChatRequest) -> Result<Vec<u8>, ProviderError> {
        let label = self.label(&req.model);
        match self.info.family {
            ApiFamily::OpenAi => openai::encode_request(req, &label, self.dialect),
            ApiFamily::Anthropic => anthropic::encode_request(req, &label),
        }
    }

    /// Sends the request and waits (bounded by the first-byte timeout) for status and headers.
    /// Error statuses are read (bounded) and classified here.
    async fn send(&self, body: Vec<u8>, model: &str) -> Result<reqwest::Response, ProviderError> {
        self.send_to(&self.chat_url, body, model).await
    }

    async fn send_to(
        &self,
        url: &reqwest::Url,
        body: Vec<u8>,
        model: &str,
    ) -> Result<reqwest::Response, ProviderError> {
        let fut = self
            .client
            .post(url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .timeout(self.timeouts.total())
            .body(body)
            .send();
        let resp = match tokio::time::timeout(self.timeouts.first_byte(), fut).await {
            Err(_) => {
                return Err(ProviderError::new(
                    ErrorKind::Timeout,
                    format!(
                        "provider {} did not answer within {} ms",
                        self.label(model),
                        self.timeouts.first_byte_ms
                    ),
                ))
            }
            Ok(Err(e)) => return Err(self.transport_error(&e, model)),
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let retry_after = retry_after(resp.headers());
        let body = read_bounded(resp, MAX_ERROR_BODY).await.unwrap_or_default();
        let mut err = match self.info.family {
            ApiFamily::OpenAi => openai::decode_error(status, &body, retry_after),
            ApiFamily::Anthropic => anthropic::decode_error(status, &body, retry_after),
        };
        err.message = format!("{} (from {})", err.message, self.label(model));
        Err(err)
    }

    fn transport_error(&self, e: &reqwest::Error, model: &str) -> ProviderError {
        let label = self.label(model);
        // reqwest's Display includes the URL, never headers; keep the root cause for operators.
        let cause = std::error::Error::source(e)
            .map(|s| s.to_string())
            .unwrap_or_else(|| e.to_string());
        if e.is_timeout() {
            ProviderError::new(
                ErrorKind::Timeout,
                format!("provider {label} timed out: {cause}"),
            )
        } else if e.is_connect() {
            ProviderError::new(
                ErrorKind::Connection,
                format!("could not connect to provider {label}: {cause}"),
            )
        } else {
            ProviderError::new(
                ErrorKind::Connection,
                format!("connection to provider {label} failed: {cause}"),
            )
        }
    }
}

fn parse_url(url: &str, provider: &str) -> Result<reqwest::Url, String> {
    reqwest::Url::parse(url)
        .map_err(|e| format!("provider `{provider}`: base_url `{url}` is not a URL: {e}"))
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs.min(86_400.0)));
        }
    }
    None
}

async fn read_bounded(resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

impl Provider for HttpProvider {
    fn info(&self) -> &ProviderInfo {
        &self.info
    }

    fn embeddings(
        &self,
        req: tollway_core::EmbeddingsRequest,
    ) -> BoxFuture<'_, Result<tollway_core::EmbeddingsResponse, ProviderError>> {
        Box::pin(async move {
            let Some(url) = &self.embeddings_url else {
                return Err(ProviderError::unsupported(
                    "embeddings",
                    &self.label(&req.model),
                ));
            };
            let body = openai::encode_embeddings_request(&req);
            let resp = self.send_to(url, body, &req.model).await?;
            let buf = read_bounded(resp, MAX_UPSTREAM_BODY)
                .await
                .map_err(|e| self.transport_error(&e, &req.model))?;
            openai::decode_embeddings_response(&buf).map_err(|mut e| {
                e.message = format!("{} (from {})", e.message, self.label(&req.model));
                e
            })
        })
    }

    fn chat(&self, mut req: ChatRequest) -> BoxFuture<'_, Result<ChatResponse, ProviderError>> {
        Box::pin(async move {
            req.stream = false;
            let body = self.encode(&req)?;
            let resp = self.send(body, &req.model).await?;
            let mut stream = resp.bytes_stream();
            let mut buf = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.transport_error(&e, &req.model))?;
                if buf.len() + chunk.len() > MAX_UPSTREAM_BODY {
                    return Err(ProviderError::new(
                        ErrorKind::InvalidResponse,
                        format!(
                            "provider {} sent an answer over {MAX_UPSTREAM_BODY} bytes",
                            self.label(&req.model)
                        ),
                    ));
                }
                buf.extend_from_slice(&chunk);
            }
            let decoded = match self.info.family {
                ApiFamily::OpenAi => openai::decode_response(&buf),
                ApiFamily::Anthropic => anthropic::decode_response(&buf),
            };
            decoded.map_err(|mut e| {
                e.message = format!("{} (from {})", e.message, self.label(&req.model));
                e
            })
        })
    }

    fn chat_stream(
        &self,
        mut req: ChatRequest,
    ) -> BoxFuture<'_, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            req.stream = true;
            let body = self.encode(&req)?;
            let resp = self.send(body, &req.model).await?;
            let label = self.label(&req.model);
            let decoder = match self.info.family {
                ApiFamily::OpenAi => Decoder::OpenAi(openai::StreamDecoder::new()),
                ApiFamily::Anthropic => Decoder::Anthropic(anthropic::StreamDecoder::new()),
            };
            let state = UpstreamStream {
                bytes: Box::pin(resp.bytes_stream()),
                parser: SseParser::default(),
                decoder,
                pending: VecDeque::new(),
                idle: self.timeouts.idle(),
                idle_ms: self.timeouts.idle_ms,
                label,
                done: false,
            };
            let stream: EventStream = Box::pin(futures_util::stream::unfold(state, next_event));
            Ok(stream)
        })
    }
}

enum Decoder {
    OpenAi(openai::StreamDecoder),
    Anthropic(anthropic::StreamDecoder),
}

type ByteStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

/// An upstream SSE body being decoded: bytes → SSE events → canonical events, as they arrive.
struct UpstreamStream {
    bytes: ByteStream,
    parser: SseParser,
    decoder: Decoder,
    pending: VecDeque<Result<StreamEvent, ProviderError>>,
    idle: Duration,
    idle_ms: u64,
    label: String,
    done: bool,
}

impl UpstreamStream {
    fn queue(&mut self, r: Result<Vec<StreamEvent>, ProviderError>) {
        match r {
            Ok(events) => self.pending.extend(events.into_iter().map(Ok)),
            Err(mut e) => {
                e.message = format!("{} (from {})", e.message, self.label);
                self.pending.push_back(Err(e));
                self.done = true;
            }
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        match self.parser.push(chunk) {
            Ok(events) => {
                for ev in events {
                    let r = match &mut self.decoder {
                        Decoder::OpenAi(d) => d.feed(&ev),
                        Decoder::Anthropic(d) => d.feed(&ev),
                    };
                    self.queue(r);
                    if self.done {
                        return;
                    }
                }
            }
            Err(e) => self.queue(Err(e)),
        }
    }

    fn end(&mut self) {
        match self.parser.finish() {
            Ok(Some(ev)) => {
                let r = match &mut self.decoder {
                    Decoder::OpenAi(d) => d.feed(&ev),
                    Decoder::Anthropic(d) => d.feed(&ev),
                };
                self.queue(r);
            }
            Ok(None) => {}
            Err(e) => self.queue(Err(e)),
        }
        if !self.done {
            let r = match &mut self.decoder {
                Decoder::OpenAi(d) => d.finish(),
                Decoder::Anthropic(d) => d.finish(),
            };
            self.queue(r);
        }
        self.done = true;
    }
}

async fn next_event(
    mut s: UpstreamStream,
) -> Option<(Result<StreamEvent, ProviderError>, UpstreamStream)> {
    loop {
        if let Some(item) = s.pending.pop_front() {
            return Some((item, s));
        }
        if s.done {
            return None;
        }
        match tokio::time::timeout(s.idle, s.bytes.next()).await {
            Err(_) => {
                s.done = true;
                let e = ProviderError::new(
                    ErrorKind::Timeout,
                    format!(
                        "provider {} sent nothing for {} ms mid-stream",
                        s.label, s.idle_ms
                    ),
                );
                return Some((Err(e), s));
            }
            Ok(None) => s.end(),
            Ok(Some(Ok(chunk))) => s.feed(&chunk),
            Ok(Some(Err(e))) => {
                s.done = true;
                let kind = if e.is_timeout() {
                    ErrorKind::Timeout
                } else {
                    ErrorKind::Connection
                };
                let cause = std::error::Error::source(&e)
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| e.to_string());
                let err = ProviderError::new(
                    kind,
                    format!("stream from provider {} broke: {cause}", s.label),
                );
                return Some((Err(err), s));
            }
        }
    }
}
