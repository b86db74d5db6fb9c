//! The price table and exact costs.
//!
//! A [`PriceTable`] maps (provider, upstream model id) to a [`ModelPrice`]: per-token prices for
//! input, output, cache reads, cache writes and — when billed apart from output — reasoning, each
//! entry with its source and date. "Provider" is a provider kind (`openai`, `anthropic`, `mock`), a
//! cloud (`bedrock`, `vertex`, `azure`) or an OpenAI-compatible host (`mistral`, `groq`,
//! `deepseek`). The table is built in (`data/prices.json`, dollars per million tokens), can be
//! extended by a LiteLLM `model_prices_and_context_window.json` file, and overridden by the config
//! ([`PriceEntry`], [`PriceTable::with_overrides`]).
//!
//! [`ModelPrice::cost`] prices a normalised [`Usage`] exactly, in pico-dollars; nothing here uses
//! floating point. An unknown price is `None`, never zero: the caller records the cost as unknown
//! (or refuses, with [`PriceTable::price_for`] and `require`).

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::Value;
use tollway_core::{Micros, MoneyError, Picos, PicosPerToken, Usage};

/// One model's prices, per token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPrice {
    /// Prompt tokens neither read from nor written to a cache.
    pub input: PicosPerToken,
    pub output: PicosPerToken,
    /// Cache reads (cache hits). `None`: billed as `input`.
    pub cache_read: Option<PicosPerToken>,
    /// Cache writes (Anthropic's 5-minute cache creation). `None`: billed as `input`.
    pub cache_write: Option<PicosPerToken>,
    /// Reasoning tokens, when billed apart from output. They are a part of `output_tokens`; with
    /// `None` they cost what output costs.
    pub reasoning: Option<PicosPerToken>,
    /// Where the figures come from (a URL, or `config`).
    pub source: String,
    /// When they were last checked against the source (`YYYY-MM-DD`; may be empty for overrides).
    pub as_of: String,
}

/// A request's cost by component, exact in pico-dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    pub input: Picos,
    /// Output tokens at the output price (without the reasoning tokens when those are billed apart).
    pub output: Picos,
    pub cache_read: Picos,
    pub cache_write: Picos,
    /// Zero unless the price bills reasoning apart from output.
    pub reasoning: Picos,
}

impl Cost {
    /// The exact total.
    pub fn total(&self) -> Picos {
        self.input + self.output + self.cache_read + self.cache_write + self.reasoning
    }

    /// The total rounded half up to the micro-dollar.
    pub fn micros(&self) -> Micros {
        self.total().micros()
    }
}

impl ModelPrice {
    /// The effective cache-read price (`input` when none is listed).
    pub fn cache_read_price(&self) -> PicosPerToken {
        self.cache_read.unwrap_or(self.input)
    }

    /// The effective cache-write price (`input` when none is listed).
    pub fn cache_write_price(&self) -> PicosPerToken {
        self.cache_write.unwrap_or(self.input)
    }

    /// What `usage` costs at these prices. Reasoning tokens beyond `output_tokens` (inconsistent
    /// usage) are not billed twice.
    pub fn cost(&self, usage: &Usage) -> Cost {
        let (plain_output, reasoning) = match self.reasoning {
            Some(price) => {
                let r = usage.reasoning_tokens.min(usage.output_tokens);
                (usage.output_tokens - r, price.cost_of(r))
            }
            None => (usage.output_tokens, Picos(0)),
        };
        Cost {
            input: self.input.cost_of(usage.input_tokens),
            output: self.output.cost_of(plain_output),
            cache_read: self.cache_read_price().cost_of(usage.cache_read_tokens),
            cache_write: self.cache_write_price().cost_of(usage.cache_write_tokens),
            reasoning,
        }
    }

    /// The most a request can cost, for reserving budget before it runs: every prompt token at
    /// the dearest input price (plain or cache write) and `max_output` tokens at the dearest
    /// output price (plain or reasoning). Rounded up to the micro-dollar.
    pub fn ceiling(&self, prompt_tokens: u64, max_output: u64) -> Micros {
        let input = self
            .input
            .max(self.cache_write_price())
            .max(self.cache_read_price());
        let output = self.reasoning.map_or(self.output, |r| r.max(self.output));
        let picos = input.cost_of(prompt_tokens) + output.cost_of(max_output);
        Micros::from_picos(picos.0.saturating_add(499_999))
    }
}

