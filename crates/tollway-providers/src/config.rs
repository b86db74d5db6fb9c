//! Provider accounts as the config file spells them: `kind` picks the variant; unknown keys are errors.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tollway_core::Provider;

use crate::http::HttpProvider;

/// A secret string (an API key). Its `Debug` never shows the value, so it cannot reach a log by
/// accident; read it with [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

/// A string; anything else is refused without showing it (an unquoted key that YAML reads as a
/// number would otherwise be echoed by the error).
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret(v))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom(NOT_TEXT))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom(NOT_TEXT))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(NOT_TEXT))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom(NOT_TEXT))
            }
        }
        const NOT_TEXT: &str = "a secret must be a string: quote it (the value is not shown)";
        d.deserialize_any(Text)
    }
}

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// `none` or empty: the upstream takes no key (local servers).
    pub fn is_none(&self) -> bool {
        self.0.is_empty() || self.0 == "none"
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_none() {
            "<none>"
        } else {
            "<redacted>"
        })
    }
}

/// Where `openai` accounts send requests without a `base_url`.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// What a `bedrock` account's proxy setting is checked against without a `base_url` (its real
/// endpoint depends on the region).
const BEDROCK_DEFAULT_URL: &str = "https://bedrock-runtime.us-east-1.amazonaws.com";
/// Where `anthropic` accounts send requests without a `base_url`.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// Where `gemini` accounts send requests without a `base_url`.
pub const GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";
/// What a `vertex` account's proxy setting is checked against without a `base_url`.
const VERTEX_DEFAULT_URL: &str = "https://aiplatform.googleapis.com";

/// An account's `proxy` setting: `none`, or a proxy URL that may carry credentials. Its `Debug`
/// hides them.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct ProxySetting(String);

impl ProxySetting {
    pub fn new(s: impl Into<String>) -> Self {
        ProxySetting(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ProxySetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::proxy::mask(&self.0))
    }
}

/// Timeouts for one provider account, in milliseconds in the config file.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP (and TLS) connect.
    pub connect_ms: u64,
    /// From sending the request to the response's status and headers.
    pub first_byte_ms: u64,
    /// Longest silence between two chunks of a streamed answer.
    pub idle_ms: u64,
    /// The whole request, body included.
    pub total_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_ms: 5_000,
            first_byte_ms: 120_000,
            idle_ms: 60_000,
            total_ms: 600_000,
        }
    }
}

impl Timeouts {
    pub fn connect(&self) -> Duration {
        Duration::from_millis(self.connect_ms)
    }
    pub fn first_byte(&self) -> Duration {
        Duration::from_millis(self.first_byte_ms)
    }
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }
    pub fn total(&self) -> Duration {
        Duration::from_millis(self.total_ms)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// `none` for servers that take no key.
    #[serde(default)]
    pub api_key: Secret,
    /// Defaults to `https://api.openai.com/v1`; any OpenAI-compatible server's base URL works.
    #[serde(default)]
    pub base_url: Option<String>,
    /// OpenAI organization id header.
    #[serde(default)]
    pub organization: Option<String>,
    /// Extra headers on every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// A PEM file of certificate authorities to trust for this account's HTTPS upstream, besides
    /// the public ones (a server with a private or corporate CA).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Offer HTTP/2 to an HTTPS upstream (ALPN), multiplexing a worker's requests on one
    /// connection; by default HTTP/1.1, one connection per request in flight.
    #[serde(default)]
    pub http2: bool,
    /// An HTTP proxy for this account (`http://[user:password@]host:port`), or `none`; unset,
    /// the environment's `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` and `NO_PROXY`.
    #[serde(default)]
    pub proxy: Option<ProxySetting>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnthropicConfig {
    #[serde(default)]
    pub api_key: Secret,
    /// Defaults to `https://api.anthropic.com`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The `anthropic-version` header; defaults to `2023-06-01`.
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// A PEM file of certificate authorities to trust for this account's HTTPS upstream, besides
    /// the public ones (a server with a private or corporate CA).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Offer HTTP/2 to an HTTPS upstream (ALPN), multiplexing a worker's requests on one
    /// connection; by default HTTP/1.1, one connection per request in flight.
    #[serde(default)]
    pub http2: bool,
    /// An HTTP proxy for this account (`http://[user:password@]host:port`), or `none`; unset,
    /// the environment's `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` and `NO_PROXY`.
    #[serde(default)]
    pub proxy: Option<ProxySetting>,
}

/// An Amazon Bedrock account (the Converse API). Credentials: `api_key` (a Bedrock API key), or
/// `access_key_id` and `secret_access_key` (and `session_token` for temporary ones), or else the
/// environment's, as the AWS SDKs read them (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, then `AWS_BEARER_TOKEN_BEDROCK`); read when the config is loaded.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BedrockConfig {
    /// `us-east-1` ...; unset, `AWS_REGION` or `AWS_DEFAULT_REGION`.
    #[serde(default)]
    pub region: Option<String>,
    /// `instance`: the temporary credentials of the EC2 instance's role, from its metadata
    /// service (IMDSv2), refreshed before they expire.
    #[serde(default)]
    pub credentials: Option<String>,
    /// With `credentials: instance`, the metadata service (`http://host[:port]`); unset,
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else `http://169.254.169.254`.
    #[serde(default)]
    pub metadata_endpoint: Option<String>,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    #[serde(default)]
    pub session_token: Option<Secret>,
    /// A Bedrock API key, sent as `Authorization: Bearer`.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Defaults to `https://bedrock-runtime.{region}.amazonaws.com` (a VPC endpoint or a proxy
    /// in front of Bedrock goes here).
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// A PEM file of certificate authorities to trust for this account's HTTPS upstream, besides
    /// the public ones (a server with a private or corporate CA).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Offer HTTP/2 to an HTTPS upstream (ALPN), multiplexing a worker's requests on one
    /// connection; by default HTTP/1.1, one connection per request in flight.
    #[serde(default)]
    pub http2: bool,
    /// An HTTP proxy for this account (`http://[user:password@]host:port`), or `none`; unset,
    /// the environment's `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` and `NO_PROXY`.
    #[serde(default)]
    pub proxy: Option<ProxySetting>,
}

