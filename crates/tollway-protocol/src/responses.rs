//! OpenAI's Responses API (`POST /v1/responses`) as a client surface: a request is decoded into the
//! canonical [`ChatRequest`], and the answer is written back as a `response` object, or streamed as
//! the API's typed events (`response.created`, `response.output_text.delta`, ...,
//! `response.completed`). Any model is reached this way, as through the other two surfaces.
//!
//! Stateless: Tollway stores no response, so `previous_response_id` and `conversation` are refused
//! with a 400 saying to send the whole conversation in `input` (what clients do with
//! `store: false`). Input items: messages (text and image parts), `function_call` and
//! `function_call_output`; tools: `function` tools. Built-in tools (web search, file search,
//! code interpreter...), file inputs and reasoning items are refused with a 400 naming them.
//! Request fields that Chat Completions also has (`reasoning.effort`, `metadata`,
//! `service_tier`, `prompt_cache_key`, `safety_identifier`) travel on under their Chat Completions
//! names, and each upstream format takes them as it takes a Chat Completions client's (an
//! Anthropic upstream gets the effort as its `output_config.effort`). Other fields are refused by
//! name. Errors use OpenAI's error shape ([`crate::openai::encode_error`]).

use std::collections::HashMap;

use serde_json::{json, Map, Value};
use tollway_core::{
    ApiFamily, ChatRequest, ChatResponse, Extra, ImageSource, Message, Part, ProviderError,
    ResponseFormat, Role, StopReason, StreamEvent, ToolCall, ToolChoice, ToolDef, ToolResult,
    Usage,
};

use crate::json::{self, index, invalid_value, missing, wrong_type, Obj};
use crate::openai::{function_def, json_schema_format, push_to_turn, tool_choice_mode};
use crate::sse::write_json_event;

/// Request fields accepted and without effect: `store` (nothing is stored either way),
/// `include` (extra output Tollway does not produce) and `stream_options`. (So are
/// `truncation: "disabled"`, `background: false` and `top_logprobs: 0`; their other values are
/// refused.)
const IGNORED: [&str; 3] = ["store", "include", "stream_options"];

