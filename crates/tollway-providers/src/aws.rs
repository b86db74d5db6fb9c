//! Amazon Bedrock's authentication: AWS Signature Version 4 (service `bedrock`) with an access
//! key (and a session token for temporary credentials), or a Bedrock API key sent as a bearer
//! token. Signing is `aws-sigv4`'s; this module picks the credentials and applies the signature.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};

use crate::config::{BedrockConfig, Secret};
use crate::http::{EnvLookup, JsonPoster};
use crate::oauth::Refreshed;

/// The signing name of Bedrock's runtime API.
const SERVICE: &str = "bedrock";

/// How a Bedrock account proves who it is.
pub(crate) enum Auth {
    /// SigV4 with these credentials, for this region.
    SigV4 { identity: Identity, region: String },
    /// A Bedrock API key: `Authorization: Bearer KEY`, set once among the account's headers.
    Bearer,
    /// SigV4 with temporary credentials fetched from the machine or the container, refreshed.
    Fetched {
        fetcher: Box<Fetcher>,
        region: String,
    },
}

/// Where temporary credentials come from when the account has no keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fetch {
    /// The EC2 instance metadata service (IMDSv2) at this endpoint.
    Instance { endpoint: String },
    /// The container credentials endpoint (ECS, EKS Pod Identity), with the token to send (read
    /// from its file on each fetch: the file is rotated).
    Container {
        url: String,
        token: Option<Secret>,
        token_file: Option<String>,
    },
}

/// Where an account's credentials come from, for the config check and the start-up error.
pub(crate) enum Credential {
    Keys {
        access_key_id: String,
        secret_access_key: Secret,
        session_token: Option<Secret>,
    },
    ApiKey(Secret),
    Fetched(Fetch),
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
    match c.credentials.as_deref() {
        Some("instance") => {
            let endpoint = c
                .metadata_endpoint
                .clone()
                .or_else(|| var("AWS_EC2_METADATA_SERVICE_ENDPOINT"))
                .unwrap_or_else(|| "http://169.254.169.254".to_string());
            return Ok(Credential::Fetched(Fetch::Instance {
                endpoint: endpoint.trim_end_matches('/').to_string(),
            }));
        }
        Some(other) => {
            return Err(format!(
                "credentials `{other}` is not supported (`instance`: the EC2 instance's role)"
            ))
        }
        None => {}
    }
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
    // the container's endpoint (ECS task roles, EKS Pod Identity), as the AWS SDKs read it
    let token = var("AWS_CONTAINER_AUTHORIZATION_TOKEN").map(Secret::new);
    let token_file = var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    if let Some(url) = var("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
        return Ok(Credential::Fetched(Fetch::Container {
            url,
            token,
            token_file,
        }));
    }
    if let Some(path) = var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        return Ok(Credential::Fetched(Fetch::Container {
            url: format!("http://169.254.170.2{path}"),
            token,
            token_file,
        }));
    }
    Err(
        "no AWS credentials: set api_key, or access_key_id and secret_access_key, or \
         `credentials: instance` on EC2, or the environment's AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY (or AWS_BEARER_TOKEN_BEDROCK, or a container's \
         AWS_CONTAINER_CREDENTIALS_FULL_URI / _RELATIVE_URI)"
            .into(),
    )
}

/// Temporary credentials, fetched when needed and kept until five minutes before they expire.
pub(crate) struct Fetcher {
    fetch: Fetch,
    poster: JsonPoster,
    cache: Refreshed<Identity>,
}

/// The credentials document IMDS and the container endpoint answer with.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Document {
    access_key_id: String,
    secret_access_key: Secret,
    #[serde(default)]
    token: Option<Secret>,
    #[serde(default)]
    expiration: Option<String>,
}

impl Fetcher {
    pub(crate) fn new(fetch: Fetch, env: EnvLookup) -> Result<Fetcher, String> {
        Ok(Fetcher {
            fetch,
            poster: JsonPoster::with_env(Duration::from_secs(5), env)?,
            cache: Refreshed::new(),
        })
    }

    /// The credentials to sign the next request with.
    pub(crate) async fn identity(&self) -> Result<Identity, String> {
        self.cache
            .get(|| async {
                let doc = self.document().await?;
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                // an hour, if the expiration is unreadable
                let lifetime = doc
                    .expiration
                    .as_deref()
                    .and_then(tollway_core::days::unix_secs)
                    .map_or(3600, |exp| exp.saturating_sub(now));
                let identity: Identity = Credentials::new(
                    doc.access_key_id,
                    doc.secret_access_key.expose(),
                    doc.token.map(|t| t.expose().to_string()),
                    None,
                    "tollway-fetched",
                )
                .into();
                Ok((identity, Duration::from_secs(lifetime)))
            })
            .await
    }

