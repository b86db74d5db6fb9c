//! The embedding router: the prompt's all-MiniLM-L6-v2 embedding ([`super::encoder`]) feeds
//! two predictors, and a small calibrated combination of both gives the score and each model's
//! probability of a good answer:
//!
//! - **k nearest neighbours** among the training prompts (cosine similarity; embeddings stored as
//!   int8 with a scale per row): the smoothed share of neighbours where the strong model was
//!   better, and each model's mean score there;
//! - **logistic regressions** on the embedding: strong better (the gain), strong correct, weak
//!   correct.
//!
//! Training ([`train`]) fits the heads and the combinations on out-of-fold predictions (k-fold
//! cross-validation on the training rows only), picks k by cross-validated APGR, and sets the
//! thresholds per strong share from the out-of-fold scores.
//!
//! # Model file (`format_version` 1, `kind` `"tollway-embedding-router"`)
//!
//! JSON: `encoder` (`name`, `sha256` of its weights, `max_tokens`), `models` (strong, weak), `k`,
//! `prior` (Laplace smoothing weight of the neighbour estimates), `bank` (`rows`, int8 embeddings
//! base64, per-row scales base64 f32le, per-row scores of both models base64 f32le), `heads`
//! (gain, strong, weak: 384 weights + bias each), `combine` (per output: weights on [head
//! margin, logit of the neighbour estimate] and a bias), `thresholds`, `training`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::distilled::StaticEncoder;
use super::encoder::{Encoder, DIM, ENCODER_NAME, MODEL_SHA256};
use super::train::{domain_folds, kfold, thresholds_from, Dataset, Metrics, Progress};
use super::{base64_decode, base64_encode, evaluate, Assessment, Outcome, Prices, RouteModel};
use super::{model_err, share_key, sigmoid, RouterError};

const KIND: &str = "tollway-embedding-router";
const FORMAT_VERSION: u32 = 1;

/// The built-in embedding router, trained on the routing data's `train.jsonl`.
pub const BUILTIN_FILE: &str = "crates/tollway-engine/data/router-embed.json";
/// The built-in embedding router on the distilled ("static") encoder, trained the same way.
pub const BUILTIN_STATIC_FILE: &str = "crates/tollway-engine/data/router-static.json";

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-4, 1.0 - 1e-4);
    (p / (1.0 - p)).ln()
}

/// A linear head on the embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    pub weights: Vec<f32>,
    pub bias: f32,
}

impl Head {
    fn margin(&self, x: &[f32]) -> f64 {
        let dot: f32 = self.weights.iter().zip(x).map(|(w, v)| w * v).sum();
        f64::from(dot + self.bias)
    }
}

/// `σ(w · [head margin, logit(neighbour estimate)] + b)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Combine {
    pub w: [f64; 2],
    pub b: f64,
}

impl Combine {
    fn apply(&self, head: f64, knn: f64) -> f64 {
        sigmoid(self.w[0] * head + self.w[1] * logit(knn) + self.b)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EncoderRef {
    name: String,
    sha256: String,
    max_tokens: usize,
    /// `"contextual"` (the default: the full forward pass) or `"static"` (the distilled table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
}

/// The static encoder's per-token weights (f32le, base64) and centre.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticFile {
    weights: String,
    centre: Vec<f32>,
}

/// How a router embeds a prompt.
#[derive(Debug, Clone)]
pub enum Embedder {
    /// The full forward pass over the first `max_tokens` tokens.
    Contextual(Arc<Encoder>),
    /// The distilled table ([`super::distilled`]) over up to `max_tokens` tokens, with the
    /// router's token weights and centre.
    Static {
        encoder: Arc<StaticEncoder>,
        weights: Arc<Vec<f32>>,
        centre: Vec<f32>,
    },
}

impl Embedder {
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, RouterError> {
        match self {
            Embedder::Contextual(e) => e.embed(text),
            Embedder::Static {
                encoder,
                weights,
                centre,
            } => Ok(encoder.embed(text, weights, centre)),
        }
    }

    pub fn max_tokens(&self) -> usize {
        match self {
            Embedder::Contextual(e) => e.max_tokens(),
            Embedder::Static { encoder, .. } => encoder.max_tokens(),
        }
    }

    /// `"contextual"` or `"static"`.
    pub fn mode(&self) -> &'static str {
        match self {
            Embedder::Contextual(_) => "contextual",
            Embedder::Static { .. } => "static",
        }
    }

