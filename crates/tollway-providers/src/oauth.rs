//! OAuth 2.0 access tokens for the accounts that use them instead of a key.
//!
//! **Azure OpenAI** with a Microsoft Entra ID application: its client id and secret exchanged at
//! the tenant's token endpoint (the client-credentials grant, scope
//! `https://cognitiveservices.azure.com/.default`), as `azure-identity`'s
//! `ClientSecretCredential` does.
//!
//! **Vertex AI**, as Google's client libraries get a token —
//! - from a **service account key** file: a JWT (`iss` the account's email, `scope`
//!   `cloud-platform`, `aud` the token endpoint, an hour long) signed with the key (RS256, by
//!   `ring`) and exchanged at the key file's `token_uri` (grant type `jwt-bearer`);
//! - from an **authorized user** file (what `gcloud auth application-default login` writes): its
//!   refresh token exchanged at Google's token endpoint;
//! - from the **metadata server** of the Google Cloud machine the gateway runs on (Compute
//!   Engine, GKE, Cloud Run: `credentials: metadata`), which hands out the machine's service
//!   account's tokens;
//! - or a fixed `access_token` from the config (a token made elsewhere; it is not refreshed).
//!
//! Tokens are cached until five minutes before they expire; one request at a time fetches a new
//! one while the others wait for it (they may be on other lanes). The key file is read when the
//! config is loaded. No token, key or secret reaches a log or an error message.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderValue;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivatePkcs8KeyDer;
use serde::Deserialize;

use crate::config::{Secret, VertexConfig};
use crate::http::{EnvLookup, JsonPoster};

/// The scope Vertex AI's API needs.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's token endpoint, for key files that name none.
const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// How long before its expiry a token is replaced.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// How long a token fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a Vertex account's access tokens come from.
pub(crate) enum Source {
    /// The config's `access_token`.
    Fixed(Secret),
    ServiceAccount {
        email: String,
        key_id: Option<String>,
        key: Box<RsaKeyPair>,
        token_uri: String,
    },
    AuthorizedUser {
        client_id: String,
        client_secret: Secret,
        refresh_token: Secret,
        token_uri: String,
    },
    /// The metadata server of the Google Cloud machine the gateway runs on (its token URL).
    Metadata(String),
    /// An OAuth client-credentials grant (a Microsoft Entra ID application's).
    ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: Secret,
        scope: &'static str,
    },
}

/// The scope of Azure OpenAI's API (Azure AI services).
const AZURE_SCOPE: &str = "https://cognitiveservices.azure.com/.default";

/// An Azure account's token source, when it authenticates with an Entra ID application rather
/// than a key or a fixed token: its `tenant_id`, `client_id` and `client_secret`, else the
/// environment's `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET` (read only when the
/// account has no key and no token); `None` when it has a key or a token.
pub(crate) fn azure_source(
    c: &crate::config::AzureConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Source>, String> {
    let own = c.tenant_id.is_some() || c.client_id.is_some() || c.client_secret.is_some();
    let has_token = c.azure_ad_token.as_ref().is_some_and(|t| !t.is_none());
    if !own && (has_token || !c.api_key.is_none()) {
        return Ok(None);
    }
    let var = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let (tenant, client, secret) = if own {
        (
            c.tenant_id.clone(),
            c.client_id.clone(),
            c.client_secret.clone().filter(|s| !s.is_none()),
        )
    } else {
        (
            var("AZURE_TENANT_ID"),
            var("AZURE_CLIENT_ID"),
            var("AZURE_CLIENT_SECRET").map(Secret::new),
        )
    };
    let (tenant, client_id, client_secret) = match (tenant, client, secret) {
        (Some(t), Some(c), Some(s)) => (t, c, s),
        (None, None, None) => return Ok(None),
        (t, c, s) => {
            let missing: Vec<&str> = [
                (t.is_none(), "tenant_id"),
                (c.is_none(), "client_id"),
                (s.is_none(), "client_secret"),
            ]
            .iter()
            .filter(|(m, _)| *m)
            .map(|(_, name)| *name)
            .collect();
            return Err(format!(
                "an Entra ID application needs tenant_id, client_id and client_secret; {} missing",
                missing.join(" and ")
            ));
        }
    };
    let authority = c
        .authority_host
        .clone()
        .or_else(|| var("AZURE_AUTHORITY_HOST"))
        .unwrap_or_else(|| "https://login.microsoftonline.com".to_string());
    let token_url = format!(
        "{}/{}/oauth2/v2.0/token",
        authority.trim_end_matches('/'),
        tollway_protocol::path_segment(&tenant)
    );
    let usable = token_url.parse::<http::Uri>().ok().is_some_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
    });
    if !usable {
        return Err(format!(
            "authority_host `{authority}` is not an http:// or https:// URL"
        ));
    }
    Ok(Some(Source::ClientCredentials {
        token_url,
        client_id,
        client_secret,
        scope: AZURE_SCOPE,
    }))
}

