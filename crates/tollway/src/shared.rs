//! State shared by several gateway instances through Redis (`shared_state.url`): per-minute rate
//! limits, budget counters and deployment cooldowns, each updated atomically by a Lua script. When
//! Redis cannot be reached, every instance keeps serving with its local counters, says so in the
//! log (once per outage) and in `tollway_shared_state_up`, and returns to Redis when it answers.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tollway_core::Micros;
use tollway_store::now_ms;

use crate::accounts::LimitState;
use crate::budgets::{Budget, Period};

/// Per-minute limits as sliding windows over two fixed one-minute windows (the previous one
/// weighted by the part of it still inside the last minute), several checks at once, all or
/// nothing. KEYS: (current, previous) window keys per check. ARGV[1]: elapsed fraction of the
/// current window (0..1); then (limit, cost) per check, cost 0 meaning "only check" (tokens,
/// added when the answer's usage is known). Every check is made before anything is counted, so
/// a request one limit refuses is counted against none. Returns {1, used after each check...} or
/// {0, index of the refusing check (1-based)}.
const LIMIT_ALL_LUA: &str = r"
local into = tonumber(ARGV[1])
local used = {}
local n = #KEYS / 2
for i = 1, n do
  local cur = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local prev = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  local u = math.ceil(prev * (1 - into)) + cur
  local limit = tonumber(ARGV[2 * i])
  local cost = tonumber(ARGV[2 * i + 1])
  if (cost == 0 and u >= limit) or (cost > 0 and u + cost > limit) then
    return {0, i}
  end
  used[i] = u + cost
end
local out = {1}
for i = 1, n do
  local cost = tonumber(ARGV[2 * i + 1])
  if cost > 0 then
    redis.call('INCRBY', KEYS[2 * i - 1], cost)
    redis.call('PEXPIRE', KEYS[2 * i - 1], 130000)
  end
  out[i + 1] = used[i]
end
return out
";

/// Adds tokens to the current window. KEYS: current. ARGV: tokens.
const TOKENS_LUA: &str = r"
redis.call('INCRBY', KEYS[1], tonumber(ARGV[1]))
redis.call('PEXPIRE', KEYS[1], 130000)
return 1
";

/// Reserves ARGV[1] against every budget hash in KEYS, all or none. Per key, ARGV holds
/// limit, hard (1/0), seed (spent so far per the ledger, used only when the hash is new), ttl ms.
/// Returns {1, alerts...} (indices of soft budgets newly exceeded) or {0, index, spent}.
const RESERVE_LUA: &str = r"
local ceiling = tonumber(ARGV[1])
for i, k in ipairs(KEYS) do
  local base = 2 + (i - 1) * 4
  redis.call('HSETNX', k, 'spent', ARGV[base + 2])
  local ttl = tonumber(ARGV[base + 3])
  if ttl > 0 then redis.call('PEXPIRE', k, ttl) end
  local spent = tonumber(redis.call('HGET', k, 'spent') or '0')
  local reserved = tonumber(redis.call('HGET', k, 'reserved') or '0')
  if ARGV[base + 1] == '1' and spent + reserved + ceiling > tonumber(ARGV[base]) then
    return {0, i, spent}
  end
end
local out = {1}
for i, k in ipairs(KEYS) do
  local base = 2 + (i - 1) * 4
  local reserved = redis.call('HINCRBY', k, 'reserved', ceiling)
  local spent = tonumber(redis.call('HGET', k, 'spent') or '0')
  if ARGV[base + 1] == '0' and spent + reserved > tonumber(ARGV[base]) then
    if redis.call('HSETNX', k, 'alerted', 1) == 1 then table.insert(out, i) end
  end
end
return out
";

/// Replaces a reservation by the real cost. KEYS: budget hashes. ARGV: reserved, cost.
const SETTLE_LUA: &str = r"
for _, k in ipairs(KEYS) do
  redis.call('HINCRBY', k, 'reserved', -tonumber(ARGV[1]))
  redis.call('HINCRBY', k, 'spent', tonumber(ARGV[2]))
end
return 1
";

