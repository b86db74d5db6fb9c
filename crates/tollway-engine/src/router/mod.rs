//! The lexical learned router: decides per prompt whether the strong model is needed.
//!
//! [`LexicalRouter::score`] is the calibrated probability that the weak model's answer is not as
//! good as the strong model's (higher = more in need of the strong model): a logistic regression
//! over hashed lexical features ([`features`]), Platt-scaled on cross-validation folds. It is
//! trained offline ([`train`]) on rows with both models' graded answers and evaluated with
//! [`eval`]; the model file ([`LexicalRouter::to_json`], format below) carries the thresholds that
//! send a given share of traffic to the strong model.
//!
//! # Model file (`format_version` 1)
//!
//! One JSON object: `kind` (`"tollway-lexical-router"`), `features` ([`FeatureConfig`]), `dense`
//! (names, training mean and deviation, and weights of the dense features), `bias`, `weights` (one
//! f32 per hashed bucket, little-endian, base64: `{"encoding": "f32le-base64", "len": 65536,
//! "data": "..."}` — about 350 KB for 2^16 buckets), `calibration` (`{"method": "platt", "a", "b"}`:
//! `score = σ(a·margin + b)`), `thresholds` (`{"0.05": t, "0.1": t, …, "0.95": t}`: sending the
//! prompts with `score ≥ t` to the strong model sent that share of the training prompts there,
//! estimated on cross-validation scores) and `training` ([`TrainingSummary`]).

pub mod distilled;
pub mod embed;
pub mod encoder;
pub mod eval;
pub mod features;
pub mod model;
pub mod train;

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use eval::{evaluate, plot_svg, reliability, Evaluation, Outcome, Prices, Reliability};
pub use features::{FeatureConfig, Featurizer, DENSE, DENSE_NAMES};
pub use model::{Assessment, RouteModel};
pub use train::{parse_jsonl, Dataset, Example, Progress, Target, TrainOptions, TrainingSummary};

/// The model file format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
const KIND: &str = "tollway-lexical-router";
const ENCODING: &str = "f32le-base64";

/// The model file shipped with Tollway, trained on the routing data's `train.jsonl`.
pub const BUILTIN_MODEL: &str = include_str!("../../data/router-lexical.json");

/// What can go wrong loading a model file, reading training data or evaluating.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("router model file: {0}")]
    Model(String),
    #[error("routing data line {line}: {message}")]
    Data { line: usize, message: String },
    #[error("routing data: {0}")]
    Dataset(String),
    #[error("router evaluation: {0}")]
    Eval(String),
}

fn model_err(m: impl Into<String>) -> RouterError {
    RouterError::Model(m.into())
}

/// Platt scaling: `score = σ(a·margin + b)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    pub method: CalibrationMethod,
    pub a: f64,
    pub b: f64,
}

/// Platt scaling of the raw margin to one model's probability of a good answer:
/// `quality = σ(a·margin + b)`, fitted on cross-validated margins against that model's scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityCalibration {
    pub model: String,
    pub a: f64,
    pub b: f64,
}

