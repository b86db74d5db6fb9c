//! Classified errors: what went wrong, on which side, and whether another attempt may succeed.
//!
//! A `ProviderError` is produced by request translation (the client asked for something the target
//! cannot do), by a provider client (the upstream answered with an error, timed out, or sent
//! something unreadable) or by the gateway itself. The HTTP edge renders it in the caller's API shape
//! with [`ProviderError::http_status`]; routing consults [`ProviderError::retry`].

use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The client's request is invalid (bad field, unknown model, feature the target lacks). 400.
    InvalidRequest,
    /// The prompt (with `max_tokens`) does not fit the model's context window. 400; a model
    /// group's `context_window_fallbacks` may still serve it.
    ContextWindowExceeded,
    /// The upstream refused the content under its usage policy. 400; a model group's
    /// `content_policy_fallbacks` may still serve it.
    ContentPolicy,
    /// The client's credentials are missing or wrong. 401.
    Authentication,
    /// The client may not do this. 403.
    PermissionDenied,
    /// No such resource (e.g. unknown model). 404.
    NotFound,
    /// The request body is over the limit. 413.
    RequestTooLarge,
    /// A rate limit applies (ours or the upstream's). 429.
    RateLimited,
    /// A hard budget is spent until its period resets. 429 (OpenAI's `insufficient_quota`).
    BudgetExceeded,
    /// The upstream says it is overloaded (Anthropic 529, OpenAI 503). 503 / 529.
    Overloaded,
    /// The upstream failed (5xx). 502.
    Upstream,
    /// The upstream rejected the gateway's own credentials or configuration (its 401/403/404).
    /// Not the client's fault. 502.
    UpstreamConfig,
    /// The upstream did not answer in time. 504.
    Timeout,
    /// Could not connect, or the connection broke. 502.
    Connection,
    /// The upstream answered with something we could not read. 502.
    InvalidResponse,
    /// A bug or unexpected state in the gateway. 500.
    Internal,
}

/// Whether trying again (on this or another deployment) may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Retrying cannot help: the request itself is at fault.
    Never,
    /// Another attempt may succeed.
    Safe,
    /// Another attempt may succeed after this long (from Retry-After).
    After(Duration),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProviderError {
    pub kind: ErrorKind,
    /// The upstream's HTTP status, when the upstream answered.
    pub upstream_status: Option<u16>,
    /// A message fit for the client: names the problem, never a secret.
    pub message: String,
    pub retry: Retry,
    /// The OpenAI-style `param` the error is about, when there is one.
    pub param: Option<String>,
}

