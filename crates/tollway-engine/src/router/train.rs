//! Training the lexical router: reading the routing data, k-fold cross-validation over a small grid
//! (features, L2 strength, class weight, target), Platt calibration on the held-out folds, the
//! thresholds per strong share, a leave-domains-out estimate, and the final fit on all rows.
//!
//! Labels: `y = clamp(strong − weak, 0, 1)`; with 0/1 scores, `y = 1` exactly when the strong model
//! is right and the weak one wrong. When both fail (or both succeed) the strong model does not
//! help, so `y = 0`; likewise when the weak model is better. The score is calibrated to this event
//! whatever the target the linear model was fitted on: the grid may fit it on `weak_fails`
//! (`y = 1 − weak`, the weak model's failure, a denser signal of difficulty) and cross-validation
//! decides by APGR.
//!
//! The logistic regression minimises the weighted mean log loss plus `λ/2·‖w‖²` (bias not
//! penalised) with L-BFGS on the full batch: deterministic, no learning rate. Folds come from a
//! seeded shuffle (splitmix64), so training is reproducible bit for bit on one platform.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::eval::{evaluate, Outcome, Prices};
use super::features::{dense_features, FeatureConfig, Featurizer, DENSE};
use super::{sigmoid, LexicalRouter, RouterError};

/// One row of routing data.
#[derive(Debug, Clone)]
pub struct Example {
    pub id: String,
    pub source: String,
    pub domain: String,
    pub prompt: String,
    pub outcome: Outcome,
}

/// Parsed routing data.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub examples: Vec<Example>,
    pub strong_model: String,
    pub weak_model: String,
    /// FNV-1a 64 of the file's bytes, hex.
    pub fnv1a64: String,
}

#[derive(Deserialize)]
struct Row {
    id: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    domain: String,
    prompt: String,
    scores: BTreeMap<String, f64>,
    #[serde(default)]
    output_chars: Option<BTreeMap<String, f64>>,
}

/// FNV-1a 64 of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Parses routing data (JSON lines, see the routing data README). `models` names the strong and
/// the weak model; without it the file must score exactly two models, and the strong one is the one
/// with the higher mean score.
pub fn parse_jsonl(text: &str, models: Option<(&str, &str)>) -> Result<Dataset, RouterError> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(line).map_err(|e| RouterError::Data {
            line: i + 1,
            message: e.to_string(),
        })?;
        rows.push((i + 1, row));
    }
    if rows.is_empty() {
        return Err(RouterError::Dataset("no rows".into()));
    }
    let (strong, weak) = match models {
        Some((s, w)) => (s.to_string(), w.to_string()),
        None => {
            let names: Vec<&String> = rows[0].1.scores.keys().collect();
            if names.len() != 2 {
                return Err(RouterError::Data {
                    line: rows[0].0,
                    message: format!(
                        "scores has {} models; name the strong and the weak one",
                        names.len()
                    ),
                });
            }
            let mean = |m: &str| {
                rows.iter()
                    .map(|(_, r)| r.scores.get(m).copied().unwrap_or(0.0))
                    .sum::<f64>()
            };
            if mean(names[0]) >= mean(names[1]) {
                (names[0].clone(), names[1].clone())
            } else {
                (names[1].clone(), names[0].clone())
            }
        }
    };
    let mut examples = Vec::with_capacity(rows.len());
    for (line, r) in rows {
        let get = |m: &str| -> Result<f64, RouterError> {
            match r.scores.get(m) {
                Some(v) if v.is_finite() && (0.0..=1.0).contains(v) => Ok(*v),
                Some(v) => Err(RouterError::Data {
                    line,
                    message: format!("scores.{m} = {v} is not in 0..=1"),
                }),
                None => Err(RouterError::Data {
                    line,
                    message: format!("scores has no \"{m}\""),
                }),
            }
        };
        let tokens = |m: &str| {
            r.output_chars
                .as_ref()
                .and_then(|o| o.get(m))
                .map(|c| c / 4.0)
        };
        examples.push(Example {
            outcome: Outcome {
                strong: get(&strong)?,
                weak: get(&weak)?,
                strong_tokens: tokens(&strong),
                weak_tokens: tokens(&weak),
            },
            id: r.id,
            source: r.source,
            domain: r.domain,
            prompt: r.prompt,
        });
    }
    Ok(Dataset {
        examples,
        strong_model: strong,
        weak_model: weak,
        fnv1a64: format!("{:016x}", fnv1a64(text.as_bytes())),
    })
}

