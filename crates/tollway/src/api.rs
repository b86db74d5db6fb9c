//! The HTTP edge: the OpenAI- and Anthropic-compatible handlers, authentication, bounded body
//! reads, and every error rendered in the caller's API shape with the `x-tollway-*` headers.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use subtle::ConstantTimeEq;
use tollway_core::{ApiFamily, ErrorKind, EventStream, ProviderError};
use tollway_protocol::{anthropic, openai, responses};

use std::time::Instant;

use tollway_core::Usage;
use tollway_store::LedgerRow;

use std::sync::Arc;

use crate::accounts::Principal;
use crate::budgets::{Budget, Period, Reservation};
use crate::gateway::{self, Outcome, Spent, Waits};
use crate::prices::ModelPrice;
use crate::runtime::{Plan, RouteOptions, Runtime};
use crate::server::AppState;
use tollway_core::{ChatRequest, Micros};

// Header names as values built at compile time: inserting a `&str` name validates and parses it
// on every request (≈ 700 instructions per header).
pub const H_REQUEST_ID: HeaderName = HeaderName::from_static("x-tollway-request-id");
pub const H_MODEL: HeaderName = HeaderName::from_static("x-tollway-model");
pub const H_PROVIDER: HeaderName = HeaderName::from_static("x-tollway-provider");
pub const H_ATTEMPTS: HeaderName = HeaderName::from_static("x-tollway-attempts");
pub const H_ROUTE: HeaderName = HeaderName::from_static("x-tollway-route");
const H_SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");
/// Who counted a token count's tokens: `upstream` (the provider) or `local` (the gateway).
const H_TOKEN_COUNT: HeaderName = HeaderName::from_static("x-tollway-token-count");
const H_X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const H_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
const H_LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
const H_REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
const H_LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
const H_REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");

/// `req_` and a UUIDv7: time-ordered (milliseconds, then a counter, then random bits), so that the
/// ledger's primary-key index grows at its right edge. Random (v4) ids insert all over a B-tree
/// that soon outgrows the page cache: with a million rows in SQLite, 33.5 µs per row against
/// 5.5 µs (bench/RESULTS.md).
fn new_request_id() -> String {
    // written straight into a string of the right size, without the formatting machinery
    let mut hex = [0u8; uuid::fmt::Simple::LENGTH];
    let hex = uuid::Uuid::now_v7().simple().encode_lower(&mut hex);
    let mut id = String::with_capacity(4 + hex.len());
    id.push_str("req_");
    id.push_str(hex);
    id
}

/// An error on its way to the client, in the caller's API shape.
pub struct ApiError {
    pub family: ApiFamily,
    pub err: ProviderError,
    pub request_id: String,
    pub outcome: Option<Outcome>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.family {
            ApiFamily::OpenAi => openai::encode_error(&self.err),
            ApiFamily::Anthropic => anthropic::encode_error(&self.err),
        };
        // Anthropic clients know 529 as "overloaded"; OpenAI clients expect 503.
        let status = match (self.family, self.err.kind) {
            (ApiFamily::Anthropic, ErrorKind::Overloaded) => 529,
            _ => self.err.http_status(),
        };
        let mut resp = Response::new(Body::from(body));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.err.retry_after_secs() {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == 401 {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        set_ids(h, &self.request_id, self.outcome);
        resp
    }
}

/// The `x-tollway-*` headers, and the outcome's own (rate limits, cost), moved into the response.
fn set_ids(h: &mut HeaderMap, request_id: &str, outcome: Option<Outcome>) {
    // Room for every header below at once, rather than growing the map as they come, and for
    // three more (the answer's content type and the like, hyper's `content-length`): called on
    // an answer's empty map, this is its one allocation.
    h.reserve(8 + outcome.as_ref().map_or(0, |o| o.headers.len()));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(H_REQUEST_ID, v);
    }
    if let Some(o) = outcome {
        h.insert(H_ATTEMPTS, attempts_header(o.attempts));
        if let Some(v) = o.route.and_then(|r| HeaderValue::try_from(r).ok()) {
            h.insert(H_ROUTE, v);
        }
        for (name, value) in o.headers {
            h.insert(name, value);
        }
        if let Some(d) = &o.deployment {
            if let Some(v) = &d.label_header {
                h.insert(H_MODEL, v.clone());
            }
            if let Some(v) = &d.provider_header {
                h.insert(H_PROVIDER, v.clone());
            }
        }
    }
}

/// `x-tollway-attempts`: a static value for the usual counts (`HeaderValue::from` a number
/// allocates).
fn attempts_header(n: u32) -> HeaderValue {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match SMALL.get(n as usize) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(n),
    }
}

/// The client's key from `Authorization: Bearer` or `x-api-key`.
fn client_key(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.as_bytes();
        let prefix = b"bearer ";
        if v.len() > prefix.len() && v[..prefix.len()].eq_ignore_ascii_case(prefix) {
            return Some(trim_ascii(&v[prefix.len()..]));
        }
    }
    headers.get(H_X_API_KEY).map(|v| trim_ascii(v.as_bytes()))
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// Identifies the caller: the master key (constant-time comparison), a virtual key (by its hash,
/// from the cache), or nobody when no master key is configured (loopback only).
pub fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, ProviderError> {
    let rt = state.runtime();
    let given = client_key(headers);
    if let Some(secret) = given.and_then(|g| std::str::from_utf8(g).ok()) {
        if let Some(k) = state.accounts().lookup(secret)? {
            return Ok(Principal::Key(k));
        }
    }
    let Some(master) = rt.master_key() else {
        return Ok(Principal::Open);
    };
    let Some(given) = given else {
        return Err(ProviderError::new(
            ErrorKind::Authentication,
            "Missing API key: send it as `Authorization: Bearer KEY` or `x-api-key: KEY`.",
        ));
    };
    if bool::from(given.ct_eq(master.expose().as_bytes())) {
        Ok(Principal::Master)
    } else {
        Err(ProviderError::new(
            ErrorKind::Authentication,
            "Invalid API key.",
        ))
    }
}

/// Reads the body up to the configured limit: 413 beyond it.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ProviderError> {
    let limit = state.runtime().config.server.max_body_bytes;
    let too_large = || {
        ProviderError::new(
            ErrorKind::RequestTooLarge,
            format!("Request body is larger than the limit of {limit} bytes."),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_large());
        }
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        Err(e) => {
            // Over the limit, or the client went away while sending.
            let mut source: Option<&dyn std::error::Error> = Some(&e);
            while let Some(s) = source {
                if s.to_string().contains("length limit") {
                    return Err(too_large());
                }
                source = s.source();
            }
            Err(ProviderError::invalid(format!(
                "Could not read the request body: {e}"
            )))
        }
    }
}

pub async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    chat(state, Surface::ChatCompletions, headers, body).await
}

pub async fn messages(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    chat(state, Surface::Messages, headers, body).await
}

/// OpenAI's Responses API, stateless (`tollway_protocol::responses`).
pub async fn responses(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    chat(state, Surface::Responses, headers, body).await
}

/// The client API a chat request came in by: how it is decoded and answered. Errors, metrics
/// and the ledger go by its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Surface {
    ChatCompletions,
    Messages,
    Responses,
}

impl Surface {
    /// Its path (the span's `http.route`).
    fn route(self) -> &'static str {
        match self {
            Surface::ChatCompletions => "/v1/chat/completions",
            Surface::Messages => "/v1/messages",
            Surface::Responses => "/v1/responses",
        }
    }

    fn family(self) -> ApiFamily {
        match self {
            Surface::ChatCompletions | Surface::Responses => ApiFamily::OpenAi,
            Surface::Messages => ApiFamily::Anthropic,
        }
    }
}

async fn chat(state: AppState, surface: Surface, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let waits = Waits::default();
    let family = surface.family();
    let mut resp = chat_inner(&state, surface, headers, body, &waits, started).await;
    let stream = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let spent = waits.split(started.elapsed());
    state.metrics().timing(family, stream, &spent);
    if let Ok(v) = HeaderValue::try_from(server_timing(&spent)) {
        resp.headers_mut().insert(H_SERVER_TIMING, v);
    }
    count(&state, family, &resp);
    resp
}

/// `server-timing` (W3C Server Timing, shown by browsers' developer tools): the gateway's own
/// time, the upstreams' and any backoff, in milliseconds, as `/metrics` counts them.
fn server_timing(s: &Spent) -> String {
    let mut v = String::with_capacity(72);
    for (name, d) in [
        ("gateway", s.own),
        ("upstream", s.upstream),
        ("backoff", s.backoff),
    ] {
        if name != "gateway" && d.is_zero() {
            continue;
        }
        if !v.is_empty() {
            v.push_str(", ");
        }
        v.push_str(name);
        v.push_str(";dur=");
        // integer digits: formatting the u128 of `as_micros` costs more than the rest together
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        v.push_str(itoa::Buffer::new().format(us / 1000));
        v.push('.');
        let frac = us % 1000;
        for digit in [frac / 100, frac / 10 % 10, frac % 10] {
            v.push(char::from(b'0' + digit as u8));
        }
    }
    v
}

