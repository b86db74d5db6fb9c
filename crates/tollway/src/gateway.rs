//! The request path between the HTTP edge and the providers: plan the deployments for a model
//! (strategy, health, per-request options), refuse what no deployment can do, and try deployments
//! until one answers — retrying only retriable failures, with backoff when the same deployment is
//! tried again, within the attempt budget and the retry deadline, and for streams only before
//! the first event reached the client. Every attempt's outcome feeds the deployment's health.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Map, Value};
use tollway_core::{
    ChatRequest, ChatResponse, ErrorKind, EventStream, ProviderError, Retry, Waited,
};

use tollway_providers::timed;

use crate::routing::{Admission, InFlight};
use crate::runtime::{Deployment, Plan, RouteOptions, Runtime};

/// What happened on the way: for the `x-tollway-*` headers and the log.
#[derive(Default)]
pub struct Outcome {
    pub attempts: u32,
    pub deployment: Option<Arc<Deployment>>,
    /// For requests to a router: which router chose, and why (`x-tollway-route`).
    pub route: Option<String>,
    /// More response headers (e.g. `x-ratelimit-*`).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The request's trace, when traces are exported: each attempt is a span of it.
    pub trace: Option<crate::telemetry::RequestTrace>,
}

/// One upstream attempt as a span, when the request is traced: its id and `traceparent`, and
/// when it started.
struct AttemptSpan {
    id: [u8; 8],
    traceparent: http::HeaderValue,
    start_ns: u64,
}

impl AttemptSpan {
    fn start(out: &Outcome) -> Option<AttemptSpan> {
        let t = out.trace.as_ref()?;
        let (id, traceparent) = t.child();
        Some(AttemptSpan {
            id,
            traceparent,
            start_ns: crate::telemetry::now_ns(),
        })
    }

    /// Runs `fut` (the attempt) with the `traceparent` its upstream request carries.
    async fn run<F: std::future::Future>(span: &Option<AttemptSpan>, fut: F) -> F::Output {
        match span {
            Some(s) => {
                tollway_providers::TRACEPARENT
                    .scope(s.traceparent.clone(), fut)
                    .await
            }
            None => fut.await,
        }
    }

    /// Records the attempt under the request's span: its deployment, usage or error.
    fn end(
        span: Option<AttemptSpan>,
        trace: Option<&crate::telemetry::RequestTrace>,
        d: &Deployment,
        operation: &'static str,
        usage: Option<&tollway_core::Usage>,
        error: Option<&ProviderError>,
    ) {
        use crate::telemetry::Attr;
        let (Some(s), Some(t)) = (span, trace) else {
            return;
        };
        let mut attrs = vec![
            ("gen_ai.operation.name", Attr::Str(operation.into())),
            ("gen_ai.request.model", Attr::Str(d.model.clone())),
            ("tollway.provider", Attr::Str(d.provider_name.clone())),
            ("tollway.deployment", Attr::Str(d.label.clone())),
        ];
        if let Some(u) = usage {
            attrs.push((
                "gen_ai.usage.input_tokens",
                Attr::Int(u.prompt_tokens() as i64),
            ));
            attrs.push((
                "gen_ai.usage.output_tokens",
                Attr::Int(u.output_tokens as i64),
            ));
        }
        if let Some(e) = error {
            attrs.push(("error.type", Attr::Str(format!("{:?}", e.kind))));
        }
        t.attempt(
            s.id,
            s.start_ns,
            operation,
            &d.model,
            attrs,
            error.map(|e| e.message.clone()),
        );
    }
}

/// A streamed attempt's span, recorded when the stream ends or the client leaves: the
/// upstream's whole answer, with its usage, or the error that broke it off.
struct StreamSpan {
    span: Option<AttemptSpan>,
    trace: crate::telemetry::RequestTrace,
    deployment: Arc<Deployment>,
    usage: tollway_core::Usage,
    error: Option<ProviderError>,
}