impl Dataset {
    /// The domain oracle's scores: each row scored by the mean gain (`strong − weak`) of its own
    /// domain in this data. It is what a router earns by telling domains apart and nothing more,
    /// measured with the answers it is scored on, so a reference rather than a router. `None`
    /// when a row has no domain or there are fewer than two domains.
    pub fn domain_oracle_scores(&self) -> Option<Vec<f64>> {
        let mut sums: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
        for e in &self.examples {
            if e.domain.is_empty() {
                return None;
            }
            let s = sums.entry(e.domain.as_str()).or_insert((0.0, 0));
            s.0 += e.outcome.strong - e.outcome.weak;
            s.1 += 1;
        }
        if sums.len() < 2 {
            return None;
        }
        Some(
            self.examples
                .iter()
                .map(|e| {
                    let (sum, n) = sums[e.domain.as_str()];
                    sum / n as f64
                })
                .collect(),
        )
    }

    /// How many distinct domains the rows name.
    pub fn domain_count(&self) -> usize {
        let mut d: Vec<&str> = self.examples.iter().map(|e| e.domain.as_str()).collect();
        d.sort_unstable();
        d.dedup();
        d.len()
    }
}

/// What the linear model is fitted on (the score is always calibrated to "strong better").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// `y = clamp(strong − weak, 0, 1)`.
    StrongBetter,
    /// `y = 1 − weak`.
    WeakFails,
    /// `y = (1 + strong − weak) / 2`: 1 strong better, ½ tie, 0 weak better; the fitted
    /// probability is monotone in the expected gain, which is what APGR ranks by.
    Gain,
}

impl Target {
    fn label(self, o: &Outcome) -> f64 {
        match self {
            Target::StrongBetter => (o.strong - o.weak).clamp(0.0, 1.0),
            Target::WeakFails => 1.0 - o.weak,
            Target::Gain => (1.0 + o.strong - o.weak) / 2.0,
        }
    }
}

/// One point of the grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hyper {
    pub features: FeatureConfig,
    pub lambda: f64,
    /// Weight of positive rows; negative rows weigh 1.
    pub pos_weight: f64,
    pub target: Target,
    /// Mixes each row's label with the mean label of its domain among the training rows:
    /// `(1 − d)·y + d·mean_domain(y)`. The domain mean is a far less noisy target, and what the
    /// lexical features can learn best; 0 leaves labels alone.
    pub domain_smoothing: f64,
}

/// How to train.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub folds: usize,
    pub seed: u64,
    pub features: Vec<FeatureConfig>,
    pub lambdas: Vec<f64>,
    /// Positive-class weights; `0.0` means balanced (negatives / positives).
    pub pos_weights: Vec<f64>,
    pub targets: Vec<Target>,
    pub domain_smoothing: Vec<f64>,
    pub max_iter: usize,
    /// Also estimate leave-domains-out generalisation (one more cross-validation, by domain).
    pub leave_domains_out: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            folds: 5,
            seed: 42,
            features: vec![FeatureConfig::default()],
            lambdas: vec![1e-4, 3e-4],
            pos_weights: vec![1.0],
            targets: vec![Target::StrongBetter, Target::Gain],
            domain_smoothing: vec![0.0, 0.5, 0.8],
            max_iter: 200,
            leave_domains_out: true,
        }
    }
}

/// Metrics of one evaluation, as kept in the model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub apgr: f64,
    pub cpt50: f64,
    pub cpt80: f64,
    pub share_at_95: f64,
    pub dollar_share_at_95: f64,
}

impl From<&super::Evaluation> for Metrics {
    fn from(e: &super::Evaluation) -> Self {
        Metrics {
            apgr: e.apgr,
            cpt50: e.cpt50,
            cpt80: e.cpt80,
            share_at_95: e.share_at_95,
            dollar_share_at_95: e.dollar_share_at_95,
        }
    }
}