/// An Azure OpenAI resource. Deployments are named by the deployment's `model`. Without an
/// `api_version`, the v1 API (`{base_url}/openai/v1/...`, the deployment in the body's `model`);
/// with a dated one (`2024-10-21`), the deployment URLs
/// (`{base_url}/openai/deployments/{deployment}/...?api-version=...`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    /// The resource's endpoint: `https://RESOURCE.openai.azure.com` (or
    /// `.cognitiveservices.azure.com`); required.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The resource's key, sent as `api-key`.
    #[serde(default)]
    pub api_key: Secret,
    /// A Microsoft Entra ID token instead of a key, sent as `Authorization: Bearer` (made
    /// elsewhere: it is not refreshed).
    #[serde(default)]
    pub azure_ad_token: Option<Secret>,
    /// A Microsoft Entra ID application instead of a key: its tenant, client id and secret
    /// (unset, and no key or token either: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
    /// `AZURE_CLIENT_SECRET`); tokens are fetched and refreshed.
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// Where Entra ID tokens come from; unset, `AZURE_AUTHORITY_HOST`, else
    /// `https://login.microsoftonline.com`.
    #[serde(default)]
    pub authority_host: Option<String>,
    /// `v1` (the default) or a dated API version.
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// A PEM file of certificate authorities to trust for this account's HTTPS upstream, besides
    /// the public ones (a server with a private or corporate CA).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Offer HTTP/2 to an HTTPS upstream (ALPN), multiplexing a worker's requests on one
    /// connection; by default HTTP/1.1, one connection per request in flight.
    #[serde(default)]
    pub http2: bool,
    /// An HTTP proxy for this account (`http://[user:password@]host:port`), or `none`; unset,
    /// the environment's `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` and `NO_PROXY`.
    #[serde(default)]
    pub proxy: Option<ProxySetting>,
}

impl AzureConfig {
    /// The dated API version, if the account uses the deployment URLs (`None`: the v1 API).
    pub fn dated_version(&self) -> Option<&str> {
        self.api_version
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("v1"))
    }

    /// The resource's endpoint without a trailing `/`, `/openai` or `/openai/v1`.
    pub fn resource(&self) -> Option<&str> {
        let b = self.base_url.as_deref()?.trim_end_matches('/');
        let b = b.strip_suffix("/openai/v1").unwrap_or(b);
        Some(b.strip_suffix("/openai").unwrap_or(b))
    }
}

