//! The Value-tree implementation of the Gemini module as it was before answers, streams and
//! request bodies moved onto typed structs (its functions copied verbatim, test builds only):
//! the reference `equivalence` holds the typed implementation to.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tollway_core::{
    ApiFamily, ChatRequest, ChatResponse, ErrorKind, ImageSource, Label, Part, ProviderError,
    ResponseFormat, Role, StopReason, StreamEvent, ToolCall, ToolChoice, Usage,
};

use crate::anthropic::{bad_arguments, is_off, HARMLESS_FROM_OPENAI};
use crate::openai::fallback_message;
use crate::sse::SseEvent;

/// What a canonical thinking part's signature starts with when it holds a Gemini thought
/// signature (which only Gemini can verify).
pub const SIGNATURE_PREFIX: &str = "gemini:";

/// The signature Google documents for function calls whose own signature was lost (a
/// conversation that crossed models or clients); Gemini 3 then skips its check.
const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// Whether a thinking part's signature is a Gemini thought signature (other vendors' targets
/// leave those parts out).
pub fn is_gemini_signature(sig: &str) -> bool {
    sig.starts_with(SIGNATURE_PREFIX)
}

/// The method part of a Gemini URL: `:generateContent`, or `:streamGenerateContent?alt=sse`.
pub fn method(stream: bool) -> &'static str {
    if stream {
        ":streamGenerateContent?alt=sse"
    } else {
        ":generateContent"
    }
}

// ------------------------------------------------------------------------------------------------
// Outbound request
// ------------------------------------------------------------------------------------------------

/// Fields of an Anthropic request a Gemini target can do without.
const HARMLESS_FROM_ANTHROPIC: &[&str] = &["metadata", "service_tier"];

/// Whether `model` is Gemini 3 or later (thinking levels, required thought signatures): not a
/// `gemini-1.x` / `gemini-2.x` name.
fn gemini_3_or_later(model: &str) -> bool {
    let name = model.rsplit('/').next().unwrap_or(model);
    match name.strip_prefix("gemini-") {
        Some(rest) => {
            !(rest.starts_with("1.") || rest.starts_with("2.") || rest.starts_with("pro"))
        }
        None => false,
    }
}

/// An image file's type from its name, for `fileData` (which needs one).
fn mime_from_url(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit('.').next()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        _ => return None,
    })
}

fn image_part(src: &ImageSource, label: Label<'_>) -> Result<Value, ProviderError> {
    match src {
        ImageSource::Base64 { media_type, data } => {
            Ok(json!({"inlineData": {"mimeType": media_type, "data": data}}))
        }
        ImageSource::Url(url) => {
            let mime = mime_from_url(url).ok_or_else(|| {
                ProviderError::invalid(format!(
                    "the image `{}` needs a .png, .jpeg, .jpg, .gif, .webp, .heic or .heif name \
                     for {label} (Gemini needs its type), or send it as base64 data",
                    url.chars().take(200).collect::<String>()
                ))
            })?;
            Ok(json!({"fileData": {"mimeType": mime, "fileUri": url}}))
        }
    }
}

/// A tool call's arguments as the object `args` wants (`{}` when empty).
fn tool_args(c: &ToolCall, label: Label<'_>) -> Result<Value, ProviderError> {
    let args = c.arguments.trim();
    if args.is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(args) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(bad_arguments(c, true, label)),
        Err(_) => Err(bad_arguments(c, false, label)),
    }
}

/// A tool result as the object `functionResponse.response` wants.
fn tool_response(text: String, is_error: bool) -> Value {
    if !is_error {
        if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(&text) {
            return v;
        }
    }
    let key = if is_error { "error" } else { "content" };
    json!({ key: text })
}

/// One model turn being written: its parts, and a Gemini signature waiting for the function
/// call it belongs to.
struct Turn<'a> {
    parts: Vec<Value>,
    signature: Option<&'a str>,
    /// A function call of this turn already carries a signature.
    signed: bool,
}

