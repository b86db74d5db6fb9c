//! Rule-based routers: a public model name whose requests go to one of several model groups,
//! chosen by the first rule whose conditions all hold (request metadata headers, prompt size,
//! tools, images), else the router's default. The choice is shown in `x-tollway-route`.

use axum::http::HeaderMap;
use serde::Deserialize;
use std::borrow::Cow;
use tollway_core::{ChatRequest, Part};

/// One router as the config file spells it (`routers.NAME`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRouter {
    pub kind: String,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    pub default: Option<String>,
    /// `kind: learned`: the model groups to choose between, strongest (dearest) first.
    #[serde(default)]
    pub candidates: Vec<String>,
    /// `kind: learned`: the share of requests to send to the strong candidate...
    #[serde(default)]
    pub strong_share: Option<f64>,
    /// ... or, with more than two candidates, the share for each but the last (strongest first;
    /// the last candidate takes the rest) ...
    #[serde(default)]
    pub shares: Option<Vec<f64>>,
    /// ... or the score at or above which a request goes to the strong candidate ...
    #[serde(default)]
    pub threshold: Option<f64>,
    /// ... or the cheapest candidate whose predicted probability of a good answer is at least
    /// this ...
    #[serde(default)]
    pub quality_floor: Option<f64>,
    /// ... or the candidate with the highest `quality − cost_weight × relative cost`.
    #[serde(default)]
    pub cost_weight: Option<f64>,
    /// `kind: learned`: for each candidate, the model (of the router file's `quality` models)
    /// whose predicted quality stands for it. Default: the strongest and the weakest model for two
    /// candidates, or one each in order when the counts match.
    #[serde(default)]
    pub predicts: Vec<String>,
    /// `kind: learned`: `lexical` (default; built into the binary), `embedding`
    /// (all-MiniLM-L6-v2 embeddings, neighbours and logistic heads; needs the encoder's files) or
    /// `embedding-static` (the same on the encoder's distilled token table: whole prompts in
    /// about a millisecond).
    #[serde(default)]
    pub model: Option<String>,
    /// `kind: learned`: a trained model file (`tollway router train`); default: the built-in
    /// lexical model, or for `model: embedding` (`embedding-static`) the repository's
    /// `crates/tollway-engine/data/router-embed.json` (`router-static.json`).
    #[serde(default)]
    pub model_file: Option<String>,
    /// `kind: learned`, `model: embedding[-static]`: the encoder's directory (default:
    /// `$TOLLWAY_ENCODER_DIR`, else `.cache/encoders/all-minilm-l6-v2`, where
    /// `scripts/fetch-encoder.sh` puts it).
    #[serde(default)]
    pub encoder_dir: Option<String>,
    /// `kind: learned`: store each routed prompt with its score and choice, so that client
    /// feedback can retrain the router (`tollway router train --feedback-db`). Off by default:
    /// prompts are user data.
    #[serde(default)]
    pub log_prompts: bool,
}

impl RawRouter {
    pub fn knob(&self) -> Knob {
        Knob {
            strong_share: self.strong_share,
            shares: self.shares.clone(),
            threshold: self.threshold,
            quality_floor: self.quality_floor,
            cost_weight: self.cost_weight,
        }
    }
}

/// What a learned router trades: at most one of these (none: equal shares per candidate). The
/// router's own comes from the config; a virtual key may carry its own per router
/// (`routing: {"auto": {"strong_share": 0.1}}`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Knob {
    pub strong_share: Option<f64>,
    pub shares: Option<Vec<f64>>,
    pub threshold: Option<f64>,
    pub quality_floor: Option<f64>,
    pub cost_weight: Option<f64>,
}

/// A knob that does not fit its router: the field at fault (empty: the knob as a whole) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct KnobError {
    pub field: &'static str,
    pub message: String,
}

impl KnobError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        KnobError {
            field,
            message: message.into(),
        }
    }
}

