//! Wire formats: OpenAI Chat Completions and Anthropic Messages (and OpenAI's Responses API as a
//! client surface: `responses`; Amazon Bedrock's Converse API and Google's Gemini API as upstreams
//! only: `bedrock`, `gemini`),
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
pub mod gemini;
mod json;
pub mod openai;
pub mod responses;
mod scan;
pub mod sse;

pub use json::{now_unix, put_str};

/// `s` as one URL path segment: everything outside the unreserved characters percent-encoded
/// (a Bedrock model id's `:`, an ARN's `/`, a simulated model's `?`).
pub fn path_segment(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(HEX[(b >> 4) as usize]));
            out.push(char::from(HEX[(b & 15) as usize]));
        }
    }
    out
}

/// The 400 for a field of the client's API (`family`) that the target `label` cannot carry.
pub(crate) fn unsupported_field(
    family: tollway_core::ApiFamily,
    field: &str,
    label: tollway_core::Label<'_>,
) -> tollway_core::ProviderError {
    let api = match family {
        tollway_core::ApiFamily::OpenAi => "OpenAI",
        tollway_core::ApiFamily::Anthropic => "Anthropic",
    };
    tollway_core::ProviderError::unsupported(&format!("the {api} parameter `{field}`"), label)
        .with_param(field)
}