/// Counts an answered request in the metrics (status and upstream attempts).
fn count(state: &AppState, family: ApiFamily, resp: &Response) {
    let attempts = resp
        .headers()
        .get(H_ATTEMPTS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    state
        .metrics()
        .request(family, resp.status().as_u16(), attempts);
}

/// The ledger row of one request, recorded when dropped: a stream the client abandons, or a
/// request that fails anywhere, is still recorded, with the usage seen so far.
struct Charge {
    state: AppState,
    row: Option<LedgerRow>,
    started: Instant,
    /// Rate-limit scopes whose token counters this request's usage feeds.
    token_scopes: Vec<Arc<str>>,
    usage: Usage,
    /// The answering deployment's price (`None`: unknown).
    price: Option<Arc<ModelPrice>>,
    /// The request and the answer's text (its first `tokens::EXACT_BYTES`), to count tokens
    /// locally when the provider reports no usage.
    request: Option<Arc<ChatRequest>>,
    output: crate::tokens::Gathered,
    /// Budget reservations, settled with the real cost when the request ends.
    reservation: Option<Reservation>,
    /// Redis, when this request's limits or budgets went through it.
    shared: Option<Arc<crate::shared::Shared>>,
    shared_reservation: Option<crate::shared::SharedReservation>,
    /// Answered from the response cache: recorded with no tokens and no cost.
    cached: bool,
    /// An embeddings answer arrived: with no usage reported, its inputs are counted though it
    /// has no output text.
    embedded: bool,
    /// The request's trace (its span is recorded with the row): the operation (`chat`,
    /// `embeddings`) and the route.
    trace: Option<(crate::telemetry::RequestTrace, &'static str, &'static str)>,
}

pub const H_COST: HeaderName = HeaderName::from_static("x-tollway-cost-usd");

/// A stream's scratch buffer grown past this by one large event is let go afterwards.
const MAX_KEPT_SCRATCH: usize = 64 << 10;

impl Charge {
    fn new(
        state: &AppState,
        request_id: &str,
        family: ApiFamily,
        principal: &Principal,
        model: &str,
        stream: bool,
    ) -> Charge {
        let key = principal.key();
        Charge {
            state: state.clone(),
            row: Some(LedgerRow {
                request_id: request_id.to_string(),
                ts_ms: tollway_store::now_ms(),
                key_id: key.map(|k| k.id.clone()),
                team: key.and_then(|k| k.team.clone()),
                model: model.to_string(),
                api: family.as_str().to_string(),
                stream,
                // until the request finishes: "client closed request"
                status: 499,
                ..LedgerRow::default()
            }),
            started: Instant::now(),
            token_scopes: Vec::new(),
            usage: Usage::default(),
            price: None,
            request: None,
            output: crate::tokens::Gathered::default(),
            reservation: None,
            shared: None,
            shared_reservation: None,
            cached: false,
            embedded: false,
            trace: None,
        }
    }

    fn keep_output(&mut self, text: &str) {
        self.output.push(text);
    }

    /// The usage to bill: the provider's, or (when it reported none for an answer: output text,
    /// or embeddings) a local count, flagged as estimated.
    fn billed_usage(&self) -> (Usage, bool) {
        if self.usage.total_tokens() > 0 || (self.output.is_empty() && !self.embedded) {
            return (self.usage, false);
        }
        let input = self.request.as_deref().map_or(0, crate::tokens::prompt);
        let output = self.output.count();
        (
            Usage {
                input_tokens: input,
                output_tokens: output,
                ..Usage::default()
            },
            true,
        )
    }

    /// The cost of `usage` at the answering deployment's price, as a decimal string.
    fn cost_text(&self, usage: &Usage) -> Option<tollway_core::money::Dollars> {
        if self.cached {
            return Some(Micros(0).dollars());
        }
        self.price
            .as_ref()
            .map(|p| p.cost(usage).micros().dollars())
    }

    /// `x-tollway-cost-usd`: the cost, or `unknown` when the deployment has no price.
    fn cost_header(&self, usage: &Usage) -> HeaderValue {
        self.cost_text(usage)
            .and_then(|t| HeaderValue::from_str(t.as_str()).ok())
            .unwrap_or(HeaderValue::from_static("unknown"))
    }

    fn outcome(&mut self, status: u16, outcome: &Outcome) {
        if let Some(row) = self.row.as_mut() {
            row.status = i64::from(status);
            row.attempts = i64::from(outcome.attempts);
            if let Some(d) = &outcome.deployment {
                row.provider.clone_from(&d.provider_name);
                row.deployment.clone_from(&d.label);
                self.price.clone_from(&d.price);
            }
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let Some(mut row) = self.row.take() else {
            return;
        };
        let (mut u, estimated) = self.billed_usage();
        row.cost_estimated = estimated;
        row.cost_micros = self.price.as_ref().map(|p| p.cost(&u).micros().0);
        if self.cached {
            // no provider was asked: nothing spent, no tokens used
            u = Usage::default();
            row.cost_estimated = false;
            row.cost_micros = Some(0);
            row.cache_hit = true;
        }
        if let Some(r) = self.reservation.take() {
            r.settle(row.cost_micros.map(Micros));
        }
        if let (Some(sh), Some(r)) = (self.shared.clone(), self.shared_reservation.take()) {
            let cost = row.cost_micros.unwrap_or(0);
            tokio::spawn(async move { sh.settle(&r, cost).await });
        }
        row.latency_ms = self.started.elapsed().as_millis() as i64;
        row.input_tokens = u.input_tokens as i64;
        row.output_tokens = u.output_tokens as i64;
        row.cache_read_tokens = u.cache_read_tokens as i64;
        row.cache_write_tokens = u.cache_write_tokens as i64;
        row.reasoning_tokens = u.reasoning_tokens as i64;
        let accounts = self.state.accounts();
        let now = Instant::now();
        for scope in &self.token_scopes {
            accounts.limits().add_tokens(scope, u.total_tokens(), now);
        }
        if let Some((t, op, route)) = self.trace.take() {
            let attrs = crate::telemetry::request_attrs(&row, op, route, self.request.as_deref());
            let error = (row.status >= 500).then(|| format!("HTTP {}", row.status));
            t.finish(format!("{op} {}", row.model), attrs, error);
        }
        if let Some(sh) = self.shared.clone() {
            let scopes = std::mem::take(&mut self.token_scopes);
            let tokens = u.total_tokens();
            if !scopes.is_empty() && tokens > 0 {
                tokio::spawn(async move {
                    for s in scopes {
                        sh.add_tokens(&s, tokens).await;
                    }
                });
            }
        }
        accounts.record(row);
    }
}

/// The client's Anthropic beta features (`anthropic-beta: a,b`, in one header or several), which
/// Anthropic-format upstreams get.
fn betas(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(str::to_string)
        .collect()
}

/// The router's choice when `req.model` names a router (`None` otherwise).
async fn choose(
    rt: &Arc<Runtime>,
    req: &ChatRequest,
    headers: &HeaderMap,
    principal: &Principal,
) -> Option<crate::rules::RouteChoice> {
    fn caller(p: &Principal) -> crate::rules::Caller<'_> {
        crate::rules::Caller {
            key: p.key().map(|k| k.id.as_str()),
            team: p.key().and_then(|k| k.team.as_deref()),
            routing: p.key().map(|k| &k.routing).filter(|m| !m.is_empty()),
        }
    }
    if rt.route_is_heavy(&req.model) {
        // an encoder forward pass takes milliseconds: run it on the blocking pool
        let (rt2, req2, headers2, p2) =
            (rt.clone(), req.clone(), headers.clone(), principal.clone());
        tokio::task::spawn_blocking(move || rt2.route(&req2, &headers2, caller(&p2)))
            .await
            .ok()
            .flatten()
    } else {
        rt.route(req, headers, caller(principal))
    }
}

/// The key's policy: the models it may use (403 for `requested` or a model in the request's
/// `models` list it may not use), and the providers and regions it is bound to (into `opts`).
fn key_policy(
    principal: &Principal,
    requested: &str,
    opts: &mut RouteOptions,
) -> Result<(), ProviderError> {
    let Some(k) = principal.key() else {
        return Ok(());
    };
    for m in std::iter::once(requested).chain(opts.models.iter().map(String::as_str)) {
        if !principal.may_use(m) {
            return Err(permission(format!(
                "The API key {} may not use the model `{m}`.",
                k.prefix
            ))
            .with_param("model"));
        }
    }
    if !k.providers.is_empty() {
        opts.policy_only = Some(k.providers.clone());
    }
    if !k.regions.is_empty() {
        opts.policy_regions = Some(k.regions.clone());
    }
    Ok(())
}

fn permission(msg: String) -> ProviderError {
    ProviderError::new(ErrorKind::PermissionDenied, msg)
}

/// A limit scope's name, `KIND:NAME` (`key:ID`, `team:NAME`, `model:NAME`): the key of the rate
/// windows, budget counters and shared-state entries.
/// The scope of the global budget, made once.
fn global_scope() -> Arc<str> {
    static GLOBAL: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    GLOBAL.get_or_init(|| Arc::from("global")).clone()
}

/// The `x-ratelimit-*` headers of the tightest limits (the ones a client should pace itself by).
/// Their values are slices of one buffer (`HeaderValue::from(u64)` allocates twice per value).
fn limit_headers(h: &mut Vec<(HeaderName, HeaderValue)>, st: &crate::accounts::LimitState) {
    let fields = [
        st.requests.map(|(limit, _)| (H_LIMIT_REQUESTS, limit)),
        st.requests.map(|(_, left)| (H_REMAINING_REQUESTS, left)),
        st.tokens.map(|(limit, _)| (H_LIMIT_TOKENS, limit)),
        st.tokens.map(|(_, left)| (H_REMAINING_TOKENS, left)),
    ];
    let mut text = Vec::with_capacity(4 * 20); // 20: the digits of u64::MAX
    let mut spans = [(0, 0); 4];
    for (f, span) in fields.iter().zip(spans.iter_mut()) {
        if let Some((_, n)) = f {
            let start = text.len();
            text.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes());
            *span = (start, text.len());
        }
    }
    if text.is_empty() {
        return;
    }
    let text = bytes::Bytes::from(text);
    for (f, (start, end)) in fields.into_iter().zip(spans) {
        if let Some((name, _)) = f {
            if let Ok(v) = HeaderValue::from_maybe_shared(text.slice(start..end)) {
                h.push((name, v));
            }
        }
    }
}

