//! Anthropic wire format: `POST /v1/messages` (JSON and SSE), request validation and error bodies;
//! also Claude on Vertex AI ([`OnVertex`]: `rawPredict` / `streamRawPredict`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::gemini::GoogleError;
use crate::gen::{self, Answer, Ask, Finish, Gate, Script, ToolDef};
use crate::knobs::{base_model, Fault, Knobs};
use crate::{InFlight, Route, Shared};

/// The `anthropic_version` Vertex AI requires in the body.
const VERTEX_VERSION: &str = "vertex-2023-10-16";

/// A Messages request reaching Claude through Vertex AI: the model comes from the path (the body
/// has none), `anthropic_version` is in the body (no header), the method may demand a stream.
pub(crate) struct OnVertex {
    /// Percent-decoded, knobs in its query.
    pub model: String,
    /// `streamRawPredict`: the body must say `"stream": true`.
    pub stream_method: bool,
}

/// Where a request came from, for validation.
#[derive(Clone, Copy)]
enum Via<'a> {
    /// Anthropic's API: the `anthropic-version` header, the model in the body.
    Direct(&'a HeaderMap),
    /// Vertex AI: the model from the path (`None` for `count-tokens`, whose body names it).
    Vertex(Option<&'a str>),
}

/// An Anthropic error body with its status.
struct ApiError {
    status: StatusCode,
    typ: &'static str,
    message: String,
    retry_after: Option<String>,
}

impl ApiError {
    fn into_response(self, seq: u64) -> Response {
        let body = json!({"type": "error", "error": {"type": self.typ, "message": self.message}});
        let mut r = (self.status, Json(body)).into_response();
        if let Some(ra) = self
            .retry_after
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            r.headers_mut().insert(header::RETRY_AFTER, ra);
        }
        with_request_id(r, seq)
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        typ: "invalid_request_error",
        message: message.into(),
        retry_after: None,
    }
}

fn fault_error(status: u16, model: &str, retry_after: Option<String>) -> ApiError {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (typ, message) = match status {
        400 => ("invalid_request_error", "Invalid request (injected by tollway-mock).".to_string()),
        401 => ("authentication_error", "invalid x-api-key".to_string()),
        402 => ("billing_error", "Your credit balance is too low to access the Anthropic API.".to_string()),
        403 => ("permission_error", "Your API key does not have permission to use the specified resource.".to_string()),
        404 => ("not_found_error", format!("model: {model}")),
        413 => ("request_too_large", "Request exceeds the maximum allowed number of bytes.".to_string()),
        429 => ("rate_limit_error", "This request would exceed the rate limit for your organization of 50 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits.".to_string()),
        504 => ("timeout_error", "Request timed out".to_string()),
        529 => ("overloaded_error", "Overloaded".to_string()),
        s if s < 500 => ("invalid_request_error", format!("Request failed with status {s} (injected by tollway-mock).")),
        _ => ("api_error", "Internal server error".to_string()),
    };
    ApiError {
        status: code,
        typ,
        message,
        retry_after: if matches!(status, 429 | 503 | 529) {
            retry_after
        } else {
            None
        },
    }
}

fn with_request_id(mut r: Response, seq: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("req_01{seq:022x}")) {
        r.headers_mut().insert("request-id", v);
    }
    r
}

/// The part of a Messages request the mock acts on, after validation.
struct MsgReq<'a> {
    model: &'a str,
    max_tokens: u64,
    last_user_text: Option<String>,
    tool_results: Option<String>,
    tools: Vec<ToolDef<'a>>,
    forced: Option<Option<&'a str>>,
    tool_choice_none: bool,
    stream: bool,
    stop: Vec<String>,
    input_tokens: u64,
}

fn field_required(path: &str) -> ApiError {
    invalid(format!("{path}: Field required"))
}

