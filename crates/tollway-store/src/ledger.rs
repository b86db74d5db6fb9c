//! The usage ledger: one row per client request, written in batches by [`LedgerWriter`] off the
//! request path, idempotent by request id (a retried flush never double-counts), and the reports
//! that read it.

use std::time::Duration;

use serde::Serialize;
use sqlx::any::AnyArguments;
use sqlx::{Arguments, Row};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{Result, Store, StoreError};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LedgerRow {
    pub request_id: String,
    pub ts_ms: i64,
    pub key_id: Option<String>,
    pub team: Option<String>,
    /// The public model name the client asked for.
    pub model: String,
    /// The provider account that answered (empty when none did).
    pub provider: String,
    /// `provider/upstream-model` that answered.
    pub deployment: String,
    /// `openai` or `anthropic` (the client's API).
    pub api: String,
    pub status: i64,
    pub stream: bool,
    pub attempts: i64,
    pub latency_ms: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub reasoning_tokens: i64,
    /// `None`: the price is unknown.
    pub cost_micros: Option<i64>,
    /// Usage was estimated locally (the provider reported none).
    pub cost_estimated: bool,
    /// Answered from the response cache: no provider was asked, nothing was spent.
    pub cache_hit: bool,
}

/// What follows `INSERT [OR IGNORE] INTO ` in the ledger insert.
const INSERT_INTO: &str = "tollway_ledger (request_id, ts_ms, key_id, team, model, \
    provider, deployment, api, status, stream, attempts, latency_ms, input_tokens, output_tokens, \
    cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_micros, cost_estimated, cache_hit) VALUES ";

/// Columns in [`INSERT_INTO`] (and values [`bind_row`] adds per row).
const LEDGER_COLUMNS: usize = 20;

/// The ledger insert of `rows` rows (1, 4, 16, 64 or 256), built once per size and backend:
/// numbered `$N` parameters for PostgreSQL, anonymous `?` for SQLite (binding a named or numbered
/// parameter makes SQLite scan its list of names, which made wide statements quadratic).
///
/// A row already present (same request id) is skipped: `ON CONFLICT (request_id) DO NOTHING` for
/// PostgreSQL, `INSERT OR IGNORE` for SQLite. The upsert clause would do for SQLite too, but it
/// leaves the other constraints (NOT NULL) able to abort the statement half-way, so SQLite keeps
/// a statement journal of every page the statement touches, in case it must undo the rows
/// already written; `OR IGNORE` cannot abort, so no journal (about a fifth of the writer's work).
/// Our rows never carry a NULL where the schema forbids one: the types do not allow it.
fn insert_sql(rows: usize, backend: crate::Backend) -> &'static str {
    type Table = Vec<(usize, String)>;
    static SQL: std::sync::OnceLock<[Table; 2]> = std::sync::OnceLock::new();
    let build = |numbered: bool| -> Table {
        [1, 4, 16, 64, 256]
            .iter()
            .map(|&n| {
                let mut sql = String::from(if numbered {
                    "INSERT INTO "
                } else {
                    "INSERT OR IGNORE INTO "
                });
                sql.push_str(INSERT_INTO);
                for i in 0..n {
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    sql.push('(');
                    for c in 0..LEDGER_COLUMNS {
                        if c > 0 {
                            sql.push_str(", ");
                        }
                        if numbered {
                            sql.push_str(&format!("${}", i * LEDGER_COLUMNS + c + 1));
                        } else {
                            sql.push('?');
                        }
                    }
                    sql.push(')');
                }
                if numbered {
                    sql.push_str(" ON CONFLICT (request_id) DO NOTHING");
                }
                (n, sql)
            })
            .collect()
    };
    let all = SQL.get_or_init(|| [build(true), build(false)]);
    let table = &all[usize::from(backend == crate::Backend::Sqlite)];
    table
        .iter()
        .find(|(n, _)| *n == rows)
        .or(table.first())
        .map_or("", |(_, s)| s.as_str())
}

/// The rows of the next statement for `left` rows to write: the largest size that fits (20
/// columns × 256 rows stays below SQLite's parameter limit).
fn statement_rows(left: usize) -> usize {
    [256, 64, 16, 4, 1]
        .into_iter()
        .find(|&n| n <= left)
        .unwrap_or(1)
}

