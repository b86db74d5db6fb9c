//! Google's OAuth 2.0 token endpoint for service accounts (`POST /token`, as
//! `https://oauth2.googleapis.com/token`): a JWT-bearer grant whose assertion is checked for
//! real (RS256 with the fixture service account's key, issuer, audience, scope, lifetime), and
//! the access tokens it issues, which Vertex AI routes require.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::{b64, gen, Route, Shared};

/// The fixture service account's private key: PKCS#8 PEM, RSA 2048, a throwaway test key.
pub const MOCK_GCP_PRIVATE_KEY: &str = include_str!("gcp-test-key.pem");

/// The fixture service account's email: the JWT's `iss` the token endpoint accepts.
pub const MOCK_GCP_CLIENT_EMAIL: &str = "tollway-mock@tollway-test.iam.gserviceaccount.com";

const PROJECT_ID: &str = "tollway-test";
const PRIVATE_KEY_ID: &str = "7f3c1e0a9b2d4c6e8f0a1b2c3d4e5f6a7b8c9d0e";
const CLIENT_ID: &str = "104729318462051837265";

/// The scope Vertex AI needs.
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Seconds an issued access token lives.
const TOKEN_LIFETIME: u64 = 3599;

/// Clock skew allowed on a JWT's `iat`.
const SKEW: u64 = 300;

/// A service-account key file for the fixture account, as Google's IAM hands them out, with
/// `token_uri` (the mock's `/token`, e.g. `format!("{}/token", server.url())`).
pub fn mock_gcp_service_account(token_uri: &str) -> String {
    let email_escaped = MOCK_GCP_CLIENT_EMAIL.replace('@', "%40");
    let v = json!({
        "type": "service_account",
        "project_id": PROJECT_ID,
        "private_key_id": PRIVATE_KEY_ID,
        "private_key": MOCK_GCP_PRIVATE_KEY,
        "client_email": MOCK_GCP_CLIENT_EMAIL,
        "client_id": CLIENT_ID,
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": format!("https://www.googleapis.com/robot/v1/metadata/x509/{email_escaped}"),
        "universe_domain": "googleapis.com",
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// The DER between a PEM's `-----BEGIN`/`-----END` lines.
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    b64::decode(&body)
}

/// The fixture account's public key (DER `RSAPublicKey`), derived once from the private key.
fn public_key() -> Option<&'static [u8]> {
    static KEY: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    KEY.get_or_init(|| {
        let der = pem_der(MOCK_GCP_PRIVATE_KEY)?;
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).ok()?;
        Some(pair.public().as_ref().to_vec())
    })
    .as_deref()
}

/// A refused grant: the OAuth error code and its description.
struct Refusal {
    error: &'static str,
    description: String,
}

fn refuse(error: &'static str, description: impl Into<String>) -> Refusal {
    Refusal {
        error,
        description: description.into(),
    }
}

fn invalid_grant(description: impl Into<String>) -> Refusal {
    refuse("invalid_grant", description)
}

fn segment_json(seg: &str) -> Option<Value> {
    serde_json::from_slice(&b64::decode(seg)?)
        .ok()
        .filter(Value::is_object)
}

