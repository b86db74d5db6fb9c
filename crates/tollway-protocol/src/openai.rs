//! OpenAI Chat Completions: requests, answers, stream chunks and errors, to and from canonical form.
//!
//! Reference: <https://platform.openai.com/docs/api-reference/chat>. Usage is normalised on the
//! way in (`prompt_tokens` includes cached tokens; canonical `input_tokens` does not).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tollway_core::{
    ApiFamily, ChatRequest, ChatResponse, ErrorKind, Extra, ImageSource, Label, Message, Part,
    ProviderError, ResponseFormat, Role, StopReason, StreamEvent, Target, ToolCall, ToolChoice,
    ToolDef, ToolResult, Usage,
};

use crate::json::{self, count, index, invalid_value, missing, wrong_type, Obj};
use crate::sse::{write_event, SseEvent};

// ------------------------------------------------------------------------------------------------
// Inbound request
// ------------------------------------------------------------------------------------------------

/// Decodes a client's `POST /v1/chat/completions` body.
///
/// The common shape (text messages and the usual sampling fields, nothing else) is read straight
/// into typed fields ([`fast`]); anything else, and every malformed body, takes the general path,
/// which reads a `Value` tree so that each error names its field. Both give the same request for
/// every body the fast path accepts (`tests.rs` checks every test body both ways).
pub fn decode_request(bytes: &[u8]) -> Result<ChatRequest, ProviderError> {
    json::fast_or_general(bytes, fast::decode, decode_request_general)
}

/// The common request shape, read without a `Value` tree: a third of the instructions of the
/// general path for a small chat (no key strings allocated, no map built and taken apart).
/// Every struct refuses unknown fields, and serde refuses duplicate ones, so a body with anything
/// the general path would treat specially (tools, `n`, extension fields, non-text content, tool
/// messages...) falls through to it; so does any body with a wrong type or a bad value, for the
/// general path's error.
pub(crate) mod fast {
    use std::borrow::Cow;

    use serde::Deserialize;
    use serde_json::Map;
    use tollway_core::{ApiFamily, ChatRequest, Extra, Message, Role};

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request<'a> {
        #[serde(borrow)]
        model: Cow<'a, str>,
        #[serde(borrow)]
        messages: Vec<Msg<'a>>,
        max_tokens: Option<u32>,
        max_completion_tokens: Option<u32>,
        temperature: Option<f64>,
        top_p: Option<f64>,
        stream: Option<bool>,
        stream_options: Option<StreamOptions>,
        #[serde(borrow)]
        user: Option<Cow<'a, str>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct StreamOptions {
        include_usage: Option<bool>,
    }

    /// A message whose content is a string. `name` is read and dropped, as the general path
    /// drops it.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Msg<'a> {
        #[serde(borrow)]
        role: Cow<'a, str>,
        #[serde(borrow)]
        content: Cow<'a, str>,
        #[serde(borrow, rename = "name")]
        _name: Option<Cow<'a, str>>,
    }

    /// The request, or `None` when the body is not of the common shape.
    pub(crate) fn decode(text: &str) -> Option<ChatRequest> {
        let r: Request<'_> = serde_json::from_str(text).ok()?;
        if r.messages.is_empty() {
            return None;
        }
        let mut messages = Vec::with_capacity(r.messages.len());
        for m in r.messages {
            let role = match &*m.role {
                "user" => Role::User,
                "system" | "developer" => Role::System,
                "assistant" => Role::Assistant,
                _ => return None,
            };
            messages.push(Message::text(role, m.content.into_owned()));
        }
        Some(ChatRequest {
            model: r.model.into_owned(),
            messages,
            max_tokens: r.max_completion_tokens.or(r.max_tokens),
            temperature: r.temperature,
            top_p: r.top_p,
            top_k: None,
            stop: Vec::new(),
            stream: r.stream.unwrap_or(false),
            include_usage: r.stream_options.and_then(|o| o.include_usage) == Some(true),
            tools: Vec::new(),
            tool_choice: None,
            parallel_tool_calls: None,
            response_format: None,
            user: r.user.map(Cow::into_owned),
            betas: Vec::new(),
            extra: Extra {
                family: ApiFamily::OpenAi,
                fields: Map::new(),
            },
        })
    }
}

/// [`decode_request`]'s general path: any body, every error naming its field.
fn decode_request_general(text: &str) -> Result<ChatRequest, ProviderError> {
    let mut o = Obj::new(json::parse_object_str(text)?, "");
    let model = o.req_str("model")?;
    let raw_messages = o.array("messages")?.ok_or_else(|| missing("messages"))?;
    if raw_messages.is_empty() {
        return Err(invalid_value(
            "messages",
            "at least one message is required",
        ));
    }
    let mut messages = Vec::with_capacity(raw_messages.len());
    for (i, m) in raw_messages.into_iter().enumerate() {
        decode_message(m, &index("messages", i), &mut messages)?;
    }
    let max_completion = o.u32("max_completion_tokens")?;
    let max_tokens = max_completion.or(o.u32("max_tokens")?);
    if max_completion.is_some() {
        o.map.remove("max_tokens");
    }
    let temperature = o.f64("temperature")?;
    let top_p = o.f64("top_p")?;
    let top_k = o.u32("top_k")?;
    let stop = o.strings("stop")?;
    let stream = o.bool("stream")?.unwrap_or(false);
    let include_usage = match o.obj("stream_options")? {
        Some(mut so) => so.bool("include_usage")?.unwrap_or(false),
        None => false,
    };
    let tools = match o.array("tools")? {
        None => Vec::new(),
        Some(a) => a
            .into_iter()
            .enumerate()
            .map(|(i, t)| decode_tool(t, &index("tools", i)))
            .collect::<Result<_, _>>()?,
    };
    let tool_choice = match o.take("tool_choice") {
        None => None,
        Some(v) => Some(decode_tool_choice(v)?),
    };
    let parallel_tool_calls = o.bool("parallel_tool_calls")?;
    let response_format = match o.obj("response_format")? {
        None => None,
        Some(rf) => Some(decode_response_format(rf)?),
    };
    let user = o.str("user")?;
    if let Some(n) = o.map.get("n") {
        if n.as_u64().is_some_and(|n| n > 1) {
            return Err(invalid_value(
                "n",
                "Tollway returns one choice per request; send n: 1 or leave it out",
            ));
        }
    }
    Ok(ChatRequest {
        model,
        messages,
        max_tokens,
        temperature,
        top_p,
        top_k,
        stop,
        stream,
        include_usage,
        tools,
        tool_choice,
        parallel_tool_calls,
        response_format,
        user,
        betas: Vec::new(),
        extra: Extra {
            family: ApiFamily::OpenAi,
            fields: o.into_rest(),
        },
    })
}

fn decode_message(v: Value, path: &str, out: &mut Vec<Message>) -> Result<(), ProviderError> {
    let mut m = Obj::from_value(v, path.to_string())?;
    let role = m.req_str("role")?;
    match role.as_str() {
        "system" | "developer" | "user" => {
            let content = match m.take("content") {
                None => return Err(missing(&m.path_of("content"))),
                Some(c) => decode_content(c, &m.path_of("content"), role != "user")?,
            };
            let role = if role == "user" {
                Role::User
            } else {
                Role::System
            };
            out.push(Message { role, content });
        }
        "assistant" => {
            let mut content = match m.take("content") {
                None => Vec::new(),
                Some(c) => decode_content(c, &m.path_of("content"), true)?,
            };
            if let Some(r) = m.str("refusal")? {
                if content.is_empty() {
                    content.push(Part::text(r));
                }
            }
            if let Some(calls) = m.array("tool_calls")? {
                let calls_path = m.path_of("tool_calls");
                for (i, c) in calls.into_iter().enumerate() {
                    let mut c = Obj::from_value(c, index(&calls_path, i))?;
                    let id = c.req_str("id")?;
                    if let Some(t) = c.str("type")? {
                        if t != "function" {
                            return Err(invalid_value(
                                &c.path_of("type"),
                                format!("only `function` tool calls are supported, got `{t}`"),
                            ));
                        }
                    }
                    let mut f = c
                        .obj("function")?
                        .ok_or_else(|| missing(&c.path_of("function")))?;
                    let name = f.req_str("name")?;
                    let arguments = f.str("arguments")?.unwrap_or_default();
                    content.push(Part::ToolCall(ToolCall {
                        id,
                        name,
                        arguments,
                    }));
                }
            }
            if m.map.contains_key("function_call") {
                return Err(invalid_value(
                    &m.path_of("function_call"),
                    "the deprecated `function_call` is not supported; use `tool_calls`",
                ));
            }
            out.push(Message {
                role: Role::Assistant,
                content,
            });
        }
        "tool" => {
            let tool_call_id = m.req_str("tool_call_id")?;
            let content = match m.take("content") {
                None => Vec::new(),
                Some(c) => decode_content(c, &m.path_of("content"), true)?,
            };
            let result = Part::ToolResult(ToolResult {
                tool_call_id,
                content,
                is_error: false,
            });
            // Consecutive tool messages answer one assistant turn: keep them in one message.
            push_to_turn(out, Role::Tool, result);
        }
        "function" => {
            return Err(invalid_value(
                &m.path_of("role"),
                "the deprecated `function` role is not supported; use `tool` messages",
            ))
        }
        other => {
            return Err(invalid_value(
                &m.path_of("role"),
                format!(
                    "unknown role `{other}` (expected system, developer, user, assistant or tool)"
                ),
            ))
        }
    }
    Ok(())
}

