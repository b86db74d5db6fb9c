//! Configuration in two phases: the YAML is read into raw serde values section by section (unknown
//! keys are errors), `${ENV}` references are substituted from an injectable environment, and a pure
//! validation turns it into a typed [`Config`], collecting every error with its place in the file.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml::Value;
use tollway_core::Capabilities;
use tollway_providers::{
    AnthropicConfig, AzureConfig, BedrockConfig, GeminiConfig, OpenAiConfig, ProviderConfig,
    Secret, Timeouts, VertexConfig, Wire,
};

use crate::prices::{ModelPrice, PriceEntry, PriceTable};
use crate::routing::{HealthPolicy, Strategy};
use crate::rules::{LearnedRouter, RawRouter, Router, Rule, RulesRouter};

/// Default body limit for requests: 32 MiB (a few base64 images fit; a runaway upload does not).
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub storage_url: String,
    /// Ledger rows are written in batches at least this often (at most this much is lost on
    /// `kill -9`; nothing on a graceful shutdown).
    pub ledger_flush: Duration,
    /// How often the key cache is refreshed from storage (changes made through this instance's
    /// admin API apply at once).
    pub key_refresh: Duration,
    pub shared_state_url: Option<String>,
    /// Key prefix in Redis (several deployments of Tollway can share one Redis).
    pub shared_state_prefix: String,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub models: BTreeMap<String, ModelConfig>,
    /// Public names that choose a model group per request (see `rules`).
    pub routers: BTreeMap<String, Router>,
    pub prices: PricesConfig,
    /// Per-team limits and budgets (keys name their team).
    pub teams: BTreeMap<String, TeamConfig>,
    /// A budget over all traffic.
    pub global_budget: Option<BudgetConfig>,
    /// Soft-budget alerts are POSTed here as JSON.
    pub alert_webhook: Option<String>,
    /// The exact-match response cache (`None`: off).
    pub cache: Option<crate::cache::CacheConfig>,
    /// OpenTelemetry trace export (`None`: off).
    pub telemetry: Option<crate::telemetry::TraceConfig>,
    /// Virtual keys declared in the file (`keys:`), made what storage holds at start and on
    /// every reload ([`tollway_store::Store::sync_config_keys`]).
    pub keys: Vec<tollway_store::DeclaredKey>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TeamConfig {
    /// `team:<name>`: how rate limits and budgets name this team.
    pub limit_scope: std::sync::Arc<str>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub budget: Option<BudgetConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BudgetConfig {
    pub limit: tollway_core::Micros,
    pub period: crate::budgets::Period,
    pub hard: bool,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `None`: no authentication (only allowed on a loopback address).
    pub master_key: Option<Secret>,
    pub max_body_bytes: usize,
    /// How long a graceful shutdown waits for in-flight requests and streams.
    pub shutdown_timeout: Duration,
    /// Upstream attempts per request, across deployments and fallbacks.
    pub max_attempts: u32,
    /// No new attempt starts after this long since the request arrived.
    pub retry_deadline: Duration,
    /// Clients may name `provider/model` directly, besides the configured public names.
    pub direct_models: bool,
    /// Reload when the config file changes (besides SIGHUP and `POST /admin/reload`).
    pub watch_config: bool,
    /// Serve the admin UI at `/ui` (its data comes from the admin API, master key only).
    pub admin_ui: bool,
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// `model:<name>`: how rate limits name this public model.
    pub limit_scope: std::sync::Arc<str>,
    pub strategy: Strategy,
    pub health: HealthPolicy,
    pub deployments: Vec<DeploymentConfig>,
    /// Public model names tried, in order, when every deployment failed retriably.
    pub fallbacks: Vec<String>,
    /// Tried when the prompt does not fit the context window (e.g. larger-context models).
    pub context_window_fallbacks: Vec<String>,
    /// Tried when the upstream refuses the content under its usage policy.
    pub content_policy_fallbacks: Vec<String>,
    /// Requests and tokens per minute for this public model name, across all callers.
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// Active health checks: every this often, each deployment gets a one-token request; the
    /// outcome feeds its health like a real request's.
    pub probe_interval: Option<Duration>,
    /// `cache: true` / `false`: this model's answers are always / never cached (when the
    /// `cache` section is there); unset: as the section's `mode` says.
    pub cache: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct DeploymentConfig {
    pub provider: String,
    pub model: String,
    /// Share of traffic under the `weighted` strategy (relative to the group's other weights).
    pub weight: u32,
    pub capabilities: Capabilities,
    /// Where it runs (`us-east-1`, `eu`...): keys can be restricted to regions.
    pub region: Option<String>,
    /// Its capacity: requests and tokens per minute this gateway sends it; beyond, the next
    /// deployment takes the request.
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// This deployment's own price (wins over every table).
    pub price: Option<ModelPrice>,
    /// The price list to look the model up in (`bedrock`, `groq` ...), before the account's
    /// name and its kind.
    pub vendor: Option<String>,
}

/// The `prices` section.
#[derive(Debug, Clone, Default)]
pub struct PricesConfig {
    /// Unknown prices are an error (at start for configured deployments) instead of a ledger row
    /// marked "cost unknown".
    pub require: bool,
    /// Built-in table, then a LiteLLM file, then the config's entries (later wins).
    pub table: PriceTable,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending value, e.g. `models.gpt.deployments[0].provider`.
    pub path: String,
    /// 1-based line in the file, when it could be found.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.path.is_empty()) {
            (Some(l), false) => write!(f, "line {l}: {}: {}", self.path, self.message),
            (Some(l), true) => write!(f, "line {l}: {}", self.message),
            (None, false) => write!(f, "{}: {}", self.path, self.message),
            (None, true) => f.write_str(&self.message),
        }
    }
}