/// What [`admit`] let through: the rate-limit headers, and the deployment plan when budgets
/// needed it (the gateway then does not plan again).
struct Admitted {
    headers: Vec<(HeaderName, HeaderValue)>,
    plan: Option<Plan>,
}

/// The response cache's part in one request (`cache` in the config): its key, what the request
/// allows, and where answers are kept.
struct CacheUse {
    key: crate::cache::Key,
    directives: crate::cache::Directives,
    ttl: std::time::Duration,
    max_entry_bytes: usize,
    /// Redis, when answers are shared between instances.
    shared: Option<Arc<crate::shared::Shared>>,
}

impl CacheUse {
    /// `None` when caching is off, or off for `model` (the model group the request goes to,
    /// after any router). `key` keys the request in a namespace. A cache header that cannot be
    /// read is a 400.
    fn of(
        state: &AppState,
        rt: &Runtime,
        principal: &Principal,
        model: &str,
        opts: &RouteOptions,
        headers: &HeaderMap,
        key: impl FnOnce(&str) -> crate::cache::Key,
    ) -> Result<Option<CacheUse>, ProviderError> {
        let Some(cfg) = rt.config.cache.as_ref() else {
            return Ok(None);
        };
        let asked = headers.contains_key(header::CACHE_CONTROL)
            || headers.contains_key(crate::cache::H_CACHE_TTL);
        let model = rt.config.models.get(model).and_then(|m| m.cache);
        if !model.unwrap_or(!cfg.opt_in || asked) {
            return Ok(None);
        }
        let directives = crate::cache::Directives::of(headers).map_err(ProviderError::invalid)?;
        let mut namespace = match (cfg.scope, principal.key()) {
            (crate::cache::Scope::Global, _) => "global".to_string(),
            (_, None) => "master".to_string(),
            (crate::cache::Scope::Team, Some(k)) if k.team.is_some() => {
                format!("team:{}", k.team.as_deref().unwrap_or_default())
            }
            (_, Some(k)) => format!("key:{}", k.id),
        };
        // Which deployments may answer is part of the request: an answer another provider or
        // region gave does not serve a request (or a key) that rules it out.
        let unrestricted = RouteOptions {
            allow_fallbacks: true,
            ..RouteOptions::default()
        };
        if *opts != unrestricted {
            namespace.push_str(&format!("|{opts:?}"));
        }
        Ok(Some(CacheUse {
            key: key(&namespace),
            directives,
            ttl: directives.ttl.unwrap_or(cfg.ttl),
            max_entry_bytes: cfg.max_entry_bytes,
            shared: cfg
                .shared
                .then(|| state.accounts().shared())
                .flatten()
                .filter(|s| s.should_try()),
        }))
    }

    /// A kept answer the request may have: this instance's, else (when shared) Redis's.
    async fn lookup(&self, state: &AppState) -> Option<Arc<crate::cache::Entry>> {
        if !self.directives.read {
            return None;
        }
        let cache = state.cache();
        let now = tollway_store::now_ms();
        let mut found = cache.get(&self.key, now, self.directives.max_age);
        if found.is_none() {
            if let Some(sh) = &self.shared {
                if let Some(e) = sh
                    .cache_get(&self.key)
                    .await
                    .and_then(|b| crate::cache::decode(&b))
                    .filter(|e| e.expires_ms > now)
                {
                    let e = Arc::new(e);
                    cache.put(self.key, e.clone());
                    found = Some(e).filter(|e| {
                        self.directives
                            .max_age
                            .is_none_or(|m| now - e.stored_ms <= m.as_millis() as i64)
                    });
                }
            }
        }
        cache.count(found.is_some());
        found
    }

    /// Keeps an answer (here, and in Redis when shared), unless it is too large or incomplete.
    fn keep(
        &self,
        state: &AppState,
        answer: crate::cache::Answer,
        provider: &str,
        deployment: &str,
    ) {
        if self.ttl.is_zero() || !answer.keepable() {
            return;
        }
        let now = tollway_store::now_ms();
        let entry = crate::cache::Entry {
            answer,
            provider: provider.to_string(),
            deployment: deployment.to_string(),
            stored_ms: now,
            expires_ms: now.saturating_add(i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)),
        };
        if entry.size() > self.max_entry_bytes {
            return;
        }
        if let Some(sh) = self.shared.clone() {
            if let Some(bytes) = crate::cache::encode(&entry) {
                let (key, ttl) = (
                    self.key,
                    u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX),
                );
                tokio::spawn(async move { sh.cache_put(&key, bytes, ttl).await });
            }
        }
        state.cache().put(self.key, Arc::new(entry));
    }
}

/// Marks a request answered from the cache: its ledger row (no attempt, the first answer's
/// deployment, no cost) and its headers (`x-tollway-cache: hit`, `age`, the deployment, cost 0).
fn hit(charge: &mut Charge, outcome: &mut Outcome, entry: &crate::cache::Entry) {
    charge.cached = true;
    if let Some(row) = charge.row.as_mut() {
        row.status = 200;
        row.attempts = 0;
        row.provider.clone_from(&entry.provider);
        row.deployment.clone_from(&entry.deployment);
    }
    let h = &mut outcome.headers;
    h.push((crate::cache::H_CACHE, HeaderValue::from_static("hit")));
    h.push((
        header::AGE,
        HeaderValue::from(entry.age_secs(tollway_store::now_ms())),
    ));
    for (name, v) in [(H_MODEL, &entry.deployment), (H_PROVIDER, &entry.provider)] {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.push((name, v));
        }
    }
    h.push((H_COST, charge.cost_header(&Usage::default())));
}