/// Message content: a string or an array of parts. `text_only`: images are not allowed here.
fn decode_content(v: Value, path: &str, text_only: bool) -> Result<Vec<Part>, ProviderError> {
    match v {
        Value::String(s) => Ok(vec![Part::text(s)]),
        Value::Array(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for (i, p) in parts.into_iter().enumerate() {
                let ppath = index(path, i);
                let mut p = Obj::from_value(p, ppath)?;
                let ty = p.req_str("type")?;
                match ty.as_str() {
                    "text" => out.push(Part::text(p.req_str("text")?)),
                    "refusal" => out.push(Part::text(p.req_str("refusal")?)),
                    "image_url" if !text_only => {
                        let url = match p.require("image_url")? {
                            Value::String(s) => s,
                            other => {
                                let mut io = Obj::from_value(other, p.path_of("image_url"))?;
                                io.req_str("url")?
                            }
                        };
                        out.push(Part::Image(ImageSource::from_url(&url)));
                    }
                    other => {
                        return Err(invalid_value(
                            &p.path_of("type"),
                            format!("content parts of type `{other}` are not supported here"),
                        ))
                    }
                }
            }
            Ok(out)
        }
        other => Err(wrong_type(
            path,
            "a string or an array of content parts",
            &other,
        )),
    }
}

/// Adds `part` to the last message when it has `role` (one turn: an assistant's calls, the
/// results that answer them), else starts a message of its own.
pub(crate) fn push_to_turn(out: &mut Vec<Message>, role: Role, part: Part) {
    match out.last_mut() {
        Some(prev) if prev.role == role => prev.content.push(part),
        _ => out.push(Message {
            role,
            content: vec![part],
        }),
    }
}

fn decode_tool(v: Value, path: &str) -> Result<ToolDef, ProviderError> {
    let mut t = Obj::from_value(v, path.to_string())?;
    let ty = t.str("type")?.unwrap_or_else(|| "function".into());
    if ty != "function" {
        return Err(invalid_value(
            &t.path_of("type"),
            format!("only `function` tools are supported, got `{ty}`"),
        ));
    }
    let mut f = t
        .obj("function")?
        .ok_or_else(|| missing(&t.path_of("function")))?;
    function_def(&mut f)
}

/// A function tool from the object holding its `name`, `description`, `parameters` (default:
/// an object schema without properties) and `strict`: Chat Completions' `tools[i].function`,
/// the Responses API's `tools[i]` itself.
pub(crate) fn function_def(f: &mut Obj) -> Result<ToolDef, ProviderError> {
    let name = f.req_str("name")?;
    let description = f.str("description")?;
    let parameters = match f.take("parameters") {
        None => json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p,
        Some(other) => return Err(wrong_type(&f.path_of("parameters"), "an object", &other)),
    };
    let strict = f.bool("strict")?;
    Ok(ToolDef {
        name,
        description,
        parameters,
        strict,
    })
}

fn decode_tool_choice(v: Value) -> Result<ToolChoice, ProviderError> {
    match v {
        Value::String(s) => tool_choice_mode(&s).ok_or_else(|| {
            invalid_value(
                "tool_choice",
                format!("expected `auto`, `none`, `required` or an object, got `{s}`"),
            )
        }),
        Value::Object(map) => {
            let mut o = Obj::new(map, "tool_choice");
            let mut f = o
                .obj("function")?
                .ok_or_else(|| missing("tool_choice.function"))?;
            Ok(ToolChoice::Tool(f.req_str("name")?))
        }
        other => Err(wrong_type("tool_choice", "a string or an object", &other)),
    }
}

/// A tool choice given as a word: `auto`, `none` or `required`.
pub(crate) fn tool_choice_mode(word: &str) -> Option<ToolChoice> {
    match word {
        "auto" => Some(ToolChoice::Auto),
        "none" => Some(ToolChoice::None),
        "required" => Some(ToolChoice::Required),
        _ => None,
    }
}

/// A `json_schema` format from the object holding its `name`, `description` and `strict`
/// (Chat Completions' `response_format.json_schema`, the Responses API's `text.format`), with
/// the `schema` the caller read.
pub(crate) fn json_schema_format(
    js: &mut Obj,
    schema: Value,
) -> Result<ResponseFormat, ProviderError> {
    Ok(ResponseFormat::JsonSchema {
        name: js.req_str("name")?,
        description: js.str("description")?,
        schema,
        strict: js.bool("strict")?,
    })
}

fn decode_response_format(mut rf: Obj) -> Result<ResponseFormat, ProviderError> {
    let ty = rf.req_str("type")?;
    match ty.as_str() {
        "text" => Ok(ResponseFormat::Text),
        "json_object" => Ok(ResponseFormat::JsonObject),
        "json_schema" => {
            let mut js = rf
                .obj("json_schema")?
                .ok_or_else(|| missing("response_format.json_schema"))?;
            let schema = js.take("schema").unwrap_or_else(|| json!({}));
            json_schema_format(&mut js, schema)
        }
        other => Err(invalid_value(
            "response_format.type",
            format!("expected `text`, `json_object` or `json_schema`, got `{other}`"),
        )),
    }
}

// ------------------------------------------------------------------------------------------------
// Outbound request
// ------------------------------------------------------------------------------------------------

/// How an OpenAI-format upstream wants some fields spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dialect {
    /// Send `max_tokens` (what most OpenAI-compatible servers know) instead of
    /// `max_completion_tokens` (what OpenAI's own newer models require).
    pub legacy_max_tokens: bool,
}

/// Fields of an Anthropic request that an OpenAI-format target can do without: their absence
/// changes nothing the client can observe in the answer.
const HARMLESS_FROM_ANTHROPIC: &[&str] = &[
    "metadata",
    "service_tier",
    "cache_control",
    "diagnostics",
    "user_profile_id",
    "workspace_id",
];

/// Encodes a canonical request for an OpenAI-format upstream. `label` (`provider/model`) names the
/// target in errors.
pub fn encode_request<'l>(
    req: &ChatRequest,
    label: impl Into<Label<'l>>,
    dialect: Dialect,
) -> Result<Vec<u8>, ProviderError> {
    encode_request_as(req, Target::of(req), label, dialect)
}

/// [`encode_request`] for `target`'s model and streaming, whatever `req` says.
pub fn encode_request_as<'l>(
    req: &ChatRequest,
    target: Target<'_>,
    label: impl Into<Label<'l>>,
    dialect: Dialect,
) -> Result<Vec<u8>, ProviderError> {
    Ok(request_body(req, target, label.into(), dialect)?.to_vec())
}

