//! OpenAI wire format: `POST /v1/chat/completions`, `POST /v1/embeddings`, `GET /v1/models`,
//! request validation and error bodies; also the answers Azure OpenAI gives ([`Azure`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::azure::{self, Azure};
use crate::gen::{self, Call, Finish, Gate, Piece, Script, ToolDef};
use crate::knobs::{base_model, Fault, Knobs};
use crate::{b64, InFlight, Route, Shared};

const FINGERPRINT: &str = "fp_t0llwaym0ck";

/// An OpenAI error body with its status.
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) body: Value,
    pub(crate) retry_after: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body)).into_response();
        if let Some(ra) = self
            .retry_after
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            r.headers_mut().insert(header::RETRY_AFTER, ra);
        }
        r
    }
}

pub fn error_response(
    status: StatusCode,
    message: &str,
    typ: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> ApiError {
    ApiError {
        status,
        body: json!({"error": {"message": message, "type": typ, "param": param, "code": code}}),
        retry_after: None,
    }
}

pub(crate) fn invalid(
    message: impl AsRef<str>,
    param: Option<&str>,
    code: Option<&str>,
) -> ApiError {
    error_response(
        StatusCode::BAD_REQUEST,
        message.as_ref(),
        "invalid_request_error",
        param,
        code,
    )
}

/// The error OpenAI sends for an injected status.
pub(crate) fn fault_error(status: u16, model: &str, retry_after: Option<String>) -> ApiError {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (message, typ, c): (String, &str, Option<&str>) = match status {
        400 => ("Invalid request (injected by tollway-mock).".into(), "invalid_request_error", None),
        401 => (
            "Incorrect API key provided: sk-mock***. You can find your API key at https://platform.openai.com/account/api-keys.".into(),
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        403 => (
            "You are not allowed to sample from this model".into(),
            "invalid_request_error",
            Some("model_not_found"),
        ),
        404 => (
            format!("The model `{model}` does not exist or you do not have access to it."),
            "invalid_request_error",
            Some("model_not_found"),
        ),
        429 => (
            format!("Rate limit reached for {model} in organization org-mock on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s."),
            "requests",
            Some("rate_limit_exceeded"),
        ),
        503 | 529 => (
            "The engine is currently overloaded, please try again later.".into(),
            "server_error",
            None,
        ),
        s if s < 500 => (format!("Request failed with status {s} (injected by tollway-mock)."), "invalid_request_error", None),
        _ => (
            "The server had an error while processing your request. Sorry about that!".into(),
            "server_error",
            None,
        ),
    };
    let mut e = error_response(code, &message, typ, None, c);
    if matches!(status, 429 | 503 | 529) {
        e.retry_after = retry_after;
    }
    e
}

/// The part of a chat request the mock acts on, after validation.
struct ChatReq<'a> {
    model: &'a str,
    last_user_text: Option<String>,
    /// The trailing tool results, when the last message is one.
    tool_results: Option<String>,
    tools: Vec<ToolDef<'a>>,
    forced: Option<Option<&'a str>>,
    tool_choice_none: bool,
    stream: bool,
    include_usage: bool,
    max_tokens: Option<u64>,
    stop: Vec<String>,
    prompt_tokens: u64,
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(invalid(
            "Invalid type for request body: expected an object.",
            None,
            Some("invalid_type"),
        )),
        Err(_) => Err(invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)",
            None,
            None,
        )),
    }
}

fn missing(param: &str) -> ApiError {
    invalid(
        format!("Missing required parameter: '{param}'."),
        Some(param),
        Some("missing_required_parameter"),
    )
}

fn bad_type(param: &str, want: &str) -> ApiError {
    invalid(
        format!("Invalid type for '{param}': expected {want}."),
        Some(param),
        Some("invalid_type"),
    )
}