/// A resolved knob.
#[derive(Debug, Clone, PartialEq)]
pub enum Decide {
    /// One score threshold per candidate but the last, non-increasing: a score at or above
    /// `t[i]` (and below the ones before) goes to `candidates[i]`.
    Thresholds(Vec<f64>),
    /// The cheapest candidate whose predicted quality is at least this; none: the strongest.
    QualityFloor(f64),
    /// The candidate with the highest predicted quality minus this × its relative cost (ties go
    /// to the cheaper one).
    CostWeight(f64),
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

/// A learned router: a trained model assesses the prompt (a score of how much it needs the
/// strong model, and each candidate's predicted probability of a good answer), and the knob
/// picks the candidate.
#[derive(Debug, Clone)]
pub struct LearnedRouter {
    pub model: std::sync::Arc<dyn tollway_engine::router::RouteModel>,
    /// Strongest (dearest) first.
    pub candidates: Vec<String>,
    pub decide: Decide,
    /// Per candidate, the index of its stand-in among the model's quality models; empty when
    /// the model predicts no quality for these candidates (then only score knobs work).
    pub predicts: Vec<usize>,
    /// Per candidate, its price relative to the dearest one (in (0, 1]), from the price table
    /// when the runtime is built; empty while unknown (then `cost_weight` is refused).
    pub costs: Vec<f64>,
    pub log_prompts: bool,
}

impl PartialEq for LearnedRouter {
    fn eq(&self, other: &Self) -> bool {
        self.candidates == other.candidates
            && self.decide == other.decide
            && self.predicts == other.predicts
            && self.costs == other.costs
    }
}

/// The text a learned router scores: the last user turn's text (what the user is asking now),
/// its text parts joined by line feeds; borrowed from the request when it has one text part (the
/// usual case), so that a long prompt is not copied to be scored.
pub fn routed_text(req: &ChatRequest) -> Cow<'_, str> {
    let Some(m) = req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == tollway_core::Role::User)
    else {
        return Cow::Borrowed("");
    };
    let mut texts = m.content.iter().filter_map(|p| match p {
        Part::Text { text, .. } => Some(text.as_str()),
        _ => None,
    });
    let Some(first) = texts.next() else {
        return Cow::Borrowed("");
    };
    let Some(second) = texts.next() else {
        return Cow::Borrowed(first);
    };
    let mut out = format!("{first}\n{second}");
    for t in texts {
        out.push('\n');
        out.push_str(t);
    }
    Cow::Owned(out)
}

fn unit(v: f64) -> bool {
    (0.0..=1.0).contains(&v)
}

impl LearnedRouter {
    /// The default stand-ins for `candidates` among `models` (see [`RawRouter::predicts`]).
    pub fn default_predicts(candidates: usize, models: &[String]) -> Vec<usize> {
        if models.len() >= 2 && candidates == 2 {
            vec![0, models.len() - 1]
        } else if models.len() == candidates {
            (0..candidates).collect()
        } else {
            Vec::new()
        }
    }

