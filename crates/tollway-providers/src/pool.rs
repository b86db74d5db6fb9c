//! A lane's own HTTP/1.1 connections to one upstream, plain or over TLS, on hyper's connection API
//! rather than hyper-util's pooled client.
//!
//! hyper-util's client keys its shared pool by scheme and authority (a SipHash per checkout and
//! per return), races each checkout against a new connect, and moves large futures around: about
//! 6,500 instructions per request, some 8% of what the gateway's lane spends on a small chat. Here
//! a provider's lane has one stack of idle connections behind an uncontended mutex, so a request
//! pops a connection, sends, and the answer's body pushes it back when it has been read to its end.
//!
//! HTTP/1.1 over TLS too, by default, as the providers' own SDKs connect: one connection per
//! request in flight, so concurrency is not capped by an upstream's limit on streams per HTTP/2
//! connection (hyper-util's client puts all of a host's requests on one HTTP/2 connection and
//! queues those past the limit). An account may opt into HTTP/2 (`http2: true`), which keeps
//! hyper-util's client (see `http.rs`).
//!
//! - A connection goes back only after its answer was read whole. An answer dropped half-read (a
//!   client that went away mid-stream, a body over the size limit) closes its connection, as
//!   HTTP/1.1 requires.
//! - The most recently used connection goes first (warm in both kernels' caches). Those idle
//!   longer than [`IDLE_TIMEOUT`] are closed at the next checkout, or by a task that looks every
//!   [`REAP_EVERY`] while any are idle (so a gateway whose traffic stopped holds none open for
//!   long); at most [`MAX_IDLE`] are kept.
//! - An idle connection the upstream has closed is skipped once its task has seen the close. If
//!   the connection ends while a request waits to be written, hyper gives the request back and it
//!   goes out on another connection (no test brings that about: it needs the close to land between
//!   the checkout and the write). A request that may have been written is never sent twice
//!   here: when an upstream closes an idle connection just as a request goes out on it (its
//!   keep-alive timeout, racing the request, as with any HTTP/1.1 client), the attempt fails with
//!   a connection error, which the gateway retries like any other.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use tower_service::Service;

/// TCP (straight or through a proxy's tunnel), and TLS for `https://` upstreams.
pub(crate) type Connector = hyper_rustls::HttpsConnector<crate::proxy::Tcp>;

/// Idle connections older than this are closed rather than reused (as hyper-util's pool did).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per lane and upstream; more are closed as they come back.
pub(crate) const MAX_IDLE: usize = 1024;
/// How often idle connections are looked over for closing while there are any.
pub(crate) const REAP_EVERY: Duration = Duration::from_secs(30);

type Conn = SendRequest<Full<Bytes>>;

/// One lane's idle connections to one upstream.
pub(crate) struct Pool {
    idle: Mutex<Idles>,
    connector: Connector,
    /// Where to connect: the upstream's URL, or that of a proxy forwarding plain HTTP to it (the
    /// connector reads the scheme, host and port only).
    origin: Uri,
    /// [`REAP_EVERY`]; shorter in tests.
    reap_every: Duration,
}

#[derive(Default)]
struct Idles {
    /// Oldest first: connections come back at the end and are taken from it.
    list: VecDeque<Idle>,
    /// A reaper task is running (it stops when nothing is idle; the next return starts one).
    reaping: bool,
}