/// Where `${VAR}` references are looked up. Tests pass a map; the binary passes the process env.
pub trait EnvSource {
    fn get(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

// ---------------------------------------------------------------- raw (phase 1)

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    master_key: Option<Secret>,
    #[serde(default)]
    max_body_bytes: Option<usize>,
    #[serde(default)]
    shutdown_timeout_secs: Option<u64>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    retry_deadline_secs: Option<u64>,
    #[serde(default)]
    direct_models: Option<bool>,
    #[serde(default)]
    watch_config: Option<bool>,
    #[serde(default)]
    admin_ui: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShared {
    url: String,
    #[serde(default)]
    prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    /// The collector's base URL (`/v1/traces` is added), as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    #[serde(default)]
    otlp_endpoint: Option<String>,
    /// The traces URL as it is, as `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
    #[serde(default)]
    traces_endpoint: Option<String>,
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    sample_ratio: Option<f64>,
    #[serde(default)]
    export_interval_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    #[serde(default)]
    ttl_secs: Option<u64>,
    #[serde(default)]
    max_mb: Option<u64>,
    #[serde(default)]
    max_entry_kb: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    shared: Option<bool>,
    #[serde(default)]
    mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    url: String,
    #[serde(default)]
    flush_interval_ms: Option<u64>,
    #[serde(default)]
    key_refresh_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    #[serde(default)]
    strategy: Option<String>,
    /// Consecutive failures that put a deployment in cooldown.
    #[serde(default)]
    allowed_fails: Option<u32>,
    /// `false`: never take a deployment out of rotation.
    #[serde(default)]
    circuit_breaker: Option<bool>,
    /// First cooldown in seconds (doubles on each re-open, up to `max_cooldown_secs`).
    #[serde(default)]
    cooldown_secs: Option<f64>,
    #[serde(default)]
    max_cooldown_secs: Option<f64>,
    deployments: Vec<RawDeployment>,
    #[serde(default)]
    fallbacks: Vec<String>,
    #[serde(default)]
    context_window_fallbacks: Vec<String>,
    #[serde(default)]
    content_policy_fallbacks: Vec<String>,
    #[serde(default)]
    rpm: Option<u64>,
    #[serde(default)]
    tpm: Option<u64>,
    #[serde(default)]
    probe_interval_secs: Option<u64>,
    #[serde(default)]
    cache: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeployment {
    provider: String,
    model: String,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    rpm: Option<u64>,
    #[serde(default)]
    tpm: Option<u64>,
    /// Dollars per million tokens: `input`, `output`, `cache_read`, `cache_write`, `reasoning`.
    #[serde(default)]
    price: Option<serde_yaml::Mapping>,
    #[serde(default)]
    vendor: Option<String>,
    #[serde(default)]
    capabilities: Option<RawCapabilities>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCapabilities {
    tools: Option<bool>,
    vision: Option<bool>,
    json_mode: Option<bool>,
    json_schema: Option<bool>,
    stream_usage: Option<bool>,
    embeddings: Option<bool>,
}

const SECTIONS: &[&str] = &[
    "server",
    "storage",
    "shared_state",
    "cache",
    "telemetry",
    "providers",
    "models",
    "routers",
    "prices",
    "keys",
    "teams",
    "budgets",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    usd: serde_yaml::Value,
    #[serde(default)]
    period: Option<String>,
    /// Hard (default): refuse requests past it. Soft: alert (log and webhook) and serve.
    #[serde(default)]
    hard: Option<bool>,
}

/// A key in the config file (`keys.NAME`): the secret, or its SHA-256, and what the admin API's
/// `POST /admin/keys` takes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    #[serde(default)]
    key: Option<Secret>,
    #[serde(default)]
    key_sha256: Option<String>,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    providers: Vec<String>,
    #[serde(default)]
    regions: Vec<String>,
    #[serde(default)]
    rpm: Option<u64>,
    #[serde(default)]
    tpm: Option<u64>,
    #[serde(default)]
    budget_usd: Option<Value>,
    #[serde(default)]
    budget_period: Option<String>,
    /// The first day (UTC) the key no longer works: `2027-01-31`.
    #[serde(default)]
    expires: Option<String>,
    #[serde(default)]
    routing: BTreeMap<String, Value>,
}

/// The shortest secret a config file may declare.
const MIN_SECRET_CHARS: usize = 24;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTeam {
    #[serde(default)]
    rpm: Option<u64>,
    #[serde(default)]
    tpm: Option<u64>,
    #[serde(default)]
    budget: Option<RawBudget>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudgets {
    #[serde(default)]
    global: Option<RawBudget>,
    #[serde(default)]
    alert_webhook: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrices {
    #[serde(default)]
    require: bool,
    /// A LiteLLM `model_prices_and_context_window.json`.
    #[serde(default)]
    litellm_file: Option<String>,
    #[serde(default)]
    models: Vec<PriceEntry>,
}

/// What a deployment of `model` on `p` can do by default (a deployment may narrow or widen
/// it): its kind's, and embeddings for Google's embedding models (`gemini-embedding-001`,
/// `text-embedding-005`...) and Bedrock's (Titan, Cohere Embed), which answer nothing else.
pub fn model_capabilities(p: &ProviderConfig, model: &str) -> Capabilities {
    let caps = default_capabilities(p);
    match p.wire() {
        Wire::Gemini | Wire::Vertex if model.contains("embedding") => Capabilities {
            embeddings: true,
            ..caps
        },
        Wire::Bedrock if tollway_protocol::bedrock::Embedder::of(model).is_some() => Capabilities {
            embeddings: true,
            ..caps
        },
        _ => caps,
    }
}

/// Default capabilities of a provider kind.
pub fn default_capabilities(p: &ProviderConfig) -> Capabilities {
    match p.wire() {
        Wire::OpenAi => Capabilities::ALL,
        // structured output by schema (`outputConfig.textFormat`); no schema-less JSON mode
        Wire::Bedrock => Capabilities {
            tools: true,
            vision: true,
            json_mode: false,
            json_schema: true,
            stream_usage: true,
            embeddings: false,
        },
        Wire::Anthropic => Capabilities {
            tools: true,
            vision: true,
            // Structured output by schema (`output_config.format`); no schema-less JSON mode.
            json_mode: false,
            json_schema: true,
            stream_usage: true,
            embeddings: false,
        },
        // `responseMimeType` with or without a schema (Claude on Vertex refuses schema-less JSON
        // mode by name, as through Anthropic); Gemini's embeddings are another API
        Wire::Gemini | Wire::Vertex => Capabilities {
            tools: true,
            vision: true,
            json_mode: true,
            json_schema: true,
            stream_usage: true,
            embeddings: false,
        },
    }
}

struct Collector<'a> {
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Collector<'_> {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let line = locate(self.text, &path);
        self.errors.push(ConfigError {
            path,
            line,
            message: message.into(),
        });
    }

    /// Deserializes one value, recording its error (with the path inside it) on failure.
    fn parse<T: DeserializeOwned>(&mut self, base: &str, v: Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(v) {
            Ok(t) => Some(t),
            Err(e) => {
                let inner = e.path().to_string();
                let path = if inner == "." || inner.is_empty() {
                    base.to_string()
                } else if inner.starts_with('[') {
                    format!("{base}{inner}")
                } else {
                    format!("{base}.{inner}")
                };
                self.push(path, e.into_inner().to_string());
                None
            }
        }
    }
}

/// A YAML parser's message without the values it quotes (`invalid type: integer `…` as
/// u128`): the value may be a secret written unquoted, and an error is logged and printed.
fn without_literals(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('`');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for (i, part) in parts.enumerate() {
        out.push('`');
        out.push_str(if i % 2 == 0 { "…" } else { part });
    }
    out
}

/// Reads and validates a config file; errors are prefixed with the file's path.
pub fn load_file(path: &std::path::Path, env: &dyn EnvSource) -> Result<Config, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
    parse(&text, env).map_err(|errs| {
        errs.iter()
            .map(|e| format!("{}:{e}", path.display()))
            .collect()
    })
}

/// Parses and validates a config file's text. Returns every error found, each with its place.
pub fn parse(text: &str, env: &dyn EnvSource) -> Result<Config, Vec<ConfigError>> {
    let mut c = Collector {
        text,
        errors: Vec::new(),
    };
    let root: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Err(vec![ConfigError {
                path: String::new(),
                line: e.location().map(|l| l.line()),
                message: format!("not valid YAML: {}", without_literals(&e.to_string())),
            }])
        }
    };
    let mut root = match root {
        Value::Mapping(m) => m,
        Value::Null => serde_yaml::Mapping::new(),
        _ => {
            return Err(vec![ConfigError {
                path: String::new(),
                line: Some(1),
                message: "the config must be a mapping of sections (server, providers, models ...)"
                    .into(),
            }])
        }
    };

    // ${ENV} substitution, everywhere a string is.
    for (k, v) in root.iter_mut() {
        let key = k.as_str().unwrap_or_default().to_string();
        substitute(v, &key, env, &mut c);
    }

    let mut sections: BTreeMap<String, Value> = BTreeMap::new();
    for (k, v) in root {
        let Some(key) = k.as_str().map(str::to_string) else {
            c.push("", "section names must be strings");
            continue;
        };
        if !SECTIONS.contains(&key.as_str()) {
            c.push(
                key.clone(),
                format!(
                    "unknown section `{key}` (expected one of: {})",
                    SECTIONS.join(", ")
                ),
            );
            continue;
        }
        sections.insert(key, v);
    }

    let server = parse_server(sections.remove("server"), &mut c);
    let mut ledger_flush = Duration::from_millis(500);
    let mut key_refresh = Duration::from_secs(5);
    let storage_url = match sections.remove("storage") {
        None | Some(Value::Null) => "sqlite://tollway.db".to_string(),
        Some(v) => match c.parse::<RawStorage>("storage", v) {
            Some(u) if u.url.starts_with("sqlite:") || u.url.starts_with("postgres") => {
                if let Some(ms) = u.flush_interval_ms {
                    if (1..=60_000).contains(&ms) {
                        ledger_flush = Duration::from_millis(ms);
                    } else {
                        c.push("storage.flush_interval_ms", "must be between 1 and 60000");
                    }
                }
                if let Some(s) = u.key_refresh_secs {
                    key_refresh = Duration::from_secs(s.max(1));
                }
                u.url
            }
            Some(u) => {
                c.push(
                    "storage.url",
                    format!(
                        "`{}` is not a storage URL (sqlite://FILE or postgres://...)",
                        redact_url(&u.url)
                    ),
                );
                String::new()
            }
            None => String::new(),
        },
    };
    let mut shared_state_prefix = "tollway:".to_string();
    let shared_state_url = match sections.remove("shared_state") {
        None | Some(Value::Null) => None,
        Some(v) => match c.parse::<RawShared>("shared_state", v) {
            Some(u) if u.url.starts_with("redis://") || u.url.starts_with("rediss://") => {
                if let Some(p) = u.prefix {
                    shared_state_prefix = p;
                }
                Some(u.url)
            }
            Some(u) => {
                c.push(
                    "shared_state.url",
                    format!("`{}` is not a redis:// URL", redact_url(&u.url)),
                );
                None
            }
            None => None,
        },
    };

    let cache = match sections.remove("cache") {
        None | Some(Value::Null) => None,
        Some(v) => c
            .parse::<RawCache>("cache", v)
            .and_then(|raw| cache_config(&mut c, raw, shared_state_url.is_some())),
    };

    let telemetry = match sections.remove("telemetry") {
        None | Some(Value::Null) => {
            match crate::telemetry::TraceConfig::from_env(&|k| env.get(k)) {
                Ok(t) => t,
                Err(e) => {
                    c.push("telemetry", format!("from the environment: {e}"));
                    None
                }
            }
        }
        Some(v) => c
            .parse::<RawTelemetry>("telemetry", v)
            .and_then(|raw| telemetry_config(&mut c, raw)),
    };

    let mut providers = BTreeMap::new();
    for (name, v) in entries(sections.remove("providers"), "providers", &mut c) {
        let base = format!("providers.{name}");
        if let Some(p) = c.parse::<ProviderConfig>(&base, v) {
            for problem in p.problems(&|k| env.get(k)) {
                c.push(base.clone(), problem);
            }
            providers.insert(name, p);
        }
    }

