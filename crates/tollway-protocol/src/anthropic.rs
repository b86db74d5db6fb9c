//! Anthropic Messages: requests, answers, stream events and errors, to and from canonical form.
//!
//! Reference: <https://docs.anthropic.com/en/api/messages> and
//! <https://docs.anthropic.com/en/docs/build-with-claude/streaming>. Anthropic's `input_tokens`
//! already excludes cache reads and writes, as canonical usage does.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tollway_core::{
    ApiFamily, ChatRequest, ChatResponse, ErrorKind, Extra, ImageSource, Label, Message, Part,
    ProviderError, ResponseFormat, Role, StopReason, StreamEvent, Target, ToolCall, ToolChoice,
    ToolDef, ToolResult, Usage,
};

use crate::json::{self, index, invalid_value, missing, wrong_type, Obj};
use crate::openai::fallback_message;
use crate::sse::{write_json_event, SseEvent};

/// `max_tokens` is required by Anthropic; clients of other APIs may leave it out.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

// ------------------------------------------------------------------------------------------------
// Inbound request
// ------------------------------------------------------------------------------------------------

/// Decodes a client's `POST /v1/messages` body.
///
/// As for OpenAI (`openai::decode_request`), the common shape (text messages, a text system
/// prompt, the usual sampling fields, nothing else) is read straight into typed fields
/// ([`fast`]); anything else, and every malformed body, takes the general path, whose errors
/// name their field. Both give the same request for every body the fast path accepts
/// (`tests.rs` checks every test body both ways).
pub fn decode_request(bytes: &[u8]) -> Result<ChatRequest, ProviderError> {
    json::fast_or_general(bytes, fast::decode, decode_request_general)
}

/// The common request shape, read without a `Value` tree. Every struct refuses unknown fields
/// and serde refuses duplicate ones, so anything the general path would treat specially (content
/// blocks, system blocks, tools, thinking, extension fields...) falls through to it, as does
/// any wrong type or bad value, for the general path's error.
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
        max_tokens: u32,
        #[serde(borrow)]
        messages: Vec<Msg<'a>>,
        #[serde(borrow)]
        system: Option<Cow<'a, str>>,
        temperature: Option<f64>,
        top_p: Option<f64>,
        top_k: Option<u32>,
        #[serde(borrow)]
        stop_sequences: Option<Vec<Cow<'a, str>>>,
        stream: Option<bool>,
        #[serde(borrow)]
        metadata: Option<Metadata<'a>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Metadata<'a> {
        #[serde(borrow)]
        user_id: Option<Cow<'a, str>>,
    }

    /// A message whose content is a string.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Msg<'a> {
        #[serde(borrow)]
        role: Cow<'a, str>,
        #[serde(borrow)]
        content: Cow<'a, str>,
    }

    /// The request, or `None` when the body is not of the common shape.
    pub(crate) fn decode(text: &str) -> Option<ChatRequest> {
        let r: Request<'_> = serde_json::from_str(text).ok()?;
        if r.max_tokens == 0 || r.messages.is_empty() {
            return None;
        }
        let mut messages = Vec::with_capacity(r.messages.len() + 1);
        if let Some(system) = r.system {
            messages.push(Message::text(Role::System, system.into_owned()));
        }
        for m in r.messages {
            let role = match &*m.role {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                _ => return None,
            };
            messages.push(Message::text(role, m.content.into_owned()));
        }
        Some(ChatRequest {
            model: r.model.into_owned(),
            messages,
            max_tokens: Some(r.max_tokens),
            temperature: r.temperature,
            top_p: r.top_p,
            top_k: r.top_k,
            stop: r
                .stop_sequences
                .map(|s| s.into_iter().map(Cow::into_owned).collect())
                .unwrap_or_default(),
            stream: r.stream.unwrap_or(false),
            include_usage: true,
            tools: Vec::new(),
            tool_choice: None,
            parallel_tool_calls: None,
            response_format: None,
            user: r.metadata.and_then(|m| m.user_id).map(Cow::into_owned),
            betas: Vec::new(),
            extra: Extra {
                family: ApiFamily::Anthropic,
                fields: Map::new(),
            },
        })
    }
}

/// The body fields of a token count (`POST /v1/messages/count_tokens`): a Messages request
/// without its output and sampling fields, which the API refuses there.
const COUNT_FIELDS: [&str; 7] = [
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
    "mcp_servers",
];

/// Decodes a client's token count (`POST /v1/messages/count_tokens`): a Messages request that
/// needs no `max_tokens` (one given is checked as usual, then has no effect). Errors name the
/// field, as [`decode_request`]'s do.
pub fn decode_count_tokens_request(bytes: &[u8]) -> Result<ChatRequest, ProviderError> {
    let mut o = json::parse_object(bytes)?;
    // the count produces no output: any valid value does
    o.entry("max_tokens").or_insert(Value::from(1));
    decode_request_general(&Value::Object(o).to_string())
}

/// The upstream body of a token count of `req` for `target`'s model: the Messages body
/// [`encode_request_as`] would send, less the fields the count does not take.
pub fn encode_count_tokens_request<'l>(
    req: &ChatRequest,
    target: Target<'_>,
    label: impl Into<Label<'l>>,
) -> Result<Vec<u8>, ProviderError> {
    let body = encode_request_as(req, target, label)?;
    let mut o: Map<String, Value> = serde_json::from_slice(&body).map_err(|e| {
        ProviderError::internal(format!("a request body we wrote is not JSON: {e}"))
    })?;
    o.retain(|k, _| COUNT_FIELDS.contains(&k.as_str()));
    Ok(Value::Object(o).to_string().into_bytes())
}

/// The `input_tokens` of a token count's answer.
pub fn decode_count_tokens_response(body: &[u8]) -> Result<u64, ProviderError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| bad_answer(format!("the token count's answer is not JSON: {e}")))?;
    v.get("input_tokens")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad_answer("the token count's answer has no `input_tokens` count"))
}

/// A token count's answer to the client: `{"input_tokens": N}`.
pub fn encode_count_tokens_response(input_tokens: u64) -> Vec<u8> {
    json!({ "input_tokens": input_tokens })
        .to_string()
        .into_bytes()
}

