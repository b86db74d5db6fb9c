//! The benchmark suite: spawns `tollway-mock` and `tollway` on ephemeral loopback ports, runs
//! each scenario straight to the mock and then through the gateway, and reports the gateway's
//! *added* latency (gateway minus direct, per percentile), throughput, memory and CPU.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde_json::{json, Value};

use crate::load::{self, round3, Mode, Spec};
use crate::procfs;

const MASTER_KEY: &str = "sk-bench";
const STREAM_TOKENS: u64 = 200;

#[derive(clap::Args)]
pub struct SuiteArgs {
    /// The gateway binary.
    #[arg(long, default_value = "target/release/tollway")]
    tollway: PathBuf,
    /// The upstream simulator binary.
    #[arg(long, default_value = "target/release/tollway-mock")]
    mock: PathBuf,
    /// Where `latest.json` and `latest.md` go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Shorten every phase (a smoke run of the harness, figures not meaningful).
    #[arg(long, env = "BENCH_QUICK", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    quick: bool,
    /// Each spawned server's pid is appended here (for the caller's clean-up trap).
    #[arg(long)]
    pidfile: Option<PathBuf>,
    /// Clock ticks per second for `/proc/PID/stat` (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
    /// How many times the gateway is started to measure its readiness time.
    #[arg(long, default_value_t = 3)]
    starts: usize,
    /// The gateway's worker threads (`tollway serve --workers`); default: one per core.
    #[arg(long)]
    gateway_workers: Option<u16>,
    /// Pin the gateway's worker threads to CPUs (`tollway serve --pin-workers`).
    #[arg(long)]
    gateway_pin_workers: bool,
}

/// The suite's working directory (config, SQLite file, server logs), removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A spawned server, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// From spawn to ready (listening line, then `/readyz` 200 if asked).
    ready: Duration,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    name: &'static str,
    mut cmd: Command,
    log: &Path,
    readyz: bool,
    pidfile: Option<&Path>,
) -> anyhow::Result<Server> {
    let log_file = std::fs::File::create(log).with_context(|| format!("{}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file));
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
    if let Some(p) = pidfile {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
        {
            let _ = writeln!(f, "{}", child.id());
        }
    }
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        let mut sent = false;
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if !sent {
                        let found = ["listening on http://", "listening on https://"]
                            .iter()
                            .find_map(|m| line.find(m).map(|i| i + m.len()));
                        if let Some(i) = found {
                            let _ = tx.send(line[i..].trim().to_string());
                            sent = true;
                        }
                    }
                }
            }
        }
    });
    let mut server = Server {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ready: Duration::ZERO,
    };
    let addr = rx.recv_timeout(Duration::from_secs(30)).map_err(|_| {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        anyhow::anyhow!(
            "{name} did not print its address within 30 s; its log:\n{}",
            tail(&log, 2000)
        )
    })?;
    server.addr = addr
        .parse()
        .with_context(|| format!("{name} printed a bad address {addr:?}"))?;
    if readyz {
        let deadline = t0 + Duration::from_secs(30);
        loop {
            if get_status(server.addr, "/readyz") == Some(200) {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!("{name} not ready within 30 s");
            }
            if let Ok(Some(st)) = server.child.try_wait() {
                anyhow::bail!("{name} exited: {st}");
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    server.ready = t0.elapsed();
    Ok(server)
}

fn tail(s: &str, n: usize) -> &str {
    let mut i = s.len().saturating_sub(n);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// A bare HTTP/1.1 GET on a fresh connection; the status, if any.
fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let _ = s.set_nodelay(true);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let k = s.read(&mut buf[n..]).ok()?;
        if k == 0 {
            break;
        }
        n += k;
    }
    let head = std::str::from_utf8(&buf[..n]).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

/// A bare HTTP/1.1 request with the master key on a fresh connection (`body`: a JSON text);
/// the status and the body.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body_head = body.map_or(String::new(), |b| {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        )
    });
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n{body_head}Connection: close\r\n\r\n{}",
        body.unwrap_or_default()
    )?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

/// The gateway's Prometheus text (empty if it did not answer).
fn metrics_text(addr: SocketAddr) -> String {
    match request(addr, "GET", "/metrics", MASTER_KEY, None) {
        Ok((200, text)) => text,
        _ => String::new(),
    }
}

/// The gateway's own time per request over a run, from the difference of its
/// `tollway_overhead_seconds` histogram (OpenAI API, streams or not) before and after: the mean,
/// and p50/p90/p99 interpolated within the buckets (so as coarse as they are); µs.
fn own_time(before: &str, after: &str, stream: bool) -> Option<Value> {
    let labels = format!("api=\"openai\",stream=\"{stream}\"");
    // (upper bound in seconds, cumulative count) of each bucket; the sum
    let read = |text: &str| {
        let mut buckets = Vec::new();
        let mut sum = 0.0;
        let prefix = format!("tollway_overhead_seconds_bucket{{{labels},le=\"");
        let sum_name = format!("tollway_overhead_seconds_sum{{{labels}}} ");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(&prefix) {
                if let Some((le, n)) = rest.split_once("\"} ") {
                    let le = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap_or(f64::NAN)
                    };
                    buckets.push((le, n.parse::<f64>().unwrap_or(0.0)));
                }
            } else if let Some(v) = line.strip_prefix(&sum_name) {
                sum = v.parse().unwrap_or(0.0);
            }
        }
        (buckets, sum)
    };
    let ((b0, s0), (b1, s1)) = (read(before), read(after));
    let buckets: Vec<(f64, f64)> = b1
        .iter()
        .map(|&(le, n)| {
            let was = b0.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
            (le, n - was)
        })
        .collect();
    let count = buckets.last()?.1;
    if count <= 0.0 {
        return None;
    }
    let quantile = |q: f64| {
        let want = q * count;
        let (mut lo, mut below) = (0.0, 0.0);
        for &(le, n) in &buckets {
            if n >= want {
                if le.is_infinite() {
                    return lo;
                }
                return lo + (le - lo) * (want - below) / (n - below).max(1.0);
            }
            (lo, below) = (le, n);
        }
        lo
    };
    Some(json!({
        "requests": count,
        "mean": round3((s1 - s0) / count * 1e6),
        "p50": round3(quantile(0.5) * 1e6),
        "p90": round3(quantile(0.9) * 1e6),
        "p99": round3(quantile(0.99) * 1e6),
    }))
}

/// A bare HTTP/1.1 POST with a JSON body; status and body.
fn post_json(
    addr: SocketAddr,
    path: &str,
    key: &str,
    body: &Value,
) -> anyhow::Result<(u16, Value)> {
    let (status, body) = request(addr, "POST", path, key, Some(&body.to_string()))?;
    // Chunked bodies: take the JSON object between the first '{' and the last '}'.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if b > a => serde_json::from_str(&body[a..=b]).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    Ok((status, json))
}

struct Phases {
    warmup: Duration,
    latency: Duration,
    saturation: Duration,
    /// Alternating rounds the saturation time is split into.
    saturation_rounds: u32,
    stream: Duration,
    hold_streams: u64,
    hold_tokens: u64,
    idle_settle: Duration,
}

