//! The request path between the HTTP edge and the providers: plan the deployments for a model,
//! refuse what no deployment can do, and try deployments in order until one answers — retrying
//! only retriable failures, and for streams only before the first event reached the client.

use std::sync::Arc;

use futures_util::StreamExt;
use tollway_core::{ChatRequest, ChatResponse, EventStream, ProviderError};

use crate::runtime::{Deployment, Runtime};

/// What happened on the way: for the `x-tollway-*` headers and the log.
#[derive(Default)]
pub struct Outcome {
    pub attempts: u32,
    pub deployment: Option<Arc<Deployment>>,
}

/// The deployments of `req.model` able to serve `req`; a 400 naming the feature and model when none is.
fn candidates(rt: &Runtime, req: &ChatRequest) -> Result<Vec<Arc<Deployment>>, ProviderError> {
    let plan = rt.plan(&req.model)?;
    let mut missing = None;
    let able: Vec<Arc<Deployment>> = plan
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
    }
    Ok(able)
}

fn for_deployment(req: &ChatRequest, d: &Deployment) -> ChatRequest {
    let mut r = req.clone();
    r.model.clone_from(&d.model);
    r
}

fn max_attempts(rt: &Runtime, n: usize) -> usize {
    (rt.config.server.max_attempts as usize).min(n).max(1)
}

pub async fn chat(
    rt: &Runtime,
    req: ChatRequest,
    out: &mut Outcome,
) -> Result<ChatResponse, ProviderError> {
    let plan = candidates(rt, &req)?;
    let limit = max_attempts(rt, plan.len());
    let mut last = None;
    for d in plan.into_iter().take(limit) {
        out.attempts += 1;
        out.deployment = Some(d.clone());
        match d.provider.chat(for_deployment(&req, &d)).await {
            Ok(resp) => return Ok(resp),
            Err(e) if e.is_retriable() => {
                tracing::warn!(deployment = %d.label, error = %e, "attempt failed, trying the next deployment");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| ProviderError::internal("no deployment was tried")))
}

/// Starts a stream on the first deployment that accepts the request and produces a first event.
/// The returned stream yields that first event again, then the rest.
pub async fn chat_stream(
    rt: &Runtime,
    req: ChatRequest,
    out: &mut Outcome,
) -> Result<EventStream, ProviderError> {
    let plan = candidates(rt, &req)?;
    let limit = max_attempts(rt, plan.len());
    let mut last = None;
    for d in plan.into_iter().take(limit) {
        out.attempts += 1;
        out.deployment = Some(d.clone());
        let mut stream = match d.provider.chat_stream(for_deployment(&req, &d)).await {
            Ok(s) => s,
            Err(e) if e.is_retriable() => {
                tracing::warn!(deployment = %d.label, error = %e, "attempt failed, trying the next deployment");
                last = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        // Nothing has reached the client yet: a failure before the first event can still move on.
        match stream.next().await {
            Some(Ok(first)) => {
                let rest: EventStream =
                    Box::pin(futures_util::stream::once(async move { Ok(first) }).chain(stream));
                return Ok(rest);
            }
            Some(Err(e)) if e.is_retriable() => {
                tracing::warn!(deployment = %d.label, error = %e, "stream failed before its first event, trying the next deployment");
                last = Some(e);
            }
            Some(Err(e)) => return Err(e),
            None => {
                last = Some(ProviderError::new(
                    tollway_core::ErrorKind::InvalidResponse,
                    format!("provider {} sent an empty stream", d.label),
                ));
            }
        }
    }
    Err(last.unwrap_or_else(|| ProviderError::internal("no deployment was tried")))
}