/// [`decode_request`]'s general path: any body, every error naming its field.
fn decode_request_general(text: &str) -> Result<ChatRequest, ProviderError> {
    let mut o = Obj::new(json::parse_object_str(text)?, "");
    let model = o.req_str("model")?;
    let raw_messages = o.array("messages")?.ok_or_else(|| missing("messages"))?;
    let max_tokens = o.u32("max_tokens")?.ok_or_else(|| missing("max_tokens"))?;
    if max_tokens == 0 {
        return Err(invalid_value("max_tokens", "must be at least 1"));
    }
    if raw_messages.is_empty() {
        return Err(invalid_value(
            "messages",
            "at least one message is required",
        ));
    }
    let mut messages = Vec::with_capacity(raw_messages.len() + 1);
    match o.take("system") {
        None => {}
        Some(Value::String(s)) => messages.push(Message::text(Role::System, s)),
        Some(Value::Array(blocks)) => {
            let mut content = Vec::new();
            for (i, b) in blocks.into_iter().enumerate() {
                let mut b = Obj::from_value(b, index("system", i))?;
                let ty = b.req_str("type")?;
                if ty != "text" {
                    return Err(invalid_value(
                        &b.path_of("type"),
                        format!("system blocks must be `text`, got `{ty}`"),
                    ));
                }
                content.push(Part::Text {
                    text: b.req_str("text")?,
                    cache_control: b.take("cache_control"),
                });
            }
            messages.push(Message {
                role: Role::System,
                content,
            });
        }
        Some(other) => {
            return Err(wrong_type(
                "system",
                "a string or an array of text blocks",
                &other,
            ))
        }
    }
    for (i, m) in raw_messages.into_iter().enumerate() {
        decode_message(m, &index("messages", i), &mut messages)?;
    }
    let temperature = o.f64("temperature")?;
    let top_p = o.f64("top_p")?;
    let top_k = o.u32("top_k")?;
    let stop = match o.array("stop_sequences")? {
        None => Vec::new(),
        Some(a) => a
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s),
                other => Err(wrong_type(&index("stop_sequences", i), "a string", &other)),
            })
            .collect::<Result<_, _>>()?,
    };
    let stream = o.bool("stream")?.unwrap_or(false);
    let mut tools = Vec::new();
    let mut server_tools = Vec::new();
    if let Some(a) = o.array("tools")? {
        for (i, t) in a.into_iter().enumerate() {
            let path = index("tools", i);
            let is_custom = match t.get("type") {
                None | Some(Value::Null) => true,
                Some(Value::String(s)) => s == "custom",
                Some(other) => {
                    return Err(wrong_type(&json::join(&path, "type"), "a string", other))
                }
            };
            if !is_custom {
                server_tools.push(t);
                continue;
            }
            let mut t = Obj::from_value(t, path)?;
            t.map.remove("type");
            t.map.remove("cache_control");
            let name = t.req_str("name")?;
            let description = t.str("description")?;
            let parameters = match t.take("input_schema") {
                None => return Err(missing(&t.path_of("input_schema"))),
                Some(p @ Value::Object(_)) => p,
                Some(other) => {
                    return Err(wrong_type(&t.path_of("input_schema"), "an object", &other))
                }
            };
            let strict = t.bool("strict")?;
            tools.push(ToolDef {
                name,
                description,
                parameters,
                strict,
            });
        }
    }
    let mut parallel_tool_calls = None;
    let tool_choice = match o.obj("tool_choice")? {
        None => None,
        Some(mut tc) => {
            let ty = tc.req_str("type")?;
            if let Some(d) = tc.bool("disable_parallel_tool_use")? {
                parallel_tool_calls = Some(!d);
            }
            Some(match ty.as_str() {
                "auto" => ToolChoice::Auto,
                "any" => ToolChoice::Required,
                "none" => ToolChoice::None,
                "tool" => ToolChoice::Tool(tc.req_str("name")?),
                other => {
                    return Err(invalid_value(
                        "tool_choice.type",
                        format!("expected `auto`, `any`, `tool` or `none`, got `{other}`"),
                    ))
                }
            })
        }
    };
    let mut user = None;
    if let Some(mut md) = o.obj("metadata")? {
        user = md.str("user_id")?;
    }
    let mut response_format = None;
    if let Some(mut oc) = o.obj("output_config")? {
        if let Some(mut f) = oc.obj("format")? {
            let ty = f.req_str("type")?;
            if ty != "json_schema" {
                return Err(invalid_value(
                    "output_config.format.type",
                    format!("expected `json_schema`, got `{ty}`"),
                ));
            }
            let schema = f
                .take("schema")
                .ok_or_else(|| missing("output_config.format.schema"))?;
            response_format = Some(ResponseFormat::JsonSchema {
                name: "response".into(),
                description: None,
                schema,
                strict: Some(true),
            });
        }
        if !oc.map.is_empty() {
            o.map
                .insert("output_config".into(), Value::Object(oc.into_rest()));
        }
    }
    let mut fields = o.into_rest();
    if !server_tools.is_empty() {
        fields.insert("tools".into(), Value::Array(server_tools));
    }
    Ok(ChatRequest {
        model,
        messages,
        max_tokens: Some(max_tokens),
        temperature,
        top_p,
        top_k,
        stop,
        stream,
        include_usage: true,
        tools,
        tool_choice,
        parallel_tool_calls,
        response_format,
        user,
        betas: Vec::new(),
        extra: Extra {
            family: ApiFamily::Anthropic,
            fields,
        },
    })
}

fn decode_message(v: Value, path: &str, out: &mut Vec<Message>) -> Result<(), ProviderError> {
    let mut m = Obj::from_value(v, path.to_string())?;
    let role = match m.req_str("role")?.as_str() {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        other => {
            return Err(invalid_value(
                &m.path_of("role"),
                format!("unknown role `{other}` (expected user or assistant; put system prompts in `system`)"),
            ))
        }
    };
    let cpath = m.path_of("content");
    let content = match m.require("content")? {
        Value::String(s) => vec![Part::text(s)],
        Value::Array(blocks) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for (i, b) in blocks.into_iter().enumerate() {
                parts.push(decode_block(b, &index(&cpath, i), role)?);
            }
            parts
        }
        other => {
            return Err(wrong_type(
                &cpath,
                "a string or an array of content blocks",
                &other,
            ))
        }
    };
    if role == Role::User && content.iter().any(|p| matches!(p, Part::ToolResult(_))) {
        // Canonically, tool results are a `Tool` turn; the rest of the user turn follows it.
        let (results, rest): (Vec<Part>, Vec<Part>) = content
            .into_iter()
            .partition(|p| matches!(p, Part::ToolResult(_)));
        out.push(Message {
            role: Role::Tool,
            content: results,
        });
        if !rest.is_empty() {
            out.push(Message {
                role: Role::User,
                content: rest,
            });
        }
    } else {
        out.push(Message { role, content });
    }
    Ok(())
}

fn decode_image(b: &mut Obj) -> Result<ImageSource, ProviderError> {
    let mut src = b
        .obj("source")?
        .ok_or_else(|| missing(&b.path_of("source")))?;
    match src.req_str("type")?.as_str() {
        "base64" => Ok(ImageSource::Base64 {
            media_type: src.req_str("media_type")?,
            data: src.req_str("data")?,
        }),
        "url" => Ok(ImageSource::Url(src.req_str("url")?)),
        other => Err(invalid_value(
            &src.path_of("type"),
            format!("image sources of type `{other}` are not supported (use base64 or url)"),
        )),
    }
}

fn decode_block(v: Value, path: &str, role: Role) -> Result<Part, ProviderError> {
    let mut b = Obj::from_value(v, path.to_string())?;
    let ty = b.req_str("type")?;
    Ok(match ty.as_str() {
        "text" => Part::Text {
            text: b.req_str("text")?,
            cache_control: b.take("cache_control"),
        },
        "image" => Part::Image(decode_image(&mut b)?),
        "tool_use" if role == Role::Assistant => {
            let id = b.req_str("id")?;
            let name = b.req_str("name")?;
            let input = b.take("input").unwrap_or_else(|| json!({}));
            Part::ToolCall(ToolCall {
                id,
                name,
                arguments: input.to_string(),
            })
        }
        "tool_result" if role == Role::User => {
            let tool_call_id = b.req_str("tool_use_id")?;
            let is_error = b.bool("is_error")?.unwrap_or(false);
            let cpath = b.path_of("content");
            let content = match b.take("content") {
                None => Vec::new(),
                Some(Value::String(s)) => vec![Part::text(s)],
                Some(Value::Array(items)) => {
                    let mut parts = Vec::new();
                    for (i, item) in items.into_iter().enumerate() {
                        let mut ib = Obj::from_value(item, index(&cpath, i))?;
                        match ib.req_str("type")?.as_str() {
                            "text" => parts.push(Part::text(ib.req_str("text")?)),
                            "image" => parts.push(Part::Image(decode_image(&mut ib)?)),
                            other => {
                                return Err(invalid_value(
                                    &ib.path_of("type"),
                                    format!(
                                        "tool result blocks of type `{other}` are not supported"
                                    ),
                                ))
                            }
                        }
                    }
                    parts
                }
                Some(other) => {
                    return Err(wrong_type(&cpath, "a string or an array of blocks", &other))
                }
            };
            Part::ToolResult(ToolResult {
                tool_call_id,
                content,
                is_error,
            })
        }
        "thinking" if role == Role::Assistant => Part::Thinking {
            text: b.str("thinking")?.unwrap_or_default(),
            signature: b.str("signature")?,
        },
        other => {
            return Err(invalid_value(
                &b.path_of("type"),
                format!(
                    "content blocks of type `{other}` are not supported in {} messages",
                    if role == Role::User {
                        "user"
                    } else {
                        "assistant"
                    }
                ),
            ))
        }
    })
}

