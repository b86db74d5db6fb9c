//! Test support shared by the crate's tests: the mock over TLS on a throwaway authority, and a
//! small HTTP proxy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{OpenAiConfig, Timeouts};
use crate::http::{client_on, http_connector, tls_connector, HttpProvider};
use crate::proxy::Tcp;

/// A mock over TLS on a throwaway authority, and that authority's certificate in a PEM file.
pub(crate) struct TlsUpstream {
    pub mock: tollway_mock::MockServer,
    dir: std::path::PathBuf,
    pub ca_file: String,
}

impl TlsUpstream {
    pub async fn start(alpn: tollway_mock::tls::Alpn, tag: &str) -> TlsUpstream {
        TlsUpstream::start_limited(alpn, None, tag).await
    }

    /// At most `http2_max_streams` concurrent HTTP/2 streams per connection.
    pub async fn start_limited(
        alpn: tollway_mock::tls::Alpn,
        http2_max_streams: Option<u32>,
        tag: &str,
    ) -> TlsUpstream {
        let certs = tollway_mock::tls::TestCerts::generate().expect("certificates");
        let mock = tollway_mock::MockServer::start_tls_limited(
            certs.server_config(alpn).expect("TLS"),
            http2_max_streams,
        )
        .await
        .expect("mock");
        let dir = std::env::temp_dir().join(format!("tollway-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, &certs.ca_pem).expect("write CA");
        TlsUpstream {
            mock,
            ca_file: ca_file.to_string_lossy().into_owned(),
            dir,
        }
    }

    pub fn provider(&self, ca_file: Option<&str>, http2: bool) -> HttpProvider {
        self.provider_via(ca_file, http2, None)
    }

    /// With the account's `proxy` setting.
    pub fn provider_via(
        &self,
        ca_file: Option<&str>,
        http2: bool,
        proxy: Option<&str>,
    ) -> HttpProvider {
        let c: OpenAiConfig = serde_json::from_value(serde_json::json!({
            "api_key": "sk-tls",
            "base_url": format!("{}/v1", self.mock.url()),
            "ca_file": ca_file,
            "http2": http2,
            "proxy": proxy,
        }))
        .expect("config");
        HttpProvider::openai("up", &c, true).expect("provider")
    }

    /// The mock's request log.
    pub async fn requests(&self) -> Vec<serde_json::Value> {
        match self.get("/_mock/requests").await {
            serde_json::Value::Array(log) => log,
            other => panic!("not a log: {other}"),
        }
    }

    /// A GET of one of the mock's own routes, over TLS.
    pub async fn get(&self, path: &str) -> serde_json::Value {
        let client = client_on(
            tls_connector(
                Tcp::Direct(http_connector(&Timeouts::default())),
                Some(&self.ca_file),
                true,
            )
            .expect("connector"),
        );
        let uri: Uri = format!("{}{path}", self.mock.url()).parse().expect("uri");
        let req = http::Request::get(uri)
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = client.request(req).await.expect("answer");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        serde_json::from_slice(&body).expect("JSON")
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a stream of `p` for `model` delivered: its text, its text deltas, and whether it ended
/// with its finish event.
pub(crate) struct Streamed {
    pub text: String,
    pub deltas: usize,
    pub finished: bool,
}

/// Reads a whole stream of `p` for `model`; an error event fails the test.
pub(crate) async fn stream(p: &HttpProvider, model: &str) -> Result<Streamed, String> {
    use futures_util::StreamExt;
    use tollway_core::{ChatRequest, Provider, StreamEvent, Waited};
    let mut s = p
        .chat_stream(&ChatRequest::simple(model, "hi"), model, &Waited::default())
        .await
        .map_err(|e| e.message)?;
    let mut out = Streamed {
        text: String::new(),
        deltas: 0,
        finished: false,
    };
    while let Some(ev) = s.next().await {
        match ev.map_err(|e| e.message)? {
            StreamEvent::TextDelta { text, .. } => {
                out.text.push_str(&text);
                out.deltas += 1;
            }
            StreamEvent::Finish { .. } => out.finished = true,
            _ => {}
        }
    }
    Ok(out)
}

/// What a connection to [`TestProxy`] asked for: its request line's method and target, and its
/// `Proxy-Authorization`.
pub(crate) type Asked = (String, String, Option<String>);

/// A minimal HTTP proxy on loopback: `CONNECT` tunnels, and plain-HTTP requests forwarded as
/// they came (absolute form). It keeps what each connection asked for and the
/// `Proxy-Authorization` it carried; with `require` set, other credentials get a 407.
pub(crate) struct TestProxy {
    pub addr: std::net::SocketAddr,
    pub seen: Arc<Mutex<Vec<Asked>>>,
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestProxy {
    pub async fn start(require: Option<&str>) -> TestProxy {
        TestProxy::start_aliasing(require, None).await
    }

    /// With `alias`, every target (whatever its name, which only the proxy sees) is reached at
    /// that address: a client that connected anywhere but through the proxy would fail.
    pub async fn start_aliasing(
        require: Option<&str>,
        alias: Option<std::net::SocketAddr>,
    ) -> TestProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let require = require.map(str::to_string);
        let (seen2, conns2) = (seen.clone(), connections.clone());
        let task = tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                conns2.fetch_add(1, Ordering::SeqCst);
                tasks.spawn(relay(client, seen2.clone(), require.clone(), alias));
            }
        });
        TestProxy {
            addr,
            seen,
            connections,
            task,
        }
    }

    pub fn url(&self, credentials: Option<&str>) -> String {
        match credentials {
            Some(c) => format!("http://{c}@{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    pub fn seen(&self) -> Vec<Asked> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// One client connection: reads the request head, then tunnels or forwards.
async fn relay(
    mut client: tokio::net::TcpStream,
    seen: Arc<Mutex<Vec<Asked>>>,
    require: Option<String>,
    alias: Option<std::net::SocketAddr>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut words = text.split_whitespace();
    let (method, target) = (
        words.next().unwrap_or_default().to_string(),
        words.next().unwrap_or_default().to_string(),
    );
    let auth = text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("proxy-authorization")
            .then(|| v.trim().to_string())
    });
    if let Ok(mut s) = seen.lock() {
        s.push((method.clone(), target.clone(), auth.clone()));
    }
    if require.is_some() && auth != require {
        let _ = client
            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    }
    let host = if method == "CONNECT" {
        target.clone()
    } else {
        // absolute form: http://host:port/path
        let Ok(uri) = target.parse::<Uri>() else {
            return;
        };
        let Some(a) = uri.authority() else {
            return;
        };
        a.to_string()
    };
    let connected = match alias {
        Some(addr) => tokio::net::TcpStream::connect(addr).await,
        None => tokio::net::TcpStream::connect(host.as_str()).await,
    };
    let Ok(mut upstream) = connected else {
        let _ = client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    };
    if method == "CONNECT" {
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        if end < head.len() && upstream.write_all(&head[end..]).await.is_err() {
            return;
        }
    } else if upstream.write_all(&head).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
