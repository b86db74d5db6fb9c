//! Storage for virtual keys and the usage ledger: SQLite (WAL) by default, PostgreSQL by URL, both
//! through one interface (`sqlx`'s `Any` driver) with the same migrations. Nothing here is on a
//! request's path: keys are read into a cache by the gateway, and ledger rows arrive in batches
//! from [`LedgerWriter`], which flushes off the request path and loses nothing on shutdown (into
//! a SQLite file through a connection of its own, opened with `rusqlite`).

mod keys;
mod ledger;

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;
use sqlx::Executor;

pub use keys::{
    config_key_id, digest_from_hex, generate_secret, hash_secret, key_scope, secret_digest,
    DeclaredKey, KeyRecord, KeySync, NewKey, SECRET_PREFIX,
};
pub use ledger::{
    civil_from_days, day_string, days_from_civil, parse_day, LedgerQuery, LedgerRow, LedgerTask,
    LedgerWriter, UsageQuery, UsageRow, GROUP_BY, LEDGER_PAGE_MAX,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Db(#[from] sqlx::Error),
    #[error("storage: {0}")]
    Invalid(String),
    /// From the ledger writer's own SQLite connection.
    #[error("storage: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool to the configured database, migrated to the current schema.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The database file of a SQLite store that is a writable file (not in memory, not read-only):
    /// the ledger writer opens its own connection to it.
    sqlite_file: Option<std::sync::Arc<std::path::Path>>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Every schema change, in order. Each runs once, in a transaction, recorded in `tollway_schema`.
/// The SQL is the common subset of SQLite and PostgreSQL (TEXT, BIGINT, ON CONFLICT).
const MIGRATIONS: &[&str] = &[
    // 1: keys and ledger
    "CREATE TABLE tollway_keys (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        name TEXT NOT NULL,
        team TEXT,
        models TEXT NOT NULL,
        providers TEXT NOT NULL,
        rpm BIGINT,
        tpm BIGINT,
        budget_micros BIGINT,
        budget_period TEXT,
        created_ms BIGINT NOT NULL,
        expires_ms BIGINT,
        revoked_ms BIGINT
    );
    CREATE TABLE tollway_ledger (
        request_id TEXT PRIMARY KEY,
        ts_ms BIGINT NOT NULL,
        key_id TEXT,
        team TEXT,
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        deployment TEXT NOT NULL,
        api TEXT NOT NULL,
        status BIGINT NOT NULL,
        stream BIGINT NOT NULL,
        attempts BIGINT NOT NULL,
        latency_ms BIGINT NOT NULL,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        cache_read_tokens BIGINT NOT NULL,
        cache_write_tokens BIGINT NOT NULL,
        reasoning_tokens BIGINT NOT NULL,
        cost_micros BIGINT,
        cost_estimated BIGINT NOT NULL,
        feedback TEXT
    );
    CREATE INDEX tollway_ledger_ts ON tollway_ledger (ts_ms);
    CREATE INDEX tollway_ledger_key_ts ON tollway_ledger (key_id, ts_ms);
    CREATE INDEX tollway_ledger_team_ts ON tollway_ledger (team, ts_ms)",
    // 2: client feedback on answers, joined to the ledger by request id
    "CREATE TABLE tollway_feedback (
        request_id TEXT NOT NULL,
        ts_ms BIGINT NOT NULL,
        key_id TEXT,
        rating TEXT NOT NULL,
        comment TEXT
    );
    CREATE INDEX tollway_feedback_request ON tollway_feedback (request_id)",
    // 3: keys restricted to deployment regions
    "ALTER TABLE tollway_keys ADD COLUMN regions TEXT NOT NULL DEFAULT '[]'",
    // 4: what learned routers decided, for routers that log prompts (retraining from feedback)
    "CREATE TABLE tollway_routing (
        request_id TEXT PRIMARY KEY,
        ts_ms BIGINT NOT NULL,
        router TEXT NOT NULL,
        prompt TEXT NOT NULL,
        score DOUBLE PRECISION NOT NULL,
        strong BIGINT NOT NULL,
        target TEXT NOT NULL
    )",
    // 5: per-key overrides of learned routers' knobs (a JSON object: router name → knob)
    "ALTER TABLE tollway_keys ADD COLUMN routing TEXT NOT NULL DEFAULT '{}'",
    // 6: answers served from the response cache (no provider asked, no cost)
    "ALTER TABLE tollway_ledger ADD COLUMN cache_hit BIGINT NOT NULL DEFAULT 0",
    // 7: keys declared in the config file (`keys:`), which the file manages
    "ALTER TABLE tollway_keys ADD COLUMN source TEXT NOT NULL DEFAULT 'api'",
];

