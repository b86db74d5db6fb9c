//! Azure OpenAI: chat completions and embeddings under `/openai/deployments/{deployment}/...`
//! (`?api-version=` required) and the v1 API's `/openai/v1/...`, authenticated by `api-key` or a
//! Bearer token, answered as OpenAI answers ([`crate::openai`]) with Azure's content-filter
//! annotations and Azure's own errors.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::knobs::base_model;
use crate::openai::{self, ApiError};
use crate::{sigv4, Route, Shared};

/// The operation names Azure's rate-limit messages quote.
pub(crate) const CHAT_OPERATION: &str = "ChatCompletions_Create";
pub(crate) const EMBEDDINGS_OPERATION: &str = "Embeddings_Create";

/// A request on Azure: the deployment from the path (percent-decoded, knobs in its query; `None`
/// on the v1 API, where the body's `model` names it) and the API version.
pub(crate) struct Azure {
    pub deployment: Option<String>,
    pub api_version: String,
}

/// Azure's 404 for a path or API version it does not serve.
pub(crate) fn resource_not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {"code": "404", "message": "Resource not found"}})),
    )
        .into_response()
}

fn azure_error(status: StatusCode, code: &str, message: &str) -> ApiError {
    ApiError {
        status,
        body: json!({"error": {"code": code, "message": message}}),
        retry_after: None,
    }
}

/// Azure's own error for an injected status (401, 403, 404, 429); others come from the model
/// service behind it in OpenAI's shape (`None`).
pub(crate) fn fault_error(
    status: u16,
    az: &Azure,
    operation: &str,
    retry_after: Option<String>,
) -> Option<ApiError> {
    Some(match status {
        401 => unauthorized(),
        403 => azure_error(
            StatusCode::FORBIDDEN,
            "403",
            "Access denied due to Virtual Network/Firewall rules.",
        ),
        404 => azure_error(
            StatusCode::NOT_FOUND,
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.",
        ),
        429 => {
            let secs = retry_after
                .as_deref()
                .and_then(|r| r.trim().parse::<u64>().ok())
                .unwrap_or(60);
            let mut e = azure_error(
                StatusCode::TOO_MANY_REQUESTS,
                "429",
                &format!(
                    "Requests to the {operation} Operation under Azure OpenAI API version {} have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after {secs} seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.",
                    az.api_version
                ),
            );
            e.retry_after = retry_after;
            e
        }
        _ => return None,
    })
}

fn unauthorized() -> ApiError {
    azure_error(
        StatusCode::UNAUTHORIZED,
        "401",
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
    )
}

/// One filter category's verdict.
fn severity(filtered: bool, severity: &str) -> Value {
    json!({"filtered": filtered, "severity": severity})
}

fn detected(filtered: bool, detected: bool) -> Value {
    json!({"filtered": filtered, "detected": detected})
}

/// A choice's `content_filter_results`: every category safe (`{}` for a choice without text).
pub(crate) fn choice_filter(has_text: bool) -> Value {
    if !has_text {
        return json!({});
    }
    json!({
        "hate": severity(false, "safe"),
        "protected_material_code": detected(false, false),
        "protected_material_text": detected(false, false),
        "self_harm": severity(false, "safe"),
        "sexual": severity(false, "safe"),
        "violence": severity(false, "safe"),
    })
}

/// `prompt_filter_results`: the prompt passed every filter.
pub(crate) fn prompt_filter_results() -> Value {
    json!([{"prompt_index": 0, "content_filter_results": {
        "hate": severity(false, "safe"),
        "jailbreak": detected(false, false),
        "self_harm": severity(false, "safe"),
        "sexual": severity(false, "safe"),
        "violence": severity(false, "safe"),
    }}])
}

/// The 400 for a prompt Azure's content filters block.
pub(crate) fn content_filter_error() -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        body: json!({"error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
            "type": null,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {
                    "hate": severity(true, "high"),
                    "jailbreak": detected(false, false),
                    "self_harm": severity(false, "safe"),
                    "sexual": severity(false, "safe"),
                    "violence": severity(false, "safe"),
                },
            },
        }}),
        retry_after: None,
    }
}

/// What Azure refuses beyond OpenAI's validation: `max_tokens` with `max_completion_tokens`.
pub(crate) fn check_chat(req: &Value) -> Result<(), ApiError> {
    let set = |k: &str| req.get(k).is_some_and(|v| !v.is_null());
    if set("max_tokens") && set("max_completion_tokens") {
        return Err(openai::invalid(
            "max_tokens and max_completion_tokens cannot both be set. Use max_completion_tokens.",
            Some("max_tokens"),
            Some("invalid_request_error"),
        ));
    }
    Ok(())
}

/// `YYYY-MM-DD` or `YYYY-MM-DD-preview`.
fn valid_api_version(v: &str) -> bool {
    let date = v.strip_suffix("-preview").unwrap_or(v);
    let b = date.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// `api-key` (any non-empty value) or `Authorization: Bearer <token>`.
fn auth_scheme(headers: &HeaderMap) -> Option<&'static str> {
    if headers
        .get("api-key")
        .is_some_and(|v| !v.as_bytes().is_empty())
    {
        return Some("api-key");
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(s, t)| s.eq_ignore_ascii_case("bearer") && !t.trim().is_empty());
    bearer.then_some("bearer")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Chat,
    Embeddings,
}

