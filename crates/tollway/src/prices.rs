//! The price table: per vendor (or cloud) and model, prices for input, output, cache reads, cache
//! writes and separately billed reasoning, each entry with its source and date. Built in
//! (`data/prices.json`), extended by a LiteLLM `model_prices_and_context_window.json` file, and
//! overridden by the config. Costs are exact integers (see `tollway_core::money`).

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use tollway_core::{Micros, PicosPerToken, Usage};

/// One model's prices, per token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPrice {
    pub input: PicosPerToken,
    pub output: PicosPerToken,
    pub cache_read: PicosPerToken,
    pub cache_write: PicosPerToken,
    /// Reasoning tokens, when billed apart from output (they are part of `output_tokens`).
    pub reasoning: Option<PicosPerToken>,
    pub source: String,
    pub as_of: String,
}

/// A request's cost by component, exact in pico-dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    pub input: u128,
    pub output: u128,
    pub cache_read: u128,
    pub cache_write: u128,
    pub reasoning: u128,
}

impl Cost {
    pub fn total_picos(&self) -> u128 {
        self.input + self.output + self.cache_read + self.cache_write + self.reasoning
    }

    pub fn micros(&self) -> Micros {
        Micros::from_picos(self.total_picos())
    }
}

impl ModelPrice {
    pub fn cost(&self, u: &Usage) -> Cost {
        let (plain_out, reasoning) = match self.reasoning {
            Some(p) => (
                u.output_tokens.saturating_sub(u.reasoning_tokens),
                p.times(u.reasoning_tokens.min(u.output_tokens)),
            ),
            None => (u.output_tokens, 0),
        };
        Cost {
            input: self.input.times(u.input_tokens),
            output: self.output.times(plain_out),
            cache_read: self.cache_read.times(u.cache_read_tokens),
            cache_write: self.cache_write.times(u.cache_write_tokens),
            reasoning,
        }
    }

    /// The most a request can cost: every prompt token at the input price (or the cache-write
    /// price, if higher) and `max_output` tokens at the output price (or reasoning, if higher).
    pub fn ceiling(&self, prompt_tokens: u64, max_output: u64) -> Micros {
        let in_price = self.input.max(self.cache_write);
        let out_price = self.reasoning.map_or(self.output, |r| r.max(self.output));
        Micros::from_picos(in_price.times(prompt_tokens) + out_price.times(max_output))
    }
}

/// Prices as the data file and the config spell them: dollars per million tokens, as text.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input: Value,
    pub output: Value,
    #[serde(default)]
    pub cache_read: Option<Value>,
    #[serde(default)]
    pub cache_write: Option<Value>,
    #[serde(default)]
    pub reasoning: Option<Value>,
}

fn decimal(v: &Value, what: &str) -> Result<PicosPerToken, String> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(format!(
                "{what}: expected a price in dollars per million tokens"
            ))
        }
    };
    PicosPerToken::from_per_million(&text).map_err(|e| format!("{what}: {e}"))
}

impl RawPrice {
    pub fn parse(&self, source: &str, as_of: &str) -> Result<ModelPrice, String> {
        let opt = |v: &Option<Value>, what: &str| -> Result<Option<PicosPerToken>, String> {
            match v {
                None | Some(Value::Null) => Ok(None),
                Some(v) => decimal(v, what).map(Some),
            }
        };
        let input = decimal(&self.input, "input")?;
        Ok(ModelPrice {
            input,
            output: decimal(&self.output, "output")?,
            cache_read: opt(&self.cache_read, "cache_read")?.unwrap_or(input),
            cache_write: opt(&self.cache_write, "cache_write")?.unwrap_or(input),
            reasoning: opt(&self.reasoning, "reasoning")?,
            source: source.to_string(),
            as_of: as_of.to_string(),
        })
    }
}

#[derive(Deserialize)]
struct DataFile {
    entries: Vec<DataEntry>,
}

