//! Who is calling and what it costs: the master key and virtual keys (looked up in a cache of
//! hashed keys kept fresh from storage), per-key policy (allowed models and providers), requests-
//! and tokens-per-minute limits, and the usage ledger (rows queued to a batched writer). Lives in
//! `AppState`, outside the runtime swap, so a reload keeps the pool, the cache and the counters.

// foldhash: these maps are looked up several times per request, by keys the operator controls
use foldhash::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tollway_core::{ErrorKind, ProviderError, Retry};
use tollway_store::{
    digest_from_hex, now_ms, secret_digest, KeyRecord, LedgerRow, LedgerTask, LedgerWriter, Store,
};

/// The caller of one request.
#[derive(Debug, Clone)]
pub enum Principal {
    /// No master key is configured (loopback only): everything is open.
    Open,
    Master,
    Key(Arc<KeyRecord>),
}

impl Principal {
    pub fn key(&self) -> Option<&KeyRecord> {
        match self {
            Principal::Key(k) => Some(k),
            _ => None,
        }
    }

    /// Whether this caller may use the public model name `model`.
    pub fn may_use(&self, model: &str) -> bool {
        self.key()
            .is_none_or(|k| k.models.is_empty() || k.models.iter().any(|m| m == model))
    }
}

pub struct Accounts {
    store: Store,
    /// hash → key, for every key that was active at the last refresh (and revoked ones, so that
    /// the error can say "revoked").
    /// By the SHA-256 of the secret (its bytes: a lookup builds no hex text).
    keys: ArcSwap<HashMap<[u8; 32], Arc<KeyRecord>>>,
    /// Some key's secret may not start with `sk-tw-` (one declared in the config file): then
    /// every presented secret is looked up, not only those of the gateway's own form.
    foreign_secrets: std::sync::atomic::AtomicBool,
    ledger: LedgerWriter,
    ledger_task: Mutex<Option<LedgerTask>>,
    limits: Limits,
    budgets: Arc<crate::budgets::Budgets>,
    /// Redis, when configured and reachable at least once.
    shared: arc_swap::ArcSwapOption<crate::shared::Shared>,
    /// Redis is configured (so `shared` being empty means "not reachable yet").
    shared_configured: bool,
}

impl Accounts {
    /// Connects to storage (running migrations), loads the keys and starts the ledger writer.
    pub async fn open(url: &str, flush_every: Duration) -> Result<Arc<Accounts>, String> {
        Self::open_shared(url, flush_every, None).await
    }

