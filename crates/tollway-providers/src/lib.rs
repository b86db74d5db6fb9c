//! Outbound provider clients behind `tollway_core::Provider`: OpenAI and every OpenAI-compatible
//! server (vLLM, Ollama, llama.cpp, Mistral, Groq, DeepSeek, Together ...), and Anthropic.
//!
//! `ProviderConfig` is the closed set of provider kinds as the config file spells them; its one
//! `build()` turns an entry into an `Arc<dyn Provider>`. Both kinds share one HTTP engine
//! ([`http::HttpProvider`]) parameterised by the wire format, so timeouts, pooling, streaming and
//! error classification are written once.

mod config;
mod http;
pub mod lanes;
mod pool;
mod proxy;
#[cfg(test)]
mod testing;

pub use config::{
    AnthropicConfig, MockConfig, MockFormat, OpenAiConfig, ProviderConfig, ProxySetting, Secret,
    Timeouts,
};
pub use http::{root_store, timed, HttpProvider, JsonPoster};
