//! Trains and evaluates the lexical router without the gateway binary:
//! `cargo run --release -p tollway-engine --example router_train -- train DATA OUT` and
//! `... -- eval DATA MODEL [--dump-scores F] [--plot F.svg] [--report F.json]`.
//! It runs the same code as `tollway router train|eval` (`crates/tollway/src/router_cli.rs`).

#[path = "../../tollway/src/router_cli.rs"]
mod router_cli;

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
    };
    match args.first().map(String::as_str) {
        Some("train") if args.len() >= 3 && args.iter().any(|a| a == "--embedding") => {
            router_cli::train_embedding(
                args[1].as_ref(),
                args[2].as_ref(),
                &opt("--encoder-dir").unwrap_or_else(tollway_engine::router::encoder::default_dir),
                opt("--max-tokens")
                    .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
                    .unwrap_or(128),
                if args.iter().any(|a| a == "--static") { "static" } else { "contextual" },
            )
        }
        Some("train") if args.len() >= 3 => router_cli::train(args[1].as_ref(), args[2].as_ref(), None),
        Some("distill") => router_cli::distill(
            &opt("--encoder-dir").unwrap_or_else(tollway_engine::router::encoder::default_dir),
        ),
        Some("eval") if args.len() >= 3 => router_cli::eval(
            args[1].as_ref(),
            args[2].as_ref(),
            &opt("--encoder-dir").unwrap_or_else(tollway_engine::router::encoder::default_dir),
            opt("--dump-scores").as_deref(),
            opt("--plot").as_deref(),
            opt("--report").as_deref(),
        ),
        _ => anyhow::bail!("usage: router_train train DATA OUT [--embedding [--static] [--max-tokens N] [--encoder-dir D]] | distill [--encoder-dir D] | eval DATA MODEL [--encoder-dir D] [--dump-scores F] [--plot F] [--report F]"),
    }
}