/// Encodes a canonical request as a Gemini `GenerateContentRequest` for `model` (the model and
/// whether the answer streams are in the URL: [`crate::path_segment`], [`method`]). `label` names the
/// target in errors.
pub fn encode_request_as<'l>(
    req: &ChatRequest,
    model: &str,
    label: impl Into<Label<'l>>,
) -> Result<Vec<u8>, ProviderError> {
    let label = label.into();
    let gemini_3 = gemini_3_or_later(model);
    let mut system: Vec<Value> = Vec::new();
    let mut contents: Vec<(&str, Vec<Value>)> = Vec::new();
    // the function each tool call id names, as the conversation goes (a later call with the same
    // id wins: ids made up for Gemini's id-less calls repeat across turns)
    let mut names: HashMap<&str, &str> = HashMap::new();
    for m in &req.messages {
        if m.role == Role::System {
            for p in &m.content {
                match p {
                    Part::Text { text, .. } if !text.is_empty() => {
                        system.push(json!({ "text": text }))
                    }
                    Part::Text { .. } => {}
                    _ => {
                        return Err(ProviderError::unsupported(
                            "non-text content in system messages",
                            label,
                        ))
                    }
                }
            }
            continue;
        }
        let role = if m.role == Role::Assistant {
            "model"
        } else {
            "user"
        };
        let mut turn = Turn {
            parts: Vec::with_capacity(m.content.len()),
            signature: None,
            signed: false,
        };
        for p in &m.content {
            match p {
                Part::Text { text, .. } => {
                    if !text.is_empty() {
                        turn.parts.push(json!({ "text": text }));
                    }
                }
                Part::Image(src) => turn.parts.push(image_part(src, label)?),
                Part::ToolCall(c) => {
                    names.insert(&c.id, &c.name);
                    let mut part = json!({"functionCall": {
                        "name": c.name,
                        "args": tool_args(c, label)?,
                    }});
                    let signature = match turn.signature.take() {
                        Some(sig) => Some(sig),
                        // Gemini 3 wants the first call of a turn signed
                        None if gemini_3 && !turn.signed => Some(SKIP_SIGNATURE),
                        None => None,
                    };
                    if let Some(sig) = signature {
                        part["thoughtSignature"] = json!(sig);
                        turn.signed = true;
                    }
                    turn.parts.push(part);
                }
                Part::ToolResult(r) => {
                    let name = names.get(r.tool_call_id.as_str()).copied().ok_or_else(|| {
                        ProviderError::invalid(format!(
                            "the tool result for `{}` answers no earlier tool call of the \
                             conversation; {label} needs the called function's name",
                            r.tool_call_id
                        ))
                    })?;
                    let mut images = Vec::new();
                    for p in &r.content {
                        match p {
                            Part::Text { .. } => {}
                            Part::Image(src) => images.push(image_part(src, label)?),
                            _ => {
                                return Err(ProviderError::unsupported(
                                    "tool results other than text and images",
                                    label,
                                ))
                            }
                        }
                    }
                    turn.parts.push(json!({"functionResponse": {
                        "name": name,
                        "response": tool_response(r.text(), r.is_error),
                    }}));
                    // images a tool returned go along as parts of the same turn
                    turn.parts.extend(images);
                }
                Part::Thinking { signature, .. } => {
                    // only Gemini's own signatures mean anything to it; thought summaries are
                    // not read back
                    if let Some(sig) = signature.as_deref().and_then(|s| {
                        s.strip_prefix(SIGNATURE_PREFIX)
                            .filter(|_| m.role == Role::Assistant)
                    }) {
                        turn.signature = Some(sig);
                    }
                }
            }
        }
        if turn.parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some((prev, parts)) if *prev == role => parts.extend(turn.parts),
            _ => contents.push((role, turn.parts)),
        }
    }
    let mut body = Map::new();
    body.insert(
        "contents".into(),
        Value::Array(
            contents
                .into_iter()
                .map(|(role, parts)| json!({"role": role, "parts": parts}))
                .collect(),
        ),
    );
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    let mut config = Map::new();
    if let Some(n) = req.max_tokens {
        config.insert("maxOutputTokens".into(), json!(n));
    }
    if let Some(t) = req.temperature {
        config.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        config.insert("topP".into(), json!(p));
    }
    if let Some(k) = req.top_k {
        config.insert("topK".into(), json!(k));
    }
    if !req.stop.is_empty() {
        config.insert("stopSequences".into(), json!(req.stop));
    }
    match &req.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            config.insert("responseMimeType".into(), json!("application/json"));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            config.insert("responseMimeType".into(), json!("application/json"));
            config.insert("responseJsonSchema".into(), schema.clone());
        }
    }
    extra_fields(req, gemini_3, label, &mut config)?;
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    if let Some((tools, tool_config)) = tools(req) {
        body.insert("tools".into(), tools);
        body.insert("toolConfig".into(), tool_config);
    }
    serde_json::to_vec(&Value::Object(body))
        .map_err(|e| ProviderError::internal(format!("could not write the Gemini request: {e}")))
}