/// The upstream body of [`encode_request_as`], before it is written.
fn request_body<'a>(
    req: &'a ChatRequest,
    target: Target<'a>,
    label: Label<'_>,
    dialect: Dialect,
) -> Result<req_out::Body<'a>, ProviderError> {
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        encode_message(m, label, &mut messages)?;
    }
    let mut body = req_out::Body {
        model: target.model,
        messages,
        rest: Map::new(),
    };
    if let Some(n) = req.max_tokens {
        let key = if dialect.legacy_max_tokens {
            "max_tokens"
        } else {
            "max_completion_tokens"
        };
        body.rest.insert(key.into(), json!(n));
    }
    if let Some(t) = req.temperature {
        body.rest.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        body.rest.insert("top_p".into(), json!(p));
    }
    if let Some(k) = req.top_k {
        body.rest.insert("top_k".into(), json!(k));
    }
    if !req.stop.is_empty() {
        body.rest.insert("stop".into(), json!(req.stop));
    }
    if target.stream {
        body.rest.insert("stream".into(), Value::Bool(true));
        // Always ask for usage: the gateway prices every request from it.
        body.rest
            .insert("stream_options".into(), json!({"include_usage": true}));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut f = Map::new();
                f.insert("name".into(), Value::String(t.name.clone()));
                if let Some(d) = &t.description {
                    f.insert("description".into(), Value::String(d.clone()));
                }
                f.insert("parameters".into(), t.parameters.clone());
                if let Some(s) = t.strict {
                    f.insert("strict".into(), Value::Bool(s));
                }
                json!({"type": "function", "function": f})
            })
            .collect();
        body.rest.insert("tools".into(), Value::Array(tools));
    }
    if let Some(tc) = &req.tool_choice {
        let v = match tc {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
        };
        body.rest.insert("tool_choice".into(), v);
    }
    if let Some(p) = req.parallel_tool_calls {
        if !req.tools.is_empty() {
            body.rest
                .insert("parallel_tool_calls".into(), Value::Bool(p));
        }
    }
    if let Some(rf) = &req.response_format {
        let v = match rf {
            ResponseFormat::Text => json!({"type": "text"}),
            ResponseFormat::JsonObject => json!({"type": "json_object"}),
            ResponseFormat::JsonSchema {
                name,
                description,
                schema,
                strict,
            } => {
                let mut js = Map::new();
                js.insert("name".into(), Value::String(name.clone()));
                if let Some(d) = description {
                    js.insert("description".into(), Value::String(d.clone()));
                }
                js.insert("schema".into(), schema.clone());
                if let Some(s) = strict {
                    js.insert("strict".into(), Value::Bool(*s));
                }
                json!({"type": "json_schema", "json_schema": js})
            }
        };
        body.rest.insert("response_format".into(), v);
    }
    if let Some(u) = &req.user {
        body.rest.insert("user".into(), Value::String(u.clone()));
    }
    match req.extra.family {
        ApiFamily::OpenAi => {
            for (k, v) in &req.extra.fields {
                if !body.has(k) && k != "stream_options" {
                    body.rest.insert(k.clone(), v.clone());
                }
            }
        }
        ApiFamily::Anthropic => {
            for (k, v) in &req.extra.fields {
                if HARMLESS_FROM_ANTHROPIC.contains(&k.as_str()) {
                    continue;
                }
                if k == "thinking" && v.get("type").and_then(Value::as_str) == Some("disabled") {
                    continue;
                }
                if k == "speed" && v.as_str() == Some("standard") {
                    continue;
                }
                if k == "output_config" {
                    // `format` was decoded into `response_format`; `effort` has an equivalent.
                    let mut rest = v.as_object().cloned().unwrap_or_default();
                    if let Some(effort) = rest.remove("effort") {
                        match effort.as_str() {
                            Some(e @ ("low" | "medium" | "high" | "xhigh")) => {
                                body.rest.insert("reasoning_effort".into(), json!(e));
                            }
                            _ => {
                                return Err(ProviderError::unsupported(
                                    &format!("output_config.effort {effort}"),
                                    label,
                                )
                                .with_param("output_config.effort"))
                            }
                        }
                    }
                    if let Some(other) = rest.keys().next() {
                        return Err(ProviderError::unsupported(
                            &format!("the Anthropic parameter `output_config.{other}`"),
                            label,
                        ));
                    }
                    continue;
                }
                let feature = match k.as_str() {
                    "thinking" => "extended thinking (`thinking`)".to_string(),
                    "tools" => "Anthropic server tools".to_string(),
                    other => format!("the Anthropic parameter `{other}`"),
                };
                return Err(ProviderError::unsupported(&feature, label).with_param(k.clone()));
            }
        }
    }
    Ok(body)
}

fn text_or_parts<'a>(
    parts: &[&'a Part],
    label: Label<'_>,
    images: bool,
) -> Result<req_out::Content<'a>, ProviderError> {
    let texts: Vec<&'a str> = parts
        .iter()
        .copied()
        .filter_map(|p| match p {
            Part::Text { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let has_image = parts.iter().any(|p| matches!(p, Part::Image(_)));
    if !has_image {
        return Ok(match texts[..] {
            [] => req_out::Content::Text(""),
            [one] => req_out::Content::Text(one),
            _ => req_out::Content::Parts(
                texts
                    .into_iter()
                    .map(|text| req_out::ContentPart::Text { text })
                    .collect(),
            ),
        });
    }
    if !images {
        return Err(ProviderError::unsupported(
            "image input in this message",
            label,
        ));
    }
    Ok(req_out::Content::Parts(
        parts
            .iter()
            .copied()
            .filter_map(|p| match p {
                Part::Text { text, .. } => Some(req_out::ContentPart::Text { text }),
                Part::Image(src) => Some(req_out::ContentPart::ImageUrl {
                    image_url: req_out::ImageUrl { url: src.to_url() },
                }),
                _ => None,
            })
            .collect(),
    ))
}

fn encode_message<'a>(
    m: &'a Message,
    label: Label<'_>,
    out: &mut Vec<req_out::Message<'a>>,
) -> Result<(), ProviderError> {
    let msg = |role, content| req_out::Message {
        role,
        content,
        tool_call_id: None,
        tool_calls: Vec::new(),
    };
    // Tool results travel as `tool` messages, whatever role carried them canonically.
    // the other parts, borrowed: a message's text is copied once, into the upstream body
    let mut rest: Vec<&Part> = Vec::new();
    for p in &m.content {
        match p {
            Part::ToolResult(r) => {
                if r.content.iter().any(|p| matches!(p, Part::Image(_))) {
                    return Err(ProviderError::unsupported("images in tool results", label));
                }
                let mut text = r.text();
                if r.is_error && !text.starts_with("Error") {
                    text = format!("Error: {text}");
                }
                out.push(req_out::Message {
                    tool_call_id: Some(r.tool_call_id.as_str()),
                    ..msg("tool", req_out::Content::Owned(text))
                });
            }
            other => rest.push(other),
        }
    }
    match m.role {
        Role::Tool => {
            // Anything beside the results (rare) becomes a user turn after them.
            if rest
                .iter()
                .any(|p| matches!(p, Part::Text { .. } | Part::Image(_)))
            {
                out.push(msg("user", text_or_parts(&rest, label, true)?));
            }
        }
        Role::System => out.push(msg("system", text_or_parts(&rest, label, false)?)),
        Role::User => {
            let only_results = rest.is_empty() && !m.content.is_empty();
            if !only_results {
                out.push(msg("user", text_or_parts(&rest, label, true)?));
            }
        }
        Role::Assistant => {
            let mut text = String::new();
            let mut calls = Vec::new();
            for &p in &rest {
                match p {
                    Part::Text { text: t, .. } => text.push_str(t),
                    Part::ToolCall(c) => calls.push(out::ToolCall {
                        id: &c.id,
                        kind: "function",
                        function: out::Function {
                            name: &c.name,
                            arguments: &c.arguments,
                        },
                    }),
                    Part::Image(_) => {
                        return Err(ProviderError::unsupported(
                            "images in assistant messages",
                            label,
                        ))
                    }
                    // OpenAI-format models cannot take prior reasoning back; it is not needed.
                    Part::Thinking { .. } | Part::ToolResult(_) => {}
                }
            }
            let content = if text.is_empty() && !calls.is_empty() {
                req_out::Content::Null
            } else {
                req_out::Content::Owned(text)
            };
            out.push(req_out::Message {
                tool_calls: calls,
                ..msg("assistant", content)
            });
        }
    }
    Ok(())
}

/// An upstream request's messages, serialised from borrowed fields: the prompt is written
/// straight from the canonical request into the body, never copied into a `Value` tree.
mod req_out {
    #[cfg(test)]
    use serde::ser::{SerializeMap, Serializer};
    use serde::Serialize;
    use serde_json::{Map, Value};

    use crate::json::{put_entries, put_str, put_value};

    // The `Serialize` derives of `Content`, `Message` and `Body` are the reference `Body::to_vec`
    // is tested against: test builds only.
    #[cfg_attr(test, derive(Serialize))]
    #[cfg_attr(test, serde(untagged))]
    pub enum Content<'a> {
        Text(&'a str),
        Owned(String),
        Parts(Vec<ContentPart<'a>>),
        Null,
    }

    #[derive(Serialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub enum ContentPart<'a> {
        Text { text: &'a str },
        ImageUrl { image_url: ImageUrl },
    }

    #[derive(Serialize)]
    pub struct ImageUrl {
        pub url: String,
    }

    #[cfg_attr(test, derive(Serialize))]
    pub struct Message<'a> {
        pub role: &'static str,
        pub content: Content<'a>,
        #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
        pub tool_call_id: Option<&'a str>,
        #[cfg_attr(test, serde(skip_serializing_if = "Vec::is_empty"))]
        pub tool_calls: Vec<super::out::ToolCall<'a>>,
    }

    /// The whole body: model and messages typed, the rarer fields kept as JSON values.
    pub struct Body<'a> {
        pub model: &'a str,
        pub messages: Vec<Message<'a>>,
        pub rest: Map<String, Value>,
    }

    impl Body<'_> {
        /// Whether the body already has field `k` (an extra field never overrides it).
        pub fn has(&self, k: &str) -> bool {
            matches!(k, "model" | "messages") || self.rest.contains_key(k)
        }
    }

    impl Body<'_> {
        /// The body as JSON, byte for byte what its `Serialize` gives, written from fragments:
        /// the prompt's text goes through [`json::put_str`](crate::json::put_str), which copies
        /// a string that needs no escape whole instead of checking it byte by byte, and the fixed
        /// keys are not escaped.
        pub fn to_vec(&self) -> Vec<u8> {
            let text: usize = self.messages.iter().map(Message::text_len).sum();
            let mut out = Vec::with_capacity(128 + self.model.len() + text);
            out.extend_from_slice(b"{\"model\":");
            put_str(&mut out, self.model);
            out.extend_from_slice(b",\"messages\":[");
            for (i, m) in self.messages.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                m.write(&mut out);
            }
            out.push(b']');
            put_entries(&mut out, &self.rest);
            out.push(b'}');
            out
        }
    }

    impl Message<'_> {
        fn text_len(&self) -> usize {
            match &self.content {
                Content::Text(t) => t.len() + 32,
                Content::Owned(t) => t.len() + 32,
                Content::Parts(p) => 64 * p.len() + 32,
                Content::Null => 32,
            }
        }

        fn write(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(b"{\"role\":");
            put_str(out, self.role);
            out.extend_from_slice(b",\"content\":");
            match &self.content {
                Content::Text(t) => put_str(out, t),
                Content::Owned(t) => put_str(out, t),
                Content::Parts(p) => put_value(out, p),
                Content::Null => out.extend_from_slice(b"null"),
            }
            if let Some(id) = self.tool_call_id {
                out.extend_from_slice(b",\"tool_call_id\":");
                put_str(out, id);
            }
            if !self.tool_calls.is_empty() {
                out.extend_from_slice(b",\"tool_calls\":");
                put_value(out, &self.tool_calls);
            }
            out.push(b'}');
        }
    }

    /// The reference the hand-written [`Body::to_vec`] is tested against.
    #[cfg(test)]
    impl Serialize for Body<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(None)?;
            m.serialize_entry("model", self.model)?;
            m.serialize_entry("messages", &self.messages)?;
            for (k, v) in &self.rest {
                m.serialize_entry(k, v)?;
            }
            m.end()
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Answers
// ------------------------------------------------------------------------------------------------

