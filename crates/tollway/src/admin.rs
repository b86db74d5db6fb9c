//! The admin side of accounting, shared by the HTTP admin API and the command line: virtual keys
//! (create, list, revoke, rotate), spend reports with a month-end forecast and CSV export, and
//! client feedback on answers.

use serde::Deserialize;
use serde_json::{json, Value};
use tollway_core::ProviderError;
use tollway_store::{
    day_string, now_ms, parse_day, KeyRecord, LedgerQuery, LedgerRow, NewKey, Store, UsageQuery,
    UsageRow, GROUP_BY, LEDGER_PAGE_MAX,
};

const DAY_MS: i64 = 86_400_000;

/// Parses a dollar amount (`"5"`, `"0.25"`, `"12.345678"`) into micro-dollars, without floats.
pub fn parse_usd(s: &str) -> Result<i64, String> {
    let t = s.trim().trim_start_matches('$');
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 6
        || whole.len() > 12
    {
        return Err(format!(
            "`{s}` is not a dollar amount (like 25 or 0.50, at most 6 decimals)"
        ));
    }
    let w: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| format!("`{s}` is too large"))?
    };
    let mut f: i64 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| format!("`{s}` is not a number"))?
    };
    for _ in frac.len()..6 {
        f *= 10;
    }
    Ok(w * 1_000_000 + f)
}

/// Micro-dollars as a decimal string (`1234567` → `"1.234567"`).
pub fn usd(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    format!("{sign}{}.{:06}", m / 1_000_000, m % 1_000_000)
}

/// A key to create, as the admin API and `tollway keys create` take it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub providers: Vec<String>,
    #[serde(default)]
    pub regions: Vec<String>,
    #[serde(default)]
    pub rpm: Option<u64>,
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Dollars, as a string or number (`"25.00"`).
    #[serde(default)]
    pub budget_usd: Option<Value>,
    /// `daily`, `weekly`, `monthly` (default when a budget is given) or `total`.
    #[serde(default)]
    pub budget_period: Option<String>,
    #[serde(default)]
    pub expires_in_days: Option<u64>,
    /// Per learned router, a knob that replaces the router's own for this key
    /// (`{"auto": {"quality_floor": 0.9}}`).
    #[serde(default)]
    pub routing: serde_json::Map<String, Value>,
}

impl CreateKey {
    pub fn into_new_key(self) -> Result<NewKey, String> {
        if self.name.trim().is_empty() {
            return Err("a key needs a name".into());
        }
        let budget_micros = match &self.budget_usd {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(parse_usd(s)?),
            Some(Value::Number(n)) => Some(parse_usd(&n.to_string())?),
            Some(_) => return Err("budget_usd must be a dollar amount".into()),
        };
        let budget_period = match (&budget_micros, self.budget_period) {
            (Some(_), None) => Some("monthly".to_string()),
            (_, p) => p,
        };
        if let Some(p) = budget_period.as_deref() {
            if crate::budgets::Period::parse(p).is_none() {
                return Err(format!(
                    "budget_period `{p}` is not one of daily, weekly, monthly, total"
                ));
            }
        }
        for (router, knob) in &self.routing {
            if let Err(e) = <crate::rules::Knob as serde::Deserialize>::deserialize(knob) {
                return Err(format!("routing.{router}: {e}"));
            }
        }
        Ok(NewKey {
            routing: self.routing,
            name: self.name,
            team: self.team,
            models: self.models,
            providers: self.providers,
            regions: self.regions,
            rpm: self.rpm,
            tpm: self.tpm,
            budget_micros,
            budget_period,
            expires_ms: self
                .expires_in_days
                .map(|d| now_ms() + i64::try_from(d).unwrap_or(i64::MAX / DAY_MS / 2) * DAY_MS),
        })
    }
}