    /// A static embedder for `encoder` whose token weights come from `corpus` (smooth inverse
    /// frequency) and whose centre is the corpus's mean embedding.
    pub fn static_from_corpus(encoder: Arc<StaticEncoder>, corpus: &[&str]) -> Embedder {
        let weights = Arc::new(super::distilled::sif_weights(&encoder, corpus, 1e-3));
        let zero = vec![0.0f32; DIM];
        let mut mean = vec![0.0f64; DIM];
        for text in corpus {
            for (m, v) in mean.iter_mut().zip(encoder.embed(text, &weights, &zero)) {
                *m += f64::from(v);
            }
        }
        let n = corpus.len().max(1) as f64;
        Embedder::Static {
            encoder,
            weights,
            centre: mean.iter().map(|m| (m / n) as f32).collect(),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BankFile {
    rows: usize,
    /// int8 embeddings, row-major, base64.
    vectors: String,
    /// f32le per-row scales, base64.
    scales: String,
    /// f32le (strong, weak) scores per row, base64.
    scores: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadsFile {
    gain: Head,
    strong: Head,
    weak: Head,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CombineFile {
    gain: Combine,
    strong: Combine,
    weak: Combine,
}

/// Held-out domain groups with their APGR, and the metrics of all held-out scores pooled.
pub type DomainsHeldOut = (Vec<(Vec<String>, f64)>, Metrics);

/// What training measured, kept in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedTrainingSummary {
    pub rows: usize,
    pub strong_model: String,
    pub weak_model: String,
    pub folds: usize,
    pub seed: u64,
    pub k: usize,
    /// Cross-validated APGR per k tried.
    pub k_grid: Vec<(usize, f64)>,
    /// Out-of-fold metrics of the neighbours alone, the heads alone, and the combination.
    pub cv_knn: Metrics,
    pub cv_head: Metrics,
    pub cv: Metrics,
    /// Leave-domains-out: held-out groups and their APGR, and the pooled metrics.
    pub leave_domains_out: Option<DomainsHeldOut>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    format_version: u32,
    kind: String,
    encoder: EncoderRef,
    models: [String; 2],
    k: usize,
    prior: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r#static: Option<StaticFile>,
    bank: BankFile,
    heads: HeadsFile,
    combine: CombineFile,
    thresholds: BTreeMap<String, f64>,
    training: EmbedTrainingSummary,
}

/// The training prompts' embeddings with both models' scores.
#[derive(Debug, Clone, Default)]
pub struct Bank {
    vectors: Vec<i8>,
    scales: Vec<f32>,
    scores: Vec<[f32; 2]>,
}

impl Bank {
    pub fn new(embeddings: &[Vec<f32>], outcomes: &[Outcome]) -> Bank {
        let mut b = Bank::default();
        for (e, o) in embeddings.iter().zip(outcomes) {
            b.push(e, [o.strong as f32, o.weak as f32]);
        }
        b
    }

    fn push(&mut self, e: &[f32], scores: [f32; 2]) {
        let scale = super::distilled::quantize_i8(e, &mut self.vectors);
        self.scales.push(scale);
        self.scores.push(scores);
    }

    pub fn len(&self) -> usize {
        self.scales.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }

    /// Neighbour estimates for `query` over the rows `allowed` lets through (all when `None`):
    /// (P(strong better), P(strong good), P(weak good)), each smoothed towards `priors` with
    /// weight `prior`.
    fn estimate(
        &self,
        query: &[f32],
        k: usize,
        prior: f64,
        priors: [f64; 3],
        allowed: Option<&dyn Fn(usize) -> bool>,
    ) -> [f64; 3] {
        // quantise the query the same way, so the dot product is integer
        let max = query.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
        let qs = max / 127.0;
        let mut q = [0i16; DIM];
        for (d, v) in q.iter_mut().zip(query) {
            *d = (v / qs).round().clamp(-127.0, 127.0) as i16;
        }
        let mut sims: Vec<(f32, u32)> = Vec::with_capacity(self.len());
        for (i, row) in self.vectors.as_chunks::<DIM>().0.iter().enumerate() {
            if allowed.is_some_and(|f| !f(i)) {
                continue;
            }
            sims.push((dot_i8(row, &q) as f32 * self.scales[i] * qs, i as u32));
        }
        let k = k.min(sims.len());
        if k == 0 {
            return priors;
        }
        sims.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
        let (mut gain, mut strong, mut weak) = (0.0, 0.0, 0.0);
        for &(_, i) in &sims[..k] {
            let [s, w] = self.scores[i as usize];
            gain += f64::from((s - w).clamp(0.0, 1.0));
            strong += f64::from(s);
            weak += f64::from(w);
        }
        let n = k as f64 + prior;
        [
            (gain + prior * priors[0]) / n,
            (strong + prior * priors[1]) / n,
            (weak + prior * priors[2]) / n,
        ]
    }

    fn to_file(&self) -> BankFile {
        let v: Vec<u8> = self.vectors.iter().map(|x| *x as u8).collect();
        let s: Vec<u8> = self.scales.iter().flat_map(|x| x.to_le_bytes()).collect();
        let sc: Vec<u8> = self
            .scores
            .iter()
            .flat_map(|[a, b]| a.to_le_bytes().into_iter().chain(b.to_le_bytes()))
            .collect();
        BankFile {
            rows: self.len(),
            vectors: base64_encode(&v),
            scales: base64_encode(&s),
            scores: base64_encode(&sc),
        }
    }

    fn from_file(f: &BankFile) -> Result<Bank, RouterError> {
        let v = base64_decode(&f.vectors).map_err(|e| model_err(format!("bank.vectors: {e}")))?;
        let s = base64_decode(&f.scales).map_err(|e| model_err(format!("bank.scales: {e}")))?;
        let sc = base64_decode(&f.scores).map_err(|e| model_err(format!("bank.scores: {e}")))?;
        if v.len() != f.rows * DIM || s.len() != f.rows * 4 || sc.len() != f.rows * 8 {
            return Err(model_err(format!(
                "bank: {} rows need {} vector bytes, {} scale bytes and {} score bytes; found {}, {} and {}",
                f.rows,
                f.rows * DIM,
                f.rows * 4,
                f.rows * 8,
                v.len(),
                s.len(),
                sc.len()
            )));
        }
        let f32s = |b: &[u8]| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let scales = f32s(&s);
        let flat = f32s(&sc);
        if scales.iter().chain(&flat).any(|x| !x.is_finite()) {
            return Err(model_err("bank: a scale or score is not a finite number"));
        }
        Ok(Bank {
            vectors: v.into_iter().map(|x| x as i8).collect(),
            scales,
            scores: flat.chunks_exact(2).map(|c| [c[0], c[1]]).collect(),
        })
    }
}

/// The dot product of a row of int8 values with a query held as i16: the row is widened to i16
/// first, so that the products of pairs summed into 32-bit lanes are what `pmaddwd` computes
/// (the compiler vectorises both loops on plain x86-64; the row stays one byte per value in
/// memory, which is what bounds the speed).
fn dot_i8(row: &[i8; DIM], q: &[i16; DIM]) -> i32 {
    let mut wide = [0i16; DIM];
    for (w, v) in wide.iter_mut().zip(row) {
        *w = i16::from(*v);
    }
    wide.iter()
        .zip(q)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum()
}

/// A trained embedding router with its encoder.
#[derive(Debug, Clone)]
pub struct EmbeddingRouter {
    encoder: Embedder,
    models: Vec<String>,
    k: usize,
    prior: f64,
    priors: [f64; 3],
    bank: Bank,
    heads: [Head; 3],
    combine: [Combine; 3],
    thresholds: Vec<(f64, f64)>,
    training: EmbedTrainingSummary,
}

fn check_head(name: &str, h: &Head) -> Result<(), RouterError> {
    if h.weights.len() != DIM {
        return Err(model_err(format!(
            "heads.{name}.weights has {} values, expected {DIM}",
            h.weights.len()
        )));
    }
    if h.weights.iter().any(|w| !w.is_finite()) || !h.bias.is_finite() {
        return Err(model_err(format!(
            "heads.{name}: a weight is not a finite number"
        )));
    }
    Ok(())
}

impl EmbeddingRouter {
    /// Reads a model file and pairs it with `encoder` (which must be the one it was trained
    /// with; its `max_tokens` is set from the file).
    pub fn from_json(text: &str, encoder_dir: &Path) -> Result<Self, RouterError> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| model_err(format!("not valid JSON: {e}")))?;
        if v.get("kind").and_then(|k| k.as_str()) != Some(KIND) {
            return Err(model_err(format!("kind is not \"{KIND}\"")));
        }
        if v.get("format_version").and_then(|k| k.as_u64()) != Some(u64::from(FORMAT_VERSION)) {
            return Err(model_err(format!(
                "format_version is not {FORMAT_VERSION} (retrain with `tollway router train --kind embedding`)"
            )));
        }
        let f: ModelFile =
            serde_path_to_error::deserialize(v).map_err(|e| model_err(e.to_string()))?;
        if f.encoder.name != ENCODER_NAME || f.encoder.sha256 != MODEL_SHA256 {
            return Err(model_err(format!(
                "trained with encoder {} ({}), this build runs {ENCODER_NAME} ({MODEL_SHA256})",
                f.encoder.name, f.encoder.sha256
            )));
        }
        let encoder = match f.encoder.mode.as_deref() {
            None | Some("contextual") => {
                Embedder::Contextual(Encoder::shared(encoder_dir, f.encoder.max_tokens)?)
            }
            Some("static") => {
                let Some(st) = &f.r#static else {
                    return Err(model_err(
                        "encoder.mode is \"static\" but `static` is missing",
                    ));
                };
                let encoder = StaticEncoder::shared(encoder_dir, f.encoder.max_tokens)?;
                let bytes = base64_decode(&st.weights)
                    .map_err(|e| model_err(format!("static.weights: {e}")))?;
                let weights: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                if bytes.len() != encoder.vocab_len() * 4 || st.centre.len() != DIM {
                    return Err(model_err(format!(
                        "static: {} weights and a centre of {} for a vocabulary of {} and width {DIM}",
                        bytes.len() / 4,
                        st.centre.len(),
                        encoder.vocab_len()
                    )));
                }
                if weights.iter().chain(&st.centre).any(|w| !w.is_finite()) {
                    return Err(model_err("static: a weight is not a finite number"));
                }
                Embedder::Static {
                    encoder,
                    weights: Arc::new(weights),
                    centre: st.centre.clone(),
                }
            }
            Some(other) => {
                return Err(model_err(format!(
                    "encoder.mode \"{other}\" is not \"contextual\" or \"static\""
                )))
            }
        };
        Self::from_file(f, encoder)
    }

    fn from_file(f: ModelFile, encoder: Embedder) -> Result<Self, RouterError> {
        check_head("gain", &f.heads.gain)?;
        check_head("strong", &f.heads.strong)?;
        check_head("weak", &f.heads.weak)?;
        if f.k == 0 || !(f.prior.is_finite() && f.prior >= 0.0) {
            return Err(model_err("k must be ≥ 1 and prior a number ≥ 0"));
        }
        let bank = Bank::from_file(&f.bank)?;
        if bank.is_empty() {
            return Err(model_err("bank has no rows"));
        }
        for c in [f.combine.gain, f.combine.strong, f.combine.weak] {
            if c.w.iter().chain([&c.b]).any(|x| !x.is_finite()) {
                return Err(model_err("combine: a weight is not a finite number"));
            }
        }
        let mut thresholds = Vec::new();
        for (k, t) in &f.thresholds {
            let s: f64 = k
                .parse()
                .map_err(|_| model_err(format!("thresholds: key \"{k}\" is not a number")))?;
            if !((0.0..=1.0).contains(t) && s > 0.0 && s < 1.0) {
                return Err(model_err(format!(
                    "thresholds[\"{k}\"] = {t} is out of range"
                )));
            }
            thresholds.push((s, *t));
        }
        thresholds.sort_by(|a, b| a.0.total_cmp(&b.0));
        if thresholds.is_empty() || thresholds.windows(2).any(|w| w[1].1 > w[0].1) {
            return Err(model_err(
                "thresholds must be present and not increase with the share",
            ));
        }
        let priors = priors_of(&bank);
        Ok(EmbeddingRouter {
            encoder,
            models: f.models.to_vec(),
            k: f.k,
            prior: f.prior,
            priors,
            bank,
            heads: [f.heads.gain, f.heads.strong, f.heads.weak],
            combine: [f.combine.gain, f.combine.strong, f.combine.weak],
            thresholds,
            training: f.training,
        })
    }

    /// The model file.
    pub fn to_json(&self) -> String {
        let f = ModelFile {
            format_version: FORMAT_VERSION,
            kind: KIND.into(),
            encoder: EncoderRef {
                name: ENCODER_NAME.into(),
                sha256: MODEL_SHA256.into(),
                max_tokens: self.encoder.max_tokens(),
                mode: match self.encoder {
                    Embedder::Contextual(_) => None,
                    Embedder::Static { .. } => Some("static".into()),
                },
            },
            models: [self.models[0].clone(), self.models[1].clone()],
            k: self.k,
            prior: self.prior,
            r#static: match &self.encoder {
                Embedder::Contextual(_) => None,
                Embedder::Static {
                    weights, centre, ..
                } => Some(StaticFile {
                    weights: base64_encode(
                        &weights
                            .iter()
                            .flat_map(|w| w.to_le_bytes())
                            .collect::<Vec<u8>>(),
                    ),
                    centre: centre.clone(),
                }),
            },
            bank: self.bank.to_file(),
            heads: HeadsFile {
                gain: self.heads[0].clone(),
                strong: self.heads[1].clone(),
                weak: self.heads[2].clone(),
            },
            combine: CombineFile {
                gain: self.combine[0],
                strong: self.combine[1],
                weak: self.combine[2],
            },
            thresholds: self
                .thresholds
                .iter()
                .map(|&(s, t)| (share_key(s), t))
                .collect(),
            training: self.training.clone(),
        };
        serde_json::to_string(&f).unwrap_or_default()
    }

