//! The axum application and its lifecycle. `app()` is a value tests can call without a socket;
//! `serve()` takes its listener and shutdown signal as arguments, stops accepting on the signal,
//! and lets in-flight requests and streams finish within the configured bound.

use std::future::Future;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
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
use crate::config::{self, ProcessEnv};
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
    /// Where the config came from (`None`: built from the environment; nothing to reload).
    source: std::sync::Mutex<Option<ConfigSource>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    metrics: crate::metrics::Metrics,
    accounts: Arc<crate::accounts::Accounts>,
    /// The response cache: its entries outlive reloads.
    cache: crate::cache::Cache,
    /// Finished spans waiting for export (`telemetry`).
    tracer: Arc<crate::telemetry::Tracer>,
    /// The runtime of start-up and background work, when requests are served on lanes: reloads
    /// run there, so that building a runtime (loading a router's model, starting the built-in
    /// simulator) never stalls a lane's other connections.
    background: std::sync::OnceLock<tokio::runtime::Handle>,
}

#[derive(Clone)]
struct ConfigSource {
    path: PathBuf,
    /// `--listen` given on the command line (it outlives reloads).
    listen: Option<SocketAddr>,
}

/// What a successful reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub models: Vec<String>,
}

impl AppState {
    pub fn new(runtime: Runtime, accounts: Arc<crate::accounts::Accounts>) -> Self {
        let cache = crate::cache::Cache::default();
        cache.configure(runtime.config.cache.as_ref());
        AppState {
            inner: Arc::new(Inner {
                runtime: ArcSwap::from_pointee(runtime),
                draining: AtomicBool::new(false),
                source: std::sync::Mutex::new(None),
                reloading: tokio::sync::Mutex::new(()),
                metrics: crate::metrics::Metrics::default(),
                accounts,
                cache,
                tracer: Arc::default(),
                background: std::sync::OnceLock::new(),
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

    pub fn accounts(&self) -> &Arc<crate::accounts::Accounts> {
        &self.inner.accounts
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    pub fn cache(&self) -> &crate::cache::Cache {
        &self.inner.cache
    }

    pub fn tracer(&self) -> &Arc<crate::telemetry::Tracer> {
        &self.inner.tracer
    }

    /// A request's trace, when traces are exported (`telemetry`).
    pub fn trace(
        &self,
        rt: &Runtime,
        headers: &http::HeaderMap,
    ) -> Option<crate::telemetry::RequestTrace> {
        let cfg = rt.config.telemetry.as_ref()?;
        Some(crate::telemetry::RequestTrace::start(
            self.inner.tracer.clone(),
            headers,
            cfg.sample_ratio,
        ))
    }

    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    /// Remembers the config file, so that [`AppState::reload`] can read it again.
    pub fn set_config_source(&self, path: PathBuf, listen: Option<SocketAddr>) {
        let mut s = self.inner.source.lock().unwrap_or_else(|p| p.into_inner());
        *s = Some(ConfigSource { path, listen });
    }

    pub fn config_path(&self) -> Option<PathBuf> {
        let s = self.inner.source.lock().unwrap_or_else(|p| p.into_inner());
        s.as_ref().map(|c| c.path.clone())
    }

    /// Reads the config file again and, when it is valid, swaps in a runtime built from it by
    /// the start-up code. Requests in flight finish on the runtime they started with; health
    /// learnt so far is kept. An invalid config changes nothing and returns its errors.
    /// Runs on the background runtime when there is one (see [`serve_lanes`]).
    pub async fn reload(&self) -> Result<Reloaded, Vec<String>> {
        match self.inner.background.get() {
            Some(bg) => {
                let me = self.clone();
                bg.spawn(async move { me.reload_here().await })
                    .await
                    .unwrap_or_else(|e| Err(vec![format!("the reload stopped: {e}")]))
            }
            None => self.reload_here().await,
        }
    }

    async fn reload_here(&self) -> Result<Reloaded, Vec<String>> {
        let _one = self.inner.reloading.lock().await;
        let source = {
            let s = self.inner.source.lock().unwrap_or_else(|p| p.into_inner());
            s.clone()
        };
        let Some(source) = source else {
            return Err(vec![
                "the gateway was started without --config: there is no file to reload".into(),
            ]);
        };
        let mut cfg = config::load_file(&source.path, &ProcessEnv)?;
        let old = self.runtime();
        let listen = source.listen.unwrap_or(old.config.server.listen);
        if cfg.server.listen != listen && source.listen.is_none() {
            tracing::warn!(
                old = %listen, new = %cfg.server.listen,
                "server.listen changed: a restart is needed for it to take effect"
            );
        }
        cfg.server.listen = listen;
        let runtime = Runtime::build_with(cfg, old.health().clone())
            .await
            .map_err(|e| vec![e])?;
        // the file's keys before the swap: a sync that fails keeps the running config too
        self.sync_keys(&runtime).await.map_err(|e| vec![e])?;
        let models = runtime.model_names().to_vec();
        self.inner.cache.configure(runtime.config.cache.as_ref());
        self.inner.runtime.store(Arc::new(runtime));
        tracing::info!(?models, "configuration reloaded");
        Ok(Reloaded { models })
    }

    /// Makes storage hold the keys `runtime`'s config file declares (`keys:`), and logs what
    /// changed.
    pub async fn sync_keys(&self, runtime: &Runtime) -> Result<(), String> {
        let done = self
            .accounts()
            .sync_config_keys(&runtime.config.keys)
            .await
            .map_err(|e| format!("the config file's keys: {e}"))?;
        if done != tollway_store::KeySync::default() {
            tracing::info!(
                created = done.created,
                updated = done.updated,
                revoked = done.revoked,
                "virtual keys from the config file"
            );
        }
        Ok(())
    }

    /// Reloads and logs the outcome (for signals and the file watcher).
    pub async fn reload_logged(&self, why: &str) {
        match self.reload().await {
            Ok(_) => {}
            Err(errors) => {
                for e in &errors {
                    tracing::error!(
                        trigger = why,
                        "reload rejected, keeping the running config: {e}"
                    );
                }
            }
        }
    }
}

/// Sends soft-budget alerts to the configured webhook (and the log, which already has them),
/// checking every second; a failed delivery is retried on the next tick, up to five times.
pub async fn budget_alerts(state: AppState) {
    let client = match tollway_providers::JsonPoster::new(std::time::Duration::from_secs(10)) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "budget alerts disabled: cannot build an HTTP client");
            return;
        }
    };
    let mut pending: Vec<(serde_json::Value, u32)> = Vec::new();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        for a in state.accounts().budgets().take_alerts() {
            pending.push((
                serde_json::json!({
                    "type": "budget_alert",
                    "scope": a.budget.scope,
                    "period": a.budget.period.name(),
                    "limit_usd": a.budget.limit.to_string(),
                    "spent_usd": a.spent.to_string(),
                    "hard": a.budget.hard,
                    "ts_ms": tollway_store::now_ms(),
                }),
                0,
            ));
        }
        let Some(url) = state.runtime().config.alert_webhook.clone() else {
            pending.clear();
            continue;
        };
        let mut keep = Vec::new();
        for (body, tries) in pending.drain(..) {
            match client.post(&url, &body).await {
                Ok(status) if (200..300).contains(&status) => {}
                other => {
                    let why = match other {
                        Ok(status) => format!("HTTP {status}"),
                        Err(e) => e,
                    };
                    tracing::warn!(error = %why, "budget alert webhook failed");
                    if tries < 4 {
                        keep.push((body, tries + 1));
                    }
                }
            }
        }
        pending = keep;
    }
}

/// Exports finished spans to the configured collector every `export_interval` (see
/// `telemetry`); with no collector configured, lets them go.
pub async fn export_traces(state: AppState) {
    let client = match tollway_providers::JsonPoster::new(std::time::Duration::from_secs(10)) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "trace export disabled: cannot build an HTTP client");
            return;
        }
    };
    loop {
        let cfg = state.runtime().config.telemetry.clone();
        let wait = cfg
            .as_ref()
            .map_or(std::time::Duration::from_secs(2), |c| c.export_interval);
        tokio::time::sleep(wait).await;
        match &cfg {
            Some(c) => state.tracer().export(c, &client).await,
            None => drop(state.tracer().take()),
        }
    }
}