/// A chat answer (`entry`'s) from the response cache, in the client's format (a stream when it
/// asked for one).
fn cached_answer(
    surface: Surface,
    req: &ChatRequest,
    entry: &crate::cache::Entry,
    answer: &tollway_core::ChatResponse,
    mut charge: Charge,
    mut outcome: Outcome,
    request_id: &str,
) -> Response {
    hit(&mut charge, &mut outcome, entry);
    if req.stream {
        let settings = (surface == Surface::Responses).then(|| responses::Settings::of(req));
        let events = crate::cache::replay(answer);
        return sse_response(
            Encoder::new(surface, req.include_usage, settings),
            Box::pin(futures_util::stream::iter(events.into_iter().map(Ok))),
            charge,
            request_id,
            outcome,
            None,
        );
    }
    charge.usage = answer.usage;
    let body = match surface {
        Surface::ChatCompletions => openai::encode_response(answer),
        Surface::Messages => anthropic::encode_response(answer),
        Surface::Responses => responses::encode_response(answer, &responses::Settings::of(req)),
    };
    let mut resp = Response::new(Body::from(body));
    set_ids(resp.headers_mut(), request_id, Some(outcome));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Applies the caller's policy, rate limits (key, team, model) and budgets (key, team, global)
/// to a request bound for `target` (the model group after any router); the headers for its limits.
async fn admit(
    state: &AppState,
    rt: &Runtime,
    principal: &Principal,
    req: &ChatRequest,
    requested: &str,
    opts: &mut RouteOptions,
    charge: &mut Charge,
) -> Result<Admitted, ProviderError> {
    key_policy(principal, requested, opts)?;
    let key = principal.key();
    let accounts = state.accounts();
    let team = key
        .and_then(|k| k.team.as_deref())
        .and_then(|t| rt.config.teams.get(t).map(|tc| (t, tc)));
    let model_cfg = rt.config.models.get(&req.model);
    let mut scopes: Vec<(Arc<str>, Option<u64>, Option<u64>)> = Vec::with_capacity(3);
    if let Some(k) = key {
        scopes.push((k.limit_scope.clone(), k.rpm, k.tpm));
    }
    if let Some((_, tc)) = team {
        scopes.push((tc.limit_scope.clone(), tc.rpm, tc.tpm));
    }
    if let Some(mc) = model_cfg {
        scopes.push((mc.limit_scope.clone(), mc.rpm, mc.tpm));
    }
    let mut tightest = crate::accounts::LimitState::default();
    let now = Instant::now();
    let shared = accounts.shared().filter(|s| s.should_try());
    // All or nothing, in Redis when it is shared, else (or when Redis fails) locally: a request
    // one limit refuses is counted against none of the others.
    let from_redis = match &shared {
        Some(sh) if scopes.iter().any(|(_, r, t)| r.is_some() || t.is_some()) => {
            match sh.admit_all(&scopes).await {
                Ok(states) => Some(states),
                Err(Some((i, what, limit))) => {
                    let scope = scopes.get(i).map_or("", |s| &*s.0);
                    return Err(ProviderError::new(
                        ErrorKind::RateLimited,
                        format!("Rate limit reached for {scope}: {limit} {what} per minute (shared across instances). Retry in up to 60 s."),
                    )
                    .with_retry(tollway_core::Retry::After(std::time::Duration::from_secs(
                        60 - (tollway_store::now_ms().rem_euclid(60_000) / 1000) as u64,
                    ))));
                }
                Err(None) => None, // Redis failed: the local state below
            }
        }
        _ => None,
    };
    let states = match from_redis {
        Some(states) => {
            charge.shared = shared.clone();
            states
        }
        None => accounts.limits().admit_all(&scopes, now)?,
    };
    for st in &states {
        tightest.tighten(st);
    }
    charge.token_scopes.extend(
        scopes
            .into_iter()
            .filter(|(_, _, tpm)| tpm.is_some())
            .map(|(scope, _, _)| scope),
    );
    let mut h = Vec::with_capacity(4);
    limit_headers(&mut h, &tightest);
    let mut planned = None;

    let mut budgets = Vec::with_capacity(3);
    if let Some(k) = key {
        if let (Some(limit), Some(period)) = (
            k.budget_micros,
            k.budget_period.as_deref().and_then(Period::parse),
        ) {
            budgets.push(Budget {
                scope: k.limit_scope.clone(),
                limit: Micros(limit),
                period,
                hard: true,
            });
        }
    }
    if let Some((_, tc)) = team {
        if let Some(b) = &tc.budget {
            budgets.push(Budget {
                scope: tc.limit_scope.clone(),
                limit: b.limit,
                period: b.period,
                hard: b.hard,
            });
        }
    }
    if let Some(b) = &rt.config.global_budget {
        budgets.push(Budget {
            scope: global_scope(),
            limit: b.limit,
            period: b.period,
            hard: b.hard,
        });
    }
    if !budgets.is_empty() {
        accounts
            .budgets()
            .prime(accounts.store(), &budgets)
            .await
            .map_err(storage_error)?;
        // The worst case over the deployments this request may reach.
        let prompt_bound = crate::rules::prompt_token_bound(req);
        let max_out = u64::from(
            req.max_tokens
                .unwrap_or(tollway_protocol::anthropic::DEFAULT_MAX_TOKENS),
        );
        // the plan is kept for the gateway, which would otherwise make it again
        let plan = rt.plan(&req.model, opts).ok();
        let ceiling = plan
            .as_ref()
            .and_then(|p| {
                p.tries
                    .iter()
                    .filter_map(|d| d.price.as_ref())
                    .map(|p| p.ceiling(prompt_bound, max_out))
                    .max()
            })
            .unwrap_or_default();
        planned = plan;
        if let Some(sh) = &shared {
            let mut seeds = Vec::with_capacity(budgets.len());
            for b in &budgets {
                let seed = if sh.needs_seed(b) {
                    let (start, _) = b.period.window(tollway_store::now_ms());
                    let (k, t) = match b.scope.split_once(':') {
                        Some(("key", id)) => (Some(id), None),
                        Some(("team", t)) => (None, Some(t)),
                        _ => (None, None),
                    };
                    accounts
                        .store()
                        .spend_micros(k, t, start)
                        .await
                        .map_err(storage_error)?
                } else {
                    0
                };
                seeds.push(seed);
            }
            match sh.reserve(&budgets, ceiling, &seeds).await {
                Ok(crate::shared::Reserved::Ok(r, alerts)) => {
                    for b in alerts {
                        accounts.budgets().alert(b);
                    }
                    charge.shared = Some(sh.clone());
                    charge.shared_reservation = Some(r);
                    return Ok(Admitted {
                        headers: h,
                        plan: planned,
                    });
                }
                Ok(crate::shared::Reserved::Refused(i)) => {
                    let b = &budgets[i.min(budgets.len() - 1)];
                    let (_, end) = b.period.window(tollway_store::now_ms());
                    return Err(crate::budgets::exhausted(b, end, tollway_store::now_ms()));
                }
                Err(()) => {} // Redis failed: local state below
            }
        }
        charge.reservation = Some(accounts.budgets().reserve(&budgets, ceiling)?);
    }
    Ok(Admitted {
        headers: h,
        plan: planned,
    })
}

async fn chat_inner(
    state: &AppState,
    surface: Surface,
    headers: HeaderMap,
    body: Body,
    waits: &Waits,
    started: Instant,
) -> Response {
    let family = surface.family();
    let request_id = new_request_id();
    let fail = |err: ProviderError, outcome: Option<Outcome>| {
        ApiError {
            family,
            err,
            request_id: request_id.clone(),
            outcome,
        }
        .into_response()
    };
    let principal = match authenticate(state, &headers) {
        Ok(p) => p,
        Err(e) => return fail(e, None),
    };
    let bytes =
        match tollway_providers::timed(&waits.client, read_body(state, &headers, body)).await {
            Ok(b) => b,
            Err(e) => return fail(e, None),
        };
    let decoded = match surface {
        Surface::ChatCompletions => openai::decode_request(&bytes),
        Surface::Messages => anthropic::decode_request(&bytes),
        Surface::Responses => responses::decode_request(&bytes),
    };
    // The decoded request holds what is needed: the raw body (megabytes, with images) is not
    // kept while the request waits on the upstream.
    drop(bytes);
    let mut req = match decoded {
        Ok(r) => r,
        Err(e) => return fail(e, None),
    };
    req.betas = betas(&headers);
    let mut opts = match RouteOptions::take(&mut req.extra.fields) {
        Ok(o) => o,
        Err(e) => return fail(e, None),
    };
    let mut charge = Charge::new(
        state,
        &request_id,
        family,
        &principal,
        &req.model,
        req.stream,
    );
    let mut outcome = Outcome::default();
    // Hold the runtime for the whole request: a reload swaps in a new one without disturbing it.
    let rt = state.runtime();
    if let Some(mut t) = state.trace(&rt, &headers) {
        // the span starts when the request did, not when its body was read
        t.start_ns = t
            .start_ns
            .saturating_sub(started.elapsed().as_nanos() as u64);
        outcome.headers.push(t.response_header());
        outcome.trace = Some(t.clone());
        charge.trace = Some((t, "chat", surface.route()));
    }
    let requested = req.model.clone();
    if let Some(choice) = choose(&rt, &req, &headers, &principal).await {
        if let Some((prompt, score, strong)) = choice.log {
            let store = state.accounts().store().clone();
            let (id, router, target) =
                (request_id.clone(), requested.clone(), choice.target.clone());
            // off the request path; a lost log line only costs a training example
            tokio::spawn(async move {
                if let Err(e) = store
                    .log_routing(&id, &router, &prompt, score, strong, &target)
                    .await
                {
                    tracing::warn!(error = %e, "could not log a routing decision");
                }
            });
        }
        req.model = choice.target;
        outcome.route = Some(choice.why);
    }
    let planned = match admit(
        state,
        &rt,
        &principal,
        &req,
        &requested,
        &mut opts,
        &mut charge,
    )
    .await
    {
        Ok(a) => {
            outcome.headers.extend(a.headers);
            a.plan
        }
        Err(e) => {
            let status = e.http_status();
            charge.outcome(status, &outcome);
            return fail(e, Some(outcome));
        }
    };
    let cache_use = match CacheUse::of(state, &rt, &principal, &req.model, &opts, &headers, |ns| {
        crate::cache::key(&req, ns)
    }) {
        Ok(c) => c,
        Err(e) => {
            charge.outcome(e.http_status(), &outcome);
            return fail(e, Some(outcome));
        }
    };
    if let Some(cu) = &cache_use {
        if let Some(entry) = cu.lookup(state).await {
            if let crate::cache::Answer::Chat(answer) = &entry.answer {
                let (c, o, id) = (charge, outcome, &request_id);
                return cached_answer(surface, &req, &entry, answer, c, o, id);
            }
        }
        outcome
            .headers
            .push((crate::cache::H_CACHE, cu.directives.status()));
    }
    let req = Arc::new(req);
    charge.request = Some(req.clone());
    if req.stream {
        let include_usage = req.include_usage;
        let settings = (surface == Surface::Responses).then(|| responses::Settings::of(&req));
        match gateway::chat_stream(&rt, &req, &opts, planned, &mut outcome, waits).await {
            Ok(stream) => {
                charge.outcome(499, &outcome);
                let keep = cache_use
                    .filter(|cu| cu.directives.write)
                    .zip(outcome.deployment.as_ref())
                    .map(|(cu, d)| Keep {
                        collector: crate::cache::Collector::new(cu.max_entry_bytes),
                        provider: d.provider_name.clone(),
                        deployment: d.label.clone(),
                        cache: cu,
                    });
                sse_response(
                    Encoder::new(surface, include_usage, settings),
                    stream,
                    charge,
                    &request_id,
                    outcome,
                    keep,
                )
            }
            Err(e) => {
                charge.outcome(e.http_status(), &outcome);
                fail(e, Some(outcome))
            }
        }
    } else {
        match gateway::chat(&rt, &req, &opts, planned, &mut outcome, waits).await {
            Ok(answer) => {
                charge.usage = answer.usage;
                if answer.usage.total_tokens() == 0 {
                    for p in &answer.content {
                        match p {
                            tollway_core::Part::Text { text, .. } => charge.keep_output(text),
                            tollway_core::Part::ToolCall(c) => {
                                charge.keep_output(&c.name);
                                charge.keep_output(&c.arguments);
                            }
                            _ => {}
                        }
                    }
                }
                charge.outcome(200, &outcome);
                if let (Some(cu), Some(d)) = (&cache_use, &outcome.deployment) {
                    if cu.directives.write {
                        let kept = crate::cache::Answer::Chat(answer.clone());
                        cu.keep(state, kept, &d.provider_name, &d.label);
                    }
                }
                let (billed, _) = charge.billed_usage();
                outcome.headers.push((H_COST, charge.cost_header(&billed)));
                let body = match surface {
                    Surface::ChatCompletions => openai::encode_response(&answer),
                    Surface::Messages => anthropic::encode_response(&answer),
                    Surface::Responses => {
                        responses::encode_response(&answer, &responses::Settings::of(&req))
                    }
                };
                let mut resp = Response::new(Body::from(body));
                set_ids(resp.headers_mut(), &request_id, Some(outcome));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                resp
            }
            Err(e) => {
                charge.outcome(e.http_status(), &outcome);
                fail(e, Some(outcome))
            }
        }
    }
}

/// A response body that pauses once, right after its first frame.
///
/// hyper takes frames from a body for as long as the body has them ready, up to 16 (its write
/// queue), before it writes. When the upstream sends a burst (several events in one read), the
/// first event would wait for 15 more to be decoded and encoded before any byte went out. Pending
/// once after the first frame (with a wake-up, so the body is polled again at once) lets hyper
/// write the head and the first event now; later bursts are still written 16 events at a time.
struct FirstAlone<S> {
    inner: S,
    stage: Stage,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Nothing yielded yet.
    First,
    /// The first frame went out: pause once.
    Pause,
    Flowing,
}

impl<S> FirstAlone<S> {
    fn new(inner: S) -> Self {
        FirstAlone {
            inner,
            stage: Stage::First,
        }
    }
}

impl<S: futures_util::Stream + Unpin> futures_util::Stream for FirstAlone<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        if self.stage == Stage::Pause {
            self.stage = Stage::Flowing;
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        let item = self.inner.poll_next_unpin(cx);
        if self.stage == Stage::First && matches!(item, std::task::Poll::Ready(Some(_))) {
            self.stage = Stage::Pause;
        }
        item
    }
}