fn phases(quick: bool) -> Phases {
    if quick {
        Phases {
            warmup: Duration::from_millis(500),
            latency: Duration::from_secs(2),
            saturation: Duration::from_secs(2),
            saturation_rounds: 2,
            stream: Duration::from_secs(2),
            hold_streams: 200,
            hold_tokens: 20,
            idle_settle: Duration::from_millis(300),
        }
    } else {
        Phases {
            warmup: Duration::from_secs(2),
            latency: Duration::from_secs(15),
            saturation: Duration::from_secs(12),
            saturation_rounds: 3,
            stream: Duration::from_secs(10),
            hold_streams: 1000,
            hold_tokens: 100,
            idle_settle: Duration::from_secs(2),
        }
    }
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mem_kb = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    json!({
        "nproc": nproc,
        "cpu_model": cpu,
        "mem_total_kb": mem_kb,
        "kernel": kernel,
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `YYYY-MM-DDTHH:MM:SSZ` from the system clock (civil-from-days, no time zone database).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// The routed scenarios' prompt: about 1,000 tokens.
const ROUTED_PROMPT_BYTES: usize = 4_000;

fn config_yaml(mock: SocketAddr, mock_tls: SocketAddr, ca_file: &str, hold_tokens: u64) -> String {
    format!(
        r#"# Written by tollway-bench.
server:
  master_key: {MASTER_KEY}
storage:
  url: sqlite://bench.db
providers:
  up: {{ kind: openai-compatible, base_url: "http://{mock}/v1", api_key: none }}
  up_tls: {{ kind: openai-compatible, base_url: "https://{mock_tls}/v1", api_key: none, ca_file: "{ca_file}" }}
models:
  small: {{ deployments: [{{ provider: up, model: "bench-small" }}] }}
  small_https: {{ deployments: [{{ provider: up_tls, model: "bench-small" }}] }}
  stream200: {{ deployments: [{{ provider: up, model: "bench-stream?tokens={STREAM_TOKENS}&tpt_ms=0&ttft_ms=0" }}] }}
  hold: {{ deployments: [{{ provider: up, model: "bench-hold?tokens={hold_tokens}&tpt_ms=100" }}] }}
  # "Everything on": a priced deployment with model limits, used with a virtual key of team `bench`.
  small_all:
    rpm: 100000000
    tpm: 100000000000
    deployments: [{{ provider: up, model: "bench-small", price: {{ input: "0.15", output: "0.60" }} }}]
  stream200_all:
    rpm: 100000000
    tpm: 100000000000
    deployments: [{{ provider: up, model: "bench-stream?tokens={STREAM_TOKENS}&tpt_ms=0&ttft_ms=0", price: {{ input: "0.15", output: "0.60" }} }}]
  # Auto-routing: two candidates on the same upstream model, so that the route taken does not
  # change what the upstream does.
  small_strong: {{ deployments: [{{ provider: up, model: "bench-small" }}] }}
routers:
  auto: {{ kind: learned, candidates: [small_strong, small], strong_share: 0.3 }}
teams:
  bench: {{ rpm: 100000000, tpm: 100000000000, budget: {{ usd: "1000000", period: monthly, hard: true }} }}
"#
    )
}

fn start_gateway(args: &SuiteArgs, dir: &Path, config: &Path, n: usize) -> anyhow::Result<Server> {
    let mut cmd = Command::new(&args.tollway);
    cmd.current_dir(dir)
        .env("RUST_LOG", "warn")
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"]);
    if let Some(n) = args.gateway_workers {
        cmd.args(["--workers", &n.to_string()]);
    }
    if args.gateway_pin_workers {
        cmd.arg("--pin-workers");
    }
    spawn(
        "tollway",
        cmd,
        &dir.join(format!("tollway-{n}.log")),
        true,
        args.pidfile.as_deref(),
    )
}

/// One target of a scenario's runs (the mock straight, or the gateway).
#[derive(Clone, Copy)]
struct Target<'a> {
    id: &'static str,
    addr: SocketAddr,
    key: Option<&'a str>,
    /// Spoken over HTTPS (the mock's TLS listener).
    https: bool,
}

struct Ctx<'a> {
    mock: &'a Server,
    /// The same mock over HTTPS, and the authority that signed its certificate.
    mock_tls: &'a Server,
    ca_file: String,
    gateway: &'a Server,
    clk_tck: u64,
}

impl Ctx<'_> {
    #[allow(clippy::too_many_arguments)]
    fn spec(
        &self,
        label: String,
        t: Target<'_>,
        model: &str,
        stream: bool,
        mode: Mode,
        warmup: Duration,
        duration: Duration,
        tls: bool,
        prompt_bytes: usize,
    ) -> anyhow::Result<Spec> {
        let scheme = if t.https { "https" } else { "http" };
        // the upstream of this scenario: the plain mock, or the HTTPS one
        let mock = if tls { self.mock_tls } else { self.mock };
        Ok(Spec {
            label,
            url: format!("{scheme}://{}/v1/chat/completions", t.addr)
                .parse()
                .context("url")?,
            headers: crate::headers(t.key)?,
            body: load::request_body(load::Api::Openai, model, stream, prompt_bytes),
            stream,
            api: load::Api::Openai,
            mode,
            warmup,
            duration,
            timeout: Duration::from_secs(30),
            max_in_flight: 4096,
            watch: vec![
                ("tollway".into(), self.gateway.pid()),
                ("mock".into(), mock.pid()),
            ],
            clk_tck: self.clk_tck,
            ca_file: t.https.then(|| self.ca_file.clone()),
        })
    }
}

impl Ctx<'_> {
    /// A scenario's runs: straight to its mock, then through the gateway with `key`; in
    /// `s.rounds` alternating rounds that split the measured time, for the closed-loop scenarios.
    async fn run_scenario(&self, s: &Scenario, key: &str) -> anyhow::Result<Value> {
        let upstream = if s.tls { self.mock_tls } else { self.mock };
        let direct = Target {
            id: "direct",
            addr: upstream.addr,
            key: Some(MASTER_KEY),
            https: s.tls,
        };
        let gateway = Target {
            id: "tollway",
            addr: self.gateway.addr,
            key: Some(key),
            https: false,
        };
        let rounds = s.rounds.max(1);
        let mut done = Vec::with_capacity(rounds as usize);
        for round in 1..=rounds {
            let mut runs = serde_json::Map::new();
            let mut own = None;
            for (t, model) in [
                (direct, s.model_direct.as_str()),
                (gateway, s.model_gateway),
            ] {
                let label = if rounds > 1 {
                    format!("{}/{}#{round}", s.id, t.id)
                } else {
                    format!("{}/{}", s.id, t.id)
                };
                let spec = self.spec(
                    label,
                    t,
                    model,
                    s.stream,
                    s.mode,
                    s.warmup,
                    s.duration / rounds,
                    s.tls,
                    s.prompt_bytes,
                )?;
                let before = (t.id == "tollway").then(|| metrics_text(self.gateway.addr));
                let r = load::run(spec).await?;
                print_run(s.id, t.id, &r);
                runs.insert(t.id.into(), r);
                if let Some(before) = before {
                    own = own_time(&before, &metrics_text(self.gateway.addr), s.stream);
                }
                // Let sockets in TIME_WAIT and the servers' queues settle between runs.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            done.push((runs, own));
        }
        let ratios: Vec<Option<f64>> = done.iter().map(|(runs, _)| throughput(runs)).collect();
        let (runs, own) = done.swap_remove(median_round(&ratios));
        let mut entry = scenario_entry(s.id, &s.title, runs, s.stream);
        if let (Some(own), Some(added)) = (own, entry["added"].get_mut("tollway")) {
            added["own_us"] = own;
        }
        if rounds > 1 {
            entry["rounds"] = json!({
                "count": rounds,
                "throughput_ratios": ratios.iter().map(|r| r.map(round3)).collect::<Vec<_>>(),
                "note": "direct and gateway runs alternated, each round a share of the measured time; `runs` and `added` are the round with the median throughput ratio",
            });
        }
        Ok(entry)
    }
}