pub struct Shared {
    conn: ConnectionManager,
    prefix: String,
    up: AtomicBool,
    /// Outages so far (times Redis went from answering to failing).
    outages: std::sync::atomic::AtomicU64,
    /// During an outage, one request a second probes Redis; the rest use local state at once.
    last_probe_ms: std::sync::atomic::AtomicI64,
    /// Budget hashes this instance has seeded from the ledger (scope, period start).
    seeded: Mutex<HashSet<(Arc<str>, i64)>>,
    limit_all: Script,
    tokens: Script,
    reserve: Script,
    settle: Script,
}

/// What a shared reservation needs to be settled.
#[derive(Debug, Clone)]
pub struct SharedReservation {
    keys: Vec<String>,
    ceiling: i64,
}

/// The outcome of a shared budget check.
pub enum Reserved {
    Ok(SharedReservation, Vec<Budget>),
    /// This budget (index into the request's budgets) is spent.
    Refused(usize),
}

impl Shared {
    /// Connects (bounded by a short timeout). An unreachable Redis is not fatal: the manager keeps
    /// reconnecting and the gateway uses local state meanwhile.
    pub async fn connect(url: &str, prefix: &str) -> Result<Arc<Shared>, String> {
        let client = redis::Client::open(url).map_err(|e| format!("shared_state.url: {e}"))?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(
            Duration::from_secs(2),
            client.get_connection_manager_with_config(cfg),
        )
        .await
        .map_err(|_| "shared state: Redis did not answer within 2 s".to_string())?
        .map_err(|e| format!("shared state: cannot connect to Redis: {e}"))?;
        Ok(Arc::new(Shared {
            conn,
            prefix: prefix.to_string(),
            up: AtomicBool::new(true),
            outages: std::sync::atomic::AtomicU64::new(0),
            last_probe_ms: std::sync::atomic::AtomicI64::new(0),
            seeded: Mutex::new(HashSet::new()),
            limit_all: Script::new(LIMIT_ALL_LUA),
            tokens: Script::new(TOKENS_LUA),
            reserve: Script::new(RESERVE_LUA),
            settle: Script::new(SETTLE_LUA),
        }))
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Whether to use Redis for this request: always while it answers; during an outage, for
    /// one request a second (a probe), so that an outage costs no latency.
    pub fn should_try(&self) -> bool {
        if self.is_up() {
            return true;
        }
        let now = now_ms();
        let last = self.last_probe_ms.load(Ordering::Relaxed);
        now - last >= 1_000
            && self
                .last_probe_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Outages so far: each time Redis went from answering to failing.
    pub fn outages(&self) -> u64 {
        self.outages.load(Ordering::Relaxed)
    }

    fn outage(&self, e: &redis::RedisError) {
        if self.up.swap(false, Ordering::Relaxed) {
            self.outages.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "shared state (Redis) unavailable: using this instance's local limits and budgets until it answers");
        }
    }

    fn recovered(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::warn!("shared state (Redis) is back: limits and budgets are shared again");
        }
    }

    fn window_keys(&self, scope: &str, kind: &str) -> (String, String, f64) {
        let now = now_ms();
        let idx = now.div_euclid(60_000);
        let into = now.rem_euclid(60_000) as f64 / 60_000.0;
        (
            format!("{}rl:{scope}:{kind}:{idx}", self.prefix),
            format!("{}rl:{scope}:{kind}:{}", self.prefix, idx - 1),
            into,
        )
    }