/// The client's stream encoder, in its API's format.
enum Encoder {
    OpenAi(openai::StreamEncoder),
    Anthropic(anthropic::StreamEncoder),
    Responses(responses::StreamEncoder),
}

impl Encoder {
    /// `settings`: a Responses request's ([`responses::Settings::of`]), which its answer repeats.
    fn new(surface: Surface, include_usage: bool, settings: Option<responses::Settings>) -> Self {
        match surface {
            Surface::ChatCompletions => Encoder::OpenAi(openai::StreamEncoder::new(include_usage)),
            Surface::Messages => Encoder::Anthropic(anthropic::StreamEncoder::new(include_usage)),
            Surface::Responses => {
                Encoder::Responses(responses::StreamEncoder::new(settings.unwrap_or_default()))
            }
        }
    }

    /// Encodes one event; the usage seen so far.
    fn push(&mut self, ev: &tollway_core::StreamEvent, out: &mut Vec<u8>) -> Usage {
        match self {
            Encoder::OpenAi(e) => {
                e.push(ev, out);
                e.usage()
            }
            Encoder::Anthropic(e) => {
                e.push(ev, out);
                e.usage()
            }
            Encoder::Responses(e) => {
                e.push(ev, out);
                e.usage()
            }
        }
    }

    fn error(&mut self, err: &ProviderError, out: &mut Vec<u8>) {
        match self {
            Encoder::OpenAi(e) => e.error(err, out),
            Encoder::Anthropic(e) => e.error(err, out),
            Encoder::Responses(e) => e.error(err, out),
        }
    }

    /// The end of the stream, with the request's cost in its final usage.
    fn finish(&mut self, cost: Option<String>, out: &mut Vec<u8>) {
        match self {
            Encoder::OpenAi(e) => {
                e.set_cost_usd(cost);
                e.finish(out)
            }
            Encoder::Anthropic(e) => {
                e.set_cost_usd(cost);
                e.finish(out)
            }
            Encoder::Responses(e) => {
                e.set_cost_usd(cost);
                e.finish(out)
            }
        }
    }
}

struct SseState {
    upstream: EventStream,
    encoder: Encoder,
    done: bool,
    charge: Charge,
    scratch: Vec<u8>,
    /// Gathers the answer for the response cache, when it is to be kept.
    keep: Option<Keep>,
}

/// A streamed answer on its way into the response cache.
struct Keep {
    cache: CacheUse,
    collector: crate::cache::Collector,
    provider: String,
    deployment: String,
}

/// The client's SSE body: each upstream event encoded as it arrives. A hand-written `poll_next`
/// rather than an `unfold`, which would move this state (the ledger row's `Charge` included) into
/// a new future and back for every event.
impl futures_util::Stream for SseState {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let s = self.get_mut();
        loop {
            if s.done {
                return Poll::Ready(None);
            }
            let next = match s.upstream.poll_next_unpin(cx) {
                Poll::Ready(next) => next,
                Poll::Pending => return Poll::Pending,
            };
            // each event is encoded into the stream's one scratch buffer, then copied out at its
            // exact size (a `Vec` handed to `Bytes` costs a second allocation when it has spare room)
            let out = &mut s.scratch;
            out.clear();
            match next {
                Some(Ok(ev)) => {
                    match &ev {
                        tollway_core::StreamEvent::TextDelta { text, .. } => {
                            s.charge.keep_output(text)
                        }
                        tollway_core::StreamEvent::ToolCallDelta { arguments, .. } => {
                            s.charge.keep_output(arguments)
                        }
                        _ => {}
                    }
                    s.charge.usage = s.encoder.push(&ev, out);
                    if let Some(k) = &mut s.keep {
                        k.collector.push(&ev);
                    }
                }
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "upstream stream failed after the first byte");
                    s.encoder.error(&err, out);
                    s.keep = None;
                    if let Some(row) = s.charge.row.as_mut() {
                        row.status = i64::from(err.http_status());
                    }
                    s.done = true;
                }
                None => {
                    let (billed, _) = s.charge.billed_usage();
                    let cost = s.charge.cost_text(&billed).map(|t| t.as_str().to_owned());
                    s.encoder.finish(cost, out);
                    if let Some(row) = s.charge.row.as_mut() {
                        row.status = 200;
                    }
                    if let Some(k) = s.keep.take() {
                        if let Some(answer) = k.collector.finish() {
                            let kept = crate::cache::Answer::Chat(answer);
                            k.cache
                                .keep(&s.charge.state, kept, &k.provider, &k.deployment);
                        }
                    }
                    s.done = true;
                }
            }
            if !out.is_empty() {
                let chunk = Bytes::copy_from_slice(out);
                if out.capacity() > MAX_KEPT_SCRATCH {
                    // one huge event (a long tool call in one piece) is not kept for the stream's life
                    s.scratch = Vec::with_capacity(512);
                }
                return Poll::Ready(Some(Ok(chunk)));
            }
        }
    }
}