impl Idles {
    /// Closes the connections idle too long (at the front) and, if `all`, every closed one.
    fn prune(&mut self, now: Instant, all: bool) {
        while self
            .list
            .front()
            .is_some_and(|i| now.saturating_duration_since(i.since) > IDLE_TIMEOUT)
        {
            self.list.pop_front();
        }
        if all {
            self.list.retain(|i| !i.conn.is_closed());
        }
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// Why a request got no answer.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be opened (refused, unresolvable, connect timeout).
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed while the request was sent or its answer's head read.
    Http(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // the cause follows in the error's chain
            SendError::Connect(_) => f.write_str("connect error"),
            SendError::Http(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Connect(e) => Some(&**e),
            // transparent: its text is hyper's, so its causes are hyper's
            SendError::Http(e) => e.source(),
        }
    }
}

impl Pool {
    pub(crate) fn new(connector: Connector, origin: Uri) -> Pool {
        Pool {
            idle: Mutex::new(Idles::default()),
            connector,
            origin,
            reap_every: REAP_EVERY,
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) on an idle connection or a new one. The answer's
    /// body returns the connection to this pool when it has been read to its end.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut req: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<PooledBody>, SendError> {
        while let Some(mut conn) = self.take() {
            // ready at once, unless the connection's task has yet to see the last answer's end
            if conn.ready().await.is_err() {
                continue; // closed meanwhile
            }
            match conn.try_send_request(req).await {
                Ok(resp) => return Ok(self.wrap(resp, conn)),
                Err(mut e) => match e.take_message() {
                    // never written: the connection was closing; try the next one
                    Some(r) => req = r,
                    None => return Err(SendError::Http(e.into_error())),
                },
            }
        }
        // boxed: connecting is rare, and its state (a TLS session, some 1 KB) would otherwise sit
        // in this future and every future around it, copied whenever they move (1 k instructions
        // of memcpy per request)
        let mut conn = Box::pin(self.connect()).await?;
        conn.ready().await.map_err(SendError::Http)?;
        match conn.send_request(req).await {
            Ok(resp) => Ok(self.wrap(resp, conn)),
            Err(e) => Err(SendError::Http(e)),
        }
    }

    fn wrap(
        self: &Arc<Self>,
        resp: http::Response<Incoming>,
        conn: Conn,
    ) -> http::Response<PooledBody> {
        resp.map(|inner| PooledBody {
            inner,
            home: Some(Home {
                pool: self.clone(),
                conn,
            }),
        })
    }

    /// The most recently returned open connection, after closing those idle too long.
    fn take(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.list.is_empty() {
            return None;
        }
        idle.prune(Instant::now(), false);
        while let Some(i) = idle.list.pop_back() {
            if !i.conn.is_closed() {
                return Some(i.conn);
            }
        }
        None
    }

    fn put(self: &Arc<Self>, conn: Conn) {
        if conn.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.list.len() >= MAX_IDLE {
            idle.list.pop_front();
        }
        idle.list.push_back(Idle {
            conn,
            since: Instant::now(),
        });
        if !idle.reaping {
            // on this thread's runtime (the lane's), as the connection's own task is
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                idle.reaping = true;
                rt.spawn(reap(Arc::downgrade(self)));
            }
        }
    }

    /// Idle connections held (for tests).
    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.idle.lock().map_or(0, |i| i.list.len())
    }

    /// A new connection, driven by a task on the calling thread's runtime (the lane's own).
    async fn connect(&self) -> Result<Conn, SendError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(self.origin.clone())
            .await
            .map_err(SendError::Connect)?;
        let (conn, driver) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(SendError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = driver.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(conn)
    }
}

/// Closes idle connections past [`IDLE_TIMEOUT`], and those the upstream closed, every
/// `reap_every`, until none is idle or the pool is gone (a reload dropped its provider).
async fn reap(pool: std::sync::Weak<Pool>) {
    let Some(every) = pool.upgrade().map(|p| p.reap_every) else {
        return;
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.prune(Instant::now(), true);
        if idle.list.is_empty() {
            idle.reaping = false;
            return;
        }
    }
}

/// An upstream answer's body; read to its end, it returns its connection to the pool.
pub(crate) struct PooledBody {
    inner: Incoming,
    home: Option<Home>,
}

struct Home {
    pool: Arc<Pool>,
    conn: Conn,
}

impl PooledBody {
    /// A body with no pooled connection behind it (hyper-util's client pools its own).
    pub(crate) fn unpooled(inner: Incoming) -> PooledBody {
        PooledBody { inner, home: None }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(home) = this.home.take() {
                    home.pool.put(home.conn);
                }
            }
            // a connection that failed mid-answer is not reused
            Poll::Ready(Some(Err(_))) => this.home = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// How the test upstream ends each answer.
    #[derive(Clone, Copy, PartialEq)]
    enum Upstream {
        /// keeps the connection for the next request
        KeepAlive,
        /// closes the connection after each answer, without saying so (`Connection: close`)
        CloseSilently,
    }