// ------------------------------------------------------------------------------------------------
// Outbound request
// ------------------------------------------------------------------------------------------------

/// Fields of an OpenAI request an Anthropic target can do without (nothing observable changes).
pub(crate) const HARMLESS_FROM_OPENAI: &[&str] = &[
    "store",
    "metadata",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
    "n",
];

/// An upstream request's content blocks, serialised from borrowed fields: the prompt is written
/// straight from the canonical request into the body, never copied into a `Value` tree.
mod req_out {
    #[cfg(test)]
    use serde::ser::{SerializeMap, Serializer};
    use serde::Serialize;
    use serde_json::{Map, Value};

    use crate::json::{put_entries, put_str, put_value};

    #[derive(Serialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub enum Source<'a> {
        Base64 { media_type: &'a str, data: &'a str },
        Url { url: &'a str },
    }

    #[derive(Serialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub enum Block<'a> {
        Text {
            text: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            cache_control: Option<&'a Value>,
        },
        Image {
            source: Source<'a>,
        },
        ToolUse {
            id: &'a str,
            name: &'a str,
            input: super::out::Input<'a>,
        },
        ToolResult {
            tool_use_id: &'a str,
            content: ResultContent<'a>,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            is_error: bool,
        },
        Thinking {
            thinking: &'a str,
            signature: &'a str,
        },
    }

    #[derive(Serialize)]
    #[serde(untagged)]
    pub enum ResultContent<'a> {
        Text(String),
        Blocks(Vec<Block<'a>>),
    }

    #[derive(Serialize)]
    pub struct Message<'a> {
        pub role: &'static str,
        pub content: Vec<Block<'a>>,
    }

    #[derive(Serialize)]
    #[serde(untagged)]
    pub enum System<'a> {
        Text(&'a str),
        Blocks(Vec<Block<'a>>),
    }

    /// The whole body: the typed, hot fields, then the rarer ones kept as JSON values.
    pub struct Body<'a> {
        pub model: &'a str,
        pub max_tokens: u32,
        pub system: Option<System<'a>>,
        pub messages: Vec<Message<'a>>,
        pub rest: Map<String, Value>,
    }

    impl Body<'_> {
        /// Whether the typed part already has field `k` (an extra field never overrides it).
        pub fn has(&self, k: &str) -> bool {
            matches!(k, "model" | "max_tokens" | "messages")
                || (k == "system" && self.system.is_some())
                || self.rest.contains_key(k)
        }
    }

    impl Body<'_> {
        /// The body as JSON, byte for byte what its `Serialize` gives (tested), written from
        /// fragments: the prompt's text (text blocks, a text system prompt, text tool results)
        /// goes through [`put_str`], which copies a string that needs no escape whole instead of
        /// checking it byte by byte, and the fixed keys are not escaped. Rarer blocks (images,
        /// tool calls, thinking) and the extra fields go through serde.
        pub fn to_vec(&self) -> Vec<u8> {
            let system = match &self.system {
                None => 0,
                Some(System::Text(t)) => t.len(),
                Some(System::Blocks(b)) => b.iter().map(Block::len_hint).sum(),
            };
            let text: usize = self
                .messages
                .iter()
                .flat_map(|m| &m.content)
                .map(Block::len_hint)
                .sum();
            let mut out = Vec::with_capacity(160 + self.model.len() + system + text);
            out.extend_from_slice(b"{\"model\":");
            put_str(&mut out, self.model);
            out.extend_from_slice(b",\"max_tokens\":");
            out.extend_from_slice(itoa::Buffer::new().format(self.max_tokens).as_bytes());
            match &self.system {
                None => {}
                Some(System::Text(t)) => {
                    out.extend_from_slice(b",\"system\":");
                    put_str(&mut out, t);
                }
                Some(System::Blocks(b)) => {
                    out.extend_from_slice(b",\"system\":");
                    write_blocks(&mut out, b);
                }
            }
            out.extend_from_slice(b",\"messages\":[");
            for (i, m) in self.messages.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"role\":");
                put_str(&mut out, m.role);
                out.extend_from_slice(b",\"content\":");
                write_blocks(&mut out, &m.content);
                out.push(b'}');
            }
            out.push(b']');
            put_entries(&mut out, &self.rest);
            out.push(b'}');
            out
        }
    }

    impl Block<'_> {
        /// About how many bytes the block takes as JSON, to size the body's buffer once.
        fn len_hint(&self) -> usize {
            32 + match self {
                Block::Text { text, .. } => text.len(),
                Block::Image {
                    source: Source::Base64 { data, .. },
                } => data.len(),
                Block::Image {
                    source: Source::Url { url },
                } => url.len(),
                Block::ToolUse { .. } => 64,
                Block::ToolResult {
                    content: ResultContent::Text(t),
                    ..
                } => t.len(),
                Block::ToolResult {
                    content: ResultContent::Blocks(b),
                    ..
                } => b.iter().map(Block::len_hint).sum(),
                Block::Thinking {
                    thinking,
                    signature,
                } => thinking.len() + signature.len(),
            }
        }
    }

    /// A list of blocks: text and tool results (where a prompt's bulk is) from fragments, the
    /// others through serde.
    fn write_blocks(out: &mut Vec<u8>, blocks: &[Block<'_>]) {
        out.push(b'[');
        for (i, b) in blocks.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match b {
                Block::Text {
                    text,
                    cache_control,
                } => {
                    out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
                    put_str(out, text);
                    if let Some(c) = cache_control {
                        out.extend_from_slice(b",\"cache_control\":");
                        put_value(out, c);
                    }
                    out.push(b'}');
                }
                Block::ToolResult {
                    tool_use_id,
                    content,
                    is_error,
                } => {
                    out.extend_from_slice(b"{\"type\":\"tool_result\",\"tool_use_id\":");
                    put_str(out, tool_use_id);
                    out.extend_from_slice(b",\"content\":");
                    match content {
                        ResultContent::Text(t) => put_str(out, t),
                        ResultContent::Blocks(b) => write_blocks(out, b),
                    }
                    if *is_error {
                        out.extend_from_slice(b",\"is_error\":true");
                    }
                    out.push(b'}');
                }
                other => put_value(out, other),
            }
        }
        out.push(b']');
    }

    /// The reference the hand-written [`Body::to_vec`] is tested against.
    #[cfg(test)]
    impl Serialize for Body<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(None)?;
            m.serialize_entry("model", self.model)?;
            m.serialize_entry("max_tokens", &self.max_tokens)?;
            if let Some(system) = &self.system {
                m.serialize_entry("system", system)?;
            }
            m.serialize_entry("messages", &self.messages)?;
            for (k, v) in &self.rest {
                m.serialize_entry(k, v)?;
            }
            m.end()
        }
    }
}

fn image_block(src: &ImageSource) -> req_out::Block<'_> {
    let source = match src {
        ImageSource::Base64 { media_type, data } => req_out::Source::Base64 { media_type, data },
        ImageSource::Url(url) => req_out::Source::Url { url },
    };
    req_out::Block::Image { source }
}

/// Whether an OpenAI-only field set to this value asks for nothing (off, zero, empty).
pub(crate) fn is_off(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(_) | Value::Bool(true) => false,
    }
}

