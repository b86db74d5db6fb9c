//! The HTTP engine shared by every provider kind: pooled connections per account and serving lane
//! (the lane's own HTTP/1.1 connections, plain or over TLS, [`crate::pool`]; with `http2`,
//! hyper-util's client, HTTP/2 by ALPN; TLS by rustls to the webpki roots and the account's
//! `ca_file`; through an HTTP proxy when the account or the environment names one,
//! [`crate::proxy`]), the four timeouts (connect, first byte,
//! idle between chunks, total), bounded reads of bodies, upstream SSE streams decoded chunk by
//! chunk as they arrive, and classified errors. hyper directly rather than reqwest: reqwest's
//! layers (redirect policy, URL handling) cost ~20% of the gateway's instructions per request.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::Uri;
use http_body_util::{BodyExt, BodyStream, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::lanes::Lanes;
use crate::pool::{Connector, Pool, PooledBody, SendError};
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tollway_core::{
    BoxFuture, ChatRequest, ChatResponse, ErrorKind, EventStream, Label, Provider, ProviderError,
    ProviderInfo, StreamEvent, Target, Usage, Waited,
};
use tollway_protocol::eventstream::EventStreamParser;
use tollway_protocol::sse::{SseEvent, SseParser};
use tollway_protocol::{anthropic, bedrock, gemini, openai, path_segment};

use crate::config::{
    AnthropicConfig, AzureConfig, BedrockConfig, GeminiConfig, OpenAiConfig, ProxySetting,
    Timeouts, VertexConfig, ANTHROPIC_BASE_URL, GEMINI_BASE_URL, OPENAI_BASE_URL,
};
use crate::proxy::{Tcp, Via};
use crate::{aws, oauth};

/// Largest upstream body read whole (non-streaming answers and error bodies).
const MAX_UPSTREAM_BODY: usize = 64 * 1024 * 1024;
/// Largest error body kept for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Calls to a Bedrock embedding model in flight for one request (Titan embeds one text a call).
const BEDROCK_EMBED_CALLS: usize = 8;

/// A provider reached over HTTP in one of the supported wire formats.
pub struct HttpProvider {
    info: ProviderInfo,
    /// One pool per serving lane (see [`crate::lanes`]).
    transport: Transport,
    /// Parsed once: parsing a URL per request is measurable on the hot path.
    chat_url: Endpoint,
    /// OpenAI-format accounts only.
    embeddings_url: Option<Endpoint>,
    /// Anthropic-format accounts only: the token count.
    count_url: Option<Endpoint>,
    /// The account's headers and `content-type: application/json`.
    headers: HeaderMap,
    /// Accounts that send an OAuth access token (Vertex AI; Azure with an Entra ID
    /// application): where it comes from, fetched when needed.
    tokens: Option<Box<oauth::Tokens>>,
    timeouts: Timeouts,
    format: Format,
}

/// The wire format, with what only it needs.
enum Format {
    OpenAi(openai::Dialect),
    Anthropic,
    /// The endpoint's base (`scheme://host[:port][/prefix]`) and the account's signer.
    Bedrock {
        base: String,
        auth: Box<aws::Auth>,
    },
    /// Azure OpenAI's deployment URLs: `{base}/openai/deployments/{deployment}/...`, the API
    /// version in the query. (Its v1 API is plain `OpenAi`.)
    AzureDeployments {
        base: String,
        api_version: String,
        dialect: openai::Dialect,
    },
    /// Google's Gemini API: `{base}/models/{model}:generateContent`.
    Gemini {
        base: String,
    },
    /// Vertex AI: `{base}/publishers/google/models/{model}:generateContent` (Gemini's format), or
    /// `.../publishers/anthropic/models/{claude...}:rawPredict` (Anthropic's).
    Vertex {
        base: String,
    },
}

/// The wire format a request to one model is written and read in (a Vertex AI account speaks
/// Gemini's or, for Claude, Anthropic's), decided once per request by [`Format::codec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    OpenAi(openai::Dialect),
    Anthropic,
    /// Anthropic's body on Vertex AI (`rawPredict`): no model, Vertex's version.
    ClaudeOnVertex,
    Bedrock,
    Gemini,
}

impl Format {
    /// The format a request for `model` goes in.
    fn codec(&self, model: &str) -> Codec {
        match self {
            Format::OpenAi(dialect) | Format::AzureDeployments { dialect, .. } => {
                Codec::OpenAi(*dialect)
            }
            Format::Anthropic => Codec::Anthropic,
            Format::Bedrock { .. } => Codec::Bedrock,
            Format::Gemini { .. } => Codec::Gemini,
            Format::Vertex { .. } if vertex_model(model).0 => Codec::ClaudeOnVertex,
            Format::Vertex { .. } => Codec::Gemini,
        }
    }

    /// Whether `model` goes to Vertex AI's Anthropic publisher (Claude) rather than Google's.
    fn vertex_claude(&self, model: &str) -> bool {
        self.codec(model) == Codec::ClaudeOnVertex
    }

    /// The URL of a request to `target`, for formats that name the model (or deployment) in the
    /// path; `None`: the account's fixed chat URL.
    fn url_for(&self, target: Target<'_>) -> Option<String> {
        let seg = || path_segment(target.model);
        Some(match self {
            Format::OpenAi(_) | Format::Anthropic => return None,
            Format::Bedrock { base, .. } => {
                format!("{base}{}", bedrock::model_path(target.model, target.stream))
            }
            Format::AzureDeployments {
                base, api_version, ..
            } => format!(
                "{base}/openai/deployments/{}/chat/completions?api-version={}",
                seg(),
                path_segment(api_version)
            ),
            Format::Gemini { base } => {
                // the API's own resource name (`models/gemini-2.5-flash`) names the same model
                let model = target.model.strip_prefix("models/").unwrap_or(target.model);
                format!(
                    "{base}/models/{}{}",
                    path_segment(model),
                    gemini::method(target.stream)
                )
            }
            Format::Vertex { base, .. } => {
                let (claude, model) = vertex_model(target.model);
                if claude {
                    format!(
                        "{base}/publishers/anthropic/models/{}:{}",
                        path_segment(model),
                        if target.stream {
                            "streamRawPredict"
                        } else {
                            "rawPredict"
                        }
                    )
                } else {
                    format!(
                        "{base}/publishers/google/models/{}{}",
                        path_segment(model),
                        gemini::method(target.stream)
                    )
                }
            }
        })
    }
}

type HttpClient = Client<Connector, Full<Bytes>>;
type Response = http::Response<PooledBody>;

/// How requests reach the account's upstream, per serving lane.
enum Transport {
    /// HTTP/1.1, plain or over TLS, on the lane's own connections ([`crate::pool`]): the default.
    /// `absolute_form`: requests name the whole URL, for a proxy that forwards plain HTTP.
    Pooled {
        pools: Lanes<Arc<Pool>>,
        absolute_form: bool,
    },
    /// HTTPS with HTTP/2 offered by ALPN (`http2: true`): hyper-util's client, which multiplexes a
    /// lane's requests on one connection per upstream.
    Client(Box<Lanes<HttpClient>>),
}

/// How an account connects, from its config.
struct Link<'a> {
    timeouts: &'a Timeouts,
    /// Extra authorities for an HTTPS upstream ([`root_store`]).
    ca_file: Option<&'a str>,
    http2: bool,
    /// The account's `proxy` setting ([`crate::proxy::resolve`]).
    proxy: Option<&'a str>,
}

impl<'a> Link<'a> {
    /// From an account's fields (the two account kinds spell them alike).
    fn new(
        timeouts: &'a Timeouts,
        ca_file: &'a Option<String>,
        http2: bool,
        proxy: &'a Option<ProxySetting>,
    ) -> Link<'a> {
        Link {
            timeouts,
            ca_file: ca_file.as_deref(),
            http2,
            proxy: proxy.as_ref().map(ProxySetting::expose),
        }
    }
}

impl Transport {
    /// To `url` through `via`, if any: an HTTPS upstream through the proxy's tunnel, a plain one
    /// forwarded by it.
    fn new(url: &Uri, link: &Link<'_>, via: Option<&Via>) -> Result<Transport, String> {
        let http = http_connector(link.timeouts);
        if link.http2 {
            let connector = tls_connector(Tcp::new(http, via), link.ca_file, true)?;
            return Ok(Transport::Client(Box::new(Lanes::new(|| {
                Ok(client_on(connector.clone()))
            })?)));
        }
        let (tcp, origin, absolute_form) = match via {
            Some(v) if url.scheme_str() == Some("http") => (Tcp::Direct(http), v.uri.clone(), true),
            via => (Tcp::new(http, via), url.clone(), false),
        };
        let connector = tls_connector(tcp, link.ca_file, false)?;
        Ok(Transport::Pooled {
            pools: Lanes::new(|| Ok(Arc::new(Pool::new(connector.clone(), origin.clone()))))?,
            absolute_form,
        })
    }
}

/// An upstream URL, absolute (hyper-util's client wants that) and in origin form (the path and
/// query an HTTP/1.1 request line carries).
struct Endpoint {
    absolute: Uri,
    origin_form: Uri,
}

impl Endpoint {
    fn parse(url: &str, provider: &str) -> Result<Endpoint, String> {
        let absolute = parse_url(url, provider)?;
        let origin_form = absolute
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
        Ok(Endpoint {
            absolute,
            origin_form,
        })
    }
}

fn header_map(pairs: &[(String, String)], provider: &str) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (k, v) in pairs {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("provider `{provider}`: `{k}` is not a valid header name"))?;
        let mut value = HeaderValue::from_str(v).map_err(|_| {
            format!("provider `{provider}`: the value of header `{k}` is not valid")
        })?;
        if name == AUTHORIZATION
            || matches!(name.as_str(), "x-api-key" | "api-key" | "x-goog-api-key")
        {
            value.set_sensitive(true);
        }
        map.insert(name, value);
    }
    Ok(map)
}

