//! The command line: `tollway serve` and `tollway check`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config, ProcessEnv};
use crate::runtime::Runtime;
use crate::server::{self, AppState};

#[derive(Parser)]
#[command(
    name = "tollway",
    version,
    about = "An LLM gateway: one OpenAI- and Anthropic-compatible endpoint in front of any provider"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. Without --config, providers come from OPENAI_API_KEY, ANTHROPIC_API_KEY
    /// (and OPENAI_BASE_URL, ANTHROPIC_BASE_URL), the master key from TOLLWAY_MASTER_KEY.
    Serve {
        /// The config file (YAML).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen address; overrides the config's server.listen.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Log format.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
        /// Threads serving requests (default: one per CPU core), each with its own
        /// single-threaded runtime and upstream connection pools; background work (key refresh,
        /// ledger writes, reload watchers) runs on one more thread. Fewer than the cores leaves
        /// room for what shares the machine (the upstream, the clients).
        #[arg(long, env = "TOLLWAY_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
        workers: Option<u16>,
        /// Pin each serving thread to a CPU of its own (round robin over the CPUs this process
        /// may use), so that it keeps its caches instead of moving between cores. For a machine
        /// or a cpuset given to the gateway; on a machine shared with busy neighbours, leave it
        /// off and let the kernel move threads to idle cores.
        #[arg(long, env = "TOLLWAY_PIN_WORKERS")]
        pin_workers: bool,
    },
    /// Validate a config file: prints every error with its line; exits 1 on any.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Virtual keys (the same store as the admin API).
    Keys {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Auto-routers: fit one on a routing dataset, or print its cost-quality curve.
    Router {
        #[command(subcommand)]
        action: RouterAction,
    },
    /// Spend and tokens by key, team, model, provider or day, with the month-end forecast.
    Usage {
        #[command(flatten)]
        storage: StorageArgs,
        /// Comma-separated: key, team, model, provider, day.
        #[arg(long, default_value = "model")]
        group_by: String,
        /// First day (YYYY-MM-DD, UTC).
        #[arg(long)]
        since: Option<String>,
        /// Day after the last (YYYY-MM-DD, UTC).
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        team: Option<String>,
        #[arg(long, default_value = "table", value_parser = ["table", "csv", "json"])]
        format: String,
    },
    /// The request log (the usage ledger), newest first, a page at a time.
    Requests {
        #[command(flatten)]
        storage: StorageArgs,
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        team: Option<String>,
        /// The public model name asked for.
        #[arg(long)]
        model: Option<String>,
        /// `ok`, `error` or a status code.
        #[arg(long)]
        status: Option<String>,
        /// At most this many (1 to 500).
        #[arg(long, default_value = "50")]
        limit: String,
        /// The `next` a previous page printed: the page after it.
        #[arg(long)]
        before: Option<String>,
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
}

#[derive(Subcommand)]
enum RouterAction {
    /// Fit a lexical router on a routing dataset (JSONL: prompt, per-model scores).
    Train {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Also learn from client feedback stored in this storage URL.
        #[arg(long)]
        feedback_db: Option<String>,
        /// `lexical` (hashed n-grams) or `embedding` (all-MiniLM-L6-v2, kNN + logistic heads).
        #[arg(long, default_value = "lexical", value_parser = ["lexical", "embedding"])]
        kind: String,
        /// The sentence encoder's files (`scripts/fetch-encoder.sh`); for `--kind embedding`.
        #[arg(long, env = "TOLLWAY_ENCODER_DIR")]
        encoder_dir: Option<PathBuf>,
        /// Tokens of each prompt the encoder reads (2..=512 contextual; any number static); for
        /// `--kind embedding`.
        #[arg(long, default_value_t = 128)]
        max_tokens: usize,
        /// `contextual` runs the full encoder per prompt (tens of ms); `static` its distilled
        /// token table (microseconds, whole prompts); for `--kind embedding`.
        #[arg(long, default_value = "contextual", value_parser = ["contextual", "static"])]
        encoder_mode: String,
    },
    /// Build the distilled token table of the sentence encoder (`static-table.bin` next to its
    /// weights) that `embedding-static` routers use; they build it themselves on first use
    /// otherwise (about a minute).
    Distill {
        /// The sentence encoder's files (`scripts/fetch-encoder.sh`).
        #[arg(long, env = "TOLLWAY_ENCODER_DIR")]
        encoder_dir: Option<PathBuf>,
    },
    /// Evaluate a router: the cost-quality curve against random and the oracle, APGR, CPT.
    Eval {
        #[arg(long)]
        data: PathBuf,
        /// A model file (default: the built-in one's file in the repository).
        #[arg(long, default_value = "crates/tollway-engine/data/router-lexical.json")]
        model: PathBuf,
        /// Write one line per prompt: {"id": ..., "score": ...}.
        #[arg(long)]
        dump_scores: Option<PathBuf>,
        /// Write the curve as an SVG plot.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Write the full report as JSON.
        #[arg(long)]
        report: Option<PathBuf>,
        /// The sentence encoder's files, for an embedding router's model.
        #[arg(long, env = "TOLLWAY_ENCODER_DIR")]
        encoder_dir: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct StorageArgs {
    /// Read `storage.url` from this config file.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// The storage URL (sqlite://FILE or postgres://...); default sqlite://tollway.db.
    #[arg(long, global = true, conflicts_with = "config")]
    storage: Option<String>,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once from the command line
enum KeysAction {
    /// Create a key; its secret is printed once.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        team: Option<String>,
        /// Comma-separated public model names it may use (default: all).
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Comma-separated provider accounts it may reach (default: all).
        #[arg(long, value_delimiter = ',')]
        providers: Vec<String>,
        /// Comma-separated deployment regions it may reach (default: all).
        #[arg(long, value_delimiter = ',')]
        regions: Vec<String>,
        #[arg(long)]
        rpm: Option<u64>,
        #[arg(long)]
        tpm: Option<u64>,
        /// Budget in dollars (e.g. 25 or 0.50).
        #[arg(long)]
        budget_usd: Option<String>,
        /// daily, weekly, monthly (default with a budget) or total.
        #[arg(long)]
        budget_period: Option<String>,
        #[arg(long)]
        expires_in_days: Option<u64>,
        /// Learned-router knobs for this key, as JSON: `{"auto": {"strong_share": 0.1}}`.
        #[arg(long)]
        routing: Option<String>,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key at once.
    Revoke { id: String },
    /// Give a key a new secret; the old one stops working.
    Rotate { id: String },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Keys { storage, action } => run_async(keys(storage, action)),
        Command::Router { action } => {
            let r = match action {
                RouterAction::Train {
                    data,
                    out,
                    feedback_db,
                    kind,
                    encoder_dir,
                    max_tokens,
                    encoder_mode,
                } => match feedback_db {
                    None if kind == "embedding" => crate::router_cli::train_embedding(
                        &data,
                        &out,
                        &encoder_dir.unwrap_or_else(tollway_engine::router::encoder::default_dir),
                        max_tokens,
                        &encoder_mode,
                    ),
                    Some(_) if kind == "embedding" => Err(anyhow::anyhow!(
                        "--feedback-db trains the lexical router; for the embedding router, merge the rated prompts into --data"
                    )),
                    None => crate::router_cli::train(&data, &out, None),
                    Some(url) => {
                        let url2 = url.clone();
                        let data2 = data.clone();
                        match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map_err(anyhow::Error::from)
                            .and_then(|rt| rt.block_on(feedback_dataset(&data2, &url2)))
                        {
                            Ok(merged) => crate::router_cli::train(&merged, &out, None),
                            Err(e) => Err(e),
                        }
                    }
                },
                RouterAction::Distill { encoder_dir } => crate::router_cli::distill(
                    &encoder_dir.unwrap_or_else(tollway_engine::router::encoder::default_dir),
                ),
                RouterAction::Eval {
                    data,
                    model,
                    dump_scores,
                    plot,
                    report,
                    encoder_dir,
                } => crate::router_cli::eval(
                    &data,
                    &model,
                    &encoder_dir.unwrap_or_else(tollway_engine::router::encoder::default_dir),
                    dump_scores.as_deref(),
                    plot.as_deref(),
                    report.as_deref(),
                ),
            };
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Usage {
            storage,
            group_by,
            since,
            until,
            key,
            team,
            format,
        } => run_async(usage(
            storage,
            crate::admin::UsageParams {
                group_by: Some(group_by),
                since,
                until,
                key,
                team,
                format: None,
            },
            format,
        )),
        Command::Requests {
            storage,
            key,
            team,
            model,
            status,
            limit,
            before,
            format,
        } => run_async(requests(
            storage,
            crate::admin::RequestsParams {
                limit: Some(limit),
                before,
                key,
                team,
                model,
                status,
            },
            format,
        )),
        Command::Serve {
            config,
            listen,
            log_format,
            workers,
            pin_workers,
        } => {
            // first, while this is the only thread: may run the process again (same id)
            crate::malloc::tune();
            init_logging(&log_format);
            let lanes = workers.map(usize::from).unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            });
            // Requests are served on `lanes` threads of their own (`server::serve_lanes`); this
            // runtime runs start-up, reloads' watchers and the background tasks.
            tollway_providers::lanes::set_lanes(lanes);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("tollway-bg")
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: could not start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let lanes = crate::server::LaneSpec {
                count: lanes,
                pin: pin_workers,
            };
            match rt.block_on(serve(config.as_deref(), listen, lanes)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn open_store(args: &StorageArgs) -> anyhow::Result<tollway_store::Store> {
    let url = match (&args.storage, &args.config) {
        (Some(u), _) => u.clone(),
        (None, Some(path)) => {
            load(path)
                .map_err(|errs| anyhow::anyhow!("invalid config:\n{}", errs.join("\n")))?
                .storage_url
        }
        (None, None) => "sqlite://tollway.db".to_string(),
    };
    tollway_store::Store::connect(&url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open storage {}: {e}", config::redact_url(&url)))
}

async fn keys(args: StorageArgs, action: KeysAction) -> anyhow::Result<()> {
    let store = open_store(&args).await?;
    match action {
        KeysAction::Create {
            name,
            team,
            models,
            providers,
            regions,
            rpm,
            tpm,
            budget_usd,
            budget_period,
            expires_in_days,
            routing,
        } => {
            let routing = match routing {
                None => serde_json::Map::new(),
                Some(text) => serde_json::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("--routing is not a JSON object: {e}"))?,
            };
            let new = crate::admin::CreateKey {
                routing,
                name,
                team,
                models,
                providers,
                regions,
                rpm,
                tpm,
                budget_usd: budget_usd.map(serde_json::Value::String),
                budget_period,
                expires_in_days,
            }
            .into_new_key()
            .map_err(anyhow::Error::msg)?;
            let (k, secret) = store.create_key(new).await?;
            println!("{secret}");
            eprintln!(
                "created {} ({}); the secret above is shown once and cannot be recovered",
                k.id, k.name
            );
        }
        KeysAction::List { json } => {
            let keys = store.list_keys().await?;
            if json {
                let v: Vec<serde_json::Value> = keys.iter().map(crate::admin::key_json).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<24} {:<16} {:<16} {:<12} {:<8} {:<7} {:<8} BUDGET",
                    "ID", "PREFIX", "NAME", "TEAM", "STATUS", "SOURCE", "RPM"
                );
                for k in &keys {
                    let v = crate::admin::key_json(k);
                    println!(
                        "{:<24} {:<16} {:<16} {:<12} {:<8} {:<7} {:<8} {}",
                        k.id,
                        k.prefix,
                        k.name,
                        k.team.as_deref().unwrap_or("-"),
                        v["status"].as_str().unwrap_or("-"),
                        v["source"].as_str().unwrap_or("-"),
                        k.rpm.map_or("-".to_string(), |r| r.to_string()),
                        match (&k.budget_micros, &k.budget_period) {
                            (Some(b), Some(p)) => format!("${} {p}", crate::admin::usd(*b)),
                            _ => "-".into(),
                        }
                    );
                }
            }
        }
        KeysAction::Revoke { id } => {
            if !store.revoke_key(&id).await? {
                anyhow::bail!("no active key `{id}`");
            }
            println!("revoked {id}");
        }
        KeysAction::Rotate { id } => match store.rotate_key(&id).await? {
            Some((k, secret)) => {
                println!("{secret}");
                eprintln!("rotated {}; the old secret no longer works", k.id);
            }
            None => anyhow::bail!("no active key `{id}`"),
        },
    }
    Ok(())
}

async fn requests(
    args: StorageArgs,
    params: crate::admin::RequestsParams,
    format: String,
) -> anyhow::Result<()> {
    let store = open_store(&args).await?;
    let q = crate::admin::ReportParams::query(&params).map_err(anyhow::Error::msg)?;
    let v = crate::admin::requests_json(&store, &q)
        .await
        .map_err(anyhow::Error::msg)?;
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<19}  {:<36}  {:<24}  {:<16}  {:<32}  {:>6}  {:>3}  {:>7}  {:>8}  {:>8}  COST_USD",
        "TIME_UTC", "REQUEST_ID", "KEY", "MODEL", "DEPLOYMENT", "STATUS", "TRY", "MS", "IN", "OUT"
    );
    for r in v["data"].as_array().into_iter().flatten() {
        let text = |k: &str| r[k].as_str().unwrap_or("-").to_string();
        let num = |k: &str| r[k].as_i64().map_or("-".into(), |n| n.to_string());
        let time = text("time");
        println!(
            "{:<19}  {:<36}  {:<24}  {:<16}  {:<32}  {:>6}  {:>3}  {:>7}  {:>8}  {:>8}  {}",
            time.get(..19).unwrap_or(&time).replace('T', " "),
            text("request_id"),
            r["key_id"].as_str().unwrap_or("master"),
            text("model"),
            r["deployment"]
                .as_str()
                .filter(|d| !d.is_empty())
                .unwrap_or("-"),
            num("status"),
            num("attempts"),
            num("latency_ms"),
            num("input_tokens"),
            num("output_tokens"),
            r["cost_usd"].as_str().unwrap_or("unknown"),
        );
    }
    if let Some(next) = v["next"].as_str() {
        eprintln!("more: --before {next}");
    }
    Ok(())
}

async fn usage(
    args: StorageArgs,
    params: crate::admin::UsageParams,
    format: String,
) -> anyhow::Result<()> {
    let store = open_store(&args).await?;
    let q = crate::admin::ReportParams::query(&params).map_err(anyhow::Error::msg)?;
    match format.as_str() {
        "csv" => print!(
            "{}",
            crate::admin::usage_csv(&store, &q)
                .await
                .map_err(anyhow::Error::msg)?
        ),
        "json" => {
            let v = crate::admin::usage_json(&store, &q)
                .await
                .map_err(anyhow::Error::msg)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        _ => {
            let v = crate::admin::usage_json(&store, &q)
                .await
                .map_err(anyhow::Error::msg)?;
            let mut cols: Vec<String> = q.group_by.clone();
            cols.extend(
                [
                    "requests",
                    "cache_hits",
                    "input_tokens",
                    "output_tokens",
                    "cost_usd",
                ]
                .map(String::from),
            );
            println!(
                "{}",
                cols.iter().map(|c| format!("{c:<20}")).collect::<String>()
            );
            for r in v["rows"].as_array().into_iter().flatten() {
                let line: String = cols
                    .iter()
                    .map(|c| {
                        let cell = match &r[c] {
                            serde_json::Value::String(s) => s.clone(),
                            serde_json::Value::Null => "-".into(),
                            other => other.to_string(),
                        };
                        format!("{cell:<20}")
                    })
                    .collect();
                println!("{line}");
            }
            let f = &v["forecast"];
            println!(
                "\n{}: ${} so far this month; ${} forecast at month end ({})",
                f["month"].as_str().unwrap_or("-"),
                f["month_to_date_usd"].as_str().unwrap_or("0"),
                f["forecast_month_end_usd"].as_str().unwrap_or("0"),
                f["basis"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

/// The dataset plus rated traffic: routed prompts (from routers with `log_prompts`) that clients
/// rated through `/v1/feedback`, as rows of the same format. A bad answer from the weak model says
/// the prompt needed the strong one (weak 0, strong 1); a good one says it did not (both 1).
/// Ratings of the strong model's answers say nothing about the weak one and are left out.
async fn feedback_dataset(data: &Path, url: &str) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(data)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", data.display()))?;
    // which model is the strong one: the higher mean score in the dataset
    let mut sums: std::collections::BTreeMap<String, (f64, u64)> = Default::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        if let Some(scores) = v["scores"].as_object() {
            for (m, s) in scores {
                let e = sums.entry(m.clone()).or_default();
                e.0 += s.as_f64().unwrap_or(0.0);
                e.1 += 1;
            }
        }
    }
    let mut by_mean: Vec<(String, f64)> = sums
        .into_iter()
        .map(|(m, (s, n))| (m, s / n.max(1) as f64))
        .collect();
    by_mean.sort_by(|a, b| b.1.total_cmp(&a.1));
    let (Some((strong, _)), Some((weak, _))) = (by_mean.first(), by_mean.get(1)) else {
        anyhow::bail!("{}: needs scores for two models", data.display());
    };
    let store = tollway_store::Store::connect(url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", config::redact_url(url)))?;
    let rated = store.routing_feedback().await?;
    let mut out = text.clone();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    let mut added = 0;
    for (i, (prompt, to_strong, rating)) in rated.iter().enumerate() {
        if *to_strong {
            continue;
        }
        let weak_score = if rating == "good" { 1.0 } else { 0.0 };
        let row = serde_json::json!({
            "id": format!("feedback/{i}"), "source": "feedback", "domain": "feedback",
            "prompt": prompt, "scores": {strong.as_str(): 1.0, weak.as_str(): weak_score},
        });
        out.push_str(&row.to_string());
        out.push('\n');
        added += 1;
    }
    eprintln!(
        "feedback: {added} rated prompts added to {} (strong = {strong}, weak = {weak})",
        data.display()
    );
    let path =
        std::env::temp_dir().join(format!("tollway-router-train-{}.jsonl", std::process::id()));
    std::fs::write(&path, out)?;
    Ok(path)
}

fn init_logging(format: &str) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let registry = tracing_subscriber::registry().with(filter);
    if format == "json" {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init();
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init();
    }
}

fn load(path: &Path) -> Result<Config, Vec<String>> {
    config::load_file(path, &ProcessEnv)
}

fn check(path: &Path) -> ExitCode {
    match load(path) {
        Ok(c) => {
            println!(
                "{}: ok ({} providers, {} models)",
                path.display(),
                c.providers.len(),
                c.models.len()
            );
            ExitCode::SUCCESS
        }
        Err(errs) => {
            for e in &errs {
                println!("{e}");
            }
            println!("{} error(s)", errs.len());
            ExitCode::FAILURE
        }
    }
}

async fn serve(
    path: Option<&Path>,
    listen: Option<SocketAddr>,
    lanes: crate::server::LaneSpec,
) -> anyhow::Result<()> {
    let mut cfg = match path {
        Some(p) => {
            load(p).map_err(|errs| anyhow::anyhow!("invalid config:\n{}", errs.join("\n")))?
        }
        None => config::from_env(&ProcessEnv, listen).map_err(anyhow::Error::msg)?,
    };
    if let Some(addr) = listen {
        if cfg.server.master_key.is_none() && !addr.ip().is_loopback() {
            anyhow::bail!("a master key is required when listening on {addr}");
        }
        cfg.server.listen = addr;
    }
    if cfg.server.master_key.is_none() {
        tracing::warn!("no master key configured: authentication is off (loopback only)");
    }
    if cfg.providers.is_empty() {
        tracing::warn!(
            "no providers configured: set OPENAI_API_KEY / ANTHROPIC_API_KEY or pass --config"
        );
    }
    let addr = cfg.server.listen;
    let (cfg_storage, ledger_flush, key_refresh) =
        (cfg.storage_url.clone(), cfg.ledger_flush, cfg.key_refresh);
    let shared_state = cfg
        .shared_state_url
        .clone()
        .map(|u| (u, cfg.shared_state_prefix.clone()));
    let runtime = Runtime::build(cfg).await.map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let accounts = crate::accounts::Accounts::open_shared(&cfg_storage, ledger_flush, shared_state)
        .await
        .map_err(anyhow::Error::msg)?;
    tokio::spawn(accounts.clone().refresh_every(key_refresh));
    let state = AppState::new(runtime, accounts.clone());
    tokio::spawn(server::budget_alerts(state.clone()));
    tokio::spawn(server::sync_cooldowns(state.clone()));
    tokio::spawn(server::export_traces(state.clone()));
    tokio::spawn(server::active_probes(state.clone()));
    if let Some(p) = path {
        let rt = state.runtime();
        state.sync_keys(&rt).await.map_err(anyhow::Error::msg)?;
        state.set_config_source(p.to_path_buf(), listen);
        server::reload_on_sighup(state.clone());
        if state.runtime().config.server.watch_config {
            tokio::spawn(server::watch_config_file(state.clone()));
        }
    }
    // Signal handlers are in place before the line that says the gateway listens.
    let shutdown = shutdown_signal();
    tracing::info!(models = ?state.runtime().model_names(), "tollway listening on http://{local}");
    // Tests and scripts wait for this line on stdout.
    println!("tollway listening on http://{local}");
    // Every request has finished (or the drain timed out) before the rest of the ledger is written.
    let listener = listener.into_std()?;
    let last = state.clone();
    server::serve_lanes(listener, state, lanes, shutdown, async move {
        accounts.flush_and_stop().await;
        server::flush_traces(&last).await;
    })
    .await?;
    tracing::info!("stopped");
    Ok(())
}

/// Registers for SIGINT and SIGTERM now, so that a signal sent right after the gateway says it
/// listens drains it instead of killing it; the future resolves on the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        async fn first(s: Option<Signal>) {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        let (int, term) = (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        );
        async move {
            tokio::select! {
                _ = first(int) => {},
                _ = first(term) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
