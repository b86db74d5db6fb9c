//! Any bytes as a client's Chat Completions or Responses body: decoding never panics; whatever
//! decodes can be encoded for every upstream format, and the Chat Completions encoding decodes
//! again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollway_protocol::{anthropic, bedrock, gemini, openai, responses};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = openai::decode_request(data) {
        for legacy in [false, true] {
            let dialect = openai::Dialect { legacy_max_tokens: legacy };
            if let Ok(body) = openai::encode_request(&req, "fuzz/model", dialect) {
                assert!(openai::decode_request(&body).is_ok(), "re-encoded body does not decode");
            }
        }
        let _ = anthropic::encode_request(&req, "fuzz/model");
        let _ = bedrock::encode_request_as(&req, "fuzz/model");
        let _ = gemini::encode_request_as(&req, "gemini-3-pro", "fuzz/model");
    }
    if let Ok(req) = responses::decode_request(data) {
        let _ = openai::encode_request(&req, "fuzz/model", openai::Dialect::default());
        let _ = anthropic::encode_request(&req, "fuzz/model");
    }
});