    let mut models = BTreeMap::new();
    let raw_models = entries(sections.remove("models"), "models", &mut c);
    let model_names: Vec<String> = raw_models.iter().map(|(n, _)| n.clone()).collect();
    for (name, v) in raw_models {
        let base = format!("models.{name}");
        let Some(raw) = c.parse::<RawModel>(&base, v) else {
            continue;
        };
        let strategy = match &raw.strategy {
            None => Strategy::default(),
            Some(s) => Strategy::parse(s).unwrap_or_else(|| {
                c.push(
                    format!("{base}.strategy"),
                    format!(
                        "unknown strategy `{s}` (expected one of: {})",
                        Strategy::NAMES
                    ),
                );
                Strategy::default()
            }),
        };
        let mut health = HealthPolicy {
            circuit_breaker: raw.circuit_breaker.unwrap_or(true),
            ..HealthPolicy::default()
        };
        if let Some(n) = raw.allowed_fails {
            if n == 0 {
                c.push(format!("{base}.allowed_fails"), "must be at least 1");
            }
            health.allowed_fails = n.max(1);
        }
        for (key, value, slot) in [
            ("cooldown_secs", raw.cooldown_secs, &mut health.cooldown),
            (
                "max_cooldown_secs",
                raw.max_cooldown_secs,
                &mut health.max_cooldown,
            ),
        ] {
            if let Some(v) = value {
                if v.is_finite() && (0.0..=86_400.0).contains(&v) {
                    *slot = Duration::from_secs_f64(v);
                } else {
                    c.push(
                        format!("{base}.{key}"),
                        "must be between 0 and 86400 seconds",
                    );
                }
            }
        }
        if raw.deployments.is_empty() {
            c.push(
                format!("{base}.deployments"),
                "a model needs at least one deployment",
            );
        }
        let mut deployments = Vec::new();
        for (i, d) in raw.deployments.into_iter().enumerate() {
            let dpath = format!("{base}.deployments[{i}]");
            let Some(p) = providers.get(&d.provider) else {
                // An entry that failed to parse was already reported; don't pile on.
                if !c
                    .errors
                    .iter()
                    .any(|e| e.path.starts_with(&format!("providers.{}", d.provider)))
                {
                    c.push(
                        format!("{dpath}.provider"),
                        format!("unknown provider `{}`", d.provider),
                    );
                }
                continue;
            };
            if d.model.trim().is_empty() {
                c.push(format!("{dpath}.model"), "the model id must not be empty");
            }
            let mut caps = model_capabilities(p, &d.model);
            if let Some(o) = d.capabilities {
                caps.tools = o.tools.unwrap_or(caps.tools);
                caps.vision = o.vision.unwrap_or(caps.vision);
                caps.json_mode = o.json_mode.unwrap_or(caps.json_mode);
                caps.json_schema = o.json_schema.unwrap_or(caps.json_schema);
                caps.stream_usage = o.stream_usage.unwrap_or(caps.stream_usage);
                caps.embeddings = o.embeddings.unwrap_or(caps.embeddings);
            }
            if d.weight == Some(0) {
                c.push(format!("{dpath}.weight"), "must be at least 1");
            }
            let price = match &d.price {
                None => None,
                Some(map) => {
                    // the deployment's own price: an entry whose provider and model are its own
                    let mut m = map.clone();
                    m.insert(Value::from("provider"), Value::from(d.provider.clone()));
                    m.insert(Value::from("model"), Value::from(d.model.clone()));
                    match serde_yaml::from_value::<PriceEntry>(Value::Mapping(m))
                        .map_err(|e| e.to_string())
                        .and_then(|e| e.to_price("config").map_err(|e| e.to_string()))
                    {
                        Ok(p) => Some(p),
                        Err(e) => {
                            c.push(format!("{dpath}.price"), e);
                            None
                        }
                    }
                }
            };
            deployments.push(DeploymentConfig {
                region: d.region,
                rpm: d.rpm,
                tpm: d.tpm,
                price,
                vendor: d.vendor,
                provider: d.provider,
                model: d.model,
                weight: d.weight.unwrap_or(1).max(1),
                capabilities: caps,
            });
        }
        for (key, list) in [
            ("fallbacks", &raw.fallbacks),
            ("context_window_fallbacks", &raw.context_window_fallbacks),
            ("content_policy_fallbacks", &raw.content_policy_fallbacks),
        ] {
            for (i, f) in list.iter().enumerate() {
                if !model_names.contains(f) {
                    c.push(format!("{base}.{key}[{i}]"), format!("unknown model `{f}`"));
                } else if f == &name {
                    c.push(
                        format!("{base}.{key}[{i}]"),
                        "a model cannot fall back to itself",
                    );
                }
            }
        }
        models.insert(
            name.clone(),
            ModelConfig {
                limit_scope: format!("model:{name}").into(),
                strategy,
                health,
                deployments,
                fallbacks: raw.fallbacks,
                context_window_fallbacks: raw.context_window_fallbacks,
                content_policy_fallbacks: raw.content_policy_fallbacks,
                rpm: raw.rpm,
                tpm: raw.tpm,
                probe_interval: raw
                    .probe_interval_secs
                    .map(|s| Duration::from_secs(s.max(1))),
                cache: raw.cache,
            },
        );
    }

    let mut prices = PricesConfig {
        require: false,
        table: PriceTable::builtin().clone(),
    };
    if let Some(v) = sections.remove("prices") {
        if let Some(raw) = c.parse::<RawPrices>("prices", v) {
            prices.require = raw.require;
            if let Some(file) = &raw.litellm_file {
                match std::fs::read_to_string(file)
                    .map_err(|e| format!("cannot read `{file}`: {e}"))
                    .and_then(|text| {
                        PriceTable::read_litellm(&text, file, "")
                            .map(|i| i.table)
                            .map_err(|e| e.to_string())
                    }) {
                    Ok(t) => prices.table = std::mem::take(&mut prices.table).with_overrides(t),
                    Err(e) => c.push("prices.litellm_file", e),
                }
            }
            let mut own = PriceTable::default();
            for (i, e) in raw.models.iter().enumerate() {
                match e.to_price("config") {
                    Ok(p) => own.insert(&e.provider, &e.model, p),
                    Err(m) => c.push(format!("prices.models[{i}]"), m.to_string()),
                }
            }
            prices.table = std::mem::take(&mut prices.table).with_overrides(own);
        }
    }

    let budget = |c: &mut Collector<'_>, path: &str, rb: RawBudget| -> Option<BudgetConfig> {
        let usd = match &rb.usd {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        let limit = match crate::admin::parse_usd(&usd) {
            Ok(m) => tollway_core::Micros(m),
            Err(e) => {
                c.push(format!("{path}.usd"), e);
                return None;
            }
        };
        let period = match rb.period.as_deref() {
            None => crate::budgets::Period::Monthly,
            Some(p) => match crate::budgets::Period::parse(p) {
                Some(p) => p,
                None => {
                    c.push(
                        format!("{path}.period"),
                        format!("`{p}` is not one of daily, weekly, monthly, total"),
                    );
                    return None;
                }
            },
        };
        Some(BudgetConfig {
            limit,
            period,
            hard: rb.hard.unwrap_or(true),
        })
    };
    let mut teams = BTreeMap::new();
    for (name, v) in entries(sections.remove("teams"), "teams", &mut c) {
        let base = format!("teams.{name}");
        if let Some(rt) = c.parse::<RawTeam>(&base, v) {
            let b = match rt.budget {
                Some(rb) => budget(&mut c, &format!("{base}.budget"), rb),
                None => None,
            };
            teams.insert(
                name.clone(),
                TeamConfig {
                    limit_scope: format!("team:{name}").into(),
                    rpm: rt.rpm,
                    tpm: rt.tpm,
                    budget: b,
                },
            );
        }
    }
    let mut global_budget = None;
    let mut alert_webhook = None;
    if let Some(v) = sections.remove("budgets") {
        if let Some(rb) = c.parse::<RawBudgets>("budgets", v) {
            if let Some(g) = rb.global {
                global_budget = budget(&mut c, "budgets.global", g);
            }
            if let Some(url) = rb.alert_webhook {
                if url.starts_with("http://") || url.starts_with("https://") {
                    alert_webhook = Some(url);
                } else {
                    c.push(
                        "budgets.alert_webhook",
                        "must be an http:// or https:// URL",
                    );
                }
            }
        }
    }

