//! The axum application and its lifecycle. `app()` is a value tests can call without a socket;
//! `serve()` takes its listener and shutdown signal as arguments, stops accepting on the signal,
//! and lets in-flight requests and streams finish within the configured bound.

use std::future::Future;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use axum::extract::Request;
use axum::http::Method;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use tokio::net::TcpListener;
use tollway_core::ApiFamily;

use crate::api;
use crate::runtime::Runtime;

/// Shared by every handler. The runtime sits behind an `ArcSwap` so that a reload can replace it
/// while requests in flight keep the one they started with.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
    pub started_unix: u64,
}

struct Inner {
    runtime: ArcSwap<Runtime>,
    draining: AtomicBool,
}

impl AppState {
    pub fn new(runtime: Runtime) -> Self {
        AppState {
            inner: Arc::new(Inner {
                runtime: ArcSwap::from_pointee(runtime),
                draining: AtomicBool::new(false),
            }),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
        }
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.inner.runtime.load_full()
    }

    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }
}

fn with_405(
    route: MethodRouter<AppState>,
    family: ApiFamily,
    path: &'static str,
) -> MethodRouter<AppState> {
    route.fallback(
        move |method: Method| async move { api::method_not_allowed(family, &method, path) },
    )
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/chat/completions",
            with_405(
                post(api::chat_completions),
                ApiFamily::OpenAi,
                "/v1/chat/completions",
            ),
        )
        .route(
            "/v1/messages",
            with_405(post(api::messages), ApiFamily::Anthropic, "/v1/messages"),
        )
        .route("/v1/models", get(api::models))
        .route("/admin/health", get(api::admin_health))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .fallback(|req: Request| async move {
            api::not_found(
                req.method().clone(),
                req.uri().clone(),
                req.headers().clone(),
            )
            .await
        })
        .with_state(state)
}

/// Serves until `shutdown` resolves, then drains: no new connections, in-flight requests and
/// streams get up to the configured shutdown timeout to finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let bound = state.runtime().config.server.shutdown_timeout;
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let drain_state = state.clone();
    let signal = async move {
        shutdown.await;
        drain_state.inner.draining.store(true, Ordering::Relaxed);
        tracing::info!("shutting down: no new connections, draining in-flight requests");
        let _ = tx.send(true);
    };
    let server = axum::serve(listener, app(state)).with_graceful_shutdown(signal);
    let deadline = async move {
        while !*rx.borrow() {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        tokio::time::sleep(bound).await;
    };
    tokio::select! {
        r = server.into_future() => r,
        _ = deadline => {
            tracing::warn!(timeout_secs = bound.as_secs(), "drain timed out; closing the remaining connections");
            Ok(())
        }
    }
}
