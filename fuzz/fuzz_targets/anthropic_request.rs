//! Any bytes as a client's Messages body or token count: decoding never panics; whatever decodes
//! can be encoded for both upstream formats (and as a count), and the Anthropic encoding decodes
//! again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollway_protocol::{anthropic, bedrock, gemini, openai};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = anthropic::decode_request(data) {
        if let Ok(body) = anthropic::encode_request(&req, "fuzz/model") {
            assert!(anthropic::decode_request(&body).is_ok(), "re-encoded body does not decode");
        }
        let _ = openai::encode_request(&req, "fuzz/model", openai::Dialect::default());
        let _ = bedrock::encode_request_as(&req, "fuzz/model");
        let _ = gemini::encode_request_as(&req, "gemini-3-pro", "fuzz/model");
    }
    if let Ok(req) = anthropic::decode_count_tokens_request(data) {
        let target = tollway_core::Target {
            model: "model",
            stream: false,
        };
        let _ = anthropic::encode_count_tokens_request(&req, target, "fuzz/model");
    }
});
