//! The runtime built from a validated config: provider clients, the public model table, and the
//! plan of deployments for a requested model name. Built whole at start-up (and, later, on reload)
//! and then only read.

// foldhash: these maps are looked up several times per request, by keys the operator controls
use foldhash::HashMap;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollway_core::{Capabilities, ChatRequest, ErrorKind, Provider, ProviderError, Retry};
use tollway_providers::{ProviderConfig, Secret};

use crate::config::{default_capabilities, Config};
use crate::prices::ModelPrice;
use crate::routing::{self, Admission, Health, HealthPolicy, HealthRegistry, Strategy};

/// One place a request can be sent: a provider account and the upstream model id.
pub struct Deployment {
    pub provider: Arc<dyn Provider>,
    pub provider_name: String,
    /// The upstream model id.
    pub model: String,
    pub caps: Capabilities,
    /// `provider/model`, for headers, logs and errors.
    pub label: String,
    pub weight: u32,
    pub region: Option<String>,
    /// Capacity per minute (requests, tokens), enforced by this gateway.
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// Its tokens are counted per minute (it has a `tpm`, or its group is `lowest-usage`).
    pub count_tokens: bool,
    /// `deployment:LABEL`, the scope of that capacity in the health registry, built once.
    pub capacity_scope: String,
    /// Shared with every runtime that has this deployment (survives reloads).
    pub health: Arc<Health>,
    /// The circuit-breaker settings of the group this deployment was planned from.
    pub policy: HealthPolicy,
    /// `None`: the price is unknown (the ledger says so).
    pub price: Option<Arc<ModelPrice>>,
    /// `label` and `provider_name` as response header values, built once (`None`: not a valid
    /// header value, so the header is left out).
    pub label_header: Option<http::HeaderValue>,
    pub provider_header: Option<http::HeaderValue>,
}

/// The price lists to look a deployment up in, most specific first.
fn vendors<'a>(
    explicit: Option<&'a str>,
    account: &'a str,
    kind: &'a ProviderConfig,
) -> Vec<&'a str> {
    let mut v: Vec<&str> = explicit.into_iter().collect();
    v.push(account);
    v.push(match kind {
        ProviderConfig::Mock(_) => "mock",
        ProviderConfig::Anthropic(_) => "anthropic",
        ProviderConfig::Bedrock(_) => "bedrock",
        ProviderConfig::Azure(_) => "azure",
        ProviderConfig::Gemini(_) => "gemini",
        ProviderConfig::Vertex(_) => "vertex",
        ProviderConfig::Openai(_) | ProviderConfig::OpenaiCompatible(_) => "openai",
    });
    v
}

struct Model {
    strategy: Strategy,
    deployments: Vec<Arc<Deployment>>,
    fallbacks: Vec<String>,
    context_window_fallbacks: Vec<String>,
    content_policy_fallbacks: Vec<String>,
}

/// Per-request routing control, from the optional body fields `models` and `provider`
/// (shaped like OpenRouter's; see docs/config.md).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteOptions {
    /// Public model names to fall back to, in order, after the requested one.
    pub models: Vec<String>,
    /// Provider accounts to try first, in this order.
    pub order: Vec<String>,
    /// Only these provider accounts.
    pub only: Option<Vec<String>>,
    /// Never these provider accounts.
    pub ignore: Vec<String>,
    /// `false`: no fallback groups, neither configured nor from `models`.
    pub allow_fallbacks: bool,
    /// The calling key's allowed provider accounts (its policy; the request cannot widen it).
    pub policy_only: Option<Vec<String>>,
    /// The calling key's allowed regions: only deployments with one of these regions.
    pub policy_regions: Option<Vec<String>>,
}

/// The deployments to try for one request, in order.
pub struct Plan {
    pub tries: Vec<Arc<Deployment>>,
    /// When deployments were left out because they are cooling down: the shortest remaining wait.
    pub cooling: Option<Duration>,
}

pub struct Runtime {
    pub config: Config,
    providers: HashMap<String, (Arc<dyn Provider>, Capabilities)>,
    models: HashMap<String, Model>,
    /// Public model names, sorted (the config's models are a map), for `/v1/models`.
    model_names: Vec<String>,
    /// The embedded simulator serving `kind: mock` providers; stopped when the runtime drops.
    _mock: Option<tollway_mock::MockServer>,
    health: Arc<HealthRegistry>,
}

