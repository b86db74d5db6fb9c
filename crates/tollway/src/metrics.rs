//! Prometheus metrics (`GET /metrics`, text format 0.0.4): request counts by API and status
//! class, upstream attempts, and each deployment's health, load and latency. Counters are plain
//! atomics indexed by small enums, so counting costs nothing measurable on the request path.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tollway_core::ApiFamily;

use crate::routing::HealthRegistry;

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Debug, Default)]
pub struct Metrics {
    /// [api][status class]
    requests: [[AtomicU64; 5]; 2],
    attempts: AtomicU64,
    failovers: AtomicU64,
}

fn api_index(f: ApiFamily) -> usize {
    match f {
        ApiFamily::OpenAi => 0,
        ApiFamily::Anthropic => 1,
    }
}

impl Metrics {
    pub fn request(&self, api: ApiFamily, status: u16, attempts: u32) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[api_index(api)][class].fetch_add(1, Ordering::Relaxed);
        self.attempts
            .fetch_add(u64::from(attempts), Ordering::Relaxed);
        if attempts > 1 {
            self.failovers.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn render(&self, health: &HealthRegistry) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str(
            "# HELP tollway_requests_total Client requests answered, by API and status class.\n",
        );
        out.push_str("# TYPE tollway_requests_total counter\n");
        for (ai, api) in ["openai", "anthropic"].iter().enumerate() {
            for (ci, class) in CLASSES.iter().enumerate() {
                let n = self.requests[ai][ci].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "tollway_requests_total{{api=\"{api}\",status=\"{class}\"}} {n}"
                );
            }
        }
        out.push_str(
            "# HELP tollway_upstream_attempts_total Upstream attempts made for client requests.\n",
        );
        out.push_str("# TYPE tollway_upstream_attempts_total counter\n");
        let _ = writeln!(
            out,
            "tollway_upstream_attempts_total {}",
            self.attempts.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP tollway_failovers_total Requests that needed more than one upstream attempt.\n",
        );
        out.push_str("# TYPE tollway_failovers_total counter\n");
        let _ = writeln!(
            out,
            "tollway_failovers_total {}",
            self.failovers.load(Ordering::Relaxed)
        );

        let reports = health.report(Instant::now());
        let series: [(&str, &str, &str); 6] = [
            (
                "tollway_deployment_up",
                "gauge",
                "1 when the deployment takes traffic (healthy or half-open), 0 while cooling down.",
            ),
            (
                "tollway_deployment_outstanding",
                "gauge",
                "Requests in flight on the deployment.",
            ),
            (
                "tollway_deployment_successes_total",
                "counter",
                "Successful upstream attempts.",
            ),
            (
                "tollway_deployment_failures_total",
                "counter",
                "Failed upstream attempts that count against the deployment.",
            ),
            (
                "tollway_deployment_ttft_seconds",
                "gauge",
                "Moving average of time to first token.",
            ),
            (
                "tollway_deployment_cooldown_seconds",
                "gauge",
                "Cooldown remaining.",
            ),
        ];
        for (name, kind, help) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for r in &reports {
                let label = r["deployment"]
                    .as_str()
                    .unwrap_or_default()
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"");
                let v = match name {
                    "tollway_deployment_up" => f64::from(u8::from(r["state"] != "cooling_down")),
                    "tollway_deployment_outstanding" => r["outstanding"].as_f64().unwrap_or(0.0),
                    "tollway_deployment_successes_total" => r["successes"].as_f64().unwrap_or(0.0),
                    "tollway_deployment_failures_total" => r["failures"].as_f64().unwrap_or(0.0),
                    "tollway_deployment_ttft_seconds" => match r["ewma_ttft_ms"].as_f64() {
                        Some(ms) => ms / 1000.0,
                        None => continue,
                    },
                    _ => r["cooldown_remaining_ms"].as_f64().unwrap_or(0.0) / 1000.0,
                };
                let _ = writeln!(out, "{name}{{deployment=\"{label}\"}} {v}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_deployments() {
        let m = Metrics::default();
        m.request(ApiFamily::OpenAi, 200, 1);
        m.request(ApiFamily::Anthropic, 529, 3);
        let h = HealthRegistry::default();
        h.get("p/m\"x");
        let text = m.render(&h);
        assert!(text.contains("tollway_requests_total{api=\"openai\",status=\"2xx\"} 1"));
        assert!(text.contains("tollway_requests_total{api=\"anthropic\",status=\"5xx\"} 1"));
        assert!(text.contains("tollway_upstream_attempts_total 4"));
        assert!(text.contains("tollway_failovers_total 1"));
        assert!(
            text.contains("tollway_deployment_up{deployment=\"p/m\\\"x\"} 1"),
            "{text}"
        );
    }
}