    /// As [`Accounts::open`], sharing limits, budgets and cooldowns through Redis
    /// (`(url, key prefix)`). An unreachable Redis is logged and retried in the background.
    pub async fn open_shared(
        url: &str,
        flush_every: Duration,
        shared: Option<(String, String)>,
    ) -> Result<Arc<Accounts>, String> {
        let store = Store::connect(url).await.map_err(|e| {
            format!(
                "cannot open storage {}: {e}",
                crate::config::redact_url(url)
            )
        })?;
        let (ledger, task) = LedgerWriter::start(store.clone(), flush_every, 512);
        let a = Arc::new(Accounts {
            store,
            keys: ArcSwap::from_pointee(HashMap::default()),
            foreign_secrets: std::sync::atomic::AtomicBool::new(false),
            ledger,
            ledger_task: Mutex::new(Some(task)),
            limits: Limits::default(),
            budgets: Arc::default(),
            shared: arc_swap::ArcSwapOption::empty(),
            shared_configured: shared.is_some(),
        });
        a.refresh().await.map_err(|e| e.to_string())?;
        if let Some((redis_url, prefix)) = shared {
            match crate::shared::Shared::connect(&redis_url, &prefix).await {
                Ok(s) => a.shared.store(Some(s)),
                Err(e) => {
                    tracing::error!(error = %e, "shared state unavailable at start: using local limits and budgets; retrying in the background");
                    let weak = Arc::downgrade(&a);
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            let Some(a) = weak.upgrade() else { return };
                            if let Ok(s) = crate::shared::Shared::connect(&redis_url, &prefix).await
                            {
                                tracing::warn!("shared state (Redis) connected");
                                a.shared.store(Some(s));
                                return;
                            }
                        }
                    });
                }
            }
        }
        Ok(a)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Reloads the key cache from storage.
    pub async fn refresh(&self) -> Result<(), tollway_store::StoreError> {
        let all = self.store.list_keys().await?;
        let map: HashMap<[u8; 32], Arc<KeyRecord>> = all
            .into_iter()
            .filter_map(|k| match digest_from_hex(&k.hash) {
                Some(d) => Some((d, Arc::new(k))),
                None => {
                    // written by this store, so never expected; such a key cannot authenticate
                    tracing::warn!(key = %k.id, "a stored key's hash is not 64 hex digits; skipped");
                    None
                }
            })
            .collect();
        let foreign = map
            .values()
            .any(|k| k.from_config && !k.prefix.starts_with(tollway_store::SECRET_PREFIX));
        self.foreign_secrets
            .store(foreign, std::sync::atomic::Ordering::Relaxed);
        self.keys.store(Arc::new(map));
        Ok(())
    }

    /// Makes storage hold the keys the config file declares (created, updated, and revoked when
    /// no longer declared), then reloads the key cache, so that they work at once.
    pub async fn sync_config_keys(
        &self,
        declared: &[tollway_store::DeclaredKey],
    ) -> Result<tollway_store::KeySync, tollway_store::StoreError> {
        let done = self.store.sync_config_keys(declared).await?;
        self.refresh().await?;
        Ok(done)
    }

    /// Keeps the cache fresh until the process ends (other instances may change keys).
    pub async fn refresh_every(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "could not refresh the key cache; keeping the last one");
            }
        }
    }

    /// Finds the virtual key for a presented secret (no database round trip).
    pub fn lookup(&self, secret: &str) -> Result<Option<Arc<KeyRecord>>, ProviderError> {
        if !secret.starts_with(tollway_store::SECRET_PREFIX)
            && !self
                .foreign_secrets
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(None);
        }
        let keys = self.keys.load();
        let Some(k) = keys.get(&secret_digest(secret)) else {
            return Ok(None);
        };
        if k.revoked_ms.is_some() {
            return Err(ProviderError::new(
                ErrorKind::Authentication,
                format!("The API key {} has been revoked.", k.prefix),
            ));
        }
        if !k.active(now_ms()) {
            return Err(ProviderError::new(
                ErrorKind::Authentication,
                format!("The API key {} has expired.", k.prefix),
            ));
        }
        Ok(Some(k.clone()))
    }

    pub fn record(&self, row: LedgerRow) {
        self.ledger.record(row);
    }

    /// Writes every queued ledger row (graceful shutdown).
    pub async fn flush_and_stop(&self) {
        let task = self
            .ledger_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = task {
            let n = t.finish().await;
            tracing::info!(rows = n, "usage ledger flushed");
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn budgets(&self) -> &Arc<crate::budgets::Budgets> {
        &self.budgets
    }

    /// Redis, when it is connected and answering.
    pub fn shared(&self) -> Option<Arc<crate::shared::Shared>> {
        self.shared.load_full()
    }

    /// `None`: no shared state configured; otherwise whether Redis answers.
    pub fn shared_up(&self) -> Option<bool> {
        self.shared_configured
            .then(|| self.shared.load().as_ref().is_some_and(|s| s.is_up()))
    }

    /// How many times the shared state (Redis) has gone from answering to failing (`None`: not
    /// configured).
    pub fn shared_outages(&self) -> Option<u64> {
        self.shared_configured
            .then(|| self.shared.load().as_ref().map_or(0, |s| s.outages()))
    }
}

/// A per-minute limit's state, as a sliding window over two fixed one-minute windows.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    current: u64,
    previous: u64,
}

const MINUTE: Duration = Duration::from_secs(60);

impl Window {
    fn new(now: Instant) -> Self {
        Window {
            start: now,
            current: 0,
            previous: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed >= MINUTE * 2 {
            *self = Window::new(now);
        } else if elapsed >= MINUTE {
            self.previous = self.current;
            self.current = 0;
            self.start += MINUTE;
        }
    }

    /// The weighted count over the last minute.
    fn used(&self, now: Instant) -> u64 {
        let into = now.saturating_duration_since(self.start).as_secs_f64() / 60.0;
        let carried = (self.previous as f64 * (1.0 - into.min(1.0))).ceil() as u64;
        carried + self.current
    }

    /// Time until `need` more would fit under `limit`.
    fn wait(&self, now: Instant, limit: u64, need: u64) -> Duration {
        let into = now.saturating_duration_since(self.start);
        if self.current + need > limit {
            return MINUTE.saturating_sub(into).max(Duration::from_secs(1));
        }
        // the carried part of the previous window decays linearly over this window
        let excess = (self.used(now) + need).saturating_sub(limit) as f64;
        let per_sec = self.previous as f64 / 60.0;
        if per_sec <= 0.0 {
            return Duration::from_secs(1);
        }
        Duration::from_secs_f64((excess / per_sec).max(1.0))
    }
}

/// What a limit check found, for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitState {
    pub requests: Option<(u64, u64)>,
    pub tokens: Option<(u64, u64)>,
}