/// Google's Gemini API (Google AI Studio), with an API key.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GeminiConfig {
    /// Sent as `x-goog-api-key`.
    #[serde(default)]
    pub api_key: Secret,
    /// Defaults to `https://generativelanguage.googleapis.com/v1beta`.
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// A PEM file of certificate authorities to trust for this account's HTTPS upstream, besides
    /// the public ones (a server with a private or corporate CA).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Offer HTTP/2 to an HTTPS upstream (ALPN), multiplexing a worker's requests on one
    /// connection; by default HTTP/1.1, one connection per request in flight.
    #[serde(default)]
    pub http2: bool,
    /// An HTTP proxy for this account (`http://[user:password@]host:port`), or `none`; unset,
    /// the environment's `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` and `NO_PROXY`.
    #[serde(default)]
    pub proxy: Option<ProxySetting>,
}

/// Google Cloud's Vertex AI: Gemini models (`publishers/google`) and Claude
/// (`publishers/anthropic`, any model id starting with `claude`), with an OAuth access token
/// from a service account key, an authorized user file, or a fixed token.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VertexConfig {
    /// The Google Cloud project; unset, the key file's, else `GOOGLE_CLOUD_PROJECT`.
    #[serde(default)]
    pub project: Option<String>,
    /// `global` (the default), `us-central1`, `europe-west4` ...; unset, `GOOGLE_CLOUD_LOCATION`.
    #[serde(default)]
    pub location: Option<String>,
    /// A Google credentials file: a service account key or an authorized user file; or
    /// `metadata`: the metadata server of the Google Cloud machine the gateway runs on; unset,
    /// `GOOGLE_APPLICATION_CREDENTIALS`.
    #[serde(default)]
    pub credentials: Option<String>,
    /// With `credentials: metadata`, the metadata server (`host[:port]`); unset,
    /// `GCE_METADATA_HOST`, else `metadata.google.internal`.
    #[serde(default)]
    pub metadata_host: Option<String>,
    /// A fixed access token (`gcloud auth print-access-token`) instead of a credentials file; it
    /// is not refreshed.
    #[serde(default)]
    pub access_token: Option<Secret>,
    /// Defaults to `https://{location}-aiplatform.googleapis.com` (`https://aiplatform.googleapis.com`
    /// for `global`); a Private Service Connect endpoint or a proxy goes here.
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// A PEM file of certificate authorities to trust for this account's HTTPS upstream, besides
    /// the public ones (a server with a private or corporate CA).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Offer HTTP/2 to an HTTPS upstream (ALPN), multiplexing a worker's requests on one
    /// connection; by default HTTP/1.1, one connection per request in flight.
    #[serde(default)]
    pub http2: bool,
    /// An HTTP proxy for this account (`http://[user:password@]host:port`), or `none`; unset,
    /// the environment's `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` and `NO_PROXY`.
    #[serde(default)]
    pub proxy: Option<ProxySetting>,
}

impl BedrockConfig {
    /// The runtime endpoint: `base_url`, or the region's own.
    pub fn endpoint(&self, region: Option<&str>) -> Option<String> {
        match (&self.base_url, region) {
            (Some(u), _) => Some(u.trim_end_matches('/').to_string()),
            (None, Some(r)) => Some(format!("https://bedrock-runtime.{r}.amazonaws.com")),
            (None, None) => None,
        }
    }
}

/// The secret access key a simulated Bedrock account signs with: tollway-mock checks SigV4
/// signatures against this secret for any access key id.
pub const MOCK_AWS_SECRET: &str = "tollway-mock-secret";

/// The access token a simulated Vertex AI account sends (tollway-mock takes it as issued).
pub const MOCK_GCP_TOKEN: &str = "ya29.tollway-mock-demo";

/// Which wire format a simulated provider speaks.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum MockFormat {
    #[default]
    Openai,
    Anthropic,
    Bedrock,
    Gemini,
    Vertex,
    Azure,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MockConfig {
    #[serde(default)]
    pub format: MockFormat,
}

/// The wire formats providers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI Chat Completions (and embeddings).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Amazon Bedrock's Converse API.
    Bedrock,
    /// Google's Gemini API.
    Gemini,
    /// Vertex AI: Gemini's format for Gemini models, Anthropic's (`rawPredict`) for Claude.
    Vertex,
}