/// The other API's fields that have a Gemini spelling go into `generationConfig`; harmless ones
/// are dropped; anything else is refused by name.
fn extra_fields(
    req: &ChatRequest,
    gemini_3: bool,
    label: Label<'_>,
    config: &mut Map<String, Value>,
) -> Result<(), ProviderError> {
    for (k, v) in &req.extra.fields {
        let handled = match (req.extra.family, k.as_str()) {
            (ApiFamily::OpenAi, "seed") if v.is_i64() || v.is_u64() => {
                config.insert("seed".into(), v.clone());
                true
            }
            (ApiFamily::OpenAi, "presence_penalty") if v.is_number() => {
                config.insert("presencePenalty".into(), v.clone());
                true
            }
            (ApiFamily::OpenAi, "frequency_penalty") if v.is_number() => {
                config.insert("frequencyPenalty".into(), v.clone());
                true
            }
            (ApiFamily::OpenAi, "reasoning_effort") => match v.as_str() {
                Some(effort) => {
                    config.insert(
                        "thinkingConfig".into(),
                        thinking_for_effort(effort, gemini_3),
                    );
                    true
                }
                None => false,
            },
            (ApiFamily::OpenAi, _) => HARMLESS_FROM_OPENAI.contains(&k.as_str()) || is_off(v),
            (ApiFamily::Anthropic, "thinking") => {
                let budget = v.get("budget_tokens").and_then(Value::as_u64);
                let thinking = match v.get("type").and_then(Value::as_str) {
                    Some("disabled") => json!({"thinkingBudget": 0}),
                    _ => match budget {
                        Some(b) => json!({"thinkingBudget": b, "includeThoughts": true}),
                        None => json!({"includeThoughts": true}),
                    },
                };
                config.insert("thinkingConfig".into(), thinking);
                true
            }
            (ApiFamily::Anthropic, _) => HARMLESS_FROM_ANTHROPIC.contains(&k.as_str()),
        };
        if !handled {
            return Err(crate::unsupported_field(req.extra.family, k, label));
        }
    }
    Ok(())
}

/// OpenAI's `reasoning_effort` as a `thinkingConfig`: Gemini 3 takes the level by name, earlier
/// models a budget of thinking tokens (Google's own mapping in its OpenAI-compatible API).
fn thinking_for_effort(effort: &str, gemini_3: bool) -> Value {
    if gemini_3 {
        let level = match effort {
            "none" | "minimal" => "minimal",
            "low" => "low",
            "medium" => "medium",
            _ => "high",
        };
        return json!({ "thinkingLevel": level });
    }
    let budget = match effort {
        "none" | "minimal" => 0,
        "low" => 1024,
        "medium" => 8192,
        _ => 24576,
    };
    json!({ "thinkingBudget": budget })
}

/// `tools` and `toolConfig`, when the request has tools to offer.
fn tools(req: &ChatRequest) -> Option<(Value, Value)> {
    if req.tools.is_empty() {
        return None;
    }
    let declarations: Vec<Value> = req
        .tools
        .iter()
        .map(|t| {
            let mut d = Map::new();
            d.insert("name".into(), json!(t.name));
            if let Some(desc) = &t.description {
                d.insert("description".into(), json!(desc));
            }
            if !is_off(&t.parameters) {
                d.insert("parametersJsonSchema".into(), t.parameters.clone());
            }
            Value::Object(d)
        })
        .collect();
    let calling = match &req.tool_choice {
        None | Some(ToolChoice::Auto) => json!({"mode": "AUTO"}),
        Some(ToolChoice::None) => json!({"mode": "NONE"}),
        Some(ToolChoice::Required) => json!({"mode": "ANY"}),
        Some(ToolChoice::Tool(name)) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
    };
    Some((
        json!([{ "functionDeclarations": declarations }]),
        json!({ "functionCallingConfig": calling }),
    ))
}

