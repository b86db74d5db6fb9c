//! Google's Gemini API (`generateContent`, `streamGenerateContent`) as Google AI Studio serves it
//! under `POST /v1beta/models/{model}:{method}` (API keys), and as Vertex AI serves it for
//! `publishers/google` models ([`crate::vertex`], OAuth): request validation with Google's
//! messages, answers, SSE (`alt=sse`) or JSON-array streams, and Google's error shape.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::gen::{self, Answer, Ask, Finish, Gate, Piece, Script, ToolDef};
use crate::knobs::{base_model, Fault, Knobs};
use crate::{b64, sigv4, InFlight, Route, Shared};

/// The largest prompt the context-length fault names (Gemini 2.5's window).
const MAX_INPUT_TOKENS: u64 = 1_048_576;

const JSON_TYPE: &str = "application/json; charset=UTF-8";

/// Which Google API serves the request.
pub(crate) enum Api {
    AiStudio,
    Vertex { project: String, location: String },
}

impl Api {
    fn vertex(&self) -> bool {
        matches!(self, Api::Vertex { .. })
    }

    /// A proto message's type URL, as Google names it in `Invalid value` messages.
    fn proto(&self, name: &str) -> String {
        match self {
            Api::AiStudio => {
                format!("type.googleapis.com/google.ai.generativelanguage.v1beta.{name}")
            }
            Api::Vertex { .. } => format!("type.googleapis.com/google.cloud.aiplatform.v1.{name}"),
        }
    }
}

// ---- errors ----

/// Google's canonical status name for an HTTP status.
pub(crate) fn status_name(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "NOT_IMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        s if s < 500 => "FAILED_PRECONDITION",
        _ => "INTERNAL",
    }
}

/// `{"error": {"code", "message", "status"[, "details"]}}` with its HTTP status.
pub(crate) struct GoogleError {
    status: StatusCode,
    message: String,
    details: Vec<Value>,
    retry_after: Option<String>,
    extra_headers: Vec<(&'static str, &'static str)>,
}

impl GoogleError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> GoogleError {
        GoogleError {
            status,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
            extra_headers: Vec::new(),
        }
    }

    fn invalid(message: impl Into<String>) -> GoogleError {
        GoogleError::new(StatusCode::BAD_REQUEST, message)
    }

    /// Google's 401 for a missing, unknown or expired OAuth access token.
    pub(crate) fn unauthenticated() -> GoogleError {
        let mut e = GoogleError::new(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
        );
        e.extra_headers.push((
            "www-authenticate",
            "Bearer realm=\"https://accounts.google.com/\"",
        ));
        e
    }

    /// `Retry-After: S` and a `RetryInfo` detail (`"retryDelay": "Ss"`).
    pub(crate) fn with_retry_after(mut self, retry_after: Option<String>) -> GoogleError {
        if let Some(ra) = retry_after {
            if let Ok(secs) = ra.trim().parse::<u64>() {
                self.details
                    .push(json!({"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                         "retryDelay": format!("{secs}s")}));
            }
            self.retry_after = Some(ra);
        }
        self
    }

    pub(crate) fn body(&self) -> Value {
        let code = self.status.as_u16();
        let mut e = json!({"code": code, "message": self.message, "status": status_name(code)});
        if !self.details.is_empty() {
            e["details"] = Value::Array(self.details.clone());
        }
        json!({ "error": e })
    }

    pub(crate) fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut r = (self.status, [(header::CONTENT_TYPE, JSON_TYPE)], body).into_response();
        if let Some(ra) = self
            .retry_after
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            r.headers_mut().insert(header::RETRY_AFTER, ra);
        }
        for (k, v) in self.extra_headers {
            r.headers_mut().insert(k, HeaderValue::from_static(v));
        }
        r
    }
}

/// The error Google sends for an injected status (529, which Google does not send, is a 503).
/// `retry_after` (429, 503) adds `Retry-After` and a `RetryInfo` detail.
pub(crate) fn fault_error(
    code: u16,
    model: &str,
    api: &Api,
    retry_after: Option<String>,
) -> GoogleError {
    let code = if code == 529 { 503 } else { code };
    let message = match (code, api) {
        (400, _) => "Request contains an invalid argument.".to_string(),
        (401, _) => return GoogleError::unauthenticated(),
        (403, _) => "The caller does not have permission".to_string(),
        (404, Api::AiStudio) => format!(
            "models/{model} is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods."
        ),
        (404, Api::Vertex { project, location }) => format!(
            "Publisher Model `projects/{project}/locations/{location}/publishers/google/models/{model}` was not found or your project does not have access to it. Please ensure you are using a valid model version. For more information, see: https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions"
        ),
        (429, Api::AiStudio) => "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.".to_string(),
        (429, Api::Vertex { .. }) => "Resource exhausted. Please try again later. Please refer to https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.".to_string(),
        (500, Api::AiStudio) => "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting".to_string(),
        (503, _) => "The model is overloaded. Please try again later.".to_string(),
        (504, _) => "Deadline expired before operation could complete.".to_string(),
        (s, _) if s < 500 => format!("Request failed with status {s} (injected by tollway-mock)."),
        _ => "Internal error encountered.".to_string(),
    };
    let e = GoogleError::new(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        message,
    );
    if matches!(code, 429 | 503) {
        e.with_retry_after(retry_after)
    } else {
        e
    }
}

/// `Invalid JSON payload received. Unknown name "k" at 'path': Cannot find field.`
fn unknown_name(key: &str, path: &str) -> GoogleError {
    let message = if path.is_empty() {
        format!("Invalid JSON payload received. Unknown name \"{key}\": Cannot find field.")
    } else {
        format!(
            "Invalid JSON payload received. Unknown name \"{key}\" at '{path}': Cannot find field."
        )
    };
    let mut violation = json!({"description": message});
    if !path.is_empty() {
        violation["field"] = Value::from(path);
    }
    let mut e = GoogleError::invalid(message);
    e.details
        .push(json!({"@type": "type.googleapis.com/google.rpc.BadRequest",
                          "fieldViolations": [violation]}));
    e
}