/// Each candidate's price (input + output per token, of its first priced deployment) relative
/// to the dearest candidate's; empty when any candidate has no price.
fn relative_costs(candidates: &[String], models: &HashMap<String, Model>) -> Vec<f64> {
    let prices: Option<Vec<f64>> = candidates
        .iter()
        .map(|c| {
            let m = models.get(c)?;
            let p = m.deployments.iter().find_map(|d| d.price.as_ref())?;
            Some(p.input.0 as f64 + p.output.0 as f64)
        })
        .collect();
    let Some(prices) = prices else {
        return Vec::new();
    };
    let max = prices.iter().copied().fold(0.0, f64::max);
    if max <= 0.0 {
        return vec![0.0; prices.len()];
    }
    prices.iter().map(|p| p / max).collect()
}

impl Runtime {
    /// Builds a runtime with fresh health state.
    pub async fn build(config: Config) -> Result<Runtime, String> {
        Self::build_with(config, Arc::new(HealthRegistry::default())).await
    }

    /// Builds a runtime that shares `health` (a reload keeps what the old runtime learnt).
    pub async fn build_with(
        config: Config,
        health: Arc<HealthRegistry>,
    ) -> Result<Runtime, String> {
        let mut mock = None;
        let mut providers = HashMap::default();
        for (name, pc) in &config.providers {
            let caps = default_capabilities(pc);
            let built = if matches!(pc, ProviderConfig::Mock(_)) {
                if mock.is_none() {
                    let server = tollway_mock::MockServer::start().await.map_err(|e| {
                        format!("provider `{name}`: could not start the simulator: {e}")
                    })?;
                    mock = Some(server);
                }
                let base = mock.as_ref().map(|m| m.url()).unwrap_or_default();
                match pc.resolve_mock(&base) {
                    Some(real) => real.build(name)?,
                    None => {
                        return Err(format!("provider `{name}`: could not start the simulator"))
                    }
                }
            } else {
                pc.build(name)?
            };
            providers.insert(name.clone(), (built, caps));
        }
        let mut models = HashMap::default();
        let mut model_names = Vec::new();
        for (name, mc) in &config.models {
            let mut deployments = Vec::new();
            for d in &mc.deployments {
                let Some((p, _)) = providers.get(&d.provider) else {
                    return Err(format!("model `{name}`: unknown provider `{}`", d.provider));
                };
                let label = format!("{}/{}", d.provider, d.model);
                let price = match &d.price {
                    Some(p) => Some(Arc::new(p.clone())),
                    None => config.providers.get(&d.provider).and_then(|pc| {
                        config
                            .prices
                            .table
                            .lookup_in(&vendors(d.vendor.as_deref(), &d.provider, pc), &d.model)
                            .map(|p| Arc::new(p.clone()))
                    }),
                };
                if price.is_none() && config.prices.require {
                    return Err(format!(
                        "model `{name}`: no price for deployment {label} (prices.require is on): add it under prices.models or give the deployment a price"
                    ));
                }
                deployments.push(Arc::new(Deployment {
                    region: d.region.clone(),
                    rpm: d.rpm,
                    tpm: d.tpm,
                    count_tokens: d.tpm.is_some() || mc.strategy == Strategy::LowestUsage,
                    price,
                    provider: p.clone(),
                    provider_name: d.provider.clone(),
                    model: d.model.clone(),
                    caps: d.capabilities,
                    health: health.get(&label),
                    label_header: http::HeaderValue::from_str(&label).ok(),
                    provider_header: http::HeaderValue::from_str(&d.provider).ok(),
                    capacity_scope: format!("deployment:{label}"),
                    label,
                    weight: d.weight,
                    policy: mc.health,
                }));
            }
            models.insert(
                name.clone(),
                Model {
                    strategy: mc.strategy,
                    deployments,
                    fallbacks: mc.fallbacks.clone(),
                    context_window_fallbacks: mc.context_window_fallbacks.clone(),
                    content_policy_fallbacks: mc.content_policy_fallbacks.clone(),
                },
            );
            model_names.push(name.clone());
        }
        model_names.extend(config.routers.keys().cloned());
        let mut config = config;
        for (name, r) in config.routers.iter_mut() {
            if let crate::rules::Router::Learned(l) = r {
                l.costs = relative_costs(&l.candidates, &models);
                if matches!(l.decide, crate::rules::Decide::CostWeight(_)) && l.costs.is_empty() {
                    return Err(format!(
                        "router `{name}`: cost_weight needs a price for every candidate ({}); add prices or use another knob",
                        l.candidates.join(", ")
                    ));
                }
            }
        }
        Ok(Runtime {
            config,
            providers,
            models,
            model_names,
            _mock: mock,
            health,
        })
    }