/// The metadata server's path of the machine's default service account's token.
const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// The fields of a Google credentials file this module reads.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    private_key: Option<Secret>,
    #[serde(default)]
    client_email: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<Secret>,
    #[serde(default)]
    refresh_token: Option<Secret>,
    #[serde(default)]
    quota_project_id: Option<String>,
}

/// An account's token source and the project its credentials name (if any): its
/// `access_token`, else the key file of `credentials`, else `GOOGLE_APPLICATION_CREDENTIALS`'s.
pub(crate) fn credentials(
    c: &VertexConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Source, Option<String>), String> {
    if let Some(token) = c.access_token.clone().filter(|t| !t.is_none()) {
        return Ok((Source::Fixed(token), None));
    }
    let path = c
        .credentials
        .clone()
        .or_else(|| env("GOOGLE_APPLICATION_CREDENTIALS").filter(|p| !p.trim().is_empty()))
        .ok_or_else(|| {
            "no credentials: set `credentials` (a service account key file, or `metadata` on a \
             Google Cloud machine), `access_token`, or GOOGLE_APPLICATION_CREDENTIALS in the \
             environment"
                .to_string()
        })?;
    if path == "metadata" {
        let host = c
            .metadata_host
            .clone()
            .or_else(|| env("GCE_METADATA_HOST").filter(|h| !h.trim().is_empty()))
            .unwrap_or_else(|| "metadata.google.internal".to_string());
        let url = format!("http://{host}{METADATA_TOKEN_PATH}");
        url.parse::<http::Uri>()
            .map_err(|_| format!("the metadata server `{host}` does not make a URL"))?;
        return Ok((Source::Metadata(url), None));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("credentials `{path}`: cannot read it: {e}"))?;
    key_file(&text).map_err(|e| format!("credentials `{path}`: {e}"))
}

/// Reads a Google credentials file (a service account key or an authorized user).
pub(crate) fn key_file(text: &str) -> Result<(Source, Option<String>), String> {
    // serde's message would quote the file, which holds a secret: name the problem only
    let f: KeyFile = serde_json::from_str(text).map_err(|e| {
        format!(
            "not a Google credentials file (JSON with a `type`): {} at line {}",
            match e.classify() {
                serde_json::error::Category::Data => "a field has the wrong type",
                serde_json::error::Category::Eof => "it ends too soon",
                _ => "it is not valid JSON",
            },
            e.line()
        )
    })?;
    let token_uri = f
        .token_uri
        .clone()
        .unwrap_or_else(|| GOOGLE_TOKEN_URI.to_string());
    let usable = token_uri.parse::<http::Uri>().ok().is_some_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
    });
    if !usable {
        return Err(format!(
            "its `token_uri` `{token_uri}` is not an http:// or https:// URL"
        ));
    }
    let source = match f.kind.as_str() {
        "service_account" => {
            let email = f
                .client_email
                .clone()
                .ok_or("the service account key has no `client_email`")?;
            let pem = f
                .private_key
                .as_ref()
                .ok_or("the service account key has no `private_key`")?;
            let der = PrivatePkcs8KeyDer::from_pem_slice(pem.expose().as_bytes())
                .map_err(|_| "the service account's `private_key` is not a PKCS#8 PEM key")?;
            let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|e| {
                format!("the service account's `private_key` is not a usable RSA key ({e})")
            })?;
            Source::ServiceAccount {
                email,
                key_id: f.private_key_id.clone(),
                key: Box::new(key),
                token_uri,
            }
        }
        "authorized_user" => Source::AuthorizedUser {
            client_id: f
                .client_id
                .clone()
                .ok_or("the authorized user file has no `client_id`")?,
            client_secret: f
                .client_secret
                .clone()
                .ok_or("the authorized user file has no `client_secret`")?,
            refresh_token: f
                .refresh_token
                .clone()
                .ok_or("the authorized user file has no `refresh_token`")?,
            token_uri,
        },
        other => {
            return Err(format!(
                "credentials of type `{other}` are not supported (a `service_account` key or \
                 an `authorized_user` file is)"
            ))
        }
    };
    Ok((source, f.project_id.or(f.quota_project_id)))
}

