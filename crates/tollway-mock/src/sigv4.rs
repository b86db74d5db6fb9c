//! AWS Signature Version 4, written from AWS's specification ("Create a signed AWS API
//! request"): [`sign`] for tests that need an independent signer, and the check the Bedrock
//! routes run on every request (any `Authorization: Bearer` key, or a SigV4 signature made with
//! [`MOCK_AWS_SECRET`] under any access key id and region).

use axum::http::{HeaderMap, Uri};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The secret access key the mock checks every SigV4 signature against, whatever the access
/// key id.
pub const MOCK_AWS_SECRET: &str = "tollway-mock-secret";

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The service name Bedrock's signatures are scoped to (`bedrock-runtime` is only the host).
pub const BEDROCK_SERVICE: &str = "bedrock";

/// A request as it goes on the wire, to sign or check.
pub struct SignableRequest<'a> {
    pub method: &'a str,
    /// The path as sent, percent-encoding included (`/model/a%3A0/converse`).
    pub path: &'a str,
    /// The query string as sent, without the `?` (empty for none).
    pub query: &'a str,
    /// The headers to sign, names in any case; `host` and `x-amz-date` are required (and
    /// `x-amz-security-token` when a session token is used).
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// Who signs, and for which scope.
pub struct Credentials<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub region: &'a str,
    /// `bedrock` for Bedrock ([`BEDROCK_SERVICE`]).
    pub service: &'a str,
}

/// The `Authorization` header value for `req`, every header of `req.headers` signed. The time
/// is the request's `x-amz-date` header (`20150830T123600Z`); `None` without one. When the
/// headers carry `x-amz-content-sha256`, its value stands for the body's hash.
pub fn sign(req: &SignableRequest<'_>, creds: &Credentials<'_>) -> Option<String> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for (name, value) in req.headers {
        let name = name.to_ascii_lowercase();
        match headers.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push(',');
                v.push_str(&canonical_value(value));
            }
            None => headers.push((name, canonical_value(value))),
        }
    }
    headers.sort();
    let amz_date = headers
        .iter()
        .find(|(n, _)| n == "x-amz-date")
        .map(|(_, v)| v.clone())?;
    let date = amz_date.get(..8)?;
    let payload_hash = headers
        .iter()
        .find(|(n, _)| n == "x-amz-content-sha256")
        .map_or_else(|| hex(&Sha256::digest(req.body)), |(_, v)| v.clone());
    let signed: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    let signed = signed.join(";");
    let scope = format!("{date}/{}/{}/aws4_request", creds.region, creds.service);
    let signature = signature(
        &canonical_request(req, &headers, &signed, &payload_hash),
        &amz_date,
        &scope,
        creds.secret_access_key,
    );
    Some(format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
        creds.access_key_id
    ))
}