/// Exports what spans are left (at shutdown), within a few seconds.
pub async fn flush_traces(state: &AppState) {
    let Some(cfg) = state.runtime().config.telemetry.clone() else {
        return;
    };
    if let Ok(client) = tollway_providers::JsonPoster::new(std::time::Duration::from_secs(3)) {
        state.tracer().export(&cfg, &client).await;
    }
}

/// Shares deployment cooldowns with other instances through Redis: publishes circuits this
/// instance opened and applies those others published, twice a second.
pub async fn sync_cooldowns(state: AppState) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let rt = state.runtime();
        let registry = rt.health();
        let opened = registry.take_opened();
        let Some(shared) = state.accounts().shared().filter(|s| s.should_try()) else {
            continue;
        };
        let now = std::time::Instant::now();
        let now_ms = tollway_store::now_ms();
        for (label, until) in opened {
            let left = until.saturating_duration_since(now).as_millis() as i64;
            shared.publish_cooldown(&label, now_ms + left).await;
        }
        for (label, until_ms) in shared.cooldowns(&registry.labels()).await {
            let left = until_ms - now_ms;
            if left > 0 {
                let until = now + std::time::Duration::from_millis(left as u64);
                registry.import_cooldown(&label, until, now);
            }
        }
    }
}

/// Active health checks for model groups with `probe_interval_secs`: a one-token request to each
/// deployment at that interval; successes close circuits, failures count like real ones.
pub async fn active_probes(state: AppState) {
    let mut last: std::collections::HashMap<String, std::time::Instant> = Default::default();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if state.draining() {
            return;
        }
        let rt = state.runtime();
        let now = std::time::Instant::now();
        for (d, every) in rt.probed() {
            if last
                .get(&d.label)
                .is_some_and(|t| now.duration_since(*t) < every)
            {
                continue;
            }
            last.insert(d.label.clone(), now);
            let mut req = tollway_core::ChatRequest::simple(d.model.clone(), "ping");
            req.max_tokens = Some(1);
            let started = std::time::Instant::now();
            let waited = tollway_core::Waited::default();
            match tokio::time::timeout(
                std::time::Duration::from_secs(30),
                d.provider.chat(&req, &d.model, &waited),
            )
            .await
            {
                Ok(Ok(_)) => d.health.success(started.elapsed()),
                Ok(Err(e)) => {
                    tracing::warn!(deployment = %d.label, error = %e, "active probe failed");
                    d.health.failure(&e, &d.policy, std::time::Instant::now());
                }
                Err(_) => {
                    let e = tollway_core::ProviderError::new(
                        tollway_core::ErrorKind::Timeout,
                        "active probe timed out",
                    );
                    d.health.failure(&e, &d.policy, std::time::Instant::now());
                }
            }
        }
    }
}