/// `s` for a form body (`application/x-www-form-urlencoded`).
fn form(s: &str) -> String {
    tollway_protocol::path_segment(s)
}

/// A value fetched when needed (an access token, temporary credentials) and kept until
/// [`REFRESH_MARGIN`] before it expires; one request at a time fetches a new one while the
/// others wait for it (they may be on other lanes).
pub(crate) struct Refreshed<T> {
    cached: Mutex<Option<(T, Instant)>>,
    /// Held by the one request fetching.
    fetching: tokio::sync::Mutex<()>,
}

impl<T: Clone> Refreshed<T> {
    pub(crate) fn new() -> Self {
        Refreshed {
            cached: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn fresh(&self) -> Option<T> {
        let guard = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .filter(|(_, until)| *until > Instant::now())
            .map(|(v, _)| v.clone())
    }

    /// The value, from `fetch` (the value and how long it lives) when none is fresh.
    pub(crate) async fn get<Fut>(&self, fetch: impl FnOnce() -> Fut) -> Result<T, String>
    where
        Fut: std::future::Future<Output = Result<(T, Duration), String>>,
    {
        if let Some(v) = self.fresh() {
            return Ok(v);
        }
        let _one = self.fetching.lock().await;
        // someone else may have fetched it meanwhile
        if let Some(v) = self.fresh() {
            return Ok(v);
        }
        let (v, lifetime) = fetch().await?;
        let keep = lifetime
            .saturating_sub(REFRESH_MARGIN)
            .max(Duration::from_secs(30));
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((v.clone(), Instant::now() + keep));
        Ok(v)
    }

    /// Forgets the value if it is still `refused` (another request may have replaced it).
    pub(crate) fn forget(&self, refused: &T)
    where
        T: PartialEq,
    {
        let mut guard = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if guard.as_ref().is_some_and(|(v, _)| v == refused) {
            *guard = None;
        }
    }
}

/// An account's access tokens, fetched when needed and cached.
pub(crate) struct Tokens {
    source: Source,
    /// The fixed token's header, made once.
    fixed: Option<HeaderValue>,
    poster: JsonPoster,
    cache: Refreshed<HeaderValue>,
}

/// The token endpoint's answer.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Secret,
    #[serde(default)]
    expires_in: Option<u64>,
}

fn bearer(token: &str) -> Result<HeaderValue, String> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "the access token is not a valid header value".to_string())?;
    v.set_sensitive(true);
    Ok(v)
}

impl Tokens {
    pub(crate) fn new(source: Source, env: EnvLookup) -> Result<Tokens, String> {
        let fixed = match &source {
            Source::Fixed(t) => Some(bearer(t.expose())?),
            _ => None,
        };
        Ok(Tokens {
            source,
            fixed,
            poster: JsonPoster::with_env(FETCH_TIMEOUT, env)?,
            cache: Refreshed::new(),
        })
    }

    /// Forgets the cached token (the upstream refused it: revoked, or its key was rotated), so
    /// that the next request fetches a new one.
    pub(crate) fn invalidate(&self, refused: &HeaderValue) {
        self.cache.forget(refused);
    }

    /// `Authorization: Bearer ...` for the next request.
    pub(crate) async fn header(&self) -> Result<HeaderValue, String> {
        if let Some(h) = &self.fixed {
            return Ok(h.clone());
        }
        self.cache
            .get(|| async {
                let (token, lifetime) = self.fetch().await?;
                Ok((bearer(token.expose())?, lifetime))
            })
            .await
    }