impl StreamSpan {
    fn see(&mut self, item: &Result<tollway_core::StreamEvent, ProviderError>) {
        match item {
            Ok(tollway_core::StreamEvent::Start { usage, .. })
            | Ok(tollway_core::StreamEvent::Usage(usage)) => self.usage.merge(usage),
            Err(e) => self.error = Some(e.clone()),
            Ok(_) => {}
        }
    }
}

impl Drop for StreamSpan {
    fn drop(&mut self) {
        AttemptSpan::end(
            self.span.take(),
            Some(&self.trace),
            &self.deployment,
            "chat",
            Some(&self.usage),
            self.error.as_ref(),
        );
    }
}

/// Where a client request's time went other than the gateway's own work; what is left of its
/// time is the gateway's overhead (`tollway_overhead_seconds`).
#[derive(Debug, Default)]
pub struct Waits {
    /// Upstream answers: every attempt's, failed ones too, from sending the request to the whole
    /// answer (for a stream: to its first event).
    pub upstream: Waited,
    /// Backoff between rounds of attempts.
    pub backoff: Waited,
    /// Reading the client's body.
    pub client: Waited,
}

/// A request's time: the gateway's own, and what it waited on upstreams and backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spent {
    pub own: Duration,
    pub upstream: Duration,
    pub backoff: Duration,
}

impl Waits {
    /// Splits `total`, the handler's time, into the gateway's own and the waits (the client's
    /// body counts as neither).
    pub fn split(&self, total: Duration) -> Spent {
        let (upstream, backoff) = (self.upstream.total(), self.backoff.total());
        Spent {
            own: total
                .saturating_sub(upstream)
                .saturating_sub(backoff)
                .saturating_sub(self.client.total()),
            upstream,
            backoff,
        }
    }
}

fn bad(param: &str, msg: impl std::fmt::Display) -> ProviderError {
    ProviderError::invalid(format!("Invalid value for `{param}`: {msg}.")).with_param(param)
}

fn names(v: Value, param: &str) -> Result<Vec<String>, ProviderError> {
    match v {
        Value::Array(a) => a
            .into_iter()
            .map(|x| match x {
                Value::String(s) => Ok(s),
                _ => Err(bad(param, "expected an array of strings")),
            })
            .collect(),
        _ => Err(bad(param, "expected an array of strings")),
    }
}

impl RouteOptions {
    /// Takes the routing extension fields (`models`, `provider`) out of a request's extra fields,
    /// so that they are never forwarded upstream.
    pub fn take(fields: &mut Map<String, Value>) -> Result<RouteOptions, ProviderError> {
        let mut o = RouteOptions {
            allow_fallbacks: true,
            ..RouteOptions::default()
        };
        if let Some(v) = fields.remove("models") {
            if !v.is_null() {
                o.models = names(v, "models")?;
            }
        }
        match fields.remove("provider") {
            None | Some(Value::Null) => {}
            Some(Value::Object(mut p)) => {
                if let Some(v) = p.remove("order") {
                    o.order = names(v, "provider.order")?;
                }
                if let Some(v) = p.remove("only") {
                    o.only = Some(names(v, "provider.only")?);
                }
                if let Some(v) = p.remove("ignore") {
                    o.ignore = names(v, "provider.ignore")?;
                }
                match p.remove("allow_fallbacks") {
                    None | Some(Value::Null) => {}
                    Some(Value::Bool(b)) => o.allow_fallbacks = b,
                    Some(_) => return Err(bad("provider.allow_fallbacks", "expected a boolean")),
                }
                if let Some(k) = p.keys().next() {
                    return Err(bad(
                        "provider",
                        format!(
                            "unknown field `{k}` (expected order, only, ignore, allow_fallbacks)"
                        ),
                    ));
                }
            }
            Some(_) => return Err(bad("provider", "expected an object")),
        }
        Ok(o)
    }
}