/// Decodes a client's `POST /v1/responses` body. Errors name the field.
pub fn decode_request(bytes: &[u8]) -> Result<ChatRequest, ProviderError> {
    let mut o = Obj::new(json::parse_object(bytes)?, "");
    let model = o.req_str("model")?;
    for key in ["previous_response_id", "conversation", "prompt"] {
        if o.map.get(key).is_some_and(|v| !v.is_null()) {
            return Err(invalid_value(
                key,
                "Tollway stores no responses, conversations or prompts; send the whole conversation in `input` (as with `store: false`)",
            ));
        }
        o.map.remove(key);
    }
    let mut messages = Vec::new();
    if let Some(instructions) = o.str("instructions")? {
        messages.push(Message::text(Role::System, instructions));
    }
    match o.take("input") {
        None | Some(Value::Null) => return Err(missing("input")),
        Some(Value::String(s)) => messages.push(Message::text(Role::User, s)),
        Some(Value::Array(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                decode_item(item, &index("input", i), &mut messages)?;
            }
        }
        Some(other) => {
            return Err(wrong_type(
                "input",
                "a string or an array of input items",
                &other,
            ))
        }
    }
    if messages.iter().all(|m| m.role == Role::System) {
        return Err(invalid_value(
            "input",
            "at least one input item is required",
        ));
    }
    let max_tokens = o.u32("max_output_tokens")?;
    let temperature = o.f64("temperature")?;
    let top_p = o.f64("top_p")?;
    let stream = o.bool("stream")?.unwrap_or(false);
    let tools = match o.array("tools")? {
        None => Vec::new(),
        Some(a) => a
            .into_iter()
            .enumerate()
            .map(|(i, t)| decode_tool(t, &index("tools", i)))
            .collect::<Result<_, _>>()?,
    };
    let tool_choice = match o.take("tool_choice") {
        None | Some(Value::Null) => None,
        Some(v) => Some(decode_tool_choice(v)?),
    };
    let parallel_tool_calls = o.bool("parallel_tool_calls")?;
    let response_format = match o.obj("text")? {
        None => None,
        Some(mut text) => {
            let format = match text.obj("format")? {
                None => None,
                Some(f) => Some(decode_format(f)?),
            };
            if let Some(v) = text.take("verbosity") {
                if !v.is_null() {
                    return Err(invalid_value(
                        "text.verbosity",
                        "not supported through Tollway's /v1/responses",
                    ));
                }
            }
            refuse_rest(text)?;
            format
        }
    };
    let user = o.str("user")?;
    // fields Chat Completions also has: passed on under their Chat Completions names
    let mut extra = Map::new();
    if let Some(mut r) = o.obj("reasoning")? {
        if let Some(effort) = r.str("effort")? {
            extra.insert("reasoning_effort".into(), Value::String(effort));
        }
        for key in ["summary", "generate_summary"] {
            if r.take(key).is_some_and(|v| !v.is_null()) {
                return Err(invalid_value(
                    &r.path_of(key),
                    "reasoning summaries are not supported through Tollway's /v1/responses",
                ));
            }
        }
        refuse_rest(r)?;
    }
    for key in [
        "metadata",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
    ] {
        if let Some(v) = o.take(key) {
            if !v.is_null() {
                extra.insert(key.into(), v);
            }
        }
    }
    for key in IGNORED {
        o.map.remove(key);
    }
    match o.take("truncation") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "disabled" => {}
        Some(_) => {
            return Err(invalid_value(
                "truncation",
                "only `disabled` is supported: Tollway sends the input as it is",
            ))
        }
    }
    if o.bool("background")? == Some(true) {
        return Err(invalid_value(
            "background",
            "background responses are not supported: Tollway stores no responses",
        ));
    }
    match o.take("top_logprobs") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_u64() == Some(0) => {}
        Some(_) => {
            return Err(invalid_value(
                "top_logprobs",
                "log probabilities are not supported through Tollway's /v1/responses",
            ))
        }
    }
    if o.take("max_tool_calls").is_some_and(|v| !v.is_null()) {
        return Err(invalid_value(
            "max_tool_calls",
            "not supported through Tollway's /v1/responses",
        ));
    }
    // routing fields (`models`, `provider`) stay for the gateway; anything else is refused
    for key in ["models", "provider"] {
        if let Some(v) = o.map.remove(key) {
            extra.insert(key.into(), v);
        }
    }
    refuse_rest(o)?;
    Ok(ChatRequest {
        model,
        messages,
        max_tokens,
        temperature,
        top_p,
        top_k: None,
        stop: Vec::new(),
        stream,
        // the final `response.completed` event always carries the usage
        include_usage: true,
        tools,
        tool_choice,
        parallel_tool_calls,
        response_format,
        user,
        betas: Vec::new(),
        extra: Extra {
            family: ApiFamily::OpenAi,
            fields: extra,
        },
    })
}

/// A 400 naming the first field of `o` left unread (other than a `null` one).
fn refuse_rest(o: Obj) -> Result<(), ProviderError> {
    match o.map.iter().find(|(_, v)| !v.is_null()) {
        None => Ok(()),
        Some((key, _)) => Err(invalid_value(
            &o.path_of(key),
            "unknown or unsupported field for Tollway's /v1/responses",
        )),
    }
}