    async fn fetch(&self) -> Result<(Secret, Duration), String> {
        let (uri, body) = match &self.source {
            Source::Fixed(t) => return Ok((t.clone(), Duration::from_secs(3600))),
            Source::ServiceAccount {
                email,
                key_id,
                key,
                token_uri,
            } => {
                let jwt = assertion(email, key_id.as_deref(), key, token_uri, SystemTime::now())?;
                (
                    token_uri,
                    format!(
                        "grant_type={}&assertion={jwt}",
                        form("urn:ietf:params:oauth:grant-type:jwt-bearer")
                    ),
                )
            }
            Source::Metadata(url) => {
                let mut headers = http::HeaderMap::new();
                headers.insert("metadata-flavor", HeaderValue::from_static("Google"));
                let (status, answer) = self.poster.get_direct(url, headers).await.map_err(|e| {
                    format!("the metadata server `{url}` could not be reached: {e}")
                })?;
                return token_answer(url, status, &answer);
            }
            Source::ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
            } => (
                token_url,
                format!(
                    "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
                    form(client_id),
                    form(client_secret.expose()),
                    form(scope)
                ),
            ),
            Source::AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                token_uri,
            } => (
                token_uri,
                format!(
                    "grant_type=refresh_token&client_id={}&client_secret={}&refresh_token={}",
                    form(client_id),
                    form(client_secret.expose()),
                    form(refresh_token.expose())
                ),
            ),
        };
        let (status, answer) = self
            .poster
            .post_form(uri, body.into_bytes())
            .await
            .map_err(|e| format!("the token endpoint `{uri}` could not be reached: {e}"))?;
        token_answer(uri, status, &answer)
    }
}

/// A token endpoint's (or the metadata server's) answer: the token and how long it lives.
fn token_answer(uri: &str, status: u16, answer: &[u8]) -> Result<(Secret, Duration), String> {
    if status != 200 {
        return Err(format!(
            "the token endpoint `{uri}` refused the credentials (HTTP {status}{})",
            oauth_error(answer)
        ));
    }
    let t: TokenAnswer = serde_json::from_slice(answer)
        .map_err(|_| format!("the token endpoint `{uri}` answered without an `access_token`"))?;
    Ok((
        t.access_token,
        Duration::from_secs(t.expires_in.unwrap_or(3600)),
    ))
}

/// `: error_description` of an OAuth error answer, if it has one.
fn oauth_error(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let pick = |k: &str| v.get(k).and_then(serde_json::Value::as_str);
    match (pick("error"), pick("error_description")) {
        (Some(e), Some(d)) => format!(": {e}, {d}"),
        (Some(e), None) | (None, Some(e)) => format!(": {e}"),
        (None, None) => String::new(),
    }
}