/// The deployments able to serve `req`, in the order to try them: from `planned` when the caller
/// already planned this request (budgets price the plan's deployments), else planned here.
fn candidates(
    rt: &Runtime,
    req: &ChatRequest,
    opts: &RouteOptions,
    planned: Option<Plan>,
) -> Result<Vec<Arc<Deployment>>, ProviderError> {
    let plan = match planned {
        Some(p) => p,
        None => rt.plan(&req.model, opts)?,
    };
    let mut missing = None;
    let able: Vec<Arc<Deployment>> = plan
        .tries
        .into_iter()
        .filter(|d| match d.caps.missing_for(req) {
            None => true,
            Some(feature) => {
                missing.get_or_insert((feature, d.label.clone()));
                false
            }
        })
        .collect();
    if able.is_empty() {
        if let Some((feature, label)) = missing {
            let what = if label.ends_with(&req.model) || req.model.contains('/') {
                label
            } else {
                format!("{} ({label})", req.model)
            };
            return Err(ProviderError::unsupported(feature, &what));
        }
        if let Some(wait) = plan.cooling {
            return Err(Runtime::all_cooling(&req.model, wait));
        }
    }
    Ok(able)
}

/// Deployments of the fallbacks configured for this kind of failure (context window, content
/// policy), under the request's provider restrictions, that the plan does not hold yet.
fn special_plan(
    rt: &Runtime,
    req: &ChatRequest,
    opts: &RouteOptions,
    e: &ProviderError,
    done: &[ErrorKind],
) -> Vec<Arc<Deployment>> {
    if done.contains(&e.kind) || !opts.allow_fallbacks {
        return Vec::new();
    }
    let only_group = RouteOptions {
        models: Vec::new(),
        allow_fallbacks: false,
        ..opts.clone()
    };
    let mut out = Vec::new();
    for name in rt.special_fallbacks(&req.model, e.kind) {
        let mut sub = req.clone();
        sub.model.clone_from(name);
        if let Ok(plan) = candidates(rt, &sub, &only_group, None) {
            out.extend(plan);
        }
    }
    out
}

/// Walks the plan: each deployment once, then (budget and deadline allowing) again from the
/// start with exponential backoff and jitter, skipping deployments that cooled down meanwhile.
struct Attempts {
    capacity: Arc<crate::routing::HealthRegistry>,
    /// A deployment was skipped for being at capacity.
    at_capacity: bool,
    /// Some attempt was made since the plan last wrapped around.
    tried_this_round: bool,
    plan: Vec<Arc<Deployment>>,
    next: usize,
    round: u32,
    budget: u32,
    deadline: Instant,
}

impl Attempts {
    /// Continues with other deployments (a special fallback); they get a fresh walk.
    fn switch_to(&mut self, plan: Vec<Arc<Deployment>>) {
        self.plan = plan;
        self.next = 0;
        self.round = 0;
    }

    fn new(rt: &Runtime, plan: Vec<Arc<Deployment>>) -> Self {
        Attempts {
            capacity: rt.health().clone(),
            at_capacity: false,
            tried_this_round: false,
            plan,
            next: 0,
            round: 0,
            budget: rt.config.server.max_attempts,
            deadline: Instant::now() + rt.config.server.retry_deadline,
        }
    }

