//! Any bytes as an upstream answer, embeddings answer or error body (OpenAI, Anthropic, Bedrock,
//! Gemini): decoding never panics, and a decoded answer encodes for both client APIs.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollway_protocol::{anthropic, bedrock, gemini, openai};

fuzz_target!(|data: &[u8]| {
    let status = if data.len() >= 2 {
        400 + u16::from_le_bytes([data[0], data[1]]) % 200
    } else {
        500
    };
    let _ = openai::decode_error(status, data, None);
    let _ = anthropic::decode_error(status, data, None);
    let _ = anthropic::decode_count_tokens_response(data);
    let _ = bedrock::decode_error(status, Some("ValidationException"), data, None);
    if let Ok(r) = bedrock::decode_response(data, "id", "fuzz/model") {
        let _ = openai::encode_response(&r);
        let _ = anthropic::encode_response(&r);
    }
    let _ = gemini::decode_error(status, data, None);
    // embeddings answers, for as many inputs as the first byte says
    let inputs = usize::from(data.first().copied().unwrap_or(1) % 4);
    for e in [
        bedrock::Embedder::TitanV1,
        bedrock::Embedder::TitanV2,
        bedrock::Embedder::TitanMultimodal,
        bedrock::Embedder::CohereV3,
        bedrock::Embedder::CohereV4,
    ] {
        let _ = bedrock::decode_embeddings_response(e, data, inputs, Some(7));
    }
    let _ = gemini::decode_embeddings_response(data, "fuzz/model", inputs, false);
    let _ = gemini::decode_embeddings_response(data, "fuzz/model", inputs, true);
    let _ = openai::decode_embeddings_response(data);
    if let Ok(r) = gemini::decode_response(data, "fuzz/model") {
        let _ = openai::encode_response(&r);
        let _ = anthropic::encode_response(&r);
    }
    if let Ok(r) = openai::decode_response(data) {
        let _ = openai::encode_response(&r);
        let _ = anthropic::encode_response(&r);
    }
    if let Ok(r) = anthropic::decode_response(data) {
        let _ = openai::encode_response(&r);
        let _ = anthropic::encode_response(&r);
    }
});