/// Through the gateway ÷ straight to the mock, in successful responses per second.
fn throughput(runs: &serde_json::Map<String, Value>) -> Option<f64> {
    rps_ratio(runs.get("direct")?, runs.get("tollway")?)
}

/// `run`'s successful responses per second ÷ `direct`'s.
fn rps_ratio(direct: &Value, run: &Value) -> Option<f64> {
    let (x, y) = (
        direct["achieved_rps"].as_f64()?,
        run["achieved_rps"].as_f64()?,
    );
    (x > 0.0).then(|| y / x)
}

/// The index of the round with the median ratio (the upper one of an even count; rounds without a
/// ratio sort first).
fn median_round(ratios: &[Option<f64>]) -> usize {
    let mut order: Vec<usize> = (0..ratios.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |i: usize| ratios[i].unwrap_or(f64::NEG_INFINITY);
        key(a).total_cmp(&key(b))
    });
    order.get(ratios.len() / 2).copied().unwrap_or(0)
}

/// Difference `b − a` of two latency summaries, per percentile.
fn diff(a: &Value, b: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for k in ["p50", "p90", "p99", "p99.9", "max", "mean"] {
        if let (Some(x), Some(y)) = (a[k].as_f64(), b[k].as_f64()) {
            out.insert(k.into(), json!(round3(y - x)));
        }
    }
    Value::Object(out)
}

/// A load run straight to the mock, then the same through the gateway.
struct Scenario {
    id: &'static str,
    title: String,
    model_direct: String,
    model_gateway: &'static str,
    stream: bool,
    mode: Mode,
    warmup: Duration,
    duration: Duration,
    /// The upstream is the mock over HTTPS (straight runs speak HTTPS to it too).
    tls: bool,
    /// Alternating direct/gateway rounds: a ratio of two runs minutes apart on this machine
    /// measures its drift as much as the gateway.
    rounds: u32,
    /// The user message's length in bytes (0: the short default).
    prompt_bytes: usize,
}

impl Scenario {
    /// The small chat (`bench-small`), through the gateway as `model_gateway`.
    fn chat(
        id: &'static str,
        title: String,
        model_gateway: &'static str,
        mode: Mode,
        ph: &Phases,
    ) -> Scenario {
        let (duration, rounds) = match mode {
            Mode::Open { .. } => (ph.latency, 1),
            Mode::Closed { .. } => (ph.saturation, ph.saturation_rounds),
        };
        Scenario {
            id,
            title,
            model_direct: "bench-small".into(),
            model_gateway,
            stream: false,
            mode,
            warmup: ph.warmup,
            duration,
            tls: false,
            rounds,
            prompt_bytes: 0,
        }
    }

    /// The 200-chunk stream at 100 streams/s, through the gateway as `model_gateway`.
    fn stream200(
        id: &'static str,
        title: String,
        model_gateway: &'static str,
        ph: &Phases,
    ) -> Scenario {
        Scenario {
            id,
            title,
            model_direct: format!("bench-stream?tokens={STREAM_TOKENS}&tpt_ms=0&ttft_ms=0"),
            model_gateway,
            stream: true,
            mode: Mode::Open {
                rate: 100.0,
                requests: None,
            },
            warmup: ph.warmup,
            duration: ph.stream,
            tls: false,
            rounds: 1,
            prompt_bytes: 0,
        }
    }

    /// The upstream over HTTPS.
    fn over_tls(self) -> Scenario {
        Scenario { tls: true, ..self }
    }

    /// A user message of about `bytes` bytes.
    fn with_prompt(self, bytes: usize) -> Scenario {
        Scenario {
            prompt_bytes: bytes,
            ..self
        }
    }
}

/// Open loop at `rate` requests per second, for the measured window.
fn open(rate: f64) -> Mode {
    Mode::Open {
        rate,
        requests: None,
    }
}

fn print_run(id: &str, target: &str, r: &Value) {
    eprintln!(
        "  {id:<18} {target:<8} ok {:>7}  err {:>4}  {:>9.1} rps  p50 {:>9} µs  p99 {:>9} µs",
        r["ok"],
        r["errors"],
        r["achieved_rps"].as_f64().unwrap_or(0.0),
        r["latency_us"]["p50"],
        r["latency_us"]["p99"],
    );
}