/// Adds `Host` to the headers every request clones when requests go out on the lane's own
/// HTTP/1.1 connections ([`crate::pool`]), whose requests must carry it. With `http2` the
/// connection may be HTTP/2, which carries the authority in `:authority` instead, and hyper-util's
/// client adds `Host` itself when the connection is HTTP/1.1. A `host` header from the config wins.
fn with_host(mut headers: HeaderMap, url: &Uri, http2: bool) -> HeaderMap {
    if http2 {
        return headers;
    }
    let Some(host) = url.host() else {
        return headers;
    };
    // as hyper-util writes it: the port only when it is not the scheme's default
    let default_port = if url.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let value = match url.port_u16() {
        Some(port) if port != default_port => HeaderValue::from_str(&format!("{host}:{port}")),
        _ => HeaderValue::from_str(host),
    };
    if let Ok(v) = value {
        headers.entry(http::header::HOST).or_insert(v);
    }
    headers
}

/// An account's request headers (`pairs`, with `Host` where its connections need it, and the
/// proxy's credentials when it forwards plain HTTP) and its transport to `url`. Without a `proxy`
/// setting the proxy comes from the process's environment.
fn connection(
    name: &str,
    pairs: &[(String, String)],
    url: &Uri,
    link: &Link<'_>,
) -> Result<(HeaderMap, Transport), String> {
    let err = |e: String| format!("provider `{name}`: {e}");
    let via = crate::proxy::resolve(url, link.proxy, &|k| std::env::var(k).ok()).map_err(err)?;
    if let Some(v) = &via {
        // the proxy's address only: its credentials are not part of `uri`
        tracing::info!(provider = name, proxy = %v.uri, "upstream connections go through a proxy");
    }
    let mut headers = with_host(header_map(pairs, name)?, url, link.http2);
    if url.scheme_str() == Some("http") {
        if let Some(auth) = via.as_ref().and_then(|v| v.auth.clone()) {
            headers.insert(http::header::PROXY_AUTHORIZATION, auth);
        }
    }
    let transport = Transport::new(url, link, via.as_ref()).map_err(err)?;
    Ok((headers, transport))
}

fn client(timeouts: &Timeouts) -> Result<HttpClient, String> {
    Ok(client_on(tls_connector(
        Tcp::Direct(http_connector(timeouts)),
        None,
        true,
    )?))
}

/// TCP connections: the connect timeout, no Nagle delay.
pub(crate) fn http_connector(timeouts: &Timeouts) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(timeouts.connect()));
    http.set_nodelay(true);
    http.enforce_http(false);
    http
}

/// The certificate authorities an HTTPS upstream's certificate must chain to: the public ones
/// (Mozilla's, as the `webpki-roots` crate ships them) and those in `ca_file` (PEM), if given.
pub fn root_store(ca_file: Option<&str>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let Some(path) = ca_file else {
        return Ok(roots);
    };
    let pem = std::fs::read(path).map_err(|e| format!("ca_file `{path}`: cannot read it: {e}"))?;
    let mut added = 0;
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|e| format!("ca_file `{path}`: not valid PEM: {e}"))?;
        roots.add(cert).map_err(|e| {
            format!(
                "ca_file `{path}`: certificate {} is not usable as an authority: {e}",
                i + 1
            )
        })?;
        added += 1;
    }
    if added == 0 {
        return Err(format!("ca_file `{path}` holds no PEM certificate"));
    }
    Ok(roots)
}

/// TLS to the authorities of [`root_store`] (session tickets cached, so reconnects are short).
fn tls_config(ca_file: Option<&str>) -> Result<rustls::ClientConfig, String> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("could not set up TLS: {e}"))?
    .with_root_certificates(root_store(ca_file)?)
    .with_no_client_auth())
}

/// TLS for `https://` upstreams over `tcp` (plain HTTP passes through): with `http2`, HTTP/2 or
/// HTTP/1.1 by ALPN (hyper-util's client); without, no ALPN, so HTTP/1.1 (the lane pools).
pub(crate) fn tls_connector(
    tcp: Tcp,
    ca_file: Option<&str>,
    http2: bool,
) -> Result<Connector, String> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(ca_file)?)
        .https_or_http()
        .enable_http1();
    Ok(if http2 {
        builder.enable_http2().wrap_connector(tcp)
    } else {
        builder.wrap_connector(tcp)
    })
}

pub(crate) fn client_on(connector: Connector) -> HttpClient {
    // An upstream's redirect is its answer (a redirect is never followed: it would resend the
    // provider key to another address).
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build(connector)
}

