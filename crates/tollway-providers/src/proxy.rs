//! Egress through an HTTP proxy, as company networks require: which proxy an account's
//! connections take (its `proxy` setting, or the environment's `HTTPS_PROXY` / `HTTP_PROXY` /
//! `ALL_PROXY` and `NO_PROXY`), and the TCP connector that reaches an upstream through it.
//!
//! - An `https://` upstream is reached through a `CONNECT` tunnel, and TLS runs inside it, so the
//!   proxy sees only the host name.
//! - An `http://` upstream is forwarded: requests go to the proxy in absolute form
//!   (`POST http://host/v1/... HTTP/1.1`), as HTTP proxies expect for plain HTTP.
//! - Credentials in the proxy's URL (`http://user:password@proxy:3128`) become a
//!   `Proxy-Authorization: Basic` header. They never appear in messages: [`mask`] hides them.
//! - Proxies from the environment never apply to loopback upstreams (a model server on the same
//!   machine), whatever `NO_PROXY` says; an account's own `proxy` applies to any upstream.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Uri};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tower_service::Service;

/// The proxy an account's connections go through.
#[derive(Clone, Debug)]
pub(crate) struct Via {
    /// `http://host:port`, without credentials.
    pub uri: Uri,
    /// `Proxy-Authorization`, from the URL's credentials (marked sensitive).
    pub auth: Option<HeaderValue>,
}