/// One grid point's cross-validated result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridResult {
    pub hyper: Hyper,
    /// Mean over folds.
    pub cv_apgr: f64,
}

/// Leave-domains-out: each held-out group's domains were never seen in training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainsOut {
    /// The held-out groups (domain names) with their APGR.
    pub groups: Vec<(Vec<String>, f64)>,
    /// Mean APGR over groups.
    pub mean_apgr: f64,
    /// All held-out scores pooled.
    pub pooled: Metrics,
}

/// What the model file records about its training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSummary {
    pub data_fnv1a64: String,
    pub rows: usize,
    /// Rows where the strong model is better.
    pub positives: usize,
    pub strong_model: String,
    pub weak_model: String,
    pub label: String,
    pub folds: usize,
    pub seed: u64,
    pub chosen: Hyper,
    pub cv_apgr: f64,
    /// The chosen configuration's pooled held-out scores after calibration.
    pub cv: Metrics,
    pub grid: Vec<GridResult>,
    pub leave_domains_out: Option<DomainsOut>,
}

/// Progress of a training run.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A stage begins.
    Stage(String),
    /// One fold of one grid point is done.
    Fold {
        step: usize,
        steps: usize,
        what: String,
        apgr: f64,
    },
}

/// Hashed features of every row, compressed rows, with the dense features standardised and
/// appended as columns `buckets..buckets + DENSE`.
struct Matrix {
    indptr: Vec<usize>,
    idx: Vec<u32>,
    val: Vec<f32>,
    dim: usize,
}

impl Matrix {
    fn build(
        examples: &[Example],
        f: &FeatureConfig,
        mean: &[f64; DENSE],
        std: &[f64; DENSE],
    ) -> Self {
        let mut fz = Featurizer::new(f);
        let buckets = f.buckets();
        let mut m = Matrix {
            indptr: vec![0],
            idx: Vec::new(),
            val: Vec::new(),
            dim: buckets + DENSE,
        };
        let mut row = Vec::new();
        for e in examples {
            row.clear();
            fz.hashed(&e.prompt, &mut row);
            if f.dense {
                let d = dense_features(&e.prompt);
                for j in 0..DENSE {
                    row.push(((buckets + j) as u32, ((d[j] - mean[j]) / std[j]) as f32));
                }
            }
            for &(i, v) in &row {
                m.idx.push(i);
                m.val.push(v);
            }
            m.indptr.push(m.idx.len());
        }
        m
    }

    #[inline]
    fn dot(&self, r: usize, w: &[f64]) -> f64 {
        let (a, b) = (self.indptr[r], self.indptr[r + 1]);
        let mut s = 0.0;
        for k in a..b {
            s += self.val[k] as f64 * w[self.idx[k] as usize];
        }
        s + w[self.dim]
    }
}

fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// Weighted mean log loss + λ/2‖w‖² and its gradient; `w[dim]` is the unpenalised bias.
fn loss_grad(
    x: &Matrix,
    rows: &[usize],
    y: &[f64],
    s: &[f64],
    lambda: f64,
    w: &[f64],
    g: &mut [f64],
) -> f64 {
    g.iter_mut().for_each(|v| *v = 0.0);
    let total: f64 = rows.iter().map(|&r| s[r]).sum();
    let mut loss = 0.0;
    for &r in rows {
        let m = x.dot(r, w);
        loss += s[r] * (softplus(m) - y[r] * m);
        let d = s[r] * (sigmoid(m) - y[r]) / total;
        for k in x.indptr[r]..x.indptr[r + 1] {
            g[x.idx[k] as usize] += d * x.val[k] as f64;
        }
        g[x.dim] += d;
    }
    let mut reg = 0.0;
    for i in 0..x.dim {
        reg += w[i] * w[i];
        g[i] += lambda * w[i];
    }
    loss / total + 0.5 * lambda * reg
}