impl HttpProvider {
    /// `compatible`: an OpenAI-compatible server rather than OpenAI itself (spells `max_tokens`
    /// the older way, which every such server knows).
    pub fn openai(name: &str, c: &OpenAiConfig, compatible: bool) -> Result<Self, String> {
        let base = c
            .base_url
            .as_deref()
            .unwrap_or(OPENAI_BASE_URL)
            .trim_end_matches('/');
        let mut pairs: Vec<(String, String)> = Vec::new();
        if !c.api_key.is_none() {
            pairs.push((
                "authorization".into(),
                format!("Bearer {}", c.api_key.expose()),
            ));
        }
        if let Some(org) = &c.organization {
            pairs.push(("openai-organization".into(), org.clone()));
        }
        pairs.extend(c.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        let chat_url = Endpoint::parse(&format!("{base}/chat/completions"), name)?;
        let (headers, transport) = connection(
            name,
            &pairs,
            &chat_url.absolute,
            &Link::new(&c.timeouts, &c.ca_file, c.http2, &c.proxy),
        )?;
        Ok(HttpProvider {
            info: ProviderInfo {
                name: name.to_string(),
            },
            transport,
            chat_url,
            embeddings_url: Some(Endpoint::parse(&format!("{base}/embeddings"), name)?),
            count_url: None,
            headers,
            tokens: None,
            timeouts: c.timeouts,
            format: Format::OpenAi(openai::Dialect {
                legacy_max_tokens: compatible,
            }),
        })
    }

    pub fn anthropic(name: &str, c: &AnthropicConfig) -> Result<Self, String> {
        let base = c
            .base_url
            .as_deref()
            .unwrap_or(ANTHROPIC_BASE_URL)
            .trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        let mut pairs: Vec<(String, String)> = vec![(
            "anthropic-version".into(),
            c.version.clone().unwrap_or_else(|| "2023-06-01".into()),
        )];
        if !c.api_key.is_none() {
            pairs.push(("x-api-key".into(), c.api_key.expose().to_string()));
        }
        pairs.extend(c.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        let chat_url = Endpoint::parse(&format!("{base}/v1/messages"), name)?;
        let (headers, transport) = connection(
            name,
            &pairs,
            &chat_url.absolute,
            &Link::new(&c.timeouts, &c.ca_file, c.http2, &c.proxy),
        )?;
        Ok(HttpProvider {
            info: ProviderInfo {
                name: name.to_string(),
            },
            transport,
            chat_url,
            embeddings_url: None,
            count_url: Some(Endpoint::parse(
                &format!("{base}/v1/messages/count_tokens"),
                name,
            )?),
            headers,
            tokens: None,
            timeouts: c.timeouts,
            format: Format::Anthropic,
        })
    }

    /// A Bedrock account (the Converse API). `env` gives the credentials and region the account
    /// does not name itself ([`aws::credential`], [`aws::region`]).
    pub fn bedrock(name: &str, c: &BedrockConfig, env: EnvLookup) -> Result<Self, String> {
        let err = |e: String| format!("provider `{name}`: {e}");
        let region = aws::region(c, &*env);
        let base = c.endpoint(region.as_deref()).ok_or_else(|| {
            err("region is required (or AWS_REGION in the environment, or a base_url)".into())
        })?;
        let credential = aws::credential(c, &*env).map_err(err)?;
        let pairs: Vec<(String, String)> = c
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // every request's path names its model; the base is what connections are made to
        let base_url = Endpoint::parse(&format!("{base}/"), name)?;
        let (mut headers, transport) = connection(
            name,
            &pairs,
            &base_url.absolute,
            &Link::new(&c.timeouts, &c.ca_file, c.http2, &c.proxy),
        )?;
        // SigV4 needs a region even behind a base_url; a VPC endpoint's is the account's own
        let auth = aws::Auth::new(
            credential,
            region.unwrap_or_else(|| "us-east-1".into()),
            &mut headers,
            env,
        )
        .map_err(err)?;
        Ok(HttpProvider {
            info: ProviderInfo {
                name: name.to_string(),
            },
            transport,
            chat_url: base_url,
            embeddings_url: None,
            count_url: None,
            headers,
            tokens: None,
            timeouts: c.timeouts,
            format: Format::Bedrock {
                base,
                auth: Box::new(auth),
            },
        })
    }

    /// An Azure OpenAI resource: its v1 API (OpenAI's paths under `/openai/v1`, the deployment
    /// in the body's `model`), or with a dated `api_version` the deployment URLs.
    pub fn azure(name: &str, c: &AzureConfig, env: EnvLookup) -> Result<Self, String> {
        let err = |e: String| format!("provider `{name}`: {e}");
        let base = c
            .resource()
            .ok_or_else(|| err("base_url is required for this kind".into()))?
            .to_string();
        let tokens = match oauth::azure_source(c, &*env).map_err(err)? {
            Some(source) => Some(Box::new(oauth::Tokens::new(source, env).map_err(err)?)),
            None => None,
        };
        let mut pairs: Vec<(String, String)> = Vec::new();
        match c.azure_ad_token.as_ref().filter(|t| !t.is_none()) {
            // an Entra ID application's tokens go with each request
            _ if tokens.is_some() => {}
            Some(token) => {
                pairs.push(("authorization".into(), format!("Bearer {}", token.expose())))
            }
            None if !c.api_key.is_none() => {
                pairs.push(("api-key".into(), c.api_key.expose().to_string()))
            }
            None => {}
        }
        pairs.extend(c.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        let v1 = format!("{base}/openai/v1");
        let chat_url = Endpoint::parse(&format!("{v1}/chat/completions"), name)?;
        let (headers, transport) = connection(
            name,
            &pairs,
            &chat_url.absolute,
            &Link::new(&c.timeouts, &c.ca_file, c.http2, &c.proxy),
        )?;
        let (format, embeddings_url) = match c.dated_version() {
            None => (
                Format::OpenAi(openai::Dialect::default()),
                Some(Endpoint::parse(&format!("{v1}/embeddings"), name)?),
            ),
            Some(version) => (
                Format::AzureDeployments {
                    // versions before 2024-09-01 know only `max_tokens`
                    dialect: openai::Dialect {
                        legacy_max_tokens: version < "2024-09-01",
                    },
                    api_version: version.to_string(),
                    base,
                },
                None,
            ),
        };
        Ok(HttpProvider {
            info: ProviderInfo {
                name: name.to_string(),
            },
            transport,
            chat_url,
            embeddings_url,
            count_url: None,
            headers,
            tokens,
            timeouts: c.timeouts,
            format,
        })
    }

    /// A Gemini API (Google AI Studio) account.
    pub fn gemini(name: &str, c: &GeminiConfig) -> Result<Self, String> {
        let base = c
            .base_url
            .as_deref()
            .unwrap_or(GEMINI_BASE_URL)
            .trim_end_matches('/')
            .to_string();
        let mut pairs: Vec<(String, String)> = Vec::new();
        if !c.api_key.is_none() {
            pairs.push(("x-goog-api-key".into(), c.api_key.expose().to_string()));
        }
        pairs.extend(c.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        // every request's path names its model; the base is what connections are made to
        let base_url = Endpoint::parse(&format!("{base}/"), name)?;
        let (headers, transport) = connection(
            name,
            &pairs,
            &base_url.absolute,
            &Link::new(&c.timeouts, &c.ca_file, c.http2, &c.proxy),
        )?;
        Ok(HttpProvider {
            info: ProviderInfo {
                name: name.to_string(),
            },
            transport,
            chat_url: base_url,
            embeddings_url: None,
            count_url: None,
            headers,
            tokens: None,
            timeouts: c.timeouts,
            format: Format::Gemini { base },
        })
    }

    /// A Vertex AI account. `env` gives the credentials, project and location the account does
    /// not name itself ([`oauth::credentials`], [`oauth::project`], [`oauth::location`]).
    pub fn vertex(name: &str, c: &VertexConfig, env: EnvLookup) -> Result<Self, String> {
        let err = |e: String| format!("provider `{name}`: {e}");
        let (source, key_project) = oauth::credentials(c, &*env).map_err(err)?;
        let project = oauth::project(c, key_project, &*env).ok_or_else(|| {
            err(
                "project is required (or a key file that names one, or GOOGLE_CLOUD_PROJECT \
                 in the environment)"
                    .into(),
            )
        })?;
        let location = oauth::location(c, &*env);
        let host = match c.base_url.as_deref() {
            Some(u) => u.trim_end_matches('/').to_string(),
            None if location == "global" => "https://aiplatform.googleapis.com".to_string(),
            None => format!("https://{location}-aiplatform.googleapis.com"),
        };
        let base = format!(
            "{host}/v1/projects/{}/locations/{}",
            path_segment(&project),
            path_segment(&location)
        );
        let pairs: Vec<(String, String)> = c
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let base_url = Endpoint::parse(&format!("{host}/"), name)?;
        let (headers, transport) = connection(
            name,
            &pairs,
            &base_url.absolute,
            &Link::new(&c.timeouts, &c.ca_file, c.http2, &c.proxy),
        )?;
        Ok(HttpProvider {
            info: ProviderInfo {
                name: name.to_string(),
            },
            transport,
            chat_url: base_url,
            embeddings_url: None,
            count_url: None,
            headers,
            timeouts: c.timeouts,
            format: Format::Vertex { base },
            tokens: Some(Box::new(oauth::Tokens::new(source, env).map_err(err)?)),
        })
    }

    /// Bedrock's CountTokens for `model` (`None`: an inference profile's ARN, counted locally).
    async fn bedrock_count(
        &self,
        req: &ChatRequest,
        model: &str,
        base: &str,
    ) -> Result<Option<u64>, ProviderError> {
        let Some(counted) = bedrock::count_model(model) else {
            return Ok(None);
        };
        let body = bedrock::encode_count_tokens_request(req, counted, self.label(model))?;
        let url = format!("{base}{}", bedrock::count_path(counted));
        let url = Endpoint::parse(&url, &self.info.name).map_err(ProviderError::internal)?;
        let (resp, deadline) = self.send_to(&url, body, model, &[]).await?;
        let buf = self.read_body(resp, deadline, model).await?;
        bedrock::decode_count_tokens_response(&buf)
            .map(Some)
            .map_err(|mut e| {
                e.message = format!("{} (from {})", e.message, self.label(model));
                e
            })
    }

    /// Embeddings from a Bedrock embedding model through InvokeModel: one call per
    /// [`bedrock::Embedder::batch`] texts (Titan takes one text a call), at most
    /// [`BEDROCK_EMBED_CALLS`] at once, the vectors in input order and their tokens summed.
    async fn bedrock_embeddings(
        &self,
        req: tollway_core::EmbeddingsRequest,
        base: &str,
    ) -> Result<tollway_core::EmbeddingsResponse, ProviderError> {
        use futures_util::TryStreamExt;
        let model = req.model.as_str();
        let embedder = bedrock::Embedder::of(model)
            .ok_or_else(|| ProviderError::unsupported("embeddings", self.label(model)))?;
        let bodies = bedrock::encode_embeddings_requests(embedder, &req, self.label(model))?;
        let url = format!("{base}{}", bedrock::invoke_path(model));
        let url = Endpoint::parse(&url, &self.info.name).map_err(ProviderError::internal)?;
        let texts = req.input.chunks(embedder.batch()).map(<[String]>::len);
        let calls = bodies.into_iter().zip(texts).map(|(body, texts)| {
            let url = &url;
            async move {
                let (resp, deadline) = self.send_to(url, body, model, &[]).await?;
                let counted = resp
                    .headers()
                    .get("x-amzn-bedrock-input-token-count")
                    .and_then(|v| v.to_str().ok()?.parse().ok());
                let buf = self.read_body(resp, deadline, model).await?;
                bedrock::decode_embeddings_response(embedder, &buf, texts, counted)
            }
        });
        let parts: Vec<_> = futures_util::stream::iter(calls)
            .buffered(BEDROCK_EMBED_CALLS)
            .try_collect()
            .await
            .map_err(|mut e: ProviderError| {
                if e.kind == ErrorKind::InvalidResponse {
                    e.message = format!("{} (from {})", e.message, self.label(model));
                }
                e
            })?;
        let mut data = Vec::with_capacity(req.input.len());
        let mut tokens = 0u64;
        for (vectors, n) in parts {
            data.extend(vectors);
            tokens = tokens.saturating_add(n);
        }
        Ok(tollway_core::EmbeddingsResponse {
            model: req.model,
            data,
            usage: Usage {
                input_tokens: tokens,
                ..Usage::default()
            },
        })
    }

    /// `provider/model`, for error messages (written only when one is).
    fn label<'a>(&'a self, model: &'a str) -> Label<'a> {
        Label::new(&self.info.name, model)
    }

    fn encode(&self, req: &ChatRequest, target: Target<'_>) -> Result<Vec<u8>, ProviderError> {
        let label = self.label(target.model);
        match self.format.codec(target.model) {
            Codec::OpenAi(dialect) => openai::encode_request_as(req, target, label, dialect),
            Codec::Anthropic => anthropic::encode_request_as(req, target, label),
            Codec::ClaudeOnVertex => anthropic::encode_request_vertex(req, target, label),
            Codec::Bedrock => bedrock::encode_request_as(req, label),
            Codec::Gemini => gemini::encode_request_as(req, target.model, label),
        }
    }

    /// Sends the request and waits (bounded by the first-byte timeout) for status and headers.
    /// Error statuses are read (bounded) and classified here. Returns the response and the
    /// deadline of the whole request (the total timeout), which the body must also meet.
    async fn send(
        &self,
        body: Vec<u8>,
        target: Target<'_>,
        betas: &[String],
    ) -> Result<(Response, Instant), ProviderError> {
        let Some(url) = self.format.url_for(target) else {
            return self
                .send_to(&self.chat_url, body, target.model, betas)
                .await;
        };
        // the model (and for some, whether the answer streams) is in the path
        let url = Endpoint::parse(&url, &self.info.name).map_err(|e| {
            ProviderError::invalid(format!(
                "the model id `{}` does not make a URL: {e}",
                target.model
            ))
        })?;
        self.send_to(&url, body, target.model, betas).await
    }

    /// [`send`](Self::send) to `url`. `betas`: the client's Anthropic beta features, sent in
    /// `anthropic-beta` (after the account's own) to Anthropic-format upstreams.
    async fn send_to(
        &self,
        url: &Endpoint,
        body: Vec<u8>,
        model: &str,
        betas: &[String],
    ) -> Result<(Response, Instant), ProviderError> {
        let deadline = Instant::now() + self.timeouts.total();
        let wait = self.timeouts.first_byte().min(self.timeouts.total());
        let mut headers = self.headers_with(betas);
        if let Format::Bedrock { auth, .. } = &self.format {
            auth.sign(
                &url.absolute.to_string(),
                &mut headers,
                &body,
                std::time::SystemTime::now(),
            )
            .await
            // the account's credentials (a fetch from the machine, or keys that cannot sign):
            // its configuration's failure, which fails over
            .map_err(|e| {
                ProviderError::new(
                    ErrorKind::UpstreamConfig,
                    format!("provider {}: {e}", self.label(model)),
                )
            })?;
        }
        let mut token = None;
        if let Some(tokens) = &self.tokens {
            let t = tokens.header().await.map_err(|e| {
                ProviderError::new(
                    ErrorKind::UpstreamConfig,
                    format!("provider {} has no access token: {e}", self.label(model)),
                )
            })?;
            headers.insert(AUTHORIZATION, t.clone());
            token = Some(t);
        }
        let resp = match tokio::time::timeout(wait, self.request(url, body, headers)).await {
            Err(_) => {
                return Err(ProviderError::new(
                    ErrorKind::Timeout,
                    format!(
                        "provider {} did not answer within {} ms",
                        self.label(model),
                        wait.as_millis()
                    ),
                ))
            }
            Ok(Err(e)) => return Err(self.transport_error(&*e, model)),
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok((resp, deadline));
        }
        if let (401, Some(tokens), Some(t)) = (status, &self.tokens, &token) {
            // a token refused before its time (revoked): the next attempt gets a new one
            tokens.invalidate(t);
        }
        let retry_after = retry_after(resp.headers());
        let error_type = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = tokio::time::timeout_at(deadline, read_bounded(resp, MAX_ERROR_BODY, false))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let mut err = match self.format.codec(model) {
            Codec::OpenAi(_) => openai::decode_error(status, &body, retry_after),
            Codec::Anthropic => anthropic::decode_error(status, &body, retry_after),
            Codec::Bedrock => {
                bedrock::decode_error(status, error_type.as_deref(), &body, retry_after)
            }
            // Claude on Vertex answers model errors in Anthropic's shape, and Google's front
            // (quotas, credentials) in its own
            Codec::ClaudeOnVertex if anthropic_shaped(&body) => {
                anthropic::decode_error(status, &body, retry_after)
            }
            Codec::ClaudeOnVertex | Codec::Gemini => {
                gemini::decode_error(status, &body, retry_after)
            }
        };
        err.message = format!("{} (from {})", err.message, self.label(model));
        Err(err)
    }

    /// The account's headers, with `betas` added to `anthropic-beta` for an Anthropic-format
    /// upstream (a beta that is not a valid header value is left out).
    fn headers_with(&self, betas: &[String]) -> HeaderMap {
        let mut headers = self.headers.clone();
        if betas.is_empty() || !matches!(self.format, Format::Anthropic) {
            return headers;
        }
        let mut all: Vec<&str> = headers
            .get("anthropic-beta")
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|b| !b.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        for b in betas {
            if !all.contains(&b.as_str()) {
                all.push(b);
            }
        }
        if let Ok(v) = http::HeaderValue::from_str(&all.join(",")) {
            headers.insert("anthropic-beta", v);
        }
        headers
    }

    /// Sends a POST of `body` with `headers` on the calling lane's connections; status and
    /// headers, or why not.
    async fn request(
        &self,
        url: &Endpoint,
        body: Vec<u8>,
        headers: HeaderMap,
    ) -> Result<Response, Box<dyn std::error::Error + Send + Sync>> {
        match &self.transport {
            Transport::Pooled {
                pools,
                absolute_form,
            } => {
                let uri = if *absolute_form {
                    &url.absolute
                } else {
                    &url.origin_form
                };
                let req = post(uri.clone(), with_traceparent(headers), body);
                match pools.pick().send(req).await {
                    Ok(resp) => Ok(resp),
                    // hyper's own error, so that its causes read as they always have
                    Err(SendError::Http(e)) => Err(Box::new(e)),
                    Err(e) => Err(Box::new(e)),
                }
            }
            Transport::Client(clients) => {
                let req = post(url.absolute.clone(), with_traceparent(headers), body);
                let resp = clients.pick().request(req).await?;
                Ok(resp.map(PooledBody::unpooled))
            }
        }
    }

    fn transport_error(&self, e: &(dyn std::error::Error + 'static), model: &str) -> ProviderError {
        let label = self.label(model);
        let cause = root_cause(e);
        let connect = e
            .downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(|e| e.is_connect())
            || matches!(e.downcast_ref::<SendError>(), Some(SendError::Connect(_)));
        if timed_out(e) {
            ProviderError::new(
                ErrorKind::Timeout,
                format!("provider {label} timed out: {cause}"),
            )
        } else if connect {
            ProviderError::new(
                ErrorKind::Connection,
                format!("could not connect to provider {label}: {cause}"),
            )
        } else {
            ProviderError::new(
                ErrorKind::Connection,
                format!("connection to provider {label} failed: {cause}"),
            )
        }
    }

    /// Reads a whole answer, within the request's deadline and [`MAX_UPSTREAM_BODY`].
    async fn read_body(
        &self,
        resp: Response,
        deadline: Instant,
        model: &str,
    ) -> Result<Vec<u8>, ProviderError> {
        match tokio::time::timeout_at(deadline, read_bounded(resp, MAX_UPSTREAM_BODY, true)).await {
            Err(_) => Err(ProviderError::new(
                ErrorKind::Timeout,
                format!(
                    "provider {} did not finish its answer within the total timeout of {} ms",
                    self.label(model),
                    self.timeouts.total_ms
                ),
            )),
            Ok(Err(ReadError::TooLarge)) => Err(ProviderError::new(
                ErrorKind::InvalidResponse,
                format!(
                    "provider {} sent an answer over {MAX_UPSTREAM_BODY} bytes",
                    self.label(model)
                ),
            )),
            Ok(Err(ReadError::Body(e))) => Err(self.transport_error(&e, model)),
            Ok(Ok(buf)) => Ok(buf),
        }
    }
}

/// The innermost error's text (hyper's own messages are generic: "client error (Connect)").
/// A Vertex AI deployment's model: whether it is Claude (Anthropic's publisher), and its id
/// without a `google/` or `anthropic/` publisher prefix (as Vertex's model garden writes them).
fn vertex_model(model: &str) -> (bool, &str) {
    if let Some(id) = model.strip_prefix("anthropic/") {
        (true, id)
    } else if let Some(id) = model.strip_prefix("google/") {
        (false, id)
    } else {
        (model.starts_with("claude"), model)
    }
}

/// Whether an error body is in Anthropic's shape (`{"type": "error", ...}`).
fn anthropic_shaped(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .is_some_and(|v| v.get("type").and_then(serde_json::Value::as_str) == Some("error"))
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let Some(mut cur) = e.source() else {
        return e.to_string();
    };
    while let Some(next) = cur.source() {
        cur = next;
    }
    format!("{e}: {cur}")
}

/// Whether an error, or one of its causes, is a timeout.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            || err
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

tokio::task_local! {
    /// The W3C `traceparent` of the upstream attempt being made, when the gateway traces the
    /// request: every upstream request sent while it is set carries it.
    pub static TRACEPARENT: http::HeaderValue;
}

/// `headers` with the attempt's `traceparent`, when there is one.
fn with_traceparent(mut headers: HeaderMap) -> HeaderMap {
    if let Ok(tp) = TRACEPARENT.try_with(Clone::clone) {
        headers.insert(http::HeaderName::from_static("traceparent"), tp);
    }
    headers
}

/// A POST of `body` to `uri` with `headers`.
fn post(uri: Uri, headers: HeaderMap, body: Vec<u8>) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::new(Full::new(Bytes::from(body)));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    req
}

fn parse_url(url: &str, provider: &str) -> Result<Uri, String> {
    let bad = |why: &str| format!("provider `{provider}`: base_url `{url}` is not a URL: {why}");
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.authority().is_some() => Ok(uri),
        Some("http" | "https") => Err(bad("it has no host")),
        _ => Err(bad("it must start with http:// or https://")),
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs.min(86_400.0)));
        }
    }
    None
}