impl LimitState {
    /// Keeps, for requests and for tokens, whichever limit has less left: of several scopes
    /// (key, team, model), the tightest is the one a client should pace itself by.
    pub fn tighten(&mut self, other: &LimitState) {
        fn tighter(a: &mut Option<(u64, u64)>, b: Option<(u64, u64)>) {
            if let Some((_, left)) = b {
                if a.is_none_or(|(_, mine)| left < mine) {
                    *a = b;
                }
            }
        }
        tighter(&mut self.requests, other.requests);
        tighter(&mut self.tokens, other.tokens);
    }
}

/// Requests- and tokens-per-minute limits by scope (`key:ID`, `team:NAME`, `model:NAME`).
#[derive(Debug, Default)]
pub struct Limits {
    windows: Mutex<HashMap<String, (Window, Window)>>,
}

impl Limits {
    /// Counts one request against `scope` if it fits both limits; otherwise a 429 saying which
    /// limit and when to retry. Tokens are checked against what was used (they are added when the
    /// answer's usage is known, with [`Limits::add_tokens`]).
    pub fn admit(
        &self,
        scope: &str,
        rpm: Option<u64>,
        tpm: Option<u64>,
        now: Instant,
    ) -> Result<LimitState, ProviderError> {
        let mut state = LimitState::default();
        self.admit_each(&[(scope, rpm, tpm)], now, |s| state = s)?;
        Ok(state)
    }

    /// [`admit`](Self::admit) for several scopes at once (a key, its team, the model), all or
    /// nothing: a request refused by one scope's limit is counted against none of them, so that
    /// refused requests do not use up the other scopes' allowance. One state per scope, in order.
    pub fn admit_all<S: AsRef<str>>(
        &self,
        scopes: &[(S, Option<u64>, Option<u64>)],
        now: Instant,
    ) -> Result<Vec<LimitState>, ProviderError> {
        let mut states = Vec::with_capacity(scopes.len());
        self.admit_each(scopes, now, |s| states.push(s))?;
        Ok(states)
    }

    /// The work of [`admit_all`](Self::admit_all), handing each scope's state to `each` in order
    /// (so that one scope, as [`admit`](Self::admit) checks per deployment attempt, needs no
    /// `Vec`).
    fn admit_each<S: AsRef<str>>(
        &self,
        scopes: &[(S, Option<u64>, Option<u64>)],
        now: Instant,
        mut each: impl FnMut(LimitState),
    ) -> Result<(), ProviderError> {
        let unlimited = |rpm: Option<u64>, tpm: Option<u64>| rpm.is_none() && tpm.is_none();
        if scopes.iter().all(|(_, rpm, tpm)| unlimited(*rpm, *tpm)) {
            // nothing to count: no lock
            scopes.iter().for_each(|_| each(LimitState::default()));
            return Ok(());
        }
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        // first check every scope, counting nothing
        for (scope, rpm, tpm) in scopes {
            let (scope, rpm, tpm) = (scope.as_ref(), *rpm, *tpm);
            let mut state = LimitState::default();
            if unlimited(rpm, tpm) {
                each(state);
                continue;
            }
            // the scope is copied into the map only the first time it is seen
            if !map.contains_key(scope) {
                map.insert(scope.to_string(), (Window::new(now), Window::new(now)));
            }
            let Some((req, tok)) = map.get_mut(scope) else {
                each(state);
                continue;
            };
            req.roll(now);
            tok.roll(now);
            if let Some(limit) = tpm {
                let used = tok.used(now);
                if used >= limit {
                    let wait = tok.wait(now, limit, 1);
                    return Err(limited(scope, "tokens", limit, wait));
                }
                state.tokens = Some((limit, limit - used));
            }
            if let Some(limit) = rpm {
                let used = req.used(now);
                if used + 1 > limit {
                    let wait = req.wait(now, limit, 1);
                    return Err(limited(scope, "requests", limit, wait));
                }
                state.requests = Some((limit, limit - used - 1));
            }
            each(state);
        }
        // then count the request in every scope with a request limit
        for (scope, rpm, _) in scopes {
            if rpm.is_some() {
                if let Some((req, _)) = map.get_mut(scope.as_ref()) {
                    req.current += 1;
                }
            }
        }
        Ok(())
    }

    pub fn add_tokens(&self, scope: &str, tokens: u64, now: Instant) {
        self.add(scope, tokens, now, false);
    }

    /// As [`add_tokens`](Self::add_tokens), for a scope that may have no limit yet (a
    /// deployment whose use a `lowest-usage` group compares): it is counted from now on.
    pub fn count_tokens(&self, scope: &str, tokens: u64, now: Instant) {
        self.add(scope, tokens, now, true);
    }