/// The calibration method's name (only `platt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibrationMethod {
    Platt,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DenseFile {
    names: Vec<String>,
    mean: Vec<f64>,
    std: Vec<f64>,
    weights: Vec<f64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightsFile {
    encoding: String,
    len: usize,
    data: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    format_version: u32,
    kind: String,
    features: FeatureConfig,
    dense: DenseFile,
    bias: f64,
    weights: WeightsFile,
    calibration: Calibration,
    /// Per model (strongest first): the probability of a good answer. Absent in files written
    /// before it existed; such a router can still route by share or threshold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    quality: Vec<QualityCalibration>,
    thresholds: BTreeMap<String, f64>,
    training: TrainingSummary,
}

/// A trained lexical router.
#[derive(Debug, Clone)]
pub struct LexicalRouter {
    features: FeatureConfig,
    weights: Vec<f32>,
    dense_weights: [f64; DENSE],
    dense_mean: [f64; DENSE],
    dense_std: [f64; DENSE],
    bias: f64,
    calibration: Calibration,
    quality: Vec<QualityCalibration>,
    quality_models: Vec<String>,
    /// (share, threshold), shares increasing, thresholds non-increasing.
    thresholds: Vec<(f64, f64)>,
    training: TrainingSummary,
}

thread_local! {
    static SCRATCH: RefCell<Option<Featurizer>> = const { RefCell::new(None) };
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The threshold that sends about `share` of the traffic to the strong model, interpolated
/// between stored (share, threshold) points (shares increasing): 0 → never (+∞), 1 → always (0).
pub(crate) fn interpolate_threshold(t: &[(f64, f64)], share: f64) -> f64 {
    if share.is_nan() || share <= 0.0 {
        return f64::INFINITY;
    }
    if share >= 1.0 {
        return 0.0;
    }
    let points: Vec<(f64, f64)> = std::iter::once((0.0, 1.0))
        .chain(t.iter().copied())
        .chain(std::iter::once((1.0, 0.0)))
        .collect();
    for w in points.windows(2) {
        let ((s0, t0), (s1, t1)) = (w[0], w[1]);
        if share <= s1 {
            let f = if s1 > s0 {
                (share - s0) / (s1 - s0)
            } else {
                1.0
            };
            return t0 + f * (t1 - t0);
        }
    }
    0.0
}

fn share_key(share: f64) -> String {
    let s = format!("{share:.2}");
    s.trim_end_matches('0').to_string()
}

impl LexicalRouter {
    /// The built-in model ([`BUILTIN_MODEL`]).
    pub fn builtin() -> Result<Self, RouterError> {
        Self::from_json(BUILTIN_MODEL)
    }

    /// The raw (uncalibrated) margin of `prompt`, with the caller's buffers.
    pub fn margin_with(&self, f: &mut Featurizer, prompt: &str) -> f64 {
        let (dot, dense) = f.dot_dense(prompt, &self.weights, self.features.dense);
        let mut m = self.bias + dot;
        if let Some(d) = dense {
            for (j, x) in d.iter().enumerate() {
                m += self.dense_weights[j] * (x - self.dense_mean[j]) / self.dense_std[j];
            }
        }
        m
    }

    /// A calibrated raw margin.
    pub fn calibrate(&self, margin: f64) -> f64 {
        sigmoid(self.calibration.a * margin + self.calibration.b)
    }

    /// The raw margin of `prompt`, with a buffer per thread.
    pub fn margin(&self, prompt: &str) -> f64 {
        SCRATCH.with(|cell| {
            let mut slot = cell.borrow_mut();
            let f = match slot.as_mut() {
                Some(f) if f.config() == &self.features => f,
                _ => slot.insert(Featurizer::new(&self.features)),
            };
            self.margin_with(f, prompt)
        })
    }

    /// The probability, in [0, 1], that the weak model's answer to `prompt` is worse than the strong
    /// model's: higher = more in need of the strong model. Uses a buffer per thread.
    pub fn score(&self, prompt: &str) -> f64 {
        self.calibrate(self.margin(prompt))
    }

    /// Per-model quality calibrations (strongest first); empty for older model files.
    pub fn quality(&self) -> &[QualityCalibration] {
        &self.quality
    }

    /// Whether `prompt` goes to the strong model (`score ≥ threshold`), and its score.
    pub fn decide(&self, prompt: &str, threshold: f64) -> (bool, f64) {
        let s = self.score(prompt);
        (s >= threshold, s)
    }

    /// The threshold that sends about `share` of the traffic to the strong model, interpolated
    /// between the stored ones (0 → never, 1 → always).
    pub fn threshold_for_share(&self, share: f64) -> f64 {
        interpolate_threshold(&self.thresholds, share)
    }

    /// The stored thresholds: (share of traffic to the strong model, score threshold).
    pub fn thresholds(&self) -> &[(f64, f64)] {
        &self.thresholds
    }

    pub fn features(&self) -> &FeatureConfig {
        &self.features
    }

    pub fn training(&self) -> &TrainingSummary {
        &self.training
    }

    /// Builds a router from its parts (used by training); validates like [`from_json`](Self::from_json).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_parts(
        features: FeatureConfig,
        weights: Vec<f32>,
        dense_weights: [f64; DENSE],
        dense_mean: [f64; DENSE],
        dense_std: [f64; DENSE],
        bias: f64,
        calibration: (f64, f64),
        quality: Vec<QualityCalibration>,
        thresholds: Vec<(f64, f64)>,
        training: TrainingSummary,
    ) -> Result<Self, RouterError> {
        let r = LexicalRouter {
            quality_models: quality.iter().map(|q| q.model.clone()).collect(),
            quality,
            features,
            weights,
            dense_weights,
            dense_mean,
            dense_std,
            bias,
            calibration: Calibration {
                method: CalibrationMethod::Platt,
                a: calibration.0,
                b: calibration.1,
            },
            thresholds,
            training,
        };
        r.validate()?;
        Ok(r)
    }

    fn validate(&self) -> Result<(), RouterError> {
        self.features.check().map_err(model_err)?;
        if self.weights.len() != self.features.buckets() {
            return Err(model_err(format!(
                "weights has {} values but features.hash_bits = {} needs {}",
                self.weights.len(),
                self.features.hash_bits,
                self.features.buckets()
            )));
        }
        if let Some(i) = self.weights.iter().position(|w| !w.is_finite()) {
            return Err(model_err(format!("weights[{i}] is not a finite number")));
        }
        for (name, v) in [
            ("dense.weights", &self.dense_weights),
            ("dense.mean", &self.dense_mean),
            ("dense.std", &self.dense_std),
        ] {
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(model_err(format!("{name}[{i}] is not a finite number")));
            }
        }
        if let Some(i) = self.dense_std.iter().position(|s| *s <= 0.0) {
            return Err(model_err(format!("dense.std[{i}] must be > 0")));
        }
        if !self.bias.is_finite() {
            return Err(model_err("bias is not a finite number"));
        }
        let c = &self.calibration;
        if !c.a.is_finite() || !c.b.is_finite() {
            return Err(model_err(
                "calibration.a and calibration.b must be finite numbers",
            ));
        }
        if c.a <= 0.0 {
            return Err(model_err(format!("calibration.a must be > 0 (a higher margin means more need of the strong model), not {}", c.a)));
        }
        for (i, q) in self.quality.iter().enumerate() {
            if !q.a.is_finite() || !q.b.is_finite() {
                return Err(model_err(format!(
                    "quality[{i}] ({}): a and b must be finite numbers",
                    q.model
                )));
            }
            if q.model.is_empty() {
                return Err(model_err(format!("quality[{i}].model is empty")));
            }
        }
        if self.thresholds.is_empty() {
            return Err(model_err("thresholds is empty"));
        }
        let mut prev: Option<(f64, f64)> = None;
        for &(s, t) in &self.thresholds {
            if !(s > 0.0 && s < 1.0) {
                return Err(model_err(format!("thresholds: share {s} is not in (0, 1)")));
            }
            if !(0.0..=1.0).contains(&t) {
                return Err(model_err(format!(
                    "thresholds[\"{}\"] = {t} is not in [0, 1]",
                    share_key(s)
                )));
            }
            if let Some((ps, pt)) = prev {
                if t > pt {
                    return Err(model_err(format!(
                        "thresholds must not increase with the share: \"{}\" = {pt} < \"{}\" = {t}",
                        share_key(ps),
                        share_key(s)
                    )));
                }
            }
            prev = Some((s, t));
        }
        Ok(())
    }

    /// Reads and validates a model file.
    pub fn from_json(text: &str) -> Result<Self, RouterError> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| model_err(format!("not valid JSON: {e}")))?;
        match v.get("format_version") {
            None => return Err(model_err("format_version is missing")),
            Some(fv) if fv.as_u64() != Some(FORMAT_VERSION as u64) => {
                return Err(model_err(format!(
                    "format_version {fv} is not supported (this build reads version {FORMAT_VERSION}); retrain with `tollway router train`"
                )))
            }
            Some(_) => {}
        }
        let f: ModelFile =
            serde_path_to_error::deserialize(v).map_err(|e| model_err(e.to_string()))?;
        if f.kind != KIND {
            return Err(model_err(format!(
                "kind is \"{}\", expected \"{KIND}\"",
                f.kind
            )));
        }
        if f.weights.encoding != ENCODING {
            return Err(model_err(format!(
                "weights.encoding is \"{}\", expected \"{ENCODING}\"",
                f.weights.encoding
            )));
        }
        let bytes =
            base64_decode(&f.weights.data).map_err(|e| model_err(format!("weights.data: {e}")))?;
        if bytes.len() != f.weights.len * 4 {
            return Err(model_err(format!(
                "weights.data holds {} bytes but weights.len = {} needs {}",
                bytes.len(),
                f.weights.len,
                f.weights.len * 4
            )));
        }
        let weights: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let names: Vec<&str> = f.dense.names.iter().map(String::as_str).collect();
        if names != DENSE_NAMES {
            return Err(model_err(format!(
                "dense.names is {names:?}, expected {DENSE_NAMES:?}"
            )));
        }
        let arr = |name: &str, v: &[f64]| -> Result<[f64; DENSE], RouterError> {
            v.try_into().map_err(|_| {
                model_err(format!(
                    "dense.{name} has {} values, expected {DENSE}",
                    v.len()
                ))
            })
        };
        let mut thresholds = Vec::with_capacity(f.thresholds.len());
        for (k, t) in &f.thresholds {
            let s: f64 = k
                .parse()
                .map_err(|_| model_err(format!("thresholds: key \"{k}\" is not a number")))?;
            thresholds.push((s, *t));
        }
        thresholds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let r = LexicalRouter {
            features: f.features,
            weights,
            dense_weights: arr("weights", &f.dense.weights)?,
            dense_mean: arr("mean", &f.dense.mean)?,
            dense_std: arr("std", &f.dense.std)?,
            bias: f.bias,
            calibration: f.calibration,
            quality_models: f.quality.iter().map(|q| q.model.clone()).collect(),
            quality: f.quality,
            thresholds,
            training: f.training,
        };
        r.validate()?;
        Ok(r)
    }

    /// The model file.
    pub fn to_json(&self) -> String {
        let bytes: Vec<u8> = self.weights.iter().flat_map(|w| w.to_le_bytes()).collect();
        let f = ModelFile {
            format_version: FORMAT_VERSION,
            kind: KIND.into(),
            features: self.features.clone(),
            dense: DenseFile {
                names: DENSE_NAMES.iter().map(|s| s.to_string()).collect(),
                mean: self.dense_mean.to_vec(),
                std: self.dense_std.to_vec(),
                weights: self.dense_weights.to_vec(),
            },
            bias: self.bias,
            weights: WeightsFile {
                encoding: ENCODING.into(),
                len: self.weights.len(),
                data: base64_encode(&bytes),
            },
            calibration: self.calibration,
            quality: self.quality.clone(),
            thresholds: self
                .thresholds
                .iter()
                .map(|&(s, t)| (share_key(s), t))
                .collect(),
            training: self.training.clone(),
        };
        // Serialising plain data with finite numbers cannot fail.
        serde_json::to_string_pretty(&f).unwrap_or_default()
    }
}