/// Text and token estimate of a `tool_result` block's `content`.
fn tool_result_text(content: Option<&Value>, path: &str) -> Result<(String, u64), ApiError> {
    match content {
        None | Some(Value::Null) => Ok((String::new(), 0)),
        Some(Value::String(s)) => Ok((s.clone(), gen::text_tokens(s))),
        Some(Value::Array(blocks)) => {
            let mut text = String::new();
            let mut tokens = 0;
            for (k, b) in blocks.iter().enumerate() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = b
                            .get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| field_required(&format!("{path}.{k}.text")))?;
                        tokens += gen::text_tokens(t);
                        text.push_str(t);
                    }
                    Some("image") | Some("document") | Some("search_result") => {
                        tokens += gen::IMAGE_TOKENS
                    }
                    _ => {
                        return Err(invalid(format!(
                            "{path}.{k}: Input tag '{}' found using 'type' does not match any of the expected tags: 'text', 'image', 'document', 'search_result'",
                            b.get("type").and_then(Value::as_str).unwrap_or("")
                        )))
                    }
                }
            }
            Ok((text, tokens))
        }
        Some(_) => Err(invalid(format!("{path}: Input should be a valid list"))),
    }
}

fn check_image(b: &Value, path: &str) -> Result<(), ApiError> {
    let source = b
        .get("source")
        .ok_or_else(|| field_required(&format!("{path}.source")))?;
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            for k in ["media_type", "data"] {
                if !source.get(k).is_some_and(Value::is_string) {
                    return Err(field_required(&format!("{path}.source.base64.{k}")));
                }
            }
            Ok(())
        }
        Some("url") => {
            if source.get("url").is_some_and(Value::is_string) {
                Ok(())
            } else {
                Err(field_required(&format!("{path}.source.url.url")))
            }
        }
        Some("file") => Ok(()),
        other => Err(invalid(format!(
            "{path}.source: Input tag '{}' found using 'type' does not match any of the expected tags: 'base64', 'file', 'url'",
            other.unwrap_or("")
        ))),
    }
}

/// The body fields `POST /v1/messages/count_tokens` takes; anything else is refused, as the API
/// refuses `max_tokens` there.
const COUNT_FIELDS: [&str; 7] = [
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
    "mcp_servers",
];