    async fn document(&self) -> Result<Document, String> {
        let (status, body, url) = match &self.fetch {
            Fetch::Instance { endpoint } => {
                let mut h = HeaderMap::new();
                h.insert(
                    "x-aws-ec2-metadata-token-ttl-seconds",
                    HeaderValue::from_static("21600"),
                );
                let (status, token) = self
                    .poster
                    .put_direct(&format!("{endpoint}/latest/api/token"), h)
                    .await
                    .map_err(|e| {
                        format!("the instance metadata service could not be reached: {e}")
                    })?;
                if status != 200 {
                    return Err(format!(
                        "the instance metadata service refused a session (HTTP {status})"
                    ));
                }
                let mut h = HeaderMap::new();
                let mut token = HeaderValue::from_bytes(token.trim_ascii()).map_err(|_| {
                    "the instance metadata service's token is not a header".to_string()
                })?;
                token.set_sensitive(true);
                h.insert("x-aws-ec2-metadata-token", token);
                let roles = format!("{endpoint}/latest/meta-data/iam/security-credentials/");
                let (status, role) =
                    self.poster
                        .get_direct(&roles, h.clone())
                        .await
                        .map_err(|e| {
                            format!("the instance metadata service could not be reached: {e}")
                        })?;
                let role = String::from_utf8_lossy(&role);
                let role = role.lines().next().unwrap_or_default().trim().to_string();
                if status != 200 || role.is_empty() {
                    return Err(format!(
                        "the instance has no IAM role (HTTP {status} from the metadata service)"
                    ));
                }
                let url = format!("{roles}{}", tollway_protocol::path_segment(&role));
                let (status, body) = self.poster.get_direct(&url, h).await.map_err(|e| {
                    format!("the instance metadata service could not be reached: {e}")
                })?;
                (status, body, url)
            }
            Fetch::Container {
                url,
                token,
                token_file,
            } => {
                let mut h = HeaderMap::new();
                let token = match token_file {
                    Some(path) => Some(Secret::new(
                        std::fs::read_to_string(path)
                            .map_err(|e| format!("the container token file `{path}`: {e}"))?
                            .trim(),
                    )),
                    None => token.clone(),
                };
                if let Some(t) = token {
                    let mut v = HeaderValue::from_str(t.expose())
                        .map_err(|_| "the container token is not a valid header".to_string())?;
                    v.set_sensitive(true);
                    h.insert(AUTHORIZATION, v);
                }
                let (status, body) = self.poster.get_direct(url, h).await.map_err(|e| {
                    format!("the container credentials endpoint could not be reached: {e}")
                })?;
                (status, body, url.clone())
            }
        };
        if status != 200 {
            return Err(format!("`{url}` gave no credentials (HTTP {status})"));
        }
        serde_json::from_slice::<Document>(&body)
            .map_err(|_| format!("`{url}` answered without usable credentials"))
    }
}

