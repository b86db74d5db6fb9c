//! The `Provider` trait every upstream client implements, and the capabilities a deployment has.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::Stream;

use crate::error::ProviderError;
use crate::types::{
    ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse, ResponseFormat, StreamEvent,
};

/// A streamed answer: canonical events, ending after `Finish` (and the last `Usage`), or with an
/// `Err` item when the upstream fails mid-stream. Dropping it cancels the upstream request.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Time one client request spent waiting on something other than the gateway's own work (an
/// upstream's answer, a backoff, the client's body), added up as it happens, so that the gateway
/// can tell its own time from the rest (`tollway_overhead_seconds`). Shared by reference; atomic
/// because a provider's future must be `Send`. Whoever adds reads the clock: this crate does not.
#[derive(Debug, Default)]
pub struct Waited(AtomicU64);

impl Waited {
    pub fn add(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn total(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

/// What a deployment can do. Requests that need more are refused with a 400 naming the feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub tools: bool,
    pub vision: bool,
    /// `response_format: json_object`.
    pub json_mode: bool,
    /// `response_format: json_schema` (structured output).
    pub json_schema: bool,
    /// Reports usage at the end of a stream when asked (OpenAI `stream_options.include_usage`).
    pub stream_usage: bool,
    pub embeddings: bool,
}

impl Capabilities {
    /// Everything on: the OpenAI API as documented.
    pub const ALL: Capabilities = Capabilities {
        tools: true,
        vision: true,
        json_mode: true,
        json_schema: true,
        stream_usage: true,
        embeddings: true,
    };

    /// The first feature `req` needs that these capabilities lack, named for an error message.
    pub fn missing_for(&self, req: &ChatRequest) -> Option<&'static str> {
        if !self.tools && req.uses_tools() {
            return Some("tool use");
        }
        if !self.vision && req.has_images() {
            return Some("image input");
        }
        match req.response_format {
            Some(ResponseFormat::JsonObject) if !self.json_mode => {
                return Some("response_format json_object")
            }
            Some(ResponseFormat::JsonSchema { .. }) if !self.json_schema => {
                return Some("response_format json_schema")
            }
            _ => {}
        }
        None
    }
}

/// Who a provider client is, for headers, logs and errors.
#[derive(Debug, Clone)]
pub struct ProviderInfo {
    /// The provider account's name in the config (e.g. `openai`, `anthropic-eu`).
    pub name: String,
}

/// An upstream account that answers chat requests. `model` is the upstream model id, which
/// replaces `req.model` (the request is borrowed, not copied per attempt); `req.stream` is ignored
/// (each method says whether it streams).
pub trait Provider: Send + Sync {
    fn info(&self) -> &ProviderInfo;

    ///
    /// `waited` gets the time from sending the upstream request to having its whole answer (or
    /// its error), whatever the outcome; the work before and after (encoding the request, decoding
    /// the answer) is the gateway's own.
    fn chat<'a>(
        &'a self,
        req: &'a ChatRequest,
        model: &'a str,
        waited: &'a Waited,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>>;

    /// Starts a streamed answer. Resolves once the upstream has accepted the request (its status
    /// and headers arrived), so that errors before the first byte can still be retried elsewhere.
    /// The stream itself does not borrow the request. `waited` gets the time from sending the
    /// request to its status and headers (or its error).
    fn chat_stream<'a>(
        &'a self,
        req: &'a ChatRequest,
        model: &'a str,
        waited: &'a Waited,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>>;

    /// The input tokens of `req` for `model`, counted by the upstream's own tokenizer where the
    /// provider has an endpoint for it (Anthropic's `POST /v1/messages/count_tokens`); `Ok(None)`
    /// where it has none, and the caller counts locally.
    fn count_tokens<'a>(
        &'a self,
        req: &'a ChatRequest,
        model: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, ProviderError>> {
        let _ = (req, model);
        Box::pin(async { Ok(None) })
    }

    fn embeddings(
        &self,
        req: EmbeddingsRequest,
    ) -> BoxFuture<'_, Result<EmbeddingsResponse, ProviderError>> {
        let name = self.info().name.clone();
        Box::pin(async move {
            Err(ProviderError::unsupported(
                "embeddings",
                crate::Label::new(&name, &req.model),
            ))
        })
    }
}