/// Dimensions a usage report can group by.
pub const GROUP_BY: &[&str] = &["key", "team", "model", "provider", "day"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageQuery {
    /// Some of [`GROUP_BY`].
    pub group_by: Vec<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub key_id: Option<String>,
    pub team: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    pub key: Option<String>,
    pub team: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    /// `YYYY-MM-DD` (UTC).
    pub day: Option<String>,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cost_micros: i64,
    /// Requests whose price was unknown (not in `cost_micros`).
    pub unpriced_requests: i64,
    /// Requests answered from the response cache (in `requests`, at no cost).
    pub cache_hits: i64,
}

pub use tollway_core::days::{civil_from_days, day_string, days_from_civil, parse_day};

/// One row's values, in [`INSERT_INTO`]'s order.
fn bind_row<'q>(
    args: &mut AnyArguments<'q>,
    r: &'q LedgerRow,
) -> std::result::Result<(), sqlx::error::BoxDynError> {
    args.add(r.request_id.as_str())?;
    args.add(r.ts_ms)?;
    args.add(r.key_id.as_deref())?;
    args.add(r.team.as_deref())?;
    args.add(r.model.as_str())?;
    args.add(r.provider.as_str())?;
    args.add(r.deployment.as_str())?;
    args.add(r.api.as_str())?;
    args.add(r.status)?;
    args.add(i64::from(r.stream))?;
    args.add(r.attempts)?;
    args.add(r.latency_ms)?;
    args.add(r.input_tokens)?;
    args.add(r.output_tokens)?;
    args.add(r.cache_read_tokens)?;
    args.add(r.cache_write_tokens)?;
    args.add(r.reasoning_tokens)?;
    args.add(r.cost_micros)?;
    args.add(i64::from(r.cost_estimated))?;
    args.add(i64::from(r.cache_hit))?;
    Ok(())
}