    /// When `req.model` names a rule-based router: the model group it chooses for this request,
    /// and the `x-tollway-route` text.
    pub fn route(
        &self,
        req: &ChatRequest,
        headers: &axum::http::HeaderMap,
        caller: crate::rules::Caller<'_>,
    ) -> Option<crate::rules::RouteChoice> {
        let router = self.config.routers.get(&req.model)?;
        Some(router.choose(&req.model, req, headers, caller))
    }

    /// Whether choosing for `model` runs a router model heavy enough to leave the async workers
    /// (the embedding router's encoder).
    pub fn route_is_heavy(&self, model: &str) -> bool {
        matches!(self.config.routers.get(model), Some(crate::rules::Router::Learned(l)) if l.model.heavy())
    }

    /// Whether `knob` (a virtual key's override) fits the learned router `router`.
    pub fn check_knob(&self, router: &str, knob: &serde_json::Value) -> Result<(), String> {
        crate::config::check_knob(&self.config.routers, router, knob)
    }

    /// The deployments of groups with active probes, and how often to probe each.
    pub fn probed(&self) -> Vec<(Arc<Deployment>, Duration)> {
        let mut out: Vec<(Arc<Deployment>, Duration)> = Vec::new();
        for (name, m) in &self.models {
            let Some(every) = self.config.models.get(name).and_then(|c| c.probe_interval) else {
                continue;
            };
            for d in &m.deployments {
                if !out.iter().any(|(x, _)| x.label == d.label) {
                    out.push((d.clone(), every));
                }
            }
        }
        out
    }

    pub fn health(&self) -> &Arc<HealthRegistry> {
        &self.health
    }

    pub fn master_key(&self) -> Option<&Secret> {
        self.config.server.master_key.as_ref()
    }

    /// The model groups (by name) and routers, as the admin API shows them: accounts by name,
    /// never their credentials.
    pub fn describe(&self) -> serde_json::Value {
        use serde_json::json;
        let models: Vec<serde_json::Value> = self
            .model_names
            .iter()
            .filter_map(|name| {
                let m = self.models.get(name)?;
                let cfg = self.config.models.get(name);
                let deployments: Vec<serde_json::Value> = m
                    .deployments
                    .iter()
                    .map(|d| {
                        json!({
                            "deployment": d.label,
                            "provider": d.provider_name,
                            "model": d.model,
                            "weight": d.weight,
                            "region": d.region,
                            "rpm": d.rpm,
                            "tpm": d.tpm,
                            "input_per_million": d.price.as_ref().map(|p| p.input.per_million()),
                            "output_per_million": d.price.as_ref().map(|p| p.output.per_million()),
                            "capabilities": {
                                "tools": d.caps.tools, "vision": d.caps.vision,
                                "json_schema": d.caps.json_schema, "embeddings": d.caps.embeddings,
                            },
                        })
                    })
                    .collect();
                Some(json!({
                    "name": name,
                    "strategy": m.strategy.as_str(),
                    "deployments": deployments,
                    "fallbacks": m.fallbacks,
                    "rpm": cfg.and_then(|c| c.rpm),
                    "tpm": cfg.and_then(|c| c.tpm),
                }))
            })
            .collect();
        let routers: Vec<serde_json::Value> = self
            .config
            .routers
            .iter()
            .map(|(name, r)| match r {
                crate::rules::Router::Learned(l) => {
                    json!({"name": name, "kind": "learned", "candidates": l.candidates})
                }
                crate::rules::Router::Rules(r) => json!({
                    "name": name,
                    "kind": "rules",
                    "rules": r.rules.iter().map(|x| json!({"name": x.name, "to": x.to})).collect::<Vec<_>>(),
                    "default": r.default,
                }),
            })
            .collect();
        json!({ "models": models, "routers": routers })
    }