    /// The next deployment to try and its in-flight guard, after any backoff; `None` when done.
    async fn next(
        &mut self,
        last: Option<&ProviderError>,
        backoff: &Waited,
    ) -> Option<(Arc<Deployment>, InFlight)> {
        while self.budget > 0 && !self.plan.is_empty() {
            if self.next >= self.plan.len() {
                self.next = 0;
                self.round += 1;
                if !std::mem::take(&mut self.tried_this_round) {
                    // a whole round without an attempt (all at capacity or cooling): stop
                    return None;
                }
                // Only deployments that are still admitted are worth waiting for.
                let now = Instant::now();
                if self
                    .plan
                    .iter()
                    .all(|d| matches!(d.health.peek(now), Admission::No(_)))
                {
                    return None;
                }
                // Backoff before trying the same deployments again; honour Retry-After.
                let base = Duration::from_millis(100).saturating_mul(1 << self.round.min(6));
                let jitter = Duration::from_millis(fastrand::u64(0..=base.as_millis() as u64 / 2));
                let mut wait = base + jitter;
                if let Some(Retry::After(d)) = last.map(|e| e.retry) {
                    // The upstream asked for a pause longer than a backoff: the client hears
                    // it (with Retry-After) rather than waiting inside the gateway.
                    if d > Duration::from_secs(1) {
                        return None;
                    }
                    wait = wait.max(d);
                }
                if Instant::now() + wait >= self.deadline {
                    return None;
                }
                timed(backoff, tokio::time::sleep(wait)).await;
            }
            let d = self.plan[self.next].clone();
            self.next += 1;
            if (d.rpm.is_some() || d.tpm.is_some())
                && self
                    .capacity
                    .capacity
                    .admit(&d.capacity_scope, d.rpm, d.tpm, Instant::now())
                    .is_err()
            {
                // at capacity this minute: the next deployment takes the request
                tracing::debug!(deployment = %d.label, "deployment at capacity");
                self.at_capacity = true;
                continue;
            }
            match d.health.admit(Instant::now()) {
                Admission::Yes | Admission::Probe => {
                    self.budget -= 1;
                    self.tried_this_round = true;
                    let guard = d.health.start();
                    return Some((d, guard));
                }
                Admission::No(_) => {
                    if self
                        .plan
                        .iter()
                        .all(|d| matches!(d.health.peek(Instant::now()), Admission::No(_)))
                    {
                        return None;
                    }
                }
            }
        }
        None
    }
}

fn give_up(
    last: Option<ProviderError>,
    model: &str,
    rt: &Runtime,
    attempts: &Attempts,
) -> ProviderError {
    match last {
        Some(e) => e,
        None if attempts.at_capacity => {
            let into_minute = tollway_store::now_ms().rem_euclid(60_000) / 1000;
            ProviderError::new(
                ErrorKind::RateLimited,
                format!("Every deployment of `{model}` is at its configured capacity this minute."),
            )
            .with_retry(Retry::After(Duration::from_secs(
                (60 - into_minute).max(1) as u64
            )))
        }
        None => {
            let wait = rt
                .plan(model, &RouteOptions::default())
                .ok()
                .and_then(|p| p.cooling)
                .unwrap_or(Duration::from_secs(1));
            Runtime::all_cooling(model, wait)
        }
    }
}

pub async fn chat(
    rt: &Runtime,
    req: &ChatRequest,
    opts: &RouteOptions,
    planned: Option<Plan>,
    out: &mut Outcome,
    waits: &Waits,
) -> Result<ChatResponse, ProviderError> {
    let mut attempts = Attempts::new(rt, candidates(rt, req, opts, planned)?);
    let mut last: Option<ProviderError> = None;
    let mut special: Vec<ErrorKind> = Vec::new();
    while let Some((d, _in_flight)) = attempts.next(last.as_ref(), &waits.backoff).await {
        out.attempts += 1;
        out.deployment = Some(d.clone());
        let started = Instant::now();
        let span = AttemptSpan::start(out);
        let result = AttemptSpan::run(&span, d.provider.chat(req, &d.model, &waits.upstream)).await;
        let (usage, error) = (
            result.as_ref().ok().map(|r| &r.usage),
            result.as_ref().err(),
        );
        AttemptSpan::end(span, out.trace.as_ref(), &d, "chat", usage, error);
        match result {
            Ok(resp) => {
                d.health.success(started.elapsed());
                if d.count_tokens {
                    rt.health().capacity.count_tokens(
                        &d.capacity_scope,
                        resp.usage.total_tokens(),
                        Instant::now(),
                    );
                }
                return Ok(resp);
            }
            Err(e) => {
                d.health.failure(&e, &d.policy, Instant::now());
                if !e.is_retriable() {
                    let more = special_plan(rt, req, opts, &e, &special);
                    if more.is_empty() {
                        return Err(e);
                    }
                    tracing::info!(deployment = %d.label, error = %e, "trying the fallbacks for this kind of failure");
                    special.push(e.kind);
                    attempts.switch_to(more);
                    last = Some(e);
                    continue;
                }
                tracing::warn!(deployment = %d.label, error = %e, "attempt failed, trying the next deployment");
                last = Some(e);
            }
        }
    }
    Err(give_up(last, &req.model, rt, &attempts))
}

