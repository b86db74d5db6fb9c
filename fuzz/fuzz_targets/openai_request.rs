//! Any bytes as a client's Chat Completions body: decoding never panics; whatever decodes can be
//! encoded for both upstream formats, and the OpenAI encoding decodes again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollway_protocol::{anthropic, openai};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = openai::decode_request(data) {
        for legacy in [false, true] {
            let dialect = openai::Dialect { legacy_max_tokens: legacy };
            if let Ok(body) = openai::encode_request(&req, "fuzz/model", dialect) {
                assert!(openai::decode_request(&body).is_ok(), "re-encoded body does not decode");
            }
        }
        let _ = anthropic::encode_request(&req, "fuzz/model");
    }
});