/// Checks a JWT-bearer assertion; the claims on success.
fn verify_assertion(jwt: &str, now: u64) -> Result<Value, Refusal> {
    let mut segs = jwt.split('.');
    let (Some(h), Some(c), Some(sig), None) = (segs.next(), segs.next(), segs.next(), segs.next())
    else {
        return Err(invalid_grant(
            "Invalid JWT: Token must have three segments.",
        ));
    };
    let (Some(head), Some(claims)) = (segment_json(h), segment_json(c)) else {
        return Err(invalid_grant(
            "Invalid JWT: Failed to parse the JWT's header or claims.",
        ));
    };
    if head.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(invalid_grant(
            "Invalid JWT: Unsupported algorithm; only RS256 is accepted.",
        ));
    }
    if head.get("typ").is_some_and(|t| t.as_str() != Some("JWT")) {
        return Err(invalid_grant("Invalid JWT: The header's typ must be JWT."));
    }
    if claims.get("iss").and_then(Value::as_str) != Some(MOCK_GCP_CLIENT_EMAIL) {
        return Err(invalid_grant("Invalid grant: account not found"));
    }
    let signature = b64::decode(sig).ok_or_else(|| invalid_grant("Invalid JWT Signature."))?;
    let key = public_key().ok_or_else(|| refuse("internal_failure", "the fixture key"))?;
    let signed = &jwt[..h.len() + 1 + c.len()];
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| invalid_grant("Invalid JWT Signature."))?;
    // The token endpoint's URL as the client reached it: any host, a path ending in `/token`.
    let aud_ok = claims
        .get("aud")
        .and_then(Value::as_str)
        .and_then(|a| a.split_once("://"))
        .and_then(|(scheme, rest)| Some((scheme, rest.split_once('/')?)))
        .is_some_and(|(scheme, (host, path))| {
            matches!(scheme, "http" | "https")
                && !host.is_empty()
                && (path == "token" || path.ends_with("/token"))
        });
    if !aud_ok {
        return Err(invalid_grant("Invalid JWT: Failed audience check. The right audience is https://oauth2.googleapis.com/token"));
    }
    let iat = claims.get("iat").and_then(Value::as_u64);
    let exp = claims.get("exp").and_then(Value::as_u64);
    let timely = match (iat, exp) {
        (Some(iat), Some(exp)) => exp > iat && exp - iat <= 3600 && iat <= now + SKEW && exp > now,
        _ => false,
    };
    if !timely {
        return Err(invalid_grant("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim."));
    }
    let scoped = claims
        .get("scope")
        .and_then(Value::as_str)
        .is_some_and(|s| s.split_whitespace().any(|x| x == CLOUD_PLATFORM));
    if !scoped {
        return Err(refuse(
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        ));
    }
    Ok(claims)
}

/// A new access token, remembered as issued.
pub(crate) fn issue(s: &Shared, now: u64) -> String {
    // Unique per server (the sequence never repeats), and across servers unlikely to clash.
    let n = s.seq.fetch_add(1, Ordering::Relaxed) + 1;
    let x = gen::splitmix(n ^ now.rotate_left(17) ^ std::ptr::from_ref(s) as usize as u64);
    let token = format!("ya29.mock-{n:06}-{x:016x}");
    if let Ok(mut t) = s.tokens.lock() {
        t.retain(|_, exp| *exp > now);
        t.insert(token.clone(), now + TOKEN_LIFETIME);
    }
    s.tokens_issued.fetch_add(1, Ordering::Relaxed);
    token
}

/// `GET /computeMetadata/v1/instance/service-accounts/default/token`: the metadata server of
/// Google Cloud's machines (Compute Engine, GKE, Cloud Run), which hands the machine's service
/// account's token to any local caller that sends `Metadata-Flavor: Google` (else 403, as the
/// real one answers).
pub async fn metadata_token(
    State(s): State<Arc<Shared>>,
    version: Version,
    headers: HeaderMap,
) -> Response {
    let flavored = headers
        .get("metadata-flavor")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "Google");
    let now = gen::now_secs();
    let issued = flavored.then(|| issue(&s, now));
    let (_flight, _) = s.begin_with(
        Route::Token,
        version,
        &headers,
        &Bytes::new(),
        Some((
            METADATA_TOKEN_PATH.to_string(),
            json!({ "metadata": {"issued": issued} }),
        )),
    );
    match issued {
        Some(token) => {
            let v = json!({"access_token": token, "expires_in": TOKEN_LIFETIME, "token_type": "Bearer"});
            ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
        }
        None => (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
            "Missing required header: Metadata-Flavor",
        )
            .into_response(),
    }
}