impl Store {
    /// Writes rows in one transaction; rows already present (same request id) are skipped.
    ///
    /// Multi-row statements of a few fixed sizes, so that each is prepared once per connection and
    /// a batch takes few round trips (to the server, or to sqlx's SQLite worker thread: one round
    /// trip per row cost two thread wake-ups per request).
    pub async fn insert_ledger(&self, rows: &[LedgerRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        let mut rest = rows;
        while !rest.is_empty() {
            let n = statement_rows(rest.len());
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            // the arguments' list sized once (binding one by one grows it step by step); strings
            // as `&str`: sqlx's `Any` driver keeps those borrowed, where a `String` is cloned
            let mut args = AnyArguments::default();
            args.reserve(n * LEDGER_COLUMNS, 0);
            for r in chunk {
                bind_row(&mut args, r).map_err(sqlx::Error::Encode)?;
            }
            sqlx::query_with(insert_sql(n, self.backend()), args)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn ledger_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM tollway_ledger")
            .fetch_one(self.pool())
            .await?)
    }

    /// One ledger row by request id.
    pub async fn ledger_row(&self, request_id: &str) -> Result<Option<LedgerRow>> {
        let sql = format!("SELECT {LEDGER_SELECT} FROM tollway_ledger WHERE request_id = $1");
        let row = sqlx::query(&sql)
            .bind(request_id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(ledger_from).transpose()
    }

    /// A page of ledger rows, newest first: at most `q.limit`, older than `q.before`, matching
    /// its filters. The key and team filters use the ledger's indexes on (key, time) and (team,
    /// time); the rest, the one on time.
    pub async fn ledger_page(&self, q: &LedgerQuery) -> Result<Vec<LedgerRow>> {
        let mut sql = format!("SELECT {LEDGER_SELECT} FROM tollway_ledger WHERE 1 = 1");
        let mut binds: Vec<BindValue> = Vec::new();
        let mut filter = |sql: &mut String, clause: &str, v: BindValue| {
            binds.push(v);
            sql.push_str(&clause.replace('#', &format!("${}", binds.len())));
        };
        if let Some((ts, id)) = &q.before {
            filter(&mut sql, " AND (ts_ms < #", BindValue::I(*ts));
            filter(&mut sql, " OR (ts_ms = #", BindValue::I(*ts));
            filter(&mut sql, " AND request_id < #))", BindValue::S(id.clone()));
        }
        if let Some(k) = &q.key_id {
            filter(&mut sql, " AND key_id = #", BindValue::S(k.clone()));
        }
        if let Some(t) = &q.team {
            filter(&mut sql, " AND team = #", BindValue::S(t.clone()));
        }
        if let Some(m) = &q.model {
            filter(&mut sql, " AND model = #", BindValue::S(m.clone()));
        }
        if let Some((lo, hi)) = q.status {
            filter(&mut sql, " AND status >= #", BindValue::I(lo));
            filter(&mut sql, " AND status <= #", BindValue::I(hi));
        }
        sql.push_str(&format!(
            " ORDER BY ts_ms DESC, request_id DESC LIMIT {}",
            q.limit.clamp(1, LEDGER_PAGE_MAX)
        ));
        let mut query = sqlx::query(&sql);
        for b in binds {
            query = match b {
                BindValue::I(i) => query.bind(i),
                BindValue::S(s) => query.bind(s),
            };
        }
        query
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(ledger_from)
            .collect()
    }

    /// Stores a client's verdict on an answer (`good` or `bad`, with an optional comment), for
    /// retraining routers. It is kept beside the ledger row (the row may still be queued).
    pub async fn add_feedback(
        &self,
        request_id: &str,
        key_id: Option<&str>,
        rating: &str,
        comment: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO tollway_feedback (request_id, ts_ms, key_id, rating, comment) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(request_id)
        .bind(crate::now_ms())
        .bind(key_id.map(str::to_string))
        .bind(rating)
        .bind(comment.map(str::to_string))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records a learned router's decision with the prompt it scored (only for routers configured
    /// to log prompts).
    pub async fn log_routing(
        &self,
        request_id: &str,
        router: &str,
        prompt: &str,
        score: f64,
        strong: bool,
        target: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO tollway_routing (request_id, ts_ms, router, prompt, score, strong, target) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (request_id) DO NOTHING",
        )
        .bind(request_id)
        .bind(crate::now_ms())
        .bind(router)
        .bind(prompt)
        .bind(score)
        .bind(i64::from(strong))
        .bind(target)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Routed prompts that clients rated: (prompt, sent to the strong model, latest rating).
    pub async fn routing_feedback(&self) -> Result<Vec<(String, bool, String)>> {
        let rows = sqlx::query(
            "SELECT r.prompt AS prompt, r.strong AS strong, f.rating AS rating \
             FROM tollway_routing r JOIN tollway_feedback f ON f.request_id = r.request_id \
             ORDER BY f.ts_ms",
        )
        .fetch_all(self.pool())
        .await?;
        let mut latest: std::collections::BTreeMap<String, (bool, String)> = Default::default();
        for r in rows {
            let prompt: String = r.try_get("prompt")?;
            let strong: i64 = r.try_get("strong")?;
            let rating: String = r.try_get("rating")?;
            latest.insert(prompt, (strong != 0, rating));
        }
        Ok(latest.into_iter().map(|(p, (s, r))| (p, s, r)).collect())
    }

    /// The latest rating given for a request, if any.
    pub async fn feedback(&self, request_id: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT rating FROM tollway_feedback WHERE request_id = $1 ORDER BY ts_ms DESC LIMIT 1",
        )
        .bind(request_id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Spend (micro-dollars) since `since_ms`, for one key, one team, or everything.
    pub async fn spend_micros(
        &self,
        key_id: Option<&str>,
        team: Option<&str>,
        since_ms: i64,
    ) -> Result<i64> {
        let mut sql = String::from(
            "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM tollway_ledger WHERE ts_ms >= $1",
        );
        let mut n = 1;
        if key_id.is_some() {
            n += 1;
            sql.push_str(&format!(" AND key_id = ${n}"));
        }
        if team.is_some() {
            n += 1;
            sql.push_str(&format!(" AND team = ${n}"));
        }
        let mut q = sqlx::query_scalar::<_, i64>(&sql).bind(since_ms);
        if let Some(k) = key_id {
            q = q.bind(k);
        }
        if let Some(t) = team {
            q = q.bind(t);
        }
        Ok(q.fetch_one(self.pool()).await?)
    }

    /// Spend and tokens grouped by the requested dimensions.
    pub async fn usage(&self, q: &UsageQuery) -> Result<Vec<UsageRow>> {
        let mut cols = Vec::new();
        for g in &q.group_by {
            let col = match g.as_str() {
                "key" => "key_id",
                "team" => "team",
                "model" => "model",
                "provider" => "provider",
                "day" => "(ts_ms / 86400000)",
                other => {
                    return Err(StoreError::Invalid(format!(
                        "cannot group by `{other}` (expected some of: {})",
                        GROUP_BY.join(", ")
                    )))
                }
            };
            if !cols.contains(&col) {
                cols.push(col);
            }
        }
        let select: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c} AS g{i}"))
            .collect();
        let mut sql = format!(
            "SELECT {}{}COUNT(*) AS requests, CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
             CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, \
             CAST(COALESCE(SUM(cache_read_tokens), 0) AS BIGINT) AS cache_read_tokens, \
             CAST(COALESCE(SUM(cache_write_tokens), 0) AS BIGINT) AS cache_write_tokens, \
             CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS cost_micros, \
             CAST(COALESCE(SUM(CASE WHEN cost_micros IS NULL THEN 1 ELSE 0 END), 0) AS BIGINT) AS unpriced, \
             CAST(COALESCE(SUM(cache_hit), 0) AS BIGINT) AS cache_hits \
             FROM tollway_ledger WHERE 1 = 1",
            select.join(", "),
            if select.is_empty() { "" } else { ", " },
        );
        let mut binds: Vec<BindValue> = Vec::new();
        if let Some(s) = q.since_ms {
            binds.push(BindValue::I(s));
            sql.push_str(&format!(" AND ts_ms >= ${}", binds.len()));
        }
        if let Some(u) = q.until_ms {
            binds.push(BindValue::I(u));
            sql.push_str(&format!(" AND ts_ms < ${}", binds.len()));
        }
        if let Some(k) = &q.key_id {
            binds.push(BindValue::S(k.clone()));
            sql.push_str(&format!(" AND key_id = ${}", binds.len()));
        }
        if let Some(t) = &q.team {
            binds.push(BindValue::S(t.clone()));
            sql.push_str(&format!(" AND team = ${}", binds.len()));
        }
        if !cols.is_empty() {
            let g: Vec<String> = (0..cols.len()).map(|i| format!("g{i}")).collect();
            sql.push_str(&format!(
                " GROUP BY {} ORDER BY {}",
                cols.join(", "),
                g.join(", ")
            ));
        }
        let mut query = sqlx::query(&sql);
        for b in binds {
            query = match b {
                BindValue::I(i) => query.bind(i),
                BindValue::S(s) => query.bind(s),
            };
        }
        let rows = query.fetch_all(self.pool()).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mut u = UsageRow {
                requests: r.try_get("requests")?,
                input_tokens: r.try_get("input_tokens")?,
                output_tokens: r.try_get("output_tokens")?,
                cache_read_tokens: r.try_get("cache_read_tokens")?,
                cache_write_tokens: r.try_get("cache_write_tokens")?,
                cost_micros: r.try_get("cost_micros")?,
                unpriced_requests: r.try_get("unpriced")?,
                cache_hits: r.try_get("cache_hits")?,
                ..UsageRow::default()
            };
            for (i, c) in cols.iter().enumerate() {
                let name = format!("g{i}");
                match *c {
                    "key_id" => u.key = r.try_get(name.as_str())?,
                    "team" => u.team = r.try_get(name.as_str())?,
                    "model" => u.model = r.try_get(name.as_str())?,
                    "provider" => u.provider = r.try_get(name.as_str())?,
                    _ => u.day = Some(day_string(r.try_get::<i64, _>(name.as_str())?)),
                }
            }
            out.push(u);
        }
        Ok(out)
    }
}

/// The columns [`ledger_from`] reads, in `SELECT` order.
const LEDGER_SELECT: &str = "request_id, ts_ms, key_id, team, model, provider, deployment, api, \
    status, stream, attempts, latency_ms, input_tokens, output_tokens, cache_read_tokens, \
    cache_write_tokens, reasoning_tokens, cost_micros, cost_estimated, cache_hit";

/// The most rows one [`Store::ledger_page`] returns.
pub const LEDGER_PAGE_MAX: u32 = 500;

/// Which rows [`Store::ledger_page`] returns.
#[derive(Debug, Clone, Default)]
pub struct LedgerQuery {
    /// At most this many (1 to [`LEDGER_PAGE_MAX`]).
    pub limit: u32,
    /// Only rows older than this one (its time and request id): the previous page's last.
    pub before: Option<(i64, String)>,
    pub key_id: Option<String>,
    pub team: Option<String>,
    /// The public model name asked for.
    pub model: Option<String>,
    /// Statuses in this range, both ends included.
    pub status: Option<(i64, i64)>,
}

fn ledger_from(r: &sqlx::any::AnyRow) -> Result<LedgerRow> {
    Ok(LedgerRow {
        request_id: r.try_get("request_id")?,
        ts_ms: r.try_get("ts_ms")?,
        key_id: r.try_get("key_id")?,
        team: r.try_get("team")?,
        model: r.try_get("model")?,
        provider: r.try_get("provider")?,
        deployment: r.try_get("deployment")?,
        api: r.try_get("api")?,
        status: r.try_get("status")?,
        stream: r.try_get::<i64, _>("stream")? != 0,
        attempts: r.try_get("attempts")?,
        latency_ms: r.try_get("latency_ms")?,
        input_tokens: r.try_get("input_tokens")?,
        output_tokens: r.try_get("output_tokens")?,
        cache_read_tokens: r.try_get("cache_read_tokens")?,
        cache_write_tokens: r.try_get("cache_write_tokens")?,
        reasoning_tokens: r.try_get("reasoning_tokens")?,
        cost_micros: r.try_get("cost_micros")?,
        cost_estimated: r.try_get::<i64, _>("cost_estimated")? != 0,
        cache_hit: r.try_get::<i64, _>("cache_hit")? != 0,
    })
}

enum BindValue {
    I(i64),
    S(String),
}

/// The ledger writer's own connection to a SQLite file, through rusqlite rather than sqlx.
///
/// sqlx runs SQLite on a worker thread behind its async interface: each row's values were turned
/// into sqlx's `Any` arguments, converted to SQLite's, copied to own their strings for the hop
/// to the worker, and bound there, about 10 k instructions per row beside SQLite's own work
/// (callgrind). Here the writer binds the row's fields straight into the same multi-row
/// `INSERT OR IGNORE` statements, prepared once, on a blocking thread. The gateway's other
/// queries keep the sqlx pool; SQLite's WAL mode lets them read while this connection writes,
/// and the two wait for each other's writes (busy timeout), as two processes would.
struct SqliteLedger {
    conn: rusqlite::Connection,
}

impl SqliteLedger {
    fn open(path: &std::path::Path) -> rusqlite::Result<SqliteLedger> {
        use rusqlite::OpenFlags;
        let conn = rusqlite::Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        for setting in crate::SQLITE_SETTINGS {
            // (`execute_batch`: some settings answer with a row, the new value)
            conn.execute_batch(setting)?;
        }
        conn.set_prepared_statement_cache_capacity(8);
        Ok(SqliteLedger { conn })
    }

    /// Writes rows in one transaction; rows already present (same request id) are skipped.
    fn insert(&mut self, rows: &[LedgerRow]) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut rest = rows;
        while !rest.is_empty() {
            let n = statement_rows(rest.len());
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let mut st = tx.prepare_cached(insert_sql(n, crate::Backend::Sqlite))?;
            let mut i = 0;
            let mut bind = |v: &dyn rusqlite::ToSql| {
                i += 1;
                st.raw_bind_parameter(i, v)
            };
            for r in chunk {
                // the order of INSERT_INTO's columns, as bind_row
                bind(&r.request_id)?;
                bind(&r.ts_ms)?;
                bind(&r.key_id)?;
                bind(&r.team)?;
                bind(&r.model)?;
                bind(&r.provider)?;
                bind(&r.deployment)?;
                bind(&r.api)?;
                bind(&r.status)?;
                bind(&r.stream)?;
                bind(&r.attempts)?;
                bind(&r.latency_ms)?;
                bind(&r.input_tokens)?;
                bind(&r.output_tokens)?;
                bind(&r.cache_read_tokens)?;
                bind(&r.cache_write_tokens)?;
                bind(&r.reasoning_tokens)?;
                bind(&r.cost_micros)?;
                bind(&r.cost_estimated)?;
                bind(&r.cache_hit)?;
            }
            st.raw_execute()?;
        }
        tx.commit()
    }
}

/// Where the writer puts its batches: the store's pool, or its own SQLite connection.
enum Sink {
    Pool(Store),
    /// `None` only while a batch is being written on the blocking thread.
    Sqlite(Option<SqliteLedger>, Store),
}

impl Sink {
    fn new(store: Store) -> Sink {
        let Some(path) = store.sqlite_file() else {
            return Sink::Pool(store);
        };
        match SqliteLedger::open(path) {
            Ok(ledger) => Sink::Sqlite(Some(ledger), store),
            Err(e) => {
                tracing::warn!(error = %e, "ledger writer: own SQLite connection failed; writing through the pool");
                Sink::Pool(store)
            }
        }
    }