    pub fn training(&self) -> &EmbedTrainingSummary {
        &self.training
    }

    /// Tokens read per prompt.
    pub fn max_tokens(&self) -> usize {
        self.encoder.max_tokens()
    }

    /// How this router embeds prompts.
    pub fn embedder(&self) -> &Embedder {
        &self.encoder
    }

    /// The assessment of an already embedded prompt.
    pub fn assess_embedding(&self, e: &[f32]) -> Assessment {
        let knn = self.bank.estimate(e, self.k, self.prior, self.priors, None);
        let out: Vec<f64> = (0..3)
            .map(|i| self.combine[i].apply(self.heads[i].margin(e), knn[i]))
            .collect();
        Assessment {
            score: out[0],
            quality: vec![out[1], out[2]],
        }
    }
}

fn priors_of(bank: &Bank) -> [f64; 3] {
    let n = bank.len().max(1) as f64;
    let mut p = [0.0; 3];
    for [s, w] in &bank.scores {
        p[0] += f64::from((s - w).clamp(0.0, 1.0));
        p[1] += f64::from(*s);
        p[2] += f64::from(*w);
    }
    p.map(|x| x / n)
}

impl RouteModel for EmbeddingRouter {
    fn kind(&self) -> &'static str {
        match self.encoder {
            Embedder::Contextual(_) => "embedding",
            Embedder::Static { .. } => "embedding-static",
        }
    }

    fn assess(&self, prompt: &str) -> Assessment {
        match self.encoder.embed(prompt) {
            Ok(e) => self.assess_embedding(&e),
            // The encoder does not fail on text; if it ever does, send the prompt to the strong
            // model rather than guess.
            Err(e) => {
                tracing_free_warn(&e.to_string());
                Assessment {
                    score: 1.0,
                    quality: vec![self.priors[1], self.priors[2]],
                }
            }
        }
    }

    fn threshold_for_share(&self, share: f64) -> f64 {
        super::interpolate_threshold(&self.thresholds, share)
    }

    fn quality_models(&self) -> &[String] {
        &self.models
    }

    fn heavy(&self) -> bool {
        true
    }
}

