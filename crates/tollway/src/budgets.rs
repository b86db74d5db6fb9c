//! Budgets that hold under concurrency: before a request is sent, its worst-case cost (estimated
//! prompt tokens and its maximum output at the most expensive candidate deployment's prices) is
//! reserved against every budget that applies (key, team, global); when it finishes, the
//! reservation is replaced by the real cost. A hard budget refuses a request whose reservation
//! would not fit — so spend never passes it, however many requests race — with an error naming the
//! budget and when it resets; a soft one lets it through and raises an alert (log and webhook),
//! once per period.

// foldhash: these maps are looked up several times per request, by keys the operator controls
use foldhash::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tollway_core::{ErrorKind, Micros, ProviderError, Retry};
use tollway_store::{civil_from_days, day_string, days_from_civil, now_ms, Store};

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
    Total,
}

impl Period {
    pub fn parse(s: &str) -> Option<Period> {
        Some(match s {
            "daily" => Period::Daily,
            "weekly" => Period::Weekly,
            "monthly" => Period::Monthly,
            "total" => Period::Total,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Total => "total",
        }
    }

    /// The current period's [start, end) in unix milliseconds (UTC; weeks start on Monday).
    pub fn window(self, now: i64) -> (i64, i64) {
        let today = now.div_euclid(DAY_MS);
        match self {
            Period::Daily => (today * DAY_MS, (today + 1) * DAY_MS),
            Period::Weekly => {
                // 1970-01-01 was a Thursday: Monday-based weekday = (days + 3) mod 7
                let start = today - (today + 3).rem_euclid(7);
                (start * DAY_MS, (start + 7) * DAY_MS)
            }
            Period::Monthly => {
                let (y, m, _) = civil_from_days(today);
                let start = days_from_civil(y, m, 1);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let end = days_from_civil(ny, nm, 1);
                (start * DAY_MS, end * DAY_MS)
            }
            Period::Total => (0, i64::MAX),
        }
    }
}

/// One budget: a limit on spend per period, for a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// `key:ID`, `team:NAME` or `global` (shared, not copied per request).
    pub scope: Arc<str>,
    pub limit: Micros,
    pub period: Period,
    pub hard: bool,
}

#[derive(Debug, Default)]
struct Counter {
    /// The period these counts belong to (its start, ms).
    period_start: i64,
    spent: i64,
    reserved: i64,
    alerted: bool,
}

/// A reservation held by one request against some budgets; settle it with the real cost.
#[derive(Debug)]
pub struct Reservation {
    budgets: Arc<Budgets>,
    scopes: Vec<(Arc<str>, i64)>,
    settled: bool,
}

impl Reservation {
    /// Replaces the reservation with the real cost (`None`: unknown price, nothing to add).
    pub fn settle(mut self, cost: Option<Micros>) {
        self.budgets.release(&self.scopes, cost.map_or(0, |c| c.0));
        self.settled = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            // Not settled (the request ended without a cost): give the reservation back.
            self.budgets.release(&self.scopes, 0);
        }
    }
}

/// An alert about a soft budget, for the log and the webhook.
#[derive(Debug, Clone)]
pub struct Alert {
    pub budget: Budget,
    pub spent: Micros,
}

#[derive(Debug, Default)]
pub struct Budgets {
    counters: Mutex<HashMap<Arc<str>, Counter>>,
    alerts: Mutex<Vec<Alert>>,
}

/// The error for a spent hard budget: names it, its amount and when it resets.
pub fn exhausted(b: &Budget, end: i64, now: i64) -> ProviderError {
    let resets = if b.period == Period::Total {
        "it does not reset".to_string()
    } else {
        format!(
            "it resets at {}T00:00:00Z",
            day_string(end.div_euclid(DAY_MS))
        )
    };
    let wait = Duration::from_millis(u64::try_from((end - now).max(1000)).unwrap_or(u64::MAX));
    ProviderError::new(
        ErrorKind::BudgetExceeded,
        format!(
            "The {} budget of ${} for {} is spent; {resets}.",
            b.period.name(),
            b.limit,
            b.scope
        ),
    )
    .with_retry(if b.period == Period::Total {
        Retry::Never
    } else {
        Retry::After(wait)
    })
}

impl Budgets {
    /// Loads what was already spent in each budget's current period (once per scope and period;
    /// later requests use the in-memory counters).
    pub async fn prime(&self, store: &Store, budgets: &[Budget]) -> Result<(), String> {
        let now = now_ms();
        for b in budgets {
            let (start, _) = b.period.window(now);
            let known = {
                let map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
                map.get(&*b.scope).is_some_and(|c| c.period_start == start)
            };
            if known {
                continue;
            }
            let (key, team) = match b.scope.split_once(':') {
                Some(("key", id)) => (Some(id), None),
                Some(("team", t)) => (None, Some(t)),
                _ => (None, None),
            };
            let spent = store
                .spend_micros(key, team, start)
                .await
                .map_err(|e| e.to_string())?;
            let mut map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
            let c = map.entry(b.scope.clone()).or_default();
            if c.period_start != start {
                *c = Counter {
                    period_start: start,
                    spent,
                    reserved: 0,
                    alerted: false,
                };
            }
        }
        Ok(())
    }