fn decode_item(v: Value, path: &str, out: &mut Vec<Message>) -> Result<(), ProviderError> {
    let mut it = Obj::from_value(v, path.to_string())?;
    let kind = it.str("type")?.unwrap_or_else(|| "message".into());
    match kind.as_str() {
        "message" => {
            let role = it.req_str("role")?;
            let role = match role.as_str() {
                "user" => Role::User,
                "system" | "developer" => Role::System,
                "assistant" => Role::Assistant,
                other => {
                    return Err(invalid_value(
                        &it.path_of("role"),
                        format!("unknown role `{other}` (expected user, system, developer or assistant)"),
                    ))
                }
            };
            let content = decode_parts(&mut it, "content")?;
            if role != Role::User && content.iter().any(|p| matches!(p, Part::Image(_))) {
                return Err(invalid_value(
                    &it.path_of("content"),
                    "images are only supported in user messages",
                ));
            }
            out.push(Message { role, content });
        }
        "function_call" => {
            let call = ToolCall {
                id: it.req_str("call_id")?,
                name: it.req_str("name")?,
                arguments: it.str("arguments")?.unwrap_or_default(),
            };
            // the calls of one turn (and any text before them) are one assistant message
            push_to_turn(out, Role::Assistant, Part::ToolCall(call));
        }
        "function_call_output" => {
            let tool_call_id = it.req_str("call_id")?;
            let content = decode_parts(&mut it, "output")?;
            let result = Part::ToolResult(ToolResult {
                tool_call_id,
                content,
                is_error: false,
            });
            push_to_turn(out, Role::Tool, result);
        }
        other => {
            return Err(invalid_value(
                &it.path_of("type"),
                format!("input items of type `{other}` are not supported through Tollway's /v1/responses (messages, function_call and function_call_output are)"),
            ))
        }
    }
    Ok(())
}

/// The required field `key` of `it`: a string (one text part) or an array of content parts.
fn decode_parts(it: &mut Obj, key: &str) -> Result<Vec<Part>, ProviderError> {
    let path = it.path_of(key);
    match it.take(key) {
        None => Err(missing(&path)),
        Some(Value::String(s)) => Ok(vec![Part::text(s)]),
        Some(Value::Array(parts)) => parts
            .into_iter()
            .enumerate()
            .filter_map(|(i, p)| decode_part(p, &index(&path, i)).transpose())
            .collect(),
        Some(other) => Err(wrong_type(
            &path,
            "a string or an array of content parts",
            &other,
        )),
    }
}

/// A content part; `None` for parts that carry nothing to send (an empty refusal).
fn decode_part(v: Value, path: &str) -> Result<Option<Part>, ProviderError> {
    let mut p = Obj::from_value(v, path.to_string())?;
    let kind = p.req_str("type")?;
    match kind.as_str() {
        "input_text" | "output_text" | "text" => Ok(Some(Part::text(p.req_str("text")?))),
        "refusal" => Ok(p.str("refusal")?.filter(|r| !r.is_empty()).map(Part::text)),
        "input_image" => match p.str("image_url")? {
            Some(url) => Ok(Some(Part::Image(ImageSource::from_url(&url)))),
            None if p.map.contains_key("file_id") => Err(invalid_value(
                &p.path_of("file_id"),
                "uploaded files are not supported; send the image as `image_url` (a URL or a data: URL)",
            )),
            None => Err(missing(&p.path_of("image_url"))),
        },
        other => Err(invalid_value(
            &p.path_of("type"),
            format!("content parts of type `{other}` are not supported through Tollway's /v1/responses (input_text and input_image are)"),
        )),
    }
}

fn decode_tool(v: Value, path: &str) -> Result<ToolDef, ProviderError> {
    let mut t = Obj::from_value(v, path.to_string())?;
    let kind = t.req_str("type")?;
    if kind != "function" {
        return Err(invalid_value(
            &t.path_of("type"),
            format!("only `function` tools are supported, not the built-in `{kind}`"),
        ));
    }
    function_def(&mut t)
}

fn decode_tool_choice(v: Value) -> Result<ToolChoice, ProviderError> {
    match v {
        Value::String(s) => tool_choice_mode(&s).ok_or_else(|| {
            invalid_value(
                "tool_choice",
                format!("expected `auto`, `none`, `required` or a function, got `{s}`"),
            )
        }),
        Value::Object(map) => {
            let mut o = Obj::new(map, "tool_choice");
            let kind = o.req_str("type")?;
            if kind != "function" {
                return Err(invalid_value(
                    "tool_choice.type",
                    format!("only `function` can be chosen, got `{kind}`"),
                ));
            }
            Ok(ToolChoice::Tool(o.req_str("name")?))
        }
        other => Err(wrong_type("tool_choice", "a string or an object", &other)),
    }
}