    /// Checks (and for requests, counts) the per-minute limits of several scopes (a key, its
    /// team, the model) in one script run, all or nothing, as [`Limits::admit_all`] does locally.
    /// One state per scope, in order. `Err(None)`: Redis failed (use local state);
    /// `Err(Some((i, what, limit)))`: scope `i`'s limit on `what` is reached.
    ///
    /// [`Limits::admit_all`]: crate::accounts::Limits::admit_all
    pub async fn admit_all<S: AsRef<str>>(
        &self,
        scopes: &[(S, Option<u64>, Option<u64>)],
    ) -> Result<Vec<LimitState>, Option<(usize, &'static str, u64)>> {
        let mut states = vec![LimitState::default(); scopes.len()];
        let mut inv = self.limit_all.prepare_invoke();
        // (scope, what, limit) per check, in the script's order
        let mut checks: Vec<(usize, &'static str, u64)> = Vec::new();
        let mut into = None;
        for (i, (scope, rpm, tpm)) in scopes.iter().enumerate() {
            for (what, kind, limit) in [("tokens", "tok", *tpm), ("requests", "req", *rpm)] {
                if let Some(limit) = limit {
                    let (cur, prev, at) = self.window_keys(scope.as_ref(), kind);
                    into.get_or_insert(at);
                    inv.key(cur).key(prev);
                    checks.push((i, what, limit));
                }
            }
        }
        let Some(into) = into else {
            return Ok(states);
        };
        inv.arg(into);
        // tokens are checked against what was used; a request counts itself
        for (_, what, limit) in &checks {
            inv.arg(*limit).arg(u64::from(*what == "requests"));
        }
        let mut conn = self.conn.clone();
        let r: Result<Vec<i64>, _> = inv.invoke_async(&mut conn).await;
        match r {
            Ok(v) if v.first() == Some(&1) => {
                for (j, &(i, what, limit)) in checks.iter().enumerate() {
                    let used = v.get(j + 1).copied().unwrap_or(0).max(0) as u64;
                    let st = Some((limit, limit.saturating_sub(used)));
                    if what == "tokens" {
                        states[i].tokens = st;
                    } else {
                        states[i].requests = st;
                    }
                }
                self.recovered();
                Ok(states)
            }
            Ok(v) => {
                self.recovered();
                let j = usize::try_from(v.get(1).copied().unwrap_or(1)).unwrap_or(1);
                // the script names the refusing check; an answer out of range is taken as the
                // first check's refusal
                Err(checks.get(j.saturating_sub(1)).or(checks.first()).copied())
            }
            Err(e) => {
                self.outage(&e);
                Err(None)
            }
        }
    }

    pub async fn add_tokens(&self, scope: &str, tokens: u64) {
        let (cur, _, _) = self.window_keys(scope, "tok");
        let mut conn = self.conn.clone();
        let r: Result<i64, _> = self
            .tokens
            .key(cur)
            .arg(tokens)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = r {
            self.outage(&e);
        }
    }

    fn budget_key(&self, b: &Budget, start: i64) -> String {
        format!("{}budget:{}:{start}", self.prefix, b.scope)
    }

    /// Whether this instance already seeded the hash of `b`'s current period.
    pub fn needs_seed(&self, b: &Budget) -> bool {
        let (start, _) = b.period.window(now_ms());
        !self
            .seeded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(b.scope.clone(), start))
    }

    /// Reserves `ceiling` against every budget atomically. `seeds[i]`: what the ledger says was
    /// spent in budget i's period (used only if Redis has no counter for it yet). `Err`: Redis
    /// failed (use local state).
    pub async fn reserve(
        &self,
        budgets: &[Budget],
        ceiling: Micros,
        seeds: &[i64],
    ) -> Result<Reserved, ()> {
        let now = now_ms();
        let mut inv = self.reserve.prepare_invoke();
        inv.arg(ceiling.0);
        let mut keys = Vec::with_capacity(budgets.len());
        for (i, b) in budgets.iter().enumerate() {
            let (start, end) = b.period.window(now);
            let key = self.budget_key(b, start);
            inv.key(&key);
            let ttl = if b.period == Period::Total {
                0
            } else {
                end - now + 86_400_000
            };
            inv.arg(b.limit.0)
                .arg(if b.hard { "1" } else { "0" })
                .arg(seeds.get(i).copied().unwrap_or(0))
                .arg(ttl);
            keys.push(key);
        }
        let mut conn = self.conn.clone();
        let r: Result<Vec<i64>, _> = inv.invoke_async(&mut conn).await;
        match r {
            Ok(v) => {
                self.recovered();
                {
                    let mut seeded = self.seeded.lock().unwrap_or_else(|p| p.into_inner());
                    for b in budgets {
                        seeded.insert((b.scope.clone(), b.period.window(now).0));
                    }
                }
                if v.first() == Some(&1) {
                    let alerts = v[1..]
                        .iter()
                        .filter_map(|i| usize::try_from(*i - 1).ok())
                        .filter_map(|i| budgets.get(i).cloned())
                        .collect();
                    Ok(Reserved::Ok(
                        SharedReservation {
                            keys,
                            ceiling: ceiling.0,
                        },
                        alerts,
                    ))
                } else {
                    let i = v.get(1).copied().unwrap_or(1).max(1) as usize - 1;
                    Ok(Reserved::Refused(i))
                }
            }
            Err(e) => {
                self.outage(&e);
                Err(())
            }
        }
    }

