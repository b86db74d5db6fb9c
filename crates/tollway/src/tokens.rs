//! Local token counts, for the rare answer whose provider reports no usage (some OpenAI-compatible
//! servers, a stream cut short): OpenAI's `o200k_base` BPE ([`bpe`]), with the chat format's
//! per-message overhead. Exact for OpenAI's current models; an estimate for others — and the ledger
//! marks every such cost as estimated.
//!
//! The BPE is loaded only once a count is first needed (most providers report usage, so most
//! gateways never load it), and then on a thread of its own: building it (parsing 200,000 tokens:
//! 27 ms here; `tiktoken-rs`, used before, took 0.16 s, and 0.6 s on a busy lane) on a serving
//! lane would stall every request on that lane for as long. Until it is ready, counts are
//! estimated from the text's length ([`rough`]).

mod bpe;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use bpe::Bpe;
use tollway_core::{ChatRequest, Part};

static BPE: OnceLock<Bpe> = OnceLock::new();
static LOADING: AtomicBool = AtomicBool::new(false);

/// Starts loading the BPE on a thread of its own, once; returns at once.
pub fn warm() {
    if BPE.get().is_some() || LOADING.swap(true, Ordering::AcqRel) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("tollway-tokenizer".into())
        .spawn(|| match Bpe::o200k_base() {
            Ok(bpe) => {
                let _ = BPE.set(bpe);
            }
            Err(e) => tracing::error!(
                error = %e,
                "the o200k_base tokenizer could not be built; local token counts stay estimates from text length"
            ),
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the tokenizer thread; will try again");
        LOADING.store(false, Ordering::Release);
    }
}

/// Tokens of a text: exact once the BPE is loaded, until then [`rough`] (and the load starts).
pub fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    match BPE.get() {
        Some(bpe) => bpe.count(text),
        None => {
            warm();
            rough(text)
        }
    }
}

/// About four bytes per token, rounded up: what `o200k_base` averages on English prose and code
/// (it gives more tokens per byte for most other scripts).
pub fn rough(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// Prompt tokens of a chat request: 3 per message plus its content, 3 to prime the reply (OpenAI's
/// published accounting), tool definitions as their JSON, 765 per image (a 1024×1024 high-detail
/// image; the real figure depends on the size, which a URL does not tell).
pub fn prompt(req: &ChatRequest) -> u64 {
    let mut total = 3u64;
    let mut text = String::new();
    for m in &req.messages {
        total += 3;
        for p in &m.content {
            match p {
                Part::Text { text: t, .. } | Part::Thinking { text: t, .. } => {
                    text.push_str(t);
                    text.push('\n');
                }
                Part::Image(_) => total += 765,
                Part::ToolCall(c) => {
                    text.push_str(&c.name);
                    text.push_str(&c.arguments);
                }
                Part::ToolResult(r) => {
                    for q in &r.content {
                        match q {
                            Part::Text { text: t, .. } => text.push_str(t),
                            _ => total += 765,
                        }
                    }
                }
            }
        }
    }
    for t in &req.tools {
        text.push_str(&t.name);
        if let Some(d) = &t.description {
            text.push_str(d);
        }
        text.push_str(&t.parameters.to_string());
    }
    total + count(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_estimated_until_the_tokenizer_is_ready_then_exact() {
        let long = "The quick brown fox jumps over the lazy dog. ".repeat(100);
        assert_eq!(count(""), 0);
        if BPE.get().is_none() {
            // not loaded yet (tests may share the process): an estimate, and the load starts
            assert_eq!(count(&long), rough(&long));
            assert_eq!(rough(&long), 1125);
            assert!(LOADING.load(Ordering::Acquire));
        }
        // the load finishes on its own thread
        let started = std::time::Instant::now();
        while BPE.get().is_none() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "the tokenizer never loaded"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(count("hello world"), 2);
        let n = count(&long);
        assert!((900..=1100).contains(&n), "{n}");
        let req = ChatRequest::simple("m", "hello world");
        assert_eq!(prompt(&req), 3 + 3 + count("hello world\n"));
    }
}