    /// Turns a knob into a decision rule for this router's candidates and model.
    pub fn resolve(&self, knob: &Knob) -> Result<Decide, KnobError> {
        let tiers = self.candidates.len() - 1;
        let given = [
            knob.strong_share.is_some(),
            knob.shares.is_some(),
            knob.threshold.is_some(),
            knob.quality_floor.is_some(),
            knob.cost_weight.is_some(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        if given > 1 {
            return Err(KnobError::new(
                "",
                "give only one of strong_share, shares, threshold, quality_floor, cost_weight",
            ));
        }
        let needs_quality = |what: &'static str| -> Result<(), KnobError> {
            if self.predicts.is_empty() {
                Err(KnobError::new(what, format!(
                    "`{what}` needs the router model's per-candidate quality: the model predicts {:?}; map each candidate to one with `predicts`",
                    self.model.quality_models()
                )))
            } else {
                Ok(())
            }
        };
        if let Some(q) = knob.quality_floor {
            if !unit(q) {
                return Err(KnobError::new(
                    "quality_floor",
                    format!("quality_floor must be between 0 and 1, not {q}"),
                ));
            }
            needs_quality("quality_floor")?;
            return Ok(Decide::QualityFloor(q));
        }
        if let Some(w) = knob.cost_weight {
            if !(w.is_finite() && w >= 0.0) {
                return Err(KnobError::new(
                    "cost_weight",
                    format!("cost_weight must be a number ≥ 0, not {w}"),
                ));
            }
            needs_quality("cost_weight")?;
            return Ok(Decide::CostWeight(w));
        }
        if let Some(shares) = &knob.shares {
            let total: f64 = shares.iter().sum();
            if shares.len() != tiers || !shares.iter().all(|s| unit(*s)) || total > 1.0 + 1e-9 {
                return Err(KnobError::new("shares", format!(
                    "give {tiers} shares between 0 and 1 (one per candidate but the last), summing to at most 1"
                )));
            }
            let mut cumulative = 0.0;
            return Ok(Decide::Thresholds(
                shares
                    .iter()
                    .map(|s| {
                        cumulative += s;
                        self.model.threshold_for_share(cumulative)
                    })
                    .collect(),
            ));
        }
        if let Some(s) = knob.strong_share {
            if tiers != 1 || !unit(s) {
                return Err(KnobError::new(
                    "strong_share",
                    "strong_share is a number between 0 and 1, for two candidates (use shares for more)",
                ));
            }
            return Ok(Decide::Thresholds(vec![self.model.threshold_for_share(s)]));
        }
        if let Some(t) = knob.threshold {
            if tiers != 1 || !unit(t) {
                return Err(KnobError::new(
                    "threshold",
                    "threshold is a score between 0 and 1, for two candidates",
                ));
            }
            return Ok(Decide::Thresholds(vec![t]));
        }
        Ok(Decide::Thresholds(
            (1..=tiers)
                .map(|i| {
                    self.model
                        .threshold_for_share(i as f64 / (tiers + 1) as f64)
                })
                .collect(),
        ))
    }

    /// Chooses a candidate for `req`, with `knob` (a key's override) instead of the router's
    /// own when given.
    pub fn choose(
        &self,
        router: &str,
        req: &ChatRequest,
        knob: Option<&serde_json::Value>,
    ) -> RouteChoice {
        let mut note = "";
        let decide_owned;
        let decide = match knob.map(|v| {
            Knob::deserialize(v)
                .map_err(|e| e.to_string())
                .and_then(|k| self.resolve(&k).map_err(|e| e.message))
        }) {
            None => &self.decide,
            Some(Ok(d)) => {
                decide_owned = d;
                note = "; knob=key";
                &decide_owned
            }
            Some(Err(_)) => {
                // validated when the key was made; the config changed since
                note = "; knob=router (the key's override no longer fits this router)";
                &self.decide
            }
        };
        let text = routed_text(req);
        let a = self.model.assess(&text);
        let last = self.candidates.len() - 1;
        let quality = |i: usize| -> f64 {
            self.predicts
                .get(i)
                .and_then(|&m| a.quality.get(m))
                .copied()
                .unwrap_or(0.0)
        };
        let (tier, detail) = match decide {
            Decide::Thresholds(t) => {
                let tier = t
                    .iter()
                    .position(|t| a.score >= *t)
                    .unwrap_or(t.len())
                    .min(last);
                // the threshold that decided: the one it cleared, or the last one it missed
                let th = t.get(tier).or(t.last()).copied().unwrap_or(0.0);
                (tier, format!("threshold={th:.4}"))
            }
            Decide::QualityFloor(q) => {
                let tier = (0..=last).rev().find(|&i| quality(i) >= *q).unwrap_or(0);
                (
                    tier,
                    format!("quality={}; floor={q}", self.quality_text(quality)),
                )
            }
            Decide::CostWeight(w) => {
                let mut best = 0;
                let mut best_value = f64::NEG_INFINITY;
                for i in 0..=last {
                    let cost = self.costs.get(i).copied().unwrap_or(1.0);
                    let v = quality(i) - w * cost;
                    if v >= best_value {
                        best = i;
                        best_value = v;
                    }
                }
                (
                    best,
                    format!("quality={}; cost_weight={w}", self.quality_text(quality)),
                )
            }
        };
        let target = &self.candidates[tier];
        RouteChoice {
            target: target.clone(),
            why: format!(
                "router={router}; kind=learned; model={}; score={:.4}; {detail}; target={target}{note}",
                self.model.kind(),
                a.score
            ),
            log: self
                .log_prompts
                .then(|| (text.into_owned(), a.score, tier == 0)),
        }
    }

    fn quality_text(&self, quality: impl Fn(usize) -> f64) -> String {
        let mut s = String::new();
        for (i, c) in self.candidates.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!("{c}:{:.3}", quality(i)));
        }
        s
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
            Router::Learned(l) => l.choose(name, req, caller.routing.and_then(|m| m.get(name))),
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
    /// The key's per-router knob overrides.
    pub routing: Option<&'a serde_json::Map<String, serde_json::Value>>,
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

