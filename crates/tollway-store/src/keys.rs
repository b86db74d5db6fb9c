//! Virtual keys: generated with 240 bits from the OS's random source, shown once, stored as a
//! SHA-256 hash (the secret is high-entropy, so a fast hash is as safe as a slow one and keeps
//! lookups cheap). A key belongs to a team and carries its allowed models and providers, rate
//! limits, budget and expiry.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::{now_ms, Result, Store, StoreError};

pub const SECRET_PREFIX: &str = "sk-tw-";
const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A new secret: `sk-tw-` and 40 base-62 characters (~238 bits).
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 40];
    if getrandom::getrandom(&mut bytes).is_err() {
        // No OS randomness is not something to limp on with a weak key.
        panic!("the operating system's random source is unavailable");
    }
    let mut s = String::with_capacity(SECRET_PREFIX.len() + 40);
    s.push_str(SECRET_PREFIX);
    for b in bytes {
        // 256 % 62 bias is < 2^-5 per char on 238 bits; irrelevant for a bearer secret.
        s.push(ALPHABET[usize::from(b) % ALPHABET.len()] as char);
    }
    s
}

/// Hex SHA-256 of a secret: what is stored and looked up.
pub fn hash_secret(secret: &str) -> String {
    let digest = secret_digest(secret);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// The SHA-256 of a secret, as bytes: what the gateway's key cache is keyed by (no hex text to
/// build on every request). [`hash_secret`] is its hex form, as stored.
pub fn secret_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The bytes of a stored hex hash ([`hash_secret`]); `None` if it is not 64 hex digits.
pub fn digest_from_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// A stored key (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRecord {
    pub id: String,
    /// The secret's first characters, to recognise it (`sk-tw-AbCd…`).
    pub prefix: String,
    pub name: String,
    pub team: Option<String>,
    /// Public model names this key may use; empty: all.
    pub models: Vec<String>,
    /// Provider accounts this key's requests may reach; empty: all.
    pub providers: Vec<String>,
    /// Deployment regions this key's requests may reach; empty: all.
    pub regions: Vec<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub budget_micros: Option<i64>,
    /// `daily`, `weekly`, `monthly` or `total`.
    pub budget_period: Option<String>,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    /// Per learned router (by name), knobs that replace the router's own for this key's requests
    /// (`{"auto": {"strong_share": 0.1}}`); the gateway validates them.
    pub routing: serde_json::Map<String, serde_json::Value>,
    /// Declared in the config file (`keys:`), which manages it: the admin API and the command
    /// line do not revoke or rotate it.
    pub from_config: bool,
    #[serde(skip)]
    pub hash: String,
    /// `key:<id>`: how rate limits and budgets name this key, built once when the record is
    /// made (not on every request).
    #[serde(skip)]
    pub limit_scope: std::sync::Arc<str>,
}

impl KeyRecord {
    /// A key that is not revoked, with `k`'s settings.
    fn new(
        id: String,
        hash: String,
        prefix: String,
        k: NewKey,
        created_ms: i64,
        from_config: bool,
    ) -> KeyRecord {
        KeyRecord {
            limit_scope: key_scope(&id),
            id,
            hash,
            prefix,
            name: k.name,
            team: k.team,
            models: k.models,
            providers: k.providers,
            regions: k.regions,
            rpm: k.rpm,
            tpm: k.tpm,
            budget_micros: k.budget_micros,
            budget_period: k.budget_period,
            created_ms,
            expires_ms: k.expires_ms,
            revoked_ms: None,
            routing: k.routing,
            from_config,
        }
    }