impl ProviderError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ProviderError {
            kind,
            upstream_status: None,
            message: message.into(),
            retry: Self::retry_of(kind),
            param: None,
        }
    }

    /// Whether an error of `kind` may succeed when tried again.
    fn retry_of(kind: ErrorKind) -> Retry {
        match kind {
            ErrorKind::InvalidRequest
            | ErrorKind::ContextWindowExceeded
            | ErrorKind::ContentPolicy
            | ErrorKind::Authentication
            | ErrorKind::PermissionDenied
            | ErrorKind::NotFound
            | ErrorKind::RequestTooLarge
            | ErrorKind::BudgetExceeded
            | ErrorKind::Internal => Retry::Never,
            ErrorKind::RateLimited
            | ErrorKind::Overloaded
            | ErrorKind::Upstream
            | ErrorKind::UpstreamConfig
            | ErrorKind::Timeout
            | ErrorKind::Connection
            | ErrorKind::InvalidResponse => Retry::Safe,
        }
    }

    /// The same error as another kind (an upstream's error type says more than its status), with
    /// that kind's retry rule and the upstream's `retry_after` wait where retrying is allowed.
    pub fn reclassify(mut self, kind: ErrorKind, retry_after: Option<Duration>) -> Self {
        self.kind = kind;
        self.retry = match (Self::retry_of(kind), retry_after) {
            (Retry::Safe, Some(d)) => Retry::After(d),
            (r, _) => r,
        };
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }

    /// The target cannot do what the request asks: a 400 naming the feature and the model.
    pub fn unsupported(feature: &str, model: impl std::fmt::Display) -> Self {
        Self::invalid(format!("{feature} is not supported by model {model}"))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    pub fn with_upstream_status(mut self, status: u16) -> Self {
        self.upstream_status = Some(status);
        self
    }

    /// Classifies an upstream HTTP error status. `message` should already be the upstream's own
    /// error message (it is shown to the client), `retry_after` the parsed Retry-After header.
    pub fn from_upstream_status(
        status: u16,
        message: impl Into<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        let kind = match status {
            400 | 422 => ErrorKind::InvalidRequest,
            401 | 403 | 404 => ErrorKind::UpstreamConfig,
            408 => ErrorKind::Timeout,
            413 => ErrorKind::RequestTooLarge,
            429 => ErrorKind::RateLimited,
            503 | 529 => ErrorKind::Overloaded,
            504 => ErrorKind::Timeout,
            s if s >= 500 => ErrorKind::Upstream,
            _ => ErrorKind::InvalidResponse,
        };
        ProviderError::new(kind, message)
            .with_upstream_status(status)
            .reclassify(kind, retry_after)
    }

    /// The status the gateway answers its client with.
    pub fn http_status(&self) -> u16 {
        match self.kind {
            ErrorKind::InvalidRequest
            | ErrorKind::ContextWindowExceeded
            | ErrorKind::ContentPolicy => 400,
            ErrorKind::Authentication => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::RequestTooLarge => 413,
            ErrorKind::RateLimited | ErrorKind::BudgetExceeded => 429,
            ErrorKind::Overloaded => 503,
            ErrorKind::Upstream
            | ErrorKind::UpstreamConfig
            | ErrorKind::Connection
            | ErrorKind::InvalidResponse => 502,
            ErrorKind::Timeout => 504,
            ErrorKind::Internal => 500,
        }
    }

    /// Seconds for a Retry-After header, when the error carries one.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self.retry {
            Retry::After(d) => Some(d.as_secs_f64().ceil() as u64),
            _ => None,
        }
    }

    pub fn is_retriable(&self) -> bool {
        !matches!(self.retry, Retry::Never)
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProviderError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_statuses_are_classified() {
        let e = ProviderError::from_upstream_status(429, "slow down", Some(Duration::from_secs(3)));
        assert_eq!(e.kind, ErrorKind::RateLimited);
        assert_eq!(e.http_status(), 429);
        assert_eq!(e.retry_after_secs(), Some(3));

        let e = ProviderError::from_upstream_status(400, "bad", Some(Duration::from_secs(3)));
        assert_eq!(e.retry, Retry::Never, "a client error is never retried");
        assert_eq!(e.http_status(), 400);

        let e = ProviderError::from_upstream_status(401, "bad key", None);
        assert_eq!(
            e.http_status(),
            502,
            "the gateway's own key, not the client's"
        );
        assert!(e.is_retriable());

        assert_eq!(
            ProviderError::from_upstream_status(529, "", None).http_status(),
            503
        );
        assert_eq!(
            ProviderError::from_upstream_status(500, "", None).http_status(),
            502
        );
        assert_eq!(
            ProviderError::from_upstream_status(504, "", None).http_status(),
            504
        );

        // a 400 that an upstream's error type calls a quota: retried, after its wait
        let e = ProviderError::from_upstream_status(400, "quota", None)
            .reclassify(ErrorKind::RateLimited, Some(Duration::from_secs(2)));
        assert_eq!(e.retry_after_secs(), Some(2));
        assert_eq!(e.upstream_status, Some(400));
        let e = ProviderError::from_upstream_status(429, "x", Some(Duration::from_secs(2)))
            .reclassify(ErrorKind::InvalidRequest, Some(Duration::from_secs(2)));
        assert_eq!(e.retry, Retry::Never, "a client error is never retried");
    }
}