    /// Writes `rows`, and hands them back (for a retry if the write failed).
    async fn write(&mut self, rows: Vec<LedgerRow>) -> (Vec<LedgerRow>, Result<()>) {
        match self {
            Sink::Pool(store) => {
                let r = store.insert_ledger(&rows).await;
                (rows, r)
            }
            Sink::Sqlite(slot, store) => {
                let ledger = match slot.take() {
                    Some(l) => l,
                    // the last write's thread panicked with the connection: open another
                    None => match store.sqlite_file().map(SqliteLedger::open) {
                        Some(Ok(l)) => l,
                        Some(Err(e)) => return (rows, Err(e.into())),
                        None => return (rows, Err(StoreError::Invalid("no SQLite file".into()))),
                    },
                };
                let n = rows.len();
                let done = tokio::task::spawn_blocking(move || {
                    let mut ledger = ledger;
                    // a panic must not take the rows with it
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        ledger.insert(&rows)
                    }));
                    match r {
                        Ok(r) => (Some(ledger), rows, r.map_err(StoreError::from)),
                        Err(_) => (
                            None,
                            rows,
                            Err(StoreError::Invalid("the ledger insert panicked".into())),
                        ),
                    }
                })
                .await;
                match done {
                    Ok((ledger, rows, r)) => {
                        *slot = ledger;
                        (rows, r)
                    }
                    // only if the runtime shuts down before the thread started: the rows went
                    // with the task, so say how many
                    Err(e) => {
                        tracing::error!(rows = n, error = %e, "ledger rows lost: the runtime stopped before they were written");
                        (
                            Vec::new(),
                            Err(StoreError::Invalid(format!("ledger insert not run: {e}"))),
                        )
                    }
                }
            }
        }
    }
}