/// A Messages request (`count_only`: the body of a token count, which has no `max_tokens` and
/// only [`COUNT_FIELDS`]).
fn validate<'a>(req: &'a Value, via: Via<'a>, count_only: bool) -> Result<MsgReq<'a>, ApiError> {
    if let Via::Direct(headers) = via {
        if !headers.contains_key("anthropic-version") {
            return Err(invalid("anthropic-version: header is required"));
        }
    }
    if count_only {
        let vertex = matches!(via, Via::Vertex(_));
        let allowed = |k: &str| {
            COUNT_FIELDS.contains(&k)
                || (vertex && matches!(k, "anthropic_version" | "anthropic_beta"))
        };
        if let Some(extra) = req.as_object().and_then(|o| o.keys().find(|k| !allowed(k))) {
            return Err(invalid(format!("{extra}: Extra inputs are not permitted")));
        }
    }
    let model = match (via, req.get("model")) {
        (Via::Vertex(Some(m)), _) => m,
        (_, None | Some(Value::Null)) => return Err(field_required("model")),
        (_, Some(Value::String(s))) => s.as_str(),
        (_, Some(_)) => return Err(invalid("model: Input should be a valid string")),
    };
    let max_tokens = match req.get("max_tokens") {
        None if count_only => 1,
        None | Some(Value::Null) => return Err(field_required("max_tokens")),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n,
            _ if v.as_i64().is_some() => {
                return Err(invalid(
                    "max_tokens: Input should be greater than or equal to 1",
                ))
            }
            _ => return Err(invalid("max_tokens: Input should be a valid integer")),
        },
    };
    let messages = match req.get("messages") {
        None | Some(Value::Null) => return Err(field_required("messages")),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(invalid("messages: Input should be a valid list")),
    };
    if messages.is_empty() {
        return Err(invalid("messages: at least one message is required"));
    }
    let mut input_tokens = 0u64;
    match req.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => input_tokens += gen::text_tokens(s),
        Some(Value::Array(blocks)) => {
            for (i, b) in blocks.iter().enumerate() {
                if b.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(invalid(format!("system.{i}.type: Input should be 'text'")));
                }
                let t = b
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| field_required(&format!("system.{i}.text")))?;
                input_tokens += gen::text_tokens(t);
            }
        }
        Some(_) => return Err(invalid("system: Input should be a valid list")),
    }
    let mut prev_tool_use_ids: Vec<&str> = Vec::new();
    let mut last_user_text = None;
    let mut tool_results = None;
    for (i, m) in messages.iter().enumerate() {
        let p = format!("messages.{i}");
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| field_required(&format!("{p}.role")))?;
        if role != "user" && role != "assistant" {
            return Err(invalid(format!(
                "{p}.role: Input should be 'user' or 'assistant'"
            )));
        }
        input_tokens += 4;
        let mut text = String::new();
        let mut results: Option<String> = None;
        let mut tool_use_ids: Vec<&str> = Vec::new();
        match m.get("content") {
            None | Some(Value::Null) => return Err(field_required(&format!("{p}.content"))),
            Some(Value::String(s)) => {
                input_tokens += gen::text_tokens(s);
                text.push_str(s);
            }
            Some(Value::Array(blocks)) => {
                for (j, b) in blocks.iter().enumerate() {
                    let bp = format!("{p}.content.{j}");
                    let typ = b
                        .get("type")
                        .and_then(Value::as_str)
                        .ok_or_else(|| field_required(&format!("{bp}.type")))?;
                    match typ {
                        "text" => {
                            let t = b
                                .get("text")
                                .and_then(Value::as_str)
                                .ok_or_else(|| field_required(&format!("{bp}.text.text")))?;
                            input_tokens += gen::text_tokens(t);
                            text.push_str(t);
                        }
                        "image" | "document" => {
                            if typ == "image" {
                                check_image(b, &format!("{bp}.image"))?;
                            }
                            input_tokens += gen::IMAGE_TOKENS;
                        }
                        "tool_use" if role == "assistant" => {
                            let id = b
                                .get("id")
                                .and_then(Value::as_str)
                                .ok_or_else(|| field_required(&format!("{bp}.tool_use.id")))?;
                            let name = b
                                .get("name")
                                .and_then(Value::as_str)
                                .ok_or_else(|| field_required(&format!("{bp}.tool_use.name")))?;
                            let input = b
                                .get("input")
                                .filter(|v| v.is_object())
                                .ok_or_else(|| field_required(&format!("{bp}.tool_use.input")))?;
                            input_tokens +=
                                gen::text_tokens(name) + gen::text_tokens(&input.to_string());
                            tool_use_ids.push(id);
                        }
                        "tool_result" if role == "user" => {
                            let id = b
                                .get("tool_use_id")
                                .and_then(Value::as_str)
                                .ok_or_else(|| {
                                    field_required(&format!("{bp}.tool_result.tool_use_id"))
                                })?;
                            if !prev_tool_use_ids.contains(&id) {
                                return Err(invalid(format!(
                                    "{p}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                                )));
                            }
                            let (t, n) =
                                tool_result_text(b.get("content"), &format!("{bp}.tool_result.content"))?;
                            input_tokens += n;
                            let r = results.get_or_insert_with(String::new);
                            if !r.is_empty() {
                                r.push('\n');
                            }
                            r.push_str(&t);
                        }
                        "thinking" if role == "assistant" => {
                            let t = b
                                .get("thinking")
                                .and_then(Value::as_str)
                                .ok_or_else(|| field_required(&format!("{bp}.thinking.thinking")))?;
                            if !b.get("signature").is_some_and(Value::is_string) {
                                return Err(field_required(&format!("{bp}.thinking.signature")));
                            }
                            input_tokens += gen::text_tokens(t);
                        }
                        "redacted_thinking" if role == "assistant" => {}
                        "tool_use" | "tool_result" | "thinking" | "redacted_thinking" => {
                            return Err(invalid(format!(
                                "{bp}: `{typ}` blocks are not allowed in `{role}` messages"
                            )))
                        }
                        other => {
                            return Err(invalid(format!(
                                "{bp}: Input tag '{other}' found using 'type' does not match any of the expected tags: 'text', 'image', 'document', 'tool_use', 'tool_result', 'thinking', 'redacted_thinking'"
                            )))
                        }
                    }
                }
            }
            Some(_) => {
                return Err(invalid(format!(
                    "{p}.content: Input should be a valid list"
                )))
            }
        }
        if role == "user" {
            last_user_text = Some(text);
            tool_results = results;
            prev_tool_use_ids.clear();
        } else {
            tool_results = None;
            prev_tool_use_ids = tool_use_ids;
        }
    }
    let mut tools = Vec::new();
    if let Some(ts) = req.get("tools").filter(|t| !t.is_null()) {
        let ts = ts
            .as_array()
            .ok_or_else(|| invalid("tools: Input should be a valid list"))?;
        for (i, t) in ts.iter().enumerate() {
            // Server tools (`web_search_20250305`, ...) carry a versioned type and no schema.
            if let Some(typ) = t.get("type").and_then(Value::as_str) {
                if typ != "custom" {
                    continue;
                }
            }
            let name = t
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| field_required(&format!("tools.{i}.custom.name")))?;
            let schema = t
                .get("input_schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| field_required(&format!("tools.{i}.custom.input_schema")))?;
            input_tokens += gen::text_tokens(name)
                + t.get("description")
                    .and_then(Value::as_str)
                    .map_or(0, gen::text_tokens)
                + gen::text_tokens(&schema.to_string());
            tools.push(ToolDef {
                name,
                schema: Some(schema),
            });
        }
    }
    let choice = req.get("tool_choice");
    let (forced, tool_choice_none) =
        match choice.and_then(|c| c.get("type")).and_then(Value::as_str) {
            Some("any") => (Some(None), false),
            Some("tool") => match choice.and_then(|c| c.get("name")).and_then(Value::as_str) {
                Some(name) => (Some(Some(name)), false),
                None => return Err(field_required("tool_choice.tool.name")),
            },
            Some("none") => (None, true),
            _ => (None, false),
        };
    let stop = req
        .get("stop_sequences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(MsgReq {
        model,
        max_tokens,
        last_user_text,
        tool_results,
        tools,
        forced,
        tool_choice_none,
        stream: req.get("stream").and_then(Value::as_bool).unwrap_or(false),
        stop,
        input_tokens,
    })
}