// ------------------------------------------------------------------------------------------------
// Answers
// ------------------------------------------------------------------------------------------------

fn bad_answer(msg: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorKind::InvalidResponse, msg)
}

fn stop_reason(s: &str, called_tools: bool) -> StopReason {
    match s {
        "STOP" if called_tools => StopReason::ToolUse,
        "STOP" => StopReason::EndTurn,
        "MAX_TOKENS" => StopReason::MaxTokens,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT" => StopReason::ContentFilter,
        other => StopReason::Other(other.to_ascii_lowercase()),
    }
}

/// Gemini's `usageMetadata`, normalised: cached tokens out of the input, thinking into the
/// output. Sums saturate: two counts near `u64::MAX` (nonsense, but an upstream's to send) must
/// not overflow.
fn usage(u: Option<&Value>) -> Usage {
    let n = |k: &str| {
        u.and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let cached = n("cachedContentTokenCount");
    let thoughts = n("thoughtsTokenCount");
    Usage {
        input_tokens: n("promptTokenCount")
            .saturating_add(n("toolUsePromptTokenCount"))
            .saturating_sub(cached),
        output_tokens: n("candidatesTokenCount").saturating_add(thoughts),
        cache_read_tokens: cached,
        cache_write_tokens: 0,
        reasoning_tokens: thoughts,
    }
}

/// A prompt Gemini refused to answer (`promptFeedback.blockReason` and no candidates).
fn blocked(v: &Value) -> Option<ProviderError> {
    let reason = v.pointer("/promptFeedback/blockReason")?.as_str()?;
    let has_candidates = v
        .get("candidates")
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty());
    if has_candidates {
        return None;
    }
    let detail = v
        .pointer("/promptFeedback/blockReasonMessage")
        .and_then(Value::as_str)
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    Some(ProviderError::new(
        ErrorKind::ContentPolicy,
        format!("the provider blocked the prompt ({reason}){detail}"),
    ))
}

/// The name of a tool call's id when Gemini gives none: unique within the answer.
fn call_id(answer_id: &str, n: usize) -> String {
    let tail: String = answer_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect();
    format!("call_{tail}_{n}")
}

fn answer_id(v: &Value) -> String {
    match v.get("responseId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => "gemini-answer".to_string(),
    }
}

/// Decodes a `GenerateContentResponse`. `model`: the model asked (when the answer names no
/// `modelVersion`).
pub fn decode_response(bytes: &[u8], model: &str) -> Result<ChatResponse, ProviderError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| bad_answer(format!("the provider's answer is not valid JSON: {e}")))?;
    if let Some(e) = blocked(&v) {
        return Err(e);
    }
    let candidate = v
        .pointer("/candidates/0")
        .ok_or_else(|| bad_answer("the provider's answer has no candidates"))?;
    let id = answer_id(&v);
    let mut content = Vec::new();
    let mut calls = 0;
    if let Some(parts) = candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
    {
        for p in parts {
            decode_part(p, &id, &mut calls, &mut content)?;
        }
    }
    let reason = candidate
        .get("finishReason")
        .and_then(Value::as_str)
        .unwrap_or("STOP");
    Ok(ChatResponse {
        model: v
            .get("modelVersion")
            .and_then(Value::as_str)
            .unwrap_or(model)
            .to_string(),
        id,
        content,
        stop_reason: stop_reason(reason, calls > 0),
        stop_sequence: None,
        usage: usage(v.get("usageMetadata")),
        created: crate::now_unix(),
    })
}

