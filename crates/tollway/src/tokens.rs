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
        .spawn(build_once);
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the tokenizer thread; will try again");
        LOADING.store(false, Ordering::Release);
    }
}

/// Builds the BPE on the calling thread unless it is built (one build at a time; a caller that
/// waited for another's finds it done); whether it is there.
fn build_once() -> bool {
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    if BPE.get().is_none() {
        match Bpe::o200k_base() {
            Ok(bpe) => {
                let _ = BPE.set(bpe);
            }
            Err(e) => tracing::error!(
                error = %e,
                "the o200k_base tokenizer could not be built; local token counts stay estimates from text length"
            ),
        }
    }
    BPE.get().is_some()
}

/// Waits until counts are exact, building the BPE on the blocking pool (off the serving lane)
/// if no one has yet: for callers whose answer is the count itself. False if it cannot be
/// built; counts are then estimates from the text's length.
pub async fn loaded() -> bool {
    BPE.get().is_some()
        || tokio::task::spawn_blocking(build_once)
            .await
            .unwrap_or(false)
}

/// Texts longer than this are counted on their first `EXACT_BYTES` and extrapolated by length.
/// Counting runs on the serving lane, at 20–30 ns a byte: this keeps a count under about 8 ms
/// however large the prompt or the answer (the body limit allows megabytes).
pub const EXACT_BYTES: usize = 256 << 10;

/// Tokens of a text: exact once the BPE is loaded (up to [`EXACT_BYTES`], extrapolated beyond),
/// until then [`rough`] (and the load starts).
pub fn count(text: &str) -> u64 {
    let head = &text[..floor_char_boundary(text, EXACT_BYTES)];
    scaled(head, text.len())
}

/// Tokens of `head` (counted), scaled to `total` bytes of text of which it is the start.
fn scaled(head: &str, total: usize) -> u64 {
    if head.is_empty() {
        return rough_len(total);
    }
    let n = match BPE.get() {
        Some(bpe) => bpe.count(head),
        None => {
            warm();
            return rough_len(total);
        }
    };
    if total > head.len() {
        (u128::from(n) * total as u128 / head.len() as u128) as u64
    } else {
        n
    }
}

/// The largest char boundary of `text` at or below `at`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    // a char is at most 4 bytes
    (at.saturating_sub(3)..=at)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

/// A text gathered for counting, piece by piece (a prompt's parts, a stream's deltas): its first
/// [`EXACT_BYTES`] kept, the length of all of it known.
#[derive(Default)]
pub struct Gathered {
    head: String,
    total: usize,
}

impl Gathered {
    pub fn push(&mut self, t: &str) {
        self.total += t.len();
        let room = EXACT_BYTES.saturating_sub(self.head.len());
        self.head.push_str(&t[..floor_char_boundary(t, room)]);
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Tokens of all of it: [`count`]'s for the whole text.
    pub fn count(&self) -> u64 {
        scaled(&self.head, self.total)
    }
}

/// About four bytes per token, rounded up: what `o200k_base` averages on English prose and code
/// (it gives more tokens per byte for most other scripts).
pub fn rough(text: &str) -> u64 {
    rough_len(text.len())
}

fn rough_len(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// Prompt tokens of a chat request: 3 per message plus its content, 3 to prime the reply (OpenAI's
/// published accounting), tool definitions as their JSON, 765 per image (a 1024×1024 high-detail
/// image; the real figure depends on the size, which a URL does not tell).
pub fn prompt(req: &ChatRequest) -> u64 {
    let mut total = 3u64;
    let mut text = Gathered::default();
    for m in &req.messages {
        total += 3;
        for p in &m.content {
            match p {
                Part::Text { text: t, .. } | Part::Thinking { text: t, .. } => {
                    text.push(t);
                    text.push("\n");
                }
                Part::Image(_) => total += 765,
                Part::ToolCall(c) => {
                    text.push(&c.name);
                    text.push(&c.arguments);
                }
                Part::ToolResult(r) => {
                    for q in &r.content {
                        match q {
                            Part::Text { text: t, .. } => text.push(t),
                            _ => total += 765,
                        }
                    }
                }
            }
        }
    }
    for t in &req.tools {
        text.push(&t.name);
        if let Some(d) = &t.description {
            text.push(d);
        }
        text.push(&t.parameters.to_string());
    }
    total + text.count()
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

        // beyond EXACT_BYTES: the head counted, the rest extrapolated by length
        let huge = "The quick brown fox jumps over the lazy dog. ".repeat(30_000); // 1.35 MB
        let exact = BPE.get().expect("loaded").count(&huge);
        let n = count(&huge);
        let head = &huge[..EXACT_BYTES];
        assert_eq!(
            n,
            BPE.get().expect("loaded").count(head) * huge.len() as u64 / EXACT_BYTES as u64
        );
        assert!(n.abs_diff(exact) * 100 < exact, "{n} against {exact}");
        let req = ChatRequest::simple("m", &huge);
        let p = prompt(&req);
        assert!(p.abs_diff(exact + 6) * 100 < exact, "{p} against {exact}");
        // a cut never splits a character
        let wide = "語".repeat(EXACT_BYTES); // 3 bytes each
        assert!(count(&wide) > 0);
        // 2^18 is not a multiple of 3: the last whole character ends one byte before
        assert_eq!(floor_char_boundary(&wide, EXACT_BYTES + 1), EXACT_BYTES - 1);
        assert_eq!(floor_char_boundary(&wide, EXACT_BYTES), EXACT_BYTES - 1);
        assert_eq!(floor_char_boundary(&wide, 4), 3);
        assert_eq!(floor_char_boundary("ab", 10), 2);
        let mut g = Gathered::default();
        g.push(&wide[..EXACT_BYTES - 1]);
        g.push("語語");
        assert_eq!(g.head.len(), EXACT_BYTES - 1);
        assert_eq!(g.total, EXACT_BYTES + 5);
        // one piece longer than the cap (an answer in one part) is cut, not dropped
        let mut g = Gathered::default();
        assert!(g.is_empty());
        g.push(&huge);
        assert_eq!(g.count(), count(&huge));
    }
}
