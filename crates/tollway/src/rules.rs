//! Rule-based routers: a public model name whose requests go to one of several model groups,
//! chosen by the first rule whose conditions all hold (request metadata headers, prompt size,
//! tools, images), else the router's default. The choice is shown in `x-tollway-route`.

use axum::http::HeaderMap;
use serde::Deserialize;
use tollway_core::{ChatRequest, Part};

/// One router as the config file spells it (`routers.NAME`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRouter {
    pub kind: String,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    pub default: Option<String>,
    /// `kind: learned`: the model groups to choose between, strongest first.
    #[serde(default)]
    pub candidates: Vec<String>,
    /// `kind: learned`: the share of requests to send to the strong candidate...
    #[serde(default)]
    pub strong_share: Option<f64>,
    /// ... or, with more than two candidates, the share for each but the last (strongest first;
    /// the last candidate takes the rest).
    #[serde(default)]
    pub shares: Option<Vec<f64>>,
    /// ... or the score at or above which a request goes to it.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// `kind: learned`: a trained model file (`tollway router train`); default: the built-in one.
    #[serde(default)]
    pub model_file: Option<String>,
    /// `kind: learned`: store each routed prompt with its score and choice, so that client
    /// feedback can retrain the router (`tollway router train --feedback-db`). Off by default:
    /// prompts are user data.
    #[serde(default)]
    pub log_prompts: bool,
}

/// What a router chose for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteChoice {
    pub target: String,
    /// The `x-tollway-route` text.
    pub why: String,
    /// A learned router that logs prompts: (the scored text, score, sent to the strong model).
    pub log: Option<(String, f64, bool)>,
}

/// A learned router: a calibrated score of how much a prompt needs the strong model, against a
/// threshold (fixed, or set for a target share of strong calls).
#[derive(Debug, Clone)]
pub struct LearnedRouter {
    pub model: std::sync::Arc<tollway_engine::router::LexicalRouter>,
    /// Strongest first.
    pub candidates: Vec<String>,
    /// One per candidate but the last, non-increasing: a score at or above `thresholds[i]` (and
    /// below the ones before) goes to `candidates[i]`.
    pub thresholds: Vec<f64>,
    pub log_prompts: bool,
}

impl PartialEq for LearnedRouter {
    fn eq(&self, other: &Self) -> bool {
        self.candidates == other.candidates && self.thresholds == other.thresholds
    }
}

/// The text a learned router scores: the last user turn's text (what the user is asking now).
pub fn routed_text(req: &ChatRequest) -> String {
    let Some(m) = req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == tollway_core::Role::User)
    else {
        return String::new();
    };
    let mut out = String::new();
    for p in &m.content {
        if let Part::Text { text, .. } = p {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(text);
        }
    }
    out
}

impl LearnedRouter {
    pub fn choose(&self, router: &str, req: &ChatRequest) -> RouteChoice {
        let text = routed_text(req);
        let score = self.model.score(&text);
        let tier = self
            .thresholds
            .iter()
            .position(|t| score >= *t)
            .unwrap_or(self.thresholds.len());
        let target = &self.candidates[tier.min(self.candidates.len() - 1)];
        // the threshold that decided: the one it cleared, or the last one it missed
        let threshold = self
            .thresholds
            .get(tier)
            .or(self.thresholds.last())
            .copied()
            .unwrap_or(0.0);
        RouteChoice {
            target: target.clone(),
            why: format!(
                "router={router}; kind=learned; score={score:.4}; threshold={threshold:.4}; target={target}"
            ),
            log: self.log_prompts.then_some((text, score, tier == 0)),
        }
    }
}

/// A router of either kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Router {
    Rules(RulesRouter),
    Learned(LearnedRouter),
}