impl Auth {
    /// The auth for `credential`; an API key goes into `headers` here, once.
    pub(crate) fn new(
        credential: Credential,
        region: String,
        headers: &mut HeaderMap,
        env: EnvLookup,
    ) -> Result<Auth, String> {
        match credential {
            Credential::Fetched(fetch) => Ok(Auth::Fetched {
                fetcher: Box::new(Fetcher::new(fetch, env)?),
                region,
            }),
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
    pub(crate) async fn sign(
        &self,
        url: &str,
        headers: &mut HeaderMap,
        body: &[u8],
        time: SystemTime,
    ) -> Result<(), String> {
        match self {
            Auth::Bearer => Ok(()),
            Auth::SigV4 { identity, region } => {
                sign_with(identity, region, url, headers, body, time)
            }
            Auth::Fetched { fetcher, region } => {
                let identity = fetcher.identity().await?;
                sign_with(&identity, region, url, headers, body, time)
            }
        }
    }
}

/// [`Auth::sign`] with these credentials and region.
fn sign_with(
    identity: &Identity,
    region: &str,
    url: &str,
    headers: &mut HeaderMap,
    body: &[u8],
    time: SystemTime,
) -> Result<(), String> {
    {
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
    use std::sync::Arc;
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
    #[tokio::test]
    async fn signing_adds_date_token_and_a_scoped_authorization() {
        let mut headers = HeaderMap::new();
        let auth = Auth::new(
            Credential::Keys {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                session_token: Some(Secret::new("session-token")),
            },
            "us-east-1".into(),
            &mut headers,
            Arc::new(|_: &str| None),
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
        .await
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
            Arc::new(|_: &str| None),
        )
        .expect("auth");
        assert_eq!(headers[AUTHORIZATION], "Bearer br-key");
        assert!(headers[AUTHORIZATION].is_sensitive());
        auth.sign("https://x/model/m/converse", &mut headers, b"{}", time)
            .await
            .expect("nothing to sign");
        assert!(headers.get("x-amz-date").is_none());
    }

    #[test]
    fn machine_and_container_credentials_come_after_keys() {
        let c = config(
            serde_json::json!({"credentials": "instance", "metadata_endpoint": "http://127.0.0.1:9/"}),
        );
        assert!(
            matches!(credential(&c, &env(&[("AWS_ACCESS_KEY_ID", "A"), ("AWS_SECRET_ACCESS_KEY", "s")])),
            Ok(Credential::Fetched(Fetch::Instance { endpoint })) if endpoint == "http://127.0.0.1:9")
        );
        let c = config(serde_json::json!({"credentials": "sso"}));
        assert!(credential(&c, &env(&[])).is_err_and(|e| e.contains("`sso`")));
        let none = config(serde_json::json!({}));
        // keys in the environment win over the container's endpoint
        let both = env(&[
            ("AWS_ACCESS_KEY_ID", "A"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            (
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "/v2/credentials/x",
            ),
        ]);
        assert!(matches!(
            credential(&none, &both),
            Ok(Credential::Keys { .. })
        ));
        let ecs = env(&[(
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "/v2/credentials/x",
        )]);
        assert!(matches!(credential(&none, &ecs),
            Ok(Credential::Fetched(Fetch::Container { url, token: None, .. })) if url == "http://169.254.170.2/v2/credentials/x"));
        let eks = env(&[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://169.254.170.23/v1/credentials",
            ),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "/var/run/token"),
        ]);
        assert!(matches!(credential(&none, &eks),
            Ok(Credential::Fetched(Fetch::Container { token_file: Some(f), .. })) if f == "/var/run/token"));
        let e = credential(&none, &env(&[])).err().expect("none");
        assert!(e.contains("credentials: instance"), "{e}");
    }

    async fn mock() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(tollway_mock::serve(listener, std::future::pending()));
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn temporary_credentials_are_fetched_once_and_sign() {
        let base = mock().await;
        let none: EnvLookup = Arc::new(|_: &str| None);
        for fetch in [
            Fetch::Instance {
                endpoint: base.clone(),
            },
            Fetch::Container {
                url: format!("{base}/v2/credentials/task-1"),
                token: Some(Secret::new("pod-identity-token")),
                token_file: None,
            },
        ] {
            let auth = Auth::new(
                Credential::Fetched(fetch.clone()),
                "us-west-2".into(),
                &mut HeaderMap::new(),
                none.clone(),
            )
            .expect("auth");
            let mut first = HeaderMap::new();
            first.insert(
                "host",
                HeaderValue::from_static("bedrock-runtime.us-west-2.amazonaws.com"),
            );
            let mut second = first.clone();
            let url = "https://bedrock-runtime.us-west-2.amazonaws.com/model/m/converse";
            let now = SystemTime::now();
            auth.sign(url, &mut first, b"{}", now).await.expect("signs");
            auth.sign(url, &mut second, b"{}", now)
                .await
                .expect("signs again");
            let authz = first[AUTHORIZATION].to_str().expect("ascii");
            assert!(
                authz.starts_with("AWS4-HMAC-SHA256 Credential=ASIAMOCK"),
                "{authz}"
            );
            assert!(authz.contains("/us-west-2/bedrock/aws4_request"), "{authz}");
            assert!(first.contains_key("x-amz-security-token"), "{fetch:?}");
            // the same credentials the second time: fetched once
            assert_eq!(first[AUTHORIZATION], second[AUTHORIZATION], "{fetch:?}");
        }
        let stats: serde_json::Value = reqwest_free_get(&format!("{base}/_mock/stats")).await;
        assert_eq!(stats["tokens_issued"], 2, "one fetch per source");
        // an endpoint that gives nothing is an error naming it
        let auth = Auth::new(
            Credential::Fetched(Fetch::Instance {
                endpoint: "http://127.0.0.1:9".into(),
            }),
            "us-west-2".into(),
            &mut HeaderMap::new(),
            none,
        )
        .expect("auth");
        let e = auth
            .sign(
                "https://x/model/m/converse",
                &mut HeaderMap::new(),
                b"{}",
                SystemTime::now(),
            )
            .await
            .expect_err("no metadata service");
        assert!(e.contains("instance metadata service"), "{e}");
    }

    /// GETs a JSON document with the crate's own client.
    async fn reqwest_free_get(url: &str) -> serde_json::Value {
        let poster =
            JsonPoster::with_env(Duration::from_secs(5), Arc::new(|_: &str| None)).expect("client");
        let (_, body) = poster.get_direct(url, HeaderMap::new()).await.expect("get");
        serde_json::from_slice(&body).expect("json")
    }
}