fn dotv(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// L-BFGS (memory 8) with a backtracking Armijo line search.
fn fit(x: &Matrix, rows: &[usize], y: &[f64], s: &[f64], lambda: f64, max_iter: usize) -> Vec<f64> {
    let n = x.dim + 1;
    let mut w = vec![0.0; n];
    let mut g = vec![0.0; n];
    let mut f = loss_grad(x, rows, y, s, lambda, &w, &mut g);
    let mut hist: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new();
    let mut g_new = vec![0.0; n];
    let mut w_new = vec![0.0; n];
    for iter in 0..max_iter {
        // Two-loop recursion: d = −H·g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(hist.len());
        for (sv, yv, rho) in hist.iter().rev() {
            let a = rho * dotv(sv, &q);
            q.iter_mut().zip(yv).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        if let Some((sv, yv, _)) = hist.last() {
            let gamma = dotv(sv, yv) / dotv(yv, yv);
            q.iter_mut().for_each(|v| *v *= gamma);
        } else {
            let gn = dotv(&g, &g).sqrt().max(1e-12);
            q.iter_mut().for_each(|v| *v /= gn);
        }
        for ((sv, yv, rho), a) in hist.iter().zip(alphas.iter().rev()) {
            let b = rho * dotv(yv, &q);
            q.iter_mut()
                .zip(sv)
                .for_each(|(qi, si)| *qi += (a - b) * si);
        }
        let d: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dotv(&g, &d);
        let d = if slope >= 0.0 {
            hist.clear();
            slope = -dotv(&g, &g);
            g.iter().map(|v| -v).collect()
        } else {
            d
        };
        let mut step = 1.0;
        let mut f_new;
        loop {
            w_new
                .iter_mut()
                .zip(w.iter().zip(&d))
                .for_each(|(wn, (wi, di))| *wn = wi + step * di);
            f_new = loss_grad(x, rows, y, s, lambda, &w_new, &mut g_new);
            if f_new <= f + 1e-4 * step * slope || step < 1e-10 {
                break;
            }
            step *= 0.5;
        }
        let sv: Vec<f64> = w_new.iter().zip(&w).map(|(a, b)| a - b).collect();
        let yv: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dotv(&sv, &yv);
        if sy > 1e-12 {
            if hist.len() == 8 {
                hist.remove(0);
            }
            hist.push((sv, yv, 1.0 / sy));
        }
        std::mem::swap(&mut w, &mut w_new);
        std::mem::swap(&mut g, &mut g_new);
        let done = (f - f_new).abs() <= 1e-9 * f.abs().max(1.0) && iter > 5;
        f = f_new;
        let gmax = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if done || gmax < 1e-6 {
            break;
        }
    }
    w
}

/// Platt scaling: (a, b) minimising the log loss of σ(a·m + b) against soft labels `y`.
fn platt(m: &[f64], y: &[f64]) -> (f64, f64) {
    let (mut a, mut b) = (1.0, 0.0);
    for _ in 0..100 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-9, 0.0, 1e-9);
        for (&mi, &yi) in m.iter().zip(y) {
            let p = sigmoid(a * mi + b);
            let d = p - yi;
            let h = (p * (1.0 - p)).max(1e-12);
            ga += d * mi;
            gb += d;
            haa += h * mi * mi;
            hab += h * mi;
            hbb += h;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-18 {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        a -= da;
        b -= db;
        if da.abs() < 1e-10 && db.abs() < 1e-10 {
            break;
        }
    }
    (a, b)
}

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Fold of each row: a seeded shuffle dealt round-robin.
pub fn kfold(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    SplitMix(seed).shuffle(&mut order);
    let mut fold = vec![0; n];
    for (pos, &i) in order.iter().enumerate() {
        fold[i] = pos % k;
    }
    fold
}

/// Fold of each row by domain: sources other than `mmlu` (e.g. GSM8K) form their own groups, the
/// MMLU domains are shuffled and dealt into `k` groups.
pub fn domain_folds(examples: &[Example], k: usize, seed: u64) -> (Vec<usize>, Vec<Vec<String>>) {
    let key = |e: &Example| {
        if e.source == "mmlu" || e.source.is_empty() {
            e.domain.clone()
        } else {
            e.source.clone()
        }
    };
    let mut domains: Vec<String> = examples
        .iter()
        .filter(|e| e.source == "mmlu" || e.source.is_empty())
        .map(|e| e.domain.clone())
        .collect();
    domains.sort();
    domains.dedup();
    SplitMix(seed).shuffle(&mut domains);
    let mut groups: Vec<Vec<String>> = vec![Vec::new(); k];
    for (i, d) in domains.into_iter().enumerate() {
        groups[i % k].push(d);
    }
    let mut others: Vec<String> = examples
        .iter()
        .filter(|e| !(e.source == "mmlu" || e.source.is_empty()))
        .map(key)
        .collect();
    others.sort();
    others.dedup();
    for o in others {
        groups.push(vec![o]);
    }
    groups.retain(|g| !g.is_empty());
    for g in &mut groups {
        g.sort();
    }
    let fold = examples
        .iter()
        .map(|e| groups.iter().position(|g| g.contains(&key(e))).unwrap_or(0))
        .collect();
    (fold, groups)
}

struct Prepared {
    x: Matrix,
}

fn dense_stats(examples: &[Example]) -> ([f64; DENSE], [f64; DENSE]) {
    let n = examples.len().max(1) as f64;
    let mut mean = [0.0; DENSE];
    let mut sq = [0.0; DENSE];
    for e in examples {
        let d = dense_features(&e.prompt);
        for j in 0..DENSE {
            mean[j] += d[j] / n;
            sq[j] += d[j] * d[j] / n;
        }
    }
    let mut std = [1.0; DENSE];
    for j in 0..DENSE {
        let v = sq[j] - mean[j] * mean[j];
        std[j] = if v > 1e-12 { v.sqrt() } else { 1.0 };
    }
    (mean, std)
}

fn domain_key(e: &Example) -> &str {
    if e.domain.is_empty() {
        &e.source
    } else {
        &e.domain
    }
}

/// Labels and sample weights; the domain means for smoothing come from the rows in `train` only.
fn weights_for(examples: &[Example], h: &Hyper, train: &[usize]) -> (Vec<f64>, Vec<f64>) {
    let mut y: Vec<f64> = examples
        .iter()
        .map(|e| h.target.label(&e.outcome))
        .collect();
    if h.domain_smoothing > 0.0 {
        let mut sums: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        for &i in train {
            let s = sums.entry(domain_key(&examples[i])).or_default();
            s.0 += y[i];
            s.1 += 1.0;
        }
        let d = h.domain_smoothing;
        for (i, e) in examples.iter().enumerate() {
            if let Some(&(sum, n)) = sums.get(domain_key(e)) {
                y[i] = (1.0 - d) * y[i] + d * sum / n;
            }
        }
    }
    let pos: f64 = y.iter().sum();
    let pw = if h.pos_weight <= 0.0 {
        (y.len() as f64 - pos) / pos.max(1.0)
    } else {
        h.pos_weight
    };
    let s = y.iter().map(|&v| 1.0 + (pw - 1.0) * v).collect();
    (y, s)
}

/// Cross-validated margins of every row (each predicted by the model not trained on its fold),
/// and the APGR of each fold.
fn cross_margins(
    data: &[Example],
    x: &Matrix,
    h: &Hyper,
    fold: &[usize],
    k: usize,
    max_iter: usize,
    mut done: impl FnMut(usize, f64),
) -> Result<(Vec<f64>, Vec<f64>), RouterError> {
    let mut margins = vec![0.0; data.len()];
    let mut apgrs = Vec::with_capacity(k);
    for f in 0..k {
        let train: Vec<usize> = (0..data.len()).filter(|&i| fold[i] != f).collect();
        let (y, s) = weights_for(data, h, &train);
        let test: Vec<usize> = (0..data.len()).filter(|&i| fold[i] == f).collect();
        let w = fit(x, &train, &y, &s, h.lambda, max_iter);
        for &i in &test {
            margins[i] = x.dot(i, &w);
        }
        let sc: Vec<f64> = test.iter().map(|&i| margins[i]).collect();
        let oc: Vec<Outcome> = test.iter().map(|&i| data[i].outcome).collect();
        let a = evaluate(&sc, &oc, Prices::default())
            .map(|e| e.apgr)
            .unwrap_or(f64::NAN);
        apgrs.push(a);
        done(f, a);
    }
    Ok((margins, apgrs))
}

fn share_key_label(h: &Hyper) -> String {
    format!(
        "λ={:e} smoothing={} pos_weight={} target={:?} chars={}..{} words={}",
        h.lambda,
        h.domain_smoothing,
        if h.pos_weight <= 0.0 {
            "balanced".to_string()
        } else {
            h.pos_weight.to_string()
        },
        h.target,
        h.features.char_min,
        h.features.char_max,
        h.features.word_ngrams
    )
}

/// Trains a router on `data` (cross-validation over the grid, calibration, thresholds, the final
/// fit on all rows), reporting progress.
pub fn train(
    data: &Dataset,
    opts: &TrainOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<LexicalRouter, RouterError> {
    let ex = &data.examples;
    if ex.len() < opts.folds * 2 || opts.folds < 2 {
        return Err(RouterError::Dataset(format!(
            "{} rows are too few for {} folds",
            ex.len(),
            opts.folds
        )));
    }
    for f in &opts.features {
        f.check().map_err(RouterError::Dataset)?;
    }
    let positives = ex
        .iter()
        .filter(|e| e.outcome.strong > e.outcome.weak)
        .count();
    if positives == 0 || positives == ex.len() {
        return Err(RouterError::Dataset(
            "the strong model is better on no row, or on every row: nothing to learn".into(),
        ));
    }
    let (mean, std) = dense_stats(ex);
    let fold = kfold(ex.len(), opts.folds, opts.seed);
    let mut grid: Vec<Hyper> = Vec::new();
    for f in &opts.features {
        for &target in &opts.targets {
            for &pos_weight in &opts.pos_weights {
                for &domain_smoothing in &opts.domain_smoothing {
                    for &lambda in &opts.lambdas {
                        grid.push(Hyper {
                            features: f.clone(),
                            lambda,
                            pos_weight,
                            target,
                            domain_smoothing,
                        });
                    }
                }
            }
        }
    }
    let steps = grid.len() * opts.folds + if opts.leave_domains_out { 8 } else { 0 } + 1;
    let mut step = 0;
    let mut results = Vec::new();
    let mut best: Option<(usize, f64, Vec<f64>)> = None;
    let mut prepared: Option<(FeatureConfig, Prepared)> = None;
    for (gi, h) in grid.iter().enumerate() {
        if prepared.as_ref().map(|p| &p.0) != Some(&h.features) {
            progress(Progress::Stage(format!("featurising {} rows", ex.len())));
            prepared = Some((
                h.features.clone(),
                Prepared {
                    x: Matrix::build(ex, &h.features, &mean, &std),
                },
            ));
        }
        let Some((_, p)) = prepared.as_ref() else {
            continue;
        };
        let what = share_key_label(h);
        let (margins, apgrs) =
            cross_margins(ex, &p.x, h, &fold, opts.folds, opts.max_iter, |f, a| {
                step += 1;
                progress(Progress::Fold {
                    step,
                    steps,
                    what: format!(
                        "grid {}/{} fold {}/{} {what}",
                        gi + 1,
                        grid.len(),
                        f + 1,
                        opts.folds
                    ),
                    apgr: a,
                });
            })?;
        let cv_apgr = apgrs.iter().sum::<f64>() / apgrs.len() as f64;
        results.push(GridResult {
            hyper: h.clone(),
            cv_apgr,
        });
        if best.as_ref().is_none_or(|b| cv_apgr > b.1) {
            best = Some((gi, cv_apgr, margins));
        }
    }
    let Some((bi, cv_apgr, margins)) = best else {
        return Err(RouterError::Dataset("empty grid".into()));
    };
    let h = grid[bi].clone();
    progress(Progress::Stage(format!(
        "best: {} (cv APGR {cv_apgr:.4})",
        share_key_label(&h)
    )));
    let x = match prepared {
        Some((f, p)) if f == h.features => p.x,
        _ => Matrix::build(ex, &h.features, &mean, &std),
    };
    // Calibration on the held-out margins, to the event "strong better".
    let y_event: Vec<f64> = ex
        .iter()
        .map(|e| Target::StrongBetter.label(&e.outcome))
        .collect();
    let (a, b) = platt(&margins, &y_event);
    let calibrated: Vec<f64> = margins.iter().map(|&m| sigmoid(a * m + b)).collect();
    let outcomes: Vec<Outcome> = ex.iter().map(|e| e.outcome).collect();
    let cv = Metrics::from(&evaluate(&calibrated, &outcomes, Prices::default())?);
    let thresholds = thresholds_from(&calibrated);
    // Each model's probability of a good answer, on the same held-out margins.
    let quality = [(&data.strong_model, true), (&data.weak_model, false)]
        .into_iter()
        .map(|(model, strong)| {
            let y: Vec<f64> = ex
                .iter()
                .map(|e| {
                    if strong {
                        e.outcome.strong
                    } else {
                        e.outcome.weak
                    }
                })
                .collect();
            let (a, b) = platt(&margins, &y);
            super::QualityCalibration {
                model: model.clone(),
                a,
                b,
            }
        })
        .collect();

    let leave_domains_out = if opts.leave_domains_out {
        progress(Progress::Stage("leave-domains-out".into()));
        let (dfold, groups) = domain_folds(ex, 4, opts.seed);
        let (dm, apgrs) =
            cross_margins(ex, &x, &h, &dfold, groups.len(), opts.max_iter, |f, a| {
                step += 1;
                progress(Progress::Fold {
                    step,
                    steps,
                    what: format!(
                        "domains-out {}/{} {}",
                        f + 1,
                        groups.len(),
                        groups[f].join(",")
                    ),
                    apgr: a,
                });
            })?;
        let pooled = Metrics::from(&evaluate(&dm, &outcomes, Prices::default())?);
        let mean_apgr = apgrs.iter().sum::<f64>() / apgrs.len() as f64;
        Some(DomainsOut {
            groups: groups.into_iter().zip(apgrs).collect(),
            mean_apgr,
            pooled,
        })
    } else {
        None
    };

    progress(Progress::Stage("final fit on all rows".into()));
    let all: Vec<usize> = (0..ex.len()).collect();
    let (y, s) = weights_for(ex, &h, &all);
    let w = fit(&x, &all, &y, &s, h.lambda, opts.max_iter);
    step += 1;
    progress(Progress::Fold {
        step: steps.min(step.max(steps)),
        steps,
        what: "final fit".into(),
        apgr: f64::NAN,
    });
    let buckets = h.features.buckets();
    let weights: Vec<f32> = w[..buckets].iter().map(|&v| v as f32).collect();
    let mut dense_weights = [0.0; DENSE];
    if h.features.dense {
        dense_weights.copy_from_slice(&w[buckets..buckets + DENSE]);
    }
    let summary = TrainingSummary {
        data_fnv1a64: data.fnv1a64.clone(),
        rows: ex.len(),
        positives,
        strong_model: data.strong_model.clone(),
        weak_model: data.weak_model.clone(),
        label: "y = 1 when the strong model's score exceeds the weak model's (both failing or the weak one better: 0)".into(),
        folds: opts.folds,
        seed: opts.seed,
        chosen: h.clone(),
        cv_apgr,
        cv,
        grid: results,
        leave_domains_out,
    };
    LexicalRouter::from_parts(
        h.features,
        weights,
        dense_weights,
        mean,
        std,
        w[x.dim],
        (a, b),
        quality,
        thresholds,
        summary,
    )
}

/// For shares 0.05, 0.10, …, 0.95: the score at or above which that share of `scores` lies.
pub fn thresholds_from(scores: &[f64]) -> Vec<(f64, f64)> {
    let mut sorted = scores.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    (1..20)
        .map(|i| {
            let share = i as f64 / 20.0;
            let k = ((share * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            (share, sorted[k - 1].clamp(0.0, 1.0))
        })
        .collect()
}
