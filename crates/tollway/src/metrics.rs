//! Prometheus metrics (`GET /metrics`, text format 0.0.4): request counts by API and status
//! class, upstream attempts, the gateway's own time per request and the upstreams' (histograms),
//! and each deployment's health, load and latency. Counters are plain atomics indexed by small
//! enums, so counting costs nothing measurable on the request path.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tollway_core::ApiFamily;

use crate::gateway::Spent;
use crate::routing::HealthRegistry;

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Upper bounds (ns) of `tollway_overhead_seconds`' buckets: 5 µs to 1 s.
const OVERHEAD_BOUNDS: [u64; 15] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];

/// Upper bounds (ns) of `tollway_upstream_seconds`' buckets: 1 ms to 2 minutes.
const UPSTREAM_BOUNDS: [u64; 15] = [
    1_000_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
    120_000_000_000,
];

/// A Prometheus histogram of durations over fixed bounds (given when recording and rendering):
/// a count per bucket (not cumulative; the last one past every bound) and the sum.
#[derive(Debug, Default)]
struct Histogram {
    counts: [AtomicU64; 16],
    sum_ns: AtomicU64,
}

impl Histogram {
    fn record(&self, bounds: &[u64; 15], d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = bounds.iter().position(|&b| ns <= b).unwrap_or(bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The `_bucket`, `_sum` and `_count` lines of one series; `labels` without braces.
    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[u64; 15]) {
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            match bounds.get(i) {
                Some(&b) => {
                    let le = b as f64 / 1e9;
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {seen}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {seen}");
                }
            }
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {seen}");
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    /// [api][status class]
    requests: [[AtomicU64; 5]; 2],
    attempts: AtomicU64,
    failovers: AtomicU64,
    /// [api][stream]: the gateway's own time per chat request.
    overhead: [[Histogram; 2]; 2],
    /// [api][stream]: the upstreams' time per chat request that reached one.
    upstream: [[Histogram; 2]; 2],
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

    /// Times a chat request: its time from its handler's start to its answer being handed to the
    /// HTTP server (for a stream: its head and first event), split into the gateway's own and the
    /// upstreams' ([`crate::gateway::Waits::split`]). `stream` is what the answer is.
    pub fn timing(&self, api: ApiFamily, stream: bool, spent: &Spent) {
        let (a, s) = (api_index(api), usize::from(stream));
        self.overhead[a][s].record(&OVERHEAD_BOUNDS, spent.own);
        if !spent.upstream.is_zero() {
            self.upstream[a][s].record(&UPSTREAM_BOUNDS, spent.upstream);
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

        for (name, help, hist, bounds) in [
            (
                "tollway_overhead_seconds",
                "The gateway's own time per chat request: from receiving it to handing the answer \
                 (a stream: its head and first event) to the HTTP server, less the time spent \
                 waiting on upstreams, backoff and the client's body.",
                &self.overhead,
                &OVERHEAD_BOUNDS,
            ),
            (
                "tollway_upstream_seconds",
                "Time per chat request spent waiting on upstreams, every attempt's, from sending \
                 the request to the whole answer (a stream: its first event).",
                &self.upstream,
                &UPSTREAM_BOUNDS,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (ai, api) in ["openai", "anthropic"].iter().enumerate() {
                for (si, stream) in ["false", "true"].iter().enumerate() {
                    let labels = format!("api=\"{api}\",stream=\"{stream}\"");
                    hist[ai][si].render(&mut out, name, &labels, bounds);
                }
            }
        }

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

    #[test]
    fn a_requests_own_time_is_what_the_waits_leave() {
        use crate::gateway::Waits;
        let m = Metrics::default();
        let waits = Waits::default();
        waits.upstream.add(Duration::from_millis(20));
        waits.backoff.add(Duration::from_millis(100));
        waits.client.add(Duration::from_millis(3));
        // 123.04 ms in all: 40 µs of it the gateway's own
        let spent = waits.split(Duration::from_micros(123_040));
        assert_eq!(
            spent,
            Spent {
                own: Duration::from_micros(40),
                upstream: Duration::from_millis(20),
                backoff: Duration::from_millis(100),
            }
        );
        m.timing(ApiFamily::Anthropic, true, &spent);
        // no upstream at all (refused at once): only the overhead is recorded
        let refused = Waits::default().split(Duration::from_micros(7));
        m.timing(ApiFamily::Anthropic, true, &refused);
        let text = m.render(&HealthRegistry::default());
        let l = "api=\"anthropic\",stream=\"true\"";
        for (series, want) in [
            (
                format!("tollway_overhead_seconds_bucket{{{l},le=\"0.000005\"}}"),
                0,
            ),
            (
                format!("tollway_overhead_seconds_bucket{{{l},le=\"0.00001\"}}"),
                1,
            ),
            (
                format!("tollway_overhead_seconds_bucket{{{l},le=\"0.000025\"}}"),
                1,
            ),
            (
                format!("tollway_overhead_seconds_bucket{{{l},le=\"0.00005\"}}"),
                2,
            ),
            (
                format!("tollway_overhead_seconds_bucket{{{l},le=\"1\"}}"),
                2,
            ),
            (
                format!("tollway_overhead_seconds_bucket{{{l},le=\"+Inf\"}}"),
                2,
            ),
            (format!("tollway_overhead_seconds_count{{{l}}}"), 2),
            (
                format!("tollway_upstream_seconds_bucket{{{l},le=\"0.01\"}}"),
                0,
            ),
            (
                format!("tollway_upstream_seconds_bucket{{{l},le=\"0.025\"}}"),
                1,
            ),
            (format!("tollway_upstream_seconds_count{{{l}}}"), 1),
            (
                "tollway_overhead_seconds_count{api=\"openai\",stream=\"false\"}".into(),
                0,
            ),
        ] {
            assert!(
                text.contains(&format!("{series} {want}\n")),
                "{series}: {text}"
            );
        }
        assert!(text.contains(&format!("tollway_overhead_seconds_sum{{{l}}} 0.000047\n")));
        assert!(text.contains(&format!("tollway_upstream_seconds_sum{{{l}}} 0.02\n")));
        assert!(text.contains("# TYPE tollway_overhead_seconds histogram\n"));
    }
}