/// One provider account.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ProviderConfig {
    /// OpenAI itself.
    Openai(OpenAiConfig),
    /// Any server speaking OpenAI Chat Completions (vLLM, Ollama, llama.cpp, Mistral, Groq,
    /// DeepSeek, Together ...); `base_url` is required.
    OpenaiCompatible(OpenAiConfig),
    Anthropic(AnthropicConfig),
    /// Amazon Bedrock's Converse API (any model it hosts), signed with SigV4.
    Bedrock(BedrockConfig),
    /// Azure OpenAI (OpenAI's format; deployments by name).
    Azure(AzureConfig),
    /// Google's Gemini API (AI Studio).
    Gemini(GeminiConfig),
    /// Google Cloud's Vertex AI (Gemini and Claude).
    Vertex(VertexConfig),
    /// A simulated provider (tollway-mock, run inside the gateway): for demos and trying configs.
    /// The gateway resolves it to one of the other kinds with the simulator's address.
    Mock(MockConfig),
}

impl ProviderConfig {
    /// The wire format the account speaks (a mock's: the one it simulates).
    pub fn wire(&self) -> Wire {
        match self {
            ProviderConfig::Openai(_)
            | ProviderConfig::OpenaiCompatible(_)
            | ProviderConfig::Azure(_) => Wire::OpenAi,
            ProviderConfig::Anthropic(_) => Wire::Anthropic,
            ProviderConfig::Bedrock(_) => Wire::Bedrock,
            ProviderConfig::Gemini(_) => Wire::Gemini,
            ProviderConfig::Vertex(_) => Wire::Vertex,
            ProviderConfig::Mock(m) => match m.format {
                MockFormat::Openai | MockFormat::Azure => Wire::OpenAi,
                MockFormat::Anthropic => Wire::Anthropic,
                MockFormat::Bedrock => Wire::Bedrock,
                MockFormat::Gemini => Wire::Gemini,
                MockFormat::Vertex => Wire::Vertex,
            },
        }
    }

    /// Problems a config check should report (beyond what deserialisation caught). `env` reads
    /// the environment the gateway will run in (its proxy variables).
    pub fn problems(&self, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
        let mut out = Vec::new();
        let check_url = |url: &Option<String>, required: bool, out: &mut Vec<String>| match url {
            Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => out.push(
                format!("base_url `{u}` must start with http:// or https://"),
            ),
            None if required => out.push("base_url is required for this kind".to_string()),
            _ => {}
        };
        let (base_url, default_url, ca_file, http2, proxy) = match self {
            ProviderConfig::Openai(c) => {
                check_url(&c.base_url, false, &mut out);
                (&c.base_url, OPENAI_BASE_URL, &c.ca_file, c.http2, &c.proxy)
            }
            ProviderConfig::OpenaiCompatible(c) => {
                check_url(&c.base_url, true, &mut out);
                (&c.base_url, OPENAI_BASE_URL, &c.ca_file, c.http2, &c.proxy)
            }
            ProviderConfig::Anthropic(c) => {
                check_url(&c.base_url, false, &mut out);
                (
                    &c.base_url,
                    ANTHROPIC_BASE_URL,
                    &c.ca_file,
                    c.http2,
                    &c.proxy,
                )
            }
            ProviderConfig::Bedrock(c) => {
                check_url(&c.base_url, false, &mut out);
                let region = crate::aws::region(c, env);
                if region.is_none() && c.base_url.is_none() {
                    out.push(
                        "region is required (or AWS_REGION in the environment, or a base_url)"
                            .to_string(),
                    );
                }
                if let Err(e) = crate::aws::credential(c, env) {
                    out.push(e);
                }
                (
                    &c.base_url,
                    BEDROCK_DEFAULT_URL,
                    &c.ca_file,
                    c.http2,
                    &c.proxy,
                )
            }
            ProviderConfig::Azure(c) => {
                check_url(&c.base_url, true, &mut out);
                match crate::oauth::azure_source(c, env) {
                    Err(e) => out.push(e),
                    Ok(None)
                        if c.api_key.is_none()
                            && c.azure_ad_token.as_ref().is_none_or(Secret::is_none) =>
                    {
                        out.push(
                            "api_key, azure_ad_token or an Entra ID application (tenant_id, \
                             client_id, client_secret) is required"
                                .to_string(),
                        )
                    }
                    Ok(_) => {}
                }
                (&c.base_url, OPENAI_BASE_URL, &c.ca_file, c.http2, &c.proxy)
            }
            ProviderConfig::Gemini(c) => {
                check_url(&c.base_url, false, &mut out);
                if c.api_key.is_none() {
                    out.push("api_key is required".to_string());
                }
                (&c.base_url, GEMINI_BASE_URL, &c.ca_file, c.http2, &c.proxy)
            }
            ProviderConfig::Vertex(c) => {
                check_url(&c.base_url, false, &mut out);
                match crate::oauth::credentials(c, env) {
                    Err(e) => out.push(e),
                    Ok((_, from_key)) => {
                        if crate::oauth::project(c, from_key, env).is_none() {
                            out.push(
                                "project is required (or a key file that names one, or \
                                 GOOGLE_CLOUD_PROJECT in the environment)"
                                    .to_string(),
                            );
                        }
                    }
                }
                (
                    &c.base_url,
                    VERTEX_DEFAULT_URL,
                    &c.ca_file,
                    c.http2,
                    &c.proxy,
                )
            }
            ProviderConfig::Mock(_) => return out,
        };
        // the account's proxy, or the environment's for its upstream (a bad base_url is reported
        // above; the proxy is then checked against the default upstream)
        let url = base_url
            .as_deref()
            .unwrap_or(default_url)
            .parse::<http::Uri>()
            .unwrap_or_else(|_| http::Uri::from_static(OPENAI_BASE_URL));
        if let Err(e) = crate::proxy::resolve(&url, proxy.as_ref().map(ProxySetting::expose), env) {
            out.push(e);
        }
        let plain = base_url
            .as_deref()
            .is_some_and(|u| u.starts_with("http://"));
        if let Some(path) = ca_file {
            if plain {
                out.push(format!(
                    "ca_file `{path}` is for https:// upstreams; base_url is plain http://"
                ));
            } else if let Err(e) = crate::http::root_store(Some(path)) {
                out.push(e);
            }
        }
        if http2 && plain {
            out.push(
                "http2 is for https:// upstreams (HTTP/2 is offered in the TLS handshake); \
                 base_url is plain http://"
                    .to_string(),
            );
        }
        out
    }

