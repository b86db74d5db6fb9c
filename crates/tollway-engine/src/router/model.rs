//! What the gateway asks of any trained router model, lexical or embedding-based.

use std::fmt::Debug;

/// One prompt's assessment by a router model.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// In [0, 1]; higher = more in need of the strong model. Thresholds (fixed, or set for a
    /// share of strong calls with [`RouteModel::threshold_for_share`]) compare against it.
    pub score: f64,
    /// The predicted probability of a good answer from each of [`RouteModel::quality_models`],
    /// in the same order (strongest first).
    pub quality: Vec<f64>,
}

/// A trained router model, loaded once and shared by every request.
pub trait RouteModel: Send + Sync + Debug {
    /// `lexical` or `embedding`, for `x-tollway-route` and logs.
    fn kind(&self) -> &'static str;
    /// Scores one prompt. Must not panic on any input (empty, huge, any Unicode).
    fn assess(&self, prompt: &str) -> Assessment;
    /// The score threshold that sends about `share` of traffic to the strong model (0 → never:
    /// +∞; 1 → always: 0).
    fn threshold_for_share(&self, share: f64) -> f64;
    /// The models whose answer quality [`Assessment::quality`] predicts, strongest first (the
    /// training data's model names, e.g. `gpt-4-1106-preview`, `mixtral-8x7b-instruct-v0.1`).
    fn quality_models(&self) -> &[String];
    /// Whether `assess` takes long enough (milliseconds) that it belongs off the async workers.
    fn heavy(&self) -> bool {
        false
    }
}
