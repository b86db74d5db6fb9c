//! `tollway router train` and `tollway router eval`: the learned routers' offline commands, for
//! the lexical and the embedding router (the models and their metrics live in
//! `tollway_engine::router`; this file does the IO).
//!
//! This file uses only `tollway_engine`, `anyhow`, `serde_json` and `std`, so that
//! `crates/tollway-engine/examples/router_train.rs` can include it as is (`scripts/train-router.sh`).

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{bail, Context};
use tollway_engine::router::distilled::StaticEncoder;
use tollway_engine::router::embed::{self, EmbedTrainOptions, Embedder, EmbeddingRouter};
use tollway_engine::router::encoder::Encoder;
use tollway_engine::router::{
    self, train::TrainOptions, LexicalRouter, Outcome, Prices, Progress, RouteModel,
};

/// Trains a router on the JSONL routing data at `data` and writes the model file to `out`.
///
/// Client feedback is merged into `data` by the caller (`tollway router train --feedback-db`);
/// here `feedback_db` must be `None`.
pub fn train(data: &Path, out: &Path, feedback_db: Option<&str>) -> anyhow::Result<()> {
    if let Some(url) = feedback_db {
        bail!("--feedback-db {url}: merge the feedback into the data first (`tollway router train` does)");
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
    let mut on_progress = progress_printer();
    let model = router::train::train(&dataset, &TrainOptions::default(), &mut on_progress)?;
    if std::io::stderr().is_terminal() {
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

/// Trains an embedding router (all-MiniLM-L6-v2 from `encoder_dir`, reading `max_tokens` tokens
/// per prompt) on the JSONL routing data at `data` and writes the model file to `out`. `mode`
/// `"contextual"` runs the full encoder (the prompts' embeddings are cached in the temporary
/// directory, keyed by the data's hash); `"static"` its distilled token table, with token weights
/// and centre taken from the training prompts.
pub fn train_embedding(
    data: &Path,
    out: &Path,
    encoder_dir: &Path,
    max_tokens: usize,
    mode: &str,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(data).with_context(|| format!("reading {}", data.display()))?;
    let dataset =
        router::parse_jsonl(&text, None).with_context(|| format!("reading {}", data.display()))?;
    eprintln!(
        "training an embedding router ({mode} encoder) on {} rows of {} (strong: {}, weak: {}), {max_tokens} tokens per prompt",
        dataset.examples.len(),
        data.display(),
        dataset.strong_model,
        dataset.weak_model
    );
    let prompts: Vec<&str> = dataset.examples.iter().map(|e| e.prompt.as_str()).collect();
    let encoder = match mode {
        "contextual" => {
            Embedder::Contextual(std::sync::Arc::new(Encoder::load(encoder_dir, max_tokens)?))
        }
        "static" => Embedder::static_from_corpus(
            std::sync::Arc::new(StaticEncoder::load(encoder_dir, max_tokens)?),
            &prompts,
        ),
        other => bail!("encoder mode `{other}` is not `contextual` or `static`"),
    };
    let emb = embeddings(&encoder, &prompts, &dataset.fnv1a64)?;
    let mut on_progress = progress_printer();
    let model = embed::train(
        &dataset,
        &emb,
        encoder,
        &EmbedTrainOptions::default(),
        &mut on_progress,
    )?;
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let json = model.to_json();
    std::fs::write(out, &json).with_context(|| format!("writing {}", out.display()))?;
    let t = model.training();
    eprintln!(
        "wrote {} ({} bytes): k = {}; cv APGR {:.4} (neighbours alone {:.4}, heads alone {:.4}), CPT(50%) {:.3}, CPT(80%) {:.3}, 95% quality at {:.3}",
        out.display(),
        json.len(),
        t.k,
        t.cv.apgr,
        t.cv_knn.apgr,
        t.cv_head.apgr,
        t.cv.cpt50,
        t.cv.cpt80,
        t.cv.share_at_95
    );
    if let Some((groups, pooled)) = &t.leave_domains_out {
        let mean = groups.iter().map(|g| g.1).sum::<f64>() / groups.len().max(1) as f64;
        eprintln!(
            "leave-domains-out: mean APGR {mean:.4}; pooled APGR {:.4}, CPT(50%) {:.3}, CPT(80%) {:.3}, 95% quality at {:.3}",
            pooled.apgr, pooled.cpt50, pooled.cpt80, pooled.share_at_95
        );
    }
    Ok(())
}

/// Builds (or checks) the static table of the encoder in `dir`.
pub fn distill(dir: &Path) -> anyhow::Result<()> {
    let t = std::time::Instant::now();
    let enc = StaticEncoder::load(dir, 1)?;
    eprintln!(
        "{}: {} tokens ready in {:.1} s",
        tollway_engine::router::distilled::table_path(dir).display(),
        enc.vocab_len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The embeddings of `prompts` (two threads); the contextual encoder's come from the cache when
/// this data was embedded before with the same encoder settings.
fn embeddings(
    encoder: &Embedder,
    prompts: &[&str],
    data_hash: &str,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    if let Embedder::Static { .. } = encoder {
        return Ok(embed::embed_all(encoder, prompts, threads, &mut |_| {})?);
    }
    let dim = router::encoder::DIM;
    let cache = std::env::temp_dir().join(format!(
        "tollway-embeddings-{data_hash}-{}-{}.f32",
        encoder.max_tokens(),
        &router::encoder::MODEL_SHA256[..12]
    ));
    if let Ok(bytes) = std::fs::read(&cache) {
        if bytes.len() == prompts.len() * dim * 4 {
            let flat: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            eprintln!("embeddings from {}", cache.display());
            return Ok(flat.chunks_exact(dim).map(<[f32]>::to_vec).collect());
        }
    }
    let mut on_progress = progress_printer();
    let emb = embed::embed_all(encoder, prompts, threads, &mut on_progress)?;
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let bytes: Vec<u8> = emb.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
    if let Err(e) = std::fs::write(&cache, bytes) {
        eprintln!("could not cache the embeddings in {}: {e}", cache.display());
    }
    Ok(emb)
}

/// A progress bar on a terminal, a line per step otherwise.
fn progress_printer() -> impl FnMut(Progress) {
    let tty = std::io::stderr().is_terminal();
    let start = std::time::Instant::now();
    move |p: Progress| {
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
    }
}

/// Evaluates the model file `model` on the JSONL routing data at `data`: prints the curve at 10%
/// steps and the summary; optionally writes the scores (JSONL `{"id", "score"}`), an SVG plot and
/// a JSON report.
pub fn eval(
    data: &Path,
    model: &Path,
    encoder_dir: &Path,
    dump_scores: Option<&Path>,
    plot: Option<&Path>,
    report: Option<&Path>,
) -> anyhow::Result<()> {
    let model_text =
        std::fs::read_to_string(model).with_context(|| format!("reading {}", model.display()))?;
    let text =
        std::fs::read_to_string(data).with_context(|| format!("reading {}", data.display()))?;
    let is_embedding = model_text.contains("\"tollway-embedding-router\"");
    let (kind, training, dataset, assessed) = if is_embedding {
        let router = EmbeddingRouter::from_json(&model_text, encoder_dir)
            .with_context(|| format!("loading {}", model.display()))?;
        let t = router.training();
        let dataset = router::parse_jsonl(&text, Some((&t.strong_model, &t.weak_model)))
            .with_context(|| format!("reading {}", data.display()))?;
        let prompts: Vec<&str> = dataset.examples.iter().map(|e| e.prompt.as_str()).collect();
        let emb = embeddings(router.embedder(), &prompts, &dataset.fnv1a64)?;
        let assessed: Vec<router::Assessment> =
            emb.iter().map(|e| router.assess_embedding(e)).collect();
        let kind = router.kind();
        (kind, serde_json::to_value(t)?, dataset, assessed)
    } else {
        let router = LexicalRouter::from_json(&model_text)
            .with_context(|| format!("loading {}", model.display()))?;
        let t = router.training();
        let dataset = router::parse_jsonl(&text, Some((&t.strong_model, &t.weak_model)))
            .with_context(|| format!("reading {}", data.display()))?;
        let assessed: Vec<router::Assessment> = dataset
            .examples
            .iter()
            .map(|e| router.assess(&e.prompt))
            .collect();
        ("lexical", serde_json::to_value(t)?, dataset, assessed)
    };
    let scores: Vec<f64> = assessed.iter().map(|a| a.score).collect();
    // the predicted quality of each model against its observed scores
    let observed: [Vec<f64>; 2] = [
        dataset.examples.iter().map(|e| e.outcome.strong).collect(),
        dataset.examples.iter().map(|e| e.outcome.weak).collect(),
    ];
    let calibrations: Vec<(String, router::Reliability)> =
        [&dataset.strong_model, &dataset.weak_model]
            .iter()
            .enumerate()
            .filter(|(i, _)| assessed.iter().all(|a| a.quality.len() > *i))
            .map(|(i, name)| {
                let predicted: Vec<f64> = assessed.iter().map(|a| a.quality[i]).collect();
                (
                    (*name).clone(),
                    router::reliability(&predicted, &observed[i]),
                )
            })
            .collect();
    let outcomes: Vec<Outcome> = dataset.examples.iter().map(|e| e.outcome).collect();
    let e = router::evaluate(&scores, &outcomes, Prices::default())?;
    // What telling the domains apart is worth on this data: a reference for the router's figures.
    let domain_oracle = dataset
        .domain_oracle_scores()
        .map(|s| router::evaluate(&s, &outcomes, Prices::default()))
        .transpose()?;
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
    if let Some(d) = &domain_oracle {
        let _ = writeln!(
            out,
            "domain oracle ({} domains, each prompt scored by its domain's mean gain in this data): \
             APGR {:.4}, CPT(50%) {:.1}%, CPT(80%) {:.1}%, {:.1}% of the strong model's cost at 95%",
            dataset.domain_count(),
            d.apgr,
            d.cpt50 * 100.0,
            d.cpt80 * 100.0,
            d.dollar_share_at_95 * 100.0
        );
    }
    for (name, c) in &calibrations {
        let _ = writeln!(
            out,
            "predicted quality of {name}: mean {:.3} (observed {:.3}), Brier {:.4}, calibration error {:.3}",
            c.predicted, c.observed, c.brier, c.ece
        );
    }
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
            "{kind} router on {}",
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
            "model_kind": kind,
            "model_training": training,
            "evaluation": e,
            "domain_oracle": domain_oracle.as_ref().map(|d| serde_json::json!({
                "domains": dataset.domain_count(),
                "apgr": d.apgr,
                "cpt50": d.cpt50,
                "cpt80": d.cpt80,
                "share_at_95": d.share_at_95,
                "dollar_share_at_95": d.dollar_share_at_95,
            })),
            "quality_calibration": calibrations
                .iter()
                .map(|(name, c)| (name.clone(), serde_json::to_value(c).unwrap_or_default()))
                .collect::<serde_json::Map<String, serde_json::Value>>(),
        });
        let text = serde_json::to_string_pretty(&json)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