/// Text of a message's `content` (string or parts), plus its prompt-token estimate.
fn content_text(content: &Value, param: &str, role: &str) -> Result<(String, u64), ApiError> {
    match content {
        Value::String(s) => Ok((s.clone(), gen::text_tokens(s))),
        Value::Null if role == "assistant" => Ok((String::new(), 0)),
        Value::Array(parts) => {
            let mut text = String::new();
            let mut tokens = 0;
            for (j, part) in parts.iter().enumerate() {
                let p = format!("{param}[{j}]");
                let typ = part
                    .get("type")
                    .and_then(Value::as_str)
                    .ok_or_else(|| missing(&format!("{p}.type")))?;
                match typ {
                    "text" | "refusal" => {
                        let key = if typ == "text" { "text" } else { "refusal" };
                        let t = part
                            .get(key)
                            .and_then(Value::as_str)
                            .ok_or_else(|| missing(&format!("{p}.{key}")))?;
                        tokens += gen::text_tokens(t);
                        text.push_str(t);
                    }
                    "image_url" if role == "user" => {
                        part.get("image_url")
                            .and_then(|u| u.get("url"))
                            .and_then(Value::as_str)
                            .ok_or_else(|| missing(&format!("{p}.image_url.url")))?;
                        tokens += gen::IMAGE_TOKENS;
                    }
                    "input_audio" | "file" if role == "user" => tokens += gen::IMAGE_TOKENS,
                    other => {
                        return Err(invalid(
                            format!("Invalid value: '{other}'. Supported values are: 'text', 'image_url', 'input_audio', 'refusal', 'audio', and 'file'."),
                            Some(&format!("{p}.type")),
                            Some("invalid_value"),
                        ))
                    }
                }
            }
            Ok((text, tokens))
        }
        _ => Err(bad_type(param, "one of a string or array of objects")),
    }
}

/// A chat request; `deployment` (Azure's, from the path) stands for the model, the body's `model`
/// then being ignored.
fn validate_chat<'a>(req: &'a Value, deployment: Option<&'a str>) -> Result<ChatReq<'a>, ApiError> {
    let model = match (deployment, req.get("model")) {
        (Some(d), _) => d,
        (None, None | Some(Value::Null)) => return Err(missing("model")),
        (None, Some(Value::String(s))) => s.as_str(),
        (None, Some(_)) => return Err(bad_type("model", "a string")),
    };
    let messages = match req.get("messages") {
        None | Some(Value::Null) => return Err(missing("messages")),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad_type("messages", "an array")),
    };
    if messages.is_empty() {
        return Err(invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            Some("messages"),
            Some("empty_array"),
        ));
    }
    let mut prompt_tokens = 3u64;
    let mut call_ids: Vec<&str> = Vec::new();
    let mut last_user_text = None;
    let mut tool_results: Option<String> = None;
    for (i, m) in messages.iter().enumerate() {
        let p = format!("messages[{i}]");
        if !m.is_object() {
            return Err(bad_type(&p, "an object"));
        }
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| missing(&format!("{p}.role")))?;
        if !matches!(
            role,
            "system" | "developer" | "user" | "assistant" | "tool" | "function"
        ) {
            return Err(invalid(
                format!("Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'."),
                Some(&format!("{p}.role")),
                Some("invalid_value"),
            ));
        }
        prompt_tokens += 4;
        let content = m.get("content").unwrap_or(&Value::Null);
        let has_calls = role == "assistant"
            && m.get("tool_calls")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
        if content.is_null() && role != "assistant" {
            return Err(missing(&format!("{p}.content")));
        }
        let (text, t) = content_text(content, &format!("{p}.content"), role)?;
        prompt_tokens += t;
        match role {
            "user" => {
                last_user_text = Some(text);
                tool_results = None;
            }
            "assistant" => {
                tool_results = None;
                if let Some(calls) = m.get("tool_calls") {
                    let calls = calls
                        .as_array()
                        .ok_or_else(|| bad_type(&format!("{p}.tool_calls"), "an array"))?;
                    call_ids.clear();
                    for (j, c) in calls.iter().enumerate() {
                        let cp = format!("{p}.tool_calls[{j}]");
                        let id = c
                            .get("id")
                            .and_then(Value::as_str)
                            .ok_or_else(|| missing(&format!("{cp}.id")))?;
                        let f = c
                            .get("function")
                            .ok_or_else(|| missing(&format!("{cp}.function")))?;
                        let name = f
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or_else(|| missing(&format!("{cp}.function.name")))?;
                        let args = f
                            .get("arguments")
                            .and_then(Value::as_str)
                            .ok_or_else(|| missing(&format!("{cp}.function.arguments")))?;
                        prompt_tokens += gen::text_tokens(name) + gen::text_tokens(args);
                        call_ids.push(id);
                    }
                }
                if content.is_null() && !has_calls {
                    return Err(missing(&format!("{p}.content")));
                }
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| missing(&format!("{p}.tool_call_id")))?;
                if !call_ids.contains(&id) {
                    return Err(invalid(
                        "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
                        Some(&format!("{p}.role")),
                        None,
                    ));
                }
                let r = tool_results.get_or_insert_with(String::new);
                if !r.is_empty() {
                    r.push('\n');
                }
                r.push_str(&text);
            }
            _ => {}
        }
    }
    let mut tools = Vec::new();
    if let Some(ts) = req.get("tools").filter(|t| !t.is_null()) {
        let ts = ts.as_array().ok_or_else(|| bad_type("tools", "an array"))?;
        for (i, t) in ts.iter().enumerate() {
            let typ = t.get("type").and_then(Value::as_str);
            if typ != Some("function") {
                return Err(invalid(
                    format!(
                        "Invalid value: '{}'. Supported values are: 'function' and 'custom'.",
                        typ.unwrap_or("")
                    ),
                    Some(&format!("tools[{i}].type")),
                    Some("invalid_value"),
                ));
            }
            let f = t
                .get("function")
                .ok_or_else(|| missing(&format!("tools[{i}].function")))?;
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| missing(&format!("tools[{i}].function.name")))?;
            let schema = f.get("parameters");
            prompt_tokens += gen::text_tokens(name)
                + f.get("description")
                    .and_then(Value::as_str)
                    .map_or(0, gen::text_tokens)
                + schema.map_or(0, |s| gen::text_tokens(&s.to_string()));
            tools.push(ToolDef { name, schema });
        }
    }
    let (forced, tool_choice_none) = match req.get("tool_choice") {
        Some(Value::String(s)) if s == "required" => (Some(None), false),
        Some(Value::String(s)) if s == "none" => (None, true),
        Some(v @ Value::Object(_)) => match v
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
        {
            Some(name) => (Some(Some(name)), false),
            None => (None, false),
        },
        _ => (None, false),
    };
    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| req.get(*k).and_then(Value::as_u64));
    let stop = match req.get("stop") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = req
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(ChatReq {
        model,
        last_user_text,
        tool_results,
        tools,
        forced,
        tool_choice_none,
        stream,
        include_usage,
        max_tokens,
        stop,
        prompt_tokens,
    })
}