fn stop_fields(f: &Finish) -> (&'static str, Value) {
    match f {
        Finish::Stop => ("end_turn", Value::Null),
        Finish::Length => ("max_tokens", Value::Null),
        Finish::ToolCalls => ("tool_use", Value::Null),
        Finish::StopSequence(s) => ("stop_sequence", Value::String(s.clone())),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(invalid("Input should be a valid dictionary")),
        Err(e) => Err(invalid(format!("There was an error parsing the body: {e}"))),
    }
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": N}`, N as a message's `usage` would
/// count the same request. The `fault` knobs apply (a context-length fault counts as answered:
/// counting a long prompt is what the endpoint is for).
pub async fn count_tokens(
    State(s): State<Arc<Shared>>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_flight, seq) = s.begin(Route::CountTokens, version, &headers, &body);
    count_respond(seq, &body, Some(&headers)).await
}

/// The `input_tokens` a Messages body (without `model`, as Bedrock's InvokeModel and Vertex take
/// it) would report for `model`; or the validation error's message.
pub(crate) fn input_tokens_of(req: &Value, model: &str) -> Result<u64, String> {
    validate(req, Via::Vertex(Some(model)), false)
        .map(|r| r.input_tokens)
        .map_err(|e| e.message)
}

/// A token count already logged: `headers` for Anthropic's API (which needs
/// `anthropic-version`), `None` for Vertex AI's `count-tokens:rawPredict`.
pub(crate) async fn count_respond(seq: u64, body: &[u8], headers: Option<&HeaderMap>) -> Response {
    let req = match parse_body(body) {
        Ok(v) => v,
        Err(e) => return e.into_response(seq),
    };
    let via = headers.map_or(Via::Vertex(None), Via::Direct);
    let r = match validate(&req, via, true) {
        Ok(r) => r,
        Err(e) => return e.into_response(seq),
    };
    let knobs = Knobs::from_request(r.model, r.last_user_text.as_deref());
    match &knobs.fault {
        Some(Fault::Status(code)) => {
            return fault_error(*code, base_model(r.model), knobs.retry_after.clone())
                .into_response(seq)
        }
        Some(Fault::Hang) => gen::hang().await,
        _ => {}
    }
    with_request_id(
        Json(json!({"input_tokens": r.input_tokens})).into_response(),
        seq,
    )
}

pub async fn messages(
    State(s): State<Arc<Shared>>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (flight, seq) = s.begin(Route::Messages, version, &headers, &body);
    respond(flight, seq, &body, &headers, None).await
}

