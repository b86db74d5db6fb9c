//! Any bytes as a client's Messages body: decoding never panics; whatever decodes can be encoded for
//! both upstream formats, and the Anthropic encoding decodes again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollway_protocol::{anthropic, openai};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = anthropic::decode_request(data) {
        if let Ok(body) = anthropic::encode_request(&req, "fuzz/model") {
            assert!(anthropic::decode_request(&body).is_ok(), "re-encoded body does not decode");
        }
        let _ = openai::encode_request(&req, "fuzz/model", openai::Dialect::default());
    }
});