enum ReadError {
    TooLarge,
    Body(hyper::Error),
}

/// Reads a body up to `limit` bytes: past it, the rest is dropped (`strict: false`, for error
/// bodies) or the read fails (`strict: true`).
async fn read_bounded(resp: Response, limit: usize, strict: bool) -> Result<Vec<u8>, ReadError> {
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ReadError::Body)?;
        let Ok(chunk) = frame.into_data() else {
            continue; // trailers
        };
        if out.len() + chunk.len() > limit {
            if strict {
                return Err(ReadError::TooLarge);
            }
            out.extend_from_slice(&chunk[..limit - out.len()]);
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Awaits `fut`, adding the time it took to `waited` (an upstream's answer, a backoff...).
pub async fn timed<F: std::future::Future>(waited: &Waited, fut: F) -> F::Output {
    let started = Instant::now();
    let out = fut.await;
    waited.add(started.elapsed());
    out
}

impl HttpProvider {
    /// A Bedrock answer's id: its `x-amzn-requestid` header (other formats carry theirs in the
    /// body).
    fn request_id(&self, resp: &Response) -> String {
        if !matches!(self.format, Format::Bedrock { .. }) {
            return String::new();
        }
        resp.headers()
            .get("x-amzn-requestid")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
}

impl Provider for HttpProvider {
    fn info(&self) -> &ProviderInfo {
        &self.info
    }

    fn embeddings(
        &self,
        req: tollway_core::EmbeddingsRequest,
    ) -> BoxFuture<'_, Result<tollway_core::EmbeddingsResponse, ProviderError>> {
        Box::pin(async move {
            if let Format::Bedrock { base, .. } = &self.format {
                return self.bedrock_embeddings(req, base).await;
            }
            let deployment_url;
            let url = match (&self.embeddings_url, &self.format) {
                (Some(url), _) => url,
                (
                    None,
                    Format::AzureDeployments {
                        base, api_version, ..
                    },
                ) => {
                    let url = format!(
                        "{base}/openai/deployments/{}/embeddings?api-version={}",
                        path_segment(&req.model),
                        path_segment(api_version)
                    );
                    deployment_url = Endpoint::parse(&url, &self.info.name).map_err(|e| {
                        ProviderError::invalid(format!(
                            "the deployment `{}` does not make a URL: {e}",
                            req.model
                        ))
                    })?;
                    &deployment_url
                }
                (None, Format::Gemini { base }) => {
                    let model = req.model.strip_prefix("models/").unwrap_or(&req.model);
                    let url = format!("{base}/models/{}:batchEmbedContents", path_segment(model));
                    deployment_url =
                        Endpoint::parse(&url, &self.info.name).map_err(ProviderError::internal)?;
                    &deployment_url
                }
                (None, Format::Vertex { base, .. }) if !self.format.vertex_claude(&req.model) => {
                    let model = vertex_model(&req.model).1;
                    let url = format!(
                        "{base}/publishers/google/models/{}:predict",
                        path_segment(model)
                    );
                    deployment_url =
                        Endpoint::parse(&url, &self.info.name).map_err(ProviderError::internal)?;
                    &deployment_url
                }
                (None, _) => {
                    return Err(ProviderError::unsupported(
                        "embeddings",
                        self.label(&req.model),
                    ))
                }
            };
            let (body, google) = match (&self.embeddings_url, &self.format) {
                (None, Format::Gemini { .. }) => (
                    gemini::encode_embeddings_request(&req, &req.model),
                    Some(false),
                ),
                (None, Format::Vertex { .. }) => {
                    (gemini::encode_vertex_embeddings_request(&req), Some(true))
                }
                _ => (openai::encode_embeddings_request(&req), None),
            };
            let (resp, deadline) = self.send_to(url, body, &req.model, &[]).await?;
            let buf = self.read_body(resp, deadline, &req.model).await?;
            match google {
                Some(vertex) => {
                    gemini::decode_embeddings_response(&buf, &req.model, req.input.len(), vertex)
                }
                None => openai::decode_embeddings_response(&buf),
            }
            .map_err(|mut e| {
                e.message = format!("{} (from {})", e.message, self.label(&req.model));
                e
            })
        })
    }

    fn count_tokens<'a>(
        &'a self,
        req: &'a ChatRequest,
        model: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, ProviderError>> {
        Box::pin(async move {
            if let Format::Bedrock { base, .. } = &self.format {
                return self.bedrock_count(req, model, base).await;
            }
            let vertex_url;
            let url = match (&self.count_url, &self.format) {
                (Some(url), _) => url,
                // Claude on Vertex AI: Anthropic's count, the model in the body
                (None, Format::Vertex { base, .. }) if self.format.vertex_claude(model) => {
                    let url = format!("{base}/publishers/anthropic/models/count-tokens:rawPredict");
                    vertex_url =
                        Endpoint::parse(&url, &self.info.name).map_err(ProviderError::internal)?;
                    &vertex_url
                }
                _ => return Ok(None),
            };
            let target = Target {
                // Vertex's count names the model without a publisher prefix
                model: match self.format {
                    Format::Vertex { .. } => vertex_model(model).1,
                    _ => model,
                },
                stream: false,
            };
            let body = anthropic::encode_count_tokens_request(req, target, self.label(model))?;
            let (resp, deadline) = self.send_to(url, body, model, &req.betas).await?;
            let buf = self.read_body(resp, deadline, model).await?;
            anthropic::decode_count_tokens_response(&buf)
                .map(Some)
                .map_err(|mut e| {
                    e.message = format!("{} (from {})", e.message, self.label(model));
                    e
                })
        })
    }

    fn chat<'a>(
        &'a self,
        req: &'a ChatRequest,
        model: &'a str,
        waited: &'a Waited,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(async move {
            let target = Target {
                model,
                stream: false,
            };
            let body = self.encode(req, target)?;
            let (buf, request_id) = timed(waited, async {
                let (resp, deadline) = self.send(body, target, &req.betas).await?;
                let request_id = self.request_id(&resp);
                Ok((self.read_body(resp, deadline, model).await?, request_id))
            })
            .await?;
            let decoded = match self.format.codec(model) {
                Codec::OpenAi(_) => openai::decode_response(&buf),
                Codec::Anthropic | Codec::ClaudeOnVertex => anthropic::decode_response(&buf),
                Codec::Bedrock => bedrock::decode_response(&buf, &request_id, model),
                Codec::Gemini => gemini::decode_response(&buf, model),
            };
            decoded.map_err(|mut e| {
                e.message = format!("{} (from {})", e.message, self.label(model));
                e
            })
        })
    }

    fn chat_stream<'a>(
        &'a self,
        req: &'a ChatRequest,
        model: &'a str,
        waited: &'a Waited,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let target = Target {
                model,
                stream: true,
            };
            let body = self.encode(req, target)?;
            let (resp, deadline) = timed(waited, self.send(body, target, &req.betas)).await?;
            let label = self.label(model);
            let decoder = match self.format.codec(model) {
                Codec::OpenAi(_) => {
                    Decoder::OpenAi(SseParser::default(), openai::StreamDecoder::new())
                }
                Codec::Anthropic | Codec::ClaudeOnVertex => {
                    Decoder::Anthropic(SseParser::default(), anthropic::StreamDecoder::new())
                }
                Codec::Gemini => {
                    Decoder::Gemini(SseParser::default(), gemini::StreamDecoder::new(model))
                }
                Codec::Bedrock => Decoder::Bedrock(
                    EventStreamParser::new(),
                    bedrock::StreamDecoder::new(&self.request_id(&resp), model),
                ),
            };
            let bytes = BodyStream::new(resp.into_body()).filter_map(|frame| {
                std::future::ready(match frame {
                    Ok(f) => f.into_data().ok().map(Ok),
                    Err(e) => Some(Err(e)),
                })
            });
            let state = UpstreamStream {
                bytes: Box::pin(bytes),
                decoder,
                pending: VecDeque::new(),
                decoded: Vec::new(),
                unread: Bytes::new(),
                idle: self.timeouts.idle(),
                idle_ms: self.timeouts.idle_ms,
                deadline,
                total_ms: self.timeouts.total_ms,
                label: label.to_string(),
                done: false,
                waiting: None,
                timer: Box::pin(tokio::time::sleep_until(deadline)),
            };
            let stream: EventStream = Box::pin(state);
            Ok(stream)
        })
    }
}