pub async fn run(mut args: SuiteArgs) -> anyhow::Result<()> {
    // The gateway runs in a temporary directory: make the binaries' paths absolute.
    args.tollway = std::fs::canonicalize(&args.tollway)
        .with_context(|| format!("{}", args.tollway.display()))?;
    args.mock =
        std::fs::canonicalize(&args.mock).with_context(|| format!("{}", args.mock.display()))?;
    let ph = phases(args.quick);
    let started = Instant::now();
    let date = utc_now();
    let machine = machine();
    let load_before = loadavg();
    eprintln!(
        "tollway-bench suite{}: {} cores ({}); load average {load_before}",
        if args.quick {
            " (BENCH_QUICK: short phases, figures not meaningful)"
        } else {
            ""
        },
        machine["nproc"],
        machine["cpu_model"].as_str().unwrap_or("?"),
    );
    eprintln!("  the load generator, the upstream mock and the gateway share this one machine");
    eprintln!(
        "  gateway worker threads: {}{}",
        args.gateway_workers
            .map_or("one per core".to_string(), |n| n.to_string()),
        if args.gateway_pin_workers {
            ", each pinned to a CPU (--pin-workers)"
        } else {
            ""
        }
    );

    let tmp = TempDir(std::env::temp_dir().join(format!("tollway-bench-{}", std::process::id())));
    let dir = tmp.0.clone();
    std::fs::create_dir_all(&dir)?;
    std::fs::create_dir_all(&args.out)?;

    // Upstream.
    let mut mock_cmd = Command::new(&args.mock);
    mock_cmd
        .env("RUST_LOG", "warn")
        .args(["--listen", "127.0.0.1:0"]);
    let mock = spawn(
        "tollway-mock",
        mock_cmd,
        &dir.join("mock.log"),
        false,
        args.pidfile.as_deref(),
    )?;
    // The same upstream over HTTPS, as every real provider is: a throwaway authority, trusted by
    // the gateway's account (`ca_file`) and by the load generator's straight runs.
    let certs = tollway_mock::tls::TestCerts::generate().map_err(anyhow::Error::msg)?;
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &certs.ca_pem)?;
    std::fs::write(dir.join("cert.pem"), &certs.cert_pem)?;
    std::fs::write(dir.join("key.pem"), &certs.key_pem)?;
    let mut mock_tls_cmd = Command::new(&args.mock);
    mock_tls_cmd
        .env("RUST_LOG", "warn")
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(dir.join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.join("key.pem"));
    let mock_tls = spawn(
        "tollway-mock (HTTPS)",
        mock_tls_cmd,
        &dir.join("mock-tls.log"),
        false,
        args.pidfile.as_deref(),
    )?;
    let ca_file = ca_file.to_str().context("temporary path")?.to_string();
    let config = dir.join("bench.yaml");
    std::fs::write(
        &config,
        config_yaml(mock.addr, mock_tls.addr, &ca_file, ph.hold_tokens),
    )?;

    // Gateway start-up: several starts, the last one stays up. The first creates the SQLite file.
    let starts = if args.quick { 1 } else { args.starts.max(1) };
    let mut ready_ms = Vec::new();
    let mut gateway = None;
    for n in 0..starts {
        drop(gateway.take());
        let g = start_gateway(&args, &dir, &config, n)?;
        ready_ms.push(round3(g.ready.as_secs_f64() * 1000.0));
        gateway = Some(g);
    }
    let gateway = gateway.context("no gateway")?;
    let mut sorted = ready_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let ready_median = sorted[sorted.len() / 2];
    let rss_at_ready = procfs::rss_kb(gateway.pid()).ok();
    tokio::time::sleep(ph.idle_settle).await;
    let idle_rss = procfs::rss_kb(gateway.pid()).ok();
    eprintln!(
        "  tollway ready in {ready_ms:?} ms (spawn → /readyz 200); idle RSS {} KiB",
        idle_rss.unwrap_or(0)
    );
    eprintln!(
        "  mock on {}, gateway on {} (config {})",
        mock.addr,
        gateway.addr,
        config.display()
    );

    let ctx = Ctx {
        mock: &mock,
        mock_tls: &mock_tls,
        ca_file: ca_file.clone(),
        gateway: &gateway,
        clk_tck: args.clk_tck,
    };

    // Warm every path (connections, caches, lazy statics).
    for (addr, model, https, tls) in [
        (mock.addr, "bench-small", false, false),
        (gateway.addr, "small", false, false),
        (mock_tls.addr, "bench-small", true, true),
        (gateway.addr, "small_https", false, true),
    ] {
        let spec = ctx.spec(
            "warm".into(),
            Target {
                id: "warm",
                addr,
                key: Some(MASTER_KEY),
                https,
            },
            model,
            false,
            Mode::Open {
                rate: 200.0,
                requests: Some(100),
            },
            Duration::ZERO,
            Duration::from_secs(1),
            tls,
            0,
        )?;
        let r = load::run(spec).await?;
        anyhow::ensure!(
            r["ok"].as_u64().unwrap_or(0) > 0,
            "warm-up against {addr} failed: {}",
            r["error_kinds"]
        );
    }

    let hold_rate = if args.quick { 200.0 } else { 500.0 };
    let saturation = Mode::Closed { connections: 64 };
    let scenarios = vec![
        Scenario::chat(
            "chat_500rps",
            "non-streaming small chat, open loop 500 RPS".into(),
            "small",
            open(500.0),
            &ph,
        ),
        Scenario::chat(
            "chat_1000rps",
            "non-streaming small chat, open loop 1,000 RPS".into(),
            "small",
            open(1000.0),
            &ph,
        ),
        Scenario::chat(
            "chat_saturation",
            "non-streaming small chat, closed loop 64 connections (saturation)".into(),
            "small",
            saturation,
            &ph,
        ),
        Scenario::stream200(
            "stream200_100rps",
            format!("streaming {STREAM_TOKENS} chunks (tpt 0), open loop 100 streams/s"),
            "stream200",
            &ph,
        ),
        Scenario::chat(
            "chat_1000rps_https",
            "non-streaming small chat, open loop 1,000 RPS, upstream over HTTPS (HTTP/1.1)".into(),
            "small_https",
            open(1000.0),
            &ph,
        )
        .over_tls(),
        Scenario::chat(
            "chat_saturation_https",
            "non-streaming small chat, closed loop 64 connections, upstream over HTTPS".into(),
            "small_https",
            saturation,
            &ph,
        )
        .over_tls(),
        // Auto-routing: ~1,000-token prompts (4,000 bytes) at 1,000 RPS, as a plain model and
        // through the learned router (the built-in lexical model scores each prompt and picks one
        // of two candidates); the difference of the gateway's own time is the routing decision's.
        Scenario::chat(
            "chat4k_1000rps",
            format!("non-streaming chat with a {ROUTED_PROMPT_BYTES}-byte prompt, open loop 1,000 RPS"),
            "small",
            open(1000.0),
            &ph,
        )
        .with_prompt(ROUTED_PROMPT_BYTES),
        Scenario::chat(
            "chat4k_1000rps_routed",
            "the same through `auto`, a learned router (built-in lexical model, 30% to the stronger of two candidates)".into(),
            "auto",
            open(1000.0),
            &ph,
        )
        .with_prompt(ROUTED_PROMPT_BYTES),
    ];

    let mut results = Vec::new();
    let mut by_id = std::collections::BTreeMap::new();
    for s in &scenarios {
        eprintln!("scenario {}: {}", s.id, s.title);
        let entry = ctx.run_scenario(s, MASTER_KEY).await?;
        by_id.insert(s.id, entry.clone());
        results.push(entry);
    }

    // Everything on (before the held streams, so that it starts from the same state as the
    // plain runs rather than right after 1,000 streams closed): a virtual key with limits and a
    // hard budget, in a team with limits and a hard budget, a model with limits and a price (so
    // budgets are reserved and settled: a stream's at its end, from the usage it streamed), and
    // the ledger (always on). The small chat at 1,000 RPS, then the 200-chunk stream.
    {
        const ON: &str = "virtual key (rpm/tpm, hard budget) of a team (rpm/tpm, hard budget), model rpm/tpm, priced deployment, SQLite ledger";
        let all = [
            Scenario::chat(
                "chat_1000rps_all",
                format!("everything on: non-streaming small chat, open loop 1,000 RPS, {ON}"),
                "small_all",
                open(1000.0),
                &ph,
            ),
            Scenario::stream200(
                "stream200_100rps_all",
                format!(
                    "everything on: streaming {STREAM_TOKENS} chunks (tpt 0), open loop 100 streams/s, {ON}"
                ),
                "stream200_all",
                &ph,
            ),
        ];
        let created = post_json(
            gateway.addr,
            "/admin/keys",
            MASTER_KEY,
            &json!({
                "name": "bench", "team": "bench", "rpm": 100_000_000u64, "tpm": 100_000_000_000u64,
                "budget_usd": "1000000", "budget_period": "monthly",
            }),
        );
        let secret = match created {
            Ok((status, body)) if (200..300).contains(&status) && body["key"].is_string() => {
                Ok(body["key"].as_str().unwrap_or_default().to_string())
            }
            Ok((status, body)) => Err(format!(
                "not available (issue 3): POST /admin/keys answered {status}: {body}"
            )),
            Err(e) => Err(format!(
                "not available (issue 3): POST /admin/keys failed: {e:#}"
            )),
        };
        for s in &all {
            eprintln!("scenario {}: {}", s.id, s.title);
            let entry = match &secret {
                Ok(secret) => {
                    // its own direct run, just before: the machine's state drifts between scenarios
                    let mut e = ctx.run_scenario(s, secret).await?;
                    e["note"] = json!("own direct run just before; no global budget configured");
                    e
                }
                Err(why) => json!({ "id": s.id, "title": s.title, "skipped": why }),
            };
            results.push(entry);
        }
    }

    // Held-open slow streams: the gateway's memory with many streams open.
    {
        let title = format!(
            "{} concurrent slow streams held open (tokens={}, tpt_ms=100: ~{} s each), opened at {hold_rate}/s",
            ph.hold_streams,
            ph.hold_tokens,
            ph.hold_tokens / 10
        );
        eprintln!("scenario hold_streams: {title}");
        #[allow(clippy::cast_precision_loss)]
        let ramp = Duration::from_secs_f64(ph.hold_streams as f64 / hold_rate + 0.05);
        let spec = ctx.spec(
            "hold_streams/tollway".into(),
            Target {
                id: "tollway",
                addr: gateway.addr,
                key: Some(MASTER_KEY),
                https: false,
            },
            "hold",
            true,
            Mode::Open {
                rate: hold_rate,
                requests: Some(ph.hold_streams),
            },
            Duration::ZERO,
            ramp,
            false,
            0,
        )?;
        let r = load::run(spec).await?;
        print_run("hold_streams", "tollway", &r);
        eprintln!(
            "  held {} streams at once; gateway RSS max {} KiB",
            r["max_in_flight"], r["procs"]["tollway"]["rss_max_kb"]
        );
        let mut runs = serde_json::Map::new();
        runs.insert("tollway".into(), r);
        let entry = json!({
            "id": "hold_streams",
            "title": title,
            "skipped": null,
            "runs": runs,
        });
        by_id.insert("hold_streams", entry.clone());
        results.push(entry);
    }

    let idle_after = procfs::rss_kb(gateway.pid()).ok();
    let load_after = loadavg();
    drop(gateway);
    drop(mock);
    drop(mock_tls);
    drop(tmp);

    let get = |id: &str| results.iter().find(|e| e["id"] == id).cloned();
    let headline = headline(
        ready_median,
        idle_rss,
        get("chat_1000rps_all")
            .filter(|e| e["skipped"].is_null())
            .or_else(|| get("chat_1000rps")),
        get("chat_saturation"),
        get("stream200_100rps_all")
            .filter(|e| e["skipped"].is_null())
            .or_else(|| get("stream200_100rps")),
        get("hold_streams"),
    );
    let report = json!({
        "schema": "tollway-bench/1",
        "date": date,
        "commit": git_commit(),
        "gateway_workers": args.gateway_workers,
        "gateway_pin_workers": args.gateway_pin_workers,
        "quick": args.quick,
        "machine": machine,
        "shared_machine_note": "the load generator, the upstream mock and the gateway run on this one machine and share its cores; other work on the machine (load average below) disturbs the figures",
        "load_average": {"before": load_before, "after": load_after},
        "startup": {
            "ready_ms": ready_ms,
            "ready_ms_median": ready_median,
            "rss_at_ready_kb": rss_at_ready,
            "idle_rss_kb": idle_rss,
            "rss_after_suite_kb": idle_after,
            "note": "ready = from spawn to the first 200 of GET /readyz (polled every 0.5 ms); the first start creates the SQLite file",
        },
        "definitions": definitions(),
        "targets": targets(),
        "headline": headline,
        "scenarios": results,
        // Room for other gateways (bench/peers, opt-in): their runs go into each scenario's
        // `runs` under their own name, and their added latency into `added`.
        "peers": [],
        "elapsed_s": round3(started.elapsed().as_secs_f64()),
    });
    let json_path = args.out.join("latest.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")?;
    let md = markdown(&report);
    let md_path = args.out.join("latest.md");
    std::fs::write(&md_path, &md)?;
    println!("{md}");
    eprintln!(
        "wrote {} and {} in {:.0} s",
        json_path.display(),
        md_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn scenario_entry(
    id: &str,
    title: &str,
    runs: serde_json::Map<String, Value>,
    stream: bool,
) -> Value {
    let mut added = serde_json::Map::new();
    if let Some(d) = runs.get("direct") {
        for (name, r) in &runs {
            if name == "direct" {
                continue;
            }
            let mut a = json!({
                "latency_us": diff(&d["latency_us"], &r["latency_us"]),
                "ttfb_us": diff(&d["ttfb_us"], &r["ttfb_us"]),
            });
            if let Some(ratio) = rps_ratio(d, r) {
                a["throughput_ratio"] = json!(round3(ratio));
            }
            if stream {
                let dd = &d["stream_stats"]["stream_duration_us"];
                let rd = &r["stream_stats"]["stream_duration_us"];
                let mut per_chunk = serde_json::Map::new();
                for k in ["p50", "p99", "mean"] {
                    if let (Some(x), Some(y)) = (dd[k].as_f64(), rd[k].as_f64()) {
                        #[allow(clippy::cast_precision_loss)]
                        per_chunk.insert(k.into(), json!(round3((y - x) / STREAM_TOKENS as f64)));
                    }
                }
                a["per_chunk_from_duration_us"] = Value::Object(per_chunk);
                a["event_gap_us"] = diff(
                    &d["stream_stats"]["event_gap_us"],
                    &r["stream_stats"]["event_gap_us"],
                );
                a["event_arrival_us"] = diff(
                    &d["stream_stats"]["event_arrival_us"],
                    &r["stream_stats"]["event_arrival_us"],
                );
            }
            added.insert(name.clone(), a);
        }
    }
    json!({
        "id": id,
        "title": title,
        "skipped": null,
        "runs": runs,
        "added": added,
    })
}

fn definitions() -> Value {
    json!({
        "latency": "per request, from its scheduled start (open loop: fixed times at the target rate; closed loop: when the connection's loop sent it) to the last byte of the response; a late server cannot hide its queueing (no coordinated omission)",
        "service": "from the moment the request was actually sent to its last byte",
        "ttfb": "from the scheduled start to the first byte of the response body (for streams: the first SSE event)",
        "added": "gateway minus direct, per percentile: the same load straight to the mock, then through the gateway to the mock",
        "own": "the gateway's own time per request over its run, from its /metrics histogram tollway_overhead_seconds (warm-up included): the handler's time less the waits on the upstream and the client; percentiles interpolated within its buckets",
        "throughput_ratio": "closed loop: successful responses per second through the gateway / straight to the mock; the saturation scenarios alternate direct and gateway runs in rounds and report the round with the median ratio, every round's ratio listed",
        "per_chunk_from_duration": "(gateway stream duration − direct stream duration) / 200 chunks, at the same percentile, where stream duration = last byte − first byte of the body",
        "event_arrival": "each SSE event's arrival, from the request's scheduled start, all events of all streams pooled; its added figure (gateway − direct percentile) is how much later a client sees a chunk",
        "event_gap": "time between consecutive SSE events' arrival at the client (events that arrive in one read count a 0 gap); its added figure is the gateway's gap percentile minus the direct one",
        "rss": "VmRSS from /proc/PID/status; idle = 2 s after /readyz answered 200; under load = the maximum sampled every 100 ms during a run",
        "cpu_s_per_1k_requests": "utime+stime from /proc/PID/stat over the measured window, per 1,000 requests (ok + errors)",
        "cpu_system_share": "stime / (utime+stime) over the measured window: the share of a process's CPU spent in the kernel on its behalf (socket calls, wake-ups)",
    })
}

fn targets() -> Value {
    json!({
        "added_latency_p50_us_at_1000rps": 50,
        "added_latency_p99_us_at_1000rps": 250,
        "throughput_ratio_min": 0.6,
        "per_chunk_added_p99_us": 100,
        "idle_rss_mb": 25,
        "rss_1000_streams_mb": 150,
        "ready_ms": 100,
    })
}

#[allow(clippy::cast_precision_loss)]
fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn headline(
    ready_ms: f64,
    idle_rss: Option<u64>,
    c1000: Option<Value>,
    sat: Option<Value>,
    stream: Option<Value>,
    hold: Option<Value>,
) -> Value {
    let mut rows = Vec::new();
    let mut row =
        |figure: &str, measured: Option<f64>, unit: &str, target: f64, le: bool, detail: String| {
            let met = measured.map(|m| if le { m <= target } else { m >= target });
            rows.push(json!({
                "figure": figure, "measured": measured.map(round3), "unit": unit,
                "target": target, "target_is_max": le, "met": met, "detail": detail,
            }));
        };
    row(
        "ready in (spawn → /readyz 200, median)",
        Some(ready_ms),
        "ms",
        100.0,
        true,
        String::new(),
    );
    row(
        "idle RSS",
        idle_rss.map(mb),
        "MB",
        25.0,
        true,
        String::new(),
    );
    let c = c1000.unwrap_or(Value::Null);
    let which = if c["id"] == "chat_1000rps_all" {
        "everything on"
    } else {
        "plain: master key, unpriced model"
    };
    let a = &c["added"]["tollway"]["latency_us"];
    let dir = &c["runs"]["direct"]["latency_us"];
    let gw = &c["runs"]["tollway"]["latency_us"];
    row(
        &format!("added latency p50 @ 1,000 RPS ({which})"),
        a["p50"].as_f64(),
        "µs",
        50.0,
        true,
        format!(
            "direct {} µs, through tollway {} µs; the gateway's own work p50 ≈ {} µs (its `/metrics`; the rest is the two extra hops)",
            fmt_num(&dir["p50"]),
            fmt_num(&gw["p50"]),
            fmt_num(&c["added"]["tollway"]["own_us"]["p50"]),
        ),
    );
    row(
        &format!("added latency p99 @ 1,000 RPS ({which})"),
        a["p99"].as_f64(),
        "µs",
        250.0,
        true,
        format!(
            "direct {} µs, through tollway {} µs",
            fmt_num(&dir["p99"]),
            fmt_num(&gw["p99"])
        ),
    );
    let s = sat.unwrap_or(Value::Null);
    row(
        "throughput through tollway / straight to the mock (64 connections)",
        s["added"]["tollway"]["throughput_ratio"].as_f64(),
        "×",
        0.6,
        false,
        format!(
            "direct {} RPS, through tollway {} RPS{}",
            fmt_num(&s["runs"]["direct"]["achieved_rps"]),
            fmt_num(&s["runs"]["tollway"]["achieved_rps"]),
            rounds_note(&s["rounds"]),
        ),
    );
    let st = stream.unwrap_or(Value::Null);
    let which = if st["id"] == "stream200_100rps_all" {
        "everything on"
    } else {
        "plain: master key, unpriced model"
    };
    let ad = &st["added"]["tollway"];
    row(
        &format!("per-chunk added latency p99 ((stream duration through tollway − direct) / 200, at p99; {which})"),
        ad["per_chunk_from_duration_us"]["p99"].as_f64(),
        "µs",
        100.0,
        true,
        format!(
            "p50 {} µs; event-gap added p99 {} µs, p99.9 {} µs; event arrival added p50 {} µs, p99 {} µs; TTFB added p50 {} µs, p99 {} µs",
            fmt_num(&ad["per_chunk_from_duration_us"]["p50"]),
            fmt_num(&ad["event_gap_us"]["p99"]),
            fmt_num(&ad["event_gap_us"]["p99.9"]),
            fmt_num(&ad["event_arrival_us"]["p50"]),
            fmt_num(&ad["event_arrival_us"]["p99"]),
            fmt_num(&ad["ttfb_us"]["p50"]),
            fmt_num(&ad["ttfb_us"]["p99"])
        ),
    );
    let h = hold.unwrap_or(Value::Null);
    let hr = &h["runs"]["tollway"];
    row(
        "RSS with the held-open streams",
        hr["procs"]["tollway"]["rss_max_kb"].as_u64().map(mb),
        "MB",
        150.0,
        true,
        format!(
            "{} streams open at once (target counts 1,000); {} ok, {} errors",
            hr["max_in_flight"], hr["ok"], hr["errors"]
        ),
    );
    Value::Array(rows)
}

/// "; the median of 3 alternating rounds (0.58, 0.61, 0.63)", or nothing for a single run.
fn rounds_note(rounds: &Value) -> String {
    let Some(ratios) = rounds["throughput_ratios"].as_array() else {
        return String::new();
    };
    let each: Vec<String> = ratios
        .iter()
        .map(|r| r.as_f64().map_or("–".into(), |x| format!("{x:.2}")))
        .collect();
    format!(
        "; the median of {} alternating rounds ({})",
        ratios.len(),
        each.join(", ")
    )
}

fn fmt_num(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 1.0 || x == 0.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
        None => "–".into(),
    }
}