#[derive(Deserialize)]
struct DataEntry {
    vendor: String,
    model: String,
    #[serde(flatten)]
    price: RawPrice,
    source: String,
    as_of: String,
}

/// Prices by (vendor, model). A vendor is a provider kind (`openai`, `anthropic`, `mock`), a cloud
/// (`bedrock`, `vertex`, `azure`) or an OpenAI-compatible host (`groq`, `mistral`, `deepseek`).
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    entries: HashMap<(String, String), Arc<ModelPrice>>,
}

/// The canonical form of an upstream model id for lookup: without a simulator query, a
/// `vendor.`/`vendor/` prefix, a Bedrock `-v1:0` suffix, a Vertex `@date` or a dated snapshot.
pub fn normalise(model: &str) -> Vec<String> {
    let mut out = vec![model.to_string()];
    let mut m = model.split('?').next().unwrap_or(model).to_string();
    for prefix in [
        "anthropic.",
        "us.anthropic.",
        "eu.anthropic.",
        "global.anthropic.",
    ] {
        if let Some(rest) = m.strip_prefix(prefix) {
            m = rest.to_string();
        }
    }
    if let Some((_, rest)) = m.split_once('/') {
        m = rest.to_string();
    }
    if let Some(i) = m.find(":") {
        m.truncate(i);
    }
    if let Some(i) = m.find('@') {
        m.truncate(i);
    }
    if let Some(rest) = m.strip_suffix("-v1").or_else(|| m.strip_suffix("-v2")) {
        m = rest.to_string();
    }
    out.push(m.clone());
    // a dated snapshot: -20250929 or -2025-04-14
    let bytes = m.as_bytes();
    let n = bytes.len();
    let is_digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    if n > 9 && bytes[n - 9] == b'-' && is_digits(&bytes[n - 8..]) {
        out.push(m[..n - 9].to_string());
    } else if n > 11
        && bytes[n - 11] == b'-'
        && bytes[n - 6] == b'-'
        && bytes[n - 3] == b'-'
        && is_digits(&bytes[n - 10..n - 6])
        && is_digits(&bytes[n - 5..n - 3])
        && is_digits(&bytes[n - 2..])
    {
        out.push(m[..n - 11].to_string());
    }
    out.dedup();
    out
}

impl PriceTable {
    /// The table shipped with Tollway.
    pub fn builtin() -> PriceTable {
        // The file is part of the binary and tested; a broken one fails the test suite.
        PriceTable::from_data(include_str!("../data/prices.json")).unwrap_or_default()
    }

    /// Tollway's own format (`data/prices.json`).
    pub fn from_data(text: &str) -> Result<PriceTable, String> {
        let f: DataFile = serde_json::from_str(text).map_err(|e| format!("price data: {e}"))?;
        let mut t = PriceTable::default();
        for e in f.entries {
            let p = e
                .price
                .parse(&e.source, &e.as_of)
                .map_err(|m| format!("price data for {}/{}: {m}", e.vendor, e.model))?;
            t.insert(&e.vendor, &e.model, p);
        }
        Ok(t)
    }