/// `Invalid value at 'path' (TYPE), value`: a value of the wrong type.
fn invalid_value(path: &str, ty: &str, v: &Value) -> GoogleError {
    let mut shown = v.to_string();
    if shown.len() > 80 {
        let mut cut = 80;
        while !shown.is_char_boundary(cut) {
            cut -= 1;
        }
        shown.truncate(cut);
    }
    let message = format!("Invalid value at '{path}' ({ty}), {shown}");
    let mut e = GoogleError::invalid(message.clone());
    e.details
        .push(json!({"@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": path, "description": message}]}));
    e
}

/// A request Google parsed but refuses: `* GenerateContentRequest.path: message`.
fn request_error(path: &str, message: &str) -> GoogleError {
    GoogleError::invalid(format!("* GenerateContentRequest.{path}: {message}\n"))
}

// ---- field access: Google's JSON takes lowerCamelCase and snake_case names ----

fn snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The field `camel` of `o` (or its snake_case spelling), unless null.
fn get<'a>(o: &'a Map<String, Value>, camel: &str) -> Option<&'a Value> {
    o.get(camel)
        .or_else(|| o.get(&snake(camel)))
        .filter(|v| !v.is_null())
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        snake(field)
    } else {
        format!("{path}.{}", snake(field))
    }
}

/// `v` as an object whose keys (in either spelling) are all in `allowed`.
fn object<'a>(
    v: &'a Value,
    path: &str,
    allowed: &[&str],
    proto: &str,
) -> Result<&'a Map<String, Value>, GoogleError> {
    let o = v.as_object().ok_or_else(|| invalid_value(path, proto, v))?;
    if let Some(k) = o
        .keys()
        .find(|k| !allowed.iter().any(|a| a == k || snake(a) == **k))
    {
        return Err(unknown_name(k, path));
    }
    Ok(o)
}

/// A repeated field: an array, or (as Google's parser takes it) a single value.
fn list(v: Option<&Value>) -> Vec<&Value> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().collect(),
        Some(x) => vec![x],
    }
}

fn string<'a>(v: &'a Value, path: &str) -> Result<&'a str, GoogleError> {
    v.as_str()
        .ok_or_else(|| invalid_value(path, "TYPE_STRING", v))
}

/// An integer, as a JSON number or (proto3 JSON) a string holding one.
fn int(v: &Value, path: &str, ty: &str) -> Result<i64, GoogleError> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| invalid_value(path, ty, v))
}

fn float(v: &Value, path: &str) -> Result<f64, GoogleError> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| invalid_value(path, "TYPE_FLOAT", v))
}

fn boolean(v: &Value, path: &str) -> Result<bool, GoogleError> {
    v.as_bool()
        .ok_or_else(|| invalid_value(path, "TYPE_BOOL", v))
}

/// A `bytes` field: base64, either alphabet.
fn bytes_field(v: &Value, path: &str) -> Result<(), GoogleError> {
    let s = string(v, path)?;
    if b64::decode(s).is_none() {
        let mut e = invalid_value(path, "TYPE_BYTES", v);
        e.message =
            format!("Invalid value at '{path}' (TYPE_BYTES), Base64 decoding failed for \"{s}\"");
        return Err(e);
    }
    Ok(())
}

// ---- validation ----

const TOP_FIELDS: [&str; 8] = [
    "contents",
    "tools",
    "toolConfig",
    "safetySettings",
    "systemInstruction",
    "generationConfig",
    "cachedContent",
    "model",
];

/// Vertex's request has `labels` and `modelArmorConfig`, and no `model` field.
const VERTEX_TOP_FIELDS: [&str; 9] = [
    "contents",
    "tools",
    "toolConfig",
    "safetySettings",
    "systemInstruction",
    "generationConfig",
    "cachedContent",
    "labels",
    "modelArmorConfig",
];

/// The members of a `Part`'s `data` oneof.
const PART_DATA: [&str; 7] = [
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
];

const PART_FIELDS: [&str; 12] = [
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
    "thought",
    "thoughtSignature",
    "videoMetadata",
    "partMetadata",
    "mediaResolution",
];

const TOOL_FIELDS: [&str; 10] = [
    "functionDeclarations",
    "googleSearch",
    "googleSearchRetrieval",
    "codeExecution",
    "urlContext",
    "computerUse",
    "fileSearch",
    "googleMaps",
    "retrieval",
    "enterpriseWebSearch",
];

const GENERATION_FIELDS: [&str; 23] = [
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseModalities",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "enableEnhancedCivicAnswers",
    "speechConfig",
    "thinkingConfig",
    "imageConfig",
    "mediaResolution",
    "routingConfig",
    "audioTimestamp",
    "modelSelectionConfig",
];

const MIME_TYPES: [&str; 5] = [
    "text/plain",
    "application/json",
    "application/xml",
    "application/yaml",
    "text/x.enum",
];

/// What the answer's text is: plain, JSON for a schema, or one of a schema's enum values.
enum Format<'a> {
    Text,
    Json(Option<&'a Value>),
    Enum(Option<&'a Value>),
}

/// The part of a request the mock acts on, after validation.
struct GemReq<'a> {
    last_user_text: Option<String>,
    tool_results: Option<String>,
    tools: Vec<ToolDef<'a>>,
    forced: Option<Option<&'a str>>,
    none: bool,
    stop: Vec<String>,
    max_tokens: Option<u64>,
    prompt_tokens: u64,
    candidates: usize,
    include_thoughts: bool,
    format: Format<'a>,
}

