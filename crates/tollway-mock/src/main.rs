//! `tollway-mock [--listen ADDR] [--tls-cert FILE --tls-key FILE]`: runs the upstream simulator
//! until SIGTERM or Ctrl-C.

use std::io::Write;

use clap::Parser;

/// Upstream simulator speaking the OpenAI, Anthropic, Bedrock Converse, Gemini (AI Studio and
/// Vertex AI) and Azure OpenAI wire formats, with
/// knobs for latency, length, tool calls, usage and faults (see the crate README).
#[derive(Parser)]
#[command(name = "tollway-mock", version)]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// Serve HTTPS (HTTP/2 or HTTP/1.1 by ALPN) with this PEM certificate chain, leaf first.
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    tls_key: Option<std::path::PathBuf>,
    /// HTTP/2 over TLS: the most concurrent streams per connection (default 200).
    #[arg(long, requires = "tls_cert", value_name = "N")]
    h2_max_streams: Option<u32>,
}

/// The TLS set-up from `--tls-cert` and `--tls-key`, if given.
fn tls(args: &Args) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, String> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("cannot read `{}`: {e}", p.display()))
    };
    let config =
        tollway_mock::tls::server_config(&read(cert)?, &read(key)?, tollway_mock::tls::Alpn::Both)
            .map_err(|e| format!("`{}`, `{}`: {e}", cert.display(), key.display()))?;
    Ok(Some(config))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let tls = match tls(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tollway-mock: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tollway-mock: cannot listen on {}: {e}", args.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tollway-mock: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let _ = writeln!(out, "tollway-mock listening on {scheme}://{addr}");
    let _ = out.flush();
    drop(out);
    let served = match tls {
        Some(config) => {
            tollway_mock::tls::serve_tls(listener, config, args.h2_max_streams, shutdown_signal())
                .await
        }
        None => tollway_mock::serve(listener, shutdown_signal()).await,
    };
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollway-mock: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
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
        () = ctrl_c => {}
        () = term => {}
    }
}