/// The engine logs nothing itself; a failed forward pass is reported on stderr.
fn tracing_free_warn(msg: &str) {
    eprintln!("tollway embedding router: {msg}; routing to the strong model");
}

// ------------------------------------------------------------------------------------------------
// Training
// ------------------------------------------------------------------------------------------------

/// Fits an L2-regularised logistic regression (soft labels `y`) on unit-length rows with
/// Nesterov-accelerated gradient descent (the rows' norm bounds the curvature, so a fixed step
/// is safe).
pub fn fit_head(x: &[&[f32]], y: &[f64], lambda: f64, iters: usize) -> Head {
    let n = x.len().max(1) as f64;
    let dim = DIM + 1;
    let step = 1.0 / (0.25 * 2.0 + lambda); // ‖[x, 1]‖² ≤ 2
    let mut w = vec![0.0f64; dim];
    let mut prev = w.clone();
    let mut g = vec![0.0f64; dim];
    for t in 0..iters {
        let mom = t as f64 / (t as f64 + 3.0);
        let look: Vec<f64> = w
            .iter()
            .zip(&prev)
            .map(|(a, b)| a + mom * (a - b))
            .collect();
        g.iter_mut().for_each(|v| *v = 0.0);
        for (xi, yi) in x.iter().zip(y) {
            let z: f64 = xi
                .iter()
                .zip(&look)
                .map(|(a, b)| f64::from(*a) * b)
                .sum::<f64>()
                + look[DIM];
            let d = sigmoid(z) - yi;
            for (gj, xj) in g.iter_mut().zip(xi.iter()) {
                *gj += d * f64::from(*xj);
            }
            g[DIM] += d;
        }
        prev.clone_from(&w);
        for j in 0..dim {
            let reg = if j < DIM { lambda * look[j] } else { 0.0 };
            w[j] = look[j] - step * (g[j] / n + reg);
        }
    }
    Head {
        weights: w[..DIM].iter().map(|v| *v as f32).collect(),
        bias: w[DIM] as f32,
    }
}

