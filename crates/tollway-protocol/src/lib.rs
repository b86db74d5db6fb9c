//! Wire formats: OpenAI Chat Completions and Anthropic Messages (and OpenAI's Responses API as a
//! client surface: `responses`; Amazon Bedrock's Converse API as an upstream only: `bedrock`),
//! SSE and AWS event stream framing, and the conversions between them and `tollway-core`'s
//! canonical types.
//!
//! Each format module has the same eight functions, one per direction and shape:
//!
//! | | inbound (a client calls Tollway) | outbound (Tollway calls a provider) |
//! | --- | --- | --- |
//! | request | `decode_request` | `encode_request` |
//! | answer | `encode_response` | `decode_response` |
//! | stream | `StreamEncoder` | `StreamDecoder` |
//! | error | `encode_error` | `decode_error` |
//!
//! Decoders never panic on any input (the fuzz targets in `fuzz/` hold them to that) and answer bad
//! input with a `ProviderError` whose message names the offending field. Encoders refuse what the
//! target format cannot express with a 400 naming the feature and the target model, rather than
//! dropping it.

pub mod anthropic;
pub mod bedrock;
pub mod eventstream;
mod json;
pub mod openai;
pub mod responses;
mod scan;
pub mod sse;

pub use json::now_unix;