    /// Adds `tokens` to `scope`'s current window; a scope not seen yet is started when `start`
    /// (otherwise it has no limit, and nothing is counted).
    fn add(&self, scope: &str, tokens: u64, now: Instant, start: bool) {
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if start && !map.contains_key(scope) {
            map.insert(scope.to_string(), (Window::new(now), Window::new(now)));
        }
        if let Some((_, tok)) = map.get_mut(scope) {
            tok.roll(now);
            tok.current = tok.current.saturating_add(tokens);
        }
    }

    /// Tokens counted against `scope` over the last minute (sliding), as its limit sees them.
    pub fn tokens_used(&self, scope: &str, now: Instant) -> u64 {
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        map.get_mut(scope).map_or(0, |(_, tok)| {
            tok.roll(now);
            tok.used(now)
        })
    }
}

fn limited(scope: &str, what: &str, limit: u64, wait: Duration) -> ProviderError {
    let secs = wait.as_secs_f64().ceil() as u64;
    ProviderError::new(
        ErrorKind::RateLimited,
        format!("Rate limit reached for {scope}: {limit} {what} per minute. Retry in {secs} s."),
    )
    .with_retry(Retry::After(Duration::from_secs(secs.max(1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_scopes_are_admitted_all_or_nothing() {
        let l = Limits::default();
        let now = Instant::now();
        let scopes = [
            ("key:a", Some(10), None),
            ("model:m", Some(1), None),
            ("team:t", None, Some(100)),
        ];
        let states = l.admit_all(&scopes, now).unwrap();
        assert_eq!(states[0].requests, Some((10, 9)));
        assert_eq!(states[1].requests, Some((1, 0)));
        assert_eq!(states[2].tokens, Some((100, 100)));
        // the model's limit refuses the next one, which the key does not count
        let e = l.admit_all(&scopes, now).unwrap_err();
        assert!(e.message.contains("model:m"), "{}", e.message);
        let st = l.admit("key:a", Some(10), None, now).unwrap();
        assert_eq!(st.requests, Some((10, 8)));
        // a spent token budget refuses too, and counts nothing either
        l.add_tokens("team:t", 100, now);
        let e = l
            .admit_all(
                &[("key:a", Some(10), None), ("team:t", None, Some(100))],
                now,
            )
            .unwrap_err();
        assert!(e.message.contains("team:t"), "{}", e.message);
        assert_eq!(
            l.admit("key:a", Some(10), None, now).unwrap().requests,
            Some((10, 7))
        );
    }

    #[test]
    fn the_tightest_limit_state_wins_for_requests_and_tokens_apart() {
        let mut t = LimitState::default();
        t.tighten(&LimitState {
            requests: Some((10, 9)),
            tokens: None,
        });
        assert_eq!(t.requests, Some((10, 9)));
        assert_eq!(t.tokens, None);
        t.tighten(&LimitState {
            requests: Some((100, 50)),
            tokens: Some((1000, 700)),
        });
        assert_eq!(t.requests, Some((10, 9)), "more left: not tighter");
        assert_eq!(t.tokens, Some((1000, 700)));
        t.tighten(&LimitState {
            requests: Some((3, 2)),
            tokens: Some((5000, 800)),
        });
        assert_eq!(t.requests, Some((3, 2)));
        assert_eq!(t.tokens, Some((1000, 700)));
        t.tighten(&LimitState::default());
        assert_eq!(t.requests, Some((3, 2)), "no limit leaves the state alone");
    }

    #[test]
    fn request_limits_hold_and_say_when_to_retry() {
        let l = Limits::default();
        let t0 = Instant::now();
        for i in 0..5 {
            let s = l.admit("key:a", Some(5), None, t0).unwrap();
            assert_eq!(s.requests, Some((5, 4 - i)));
        }
        let e = l.admit("key:a", Some(5), None, t0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::RateLimited);
        assert!(e.message.contains("key:a") && e.message.contains("5 requests per minute"));
        assert_eq!(e.retry_after_secs(), Some(60));
        // another scope is independent
        assert!(l.admit("key:b", Some(5), None, t0).is_ok());
        // a minute later the old window still weighs; two minutes later it is forgotten
        let t1 = t0 + Duration::from_secs(61);
        assert!(
            l.admit("key:a", Some(5), None, t1).is_err(),
            "sliding, not fixed"
        );
        let t2 = t0 + Duration::from_secs(121);
        assert!(l.admit("key:a", Some(5), None, t2).is_ok());
    }

    #[test]
    fn token_limits_count_what_was_used() {
        let l = Limits::default();
        let t0 = Instant::now();
        assert!(l.admit("team:x", None, Some(1000), t0).is_ok());
        l.add_tokens("team:x", 1200, t0);
        let e = l.admit("team:x", None, Some(1000), t0).unwrap_err();
        assert!(
            e.message.contains("1000 tokens per minute"),
            "{}",
            e.message
        );
        assert!(e.retry_after_secs().unwrap_or(0) >= 1);
    }
}