/// What the mock answers: text pieces or tool calls, and why it stopped.
struct Answer {
    pieces: Vec<Piece>,
    calls: Vec<Call>,
    finish: Finish,
}

impl Answer {
    fn completion_tokens(&self, reasoning: u64) -> u64 {
        self.pieces.len() as u64 + self.calls.iter().map(Call::tokens).sum::<u64>() + reasoning
    }
}

fn finish_reason(f: &Finish) -> &'static str {
    match f {
        Finish::Stop | Finish::StopSequence(_) => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
    }
}

fn usage(prompt: u64, completion: u64, cached: u64, reasoning: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

pub async fn chat(
    State(s): State<Arc<Shared>>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (flight, seq) = s.begin(Route::Chat, version, &headers, &body);
    chat_respond(flight, seq, &body, None).await
}

/// A chat completion already logged (and, on Azure, authenticated): OpenAI's answer, or with
/// `azure` Azure OpenAI's (content filter results, its own errors).
pub(crate) async fn chat_respond(
    flight: InFlight,
    seq: u64,
    body: &[u8],
    azure: Option<&Azure>,
) -> Response {
    let req = match parse_body(body) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let r = match validate_chat(&req, azure.and_then(|a| a.deployment.as_deref())) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if azure.is_some() {
        if let Err(e) = azure::check_chat(&req) {
            return e.into_response();
        }
    }
    let knobs = Knobs::from_request(r.model, r.last_user_text.as_deref());
    let model = base_model(r.model);
    match &knobs.fault {
        Some(Fault::Status(code)) => {
            if let Some(a) = azure {
                if let Some(e) = azure::fault_error(*code, a, azure::CHAT_OPERATION, knobs.retry_after.clone()) {
                    return e.into_response();
                }
            }
            return fault_error(*code, model, knobs.retry_after.clone()).into_response();
        }
        Some(Fault::Hang) => gen::hang().await,
        Some(Fault::ErrorEvent) if !r.stream => {
            return fault_error(500, model, None).into_response()
        }
        Some(Fault::ContextLength) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("This model's maximum context length is 8192 tokens. However, your messages resulted in {} tokens. Please reduce the length of the messages.", r.prompt_tokens.max(8193)),
                "invalid_request_error",
                Some("messages"),
                Some("context_length_exceeded"),
            )
            .into_response()
        }
        Some(Fault::ContentPolicy) if azure.is_some() => {
            return azure::content_filter_error().into_response()
        }
        Some(Fault::ContentPolicy) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "Your request was rejected as a result of our safety system.",
                "invalid_request_error",
                None,
                Some("content_policy_violation"),
            )
            .into_response()
        }
        _ => {}
    }

    let answer = if let Some(results) = &r.tool_results {
        let mut pieces = gen::words(&format!("The tool returned: {results}"));
        let finish = gen::finish_text(&mut pieces, &knobs, &r.stop, r.max_tokens);
        Answer {
            pieces,
            calls: Vec::new(),
            finish,
        }
    } else {
        let calls = gen::choose_calls(&knobs, &r.tools, r.forced, r.tool_choice_none, "call_", seq);
        if calls.is_empty() {
            let mut pieces = if knobs.echo {
                gen::words(r.last_user_text.as_deref().unwrap_or(""))
            } else {
                gen::reply(&knobs)
            };
            let finish = gen::finish_text(&mut pieces, &knobs, &r.stop, r.max_tokens);
            Answer {
                pieces,
                calls,
                finish,
            }
        } else {
            Answer {
                pieces: Vec::new(),
                calls,
                finish: Finish::ToolCalls,
            }
        }
    };
    let reasoning = knobs.reasoning as u64;
    let prompt = r.prompt_tokens + knobs.cached;
    let usage = usage(
        prompt,
        answer.completion_tokens(reasoning),
        knobs.cached,
        reasoning,
    );
    let id = format!("chatcmpl-{seq:020}");
    let created = gen::now_secs();

    if !r.stream {
        gen::answer_delay(&knobs, answer.completion_tokens(reasoning)).await;
        if knobs.fault == Some(Fault::Malformed) {
            let broken = format!("{{\"id\": \"{id}\", \"object\": \"chat.completion\", \"created\": {created}, \"choices\": [{{\"index\": 0, \"message\": {{\"role\": \"assistant\", \"content\": \"Hel");
            return ([(header::CONTENT_TYPE, "application/json")], broken).into_response();
        }
        if knobs.fault == Some(Fault::Reset) {
            let mut script = Script::default();
            script.data(b"{\"id\": \"");
            script.cut();
            return json_stream(script.into_body(flight));
        }
        let content = if answer.calls.is_empty() {
            Value::String(answer.pieces.concat())
        } else {
            Value::Null
        };
        let mut message =
            json!({"role": "assistant", "content": content, "refusal": null, "annotations": []});
        if !answer.calls.is_empty() {
            message["tool_calls"] = answer
                .calls
                .iter()
                .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                .collect();
        }
        let out = json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": finish_reason(&answer.finish),
            }],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        });
        let mut out = out;
        if knobs.no_usage {
            if let Some(o) = out.as_object_mut() {
                o.remove("usage");
            }
        }
        if azure.is_some() {
            out["choices"][0]["content_filter_results"] =
                azure::choice_filter(answer.calls.is_empty());
            out["prompt_filter_results"] = azure::prompt_filter_results();
            if let Some(o) = out.as_object_mut() {
                o.remove("service_tier");
            }
        }
        drop(flight);
        return with_request_id(Json(out).into_response(), seq);
    }

    let script = stream_script(
        &r,
        &knobs,
        &answer,
        (&id, created, model),
        usage,
        azure.is_some(),
    );
    sse(script.into_body(flight), seq)
}