fn finish_reason(r: &StopReason) -> &'static str {
    match r {
        StopReason::EndTurn | StopReason::StopSequence => "stop",
        StopReason::MaxTokens => "length",
        StopReason::ToolUse => "tool_calls",
        StopReason::ContentFilter => "content_filter",
        StopReason::Other(s) if s == "refusal" => "content_filter",
        StopReason::Other(_) => "stop",
    }
}

fn stop_reason(s: &str) -> StopReason {
    match s {
        "stop" => StopReason::EndTurn,
        "length" => StopReason::MaxTokens,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "content_filter" => StopReason::ContentFilter,
        other => StopReason::Other(other.to_string()),
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens(),
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens(),
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": u.reasoning_tokens, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
        }
    })
}

/// A `chat.completion` object as Tollway writes it (serialised straight from borrowed fields).
mod out {
    use serde::Serialize;

    #[derive(Serialize)]
    pub struct ToolCall<'a> {
        pub id: &'a str,
        #[serde(rename = "type")]
        pub kind: &'static str,
        pub function: Function<'a>,
    }

    #[derive(Serialize)]
    pub struct Function<'a> {
        pub name: &'a str,
        pub arguments: &'a str,
    }

    /// What every `chat.completion.chunk` of a stream starts with.
    #[derive(Serialize)]
    pub struct ChunkHead<'a> {
        pub id: &'a str,
        pub object: &'static str,
        pub created: u64,
        pub model: &'a str,
        pub system_fingerprint: Option<()>,
    }

    #[derive(Serialize)]
    pub struct RoleDelta {
        pub role: &'static str,
        pub content: &'static str,
        pub refusal: Option<()>,
    }

    #[derive(Serialize)]
    pub struct EmptyDelta {}

    #[derive(Serialize)]
    pub struct ToolsDelta<'a> {
        pub tool_calls: [ToolCallDelta<'a>; 1],
    }

    #[derive(Serialize)]
    pub struct ToolCallDelta<'a> {
        pub index: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub id: Option<&'a str>,
        #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
        pub kind: Option<&'static str>,
        pub function: FunctionDelta<'a>,
    }

    #[derive(Serialize)]
    pub struct FunctionDelta<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub name: Option<&'a str>,
        pub arguments: &'a str,
    }

    #[derive(Serialize)]
    pub struct Usage {
        pub prompt_tokens: u64,
        pub completion_tokens: u64,
        pub total_tokens: u64,
        pub prompt_tokens_details: PromptDetails,
        pub completion_tokens_details: CompletionDetails,
    }

    #[derive(Serialize)]
    pub struct PromptDetails {
        pub cached_tokens: u64,
        pub audio_tokens: u64,
    }

    #[derive(Serialize)]
    pub struct CompletionDetails {
        pub reasoning_tokens: u64,
        pub audio_tokens: u64,
        pub accepted_prediction_tokens: u64,
        pub rejected_prediction_tokens: u64,
    }

    impl Usage {
        /// Appends this usage object as serde would write it, from fixed fragments: its twelve
        /// keys are not escaped again on every answer.
        pub fn write(&self, out: &mut Vec<u8>) {
            let mut n = itoa::Buffer::new();
            let mut num = |out: &mut Vec<u8>, v: u64| out.extend_from_slice(n.format(v).as_bytes());
            out.extend_from_slice(b"{\"prompt_tokens\":");
            num(out, self.prompt_tokens);
            out.extend_from_slice(b",\"completion_tokens\":");
            num(out, self.completion_tokens);
            out.extend_from_slice(b",\"total_tokens\":");
            num(out, self.total_tokens);
            out.extend_from_slice(b",\"prompt_tokens_details\":{\"cached_tokens\":");
            num(out, self.prompt_tokens_details.cached_tokens);
            out.extend_from_slice(b",\"audio_tokens\":");
            num(out, self.prompt_tokens_details.audio_tokens);
            out.extend_from_slice(b"},\"completion_tokens_details\":{\"reasoning_tokens\":");
            num(out, self.completion_tokens_details.reasoning_tokens);
            out.extend_from_slice(b",\"audio_tokens\":");
            num(out, self.completion_tokens_details.audio_tokens);
            out.extend_from_slice(b",\"accepted_prediction_tokens\":");
            num(
                out,
                self.completion_tokens_details.accepted_prediction_tokens,
            );
            out.extend_from_slice(b",\"rejected_prediction_tokens\":");
            num(
                out,
                self.completion_tokens_details.rejected_prediction_tokens,
            );
            out.extend_from_slice(b"}}");
        }

        pub fn of(u: &tollway_core::Usage) -> Self {
            Usage {
                prompt_tokens: u.prompt_tokens(),
                completion_tokens: u.output_tokens,
                total_tokens: u.total_tokens(),
                prompt_tokens_details: PromptDetails {
                    cached_tokens: u.cache_read_tokens,
                    audio_tokens: 0,
                },
                completion_tokens_details: CompletionDetails {
                    reasoning_tokens: u.reasoning_tokens,
                    audio_tokens: 0,
                    accepted_prediction_tokens: 0,
                    rejected_prediction_tokens: 0,
                },
            }
        }
    }
}