    pub async fn settle(&self, r: &SharedReservation, cost: i64) {
        let mut inv = self.settle.prepare_invoke();
        for k in &r.keys {
            inv.key(k);
        }
        inv.arg(r.ceiling).arg(cost);
        let mut conn = self.conn.clone();
        let res: Result<i64, _> = inv.invoke_async(&mut conn).await;
        if let Err(e) = res {
            self.outage(&e);
            tracing::error!(error = %e, "could not settle a shared budget reservation");
        }
    }

    /// Publishes that a deployment is cooling down until `until_ms`.
    pub async fn publish_cooldown(&self, label: &str, until_ms: i64) {
        let ttl = (until_ms - now_ms()).max(1);
        let mut conn = self.conn.clone();
        let r: Result<(), _> = redis::cmd("SET")
            .arg(format!("{}cooldown:{label}", self.prefix))
            .arg(until_ms)
            .arg("PX")
            .arg(ttl)
            .query_async(&mut conn)
            .await;
        if let Err(e) = r {
            self.outage(&e);
        }
    }

    /// A cached answer another instance (or this one) kept: the bytes of
    /// [`crate::cache::encode`]. `None` when there is none or Redis failed.
    pub async fn cache_get(&self, key: &crate::cache::Key) -> Option<Vec<u8>> {
        let mut conn = self.conn.clone();
        let r: Result<Option<Vec<u8>>, _> = redis::cmd("GET")
            .arg(crate::cache::redis_key(&self.prefix, key))
            .query_async(&mut conn)
            .await;
        match r {
            Ok(v) => {
                self.recovered();
                v
            }
            Err(e) => {
                self.outage(&e);
                None
            }
        }
    }

    /// Keeps a cached answer for every instance, for `ttl_ms`. A refused write (Redis full, say)
    /// loses only that copy: it does not count as an outage of the shared limits and budgets.
    pub async fn cache_put(&self, key: &crate::cache::Key, bytes: Vec<u8>, ttl_ms: u64) {
        let mut conn = self.conn.clone();
        let r: Result<(), _> = redis::cmd("SET")
            .arg(crate::cache::redis_key(&self.prefix, key))
            .arg(bytes)
            .arg("PX")
            .arg(ttl_ms.max(1))
            .query_async(&mut conn)
            .await;
        if let Err(e) = r {
            if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                self.outage(&e);
            } else {
                tracing::debug!(error = %e, "Redis refused a cached answer");
            }
        }
    }

    /// Deletes every kept answer from Redis (`SCAN` in pages, so Redis never blocks on one
    /// command); how many.
    pub async fn cache_clear(&self) -> Result<u64, String> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}cache:*", self.prefix);
        let mut cursor: u64 = 0;
        let mut deleted = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .map_err(|e| {
                    self.outage(&e);
                    format!("Redis: {e}")
                })?;
            if !keys.is_empty() {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| format!("Redis: {e}"))?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// Cooldowns other instances published for these deployments: (label, until ms).
    pub async fn cooldowns(&self, labels: &[String]) -> Vec<(String, i64)> {
        if labels.is_empty() {
            return Vec::new();
        }
        let keys: Vec<String> = labels
            .iter()
            .map(|l| format!("{}cooldown:{l}", self.prefix))
            .collect();
        let mut conn = self.conn.clone();
        let r: Result<Vec<Option<i64>>, _> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await;
        match r {
            Ok(v) => {
                self.recovered();
                labels
                    .iter()
                    .zip(v)
                    .filter_map(|(l, u)| u.map(|u| (l.clone(), u)))
                    .collect()
            }
            Err(e) => {
                self.outage(&e);
                Vec::new()
            }
        }
    }
}