/// One answer part as canonical parts (a signed function call brings its signature first).
fn decode_part(
    p: &Value,
    answer_id: &str,
    calls: &mut usize,
    out: &mut Vec<Part>,
) -> Result<(), ProviderError> {
    let signature = p
        .get("thoughtSignature")
        .and_then(Value::as_str)
        .map(|s| format!("{SIGNATURE_PREFIX}{s}"));
    if let Some(c) = p.get("functionCall") {
        let name = c
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad_answer("the provider's functionCall has no `name`"))?;
        let id = match c.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => call_id(answer_id, *calls),
        };
        *calls += 1;
        if let Some(sig) = signature {
            out.push(Part::Thinking {
                text: String::new(),
                signature: Some(sig),
            });
        }
        out.push(Part::ToolCall(ToolCall {
            id,
            name: name.to_string(),
            arguments: c
                .get("args")
                .cloned()
                .unwrap_or_else(|| json!({}))
                .to_string(),
        }));
        return Ok(());
    }
    if let Some(t) = p.get("text") {
        let text = t
            .as_str()
            .ok_or_else(|| bad_answer("the provider's text part is not a string"))?;
        if p.get("thought").and_then(Value::as_bool) == Some(true) {
            out.push(Part::Thinking {
                text: text.to_string(),
                signature,
            });
        } else {
            // a text part's signature is optional to send back: it is not kept
            out.push(Part::text(text));
        }
    }
    // executable code, inline data the model generated ...: no canonical part
    Ok(())
}

/// Classifies a Gemini error answer (`{"error": {"code", "message", "status"}}`, or a list of
/// one such object).
pub fn decode_error(status: u16, body: &[u8], retry_after: Option<Duration>) -> ProviderError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| match v {
        Value::Array(a) => a.first().and_then(|e| e.get("error")),
        v => v.get("error"),
    });
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| fallback_message(status, body));
    let code = error
        .and_then(|e| e.get("status"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    classify(status, code, message, retry_after)
}

fn classify(
    status: u16,
    code: &str,
    message: String,
    retry_after: Option<Duration>,
) -> ProviderError {
    let lower = message.to_ascii_lowercase();
    let e = ProviderError::from_upstream_status(status, message, retry_after);
    let reclassified = match code {
        "RESOURCE_EXHAUSTED" => Some(ErrorKind::RateLimited),
        "UNAVAILABLE" => Some(ErrorKind::Overloaded),
        "DEADLINE_EXCEEDED" => Some(ErrorKind::Timeout),
        "INVALID_ARGUMENT"
            if lower.contains("exceeds the maximum number of tokens")
                || lower.contains("context window")
                || lower.contains("too long") =>
        {
            Some(ErrorKind::ContextWindowExceeded)
        }
        _ => None,
    };
    match reclassified {
        Some(kind) => e.reclassify(kind, retry_after),
        None => e,
    }
}

// ------------------------------------------------------------------------------------------------
// Streams
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
}

/// Turns the SSE events of `streamGenerateContent?alt=sse` (each a whole
/// `GenerateContentResponse` holding the next pieces) into canonical events.
#[derive(Debug)]
pub struct StreamDecoder {
    model: String,
    started: bool,
    /// The text or thinking block deltas go to, and its index.
    open: Option<(Open, u32)>,
    next_index: u32,
    calls: usize,
    id: String,
    finished: bool,
}

impl StreamDecoder {
    /// `model`: the model asked (when the answer names no `modelVersion`).
    pub fn new(model: &str) -> Self {
        StreamDecoder {
            model: model.to_string(),
            started: false,
            open: None,
            next_index: 0,
            calls: 0,
            id: String::new(),
            finished: false,
        }
    }

    fn close(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some((_, index)) = self.open.take() {
            out.push(StreamEvent::BlockStop { index });
        }
    }

    /// The block a delta of `kind` goes to, opened if need be.
    fn block(&mut self, kind: Open, out: &mut Vec<StreamEvent>) -> u32 {
        match self.open {
            Some((k, i)) if k == kind => i,
            _ => {
                self.close(out);
                let i = self.next_index;
                self.next_index += 1;
                self.open = Some((kind, i));
                i
            }
        }
    }