/// What Vertex AI checks of a Claude request before Anthropic's own validation.
fn vertex_checks(req: &Value, v: &OnVertex) -> Result<(), ApiError> {
    if req.get("model").is_some() {
        return Err(invalid("model: Extra inputs are not permitted"));
    }
    match req.get("anthropic_version") {
        None | Some(Value::Null) => return Err(field_required("anthropic_version")),
        Some(Value::String(s)) if s == VERTEX_VERSION => {}
        Some(_) => {
            return Err(invalid(format!(
                "anthropic_version: Input should be '{VERTEX_VERSION}'"
            )))
        }
    }
    match req.get("anthropic_beta") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
        Some(_) => {
            return Err(invalid(
                "anthropic_beta: Input should be a valid list of strings",
            ))
        }
    }
    if v.stream_method && req.get("stream").and_then(Value::as_bool) != Some(true) {
        return Err(invalid(
            "stream: streamRawPredict requires `\"stream\": true` in the request body",
        ));
    }
    Ok(())
}

/// The error Vertex AI itself sends for Claude (quota, authentication, permission, unknown
/// model): Google's shape.
fn vertex_fault(code: u16, model: &str, retry_after: Option<String>) -> Option<GoogleError> {
    let base = model.split('@').next().unwrap_or(model);
    let message = match code {
        401 => return Some(GoogleError::unauthenticated()),
        403 => format!("Permission 'aiplatform.endpoints.predict' denied on resource '//aiplatform.googleapis.com/publishers/anthropic/models/{model}' (or it may not exist)."),
        404 => format!("Publisher Model `publishers/anthropic/models/{model}` not found."),
        429 => format!("Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model with base model: anthropic-{base}. Please submit a quota increase request. https://cloud.google.com/vertex-ai/docs/generative-ai/quotas-genai."),
        _ => return None,
    };
    let e = GoogleError::new(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        message,
    );
    Some(if code == 429 {
        e.with_retry_after(retry_after)
    } else {
        e
    })
}