/// The environment variables read when an account sets no `proxy`, in order of precedence for
/// each scheme (as curl and most HTTP clients read them).
const ENV_HTTPS: [&str; 2] = ["HTTPS_PROXY", "https_proxy"];
const ENV_HTTP: [&str; 2] = ["HTTP_PROXY", "http_proxy"];
const ENV_ALL: [&str; 2] = ["ALL_PROXY", "all_proxy"];
const ENV_NO: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// Which proxy the account whose upstream is `url` uses: its own `setting` (`none`, or a proxy
/// URL), or, without one, the one `env` names for the upstream's scheme unless `NO_PROXY`
/// exempts the host or the host is loopback.
pub(crate) fn resolve(
    url: &Uri,
    setting: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Via>, String> {
    match setting.map(str::trim) {
        Some("none") => Ok(None),
        Some(own) => {
            check(own).map_err(|e| format!("proxy `{}`: {e}", mask(own)))?;
            Ok(intercept(
                Matcher::builder().all(own.to_string()).build(),
                url,
            ))
        }
        None => {
            if is_loopback(url) {
                return Ok(None);
            }
            let first = |names: &[&'static str]| {
                names
                    .iter()
                    .find_map(|n| env(n).filter(|v| !v.is_empty()).map(|v| (names[0], v)))
            };
            // the variable this upstream's scheme reads, else ALL_PROXY
            let chosen = match url.scheme_str() {
                Some("https") => first(&ENV_HTTPS),
                Some("http") => first(&ENV_HTTP),
                _ => None,
            }
            .or_else(|| first(&ENV_ALL));
            let Some((name, value)) = chosen else {
                return Ok(None);
            };
            let no = first(&ENV_NO).map(|(_, v)| v).unwrap_or_default();
            // NO_PROXY exempts the host: the variable is not used, whatever it holds
            let probe = Matcher::builder()
                .all("http://probe:1".to_string())
                .no(no.clone())
                .build();
            if probe.intercept(url).is_none() {
                return Ok(None);
            }
            check(&value).map_err(|e| {
                format!(
                    "{name} `{}` in the environment: {e}; set the account's `proxy` (a URL, or `none`) to override it",
                    mask(&value)
                )
            })?;
            Ok(intercept(Matcher::builder().all(value).no(no).build(), url))
        }
    }
}

fn intercept(matcher: Matcher, url: &Uri) -> Option<Via> {
    matcher.intercept(url).map(|i| Via {
        uri: i.uri().clone(),
        auth: i.basic_auth().cloned().map(|mut v| {
            v.set_sensitive(true);
            v
        }),
    })
}

/// A proxy URL this gateway can use: `http://`, with a host (the scheme may be left out).
fn check(value: &str) -> Result<(), String> {
    let uri: Uri = value
        .parse()
        .map_err(|_| "not a URL (expected http://host:port)".to_string())?;
    match uri.scheme_str() {
        None | Some("http") => {}
        Some(other) => {
            return Err(format!(
                "`{other}://` proxies are not supported (only http://, whose CONNECT tunnels carry TLS to the upstream)"
            ))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("no host (expected http://host:port)".into());
    }
    Ok(())
}

fn is_loopback(url: &Uri) -> bool {
    match url.host() {
        Some("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// `value` with any credentials in it replaced by `***`, for messages.
pub(crate) fn mask(value: &str) -> String {
    let (scheme, rest) = match value.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, value),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_string(),
    };
    match scheme {
        Some(s) => format!("{s}://{authority}{path}"),
        None => format!("{authority}{path}"),
    }
}

/// TCP to the upstream, straight or through a proxy's `CONNECT` tunnel: what TLS (or plain
/// HTTP/1.1) runs over.
#[derive(Clone)]
pub(crate) enum Tcp {
    Direct(HttpConnector),
    Tunnel(Tunnel<HttpConnector>),
}

impl Tcp {
    /// Through `via`'s tunnel, or straight when there is none.
    pub(crate) fn new(http: HttpConnector, via: Option<&Via>) -> Tcp {
        match via {
            None => Tcp::Direct(http),
            Some(v) => {
                let tunnel = Tunnel::new(v.uri.clone(), http);
                Tcp::Tunnel(match &v.auth {
                    Some(auth) => tunnel.with_auth(auth.clone()),
                    None => tunnel,
                })
            }
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Service<Uri> for Tcp {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = BoxError;
    // boxed: connecting is rare, and the two connectors' futures differ
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Tcp::Direct(c) => c.poll_ready(cx).map_err(Into::into),
            Tcp::Tunnel(c) => c.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        match self {
            Tcp::Direct(c) => {
                let f = c.call(dst);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
            Tcp::Tunnel(c) => {
                let f = c.call(with_default_port(dst));
                Box::pin(async move { f.await.map_err(Into::into) })
            }
        }
    }
}

/// `dst` with port 80 written out for a plain-HTTP URL that names none: hyper-util's tunnel asks
/// the proxy for port 443 whenever the URL has no port.
fn with_default_port(dst: Uri) -> Uri {
    if dst.port().is_some() || dst.scheme_str() != Some("http") {
        return dst;
    }
    let Some(host) = dst.host() else {
        return dst;
    };
    Uri::builder()
        .scheme("http")
        .authority(format!("{host}:80"))
        .path_and_query("/")
        .build()
        .unwrap_or(dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_string())
        }
    }

    fn via(url: &str, setting: Option<&str>, vars: &[(&str, &str)]) -> Option<String> {
        let url: Uri = url.parse().expect("url");
        resolve(&url, setting, &env(vars))
            .expect("resolves")
            .map(|v| v.uri.to_string())
    }

    #[test]
    fn the_environment_names_a_proxy_per_scheme_with_exemptions() {
        let vars = [
            ("HTTPS_PROXY", "http://secure-proxy:3128"),
            ("http_proxy", "plain-proxy:8080"),
            ("NO_PROXY", "internal.example, 10.0.0.0/8"),
        ];
        let p = |url: &str| via(url, None, &vars);
        assert_eq!(
            p("https://api.openai.com/v1").as_deref(),
            Some("http://secure-proxy:3128/")
        );
        assert_eq!(
            p("http://models.lan:8000/v1").as_deref(),
            Some("http://plain-proxy:8080/")
        );
        // NO_PROXY: a domain and its subdomains, a network
        assert_eq!(p("https://llm.internal.example/v1"), None);
        assert_eq!(p("http://10.1.2.3:8000/v1"), None);
        // loopback is never proxied from the environment
        for url in [
            "http://127.0.0.1:8000/v1",
            "http://localhost:11434/v1",
            "https://[::1]:8443/v1",
        ] {
            assert_eq!(p(url), None, "{url}");
        }
        // ALL_PROXY when the scheme has none; nothing set, no proxy
        let all = [("ALL_PROXY", "http://everything:3128")];
        assert_eq!(
            via("http://models.lan/v1", None, &all).as_deref(),
            Some("http://everything:3128/")
        );
        assert_eq!(via("https://api.anthropic.com", None, &[]), None);
        // only the variable an upstream reads is checked: a SOCKS ALL_PROXY (for other tools)
        // does not matter beside HTTPS_PROXY, nor to a host NO_PROXY exempts
        let mixed = [
            ("ALL_PROXY", "socks5://other:1080"),
            ("HTTPS_PROXY", "http://secure-proxy:3128"),
            ("NO_PROXY", "internal.example"),
        ];
        assert_eq!(
            via("https://api.openai.com/v1", None, &mixed).as_deref(),
            Some("http://secure-proxy:3128/")
        );
        assert_eq!(via("http://models.internal.example/v1", None, &mixed), None);
    }

    #[test]
    fn an_accounts_own_setting_wins_and_carries_credentials_unseen() {
        let vars = [("HTTPS_PROXY", "http://env-proxy:3128")];
        assert_eq!(via("https://api.openai.com/v1", Some("none"), &vars), None);
        let url: Uri = "http://127.0.0.1:8000/v1".parse().expect("url");
        let v = resolve(
            &url,
            Some("http://bob:s3cr%40t@own-proxy:3128"),
            &env(&vars),
        )
        .expect("resolves")
        .expect("a proxy, loopback or not");
        assert_eq!(v.uri.to_string(), "http://own-proxy:3128/");
        let auth = v.auth.expect("credentials");
        assert!(auth.is_sensitive());
        // base64("bob:s3cr@t")
        assert_eq!(auth.to_str().expect("ascii"), "Basic Ym9iOnMzY3JAdA==");
    }

    #[test]
    fn unusable_proxies_are_named_without_their_credentials() {
        let url: Uri = "https://api.openai.com/v1".parse().expect("url");
        for (setting, vars, why) in [
            (
                Some("https://bob:pw@proxy:443"),
                vec![],
                "proxy `https://***@proxy:443`",
            ),
            (
                Some("socks5://proxy:1080"),
                vec![],
                "`socks5://` proxies are not supported",
            ),
            (Some("http://"), vec![], "not a URL"),
            (
                None,
                vec![("HTTPS_PROXY", "socks5://bob:pw@proxy:1080")],
                "HTTPS_PROXY `socks5://***@proxy:1080`",
            ),
        ] {
            let e = resolve(&url, setting, &env(&vars)).expect_err("refused");
            assert!(e.contains(why), "{e}");
            assert!(!e.contains("pw"), "{e}");
        }
        assert_eq!(mask("http://u:p@h:1/x"), "http://***@h:1/x");
        assert_eq!(mask("h:1"), "h:1");
    }
    use crate::testing::{TestProxy, TlsUpstream};
    use tollway_core::{ChatRequest, ErrorKind, Provider, Waited};

    /// A chat and a 5-token stream through `p`.
    async fn chat_and_stream(p: &crate::HttpProvider, what: &str) {
        let r = p
            .chat(
                &ChatRequest::simple("gpt-4.1?tokens=3", "hi"),
                "gpt-4.1?tokens=3",
                &Waited::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: {}", e.message));
        assert_eq!(r.usage.output_tokens, 3, "{what}");
        let s = crate::testing::stream(p, "gpt-4.1?tokens=5")
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(s.deltas, 5, "{what}");
    }

    #[tokio::test]
    async fn https_upstreams_are_reached_through_a_connect_tunnel_with_credentials() {
        let proxy = TestProxy::start(Some("Basic Ym9iOnB3")).await;
        for http2 in [false, true] {
            let up =
                TlsUpstream::start(tollway_mock::tls::Alpn::Both, &format!("tunnel-{http2}")).await;
            let p = up.provider_via(Some(&up.ca_file), http2, Some(&proxy.url(Some("bob:pw"))));
            chat_and_stream(&p, &format!("http2 {http2}")).await;
            let authority = up.mock.url().trim_start_matches("https://").to_string();
            let tunnels: Vec<_> = proxy
                .seen()
                .into_iter()
                .filter(|(m, t, _)| m == "CONNECT" && *t == authority)
                .collect();
            assert!(!tunnels.is_empty(), "{:?}", proxy.seen());
            assert!(
                tunnels
                    .iter()
                    .all(|(_, _, a)| a.as_deref() == Some("Basic Ym9iOnB3")),
                "{tunnels:?}"
            );
            // inside the tunnel the upstream sees the request, and not the proxy's credentials
            let log = up.requests().await;
            assert_eq!(log.len(), 2, "{log:?}");
            assert!(
                log.iter()
                    .all(|r| r["headers"]["proxy-authorization"].is_null()),
                "{log:?}"
            );
            assert!(log
                .iter()
                .all(|r| r["headers"]["authorization"] == "Bearer sk-tls"));
        }
    }

    #[tokio::test]
    async fn plain_http_upstreams_are_forwarded_in_absolute_form() {
        let proxy = TestProxy::start(Some("Basic Ym9iOnB3")).await;
        let mock = tollway_mock::MockServer::start().await.expect("mock");
        let c: crate::OpenAiConfig = serde_json::from_value(serde_json::json!({
            "api_key": "none",
            "base_url": format!("{}/v1", mock.url()),
            "proxy": proxy.url(Some("bob:pw")),
        }))
        .expect("config");
        let p = crate::HttpProvider::openai("up", &c, true).expect("provider");
        chat_and_stream(&p, "forwarded").await;
        let seen = proxy.seen();
        let want = format!("{}/v1/chat/completions", mock.url());
        assert!(!seen.is_empty());
        for (method, target, auth) in &seen {
            assert_eq!((method.as_str(), target.as_str()), ("POST", want.as_str()));
            assert_eq!(auth.as_deref(), Some("Basic Ym9iOnB3"));
        }
    }

    #[tokio::test]
    async fn a_proxy_that_refuses_is_a_connection_error_and_none_bypasses_it() {
        let proxy = TestProxy::start(Some("Basic Ym9iOnB3")).await;
        let up = TlsUpstream::start(tollway_mock::tls::Alpn::Both, "refused").await;
        for (http2, credentials) in [(false, None), (false, Some("bob:wrong")), (true, None)] {
            let e = up
                .provider_via(Some(&up.ca_file), http2, Some(&proxy.url(credentials)))
                .chat(&ChatRequest::simple("m", "hi"), "m", &Waited::default())
                .await
                .expect_err("refused by the proxy");
            assert_eq!(e.kind, ErrorKind::Connection);
            assert!(
                e.message.contains("could not connect to provider up/m")
                    && e.message.contains("proxy authorization required"),
                "{}",
                e.message
            );
            assert!(!e.message.contains("wrong"), "{}", e.message);
        }
        assert!(up.requests().await.is_empty());
        // `none`: straight to the upstream, the proxy never asked
        let before = proxy.connections.load(std::sync::atomic::Ordering::SeqCst);
        let p = up.provider_via(Some(&up.ca_file), false, Some("none"));
        chat_and_stream(&p, "none").await;
        assert_eq!(
            proxy.connections.load(std::sync::atomic::Ordering::SeqCst),
            before
        );
    }

    #[tokio::test]
    async fn webhooks_go_through_the_environments_proxy() {
        let mock = tollway_mock::MockServer::start().await.expect("mock");
        // a name only the proxy can reach (it sends every tunnel to the mock)
        let proxy = TestProxy::start_aliasing(None, Some(mock.addr())).await;
        let proxy_url = proxy.url(None);
        let env: crate::http::EnvLookup =
            std::sync::Arc::new(move |k| (k == "HTTP_PROXY").then(|| proxy_url.clone()));
        let poster = crate::http::JsonPoster::with_env(std::time::Duration::from_secs(5), env)
            .expect("poster");
        // with a port, and without one: then the tunnel is asked for port 80, not 443
        for url in [
            "http://hooks.example.test:8080/v1/chat/completions",
            "http://hooks.example.test/v1/chat/completions",
        ] {
            let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "budget"}]});
            let status = poster.post(url, &body).await.expect("delivered");
            assert_eq!(status, 200, "{url}");
        }
        let asked: Vec<String> = proxy
            .seen()
            .into_iter()
            .map(|(m, t, a)| format!("{m} {t} {a:?}"))
            .collect();
        assert_eq!(
            asked,
            [
                "CONNECT hooks.example.test:8080 None",
                "CONNECT hooks.example.test:80 None"
            ]
        );
        // a loopback webhook goes straight, the proxy untouched
        let status = poster
            .post(&format!("{}/nowhere", mock.url()), &serde_json::json!({}))
            .await
            .expect("delivered");
        assert_eq!(status, 404);
        assert_eq!(proxy.seen().len(), 2);
    }
}
