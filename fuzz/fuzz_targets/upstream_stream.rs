//! Any bytes as an upstream SSE body, split at a point the first byte chooses: the SSE parser and
//! the OpenAI, Anthropic and Gemini stream decoders never panic, and every decoded event goes through both client encoders.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollway_protocol::sse::SseParser;
use tollway_protocol::{anthropic, gemini, openai};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let cut = usize::from(first) % (rest.len() + 1);
    let (a, b) = rest.split_at(cut);
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for chunk in [a, b] {
        match parser.push(chunk) {
            Ok(evs) => events.extend(evs),
            Err(_) => return,
        }
    }
    if let Ok(Some(ev)) = parser.finish() {
        events.push(ev);
    }
    let mut od = openai::StreamDecoder::new();
    let mut ad = anthropic::StreamDecoder::new();
    let mut gd = gemini::StreamDecoder::new("fuzz/model");
    let mut canonical = Vec::new();
    for ev in &events {
        let mut out = Vec::new();
        if gd.feed_into(ev, &mut out).is_ok() {
            canonical.extend(out);
        }
        if let Ok(evs) = od.feed(ev) {
            canonical.extend(evs);
        }
        if let Ok(evs) = ad.feed(ev) {
            canonical.extend(evs);
        }
    }
    let _ = od.finish();
    let _ = ad.finish();
    let _ = gd.finish();
    let mut out = Vec::new();
    let mut oe = openai::StreamEncoder::new(true);
    let mut ae = anthropic::StreamEncoder::new(true);
    for ev in &canonical {
        oe.push(ev, &mut out);
        ae.push(ev, &mut out);
    }
    oe.finish(&mut out);
    ae.finish(&mut out);
});