/// `cost(price, usage)`: see [`ModelPrice::cost`].
pub fn cost(price: &ModelPrice, usage: &Usage) -> Cost {
    price.cost(usage)
}

/// Errors reading prices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// The text is not valid JSON of the expected shape.
    #[error("{what}: {message}")]
    Format { what: String, message: String },
    /// One entry is wrong; `entry` names it (`provider/model`, or a LiteLLM key).
    #[error("price for {entry}: {message}")]
    Entry { entry: String, message: String },
}

/// No price is known and prices are required.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no price known for model `{model}` on provider `{provider}`: add it to the config's `prices` \
     section, or set `prices.require: false` to record its cost as unknown"
)]
pub struct UnknownPrice {
    pub provider: String,
    pub model: String,
}

/// One price as the data file and the config spell it. Each price is given either in dollars per
/// million tokens (`input_per_million: "2.00"`) or, in LiteLLM's names, in dollars per token
/// (`input_cost_per_token: 2e-06`), as a string or a number; never both for the same component.
/// `input` and `output` are required.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    /// Provider kind, cloud or host (`openai`, `bedrock`, `groq` ...). Also spelled `vendor`.
    #[serde(alias = "vendor")]
    pub provider: String,
    /// Upstream model id, or `*` for every model of this provider.
    pub model: String,
    /// Dollars per million tokens; the `*_per_million` fields are also spelled without the
    /// suffix (`input`, `output`, `cache_read`, `cache_write`, `reasoning`).
    #[serde(default, alias = "input")]
    pub input_per_million: Option<Value>,
    #[serde(default, alias = "output")]
    pub output_per_million: Option<Value>,
    #[serde(default, alias = "cache_read")]
    pub cache_read_per_million: Option<Value>,
    #[serde(default, alias = "cache_write")]
    pub cache_write_per_million: Option<Value>,
    #[serde(default, alias = "reasoning")]
    pub reasoning_per_million: Option<Value>,
    #[serde(default)]
    pub input_cost_per_token: Option<Value>,
    #[serde(default)]
    pub output_cost_per_token: Option<Value>,
    #[serde(default)]
    pub cache_read_input_token_cost: Option<Value>,
    #[serde(default)]
    pub cache_creation_input_token_cost: Option<Value>,
    #[serde(default)]
    pub output_cost_per_reasoning_token: Option<Value>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub as_of: Option<String>,
    /// Free text for the reader of the data file (regional prices, what was assumed ...).
    #[serde(default)]
    pub note: Option<String>,
}

/// A JSON/YAML value holding a decimal: a string, or a number read back through its text (never
/// as a float: `1.5e-07` is parsed as written).
fn decimal_text(v: &Value) -> Result<Option<String>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        _ => Err("expected a decimal number or a string".to_string()),
    }
}

fn either(
    name: &str,
    per_million: &Option<Value>,
    per_token_name: &str,
    per_token: &Option<Value>,
) -> Result<Option<PicosPerToken>, String> {
    let m = per_million
        .as_ref()
        .map(decimal_text)
        .transpose()?
        .flatten();
    let t = per_token.as_ref().map(decimal_text).transpose()?.flatten();
    let explain = |field: &str, e: MoneyError| format!("{field}: {e}");
    match (m, t) {
        (Some(_), Some(_)) => Err(format!(
            "give `{name}_per_million` or `{per_token_name}`, not both"
        )),
        (Some(m), None) => PicosPerToken::from_per_million(&m)
            .map(Some)
            .map_err(|e| explain(&format!("{name}_per_million"), e)),
        (None, Some(t)) => PicosPerToken::from_per_token(&t)
            .map(Some)
            .map_err(|e| explain(per_token_name, e)),
        (None, None) => Ok(None),
    }
}