/// Starts a stream on the first deployment that accepts the request and produces a first event.
/// The returned stream yields that first event again, then the rest; it holds the deployment's
/// in-flight count until it ends or the client goes away.
pub async fn chat_stream(
    rt: &Runtime,
    req: &ChatRequest,
    opts: &RouteOptions,
    planned: Option<Plan>,
    out: &mut Outcome,
    waits: &Waits,
) -> Result<EventStream, ProviderError> {
    let mut attempts = Attempts::new(rt, candidates(rt, req, opts, planned)?);
    let mut last: Option<ProviderError> = None;
    let mut special: Vec<ErrorKind> = Vec::new();
    while let Some((d, in_flight)) = attempts.next(last.as_ref(), &waits.backoff).await {
        out.attempts += 1;
        out.deployment = Some(d.clone());
        let started = Instant::now();
        let span = AttemptSpan::start(out);
        let opened = async {
            match d.provider.chat_stream(req, &d.model, &waits.upstream).await {
                Ok(mut stream) => match timed(&waits.upstream, stream.next()).await {
                    Some(Ok(first)) => Ok((first, stream)),
                    Some(Err(e)) => Err(e),
                    None => Err(ProviderError::new(
                        ErrorKind::InvalidResponse,
                        format!("provider {} sent an empty stream", d.label),
                    )),
                },
                Err(e) => Err(e),
            }
        };
        let first = AttemptSpan::run(&span, opened).await;
        match first {
            Ok((first, stream)) => {
                // the attempt's span covers the upstream's whole stream: recorded when it ends
                let mut stream_span = match (span, &out.trace) {
                    (Some(s), Some(t)) => Some(StreamSpan {
                        span: Some(s),
                        trace: t.clone(),
                        deployment: d.clone(),
                        usage: tollway_core::Usage::default(),
                        error: None,
                    }),
                    _ => None,
                };
                // Nothing reached the client before this point; from here on, no failover.
                d.health.success(started.elapsed());
                let registry = rt.health().clone();
                // the deployment whose tokens per minute the stream's usage counts towards
                let capped = d.count_tokens.then(|| d.clone());
                let mut counted = 0u64;
                let rest = futures_util::stream::once(async move { Ok(first) })
                    .chain(stream)
                    .map(move |item| {
                        let _held = &in_flight;
                        if let Some(s) = &mut stream_span {
                            s.see(&item);
                        }
                        if let (Some(capped), Ok(tollway_core::StreamEvent::Usage(u))) =
                            (&capped, &item)
                        {
                            // usage reports are running totals: count what is new
                            let total = u.total_tokens();
                            if total > counted {
                                registry.capacity.count_tokens(
                                    &capped.capacity_scope,
                                    total - counted,
                                    Instant::now(),
                                );
                                counted = total;
                            }
                        }
                        item
                    });
                return Ok(Box::pin(rest));
            }
            Err(e) => {
                AttemptSpan::end(span, out.trace.as_ref(), &d, "chat", None, Some(&e));
                d.health.failure(&e, &d.policy, Instant::now());
                if !e.is_retriable() {
                    let more = special_plan(rt, req, opts, &e, &special);
                    if more.is_empty() {
                        return Err(e);
                    }
                    tracing::info!(deployment = %d.label, error = %e, "trying the fallbacks for this kind of failure");
                    special.push(e.kind);
                    attempts.switch_to(more);
                    last = Some(e);
                    continue;
                }
                tracing::warn!(deployment = %d.label, error = %e, "stream failed before its first event, trying the next deployment");
                last = Some(e);
            }
        }
    }
    Err(give_up(last, &req.model, rt, &attempts))
}

