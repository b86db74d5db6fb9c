//! Local token counts, for the rare answer whose provider reports no usage (some OpenAI-compatible
//! servers, a stream cut short): OpenAI's `o200k_base` BPE (via `tiktoken-rs`), with the chat
//! format's per-message overhead. Exact for OpenAI's current models; an estimate for others — and
//! the ledger marks every such cost as estimated. Loaded on first use, never on the hot path.

use tollway_core::{ChatRequest, Part};

/// Tokens of a text.
pub fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    tiktoken_rs::o200k_base_singleton()
        .encode_with_special_tokens(text)
        .len() as u64
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
    fn counts_match_the_o200k_tokenizer() {
        assert_eq!(count(""), 0);
        assert_eq!(count("hello world"), 2);
        let long = "The quick brown fox jumps over the lazy dog. ".repeat(100);
        let n = count(&long);
        assert!((900..=1100).contains(&n), "{n}");
        let req = ChatRequest::simple("m", "hello world");
        assert_eq!(prompt(&req), 3 + 3 + count("hello world\n"));
    }
}