fn encode_block<'a>(
    p: &'a Part,
    label: Label<'_>,
) -> Result<Option<req_out::Block<'a>>, ProviderError> {
    Ok(Some(match p {
        Part::Text {
            text,
            cache_control,
        } => {
            if text.is_empty() {
                // Anthropic rejects empty text blocks.
                return Ok(None);
            }
            req_out::Block::Text {
                text,
                cache_control: cache_control.as_ref(),
            }
        }
        Part::Image(src) => image_block(src),
        Part::ToolCall(c) => {
            let input = object_input(&c.arguments)
                .map_err(|valid_json| bad_arguments(c, valid_json, label))?;
            req_out::Block::ToolUse {
                id: &c.id,
                name: &c.name,
                input,
            }
        }
        Part::ToolResult(r) => {
            let simple = r.content.iter().all(|p| {
                matches!(
                    p,
                    Part::Text {
                        cache_control: None,
                        ..
                    }
                )
            });
            let content = if simple {
                req_out::ResultContent::Text(r.text())
            } else {
                let mut items = Vec::with_capacity(r.content.len());
                for p in &r.content {
                    if let Some(b) = encode_block(p, label)? {
                        items.push(b);
                    }
                }
                req_out::ResultContent::Blocks(items)
            };
            req_out::Block::ToolResult {
                tool_use_id: &r.tool_call_id,
                content,
                is_error: r.is_error,
            }
        }
        Part::Thinking { text, signature } => match signature {
            // Gemini's signatures mean nothing to Anthropic
            Some(sig) if crate::gemini::is_gemini_signature(sig) => return Ok(None),
            Some(sig) => req_out::Block::Thinking {
                thinking: text,
                signature: sig,
            },
            // Reasoning from another vendor cannot be verified by Anthropic; it is not needed.
            None => return Ok(None),
        },
    }))
}

/// Encodes a canonical request for an Anthropic upstream. `label` (`provider/model`) names the
/// target in errors.
pub fn encode_request<'l>(
    req: &ChatRequest,
    label: impl Into<Label<'l>>,
) -> Result<Vec<u8>, ProviderError> {
    encode_request_as(req, Target::of(req), label)
}

/// [`encode_request`] for `target`'s model and streaming, whatever `req` says.
pub fn encode_request_as<'l>(
    req: &ChatRequest,
    target: Target<'_>,
    label: impl Into<Label<'l>>,
) -> Result<Vec<u8>, ProviderError> {
    request_body(req, target, label.into()).map(|b| b.to_vec())
}

/// [`encode_request_as`] for Claude on Google's Vertex AI (`rawPredict`, `streamRawPredict`): the
/// model is in the URL, not the body; the body names Vertex's API version
/// (`anthropic_version: vertex-2023-10-16`) and carries the client's betas as `anthropic_beta`
/// (Vertex reads no `anthropic-*` headers).
pub fn encode_request_vertex<'l>(
    req: &ChatRequest,
    target: Target<'_>,
    label: impl Into<Label<'l>>,
) -> Result<Vec<u8>, ProviderError> {
    let bytes = encode_request_as(req, target, label)?;
    let mut body: Map<String, Value> = serde_json::from_slice(&bytes).map_err(|e| {
        ProviderError::internal(format!("could not rewrite the request for Vertex: {e}"))
    })?;
    body.remove("model");
    body.insert("anthropic_version".into(), json!(VERTEX_VERSION));
    if !req.betas.is_empty() {
        body.insert("anthropic_beta".into(), json!(req.betas));
    }
    serde_json::to_vec(&body)
        .map_err(|e| ProviderError::internal(format!("could not write the Vertex request: {e}")))
}

/// The `anthropic_version` Claude on Vertex AI takes.
pub const VERTEX_VERSION: &str = "vertex-2023-10-16";

/// The upstream body of [`encode_request_as`], before it is written.
fn request_body<'a>(
    req: &'a ChatRequest,
    target: Target<'a>,
    label: Label<'_>,
) -> Result<req_out::Body<'a>, ProviderError> {
    let mut system: Vec<req_out::Block<'_>> = Vec::new();
    let mut messages: Vec<req_out::Message<'_>> = Vec::new();
    for m in &req.messages {
        if m.role == Role::System {
            for p in &m.content {
                match p {
                    Part::Text {
                        text,
                        cache_control,
                    } => system.push(req_out::Block::Text {
                        text,
                        cache_control: cache_control.as_ref(),
                    }),
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
            "assistant"
        } else {
            "user"
        };
        let mut blocks = Vec::with_capacity(m.content.len());
        for p in &m.content {
            if let Some(b) = encode_block(p, label)? {
                blocks.push(b);
            }
        }
        if blocks.is_empty() {
            continue;
        }
        // Anthropic wants alternating turns: consecutive turns of one role are merged.
        match messages.last_mut() {
            Some(prev) if prev.role == role => prev.content.extend(blocks),
            _ => messages.push(req_out::Message {
                role,
                content: blocks,
            }),
        }
    }
    let system = match system.as_slice() {
        [] => None,
        [req_out::Block::Text {
            text,
            cache_control: None,
        }] => Some(req_out::System::Text(text)),
        _ => Some(req_out::System::Blocks(system)),
    };
    let mut body = req_out::Body {
        model: target.model,
        max_tokens: req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        system,
        messages,
        rest: Map::new(),
    };
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
        body.rest.insert("stop_sequences".into(), json!(req.stop));
    }
    if target.stream {
        body.rest.insert("stream".into(), Value::Bool(true));
    }
    let mut tools: Vec<Value> = req
        .tools
        .iter()
        .map(|t| {
            let mut o = Map::new();
            o.insert("name".into(), Value::String(t.name.clone()));
            if let Some(d) = &t.description {
                o.insert("description".into(), Value::String(d.clone()));
            }
            o.insert("input_schema".into(), t.parameters.clone());
            Value::Object(o)
        })
        .collect();
    let mut tool_choice = req.tool_choice.as_ref().map(|tc| match tc {
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::None => json!({"type": "none"}),
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
    });
    if req.parallel_tool_calls == Some(false) && !req.tools.is_empty() {
        let tc = tool_choice.get_or_insert_with(|| json!({"type": "auto"}));
        if let Some(o) = tc.as_object_mut() {
            if o.get("type").and_then(Value::as_str) != Some("none") {
                o.insert("disable_parallel_tool_use".into(), Value::Bool(true));
            }
        }
    }
    let mut output_config = Map::new();
    match &req.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            return Err(ProviderError::unsupported(
                "response_format json_object (send a json_schema instead)",
                label,
            )
            .with_param("response_format"))
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            output_config.insert(
                "format".into(),
                json!({"type": "json_schema", "schema": schema}),
            );
        }
    }
    if let Some(u) = &req.user {
        body.rest.insert("metadata".into(), json!({"user_id": u}));
    }
    match req.extra.family {
        ApiFamily::Anthropic => {
            for (k, v) in &req.extra.fields {
                if k == "tools" {
                    if let Value::Array(server) = v {
                        tools.extend(server.iter().cloned());
                    }
                } else if k == "output_config" {
                    if let Value::Object(extra) = v {
                        for (ek, ev) in extra {
                            output_config
                                .entry(ek.clone())
                                .or_insert_with(|| ev.clone());
                        }
                    }
                } else if !body.has(k) {
                    body.rest.insert(k.clone(), v.clone());
                }
            }
        }
        ApiFamily::OpenAi => {
            for (k, v) in &req.extra.fields {
                if HARMLESS_FROM_OPENAI.contains(&k.as_str()) || is_off(v) {
                    continue;
                }
                if k == "reasoning_effort" {
                    if let Some(effort @ ("low" | "medium" | "high" | "xhigh")) = v.as_str() {
                        output_config.insert("effort".into(), json!(effort));
                        continue;
                    }
                }
                return Err(crate::unsupported_field(ApiFamily::OpenAi, k, label));
            }
        }
    }
    if !output_config.is_empty() {
        body.rest
            .insert("output_config".into(), Value::Object(output_config));
    }
    if !tools.is_empty() {
        body.rest.insert("tools".into(), Value::Array(tools));
    }
    if let Some(tc) = tool_choice {
        if !req.tools.is_empty() {
            body.rest.insert("tool_choice".into(), tc);
        }
    }
    Ok(body)
}

// ------------------------------------------------------------------------------------------------
// Answers
// ------------------------------------------------------------------------------------------------

fn stop_reason_str(r: &StopReason) -> &str {
    match r {
        StopReason::EndTurn => "end_turn",
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopSequence => "stop_sequence",
        StopReason::ToolUse => "tool_use",
        StopReason::ContentFilter => "refusal",
        StopReason::Other(s) => s,
    }
}

fn stop_reason(s: &str) -> StopReason {
    match s {
        "end_turn" => StopReason::EndTurn,
        "max_tokens" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence,
        "tool_use" => StopReason::ToolUse,
        other => StopReason::Other(other.to_string()),
    }
}