    let mut routers = BTreeMap::new();
    for (name, v) in entries(sections.remove("routers"), "routers", &mut c) {
        let base = format!("routers.{name}");
        let Some(raw) = c.parse::<RawRouter>(&base, v) else {
            continue;
        };
        if model_names.contains(&name) {
            c.push(base.clone(), format!("`{name}` is already a model name"));
        }
        if raw.kind == "learned" {
            let model = load_route_model(
                raw.model.as_deref(),
                raw.model_file.as_deref(),
                raw.encoder_dir.as_deref(),
            );
            let model = match model {
                Ok(m) => m,
                Err(e) => {
                    c.push(format!("{base}.model_file"), e);
                    continue;
                }
            };
            if raw.candidates.len() < 2 {
                c.push(
                    format!("{base}.candidates"),
                    "a learned router takes two or more candidates, strongest first",
                );
                continue;
            }
            for (i, m) in raw.candidates.iter().enumerate() {
                if !model_names.iter().any(|x| x == m) {
                    c.push(
                        format!("{base}.candidates[{i}]"),
                        format!("unknown model `{m}`"),
                    );
                }
            }
            let qm = model.quality_models().to_vec();
            let predicts = if raw.predicts.is_empty() {
                LearnedRouter::default_predicts(raw.candidates.len(), &qm)
            } else if raw.predicts.len() != raw.candidates.len() {
                c.push(
                    format!("{base}.predicts"),
                    format!("give one model per candidate ({})", raw.candidates.len()),
                );
                continue;
            } else {
                let mut v = Vec::new();
                for (i, p) in raw.predicts.iter().enumerate() {
                    match qm.iter().position(|m| m == p) {
                        Some(j) => v.push(j),
                        None => c.push(
                            format!("{base}.predicts[{i}]"),
                            format!("the router model predicts no `{p}` (it predicts {qm:?})"),
                        ),
                    }
                }
                v
            };
            let mut router = LearnedRouter {
                model,
                candidates: raw.candidates.clone(),
                decide: crate::rules::Decide::Thresholds(Vec::new()),
                predicts,
                costs: Vec::new(),
                log_prompts: raw.log_prompts,
            };
            match router.resolve(&raw.knob()) {
                Ok(d) => router.decide = d,
                Err(e) if e.field.is_empty() => {
                    c.push(base.clone(), e.message);
                    continue;
                }
                Err(e) => {
                    c.push(format!("{base}.{}", e.field), e.message);
                    continue;
                }
            }
            routers.insert(name, Router::Learned(router));
            continue;
        }
        if raw.kind != "rules" {
            c.push(
                format!("{base}.kind"),
                format!(
                    "router kind `{}` is not supported (rules or learned)",
                    raw.kind
                ),
            );
            continue;
        }
        let check_target = |path: String, t: &str, c: &mut Collector<'_>| {
            if !model_names.iter().any(|m| m == t) {
                c.push(path, format!("unknown model `{t}`"));
            }
        };
        let mut rules = Vec::new();
        for (i, r) in raw.rules.into_iter().enumerate() {
            check_target(format!("{base}.rules[{i}].to"), &r.to, &mut c);
            rules.push(Rule {
                name: r.name.unwrap_or_else(|| i.to_string()),
                when: r.when,
                to: r.to,
            });
        }
        let Some(default) = raw.default else {
            c.push(format!("{base}.default"), "a router needs a default model");
            continue;
        };
        check_target(format!("{base}.default"), &default, &mut c);
        routers.insert(name, Router::Rules(RulesRouter { rules, default }));
    }

    let mut keys: Vec<tollway_store::DeclaredKey> = Vec::new();
    for (name, v) in entries(sections.remove("keys"), "keys", &mut c) {
        let base = format!("keys.{name}");
        let Some(raw) = c.parse::<RawKey>(&base, v) else {
            continue;
        };
        if let Some(k) = declared_key(
            &name,
            raw,
            &base,
            &model_names,
            &routers,
            &providers,
            &mut c,
        ) {
            if let Some(other) = keys.iter().find(|o| o.hash == k.hash) {
                c.push(
                    base.clone(),
                    format!("its secret is also `keys.{}`'s", other.key.name),
                );
                continue;
            }
            keys.push(k);
        }
    }

    if c.errors.is_empty() {
        if let Some(server) = server {
            if server.master_key.is_none() && !server.listen.ip().is_loopback() {
                c.push(
                    "server.master_key",
                    format!(
                        "a master key is required when listening on a non-loopback address ({})",
                        server.listen
                    ),
                );
            } else {
                return Ok(Config {
                    server,
                    storage_url,
                    ledger_flush,
                    key_refresh,
                    shared_state_url,
                    shared_state_prefix,
                    providers,
                    models,
                    routers,
                    prices,
                    teams,
                    global_budget,
                    alert_webhook,
                    cache,
                    telemetry,
                    keys,
                });
            }
        }
    }
    c.errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    Err(c.errors)
}

/// A key the file declares, checked as the admin API checks a new key, and against the file's
/// models, routers and providers; `None` (with the errors pushed) when it is not valid.
fn declared_key(
    name: &str,
    raw: RawKey,
    base: &str,
    model_names: &[String],
    routers: &BTreeMap<String, Router>,
    providers: &BTreeMap<String, ProviderConfig>,
    c: &mut Collector<'_>,
) -> Option<tollway_store::DeclaredKey> {
    let errors = c.errors.len();
    let (hash, prefix) = match (&raw.key, &raw.key_sha256) {
        (Some(secret), None) => {
            let s = secret.expose();
            if s.chars().count() < MIN_SECRET_CHARS || s.chars().any(char::is_whitespace) {
                c.push(
                    format!("{base}.key"),
                    format!("a secret needs at least {MIN_SECRET_CHARS} characters and no spaces (`tollway keys create` makes good ones)"),
                );
                return None;
            }
            let shown: String = s.chars().take(s.chars().count().min(40) / 4).collect();
            (tollway_store::hash_secret(s), format!("{shown}…"))
        }
        (None, Some(hex)) => match tollway_store::digest_from_hex(hex) {
            Some(_) => (
                hex.to_ascii_lowercase(),
                format!("sha256:{}…", &hex[..8].to_ascii_lowercase()),
            ),
            None => {
                c.push(
                    format!("{base}.key_sha256"),
                    "must be a SHA-256 in hex (64 digits)",
                );
                return None;
            }
        },
        _ => {
            c.push(base, "give the key's secret as `key` (from the environment: `${VAR}`) or its SHA-256 as `key_sha256`, one of the two");
            return None;
        }
    };
    for m in &raw.models {
        if !model_names.contains(m) && !routers.contains_key(m) {
            c.push(
                format!("{base}.models"),
                format!("`{m}` is not a model or router name"),
            );
        }
    }
    for p in &raw.providers {
        if !providers.contains_key(p) {
            c.push(
                format!("{base}.providers"),
                format!("`{p}` is not a provider"),
            );
        }
    }
    let mut routing = serde_json::Map::new();
    for (router, knob) in &raw.routing {
        let knob = match serde_json::to_value(knob) {
            Ok(v) => v,
            Err(e) => {
                c.push(format!("{base}.routing.{router}"), e.to_string());
                continue;
            }
        };
        if let Err(e) = check_knob(routers, router, &knob) {
            c.push(format!("{base}.routing.{router}"), e);
        }
        routing.insert(router.clone(), knob);
    }
    let expires_ms = match raw.expires.as_deref() {
        None => None,
        Some(d) => match tollway_store::parse_day(d) {
            Some(day) => Some(day * 86_400_000),
            None => {
                c.push(
                    format!("{base}.expires"),
                    format!("`{d}` is not a date like 2027-01-31"),
                );
                None
            }
        },
    };
    let budget_usd = raw
        .budget_usd
        .as_ref()
        .map(|v| serde_json::to_value(v).unwrap_or_default());
    let new = crate::admin::CreateKey {
        name: name.to_string(),
        team: raw.team,
        models: raw.models,
        providers: raw.providers,
        regions: raw.regions,
        rpm: raw.rpm,
        tpm: raw.tpm,
        budget_usd,
        budget_period: raw.budget_period,
        expires_in_days: None,
        routing,
    }
    .into_new_key();
    let mut key = match new {
        Ok(k) => k,
        Err(e) => {
            c.push(base, e);
            return None;
        }
    };
    key.expires_ms = expires_ms;
    (c.errors.len() == errors).then_some(tollway_store::DeclaredKey { key, hash, prefix })
}

/// Checks a per-key knob for the learned router `router` (a virtual key's `routing`).
pub fn check_knob(
    routers: &BTreeMap<String, Router>,
    router: &str,
    knob: &serde_json::Value,
) -> Result<(), String> {
    let Some(r) = routers.get(router) else {
        return Err(format!("there is no router `{router}`"));
    };
    let Router::Learned(l) = r else {
        return Err(format!(
            "`{router}` is a rules router; only learned routers take knobs"
        ));
    };
    let k =
        <crate::rules::Knob as serde::Deserialize>::deserialize(knob).map_err(|e| e.to_string())?;
    l.resolve(&k).map(|_| ()).map_err(|e| e.message)
}

fn parse_server(v: Option<Value>, c: &mut Collector<'_>) -> Option<ServerConfig> {
    let raw = match v {
        None | Some(Value::Null) => RawServer {
            listen: None,
            master_key: None,
            max_body_bytes: None,
            shutdown_timeout_secs: None,
            max_attempts: None,
            retry_deadline_secs: None,
            direct_models: None,
            watch_config: None,
            admin_ui: None,
        },
        Some(v) => c.parse::<RawServer>("server", v)?,
    };
    let listen = raw.listen.as_deref().unwrap_or("127.0.0.1:4000");
    let listen = match listen.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            c.push(
                "server.listen",
                format!("`{listen}` is not an address like 127.0.0.1:4000"),
            );
            return None;
        }
    };
    let master_key = match raw.master_key {
        Some(k) if k.expose().trim().is_empty() => {
            c.push("server.master_key", "the master key must not be empty");
            return None;
        }
        Some(k) if k.expose().len() < 8 => {
            c.push(
                "server.master_key",
                "the master key is too short (8 characters at least)",
            );
            return None;
        }
        k => k,
    };
    let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes < 1024 {
        c.push("server.max_body_bytes", "must be at least 1024");
    }
    let max_attempts = raw.max_attempts.unwrap_or(3);
    if max_attempts == 0 {
        c.push("server.max_attempts", "must be at least 1");
    }
    Some(ServerConfig {
        listen,
        master_key,
        max_body_bytes,
        shutdown_timeout: Duration::from_secs(raw.shutdown_timeout_secs.unwrap_or(30)),
        max_attempts: max_attempts.max(1),
        retry_deadline: Duration::from_secs(raw.retry_deadline_secs.unwrap_or(60)),
        direct_models: raw.direct_models.unwrap_or(false),
        watch_config: raw.watch_config.unwrap_or(true),
        admin_ui: raw.admin_ui.unwrap_or(true),
    })
}