impl RouteModel for LexicalRouter {
    fn kind(&self) -> &'static str {
        "lexical"
    }

    fn assess(&self, prompt: &str) -> Assessment {
        let m = self.margin(prompt);
        Assessment {
            score: self.calibrate(m),
            quality: self
                .quality
                .iter()
                .map(|q| sigmoid(q.a * m + q.b))
                .collect(),
        }
    }

    fn threshold_for_share(&self, share: f64) -> f64 {
        LexicalRouter::threshold_for_share(self, share)
    }

    fn quality_models(&self) -> &[String] {
        &self.quality_models
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Decodes standard base64 with padding.
pub fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    if b.len() & 3 != 0 {
        return Err(format!("base64 length {} is not a multiple of 4", b.len()));
    }
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for (ci, c) in b.chunks(4).enumerate() {
        let mut n = 0u32;
        let mut pad = 0;
        for (i, &ch) in c.iter().enumerate() {
            let v = match ch {
                b'A'..=b'Z' => ch - b'A',
                b'a'..=b'z' => ch - b'a' + 26,
                b'0'..=b'9' => ch - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                b'=' if i >= 2 && ci + 1 == b.len() / 4 => {
                    pad += 1;
                    0
                }
                _ => return Err(format!("invalid base64 character at offset {}", ci * 4 + i)),
            };
            if pad > 0 && ch != b'=' {
                return Err(format!("invalid base64 padding at offset {}", ci * 4 + i));
            }
            n = n << 6 | v as u32;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}