fn decode_format(mut f: Obj) -> Result<ResponseFormat, ProviderError> {
    let kind = f.req_str("type")?;
    match kind.as_str() {
        "text" => Ok(ResponseFormat::Text),
        "json_object" => Ok(ResponseFormat::JsonObject),
        "json_schema" => {
            let schema = match f.take("schema") {
                None => return Err(missing(&f.path_of("schema"))),
                Some(s @ Value::Object(_)) => s,
                Some(other) => return Err(wrong_type(&f.path_of("schema"), "an object", &other)),
            };
            json_schema_format(&mut f, schema)
        }
        other => Err(invalid_value(
            &f.path_of("type"),
            format!("expected `text`, `json_object` or `json_schema`, got `{other}`"),
        )),
    }
}

// ------------------------------------------------------------------------------------------------
// Answers
// ------------------------------------------------------------------------------------------------

/// The response id for an upstream answer's id.
fn response_id(id: &str) -> String {
    format!("resp_{}", id.trim_start_matches("chatcmpl-"))
}

/// Whether the answer is complete, and if not, why (`incomplete_details.reason`).
fn completion(stop: Option<&StopReason>) -> (&'static str, Value) {
    match stop {
        Some(StopReason::MaxTokens) => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some(StopReason::ContentFilter) => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

fn usage_json(u: &Usage, cost_usd: Option<&str>) -> Value {
    let mut v = json!({
        "input_tokens": u.prompt_tokens(),
        "input_tokens_details": {"cached_tokens": u.cache_read_tokens},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total_tokens(),
    });
    if let (Some(c), Some(o)) = (cost_usd, v.as_object_mut()) {
        o.insert("cost_usd".into(), json!(c));
    }
    v
}

fn message_item(id: &str, status: &str, texts: &[&str]) -> Value {
    let content: Vec<Value> = texts
        .iter()
        .map(|t| json!({"type": "output_text", "text": t, "annotations": [], "logprobs": []}))
        .collect();
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
}

fn call_item(call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": format!("fc_{call_id}"), "call_id": call_id,
           "name": name, "arguments": arguments, "status": status})
}

/// The request's settings that a `response` object repeats, as the API's do: `tools`,
/// `tool_choice`, `temperature`, `top_p`, `max_output_tokens`, `parallel_tool_calls`,
/// `text.format`, `user`, `metadata` and `reasoning.effort`. (`instructions` is not repeated:
/// in the canonical request it is one more system message.)
#[derive(Debug, Clone, Default)]
pub struct Settings(Map<String, Value>);

impl Settings {
    pub fn of(req: &ChatRequest) -> Self {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "name": t.name, "description": t.description,
                       "parameters": t.parameters, "strict": t.strict})
            })
            .collect();
        let tool_choice = match &req.tool_choice {
            None | Some(ToolChoice::Auto) => json!("auto"),
            Some(ToolChoice::None) => json!("none"),
            Some(ToolChoice::Required) => json!("required"),
            Some(ToolChoice::Tool(name)) => json!({"type": "function", "name": name}),
        };
        let format = match &req.response_format {
            None | Some(ResponseFormat::Text) => json!({"type": "text"}),
            Some(ResponseFormat::JsonObject) => json!({"type": "json_object"}),
            Some(ResponseFormat::JsonSchema {
                name,
                description,
                schema,
                strict,
            }) => json!({"type": "json_schema", "name": name, "description": description,
                         "schema": schema, "strict": strict}),
        };
        let extra = &req.extra.fields;
        let mut m = Map::new();
        m.insert("tools".into(), Value::Array(tools));
        m.insert("tool_choice".into(), tool_choice);
        m.insert("temperature".into(), json!(req.temperature));
        m.insert("top_p".into(), json!(req.top_p));
        m.insert("max_output_tokens".into(), json!(req.max_tokens));
        m.insert(
            "parallel_tool_calls".into(),
            json!(req.parallel_tool_calls.unwrap_or(true)),
        );
        m.insert("text".into(), json!({ "format": format }));
        m.insert("user".into(), json!(req.user));
        m.insert(
            "metadata".into(),
            extra.get("metadata").cloned().unwrap_or_else(|| json!({})),
        );
        m.insert(
            "reasoning".into(),
            json!({"effort": extra.get("reasoning_effort"), "summary": null}),
        );
        Settings(m)
    }
}