impl PriceEntry {
    /// The price this entry gives. `default_source` fills a missing `source`.
    pub fn to_price(&self, default_source: &str) -> Result<ModelPrice, PriceError> {
        let err = |message: String| PriceError::Entry {
            entry: format!("{}/{}", self.provider, self.model),
            message,
        };
        if self.provider.trim().is_empty() || self.model.trim().is_empty() {
            return Err(err("`provider` and `model` must not be empty".into()));
        }
        let input = either(
            "input",
            &self.input_per_million,
            "input_cost_per_token",
            &self.input_cost_per_token,
        )
        .map_err(err)?
        .ok_or_else(|| err("missing `input_per_million` (or `input_cost_per_token`)".into()))?;
        let output = either(
            "output",
            &self.output_per_million,
            "output_cost_per_token",
            &self.output_cost_per_token,
        )
        .map_err(err)?
        .ok_or_else(|| err("missing `output_per_million` (or `output_cost_per_token`)".into()))?;
        let cache_read = either(
            "cache_read",
            &self.cache_read_per_million,
            "cache_read_input_token_cost",
            &self.cache_read_input_token_cost,
        )
        .map_err(err)?;
        let cache_write = either(
            "cache_write",
            &self.cache_write_per_million,
            "cache_creation_input_token_cost",
            &self.cache_creation_input_token_cost,
        )
        .map_err(err)?;
        let reasoning = either(
            "reasoning",
            &self.reasoning_per_million,
            "output_cost_per_reasoning_token",
            &self.output_cost_per_reasoning_token,
        )
        .map_err(err)?;
        Ok(ModelPrice {
            input,
            output,
            cache_read,
            cache_write,
            reasoning,
            source: self
                .source
                .clone()
                .unwrap_or_else(|| default_source.to_string()),
            as_of: self.as_of.clone().unwrap_or_default(),
        })
    }
}

/// Tollway's price file: `{"unit": ..., "notes": [...], "prices": [PriceEntry ...]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DataFile {
    #[serde(default, rename = "unit")]
    _unit: Option<String>,
    #[serde(default, rename = "notes")]
    _notes: Option<Value>,
    prices: Vec<PriceEntry>,
}

const BUILTIN_JSON: &str = include_str!("../data/prices.json");

static BUILTIN: LazyLock<PriceTable> = LazyLock::new(|| {
    // The file is compiled in and every entry is checked by the tests; a broken file fails them.
    PriceTable::from_json(BUILTIN_JSON).expect("data/prices.json is valid (see the tests)")
});

/// What reading a LiteLLM file produced: the table, and the entries left out with the reason
/// (prices finer than a pico-dollar per token, malformed values). Entries that are not priced
/// per token (images, audio, rerank ...) are left out silently.
#[derive(Debug, Clone, Default)]
pub struct LiteLlmImport {
    pub table: PriceTable,
    pub skipped: Vec<String>,
}

/// Prices by (provider, model); see the module docs. Keys are compared case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceTable {
    entries: HashMap<(String, String), ModelPrice>,
}