/// Encodes a canonical answer as a `chat.completion` object for an OpenAI client.
///
/// Written as fixed fragments with the variable parts escaped between them: every key of this
/// fixed shape would otherwise be escaped byte by byte on every answer (the answer's encoding was
/// 7% of a small request's instructions).
pub fn encode_response(r: &ChatResponse) -> Vec<u8> {
    let text = r.text();
    let tool_calls: Vec<out::ToolCall<'_>> = r
        .content
        .iter()
        .filter_map(|p| match p {
            Part::ToolCall(c) => Some(out::ToolCall {
                id: &c.id,
                kind: "function",
                function: out::Function {
                    name: &c.name,
                    arguments: &c.arguments,
                },
            }),
            _ => None,
        })
        .collect();
    let args: usize = tool_calls
        .iter()
        .map(|c| c.function.arguments.len() + 64)
        .sum();
    let mut b = Vec::with_capacity(640 + r.id.len() + r.model.len() + text.len() + args);
    b.extend_from_slice(b"{\"id\":");
    json::put_str(&mut b, &r.id);
    b.extend_from_slice(b",\"object\":\"chat.completion\",\"created\":");
    json::put_value(&mut b, &r.created);
    b.extend_from_slice(b",\"model\":");
    json::put_str(&mut b, &r.model);
    b.extend_from_slice(
        b",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":",
    );
    if text.is_empty() && !tool_calls.is_empty() {
        b.extend_from_slice(b"null");
    } else {
        json::put_str(&mut b, &text);
    }
    b.extend_from_slice(b",\"refusal\":null");
    if !tool_calls.is_empty() {
        b.extend_from_slice(b",\"tool_calls\":");
        json::put_value(&mut b, &tool_calls);
    }
    b.extend_from_slice(b",\"annotations\":[]},\"logprobs\":null,\"finish_reason\":");
    json::put_str(&mut b, finish_reason(&r.stop_reason));
    b.extend_from_slice(b"}],\"usage\":");
    out::Usage::of(&r.usage).write(&mut b);
    b.extend_from_slice(b",\"system_fingerprint\":null}");
    b
}

fn bad_answer(msg: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorKind::InvalidResponse, msg)
}

/// The parts of a `chat.completion` answer Tollway reads, typed and lenient (a field of another
/// type reads as absent), borrowing strings from the body.
mod wire {
    use crate::json::lax;
    use crate::scan::{scan_count, scan_first, scan_obj, scan_str, scan_u64, Scan, Seen};
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct Completion<'a> {
        #[serde(borrow, default)]
        pub id: lax::Str<'a>,
        #[serde(borrow, default)]
        pub model: lax::Str<'a>,
        #[serde(default)]
        pub created: lax::U64,
        #[serde(borrow, default)]
        pub choices: lax::First<Choice<'a>>,
        #[serde(default)]
        pub usage: lax::Obj<Usage>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct Choice<'a> {
        #[serde(borrow, default)]
        pub message: lax::Obj<Message<'a>>,
        #[serde(borrow, default)]
        pub finish_reason: lax::Str<'a>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct Message<'a> {
        #[serde(borrow, default)]
        pub reasoning_content: lax::Str<'a>,
        #[serde(borrow, default)]
        pub content: lax::Str<'a>,
        #[serde(borrow, default)]
        pub refusal: lax::Str<'a>,
        #[serde(borrow, default)]
        pub tool_calls: lax::Seq<ToolCall<'a>>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct ToolCall<'a> {
        #[serde(borrow, default)]
        pub id: lax::Str<'a>,
        #[serde(borrow, default)]
        pub function: lax::Obj<Function<'a>>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct Function<'a> {
        #[serde(borrow, default)]
        pub name: lax::Str<'a>,
        #[serde(borrow, default)]
        pub arguments: lax::Str<'a>,
    }

    impl<'a> Completion<'a> {
        /// The usual answer (text, reasoning or a refusal, a finish reason, usage) without
        /// serde; `None` for anything else (tool calls, several choices...), which serde then
        /// reads (see `crate::scan`).
        pub fn scan(text: &'a str) -> Option<Self> {
            let mut s = Scan::new(text);
            let mut c = Completion {
                id: lax::Str(None),
                model: lax::Str(None),
                created: lax::U64(None),
                choices: lax::First(None),
                usage: lax::Obj(None),
            };
            let mut seen = Seen::default();
            s.object(|s, key| match key {
                "id" => seen.read(0, &mut c.id, s, scan_str),
                "model" => seen.read(1, &mut c.model, s, scan_str),
                "created" => seen.read(2, &mut c.created, s, scan_u64),
                "choices" => seen.read(3, &mut c.choices, s, |s| scan_first(s, Choice::scan)),
                "usage" => seen.read(4, &mut c.usage, s, |s| scan_obj(s, Usage::scan)),
                _ => s.skip(),
            })?;
            s.end()?;
            Some(c)
        }
    }

    impl<'a> Choice<'a> {
        fn scan(s: &mut Scan<'a>) -> Option<Self> {
            let mut c = Choice {
                message: lax::Obj(None),
                finish_reason: lax::Str(None),
            };
            let mut seen = Seen::default();
            s.object(|s, key| match key {
                "message" => seen.read(0, &mut c.message, s, |s| scan_obj(s, Message::scan)),
                "finish_reason" => seen.read(1, &mut c.finish_reason, s, scan_str),
                _ => s.skip(),
            })?;
            Some(c)
        }
    }

    impl<'a> Message<'a> {
        fn scan(s: &mut Scan<'a>) -> Option<Self> {
            let mut m = Message {
                reasoning_content: lax::Str(None),
                content: lax::Str(None),
                refusal: lax::Str(None),
                tool_calls: lax::Seq(Vec::new()),
            };
            let mut seen = Seen::default();
            s.object(|s, key| match key {
                "reasoning_content" => seen.read(0, &mut m.reasoning_content, s, scan_str),
                "content" => seen.read(1, &mut m.content, s, scan_str),
                "refusal" => seen.read(2, &mut m.refusal, s, scan_str),
                // tool calls: serde (`null` and `[]` are none)
                "tool_calls" => {
                    seen.first(3)?;
                    if s.null() {
                        return Some(());
                    }
                    s.array(|_, _| None)
                }
                _ => s.skip(),
            })?;
            Some(m)
        }
    }

    impl Usage {
        fn scan(s: &mut Scan<'_>) -> Option<Self> {
            let mut u = Usage::default();
            let mut seen = Seen::default();
            s.object(|s, key| match key {
                "prompt_tokens" => seen.read(0, &mut u.prompt_tokens, s, scan_count),
                "completion_tokens" => seen.read(1, &mut u.completion_tokens, s, scan_count),
                "prompt_tokens_details" => {
                    seen.first(2)?;
                    u.prompt_tokens_details = scan_obj(s, |s| {
                        let mut d = PromptDetails::default();
                        let mut seen = Seen::default();
                        s.object(|s, key| match key {
                            "cached_tokens" => seen.read(0, &mut d.cached_tokens, s, scan_count),
                            _ => s.skip(),
                        })?;
                        Some(d)
                    })?;
                    Some(())
                }
                "completion_tokens_details" => {
                    seen.first(3)?;
                    u.completion_tokens_details = scan_obj(s, |s| {
                        let mut d = CompletionDetails::default();
                        let mut seen = Seen::default();
                        s.object(|s, key| match key {
                            "reasoning_tokens" => {
                                seen.read(0, &mut d.reasoning_tokens, s, scan_count)
                            }
                            _ => s.skip(),
                        })?;
                        Some(d)
                    })?;
                    Some(())
                }
                _ => s.skip(),
            })?;
            Some(u)
        }
    }

    impl<'a> Chunk<'a> {
        /// The usual chunk (text or reasoning deltas, a finish reason, `usage: null`) without
        /// serde; `None` for anything else, which serde then reads (see `crate::scan`).
        pub fn scan(text: &'a str) -> Option<Self> {
            let mut s = Scan::new(text);
            let mut c = Chunk {
                id: lax::Str(None),
                model: lax::Str(None),
                choices: lax::First(None),
                usage: lax::Obj(None),
                error: None,
            };
            let mut seen = Seen::default();
            s.object(|s, key| match key {
                "id" => seen.read(0, &mut c.id, s, scan_str),
                "model" => seen.read(1, &mut c.model, s, scan_str),
                "choices" => seen.read(2, &mut c.choices, s, |s| scan_first(s, ChunkChoice::scan)),
                // the last chunk's usage, and errors: serde
                "usage" => {
                    seen.first(3)?;
                    s.null().then_some(())
                }
                "error" => None,
                _ => s.skip(),
            })?;
            s.end()?;
            Some(c)
        }
    }

    impl<'a> ChunkChoice<'a> {
        fn scan(s: &mut Scan<'a>) -> Option<Self> {
            let mut c = ChunkChoice {
                delta: lax::Obj(None),
                finish_reason: lax::Str(None),
            };
            let mut seen = Seen::default();
            s.object(|s, key| match key {
                "delta" => seen.read(0, &mut c.delta, s, |s| scan_obj(s, Delta::scan)),
                "finish_reason" => seen.read(1, &mut c.finish_reason, s, scan_str),
                _ => s.skip(),
            })?;
            Some(c)
        }
    }

    impl<'a> Delta<'a> {
        fn scan(s: &mut Scan<'a>) -> Option<Self> {
            let mut d = Delta {
                reasoning_content: lax::Str(None),
                content: lax::Str(None),
                tool_calls: lax::Seq(Vec::new()),
            };
            let mut seen = Seen::default();
            s.object(|s, key| match key {
                "reasoning_content" => seen.read(0, &mut d.reasoning_content, s, scan_str),
                "content" => seen.read(1, &mut d.content, s, scan_str),
                // tool-call deltas: serde
                "tool_calls" => {
                    seen.first(2)?;
                    s.null().then_some(())
                }
                _ => s.skip(),
            })?;
            Some(d)
        }
    }

    /// One `chat.completion.chunk` of an upstream stream.
    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct Chunk<'a> {
        #[serde(borrow, default)]
        pub id: lax::Str<'a>,
        #[serde(borrow, default)]
        pub model: lax::Str<'a>,
        #[serde(borrow, default)]
        pub choices: lax::First<ChunkChoice<'a>>,
        #[serde(default)]
        pub usage: lax::Obj<Usage>,
        /// A mid-stream error (`{"error": {"message", "type"}}`).
        #[serde(default)]
        pub error: Option<serde_json::Value>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct ChunkChoice<'a> {
        #[serde(borrow, default)]
        pub delta: lax::Obj<Delta<'a>>,
        #[serde(borrow, default)]
        pub finish_reason: lax::Str<'a>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct Delta<'a> {
        #[serde(borrow, default)]
        pub reasoning_content: lax::Str<'a>,
        #[serde(borrow, default)]
        pub content: lax::Str<'a>,
        #[serde(borrow, default)]
        pub tool_calls: lax::Seq<ToolDelta<'a>>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct ToolDelta<'a> {
        #[serde(default)]
        pub index: lax::U64,
        #[serde(borrow, default)]
        pub id: lax::Str<'a>,
        #[serde(borrow, default)]
        pub function: lax::Obj<Function<'a>>,
    }

    #[derive(Deserialize, Default)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct Usage {
        #[serde(default)]
        pub prompt_tokens: lax::Count,
        #[serde(default)]
        pub completion_tokens: lax::Count,
        #[serde(default)]
        pub prompt_tokens_details: lax::Obj<PromptDetails>,
        #[serde(default)]
        pub completion_tokens_details: lax::Obj<CompletionDetails>,
    }

    #[derive(Deserialize, Default)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct PromptDetails {
        #[serde(default)]
        pub cached_tokens: lax::Count,
    }

    #[derive(Deserialize, Default)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct CompletionDetails {
        #[serde(default)]
        pub reasoning_tokens: lax::Count,
    }