    pub fn model_names(&self) -> &[String] {
        &self.model_names
    }

    /// The deployments to try for `name`, in order: the model's own (ordered by its strategy),
    /// then each fallback group's, each deployment once, honouring `opts` and leaving out
    /// deployments that are cooling down. Unknown names are a 404 naming the model.
    pub fn plan(&self, name: &str, opts: &RouteOptions) -> Result<Plan, ProviderError> {
        let now = Instant::now();
        // borrowed from the model groups; owned only for a direct `provider/model`
        let mut groups: Vec<(Strategy, Cow<'_, [Arc<Deployment>]>)> = Vec::with_capacity(1);
        if let Some(m) = self.models.get(name) {
            groups.push((m.strategy, Cow::Borrowed(&m.deployments[..])));
            if opts.allow_fallbacks {
                for f in m.fallbacks.iter() {
                    if let Some(fm) = self.models.get(f) {
                        groups.push((fm.strategy, Cow::Borrowed(&fm.deployments[..])));
                    }
                }
            }
        } else if let Some(d) = self
            .config
            .server
            .direct_models
            .then(|| self.direct(name))
            .flatten()
        {
            groups.push((Strategy::Failover, Cow::Owned(vec![d])));
        } else {
            return Err(unknown_model(name));
        }
        if opts.allow_fallbacks {
            for extra in &opts.models {
                match self.models.get(extra) {
                    Some(m) => groups.push((m.strategy, Cow::Borrowed(&m.deployments[..]))),
                    None => match self
                        .config
                        .server
                        .direct_models
                        .then(|| self.direct(extra))
                        .flatten()
                    {
                        Some(d) => groups.push((Strategy::Failover, Cow::Owned(vec![d]))),
                        None => return Err(unknown_model(extra).with_param("models")),
                    },
                }
            }
        }
        let allowed = |d: &Deployment| {
            opts.only
                .as_ref()
                .is_none_or(|only| only.iter().any(|p| p == &d.provider_name))
                && opts
                    .policy_only
                    .as_ref()
                    .is_none_or(|only| only.iter().any(|p| p == &d.provider_name))
                && !opts.ignore.iter().any(|p| p == &d.provider_name)
                && opts.policy_regions.as_ref().is_none_or(|regions| {
                    d.region
                        .as_ref()
                        .is_some_and(|r| regions.iter().any(|x| x == r))
                })
        };
        let mut tries: Vec<Arc<Deployment>> =
            Vec::with_capacity(groups.first().map_or(0, |(_, ds)| ds.len()));
        let mut cooling: Option<Duration> = None;
        let mut excluded = 0usize;
        for (strategy, deployments) in &groups {
            let candidates: Vec<&Arc<Deployment>> = deployments
                .iter()
                .filter(|d| {
                    let ok = allowed(d);
                    excluded += usize::from(!ok);
                    ok
                })
                .collect();
            let mut available = 0;
            for d in &candidates {
                if let Admission::No(wait) = d.health.peek(now) {
                    cooling = Some(cooling.map_or(wait, |c| c.min(wait)));
                } else {
                    available += 1;
                }
            }
            if let [d] = candidates[..] {
                // one deployment: nothing to order (the usual group)
                if available == 1 && !tries.iter().any(|t| t.label == d.label) {
                    tries.push(d.clone());
                }
                continue;
            }
            let items: Vec<(u32, &Health)> = candidates
                .iter()
                .map(|d| (d.weight, d.health.as_ref()))
                .collect();
            let keys: Vec<u64> = match strategy {
                Strategy::LowestCost => candidates
                    .iter()
                    .map(|d| {
                        d.price
                            .as_ref()
                            .map_or(u64::MAX, |p| p.input.0.saturating_add(p.output.0))
                    })
                    .collect(),
                Strategy::LowestUsage => candidates
                    .iter()
                    .map(|d| {
                        let used = self.health.capacity.tokens_used(&d.capacity_scope, now);
                        // parts per million of its quota, or the tokens themselves
                        d.tpm.filter(|t| *t > 0).map_or(used, |t| {
                            u64::try_from(u128::from(used) * 1_000_000 / u128::from(t))
                                .unwrap_or(u64::MAX)
                        })
                    })
                    .collect(),
                _ => Vec::new(),
            };
            for i in routing::order_by(*strategy, &items, &keys, now) {
                let d = candidates[i];
                if !tries.iter().any(|t| t.label == d.label) {
                    tries.push(d.clone());
                }
            }
        }
        if !opts.order.is_empty() {
            let rank = |d: &Arc<Deployment>| {
                opts.order
                    .iter()
                    .position(|p| p == &d.provider_name)
                    .unwrap_or(opts.order.len())
            };
            tries.sort_by_key(rank); // stable: the strategy's order holds within a rank
        }
        if tries.is_empty() && cooling.is_none() && excluded > 0 {
            return Err(ProviderError::new(
                ErrorKind::NotFound,
                format!(
                    "No deployment of `{name}` is allowed by the request's provider restrictions."
                ),
            )
            .with_param("provider"));
        }
        Ok(Plan { tries, cooling })
    }

    /// The models to try when `name`'s answer failed with `kind` (context window or content
    /// policy), per its `context_window_fallbacks` / `content_policy_fallbacks`.
    pub fn special_fallbacks(&self, name: &str, kind: ErrorKind) -> &[String] {
        let Some(m) = self.models.get(name) else {
            return &[];
        };
        match kind {
            ErrorKind::ContextWindowExceeded => &m.context_window_fallbacks,
            ErrorKind::ContentPolicy => &m.content_policy_fallbacks,
            _ => &[],
        }
    }

    /// The error when every deployment of a model is cooling down.
    pub fn all_cooling(name: &str, wait: Duration) -> ProviderError {
        ProviderError::new(
            ErrorKind::Overloaded,
            format!(
                "Every deployment of `{name}` is cooling down after upstream failures; retry in {} s.",
                wait.as_secs_f64().ceil() as u64
            ),
        )
        .with_retry(Retry::After(wait))
    }

    /// `provider/model`, or a bare well-known name (`gpt-*`, `o3*`, `claude-*`, `gemini-*`) when
    /// exactly that provider account is configured.
    fn direct(&self, name: &str) -> Option<Arc<Deployment>> {
        let (provider, model) = match name.split_once('/') {
            Some((p, m)) if self.providers.contains_key(p) && !m.is_empty() => (p, m),
            _ => {
                let p = if name.starts_with("claude-") {
                    "anthropic"
                } else if name.starts_with("gemini-") {
                    "gemini"
                } else if ["gpt-", "o1", "o3", "o4", "chatgpt-"]
                    .iter()
                    .any(|pre| name.starts_with(pre))
                {
                    "openai"
                } else {
                    return None;
                };
                (p, name)
            }
        };
        let (p, caps) = self.providers.get(provider)?;
        let label = format!("{provider}/{model}");
        let price = self.config.providers.get(provider).and_then(|pc| {
            self.config
                .prices
                .table
                .lookup_in(&vendors(None, provider, pc), model)
                .map(|p| Arc::new(p.clone()))
        });
        Some(Arc::new(Deployment {
            region: None,
            rpm: None,
            tpm: None,
            count_tokens: false,
            price,
            provider: p.clone(),
            provider_name: provider.to_string(),
            model: model.to_string(),
            caps: *caps,
            health: self.health.get(&label),
            label_header: http::HeaderValue::from_str(&label).ok(),
            provider_header: http::HeaderValue::from_str(provider).ok(),
            capacity_scope: format!("deployment:{label}"),
            label,
            weight: 1,
            policy: HealthPolicy::default(),
        }))
    }
}

fn unknown_model(name: &str) -> ProviderError {
    ProviderError::new(
        ErrorKind::NotFound,
        format!("The model `{name}` does not exist or you do not have access to it."),
    )
    .with_param("model")
}