    /// A plain HTTP/1.1 server answering every request with `200` and a body of `body_len` bytes
    /// (in two writes, 20 ms apart, when it is over 1,000); counts the connections it accepted,
    /// and those it saw closed by the client.
    async fn upstream(how: Upstream, body_len: usize) -> (Uri, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let closes = closed.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let _ = sock.set_nodelay(true);
                let closes = closes.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    // more of the request into `buf`; false when the client closed or failed
                    let read_more = async |sock: &mut tokio::net::TcpStream, buf: &mut Vec<u8>| {
                        let mut chunk = [0u8; 4096];
                        match sock.read(&mut chunk).await {
                            Ok(0) => {
                                closes.fetch_add(1, Ordering::SeqCst);
                                false
                            }
                            Err(_) => false,
                            Ok(n) => {
                                buf.extend_from_slice(&chunk[..n]);
                                true
                            }
                        }
                    };
                    loop {
                        // one request: its head, then a body of its content-length
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            if !read_more(&mut sock, &mut buf).await {
                                return;
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        while buf.len() < head_end + len {
                            if !read_more(&mut sock, &mut buf).await {
                                return;
                            }
                        }
                        buf.drain(..head_end + len);
                        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {body_len}\r\n\r\n");
                        let body = vec![b'x'; body_len];
                        let split = if body_len > 1000 {
                            body_len / 2
                        } else {
                            body_len
                        };
                        if sock.write_all(head.as_bytes()).await.is_err()
                            || sock.write_all(&body[..split]).await.is_err()
                        {
                            return;
                        }
                        if split < body_len {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            if sock.write_all(&body[split..]).await.is_err() {
                                return;
                            }
                        }
                        if how == Upstream::CloseSilently {
                            return;
                        }
                    }
                });
            }
        });
        let uri: Uri = format!("http://{addr}/").parse().expect("uri");
        (uri, accepted, closed)
    }

    fn pool(origin: Uri) -> Arc<Pool> {
        pool_reaping_every(origin, REAP_EVERY)
    }

    fn pool_reaping_every(origin: Uri, every: Duration) -> Arc<Pool> {
        let timeouts = crate::config::Timeouts {
            connect_ms: 2_000,
            ..Default::default()
        };
        let tcp = crate::proxy::Tcp::Direct(crate::http::http_connector(&timeouts));
        let c = crate::http::tls_connector(tcp, None, false).expect("connector");
        let mut pool = Pool::new(c, origin);
        pool.reap_every = every;
        Arc::new(pool)
    }

    fn request(origin: &Uri) -> http::Request<Full<Bytes>> {
        let host = origin.authority().expect("authority").as_str().to_string();
        http::Request::post("/v1/chat/completions")
            .header(http::header::HOST, host)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(b"{\"model\":\"m\"}")))
            .expect("request")
    }

    /// Sends one request and reads its answer whole.
    async fn roundtrip(pool: &Arc<Pool>, origin: &Uri) -> usize {
        let resp = pool.send(request(origin)).await.expect("answer");
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        body.len()
    }

    #[tokio::test]
    async fn a_connection_serves_one_request_after_another() {
        let (origin, accepted, _) = upstream(Upstream::KeepAlive, 2).await;
        let p = pool(origin.clone());
        for _ in 0..5 {
            assert_eq!(roundtrip(&p, &origin).await, 2);
            // back in the pool once the answer was read to its end
            assert_eq!(p.idle(), 1);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_open_connections_that_all_come_back() {
        let (origin, accepted, _) = upstream(Upstream::KeepAlive, 2).await;
        let p = pool(origin.clone());
        // four answers' heads held at once: four connections
        let heads = futures_util::future::join_all((0..4).map(|_| p.send(request(&origin)))).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
        assert_eq!(p.idle(), 0, "none is idle while its answer is unread");
        for h in heads {
            let body = h
                .expect("answer")
                .into_body()
                .collect()
                .await
                .expect("body");
            assert_eq!(body.to_bytes().len(), 2);
        }
        assert_eq!(p.idle(), 4);
        // and the next requests take them rather than opening more
        for _ in 0..4 {
            roundtrip(&p, &origin).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
        assert_eq!(p.idle(), 4);
    }

    #[tokio::test]
    async fn an_answer_dropped_half_read_closes_its_connection() {
        // 4,000 bytes in two writes 20 ms apart: the first read cannot be the whole body
        let (origin, accepted, _) = upstream(Upstream::KeepAlive, 4000).await;
        let p = pool(origin.clone());
        let resp = p.send(request(&origin)).await.expect("answer");
        let mut body = resp.into_body();
        let first = body.frame().await.expect("a frame").expect("data");
        assert!(first.into_data().expect("data").len() < 4000);
        drop(body);
        assert_eq!(p.idle(), 0, "a half-read connection is not pooled");
        // the next request opens a new connection, and gets its whole answer
        assert_eq!(roundtrip(&p, &origin).await, 4000);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(p.idle(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_used_again() {
        // the upstream closes each connection after its answer without announcing it: the pooled
        // connection is closed (or found closing as the request is handed to it, which hyper
        // gives back unsent), and every request still gets its answer
        let (origin, accepted, _) = upstream(Upstream::CloseSilently, 2).await;
        let p = pool(origin.clone());
        for i in 1..=20 {
            assert_eq!(roundtrip(&p, &origin).await, 2, "request {i}");
            assert_eq!(accepted.load(Ordering::SeqCst), i);
        }
    }

    #[tokio::test]
    async fn connections_idle_too_long_are_closed_at_the_next_checkout() {
        let (origin, accepted, _) = upstream(Upstream::KeepAlive, 2).await;
        let p = pool(origin.clone());
        roundtrip(&p, &origin).await;
        roundtrip(&p, &origin).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // age the idle connection past the timeout
        age(&p);
        roundtrip(&p, &origin).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "a new connection");
        assert_eq!(p.idle(), 1);
    }

    /// Makes every idle connection look idle past the timeout.
    fn age(p: &Pool) {
        if let Ok(mut idle) = p.idle.lock() {
            for i in idle.list.iter_mut() {
                i.since -= IDLE_TIMEOUT + Duration::from_secs(1);
            }
        }
    }

    #[tokio::test]
    async fn with_no_traffic_idle_connections_are_closed_by_the_reaper() {
        let (origin, accepted, closed) = upstream(Upstream::KeepAlive, 2).await;
        let p = pool_reaping_every(origin.clone(), Duration::from_millis(20));
        roundtrip(&p, &origin).await;
        roundtrip(&p, &origin).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // not yet idle long enough: the reaper keeps it
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(p.idle(), 1);
        assert!(p.idle.lock().is_ok_and(|i| i.reaping));
        // past the timeout: closed without any request coming, and the reaper stops
        assert_eq!(closed.load(Ordering::SeqCst), 0);
        age(&p);
        // a few of the reaper's rounds, however busy the machine
        for _ in 0..250 {
            if p.idle() == 0 && closed.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(p.idle(), 0);
        assert!(p.idle.lock().is_ok_and(|i| !i.reaping));
        assert_eq!(
            closed.load(Ordering::SeqCst),
            1,
            "the upstream saw it closed"
        );
        // the next answer's connection starts it again
        roundtrip(&p, &origin).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert!(p.idle.lock().is_ok_and(|i| i.reaping));
    }

    #[tokio::test]
    async fn no_upstream_is_a_connect_error() {
        // nothing listens on port 9
        let origin: Uri = "http://127.0.0.1:9/".parse().expect("uri");
        let p = pool(origin.clone());
        let Err(e) = p.send(request(&origin)).await else {
            panic!("an answer from nowhere");
        };
        assert!(matches!(e, SendError::Connect(_)), "{e:?}");
        assert_eq!(p.idle(), 0);
    }
}