/// Reloads the config on every SIGHUP. The handler is registered before this returns, so a SIGHUP
/// sent as soon as the gateway says it listens reloads it instead of ending the process (the
/// default action). The loop runs on a task of its own.
pub fn reload_on_sighup(state: AppState) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload with POST /admin/reload instead");
            return;
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                state.reload_logged("SIGHUP").await;
            }
        });
    }
    #[cfg(not(unix))]
    let _ = state;
}

/// Polls the config file's modification time and size; reloads when either changes.
pub async fn watch_config_file(state: AppState) {
    let Some(path) = state.config_path() else {
        return;
    };
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    let mut last = stamp(&path);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if state.draining() {
            return;
        }
        let now = stamp(&path);
        if now != last && now.is_some() {
            last = now;
            state.reload_logged("file change").await;
        }
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
        .route(
            "/v1/responses",
            with_405(post(api::responses), ApiFamily::OpenAi, "/v1/responses"),
        )
        .route(
            "/v1/messages/count_tokens",
            with_405(
                post(api::count_tokens),
                ApiFamily::Anthropic,
                "/v1/messages/count_tokens",
            ),
        )
        .route(
            "/v1/embeddings",
            with_405(post(api::embeddings), ApiFamily::OpenAi, "/v1/embeddings"),
        )
        .route("/v1/models", get(api::models))
        .route("/admin/health", get(api::admin_health))
        .route("/admin/models", get(api::admin_models))
        .route("/admin/reload", post(api::admin_reload))
        .route(
            "/admin/cache",
            axum::routing::delete(api::admin_cache_clear),
        )
        .route(
            "/admin/keys",
            post(api::admin_keys_create).get(api::admin_keys_list),
        )
        .route("/admin/keys/{id}/{action}", post(api::admin_key_action))
        .route("/admin/usage", get(api::admin_usage))
        .route("/admin/requests", get(api::admin_requests))
        .route("/v1/feedback", post(api::feedback))
        .route("/metrics", get(api::metrics))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/ui", get(crate::ui::index))
        .route("/ui/", get(crate::ui::index))
        .route("/ui/app.js", get(crate::ui::script))
        .route("/ui/app.css", get(crate::ui::style))
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
    // No Nagle: a streamed chunk must leave at once, not wait for the client's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |s| {
        let _ = s.set_nodelay(true);
    });
    // The router made ready once (`into_make_service`: its routes resolved for the state) and
    // shared by every connection; `axum::serve` on a plain `Router` rebuilds the route table for
    // each new connection (about 6 KB held per connection, and the work of building it).
    let server =
        axum::serve(listener, app(state).into_make_service()).with_graceful_shutdown(signal);
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