    /// A learned router scores the last user turn's text parts, joined by line feeds; one text
    /// part is scored where it lies, not copied.
    #[test]
    fn the_routed_text_is_the_last_user_turns_text() {
        let mut req = ChatRequest::simple("auto", "first question");
        assert!(matches!(routed_text(&req), Cow::Borrowed("first question")));
        req.messages
            .push(Message::text(Role::Assistant, "an answer"));
        req.messages.push(Message {
            role: Role::User,
            content: vec![
                Part::text("look at"),
                Part::Image(ImageSource::Url("https://x/y.png".into())),
                Part::text("this"),
                Part::text("and this"),
            ],
        });
        assert!(matches!(routed_text(&req), Cow::Owned(t) if t == "look at\nthis\nand this"));
        req.messages.push(Message {
            role: Role::User,
            content: vec![
                Part::Image(ImageSource::Url("https://x/z.png".into())),
                Part::text("only this"),
            ],
        });
        assert!(matches!(routed_text(&req), Cow::Borrowed("only this")));
        req.messages.push(Message {
            role: Role::User,
            content: vec![Part::Image(ImageSource::Url("https://x/z.png".into()))],
        });
        assert_eq!(routed_text(&req), "");
        req.messages.retain(|m| m.role != Role::User);
        assert_eq!(routed_text(&req), "");
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
            routing: None,
        };
        assert_eq!(r.choose("auto", &req, &none, research).0, "strong");
        assert_eq!(r.choose("auto", &req, &none, Caller::default()).0, "cheap");
        let other = Caller {
            key: Some("key_2"),
            team: Some("sales"),
            routing: None,
        };
        assert_eq!(r.choose("auto", &req, &none, other).0, "cheap");
    }

    /// A router model with fixed answers: score 0.5; quality 0.9 (strong), 0.7 (mid), 0.4 (weak).
    #[derive(Debug)]
    struct Fixed(Vec<String>);

    impl tollway_engine::router::RouteModel for Fixed {
        fn kind(&self) -> &'static str {
            "fixed"
        }
        fn assess(&self, _: &str) -> tollway_engine::router::Assessment {
            tollway_engine::router::Assessment {
                score: 0.5,
                quality: vec![0.9, 0.7, 0.4],
            }
        }
        fn threshold_for_share(&self, share: f64) -> f64 {
            1.0 - share
        }
        fn quality_models(&self) -> &[String] {
            &self.0
        }
    }

    fn learned(decide: Decide) -> LearnedRouter {
        let models = vec!["s".to_string(), "m".to_string(), "w".to_string()];
        LearnedRouter {
            predicts: LearnedRouter::default_predicts(3, &models),
            model: std::sync::Arc::new(Fixed(models)),
            candidates: vec!["big".into(), "mid".into(), "small".into()],
            decide,
            costs: vec![1.0, 0.2, 0.01],
            log_prompts: false,
        }
    }

    #[test]
    fn a_quality_floor_takes_the_cheapest_candidate_that_clears_it() {
        let req = ChatRequest::simple("auto", "hi");
        for (floor, want) in [
            (0.3, "small"),
            (0.5, "mid"),
            (0.7, "mid"),
            (0.85, "big"),
            (0.95, "big"),
        ] {
            let c = learned(Decide::QualityFloor(floor)).choose("auto", &req, None);
            assert_eq!(c.target, want, "floor {floor}: {}", c.why);
        }
        let c = learned(Decide::QualityFloor(0.5)).choose("auto", &req, None);
        assert_eq!(
            c.why,
            "router=auto; kind=learned; model=fixed; score=0.5000; quality=big:0.900,mid:0.700,small:0.400; floor=0.5; target=mid"
        );
    }

    #[test]
    fn a_cost_weight_maximises_quality_minus_weighted_cost() {
        let req = ChatRequest::simple("auto", "hi");
        // values: big 0.9 − w, mid 0.7 − 0.2w, small 0.4 − 0.01w
        for (w, want) in [
            (0.0, "big"),
            (0.2, "big"),
            (0.3, "mid"),
            (1.0, "mid"),
            (2.0, "small"),
        ] {
            let c = learned(Decide::CostWeight(w)).choose("auto", &req, None);
            assert_eq!(c.target, want, "weight {w}: {}", c.why);
        }
    }

    #[test]
    fn knobs_resolve_against_the_router_and_key_overrides_apply() {
        let r = learned(Decide::Thresholds(vec![0.9, 0.1]));
        assert_eq!(
            r.resolve(&Knob {
                shares: Some(vec![0.2, 0.3]),
                ..Knob::default()
            }),
            Ok(Decide::Thresholds(vec![0.8, 0.5]))
        );
        let e = r
            .resolve(&Knob {
                strong_share: Some(0.2),
                ..Knob::default()
            })
            .expect_err("three candidates");
        assert_eq!(e.field, "strong_share");
        let req = ChatRequest::simple("auto", "hi");
        // score 0.5 is below 0.9 and above 0.1: the middle candidate
        assert_eq!(r.choose("auto", &req, None).target, "mid");
        let key = serde_json::json!({"quality_floor": 0.3});
        let c = r.choose("auto", &req, Some(&key));
        assert_eq!(c.target, "small");
        assert!(c.why.ends_with("; knob=key"), "{}", c.why);
        // an override that no longer fits falls back to the router's own knob, and says so
        let stale = serde_json::json!({"strong_share": 0.3});
        let c = r.choose("auto", &req, Some(&stale));
        assert_eq!(c.target, "mid");
        assert!(c.why.contains("knob=router"), "{}", c.why);
    }

    #[test]
    fn prompt_estimates_grow_with_the_prompt() {
        let a = estimate_prompt_tokens(&ChatRequest::simple("m", "hi"));
        let b = estimate_prompt_tokens(&ChatRequest::simple("m", "hi ".repeat(400)));
        assert!(a < 10 && b > 250, "{a} {b}");
    }
}