/// An upstream stream's framing and its events' decoder.
enum Decoder {
    OpenAi(SseParser, openai::StreamDecoder),
    Anthropic(SseParser, anthropic::StreamDecoder),
    /// AWS event stream framing (Bedrock's ConverseStream).
    Bedrock(EventStreamParser, bedrock::StreamDecoder),
    Gemini(SseParser, gemini::StreamDecoder),
}

type ByteStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, hyper::Error>> + Send>>;

/// An upstream stream being decoded: bytes → frames (SSE events, or AWS event stream messages) →
/// canonical events, as they arrive.
struct UpstreamStream {
    bytes: ByteStream,
    decoder: Decoder,
    pending: VecDeque<Result<StreamEvent, ProviderError>>,
    /// The events of the upstream event being decoded (empty between events; kept for its
    /// buffer).
    decoded: Vec<StreamEvent>,
    /// Bytes received and not parsed yet. A read often brings many events at once (the upstream
    /// wrote a burst, or this lane was busy); they are parsed one event at a time as the client's
    /// body asks for them, so the first goes out before the last is even decoded.
    unread: Bytes,
    idle: Duration,
    idle_ms: u64,
    /// The end of the total timeout.
    deadline: Instant,
    total_ms: u64,
    label: String,
    done: bool,
    /// When the current wait for bytes times out for idleness (`None`: not waiting).
    waiting: Option<Instant>,
    /// Fires at the earlier of that and the deadline.
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl UpstreamStream {
    fn queue(&mut self, r: Result<Vec<StreamEvent>, ProviderError>) {
        match r {
            Ok(events) => self.pending.extend(events.into_iter().map(Ok)),
            Err(mut e) => {
                e.message = format!("{} (from {})", e.message, self.label);
                self.pending.push_back(Err(e));
                self.done = true;
            }
        }
    }

    /// Parses unread bytes up to the next complete event (or all of them when none completes)
    /// and decodes it.
    fn feed_one(&mut self) {
        let mut rest = &self.unread[..];
        // decoded into one scratch list per stream (no `Vec` per event)
        let mut events = std::mem::take(&mut self.decoded);
        let r = match &mut self.decoder {
            Decoder::OpenAi(p, d) => {
                let parsed = p.next(&mut rest);
                sse_step(p, parsed, &mut events, |ev, out| d.feed_into(ev, out))
            }
            Decoder::Anthropic(p, d) => {
                let parsed = p.next(&mut rest);
                sse_step(p, parsed, &mut events, |ev, out| d.feed_into(ev, out))
            }
            Decoder::Gemini(p, d) => {
                let parsed = p.next(&mut rest);
                sse_step(p, parsed, &mut events, |ev, out| d.feed_into(ev, out))
            }
            Decoder::Bedrock(p, d) => match p.next(&mut rest) {
                Ok(Some(frame)) => d.feed_into(&frame, &mut events),
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            },
        };
        let consumed = self.unread.len() - rest.len();
        if consumed == self.unread.len() {
            // let go of the read buffer as soon as it is used up (a held stream idles here)
            self.unread = Bytes::new();
        } else {
            self.unread.advance(consumed);
        }
        self.take(r, events);
    }

    /// Queues what one step decoded, or its error (what was decoded before an error is dropped
    /// with the event).
    fn take(&mut self, r: Result<(), ProviderError>, mut events: Vec<StreamEvent>) {
        match r {
            Ok(()) => self.pending.extend(events.drain(..).map(Ok)),
            Err(e) => {
                events.clear();
                self.queue(Err(e));
            }
        }
        self.decoded = events;
    }

    fn end(&mut self) {
        let mut events = std::mem::take(&mut self.decoded);
        let r = match &mut self.decoder {
            Decoder::OpenAi(p, d) => {
                let parsed = p.finish();
                sse_step(p, parsed, &mut events, |ev, out| d.feed_into(ev, out))
            }
            Decoder::Anthropic(p, d) => {
                let parsed = p.finish();
                sse_step(p, parsed, &mut events, |ev, out| d.feed_into(ev, out))
            }
            Decoder::Gemini(p, d) => {
                let parsed = p.finish();
                sse_step(p, parsed, &mut events, |ev, out| d.feed_into(ev, out))
            }
            Decoder::Bedrock(p, _) => p.finish(),
        };
        self.take(r, events);
        if !self.done {
            let r = match &mut self.decoder {
                Decoder::OpenAi(_, d) => d.finish(),
                Decoder::Anthropic(_, d) => d.finish(),
                Decoder::Bedrock(_, d) => d.finish(),
                Decoder::Gemini(_, d) => d.finish(),
            };
            self.queue(r);
        }
        self.done = true;
    }
}

/// Decodes what an SSE parser gave (an event, nothing yet, or an error) with `feed`, and hands
/// the event's buffers back to the parser.
fn sse_step(
    parser: &mut SseParser,
    parsed: Result<Option<SseEvent>, ProviderError>,
    out: &mut Vec<StreamEvent>,
    feed: impl FnOnce(&SseEvent, &mut Vec<StreamEvent>) -> Result<(), ProviderError>,
) -> Result<(), ProviderError> {
    match parsed? {
        Some(ev) => {
            let r = feed(&ev, out);
            parser.recycle(ev);
            r
        }
        None => Ok(()),
    }
}

/// Events as the client's body asks for them. A hand-written `poll_next` rather than an
/// `unfold`: an unfold moves the whole state into a new future and back for every event, which
/// was ~950 instructions of `memcpy` per streamed chunk (callgrind, the two streams of a request
/// together).
impl Stream for UpstreamStream {
    type Item = Result<StreamEvent, ProviderError>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let s = self.get_mut();
        loop {
            if let Some(item) = s.pending.pop_front() {
                return Poll::Ready(Some(item));
            }
            if s.done {
                return Poll::Ready(None);
            }
            if !s.unread.is_empty() {
                s.feed_one();
                continue;
            }
            match s.bytes.poll_next_unpin(cx) {
                Poll::Ready(None) => {
                    s.waiting = None;
                    s.end();
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    s.waiting = None;
                    s.unread = chunk;
                }
                Poll::Ready(Some(Err(e))) => {
                    s.done = true;
                    let kind = if timed_out(&e) {
                        ErrorKind::Timeout
                    } else {
                        ErrorKind::Connection
                    };
                    let cause = root_cause(&e);
                    let err = ProviderError::new(
                        kind,
                        format!("stream from provider {} broke: {cause}", s.label),
                    );
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Pending => {
                    // Nothing to read: the wait may last `idle`, and not past the deadline. The
                    // timer is set once per wait, when it begins.
                    let idle_end = match s.waiting {
                        Some(end) => end,
                        None => {
                            let end = Instant::now() + s.idle;
                            s.waiting = Some(end);
                            s.timer.as_mut().reset(end.min(s.deadline));
                            end
                        }
                    };
                    if std::future::Future::poll(s.timer.as_mut(), cx).is_pending() {
                        return Poll::Pending;
                    }
                    s.done = true;
                    let message = if s.deadline <= idle_end {
                        format!(
                            "stream from provider {} exceeded the total timeout of {} ms",
                            s.label, s.total_ms
                        )
                    } else {
                        format!(
                            "provider {} sent nothing for {} ms mid-stream",
                            s.label, s.idle_ms
                        )
                    };
                    return Poll::Ready(Some(Err(ProviderError::new(ErrorKind::Timeout, message))));
                }
            }
        }
    }
}

/// Reads one environment variable (the process's, or a test's).
pub(crate) type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// JSON POSTs for the gateway's own notifications (budget-alert webhooks), on the same client
/// stack as the providers (pooled, rustls, redirects not followed), through the environment's
/// proxy when it names one for the webhook's URL (`proxy.rs`; a `CONNECT` tunnel for
/// `http://` and `https://` alike).
pub struct JsonPoster {
    /// Straight to the webhook; reused across deliveries.
    client: HttpClient,
    /// `content-type: application/json`.
    headers: HeaderMap,
    timeouts: Timeouts,
    timeout: Duration,
    env: EnvLookup,
}

impl JsonPoster {
    /// `timeout` bounds each delivery: connecting, the answer, and reading its (discarded) body.
    pub fn new(timeout: Duration) -> Result<Self, String> {
        JsonPoster::with_env(timeout, Arc::new(|k: &str| std::env::var(k).ok()))
    }