/// The `response` object: what every response carries, with the request's `settings`.
/// The fourth argument: its `status` and `incomplete_details`.
fn response_object(
    id: &str,
    model: &str,
    created_at: u64,
    (status, incomplete): (&str, Value),
    output: Vec<Value>,
    usage: Value,
    settings: &Settings,
) -> Value {
    let mut v = json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": null,
        "incomplete_details": incomplete,
        "instructions": null,
        "max_output_tokens": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "store": false,
        "temperature": null,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
        "truncation": "disabled",
        "usage": usage,
        "user": null,
        "metadata": {},
    });
    if let Some(o) = v.as_object_mut() {
        for (k, val) in &settings.0 {
            o.insert(k.clone(), val.clone());
        }
    }
    v
}

/// Writes a canonical answer as a `response` object, with the request's `settings`. Thinking
/// parts are not written: this surface never asks for them.
pub fn encode_response(r: &ChatResponse, settings: &Settings) -> Vec<u8> {
    let id = response_id(&r.id);
    let (status, incomplete) = completion(Some(&r.stop_reason));
    let mut output = Vec::new();
    let texts: Vec<&str> = r
        .content
        .iter()
        .filter_map(|p| match p {
            Part::Text { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    if !texts.is_empty() {
        output.push(message_item(&format!("msg_{}", r.id), status, &texts));
    }
    for p in &r.content {
        if let Part::ToolCall(c) = p {
            output.push(call_item(&c.id, &c.name, &c.arguments, "completed"));
        }
    }
    let v = response_object(
        &id,
        &r.model,
        r.created,
        (status, incomplete),
        output,
        usage_json(&r.usage, None),
        settings,
    );
    v.to_string().into_bytes()
}

// ------------------------------------------------------------------------------------------------
// Streams
// ------------------------------------------------------------------------------------------------

/// One output item being streamed; `id` is its item id.
#[derive(Debug)]
enum Item {
    Message {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// A text or arguments delta event, written without a `Value` tree (one per streamed token):
/// what [`StreamEncoder::event`] would write for it.
fn write_delta(
    out: &mut Vec<u8>,
    kind: &str,
    sequence: u64,
    item_id: &str,
    output_index: usize,
    text: bool,
    delta: &str,
) {
    use std::io::Write;
    // writing to a Vec cannot fail
    let _ = write!(
        out,
        "event: {kind}\ndata: {{\"type\":\"{kind}\",\"sequence_number\":{sequence},\"item_id\":"
    );
    json::put_str(out, item_id);
    let _ = write!(out, ",\"output_index\":{output_index}");
    if text {
        out.extend_from_slice(b",\"content_index\":0,\"logprobs\":[]");
    }
    out.extend_from_slice(b",\"delta\":");
    json::put_str(out, delta);
    out.extend_from_slice(b"}\n\n");
}

/// Writes canonical events as the Responses API's stream events.
#[derive(Debug)]
pub struct StreamEncoder {
    id: String,
    model: String,
    created_at: u64,
    sequence: u64,
    started: bool,
    /// Every output item so far, in output order; `open` those not done yet.
    items: Vec<Item>,
    open: Vec<bool>,
    /// The message item text is going to, if one is open.
    message: Option<usize>,
    /// Canonical block index → output index of a function call.
    calls: HashMap<u32, usize>,
    stop: Option<StopReason>,
    usage: Usage,
    cost_usd: Option<String>,
    done: bool,
    settings: Settings,
}

impl StreamEncoder {
    /// An encoder for the answer to a request with these `settings` ([`Settings::of`]).
    pub fn new(settings: Settings) -> Self {
        StreamEncoder {
            settings,
            id: String::new(),
            model: String::new(),
            created_at: json::now_unix(),
            sequence: 0,
            started: false,
            items: Vec::new(),
            open: Vec::new(),
            message: None,
            calls: HashMap::new(),
            stop: None,
            usage: Usage::default(),
            cost_usd: None,
            done: false,
        }
    }

    fn event(&mut self, kind: &str, mut data: Value, out: &mut Vec<u8>) {
        if let Some(o) = data.as_object_mut() {
            o.insert("type".into(), json!(kind));
            o.insert("sequence_number".into(), json!(self.sequence));
        }
        self.sequence += 1;
        write_json_event(out, Some(kind), &data);
    }

    fn snapshot(&self, status: &str, incomplete: Value, usage: Value) -> Value {
        let output = self
            .items
            .iter()
            .zip(&self.open)
            .map(|(item, &open)| self.item_json(item, if open { "in_progress" } else { status }))
            .collect();
        response_object(
            &self.id,
            &self.model,
            self.created_at,
            (status, incomplete),
            output,
            usage,
            &self.settings,
        )
    }

    fn item_json(&self, item: &Item, status: &str) -> Value {
        let status = if status == "in_progress" || status == "completed" {
            status
        } else {
            "incomplete"
        };
        match item {
            Item::Message { id, text } => message_item(id, status, &[text]),
            Item::Call {
                call_id,
                name,
                arguments,
                ..
            } => call_item(call_id, name, arguments, status),
        }
    }

    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        if self.id.is_empty() {
            self.id = "resp_tollway".into();
        }
        let snapshot = self.snapshot("in_progress", Value::Null, Value::Null);
        self.event(
            "response.created",
            json!({ "response": snapshot.clone() }),
            out,
        );
        self.event("response.in_progress", json!({ "response": snapshot }), out);
    }

    fn open_message(&mut self, out: &mut Vec<u8>) -> usize {
        if let Some(i) = self.message {
            return i;
        }
        let i = self.items.len();
        let id = format!("msg_{}_{i}", self.id.trim_start_matches("resp_"));
        self.items.push(Item::Message {
            id: id.clone(),
            text: String::new(),
        });
        self.open.push(true);
        self.message = Some(i);
        let item = json!({"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []});
        self.event(
            "response.output_item.added",
            json!({"output_index": i, "item": item}),
            out,
        );
        self.event(
            "response.content_part.added",
            json!({"item_id": id, "output_index": i, "content_index": 0,
                   "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
            out,
        );
        i
    }

    /// Ends output item `i` (its `.done` events), if it is open.
    fn close(&mut self, i: usize, out: &mut Vec<u8>) {
        if !self.open.get(i).copied().unwrap_or(false) {
            return;
        }
        self.open[i] = false;
        let (status, _) = completion(self.stop.as_ref());
        let item = self.item_json(&self.items[i], status);
        match &self.items[i] {
            Item::Message { id, text } => {
                let (id, text) = (id.clone(), text.clone());
                self.message = None;
                self.event(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": i, "content_index": 0, "text": text, "logprobs": []}),
                    out,
                );
                self.event(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": i, "content_index": 0,
                           "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []}}),
                    out,
                );
            }
            Item::Call { id, arguments, .. } => {
                let (id, arguments) = (id.clone(), arguments.clone());
                self.event(
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": i, "arguments": arguments}),
                    out,
                );
            }
        }
        self.event(
            "response.output_item.done",
            json!({"output_index": i, "item": item}),
            out,
        );
    }

    fn close_all(&mut self, out: &mut Vec<u8>) {
        for i in 0..self.items.len() {
            self.close(i, out);
        }
    }

    pub fn push(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        match ev {
            StreamEvent::Start { id, model, usage } => {
                if !self.started {
                    self.id = response_id(id);
                    self.model.clone_from(model);
                }
                self.usage.merge(usage);
                self.ensure_started(out);
            }
            StreamEvent::TextDelta { text, .. } => {
                self.ensure_started(out);
                let i = self.open_message(out);
                let sequence = self.sequence;
                let Item::Message { id, text: all } = &mut self.items[i] else {
                    return;
                };
                self.sequence += 1;
                all.push_str(text);
                write_delta(
                    out,
                    "response.output_text.delta",
                    sequence,
                    id,
                    i,
                    true,
                    text,
                );
            }
            // never asked for through this surface
            StreamEvent::ThinkingDelta { .. } | StreamEvent::ThinkingSignature { .. } => {}
            StreamEvent::ToolCallStart { index, id, name } => {
                self.ensure_started(out);
                if let Some(m) = self.message {
                    self.close(m, out);
                }
                let i = self.items.len();
                self.items.push(Item::Call {
                    id: format!("fc_{id}"),
                    call_id: id.clone(),
                    name: name.clone(),
                    arguments: String::new(),
                });
                self.open.push(true);
                self.calls.insert(*index, i);
                let item = call_item(id, name, "", "in_progress");
                self.event(
                    "response.output_item.added",
                    json!({"output_index": i, "item": item}),
                    out,
                );
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                self.ensure_started(out);
                let Some(&i) = self.calls.get(index) else {
                    return;
                };
                let sequence = self.sequence;
                let Item::Call {
                    id, arguments: all, ..
                } = &mut self.items[i]
                else {
                    return;
                };
                self.sequence += 1;
                all.push_str(arguments);
                write_delta(
                    out,
                    "response.function_call_arguments.delta",
                    sequence,
                    id,
                    i,
                    false,
                    arguments,
                );
            }
            StreamEvent::BlockStop { index } => {
                if let Some(&i) = self.calls.get(index) {
                    self.close(i, out);
                }
            }
            StreamEvent::Finish { stop_reason, .. } => {
                self.ensure_started(out);
                self.stop = Some(stop_reason.clone());
            }
            StreamEvent::Usage(u) => self.usage.merge(u),
        }
    }

    /// The request's cost, added to the final usage as `usage.cost_usd` (a decimal string).
    pub fn set_cost_usd(&mut self, cost: Option<String>) {
        self.cost_usd = cost;
    }

    /// The upstream finished: every open item done, then `response.completed` (or
    /// `response.incomplete`) with the whole response and its usage.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.ensure_started(out);
        self.close_all(out);
        self.done = true;
        let (status, incomplete) = completion(self.stop.as_ref());
        let usage = usage_json(&self.usage, self.cost_usd.as_deref());
        let snapshot = self.snapshot(status, incomplete, usage);
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.event(kind, json!({ "response": snapshot }), out);
    }

    /// The upstream failed mid-stream: an `error` event, then `response.failed` with the error.
    pub fn error(&mut self, e: &ProviderError, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.ensure_started(out);
        self.done = true;
        let (ty, code) = crate::openai::error_type_code(e.kind);
        let code = code.unwrap_or(ty);
        self.event(
            "error",
            json!({"code": code, "message": e.message, "param": e.param}),
            out,
        );
        let mut snapshot = self.snapshot(
            "failed",
            Value::Null,
            usage_json(&self.usage, self.cost_usd.as_deref()),
        );
        snapshot["error"] = json!({"code": code, "message": e.message});
        self.event("response.failed", json!({ "response": snapshot }), out);
    }

    /// Usage gathered so far (for the ledger).
    pub fn usage(&self) -> Usage {
        self.usage
    }
}

#[cfg(test)]
mod tests;