    impl Usage {
        pub fn canonical(&self) -> tollway_core::Usage {
            let prompt = self.prompt_tokens.0;
            let cached = self
                .prompt_tokens_details
                .0
                .as_ref()
                .map_or(0, |d| d.cached_tokens.0)
                .min(prompt);
            tollway_core::Usage {
                input_tokens: prompt - cached,
                output_tokens: self.completion_tokens.0,
                cache_read_tokens: cached,
                cache_write_tokens: 0,
                reasoning_tokens: self
                    .completion_tokens_details
                    .0
                    .as_ref()
                    .map_or(0, |d| d.reasoning_tokens.0),
            }
        }
    }
}

/// Decodes an OpenAI-format upstream's `chat.completion` answer.
pub fn decode_response(bytes: &[u8]) -> Result<ChatResponse, ProviderError> {
    // the usual shape without serde; anything else (and every error) through serde
    let v = match std::str::from_utf8(bytes)
        .ok()
        .and_then(wire::Completion::scan)
    {
        Some(v) => v,
        None => json::parse_upstream_as::<wire::Completion<'_>>(bytes, "an answer")?,
    };
    let choice = v
        .choices
        .0
        .as_ref()
        .ok_or_else(|| bad_answer("the provider's answer has no choices"))?;
    let msg = choice
        .message
        .0
        .as_ref()
        .ok_or_else(|| bad_answer("the provider's answer has no message"))?;
    let mut content = Vec::new();
    if let Some(r) = msg.reasoning_content.as_str() {
        if !r.is_empty() {
            content.push(Part::Thinking {
                text: r.to_string(),
                signature: None,
            });
        }
    }
    if let Some(t) = msg.content.as_str() {
        if !t.is_empty() {
            content.push(Part::text(t));
        }
    }
    if let Some(r) = msg.refusal.as_str() {
        content.push(Part::text(r));
    }
    for c in &msg.tool_calls.0 {
        let f = c.function.0.as_ref();
        content.push(Part::ToolCall(ToolCall {
            id: c.id.as_str().unwrap_or_default().to_string(),
            name: f
                .and_then(|f| f.name.as_str())
                .unwrap_or_default()
                .to_string(),
            arguments: f
                .and_then(|f| f.arguments.as_str())
                .unwrap_or_default()
                .to_string(),
        }));
    }
    let stop = match choice.finish_reason.as_str() {
        Some(s) => stop_reason(s),
        None => StopReason::EndTurn,
    };
    Ok(ChatResponse {
        id: v.id.as_str().unwrap_or_default().to_string(),
        model: v.model.as_str().unwrap_or_default().to_string(),
        content,
        stop_reason: stop,
        stop_sequence: None,
        usage: v
            .usage
            .0
            .as_ref()
            .map(wire::Usage::canonical)
            .unwrap_or_default(),
        created: v.created.0.unwrap_or_else(json::now_unix),
    })
}

// ------------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------------

/// The `type` and `code` an OpenAI client sees for each kind of error.
pub(crate) fn error_type_code(kind: ErrorKind) -> (&'static str, Option<&'static str>) {
    match kind {
        ErrorKind::InvalidRequest => ("invalid_request_error", None),
        ErrorKind::ContextWindowExceeded => {
            ("invalid_request_error", Some("context_length_exceeded"))
        }
        ErrorKind::ContentPolicy => ("invalid_request_error", Some("content_policy_violation")),
        ErrorKind::Authentication => ("invalid_request_error", Some("invalid_api_key")),
        ErrorKind::PermissionDenied => ("permission_error", Some("permission_denied")),
        ErrorKind::NotFound => ("invalid_request_error", Some("not_found")),
        ErrorKind::RequestTooLarge => ("invalid_request_error", Some("request_too_large")),
        ErrorKind::RateLimited => ("rate_limit_error", Some("rate_limit_exceeded")),
        ErrorKind::BudgetExceeded => ("insufficient_quota", Some("budget_exceeded")),
        ErrorKind::Overloaded => ("server_error", Some("overloaded")),
        ErrorKind::Upstream | ErrorKind::UpstreamConfig => ("server_error", Some("upstream_error")),
        ErrorKind::Timeout => ("server_error", Some("timeout")),
        ErrorKind::Connection => ("server_error", Some("upstream_unreachable")),
        ErrorKind::InvalidResponse => ("server_error", Some("invalid_upstream_response")),
        ErrorKind::Internal => ("server_error", Some("internal_error")),
    }
}

fn error_json(e: &ProviderError) -> Value {
    let (ty, code) = error_type_code(e.kind);
    json!({"error": {"message": e.message, "type": ty, "param": e.param, "code": code}})
}