    /// As [`JsonPoster::new`], with the proxy variables read through `env`.
    pub(crate) fn with_env(timeout: Duration, env: EnvLookup) -> Result<Self, String> {
        let timeouts = Timeouts {
            connect_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            ..Timeouts::default()
        };
        Ok(JsonPoster {
            client: client(&timeouts)?,
            headers: header_map(&[], "webhook")?,
            timeouts,
            timeout,
            env,
        })
    }

    /// Posts `body` to `url`; the answer's status, or why there is none.
    pub async fn post(&self, url: &str, body: &serde_json::Value) -> Result<u16, String> {
        let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let (status, _) = self.send(url, self.headers.clone(), bytes).await?;
        Ok(status)
    }

    /// Posts `bytes` (JSON) to `url` with `extra` headers besides the content type (a trace
    /// collector's API key, say); the answer's status, or why there is none.
    pub async fn post_with(
        &self,
        url: &str,
        extra: &HeaderMap,
        bytes: Vec<u8>,
    ) -> Result<u16, String> {
        let mut headers = self.headers.clone();
        for (k, v) in extra {
            headers.insert(k.clone(), v.clone());
        }
        let (status, _) = self.send(url, headers, bytes).await?;
        Ok(status)
    }

    /// Posts a form (`application/x-www-form-urlencoded`) to `url`: the answer's status and
    /// body (up to 64 KB), or why there is none.
    pub(crate) async fn post_form(
        &self,
        url: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), String> {
        let mut headers = self.headers.clone();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        self.send(url, headers, body).await
    }

    /// PUTs an empty body to `url` with `headers`, never through a proxy (a machine's own
    /// metadata service): the answer's status and body (up to 64 KB), or why there is none.
    pub(crate) async fn put_direct(
        &self,
        url: &str,
        headers: HeaderMap,
    ) -> Result<(u16, Vec<u8>), String> {
        self.request(http::Method::PUT, url, headers, Vec::new(), false)
            .await
    }

    /// GETs `url` with `headers`, never through a proxy (a machine's own metadata server): the
    /// answer's status and body (up to 64 KB), or why there is none.
    pub(crate) async fn get_direct(
        &self,
        url: &str,
        headers: HeaderMap,
    ) -> Result<(u16, Vec<u8>), String> {
        self.request(http::Method::GET, url, headers, Vec::new(), false)
            .await
    }

    async fn send(
        &self,
        url: &str,
        headers: HeaderMap,
        bytes: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), String> {
        self.request(http::Method::POST, url, headers, bytes, true)
            .await
    }