    /// Builds the client. `name` is the account's name in the config. A `Mock` entry must have been
    /// resolved to a real kind first (see `resolve_mock`); building one directly is an error.
    pub fn build(&self, name: &str) -> Result<Arc<dyn Provider>, String> {
        let p = match self {
            ProviderConfig::Openai(c) => HttpProvider::openai(name, c, false)?,
            ProviderConfig::OpenaiCompatible(c) => HttpProvider::openai(name, c, true)?,
            ProviderConfig::Anthropic(c) => HttpProvider::anthropic(name, c)?,
            ProviderConfig::Bedrock(c) => {
                HttpProvider::bedrock(name, c, Arc::new(|k: &str| std::env::var(k).ok()))?
            }
            ProviderConfig::Azure(c) => {
                HttpProvider::azure(name, c, Arc::new(|k: &str| std::env::var(k).ok()))?
            }
            ProviderConfig::Gemini(c) => HttpProvider::gemini(name, c)?,
            ProviderConfig::Vertex(c) => {
                HttpProvider::vertex(name, c, Arc::new(|k: &str| std::env::var(k).ok()))?
            }
            ProviderConfig::Mock(_) => {
                return Err(format!(
                    "provider `{name}`: a mock provider needs the simulator's address"
                ))
            }
        };
        Ok(Arc::new(p))
    }