impl PriceTable {
    /// The table shipped with Tollway (`data/prices.json`).
    pub fn builtin() -> &'static PriceTable {
        &BUILTIN
    }

    /// Reads Tollway's own format (`data/prices.json`). Later entries for the same (provider,
    /// model) replace earlier ones.
    pub fn from_json(text: &str) -> Result<PriceTable, PriceError> {
        let f: DataFile = serde_json::from_str(text).map_err(|e| PriceError::Format {
            what: "price file".into(),
            message: e.to_string(),
        })?;
        PriceTable::from_entries(&f.prices, "")
    }

    /// Builds a table from entries, e.g. the config's `prices` section (`default_source` for
    /// entries without one, e.g. `"config"`).
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = &'a PriceEntry>,
        default_source: &str,
    ) -> Result<PriceTable, PriceError> {
        let mut t = PriceTable::default();
        for e in entries {
            t.insert(&e.provider, &e.model, e.to_price(default_source)?);
        }
        Ok(t)
    }

    /// Reads LiteLLM's `model_prices_and_context_window.json`, leaving out what it cannot price
    /// exactly (see [`read_litellm`](Self::read_litellm) for the list).
    pub fn from_litellm_json(text: &str) -> Result<PriceTable, PriceError> {
        Self::read_litellm(text, "LiteLLM model_prices_and_context_window.json", "")
            .map(|i| i.table)
    }

    /// Reads LiteLLM's `model_prices_and_context_window.json`: keys are model names, optionally
    /// `route/model`; `litellm_provider` gives the provider (mapped onto Tollway's names by
    /// [`provider_from_litellm`]). Chat, responses and embedding models are read (and entries
    /// without a `mode`); `sample_spec`, other modes, regional Bedrock/Azure variants
    /// (`bedrock/us-east-1/...`) and entries without per-token prices are left out.
    pub fn read_litellm(
        text: &str,
        source: &str,
        as_of: &str,
    ) -> Result<LiteLlmImport, PriceError> {
        let format = |message: String| PriceError::Format {
            what: "LiteLLM price file".into(),
            message,
        };
        let v: Value = serde_json::from_str(text).map_err(|e| format(e.to_string()))?;
        let Value::Object(map) = v else {
            return Err(format("expected an object of models".into()));
        };
        let mut out = LiteLlmImport::default();
        // Unprefixed keys (`gpt-4.1`) win over routed ones (`openai/gpt-4.1`) for the same model.
        let mut from_bare: std::collections::HashSet<(String, String)> = Default::default();
        for (key, e) in &map {
            if key == "sample_spec" {
                continue;
            }
            let Value::Object(fields) = e else {
                out.skipped.push(format!("{key}: not an object"));
                continue;
            };
            let mode = fields.get("mode").and_then(Value::as_str);
            if !matches!(mode, None | Some("chat" | "responses" | "embedding")) {
                continue;
            }
            let Some(litellm_provider) = fields.get("litellm_provider").and_then(Value::as_str)
            else {
                out.skipped.push(format!("{key}: no litellm_provider"));
                continue;
            };
            if !fields.contains_key("input_cost_per_token") {
                continue;
            }
            let provider = provider_from_litellm(litellm_provider);
            let (model, bare) = match key.split_once('/') {
                Some((route, rest)) if is_litellm_route(route, litellm_provider) => (rest, false),
                _ => (key.as_str(), true),
            };
            if matches!(provider.as_str(), "bedrock" | "azure") && model.contains('/') {
                continue; // bedrock/us-east-1/..., azure/eu/...: regional or commitment prices
            }
            let entry = PriceEntry {
                provider: provider.clone(),
                model: model.to_string(),
                input_per_million: None,
                output_per_million: None,
                cache_read_per_million: None,
                cache_write_per_million: None,
                reasoning_per_million: None,
                input_cost_per_token: fields.get("input_cost_per_token").cloned(),
                output_cost_per_token: Some(
                    fields
                        .get("output_cost_per_token")
                        .cloned()
                        .unwrap_or(Value::from(0)),
                ),
                cache_read_input_token_cost: fields.get("cache_read_input_token_cost").cloned(),
                cache_creation_input_token_cost: fields
                    .get("cache_creation_input_token_cost")
                    .cloned(),
                output_cost_per_reasoning_token: fields
                    .get("output_cost_per_reasoning_token")
                    .cloned(),
                source: Some(source.to_string()),
                as_of: Some(as_of.to_string()),
                note: None,
            };
            match entry.to_price(source) {
                Ok(p) => {
                    let k = key_of(&provider, model);
                    if bare || !from_bare.contains(&k) {
                        if bare {
                            from_bare.insert(k.clone());
                        }
                        out.table.entries.insert(k, p);
                    }
                }
                Err(PriceError::Entry { message, .. }) => {
                    out.skipped.push(format!("{key}: {message}"));
                }
                Err(e) => out.skipped.push(format!("{key}: {e}")),
            }
        }
        out.skipped.sort();
        Ok(out)
    }

    pub fn insert(&mut self, provider: &str, model: &str, price: ModelPrice) {
        self.entries.insert(key_of(provider, model), price);
    }

    /// This table with `overrides`' entries added, replacing those for the same (provider, model).
    /// An override for `anthropic` does not change `bedrock`'s prices: give one for each.
    pub fn with_overrides(mut self, overrides: PriceTable) -> PriceTable {
        self.entries.extend(overrides.entries);
        self
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry as (provider, model, price), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &ModelPrice)> {
        self.entries
            .iter()
            .map(|((p, m), price)| (p.as_str(), m.as_str(), price))
    }

    /// The exact entry, without normalisation.
    pub fn get(&self, provider: &str, model: &str) -> Option<&ModelPrice> {
        self.entries.get(&key_of(provider, model))
    }

    /// The price of `model` at `provider`: see [`lookup_in`](Self::lookup_in).
    pub fn lookup(&self, provider: &str, model: &str) -> Option<&ModelPrice> {
        self.lookup_in(&[provider], model)
    }

    /// The price of `model` at the first of `providers` that lists it (e.g. a deployment's
    /// price list, then its provider kind). For each provider, the model id is tried exactly,
    /// then in its normalised forms ([`model_candidates`]: without a route prefix, Bedrock's
    /// region and vendor prefixes and version suffix, Vertex's `@version`, then without a dated
    /// snapshot suffix: `gpt-4.1-2025-04-14` → `gpt-4.1`), then the provider's `*` entry. Only
    /// then does the model's own vendor (`claude-*` → `anthropic`, `gpt-*` → `openai` ...)
    /// answer: a cloud's own entry always wins over the vendor's.
    pub fn lookup_in(&self, providers: &[&str], model: &str) -> Option<&ModelPrice> {
        let candidates = model_candidates(model);
        for provider in providers {
            let provider = provider.trim().to_ascii_lowercase();
            for m in &candidates {
                if let Some(p) = self.entries.get(&(provider.clone(), m.clone())) {
                    return Some(p);
                }
            }
            if let Some(p) = self.entries.get(&(provider, "*".to_string())) {
                return Some(p);
            }
        }
        let vendor = candidates.iter().find_map(|m| vendor_of(m))?;
        candidates
            .iter()
            .find_map(|m| self.entries.get(&(vendor.to_string(), m.clone())))
    }

    /// [`lookup`](Self::lookup), for a gateway whose config may require every price: with
    /// `require`, an unknown price is an error naming the provider and model; without, `None`
    /// (the caller records the cost as unknown).
    pub fn price_for(
        &self,
        provider: &str,
        model: &str,
        require: bool,
    ) -> Result<Option<&ModelPrice>, UnknownPrice> {
        match self.lookup(provider, model) {
            Some(p) => Ok(Some(p)),
            None if require => Err(UnknownPrice {
                provider: provider.to_string(),
                model: model.to_string(),
            }),
            None => Ok(None),
        }
    }
}