    async fn request(
        &self,
        method: http::Method,
        url: &str,
        headers: HeaderMap,
        bytes: Vec<u8>,
        proxied: bool,
    ) -> Result<(u16, Vec<u8>), String> {
        let uri = parse_url(url, "webhook")?;
        let via = if proxied {
            crate::proxy::resolve(&uri, None, &*self.env)?
        } else {
            None
        };
        // through a proxy: a client of its own for this delivery (webhooks are rare)
        let tunneled = match &via {
            Some(v) => Some(client_on(tls_connector(
                Tcp::new(http_connector(&self.timeouts), Some(v)),
                None,
                true,
            )?)),
            None => None,
        };
        let client = tunneled.as_ref().unwrap_or(&self.client);
        let mut req = post(uri, headers, bytes);
        *req.method_mut() = method;
        let deadline = Instant::now() + self.timeout;
        let resp = match tokio::time::timeout_at(deadline, client.request(req)).await {
            Err(_) => return Err(format!("no answer within {} ms", self.timeout.as_millis())),
            Ok(Err(e)) => return Err(root_cause(&e)),
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        // read the answer (so the connection can be reused too)
        let resp = resp.map(PooledBody::unpooled);
        let body = tokio::time::timeout_at(deadline, read_bounded(resp, MAX_ERROR_BODY, false))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TlsUpstream;
    use tollway_core::{ChatRequest, Provider, Waited};

    #[test]
    fn urls_name_models_deployments_and_publishers() {
        let url = |p: &HttpProvider, model: &str, stream: bool| {
            p.format
                .url_for(Target { model, stream })
                .unwrap_or_default()
        };
        let gemini = HttpProvider::gemini(
            "g",
            &GeminiConfig {
                api_key: crate::Secret::new("k"),
                ..GeminiConfig::default()
            },
        )
        .expect("gemini");
        assert_eq!(
            url(&gemini, "models/gemini-2.5-flash", true),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        let vertex = HttpProvider::vertex(
            "v",
            &VertexConfig {
                project: Some("my-project".into()),
                access_token: Some(crate::Secret::new("t")),
                ..VertexConfig::default()
            },
            Arc::new(|_: &str| None),
        )
        .expect("vertex");
        let base =
            "https://aiplatform.googleapis.com/v1/projects/my-project/locations/global/publishers";
        assert_eq!(
            url(&vertex, "google/gemini-2.5-pro", false),
            format!("{base}/google/models/gemini-2.5-pro:generateContent")
        );
        assert_eq!(
            url(&vertex, "anthropic/claude-opus-4-5@20251101", true),
            format!("{base}/anthropic/models/claude-opus-4-5%4020251101:streamRawPredict")
        );
        assert!(vertex.format.vertex_claude("claude-haiku-4-5"));
        assert!(!vertex.format.vertex_claude("gemini-2.5-pro"));
        let regional = HttpProvider::vertex(
            "v",
            &VertexConfig {
                project: Some("p".into()),
                location: Some("europe-west4".into()),
                access_token: Some(crate::Secret::new("t")),
                ..VertexConfig::default()
            },
            Arc::new(|_: &str| None),
        )
        .expect("vertex");
        assert!(url(&regional, "gemini-2.5-pro", false).starts_with(
            "https://europe-west4-aiplatform.googleapis.com/v1/projects/p/locations/europe-west4/"
        ));
        let azure = HttpProvider::azure(
            "a",
            &AzureConfig {
                base_url: Some("https://r.openai.azure.com/".into()),
                api_key: crate::Secret::new("k"),
                api_version: Some("2025-01-01-preview".into()),
                ..AzureConfig::default()
            },
            Arc::new(|_: &str| None),
        )
        .expect("azure");
        assert_eq!(
            url(&azure, "my gpt", false),
            "https://r.openai.azure.com/openai/deployments/my%20gpt/chat/completions?api-version=2025-01-01-preview"
        );
        // the key is a sensitive header, never shown by a Debug of the map
        let shown = format!("{:?}", azure.headers);
        assert!(!shown.contains("\"k\""), "{shown}");
    }

    fn upstream(bytes: ByteStream, idle: Duration, total: Duration) -> UpstreamStream {
        let deadline = Instant::now() + total;
        UpstreamStream {
            bytes,
            decoder: Decoder::OpenAi(SseParser::default(), openai::StreamDecoder::new()),
            pending: VecDeque::new(),
            decoded: Vec::new(),
            unread: Bytes::new(),
            idle,
            idle_ms: idle.as_millis() as u64,
            deadline,
            total_ms: total.as_millis() as u64,
            label: "p/m".into(),
            done: false,
            waiting: None,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// `n` text events, one every `gap`, then the finish and `[DONE]`; or, with `stall`, silence
    /// after them.
    fn spaced(n: usize, gap: Duration, stall: bool) -> ByteStream {
        Box::pin(futures_util::stream::unfold(0, move |i| async move {
            tokio::time::sleep(gap).await;
            let chunk = match i.cmp(&n) {
                std::cmp::Ordering::Less => {
                    format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{i}\"}}}}]}}\n\n")
                }
                std::cmp::Ordering::Equal if !stall => concat!(
                    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
                    "data: [DONE]\n\n"
                )
                .to_string(),
                std::cmp::Ordering::Equal => std::future::pending().await,
                std::cmp::Ordering::Greater => return None,
            };
            Some((Ok(Bytes::from(chunk)), i + 1))
        }))
    }

    /// Each wait for bytes gets the whole idle allowance: events 50 ms apart pass an idle
    /// timeout of 80 ms however long the stream lasts, until the total timeout. The clock is
    /// tokio's paused test clock: nothing here depends on the machine's speed.
    #[tokio::test(start_paused = true)]
    async fn streams_time_out_when_idle_or_past_their_deadline() {
        let texts = |events: &[Result<StreamEvent, ProviderError>]| {
            events
                .iter()
                .filter_map(|e| match e {
                    Ok(StreamEvent::TextDelta { text, .. }) => Some(text.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let ms = Duration::from_millis;
        // 10 events over 500 ms: never idle for 80 ms, done well before 10 s
        let all: Vec<_> = upstream(spaced(10, ms(50), false), ms(80), ms(10_000))
            .collect()
            .await;
        assert_eq!(texts(&all).len(), 10);
        assert!(all.iter().all(Result::is_ok), "{:?}", all.last());
        // silence after 3 events: the idle timeout, named as such
        let stalled: Vec<_> = upstream(spaced(3, ms(50), true), ms(80), ms(10_000))
            .collect()
            .await;
        assert_eq!(texts(&stalled), ["0", "1", "2"]);
        // the last event is a timeout error; its message
        let timeout = |events: &[Result<StreamEvent, ProviderError>]| {
            let e = events
                .last()
                .expect("events")
                .as_ref()
                .expect_err("a timeout");
            assert_eq!(e.kind, ErrorKind::Timeout);
            e.message.clone()
        };
        let m = timeout(&stalled);
        assert!(m.contains("sent nothing for 80 ms"), "{m}");
        // steady events past the total timeout: that one, named as such
        let long: Vec<_> = upstream(spaced(100, ms(50), false), ms(80), ms(300))
            .collect()
            .await;
        let m = timeout(&long);
        assert!(m.contains("exceeded the total timeout of 300 ms"), "{m}");
        assert!((4..=6).contains(&texts(&long).len()), "{long:?}");
    }

    /// A read that brings three events is parsed one event at a time: when the first is handed
    /// on, the other two are still unparsed bytes, and all three arrive in order.
    #[tokio::test]
    async fn a_burst_is_handed_on_event_by_event() {
        let burst = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"c\"}}]}\n\n",
            "data: [DONE]\n\n",
        );
        let bytes: ByteStream = Box::pin(futures_util::stream::iter([Ok(Bytes::from_static(
            burst.as_bytes(),
        ))]));
        let mut s = upstream(bytes, Duration::from_secs(5), Duration::from_secs(5));
        let first = s.next().await.expect("an event");
        assert!(first.is_ok());
        assert!(
            s.unread.len() > burst.len() / 2,
            "the rest of the burst is not parsed yet ({} bytes left)",
            s.unread.len()
        );
        let mut texts = Vec::new();
        let mut events = vec![first];
        while let Some(e) = s.next().await {
            events.push(e);
        }
        for e in events {
            if let Ok(StreamEvent::TextDelta { text, .. }) = e {
                texts.push(text);
            }
        }
        assert_eq!(texts, ["a", "b", "c"]);
    }

    #[test]
    fn http1_upstreams_get_their_host_header_once_built() {
        let h2 = |url: &str, pairs: &[(String, String)], http2: bool| {
            let uri: Uri = url.parse().expect("uri");
            with_host(header_map(pairs, "p").expect("headers"), &uri, http2)
        };
        let h = |url: &str, pairs: &[(String, String)]| h2(url, pairs, false);
        let host = |m: &HeaderMap| {
            m.get(http::header::HOST)
                .map(|v| v.to_str().expect("ascii").to_string())
        };
        for (url, expected) in [
            (
                "http://127.0.0.1:8080/v1/chat/completions",
                Some("127.0.0.1:8080"),
            ),
            (
                "http://models.internal/v1/messages",
                Some("models.internal"),
            ),
            ("http://models.internal:80/v1", Some("models.internal")),
            ("http://[::1]:9000/v1", Some("[::1]:9000")),
            (
                "https://api.openai.com/v1/chat/completions",
                Some("api.openai.com"),
            ),
            (
                "https://api.anthropic.com:443/v1",
                Some("api.anthropic.com"),
            ),
            ("https://llm.internal:8443/v1", Some("llm.internal:8443")),
        ] {
            assert_eq!(host(&h(url, &[])).as_deref(), expected, "{url}");
        }
        // with HTTP/2 offered the connection may be HTTP/2 (`:authority`): left to hyper-util
        assert_eq!(host(&h2("https://api.openai.com/v1", &[], true)), None);
        // the operator's own Host header wins
        let own = [("host".to_string(), "llm.example".to_string())];
        let m = h("http://10.0.0.5:8000/v1", &own);
        assert_eq!(m.get_all(http::header::HOST).iter().count(), 1);
        assert_eq!(host(&m).as_deref(), Some("llm.example"));
    }

    async fn mock() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(tollway_mock::serve(listener, std::future::pending()));
        addr
    }

    fn provider(addr: std::net::SocketAddr, timeouts: serde_json::Value) -> HttpProvider {
        let c: OpenAiConfig = serde_json::from_value(serde_json::json!({
            "api_key": "none",
            "base_url": format!("http://{addr}/v1"),
            "timeouts": timeouts,
        }))
        .expect("config");
        HttpProvider::openai("up", &c, true).expect("provider")
    }

    #[tokio::test]
    async fn answers_streams_and_the_total_timeout() {
        let addr = mock().await;
        let p = provider(addr, serde_json::json!({"total_ms": 400}));
        // a plain answer, then a stream, well within the bounds
        let r = p
            .chat(
                &ChatRequest::simple("gpt-4.1?tokens=5", "hi"),
                "gpt-4.1?tokens=5",
                &Waited::default(),
            )
            .await
            .expect("answer");
        assert_eq!(r.usage.output_tokens, 5);
        let mut s = p
            .chat_stream(
                &ChatRequest::simple("gpt-4.1?tokens=5", "hi"),
                "gpt-4.1?tokens=5",
                &Waited::default(),
            )
            .await
            .expect("stream");
        let mut n = 0;
        while let Some(ev) = s.next().await {
            ev.expect("event");
            n += 1;
        }
        assert!(n >= 5, "{n} events");
        // a stream of 40 tokens 20 ms apart (800 ms) runs into the 400 ms total
        let mut s = p
            .chat_stream(
                &ChatRequest::simple("gpt-4.1?tokens=40&tpt_ms=20", "hi"),
                "gpt-4.1?tokens=40&tpt_ms=20",
                &Waited::default(),
            )
            .await
            .expect("stream starts");
        let mut last = None;
        while let Some(ev) = s.next().await {
            if let Err(e) = ev {
                last = Some(e);
            }
        }
        let e = last.expect("the stream ends in an error");
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert!(
            e.message.contains("total timeout of 400 ms"),
            "{}",
            e.message
        );
        // a non-streamed answer whose headers come later than the total: the wait for them is
        // bounded by the total, not by the (longer) first-byte timeout
        let e = p
            .chat(
                &ChatRequest::simple("gpt-4.1?ttft_ms=800", "hi"),
                "gpt-4.1?ttft_ms=800",
                &Waited::default(),
            )
            .await
            .expect_err("too slow");
        assert_eq!(e.kind, ErrorKind::Timeout, "{}", e.message);
        assert!(
            e.message.contains("did not answer within 400 ms"),
            "{}",
            e.message
        );
    }

    /// The time from sending a request to its answer is added to the caller's `Waited`, for
    /// answers, stream heads and failures alike (lower bounds only: the mock's own delays).
    #[tokio::test]
    async fn the_wait_on_the_upstream_is_added_up() {
        let addr = mock().await;
        let p = provider(addr, serde_json::json!({"total_ms": 400}));
        let waited = Waited::default();
        let slow = "gpt-4.1?ttft_ms=60&tokens=3";
        p.chat(&ChatRequest::simple(slow, "hi"), slow, &waited)
            .await
            .expect("answer");
        let one = waited.total();
        assert!(one >= Duration::from_millis(60), "{one:?}");
        p.chat(&ChatRequest::simple(slow, "hi"), slow, &waited)
            .await
            .expect("answer");
        assert!(waited.total() >= one + Duration::from_millis(60));
        // a failure: the whole wait until the total timeout gave up
        let before = waited.total();
        let late = "gpt-4.1?ttft_ms=800";
        p.chat(&ChatRequest::simple(late, "hi"), late, &waited)
            .await
            .expect_err("too slow");
        assert!(waited.total() >= before + Duration::from_millis(400));
        // a stream: the wait for its head
        let streamed = Waited::default();
        let model = "gpt-4.1?tokens=3";
        let mut s = p
            .chat_stream(&ChatRequest::simple(model, "hi"), model, &streamed)
            .await
            .expect("stream");
        assert!(streamed.total() > Duration::ZERO);
        while let Some(ev) = s.next().await {
            ev.expect("event");
        }
    }

    /// An upstream that sends its status and headers at once, then stalls in the body: the total
    /// timeout ends the read of the answer.
    #[tokio::test]
    async fn the_total_timeout_bounds_a_stalled_answer_body() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 64 * 1024];
            let _ = sock.read(&mut buf).await;
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"id\":")
                .await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let p = provider(addr, serde_json::json!({"total_ms": 300}));
        let e = p
            .chat(&ChatRequest::simple("m", "hi"), "m", &Waited::default())
            .await
            .expect_err("the body never completes");
        assert_eq!(e.kind, ErrorKind::Timeout, "{}", e.message);
        assert!(
            e.message
                .contains("did not finish its answer within the total timeout of 300 ms"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn unreachable_and_bad_urls_are_classified() {
        // nothing listens on port 9
        let dead = "127.0.0.1:9".parse().expect("addr");
        let p = provider(dead, serde_json::json!({"connect_ms": 500}));
        let e = p
            .chat(&ChatRequest::simple("m", "hi"), "m", &Waited::default())
            .await
            .expect_err("refused");
        assert_eq!(e.kind, ErrorKind::Connection);
        assert!(
            e.message.contains("could not connect to provider up/m"),
            "{}",
            e.message
        );
        for (url, why) in [
            ("ftp://x/v1", "http:// or https://"),
            ("not a url", "not a URL"),
        ] {
            let c: OpenAiConfig =
                serde_json::from_value(serde_json::json!({"api_key": "none", "base_url": url}))
                    .expect("config");
            let e = HttpProvider::openai("up", &c, true).err().expect("refused");
            assert!(e.contains(why), "{e}");
        }
    }

    #[tokio::test]
    async fn the_json_poster_reports_statuses_and_failures() {
        let addr = mock().await;
        let poster = JsonPoster::new(Duration::from_secs(2)).expect("poster");
        // the mock answers an unknown path with 404, a chat completion with 200
        let s = poster
            .post(
                &format!("http://{addr}/nowhere"),
                &serde_json::json!({"a": 1}),
            )
            .await
            .expect("status");
        assert_eq!(s, 404);
        let s = poster
            .post(
                &format!("http://{addr}/v1/chat/completions"),
                &serde_json::json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await
            .expect("status");
        assert_eq!(s, 200);
        let e = poster
            .post("http://127.0.0.1:9/hook", &serde_json::json!({}))
            .await
            .expect_err("refused");
        assert!(e.to_lowercase().contains("connection refused"), "{e}");
        let e = poster
            .post("mailto:ops@example.com", &serde_json::json!({}))
            .await
            .expect_err("not http");
        assert!(e.contains("http://"), "{e}");
    }

    #[tokio::test]
    async fn https_upstreams_with_a_private_ca_over_http1_or_http2_when_asked() {
        use tollway_mock::tls::Alpn;
        // (what the upstream offers, whether the account offers HTTP/2, what they speak)
        for (alpn, http2, version) in [
            (Alpn::Both, false, "HTTP/1.1"),
            (Alpn::Http1, false, "HTTP/1.1"),
            (Alpn::Both, true, "HTTP/2.0"),
            (Alpn::Http1, true, "HTTP/1.1"),
        ] {
            let up = TlsUpstream::start(alpn, &format!("{alpn:?}-{http2}")).await;
            let p = up.provider(Some(&up.ca_file), http2);
            let model = "gpt-4.1?tokens=5";
            let r = p
                .chat(&ChatRequest::simple(model, "hi"), model, &Waited::default())
                .await
                .expect("answer");
            assert_eq!(r.usage.output_tokens, 5, "{version}");
            let s = crate::testing::stream(&p, "gpt-4.1?tokens=7")
                .await
                .expect("stream");
            assert!(s.finished, "{version}: the stream ended without its finish");
            let text = s.text;
            assert_eq!(text.split_whitespace().count(), 7, "{version}: {text:?}");
            let log = up.requests().await;
            assert_eq!(log.len(), 2, "{log:?}");
            for req in &log {
                assert_eq!(req["version"], version, "{req}");
                assert_eq!(req["headers"]["authorization"], "Bearer sk-tls");
                // HTTP/2 carries the authority as `:authority`, HTTP/1.1 as one Host header
                let host = req["headers"]["host"].as_str();
                let authority = up.mock.url().trim_start_matches("https://").to_string();
                match version {
                    "HTTP/1.1" => assert_eq!(host, Some(authority.as_str()), "{req}"),
                    _ => assert!(host.is_none_or(|h| h == authority), "{req}"),
                }
            }
        }
    }

    #[tokio::test]
    async fn requests_in_flight_over_https_are_not_capped_by_an_http2_stream_limit() {
        // the upstream offers HTTP/2 with at most 4 streams per connection; the account's
        // default, HTTP/1.1, holds 8 streams open at once, one connection each
        let up = TlsUpstream::start_limited(tollway_mock::tls::Alpn::Both, Some(4), "limit").await;
        let p = up.provider(Some(&up.ca_file), false);
        let model = "gpt-4.1?tokens=200&tpt_ms=50";
        let mut streams = Vec::new();
        for _ in 0..8 {
            let mut s = p
                .chat_stream(&ChatRequest::simple(model, "hi"), model, &Waited::default())
                .await
                .expect("stream");
            // its first event: the upstream is producing it
            s.next().await.expect("an event").expect("not an error");
            streams.push(s);
        }
        // each lasts 10 s: all 8 are still being produced
        let stats = up.get("/_mock/stats").await;
        assert_eq!(stats["in_flight"], 8, "{stats}");
        assert_eq!(stats["streams_started"], 8, "{stats}");
        let log = up.requests().await;
        assert!(log.iter().all(|r| r["version"] == "HTTP/1.1"), "{log:?}");
    }

    #[tokio::test]
    async fn an_upstream_certificate_from_an_unknown_authority_is_a_connection_error() {
        for http2 in [false, true] {
            let up = TlsUpstream::start(tollway_mock::tls::Alpn::Both, &format!("unknown-{http2}"))
                .await;
            // the public roots only
            let e = up
                .provider(None, http2)
                .chat(&ChatRequest::simple("m", "hi"), "m", &Waited::default())
                .await
                .expect_err("untrusted");
            assert_eq!(e.kind, ErrorKind::Connection);
            assert!(
                e.message.contains("could not connect to provider up/m")
                    && e.message.contains("UnknownIssuer"),
                "http2 {http2}: {}",
                e.message
            );
            assert!(up.requests().await.is_empty());
        }
    }

    #[test]
    fn ca_files_that_cannot_serve_are_named() {
        let dir = std::env::temp_dir().join(format!("tollway-ca-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).expect("write");
            p.to_string_lossy().into_owned()
        };
        let certs = tollway_mock::tls::TestCerts::generate().expect("certificates");
        let missing = dir.join("missing.pem").to_string_lossy().into_owned();
        let empty = write("empty.pem", "no certificate here\n");
        let key_only = write("key.pem", &certs.key_pem);
        let broken = write(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
        );
        let garbage = write(
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        for (path, why) in [
            (&missing, "cannot read it"),
            (&empty, "holds no PEM certificate"),
            (&key_only, "holds no PEM certificate"),
            (&broken, "not valid PEM"),
            (&garbage, "certificate 1 is not usable as an authority"),
        ] {
            let e = root_store(Some(path)).expect_err("refused");
            assert!(e.contains(why) && e.contains(path.as_str()), "{path}: {e}");
            // the provider is not built, and says which one
            let c: OpenAiConfig = serde_json::from_value(serde_json::json!({
                "base_url": "https://models.internal/v1", "ca_file": path,
            }))
            .expect("config");
            let e = HttpProvider::openai("up", &c, true).err().expect("refused");
            assert!(e.starts_with("provider `up`: ") && e.contains(why), "{e}");
        }
        // a good file adds to the public roots
        let good = write("ca.pem", &certs.ca_pem);
        let public = root_store(None).expect("public roots").len();
        assert_eq!(root_store(Some(&good)).expect("roots").len(), public + 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