/// A valid `Part`: which data member it sets, and that member.
fn part<'a>(v: &'a Value, path: &str, api: &Api) -> Result<(&'static str, &'a Value), GoogleError> {
    let o = object(v, path, &PART_FIELDS, &api.proto("Part"))?;
    let mut found: Option<(&'static str, &Value)> = None;
    for d in PART_DATA {
        if let Some(x) = get(o, d) {
            if found.is_some() {
                let spelled = if o.contains_key(d) {
                    d.to_string()
                } else {
                    snake(d)
                };
                return Err(GoogleError::invalid(format!(
                    "Invalid JSON payload received. Oneof field 'data' is already set. Cannot set '{spelled}'"
                )));
            }
            found = Some((d, x));
        }
    }
    let Some((kind, x)) = found else {
        return Err(request_error(
            &format!("{path}.data"),
            "required oneof field 'data' must have one initialized field",
        ));
    };
    if let Some(t) = get(o, "thought") {
        boolean(t, &join(path, "thought"))?;
    }
    if let Some(s) = get(o, "thoughtSignature") {
        bytes_field(s, &join(path, "thoughtSignature"))?;
    }
    let xp = join(path, kind);
    match kind {
        "text" => {
            string(x, &xp)?;
        }
        "inlineData" => {
            let b = object(
                x,
                &xp,
                &["mimeType", "data", "displayName"],
                &api.proto("Blob"),
            )?;
            let mime = get(b, "mimeType").map(|m| string(m, &join(&xp, "mimeType")));
            if !matches!(mime, Some(Ok(m)) if !m.is_empty()) {
                mime.transpose()?;
                return Err(request_error(
                    &join(&xp, "mimeType"),
                    "mime_type is required.",
                ));
            }
            match get(b, "data") {
                Some(d) => bytes_field(d, &join(&xp, "data"))?,
                None => return Err(request_error(&join(&xp, "data"), "data is required.")),
            }
        }
        "fileData" => {
            let f = object(
                x,
                &xp,
                &["mimeType", "fileUri", "displayName"],
                &api.proto("FileData"),
            )?;
            if let Some(m) = get(f, "mimeType") {
                string(m, &join(&xp, "mimeType"))?;
            }
            match get(f, "fileUri") {
                Some(u) if !string(u, &join(&xp, "fileUri"))?.is_empty() => {}
                _ => {
                    return Err(request_error(
                        &join(&xp, "fileUri"),
                        "file_uri is required.",
                    ))
                }
            }
        }
        "functionCall" => {
            let c = object(
                x,
                &xp,
                &["id", "name", "args", "partialArgs", "willContinue"],
                &api.proto("FunctionCall"),
            )?;
            match get(c, "name") {
                Some(n) if !string(n, &join(&xp, "name"))?.is_empty() => {}
                _ => return Err(request_error(&join(&xp, "name"), "Name cannot be empty.")),
            }
            if let Some(a) = get(c, "args") {
                if !a.is_object() {
                    return Err(invalid_value(
                        &join(&xp, "args"),
                        "type.googleapis.com/google.protobuf.Struct",
                        a,
                    ));
                }
            }
        }
        "functionResponse" => {
            let r = object(
                x,
                &xp,
                &[
                    "id",
                    "name",
                    "response",
                    "parts",
                    "willContinue",
                    "scheduling",
                ],
                &api.proto("FunctionResponse"),
            )?;
            match get(r, "name") {
                Some(n) if !string(n, &join(&xp, "name"))?.is_empty() => {}
                _ => return Err(request_error(&join(&xp, "name"), "Name cannot be empty.")),
            }
            match get(r, "response") {
                Some(resp) if resp.is_object() => {}
                Some(resp) => {
                    return Err(invalid_value(
                        &join(&xp, "response"),
                        "type.googleapis.com/google.protobuf.Struct",
                        resp,
                    ))
                }
                None => {
                    return Err(request_error(
                        &join(&xp, "response"),
                        "function_response.response is required.",
                    ))
                }
            }
        }
        _ => {
            if !x.is_object() {
                return Err(invalid_value(&xp, &api.proto("ExecutableCode"), x));
            }
        }
    }
    Ok((kind, x))
}

/// Token estimate of a valid part.
fn part_tokens(kind: &str, x: &Value) -> u64 {
    match kind {
        "text" => x.as_str().map_or(0, gen::text_tokens),
        "inlineData" | "fileData" => gen::IMAGE_TOKENS,
        _ => gen::text_tokens(&x.to_string()),
    }
}

fn valid_function_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':' | b'-'))
}