impl fmt::Display for ModelPrice {
    /// `$2/M in, $8/M out, $0.5/M cache read` (dollars per million tokens).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "${}/M in, ${}/M out",
            self.input.per_million(),
            self.output.per_million()
        )?;
        if let Some(p) = self.cache_read {
            write!(f, ", ${}/M cache read", p.per_million())?;
        }
        if let Some(p) = self.cache_write {
            write!(f, ", ${}/M cache write", p.per_million())?;
        }
        if let Some(p) = self.reasoning {
            write!(f, ", ${}/M reasoning", p.per_million())?;
        }
        Ok(())
    }
}

fn key_of(provider: &str, model: &str) -> (String, String) {
    (
        provider.trim().to_ascii_lowercase(),
        model.trim().to_ascii_lowercase(),
    )
}

/// Tollway's provider name for a LiteLLM `litellm_provider` value (unknown values are kept).
pub fn provider_from_litellm(litellm_provider: &str) -> String {
    let p = litellm_provider.trim().to_ascii_lowercase();
    match p.as_str() {
        "openai" | "text-completion-openai" => "openai",
        "anthropic" => "anthropic",
        "bedrock" | "bedrock_converse" => "bedrock",
        "azure" | "azure_ai" | "azure_text" => "azure",
        "gemini" => "gemini",
        "mistral" | "codestral" | "text-completion-codestral" => "mistral",
        "together_ai" => "together",
        "fireworks_ai" => "fireworks",
        "cohere" | "cohere_chat" => "cohere",
        _ if p.starts_with("vertex_ai") => "vertex",
        _ => return p,
    }
    .to_string()
}

/// Whether `route` in a LiteLLM key `route/model` names the provider rather than being part of
/// the upstream id (`meta-llama/Llama-3-70b` at Together keeps its slash).
fn is_litellm_route(route: &str, litellm_provider: &str) -> bool {
    let route = route.to_ascii_lowercase();
    let provider = litellm_provider.to_ascii_lowercase();
    route == provider
        || provider.starts_with(&format!("{route}-"))
        || provider.starts_with(&format!("{route}_"))
        || provider_from_litellm(&route) == provider_from_litellm(&provider)
}

