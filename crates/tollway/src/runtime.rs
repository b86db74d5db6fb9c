//! The runtime built from a validated config: provider clients, the public model table, and the
//! plan of deployments for a requested model name. Built whole at start-up (and, later, on reload)
//! and then only read.

use std::collections::HashMap;
use std::sync::Arc;

use tollway_core::{Capabilities, Provider, ProviderError};
use tollway_providers::{ProviderConfig, Secret};

use crate::config::{default_capabilities, Config};

/// One place a request can be sent: a provider account and the upstream model id.
pub struct Deployment {
    pub provider: Arc<dyn Provider>,
    pub provider_name: String,
    /// The upstream model id.
    pub model: String,
    pub caps: Capabilities,
    /// `provider/model`, for headers, logs and errors.
    pub label: String,
}

struct Model {
    deployments: Vec<Arc<Deployment>>,
    fallbacks: Vec<String>,
}

pub struct Runtime {
    pub config: Config,
    providers: HashMap<String, (Arc<dyn Provider>, Capabilities)>,
    models: HashMap<String, Model>,
    /// Public model names in config order, for `/v1/models`.
    model_names: Vec<String>,
    /// The embedded simulator serving `kind: mock` providers; stopped when the runtime drops.
    _mock: Option<tollway_mock::MockServer>,
}

impl Runtime {
    pub async fn build(config: Config) -> Result<Runtime, String> {
        let mut mock = None;
        let mut providers = HashMap::new();
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
        let mut models = HashMap::new();
        let mut model_names = Vec::new();
        for (name, mc) in &config.models {
            let mut deployments = Vec::new();
            for d in &mc.deployments {
                let Some((p, _)) = providers.get(&d.provider) else {
                    return Err(format!("model `{name}`: unknown provider `{}`", d.provider));
                };
                deployments.push(Arc::new(Deployment {
                    provider: p.clone(),
                    provider_name: d.provider.clone(),
                    model: d.model.clone(),
                    caps: d.capabilities,
                    label: format!("{}/{}", d.provider, d.model),
                }));
            }
            models.insert(
                name.clone(),
                Model {
                    deployments,
                    fallbacks: mc.fallbacks.clone(),
                },
            );
            model_names.push(name.clone());
        }
        Ok(Runtime {
            config,
            providers,
            models,
            model_names,
            _mock: mock,
        })
    }

    pub fn master_key(&self) -> Option<&Secret> {
        self.config.server.master_key.as_ref()
    }

    pub fn model_names(&self) -> &[String] {
        &self.model_names
    }

    /// The deployments to try for `name`, in order: the model's own, then its fallbacks' (each
    /// deployment once). Unknown names are a 404 naming the model.
    pub fn plan(&self, name: &str) -> Result<Vec<Arc<Deployment>>, ProviderError> {
        if let Some(m) = self.models.get(name) {
            let mut out: Vec<Arc<Deployment>> = m.deployments.clone();
            for f in &m.fallbacks {
                if let Some(fm) = self.models.get(f) {
                    for d in &fm.deployments {
                        if !out.iter().any(|x| Arc::ptr_eq(x, d)) {
                            out.push(d.clone());
                        }
                    }
                }
            }
            return Ok(out);
        }
        if self.config.server.direct_models {
            if let Some(d) = self.direct(name) {
                return Ok(vec![d]);
            }
        }
        Err(ProviderError::new(
            tollway_core::ErrorKind::NotFound,
            format!("The model `{name}` does not exist or you do not have access to it."),
        )
        .with_param("model"))
    }

    /// `provider/model`, or a bare well-known name (`gpt-*`, `o3*`, `claude-*`) when exactly that
    /// provider account is configured.
    fn direct(&self, name: &str) -> Option<Arc<Deployment>> {
        let (provider, model) = match name.split_once('/') {
            Some((p, m)) if self.providers.contains_key(p) && !m.is_empty() => (p, m),
            _ => {
                let p = if name.starts_with("claude-") {
                    "anthropic"
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
        Some(Arc::new(Deployment {
            provider: p.clone(),
            provider_name: provider.to_string(),
            model: model.to_string(),
            caps: *caps,
            label: format!("{provider}/{model}"),
        }))
    }
}