fn validate<'a>(req: &'a Value, api: &Api) -> Result<GemReq<'a>, GoogleError> {
    let top_fields: &[&str] = if api.vertex() {
        &VERTEX_TOP_FIELDS
    } else {
        &TOP_FIELDS
    };
    let top = object(req, "", top_fields, &api.proto("GenerateContentRequest"))?;
    let mut prompt_tokens = 0u64;

    if let Some(si) = get(top, "systemInstruction") {
        let p = "system_instruction";
        let o = object(si, p, &["role", "parts"], &api.proto("Content"))?;
        let parts = list(get(o, "parts"));
        if parts.is_empty() {
            return Err(request_error(
                "system_instruction.parts",
                "contents.parts must not be empty.",
            ));
        }
        for (j, pv) in parts.into_iter().enumerate() {
            let (kind, x) = part(pv, &format!("{p}.parts[{j}]"), api)?;
            prompt_tokens += part_tokens(kind, x);
        }
    }

    let contents = list(get(top, "contents"));
    if contents.is_empty() {
        return Err(request_error("contents", "contents is not specified"));
    }
    let single = contents.len() == 1;
    let mut last_user_text = None;
    let mut tool_results = None;
    let mut prev_role: Option<&str> = None;
    let mut prev_calls: Vec<&str> = Vec::new();
    for (i, c) in contents.into_iter().enumerate() {
        let p = format!("contents[{i}]");
        let o = object(c, &p, &["role", "parts"], &api.proto("Content"))?;
        let role = match get(o, "role") {
            Some(r) => string(r, &join(&p, "role"))?,
            None => "",
        };
        let role = match role {
            "user" | "model" => role,
            "" if single => "user",
            _ => {
                return Err(GoogleError::invalid(
                    "Please use a valid role: user, model.",
                ))
            }
        };
        let parts = list(get(o, "parts"));
        if parts.is_empty() {
            return Err(request_error(
                &format!("{p}.parts"),
                "contents.parts must not be empty.",
            ));
        }
        prompt_tokens += 4;
        let mut text = String::new();
        let mut results: Option<String> = None;
        let mut calls: Vec<&str> = Vec::new();
        for (j, pv) in parts.into_iter().enumerate() {
            let pp = format!("{p}.parts[{j}]");
            let (kind, x) = part(pv, &pp, api)?;
            prompt_tokens += part_tokens(kind, x);
            match kind {
                "text" if role == "user" => text.push_str(x.as_str().unwrap_or_default()),
                "functionCall" => {
                    if role != "model" {
                        return Err(request_error(
                            &format!("{pp}.function_call"),
                            "function calls are only allowed in model turns.",
                        ));
                    }
                    if prev_role != Some("user") {
                        return Err(GoogleError::invalid("Please ensure that function call turn comes immediately after a user turn or after a function response turn."));
                    }
                    calls.push(x.get("name").and_then(Value::as_str).unwrap_or_default());
                }
                "functionResponse" => {
                    if role != "user" {
                        return Err(request_error(
                            &format!("{pp}.function_response"),
                            "function responses are only allowed in user turns.",
                        ));
                    }
                    if prev_role != Some("model") || prev_calls.is_empty() {
                        return Err(GoogleError::invalid("Please ensure that function response turn comes immediately after a function call turn."));
                    }
                    let name = x.get("name").and_then(Value::as_str).unwrap_or_default();
                    if !prev_calls.contains(&name) {
                        return Err(request_error(
                            &format!("{pp}.function_response.name"),
                            &format!("function response \"{name}\" answers no function call of the preceding model turn."),
                        ));
                    }
                    let resp = x.get("response").map(Value::to_string).unwrap_or_default();
                    let r = results.get_or_insert_with(String::new);
                    if !r.is_empty() {
                        r.push('\n');
                    }
                    r.push_str(&resp);
                }
                _ => {}
            }
        }
        if role == "user" {
            last_user_text = Some(text);
            tool_results = results;
        } else {
            tool_results = None;
        }
        prev_calls = calls;
        prev_role = Some(role);
    }

    let mut tools = Vec::new();
    for (i, t) in list(get(top, "tools")).into_iter().enumerate() {
        let tp = format!("tools[{i}]");
        let o = object(t, &tp, &TOOL_FIELDS, &api.proto("Tool"))?;
        for (k, d) in list(get(o, "functionDeclarations")).into_iter().enumerate() {
            let dp = format!("{tp}.function_declarations[{k}]");
            let d = object(
                d,
                &dp,
                &[
                    "name",
                    "description",
                    "parameters",
                    "parametersJsonSchema",
                    "response",
                    "responseJsonSchema",
                    "behavior",
                ],
                &api.proto("FunctionDeclaration"),
            )?;
            let name = match get(d, "name") {
                Some(n) => string(n, &join(&dp, "name"))?,
                None => "",
            };
            if !valid_function_name(name) {
                return Err(request_error(&join(&dp, "name"), "Invalid function name. Must start with a letter or an underscore. Must be a-z, A-Z, 0-9, or contain underscores, dots, colons and dashes, with a maximum length of 64."));
            }
            let params = get(d, "parameters");
            let json_schema = get(d, "parametersJsonSchema");
            if params.is_some() && json_schema.is_some() {
                return Err(request_error(
                    &dp,
                    "parameters and parameters_json_schema cannot both be set.",
                ));
            }
            for (field, s) in [
                ("parameters", params),
                ("parametersJsonSchema", json_schema),
            ] {
                if let Some(s) = s.filter(|s| !s.is_object()) {
                    return Err(invalid_value(&join(&dp, field), &api.proto("Schema"), s));
                }
            }
            let description = match get(d, "description") {
                Some(x) => string(x, &join(&dp, "description"))?,
                None => "",
            };
            let schema = params.or(json_schema);
            prompt_tokens += gen::text_tokens(name)
                + gen::text_tokens(description)
                + schema.map_or(0, |s| gen::text_tokens(&s.to_string()));
            tools.push(ToolDef { name, schema });
        }
    }

    let (mut forced, mut none) = (None, false);
    if let Some(tc) = get(top, "toolConfig") {
        let o = object(
            tc,
            "tool_config",
            &[
                "functionCallingConfig",
                "retrievalConfig",
                "includeServerSideToolInvocations",
            ],
            &api.proto("ToolConfig"),
        )?;
        if let Some(fc) = get(o, "functionCallingConfig") {
            let fp = "tool_config.function_calling_config";
            let f = object(
                fc,
                fp,
                &[
                    "mode",
                    "allowedFunctionNames",
                    "streamFunctionCallArguments",
                ],
                &api.proto("FunctionCallingConfig"),
            )?;
            let mode = match get(f, "mode") {
                Some(m) => {
                    let s = string(m, &join(fp, "mode"))?;
                    if !matches!(
                        s,
                        "MODE_UNSPECIFIED" | "AUTO" | "ANY" | "NONE" | "VALIDATED"
                    ) {
                        return Err(invalid_value(
                            &join(fp, "mode"),
                            &api.proto("FunctionCallingConfig.Mode"),
                            m,
                        ));
                    }
                    s
                }
                None => "AUTO",
            };
            let mut allowed = Vec::new();
            for (k, n) in list(get(f, "allowedFunctionNames")).into_iter().enumerate() {
                allowed.push(string(n, &format!("{fp}.allowed_function_names[{k}]"))?);
            }
            if !allowed.is_empty() && !matches!(mode, "ANY" | "VALIDATED") {
                return Err(request_error(
                    &join(fp, "allowedFunctionNames"),
                    "allowed_function_names may only be set when the mode is ANY or VALIDATED.",
                ));
            }
            if matches!(mode, "ANY" | "VALIDATED") && tools.is_empty() {
                return Err(request_error(
                    "tool_config.function_calling_config",
                    "Function calling config is set without function_declarations.",
                ));
            }
            match mode {
                "ANY" => forced = Some(allowed.first().copied()),
                "NONE" => none = true,
                _ => {}
            }
        }
    }

    for (i, s) in list(get(top, "safetySettings")).into_iter().enumerate() {
        let sp = format!("safety_settings[{i}]");
        let o = object(
            s,
            &sp,
            &["category", "threshold", "method"],
            &api.proto("SafetySetting"),
        )?;
        for (field, ok) in [
            (
                "category",
                &(|c: &str| c.starts_with("HARM_CATEGORY_")) as &dyn Fn(&str) -> bool,
            ),
            ("threshold", &|t: &str| {
                matches!(
                    t,
                    "HARM_BLOCK_THRESHOLD_UNSPECIFIED"
                        | "BLOCK_LOW_AND_ABOVE"
                        | "BLOCK_MEDIUM_AND_ABOVE"
                        | "BLOCK_ONLY_HIGH"
                        | "BLOCK_NONE"
                        | "OFF"
                )
            }),
        ] {
            if let Some(v) = get(o, field) {
                if !string(v, &join(&sp, field)).map(ok)? {
                    let ty = if field == "category" {
                        "HarmCategory"
                    } else {
                        "SafetySetting.HarmBlockThreshold"
                    };
                    return Err(invalid_value(&join(&sp, field), &api.proto(ty), v));
                }
            }
        }
    }

    if let Some(cc) = get(top, "cachedContent") {
        string(cc, "cached_content")?;
    }

    let mut max_tokens = None;
    let mut stop = Vec::new();
    let mut candidates = 1;
    let mut include_thoughts = true;
    let mut format = Format::Text;
    if let Some(gc) = get(top, "generationConfig") {
        let gp = "generation_config";
        let g = object(gc, gp, &GENERATION_FIELDS, &api.proto("GenerationConfig"))?;
        if let Some(m) = get(g, "maxOutputTokens") {
            let n = int(m, &join(gp, "maxOutputTokens"), "TYPE_INT32")?;
            if n < 1 {
                return Err(request_error(
                    &join(gp, "maxOutputTokens"),
                    "max_output_tokens must be positive.",
                ));
            }
            max_tokens = Some(n as u64);
        }
        for (field, lo, hi) in [
            ("temperature", 0.0, 2.0),
            ("topP", 0.0, 1.0),
            ("presencePenalty", -2.0, 2.0),
            ("frequencyPenalty", -2.0, 2.0),
        ] {
            if let Some(v) = get(g, field) {
                let x = float(v, &join(gp, field))?;
                if !(lo..=hi).contains(&x) {
                    return Err(request_error(
                        &join(gp, field),
                        &format!("{} must be in the range [{lo:.1}, {hi:.1}].", snake(field)),
                    ));
                }
            }
        }
        for field in ["topK", "seed"] {
            if let Some(v) = get(g, field) {
                int(v, &join(gp, field), "TYPE_INT32")?;
            }
        }
        if let Some(v) = get(g, "candidateCount") {
            let n = int(v, &join(gp, "candidateCount"), "TYPE_INT32")?;
            if !(1..=8).contains(&n) {
                return Err(request_error(
                    &join(gp, "candidateCount"),
                    "candidate_count must be in the range [1, 8].",
                ));
            }
            candidates = n as usize;
        }
        for (k, s) in list(get(g, "stopSequences")).into_iter().enumerate() {
            stop.push(string(s, &format!("{gp}.stop_sequences[{k}]"))?.to_string());
        }
        if stop.len() > 5 {
            return Err(request_error(
                &join(gp, "stopSequences"),
                "stop_sequences must have at most 5 items.",
            ));
        }
        for (k, m) in list(get(g, "responseModalities")).into_iter().enumerate() {
            string(m, &format!("{gp}.response_modalities[{k}]"))?;
        }
        for field in [
            "responseLogprobs",
            "enableEnhancedCivicAnswers",
            "audioTimestamp",
        ] {
            if let Some(v) = get(g, field) {
                boolean(v, &join(gp, field))?;
            }
        }
        let mime = match get(g, "responseMimeType") {
            Some(m) => {
                let s = string(m, &join(gp, "responseMimeType"))?;
                if !MIME_TYPES.contains(&s) {
                    return Err(request_error(&join(gp, "responseMimeType"), "allowed mimetypes are `text/plain`, `application/json`, `application/xml`, `application/yaml` and `text/x.enum`."));
                }
                s
            }
            None => "text/plain",
        };
        let schema = get(g, "responseSchema");
        let json_schema = get(g, "responseJsonSchema");
        if schema.is_some() && json_schema.is_some() {
            return Err(request_error(
                gp,
                "response_schema and response_json_schema cannot both be set.",
            ));
        }
        for (field, s) in [
            ("responseSchema", schema),
            ("responseJsonSchema", json_schema),
        ] {
            if let Some(s) = s.filter(|s| !s.is_object()) {
                return Err(invalid_value(&join(gp, field), &api.proto("Schema"), s));
            }
        }
        let schema = schema.or(json_schema);
        format = match mime {
            "application/json" => Format::Json(schema),
            "text/x.enum" => Format::Enum(schema),
            _ if schema.is_some() => {
                return Err(request_error(&join(gp, "responseMimeType"), "When response_schema is set, response_mime_type must be `application/json` or `text/x.enum`."))
            }
            _ => Format::Text,
        };
        if let Some(tc) = get(g, "thinkingConfig") {
            let tp = "generation_config.thinking_config";
            let t = object(
                tc,
                tp,
                &["thinkingBudget", "includeThoughts", "thinkingLevel"],
                &api.proto("ThinkingConfig"),
            )?;
            let budget = get(t, "thinkingBudget")
                .map(|b| int(b, &join(tp, "thinkingBudget"), "TYPE_INT32"))
                .transpose()?;
            if let Some(i) = get(t, "includeThoughts") {
                include_thoughts = boolean(i, &join(tp, "includeThoughts"))?;
            }
            if let Some(l) = get(t, "thinkingLevel") {
                let s = string(l, &join(tp, "thinkingLevel"))?.to_ascii_uppercase();
                if !matches!(
                    s.as_str(),
                    "THINKING_LEVEL_UNSPECIFIED" | "MINIMAL" | "LOW" | "MEDIUM" | "HIGH"
                ) {
                    return Err(invalid_value(
                        &join(tp, "thinkingLevel"),
                        &api.proto("ThinkingConfig.ThinkingLevel"),
                        l,
                    ));
                }
                if budget.is_some() {
                    return Err(GoogleError::invalid(
                        "You can only set only one of thinking budget and thinking level.",
                    ));
                }
            }
        }
    }

    Ok(GemReq {
        last_user_text,
        tool_results,
        tools,
        forced,
        none,
        stop,
        max_tokens,
        prompt_tokens,
        candidates,
        include_thoughts,
        format,
    })
}

