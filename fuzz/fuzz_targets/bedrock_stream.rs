//! A Bedrock ConverseStream body, split at a point the first byte chooses. The second byte picks
//! how the rest is read: as raw bytes (the framing's length and checksum checks), or as events
//! separated by 0xFF (an event-type byte, then the JSON payload), framed here with valid
//! checksums so that the decoder sees arbitrary payloads in well-formed messages. The parser and
//! the decoder never panic, and every decoded event goes through both client stream encoders.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollway_protocol::bedrock::StreamDecoder;
use tollway_protocol::eventstream::{write_message, EventStreamParser};
use tollway_protocol::{anthropic, openai};

const TYPES: [&str; 8] = [
    "messageStart",
    "contentBlockStart",
    "contentBlockDelta",
    "contentBlockStop",
    "messageStop",
    "metadata",
    "exception",
    "unknownEvent",
];

fn frame(event_type: &str, payload: &[u8]) -> Vec<u8> {
    let message_type = if event_type == "exception" { "exception" } else { "event" };
    let headers = [
        (":event-type", event_type),
        (":message-type", message_type),
        (":exception-type", "throttlingException"),
    ];
    write_message(&headers, payload)
}

fuzz_target!(|data: &[u8]| {
    let [first, mode, rest @ ..] = data else { return };
    let body: Vec<u8> = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        rest.split(|&b| b == 0xFF)
            .filter_map(|piece| {
                let (&t, payload) = piece.split_first()?;
                Some(frame(TYPES[usize::from(t) % TYPES.len()], payload))
            })
            .flatten()
            .collect()
    };
    let cut = usize::from(*first) * body.len() / 256;
    let (a, b) = body.split_at(cut);
    let mut parser = EventStreamParser::new();
    let mut decoder = StreamDecoder::new("req", "fuzz/model");
    let mut canonical = Vec::new();
    'read: for chunk in [a, b] {
        let mut rest = chunk;
        loop {
            match parser.next(&mut rest) {
                Ok(Some(f)) => {
                    if decoder.feed_into(&f, &mut canonical).is_err() {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(_) => break 'read,
            }
        }
    }
    let _ = parser.finish();
    if let Ok(evs) = decoder.finish() {
        canonical.extend(evs);
    }
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