impl Router {
    pub fn choose(
        &self,
        name: &str,
        req: &ChatRequest,
        headers: &HeaderMap,
        caller: Caller<'_>,
    ) -> RouteChoice {
        match self {
            Router::Rules(r) => {
                let (target, why) = r.choose(name, req, headers, caller);
                RouteChoice {
                    target,
                    why,
                    log: None,
                }
            }
            Router::Learned(l) => l.choose(name, req),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub when: Conditions,
    pub to: String,
}

/// Every condition given must hold (an empty set always holds).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// Request headers that must have exactly these values (names are case-insensitive),
    /// e.g. `x-tollway-tier: batch`.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Estimated prompt tokens at least / below this many.
    #[serde(default)]
    pub min_prompt_tokens: Option<u64>,
    #[serde(default)]
    pub max_prompt_tokens: Option<u64>,
    #[serde(default)]
    pub has_tools: Option<bool>,
    #[serde(default)]
    pub has_images: Option<bool>,
    /// The caller's team is one of these.
    #[serde(default)]
    pub teams: Vec<String>,
    /// The caller's virtual key id is one of these.
    #[serde(default)]
    pub keys: Vec<String>,
}

/// Who is calling, for rule conditions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    pub key: Option<&'a str>,
    pub team: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub when: Conditions,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RulesRouter {
    pub rules: Vec<Rule>,
    pub default: String,
}

/// A rough prompt-size estimate (about four characters a token, plus a few per message and a
/// flat amount per image), enough to route by; not used for billing.
pub fn estimate_prompt_tokens(req: &ChatRequest) -> u64 {
    let mut chars = 0usize;
    let mut extra = 0u64;
    let count = |p: &Part, chars: &mut usize, extra: &mut u64| match p {
        Part::Text { text, .. } => *chars += text.len(),
        Part::Image(_) => *extra += 765,
        Part::ToolCall(c) => *chars += c.name.len() + c.arguments.len(),
        Part::Thinking { text, .. } => *chars += text.len(),
        Part::ToolResult(_) => {}
    };
    for m in &req.messages {
        extra += 4;
        for p in &m.content {
            if let Part::ToolResult(r) = p {
                for q in &r.content {
                    count(q, &mut chars, &mut extra);
                }
            } else {
                count(p, &mut chars, &mut extra);
            }
        }
    }
    for t in &req.tools {
        chars += t.name.len() + t.description.as_ref().map_or(0, String::len);
        chars += t.parameters.to_string().len();
    }
    (chars as u64).div_ceil(4) + extra
}

/// An upper bound on a request's prompt tokens, for budget reservations: no tokenizer makes a
/// token of less than one byte, so the text's bytes (plus per-message overhead, tool definitions
/// and a generous allowance per image) bound the count from above.
pub fn prompt_token_bound(req: &ChatRequest) -> u64 {
    let mut total = 16u64;
    let mut part = |p: &Part| match p {
        Part::Text { text, .. } | Part::Thinking { text, .. } => total += text.len() as u64,
        Part::Image(_) => total += 2_000,
        Part::ToolCall(c) => total += (c.id.len() + c.name.len() + c.arguments.len()) as u64 + 8,
        Part::ToolResult(r) => {
            total += r.tool_call_id.len() as u64 + 8;
            for q in &r.content {
                match q {
                    Part::Text { text, .. } => total += text.len() as u64,
                    _ => total += 2_000,
                }
            }
        }
    };
    for m in &req.messages {
        for p in &m.content {
            part(p);
        }
    }
    total += 8 * req.messages.len() as u64;
    for t in &req.tools {
        total += (t.name.len() + t.description.as_ref().map_or(0, String::len)) as u64;
        total += t.parameters.to_string().len() as u64 + 16;
    }
    total
}

impl Conditions {
    fn holds(
        &self,
        req: &ChatRequest,
        headers: &HeaderMap,
        tokens: u64,
        caller: Caller<'_>,
    ) -> bool {
        let listed = |list: &[String], v: Option<&str>| {
            list.is_empty() || v.is_some_and(|v| list.iter().any(|x| x == v))
        };
        if !listed(&self.teams, caller.team) || !listed(&self.keys, caller.key) {
            return false;
        }
        self.headers.iter().all(|(k, v)| {
            headers
                .get(k.as_str())
                .and_then(|h| h.to_str().ok())
                .is_some_and(|h| h == v)
        }) && self.min_prompt_tokens.is_none_or(|n| tokens >= n)
            && self.max_prompt_tokens.is_none_or(|n| tokens < n)
            && self.has_tools.is_none_or(|b| b != req.tools.is_empty())
            && self.has_images.is_none_or(|b| b == req.has_images())
    }
}

impl RulesRouter {
    /// The target model group and the `x-tollway-route` text saying why.
    pub fn choose(
        &self,
        router: &str,
        req: &ChatRequest,
        headers: &HeaderMap,
        caller: Caller<'_>,
    ) -> (String, String) {
        let tokens = estimate_prompt_tokens(req);
        for r in &self.rules {
            if r.when.holds(req, headers, tokens, caller) {
                return (
                    r.to.clone(),
                    format!(
                        "router={router}; rule={}; target={}; prompt_tokens~{tokens}",
                        r.name, r.to
                    ),
                );
            }
        }
        (
            self.default.clone(),
            format!(
                "router={router}; rule=default; target={}; prompt_tokens~{tokens}",
                self.default
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollway_core::{ImageSource, Message, Role, ToolDef};

    fn router() -> RulesRouter {
        RulesRouter {
            rules: vec![
                Rule {
                    name: "batch".into(),
                    when: Conditions {
                        headers: [("x-tier".to_string(), "batch".to_string())].into(),
                        ..Conditions::default()
                    },
                    to: "cheap".into(),
                },
                Rule {
                    name: "long".into(),
                    when: Conditions {
                        min_prompt_tokens: Some(1000),
                        ..Conditions::default()
                    },
                    to: "long-context".into(),
                },
                Rule {
                    name: "vision".into(),
                    when: Conditions {
                        has_images: Some(true),
                        ..Conditions::default()
                    },
                    to: "vision".into(),
                },
                Rule {
                    name: "agent".into(),
                    when: Conditions {
                        has_tools: Some(true),
                        max_prompt_tokens: Some(1000),
                        ..Conditions::default()
                    },
                    to: "tools".into(),
                },
            ],
            default: "standard".into(),
        }
    }

    #[test]
    fn the_first_matching_rule_wins_else_the_default() {
        let r = router();
        let none = HeaderMap::new();
        let plain = ChatRequest::simple("auto", "hello");
        assert_eq!(
            r.choose("auto", &plain, &none, Caller::default()).0,
            "standard"
        );
        let mut batch = HeaderMap::new();
        batch.insert("x-tier", "batch".parse().unwrap());
        let (to, why) = r.choose("auto", &plain, &batch, Caller::default());
        assert_eq!(to, "cheap");
        assert!(
            why.starts_with("router=auto; rule=batch; target=cheap"),
            "{why}"
        );
        let long = ChatRequest::simple("auto", "x".repeat(8000));
        assert_eq!(
            r.choose("auto", &long, &none, Caller::default()).0,
            "long-context"
        );
        let mut img = ChatRequest::simple("auto", "look");
        img.messages.push(Message {
            role: Role::User,
            content: vec![Part::Image(ImageSource::Url("https://x/y.png".into()))],
        });
        assert_eq!(r.choose("auto", &img, &none, Caller::default()).0, "vision");
        let mut tools = ChatRequest::simple("auto", "call it");
        tools.tools.push(ToolDef {
            name: "f".into(),
            description: None,
            parameters: serde_json::json!({"type": "object"}),
            strict: None,
        });
        assert_eq!(
            r.choose("auto", &tools, &none, Caller::default()).0,
            "tools"
        );
    }

    #[test]
    fn rules_can_match_the_callers_team_and_key() {
        let r = RulesRouter {
            rules: vec![Rule {
                name: "research".into(),
                when: Conditions {
                    teams: vec!["research".into()],
                    ..Conditions::default()
                },
                to: "strong".into(),
            }],
            default: "cheap".into(),
        };
        let req = ChatRequest::simple("auto", "hi");
        let none = HeaderMap::new();
        let research = Caller {
            key: Some("key_1"),
            team: Some("research"),
        };
        assert_eq!(r.choose("auto", &req, &none, research).0, "strong");
        assert_eq!(r.choose("auto", &req, &none, Caller::default()).0, "cheap");
        let other = Caller {
            key: Some("key_2"),
            team: Some("sales"),
        };
        assert_eq!(r.choose("auto", &req, &none, other).0, "cheap");
    }

    #[test]
    fn prompt_estimates_grow_with_the_prompt() {
        let a = estimate_prompt_tokens(&ChatRequest::simple("m", "hi"));
        let b = estimate_prompt_tokens(&ChatRequest::simple("m", "hi ".repeat(400)));
        assert!(a < 10 && b > 250, "{a} {b}");
    }
}