    /// LiteLLM's `model_prices_and_context_window.json` (dollars per token).
    pub fn from_litellm_json(text: &str, source: &str) -> Result<PriceTable, String> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| format!("LiteLLM price file: {e}"))?;
        let Value::Object(map) = v else {
            return Err("LiteLLM price file: expected an object of models".into());
        };
        let mut t = PriceTable::default();
        for (name, e) in map {
            if name == "sample_spec" {
                continue;
            }
            let mode = e.get("mode").and_then(Value::as_str).unwrap_or("chat");
            if !matches!(mode, "chat" | "completion" | "responses" | "embedding") {
                continue;
            }
            let price = |k: &str| -> Result<Option<PicosPerToken>, String> {
                match e.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::Number(n)) => PicosPerToken::from_per_token(&n.to_string())
                        .map(Some)
                        .map_err(|m| format!("{name}.{k}: {m}")),
                    Some(_) => Err(format!("{name}.{k}: expected a number")),
                }
            };
            let (Some(input), output) = (
                price("input_cost_per_token")?,
                price("output_cost_per_token")?,
            ) else {
                continue;
            };
            let vendor = match e
                .get("litellm_provider")
                .and_then(Value::as_str)
                .unwrap_or("")
            {
                "openai" | "text-completion-openai" => "openai",
                "anthropic" => "anthropic",
                "bedrock" | "bedrock_converse" => "bedrock",
                p if p.starts_with("vertex_ai") => "vertex",
                "azure" | "azure_ai" => "azure",
                "mistral" => "mistral",
                "groq" => "groq",
                "deepseek" => "deepseek",
                "together_ai" => "together",
                "fireworks_ai" => "fireworks",
                other => other,
            }
            .to_string();
            let model = name.rsplit('/').next().unwrap_or(&name).to_string();
            let p = ModelPrice {
                input,
                output: output.unwrap_or_default(),
                cache_read: price("cache_read_input_token_cost")?.unwrap_or(input),
                cache_write: price("cache_creation_input_token_cost")?.unwrap_or(input),
                reasoning: price("output_cost_per_reasoning_token")?,
                source: source.to_string(),
                as_of: String::new(),
            };
            t.insert(&vendor, &model, p);
        }
        Ok(t)
    }

    pub fn insert(&mut self, vendor: &str, model: &str, p: ModelPrice) {
        self.entries
            .insert((vendor.to_string(), model.to_string()), Arc::new(p));
    }

    /// `other`'s entries win.
    pub fn with_overrides(mut self, other: PriceTable) -> PriceTable {
        self.entries.extend(other.entries);
        self
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The price of `model` for the first vendor in `vendors` that lists it (exact id first, then
    /// its normalised forms, then the vendor's `*` entry).
    pub fn lookup(&self, vendors: &[&str], model: &str) -> Option<Arc<ModelPrice>> {
        let forms = normalise(model);
        for v in vendors {
            for f in &forms {
                if let Some(p) = self.entries.get(&(v.to_string(), f.clone())) {
                    return Some(p.clone());
                }
            }
            if let Some(p) = self.entries.get(&(v.to_string(), "*".to_string())) {
                return Some(p.clone());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64, read: u64, write: u64, reasoning: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: read,
            cache_write_tokens: write,
            reasoning_tokens: reasoning,
        }
    }

    #[test]
    fn costs_match_hand_computed_figures_for_each_component() {
        let t = PriceTable::builtin();
        let sonnet = t
            .lookup(&["anthropic"], "claude-sonnet-4-5-20250929")
            .expect("sonnet");
        // 1,000 input × $3/M = $0.003; 500 output × $15/M = $0.0075;
        // 10,000 cache reads × $0.30/M = $0.003; 2,000 cache writes × $3.75/M = $0.0075
        let c = sonnet.cost(&usage(1_000, 500, 10_000, 2_000, 0));
        assert_eq!(Micros::from_picos(c.input), Micros(3_000));
        assert_eq!(Micros::from_picos(c.output), Micros(7_500));
        assert_eq!(Micros::from_picos(c.cache_read), Micros(3_000));
        assert_eq!(Micros::from_picos(c.cache_write), Micros(7_500));
        assert_eq!(c.micros(), Micros(21_000));
        // gpt-4o-mini: 123 input × $0.15/M = 18.45 µ$; 77 output × $0.60/M = 46.2 µ$;
        // 50 cached × $0.075/M = 3.75 µ$ → 68.4 µ$ → 68
        let mini = t
            .lookup(&["openai"], "gpt-4o-mini-2024-07-18")
            .expect("mini");
        let c = mini.cost(&usage(123, 77, 50, 0, 0));
        assert_eq!(c.total_picos(), 18_450_000 + 46_200_000 + 3_750_000);
        assert_eq!(c.micros(), Micros(68));
        // reasoning billed apart: 100 output of which 60 reasoning
        let mut p = (*mini).clone();
        p.reasoning = Some(PicosPerToken(10_000_000));
        let c = p.cost(&usage(0, 100, 0, 0, 60));
        assert_eq!(c.output, 40 * 600_000);
        assert_eq!(c.reasoning, 60 * 10_000_000);
        // the ceiling covers the worst case
        assert_eq!(sonnet.ceiling(1_000, 1_000), Micros(3_750 + 15_000));
    }

    #[test]
    fn lookups_normalise_ids_and_prefer_the_first_vendor() {
        let t = PriceTable::builtin();
        assert!(t
            .lookup(
                &["bedrock", "anthropic"],
                "anthropic.claude-sonnet-4-5-20250929-v1:0"
            )
            .is_some());
        assert!(t.lookup(&["vertex"], "claude-haiku-4-5@20251001").is_some());
        assert!(t.lookup(&["openai"], "gpt-4.1-2025-04-14").is_some());
        assert!(
            t.lookup(&["mock"], "anything?tokens=5").is_some(),
            "wildcard"
        );
        assert!(t.lookup(&["openai"], "llama-3-local").is_none());
        assert_eq!(
            normalise("claude-sonnet-4-5-20250929")[1..],
            ["claude-sonnet-4-5".to_string()]
        );
        // every built-in entry has a source and a date
        let f: DataFile = serde_json::from_str(include_str!("../data/prices.json")).expect("data");
        assert!(f.entries.len() >= 30);
        assert!(f
            .entries
            .iter()
            .all(|e| !e.source.is_empty() && e.as_of.len() == 10));
        assert_eq!(t.len(), f.entries.len());
    }

    #[test]
    fn litellm_files_are_read_and_overrides_win() {
        let text = r#"{
            "sample_spec": {"input_cost_per_token": 0},
            "gpt-4.1": {"litellm_provider": "openai", "mode": "chat",
                "input_cost_per_token": 2e-06, "output_cost_per_token": 8e-06, "cache_read_input_token_cost": 5e-07},
            "bedrock/anthropic.claude-haiku-4-5-20251001-v1:0": {"litellm_provider": "bedrock", "mode": "chat",
                "input_cost_per_token": 1.1e-06, "output_cost_per_token": 5.5e-06},
            "dall-e-3": {"litellm_provider": "openai", "mode": "image_generation", "input_cost_per_token": 1e-06},
            "o-reasoner": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1.5E-07,
                "output_cost_per_token": 6e-07, "output_cost_per_reasoning_token": 1.2e-06}
        }"#;
        let l = PriceTable::from_litellm_json(text, "litellm").expect("parse");
        assert_eq!(l.len(), 3, "image models are skipped");
        let gpt = l.lookup(&["openai"], "gpt-4.1").expect("gpt");
        assert_eq!(gpt.input, PicosPerToken(2_000_000));
        assert_eq!(gpt.cache_read, PicosPerToken(500_000));
        let haiku = l
            .lookup(&["bedrock"], "anthropic.claude-haiku-4-5-20251001-v1:0")
            .expect("haiku");
        assert_eq!(haiku.output, PicosPerToken(5_500_000));
        let r = l.lookup(&["openai"], "o-reasoner").expect("reasoner");
        assert_eq!(r.reasoning, Some(PicosPerToken(1_200_000)));
        let merged = PriceTable::builtin().with_overrides(l);
        assert_eq!(
            merged
                .lookup(&["bedrock"], "claude-haiku-4-5")
                .expect("h")
                .input,
            PicosPerToken(1_000_000)
        );
        assert_eq!(
            merged
                .lookup(&["bedrock"], "anthropic.claude-haiku-4-5-20251001-v1:0")
                .expect("h")
                .input,
            PicosPerToken(1_100_000),
            "the exact id from the override wins"
        );
        assert!(PriceTable::from_litellm_json("[]", "x").is_err());
    }
}