/// Method, canonical URI, canonical query, canonical headers, signed headers, payload hash.
/// `headers`: lowercase names, canonical values, sorted.
fn canonical_request(
    req: &SignableRequest<'_>,
    headers: &[(String, String)],
    signed: &str,
    payload_hash: &str,
) -> String {
    let mut out = format!(
        "{}\n{}\n{}\n",
        req.method,
        canonical_uri(req.path),
        canonical_query(req.query)
    );
    for (name, value) in headers {
        out.push_str(name);
        out.push(':');
        out.push_str(value);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(signed);
    out.push('\n');
    out.push_str(payload_hash);
    out
}

/// Hex HMAC-SHA256 of the string to sign, with the key derived from the secret, the date and
/// the scope's region and service.
fn signature(canonical: &str, amz_date: &str, scope: &str, secret: &str) -> String {
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    // scope = date/region/service/aws4_request: the key chain takes its parts in order.
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in scope.split('/') {
        key = hmac(&key, part.as_bytes());
    }
    hex(&hmac(&key, string_to_sign.as_bytes()))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// A header value trimmed, inner runs of spaces folded to one.
fn canonical_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every path segment URI-encoded again, as sent: for services other than S3 the canonical
/// URI encodes the already encoded path, so `a%3A0` becomes `a%253A0`.
fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    path.split('/')
        .map(uri_encode)
        .collect::<Vec<_>>()
        .join("/")
}

/// Parameters decoded, then encoded as SigV4 wants, sorted by name then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let enc = |s: &str| uri_encode(&String::from_utf8_lossy(&percent_decode(s)));
            (enc(k), enc(v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// RFC 3986 encoding: everything but `A-Z a-z 0-9 - _ . ~` as `%XX`, upper-case hex.
pub(crate) fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `%XX` sequences decoded (a `%` not followed by two hex digits is kept as is).
pub(crate) fn percent_decode(s: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(s).collect()
}

// ---- the check ----

/// Who called, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// `Authorization: Bearer <Bedrock API key>`.
    ApiKey,
    SigV4 {
        access_key_id: String,
        region: String,
        signed_headers: String,
    },
}

/// An authentication failure: the `x-amzn-errortype` and the message AWS sends (always 403).
#[derive(Debug)]
pub(crate) struct AuthError {
    pub typ: &'static str,
    pub message: String,
}

const BAD_SIGNATURE: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

fn incomplete(message: impl Into<String>) -> AuthError {
    AuthError {
        typ: "IncompleteSignatureException",
        message: message.into(),
    }
}

fn bad_signature(message: impl Into<String>) -> AuthError {
    AuthError {
        typ: "InvalidSignatureException",
        message: message.into(),
    }
}

/// Checks a request's `Authorization`: any non-empty bearer token, or a SigV4 signature for
/// the `bedrock` service made with [`MOCK_AWS_SECRET`].
pub(crate) fn verify(
    method: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Caller, AuthError> {
    let Some(auth) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    else {
        return Err(AuthError {
            typ: "MissingAuthenticationTokenException",
            message: "Missing Authentication Token".into(),
        });
    };
    if let Some((scheme, token)) = auth.split_once(' ') {
        if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
            return Ok(Caller::ApiKey);
        }
    }
    let Some(params) = auth.strip_prefix(ALGORITHM).filter(|p| p.starts_with(' ')) else {
        return Err(incomplete(format!(
            "Authorization header requires '{ALGORITHM}' or 'Bearer' as its scheme. Authorization={auth}"
        )));
    };
    let mut credential = None;
    let mut signed_headers = None;
    let mut given = None;
    for part in params.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => given = Some(v),
            _ => {}
        }
    }
    let missing: Vec<&str> = [
        ("Credential", credential.is_none()),
        ("Signature", given.is_none()),
        ("SignedHeaders", signed_headers.is_none()),
    ]
    .iter()
    .filter(|(_, m)| *m)
    .map(|(n, _)| *n)
    .collect();
    let (Some(credential), Some(signed_headers), Some(given)) = (credential, signed_headers, given)
    else {
        return Err(incomplete(format!(
            "Authorization header requires {} parameter(s). Authorization={auth}",
            missing
                .iter()
                .map(|m| format!("'{m}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, "aws4_request"] = scope[..] else {
        return Err(incomplete(format!(
            "Credential should be of the form <access key id>/<date>/<region>/<service>/aws4_request: {credential}"
        )));
    };
    if service != BEDROCK_SERVICE {
        return Err(bad_signature(format!(
            "Credential should be scoped to correct service: '{BEDROCK_SERVICE}'. "
        )));
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    let Some(amz_date) = headers.get("x-amz-date").and_then(|v| v.to_str().ok()) else {
        return Err(incomplete(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        ));
    };
    if !amz_date.starts_with(date) {
        return Err(bad_signature(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{date}' != '{}', from '{amz_date}'.",
            amz_date.get(..8).unwrap_or(amz_date)
        )));
    }
    for required in ["host", "x-amz-date"] {
        if !names.contains(&required) {
            return Err(bad_signature(format!(
                "'{required}' must be a 'SignedHeader' in the AWS Authorization."
            )));
        }
    }
    if headers.contains_key("x-amz-security-token") && !names.contains(&"x-amz-security-token") {
        return Err(bad_signature(
            "'x-amz-security-token' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    if let Some(claimed) = headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
    {
        if claimed != "UNSIGNED-PAYLOAD" && claimed != hex(&Sha256::digest(body)) {
            return Err(bad_signature(
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ));
        }
    }
    // The signed headers' values as received; `host` from the URI's authority over HTTP/2.
    let mut values: Vec<(String, String)> = Vec::new();
    for name in &names {
        let all: Vec<&str> = headers
            .get_all(*name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let value = if all.is_empty() && *name == "host" {
            uri.authority().map(|a| a.as_str().to_string())
        } else if all.is_empty() {
            None
        } else {
            Some(all.join(","))
        };
        let Some(value) = value else {
            return Err(bad_signature(format!(
                "The request signature we calculated does not match the signature you provided: signed header '{name}' is not in the request."
            )));
        };
        values.push((name.to_string(), value));
    }
    let pairs: Vec<(&str, &str)> = values
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let req = SignableRequest {
        method,
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers: &pairs,
        body,
    };
    let expected = sign(
        &req,
        &Credentials {
            access_key_id,
            secret_access_key: MOCK_AWS_SECRET,
            region,
            service,
        },
    )
    .and_then(|a| a.rsplit_once("Signature=").map(|(_, s)| s.to_string()));
    if expected.as_deref() != Some(given) {
        return Err(bad_signature(BAD_SIGNATURE));
    }
    Ok(Caller::SigV4 {
        access_key_id: access_key_id.to_string(),
        region: region.to_string(),
        signed_headers: signed_headers.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// AWS's worked example ("Examples of how to derive a signing key", IAM `ListUsers`).
    #[test]
    fn aws_list_users_example() {
        let headers = [
            (
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
            ("Host", "iam.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ];
        let req = SignableRequest {
            method: "GET",
            path: "/",
            query: "Action=ListUsers&Version=2010-05-08",
            headers: &headers,
            body: b"",
        };
        let mut canon: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), canonical_value(v)))
            .collect();
        canon.sort();
        let signed = "content-type;host;x-amz-date";
        let cr = canonical_request(&req, &canon, signed, &hex(&Sha256::digest(b"")));
        assert_eq!(
            hex(&Sha256::digest(cr.as_bytes())),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        let auth = sign(
            &req,
            &Credentials {
                access_key_id: "AKIDEXAMPLE",
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                region: "us-east-1",
                service: "iam",
            },
        )
        .expect("signed");
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn canonical_uri_encodes_the_encoded_path_again() {
        assert_eq!(
            canonical_uri("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"),
            "/model/anthropic.claude-3-haiku-20240307-v1%253A0/converse"
        );
        assert_eq!(
            canonical_uri("/model/a:0/converse"),
            "/model/a%3A0/converse"
        );
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_query("b=2&a=x%20y&a=1"), "a=1&a=x%20y&b=2");
        assert_eq!(percent_decode("a%3Ab%2f%zz%"), b"a:b/%zz%");
    }

    const PATH: &str = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse";
    const BODY: &[u8] = br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;

    /// Signs `path` + `body` with `secret` and returns the request's headers.
    fn signed(path: &str, body: &[u8], secret: &str, token: Option<&str>) -> HeaderMap {
        let mut pairs = vec![
            ("host", "bedrock-runtime.us-east-1.amazonaws.com"),
            ("x-amz-date", "20251201T100000Z"),
            ("content-type", "application/json"),
        ];
        if let Some(t) = token {
            pairs.push(("x-amz-security-token", t));
        }
        let auth = sign(
            &SignableRequest {
                method: "POST",
                path,
                query: "",
                headers: &pairs,
                body,
            },
            &Credentials {
                access_key_id: "AKIDMOCK",
                secret_access_key: secret,
                region: "eu-west-3",
                service: BEDROCK_SERVICE,
            },
        )
        .expect("signed");
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(n, HeaderValue::from_str(v).expect("ascii"));
        }
        h.insert(
            "authorization",
            HeaderValue::from_str(&auth).expect("ascii"),
        );
        h
    }

    fn check(path: &str, headers: &HeaderMap, body: &[u8]) -> Result<Caller, AuthError> {
        let uri: Uri = path.parse().expect("uri");
        verify("POST", &uri, headers, body)
    }

    #[test]
    fn a_correct_signature_passes_and_records_the_scope() {
        let h = signed(PATH, BODY, MOCK_AWS_SECRET, None);
        assert_eq!(
            check(PATH, &h, BODY).expect("valid"),
            Caller::SigV4 {
                access_key_id: "AKIDMOCK".into(),
                region: "eu-west-3".into(),
                signed_headers: "content-type;host;x-amz-date".into(),
            }
        );
        let h = signed(PATH, BODY, MOCK_AWS_SECRET, Some("session-token"));
        assert!(check(PATH, &h, BODY).is_ok());
    }

    #[test]
    fn tampering_fails() {
        let h = signed(PATH, BODY, MOCK_AWS_SECRET, None);
        let e = check(PATH, &h, br#"{"messages":[]}"#).expect_err("tampered body");
        assert_eq!(e.typ, "InvalidSignatureException");
        assert_eq!(e.message, BAD_SIGNATURE);
        let h = signed(PATH, BODY, "wrong-secret", None);
        assert_eq!(
            check(PATH, &h, BODY).expect_err("secret").message,
            BAD_SIGNATURE
        );
        // A signer that forgets to encode the path again signs `/model/a%3A0/...` as is: it
        // signed the decoded path, which is what this one does.
        let decoded = "/model/anthropic.claude-3-haiku-20240307-v1:0/converse";
        let h = signed(decoded, BODY, MOCK_AWS_SECRET, None);
        assert_eq!(
            check(PATH, &h, BODY).expect_err("single").message,
            BAD_SIGNATURE
        );
        assert!(check(decoded, &h, BODY).is_ok());
        // a session token sent but not signed
        let mut h = signed(PATH, BODY, MOCK_AWS_SECRET, None);
        h.insert("x-amz-security-token", HeaderValue::from_static("t"));
        assert!(check(PATH, &h, BODY)
            .expect_err("token")
            .message
            .contains("x-amz-security-token"));
    }

    #[test]
    fn bearer_and_missing() {
        let mut h = HeaderMap::new();
        assert_eq!(
            check(PATH, &h, BODY).expect_err("missing").typ,
            "MissingAuthenticationTokenException"
        );
        h.insert("authorization", HeaderValue::from_static("Bearer ABSKxyz"));
        assert_eq!(check(PATH, &h, BODY).expect("bearer"), Caller::ApiKey);
        h.insert(
            "authorization",
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=A/20250101/us-east-1/bedrock/aws4_request",
            ),
        );
        assert_eq!(
            check(PATH, &h, BODY).expect_err("incomplete").typ,
            "IncompleteSignatureException"
        );
    }
}