/// What Tollway writes to Anthropic clients, as typed structs serialised from borrowed fields (no
/// `Value` tree per answer).
mod out {
    use serde::Serialize;
    use serde_json::value::RawValue;

    #[derive(Serialize)]
    pub struct Usage<'a> {
        pub input_tokens: u64,
        pub output_tokens: u64,
        pub cache_creation_input_tokens: u64,
        pub cache_read_input_tokens: u64,
        /// The request's cost in USD (a decimal string), on the final usage of a stream.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub cost_usd: Option<&'a str>,
    }

    impl Usage<'_> {
        pub fn of(u: &tollway_core::Usage) -> Self {
            Usage {
                input_tokens: u.input_tokens,
                output_tokens: u.output_tokens,
                cache_creation_input_tokens: u.cache_write_tokens,
                cache_read_input_tokens: u.cache_read_tokens,
                cost_usd: None,
            }
        }
    }

    /// A tool call's `input`, in answers and in upstream bodies: `{}` for empty arguments, the
    /// model's arguments as they came when they are a JSON object ([`super::object_input`]), or
    /// what [`super::tool_input`] keeps of other arguments.
    pub enum Input<'a> {
        Empty,
        Raw(&'a RawValue),
        Value(serde_json::Value),
    }

    impl Serialize for Input<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self {
                Input::Empty => serde::ser::SerializeMap::end(s.serialize_map(Some(0))?),
                Input::Raw(r) => r.serialize(s),
                Input::Value(v) => v.serialize(s),
            }
        }
    }

    #[derive(Serialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub enum Block<'a> {
        Thinking {
            thinking: &'a str,
            signature: &'a str,
        },
        Text {
            text: &'a str,
        },
        ToolUse {
            id: &'a str,
            name: &'a str,
            input: Input<'a>,
        },
    }

    impl Usage<'_> {
        /// Writes the usage object from fixed fragments: byte for byte what its `Serialize`
        /// gives (tested).
        pub fn write(&self, out: &mut Vec<u8>) {
            let mut n = itoa::Buffer::new();
            out.extend_from_slice(b"{\"input_tokens\":");
            out.extend_from_slice(n.format(self.input_tokens).as_bytes());
            out.extend_from_slice(b",\"output_tokens\":");
            out.extend_from_slice(n.format(self.output_tokens).as_bytes());
            out.extend_from_slice(b",\"cache_creation_input_tokens\":");
            out.extend_from_slice(n.format(self.cache_creation_input_tokens).as_bytes());
            out.extend_from_slice(b",\"cache_read_input_tokens\":");
            out.extend_from_slice(n.format(self.cache_read_input_tokens).as_bytes());
            if let Some(c) = self.cost_usd {
                out.extend_from_slice(b",\"cost_usd\":");
                crate::json::put_str(out, c);
            }
            out.push(b'}');
        }
    }

    // `Serialize` is the reference `Message::to_vec` is tested against: test builds only.
    #[cfg_attr(test, derive(Serialize))]
    pub struct Message<'a> {
        pub id: &'a str,
        #[cfg_attr(test, serde(rename = "type"))]
        pub kind: &'static str,
        pub role: &'static str,
        pub model: &'a str,
        pub content: Vec<Block<'a>>,
        pub stop_reason: &'a str,
        pub stop_sequence: Option<&'a str>,
        pub usage: Usage<'a>,
    }

    impl Message<'_> {
        /// The answer as JSON, written from fixed fragments with the text through
        /// [`put_str`](crate::json::put_str) (the keys of this fixed shape are not escaped on every
        /// answer); tool calls and thinking blocks go through serde.
        pub fn to_vec(&self) -> Vec<u8> {
            use crate::json::{put_str, put_value};
            let text: usize = self
                .content
                .iter()
                .map(|b| match b {
                    Block::Text { text } => text.len() + 32,
                    _ => 128,
                })
                .sum();
            let mut out = Vec::with_capacity(320 + self.id.len() + self.model.len() + text);
            out.extend_from_slice(b"{\"id\":");
            put_str(&mut out, self.id);
            out.extend_from_slice(b",\"type\":");
            put_str(&mut out, self.kind);
            out.extend_from_slice(b",\"role\":");
            put_str(&mut out, self.role);
            out.extend_from_slice(b",\"model\":");
            put_str(&mut out, self.model);
            out.extend_from_slice(b",\"content\":[");
            for (i, b) in self.content.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match b {
                    Block::Text { text } => {
                        out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
                        put_str(&mut out, text);
                        out.push(b'}');
                    }
                    other => put_value(&mut out, other),
                }
            }
            out.extend_from_slice(b"],\"stop_reason\":");
            put_str(&mut out, self.stop_reason);
            out.extend_from_slice(b",\"stop_sequence\":");
            match self.stop_sequence {
                Some(s) => put_str(&mut out, s),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"usage\":");
            self.usage.write(&mut out);
            out.push(b'}');
            out
        }
    }
}

/// The parts of Anthropic answers and stream events Tollway reads, typed and lenient (a field of
/// another type reads as absent), borrowing strings from the body.
mod wire {
    use crate::json::lax;
    use crate::scan::{scan_count, scan_list, scan_obj, scan_str, scan_u64, Scan, Seen};
    use serde::Deserialize;
    use serde_json::value::RawValue;

