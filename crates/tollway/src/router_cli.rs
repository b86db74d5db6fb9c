//! `tollway router train` and `tollway router eval`: the lexical learned router's offline commands
//! (the model and its metrics live in `tollway_engine::router`; this file does the IO).
//!
//! This file uses only `tollway_engine`, `anyhow`, `serde_json` and `std`, so that
//! `crates/tollway-engine/examples/router_train.rs` can include it as is (`scripts/train-router.sh`).

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{bail, Context};
use tollway_engine::router::{self, train::TrainOptions, LexicalRouter, Outcome, Prices, Progress};

/// Trains a router on the JSONL routing data at `data` and writes the model file to `out`.
///
/// `feedback_db` (a storage URL) is refused: the usage ledger keeps no prompts, so client feedback
/// cannot be joined to prompt text to make training rows.
pub fn train(data: &Path, out: &Path, feedback_db: Option<&str>) -> anyhow::Result<()> {
    if let Some(url) = feedback_db {
        bail!(
            "--feedback-db {url}: training from feedback is not possible yet: the usage ledger stores no prompts, \
             so ratings cannot be joined to prompt text; export rows in the routing-data JSONL format instead"
        );
    }
    let text =
        std::fs::read_to_string(data).with_context(|| format!("reading {}", data.display()))?;
    let dataset =
        router::parse_jsonl(&text, None).with_context(|| format!("reading {}", data.display()))?;
    eprintln!(
        "training on {} rows of {} (strong: {}, weak: {})",
        dataset.examples.len(),
        data.display(),
        dataset.strong_model,
        dataset.weak_model
    );
    let tty = std::io::stderr().is_terminal();
    let start = std::time::Instant::now();
    let mut on_progress = |p: Progress| {
        let mut err = std::io::stderr().lock();
        match p {
            Progress::Stage(s) => {
                if tty {
                    let _ = write!(err, "\r\x1b[2K");
                }
                let _ = writeln!(err, "{s}");
            }
            Progress::Fold {
                step,
                steps,
                what,
                apgr,
            } => {
                let apgr = if apgr.is_nan() {
                    String::new()
                } else {
                    format!(" APGR {apgr:.4}")
                };
                let secs = start.elapsed().as_secs();
                if tty {
                    let width = 30;
                    let filled = (step * width / steps.max(1)).min(width);
                    let _ = write!(
                        err,
                        "\r\x1b[2K[{}{}] {step}/{steps} {secs}s {what}{apgr}",
                        "#".repeat(filled),
                        " ".repeat(width - filled)
                    );
                    let _ = err.flush();
                } else {
                    let _ = writeln!(err, "{step}/{steps} {secs}s {what}{apgr}");
                }
            }
        }
    };
    let model = router::train::train(&dataset, &TrainOptions::default(), &mut on_progress)?;
    if tty {
        eprintln!();
    }
    let json = model.to_json();
    std::fs::write(out, &json).with_context(|| format!("writing {}", out.display()))?;
    let t = model.training();
    eprintln!(
        "wrote {} ({} bytes): cv APGR {:.4}, CPT(50%) {:.3}, CPT(80%) {:.3}, 95% quality at {:.3}",
        out.display(),
        json.len(),
        t.cv_apgr,
        t.cv.cpt50,
        t.cv.cpt80,
        t.cv.share_at_95
    );
    if let Some(d) = &t.leave_domains_out {
        eprintln!(
            "leave-domains-out: mean APGR {:.4}; pooled APGR {:.4}, CPT(50%) {:.3}, CPT(80%) {:.3}, 95% quality at {:.3}",
            d.mean_apgr, d.pooled.apgr, d.pooled.cpt50, d.pooled.cpt80, d.pooled.share_at_95
        );
    }
    Ok(())
}

/// Evaluates the model file `model` on the JSONL routing data at `data`: prints the curve at 10%
/// steps and the summary; optionally writes the scores (JSONL `{"id", "score"}`), an SVG plot and
/// a JSON report.
pub fn eval(
    data: &Path,
    model: &Path,
    dump_scores: Option<&Path>,
    plot: Option<&Path>,
    report: Option<&Path>,
) -> anyhow::Result<()> {
    let model_text =
        std::fs::read_to_string(model).with_context(|| format!("reading {}", model.display()))?;
    let router = LexicalRouter::from_json(&model_text)
        .with_context(|| format!("loading {}", model.display()))?;
    let text =
        std::fs::read_to_string(data).with_context(|| format!("reading {}", data.display()))?;
    let t = router.training();
    let dataset = router::parse_jsonl(&text, Some((&t.strong_model, &t.weak_model)))
        .with_context(|| format!("reading {}", data.display()))?;
    let scores: Vec<f64> = dataset
        .examples
        .iter()
        .map(|e| router.score(&e.prompt))
        .collect();
    let outcomes: Vec<Outcome> = dataset.examples.iter().map(|e| e.outcome).collect();
    let e = router::evaluate(&scores, &outcomes, Prices::default())?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} rows; q_strong {:.4}, q_weak {:.4}",
        e.rows, e.q_strong, e.q_weak
    );
    let _ = writeln!(
        out,
        "{:>5}  {:>8}  {:>8}  {:>8}  {:>7}",
        "c", "router", "random", "oracle", "PGR"
    );
    for p in e.curve.iter().step_by(10) {
        let _ = writeln!(
            out,
            "{:>4.0}%  {:>8.4}  {:>8.4}  {:>8.4}  {:>7.4}",
            p.c * 100.0,
            p.router,
            p.random,
            p.oracle,
            p.pgr
        );
    }
    let _ = writeln!(
        out,
        "APGR {:.4} (random 0.5000, oracle {:.4})\nCPT(50%) {:.1}%  CPT(80%) {:.1}%\n\
         95% of strong quality: {:.1}% of prompts to the strong model, {:.1}% of its cost",
        e.apgr,
        e.oracle_apgr,
        e.cpt50 * 100.0,
        e.cpt80 * 100.0,
        e.share_at_95 * 100.0,
        e.dollar_share_at_95 * 100.0
    );
    print!("{out}");
    if let Some(path) = dump_scores {
        let mut s = String::new();
        for (ex, score) in dataset.examples.iter().zip(&scores) {
            let _ = writeln!(s, "{}", serde_json::json!({"id": ex.id, "score": score}));
        }
        std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = plot {
        let title = format!(
            "lexical router on {}",
            data.file_name()
                .map(|f| f.to_string_lossy())
                .unwrap_or_default()
        );
        std::fs::write(path, router::plot_svg(&e, &title))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = report {
        let json = serde_json::json!({
            "data": data.display().to_string(),
            "data_fnv1a64": dataset.fnv1a64,
            "model": model.display().to_string(),
            "model_training": t,
            "evaluation": e,
        });
        let text = serde_json::to_string_pretty(&json)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
