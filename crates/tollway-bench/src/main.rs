//! `tollway-bench`: load generator and benchmark suite for Tollway.
//!
//! - `tollway-bench run --url URL --model M [--rate R | --connections N] ...` runs one load and
//!   prints its JSON (latency percentiles from each request's *scheduled* start, TTFB, SSE event
//!   timing for streams, achieved rate, errors, RSS and CPU of `--watch NAME=PID` processes).
//! - `tollway-bench suite --tollway BIN --mock BIN --out DIR` starts the mock and the gateway on
//!   ephemeral loopback ports and runs every scenario straight to the mock and then through the
//!   gateway; writes `DIR/latest.json` and `DIR/latest.md` (`bench/run.sh` calls it).

mod load;
mod procfs;
mod suite;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use http::{HeaderName, HeaderValue};

#[derive(Parser)]
#[command(
    name = "tollway-bench",
    version,
    about = "Load generator and benchmark suite for Tollway"
)]
struct Cli {
    /// Worker threads of the load generator's runtime (the machine is shared with the servers).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One load run against `/v1/chat/completions` (or `/v1/messages`, `--api anthropic`);
    /// prints JSON.
    Run(RunArgs),
    /// The whole suite: spawns the mock and the gateway, runs every scenario, writes the results.
    Suite(suite::SuiteArgs),
    /// Prints the Markdown tables of a suite's JSON (`bench/results/latest.json`).
    Report {
        #[arg(default_value = "bench/results/latest.json")]
        json: std::path::PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Base URL (`http://127.0.0.1:4000`); the API's path is appended.
    #[arg(long)]
    url: String,
    /// The API to speak: `openai` (`/v1/chat/completions`) or `anthropic` (`/v1/messages`).
    #[arg(long, value_enum, default_value = "openai")]
    api: load::Api,
    #[arg(long, default_value = "bench-small")]
    model: String,
    /// Sent as `Authorization: Bearer KEY`.
    #[arg(long)]
    key: Option<String>,
    /// An extra request header, `NAME: VALUE` (repeatable; e.g. a peer gateway's routing headers).
    #[arg(long = "header")]
    extra_headers: Vec<String>,
    /// Ask for a stream (SSE events are counted and timed).
    #[arg(long)]
    stream: bool,
    /// Pad the prompt to about this many bytes (0: a short prompt).
    #[arg(long, default_value_t = 0)]
    prompt_bytes: usize,
    /// Open loop: requests per second at fixed times.
    #[arg(long, conflicts_with = "connections")]
    rate: Option<f64>,
    /// Open loop: stop after this many requests.
    #[arg(long, requires = "rate")]
    requests: Option<u64>,
    /// Closed loop (saturation): this many connections, each as fast as it can.
    #[arg(long)]
    connections: Option<usize>,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up before measuring (not recorded).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    #[arg(long, default_value_t = 4096)]
    max_in_flight: usize,
    /// Sample this process's RSS and CPU time over the measured window (`gateway=1234`).
    #[arg(long, value_parser = parse_watch)]
    watch: Vec<(String, u32)>,
    /// Clock ticks per second for `/proc/PID/stat` (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
    #[arg(long, default_value = "run")]
    label: String,
    /// For an `https://` URL: a PEM file of authorities to trust besides the public roots.
    #[arg(long)]
    ca_file: Option<String>,
}

fn parse_watch(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or("expected NAME=PID")?;
    let pid = pid.parse().map_err(|e| format!("pid: {e}"))?;
    Ok((name.to_string(), pid))
}

pub fn secs(s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|e| anyhow::anyhow!("bad duration {s}: {e}"))
}

/// The request headers the load generator sends.
pub fn headers(key: Option<&str>) -> anyhow::Result<Vec<(HeaderName, HeaderValue)>> {
    let mut h = vec![(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )];
    if let Some(k) = key {
        h.push((
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {k}")).context("key")?,
        ));
    }
    Ok(h)
}

async fn run_one(a: RunArgs) -> anyhow::Result<()> {
    let url = format!("{}{}", a.url.trim_end_matches('/'), a.api.path());
    let mode = match (a.rate, a.connections) {
        (Some(rate), _) => load::Mode::Open {
            rate,
            requests: a.requests,
        },
        (None, Some(connections)) => load::Mode::Closed { connections },
        (None, None) => anyhow::bail!("give --rate (open loop) or --connections (saturation)"),
    };
    load::check_watch(&a.watch)?;
    let spec = load::Spec {
        label: a.label,
        url: url.parse().context("url")?,
        headers: {
            let mut h = headers(a.key.as_deref())?;
            for raw in &a.extra_headers {
                let (name, value) = raw
                    .split_once(':')
                    .with_context(|| format!("--header {raw:?}: expected NAME: VALUE"))?;
                h.push((
                    HeaderName::from_bytes(name.trim().as_bytes())
                        .with_context(|| format!("--header {raw:?}: bad name"))?,
                    HeaderValue::from_str(value.trim())
                        .with_context(|| format!("--header {raw:?}: bad value"))?,
                ));
            }
            h
        },
        body: load::request_body(a.api, &a.model, a.stream, a.prompt_bytes),
        stream: a.stream,
        api: a.api,
        mode,
        warmup: secs(a.warmup)?,
        duration: secs(a.duration)?,
        timeout: secs(a.timeout)?,
        max_in_flight: a.max_in_flight,
        watch: a.watch,
        clk_tck: a.clk_tck,
        ca_file: a.ca_file,
    };
    let out = load::run(spec).await?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tollway-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async move {
        match cli.cmd {
            Cmd::Run(a) => run_one(a).await,
            Cmd::Report { json } => {
                let text = std::fs::read_to_string(&json)
                    .with_context(|| format!("{}", json.display()))?;
                let v: serde_json::Value = serde_json::from_str(&text)?;
                println!("{}", suite::markdown(&v));
                Ok(())
            }
            Cmd::Suite(a) => {
                tokio::select! {
                    r = suite::run(a) => r,
                    _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
                }
            }
        }
    });
    // In-flight requests of an aborted run must not keep the process alive.
    rt.shutdown_timeout(Duration::from_millis(200));
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollway-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
