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
    },
    /// Validate a config file: prints every error with its line; exits 1 on any.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Serve {
            config,
            listen,
            log_format,
        } => {
            init_logging(&log_format);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: could not start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(serve(config.as_deref(), listen)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
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

async fn serve(path: Option<&Path>, listen: Option<SocketAddr>) -> anyhow::Result<()> {
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
    let runtime = Runtime::build(cfg).await.map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let accounts = crate::accounts::Accounts::open(&cfg_storage, ledger_flush)
        .await
        .map_err(anyhow::Error::msg)?;
    tokio::spawn(accounts.clone().refresh_every(key_refresh));
    let state = AppState::new(runtime, accounts.clone());
    if let Some(p) = path {
        state.set_config_source(p.to_path_buf(), listen);
        tokio::spawn(server::reload_on_sighup(state.clone()));
        if state.runtime().config.server.watch_config {
            tokio::spawn(server::watch_config_file(state.clone()));
        }
    }
    tracing::info!(models = ?state.runtime().model_names(), "tollway listening on http://{local}");
    // Tests and scripts wait for this line on stdout.
    println!("tollway listening on http://{local}");
    server::serve(listener, state, shutdown_signal()).await?;
    // Every request has finished (or the drain timed out): write the rest of the ledger.
    accounts.flush_and_stop().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