/// The metadata server's token path.
pub const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// `POST /token`: a form-encoded JWT-bearer grant → `{"access_token", "expires_in",
/// "token_type"}`, or a 400 `{"error", "error_description"}`.
pub async fn token(
    State(s): State<Arc<Shared>>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = crate::form_pairs(&String::from_utf8_lossy(&body));
    let field = |name: &str| {
        form.iter()
            .find_map(|(k, v)| (k == name).then_some(v.as_str()))
    };
    let now = gen::now_secs();
    let outcome = match (field("grant_type"), field("assertion")) {
        (Some(JWT_BEARER), Some(a)) if !a.is_empty() => verify_assertion(a, now),
        (Some(JWT_BEARER), _) => Err(refuse(
            "invalid_request",
            "Missing required parameter: assertion",
        )),
        (None, _) => Err(refuse(
            "invalid_request",
            "Missing required parameter: grant_type",
        )),
        (Some(g), _) => Err(refuse(
            "unsupported_grant_type",
            format!("Invalid grant_type: {g}"),
        )),
    };
    let issued = outcome.as_ref().ok().map(|_| issue(&s, now));
    let detail = match &outcome {
        Ok(claims) => json!({"grant_type": field("grant_type"), "iss": claims.get("iss"),
                             "scope": claims.get("scope"), "aud": claims.get("aud"),
                             "issued": issued}),
        Err(r) => json!({"grant_type": field("grant_type"), "error": r.error,
                         "error_description": r.description}),
    };
    let (_flight, _) = s.begin_with(
        Route::Token,
        version,
        &headers,
        &body,
        Some(("/token".to_string(), json!({ "oauth": detail }))),
    );
    let json_type = [(header::CONTENT_TYPE, "application/json; charset=utf-8")];
    match (outcome, issued) {
        (Ok(_), Some(token)) => {
            let v = json!({"access_token": token, "expires_in": TOKEN_LIFETIME, "token_type": "Bearer"});
            (json_type, v.to_string()).into_response()
        }
        (Err(r), _) => {
            let v = json!({"error": r.error, "error_description": r.description});
            (StatusCode::BAD_REQUEST, json_type, v.to_string()).into_response()
        }
        (Ok(_), None) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// An access token every server takes as issued and never expiring, for a simulated Vertex AI
/// account that has no key file (the demo's); tests of the token flow use `/token`.
pub const MOCK_GCP_TOKEN: &str = "ya29.tollway-mock-demo";

/// Whether `Authorization: Bearer <token>` names a token `/token` issued that has not expired
/// (or is [`MOCK_GCP_TOKEN`]); the token if so.
pub(crate) fn bearer(s: &Shared, headers: &HeaderMap) -> Result<String, &'static str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("missing")?;
    let (scheme, token) = value.split_once(' ').ok_or("malformed")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("malformed");
    }
    let token = token.trim();
    if token == MOCK_GCP_TOKEN {
        return Ok(token.to_string());
    }
    let now = gen::now_secs();
    match s.tokens.lock().ok().and_then(|t| t.get(token).copied()) {
        Some(exp) if exp > now => Ok(token.to_string()),
        Some(_) => Err("expired"),
        None => Err("unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_key_parses() {
        let der = pem_der(MOCK_GCP_PRIVATE_KEY).expect("pem");
        assert!(ring::signature::RsaKeyPair::from_pkcs8(&der).is_ok());
        assert!(public_key().is_some_and(|k| k.len() > 256));
        let sa: Value =
            serde_json::from_str(&mock_gcp_service_account("http://x/token")).expect("json");
        assert_eq!(sa["type"], "service_account");
        assert_eq!(sa["client_email"], MOCK_GCP_CLIENT_EMAIL);
        assert_eq!(sa["token_uri"], "http://x/token");
    }

    #[test]
    fn malformed_assertions_are_refused() {
        for jwt in ["", "a.b", "a.b.c.d", "e30.e30.AAAA"] {
            let r = verify_assertion(jwt, 1000).expect_err(jwt);
            assert_eq!(r.error, "invalid_grant", "{jwt}");
        }
    }
}