/// The body of an error answer in OpenAI's shape.
pub fn encode_error(e: &ProviderError) -> Vec<u8> {
    serde_json::to_vec(&error_json(e)).unwrap_or_default()
}

/// Classifies an OpenAI-format upstream's error answer.
pub fn decode_error(status: u16, body: &[u8], retry_after: Option<Duration>) -> ProviderError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let message = err
        .and_then(|e| match e {
            Value::String(s) => Some(s.clone()),
            e => e.get("message").and_then(Value::as_str).map(str::to_string),
        })
        .unwrap_or_else(|| fallback_message(status, body));
    let code = err.and_then(|e| e.get("code")).and_then(Value::as_str);
    let mut e = ProviderError::from_upstream_status(status, message, retry_after);
    if let Some(p) = err.and_then(|e| e.get("param")).and_then(Value::as_str) {
        e.param = Some(p.to_string());
    }
    if e.kind == ErrorKind::InvalidRequest {
        let lower = e.message.to_ascii_lowercase();
        if code == Some("context_length_exceeded")
            || lower.contains("maximum context length")
            || lower.contains("context window")
        {
            e.kind = ErrorKind::ContextWindowExceeded;
        } else if matches!(code, Some("content_policy_violation" | "content_filter")) {
            e.kind = ErrorKind::ContentPolicy;
        }
    }
    e
}

/// A message for an error body the upstream did not shape as documented.
pub(crate) fn fallback_message(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    let text = text.trim();
    if text.is_empty() {
        format!("the provider answered HTTP {status}")
    } else {
        format!("the provider answered HTTP {status}: {text}")
    }
}

// ------------------------------------------------------------------------------------------------
// Streams
// ------------------------------------------------------------------------------------------------

/// Turns an OpenAI-format upstream's `chat.completion.chunk` events into canonical events.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    started: bool,
    /// The canonical index of the open block, and whether it is text (true) or thinking (false).
    open: Option<(u32, BlockKind)>,
    next_index: u32,
    /// OpenAI tool-call index → canonical block index.
    tools: HashMap<u64, u32>,
    finished: bool,
    done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Text,
    Thinking,
    Tool,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    fn block(&mut self, kind: BlockKind, out: &mut Vec<StreamEvent>) -> u32 {
        if let Some((i, k)) = self.open {
            if k == kind && kind != BlockKind::Tool {
                return i;
            }
            out.push(StreamEvent::BlockStop { index: i });
        }
        let i = self.next_index;
        self.next_index += 1;
        self.open = Some((i, kind));
        i
    }

    pub fn feed(&mut self, ev: &SseEvent) -> Result<Vec<StreamEvent>, ProviderError> {
        let mut out = Vec::new();
        self.feed_into(ev, &mut out)?;
        Ok(out)
    }

    /// Decodes one SSE event into canonical events, appended to `out` (on an error, what was
    /// appended is to be dropped). [`feed`](Self::feed) returns them in a new `Vec` instead.
    pub fn feed_into(
        &mut self,
        ev: &SseEvent,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), ProviderError> {
        if self.done {
            return Ok(());
        }
        let data = ev.data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        // the usual shape without serde; anything else (and every error) through serde
        let v = match wire::Chunk::scan(data) {
            Some(v) => v,
            None => json::parse_upstream_str_as::<wire::Chunk<'_>>(data, "a stream chunk")?,
        };
        if let Some(err) = &v.error {
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .or(err.as_str())
                .unwrap_or("the provider reported an error mid-stream")
                .to_string();
            let kind = match err.get("type").and_then(Value::as_str) {
                Some("rate_limit_error" | "rate_limit_exceeded") => ErrorKind::RateLimited,
                Some("invalid_request_error") => ErrorKind::InvalidRequest,
                _ => ErrorKind::Upstream,
            };
            return Err(ProviderError::new(kind, message));
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: v.id.as_str().unwrap_or_default().to_string(),
                model: v.model.as_str().unwrap_or_default().to_string(),
                usage: Usage::default(),
            });
        }
        if let Some(choice) = &v.choices.0 {
            if let Some(delta) = &choice.delta.0 {
                if let Some(t) = delta.reasoning_content.as_str() {
                    if !t.is_empty() {
                        let index = self.block(BlockKind::Thinking, out);
                        out.push(StreamEvent::ThinkingDelta {
                            index,
                            text: t.to_string(),
                        });
                    }
                }
                if let Some(t) = delta.content.as_str() {
                    if !t.is_empty() {
                        let index = self.block(BlockKind::Text, out);
                        out.push(StreamEvent::TextDelta {
                            index,
                            text: t.to_string(),
                        });
                    }
                }
                for (pos, c) in delta.tool_calls.0.iter().enumerate() {
                    let oi = c.index.0.unwrap_or(pos as u64);
                    let f = c.function.0.as_ref();
                    let index = match self.tools.get(&oi) {
                        Some(&i) => i,
                        None => {
                            let i = self.block(BlockKind::Tool, out);
                            self.tools.insert(oi, i);
                            out.push(StreamEvent::ToolCallStart {
                                index: i,
                                id: c.id.as_str().unwrap_or_default().to_string(),
                                name: f
                                    .and_then(|f| f.name.as_str())
                                    .unwrap_or_default()
                                    .to_string(),
                            });
                            i
                        }
                    };
                    if let Some(a) = f.and_then(|f| f.arguments.as_str()) {
                        if !a.is_empty() {
                            out.push(StreamEvent::ToolCallDelta {
                                index,
                                arguments: a.to_string(),
                            });
                        }
                    }
                }
            }
            if let Some(fr) = choice.finish_reason.as_str() {
                if let Some((i, _)) = self.open.take() {
                    out.push(StreamEvent::BlockStop { index: i });
                }
                self.finished = true;
                out.push(StreamEvent::Finish {
                    stop_reason: stop_reason(fr),
                    stop_sequence: None,
                });
            }
        }
        if let Some(u) = &v.usage.0 {
            out.push(StreamEvent::Usage(u.canonical()));
        }
        Ok(())
    }

    /// The upstream's body ended. A stream that never said why it finished was cut short.
    pub fn finish(&mut self) -> Result<Vec<StreamEvent>, ProviderError> {
        if self.finished {
            Ok(Vec::new())
        } else {
            Err(bad_answer(
                "the provider's stream ended before it finished the answer",
            ))
        }
    }
}

/// Writes canonical events as `chat.completion.chunk` SSE events for an OpenAI client.
#[derive(Debug)]
pub struct StreamEncoder {
    include_usage: bool,
    id: String,
    model: String,
    created: u64,
    started: bool,
    usage: Usage,
    /// Canonical block index → OpenAI tool-call index.
    tools: HashMap<u32, u32>,
    finished: bool,
    cost_usd: Option<String>,
    /// The rendered start of every chunk (see `chunk`); empty until the first one.
    prefix: Vec<u8>,
}

impl StreamEncoder {
    pub fn new(include_usage: bool) -> Self {
        StreamEncoder {
            cost_usd: None,
            include_usage,
            id: String::new(),
            model: String::new(),
            created: json::now_unix(),
            started: false,
            usage: Usage::default(),
            tools: HashMap::new(),
            finished: false,
            prefix: Vec::new(),
        }
    }

    /// Writes one `chat.completion.chunk` event. Everything before the delta is the same for
    /// the whole stream, so it is rendered once and copied.
    fn chunk<D: serde::Serialize>(&mut self, delta: D, finish: Option<&str>, out: &mut Vec<u8>) {
        self.chunk_start(out);
        // Plain data with string keys: serialising cannot fail.
        if serde_json::to_writer(&mut *out, &delta).is_err() {
            out.extend_from_slice(b"{}");
        }
        self.chunk_end(finish, out);
    }

    /// [`chunk`](Self::chunk) for the commonest delta, a piece of text, written without serde:
    /// one per streamed token.
    fn text_chunk(&mut self, text: &str, out: &mut Vec<u8>) {
        self.chunk_start(out);
        out.extend_from_slice(b"{\"content\":");
        json::put_str(out, text);
        out.push(b'}');
        self.chunk_end(None, out);
    }