fn parse_body(body: &[u8]) -> Result<Value, GoogleError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(v) => Err(GoogleError::invalid(format!(
            "Invalid JSON payload received. Expected an object, got {}.",
            match v {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                _ => "a scalar",
            }
        ))),
        Err(e) => Err(GoogleError::invalid(format!(
            "Invalid JSON payload received. {e}."
        ))),
    }
}

// ---- the answer ----

/// A deterministic `responseId` (22 characters of base64url, as Google's look).
fn response_id(seq: u64) -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut x = seq ^ 0x5eed_0f9e_411a_1101;
    (0..22)
        .map(|_| {
            x = gen::splitmix(x);
            ALPHA[(x % 64) as usize] as char
        })
        .collect()
}

/// RFC 3339 UTC time with microseconds, as Vertex's `createTime`.
fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let t = gen::rfc3339(now.as_secs());
    format!("{}.{:06}Z", t.trim_end_matches('Z'), now.subsec_micros())
}

/// The answer with what every chunk of it repeats.
struct Outcome<'a> {
    answer: Answer,
    finish: &'static str,
    model: &'a str,
    id: String,
    candidates: usize,
    include_thoughts: bool,
    /// Prompt tokens, the cached ones included (Gemini counts them inside).
    prompt: u64,
    cached: u64,
    vertex: bool,
    no_usage: bool,
    create_time: Option<String>,
}