async fn handle(
    s: Arc<Shared>,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    op: Op,
    v1: bool,
) -> Response {
    let deployment = if v1 {
        None
    } else {
        // /openai/deployments/{deployment}/...
        let raw = uri.path().split('/').nth(3).unwrap_or_default();
        match String::from_utf8(sigv4::percent_decode(raw)) {
            Ok(d) if !base_model(&d).is_empty() => Some(d),
            _ => return resource_not_found(),
        }
    };
    let api_version = crate::query_param(&uri, "api-version");
    let scheme = auth_scheme(&headers);
    let route = match (op, v1) {
        (Op::Chat, false) => Route::AzureChat,
        (Op::Embeddings, false) => Route::AzureEmbeddings,
        (Op::Chat, true) => Route::AzureV1Chat,
        (Op::Embeddings, true) => Route::AzureV1Embeddings,
    };
    let detail = json!({
        "deployment": deployment,
        "api_version": api_version,
        "auth": match scheme {
            Some(s) => json!({"scheme": s}),
            None => json!({"scheme": "rejected", "error": "401"}),
        },
    });
    let (flight, seq) = s.begin_with(
        route,
        version,
        &headers,
        &body,
        Some((crate::path_and_query(&uri), detail)),
    );
    let api_version = match api_version {
        Some(v) if valid_api_version(&v) => v,
        _ if v1 => "v1".to_string(),
        _ => return resource_not_found(),
    };
    if scheme.is_none() {
        return unauthorized().into_response();
    }
    let az = Azure {
        deployment,
        api_version,
    };
    match op {
        Op::Chat => openai::chat_respond(flight, seq, &body, Some(&az)).await,
        Op::Embeddings => openai::embeddings_respond(flight, seq, &body, Some(&az)).await,
    }
}

/// `POST /openai/deployments/{deployment}/chat/completions?api-version=...`
pub async fn chat(
    State(s): State<Arc<Shared>>,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(s, version, uri, headers, body, Op::Chat, false).await
}

/// `POST /openai/deployments/{deployment}/embeddings?api-version=...`
pub async fn embeddings(
    State(s): State<Arc<Shared>>,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(s, version, uri, headers, body, Op::Embeddings, false).await
}

/// `POST /openai/v1/chat/completions`: the body's `model` names the deployment.
pub async fn chat_v1(
    State(s): State<Arc<Shared>>,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(s, version, uri, headers, body, Op::Chat, true).await
}

/// `POST /openai/v1/embeddings`
pub async fn embeddings_v1(
    State(s): State<Arc<Shared>>,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(s, version, uri, headers, body, Op::Embeddings, true).await
}

/// The client secret of the simulated Microsoft Entra ID application (any tenant, any client id).
pub const MOCK_AZURE_CLIENT_SECRET: &str = "tollway-mock-entra-secret";

/// The scope an Azure OpenAI token is asked for.
const COGNITIVE_SCOPE: &str = "https://cognitiveservices.azure.com/.default";

/// `POST /{tenant}/oauth2/v2.0/token`: Microsoft Entra ID's token endpoint, client-credentials
/// grant (`grant_type`, `client_id`, `client_secret` = [`MOCK_AZURE_CLIENT_SECRET`], `scope`
/// Azure AI services' `.default`) → `{"token_type": "Bearer", "expires_in", "access_token"}`;
/// else Entra's `{"error", "error_description"}` (401 for the client, 400 for the rest).
pub async fn entra_token(
    State(s): State<Arc<Shared>>,
    axum::extract::Path(tenant): axum::extract::Path<String>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = crate::form_pairs(&String::from_utf8_lossy(&body));
    let field = |name: &str| {
        form.iter()
            .find_map(|(k, v)| (k == name).then_some(v.as_str()))
            .filter(|v| !v.is_empty())
    };
    let outcome: Result<(), (StatusCode, &str, String)> =
        match (field("grant_type"), field("client_id"), field("client_secret"), field("scope")) {
            (Some("client_credentials"), Some(_), Some(MOCK_AZURE_CLIENT_SECRET), Some(COGNITIVE_SCOPE)) => Ok(()),
            (Some("client_credentials"), Some(_), Some(MOCK_AZURE_CLIENT_SECRET), scope) => Err((
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                format!("AADSTS70011: The provided value for the input parameter 'scope' is not valid. The scope {} is not valid.", scope.unwrap_or("")),
            )),
            (Some("client_credentials"), Some(_), _, _) => Err((
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.".to_string(),
            )),
            (Some("client_credentials"), None, _, _) => Err((
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "AADSTS900144: The request body must contain the following parameter: 'client_id'.".to_string(),
            )),
            (g, _, _, _) => Err((
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("AADSTS70003: The app requested an unsupported grant type '{}'.", g.unwrap_or("")),
            )),
        };
    let now = crate::gen::now_secs();
    let issued = outcome.as_ref().ok().map(|_| crate::gcp::issue(&s, now));
    let detail = match &outcome {
        Ok(()) => {
            json!({"tenant": tenant, "client_id": field("client_id"), "scope": field("scope"), "issued": issued})
        }
        Err((_, e, _)) => json!({"tenant": tenant, "client_id": field("client_id"), "error": e}),
    };
    let path = format!("/{tenant}/oauth2/v2.0/token");
    let (_flight, _) = s.begin_with(
        Route::Token,
        version,
        &headers,
        &body,
        Some((path, json!({ "entra": detail }))),
    );
    match (outcome, issued) {
        (Ok(()), Some(token)) => Json(json!({"token_type": "Bearer", "expires_in": 3599,
                                             "ext_expires_in": 3599, "access_token": token}))
        .into_response(),
        (Err((status, error, description)), _) => (
            status,
            Json(json!({"error": error, "error_description": description})),
        )
            .into_response(),
        (Ok(()), None) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions() {
        for ok in ["2024-10-21", "2025-04-01-preview"] {
            assert!(valid_api_version(ok), "{ok}");
        }
        for bad in ["", "2024-10", "v1", "2024-10-21-beta", "2024_10_21"] {
            assert!(!valid_api_version(bad), "{bad}");
        }
    }
}