/// The client's SSE body: each upstream event is encoded and sent as soon as it arrives. When the
/// client goes away, hyper drops this body, which drops the upstream stream and cancels it.
fn sse_response(
    encoder: Encoder,
    upstream: EventStream,
    charge: Charge,
    request_id: &str,
    outcome: Outcome,
    keep: Option<Keep>,
) -> Response {
    let state = SseState {
        upstream,
        encoder,
        done: false,
        keep,
        charge,
        // room for a typical event, so that encoding one does not grow the buffer step by step
        scratch: Vec::with_capacity(512),
    };
    let mut resp = Response::new(Body::from_stream(FirstAlone::new(state)));
    let h = resp.headers_mut();
    set_ids(h, request_id, Some(outcome));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(H_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    resp
}

fn family_of_headers(headers: &HeaderMap) -> ApiFamily {
    if headers.contains_key("anthropic-version") {
        ApiFamily::Anthropic
    } else {
        ApiFamily::OpenAi
    }
}

/// `GET /v1/models`: OpenAI's list shape, or Anthropic's when the client sends `anthropic-version`.
pub async fn models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let request_id = new_request_id();
    let family = family_of_headers(&headers);
    let principal = match authenticate(&state, &headers) {
        Ok(p) => p,
        Err(err) => {
            return ApiError {
                family,
                err,
                request_id,
                outcome: None,
            }
            .into_response()
        }
    };
    let rt = state.runtime();
    let created = state.started_unix;
    let names: Vec<&String> = rt
        .model_names()
        .iter()
        .filter(|m| principal.may_use(m))
        .collect();
    let body = match family {
        ApiFamily::OpenAi => serde_json::json!({
            "object": "list",
            "data": names.iter().map(|m| serde_json::json!({
                "id": m, "object": "model", "created": created, "owned_by": "tollway",
            })).collect::<Vec<_>>(),
        }),
        ApiFamily::Anthropic => {
            let data: Vec<serde_json::Value> = names
                .iter()
                .map(|m| {
                    serde_json::json!({
                        "type": "model", "id": m, "display_name": m,
                        "created_at": "1970-01-01T00:00:00Z",
                    })
                })
                .collect();
            serde_json::json!({
                "data": data,
                "has_more": false,
                "first_id": names.first(),
                "last_id": names.last(),
            })
        }
    };
    let mut resp = axum::Json(body).into_response();
    set_ids(resp.headers_mut(), &request_id, None);
    resp
}

/// `GET /admin/health`: every deployment's circuit, cooldown, load and latency. Master key only.
pub async fn admin_health(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(err) = authenticate_admin(&state, &headers) {
        return admin_error(err);
    }
    let rt = state.runtime();
    let deployments = rt.health().report(std::time::Instant::now());
    axum::Json(serde_json::json!({ "deployments": deployments })).into_response()
}

/// `GET /admin/models`: the model groups with their deployments (prices, capacity,
/// capabilities) and the routers. Master key only.
pub async fn admin_models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(err) = authenticate_admin(&state, &headers) {
        return admin_error(err);
    }
    json_response(StatusCode::OK, state.runtime().describe())
}

/// `POST /admin/reload`: reads the config file again; an invalid one is rejected (400, with every
/// error) and the running config kept. Master key only.
pub async fn admin_reload(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let request_id = new_request_id();
    if let Err(err) = authenticate_admin(&state, &headers) {
        return ApiError {
            family: ApiFamily::OpenAi,
            err,
            request_id,
            outcome: None,
        }
        .into_response();
    }
    match state.reload().await {
        Ok(done) => axum::Json(serde_json::json!({"status": "reloaded", "models": done.models}))
            .into_response(),
        Err(errors) => {
            for e in &errors {
                tracing::error!("reload rejected, keeping the running config: {e}");
            }
            let mut r = ApiError {
                family: ApiFamily::OpenAi,
                err: ProviderError::invalid(format!(
                    "The new configuration is invalid; the running one is kept. {}",
                    errors.join("; ")
                )),
                request_id,
                outcome: None,
            }
            .into_response();
            if let Ok(v) = serde_json::to_vec(&serde_json::json!({
                "error": {"message": "The new configuration is invalid; the running one is kept.",
                          "type": "invalid_request_error", "param": null, "code": "invalid_config",
                          "errors": errors}
            })) {
                *r.body_mut() = Body::from(v);
            }
            r
        }
    }
}

/// `DELETE /admin/cache`: forgets every kept answer, this instance's and (when shared) Redis's.
/// Other instances' own copies in memory stay until they expire.
pub async fn admin_cache_clear(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(err) = authenticate_admin(&state, &headers) {
        return admin_error(err);
    }
    let rt = state.runtime();
    let Some(cfg) = rt.config.cache.as_ref() else {
        return admin_error(ProviderError::invalid(
            "The response cache is off (no `cache` section in the config).",
        ));
    };
    let cleared = state.cache().clear();
    let shared = match (cfg.shared, state.accounts().shared()) {
        (true, Some(sh)) => match sh.cache_clear().await {
            Ok(n) => Some(n),
            Err(e) => return admin_error(ProviderError::new(ErrorKind::Overloaded, format!("This instance's cache was cleared ({cleared} answers), Redis's could not be: {e}"))),
        },
        _ => None,
    };
    json_response(
        StatusCode::OK,
        serde_json::json!({"cleared": cleared, "shared_cleared": shared}),
    )
}

/// The admin API needs the master key; with none configured (loopback only) it is open.
pub fn authenticate_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ProviderError> {
    match authenticate(state, headers)? {
        Principal::Key(k) => Err(permission(format!(
            "The API key {} is not an admin key; the admin API needs the master key.",
            k.prefix
        ))),
        Principal::Master | Principal::Open => Ok(()),
    }
}

/// `GET /metrics`: Prometheus text format. Needs the master key when one is set.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(err) = authenticate_admin(&state, &headers) {
        return admin_error(err);
    }
    let rt = state.runtime();
    let mut text = state.metrics().render(rt.health());
    if let Some(up) = state.accounts().shared_up() {
        text.push_str("# HELP tollway_shared_state_up 1 when the shared state (Redis) answers; 0 while instances fall back to local limits and budgets.\n# TYPE tollway_shared_state_up gauge\n");
        text.push_str(&format!("tollway_shared_state_up {}\n", u8::from(up)));
        let outages = state.accounts().shared_outages().unwrap_or(0);
        text.push_str("# HELP tollway_shared_state_outages_total Times the shared state (Redis) went from answering to failing (each one logged once).\n# TYPE tollway_shared_state_outages_total counter\n");
        text.push_str(&format!("tollway_shared_state_outages_total {outages}\n"));
    }
    if state.runtime().config.telemetry.is_some() {
        let t = state.tracer();
        let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        text.push_str(&format!(
            "# HELP tollway_trace_spans_total Finished spans, by what became of them.\n# TYPE tollway_trace_spans_total counter\n\
             tollway_trace_spans_total{{result=\"exported\"}} {}\ntollway_trace_spans_total{{result=\"failed\"}} {}\ntollway_trace_spans_total{{result=\"dropped\"}} {}\n",
            n(&t.exported), n(&t.failed), n(&t.dropped)
        ));
    }
    if state.runtime().config.cache.is_some() {
        let c = state.cache();
        let (entries, bytes) = c.held();
        let hits = c.hits.load(std::sync::atomic::Ordering::Relaxed);
        let misses = c.misses.load(std::sync::atomic::Ordering::Relaxed);
        text.push_str(&format!(
            "# HELP tollway_cache_lookups_total Response cache lookups, by result.\n# TYPE tollway_cache_lookups_total counter\n\
             tollway_cache_lookups_total{{result=\"hit\"}} {hits}\ntollway_cache_lookups_total{{result=\"miss\"}} {misses}\n\
             # HELP tollway_cache_entries Answers held in this instance's response cache.\n# TYPE tollway_cache_entries gauge\ntollway_cache_entries {entries}\n\
             # HELP tollway_cache_bytes Memory held by this instance's response cache (estimated).\n# TYPE tollway_cache_bytes gauge\ntollway_cache_bytes {bytes}\n"
        ));
    }
    let mut r = Response::new(Body::from(text));
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

pub async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining() {
        let mut r = axum::Json(serde_json::json!({"status": "draining"})).into_response();
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return r;
    }
    // Storage must answer (bounded: a hung database is "not ready", not a hung probe).
    let ping = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        state.accounts().store().ping(),
    )
    .await;
    if !matches!(ping, Ok(Ok(()))) {
        let mut r =
            axum::Json(serde_json::json!({"status": "storage unavailable"})).into_response();
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return r;
    }
    let shared = state.accounts().shared_up();
    axum::Json(serde_json::json!({
        "status": "ready",
        "shared_state": shared.map(|up| if up { "up" } else { "down (local limits)" }),
    }))
    .into_response()
}

