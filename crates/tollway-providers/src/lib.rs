//! Outbound provider clients behind `tollway_core::Provider`: OpenAI and every OpenAI-compatible
//! server (vLLM, Ollama, llama.cpp, Mistral, Groq, DeepSeek, Together ...), Azure OpenAI,
//! Anthropic, Amazon Bedrock (its Converse API, signed with SigV4: [`aws`]), Google's Gemini API,
//! and Vertex AI (Gemini and Claude); OAuth access tokens for Vertex AI and Azure OpenAI: [`oauth`].
//!
//! `ProviderConfig` is the closed set of provider kinds as the config file spells them; its one
//! `build()` turns an entry into an `Arc<dyn Provider>`. All kinds share one HTTP engine
//! ([`http::HttpProvider`]) parameterised by the wire format, so timeouts, pooling, streaming and
//! error classification are written once.

mod aws;
mod config;
mod http;
pub mod lanes;
mod oauth;
mod pool;
mod proxy;
#[cfg(test)]
mod testing;

pub use config::{
    AnthropicConfig, AzureConfig, BedrockConfig, GeminiConfig, MockConfig, MockFormat,
    OpenAiConfig, ProviderConfig, ProxySetting, Secret, Timeouts, VertexConfig, Wire,
    MOCK_AWS_SECRET, MOCK_GCP_TOKEN,
};
pub use http::{root_store, timed, HttpProvider, JsonPoster, TRACEPARENT};