    /// Decodes one SSE event into `out` (on an error, what was appended is to be dropped).
    pub fn feed_into(
        &mut self,
        ev: &SseEvent,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), ProviderError> {
        let data = ev.data.trim();
        if self.finished || data.is_empty() {
            return Ok(());
        }
        let v: Value = serde_json::from_str(data).map_err(|e| {
            bad_answer(format!(
                "the provider's stream event is not valid JSON: {e}"
            ))
        })?;
        if let Some(e) = v.get("error") {
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the provider reported an error mid-stream")
                .to_string();
            let status = e
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(500);
            let code = e.get("status").and_then(Value::as_str).unwrap_or_default();
            return Err(classify(status, code, message, None));
        }
        if let Some(e) = blocked(&v) {
            return Err(e);
        }
        if !self.started {
            self.started = true;
            self.id = answer_id(&v);
            let model = v
                .get("modelVersion")
                .and_then(Value::as_str)
                .unwrap_or(&self.model)
                .to_string();
            // the prompt's count, when the first event has it, goes into the start (an
            // Anthropic client reads it from `message_start`)
            let prompt = v.get("usageMetadata").map_or_else(Usage::default, |u| {
                let u = usage(Some(u));
                Usage {
                    output_tokens: 0,
                    reasoning_tokens: 0,
                    ..u
                }
            });
            out.push(StreamEvent::Start {
                id: self.id.clone(),
                model,
                usage: prompt,
            });
        }
        let candidate = v.pointer("/candidates/0");
        if let Some(parts) = candidate
            .and_then(|c| c.pointer("/content/parts"))
            .and_then(Value::as_array)
        {
            for p in parts {
                self.part(p, out)?;
            }
        }
        if let Some(u) = v.get("usageMetadata") {
            out.push(StreamEvent::Usage(usage(Some(u))));
        }
        if let Some(reason) = candidate
            .and_then(|c| c.get("finishReason"))
            .and_then(Value::as_str)
        {
            self.close(out);
            self.finished = true;
            out.push(StreamEvent::Finish {
                stop_reason: stop_reason(reason, self.calls > 0),
                stop_sequence: None,
            });
        }
        Ok(())
    }

    fn part(&mut self, p: &Value, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        let signature = p.get("thoughtSignature").and_then(Value::as_str);
        if let Some(c) = p.get("functionCall") {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad_answer("the provider's functionCall has no `name`"))?;
            self.close(out);
            if let Some(sig) = signature {
                let index = self.block(Open::Thinking, out);
                out.push(StreamEvent::ThinkingSignature {
                    index,
                    signature: format!("{SIGNATURE_PREFIX}{sig}"),
                });
                self.close(out);
            }
            let id = match c.get("id").and_then(Value::as_str) {
                Some(id) if !id.is_empty() => id.to_string(),
                _ => call_id(&self.id, self.calls),
            };
            self.calls += 1;
            let index = self.next_index;
            self.next_index += 1;
            out.push(StreamEvent::ToolCallStart {
                index,
                id,
                name: name.to_string(),
            });
            let args = c.get("args").cloned().unwrap_or_else(|| json!({}));
            out.push(StreamEvent::ToolCallDelta {
                index,
                arguments: args.to_string(),
            });
            out.push(StreamEvent::BlockStop { index });
            return Ok(());
        }
        if let Some(t) = p.get("text") {
            let text = t
                .as_str()
                .ok_or_else(|| bad_answer("the provider's text part is not a string"))?;
            if p.get("thought").and_then(Value::as_bool) == Some(true) {
                let index = self.block(Open::Thinking, out);
                if !text.is_empty() {
                    out.push(StreamEvent::ThinkingDelta {
                        index,
                        text: text.to_string(),
                    });
                }
                if let Some(sig) = signature {
                    out.push(StreamEvent::ThinkingSignature {
                        index,
                        signature: format!("{SIGNATURE_PREFIX}{sig}"),
                    });
                }
            } else if !text.is_empty() {
                let index = self.block(Open::Text, out);
                out.push(StreamEvent::TextDelta {
                    index,
                    text: text.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The end of the stream: the answer must have finished.
    pub fn finish(&mut self) -> Result<Vec<StreamEvent>, ProviderError> {
        if self.finished {
            Ok(Vec::new())
        } else {
            Err(bad_answer(
                "the provider's stream ended before the answer was complete",
            ))
        }
    }
}