/// The chunks; `azure`: a first chunk with the prompt's filter results, and every choice with
/// its own (`{}` where nothing was filtered yet: the role, tool calls, the finish).
fn stream_script(
    r: &ChatReq<'_>,
    knobs: &Knobs,
    answer: &Answer,
    (id, created, model): (&str, u64, &str),
    usage: Value,
    azure: bool,
) -> Script {
    let chunk = |delta: Value, finish: Value| {
        let filtered = azure && delta.get("content").is_some_and(|c| c != "");
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if azure {
            c["choices"][0]["content_filter_results"] = if filtered {
                azure::choice_filter(true)
            } else {
                json!({})
            };
            if let Some(o) = c.as_object_mut() {
                o.remove("service_tier");
            }
        }
        if r.include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    let inject = |script: &mut Script, fault: Fault| {
        match fault {
        Fault::Malformed => script.data(
            format!("data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\n\n")
                .as_bytes(),
        ),
        Fault::Reset => script.cut(),
        _ => script.data_event(&json!({"error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error", "param": null, "code": null}})),
    }
    };
    let mut script = Script::default();
    let mut gate = Gate::new(knobs);
    if azure {
        script.data_event(&json!({
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": azure::prompt_filter_results(),
        }));
    }
    script.data_event(&chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    ));
    for piece in &answer.pieces {
        if let Some(f) = gate.token(&mut script) {
            inject(&mut script, f);
            return script;
        }
        script.data_event(&chunk(json!({"content": piece}), Value::Null));
    }
    for (i, call) in answer.calls.iter().enumerate() {
        if let Some(f) = gate.token(&mut script) {
            inject(&mut script, f);
            return script;
        }
        script.data_event(&chunk(
            json!({"tool_calls": [{"index": i, "id": call.id, "type": "function",
                                    "function": {"name": call.name, "arguments": ""}}]}),
            Value::Null,
        ));
        for piece in gen::json_pieces(&call.arguments) {
            if let Some(f) = gate.token(&mut script) {
                inject(&mut script, f);
                return script;
            }
            script.data_event(&chunk(
                json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}),
                Value::Null,
            ));
        }
    }
    if let Some(f) = gate.end(&mut script) {
        inject(&mut script, f);
        return script;
    }
    script.data_event(&chunk(json!({}), finish_reason(&answer.finish).into()));
    if r.include_usage && !knobs.no_usage {
        let mut last = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
            "choices": [],
            "usage": usage,
        });
        if azure {
            if let Some(o) = last.as_object_mut() {
                o.remove("service_tier");
            }
        }
        script.data_event(&last);
    }
    script.data(b"data: [DONE]\n\n");
    script
}

