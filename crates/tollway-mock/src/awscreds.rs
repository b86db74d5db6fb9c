//! Where AWS workloads get temporary credentials without keys in their config, simulated: the EC2
//! instance metadata service (IMDSv2: a session token first, then the role's credentials) and the
//! ECS / EKS Pod Identity container credentials endpoint. The credentials they hand out sign
//! requests the Bedrock routes accept: their secret is [`MOCK_AWS_SECRET`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use crate::sigv4::MOCK_AWS_SECRET;
use crate::{gen, Route, Shared};

/// The role the simulated instance has.
pub const MOCK_INSTANCE_ROLE: &str = "tollway-bedrock-role";
/// The session token IMDSv2 hands out (any caller, any lifetime asked).
const IMDS_TOKEN: &str = "AQAEAmockImdsSessionToken==";
/// How long the credentials live, in seconds.
const LIFETIME: u64 = 6 * 3600;

/// Temporary credentials as IMDS and the container endpoint write them, counted in the stats.
fn credentials(s: &Shared, with_code: bool) -> serde_json::Value {
    let n = s.seq.fetch_add(1, Ordering::Relaxed) + 1;
    s.tokens_issued.fetch_add(1, Ordering::Relaxed);
    let now = gen::now_secs();
    let mut v = json!({
        "AccessKeyId": format!("ASIAMOCK{n:012}"),
        "SecretAccessKey": MOCK_AWS_SECRET,
        "Token": format!("IQoJmock-session-{n}"),
        "Expiration": gen::rfc3339(now + LIFETIME),
    });
    if with_code {
        v["Code"] = json!("Success");
        v["LastUpdated"] = json!(gen::rfc3339(now));
        v["Type"] = json!("AWS-HMAC");
    } else {
        v["RoleArn"] = json!(format!(
            "arn:aws:iam::123456789012:role/{MOCK_INSTANCE_ROLE}"
        ));
    }
    v
}

fn log(s: &Arc<Shared>, version: Version, headers: &HeaderMap, body: &Bytes, path: String) {
    let (_flight, _) = s.begin_with(
        Route::Token,
        version,
        headers,
        body,
        Some((path, json!({ "aws_credentials": true }))),
    );
}

fn imds_authorized(headers: &HeaderMap) -> bool {
    headers
        .get("x-aws-ec2-metadata-token")
        .and_then(|v| v.to_str().ok())
        == Some(IMDS_TOKEN)
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, "").into_response()
}

/// `PUT /latest/api/token` (IMDSv2): needs `X-aws-ec2-metadata-token-ttl-seconds` (1–21600).
pub async fn imds_token(
    State(s): State<Arc<Shared>>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    log(&s, version, &headers, &body, "/latest/api/token".into());
    let ttl = headers
        .get("x-aws-ec2-metadata-token-ttl-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match ttl {
        Some(1..=21_600) => ([(header::CONTENT_TYPE, "text/plain")], IMDS_TOKEN).into_response(),
        _ => (StatusCode::BAD_REQUEST, "").into_response(),
    }
}

/// `GET /latest/meta-data/iam/security-credentials/`: the instance's role name.
pub async fn imds_role(
    State(s): State<Arc<Shared>>,
    version: Version,
    headers: HeaderMap,
) -> Response {
    let path = "/latest/meta-data/iam/security-credentials/".to_string();
    log(&s, version, &headers, &Bytes::new(), path);
    if !imds_authorized(&headers) {
        return unauthorized();
    }
    ([(header::CONTENT_TYPE, "text/plain")], MOCK_INSTANCE_ROLE).into_response()
}

/// `GET /latest/meta-data/iam/security-credentials/{role}`: the role's credentials.
pub async fn imds_credentials(
    State(s): State<Arc<Shared>>,
    Path(role): Path<String>,
    version: Version,
    headers: HeaderMap,
) -> Response {
    let path = format!("/latest/meta-data/iam/security-credentials/{role}");
    log(&s, version, &headers, &Bytes::new(), path);
    if !imds_authorized(&headers) {
        return unauthorized();
    }
    if role != MOCK_INSTANCE_ROLE {
        return (StatusCode::NOT_FOUND, "").into_response();
    }
    let v = credentials(&s, true);
    ([(header::CONTENT_TYPE, "text/plain")], v.to_string()).into_response()
}

/// `GET /v2/credentials/{id}`: the container credentials endpoint (ECS's relative URI; EKS Pod
/// Identity sends an `Authorization` token, which must then not be empty).
pub async fn container_credentials(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    version: Version,
    headers: HeaderMap,
) -> Response {
    log(
        &s,
        version,
        &headers,
        &Bytes::new(),
        format!("/v2/credentials/{id}"),
    );
    let auth = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if auth.is_some_and(<[u8]>::is_empty) {
        return unauthorized();
    }
    let v = credentials(&s, false);
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}