/// Batches ledger rows off the request path: `record` never blocks and never drops; a background
/// task writes whatever arrived every `flush_every` (or sooner when `batch` rows are waiting).
/// `shutdown` writes everything still queued. A failed write is retried with the same rows
/// (idempotent by request id) until it succeeds or shutdown gives up after a bounded time.
#[derive(Clone)]
pub struct LedgerWriter {
    tx: mpsc::UnboundedSender<LedgerRow>,
    /// Rows queued so far; every `batch`-th one wakes the writer early. Other rows do not wake
    /// it (it drains the queue on its timer), so a request costs no cross-thread wake-up.
    queued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    full: std::sync::Arc<tokio::sync::Notify>,
    batch: usize,
}

pub struct LedgerTask {
    handle: JoinHandle<u64>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl LedgerWriter {
    pub fn start(store: Store, flush_every: Duration, batch: usize) -> (LedgerWriter, LedgerTask) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let full = std::sync::Arc::new(tokio::sync::Notify::new());
        let batch = batch.max(1);
        let handle = tokio::spawn(run(store, rx, full.clone(), stop_rx, flush_every, batch));
        (
            LedgerWriter {
                tx,
                queued: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
                full,
                batch,
            },
            LedgerTask {
                handle,
                stop: stop_tx,
            },
        )
    }