/// A key as shown by the admin API (never its secret or hash).
pub fn key_json(k: &KeyRecord) -> Value {
    json!({
        "id": k.id, "prefix": k.prefix, "name": k.name, "team": k.team,
        "models": k.models, "providers": k.providers, "regions": k.regions, "rpm": k.rpm, "tpm": k.tpm,
        "budget_usd": k.budget_micros.map(usd), "budget_period": k.budget_period,
        "created_ms": k.created_ms, "expires_ms": k.expires_ms, "revoked_ms": k.revoked_ms,
        "routing": k.routing,
        "source": if k.from_config { "config" } else { "api" },
        "status": if k.revoked_ms.is_some() { "revoked" } else if k.active(now_ms()) { "active" } else { "expired" },
    })
}

/// A usage report's parameters: `group_by=key,model`, `since=YYYY-MM-DD`, `until=YYYY-MM-DD`
/// (exclusive), `key`, `team`.
#[derive(Debug, Default, Deserialize)]
pub struct UsageParams {
    #[serde(default)]
    pub group_by: Option<String>,
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub until: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    /// `json` (default) or `csv`.
    #[serde(default)]
    pub format: Option<String>,
}

/// An admin report's parameters (from a query string or the command line), read into the query
/// the store runs; an `Err` names the parameter that is wrong.
pub trait ReportParams {
    type Query;
    fn query(&self) -> Result<Self::Query, String>;
}

impl ReportParams for UsageParams {
    type Query = UsageQuery;
    fn query(&self) -> Result<UsageQuery, String> {
        let day = |s: &Option<String>, what: &str| -> Result<Option<i64>, String> {
            match s {
                None => Ok(None),
                Some(d) => parse_day(d)
                    .map(|days| Some(days * DAY_MS))
                    .ok_or_else(|| format!("`{what}` must be a date like 2025-11-01, got `{d}`")),
            }
        };
        let group_by: Vec<String> = self
            .group_by
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        for g in &group_by {
            if !GROUP_BY.contains(&g.as_str()) {
                return Err(format!(
                    "cannot group by `{g}` (expected some of: {})",
                    GROUP_BY.join(", ")
                ));
            }
        }
        Ok(UsageQuery {
            group_by,
            since_ms: day(&self.since, "since")?,
            until_ms: day(&self.until, "until")?,
            key_id: self.key.clone(),
            team: self.team.clone(),
        })
    }
}

fn row_json(r: &UsageRow) -> Value {
    let mut v = json!({
        "requests": r.requests, "input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
        "cache_read_tokens": r.cache_read_tokens, "cache_write_tokens": r.cache_write_tokens,
        "cost_usd": usd(r.cost_micros), "unpriced_requests": r.unpriced_requests,
        "cache_hits": r.cache_hits,
    });
    if let Some(o) = v.as_object_mut() {
        for (k, val) in [
            ("key", &r.key),
            ("team", &r.team),
            ("model", &r.model),
            ("provider", &r.provider),
            ("day", &r.day),
        ] {
            if let Some(x) = val {
                o.insert(k.into(), json!(x));
            }
        }
    }
    v
}

/// Month-to-date spend and the month-end forecast at the current run rate (UTC months).
pub async fn forecast(store: &Store, q: &UsageQuery) -> Result<Value, String> {
    let now = now_ms();
    let today = now.div_euclid(DAY_MS);
    let date = day_string(today);
    let month_start = parse_day(&format!("{}-01", &date[..7])).unwrap_or(today);
    let (y, m): (i64, i64) = (
        date[..4].parse().unwrap_or(1970),
        date[5..7].parse().unwrap_or(1),
    );
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let next_month = parse_day(&format!("{ny:04}-{nm:02}-01")).unwrap_or(month_start + 30);
    let mtd = store
        .usage(&UsageQuery {
            group_by: Vec::new(),
            since_ms: Some(month_start * DAY_MS),
            until_ms: None,
            key_id: q.key_id.clone(),
            team: q.team.clone(),
        })
        .await
        .map_err(|e| e.to_string())?;
    let spent = mtd.first().map_or(0, |r| r.cost_micros);
    let elapsed = (now - month_start * DAY_MS).max(1);
    let month = (next_month - month_start) * DAY_MS;
    let projected = i64::try_from(i128::from(spent) * i128::from(month) / i128::from(elapsed))
        .unwrap_or(i64::MAX);
    Ok(json!({
        "month": &date[..7],
        "month_to_date_usd": usd(spent),
        "forecast_month_end_usd": usd(projected),
        "basis": "month-to-date spend extrapolated linearly to the end of the month (UTC)",
    }))
}