/// Fits [`Combine`] (three parameters) by Newton's method on the log loss.
fn fit_combine(head: &[f64], knn: &[f64], y: &[f64]) -> Combine {
    let feats: Vec<[f64; 3]> = head
        .iter()
        .zip(knn)
        .map(|(h, k)| [*h, logit(*k), 1.0])
        .collect();
    let mut p = [1.0, 1.0, 0.0];
    for _ in 0..50 {
        let mut g = [0.0; 3];
        let mut hss = [[1e-6; 3]; 3];
        for (f, yi) in feats.iter().zip(y) {
            let z = f[0] * p[0] + f[1] * p[1] + f[2] * p[2];
            let s = sigmoid(z);
            let d = s - yi;
            let w = (s * (1.0 - s)).max(1e-9);
            for a in 0..3 {
                g[a] += d * f[a];
                for b in 0..3 {
                    hss[a][b] += w * f[a] * f[b];
                }
            }
        }
        let Some(step) = solve3(hss, g) else { break };
        for a in 0..3 {
            p[a] -= step[a];
        }
        if step.iter().all(|s| s.abs() < 1e-9) {
            break;
        }
    }
    Combine {
        w: [p[0], p[1]],
        b: p[2],
    }
}

fn solve3(m: [[f64; 3]; 3], v: [f64; 3]) -> Option<[f64; 3]> {
    let det = |m: &[[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(&m);
    if d.abs() < 1e-18 || !d.is_finite() {
        return None;
    }
    let mut out = [0.0; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let mut mc = m;
        for r in 0..3 {
            mc[r][c] = v[r];
        }
        *o = det(&mc) / d;
    }
    Some(out)
}

/// How to train.
#[derive(Debug, Clone)]
pub struct EmbedTrainOptions {
    pub folds: usize,
    pub seed: u64,
    pub ks: Vec<usize>,
    pub prior: f64,
    pub lambda: f64,
    pub iters: usize,
    pub leave_domains_out: bool,
}

impl Default for EmbedTrainOptions {
    fn default() -> Self {
        EmbedTrainOptions {
            folds: 5,
            seed: 42,
            ks: vec![10, 25, 50, 100],
            prior: 5.0,
            lambda: 1e-3,
            iters: 300,
            leave_domains_out: true,
        }
    }
}

fn gain(o: &Outcome) -> f64 {
    (o.strong - o.weak).clamp(0.0, 1.0)
}

/// Out-of-fold (head margins, neighbour estimates) of every row for the fold assignment `fold`.
#[allow(clippy::too_many_arguments)]
fn out_of_fold(
    emb: &[Vec<f32>],
    outcomes: &[Outcome],
    bank: &Bank,
    fold: &[usize],
    folds: usize,
    ks: &[usize],
    opts: &EmbedTrainOptions,
    progress: &mut dyn FnMut(Progress),
    step: &mut usize,
    steps: usize,
) -> (Vec<[f64; 3]>, Vec<Vec<[f64; 3]>>) {
    let n = emb.len();
    let mut heads = vec![[0.0; 3]; n];
    let mut knn = vec![vec![[0.0; 3]; n]; ks.len()];
    let targets: [fn(&Outcome) -> f64; 3] = [gain, |o| o.strong, |o| o.weak];
    for f in 0..folds {
        let train: Vec<usize> = (0..n).filter(|&i| fold[i] != f).collect();
        let test: Vec<usize> = (0..n).filter(|&i| fold[i] == f).collect();
        let x: Vec<&[f32]> = train.iter().map(|&i| emb[i].as_slice()).collect();
        let sub = Bank::new(
            &train.iter().map(|&i| emb[i].clone()).collect::<Vec<_>>(),
            &train.iter().map(|&i| outcomes[i]).collect::<Vec<_>>(),
        );
        let priors = priors_of(&sub);
        for (t, target) in targets.iter().enumerate() {
            let y: Vec<f64> = train.iter().map(|&i| target(&outcomes[i])).collect();
            let h = fit_head(&x, &y, opts.lambda, opts.iters);
            for &i in &test {
                heads[i][t] = h.margin(&emb[i]);
            }
        }
        let allowed = |j: usize| fold[j] != f;
        for &i in &test {
            for (ki, &k) in ks.iter().enumerate() {
                knn[ki][i] = bank.estimate(&emb[i], k, opts.prior, priors, Some(&allowed));
            }
        }
        *step += 1;
        progress(Progress::Fold {
            step: *step,
            steps,
            what: format!("fold {}/{folds}", f + 1),
            apgr: f64::NAN,
        });
    }
    (heads, knn)
}

/// Trains an embedding router on `data` with the prompts' embeddings `emb` (one per example, in
/// order; see [`embed_all`]).
pub fn train(
    data: &Dataset,
    emb: &[Vec<f32>],
    encoder: Embedder,
    opts: &EmbedTrainOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<EmbeddingRouter, RouterError> {
    let ex = &data.examples;
    if ex.len() != emb.len() || ex.len() < opts.folds * 2 || opts.ks.is_empty() {
        return Err(RouterError::Dataset(format!(
            "{} rows and {} embeddings: need one embedding per row and at least {} rows",
            ex.len(),
            emb.len(),
            opts.folds * 2
        )));
    }
    let outcomes: Vec<Outcome> = ex.iter().map(|e| e.outcome).collect();
    let bank = Bank::new(emb, &outcomes);
    let fold = kfold(ex.len(), opts.folds, opts.seed);
    let steps = opts.folds + if opts.leave_domains_out { 4 } else { 0 } + 1;
    let mut step = 0;
    progress(Progress::Stage(format!(
        "{}-fold cross-validation over {} rows (k in {:?})",
        opts.folds,
        ex.len(),
        opts.ks
    )));
    let (heads, knn) = out_of_fold(
        emb, &outcomes, &bank, &fold, opts.folds, &opts.ks, opts, progress, &mut step, steps,
    );
    let ys: [Vec<f64>; 3] = [
        outcomes.iter().map(gain).collect(),
        outcomes.iter().map(|o| o.strong).collect(),
        outcomes.iter().map(|o| o.weak).collect(),
    ];
    let col = |v: &[[f64; 3]], t: usize| -> Vec<f64> { v.iter().map(|r| r[t]).collect() };
    // choose k by the out-of-fold APGR of the combined score
    let mut k_grid = Vec::new();
    let mut best: Option<(usize, f64)> = None;
    for (ki, &k) in opts.ks.iter().enumerate() {
        let c = fit_combine(&col(&heads, 0), &col(&knn[ki], 0), &ys[0]);
        let scores: Vec<f64> = heads
            .iter()
            .zip(&knn[ki])
            .map(|(h, n)| c.apply(h[0], n[0]))
            .collect();
        let apgr = evaluate(&scores, &outcomes, Prices::default())?.apgr;
        progress(Progress::Stage(format!(
            "k = {k}: cross-validated APGR {apgr:.4}"
        )));
        k_grid.push((k, apgr));
        if best.is_none_or(|(_, a)| apgr > a) {
            best = Some((ki, apgr));
        }
    }
    let Some((ki, _)) = best else {
        return Err(RouterError::Dataset("no k to try".into()));
    };
    let k = opts.ks[ki];
    let combine: [Combine; 3] =
        [0, 1, 2].map(|t| fit_combine(&col(&heads, t), &col(&knn[ki], t), &ys[t]));
    let cv_scores: Vec<f64> = heads
        .iter()
        .zip(&knn[ki])
        .map(|(h, n)| combine[0].apply(h[0], n[0]))
        .collect();
    let metrics = |s: &[f64]| -> Result<Metrics, RouterError> {
        Ok(Metrics::from(&evaluate(s, &outcomes, Prices::default())?))
    };
    let cv = metrics(&cv_scores)?;
    let cv_knn = metrics(&knn[ki].iter().map(|r| r[0]).collect::<Vec<_>>())?;
    let cv_head = metrics(&col(&heads, 0))?;
    let thresholds = thresholds_from(&cv_scores);

    let leave_domains_out = if opts.leave_domains_out {
        progress(Progress::Stage("leave-domains-out".into()));
        let (dfold, groups) = domain_folds(ex, 4, opts.seed);
        let (dh, dk) = out_of_fold(
            emb,
            &outcomes,
            &bank,
            &dfold,
            groups.len(),
            &[k],
            opts,
            progress,
            &mut step,
            steps,
        );
        let scores: Vec<f64> = dh
            .iter()
            .zip(&dk[0])
            .map(|(h, n)| combine[0].apply(h[0], n[0]))
            .collect();
        let mut per = Vec::new();
        for (g, names) in groups.iter().enumerate() {
            let idx: Vec<usize> = (0..ex.len()).filter(|&i| dfold[i] == g).collect();
            let s: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
            let o: Vec<Outcome> = idx.iter().map(|&i| outcomes[i]).collect();
            let apgr = evaluate(&s, &o, Prices::default()).map_or(f64::NAN, |e| e.apgr);
            per.push((names.clone(), apgr));
        }
        Some((per, metrics(&scores)?))
    } else {
        None
    };

    progress(Progress::Stage("final fit on all rows".into()));
    let x: Vec<&[f32]> = emb.iter().map(Vec::as_slice).collect();
    let heads_final = [0, 1, 2].map(|t| fit_head(&x, &ys[t], opts.lambda, opts.iters));
    progress(Progress::Fold {
        step: steps,
        steps,
        what: "final fit".into(),
        apgr: f64::NAN,
    });
    let priors = priors_of(&bank);
    Ok(EmbeddingRouter {
        encoder,
        models: vec![data.strong_model.clone(), data.weak_model.clone()],
        k,
        prior: opts.prior,
        priors,
        bank,
        heads: heads_final,
        combine,
        thresholds,
        training: EmbedTrainingSummary {
            rows: ex.len(),
            strong_model: data.strong_model.clone(),
            weak_model: data.weak_model.clone(),
            folds: opts.folds,
            seed: opts.seed,
            k,
            k_grid,
            cv_knn,
            cv_head,
            cv,
            leave_domains_out,
        },
    })
}

/// Embeds every prompt of `data` on `threads` threads, reporting progress every 100 prompts.
pub fn embed_all(
    encoder: &Embedder,
    prompts: &[&str],
    threads: usize,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Vec<f32>>, RouterError> {
    let threads = threads.clamp(1, 16);
    let total = prompts.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let chunk = total.div_ceil(threads).max(1);
    let (tx, rx) = std::sync::mpsc::channel::<usize>();
    let results: Vec<Result<Vec<Vec<f32>>, RouterError>> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .chunks(chunk)
            .map(|part| {
                let tx = tx.clone();
                let done = &done;
                s.spawn(move || {
                    let mut out = Vec::with_capacity(part.len());
                    for p in part {
                        out.push(encoder.embed(p)?);
                        let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                        if d.is_multiple_of(100) {
                            let _ = tx.send(d);
                        }
                    }
                    Ok(out)
                })
            })
            .collect();
        drop(tx);
        for d in rx {
            progress(Progress::Fold {
                step: d,
                steps: total,
                what: "embedding prompts".into(),
                apgr: f64::NAN,
            });
        }
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(RouterError::Dataset("an embedding thread panicked".into()))
                })
            })
            .collect()
    });
    let mut all = Vec::with_capacity(total);
    for r in results {
        all.extend(r?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::parse_jsonl;

    const SAMPLE: &str = include_str!("../../testdata/routing-sample.jsonl");

    fn unit(v: &[f32]) -> Vec<f32> {
        let mut x = vec![0.0f32; DIM];
        x[..v.len()].copy_from_slice(v);
        let n = x.iter().map(|a| a * a).sum::<f32>().sqrt();
        x.iter().map(|a| a / n).collect()
    }

    #[test]
    fn neighbours_are_found_by_cosine_and_smoothed_toward_the_prior() {
        let emb = vec![unit(&[1.0, 0.0]), unit(&[0.0, 1.0]), unit(&[0.7, 0.7])];
        let outcomes = vec![
            Outcome::new(1.0, 0.0), // strong better
            Outcome::new(1.0, 1.0), // tie
            Outcome::new(0.0, 1.0), // weak better
        ];
        let bank = Bank::new(&emb, &outcomes);
        let q = unit(&[0.9, 0.1]);
        // nearest is row 0: gain 1, strong 1, weak 0
        let e = bank.estimate(&q, 1, 0.0, [0.5; 3], None);
        assert_eq!(e, [1.0, 1.0, 0.0]);
        // with a prior weight of 1 toward 0.5: (1 + 0.5) / 2
        let e = bank.estimate(&q, 1, 1.0, [0.5; 3], None);
        assert!(
            (e[0] - 0.75).abs() < 1e-9 && (e[2] - 0.25).abs() < 1e-9,
            "{e:?}"
        );
        // two nearest: rows 0 and 2; excluding row 0 leaves rows 2 and 1
        let e = bank.estimate(&q, 2, 0.0, [0.5; 3], None);
        assert_eq!(e, [0.5, 0.5, 0.5]);
        let skip0 = |i: usize| i != 0;
        let e = bank.estimate(&q, 2, 0.0, [0.5; 3], Some(&skip0));
        assert_eq!(e, [0.0, 0.5, 1.0]);
        // more neighbours asked than rows: all of them
        assert_eq!(bank.estimate(&q, 99, 0.0, [0.5; 3], None)[1], 2.0 / 3.0);
    }

    #[test]
    fn a_head_learns_a_separable_direction_and_combine_calibrates() {
        let xs: Vec<Vec<f32>> = (0..200)
            .map(|i| {
                let s = if i % 2 == 0 { 1.0 } else { -1.0 };
                unit(&[s, 0.3 * ((i % 7) as f32 - 3.0), 0.5])
            })
            .collect();
        let y: Vec<f64> = (0..200)
            .map(|i| if i % 2 == 0 { 1.0 } else { 0.0 })
            .collect();
        let refs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
        let h = fit_head(&refs, &y, 1e-3, 300);
        let right = xs
            .iter()
            .zip(&y)
            .filter(|(x, y)| (h.margin(x) > 0.0) == (**y > 0.5))
            .count();
        assert_eq!(right, 200);
        let margins: Vec<f64> = xs.iter().map(|x| h.margin(x)).collect();
        let knn = vec![0.5; 200];
        let c = fit_combine(&margins, &knn, &y);
        assert!(c.w[0] > 0.0, "{c:?}");
        assert!(c.apply(margins[0], 0.5) > 0.9 && c.apply(margins[1], 0.5) < 0.1);
    }

    fn sample() -> (Dataset, Vec<Vec<f32>>, Embedder) {
        let enc =
            Embedder::Contextual(Arc::new(crate::router::encoder::tests_support::encoder(64)));
        let mut data = parse_jsonl(SAMPLE, None).unwrap();
        data.examples.truncate(60);
        let prompts: Vec<&str> = data.examples.iter().map(|e| e.prompt.as_str()).collect();
        let emb = embed_all(&enc, &prompts, 2, &mut |_| {}).unwrap();
        (data, emb, enc)
    }

    fn small() -> EmbedTrainOptions {
        EmbedTrainOptions {
            folds: 3,
            ks: vec![5, 10],
            iters: 100,
            ..EmbedTrainOptions::default()
        }
    }

    #[test]
    fn training_is_deterministic_and_the_file_round_trips() {
        let (data, emb, enc) = sample();
        let a = train(&data, &emb, enc.clone(), &small(), &mut |_| {}).unwrap();
        let b = train(&data, &emb, enc.clone(), &small(), &mut |_| {}).unwrap();
        assert_eq!(a.to_json(), b.to_json());
        let t = a.training();
        assert_eq!(t.rows, 60);
        assert_eq!(t.k_grid.len(), 2);
        assert!(t.k == 5 || t.k == 10);
        assert!((0.0..=1.5).contains(&t.cv.apgr), "{t:?}");
        let text = a.to_json();
        let back =
            EmbeddingRouter::from_json(&text, &crate::router::encoder::default_dir()).unwrap();
        assert_eq!(back.max_tokens(), 64);
        for p in [
            "What is 2 + 2?",
            "Prove that the square root of 2 is irrational.",
            "",
        ] {
            let (x, y) = (a.assess(p), back.assess(p));
            assert!((x.score - y.score).abs() < 1e-6, "{p}");
            assert_eq!(x.quality.len(), 2);
            assert!(x.quality.iter().all(|q| (0.0..=1.0).contains(q)));
            assert!((0.0..=1.0).contains(&x.score));
        }
        assert_eq!(
            a.quality_models(),
            [data.strong_model.clone(), data.weak_model.clone()]
        );
        // thresholds follow the share of strong calls
        assert!(a.threshold_for_share(0.2) >= a.threshold_for_share(0.8));
        assert_eq!(a.threshold_for_share(0.0), f64::INFINITY);
    }

    #[test]
    fn corrupt_or_mismatched_files_are_refused_with_the_reason() {
        let (data, emb, enc) = sample();
        let good = train(&data, &emb, enc, &small(), &mut |_| {})
            .unwrap()
            .to_json();
        let dir = crate::router::encoder::default_dir();
        let edit = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
            f(&mut v);
            EmbeddingRouter::from_json(&v.to_string(), &dir)
                .unwrap_err()
                .to_string()
        };
        let e = edit(&|v| v["kind"] = "tollway-lexical-router".into());
        assert!(e.contains("kind"), "{e}");
        let e = edit(&|v| v["encoder"]["sha256"] = "00".into());
        assert!(e.contains("trained with encoder"), "{e}");
        let e = edit(&|v| v["bank"]["rows"] = 7.into());
        assert!(e.contains("bank: 7 rows"), "{e}");
        let e = edit(&|v| v["heads"]["gain"]["weights"] = serde_json::json!([1.0]));
        assert!(e.contains("heads.gain.weights has 1 values"), "{e}");
        let e = edit(&|v| v["thresholds"] = serde_json::json!({"0.5": 2.0}));
        assert!(e.contains("out of range"), "{e}");
        let e = EmbeddingRouter::from_json("{", &dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not valid JSON"), "{e}");
        let e = EmbeddingRouter::from_json(&good, Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("scripts/fetch-encoder.sh"), "{e}");
    }

    #[test]
    fn a_static_router_trains_round_trips_and_refuses_bad_static_fields() {
        // the real distilled table (cached next to the encoder; `tollway router distill`)
        let dir = crate::router::encoder::default_dir();
        let st = crate::router::distilled::StaticEncoder::shared(&dir, 4096).unwrap();
        let mut data = parse_jsonl(SAMPLE, None).unwrap();
        data.examples.truncate(60);
        let prompts: Vec<&str> = data.examples.iter().map(|e| e.prompt.as_str()).collect();
        let enc = Embedder::static_from_corpus(st, &prompts);
        assert_eq!(enc.mode(), "static");
        let emb = embed_all(&enc, &prompts, 2, &mut |_| {}).unwrap();
        let a = train(&data, &emb, enc, &small(), &mut |_| {}).unwrap();
        assert_eq!(a.kind(), "embedding-static");
        let good = a.to_json();
        let back = EmbeddingRouter::from_json(&good, &dir).unwrap();
        assert_eq!(back.max_tokens(), 4096);
        assert_eq!(back.embedder().mode(), "static");
        let long = "Integrate x squared from zero to one. ".repeat(400);
        for p in ["What is 2 + 2?", "", long.as_str()] {
            let (x, y) = (a.assess(p), back.assess(p));
            assert!((x.score - y.score).abs() < 1e-6, "{p}");
            assert!((0.0..=1.0).contains(&x.score));
        }
        let edit = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
            f(&mut v);
            EmbeddingRouter::from_json(&v.to_string(), &dir)
                .unwrap_err()
                .to_string()
        };
        let e = edit(&|v| v["encoder"]["mode"] = "fancy".into());
        assert!(e.contains("encoder.mode \"fancy\""), "{e}");
        let e = edit(&|v| {
            v.as_object_mut()
                .unwrap()
                .remove("static")
                .map_or((), |_| ())
        });
        assert!(e.contains("`static` is missing"), "{e}");
        let e = edit(&|v| v["static"]["centre"] = serde_json::json!([0.0]));
        assert!(e.contains("centre of 1"), "{e}");
        let e = edit(&|v| v["static"]["weights"] = "AAAA".into());
        assert!(e.contains("0 weights"), "{e}");
    }
}