    fn chunk_start(&mut self, out: &mut Vec<u8>) {
        if self.prefix.is_empty() {
            let head = out::ChunkHead {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                system_fingerprint: None,
            };
            // `{"id":…,"system_fingerprint":null}` → `{"id":…,"system_fingerprint":null,"choices":[{"index":0,"delta":`
            self.prefix = serde_json::to_vec(&head).unwrap_or_else(|_| b"{}".to_vec());
            self.prefix.pop();
            self.prefix
                .extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":");
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&self.prefix);
    }

    fn chunk_end(&mut self, finish: Option<&str>, out: &mut Vec<u8>) {
        out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
        match finish {
            Some(f) => {
                if serde_json::to_writer(&mut *out, f).is_err() {
                    out.extend_from_slice(b"null");
                }
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}]");
        if self.include_usage {
            out.extend_from_slice(b",\"usage\":null");
        }
        out.extend_from_slice(b"}\n\n");
    }

    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            if self.id.is_empty() {
                self.id = "chatcmpl-tollway".into();
            }
            self.chunk(
                out::RoleDelta {
                    role: "assistant",
                    content: "",
                    refusal: None,
                },
                None,
                out,
            );
        }
    }

    pub fn push(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        match ev {
            StreamEvent::Start { id, model, usage } => {
                self.id.clone_from(id);
                self.model.clone_from(model);
                self.prefix.clear();
                self.usage.merge(usage);
                self.ensure_started(out);
            }
            StreamEvent::TextDelta { text, .. } => {
                self.ensure_started(out);
                self.text_chunk(text, out);
            }
            StreamEvent::ThinkingDelta { .. } | StreamEvent::ThinkingSignature { .. } => {}
            StreamEvent::ToolCallStart { index, id, name } => {
                self.ensure_started(out);
                let n = self.tools.len() as u32;
                self.tools.insert(*index, n);
                self.chunk(
                    out::ToolsDelta {
                        tool_calls: [out::ToolCallDelta {
                            index: n,
                            id: Some(id),
                            kind: Some("function"),
                            function: out::FunctionDelta {
                                name: Some(name),
                                arguments: "",
                            },
                        }],
                    },
                    None,
                    out,
                );
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                self.ensure_started(out);
                let n = self.tools.get(index).copied().unwrap_or(0);
                self.chunk(
                    out::ToolsDelta {
                        tool_calls: [out::ToolCallDelta {
                            index: n,
                            id: None,
                            kind: None,
                            function: out::FunctionDelta {
                                name: None,
                                arguments,
                            },
                        }],
                    },
                    None,
                    out,
                );
            }
            StreamEvent::BlockStop { .. } => {}
            StreamEvent::Finish { stop_reason, .. } => {
                self.ensure_started(out);
                if !self.finished {
                    self.finished = true;
                    self.chunk(out::EmptyDelta {}, Some(finish_reason(stop_reason)), out);
                }
            }
            StreamEvent::Usage(u) => self.usage.merge(u),
        }
    }

    /// The request's cost, added to the final usage chunk as `usage.cost_usd` (a decimal string).
    pub fn set_cost_usd(&mut self, cost: Option<String>) {
        self.cost_usd = cost;
    }

    /// The upstream finished: the usage chunk (when asked for) and `[DONE]`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.ensure_started(out);
        if self.include_usage {
            let mut usage = usage_json(&self.usage);
            if let (Some(c), Some(o)) = (&self.cost_usd, usage.as_object_mut()) {
                o.insert("cost_usd".into(), json!(c));
            }
            let v = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": null,
                "choices": [],
                "usage": usage,
            });
            write_event(out, None, &v.to_string());
        }
        write_event(out, None, "[DONE]");
    }

    /// The upstream failed mid-stream: an error chunk, which OpenAI's SDKs raise as an error.
    pub fn error(&mut self, e: &ProviderError, out: &mut Vec<u8>) {
        write_event(out, None, &error_json(e).to_string());
    }

    /// Usage gathered so far (for the ledger).
    pub fn usage(&self) -> Usage {
        self.usage
    }
}

#[cfg(test)]
mod tests;

// ------------------------------------------------------------------------------------------------
// Embeddings
// ------------------------------------------------------------------------------------------------

/// A client's `POST /v1/embeddings` body, and whether it asked for base64 vectors.
pub fn decode_embeddings_request(
    bytes: &[u8],
) -> Result<(tollway_core::EmbeddingsRequest, bool), ProviderError> {
    let mut o = Obj::new(json::parse_object(bytes)?, "");
    let model = o.req_str("model")?;
    let input = match o.require("input")? {
        Value::String(s) => vec![s],
        Value::Array(items) => {
            if items.is_empty() {
                return Err(invalid_value("input", "at least one input is required"));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s),
                    Value::Number(_) | Value::Array(_) => Err(invalid_value(
                        &index("input", i),
                        "token-array input is not supported; send text",
                    )),
                    other => Err(wrong_type(&index("input", i), "a string", &other)),
                })
                .collect::<Result<_, _>>()?
        }
        other => Err(wrong_type(
            "input",
            "a string or an array of strings",
            &other,
        ))?,
    };
    let dimensions = o.u32("dimensions")?;
    // Cohere's extension, which other gateways and SDK wrappers send too
    let input_type = match o.str("input_type")? {
        None => None,
        Some(t) => Some(tollway_core::InputType::parse(&t).ok_or_else(|| {
            let known: Vec<_> = tollway_core::InputType::ALL
                .iter()
                .map(|t| format!("`{}`", t.as_str()))
                .collect();
            invalid_value(
                "input_type",
                format!("expected one of {}, got `{t}`", known.join(", ")),
            )
        })?),
    };
    let user = o.str("user")?;
    let base64 = match o.str("encoding_format")?.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(invalid_value(
                "encoding_format",
                format!("expected `float` or `base64`, got `{other}`"),
            ))
        }
    };
    Ok((
        tollway_core::EmbeddingsRequest {
            model,
            input,
            dimensions,
            input_type,
            user,
        },
        base64,
    ))
}

/// The upstream body for an embeddings request (always float vectors from the upstream).
pub fn encode_embeddings_request(req: &tollway_core::EmbeddingsRequest) -> Vec<u8> {
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));
    body.insert("input".into(), json!(req.input));
    body.insert("encoding_format".into(), json!("float"));
    if let Some(d) = req.dimensions {
        body.insert("dimensions".into(), json!(d));
    }
    if let Some(u) = &req.user {
        body.insert("user".into(), json!(u));
    }
    serde_json::to_vec(&Value::Object(body)).unwrap_or_default()
}

/// An upstream's embeddings answer.
pub fn decode_embeddings_response(
    bytes: &[u8],
) -> Result<tollway_core::EmbeddingsResponse, ProviderError> {
    let v = json::parse_upstream(bytes, "an embeddings answer")?;
    let items = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_answer("the provider's embeddings answer has no data"))?;
    let mut data = vec![Vec::new(); items.len()];
    for (pos, item) in items.iter().enumerate() {
        let i = item
            .get("index")
            .and_then(Value::as_u64)
            .map_or(pos, |i| i as usize);
        let vec: Vec<f32> = item
            .get("embedding")
            .and_then(Value::as_array)
            .ok_or_else(|| bad_answer("an embedding is not a list of numbers"))?
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect::<Option<_>>()
            .ok_or_else(|| bad_answer("an embedding is not a list of numbers"))?;
        if let Some(slot) = data.get_mut(i) {
            *slot = vec;
        }
    }
    let prompt = count(v.pointer("/usage/prompt_tokens"));
    Ok(tollway_core::EmbeddingsResponse {
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        data,
        usage: Usage {
            input_tokens: prompt,
            ..Usage::default()
        },
    })
}

/// An embeddings answer for an OpenAI client (`base64`: little-endian f32, as OpenAI sends it).
pub fn encode_embeddings_response(r: &tollway_core::EmbeddingsResponse, base64: bool) -> Vec<u8> {
    let data: Vec<Value> = r
        .data
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let embedding = if base64 {
                let mut raw = Vec::with_capacity(e.len() * 4);
                for x in e {
                    raw.extend_from_slice(&x.to_le_bytes());
                }
                json!(base64_encode(&raw))
            } else {
                json!(e)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let v = json!({
        "object": "list",
        "data": data,
        "model": r.model,
        "usage": {"prompt_tokens": r.usage.input_tokens, "total_tokens": r.usage.input_tokens},
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(char::from(T[(n >> 18) as usize & 63]));
        out.push(char::from(T[(n >> 12) as usize & 63]));
        out.push(if c.len() > 1 {
            char::from(T[(n >> 6) as usize & 63])
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            char::from(T[n as usize & 63])
        } else {
            '='
        });
    }
    out
}