/// The settings of every SQLite connection: the pool's, and the ledger writer's own.
pub(crate) const SQLITE_SETTINGS: &[&str] = &[
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA busy_timeout = 5000",
    // statement journals of multi-row inserts stay off the disk
    "PRAGMA temp_store = MEMORY",
];

impl Store {
    /// Connects (creating a SQLite file if needed) and runs pending migrations.
    /// `sqlite://PATH`, `sqlite::memory:`, `postgres://...`.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let mut sqlite_file = None;
        let (backend, url) = if url.starts_with("sqlite:") {
            let u = if url.contains(":memory:") || url.contains("mode=") {
                url.to_string()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            if !u.contains(":memory:") && !u.contains("mode=memory") && !u.contains("mode=ro") {
                // the path as sqlx reads it from the URL (percent-decoded, relative to the cwd)
                let options =
                    <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&u)?;
                sqlite_file = Some(std::sync::Arc::from(options.get_filename()));
            }
            (Backend::Sqlite, u)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(StoreError::Invalid(
                "the storage URL must start with sqlite: or postgres://".into(),
            ));
        };
        // SQLite allows one writer at a time; more connections only wait on each other.
        let max = if backend == Backend::Sqlite { 1 } else { 8 };
        let memory = url.contains(":memory:");
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            // An in-memory database lives as long as its one connection: keep it.
            .min_connections(u32::from(memory))
            .idle_timeout((!memory).then_some(std::time::Duration::from_secs(600)))
            .max_lifetime((!memory).then_some(std::time::Duration::from_secs(1800)))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        for setting in SQLITE_SETTINGS {
                            conn.execute(*setting).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let store = Store {
            pool,
            backend,
            sqlite_file,
        };
        store.migrate().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The file of a writable SQLite database (`None` for PostgreSQL, in-memory or read-only).
    pub fn sqlite_file(&self) -> Option<&std::path::Path> {
        self.sqlite_file.as_deref()
    }

    async fn migrate(&self) -> Result<()> {
        self.pool
            .execute("CREATE TABLE IF NOT EXISTS tollway_schema (version BIGINT NOT NULL)")
            .await?;
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            // Two instances starting at once: one migrates, the other waits.
            sqlx::query("SELECT pg_advisory_xact_lock(7461247)")
                .execute(&mut *tx)
                .await?;
        }
        let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM tollway_schema")
            .fetch_one(&mut *tx)
            .await?;
        let current = current.unwrap_or(0);
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            let version = i as i64 + 1;
            if version <= current {
                continue;
            }
            for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                tx.execute(stmt).await?;
            }
            sqlx::query("INSERT INTO tollway_schema (version) VALUES ($1)")
                .bind(version)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates a fresh, empty schema in a PostgreSQL database and returns a URL whose connections use
/// it: for tests (and for giving each tenant its own schema). `base` is a `postgres://` URL.
pub async fn fresh_postgres_schema(base: &str, name: &str) -> Result<String> {
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(StoreError::Invalid(format!(
            "`{name}` is not a plain schema name"
        )));
    }
    sqlx::any::install_default_drivers();
    let admin = AnyPoolOptions::new()
        .max_connections(1)
        .connect(base)
        .await?;
    admin
        .execute(format!("CREATE SCHEMA IF NOT EXISTS {name}").as_str())
        .await?;
    admin.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok(format!("{base}{sep}options=-csearch_path%3D{name}"))
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A fresh SQLite database in a temporary file.
    pub async fn sqlite() -> Store {
        let dir = std::env::temp_dir().join(format!(
            "tollway-store-{}-{}",
            std::process::id(),
            // a random name (not shaped like a key, which would look like a leaked secret)
            &crate::keys::hash_secret(&crate::keys::generate_secret())[..16]
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Store::connect(&format!("sqlite://{}", dir.join("t.db").display()))
            .await
            .unwrap()
    }

    /// A fresh schema in the local PostgreSQL (`TOLLWAY_TEST_POSTGRES`, default
    /// `postgres://postgres@127.0.0.1:5432/test`).
    pub async fn postgres() -> Store {
        let base = std::env::var("TOLLWAY_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!(
            "t_{}",
            &crate::keys::generate_secret()[6..18].to_lowercase()
        );
        sqlx::any::install_default_drivers();
        let admin = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&base)
            .await
            .unwrap();
        admin
            .execute(format!("CREATE SCHEMA {schema}").as_str())
            .await
            .unwrap();
        admin.close().await;
        let sep = if base.contains('?') { '&' } else { '?' };
        Store::connect(&format!("{base}{sep}options=-csearch_path%3D{schema}"))
            .await
            .unwrap()
    }
}