    /// Reserves `ceiling` against every budget, atomically: all or none. Hard budgets that would
    /// be overshot refuse; soft ones record an alert.
    pub fn reserve(
        self: &Arc<Self>,
        budgets: &[Budget],
        ceiling: Micros,
    ) -> Result<Reservation, ProviderError> {
        let now = now_ms();
        let mut map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        for b in budgets {
            let (start, end) = b.period.window(now);
            let c = map.entry(b.scope.clone()).or_default();
            if c.period_start != start {
                // a new period (or a scope never primed): start from zero
                *c = Counter {
                    period_start: start,
                    ..Counter::default()
                };
            }
            if b.hard && c.spent + c.reserved + ceiling.0 > b.limit.0 {
                return Err(exhausted(b, end, now));
            }
        }
        let mut scopes = Vec::with_capacity(budgets.len());
        for b in budgets {
            if let Some(c) = map.get_mut(&*b.scope) {
                c.reserved += ceiling.0;
                if !b.hard && !c.alerted && c.spent + c.reserved > b.limit.0 {
                    c.alerted = true;
                    let alert = Alert {
                        budget: b.clone(),
                        spent: Micros(c.spent),
                    };
                    tracing::warn!(scope = %b.scope, limit = %b.limit, spent = %alert.spent, "soft budget exceeded");
                    self.alerts
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(alert);
                }
                scopes.push((b.scope.clone(), ceiling.0));
            }
        }
        Ok(Reservation {
            budgets: self.clone(),
            scopes,
            settled: false,
        })
    }

    fn release(&self, scopes: &[(Arc<str>, i64)], cost: i64) {
        let mut map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        for (scope, reserved) in scopes {
            if let Some(c) = map.get_mut(&**scope) {
                c.reserved = (c.reserved - reserved).max(0);
                c.spent += cost;
            }
        }
    }

    /// Spent (settled) in the current period, for reports and tests.
    pub fn spent(&self, scope: &str) -> Micros {
        let map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        Micros(map.get(scope).map_or(0, |c| c.spent))
    }

    /// Records an alert raised elsewhere (by the shared state).
    pub fn alert(&self, budget: Budget) {
        tracing::warn!(scope = %budget.scope, limit = %budget.limit, "soft budget exceeded (shared)");
        self.alerts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Alert {
                budget,
                spent: Micros(0),
            });
    }

    /// Alerts raised since the last call.
    pub fn take_alerts(&self) -> Vec<Alert> {
        std::mem::take(&mut *self.alerts.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(scope: &str, limit: i64, hard: bool) -> Budget {
        Budget {
            scope: scope.into(),
            limit: Micros(limit),
            period: Period::Monthly,
            hard,
        }
    }

    #[test]
    fn periods_have_the_right_windows() {
        let day = 86_400_000;
        let t = 20_416 * day + 5_000; // 2025-11-24 (a Monday)
        assert_eq!(Period::Daily.window(t), (20_416 * day, 20_417 * day));
        assert_eq!(Period::Weekly.window(t), (20_416 * day, 20_423 * day));
        let (s, e) = Period::Monthly.window(t);
        assert_eq!(
            (day_string(s / day), day_string(e / day)),
            ("2025-11-01".into(), "2025-12-01".into())
        );
        let dec = tollway_store::parse_day("2025-12-31").unwrap() * day;
        let (_, e) = Period::Monthly.window(dec);
        assert_eq!(day_string(e / day), "2026-01-01");
    }

    #[test]
    fn concurrent_reservations_never_overshoot_a_hard_budget() {
        let b = Arc::new(Budgets::default());
        let budgets = vec![
            budget("key:k", 1_000, true),
            budget("global", 1_000_000, true),
        ];
        let mut handles = Vec::new();
        for _ in 0..8 {
            let b = b.clone();
            let budgets = budgets.clone();
            handles.push(std::thread::spawn(move || {
                let mut ok = 0;
                for _ in 0..100 {
                    if let Ok(r) = b.reserve(&budgets, Micros(30)) {
                        ok += 1;
                        r.settle(Some(Micros(25)));
                    }
                }
                ok
            }));
        }
        let admitted: i64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let spent = b.spent("key:k").0;
        assert!(spent <= 1_000, "{spent}");
        assert_eq!(spent, admitted * 25);
        assert!(spent > 1_000 - 30 - 25, "the budget was used up: {spent}");
        let e = b.reserve(&budgets, Micros(30)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BudgetExceeded);
        assert!(
            e.message.contains("monthly budget of $0.001000 for key:k"),
            "{}",
            e.message
        );
        assert!(e.message.contains("resets at"));
        assert!(e.retry_after_secs().is_some());
    }

    #[test]
    fn soft_budgets_alert_once_and_unsettled_reservations_are_returned() {
        let b = Arc::new(Budgets::default());
        let soft = vec![budget("team:t", 100, false)];
        let r = b.reserve(&soft, Micros(80)).unwrap();
        r.settle(Some(Micros(80)));
        let r = b.reserve(&soft, Micros(80)).unwrap();
        let r2 = b.reserve(&soft, Micros(80)).unwrap();
        r.settle(Some(Micros(70)));
        drop(r2); // abandoned without a cost: released
        assert_eq!(b.spent("team:t"), Micros(150));
        let alerts = b.take_alerts();
        assert_eq!(alerts.len(), 1, "once per period");
        assert_eq!(&*alerts[0].budget.scope, "team:t");
        assert!(b.take_alerts().is_empty());
    }
}
