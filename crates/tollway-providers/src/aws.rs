//! Amazon Bedrock's authentication: AWS Signature Version 4 (service `bedrock`) with an access
//! key (and a session token for temporary credentials), or a Bedrock API key sent as a bearer
//! token. Signing is `aws-sigv4`'s; this module picks the credentials and applies the signature.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};

use crate::config::{BedrockConfig, Secret};

/// The signing name of Bedrock's runtime API.
const SERVICE: &str = "bedrock";

/// How a Bedrock account proves who it is.
pub(crate) enum Auth {
    /// SigV4 with these credentials, for this region.
    SigV4 { identity: Identity, region: String },
    /// A Bedrock API key: `Authorization: Bearer KEY`, set once among the account's headers.
    Bearer,
}

/// Where an account's credentials come from, for the config check and the start-up error.
pub(crate) enum Credential {
    Keys {
        access_key_id: String,
        secret_access_key: Secret,
        session_token: Option<Secret>,
    },
    ApiKey(Secret),
}

/// An account's region: its own, else `AWS_REGION`, else `AWS_DEFAULT_REGION`.
pub(crate) fn region(c: &BedrockConfig, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    c.region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .filter(|r| !r.trim().is_empty())
}

/// An account's credentials: its `api_key`, else its access key, else the environment's
/// (`AWS_BEARER_TOKEN_BEDROCK`, then `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
/// `AWS_SESSION_TOKEN`), as the AWS SDKs read them.
pub(crate) fn credential(
    c: &BedrockConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Credential, String> {
    let set = |s: &Option<Secret>| s.clone().filter(|s| !s.is_none());
    if let Some(key) = set(&c.api_key) {
        return Ok(Credential::ApiKey(key));
    }
    match (&c.access_key_id, set(&c.secret_access_key)) {
        (Some(id), Some(secret)) => {
            return Ok(Credential::Keys {
                access_key_id: id.clone(),
                secret_access_key: secret,
                session_token: set(&c.session_token),
            })
        }
        (Some(_), None) => return Err("access_key_id is set without secret_access_key".into()),
        (None, Some(_)) => return Err("secret_access_key is set without access_key_id".into()),
        (None, None) => {}
    }
    let var = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    // a Bedrock API key is Bedrock's alone: it wins over the account-wide keys (as in boto3)
    if let Some(key) = var("AWS_BEARER_TOKEN_BEDROCK") {
        return Ok(Credential::ApiKey(Secret::new(key)));
    }
    if let (Some(id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        return Ok(Credential::Keys {
            access_key_id: id,
            secret_access_key: Secret::new(secret),
            session_token: var("AWS_SESSION_TOKEN").map(Secret::new),
        });
    }
    Err(
        "no AWS credentials: set api_key, or access_key_id and secret_access_key, or the \
         environment's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_BEARER_TOKEN_BEDROCK)"
            .into(),
    )
}

impl Auth {
    /// The auth for `credential`; an API key goes into `headers` here, once.
    pub(crate) fn new(
        credential: Credential,
        region: String,
        headers: &mut HeaderMap,
    ) -> Result<Auth, String> {
        match credential {
            Credential::ApiKey(key) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                    .map_err(|_| "the Bedrock API key is not a valid header value".to_string())?;
                v.set_sensitive(true);
                headers.insert(AUTHORIZATION, v);
                Ok(Auth::Bearer)
            }
            Credential::Keys {
                access_key_id,
                secret_access_key,
                session_token,
            } => Ok(Auth::SigV4 {
                identity: Credentials::new(
                    access_key_id,
                    secret_access_key.expose(),
                    session_token.map(|t| t.expose().to_string()),
                    None,
                    "tollway-config",
                )
                .into(),
                region,
            }),
        }
    }

    /// Signs a POST of `body` to `url` (absolute, its path already percent-encoded) carrying
    /// `headers` (`host` among them, as it will be sent) at `time`: adds `authorization`,
    /// `x-amz-date` and, with temporary credentials, `x-amz-security-token`.
    pub(crate) fn sign(
        &self,
        url: &str,
        headers: &mut HeaderMap,
        body: &[u8],
        time: SystemTime,
    ) -> Result<(), String> {
        let Auth::SigV4 { identity, region } = self else {
            return Ok(());
        };
        let params = v4::SigningParams::builder()
            .identity(identity)
            .region(region)
            .name(SERVICE)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("could not sign the request: {e}"))?
            .into();
        // a forwarding proxy's credentials are for the proxy, which takes them off
        let pairs = headers
            .iter()
            .filter(|(k, _)| *k != http::header::PROXY_AUTHORIZATION)
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
        let request = SignableRequest::new("POST", url, pairs, SignableBody::Bytes(body))
            .map_err(|e| format!("could not sign the request: {e}"))?;
        let (instructions, _signature) = sign(request, &params)
            .map_err(|e| format!("could not sign the request: {e}"))?
            .into_parts();
        let (signed, _) = instructions.into_parts();
        for h in signed {
            let name = HeaderName::from_static(h.name());
            let mut value = HeaderValue::from_str(h.value())
                .map_err(|_| format!("the signature's `{}` is not a valid header", h.name()))?;
            value.set_sensitive(h.sensitive() || name == AUTHORIZATION);
            headers.insert(name, value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::{Duration, UNIX_EPOCH};

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    fn config(v: serde_json::Value) -> BedrockConfig {
        serde_json::from_value(v).expect("config")
    }

    #[test]
    fn credentials_come_from_the_account_then_the_environment() {
        let none = env(&[]);
        let c = config(serde_json::json!({
            "region": "eu-west-1", "api_key": "br-key", "access_key_id": "AKID",
            "secret_access_key": "s"
        }));
        assert!(
            matches!(credential(&c, &none), Ok(Credential::ApiKey(k)) if k.expose() == "br-key")
        );
        let c = config(serde_json::json!({
            "access_key_id": "AKID", "secret_access_key": "s", "session_token": "tok"
        }));
        match credential(&c, &none) {
            Ok(Credential::Keys {
                access_key_id,
                secret_access_key,
                session_token,
            }) => {
                assert_eq!(access_key_id, "AKID");
                assert_eq!(secret_access_key.expose(), "s");
                assert_eq!(
                    session_token.map(|t| t.expose().to_string()).as_deref(),
                    Some("tok")
                );
            }
            _ => panic!("keys expected"),
        }
        let c = config(serde_json::json!({"access_key_id": "AKID"}));
        assert!(credential(&c, &none).is_err());
        let c = config(serde_json::json!({"region": "us-east-1"}));
        let e = match credential(&c, &none) {
            Err(e) => e,
            Ok(_) => panic!("no credentials anywhere"),
        };
        assert!(e.contains("AWS_ACCESS_KEY_ID"), "{e}");
        let aws = env(&[
            ("AWS_ACCESS_KEY_ID", "ENVKEY"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
            ("AWS_DEFAULT_REGION", "ap-south-1"),
        ]);
        assert!(
            matches!(credential(&c, &aws), Ok(Credential::Keys { access_key_id, .. }) if access_key_id == "ENVKEY")
        );
        let bearer = env(&[
            ("AWS_BEARER_TOKEN_BEDROCK", "abc"),
            ("AWS_ACCESS_KEY_ID", "ENVKEY"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
            ("AWS_REGION", "us-west-2"),
        ]);
        assert!(
            matches!(credential(&c, &bearer), Ok(Credential::ApiKey(k)) if k.expose() == "abc"),
            "a Bedrock API key wins over the account-wide keys"
        );
        assert_eq!(
            region(&c, &aws).as_deref(),
            Some("us-east-1"),
            "the account's own first"
        );
        let c = config(serde_json::json!({}));
        assert_eq!(region(&c, &aws).as_deref(), Some("ap-south-1"));
        assert_eq!(region(&c, &bearer).as_deref(), Some("us-west-2"));
        assert_eq!(region(&c, &none), None);
    }

    /// The signature of a fixed request, recomputed from AWS's SigV4 description by the mock's
    /// independent verifier in the gateway's tests; here the parts a reader can check by eye.
    #[test]
    fn signing_adds_date_token_and_a_scoped_authorization() {
        let mut headers = HeaderMap::new();
        let auth = Auth::new(
            Credential::Keys {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                session_token: Some(Secret::new("session-token")),
            },
            "us-east-1".into(),
            &mut headers,
        )
        .expect("auth");
        assert!(
            headers.is_empty(),
            "keys add nothing until a request is signed"
        );
        headers.insert(
            "host",
            HeaderValue::from_static("bedrock-runtime.us-east-1.amazonaws.com"),
        );
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        // a forwarding proxy's credentials: not signed (the proxy removes them)
        headers.insert(
            http::header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic dTpw"),
        );
        let time = UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 2015-08-30T12:36:00Z
        auth.sign(
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/a.b-v1%3A0/converse",
            &mut headers,
            b"{}",
            time,
        )
        .expect("signs");
        assert_eq!(headers["x-amz-date"], "20150830T123600Z");
        assert_eq!(headers["x-amz-security-token"], "session-token");
        let authz = headers[AUTHORIZATION].to_str().expect("ascii");
        assert!(
            authz.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
            ),
            "{authz}"
        );
        assert!(headers[AUTHORIZATION].is_sensitive());
        assert!(
            !format!("{headers:?}").contains("wJalrXUtnFEMI"),
            "the secret is never in a header"
        );

        let mut headers = HeaderMap::new();
        let auth = Auth::new(
            Credential::ApiKey(Secret::new("br-key")),
            "us-east-1".into(),
            &mut headers,
        )
        .expect("auth");
        assert_eq!(headers[AUTHORIZATION], "Bearer br-key");
        assert!(headers[AUTHORIZATION].is_sensitive());
        auth.sign("https://x/model/m/converse", &mut headers, b"{}", time)
            .expect("nothing to sign");
        assert!(headers.get("x-amz-date").is_none());
    }
}