/// The Markdown report of a suite's JSON.
/// The auto-routing decision's share of the gateway's own time: the routed 4,000-byte chat
/// against the same chat to a plain model (empty when either is missing).
fn routing_note(r: &Value) -> String {
    let own = |id: &str| {
        r["scenarios"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["id"] == id)
            .map(|e| e["added"]["tollway"]["own_us"].clone())
            .filter(|o| o["p50"].is_number())
    };
    let (Some(plain), Some(routed)) = (own("chat4k_1000rps"), own("chat4k_1000rps_routed")) else {
        return String::new();
    };
    let d = |k: &str| {
        json!(round3(
            routed[k].as_f64().unwrap_or(0.0) - plain[k].as_f64().unwrap_or(0.0)
        ))
    };
    format!(
        "\nAuto-routing (`chat4k_1000rps_routed` against `chat4k_1000rps`, {ROUTED_PROMPT_BYTES}-byte prompts): the gateway's own work \
         p50 / p99 {} / {} µs routed, {} / {} µs plain, so the routing decision (the lexical router's score and the choice) \
         adds about {} µs at p50 and {} µs at p99.\n",
        fmt_num(&routed["p50"]), fmt_num(&routed["p99"]), fmt_num(&plain["p50"]), fmt_num(&plain["p99"]),
        fmt_num(&d("p50")), fmt_num(&d("p99")),
    )
}