/// Serves on `lanes` threads, each with its own single-threaded runtime accepting from the one
/// `listener` (thread per core): a request is read, routed, sent upstream (over its lane's own
/// connection pool, see `tollway_providers::lanes`) and answered on one thread, without the
/// cross-thread wake-ups of a work-stealing runtime.
///
/// Call it on the runtime meant for background work: reloads are sent there.
///
/// On `shutdown` every lane drains as [`serve`] does; then `after_drain` runs (the ledger's final
/// flush) while the lanes' runtimes are still up, since connections a lane opened (to the
/// database, to Redis) are driven by that lane's runtime. Only then do the lanes stop. A lane
/// that cannot start, or stops with an error, stops the others and is the error returned.
/// How requests are served: `count` threads (lanes), each pinned to a CPU of its own when `pin`.
#[derive(Clone, Copy, Debug)]
pub struct LaneSpec {
    pub count: usize,
    pub pin: bool,
}

pub async fn serve_lanes(
    listener: std::net::TcpListener,
    state: AppState,
    spec: LaneSpec,
    shutdown: impl Future<Output = ()> + Send + 'static,
    after_drain: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let lanes = spec.count.max(1);
    let cpus = if spec.pin {
        let cpus = core_affinity::get_core_ids().unwrap_or_default();
        if cpus.is_empty() {
            tracing::warn!(
                "--pin-workers: this system does not say which CPUs may be used; not pinning"
            );
        }
        cpus
    } else {
        Vec::new()
    };
    let _ = state
        .inner
        .background
        .set(tokio::runtime::Handle::current());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut threads = Vec::with_capacity(lanes);
    let mut started = Ok(());
    for i in 0..lanes {
        let lane = listener.try_clone().and_then(|l| {
            let (state, stop, release, done) = (
                state.clone(),
                stop_rx.clone(),
                release_rx.clone(),
                done_tx.clone(),
            );
            // lane i on the i-th allowed CPU, round robin
            let cpu = (!cpus.is_empty()).then(|| cpus[i % cpus.len()]);
            std::thread::Builder::new()
                .name(format!("tollway-lane-{i}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        if !core_affinity::set_for_current(cpu) {
                            tracing::warn!(
                                lane = i,
                                cpu = cpu.id,
                                "could not pin the lane to its CPU"
                            );
                        }
                    }
                    run_lane(i, l, state, stop, release, done)
                })
        });
        match lane {
            Ok(t) => threads.push(t),
            Err(e) => {
                started = Err(e);
                break;
            }
        }
    }
    drop(done_tx);
    let mut result = started;
    let mut finished = 0;
    if result.is_ok() {
        tokio::select! {
            _ = shutdown => {}
            first = done_rx.recv() => {
                result = Err(match first {
                    Some((i, r)) => {
                        finished += 1;
                        r.err().unwrap_or_else(|| {
                            std::io::Error::other(format!("serving lane {i} stopped on its own"))
                        })
                    }
                    // every lane panicked before reporting
                    None => std::io::Error::other("every serving lane stopped"),
                });
            }
        }
    }
    let _ = stop_tx.send(true);
    // Every lane reports once (a lane that panicked drops its sender instead).
    while finished < threads.len() {
        match done_rx.recv().await {
            Some((_, r)) => {
                finished += 1;
                if let (Err(e), true) = (r, result.is_ok()) {
                    result = Err(e);
                }
            }
            None => break,
        }
    }
    after_drain.await;
    let _ = release_tx.send(true);
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
    result
}

fn run_lane(
    i: usize,
    listener: std::net::TcpListener,
    state: AppState,
    stop: tokio::sync::watch::Receiver<bool>,
    release: tokio::sync::watch::Receiver<bool>,
    done: tokio::sync::mpsc::UnboundedSender<(usize, std::io::Result<()>)>,
) {
    tollway_providers::lanes::enter_lane(i);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = done.send((i, Err(e)));
            return;
        }
    };
    rt.block_on(async move {
        tokio::spawn(keep_a_timer_armed());
        let r = match TcpListener::from_std(listener) {
            Ok(l) => serve(l, state, became_true(stop)).await,
            Err(e) => Err(e),
        };
        let _ = done.send((i, r));
        // Idle, but still driving what this lane opened, until the final flush is done.
        became_true(release).await;
    });
}

/// Keeps the lane's timer wheel from ever being empty. A runtime parked with no timer due sleeps
/// "forever"; the first timer registered after that (every request arms a few: the upstream's
/// first-byte and total timeouts) is earlier than the planned wake-up, and tokio then wakes its own
/// driver through the eventfd: one extra `write` syscall per request (strace: 1.06 per request
/// with two lanes). A timer that is always due within half a second makes the requests' timeouts
/// (seconds and longer) later than the planned wake-up, so arming them costs no syscall; the
/// price is two idle wake-ups a second per lane.
async fn keep_a_timer_armed() {
    let mut beat = tokio::time::interval(std::time::Duration::from_millis(500));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        beat.tick().await;
    }
}

/// Resolves when the flag is raised, or when its sender is gone (the coordinator stopped).
async fn became_true(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}