impl Outcome<'_> {
    fn thoughts(&self) -> u64 {
        self.answer.thinking.len() as u64
    }

    fn candidate_tokens(&self) -> u64 {
        (self.answer.output_tokens() - self.thoughts()) * self.candidates as u64
    }

    /// `usageMetadata`: the whole of it (`done`), or the prompt's part intermediate stream
    /// chunks carry.
    fn usage(&self, done: bool) -> Value {
        let mut u = json!({
            "promptTokenCount": self.prompt,
            "totalTokenCount": self.prompt,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.prompt}],
        });
        if done {
            let c = self.candidate_tokens();
            if c > 0 {
                u["candidatesTokenCount"] = c.into();
            }
            if self.thoughts() > 0 {
                u["thoughtsTokenCount"] = self.thoughts().into();
            }
            u["totalTokenCount"] = (self.prompt + c + self.thoughts()).into();
        }
        if self.cached > 0 {
            u["cachedContentTokenCount"] = self.cached.into();
            u["cacheTokensDetails"] = json!([{"modality": "TEXT", "tokenCount": self.cached}]);
        }
        if self.vertex {
            u["trafficType"] = "ON_DEMAND".into();
        }
        u
    }

    /// A `GenerateContentResponse` whose candidates (one per `candidateCount`) hold `parts`.
    fn response(&self, parts: &[Value], finish: Option<&str>, usage: Value) -> Value {
        let candidates: Vec<Value> = (0..self.candidates)
            .map(|i| {
                let mut c = json!({"content": {"parts": parts, "role": "model"}, "index": i});
                if let Some(f) = finish {
                    c["finishReason"] = f.into();
                }
                c
            })
            .collect();
        let mut out = json!({
            "candidates": candidates,
            "modelVersion": self.model,
            "responseId": self.id,
        });
        if !self.no_usage {
            out["usageMetadata"] = usage;
        }
        if let Some(t) = &self.create_time {
            out["createTime"] = t.as_str().into();
        }
        out
    }

    /// The non-streaming parts: a thought, the text or the function calls; the thought
    /// signature on the first part that is not a thought.
    fn parts(&self) -> Vec<Value> {
        let a = &self.answer;
        let mut parts = Vec::new();
        if !a.thinking.is_empty() && self.include_thoughts {
            parts.push(json!({"text": a.thinking.concat(), "thought": true}));
        }
        if a.calls.is_empty() {
            parts.push(json!({"text": a.pieces.concat()}));
        }
        for c in &a.calls {
            parts.push(json!({"functionCall": {"name": c.name, "args": c.input}}));
        }
        if !a.thinking.is_empty() {
            if let Some(p) = parts.iter_mut().find(|p| p.get("thought").is_none()) {
                p["thoughtSignature"] = a.signature.as_str().into();
            }
        }
        parts
    }

    /// The answer to a prompt the safety filters block: no candidates, `promptFeedback`.
    fn blocked(&self) -> Value {
        let mut out = json!({
            "promptFeedback": {
                "blockReason": "SAFETY",
                "safetyRatings": [
                    {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
                    {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
                    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true},
                ],
            },
            "modelVersion": self.model,
            "responseId": self.id,
        });
        if !self.no_usage {
            out["usageMetadata"] = self.usage(false);
        }
        out
    }
}

fn finish_reason(f: &Finish) -> &'static str {
    match f {
        Finish::Length => "MAX_TOKENS",
        // Gemini ends function calls and stop sequences with STOP too.
        Finish::Stop | Finish::StopSequence(_) | Finish::ToolCalls => "STOP",
    }
}

/// Structured output: the text, as JSON valid for the schema (or the first enum value).
fn formatted_text(format: &Format<'_>, pieces: &[Piece]) -> Option<String> {
    match format {
        Format::Text => None,
        Format::Json(Some(schema)) => Some(gen::json_for_schema(schema).to_string()),
        Format::Json(None) => Some(json!({"response": pieces.concat()}).to_string()),
        Format::Enum(schema) => Some(
            schema
                .and_then(|s| s.get("enum"))
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Value::as_str)
                .unwrap_or("example")
                .to_string(),
        ),
    }
}

fn json_response(v: &Value) -> Response {
    ([(header::CONTENT_TYPE, JSON_TYPE)], v.to_string()).into_response()
}