/// Any other path: 404 in the shape of the API the path looks like.
pub async fn not_found(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let family = if uri.path().starts_with("/v1/messages") {
        ApiFamily::Anthropic
    } else {
        family_of_headers(&headers)
    };
    not_found_in(
        family,
        format!("Unknown request URL: {method} {}", uri.path()),
    )
}

/// A 404 in `family`'s error shape.
pub fn not_found_in(family: ApiFamily, message: impl Into<String>) -> Response {
    ApiError {
        family,
        err: ProviderError::new(ErrorKind::NotFound, message),
        request_id: new_request_id(),
        outcome: None,
    }
    .into_response()
}

/// A wrong method on a known path.
pub fn method_not_allowed(family: ApiFamily, method: &Method, path: &str) -> Response {
    let mut r = ApiError {
        family,
        err: ProviderError::invalid(format!("Method {method} is not allowed on {path}.")),
        request_id: new_request_id(),
        outcome: None,
    }
    .into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}

fn admin_error(err: ProviderError) -> Response {
    ApiError {
        family: ApiFamily::OpenAi,
        err,
        request_id: new_request_id(),
        outcome: None,
    }
    .into_response()
}

fn json_response(status: StatusCode, v: serde_json::Value) -> Response {
    let mut r = axum::Json(v).into_response();
    *r.status_mut() = status;
    r
}

fn storage_error(e: impl std::fmt::Display) -> ProviderError {
    tracing::error!(error = %e, "storage request failed");
    ProviderError::internal("The storage backend failed; see the gateway's log.")
}

/// `POST /admin/keys`: creates a virtual key; its secret is in this answer only.
pub async fn admin_keys_create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = authenticate_admin(&state, &headers) {
        return admin_error(e);
    }
    let req: crate::admin::CreateKey = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return admin_error(ProviderError::invalid(format!("Invalid key request: {e}."))),
    };
    let new = match req.into_new_key() {
        Ok(n) => n,
        Err(e) => return admin_error(ProviderError::invalid(e)),
    };
    let rt = state.runtime();
    for (router, knob) in &new.routing {
        if let Err(e) = rt.check_knob(router, knob) {
            return admin_error(ProviderError::invalid(format!("routing.{router}: {e}")));
        }
    }
    let accounts = state.accounts();
    match accounts.store().create_key(new).await {
        Ok((k, secret)) => {
            if let Err(e) = accounts.refresh().await {
                tracing::warn!(error = %e, "key created but the cache refresh failed");
            }
            let mut v = crate::admin::key_json(&k);
            if let Some(o) = v.as_object_mut() {
                o.insert("key".into(), serde_json::Value::String(secret));
            }
            json_response(StatusCode::CREATED, v)
        }
        Err(tollway_store::StoreError::Invalid(m)) => admin_error(ProviderError::invalid(m)),
        Err(e) => admin_error(storage_error(e)),
    }
}

/// `GET /admin/keys`: every key, without secrets.
pub async fn admin_keys_list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = authenticate_admin(&state, &headers) {
        return admin_error(e);
    }
    match state.accounts().store().list_keys().await {
        Ok(keys) => json_response(
            StatusCode::OK,
            serde_json::json!({"data": keys.iter().map(crate::admin::key_json).collect::<Vec<_>>()}),
        ),
        Err(e) => admin_error(storage_error(e)),
    }
}

/// `POST /admin/keys/{id}/revoke` and `/rotate`.
pub async fn admin_key_action(
    State(state): State<AppState>,
    axum::extract::Path((id, action)): axum::extract::Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authenticate_admin(&state, &headers) {
        return admin_error(e);
    }
    let accounts = state.accounts();
    let store = accounts.store();
    let result = match action.as_str() {
        "revoke" => store
            .revoke_key(&id)
            .await
            .map(|ok| ok.then(|| serde_json::json!({"id": id, "status": "revoked"}))),
        "rotate" => store.rotate_key(&id).await.map(|r| {
            r.map(|(k, secret)| {
                let mut v = crate::admin::key_json(&k);
                if let Some(o) = v.as_object_mut() {
                    o.insert("key".into(), serde_json::Value::String(secret));
                }
                v
            })
        }),
        other => {
            return admin_error(ProviderError::new(
                ErrorKind::NotFound,
                format!("Unknown key action `{other}` (revoke or rotate)."),
            ))
        }
    };
    match result {
        Ok(Some(v)) => {
            if let Err(e) = accounts.refresh().await {
                tracing::warn!(error = %e, "key changed but the cache refresh failed");
            }
            json_response(StatusCode::OK, v)
        }
        Ok(None) => admin_error(ProviderError::new(
            ErrorKind::NotFound,
            format!("No active key `{id}`."),
        )),
        Err(tollway_store::StoreError::Invalid(m)) => admin_error(ProviderError::invalid(m)),
        Err(e) => admin_error(storage_error(e)),
    }
}

/// An admin GET's query string, read by [`admin_params`].
type AdminQuery<T> = Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>;

/// An admin report's parameters and the query they make, once the master key is checked (a
/// query string that cannot be read, or a wrong parameter, is a 400 saying why).
fn admin_params<T: crate::admin::ReportParams>(
    state: &AppState,
    headers: &HeaderMap,
    params: AdminQuery<T>,
) -> Result<(T, T::Query), ProviderError> {
    authenticate_admin(state, headers)?;
    let axum::extract::Query(p) =
        params.map_err(|e| ProviderError::invalid(format!("The query string: {e}")))?;
    let q = p.query().map_err(ProviderError::invalid)?;
    Ok((p, q))
}

/// `GET /admin/requests?limit=50&before=...&key=...&model=...&status=error`: the request log
/// (the ledger), newest first, a page at a time.
pub async fn admin_requests(
    State(state): State<AppState>,
    params: AdminQuery<crate::admin::RequestsParams>,
    headers: HeaderMap,
) -> Response {
    let (_, q) = match admin_params(&state, &headers, params) {
        Ok(pq) => pq,
        Err(e) => return admin_error(e),
    };
    match crate::admin::requests_json(state.accounts().store(), &q).await {
        Ok(v) => json_response(StatusCode::OK, v),
        Err(e) => admin_error(storage_error(e)),
    }
}

/// `GET /admin/usage?group_by=key,model&since=2025-11-01&format=csv`.
pub async fn admin_usage(
    State(state): State<AppState>,
    params: AdminQuery<crate::admin::UsageParams>,
    headers: HeaderMap,
) -> Response {
    let (params, q) = match admin_params(&state, &headers, params) {
        Ok(pq) => pq,
        Err(e) => return admin_error(e),
    };
    let store = state.accounts().store();
    if params.format.as_deref() == Some("csv") {
        match crate::admin::usage_csv(store, &q).await {
            Ok(text) => {
                let mut r = Response::new(Body::from(text));
                r.headers_mut().insert(
                    "content-type",
                    HeaderValue::from_static("text/csv; charset=utf-8"),
                );
                r
            }
            Err(e) => admin_error(storage_error(e)),
        }
    } else {
        match crate::admin::usage_json(store, &q).await {
            Ok(v) => json_response(StatusCode::OK, v),
            Err(e) => admin_error(storage_error(e)),
        }
    }
}

/// `POST /v1/feedback`: a client says an answer was good or bad (any key; stored by request id).
pub async fn feedback(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let principal = match authenticate(&state, &headers) {
        Ok(p) => p,
        Err(e) => return admin_error(e),
    };
    let fb: crate::admin::Feedback = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return admin_error(ProviderError::invalid(format!("Invalid feedback: {e}."))),
    };
    if let Err(e) = fb.check() {
        return admin_error(e);
    }
    let key_id = principal.key().map(|k| k.id.as_str());
    match state
        .accounts()
        .store()
        .add_feedback(&fb.request_id, key_id, &fb.rating, fb.comment.as_deref())
        .await
    {
        Ok(()) => json_response(StatusCode::OK, serde_json::json!({"status": "recorded"})),
        Err(e) => admin_error(storage_error(e)),
    }
}

/// `POST /v1/embeddings`: OpenAI's embeddings API, to any deployment that can embed, with the same
/// auth, policy, limits, budgets and ledger as chat.
/// `POST /v1/messages/count_tokens`, Anthropic's token count: `{"input_tokens": N}` for a Messages
/// request (without `max_tokens`) to the model it names, a router's choice for a router, as the
/// first deployment of its plan counts it: by the provider's count endpoint where it has one
/// (Anthropic), else locally (`x-tollway-token-count: upstream` or `local`). The key's models
/// and providers apply as for a message; a count costs nothing upstream, so it takes no rate
/// limit, budget or ledger row.
pub async fn count_tokens(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request_id = new_request_id();
    let resp = match count_tokens_inner(&state, &headers, body, &request_id).await {
        Ok(resp) => resp,
        Err((err, outcome)) => ApiError {
            family: ApiFamily::Anthropic,
            err,
            request_id,
            outcome,
        }
        .into_response(),
    };
    count(&state, ApiFamily::Anthropic, &resp);
    resp
}

