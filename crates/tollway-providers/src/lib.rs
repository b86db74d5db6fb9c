//! Outbound provider clients behind `tollway_core::Provider`: OpenAI and every OpenAI-compatible
//! server (vLLM, Ollama, llama.cpp, Mistral, Groq, DeepSeek, Together ...), Anthropic, and
//! Amazon Bedrock (its Converse API, signed with SigV4: [`aws`]).
//!
//! `ProviderConfig` is the closed set of provider kinds as the config file spells them; its one
//! `build()` turns an entry into an `Arc<dyn Provider>`. All kinds share one HTTP engine
//! ([`http::HttpProvider`]) parameterised by the wire format, so timeouts, pooling, streaming and
//! error classification are written once.

mod aws;
mod config;
mod http;
pub mod lanes;
mod pool;
mod proxy;
#[cfg(test)]
mod testing;

pub use config::{
    AnthropicConfig, BedrockConfig, MockConfig, MockFormat, OpenAiConfig, ProviderConfig,
    ProxySetting, Secret, Timeouts, Wire, MOCK_AWS_SECRET,
};
pub use http::{root_store, timed, HttpProvider, JsonPoster};