/// `generateContent` (`stream = false`) or `streamGenerateContent` (SSE with `sse`, else a JSON
/// array) for a request already authenticated and logged.
pub(crate) async fn respond(
    flight: InFlight,
    seq: u64,
    body: &[u8],
    model: &str,
    stream: bool,
    sse: bool,
    api: &Api,
) -> Response {
    let req = match parse_body(body) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let r = match validate(&req, api) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let knobs = Knobs::from_request(model, r.last_user_text.as_deref());
    let name = base_model(model);
    match &knobs.fault {
        Some(Fault::Status(code)) => {
            return fault_error(*code, name, api, knobs.retry_after.clone()).into_response()
        }
        Some(Fault::Hang) => gen::hang().await,
        Some(Fault::ErrorEvent) if !stream => {
            return fault_error(500, name, api, None).into_response()
        }
        Some(Fault::ContextLength) => {
            let n = (r.prompt_tokens + knobs.cached).max(MAX_INPUT_TOKENS + 1);
            return GoogleError::invalid(format!(
                "The input token count ({n}) exceeds the maximum number of tokens allowed ({MAX_INPUT_TOKENS})."
            ))
            .into_response();
        }
        _ => {}
    }
    let mut answer = Ask {
        knobs: &knobs,
        tools: &r.tools,
        forced: r.forced,
        tool_choice_none: r.none,
        tool_results: r.tool_results.as_deref(),
        last_user_text: r.last_user_text.as_deref(),
        stop: &r.stop,
        max_tokens: r.max_tokens,
    }
    .answer("", seq);
    if answer.calls.is_empty() && r.tool_results.is_none() {
        if let Some(text) = formatted_text(&r.format, &answer.pieces) {
            answer.pieces = gen::json_pieces(&text)
                .into_iter()
                .map(Piece::Owned)
                .collect();
            answer.finish =
                gen::finish_text(&mut answer.pieces, &Knobs::default(), &[], r.max_tokens);
        }
    }
    let out = Outcome {
        finish: finish_reason(&answer.finish),
        answer,
        model: name,
        id: response_id(seq),
        candidates: r.candidates,
        include_thoughts: r.include_thoughts,
        prompt: r.prompt_tokens + knobs.cached,
        cached: knobs.cached,
        vertex: api.vertex(),
        no_usage: knobs.no_usage,
        create_time: api.vertex().then(rfc3339_now),
    };

    if knobs.fault == Some(Fault::ContentPolicy) {
        let blocked = out.blocked();
        if !stream {
            return json_response(&blocked);
        }
        let mut script = Script::default();
        if sse {
            script.data_event_crlf(&blocked);
        } else {
            script.data(b"[");
            script.json(&blocked);
            script.data(b"]");
        }
        return stream_response(script.into_body(flight), sse);
    }

    if !stream {
        gen::answer_delay(&knobs, out.answer.output_tokens()).await;
        if knobs.fault == Some(Fault::Malformed) {
            return (
                [(header::CONTENT_TYPE, JSON_TYPE)],
                "{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hel",
            )
                .into_response();
        }
        if knobs.fault == Some(Fault::Reset) {
            let mut script = Script::default();
            script.data(b"{\"candidates\": ");
            script.cut();
            return (
                [(header::CONTENT_TYPE, JSON_TYPE)],
                script.into_body(flight),
            )
                .into_response();
        }
        let v = out.response(&out.parts(), Some(out.finish), out.usage(true));
        drop(flight);
        return json_response(&v);
    }
    let script = stream_script(&knobs, &out, sse);
    stream_response(script.into_body(flight), sse)
}

fn stream_response(body: axum::body::Body, sse: bool) -> Response {
    let ct = if sse { "text/event-stream" } else { JSON_TYPE };
    ([(header::CONTENT_TYPE, ct)], body).into_response()
}

/// Writes chunks as SSE events or as the elements of one JSON array.
struct Chunks {
    script: Script,
    sse: bool,
    first: bool,
}

impl Chunks {
    fn chunk(&mut self, v: &Value) {
        if self.sse {
            self.script.data_event_crlf(v);
        } else {
            self.script.data(if self.first { b"[" } else { b",\r\n" });
            self.script.json(v);
        }
        self.first = false;
    }

    fn fault(&mut self, fault: Fault) {
        match fault {
            Fault::Malformed => {
                let broken = b"{\"candidates\": [{\"content\": {\"parts\": [{\"text\": ";
                if self.sse {
                    self.script.data(b"data: ");
                    self.script.data(broken);
                    self.script.data(b"\r\n\r\n");
                } else {
                    self.script.data(if self.first { b"[" } else { b",\r\n" });
                    self.script.data(broken);
                }
            }
            Fault::Reset => self.script.cut(),
            _ => {
                let e = GoogleError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The model is overloaded. Please try again later.",
                );
                self.chunk(&e.body());
                self.end();
            }
        }
    }

    fn end(&mut self) {
        if !self.sse {
            self.script.data(if self.first { b"[]" } else { b"]" });
        }
    }
}

/// One chunk per thought piece (with `includeThoughts`), per text piece and per function call
/// (whole), then a last chunk with an empty text part, `finishReason` and the whole
/// `usageMetadata`; intermediate chunks carry the prompt's usage only.
fn stream_script(knobs: &Knobs, out: &Outcome<'_>, sse: bool) -> Script {
    let mut ch = Chunks {
        script: Script::default(),
        sse,
        first: true,
    };
    let mut gate = Gate::new(knobs);
    let a = &out.answer;
    let mut signature = (!a.thinking.is_empty()).then(|| a.signature.clone());
    macro_rules! token {
        () => {
            if let Some(f) = gate.token(&mut ch.script) {
                ch.fault(f);
                return ch.script;
            }
        };
    }
    if out.include_thoughts {
        for piece in &a.thinking {
            token!();
            let v = out.response(
                &[json!({"text": piece, "thought": true})],
                None,
                out.usage(false),
            );
            ch.chunk(&v);
        }
    }
    let mut sign = |mut part: Value| {
        if let Some(s) = signature.take() {
            part["thoughtSignature"] = s.into();
        }
        part
    };
    for piece in &a.pieces {
        token!();
        let v = out.response(&[sign(json!({"text": piece}))], None, out.usage(false));
        ch.chunk(&v);
    }
    for c in &a.calls {
        token!();
        let part = sign(json!({"functionCall": {"name": c.name, "args": c.input}}));
        let v = out.response(&[part], None, out.usage(false));
        ch.chunk(&v);
    }
    if let Some(f) = gate.end(&mut ch.script) {
        ch.fault(f);
        return ch.script;
    }
    let v = out.response(
        &[sign(json!({"text": ""}))],
        Some(out.finish),
        out.usage(true),
    );
    ch.chunk(&v);
    ch.end();
    ch.script
}

// ---- Google AI Studio ----

/// The model (percent-decoded, knobs in its query) and the method of a path's last segment,
/// `{model}:{method}`, split at the last `:`.
pub(crate) fn model_and_method(path: &str) -> Option<(String, String)> {
    let raw = path.rsplit('/').next().unwrap_or_default();
    let decoded = String::from_utf8(sigv4::percent_decode(raw)).ok()?;
    let (model, method) = decoded.rsplit_once(':')?;
    if base_model(model).is_empty() {
        return None;
    }
    Some((model.to_string(), method.to_string()))
}

/// Google's 404 for a method a resource does not have.
pub(crate) fn method_not_found() -> Response {
    GoogleError::new(StatusCode::NOT_FOUND, "Method not found.").into_response()
}