    /// The config of a real kind pointing at a running simulator at `base` (`http://host:port`).
    pub fn resolve_mock(&self, base: &str) -> Option<ProviderConfig> {
        let ProviderConfig::Mock(m) = self else {
            return None;
        };
        Some(match m.format {
            MockFormat::Openai => ProviderConfig::OpenaiCompatible(OpenAiConfig {
                api_key: Secret::new("none"),
                base_url: Some(format!("{base}/v1")),
                organization: None,
                headers: BTreeMap::new(),
                timeouts: Timeouts::default(),
                ca_file: None,
                http2: false,
                proxy: None,
            }),
            MockFormat::Bedrock => ProviderConfig::Bedrock(BedrockConfig {
                region: Some("us-east-1".into()),
                access_key_id: Some("mock".into()),
                secret_access_key: Some(Secret::new(MOCK_AWS_SECRET)),
                base_url: Some(base.to_string()),
                ..BedrockConfig::default()
            }),
            MockFormat::Azure => ProviderConfig::Azure(AzureConfig {
                base_url: Some(base.to_string()),
                api_key: Secret::new("mock"),
                ..AzureConfig::default()
            }),
            MockFormat::Gemini => ProviderConfig::Gemini(GeminiConfig {
                api_key: Secret::new("mock"),
                base_url: Some(format!("{base}/v1beta")),
                ..GeminiConfig::default()
            }),
            // a fixed token: the simulator's service account key would need a file
            MockFormat::Vertex => ProviderConfig::Vertex(VertexConfig {
                project: Some("tollway-demo".into()),
                location: Some("us-central1".into()),
                access_token: Some(Secret::new(MOCK_GCP_TOKEN)),
                base_url: Some(base.to_string()),
                ..VertexConfig::default()
            }),
            MockFormat::Anthropic => ProviderConfig::Anthropic(AnthropicConfig {
                api_key: Secret::new("mock"),
                base_url: Some(base.to_string()),
                version: None,
                headers: BTreeMap::new(),
                timeouts: Timeouts::default(),
                ca_file: None,
                http2: false,
                proxy: None,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_bedrock_account_signs_with_the_simulators_secret() {
        assert_eq!(MOCK_AWS_SECRET, tollway_mock::MOCK_AWS_SECRET);
        let sim = ProviderConfig::Mock(MockConfig {
            format: MockFormat::Bedrock,
        });
        assert_eq!(sim.wire(), Wire::Bedrock);
        match sim.resolve_mock("http://127.0.0.1:9") {
            Some(ProviderConfig::Bedrock(b)) => {
                assert_eq!(b.base_url.as_deref(), Some("http://127.0.0.1:9"));
                assert_eq!(
                    b.secret_access_key.as_ref().map(Secret::expose),
                    Some(MOCK_AWS_SECRET)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn simulated_google_and_azure_accounts_resolve_to_their_kinds() {
        assert_eq!(MOCK_GCP_TOKEN, tollway_mock::MOCK_GCP_TOKEN);
        let sim = |format| ProviderConfig::Mock(MockConfig { format });
        match sim(MockFormat::Vertex).resolve_mock("http://127.0.0.1:9") {
            Some(ProviderConfig::Vertex(v)) => {
                assert_eq!(
                    v.access_token.as_ref().map(Secret::expose),
                    Some(MOCK_GCP_TOKEN)
                );
                assert_eq!(v.base_url.as_deref(), Some("http://127.0.0.1:9"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            sim(MockFormat::Gemini).resolve_mock("http://h:1"),
            Some(ProviderConfig::Gemini(g)) if g.base_url.as_deref() == Some("http://h:1/v1beta")
        ));
        assert!(matches!(
            sim(MockFormat::Azure).resolve_mock("http://h:1"),
            Some(ProviderConfig::Azure(a)) if a.dated_version().is_none()
        ));
        assert_eq!(sim(MockFormat::Azure).wire(), Wire::OpenAi);
        assert_eq!(sim(MockFormat::Vertex).wire(), Wire::Vertex);
    }

    #[test]
    fn azure_endpoints_are_trimmed_to_the_resource() {
        for url in [
            "https://r.openai.azure.com",
            "https://r.openai.azure.com/",
            "https://r.openai.azure.com/openai",
            "https://r.openai.azure.com/openai/v1/",
        ] {
            let c = AzureConfig {
                base_url: Some(url.into()),
                ..AzureConfig::default()
            };
            assert_eq!(c.resource(), Some("https://r.openai.azure.com"), "{url}");
        }
        let c = AzureConfig {
            api_version: Some("V1".into()),
            ..AzureConfig::default()
        };
        assert_eq!(c.dated_version(), None);
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let c = ProviderConfig::Openai(OpenAiConfig {
            api_key: Secret::new("sk-live-very-secret"),
            base_url: None,
            organization: None,
            headers: BTreeMap::new(),
            timeouts: Timeouts::default(),
            ca_file: None,
            http2: false,
            proxy: Some(ProxySetting::new("http://alice:hunter2@proxy:3128")),
        });
        let shown = format!("{c:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(
            !shown.contains("hunter2") && shown.contains("proxy:3128"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"));
    }
}