/// A usage report as JSON (rows, total, forecast).
pub async fn usage_json(store: &Store, q: &UsageQuery) -> Result<Value, String> {
    let rows = store.usage(q).await.map_err(|e| e.to_string())?;
    let total = store
        .usage(&UsageQuery {
            group_by: Vec::new(),
            ..q.clone()
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(json!({
        "group_by": q.group_by,
        "rows": rows.iter().map(row_json).collect::<Vec<_>>(),
        "total": total.first().map(row_json),
        "forecast": forecast(store, q).await?,
    }))
}

/// A request log page's parameters: `limit` (default 50, at most 500), `before` (the previous
/// page's `next`), `key`, `team`, `model`, `status` (`ok`, `error` or a status code).
#[derive(Debug, Default, Deserialize)]
pub struct RequestsParams {
    #[serde(default)]
    pub limit: Option<String>,
    #[serde(default)]
    pub before: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
}

impl ReportParams for RequestsParams {
    type Query = LedgerQuery;
    fn query(&self) -> Result<LedgerQuery, String> {
        let limit = match self.limit.as_deref() {
            None | Some("") => 50,
            Some(l) => match l.parse::<u32>() {
                Ok(n) if (1..=LEDGER_PAGE_MAX).contains(&n) => n,
                _ => {
                    return Err(format!(
                        "`limit` must be a whole number from 1 to {LEDGER_PAGE_MAX}, got `{l}`"
                    ))
                }
            },
        };
        let before = match self.before.as_deref() {
            None | Some("") => None,
            Some(c) => Some(
                c.split_once(':')
                    .and_then(|(ts, id)| Some((ts.parse::<i64>().ok()?, id.to_string())))
                    .filter(|(_, id)| !id.is_empty())
                    .ok_or_else(|| {
                        format!("`before` must be a page's `next` (like `1764547200000:req_...`), got `{c}`")
                    })?,
            ),
        };
        let status = match self.status.as_deref() {
            None | Some("") => None,
            Some("ok") => Some((0, 399)),
            Some("error") => Some((400, 999)),
            Some(code) => match code.parse::<i64>() {
                Ok(c) if (100..=999).contains(&c) => Some((c, c)),
                _ => {
                    return Err(format!(
                        "`status` must be `ok`, `error` or a status code, got `{code}`"
                    ))
                }
            },
        };
        let some = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Ok(LedgerQuery {
            limit,
            before,
            key_id: some(&self.key),
            team: some(&self.team),
            model: some(&self.model),
            status,
        })
    }
}

/// One ledger row as the request log shows it.
pub fn request_json(r: &LedgerRow) -> Value {
    json!({
        "request_id": r.request_id,
        "time": tollway_core::days::rfc3339_ms(r.ts_ms),
        "ts_ms": r.ts_ms,
        "key_id": r.key_id,
        "team": r.team,
        "model": r.model,
        "provider": r.provider,
        "deployment": r.deployment,
        "api": r.api,
        "status": r.status,
        "stream": r.stream,
        "attempts": r.attempts,
        "latency_ms": r.latency_ms,
        "input_tokens": r.input_tokens,
        "output_tokens": r.output_tokens,
        "cache_read_tokens": r.cache_read_tokens,
        "cache_write_tokens": r.cache_write_tokens,
        "reasoning_tokens": r.reasoning_tokens,
        "cost_usd": r.cost_micros.map(usd),
        "cost_estimated": r.cost_estimated,
        "cache_hit": r.cache_hit,
    })
}

/// A page of the request log, newest first: `{"data": [...], "next": "..."}` (`next` is null on
/// the last page; pass it as `before` for the next one).
pub async fn requests_json(store: &Store, q: &LedgerQuery) -> Result<Value, String> {
    let rows = store.ledger_page(q).await.map_err(|e| e.to_string())?;
    let next = (rows.len() as u32 >= q.limit)
        .then(|| rows.last().map(|r| format!("{}:{}", r.ts_ms, r.request_id)))
        .flatten();
    Ok(json!({
        "data": rows.iter().map(request_json).collect::<Vec<_>>(),
        "next": next,
    }))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A usage report as CSV: the group columns, then the figures.
pub async fn usage_csv(store: &Store, q: &UsageQuery) -> Result<String, String> {
    let rows = store.usage(q).await.map_err(|e| e.to_string())?;
    let mut out = String::new();
    let mut header: Vec<&str> = q.group_by.iter().map(String::as_str).collect();
    header.extend([
        "requests",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "cost_usd",
        "unpriced_requests",
        "cache_hits",
    ]);
    out.push_str(&header.join(","));
    out.push('\n');
    for r in &rows {
        let mut cells: Vec<String> = Vec::new();
        for g in &q.group_by {
            let v = match g.as_str() {
                "key" => &r.key,
                "team" => &r.team,
                "model" => &r.model,
                "provider" => &r.provider,
                _ => &r.day,
            };
            cells.push(csv_field(v.as_deref().unwrap_or("")));
        }
        cells.extend([
            r.requests.to_string(),
            r.input_tokens.to_string(),
            r.output_tokens.to_string(),
            r.cache_read_tokens.to_string(),
            r.cache_write_tokens.to_string(),
            usd(r.cost_micros),
            r.unpriced_requests.to_string(),
            r.cache_hits.to_string(),
        ]);
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    Ok(out)
}

/// `POST /v1/feedback` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feedback {
    pub request_id: String,
    /// `good` or `bad`.
    pub rating: String,
    #[serde(default)]
    pub comment: Option<String>,
}

impl Feedback {
    pub fn check(&self) -> Result<(), ProviderError> {
        if !matches!(self.rating.as_str(), "good" | "bad") {
            return Err(
                ProviderError::invalid("`rating` must be `good` or `bad`.").with_param("rating")
            );
        }
        if !self.request_id.starts_with("req_") || self.request_id.len() > 64 {
            return Err(ProviderError::invalid(
                "`request_id` must be a Tollway request id (the x-tollway-request-id header).",
            )
            .with_param("request_id"));
        }
        if self.comment.as_ref().is_some_and(|c| c.len() > 4096) {
            return Err(
                ProviderError::invalid("`comment` is limited to 4096 bytes.").with_param("comment"),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_parse_exactly() {
        assert_eq!(parse_usd("5"), Ok(5_000_000));
        assert_eq!(parse_usd("0.25"), Ok(250_000));
        assert_eq!(parse_usd("$12.345678"), Ok(12_345_678));
        assert_eq!(parse_usd(".5"), Ok(500_000));
        assert!(parse_usd("1.2345678").is_err());
        assert!(parse_usd("-1").is_err());
        assert!(parse_usd("1e3").is_err());
        assert!(parse_usd("").is_err());
        assert_eq!(usd(1_234_567), "1.234567");
        assert_eq!(usd(5), "0.000005");
    }

    #[test]
    fn usage_params_are_checked() {
        let p = UsageParams {
            group_by: Some("key, day".into()),
            since: Some("2025-11-01".into()),
            ..UsageParams::default()
        };
        let q = p.query().unwrap();
        assert_eq!(q.group_by, vec!["key", "day"]);
        assert_eq!(q.since_ms, Some(20_393 * DAY_MS));
        let bad = UsageParams {
            group_by: Some("colour".into()),
            ..UsageParams::default()
        };
        assert!(bad.query().unwrap_err().contains("colour"));
        let bad = UsageParams {
            since: Some("yesterday".into()),
            ..UsageParams::default()
        };
        assert!(bad.query().unwrap_err().contains("since"));
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