/// The forms of a model id tried in a lookup, most specific first (all lower case), e.g.
/// `us.anthropic.claude-sonnet-4-5-20250929-v1:0` → itself,
/// `anthropic.claude-sonnet-4-5-20250929-v1:0` (LiteLLM's key), `claude-sonnet-4-5-20250929-v1:0`,
/// `claude-sonnet-4-5-20250929`, `claude-sonnet-4-5`; a `global.` profile tries
/// `global.claude-...` first (priced apart); `claude-sonnet-4-5@20250929` → itself,
/// `claude-sonnet-4-5`; `openai/gpt-4.1-2025-04-14` → itself, `gpt-4.1-2025-04-14`, `gpt-4.1`.
pub fn model_candidates(model: &str) -> Vec<String> {
    let exact = model.trim().to_ascii_lowercase();
    let mut forms = vec![exact.clone()];
    let mut m = exact.as_str();
    // a simulator's knobs (`gpt-sim?tokens=5`), an ARN or a route (`openai/gpt-4.1`)
    m = m.split('?').next().unwrap_or(m);
    m = m.rsplit('/').next().unwrap_or(m);
    // Vertex `@20250929`, `@latest`, `@001`
    m = m.split('@').next().unwrap_or(m);
    forms.push(m.to_string());
    // Bedrock region and vendor prefixes (`us.anthropic.`, `global.anthropic.`, `meta.`): words
    // without digits before a dot (`gpt-4.1` keeps its dot). `global.` is priced apart.
    let mut global = false;
    for _ in 0..2 {
        if let Some((head, rest)) = m.split_once('.') {
            let is_word =
                !head.is_empty() && head.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
            if is_word && !rest.is_empty() {
                global |= head == "global";
                m = rest;
                forms.push(m.to_string());
            }
        }
    }
    let versionless = strip_bedrock_version(m);
    forms.push(versionless.to_string());
    let alias = strip_snapshot(versionless);
    forms.extend(alias.map(str::to_string));
    if global {
        let mut g = vec![format!("global.{versionless}")];
        g.extend(alias.map(|a| format!("global.{a}")));
        forms.splice(1..1, g);
    }
    let mut seen = std::collections::HashSet::new();
    forms.retain(|c| !c.is_empty() && seen.insert(c.clone()));
    forms
}

/// `claude-3-5-haiku-20241022-v1:0` → `claude-3-5-haiku-20241022`; `...-v2` → `...`.
fn strip_bedrock_version(m: &str) -> &str {
    let m = match m.rsplit_once(':') {
        Some((head, tail)) if tail.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => m,
    };
    match m.rsplit_once("-v") {
        Some((head, tail)) if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => m,
    }
}

/// The alias of a dated snapshot: `-20250929`, `-2025-04-14` or `-latest` removed.
fn strip_snapshot(m: &str) -> Option<&str> {
    let b = m.as_bytes();
    let n = b.len();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if n > 9 && b[n - 9] == b'-' && digits(n - 8..n) {
        return Some(&m[..n - 9]);
    }
    if n > 11
        && b[n - 11] == b'-'
        && b[n - 6] == b'-'
        && b[n - 3] == b'-'
        && digits(n - 10..n - 6)
        && digits(n - 5..n - 3)
        && digits(n - 2..n)
    {
        return Some(&m[..n - 11]);
    }
    m.strip_suffix("-latest")
}

/// The vendor whose own price list a model id belongs to, for a cloud or a compatible host
/// that has no entry of its own.
fn vendor_of(model: &str) -> Option<&'static str> {
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| model.starts_with(p));
    if starts(&["claude-"]) {
        Some("anthropic")
    } else if starts(&["gpt-", "chatgpt-", "o1", "o3", "o4", "text-embedding-"]) {
        Some("openai")
    } else if starts(&[
        "mistral-",
        "codestral-",
        "ministral-",
        "magistral-",
        "pixtral-",
    ]) {
        Some("mistral")
    } else if starts(&["deepseek-"]) {
        Some("deepseek")
    } else if starts(&["gemini-"]) {
        Some("gemini")
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