/// The entries of a `name: {...}` section, in file order.
fn entries(v: Option<Value>, section: &str, c: &mut Collector<'_>) -> Vec<(String, Value)> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Mapping(m)) => m
            .into_iter()
            .filter_map(|(k, v)| match k.as_str() {
                Some(k) => Some((k.to_string(), v)),
                None => {
                    c.push(section, "entry names must be strings");
                    None
                }
            })
            .collect(),
        Some(_) => {
            c.push(section, "expected a mapping of names to entries");
            Vec::new()
        }
    }
}

/// Replaces `${VAR}` (and `${VAR:-default}`) in every string below `v`.
fn substitute(v: &mut Value, path: &str, env: &dyn EnvSource, c: &mut Collector<'_>) {
    match v {
        Value::String(s) if s.contains("${") => match expand(s, env) {
            Ok(new) => *s = new,
            Err(var) => c.push(
                path.to_string(),
                format!("environment variable {var} is not set"),
            ),
        },
        Value::Mapping(m) => {
            for (k, v) in m.iter_mut() {
                let key = k.as_str().unwrap_or_default();
                substitute(v, &format!("{path}.{key}"), env, c);
            }
        }
        Value::Sequence(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                substitute(v, &format!("{path}[{i}]"), env, c);
            }
        }
        Value::Tagged(t) => substitute(&mut t.value, path, env, c),
        _ => {}
    }
}

fn expand(s: &str, env: &dyn EnvSource) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match (env.get(name), default) {
            (Some(v), _) if !v.is_empty() || default.is_none() => out.push_str(&v),
            (_, Some(d)) => out.push_str(d),
            (None, None) => return Err(name.to_string()),
            (Some(v), None) => out.push_str(&v),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Hides a password in a URL (`postgres://u:SECRET@h/db` → `postgres://u:***@h/db`).
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((creds, host)) = rest.split_once('@') {
            if let Some((user, _)) = creds.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}

/// Finds the 1-based line of a dotted path (`a.b[2].c`) in block- or flow-style YAML text.
/// A heuristic over the text, good for error messages: falls back to the nearest ancestor found.
pub fn locate(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut pos = 0usize; // line index to search from
    let mut found: Option<usize> = None;
    let mut parent_indent: isize = -1;
    for seg in split_path(path) {
        match seg {
            Seg::Key(k) => {
                let mut hit = None;
                for (i, line) in lines.iter().enumerate().skip(pos) {
                    let content = strip_comment(line);
                    let indent = content.len() - content.trim_start().len();
                    let same_line = Some(i) == found;
                    if !same_line
                        && (indent as isize) <= parent_indent
                        && !content.trim().is_empty()
                    {
                        break; // left the parent's block
                    }
                    if has_key(content, k) {
                        hit = Some((i, indent));
                        break;
                    }
                }
                let Some((i, indent)) = hit else { break };
                found = Some(i);
                pos = i;
                parent_indent = indent as isize;
            }
            Seg::Index(n) => {
                let mut count = 0usize;
                let mut hit = None;
                let mut item_indent: Option<usize> = None;
                for (i, line) in lines.iter().enumerate().skip(pos + 1) {
                    let content = strip_comment(line);
                    let trimmed = content.trim_start();
                    if trimmed.is_empty() {
                        continue;
                    }
                    let indent = content.len() - trimmed.len();
                    if (indent as isize) < parent_indent
                        || (indent as isize == parent_indent && !trimmed.starts_with('-'))
                    {
                        break;
                    }
                    if trimmed.starts_with("- ") || trimmed == "-" {
                        let ii = *item_indent.get_or_insert(indent);
                        if indent == ii {
                            if count == n {
                                hit = Some((i, indent));
                                break;
                            }
                            count += 1;
                        }
                    }
                }
                let Some((i, indent)) = hit else { break };
                found = Some(i);
                pos = i;
                parent_indent = indent as isize;
            }
        }
    }
    found.map(|i| i + 1)
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn split_path(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(b) = rest.find('[') {
            if b > 0 {
                out.push(Seg::Key(&rest[..b]));
            }
            rest = &rest[b..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(end) = stripped.find(']') else { break };
                if let Ok(n) = stripped[..end].parse() {
                    out.push(Seg::Index(n));
                }
                rest = &stripped[end + 1..];
            }
        } else if !rest.is_empty() {
            out.push(Seg::Key(rest));
        }
    }
    out
}

fn strip_comment(line: &str) -> &str {
    match line.find(" #") {
        Some(i) => &line[..i],
        None if line.trim_start().starts_with('#') => "",
        None => line,
    }
}

fn has_key(line: &str, key: &str) -> bool {
    let mut from = 0;
    while let Some(i) = line[from..].find(key) {
        let at = from + i;
        let before = line[..at].chars().last();
        let after = &line[at + key.len()..];
        let before_ok = matches!(before, None | Some(' ' | '{' | ',' | '-' | '"' | '\''));
        let after = after.trim_start_matches(['"', '\'']);
        if before_ok && after.starts_with(':') {
            return true;
        }
        from = at + key.len();
    }
    false
}

/// The configuration `tollway serve` uses without a file: providers from the usual environment
/// variables, public names `provider/model` (and bare names routed by their well-known prefix).
pub fn from_env(env: &dyn EnvSource, listen: Option<SocketAddr>) -> Result<Config, String> {
    let mut providers = BTreeMap::new();
    if let Some(key) = env.get("OPENAI_API_KEY").filter(|k| !k.is_empty()) {
        providers.insert(
            "openai".to_string(),
            ProviderConfig::Openai(OpenAiConfig {
                api_key: Secret::new(key),
                base_url: env.get("OPENAI_BASE_URL").filter(|u| !u.is_empty()),
                organization: env.get("OPENAI_ORG_ID").filter(|u| !u.is_empty()),
                headers: BTreeMap::new(),
                timeouts: Timeouts::default(),
                ca_file: None,
                http2: false,
                proxy: None,
            }),
        );
    }
    if let Some(key) = env.get("ANTHROPIC_API_KEY").filter(|k| !k.is_empty()) {
        providers.insert(
            "anthropic".to_string(),
            ProviderConfig::Anthropic(AnthropicConfig {
                api_key: Secret::new(key),
                base_url: env.get("ANTHROPIC_BASE_URL").filter(|u| !u.is_empty()),
                version: None,
                headers: BTreeMap::new(),
                timeouts: Timeouts::default(),
                ca_file: None,
                http2: false,
                proxy: None,
            }),
        );
    }
    // Bedrock from the AWS SDKs' variables: a region and an access key or a Bedrock API key
    let var = |k: &str| env.get(k).filter(|v| !v.trim().is_empty());
    let region = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION"));
    let keys = var("AWS_ACCESS_KEY_ID").zip(var("AWS_SECRET_ACCESS_KEY"));
    let api_key = var("AWS_BEARER_TOKEN_BEDROCK");
    // a container's credentials endpoint (ECS, EKS Pod Identity) is read by the account itself
    let container = var("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .or_else(|| var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"))
        .is_some();
    if region.is_some() && (keys.is_some() || api_key.is_some() || container) {
        let (access_key_id, secret) = keys.unzip();
        providers.insert(
            "bedrock".to_string(),
            ProviderConfig::Bedrock(BedrockConfig {
                region,
                session_token: access_key_id
                    .as_ref()
                    .and(var("AWS_SESSION_TOKEN"))
                    .map(Secret::new),
                access_key_id,
                secret_access_key: secret.map(Secret::new),
                api_key: api_key.map(Secret::new),
                ..BedrockConfig::default()
            }),
        );
    }
    // Gemini from Google's SDKs' variables
    if let Some(key) = var("GEMINI_API_KEY").or_else(|| var("GOOGLE_API_KEY")) {
        providers.insert(
            "gemini".to_string(),
            ProviderConfig::Gemini(GeminiConfig {
                api_key: Secret::new(key),
                ..GeminiConfig::default()
            }),
        );
    }
    // Vertex AI from Application Default Credentials' file, with the project and location
    // the Google SDKs read (the key file may name the project)
    if var("GOOGLE_APPLICATION_CREDENTIALS").is_some() {
        providers.insert(
            "vertex".to_string(),
            ProviderConfig::Vertex(VertexConfig {
                project: var("GOOGLE_CLOUD_PROJECT"),
                location: var("GOOGLE_CLOUD_LOCATION"),
                credentials: var("GOOGLE_APPLICATION_CREDENTIALS"),
                ..VertexConfig::default()
            }),
        );
    }
    // Azure OpenAI from the `openai` SDK's AzureOpenAI variables: a key, or else an Entra ID
    // application from azure-identity's (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET)
    let entra = ["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"]
        .iter()
        .all(|k| var(k).is_some());
    let azure_key = var("AZURE_OPENAI_API_KEY");
    if let (true, Some(endpoint)) = (azure_key.is_some() || entra, var("AZURE_OPENAI_ENDPOINT")) {
        providers.insert(
            "azure".to_string(),
            ProviderConfig::Azure(AzureConfig {
                base_url: Some(endpoint),
                api_key: azure_key.map(Secret::new).unwrap_or_default(),
                api_version: var("AZURE_OPENAI_API_VERSION").or_else(|| var("OPENAI_API_VERSION")),
                ..AzureConfig::default()
            }),
        );
    }
    let listen = listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 4000)));
    let master_key = env
        .get("TOLLWAY_MASTER_KEY")
        .filter(|k| !k.is_empty())
        .map(Secret::new);
    if master_key.is_none() && !listen.ip().is_loopback() {
        return Err(format!(
            "set TOLLWAY_MASTER_KEY: a master key is required when listening on {listen}"
        ));
    }
    Ok(Config {
        server: ServerConfig {
            listen,
            master_key,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            shutdown_timeout: Duration::from_secs(30),
            max_attempts: 3,
            retry_deadline: Duration::from_secs(60),
            direct_models: true,
            watch_config: false,
            admin_ui: true,
        },
        storage_url: "sqlite://tollway.db".into(),
        ledger_flush: Duration::from_millis(500),
        key_refresh: Duration::from_secs(5),
        shared_state_url: None,
        shared_state_prefix: "tollway:".into(),
        providers,
        models: BTreeMap::new(),
        routers: BTreeMap::new(),
        prices: PricesConfig {
            require: false,
            table: PriceTable::builtin().clone(),
        },
        teams: BTreeMap::new(),
        global_budget: None,
        alert_webhook: None,
        cache: None,
        telemetry: crate::telemetry::TraceConfig::from_env(&|k| env.get(k))?,
        keys: Vec::new(),
    })
}