    /// Queues a row. Never blocks the caller.
    pub fn record(&self, row: LedgerRow) {
        if self.tx.send(row).is_err() {
            tracing::error!("ledger writer is gone; a usage row was not recorded");
            return;
        }
        let n = self
            .queued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if n.is_multiple_of(self.batch) {
            self.full.notify_one();
        }
    }
}

impl LedgerTask {
    /// Writes everything queued so far and stops. Rows recorded afterwards are not written.
    /// Returns the number of rows written over the writer's life.
    pub async fn finish(self) -> u64 {
        let _ = self.stop.send(());
        self.handle.await.unwrap_or(0)
    }
}

async fn run(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<LedgerRow>,
    full: std::sync::Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    flush_every: Duration,
    batch: usize,
) -> u64 {
    let mut sink = Sink::new(store);
    let mut pending: Vec<LedgerRow> = Vec::with_capacity(batch);
    let mut written = 0u64;
    let mut tick = tokio::time::interval(flush_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = true;
    while open {
        tokio::select! {
            _ = full.notified() => {}
            _ = &mut stop, if open => open = false,
            _ = tick.tick() => {}
        }
        // take what is queued: at most a few batches per statement group, the rest next round
        loop {
            match rx.try_recv() {
                Ok(row) => {
                    pending.push(row);
                    if pending.len() >= batch * 4 && open {
                        break;
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                // every writer handle is gone: write what is left and stop
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if pending.is_empty() {
            continue;
        }
        let mut delay = Duration::from_millis(50);
        let mut tries = 0;
        loop {
            let (rows, result) = sink.write(std::mem::take(&mut pending)).await;
            pending = rows;
            match result {
                Ok(()) => {
                    written += pending.len() as u64;
                    pending.clear();
                    break;
                }
                Err(e) => {
                    tries += 1;
                    tracing::error!(rows = pending.len(), error = %e, "ledger flush failed; retrying");
                    if !open && tries >= 20 {
                        tracing::error!(
                            rows = pending.len(),
                            "giving up on ledger rows at shutdown"
                        );
                        pending.clear();
                        break;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn row(
        id: &str,
        key: &str,
        team: &str,
        model: &str,
        ts_ms: i64,
        cost: Option<i64>,
    ) -> LedgerRow {
        LedgerRow {
            request_id: id.into(),
            ts_ms,
            key_id: Some(key.into()),
            team: Some(team.into()),
            model: model.into(),
            provider: "p".into(),
            deployment: format!("p/{model}"),
            api: "openai".into(),
            status: 200,
            input_tokens: 10,
            output_tokens: 5,
            cost_micros: cost,
            ..LedgerRow::default()
        }
    }

    #[test]
    fn days_format_as_dates() {
        assert_eq!(parse_day("2025-11-24"), Some(20_416));
        assert_eq!(parse_day("1970-01-01"), Some(0));
        assert_eq!(parse_day("2025-02-31"), None);
        assert_eq!(parse_day("nope"), None);
        assert_eq!(day_string(0), "1970-01-01");
        assert_eq!(day_string(20_416), "2025-11-24");
        assert_eq!(day_string(11_016), "2000-02-29");
    }

    async fn ledger(store: Store) {
        let day = 86_400_000;
        let rows = vec![
            row("r1", "k1", "t1", "gpt", 20_416 * day, Some(100)),
            row("r2", "k1", "t1", "claude", 20_416 * day + 5, Some(250)),
            row("r3", "k2", "t2", "gpt", 20_417 * day, None),
        ];
        store.insert_ledger(&rows).await.unwrap();
        store.insert_ledger(&rows[..1]).await.unwrap(); // idempotent
        assert_eq!(store.ledger_count().await.unwrap(), 3);
        // a multi-row statement (4 rows) holding rows already there: those are skipped, the new
        // one is written, the old ones keep their values
        let mut again = vec![rows[2].clone(), rows[0].clone(), rows[1].clone()];
        again[1].status = 500;
        again.push(row("r0", "k9", "t9", "gpt", 20_415 * day, Some(1)));
        store.insert_ledger(&again).await.unwrap();
        assert_eq!(store.ledger_count().await.unwrap(), 4);
        assert_eq!(store.ledger_row("r1").await.unwrap().unwrap(), rows[0]);
        assert_eq!(store.ledger_row("r0").await.unwrap().unwrap(), again[3]);
        sqlx::query("DELETE FROM tollway_ledger WHERE request_id = 'r0'")
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(store.ledger_row("r2").await.unwrap().unwrap(), rows[1]);
        let by_key = store
            .usage(&UsageQuery {
                group_by: vec!["key".into()],
                ..UsageQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(by_key.len(), 2);
        assert_eq!(by_key[0].key.as_deref(), Some("k1"));
        assert_eq!(by_key[0].cost_micros, 350);
        assert_eq!(by_key[0].requests, 2);
        assert_eq!(by_key[1].unpriced_requests, 1);
        let by_day_model = store
            .usage(&UsageQuery {
                group_by: vec!["day".into(), "model".into()],
                ..UsageQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(by_day_model.len(), 3);
        assert_eq!(by_day_model[0].day.as_deref(), Some("2025-11-24"));
        assert_eq!(by_day_model[2].day.as_deref(), Some("2025-11-25"));
        let total = store.usage(&UsageQuery::default()).await.unwrap();
        assert_eq!(total[0].requests, 3);
        assert_eq!(total[0].input_tokens, 30);
        assert_eq!(store.spend_micros(Some("k1"), None, 0).await.unwrap(), 350);
        assert_eq!(store.spend_micros(None, Some("t2"), 0).await.unwrap(), 0);
        assert_eq!(
            store
                .spend_micros(None, None, 20_416 * day + 1)
                .await
                .unwrap(),
            250
        );
        store
            .add_feedback("r1", Some("k1"), "bad", Some("wrong answer"))
            .await
            .unwrap();
        assert_eq!(store.feedback("r1").await.unwrap().as_deref(), Some("bad"));
        store
            .log_routing("r1", "auto", "what is 2+2", 0.2, false, "mini")
            .await
            .unwrap();
        store
            .log_routing("r2", "auto", "prove it", 0.9, true, "big")
            .await
            .unwrap();
        let fb = store.routing_feedback().await.unwrap();
        assert_eq!(
            fb,
            vec![("what is 2+2".to_string(), false, "bad".to_string())]
        );
        assert_eq!(store.feedback("r2").await.unwrap(), None);
        assert!(store
            .usage(&UsageQuery {
                group_by: vec!["colour".into()],
                ..UsageQuery::default()
            })
            .await
            .is_err());

        // the writer loses nothing: every queued row is in the table after finish
        let (w, task) = LedgerWriter::start(store.clone(), Duration::from_millis(200), 64);
        for i in 0..500 {
            w.record(row(&format!("w{i}"), "k3", "t3", "gpt", 1, Some(1)));
        }
        drop(w);
        assert_eq!(task.finish().await, 500);
        assert_eq!(store.spend_micros(Some("k3"), None, 0).await.unwrap(), 500);
        // through the writer (on a SQLite file: its own connection), every column round-trips,
        // NULLs and flags included, and rows already written are skipped, their values kept
        let full = LedgerRow {
            request_id: "w-full".into(),
            ts_ms: 1_700_000_000_123,
            key_id: None,
            team: None,
            model: "m-é".into(),
            provider: "anthropic-main".into(),
            deployment: "anthropic-main/claude".into(),
            api: "anthropic".into(),
            status: 499,
            stream: true,
            attempts: 3,
            latency_ms: 1234,
            input_tokens: 11,
            output_tokens: 22,
            cache_read_tokens: 33,
            cache_write_tokens: 44,
            reasoning_tokens: 55,
            cost_micros: None,
            cost_estimated: true,
            cache_hit: true,
        };
        let (w, task) = LedgerWriter::start(store.clone(), Duration::from_millis(200), 64);
        w.record(full.clone());
        let mut changed = row("w7", "k3", "t3", "gpt", 1, Some(1000));
        changed.status = 500;
        w.record(changed);
        w.record(row("w-new", "k3", "t3", "gpt", 1, Some(1)));
        drop(w);
        assert_eq!(task.finish().await, 3);
        assert_eq!(store.ledger_row("w-full").await.unwrap().unwrap(), full);
        assert_eq!(
            store.ledger_row("w7").await.unwrap().unwrap(),
            row("w7", "k3", "t3", "gpt", 1, Some(1))
        );
        assert_eq!(store.spend_micros(Some("k3"), None, 0).await.unwrap(), 501);
        // one batch of an odd size uses every statement size (256 + 64 + 16 + 4×3 + 1×2 on
        // PostgreSQL), and re-inserting an overlapping batch adds only the new rows
        let batch: Vec<LedgerRow> = (0..350)
            .map(|i| row(&format!("b{i}"), "k4", "t4", "gpt", 2, Some(2)))
            .collect();
        store.insert_ledger(&batch).await.unwrap();
        let more: Vec<LedgerRow> = (300..420)
            .map(|i| row(&format!("b{i}"), "k4", "t4", "gpt", 2, Some(2)))
            .collect();
        store.insert_ledger(&more).await.unwrap();
        assert_eq!(
            store.spend_micros(Some("k4"), None, 0).await.unwrap(),
            2 * 420
        );
        assert_eq!(store.ledger_row("b349").await.unwrap().unwrap(), batch[349]);
    }

    #[tokio::test]
    async fn a_sqlite_files_writer_has_its_own_connection() {
        let file = testing::sqlite().await;
        assert!(matches!(Sink::new(file.clone()), Sink::Sqlite(Some(_), _)));
        let memory = Store::connect("sqlite::memory:").await.unwrap();
        assert!(memory.sqlite_file().is_none());
        assert!(matches!(Sink::new(memory), Sink::Pool(_)));

        // the writer's connection and the pool write to the same file at once: each waits for
        // the other's lock, and nothing is lost
        let (w, task) = LedgerWriter::start(file.clone(), Duration::from_millis(1), 16);
        let feedback = async {
            for i in 0..200 {
                file.add_feedback(&format!("c{i}"), None, "bad", None)
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        };
        let rows = async {
            for i in 0..2000 {
                w.record(row(&format!("c{i}"), "k", "t", "gpt", 1, Some(1)));
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        };
        tokio::join!(feedback, rows);
        drop(w);
        assert_eq!(task.finish().await, 2000);
        assert_eq!(file.ledger_count().await.unwrap(), 2000);
        assert_eq!(file.feedback("c199").await.unwrap().as_deref(), Some("bad"));
    }

    /// A failed write keeps its rows and is retried until it succeeds.
    async fn failed_writes_are_retried(store: Store) {
        let (w, task) = LedgerWriter::start(store.clone(), Duration::from_millis(5), 4);
        sqlx::query("ALTER TABLE tollway_ledger RENAME TO tollway_ledger_away")
            .execute(store.pool())
            .await
            .unwrap();
        for i in 0..20 {
            w.record(row(&format!("f{i}"), "kf", "tf", "gpt", 1, Some(1)));
        }
        // the writer meets the missing table and backs off (50 ms, then 100 ms...)
        tokio::time::sleep(Duration::from_millis(120)).await;
        sqlx::query("ALTER TABLE tollway_ledger_away RENAME TO tollway_ledger")
            .execute(store.pool())
            .await
            .unwrap();
        drop(w);
        assert_eq!(task.finish().await, 20);
        assert_eq!(store.spend_micros(Some("kf"), None, 0).await.unwrap(), 20);
    }

    #[tokio::test]
    async fn failed_writes_are_retried_on_sqlite() {
        failed_writes_are_retried(testing::sqlite().await).await;
    }

    #[tokio::test]
    async fn failed_writes_are_retried_on_postgres() {
        failed_writes_are_retried(testing::postgres().await).await;
    }

    async fn pages(store: Store) {
        // 7 rows over 3 instants (ties broken by request id), two keys, one failure
        let mut rows: Vec<LedgerRow> = (0..7)
            .map(|i| {
                let key = if i % 2 == 0 { "ka" } else { "kb" };
                row(
                    &format!("r{i}"),
                    key,
                    "t",
                    "gpt",
                    1_000 + (i / 3) as i64,
                    Some(1),
                )
            })
            .collect();
        rows[4].status = 502;
        rows[5].model = "claude".into();
        store.insert_ledger(&rows).await.unwrap();
        let ids = |page: &[LedgerRow]| {
            page.iter()
                .map(|r| r.request_id.clone())
                .collect::<Vec<_>>()
        };
        let q = |limit| LedgerQuery {
            limit,
            ..LedgerQuery::default()
        };
        // newest first, paged by the last row's (time, id), nothing skipped or repeated
        let mut seen = Vec::new();
        let mut page = store.ledger_page(&q(3)).await.unwrap();
        while !page.is_empty() {
            seen.extend(ids(&page));
            let last = page.last().unwrap();
            let next = LedgerQuery {
                before: Some((last.ts_ms, last.request_id.clone())),
                ..q(3)
            };
            page = store.ledger_page(&next).await.unwrap();
        }
        assert_eq!(seen, ["r6", "r5", "r4", "r3", "r2", "r1", "r0"]);
        assert_eq!(store.ledger_page(&q(100)).await.unwrap()[2], rows[4]);
        // filters
        let only = |f: fn(&mut LedgerQuery)| {
            let mut q = q(100);
            f(&mut q);
            q
        };
        let by_key = store
            .ledger_page(&only(|q| q.key_id = Some("kb".into())))
            .await
            .unwrap();
        assert_eq!(ids(&by_key), ["r5", "r3", "r1"]);
        let failed = store
            .ledger_page(&only(|q| q.status = Some((400, 599))))
            .await
            .unwrap();
        assert_eq!(ids(&failed), ["r4"]);
        let claude = store
            .ledger_page(&only(|q| q.model = Some("claude".into())))
            .await
            .unwrap();
        assert_eq!(ids(&claude), ["r5"]);
        let none = store
            .ledger_page(&only(|q| q.team = Some("other".into())))
            .await
            .unwrap();
        assert!(none.is_empty());
        // a limit is kept within 1..=LEDGER_PAGE_MAX
        assert_eq!(store.ledger_page(&q(0)).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn ledger_pages_on_sqlite() {
        pages(testing::sqlite().await).await;
    }

    #[tokio::test]
    async fn ledger_pages_on_postgres() {
        pages(testing::postgres().await).await;
    }

    #[tokio::test]
    async fn ledger_on_sqlite() {
        ledger(testing::sqlite().await).await;
    }

    #[tokio::test]
    async fn ledger_on_postgres() {
        ledger(testing::postgres().await).await;
    }
}