    #[derive(Deserialize)]
    pub struct Message<'a> {
        #[serde(borrow, default)]
        pub id: lax::Str<'a>,
        #[serde(borrow, default)]
        pub model: lax::Str<'a>,
        #[serde(borrow, default)]
        pub content: lax::List<Block<'a>>,
        #[serde(borrow, default)]
        pub stop_reason: lax::Str<'a>,
        #[serde(borrow, default)]
        pub stop_sequence: lax::Str<'a>,
        #[serde(default)]
        pub usage: lax::Obj<Usage>,
    }

    /// A content block; which fields are set depends on its `type`.
    #[derive(Deserialize)]
    pub struct Block<'a> {
        #[serde(rename = "type", borrow, default)]
        pub kind: lax::Str<'a>,
        #[serde(borrow, default)]
        pub text: lax::Str<'a>,
        #[serde(borrow, default)]
        pub id: lax::Str<'a>,
        #[serde(borrow, default)]
        pub name: lax::Str<'a>,
        /// A tool call's arguments, kept as the JSON text they came as.
        #[serde(borrow, default)]
        pub input: Option<&'a RawValue>,
        #[serde(borrow, default)]
        pub thinking: lax::Str<'a>,
        #[serde(borrow, default)]
        pub signature: lax::Str<'a>,
    }

    #[derive(Deserialize, Default)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct Usage {
        #[serde(default)]
        pub input_tokens: lax::Count,
        #[serde(default)]
        pub output_tokens: lax::Count,
        #[serde(default)]
        pub cache_read_input_tokens: lax::Count,
        #[serde(default)]
        pub cache_creation_input_tokens: lax::Count,
    }

    impl Usage {
        pub fn canonical(&self) -> tollway_core::Usage {
            tollway_core::Usage {
                input_tokens: self.input_tokens.0,
                output_tokens: self.output_tokens.0,
                cache_read_tokens: self.cache_read_input_tokens.0,
                cache_write_tokens: self.cache_creation_input_tokens.0,
                reasoning_tokens: 0,
            }
        }
    }

    /// One stream event; which fields are set depends on its `type`.
    #[derive(Deserialize)]
    pub struct Event<'a> {
        #[serde(rename = "type", borrow, default)]
        pub kind: lax::Str<'a>,
        #[serde(default)]
        pub index: lax::U64,
        /// `message_start`'s message (id, model, usage).
        #[serde(borrow, default)]
        pub message: lax::Obj<Message<'a>>,
        #[serde(borrow, default)]
        pub content_block: lax::Obj<Block<'a>>,
        #[serde(borrow, default)]
        pub delta: lax::Obj<Delta<'a>>,
        #[serde(default)]
        pub usage: lax::Obj<Usage>,
        #[serde(borrow, default)]
        pub error: lax::Obj<Error<'a>>,
    }

    /// A `content_block_delta`'s or a `message_delta`'s delta.
    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct Delta<'a> {
        #[serde(rename = "type", borrow, default)]
        pub kind: lax::Str<'a>,
        #[serde(borrow, default)]
        pub text: lax::Str<'a>,
        #[serde(borrow, default)]
        pub partial_json: lax::Str<'a>,
        #[serde(borrow, default)]
        pub thinking: lax::Str<'a>,
        #[serde(borrow, default)]
        pub signature: lax::Str<'a>,
        #[serde(borrow, default)]
        pub stop_reason: lax::Str<'a>,
        #[serde(borrow, default)]
        pub stop_sequence: lax::Str<'a>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct Error<'a> {
        #[serde(rename = "type", borrow, default)]
        pub kind: lax::Str<'a>,
        #[serde(borrow, default)]
        pub message: lax::Str<'a>,
    }

    impl<'a> Message<'a> {
        /// The usual answer (text and thinking blocks, usage) without serde; `None` for anything
        /// else (tool calls...), which serde then reads (see `crate::scan`).
        pub fn scan(text: &'a str) -> Option<Self> {
            let mut s = Scan::new(text);
            let mut m = Message {
                id: lax::Str(None),
                model: lax::Str(None),
                content: lax::List(None),
                stop_reason: lax::Str(None),
                stop_sequence: lax::Str(None),
                usage: lax::Obj(None),
            };
            let mut seen = Seen::default();
            s.object(|s, key| match key {
                "id" => seen.read(0, &mut m.id, s, scan_str),
                "model" => seen.read(1, &mut m.model, s, scan_str),
                "content" => seen.read(2, &mut m.content, s, |s| scan_list(s, Block::scan)),
                "stop_reason" => seen.read(3, &mut m.stop_reason, s, scan_str),
                "stop_sequence" => seen.read(4, &mut m.stop_sequence, s, scan_str),
                "usage" => seen.read(5, &mut m.usage, s, |s| scan_obj(s, Usage::scan)),
                _ => s.skip(),
            })?;
            s.end()?;
            Some(m)
        }
    }

    impl<'a> Block<'a> {
        fn scan(s: &mut Scan<'a>) -> Option<Self> {
            let mut b = Block {
                kind: lax::Str(None),
                text: lax::Str(None),
                id: lax::Str(None),
                name: lax::Str(None),
                input: None,
                thinking: lax::Str(None),
                signature: lax::Str(None),
            };
            let mut seen = Seen::default();
            s.object(|s, key| {
                let (bit, field) = match key {
                    "type" => (0, &mut b.kind),
                    "text" => (1, &mut b.text),
                    "id" => (2, &mut b.id),
                    "name" => (3, &mut b.name),
                    "thinking" => (4, &mut b.thinking),
                    "signature" => (5, &mut b.signature),
                    // a tool call's arguments: serde keeps them as raw JSON
                    "input" => return None,
                    _ => return s.skip(),
                };
                seen.read(bit, field, s, scan_str)
            })?;
            Some(b)
        }
    }

    impl Usage {
        fn scan(s: &mut Scan<'_>) -> Option<Self> {
            let mut u = Usage::default();
            let mut seen = Seen::default();
            s.object(|s, key| {
                let (bit, field) = match key {
                    "input_tokens" => (0, &mut u.input_tokens),
                    "output_tokens" => (1, &mut u.output_tokens),
                    "cache_read_input_tokens" => (2, &mut u.cache_read_input_tokens),
                    "cache_creation_input_tokens" => (3, &mut u.cache_creation_input_tokens),
                    _ => return s.skip(),
                };
                seen.read(bit, field, s, scan_count)
            })?;
            Some(u)
        }
    }

    impl<'a> Event<'a> {
        /// The usual event (a delta, `content_block_stop`, `ping`, `message_stop`) without
        /// serde; `None` for anything else (events with a message, a content block, usage or an
        /// error), which serde then reads (see `crate::scan`).
        pub fn scan(text: &'a str) -> Option<Self> {
            let mut s = Scan::new(text);
            let mut e = Event {
                kind: lax::Str(None),
                index: lax::U64(None),
                message: lax::Obj(None),
                content_block: lax::Obj(None),
                delta: lax::Obj(None),
                usage: lax::Obj(None),
                error: lax::Obj(None),
            };
            let mut seen = Seen::default();
            s.object(|s, key| match key {
                "type" => seen.read(0, &mut e.kind, s, scan_str),
                "index" => seen.read(1, &mut e.index, s, scan_u64),
                "delta" => seen.read(2, &mut e.delta, s, |s| scan_obj(s, Delta::scan)),
                "message" | "content_block" | "usage" | "error" => None,
                _ => s.skip(),
            })?;
            s.end()?;
            Some(e)
        }
    }

    impl<'a> Delta<'a> {
        fn scan(s: &mut Scan<'a>) -> Option<Self> {
            let mut d = Delta {
                kind: lax::Str(None),
                text: lax::Str(None),
                partial_json: lax::Str(None),
                thinking: lax::Str(None),
                signature: lax::Str(None),
                stop_reason: lax::Str(None),
                stop_sequence: lax::Str(None),
            };
            let mut seen = Seen::default();
            s.object(|s, key| {
                let (bit, field) = match key {
                    "type" => (0, &mut d.kind),
                    "text" => (1, &mut d.text),
                    "partial_json" => (2, &mut d.partial_json),
                    "thinking" => (3, &mut d.thinking),
                    "signature" => (4, &mut d.signature),
                    "stop_reason" => (5, &mut d.stop_reason),
                    "stop_sequence" => (6, &mut d.stop_sequence),
                    _ => return s.skip(),
                };
                seen.read(bit, field, s, scan_str)
            })?;
            Some(d)
        }
    }
}

/// A tool call's arguments as the `input` object Anthropic clients expect. Arguments that are not
/// a JSON object (a model's mistake) are kept whole under `_raw_arguments` rather than lost.
fn tool_input(arguments: &str) -> out::Input<'_> {
    object_input(arguments)
        .unwrap_or_else(|_| out::Input::Value(json!({"_raw_arguments": arguments})))
}

/// A tool call's arguments as an `input` object: `{}` when empty, the text as it came when it is a
/// JSON object; otherwise `Err(whether it is valid JSON at all)`.
fn object_input(arguments: &str) -> Result<out::Input<'_>, bool> {
    let args = arguments.trim();
    if args.is_empty() {
        return Ok(out::Input::Empty);
    }
    match serde_json::from_str::<&serde_json::value::RawValue>(args) {
        Ok(raw) if args.starts_with('{') => Ok(out::Input::Raw(raw)),
        Ok(_) => Err(true),
        Err(_) => Err(false),
    }
}

/// The error for a tool call whose arguments are not a JSON object (`valid_json`: they are JSON
/// of another kind), which targets that take arguments as an object refuse.
pub(crate) fn bad_arguments(c: &ToolCall, valid_json: bool, label: Label<'_>) -> ProviderError {
    ProviderError::invalid(if valid_json {
        format!(
            "the arguments of tool call `{}` must be a JSON object for {label}",
            c.id
        )
    } else {
        format!(
            "the arguments of tool call `{}` are not valid JSON, which {label} requires",
            c.id
        )
    })
}

fn message_id(id: &str) -> &str {
    if id.is_empty() {
        "msg_tollway"
    } else {
        id
    }
}

/// Encodes a canonical answer as a Messages `message` object for an Anthropic client.
pub fn encode_response(r: &ChatResponse) -> Vec<u8> {
    response_message(r).to_vec()
}