/// The `telemetry` section, checked.
fn telemetry_config(
    c: &mut Collector<'_>,
    raw: RawTelemetry,
) -> Option<crate::telemetry::TraceConfig> {
    let endpoint = match (raw.traces_endpoint, raw.otlp_endpoint) {
        (Some(_), Some(_)) => {
            c.push(
                "telemetry",
                "give otlp_endpoint (the collector's base URL) or traces_endpoint (the full traces URL), not both",
            );
            return None;
        }
        (Some(url), None) => url,
        (None, Some(base)) => crate::telemetry::traces_url(&base),
        (None, None) => {
            c.push(
                "telemetry.otlp_endpoint",
                "required: the collector's OTLP/HTTP URL (e.g. http://127.0.0.1:4318)",
            );
            return None;
        }
    };
    let sample_ratio = raw.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        c.push("telemetry.sample_ratio", "must be between 0 and 1");
        return None;
    }
    let cfg = crate::telemetry::TraceConfig {
        endpoint,
        service_name: raw.service_name.unwrap_or_else(|| "tollway".into()),
        headers: raw.headers.into_iter().collect(),
        sample_ratio,
        export_interval: Duration::from_millis(raw.export_interval_ms.unwrap_or(2000).max(10)),
    };
    match cfg.check() {
        Ok(()) => Some(cfg),
        Err(e) => {
            c.push("telemetry", e);
            None
        }
    }
}