/// Where a token count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// The provider's own count endpoint (Anthropic's), with the model's own tokenizer.
    Upstream,
    /// The gateway's count ([`crate::tokens::prompt`]: OpenAI's `o200k_base` and the chat
    /// format's overhead; exact for OpenAI's current models, an estimate for others).
    Local,
}

impl Counted {
    pub fn as_str(self) -> &'static str {
        match self {
            Counted::Upstream => "upstream",
            Counted::Local => "local",
        }
    }
}

/// The input tokens of `req` as the first deployment of its plan counts them: the provider's
/// count endpoint where it has one, else [`crate::tokens::prompt`] (exact once the tokenizer is
/// loaded, which this waits for). A retriable upstream error moves on to the next deployment,
/// at most `max_attempts` of them, without backoff. Counting changes nothing that routes chats:
/// no deployment capacity is taken and no health is recorded.
pub async fn count_tokens(
    rt: &Runtime,
    req: &ChatRequest,
    opts: &RouteOptions,
    out: &mut Outcome,
) -> Result<(u64, Counted), ProviderError> {
    let plan = rt.plan(&req.model, opts)?;
    if plan.tries.is_empty() {
        return Err(Runtime::all_cooling(
            &req.model,
            plan.cooling.unwrap_or(Duration::from_secs(1)),
        ));
    }
    let mut last = None;
    for d in plan
        .tries
        .iter()
        .take(rt.config.server.max_attempts.max(1) as usize)
    {
        out.attempts += 1;
        out.deployment = Some(d.clone());
        match d.provider.count_tokens(req, &d.model).await {
            Ok(Some(n)) => return Ok((n, Counted::Upstream)),
            Ok(None) => {
                crate::tokens::loaded().await;
                return Ok((crate::tokens::prompt(req), Counted::Local));
            }
            Err(e) if e.is_retriable() => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| Runtime::all_cooling(&req.model, Duration::from_secs(1))))
}

/// Embeddings: the same plan, health and retries as chat, over the deployments that can embed.
pub async fn embeddings(
    rt: &Runtime,
    req: tollway_core::EmbeddingsRequest,
    opts: &RouteOptions,
    out: &mut Outcome,
) -> Result<tollway_core::EmbeddingsResponse, ProviderError> {
    let plan = rt.plan(&req.model, opts)?;
    let cooling = plan.cooling;
    let able: Vec<Arc<Deployment>> = plan
        .tries
        .into_iter()
        .filter(|d| d.caps.embeddings)
        .collect();
    if able.is_empty() {
        if let Some(wait) = cooling {
            return Err(Runtime::all_cooling(&req.model, wait));
        }
        return Err(ProviderError::unsupported("embeddings", &req.model));
    }
    let mut attempts = Attempts::new(rt, able);
    let mut last: Option<ProviderError> = None;
    // embeddings are not in the overhead histogram: their waits go nowhere
    let backoff = Waited::default();
    while let Some((d, _in_flight)) = attempts.next(last.as_ref(), &backoff).await {
        out.attempts += 1;
        out.deployment = Some(d.clone());
        let started = Instant::now();
        let mut sub = req.clone();
        sub.model.clone_from(&d.model);
        let span = AttemptSpan::start(out);
        let result = AttemptSpan::run(&span, d.provider.embeddings(sub)).await;
        let (usage, error) = (
            result.as_ref().ok().map(|r| &r.usage),
            result.as_ref().err(),
        );
        AttemptSpan::end(span, out.trace.as_ref(), &d, "embeddings", usage, error);
        match result {
            Ok(resp) => {
                d.health.success(started.elapsed());
                return Ok(resp);
            }
            Err(e) => {
                d.health.failure(&e, &d.policy, Instant::now());
                if !e.is_retriable() {
                    return Err(e);
                }
                last = Some(e);
            }
        }
    }
    Err(give_up(last, &req.model, rt, &attempts))
}