/// A Messages request already logged: Anthropic's API (`vertex: None`) or Claude on Vertex AI.
pub(crate) async fn respond(
    flight: InFlight,
    seq: u64,
    body: &[u8],
    headers: &HeaderMap,
    vertex: Option<&OnVertex>,
) -> Response {
    let req = match parse_body(body) {
        Ok(v) => v,
        Err(e) => return e.into_response(seq),
    };
    if let Some(v) = vertex {
        if let Err(e) = vertex_checks(&req, v) {
            return e.into_response(seq);
        }
    }
    let via = vertex.map_or(Via::Direct(headers), |v| Via::Vertex(Some(&v.model)));
    let r = match validate(&req, via, false) {
        Ok(r) => r,
        Err(e) => return e.into_response(seq),
    };
    let knobs = Knobs::from_request(r.model, r.last_user_text.as_deref());
    let model = base_model(r.model);
    match &knobs.fault {
        Some(Fault::Status(code)) => {
            if vertex.is_some() {
                if let Some(e) = vertex_fault(*code, model, knobs.retry_after.clone()) {
                    return e.into_response();
                }
            }
            return fault_error(*code, model, knobs.retry_after.clone()).into_response(seq);
        }
        Some(Fault::Hang) => gen::hang().await,
        Some(Fault::ErrorEvent) if !r.stream => {
            return fault_error(500, model, None).into_response(seq)
        }
        Some(Fault::ContextLength) => {
            return invalid(format!(
                "prompt is too long: {} tokens > 8192 maximum",
                r.input_tokens.max(8193)
            ))
            .into_response(seq)
        }
        Some(Fault::ContentPolicy) => {
            return invalid("Output blocked by content filtering policy").into_response(seq)
        }
        _ => {}
    }

    let answer = Ask {
        knobs: &knobs,
        tools: &r.tools,
        forced: r.forced,
        tool_choice_none: r.tool_choice_none,
        tool_results: r.tool_results.as_deref(),
        last_user_text: r.last_user_text.as_deref(),
        stop: &r.stop,
        max_tokens: Some(r.max_tokens),
    }
    .answer(
        if vertex.is_some() {
            "toolu_vrtx_01"
        } else {
            "toolu_01"
        },
        seq,
    );
    let id = if vertex.is_some() {
        format!("msg_vrtx_01{seq:022x}")
    } else {
        format!("msg_01{seq:022x}")
    };
    let (stop_reason, stop_sequence) = stop_fields(&answer.finish);

    if !r.stream {
        gen::answer_delay(&knobs, answer.output_tokens()).await;
        if knobs.fault == Some(Fault::Malformed) {
            let broken = format!("{{\"id\":\"{id}\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[{{\"type\":\"text\",\"text\":\"Hel");
            return with_request_id(
                ([(header::CONTENT_TYPE, "application/json")], broken).into_response(),
                seq,
            );
        }
        if knobs.fault == Some(Fault::Reset) {
            let mut script = Script::default();
            script.data(b"{\"id\":\"");
            script.cut();
            return with_request_id(
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    script.into_body(flight),
                )
                    .into_response(),
                seq,
            );
        }
        let mut content = Vec::new();
        if !answer.thinking.is_empty() {
            content.push(json!({"type": "thinking", "thinking": answer.thinking.concat(), "signature": answer.signature}));
        }
        if answer.calls.is_empty() {
            content.push(json!({"type": "text", "text": answer.pieces.concat()}));
        }
        for c in &answer.calls {
            content.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.input}));
        }
        let out = json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": {
                "input_tokens": r.input_tokens,
                "cache_creation_input_tokens": knobs.cache_write,
                "cache_read_input_tokens": knobs.cached,
                "output_tokens": answer.output_tokens(),
                "service_tier": "standard",
            },
        });
        drop(flight);
        return with_request_id(Json(out).into_response(), seq);
    }

    let script = stream_script(&r, &knobs, &answer, &id, model);
    let resp = (
        [
            (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        script.into_body(flight),
    )
        .into_response();
    with_request_id(resp, seq)
}

fn stream_script(r: &MsgReq<'_>, knobs: &Knobs, answer: &Answer, id: &str, model: &str) -> Script {
    let mut script = Script::default();
    let mut gate = Gate::new(knobs);
    let inject = |script: &mut Script, fault: Fault| {
        match fault {
        Fault::Malformed => script.data(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\n\n",
        ),
        Fault::Reset => script.cut(),
        _ => script.event(
            "error",
            &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
    }
    };
    script.event(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {
                "input_tokens": r.input_tokens,
                "cache_creation_input_tokens": knobs.cache_write,
                "cache_read_input_tokens": knobs.cached,
                "output_tokens": 1,
                "service_tier": "standard",
            },
        }}),
    );
    let mut index = 0usize;
    let mut pinged = false;
    let mut start = |script: &mut Script, index: usize, block: Value| {
        script.event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        if !pinged {
            pinged = true;
            script.event("ping", &json!({"type": "ping"}));
        }
    };
    let delta = |script: &mut Script, index: usize, d: Value| {
        script.event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": d}),
        );
    };
    let stop = |script: &mut Script, index: usize| {
        script.event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        );
    };
    macro_rules! token {
        () => {
            if let Some(f) = gate.token(&mut script) {
                inject(&mut script, f);
                return script;
            }
        };
    }

    if !answer.thinking.is_empty() {
        start(
            &mut script,
            index,
            json!({"type": "thinking", "thinking": "", "signature": ""}),
        );
        for piece in &answer.thinking {
            token!();
            delta(
                &mut script,
                index,
                json!({"type": "thinking_delta", "thinking": piece}),
            );
        }
        delta(
            &mut script,
            index,
            json!({"type": "signature_delta", "signature": answer.signature}),
        );
        stop(&mut script, index);
        index += 1;
    }
    if answer.calls.is_empty() {
        start(&mut script, index, json!({"type": "text", "text": ""}));
        for piece in &answer.pieces {
            token!();
            delta(
                &mut script,
                index,
                json!({"type": "text_delta", "text": piece}),
            );
        }
        stop(&mut script, index);
        index += 1;
    }
    for call in &answer.calls {
        start(
            &mut script,
            index,
            json!({"type": "tool_use", "id": call.id, "name": call.name, "input": {}}),
        );
        delta(
            &mut script,
            index,
            json!({"type": "input_json_delta", "partial_json": ""}),
        );
        for piece in gen::json_pieces(&call.arguments) {
            token!();
            delta(
                &mut script,
                index,
                json!({"type": "input_json_delta", "partial_json": piece}),
            );
        }
        stop(&mut script, index);
        index += 1;
    }
    if let Some(f) = gate.end(&mut script) {
        inject(&mut script, f);
        return script;
    }
    let (stop_reason, stop_sequence) = stop_fields(&answer.finish);
    script.event(
        "message_delta",
        &json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": {"output_tokens": answer.output_tokens()}}),
    );
    script.event("message_stop", &json!({"type": "message_stop"}));
    script
}