    pub fn active(&self, now_ms: i64) -> bool {
        self.revoked_ms.is_none() && self.expires_ms.is_none_or(|e| now_ms < e)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewKey {
    pub name: String,
    pub team: Option<String>,
    pub models: Vec<String>,
    pub providers: Vec<String>,
    pub regions: Vec<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub budget_micros: Option<i64>,
    pub budget_period: Option<String>,
    pub expires_ms: Option<i64>,
    pub routing: serde_json::Map<String, serde_json::Value>,
}

const PERIODS: &[&str] = &["daily", "weekly", "monthly", "total"];

fn list_text(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn list_parse(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn opt_u64(v: Option<i64>) -> Option<u64> {
    v.and_then(|x| u64::try_from(x).ok())
}

fn to_i64(v: Option<u64>) -> Option<i64> {
    v.map(|x| i64::try_from(x).unwrap_or(i64::MAX))
}

/// `key:<id>`, the name of a key's rate limits and budgets ([`KeyRecord::limit_scope`]).
pub fn key_scope(id: &str) -> std::sync::Arc<str> {
    format!("key:{id}").into()
}

fn record(row: &sqlx::any::AnyRow) -> Result<KeyRecord> {
    let id: String = row.try_get("id")?;
    Ok(KeyRecord {
        limit_scope: key_scope(&id),
        id,
        hash: row.try_get("hash")?,
        prefix: row.try_get("prefix")?,
        name: row.try_get("name")?,
        team: row.try_get("team")?,
        models: list_parse(&row.try_get::<String, _>("models")?),
        providers: list_parse(&row.try_get::<String, _>("providers")?),
        regions: list_parse(&row.try_get::<String, _>("regions")?),
        rpm: opt_u64(row.try_get("rpm")?),
        tpm: opt_u64(row.try_get("tpm")?),
        budget_micros: row.try_get("budget_micros")?,
        budget_period: row.try_get("budget_period")?,
        created_ms: row.try_get("created_ms")?,
        expires_ms: row.try_get("expires_ms")?,
        revoked_ms: row.try_get("revoked_ms")?,
        routing: serde_json::from_str(&row.try_get::<String, _>("routing")?).unwrap_or_default(),
        from_config: row.try_get::<String, _>("source")? == "config",
    })
}

/// The key table's columns, in the order [`record`] reads and [`insert`] binds them.
macro_rules! key_columns {
    () => {
        "id, hash, prefix, name, team, models, providers, rpm, tpm, budget_micros, budget_period, \
         created_ms, expires_ms, revoked_ms, regions, routing, source"
    };
}
const COLUMNS: &str = key_columns!();

/// A key declared in the config file: its settings, and its secret's hash and shown prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredKey {
    pub key: NewKey,
    /// Hex SHA-256 of the secret ([`hash_secret`]).
    pub hash: String,
    pub prefix: String,
}

/// What [`Store::sync_config_keys`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeySync {
    pub created: usize,
    pub updated: usize,
    pub revoked: usize,
}

/// The id of the key the config file declares under `name`: the same for as long as the name
/// stays, whatever its secret or settings, so that its spend and budget carry across changes.
pub fn config_key_id(name: &str) -> String {
    format!(
        "key_cfg_{}",
        &hash_secret(&format!("tollway-config-key:{name}"))[..16]
    )
}

fn check_budget(k: &NewKey) -> Result<()> {
    if let Some(p) = &k.budget_period {
        if !PERIODS.contains(&p.as_str()) {
            return Err(StoreError::Invalid(format!(
                "budget period `{p}` must be one of daily, weekly, monthly, total"
            )));
        }
    }
    if k.budget_period.is_some() != k.budget_micros.is_some() {
        return Err(StoreError::Invalid(
            "a budget needs both an amount and a period".into(),
        ));
    }
    Ok(())
}

/// `sql` (one of [`INSERT_KEY`], [`UPSERT_KEY`]) with `rec`'s values bound.
fn bind_key(
    sql: &'static str,
    rec: &KeyRecord,
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments<'static>> {
    sqlx::query(sql)
        .bind(rec.id.clone())
        .bind(rec.hash.clone())
        .bind(rec.prefix.clone())
        .bind(rec.name.clone())
        .bind(rec.team.clone())
        .bind(list_text(&rec.models))
        .bind(list_text(&rec.providers))
        .bind(to_i64(rec.rpm))
        .bind(to_i64(rec.tpm))
        .bind(rec.budget_micros)
        .bind(rec.budget_period.clone())
        .bind(rec.created_ms)
        .bind(rec.expires_ms)
        .bind(rec.revoked_ms)
        .bind(list_text(&rec.regions))
        .bind(serde_json::Value::Object(rec.routing.clone()).to_string())
        .bind(if rec.from_config { "config" } else { "api" })
}

macro_rules! insert_key {
    () => {
        concat!(
            "INSERT INTO tollway_keys (",
            key_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
        )
    };
}
const INSERT_KEY: &str = insert_key!();
/// A key the config file declares: inserted, or its row replaced but for when it was created.
const UPSERT_KEY: &str = concat!(
    insert_key!(),
    " ON CONFLICT (id) DO UPDATE SET hash = excluded.hash, prefix = excluded.prefix, \
     name = excluded.name, team = excluded.team, models = excluded.models, \
     providers = excluded.providers, rpm = excluded.rpm, tpm = excluded.tpm, \
     budget_micros = excluded.budget_micros, budget_period = excluded.budget_period, \
     expires_ms = excluded.expires_ms, revoked_ms = excluded.revoked_ms, \
     regions = excluded.regions, routing = excluded.routing, source = excluded.source"
);

impl Store {
    /// Creates a key; returns it with its secret, which is never stored and cannot be shown again.
    pub async fn create_key(&self, k: NewKey) -> Result<(KeyRecord, String)> {
        check_budget(&k)?;
        let secret = generate_secret();
        let id = format!("key_{}", &hash_secret(&secret)[..16]);
        let prefix = format!("{}…", &secret[..SECRET_PREFIX.len() + 4]);
        let rec = KeyRecord::new(id, hash_secret(&secret), prefix, k, now_ms(), false);
        bind_key(INSERT_KEY, &rec).execute(self.pool()).await?;
        Ok((rec, secret))
    }

    /// Every key, revoked ones included, oldest first.
    pub async fn list_keys(&self) -> Result<Vec<KeyRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tollway_keys ORDER BY created_ms, id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(record).collect()
    }

    pub async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM tollway_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// Refuses to change a key the config file manages.
    async fn not_from_config(&self, id: &str) -> Result<()> {
        match self.get_key(id).await? {
            Some(k) if k.from_config => Err(StoreError::Invalid(format!(
                "key {id} is declared in the config file (`keys.{}`): change or remove it there",
                k.name
            ))),
            _ => Ok(()),
        }
    }

    /// Revokes a key at once. `false` when there is no such (unrevoked) key.
    pub async fn revoke_key(&self, id: &str) -> Result<bool> {
        self.not_from_config(id).await?;
        let r = sqlx::query(
            "UPDATE tollway_keys SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL",
        )
        .bind(now_ms())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Gives a key a new secret (same id, team, limits and budget); the old secret stops working.
    pub async fn rotate_key(&self, id: &str) -> Result<Option<(KeyRecord, String)>> {
        self.not_from_config(id).await?;
        let secret = generate_secret();
        let hash = hash_secret(&secret);
        let prefix = format!("{}…", &secret[..SECRET_PREFIX.len() + 4]);
        let r = sqlx::query(
            "UPDATE tollway_keys SET hash = $1, prefix = $2 WHERE id = $3 AND revoked_ms IS NULL",
        )
        .bind(&hash)
        .bind(&prefix)
        .bind(id)
        .execute(self.pool())
        .await?;
        if r.rows_affected() == 0 {
            return Ok(None);
        }
        Ok(self.get_key(id).await?.map(|k| (k, secret)))
    }

    /// Makes storage hold what the config file declares (`keys:`), in one transaction: each
    /// declared key created, or updated in place (secret, settings; revived if it had been
    /// revoked), under the id its name gives ([`config_key_id`]); and every key the file
    /// declared before and declares no more, revoked. A declared secret that is another key's
    /// is refused, naming both.
    pub async fn sync_config_keys(&self, declared: &[DeclaredKey]) -> Result<KeySync> {
        for d in declared {
            check_budget(&d.key)?;
        }
        let mut tx = self.pool().begin().await?;
        let mut out = KeySync::default();
        let mut ids = Vec::with_capacity(declared.len());
        for d in declared {
            let id = config_key_id(&d.key.name);
            let clash: Option<(String, String)> =
                sqlx::query_as("SELECT id, name FROM tollway_keys WHERE hash = $1 AND id <> $2")
                    .bind(&d.hash)
                    .bind(&id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some((other, name)) = clash {
                return Err(StoreError::Invalid(format!(
                    "keys.{}: its secret is already the secret of key {other} (`{name}`)",
                    d.key.name
                )));
            }
            let row = sqlx::query(&format!("SELECT {COLUMNS} FROM tollway_keys WHERE id = $1"))
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await?;
            let old = row.as_ref().map(record).transpose()?;
            let created_ms = old.as_ref().map_or_else(now_ms, |o| o.created_ms);
            let (hash, prefix) = (d.hash.clone(), d.prefix.clone());
            let rec = KeyRecord::new(id.clone(), hash, prefix, d.key.clone(), created_ms, true);
            if old.as_ref() != Some(&rec) {
                bind_key(UPSERT_KEY, &rec).execute(&mut *tx).await?;
                match old {
                    None => out.created += 1,
                    Some(_) => out.updated += 1,
                }
            }
            ids.push(id);
        }
        let live: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM tollway_keys WHERE source = 'config' AND revoked_ms IS NULL",
        )
        .fetch_all(&mut *tx)
        .await?;
        let now = now_ms();
        for id in live.iter().filter(|id| !ids.contains(id)) {
            sqlx::query("UPDATE tollway_keys SET revoked_ms = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            out.revoked += 1;
        }
        tx.commit().await?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn secrets_are_long_random_and_hashed() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX) && a.len() == SECRET_PREFIX.len() + 40);
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // the cache's byte form and the stored hex form are the same digest
        assert_eq!(digest_from_hex(&hash_secret(&a)), Some(secret_digest(&a)));
        assert_eq!(
            digest_from_hex(&hash_secret("abc").to_uppercase()),
            Some(secret_digest("abc"))
        );
        assert_eq!(digest_from_hex("ba78"), None);
        assert_eq!(digest_from_hex(&"g".repeat(64)), None);
    }

    async fn lifecycle(store: Store) {
        let (k, secret) = store
            .create_key(NewKey {
                name: "ci".into(),
                team: Some("platform".into()),
                models: vec!["gpt".into()],
                rpm: Some(60),
                budget_micros: Some(5_000_000),
                budget_period: Some("monthly".into()),
                routing: serde_json::json!({"auto": {"strong_share": 0.1}})
                    .as_object()
                    .cloned()
                    .unwrap(),
                ..NewKey::default()
            })
            .await
            .unwrap();
        assert_eq!(k.hash, hash_secret(&secret));
        assert_eq!(k.routing["auto"]["strong_share"], 0.1);
        assert!(k.prefix.starts_with(&secret[..10]));
        let all = store.list_keys().await.unwrap();
        assert_eq!(all, vec![k.clone()]);
        // nothing stored contains the secret
        assert!(!format!("{all:?}").contains(&secret[SECRET_PREFIX.len()..]));
        let (rotated, new_secret) = store.rotate_key(&k.id).await.unwrap().unwrap();
        assert_ne!(new_secret, secret);
        assert_eq!(rotated.id, k.id);
        assert_eq!(rotated.hash, hash_secret(&new_secret));
        assert_eq!(rotated.budget_micros, Some(5_000_000));
        assert_eq!(rotated.routing, k.routing, "the stored overrides read back");
        assert!(store.revoke_key(&k.id).await.unwrap());
        assert!(!store.revoke_key(&k.id).await.unwrap(), "already revoked");
        let got = store.get_key(&k.id).await.unwrap().unwrap();
        assert!(!got.active(now_ms()));
        assert!(store.rotate_key(&k.id).await.unwrap().is_none());
        let bad = store
            .create_key(NewKey {
                name: "x".into(),
                budget_micros: Some(1),
                budget_period: Some("hourly".into()),
                ..NewKey::default()
            })
            .await;
        assert!(matches!(bad, Err(StoreError::Invalid(_))));
    }

    fn declared(name: &str, secret: &str, rpm: Option<u64>) -> DeclaredKey {
        DeclaredKey {
            key: NewKey {
                name: name.into(),
                team: Some("ops".into()),
                rpm,
                ..NewKey::default()
            },
            hash: hash_secret(secret),
            prefix: format!("{}…", &secret[..8]),
        }
    }

    async fn config_keys(store: Store) {
        let a = declared("ci-bot", "sk-live-aaaaaaaaaaaaaaaaaaaaaaaa", Some(60));
        let b = declared("batch", "sk-live-bbbbbbbbbbbbbbbbbbbbbbbb", None);
        let sync = |keys: Vec<DeclaredKey>| {
            let store = store.clone();
            async move { store.sync_config_keys(&keys).await }
        };
        assert_eq!(
            sync(vec![a.clone(), b.clone()]).await.unwrap(),
            KeySync {
                created: 2,
                updated: 0,
                revoked: 0
            }
        );
        let got = store
            .get_key(&config_key_id("ci-bot"))
            .await
            .unwrap()
            .unwrap();
        assert!(got.from_config && got.active(now_ms()));
        assert_eq!((got.hash.as_str(), got.rpm), (a.hash.as_str(), Some(60)));
        // the same file again changes nothing; a changed secret and limit update in place
        assert_eq!(
            sync(vec![a.clone(), b.clone()]).await.unwrap(),
            KeySync::default()
        );
        let a2 = declared("ci-bot", "sk-live-cccccccccccccccccccccccc", Some(30));
        assert_eq!(
            sync(vec![a2.clone(), b.clone()]).await.unwrap(),
            KeySync {
                created: 0,
                updated: 1,
                revoked: 0
            }
        );
        let got2 = store.get_key(&got.id).await.unwrap().unwrap();
        assert_eq!(
            (got2.hash.as_str(), got2.rpm, got2.created_ms),
            (a2.hash.as_str(), Some(30), got.created_ms)
        );
        // the API and the command line leave it alone
        for refused in [
            store.revoke_key(&got.id).await.map(|_| ()),
            store.rotate_key(&got.id).await.map(|_| ()),
        ] {
            let Err(StoreError::Invalid(m)) = refused else {
                panic!("{refused:?}")
            };
            assert!(m.contains("keys.ci-bot"), "{m}");
        }
        // a key created through the API is not the file's: never revoked by a sync
        let (api_key, api_secret) = store
            .create_key(NewKey {
                name: "api".into(),
                ..NewKey::default()
            })
            .await
            .unwrap();
        // removed from the file: revoked; declared again: back, same id
        assert_eq!(
            sync(vec![a2.clone()]).await.unwrap(),
            KeySync {
                created: 0,
                updated: 0,
                revoked: 1
            }
        );
        assert!(!store
            .get_key(&config_key_id("batch"))
            .await
            .unwrap()
            .unwrap()
            .active(now_ms()));
        assert!(store
            .get_key(&api_key.id)
            .await
            .unwrap()
            .unwrap()
            .active(now_ms()));
        assert_eq!(
            sync(vec![a2.clone(), b.clone()]).await.unwrap(),
            KeySync {
                created: 0,
                updated: 1,
                revoked: 0
            }
        );
        assert!(store
            .get_key(&config_key_id("batch"))
            .await
            .unwrap()
            .unwrap()
            .active(now_ms()));
        // another key's secret is refused, naming both; nothing is changed
        let mut stolen = declared("thief", "sk-live-xxxxxxxxxxxxxxxxxxxxxxxx", None);
        stolen.hash = hash_secret(&api_secret);
        let Err(StoreError::Invalid(m)) = sync(vec![a2.clone(), stolen]).await else {
            panic!("a shared secret was accepted")
        };
        assert!(m.contains("keys.thief") && m.contains(&api_key.id), "{m}");
        assert!(store
            .get_key(&config_key_id("batch"))
            .await
            .unwrap()
            .unwrap()
            .active(now_ms()));
        assert_eq!(store.list_keys().await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn config_keys_on_sqlite() {
        config_keys(testing::sqlite().await).await;
    }

    #[tokio::test]
    async fn config_keys_on_postgres() {
        config_keys(testing::postgres().await).await;
    }

    #[tokio::test]
    async fn key_lifecycle_on_sqlite() {
        lifecycle(testing::sqlite().await).await;
    }

    #[tokio::test]
    async fn key_lifecycle_on_postgres() {
        lifecycle(testing::postgres().await).await;
    }
}