fn with_request_id(mut r: Response, seq: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("req_{seq:032x}")) {
        r.headers_mut().insert("x-request-id", v);
    }
    r
}

fn sse(body: axum::body::Body, seq: u64) -> Response {
    let r = (
        [
            (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response();
    with_request_id(r, seq)
}

fn json_stream(body: axum::body::Body) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

// ---- embeddings ----

pub async fn embeddings(
    State(s): State<Arc<Shared>>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (flight, seq) = s.begin(Route::Embeddings, version, &headers, &body);
    embeddings_respond(flight, seq, &body, None).await
}

/// Embeddings already logged: OpenAI's, or with `azure` Azure OpenAI's (the deployment, if any,
/// as the model; Azure's errors).
pub(crate) async fn embeddings_respond(
    flight: InFlight,
    seq: u64,
    body: &[u8],
    azure: Option<&Azure>,
) -> Response {
    let req = match parse_body(body) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let model = match (
        azure.and_then(|a| a.deployment.as_deref()),
        req.get("model"),
    ) {
        (Some(d), _) => d,
        (None, None | Some(Value::Null)) => return missing("model").into_response(),
        (None, Some(Value::String(m))) => m.as_str(),
        (None, Some(_)) => return bad_type("model", "a string").into_response(),
    };
    let inputs: Vec<String> = match req.get("input") {
        None | Some(Value::Null) => return missing("input").into_response(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if !a.is_empty() => {
            if a.iter().all(Value::is_string) {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            } else if a.iter().all(Value::is_number) {
                vec![Value::Array(a.clone()).to_string()]
            } else if a.iter().all(Value::is_array) {
                a.iter().map(Value::to_string).collect()
            } else {
                return bad_type("input", "a string or an array of strings").into_response();
            }
        }
        Some(_) => {
            return invalid(
                "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
                None,
                None,
            )
            .into_response()
        }
    };
    if inputs.iter().any(String::is_empty) {
        return invalid(
            "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
            None,
            None,
        )
        .into_response();
    }
    let dims = match req.get("dimensions") {
        None | Some(Value::Null) => 1536,
        Some(v) => match v.as_u64() {
            Some(d) if (1..=8192).contains(&d) => d as usize,
            _ => {
                return invalid(
                    "Invalid value for 'dimensions': must be a positive integer.",
                    Some("dimensions"),
                    Some("invalid_value"),
                )
                .into_response()
            }
        },
    };
    let base64 = match req.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return invalid(
                format!("Invalid value: '{other}'. Supported values are: 'float' and 'base64'."),
                Some("encoding_format"),
                Some("invalid_value"),
            )
            .into_response()
        }
    };
    let knobs = Knobs::from_request(model, inputs.last().map(String::as_str));
    match &knobs.fault {
        Some(Fault::Status(code)) => {
            if let Some(a) = azure {
                if let Some(e) = azure::fault_error(
                    *code,
                    a,
                    azure::EMBEDDINGS_OPERATION,
                    knobs.retry_after.clone(),
                ) {
                    return e.into_response();
                }
            }
            return fault_error(*code, base_model(model), knobs.retry_after.clone())
                .into_response();
        }
        Some(Fault::Hang) => gen::hang().await,
        Some(Fault::Malformed) => {
            return json_stream(axum::body::Body::from(
                "{\"object\": \"list\", \"data\": [{",
            ))
        }
        Some(Fault::Reset) => {
            let mut script = Script::default();
            script.data(b"{\"object\": \"list\", ");
            script.cut();
            return json_stream(script.into_body(flight));
        }
        _ => {}
    }
    gen::answer_delay(&knobs, 0).await;
    let mut tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            tokens += gen::text_tokens(text);
            let v = embedding(text, dims);
            let e = if base64 {
                let mut bytes = Vec::with_capacity(v.len() * 4);
                for x in &v {
                    bytes.extend_from_slice(&x.to_le_bytes());
                }
                Value::String(b64::encode(&bytes))
            } else {
                v.iter().map(|x| Value::from(f64::from(*x))).collect()
            };
            json!({"object": "embedding", "index": i, "embedding": e})
        })
        .collect();
    drop(flight);
    with_request_id(
        Json(json!({
            "object": "list",
            "data": data,
            "model": base_model(model),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }))
        .into_response(),
        seq,
    )
}