/// The answer [`encode_response`] writes.
fn response_message(r: &ChatResponse) -> out::Message<'_> {
    let content = r
        .content
        .iter()
        .filter_map(|p| match p {
            Part::Text { text, .. } => Some(out::Block::Text { text }),
            Part::ToolCall(c) => Some(out::Block::ToolUse {
                id: &c.id,
                name: &c.name,
                input: tool_input(&c.arguments),
            }),
            Part::Thinking { text, signature } => Some(out::Block::Thinking {
                thinking: text,
                signature: signature.as_deref().unwrap_or_default(),
            }),
            Part::Image(_) | Part::ToolResult(_) => None,
        })
        .collect();
    out::Message {
        id: message_id(&r.id),
        kind: "message",
        role: "assistant",
        model: &r.model,
        content,
        stop_reason: stop_reason_str(&r.stop_reason),
        stop_sequence: r.stop_sequence.as_deref(),
        usage: out::Usage::of(&r.usage),
    }
}

fn bad_answer(msg: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorKind::InvalidResponse, msg)
}

/// A canonical content part from an upstream content block (`None` for block types without a
/// canonical form yet: redacted thinking, server tools).
fn block_part(b: &wire::Block<'_>) -> Option<Part> {
    let s = |v: &json::lax::Str<'_>| v.as_str().unwrap_or_default().to_string();
    match b.kind.as_str()? {
        "text" => Some(Part::text(s(&b.text))),
        "tool_use" => Some(Part::ToolCall(ToolCall {
            id: s(&b.id),
            name: s(&b.name),
            arguments: b.input.map_or_else(|| "{}".into(), |r| r.get().to_string()),
        })),
        "thinking" => Some(Part::Thinking {
            text: s(&b.thinking),
            signature: b.signature.as_str().map(str::to_string),
        }),
        _ => None,
    }
}

/// Decodes an Anthropic upstream's `message` answer.
pub fn decode_response(bytes: &[u8]) -> Result<ChatResponse, ProviderError> {
    // the usual shape without serde; anything else (and every error) through serde
    let v = match std::str::from_utf8(bytes)
        .ok()
        .and_then(wire::Message::scan)
    {
        Some(v) => v,
        None => json::parse_upstream_as::<wire::Message<'_>>(bytes, "an answer")?,
    };
    let blocks = v
        .content
        .0
        .as_ref()
        .ok_or_else(|| bad_answer("the provider's answer has no content"))?;
    Ok(ChatResponse {
        id: v.id.as_str().unwrap_or_default().to_string(),
        model: v.model.as_str().unwrap_or_default().to_string(),
        content: blocks.iter().filter_map(block_part).collect(),
        stop_reason: v
            .stop_reason
            .as_str()
            .map(stop_reason)
            .unwrap_or(StopReason::EndTurn),
        stop_sequence: v.stop_sequence.as_str().map(str::to_string),
        usage: v
            .usage
            .0
            .as_ref()
            .map(wire::Usage::canonical)
            .unwrap_or_default(),
        created: json::now_unix(),
    })
}

// ------------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------------

fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::ContextWindowExceeded | ErrorKind::ContentPolicy => {
            "invalid_request_error"
        }
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::RequestTooLarge => "request_too_large",
        ErrorKind::RateLimited | ErrorKind::BudgetExceeded => "rate_limit_error",
        ErrorKind::Overloaded => "overloaded_error",
        ErrorKind::Timeout => "timeout_error",
        ErrorKind::Upstream
        | ErrorKind::UpstreamConfig
        | ErrorKind::Connection
        | ErrorKind::InvalidResponse
        | ErrorKind::Internal => "api_error",
    }
}

fn error_json(e: &ProviderError) -> Value {
    json!({"type": "error", "error": {"type": error_type(e.kind), "message": e.message}})
}

/// The body of an error answer in Anthropic's shape.
pub fn encode_error(e: &ProviderError) -> Vec<u8> {
    serde_json::to_vec(&error_json(e)).unwrap_or_default()
}

/// Classifies an Anthropic upstream's error answer.
pub fn decode_error(status: u16, body: &[u8], retry_after: Option<Duration>) -> ProviderError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| fallback_message(status, body));
    let mut e = ProviderError::from_upstream_status(status, message, retry_after);
    if e.kind == ErrorKind::InvalidRequest {
        let lower = e.message.to_ascii_lowercase();
        if lower.contains("prompt is too long") || lower.contains("exceed context limit") {
            e.kind = ErrorKind::ContextWindowExceeded;
        } else if lower.contains("content filtering policy") || lower.contains("usage policy") {
            e.kind = ErrorKind::ContentPolicy;
        }
    }
    e
}

fn stream_error(e: Option<&wire::Error<'_>>) -> ProviderError {
    let message = e
        .and_then(|e| e.message.as_str())
        .unwrap_or("the provider reported an error mid-stream")
        .to_string();
    let kind = match e.and_then(|e| e.kind.as_str()) {
        Some("overloaded_error") => ErrorKind::Overloaded,
        Some("rate_limit_error") => ErrorKind::RateLimited,
        Some("invalid_request_error") => ErrorKind::InvalidRequest,
        Some("timeout_error") => ErrorKind::Timeout,
        _ => ErrorKind::Upstream,
    };
    ProviderError::new(kind, message)
}

// ------------------------------------------------------------------------------------------------
// Streams
// ------------------------------------------------------------------------------------------------