pub fn markdown(r: &Value) -> String {
    let mut s = String::new();
    let m = &r["machine"];
    s += &format!(
        "# Tollway benchmark — {}{}\n\n",
        r["date"].as_str().unwrap_or(""),
        if r["quick"] == true {
            " (BENCH_QUICK smoke run: figures not meaningful)"
        } else {
            ""
        }
    );
    s += &format!(
        "Machine: {} cores (`nproc`), {}, {:.0} GiB, Linux {}; commit {}. **The load generator, the upstream mock \
         and the gateway share this one machine**, so the gateway competes with its own load for the cores; \
         load average before/after: {} / {}. Gateway worker threads: {}{}.\n\n",
        m["nproc"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["mem_total_kb"].as_f64().unwrap_or(0.0) / 1024.0 / 1024.0,
        m["kernel"].as_str().unwrap_or("?"),
        r["commit"].as_str().unwrap_or("?"),
        r["load_average"]["before"].as_str().unwrap_or("?"),
        r["load_average"]["after"].as_str().unwrap_or("?"),
        r["gateway_workers"]
            .as_u64()
            .map_or("one per core".to_string(), |n| n.to_string()),
        if r["gateway_pin_workers"].as_bool() == Some(true) {
            ", each pinned to a CPU (`--pin-workers`)"
        } else {
            ""
        },
    );
    s += "## Against the targets (issue 6)\n\n| figure | measured | target | met | detail |\n| --- | --- | --- | --- | --- |\n";
    for h in r["headline"].as_array().into_iter().flatten() {
        let unit = h["unit"].as_str().unwrap_or("");
        let target = format!(
            "{} {}{}",
            if h["target_is_max"] == true {
                "≤"
            } else {
                "≥"
            },
            h["target"].as_f64().map_or("?".into(), |t| format!("{t}")),
            if unit == "×" {
                String::new()
            } else {
                format!(" {unit}")
            }
        );
        let measured = match h["measured"].as_f64() {
            Some(x) if unit == "×" => format!("{:.0}%", x * 100.0),
            Some(x) => format!("{} {unit}", fmt_num(&json!(x))),
            None => "–".into(),
        };
        let target = if unit == "×" {
            format!("≥ {:.0}%", h["target"].as_f64().unwrap_or(0.0) * 100.0)
        } else {
            target
        };
        let met = match h["met"].as_bool() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        s += &format!(
            "| {} | {measured} | {target} | {met} | {} |\n",
            h["figure"].as_str().unwrap_or(""),
            h["detail"].as_str().unwrap_or("")
        );
    }
    s += &format!(
        "\nReady-in of each start: {} ms (the first creates the SQLite file). Idle RSS {} KiB, at ready {} KiB, after the suite {} KiB.\n\n",
        r["startup"]["ready_ms"], r["startup"]["idle_rss_kb"], r["startup"]["rss_at_ready_kb"], r["startup"]["rss_after_suite_kb"]
    );
    s += "## Scenarios\n\nLatency in µs from each request's scheduled start to its last byte; *added* = through tollway − direct, per percentile. \
          CPU = tollway's utime+stime per 1,000 requests; RSS = tollway's max during the run.\n\n";
    s += "| scenario | path | sent | ok | errors | achieved RPS | p50 | p90 | p99 | p99.9 | max | TTFB p50 | TTFB p99 | tollway CPU s/1k | tollway RSS MB |\n";
    s += "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    for e in r["scenarios"].as_array().into_iter().flatten() {
        let id = e["id"].as_str().unwrap_or("");
        if let Some(why) = e["skipped"].as_str() {
            s += &format!("| {id} | *skipped* | {why} |||||||||||||\n");
            continue;
        }
        for (name, run) in e["runs"].as_object().into_iter().flatten() {
            let l = &run["latency_us"];
            let t = &run["ttfb_us"];
            let gw = &run["procs"]["tollway"];
            let (cpu, rss) = if name == "direct" {
                ("–".to_string(), "–".to_string())
            } else {
                (
                    fmt_num(&gw["cpu_s_per_1k_requests"]),
                    gw["rss_max_kb"]
                        .as_u64()
                        .map_or("–".into(), |k| format!("{:.1}", mb(k))),
                )
            };
            s += &format!(
                "| {id} | {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {cpu} | {rss} |\n",
                run["sent"], run["ok"], run["errors"], fmt_num(&run["achieved_rps"]),
                fmt_num(&l["p50"]), fmt_num(&l["p90"]), fmt_num(&l["p99"]), fmt_num(&l["p99.9"]), fmt_num(&l["max"]),
                fmt_num(&t["p50"]), fmt_num(&t["p99"]),
            );
        }
        for (name, a) in e["added"].as_object().into_iter().flatten() {
            let l = &a["latency_us"];
            let t = &a["ttfb_us"];
            let ratio = a["throughput_ratio"].as_f64().map_or("–".into(), |x| {
                format!("{:.0}% of direct{}", x * 100.0, rounds_note(&e["rounds"]))
            });
            s += &format!(
                "| {id} | **added by {name}** | | | | {ratio} | **{}** | {} | **{}** | {} | {} | {} | {} | | |\n",
                fmt_num(&l["p50"]), fmt_num(&l["p90"]), fmt_num(&l["p99"]), fmt_num(&l["p99.9"]), fmt_num(&l["max"]),
                fmt_num(&t["p50"]), fmt_num(&t["p99"]),
            );
            let own = &a["own_us"];
            if !own.is_null() {
                s += &format!(
                    "| {id} | of which the gateway's own work (its `/metrics`, mean {}) | | | | | {} | {} | {} | | | | | | |\n",
                    fmt_num(&own["mean"]), fmt_num(&own["p50"]), fmt_num(&own["p90"]), fmt_num(&own["p99"]),
                );
            }
        }
    }
    s += &routing_note(r);
    s += "\n### Streams\n\n| scenario | path | events/stream | stream duration p50 / p99 µs | event gap p50 / p99 / p99.9 µs | event arrival p50 / p99 µs |\n| --- | --- | --- | --- | --- | --- |\n";
    for e in r["scenarios"].as_array().into_iter().flatten() {
        for (name, run) in e["runs"].as_object().into_iter().flatten() {
            let st = &run["stream_stats"];
            if st.is_null() {
                continue;
            }
            s += &format!(
                "| {} | {name} | {} | {} / {} | {} / {} / {} | {} / {} |\n",
                e["id"].as_str().unwrap_or(""),
                fmt_num(&st["events_per_stream"]["mean"]),
                fmt_num(&st["stream_duration_us"]["p50"]),
                fmt_num(&st["stream_duration_us"]["p99"]),
                fmt_num(&st["event_gap_us"]["p50"]),
                fmt_num(&st["event_gap_us"]["p99"]),
                fmt_num(&st["event_gap_us"]["p99.9"]),
                fmt_num(&st["event_arrival_us"]["p50"]),
                fmt_num(&st["event_arrival_us"]["p99"]),
            );
        }
        if let Some(a) = e["added"]["tollway"].get("event_gap_us") {
            let pc = &e["added"]["tollway"]["per_chunk_from_duration_us"];
            let ar = &e["added"]["tollway"]["event_arrival_us"];
            s += &format!(
                "| {} | **added by tollway** | | per chunk (Δduration/200): p50 {} / p99 {} | {} / {} / {} | {} / {} |\n",
                e["id"].as_str().unwrap_or(""),
                fmt_num(&pc["p50"]), fmt_num(&pc["p99"]),
                fmt_num(&a["p50"]), fmt_num(&a["p99"]), fmt_num(&a["p99.9"]),
                fmt_num(&ar["p50"]), fmt_num(&ar["p99"]),
            );
        }
    }
    s += "\n### Processes (max RSS MB / CPU s per 1,000 requests, of which in the kernel)\n\n| scenario | path | tollway | mock | load generator |\n| --- | --- | --- | --- | --- |\n";
    for e in r["scenarios"].as_array().into_iter().flatten() {
        for (name, run) in e["runs"].as_object().into_iter().flatten() {
            let p = |n: &str| {
                let x = &run["procs"][n];
                let sys = x["cpu_system_share"]
                    .as_f64()
                    .map_or(String::new(), |f| format!(" ({:.0}% system)", f * 100.0));
                format!(
                    "{} / {}{sys}",
                    x["rss_max_kb"]
                        .as_u64()
                        .map_or("–".into(), |k| format!("{:.1}", mb(k))),
                    fmt_num(&x["cpu_s_per_1k_requests"])
                )
            };
            let tollway = if name == "direct" {
                "(idle)".to_string()
            } else {
                p("tollway")
            };
            s += &format!(
                "| {} | {name} | {tollway} | {} | {} |\n",
                e["id"].as_str().unwrap_or(""),
                p("mock"),
                p("loadgen")
            );
        }
    }
    s += "\nDefinitions: see `definitions` in latest.json and bench/README.md.\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The routing decision's note: the routed chat's own time less the plain one's, and nothing
    /// when either scenario is missing or has no own time.
    #[test]
    fn the_routing_note_is_the_difference_of_own_times() {
        let entry = |id: &str, p50: f64, p99: f64| json!({"id": id, "added": {"tollway": {"own_us": {"p50": p50, "p90": 0.0, "p99": p99}}}});
        let report = json!({"scenarios": [
            entry("chat4k_1000rps", 30.0, 60.5),
            entry("chat4k_1000rps_routed", 55.25, 100.0),
        ]});
        let note = routing_note(&report);
        assert!(note.contains("55.2 / 100 µs routed"), "{note}");
        assert!(note.contains("30.0 / 60.5 µs plain"), "{note}");
        assert!(
            note.contains("about 25.2 µs at p50 and 39.5 µs at p99"),
            "{note}"
        );
        assert_eq!(
            routing_note(&json!({"scenarios": [entry("chat4k_1000rps", 1.0, 2.0)]})),
            ""
        );
        let no_own = json!({"scenarios": [
            entry("chat4k_1000rps", 1.0, 2.0),
            {"id": "chat4k_1000rps_routed", "skipped": "why"},
        ]});
        assert_eq!(routing_note(&no_own), "");
    }

    #[test]
    fn date_is_iso() {
        let d = utc_now();
        assert_eq!(d.len(), 20);
        assert!(d.starts_with("20"));
    }

    #[test]
    fn the_median_rounds_ratio_is_reported_with_every_rounds() {
        let runs = |direct: f64, gateway: f64| {
            let mut m = serde_json::Map::new();
            m.insert("direct".into(), json!({"achieved_rps": direct}));
            m.insert("tollway".into(), json!({"achieved_rps": gateway}));
            m
        };
        assert_eq!(throughput(&runs(20_000.0, 12_000.0)), Some(0.6));
        assert_eq!(throughput(&runs(0.0, 12_000.0)), None);
        assert_eq!(throughput(&serde_json::Map::new()), None);
        // the round whose ratio is in the middle, wherever it ran
        assert_eq!(median_round(&[Some(0.63), Some(0.55), Some(0.60)]), 2);
        assert_eq!(median_round(&[Some(0.55), Some(0.63), Some(0.60)]), 2);
        assert_eq!(median_round(&[Some(0.60)]), 0);
        // even counts take the upper middle; a failed round counts as the lowest
        assert_eq!(median_round(&[Some(0.7), Some(0.5)]), 0);
        assert_eq!(median_round(&[None, Some(0.5), Some(0.6)]), 1);
        assert_eq!(median_round(&[]), 0);
        assert_eq!(
            rounds_note(&json!({"throughput_ratios": [0.583, null, 0.6349]})),
            "; the median of 3 alternating rounds (0.58, –, 0.63)"
        );
        assert_eq!(rounds_note(&Value::Null), "");
    }

    #[test]
    fn diff_per_percentile() {
        let a = json!({"p50": 100.0, "p99": 300.0});
        let b = json!({"p50": 130.0, "p99": 500.0});
        let d = diff(&a, &b);
        assert_eq!(d["p50"], json!(30.0));
        assert_eq!(d["p99"], json!(200.0));
    }

    #[test]
    fn own_time_is_read_from_the_histograms_difference() {
        let text = |counts: [u64; 4], sum: f64| {
            let l = "api=\"openai\",stream=\"false\"";
            let mut t = String::from("# TYPE tollway_overhead_seconds histogram\n");
            for (le, n) in ["0.00001", "0.00005", "0.0001", "+Inf"].iter().zip(counts) {
                t += &format!("tollway_overhead_seconds_bucket{{{l},le=\"{le}\"}} {n}\n");
            }
            t += &format!("tollway_overhead_seconds_sum{{{l}}} {sum}\n");
            // the streams' series must not be mixed in
            t +=
                "tollway_overhead_seconds_bucket{api=\"openai\",stream=\"true\",le=\"+Inf\"} 999\n";
            t
        };
        // before: 10 requests; after: 110, of the 100 new ones 20 under 10 µs, 60 in 10..50 µs
        // and 20 in 50..100 µs
        let before = text([5, 10, 10, 10], 0.0002);
        let after = text([25, 90, 110, 110], 0.0032);
        let own = own_time(&before, &after, false).expect("requests");
        assert_eq!(own["requests"], json!(100.0));
        assert_eq!(own["mean"], json!(30.0));
        // the 50th of 100: the 30th of the 60 in the 10..50 µs bucket
        assert_eq!(own["p50"], json!(30.0));
        // the 99th: the 19th of the 20 in 50..100 µs
        assert_eq!(own["p99"], json!(97.5));
        // nothing new: no figure
        assert!(own_time(&after, &after, false).is_none());
        assert!(own_time("", "", false).is_none());
    }
}