/// [`count_tokens`]' work: the answer, or the error with what is known of the attempt.
async fn count_tokens_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    request_id: &str,
) -> Result<Response, (ProviderError, Option<Outcome>)> {
    let principal = authenticate(state, headers).map_err(|e| (e, None))?;
    let bytes = read_body(state, headers, body)
        .await
        .map_err(|e| (e, None))?;
    let mut req = anthropic::decode_count_tokens_request(&bytes).map_err(|e| (e, None))?;
    drop(bytes);
    req.betas = betas(headers);
    let mut opts = RouteOptions::take(&mut req.extra.fields).map_err(|e| (e, None))?;
    key_policy(&principal, &req.model, &mut opts).map_err(|e| (e, None))?;
    let rt = state.runtime();
    let mut outcome = Outcome::default();
    if let Some(choice) = choose(&rt, &req, headers, &principal).await {
        req.model = choice.target;
        outcome.route = Some(choice.why);
    }
    let (n, counted) = match gateway::count_tokens(&rt, &req, &opts, &mut outcome).await {
        Ok(c) => c,
        Err(e) => return Err((e, Some(outcome))),
    };
    let mut resp = Response::new(Body::from(anthropic::encode_count_tokens_response(n)));
    set_ids(resp.headers_mut(), request_id, Some(outcome));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(H_TOKEN_COUNT, HeaderValue::from_static(counted.as_str()));
    Ok(resp)
}

pub async fn embeddings(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let request_id = new_request_id();
    let fail = |err: ProviderError, outcome: Option<Outcome>| {
        ApiError {
            family: ApiFamily::OpenAi,
            err,
            request_id: request_id.clone(),
            outcome,
        }
        .into_response()
    };
    let resp = async {
        let principal = match authenticate(&state, &headers) {
            Ok(p) => p,
            Err(e) => return fail(e, None),
        };
        let bytes = match read_body(&state, &headers, body).await {
            Ok(b) => b,
            Err(e) => return fail(e, None),
        };
        let (req, base64) = match openai::decode_embeddings_request(&bytes) {
            Ok(r) => r,
            Err(e) => return fail(e, None),
        };
        // Limits and budgets see the inputs as a prompt with no output.
        let mut as_chat = ChatRequest::simple(req.model.clone(), req.input.join("\n"));
        as_chat.max_tokens = Some(0);
        let mut charge = Charge::new(
            &state,
            &request_id,
            ApiFamily::OpenAi,
            &principal,
            &req.model,
            false,
        );
        let rt = state.runtime();
        let mut opts = RouteOptions {
            allow_fallbacks: true,
            ..RouteOptions::default()
        };
        let mut outcome = Outcome::default();
        if let Some(t) = state.trace(&rt, &headers) {
            outcome.headers.push(t.response_header());
            outcome.trace = Some(t.clone());
            charge.trace = Some((t, "embeddings", "/v1/embeddings"));
        }
        match admit(
            &state,
            &rt,
            &principal,
            &as_chat,
            &req.model,
            &mut opts,
            &mut charge,
        )
        .await
        {
            // embeddings plan their own deployments
            Ok(a) => outcome.headers.extend(a.headers),
            Err(e) => {
                charge.outcome(e.http_status(), &outcome);
                return fail(e, Some(outcome));
            }
        }
        charge.request = Some(Arc::new(as_chat));
        let cache_use =
            match CacheUse::of(&state, &rt, &principal, &req.model, &opts, &headers, |ns| {
                crate::cache::embeddings_key(&req, ns)
            }) {
                Ok(c) => c,
                Err(e) => {
                    charge.outcome(e.http_status(), &outcome);
                    return fail(e, Some(outcome));
                }
            };
        if let Some(cu) = &cache_use {
            if let Some(entry) = cu.lookup(&state).await {
                if let crate::cache::Answer::Embeddings(answer) = &entry.answer {
                    hit(&mut charge, &mut outcome, &entry);
                    charge.usage = answer.usage;
                    let body = openai::encode_embeddings_response(answer, base64);
                    let mut resp = Response::new(Body::from(body));
                    set_ids(resp.headers_mut(), &request_id, Some(outcome));
                    resp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    return resp;
                }
            }
            outcome
                .headers
                .push((crate::cache::H_CACHE, cu.directives.status()));
        }
        match gateway::embeddings(&rt, req, &opts, &mut outcome).await {
            Ok(mut answer) => {
                charge.usage = answer.usage;
                charge.embedded = true;
                // the provider's usage or, when it reported none (Google AI Studio's), the
                // gateway's count: the client gets it too (OpenAI's shape always carries usage)
                let (billed, _) = charge.billed_usage();
                answer.usage = billed;
                charge.outcome(200, &outcome);
                if let (Some(cu), Some(d)) = (&cache_use, &outcome.deployment) {
                    if cu.directives.write {
                        let kept = crate::cache::Answer::Embeddings(answer.clone());
                        cu.keep(&state, kept, &d.provider_name, &d.label);
                    }
                }
                outcome.headers.push((H_COST, charge.cost_header(&billed)));
                let mut resp = Response::new(Body::from(openai::encode_embeddings_response(
                    &answer, base64,
                )));
                set_ids(resp.headers_mut(), &request_id, Some(outcome));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                resp
            }
            Err(e) => {
                charge.outcome(e.http_status(), &outcome);
                fail(e, Some(outcome))
            }
        }
    }
    .await;
    count(&state, ApiFamily::OpenAi, &resp);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_written_in_decimal() {
        for n in [0, 1, 9, 10, 123, u32::MAX] {
            assert_eq!(attempts_header(n), HeaderValue::from(n), "{n}");
        }
    }

    #[test]
    fn server_timing_names_the_gateways_time_and_what_it_waited_on() {
        use std::time::Duration;
        let spent = |own, upstream, backoff| Spent {
            own: Duration::from_micros(own),
            upstream: Duration::from_micros(upstream),
            backoff: Duration::from_micros(backoff),
        };
        assert_eq!(server_timing(&spent(21, 0, 0)), "gateway;dur=0.021");
        assert_eq!(
            server_timing(&spent(1_234, 250_007, 0)),
            "gateway;dur=1.234, upstream;dur=250.007"
        );
        assert_eq!(
            server_timing(&spent(0, 5, 100_000)),
            "gateway;dur=0.000, upstream;dur=0.005, backoff;dur=100.000"
        );
        assert!(HeaderValue::try_from(server_timing(&spent(9, 9, 9))).is_ok());
    }

    #[test]
    fn limit_headers_carry_each_number_once() {
        use crate::accounts::LimitState;
        let text = |st: &LimitState| {
            let mut h = Vec::new();
            limit_headers(&mut h, st);
            h.into_iter()
                .map(|(n, v)| format!("{n}={}", v.to_str().unwrap_or("?")))
                .collect::<Vec<_>>()
        };
        assert!(text(&LimitState::default()).is_empty());
        assert_eq!(
            text(&LimitState {
                requests: None,
                tokens: Some((u64::MAX, 0)),
            }),
            [
                format!("x-ratelimit-limit-tokens={}", u64::MAX),
                "x-ratelimit-remaining-tokens=0".to_string()
            ]
        );
        assert_eq!(
            text(&LimitState {
                requests: Some((60, 59)),
                tokens: Some((1000, 12)),
            }),
            [
                "x-ratelimit-limit-requests=60",
                "x-ratelimit-remaining-requests=59",
                "x-ratelimit-limit-tokens=1000",
                "x-ratelimit-remaining-tokens=12"
            ]
        );
    }

    #[test]
    fn a_stream_body_pauses_once_after_its_first_frame() {
        use std::task::{Context, Poll};
        let waker = futures_util::task::noop_waker_ref();
        let mut cx = Context::from_waker(waker);
        let mut s = FirstAlone::new(futures_util::stream::iter([1, 2, 3]));
        let mut seen = Vec::new();
        loop {
            match s.poll_next_unpin(&mut cx) {
                Poll::Ready(Some(i)) => seen.push(Some(i)),
                Poll::Ready(None) => break,
                Poll::Pending => seen.push(None),
            }
        }
        // the first frame alone, then the rest back to back
        assert_eq!(seen, [Some(1), None, Some(2), Some(3)]);
        // an empty body ends at once, without a pause
        let mut empty = FirstAlone::new(futures_util::stream::iter(Vec::<u8>::new()));
        assert_eq!(empty.poll_next_unpin(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn request_ids_are_time_ordered_uuids() {
        let ids: Vec<String> = (0..10_000).map(|_| new_request_id()).collect();
        for id in &ids {
            let hex = id.strip_prefix("req_").expect("prefix");
            assert_eq!(hex.len(), 32, "{id}");
            assert!(
                hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                "lowercase hex: {id}"
            );
            // version nibble: 7
            assert_eq!(&hex[12..13], "7", "{id}");
        }
        // each later than the one before (the ledger's key index grows at its right edge)
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}