/// The signed JWT a service account trades for an access token.
pub(crate) fn assertion(
    email: &str,
    key_id: Option<&str>,
    key: &RsaKeyPair,
    audience: &str,
    now: SystemTime,
) -> Result<String, String> {
    let iat = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the clock is before 1970".to_string())?
        .as_secs();
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = key_id {
        header["kid"] = serde_json::json!(kid);
    }
    let claims = serde_json::json!({
        "iss": email,
        "scope": SCOPE,
        "aud": audience,
        "iat": iat,
        "exp": iat + 3600,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| "could not sign the token request".to_string())?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

/// The account's project: its own, else the credentials file's, else `GOOGLE_CLOUD_PROJECT`.
pub(crate) fn project(
    c: &VertexConfig,
    from_credentials: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    c.project
        .clone()
        .or(from_credentials)
        .or_else(|| env("GOOGLE_CLOUD_PROJECT"))
        .filter(|p| !p.trim().is_empty())
}

/// The account's location: its own, else `GOOGLE_CLOUD_LOCATION`, else `global`.
pub(crate) fn location(c: &VertexConfig, env: &dyn Fn(&str) -> Option<String>) -> String {
    c.location
        .clone()
        .or_else(|| env("GOOGLE_CLOUD_LOCATION"))
        .filter(|l| !l.trim().is_empty())
        .unwrap_or_else(|| "global".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

    fn key_json(token_uri: &str) -> String {
        tollway_mock::mock_gcp_service_account(token_uri)
    }

    #[test]
    fn a_service_account_key_signs_a_verifiable_assertion() {
        let (source, project) = key_file(&key_json("http://127.0.0.1:9/token")).expect("reads");
        assert_eq!(project.as_deref(), Some("tollway-test"));
        let Source::ServiceAccount {
            email,
            key_id,
            key,
            token_uri,
        } = source
        else {
            panic!("not a service account")
        };
        assert_eq!(email, tollway_mock::MOCK_GCP_CLIENT_EMAIL);
        let jwt = assertion(
            &email,
            key_id.as_deref(),
            &key,
            &token_uri,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
        .expect("signs");
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
        assert_eq!(
            claims,
            serde_json::json!({"iss": email, "scope": SCOPE, "aud": "http://127.0.0.1:9/token",
                               "iat": 1_700_000_000u64, "exp": 1_700_003_600u64})
        );
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
        assert_eq!(header["alg"], "RS256");
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
        let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public().as_ref());
        public
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .expect("the signature verifies with the key's public half");
    }

    #[test]
    fn bad_credentials_files_are_named_without_their_secrets() {
        let cases = [
            ("{", "not a Google credentials file"),
            (r#"{"type": "external_account"}"#, "`external_account`"),
            (
                r#"{"type": "service_account", "token_uri": "oauth2.googleapis.com/token"}"#,
                "is not an http:// or https:// URL",
            ),
            (
                r#"{"type": "service_account", "client_email": "a@b"}"#,
                "no `private_key`",
            ),
            (
                r#"{"type": "service_account", "client_email": "a@b", "private_key": "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleQ==\n-----END PRIVATE KEY-----\n"}"#,
                "not a usable RSA key",
            ),
            (
                r#"{"type": "authorized_user", "client_id": "x", "client_secret": "hunter2"}"#,
                "no `refresh_token`",
            ),
        ];
        for (text, want) in cases {
            let e = key_file(text).err().expect("refused");
            assert!(e.contains(want), "{text}: {e}");
            assert!(!e.contains("hunter2") && !e.contains("c2VjcmV0"), "{e}");
        }
        let env = |_: &str| None;
        let e = credentials(&VertexConfig::default(), &env)
            .err()
            .expect("no credentials");
        assert!(e.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{e}");
        let c = VertexConfig {
            credentials: Some("/nonexistent/key.json".into()),
            ..VertexConfig::default()
        };
        let e = credentials(&c, &env).err().expect("unreadable");
        assert!(e.contains("/nonexistent/key.json"), "{e}");
    }

    #[test]
    fn an_azure_account_uses_an_entra_application_only_without_a_key_or_token() {
        use crate::config::AzureConfig;
        let env = |k: &str| match k {
            "AZURE_TENANT_ID" => Some("env-tenant".to_string()),
            "AZURE_CLIENT_ID" => Some("env-client".to_string()),
            "AZURE_CLIENT_SECRET" => Some("env-secret".to_string()),
            _ => None,
        };
        let keyed = AzureConfig {
            api_key: Secret::new("k"),
            ..AzureConfig::default()
        };
        assert!(matches!(azure_source(&keyed, &env), Ok(None)));
        // no key, no token: the environment's application
        match azure_source(&AzureConfig::default(), &env) {
            Ok(Some(Source::ClientCredentials {
                token_url,
                client_id,
                scope,
                ..
            })) => {
                assert_eq!(
                    token_url,
                    "https://login.microsoftonline.com/env-tenant/oauth2/v2.0/token"
                );
                assert_eq!(client_id, "env-client");
                assert_eq!(scope, AZURE_SCOPE);
            }
            _ => panic!("the environment's application"),
        }
        // the account's own application wins, key or not; half of one is an error
        let own = AzureConfig {
            api_key: Secret::new("k"),
            tenant_id: Some("t".into()),
            client_id: Some("c".into()),
            client_secret: Some(Secret::new("s")),
            authority_host: Some("https://login.microsoftonline.us/".into()),
            ..AzureConfig::default()
        };
        assert!(matches!(azure_source(&own, &env),
            Ok(Some(Source::ClientCredentials { token_url, .. })) if token_url == "https://login.microsoftonline.us/t/oauth2/v2.0/token"));
        let half = AzureConfig {
            tenant_id: Some("t".into()),
            ..AzureConfig::default()
        };
        let e = azure_source(&half, &env)
            .err()
            .expect("half an application");
        assert!(e.contains("client_id and client_secret missing"), "{e}");
    }

    #[test]
    fn project_and_location_come_from_the_account_the_key_or_the_environment() {
        let env = |k: &str| match k {
            "GOOGLE_CLOUD_PROJECT" => Some("env-project".to_string()),
            "GOOGLE_CLOUD_LOCATION" => Some("europe-west4".to_string()),
            _ => None,
        };
        let none = |_: &str| None;
        let mut c = VertexConfig::default();
        assert_eq!(
            project(&c, Some("key-project".into()), &env).as_deref(),
            Some("key-project")
        );
        assert_eq!(project(&c, None, &env).as_deref(), Some("env-project"));
        assert_eq!(project(&c, None, &none), None);
        assert_eq!(location(&c, &env), "europe-west4");
        assert_eq!(location(&c, &none), "global");
        c.project = Some("own".into());
        c.location = Some("us-east5".into());
        assert_eq!(
            project(&c, Some("key".into()), &env).as_deref(),
            Some("own")
        );
        assert_eq!(location(&c, &env), "us-east5");
    }
}