/// A deterministic unit vector from a hash of `text`.
pub fn embedding(text: &str, dims: usize) -> Vec<f32> {
    // FNV-1a, then splitmix64 for the components.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut v: Vec<f32> = (0..dims)
        .map(|i| {
            let x = gen::splitmix(h.wrapping_add(i as u64));
            ((x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect();
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
    v
}

// ---- models ----

const MODELS: [(&str, &str, u64); 8] = [
    ("gpt-4.1", "system", 1_744_316_542),
    ("gpt-4.1-mini", "system", 1_744_318_173),
    ("gpt-4o", "system", 1_715_367_049),
    ("gpt-4o-mini", "system", 1_721_172_741),
    ("o4-mini", "system", 1_744_225_351),
    ("text-embedding-3-small", "system", 1_705_948_997),
    ("text-embedding-3-large", "system", 1_705_953_180),
    ("mock-model", "tollway-mock", 1_700_000_000),
];

pub async fn models(
    State(s): State<Arc<Shared>>,
    version: Version,
    headers: HeaderMap,
) -> Response {
    let (_flight, seq) = s.begin(Route::Models, version, &headers, &Bytes::new());
    let data: Vec<Value> = MODELS
        .iter()
        .map(|(id, owner, created)| {
            json!({"id": id, "object": "model", "created": created, "owned_by": owner})
        })
        .collect();
    with_request_id(
        Json(json!({"object": "list", "data": data})).into_response(),
        seq,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding("hello", 64);
        let b = embedding("hello", 64);
        let c = embedding("world", 64);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let norm: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }

    #[test]
    fn tool_message_needs_a_matching_call() {
        let req = json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "call_x", "content": "42"}]});
        assert!(validate_chat(&req, None).is_err());
        let req = json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_x", "type": "function",
                "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_x", "content": "42"}]});
        let r = validate_chat(&req, None)
            .map_err(|e| e.body)
            .expect("valid");
        assert_eq!(r.tool_results.as_deref(), Some("42"));
    }
}
