//! Per-request knobs: parsed from the model name's query (`gpt-4.1?tokens=5`) and from a
//! `[mock k=v ...]` directive in the last user message (the directive wins).

use std::time::Duration;

/// An injected failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status and the provider's own error body.
    Status(u16),
    /// A 200 whose body (or one SSE `data:` line) is not valid JSON.
    Malformed,
    /// Cut the connection (streams: after `after` tokens).
    Reset,
    /// Never answer.
    Hang,
    /// Streams: an in-stream error event after `after` tokens.
    ErrorEvent,
    /// A 400 saying the prompt does not fit the model's context window.
    ContextLength,
    /// A 400 refusing the content under the provider's usage policy.
    ContentPolicy,
}

/// What a request asked the mock to do. `Default` is the plain, instant answer.
#[derive(Clone, Debug, Default)]
pub struct Knobs {
    pub ttft: Duration,
    pub tpt: Duration,
    pub tokens: Option<usize>,
    pub echo: bool,
    /// `tool=NAME`, or `tool=1` for the first tool.
    pub tool: Option<String>,
    /// `tools=N`: N parallel calls.
    pub tools: Option<usize>,
    pub cached: u64,
    pub cache_write: u64,
    pub reasoning: usize,
    pub stop: bool,
    pub fault: Option<Fault>,
    pub retry_after: Option<String>,
    pub after: usize,
    /// `usage=0`: report no usage (like some OpenAI-compatible servers).
    pub no_usage: bool,
}

/// The largest `tokens=` honoured, so a typo cannot make the mock allocate without bound.
const MAX_TOKENS: usize = 1_000_000;

impl Knobs {
    /// Knobs from the model's query, then the directive (if any) on top.
    pub fn from_request(model: &str, last_user_text: Option<&str>) -> Knobs {
        let mut k = Knobs::default();
        if let Some((_, query)) = model.split_once('?') {
            for pair in query.split('&') {
                k.apply_pair(pair);
            }
        }
        if let Some(text) = last_user_text {
            for directive in directives(text) {
                for pair in directive.split_whitespace() {
                    k.apply_pair(pair);
                }
            }
        }
        k
    }

    fn apply_pair(&mut self, pair: &str) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, "1"));
        self.apply(key.trim(), value.trim());
    }

    /// Sets one knob; unknown names and unparsable values are ignored.
    pub fn apply(&mut self, key: &str, value: &str) {
        let num = || value.parse::<u64>().ok();
        match key {
            "ttft_ms" => {
                if let Some(n) = num() {
                    self.ttft = Duration::from_millis(n);
                }
            }
            "tpt_ms" => {
                if let Some(n) = num() {
                    self.tpt = Duration::from_millis(n);
                }
            }
            "tokens" => {
                if let Some(n) = num() {
                    self.tokens = Some((n as usize).min(MAX_TOKENS));
                }
            }
            "echo" => self.echo = truthy(value),
            "tool" => self.tool = (!value.is_empty() && value != "0").then(|| value.to_string()),
            "tools" => {
                if let Some(n) = num() {
                    self.tools = Some((n as usize).min(64));
                }
            }
            "cached" => self.cached = num().unwrap_or(self.cached),
            "cache_write" => self.cache_write = num().unwrap_or(self.cache_write),
            "reasoning" => {
                if let Some(n) = num() {
                    self.reasoning = (n as usize).min(MAX_TOKENS);
                }
            }
            "stop" => self.stop = truthy(value),
            "after" => {
                if let Some(n) = num() {
                    self.after = n as usize;
                }
            }
            "retry_after" => self.retry_after = Some(value.to_string()),
            "usage" => self.no_usage = value == "0",
            "fault" => {
                self.fault = match value {
                    "malformed" => Some(Fault::Malformed),
                    "reset" => Some(Fault::Reset),
                    "hang" => Some(Fault::Hang),
                    "error_event" => Some(Fault::ErrorEvent),
                    "context_length" => Some(Fault::ContextLength),
                    "content_policy" => Some(Fault::ContentPolicy),
                    "" | "0" | "none" => None,
                    s => match s.parse::<u16>() {
                        Ok(code) if (400..=599).contains(&code) => Some(Fault::Status(code)),
                        _ => self.fault.take(),
                    },
                }
            }
            _ => {}
        }
    }
}

fn truthy(v: &str) -> bool {
    !matches!(v, "0" | "false" | "no" | "")
}

/// The model name without its `?query`.
pub fn base_model(model: &str) -> &str {
    model.split_once('?').map_or(model, |(m, _)| m)
}

/// The bodies of every `[mock ...]` directive in `text`.
fn directives(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || loop {
        let start = rest.find("[mock")?;
        let after = &rest[start + 5..];
        if !(after.starts_with(' ') || after.starts_with(']')) {
            rest = after;
            continue;
        }
        let end = after.find(']')?;
        let body = &after[..end];
        rest = &after[end + 1..];
        return Some(body);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_then_directive() {
        let k = Knobs::from_request(
            "gpt-4.1?ttft_ms=200&tokens=50&fault=429",
            Some("hello [mock tokens=7 echo=1 fault=reset after=3 bogus=1] there"),
        );
        assert_eq!(k.ttft, Duration::from_millis(200));
        assert_eq!(k.tokens, Some(7));
        assert!(k.echo);
        assert_eq!(k.fault, Some(Fault::Reset));
        assert_eq!(k.after, 3);
    }

    #[test]
    fn no_knobs() {
        let k = Knobs::from_request("gpt-4.1", Some("plain [mockery] text [mock]"));
        assert_eq!(k.tokens, None);
        assert_eq!(k.fault, None);
        assert_eq!(base_model("claude?x=1"), "claude");
        assert_eq!(base_model("claude"), "claude");
    }

    #[test]
    fn fault_values() {
        let k = Knobs::from_request("m?fault=529&retry_after=3", None);
        assert_eq!(k.fault, Some(Fault::Status(529)));
        assert_eq!(k.retry_after.as_deref(), Some("3"));
        let k = Knobs::from_request("m?fault=hang", Some("[mock fault=0]"));
        assert_eq!(k.fault, None);
        let k = Knobs::from_request("m?tool=get_weather&tools=2", None);
        assert_eq!(k.tool.as_deref(), Some("get_weather"));
        assert_eq!(k.tools, Some(2));
    }
}