/// The `cache` section, checked.
fn cache_config(
    c: &mut Collector<'_>,
    raw: RawCache,
    has_shared_state: bool,
) -> Option<crate::cache::CacheConfig> {
    let mut cfg = crate::cache::CacheConfig::default();
    let errors = c.errors.len();
    if let Some(t) = raw.ttl_secs {
        if t == 0 {
            c.push("cache.ttl_secs", "must be at least 1");
        }
        cfg.ttl = Duration::from_secs(t);
    }
    if let Some(mb) = raw.max_mb {
        if mb == 0 {
            c.push(
                "cache.max_mb",
                "must be at least 1 (remove the section to turn caching off)",
            );
        }
        cfg.max_bytes = usize::try_from(mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
    }
    if let Some(kb) = raw.max_entry_kb {
        if kb == 0 {
            c.push("cache.max_entry_kb", "must be at least 1");
        }
        cfg.max_entry_bytes = usize::try_from(kb.saturating_mul(1 << 10)).unwrap_or(usize::MAX);
    }
    if let Some(s) = raw.scope {
        match crate::cache::Scope::parse(&s) {
            Some(scope) => cfg.scope = scope,
            None => c.push(
                "cache.scope",
                format!("unknown scope `{s}` (expected key, team or global)"),
            ),
        }
    }
    match raw.mode.as_deref() {
        None | Some("on") => {}
        Some("opt-in") => cfg.opt_in = true,
        Some(m) => c.push(
            "cache.mode",
            format!("unknown mode `{m}` (expected on or opt-in)"),
        ),
    }
    if raw.shared == Some(true) {
        if !has_shared_state {
            c.push(
                "cache.shared",
                "needs `shared_state` (a Redis URL) to share cached answers between instances",
            );
        }
        cfg.shared = true;
    }
    (c.errors.len() == errors).then_some(cfg)
}

/// A learned router's model: the built-in lexical model, a lexical model file, or an embedding
/// router file with its encoder.
fn load_route_model(
    kind: Option<&str>,
    path: Option<&str>,
    encoder_dir: Option<&str>,
) -> Result<std::sync::Arc<dyn tollway_engine::router::RouteModel>, String> {
    use tollway_engine::router::{embed, encoder, LexicalRouter};
    let (embedding, builtin) = match kind {
        None | Some("lexical") => (false, None),
        Some("embedding") => (true, Some(embed::BUILTIN_FILE)),
        Some("embedding-static") => (true, Some(embed::BUILTIN_STATIC_FILE)),
        Some(other) => {
            return Err(format!(
                "router model `{other}` is not supported (lexical, embedding or embedding-static)"
            ))
        }
    };
    if !embedding && encoder_dir.is_some() {
        return Err("encoder_dir applies to `model: embedding` and `embedding-static` only".into());
    }
    let path = match (path, builtin) {
        (Some(p), _) => p,
        (None, Some(b)) => b,
        (None, None) => {
            return LexicalRouter::builtin()
                .map(|m| std::sync::Arc::new(m) as _)
                .map_err(|e| e.to_string())
        }
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    if embedding {
        let dir = encoder_dir.map_or_else(encoder::default_dir, std::path::PathBuf::from);
        embed::EmbeddingRouter::from_json(&text, &dir)
            .map(|m| std::sync::Arc::new(m) as _)
            .map_err(|e| format!("`{path}` is not a usable embedding router: {e}"))
    } else {
        LexicalRouter::from_json(&text)
            .map(|m| std::sync::Arc::new(m) as _)
            .map_err(|e| format!("`{path}` is not a usable router model: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const GOOD: &str = r#"
server:
  listen: 127.0.0.1:4000
  master_key: ${TOLLWAY_MASTER_KEY}
providers:
  openai:      { kind: openai, api_key: "${OPENAI_API_KEY}" }
  anthropic:   { kind: anthropic, api_key: "${ANTHROPIC_API_KEY}" }
  local:       { kind: openai-compatible, base_url: "http://127.0.0.1:8000/v1", api_key: none }
models:
  sonnet:
    deployments:
      - { provider: anthropic, model: claude-sonnet-4-5 }
    fallbacks: [gpt]
  gpt:
    deployments: [{ provider: openai, model: gpt-4.1 }]
  mini:
    deployments:
      - provider: local
        model: llama
        capabilities: { vision: false }
"#;

    #[test]
    fn a_good_config_parses() {
        let e = env(&[
            ("TOLLWAY_MASTER_KEY", "sk-master-123"),
            ("OPENAI_API_KEY", "sk-o"),
            ("ANTHROPIC_API_KEY", "sk-a"),
        ]);
        let c = parse(GOOD, &e).unwrap();
        assert_eq!(
            c.server.master_key.as_ref().map(|k| k.expose()),
            Some("sk-master-123")
        );
        assert_eq!(c.models["sonnet"].fallbacks, vec!["gpt".to_string()]);
        assert!(!c.models["mini"].deployments[0].capabilities.vision);
        assert!(c.models["sonnet"].deployments[0].capabilities.json_schema);
        assert!(!c.models["sonnet"].deployments[0].capabilities.json_mode);
        assert_eq!(c.storage_url, "sqlite://tollway.db");
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let text = r#"server:
  listen: nowhere
  colour: blue
providers:
  openai: { kind: openai, api_key: "${MISSING_KEY}" }
  weird: { kind: carrier-pigeon }
  local:
    kind: openai-compatible
    api_key: none
models:
  a:
    deployments:
      - provider: openai
        model: gpt-4.1
      - provider: nobody
        model: x
    fallbacks: [zzz]
  b:
    deployments: 5
"#;
        let errs = parse(text, &env(&[])).unwrap_err();
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let all = shown.join("\n");
        assert!(
            all.contains("line 3: server.colour: unknown field `colour`"),
            "{all}"
        );
        assert!(
            all.contains(
                "line 5: providers.openai.api_key: environment variable MISSING_KEY is not set"
            ),
            "{all}"
        );
        assert!(
            all.contains("line 6: providers.weird.kind: unknown variant `carrier-pigeon`"),
            "{all}"
        );
        assert!(
            all.contains("line 7: providers.local: base_url is required"),
            "{all}"
        );
        assert!(
            all.contains("line 15: models.a.deployments[1].provider: unknown provider `nobody`"),
            "{all}"
        );
        assert!(
            all.contains("line 17: models.a.fallbacks[0]: unknown model `zzz`"),
            "{all}"
        );
        assert!(
            all.contains("line 19: models.b.deployments: invalid type"),
            "{all}"
        );
        // server.listen is reported even though other sections failed too
        let e = parse("server:\n  listen: nowhere\n", &env(&[])).unwrap_err();
        assert_eq!(e[0].line, Some(2));
        assert!(e[0].message.contains("`nowhere`"));
    }

    #[test]
    fn prices_come_from_the_table_the_litellm_file_and_the_config() {
        let dir = std::env::temp_dir().join(format!("tollway-prices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("litellm.json");
        std::fs::write(
            &file,
            r#"{"my-model": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}}"#,
        )
        .unwrap();
        let text = format!(
            r#"
prices:
  require: true
  litellm_file: {}
  models:
    - {{ vendor: openai, model: gpt-4.1, input: "1.00", output: "4.00" }}
providers:
  openai: {{ kind: openai, api_key: sk-x }}
models:
  m:
    deployments:
      - {{ provider: openai, model: gpt-4.1, price: {{ input: "0.5", output: "1" }}, vendor: azure }}
"#,
            file.display()
        );
        let c = parse(&text, &env(&[])).unwrap();
        assert!(c.prices.require);
        let t = &c.prices.table;
        assert_eq!(
            t.lookup_in(&["openai"], "gpt-4.1").unwrap().input.0,
            1_000_000
        );
        assert_eq!(
            t.lookup_in(&["openai"], "my-model").unwrap().output.0,
            2_000_000
        );
        assert_eq!(
            t.lookup_in(&["anthropic"], "claude-sonnet-4-5")
                .unwrap()
                .input
                .0,
            3_000_000
        );
        let d = &c.models["m"].deployments[0];
        assert_eq!(d.price.as_ref().unwrap().input.0, 500_000);
        assert_eq!(d.vendor.as_deref(), Some("azure"));
        let errs = parse(
            "prices:\n  models:\n    - { vendor: openai, model: x, input: \"-1\", output: \"1\", colour: 3 }\n",
            &env(&[]),
        )
        .unwrap_err();
        assert!(errs[0].path.starts_with("prices"), "{errs:?}");
    }

    #[test]
    fn an_unusable_proxy_in_the_environment_is_a_config_error_unless_overridden() {
        let text = |account: &str| {
            format!(
                "providers:\n  up: {account}\nmodels:\n  m: {{ deployments: [{{ provider: up, model: x }}] }}\n"
            )
        };
        let e = env(&[("HTTPS_PROXY", "socks5://bob:pa55@proxy:1080")]);
        let errs = parse(&text("{ kind: anthropic, api_key: k }"), &e).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "providers.up");
        assert!(
            errs[0]
                .message
                .contains("HTTPS_PROXY `socks5://***@proxy:1080` in the environment")
                && errs[0].message.contains("set the account's `proxy`")
                && !errs[0].message.contains("pa55"),
            "{errs:?}"
        );
        // the account's own setting, or a loopback upstream, does not read it
        for account in [
            "{ kind: anthropic, api_key: k, proxy: none }",
            "{ kind: anthropic, api_key: k, proxy: \"http://proxy:3128\" }",
            "{ kind: openai-compatible, base_url: \"http://127.0.0.1:8000/v1\" }",
        ] {
            if let Err(errs) = parse(&text(account), &e) {
                panic!("{account}: {errs:?}");
            }
        }
    }

    /// The complete example in docs/config.md is a valid config.
    #[test]
    fn the_documented_example_is_valid() {
        let doc = include_str!("../../../docs/config.md");
        let start = doc.find("```yaml\n").expect("yaml block") + "```yaml\n".len();
        let end = start + doc[start..].find("```").expect("block end");
        let e = env(&[
            ("TOLLWAY_MASTER_KEY", "sk-master-123"),
            ("OPENAI_API_KEY", "sk-o"),
            ("ANTHROPIC_API_KEY", "sk-a"),
            ("ANTHROPIC_EU_API_KEY", "sk-a2"),
            ("GROQ_API_KEY", "gsk"),
            ("GEMINI_API_KEY", "g"),
            ("AZURE_OPENAI_API_KEY", "az"),
        ]);
        let c = match parse(&doc[start..end], &e) {
            Ok(c) => c,
            Err(errs) => panic!("{errs:?}"),
        };
        assert_eq!(c.models["sonnet"].strategy, Strategy::LowestLatency);
        assert_eq!(c.models["gpt"].deployments[0].weight, 3);
        assert!(c.routers.contains_key("auto"));
    }

    #[test]
    fn unknown_sections_are_errors() {
        let errs = parse("providerz: {}\nkeys: {}\n", &env(&[])).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("unknown section `providerz`"));
    }

    #[test]
    fn keys_in_the_file_are_checked_as_the_admin_api_checks_them() {
        let base = "providers:\n  oai: { kind: openai-compatible, base_url: \"http://127.0.0.1:9/v1\" }\nmodels:\n  gpt: { deployments: [{ provider: oai, model: gpt-4.1 }] }\nrouters:\n  auto: { kind: learned, candidates: [gpt, gpt], strong_share: 0.5 }\nkeys:\n";
        let e = env(&[("BOT_KEY", "sk-live-0123456789abcdefghijklmn")]);
        let ok = format!("{base}  bot: {{ key: \"${{BOT_KEY}}\", team: ops, models: [gpt, auto], providers: [oai], rpm: 60, budget_usd: 25, expires: 2030-01-01, routing: {{ auto: {{ strong_share: 0.2 }} }} }}\n  hashed: {{ key_sha256: {} }}\n", "AB".repeat(32));
        let c = match parse(&ok, &e) {
            Ok(c) => c,
            Err(errs) => panic!("{errs:?}"),
        };
        assert_eq!(c.keys.len(), 2);
        let bot = c.keys.iter().find(|k| k.key.name == "bot").expect("bot");
        assert_eq!(
            bot.hash,
            tollway_store::hash_secret("sk-live-0123456789abcdefghijklmn")
        );
        assert_eq!(bot.prefix, "sk-live-…");
        assert_eq!(bot.key.budget_micros, Some(25_000_000));
        assert_eq!(bot.key.budget_period.as_deref(), Some("monthly"));
        assert_eq!(
            bot.key.expires_ms,
            tollway_store::parse_day("2030-01-01").map(|d| d * 86_400_000)
        );
        assert_eq!(bot.key.routing["auto"]["strong_share"], 0.2);
        let hashed = c
            .keys
            .iter()
            .find(|k| k.key.name == "hashed")
            .expect("hashed");
        assert_eq!(hashed.hash, "ab".repeat(32));
        assert_eq!(hashed.prefix, "sha256:abababab…");
        assert!(
            !format!("{:?}", c.keys).contains("0123456789abcdefghijklmn"),
            "the secret is not kept"
        );

        for (entry, want) in [
            ("{ team: ops }", "`key` (from the environment"),
            ("{ key: short-secret-123 }", "at least 24 characters"),
            ("{ key: \"${BOT_KEY}\", key_sha256: abc }", "one of the two"),
            ("{ key_sha256: nothex }", "64 digits"),
            (
                "{ key: \"${BOT_KEY}\", models: [gtp] }",
                "`gtp` is not a model or router name",
            ),
            (
                "{ key: \"${BOT_KEY}\", providers: [aws] }",
                "`aws` is not a provider",
            ),
            (
                "{ key: \"${BOT_KEY}\", budget_usd: lots }",
                "not a dollar amount",
            ),
            (
                "{ key: \"${BOT_KEY}\", budget_usd: 5, budget_period: hourly }",
                "hourly",
            ),
            ("{ key: \"${BOT_KEY}\", expires: soon }", "not a date"),
            (
                "{ key: \"${BOT_KEY}\", routing: { auto: { strong_share: 7 } } }",
                "keys.k.routing.auto",
            ),
            (
                "{ key: \"${BOT_KEY}\", routing: { nope: { strong_share: 0.1 } } }",
                "no router `nope`",
            ),
            ("{ key: \"${BOT_KEY}\", colour: red }", "colour"),
        ] {
            let errs = parse(&format!("{base}  k: {entry}\n"), &e).expect_err(entry);
            let all = errs
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n");
            assert!(all.contains(want), "{entry}: {all}");
            assert!(
                !all.contains("0123456789abcdefghijklmn"),
                "{entry}: the secret in an error: {all}"
            );
        }
        // a secret written unquoted, which YAML reads as a number, is refused without being shown
        for text in [
            format!("{base}  k: {{ key: 98765432109876543210987 }}\n"),
            format!("{base}  k: {{ key: 987654321098765432 }}\n"),
            "providers:\n  x: { kind: openai, api_key: 1234567890123456789012 }\n".to_string(),
            "providers:\n  x: { kind: openai, api_key: 123456789012345 }\n".to_string(),
        ] {
            let errs = parse(&text, &e).expect_err("a number is no secret");
            let all = errs
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n");
            for leaked in [
                "98765432109876543210987",
                "987654321098765432",
                "1234567890123456789012",
                "123456789012345",
            ] {
                assert!(!all.contains(leaked), "{text}: {all}");
            }
        }
        // one secret, two keys
        let twice =
            format!("{base}  a: {{ key: \"${{BOT_KEY}}\" }}\n  b: {{ key: \"${{BOT_KEY}}\" }}\n");
        let errs = parse(&twice, &e).expect_err("a shared secret");
        assert!(
            errs.iter()
                .any(|e| e.to_string().contains("also `keys.a`'s")),
            "{errs:?}"
        );
    }

    #[test]
    fn env_defaults_and_syntax_errors() {
        assert_eq!(expand("a${X:-b}c", &env(&[])).unwrap(), "abc");
        assert_eq!(expand("${X}", &env(&[("X", "1")])).unwrap(), "1");
        assert_eq!(expand("${X}", &env(&[])).unwrap_err(), "X");
        let e = parse("server: [\n", &env(&[])).unwrap_err();
        assert!(e[0].message.starts_with("not valid YAML"));
        assert!(e[0].line.is_some());
    }

    #[test]
    fn a_non_loopback_listener_needs_a_master_key() {
        let e = parse("server: { listen: 0.0.0.0:4000 }\n", &env(&[])).unwrap_err();
        assert!(e[0].message.contains("master key is required"));
    }

    #[test]
    fn env_mode_takes_the_usual_variables() {
        let c = from_env(
            &env(&[("OPENAI_API_KEY", "sk-x"), ("ANTHROPIC_API_KEY", "sk-y")]),
            None,
        )
        .unwrap();
        assert_eq!(c.providers.len(), 2);
        assert!(c.server.direct_models);
        assert!(from_env(&env(&[]), Some("0.0.0.0:1".parse().unwrap())).is_err());
    }

    #[test]
    fn env_mode_adds_bedrock_from_the_aws_variables() {
        let aws = [
            ("AWS_REGION", "eu-central-1"),
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "token"),
        ];
        let c = from_env(&env(&aws), None).unwrap();
        match c.providers.get("bedrock") {
            Some(ProviderConfig::Bedrock(b)) => {
                assert_eq!(b.region.as_deref(), Some("eu-central-1"));
                assert_eq!(b.access_key_id.as_deref(), Some("AKIDENV"));
                assert!(b.session_token.is_some());
                assert!(b.api_key.is_none());
            }
            other => panic!("{other:?}"),
        }
        // a region alone, or keys without a region, add nothing
        assert!(from_env(&env(&aws[..1]), None)
            .unwrap()
            .providers
            .is_empty());
        assert!(from_env(&env(&aws[1..]), None)
            .unwrap()
            .providers
            .is_empty());
        let c = from_env(
            &env(&[
                ("AWS_DEFAULT_REGION", "us-west-2"),
                ("AWS_BEARER_TOKEN_BEDROCK", "br-key"),
            ]),
            None,
        )
        .unwrap();
        assert!(
            matches!(c.providers.get("bedrock"), Some(ProviderConfig::Bedrock(b)) if b.api_key.is_some())
        );
        // in a container with a task role
        let c = from_env(
            &env(&[
                ("AWS_REGION", "us-east-2"),
                (
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                    "/v2/credentials/x",
                ),
            ]),
            None,
        )
        .unwrap();
        assert!(
            matches!(c.providers.get("bedrock"), Some(ProviderConfig::Bedrock(b)) if b.access_key_id.is_none())
        );
    }

    /// Azure OpenAI, Gemini and Vertex AI accounts: what they need, named when missing, and
    /// their default capabilities.
    #[test]
    fn azure_gemini_and_vertex_accounts_check() {
        let file = r#"
providers:
  azure:  { kind: azure, base_url: "https://res.openai.azure.com", api_key: "${AZ}", api_version: "2024-10-21" }
  gemini: { kind: gemini, api_key: "${GEMINI_API_KEY}" }
  vertex: { kind: vertex, project: my-project, location: us-east5, access_token: "${TOKEN}" }
models:
  gpt: { deployments: [{ provider: azure, model: my-gpt-4o }] }
  flash: { deployments: [{ provider: gemini, model: gemini-2.5-flash }] }
  claude: { deployments: [{ provider: vertex, model: "claude-sonnet-4-5@20250929" }] }
"#;
        let vars = [("AZ", "k1"), ("GEMINI_API_KEY", "k2"), ("TOKEN", "ya29.x")];
        let c = parse(file, &env(&vars)).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(c.models["gpt"].deployments[0].capabilities.embeddings);
        let caps = c.models["flash"].deployments[0].capabilities;
        assert!(
            caps.tools && caps.vision && caps.json_mode && caps.json_schema && !caps.embeddings
        );
        // what each lacks, named at its account
        let broken = r#"
providers:
  azure:  { kind: azure, api_key: k }
  azure2: { kind: azure, base_url: "https://res.openai.azure.com" }
  gemini: { kind: gemini }
  vertex: { kind: vertex, project: p }
  vertex2: { kind: vertex, access_token: t }
  azure3: { kind: azure, base_url: "https://r.openai.azure.com", tenant_id: contoso, client_id: app }
"#;
        let e = parse(broken, &env(&[])).unwrap_err();
        let said = |path: &str, what: &str| {
            assert!(
                e.iter()
                    .any(|e| e.path == format!("providers.{path}") && e.message.contains(what)),
                "{path}: {what}: {e:?}"
            )
        };
        said("azure", "base_url is required");
        said(
            "azure2",
            "api_key, azure_ad_token or an Entra ID application",
        );
        said("gemini", "api_key is required");
        said("vertex", "GOOGLE_APPLICATION_CREDENTIALS");
        said("vertex2", "project is required");
        said("azure3", "client_secret missing");
        let e = parse(
            "providers:\n  v: { kind: vertex, project: p, credentials: /nonexistent.json }\n",
            &env(&[]),
        )
        .unwrap_err();
        assert!(e[0].message.contains("/nonexistent.json"), "{e:?}");
    }

    #[test]
    fn env_mode_adds_gemini_vertex_and_azure() {
        let c = from_env(
            &env(&[
                ("GEMINI_API_KEY", "g"),
                ("GOOGLE_APPLICATION_CREDENTIALS", "/keys/sa.json"),
                ("GOOGLE_CLOUD_PROJECT", "proj"),
                ("AZURE_OPENAI_API_KEY", "a"),
                ("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com"),
                ("OPENAI_API_VERSION", "2024-10-21"),
            ]),
            None,
        )
        .unwrap();
        assert!(
            matches!(c.providers.get("gemini"), Some(ProviderConfig::Gemini(g)) if g.api_key.expose() == "g")
        );
        assert!(
            matches!(c.providers.get("vertex"), Some(ProviderConfig::Vertex(v))
                if v.project.as_deref() == Some("proj") && v.credentials.as_deref() == Some("/keys/sa.json"))
        );
        assert!(
            matches!(c.providers.get("azure"), Some(ProviderConfig::Azure(a))
                if a.dated_version() == Some("2024-10-21"))
        );
        // an endpoint with an Entra ID application's variables
        let c = from_env(
            &env(&[
                ("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com"),
                ("AZURE_TENANT_ID", "t"),
                ("AZURE_CLIENT_ID", "c"),
                ("AZURE_CLIENT_SECRET", "s"),
            ]),
            None,
        )
        .unwrap();
        assert!(
            matches!(c.providers.get("azure"), Some(ProviderConfig::Azure(a)) if a.api_key.is_none())
        );
        // an endpoint without a key adds no Azure account
        let c = from_env(
            &env(&[("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com")]),
            None,
        )
        .unwrap();
        assert!(c.providers.is_empty());
    }

    /// The shape of the public interface's config sketch (`kind: bedrock` with credentials from
    /// the environment, one public name over two clouds) checks clean, and a Bedrock account
    /// without a region or credentials is an error naming what is missing.
    #[test]
    fn bedrock_accounts_check() {
        let sketch = r#"
server:
  listen: 127.0.0.1:4000
  master_key: ${TOLLWAY_MASTER_KEY}
storage:
  url: sqlite://tollway.db
providers:
  openai:      { kind: openai, api_key: "${OPENAI_API_KEY}" }
  anthropic:   { kind: anthropic, api_key: "${ANTHROPIC_API_KEY}" }
  bedrock-us:  { kind: bedrock, region: us-east-1 }
  local:       { kind: openai, base_url: "http://127.0.0.1:8000/v1", api_key: none }
models:
  sonnet:
    strategy: lowest-latency
    deployments:
      - { provider: anthropic, model: claude-sonnet-4-5 }
      - { provider: bedrock-us, model: anthropic.claude-sonnet-4-5-20250929-v1:0 }
    fallbacks: [gpt]
  gpt:
    deployments: [{ provider: openai, model: gpt-4.1 }]
  mini:
    deployments: [{ provider: openai, model: gpt-4.1-mini }]
routers:
  auto: { kind: learned, candidates: [sonnet, mini], strong_share: 0.3 }
"#;
        let vars = [
            ("TOLLWAY_MASTER_KEY", "sk-master"),
            ("OPENAI_API_KEY", "sk-o"),
            ("ANTHROPIC_API_KEY", "sk-a"),
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ];
        let c = parse(sketch, &env(&vars)).unwrap_or_else(|e| panic!("{e:?}"));
        let caps = c.models["sonnet"].deployments[1].capabilities;
        assert!(caps.tools && caps.vision && caps.json_schema && !caps.json_mode);
        // without AWS credentials anywhere: the account is named with what it lacks
        let e = parse(sketch, &env(&vars[..3])).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].path, "providers.bedrock-us");
        assert!(e[0].message.contains("AWS_ACCESS_KEY_ID"), "{e:?}");
        let e = parse(
            "providers:\n  b: { kind: bedrock, api_key: k, base_url: ftp://x }\n  c: { kind: bedrock, api_key: k }\n  d: { kind: bedrock, region: us-east-1, api_key: k, colour: red }\n",
            &env(&[]),
        )
        .unwrap_err();
        let text = format!("{e:?}");
        assert!(text.contains("base_url `ftp://x`"), "{text}");
        assert!(text.contains("region is required"), "{text}");
        assert!(text.contains("colour"), "{text}");
    }

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_url("postgres://u:pw@h/db"),
            "postgres://u:***@h/db".to_string()
        );
    }
}