/// Turns an Anthropic upstream's stream events into canonical events.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    started: bool,
    finished: bool,
    done: bool,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
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
        if self.done || ev.data.trim().is_empty() {
            return Ok(());
        }
        // the usual shape without serde; anything else (and every error) through serde
        let v = match wire::Event::scan(&ev.data) {
            Some(v) => v,
            None => serde_json::from_str::<wire::Event<'_>>(&ev.data).map_err(|e| {
                bad_answer(format!(
                    "the provider sent a stream event that is not valid JSON: {e}"
                ))
            })?,
        };
        let ty = v.kind.as_str().or(ev.event.as_deref()).unwrap_or_default();
        let index = v.index.0.unwrap_or(0) as u32;
        let text = |s: &json::lax::Str<'_>| s.as_str().unwrap_or_default().to_string();
        match ty {
            "message_start" => {
                let m = v.message.0.as_ref();
                self.started = true;
                out.push(StreamEvent::Start {
                    id: m.map(|m| text(&m.id)).unwrap_or_default(),
                    model: m.map(|m| text(&m.model)).unwrap_or_default(),
                    usage: m
                        .and_then(|m| m.usage.0.as_ref())
                        .map(wire::Usage::canonical)
                        .unwrap_or_default(),
                });
            }
            "content_block_start" => {
                let Some(b) = v.content_block.0.as_ref() else {
                    return Ok(());
                };
                match b.kind.as_str() {
                    Some("tool_use") => out.push(StreamEvent::ToolCallStart {
                        index,
                        id: text(&b.id),
                        name: text(&b.name),
                    }),
                    Some("text") => {
                        if let Some(t) = b.text.as_str().filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::TextDelta {
                                index,
                                text: t.to_string(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let Some(d) = v.delta.0.as_ref() else {
                    return Ok(());
                };
                match d.kind.as_str() {
                    Some("text_delta") => out.push(StreamEvent::TextDelta {
                        index,
                        text: text(&d.text),
                    }),
                    Some("input_json_delta") => {
                        if let Some(piece) = d.partial_json.as_str().filter(|p| !p.is_empty()) {
                            out.push(StreamEvent::ToolCallDelta {
                                index,
                                arguments: piece.to_string(),
                            });
                        }
                    }
                    Some("thinking_delta") => out.push(StreamEvent::ThinkingDelta {
                        index,
                        text: text(&d.thinking),
                    }),
                    Some("signature_delta") => out.push(StreamEvent::ThinkingSignature {
                        index,
                        signature: text(&d.signature),
                    }),
                    _ => {}
                }
            }
            "content_block_stop" => out.push(StreamEvent::BlockStop { index }),
            "message_delta" => {
                if let Some(u) = &v.usage.0 {
                    out.push(StreamEvent::Usage(u.canonical()));
                }
                let d = v.delta.0.as_ref();
                if let Some(sr) = d.and_then(|d| d.stop_reason.as_str()) {
                    self.finished = true;
                    out.push(StreamEvent::Finish {
                        stop_reason: stop_reason(sr),
                        stop_sequence: d.and_then(|d| d.stop_sequence.as_str()).map(str::to_string),
                    });
                }
            }
            "message_stop" => self.done = true,
            "error" => return Err(stream_error(v.error.0.as_ref())),
            _ => {} // ping and event types added later
        }
        Ok(())
    }

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

/// The `delta` of a `content_block_delta` event (serde's view of it, in test builds, is the
/// reference `StreamEncoder::delta` is tested against).
#[cfg_attr(test, derive(serde::Serialize))]
#[cfg_attr(test, serde(tag = "type", rename_all = "snake_case"))]
enum BlockDelta<'a> {
    #[cfg_attr(test, serde(rename = "text_delta"))]
    Text { text: &'a str },
    #[cfg_attr(test, serde(rename = "thinking_delta"))]
    Thinking { thinking: &'a str },
    #[cfg_attr(test, serde(rename = "signature_delta"))]
    Signature { signature: &'a str },
    #[cfg_attr(test, serde(rename = "input_json_delta"))]
    InputJson { partial_json: &'a str },
}

impl<'a> BlockDelta<'a> {
    /// The delta's `type`, the name of its one field, and that field's text.
    fn parts(&self) -> (&'static str, &'static str, &'a str) {
        match *self {
            BlockDelta::Text { text } => ("text_delta", "text", text),
            BlockDelta::Thinking { thinking } => ("thinking_delta", "thinking", thinking),
            BlockDelta::Signature { signature } => ("signature_delta", "signature", signature),
            BlockDelta::InputJson { partial_json } => {
                ("input_json_delta", "partial_json", partial_json)
            }
        }
    }
}

/// A `content_block_delta` event as serde writes it: the reference `StreamEncoder::delta`'s
/// fragments are tested against.
#[cfg(test)]
#[derive(serde::Serialize)]
struct DeltaEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    delta: BlockDelta<'a>,
}

/// The kind of block a `content_block_start` event opens.
enum Opening<'a> {
    Text,
    Thinking,
    ToolUse { id: &'a str, name: &'a str },
}

/// Writes canonical events as Anthropic stream events for an Anthropic client, from fixed
/// fragments with the variable parts escaped between them, keys in the order Anthropic's
/// reference shows them.
#[derive(Debug, Default)]
pub struct StreamEncoder {
    started: bool,
    /// Canonical block index → the client's block index (Anthropic clients need 0, 1, 2 ...).
    blocks: HashMap<u32, u32>,
    /// The client's open block.
    open: Option<u32>,
    usage: Usage,
    stop: Option<(StopReason, Option<String>)>,
    ended: bool,
    cost_usd: Option<String>,
}

impl StreamEncoder {
    /// `include_usage` is an OpenAI notion; Anthropic streams always carry usage.
    pub fn new(_include_usage: bool) -> Self {
        Self::default()
    }

    fn start(&mut self, id: &str, model: &str, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        out.extend_from_slice(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":",
        );
        json::put_str(out, message_id(id));
        out.extend_from_slice(b",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
        json::put_str(out, model);
        out.extend_from_slice(
            b",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":",
        );
        out::Usage::of(&self.usage).write(out);
        out.extend_from_slice(b"}}\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\n");
    }

    fn close_open(&mut self, out: &mut Vec<u8>) {
        if let Some(i) = self.open.take() {
            out.extend_from_slice(
                b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":",
            );
            out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
            out.extend_from_slice(b"}\n\n");
        }
    }

    /// The client's index for canonical block `index`, opening it as `kind` if it is new.
    fn block(&mut self, index: u32, kind: Opening<'_>, out: &mut Vec<u8>) -> u32 {
        self.start("", "", out);
        if let Some(&i) = self.blocks.get(&index) {
            return i;
        }
        self.close_open(out);
        let i = self.blocks.len() as u32;
        self.blocks.insert(index, i);
        self.open = Some(i);
        out.extend_from_slice(
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":",
        );
        out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
        out.extend_from_slice(b",\"content_block\":");
        match kind {
            Opening::Text => out.extend_from_slice(b"{\"type\":\"text\",\"text\":\"\"}"),
            Opening::Thinking => out
                .extend_from_slice(b"{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}"),
            Opening::ToolUse { id, name } => {
                out.extend_from_slice(b"{\"type\":\"tool_use\",\"id\":");
                json::put_str(out, id);
                out.extend_from_slice(b",\"name\":");
                json::put_str(out, name);
                out.extend_from_slice(b",\"input\":{}}");
            }
        }
        out.extend_from_slice(b"}\n\n");
        i
    }

    /// A `content_block_delta` event, serialised from borrowed fields (the hot part of a stream).
    /// One `content_block_delta` event (one per streamed token), written from fixed fragments
    /// with the text through [`json::put_str`]: byte for byte what serializing a
    /// `DeltaEvent` gives (tested).
    fn delta(out: &mut Vec<u8>, index: u32, delta: BlockDelta<'_>) {
        let (kind, field, text) = delta.parts();
        out.extend_from_slice(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
        );
        out.extend_from_slice(itoa::Buffer::new().format(index).as_bytes());
        out.extend_from_slice(b",\"delta\":{\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"");
        out.extend_from_slice(field.as_bytes());
        out.extend_from_slice(b"\":");
        json::put_str(out, text);
        out.extend_from_slice(b"}}\n\n");
    }

    pub fn push(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        match ev {
            StreamEvent::Start { id, model, usage } => {
                self.usage.merge(usage);
                self.start(id, model, out);
            }
            StreamEvent::TextDelta { index, text } => {
                let i = self.block(*index, Opening::Text, out);
                Self::delta(out, i, BlockDelta::Text { text });
            }
            StreamEvent::ThinkingDelta { index, text } => {
                let i = self.block(*index, Opening::Thinking, out);
                Self::delta(out, i, BlockDelta::Thinking { thinking: text });
            }
            StreamEvent::ThinkingSignature { index, signature } => {
                let i = self.block(*index, Opening::Thinking, out);
                Self::delta(out, i, BlockDelta::Signature { signature });
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.block(*index, Opening::ToolUse { id, name }, out);
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                let i = self.block(*index, Opening::ToolUse { id: "", name: "" }, out);
                Self::delta(
                    out,
                    i,
                    BlockDelta::InputJson {
                        partial_json: arguments,
                    },
                );
            }
            StreamEvent::BlockStop { index } => {
                if let Some(&i) = self.blocks.get(index) {
                    if self.open == Some(i) {
                        self.close_open(out);
                    }
                }
            }
            StreamEvent::Finish {
                stop_reason,
                stop_sequence,
            } => self.stop = Some((stop_reason.clone(), stop_sequence.clone())),
            StreamEvent::Usage(u) => self.usage.merge(u),
        }
    }

    /// The request's cost, added to `message_delta`'s usage as `cost_usd` (a decimal string).
    pub fn set_cost_usd(&mut self, cost: Option<String>) {
        self.cost_usd = cost;
    }

    /// The upstream finished: `message_delta` (stop reason and final usage) and `message_stop`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.start("", "", out);
        self.close_open(out);
        let (reason, seq) = self.stop.take().unwrap_or((StopReason::EndTurn, None));
        let usage = out::Usage {
            cost_usd: self.cost_usd.as_deref(),
            ..out::Usage::of(&self.usage)
        };
        out.extend_from_slice(
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":",
        );
        json::put_str(out, stop_reason_str(&reason));
        out.extend_from_slice(b",\"stop_sequence\":");
        match &seq {
            Some(s) => json::put_str(out, s),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"},\"usage\":");
        usage.write(out);
        out.extend_from_slice(b"}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    }

    /// The upstream failed mid-stream: an `error` event, as Anthropic sends one.
    pub fn error(&mut self, e: &ProviderError, out: &mut Vec<u8>) {
        self.ended = true;
        write_json_event(out, Some("error"), &error_json(e));
    }

    pub fn usage(&self) -> Usage {
        self.usage
    }
}

#[cfg(test)]
mod tests;