/// `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent`, authenticated by
/// an API key in `x-goog-api-key` or `?key=`.
pub async fn ai_studio(
    State(s): State<Arc<Shared>>,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((model, method)) = model_and_method(uri.path()) else {
        return method_not_found();
    };
    let (stream, embed) = match method.as_str() {
        "generateContent" => (false, false),
        "streamGenerateContent" => (true, false),
        "batchEmbedContents" => (false, true),
        _ => return method_not_found(),
    };
    let via = if headers
        .get("x-goog-api-key")
        .is_some_and(|v| !v.as_bytes().is_empty())
    {
        Some("header")
    } else if crate::query_param(&uri, "key").is_some_and(|k| !k.is_empty()) {
        Some("query")
    } else {
        None
    };
    let auth = match via {
        Some(via) => json!({"scheme": "api_key", "via": via}),
        None => json!({"scheme": "rejected", "error": "PERMISSION_DENIED"}),
    };
    let alt = crate::query_param(&uri, "alt");
    let route = if embed {
        Route::BatchEmbedContents
    } else if stream {
        Route::StreamGenerateContent
    } else {
        Route::GenerateContent
    };
    let (flight, seq) = s.begin_with(
        route,
        version,
        &headers,
        &body,
        Some((
            crate::path_and_query(&uri),
            json!({"model_id": model, "alt": alt, "auth": auth}),
        )),
    );
    if via.is_none() {
        return GoogleError::new(
            StatusCode::FORBIDDEN,
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        )
        .into_response();
    }
    if embed {
        return embed_respond(flight, seq, &body, &model, &Api::AiStudio).await;
    }
    let sse = alt.as_deref() == Some("sse");
    respond(flight, seq, &body, &model, stream, sse, &Api::AiStudio).await
}

/// Embeddings: Google AI Studio's `batchEmbedContents` (`{"requests": [{"model", "content":
/// {"parts": [{"text"}]}, "outputDimensionality"}]}` → `{"embeddings": [{"values"}]}`, no token
/// count), or Vertex AI's `predict` for embedding models (`{"instances": [{"content"}],
/// "parameters": {"outputDimensionality"}}` → `{"predictions": [{"embeddings": {"values",
/// "statistics": {"token_count", "truncated"}}}], "metadata": {"billableCharacterCount"}}`).
/// Vectors as OpenAI's route makes them (deterministic per text); 3,072 dimensions unless asked.
pub(crate) async fn embed_respond(
    flight: InFlight,
    seq: u64,
    body: &[u8],
    model: &str,
    api: &Api,
) -> Response {
    let req = match parse_body(body) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let vertex = matches!(api, Api::Vertex { .. });
    let (list, what) = if vertex {
        (req.get("instances"), "instances")
    } else {
        (req.get("requests"), "requests")
    };
    let Some(items) = list.and_then(Value::as_array).filter(|a| !a.is_empty()) else {
        return GoogleError::invalid(format!("* {what}: must be a non-empty list")).into_response();
    };
    let mut texts = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let text = if vertex {
            item.get("content")
                .and_then(Value::as_str)
                .map(str::to_string)
        } else {
            item.pointer("/content/parts")
                .and_then(Value::as_array)
                .map(|parts| {
                    parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect::<String>()
                })
        };
        match text {
            Some(t) if !t.is_empty() => texts.push(t),
            _ => {
                return GoogleError::invalid(format!(
                    "* {what}[{i}]: the text to embed is missing or empty"
                ))
                .into_response()
            }
        }
    }
    let dims_at = |v: Option<&Value>| v.and_then(|d| d.get("outputDimensionality")).cloned();
    let dims = match if vertex {
        dims_at(req.get("parameters"))
    } else {
        dims_at(items.first())
    } {
        None | Some(Value::Null) => 3072,
        Some(v) => match v.as_u64() {
            Some(d) if (1..=3072).contains(&d) => d as usize,
            _ => {
                return GoogleError::invalid("* outputDimensionality: must be between 1 and 3072")
                    .into_response()
            }
        },
    };
    let knobs = Knobs::from_request(model, texts.last().map(String::as_str));
    match &knobs.fault {
        Some(Fault::Status(code)) => {
            return fault_error(*code, base_model(model), api, knobs.retry_after.clone())
                .into_response()
        }
        Some(Fault::Hang) => gen::hang().await,
        _ => {}
    }
    gen::answer_delay(&knobs, 0).await;
    let vectors = texts
        .iter()
        .map(|t| crate::openai::embedding(t, dims))
        .collect::<Vec<_>>();
    let body = if vertex {
        let chars: usize = texts.iter().map(|t| t.chars().count()).sum();
        json!({
            "predictions": texts.iter().zip(&vectors).map(|(t, v)| json!({
                "embeddings": {
                    "statistics": {"truncated": false, "token_count": gen::text_tokens(t)},
                    "values": v,
                }
            })).collect::<Vec<_>>(),
            "metadata": {"billableCharacterCount": chars},
        })
    } else {
        json!({"embeddings": vectors.iter().map(|v| json!({"values": v})).collect::<Vec<_>>()})
    };
    drop(flight);
    let mut resp = axum::Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("mock-{seq}")) {
        resp.headers_mut().insert("x-goog-request-id", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_and_method_split_at_the_last_colon() {
        assert_eq!(
            model_and_method("/v1beta/models/gemini-2.5-flash%3Ftokens%3D5:generateContent"),
            Some(("gemini-2.5-flash?tokens=5".into(), "generateContent".into()))
        );
        assert_eq!(
            model_and_method("/v1beta/models/m%3Ftool%3Dns:f:streamGenerateContent"),
            Some(("m?tool=ns:f".into(), "streamGenerateContent".into()))
        );
        assert_eq!(model_and_method("/v1beta/models/gemini"), None);
        assert_eq!(model_and_method("/v1beta/models/:generateContent"), None);
    }

    #[test]
    fn snake_case_and_ids() {
        assert_eq!(snake("generationConfig"), "generation_config");
        assert_eq!(snake("text"), "text");
        let id = response_id(3);
        assert_eq!(id.len(), 22);
        assert_ne!(id, response_id(4));
        let t = rfc3339_now();
        assert_eq!(t.len(), 27, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T');
    }

    #[test]
    fn repeated_fields_take_single_values() {
        let req = json!({"contents": {"role": "user", "parts": {"text": "hi"}}});
        let r = validate(&req, &Api::AiStudio)
            .map_err(|e| e.body())
            .expect("valid");
        assert_eq!(r.last_user_text.as_deref(), Some("hi"));
        let req = json!({"contents": [{"parts": [{"text": "hi"}]}], "generation_config": {"max_output_tokens": "7"}});
        let r = validate(&req, &Api::AiStudio)
            .map_err(|e| e.body())
            .expect("valid");
        assert_eq!(r.max_tokens, Some(7));
    }
}
