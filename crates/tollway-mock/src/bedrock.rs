//! Amazon Bedrock's Converse API: `POST /model/{modelId}/converse` (JSON) and
//! `POST /model/{modelId}/converse-stream` (the AWS event stream, framed by hand), with SigV4 or
//! API-key authentication ([`crate::sigv4`]), request validation and Bedrock's error shape.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::gen::{self, Answer, Ask, Finish, Gate, Script, ToolDef};
use crate::knobs::{base_model, Fault, Knobs};
use crate::sigv4::{self, Caller};
use crate::{InFlight, Route, Shared};

/// The namespace Bedrock appends to `x-amzn-errortype`.
const ERROR_NAMESPACE: &str = ":http://internal.amazon.com/coral/com.amazon.bedrock/";

const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// A Bedrock error: status, `x-amzn-errortype` and `{"message"}`.
struct ApiError {
    status: StatusCode,
    typ: &'static str,
    message: String,
    /// Bedrock's own errors carry the namespace; the front door's (authentication) do not.
    namespaced: bool,
}

impl ApiError {
    fn into_response(self, seq: u64) -> Response {
        let mut r = (self.status, Json(json!({"message": self.message}))).into_response();
        let typ = if self.namespaced {
            format!("{}{ERROR_NAMESPACE}", self.typ)
        } else {
            self.typ.to_string()
        };
        if let Ok(v) = HeaderValue::from_str(&typ) {
            r.headers_mut().insert("x-amzn-errortype", v);
        }
        with_request_id(r, seq)
    }
}

fn error(status: StatusCode, typ: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        typ,
        message: message.into(),
        namespaced: true,
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    error(StatusCode::BAD_REQUEST, "ValidationException", message)
}

/// AWS's wording for a value outside its constraint.
fn constraint(value: impl std::fmt::Display, path: &str, rule: &str) -> ApiError {
    invalid(format!(
        "1 validation error detected: Value '{value}' at '{path}' failed to satisfy constraint: Member must {rule}"
    ))
}

fn required(path: &str) -> ApiError {
    constraint("null", path, "not be null")
}

fn wrong_type(path: &str, want: &str) -> ApiError {
    invalid(format!("Malformed input request: {path} must be {want}"))
}

/// The error Bedrock sends for an injected status (`fault=529` becomes a 503: Bedrock has no
/// 529).
fn fault_error(status: u16) -> ApiError {
    const RETRY: &str =
        "The system encountered an unexpected error during processing. Try your request again.";
    let (status, typ, message) = match status {
        400 => (
            400,
            "ValidationException",
            "Invalid request (injected by tollway-mock).",
        ),
        401 => (
            401,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ),
        403 => (
            403,
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
        ),
        404 => (
            404,
            "ResourceNotFoundException",
            "Could not resolve the foundation model from the provided model identifier.",
        ),
        408 => (
            408,
            "ModelTimeoutException",
            "Model has timed out in processing the request. Try your request again.",
        ),
        424 => (424, "ModelErrorException", RETRY),
        429 => (
            429,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
        ),
        503 | 529 => (
            503,
            "ServiceUnavailableException",
            "Bedrock is unable to process your request.",
        ),
        s if s < 500 => (
            s,
            "ValidationException",
            "Invalid request (injected by tollway-mock).",
        ),
        s => (s, "InternalServerException", RETRY),
    };
    error(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        typ,
        message,
    )
}

/// A deterministic, UUID-shaped `x-amzn-requestid` from the request's sequence number.
fn request_id(seq: u64) -> String {
    let a = gen::splitmix(seq);
    let b = gen::splitmix(a);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

fn with_request_id(mut r: Response, seq: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&request_id(seq)) {
        r.headers_mut().insert("x-amzn-requestid", v);
    }
    r
}

/// A path under `/model/` that is no Converse operation (an ARN sent with its `/` unencoded...).
pub fn unknown_operation() -> Response {
    let mut r = (
        StatusCode::NOT_FOUND,
        Json(json!({"message": "The requested operation is not recognized by the service."})),
    )
        .into_response();
    r.headers_mut().insert(
        "x-amzn-errortype",
        HeaderValue::from_static("UnknownOperationException"),
    );
    r
}

/// The model id from the path, percent-decoded (`a%3A0` → `a:0`, `%2F` → `/`).
fn model_id(uri: &Uri) -> Result<String, ApiError> {
    let raw = uri
        .path()
        .strip_prefix("/model/")
        .and_then(|p| p.rsplit_once('/'))
        .map_or("", |(id, _)| id);
    let id = String::from_utf8(sigv4::percent_decode(raw))
        .map_err(|_| invalid("The provided model identifier is invalid."))?;
    if base_model(&id).is_empty() {
        return Err(invalid("The provided model identifier is invalid."));
    }
    Ok(id)
}

fn auth_json(auth: &Result<Caller, sigv4::AuthError>) -> Value {
    match auth {
        Ok(Caller::ApiKey) => json!({"scheme": "bearer"}),
        Ok(Caller::SigV4 {
            access_key_id,
            region,
            signed_headers,
        }) => json!({"scheme": "sigv4", "access_key_id": access_key_id, "region": region,
                     "signed_headers": signed_headers}),
        Err(e) => json!({"scheme": "rejected", "error": e.typ}),
    }
}

/// Logs a request to a model's route with its model id and how its SigV4 signature checked
/// out: its flight, sequence number and model id, or (a bad signature) Bedrock's 403.
fn begin_signed(
    s: &Arc<Shared>,
    route: Route,
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(InFlight, u64, Result<String, ApiError>), Box<Response>> {
    let auth = sigv4::verify("POST", uri, headers, body);
    let model = model_id(uri);
    let detail = json!({"model_id": model.as_ref().ok(), "auth": auth_json(&auth)});
    let (flight, seq) = s.begin_with(
        route,
        version,
        headers,
        body,
        Some((uri.path().to_string(), detail)),
    );
    match auth {
        Ok(_) => Ok((flight, seq, model)),
        Err(e) => Err(Box::new(
            ApiError {
                status: StatusCode::FORBIDDEN,
                typ: e.typ,
                message: e.message,
                namespaced: false,
            }
            .into_response(seq),
        )),
    }
}

/// `POST /model/{modelId}/converse` (`STREAM = false`) and `.../converse-stream` (`true`).
pub async fn converse<const STREAM: bool>(
    State(s): State<Arc<Shared>>,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let stream = STREAM;
    let route = if stream {
        Route::ConverseStream
    } else {
        Route::Converse
    };
    let (flight, seq, model) = match begin_signed(&s, route, version, &uri, &headers, &body) {
        Ok(begun) => begun,
        Err(refused) => return *refused,
    };
    let (model, req) = match model.and_then(|m| parse_body(&body).map(|req| (m, req))) {
        Ok(v) => v,
        Err(e) => return e.into_response(seq),
    };
    let r = match validate(&req) {
        Ok(r) => r,
        Err(e) => return e.into_response(seq),
    };
    let knobs = Knobs::from_request(&model, r.last_user_text.as_deref());
    match &knobs.fault {
        Some(Fault::Status(code)) => return fault_error(*code).into_response(seq),
        Some(Fault::Hang) => gen::hang().await,
        Some(Fault::ErrorEvent) if !stream => return fault_error(500).into_response(seq),
        Some(Fault::ContextLength) => {
            return invalid("Input is too long for requested model.").into_response(seq)
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
        tool_choice_none: false,
        tool_results: r.tool_results.as_deref(),
        last_user_text: r.last_user_text.as_deref(),
        stop: &r.stop,
        max_tokens: r.max_tokens,
    }
    .answer("tooluse_", seq);
    let out = Outcome::new(&r, &knobs, answer);

    if !stream {
        gen::answer_delay(&knobs, out.answer.output_tokens()).await;
        let json_type = [(header::CONTENT_TYPE, "application/json")];
        if knobs.fault == Some(Fault::Malformed) {
            let broken =
                "{\"output\":{\"message\":{\"role\":\"assistant\",\"content\":[{\"text\":\"Hel";
            return with_request_id((json_type, broken).into_response(), seq);
        }
        if knobs.fault == Some(Fault::Reset) {
            let mut script = Script::default();
            script.data(b"{\"output\":");
            script.cut();
            return with_request_id((json_type, script.into_body(flight)).into_response(), seq);
        }
        drop(flight);
        return with_request_id(Json(out.message()).into_response(), seq);
    }
    let script = stream_script(&knobs, &out);
    let resp = (
        [(header::CONTENT_TYPE, EVENT_STREAM)],
        script.into_body(flight),
    )
        .into_response();
    with_request_id(resp, seq)
}

/// `POST /model/{modelId}/count-tokens`: the input tokens a Converse request (its `messages` and
/// `system`) or an InvokeModel body (Claude's: Anthropic's Messages body) would be charged.
pub async fn count_tokens(
    State(s): State<Arc<Shared>>,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = Route::ConverseCountTokens;
    let (_flight, seq, model) = match begin_signed(&s, route, version, &uri, &headers, &body) {
        Ok(begun) => begun,
        Err(refused) => return *refused,
    };
    match count_input(model, &body) {
        Ok(n) => with_request_id(Json(json!({ "inputTokens": n })).into_response(), seq),
        Err(e) => e.into_response(seq),
    }
}

fn count_input(model: Result<String, ApiError>, body: &[u8]) -> Result<u64, ApiError> {
    let model = model?;
    // the service counts for foundation models only
    if model.contains(":inference-profile/") || GEOS.iter().any(|g| model.starts_with(g)) {
        return Err(invalid(
            "The provided model identifier is invalid. Count tokens takes a foundation model id.",
        ));
    }
    let req = parse_body(body)?;
    let input = object(&req, "", &["input"])?;
    let Some(input) = input.get("input").filter(|i| !i.is_null()) else {
        return Err(invalid("1 validation error detected: Value null at 'input' failed to satisfy constraint: Member must not be null"));
    };
    match union(
        input,
        "input",
        "CountTokensInput",
        &["converse", "invokeModel"],
    )? {
        ("converse", c) => {
            let c = object(c, "input.converse", &["messages", "system"])?;
            let mut converse = serde_json::Map::new();
            for k in ["messages", "system"] {
                if let Some(v) = c.get(k) {
                    converse.insert(k.to_string(), v.clone());
                }
            }
            validate(&Value::Object(converse)).map(|r| r.input_tokens)
        }
        (_, i) => {
            let i = object(i, "input.invokeModel", &["body"])?;
            let text = i.get("body").and_then(Value::as_str).ok_or_else(|| {
                invalid("1 validation error detected: Value at 'input.invokeModel.body' failed to satisfy constraint: Member must not be null")
            })?;
            if !model.contains("anthropic.") {
                return Err(invalid("This model doesn't support counting tokens for InvokeModel bodies in this simulator."));
            }
            let body: Value = serde_json::from_str(text)
                .map_err(|_| invalid("The provided request body is not valid JSON."))?;
            if body.get("anthropic_version").and_then(Value::as_str) != Some("bedrock-2023-05-31") {
                return Err(invalid(
                    "anthropic_version: Input should be 'bedrock-2023-05-31'",
                ));
            }
            crate::anthropic::input_tokens_of(&body, &model).map_err(invalid)
        }
    }
}

/// `POST /model/{modelId}/invoke` for Bedrock's embedding models, each in its vendor's body:
/// Titan Text Embeddings G1 and V2 and Titan Multimodal Embeddings (one `inputText` a call;
/// `{"embedding", "inputTextTokenCount"}`), Cohere Embed v3 and v4 (up to 96 `texts` and a
/// required `input_type`; `{"embeddings": [[...]]}` or, with `embedding_types` (v4 always),
/// `{"embeddings": {"float": [[...]]}}`). Other models' InvokeModel bodies are not simulated (a
/// 400 says so). Vectors as OpenAI's route makes them; the input tokens also in
/// `X-Amzn-Bedrock-Input-Token-Count`, as Bedrock sends them for every model.
pub async fn invoke(
    State(s): State<Arc<Shared>>,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = Route::InvokeModel;
    let (_flight, seq, model) = match begin_signed(&s, route, version, &uri, &headers, &body) {
        Ok(begun) => begun,
        Err(refused) => return *refused,
    };
    match embed(model, &body).await {
        Ok((answer, tokens)) => {
            let mut r = Json(answer).into_response();
            r.headers_mut().insert(
                "x-amzn-bedrock-input-token-count",
                HeaderValue::from(tokens),
            );
            with_request_id(r, seq)
        }
        Err(e) => e.into_response(seq),
    }
}

/// Cross-region inference profiles' prefixes (`us.anthropic...`).
const GEOS: [&str; 8] = [
    "us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au.", "ca.",
];

#[derive(Clone, Copy, PartialEq)]
enum Embedder {
    TitanV1,
    TitanV2,
    TitanImage,
    CohereV3,
    CohereV4,
}

/// What an embeddings body asks for.
struct EmbedAsk {
    texts: Vec<String>,
    dims: usize,
    /// Cohere's `embeddings_by_type` answer (`{"float": [...]}`) rather than a list.
    by_type: bool,
}

/// Bedrock's words for a value outside a field's choices.
fn not_an_option(path: &str, v: impl std::fmt::Display) -> ApiError {
    invalid(format!(
        "Malformed input request: {path}: {v} is not a valid enum value, please reformat your input and try again."
    ))
}

/// A size field: its default when absent, else one of `sizes`.
fn size(v: Option<&Value>, sizes: &[u64], default: usize, path: &str) -> Result<usize, ApiError> {
    match v {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|d| sizes.contains(d))
            .map(|d| d as usize)
            .ok_or_else(|| not_an_option(path, v)),
    }
}

/// A Titan body: one `inputText`, and the model's own size field.
fn titan_ask(e: Embedder, req: &Value) -> Result<EmbedAsk, ApiError> {
    let allowed: &[&str] = match e {
        Embedder::TitanV1 => &["inputText"],
        Embedder::TitanV2 => &["inputText", "dimensions", "normalize", "embeddingTypes"],
        _ => &["inputText", "inputImage", "embeddingConfig"],
    };
    let o = object(req, "", allowed)?;
    let text = match o.get("inputText") {
        None | Some(Value::Null) => return Err(required("inputText")),
        Some(Value::String(t)) if t.is_empty() => {
            return Err(invalid("Malformed input request: #/inputText: expected minLength: 1, actual: 0, please reformat your input and try again."))
        }
        Some(Value::String(t)) => t.clone(),
        Some(_) => return Err(wrong_type("#/inputText", "a string")),
    };
    let dims = match e {
        Embedder::TitanV1 => 1536,
        Embedder::TitanV2 => size(o.get("dimensions"), &[256, 512, 1024], 1024, "#/dimensions")?,
        _ => size(
            o.get("embeddingConfig")
                .and_then(|c| c.get("outputEmbeddingLength")),
            &[256, 384, 1024],
            1024,
            "#/embeddingConfig/outputEmbeddingLength",
        )?,
    };
    Ok(EmbedAsk {
        texts: vec![text],
        dims,
        by_type: false,
    })
}

/// A Cohere body: up to 96 `texts` (v3: of 2,048 characters at most), a required `input_type`,
/// v4's `output_dimension`, float `embedding_types` only.
fn cohere_ask(e: Embedder, req: &Value) -> Result<EmbedAsk, ApiError> {
    let v3 = e == Embedder::CohereV3;
    let allowed: &[&str] = if v3 {
        &[
            "texts",
            "images",
            "input_type",
            "truncate",
            "embedding_types",
        ]
    } else {
        &[
            "texts",
            "images",
            "inputs",
            "input_type",
            "truncate",
            "embedding_types",
            "output_dimension",
            "max_tokens",
        ]
    };
    let o = object(req, "", allowed)?;
    match o.get("input_type").and_then(Value::as_str) {
        Some("search_document" | "search_query" | "classification" | "clustering") => {}
        Some(other) => return Err(not_an_option("#/input_type", other)),
        None => return Err(invalid("Malformed input request: #: required key [input_type] not found, please reformat your input and try again.")),
    }
    let Some(items) = o.get("texts").and_then(Value::as_array) else {
        return Err(wrong_type("#/texts", "an array of strings"));
    };
    if items.is_empty() || items.len() > 96 {
        return Err(invalid(format!("Malformed input request: #/texts: expected between 1 and 96 items, actual: {}, please reformat your input and try again.", items.len())));
    }
    let texts = items
        .iter()
        .enumerate()
        .map(|(i, t)| match t.as_str() {
            Some(t) if v3 && t.chars().count() > 2048 => Err(invalid(format!("Malformed input request: #/texts/{i}: expected maxLength: 2048, actual: {}, please reformat your input and try again.", t.chars().count()))),
            Some(t) => Ok(t.to_string()),
            None => Err(wrong_type(&format!("#/texts/{i}"), "a string")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let dims = if v3 {
        1024
    } else {
        size(
            o.get("output_dimension"),
            &[256, 512, 1024, 1536],
            1536,
            "#/output_dimension",
        )?
    };
    let by_type =
        match o.get("embedding_types") {
            None => !v3,
            Some(t) if t == &json!(["float"]) => true,
            Some(_) => return Err(invalid(
                "tollway-mock simulates float embeddings only (`embedding_types: [\"float\"]`).",
            )),
        };
    Ok(EmbedAsk {
        texts,
        dims,
        by_type,
    })
}

async fn embed(model: Result<String, ApiError>, body: &[u8]) -> Result<(Value, u64), ApiError> {
    let model = model?;
    let base = base_model(&model);
    let id = GEOS
        .iter()
        .find_map(|g| base.strip_prefix(g))
        .unwrap_or(base);
    let families = [
        ("amazon.titan-embed-text-v1", Embedder::TitanV1),
        ("amazon.titan-embed-text-v2:0", Embedder::TitanV2),
        ("amazon.titan-embed-image-v1", Embedder::TitanImage),
        ("cohere.embed-english-v3", Embedder::CohereV3),
        ("cohere.embed-multilingual-v3", Embedder::CohereV3),
        ("cohere.embed-v4:0", Embedder::CohereV4),
    ];
    let Some(e) = families.iter().find_map(|(m, e)| (id == *m).then_some(*e)) else {
        return Err(invalid(format!(
            "tollway-mock simulates InvokeModel for embedding models only, not `{id}`."
        )));
    };
    let req = parse_body(body)?;
    let ask = match e {
        Embedder::CohereV3 | Embedder::CohereV4 => cohere_ask(e, &req)?,
        _ => titan_ask(e, &req)?,
    };
    let knobs = Knobs::from_request(&model, ask.texts.last().map(String::as_str));
    match &knobs.fault {
        Some(Fault::Status(code)) => return Err(fault_error(*code)),
        Some(Fault::Hang) => gen::hang().await,
        _ => {}
    }
    gen::answer_delay(&knobs, 0).await;
    let texts = ask.texts;
    let tokens: u64 = texts.iter().map(|t| gen::text_tokens(t)).sum();
    let vectors: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| crate::openai::embedding(t, ask.dims))
        .collect();
    let answer = match e {
        Embedder::TitanV1 => json!({"embedding": vectors[0], "inputTextTokenCount": tokens}),
        Embedder::TitanV2 => json!({"embedding": vectors[0], "inputTextTokenCount": tokens,
                                    "embeddingsByType": {"float": vectors[0]}}),
        Embedder::TitanImage => {
            json!({"embedding": vectors[0], "inputTextTokenCount": tokens, "message": null})
        }
        Embedder::CohereV3 | Embedder::CohereV4 => {
            let seq = texts.iter().map(|t| t.len() as u64).sum::<u64>();
            let (embeddings, kind) = if ask.by_type {
                (json!({ "float": vectors }), "embeddings_by_type")
            } else {
                (json!(vectors), "embeddings_floats")
            };
            json!({"id": request_id(seq), "embeddings": embeddings, "response_type": kind,
                   "texts": texts})
        }
    };
    Ok((answer, tokens))
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(invalid(
            "Malformed input request, please reformat your input and try again.",
        )),
    }
}

// ---- validation ----

/// The body fields of a Converse request (the model id is in the path, never the body).
const REQUEST_FIELDS: [&str; 12] = [
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "additionalModelRequestFields",
    "additionalModelResponseFieldPaths",
    "guardrailConfig",
    "promptVariables",
    "requestMetadata",
    "performanceConfig",
    "serviceTier",
    "outputConfig",
];

/// The members of the `ContentBlock` union.
const CONTENT_MEMBERS: [&str; 11] = [
    "text",
    "image",
    "document",
    "video",
    "audio",
    "toolUse",
    "toolResult",
    "guardContent",
    "cachePoint",
    "reasoningContent",
    "citationsContent",
];

/// The part of a Converse request the mock acts on, after validation.
struct ConverseReq<'a> {
    last_user_text: Option<String>,
    tool_results: Option<String>,
    tools: Vec<ToolDef<'a>>,
    forced: Forced<'a>,
    stop: Vec<String>,
    max_tokens: Option<u64>,
    input_tokens: u64,
    /// The request marks a cache point: usage reports the cache fields.
    cache_point: bool,
}

/// `v` as an object whose keys are all in `allowed`.
fn object<'a>(
    v: &'a Value,
    path: &str,
    allowed: &[&str],
) -> Result<&'a Map<String, Value>, ApiError> {
    let o = v.as_object().ok_or_else(|| wrong_type(path, "an object"))?;
    if let Some(k) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
        let at = if path.is_empty() {
            String::new()
        } else {
            format!(" at {path}")
        };
        return Err(invalid(format!(
            "Malformed input request: extraneous key [{k}] is not permitted{at}, please reformat your input and try again."
        )));
    }
    Ok(o)
}

/// The one member set in a union (`what`) at `path`.
fn union<'a>(
    v: &'a Value,
    path: &str,
    what: &str,
    members: &[&str],
) -> Result<(&'a str, &'a Value), ApiError> {
    let o = object(v, path, members)?;
    let mut set = o.iter().filter(|(_, v)| !v.is_null());
    match (set.next(), set.next()) {
        (Some((k, v)), None) => Ok((k.as_str(), v)),
        (first, _) => Err(invalid(format!(
            "The {what} at {path} must set exactly one of its members ({}), but {} set.",
            members.join(", "),
            if first.is_none() {
                "none is"
            } else {
                "several are"
            }
        ))),
    }
}

fn string<'a>(o: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a str, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Err(required(&format!("{path}.{key}"))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(wrong_type(&format!("{path}.{key}"), "a string")),
    }
}

fn array<'a>(v: Option<&'a Value>, path: &str) -> Result<&'a [Value], ApiError> {
    match v {
        None | Some(Value::Null) => Err(required(path)),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(wrong_type(path, "an array")),
    }
}

fn check_cache_point(v: &Value, path: &str) -> Result<(), ApiError> {
    let o = object(v, path, &["type", "ttl"])?;
    match string(o, "type", path)? {
        "default" => Ok(()),
        t => Err(constraint(
            t,
            &format!("{path}.type"),
            "satisfy enum value set: [default]",
        )),
    }
}

/// A `{format, source: {bytes | s3Location}}` block (images, documents, videos).
fn check_media(v: &Value, path: &str, formats: &[&str]) -> Result<(), ApiError> {
    let o = object(
        v,
        path,
        &["format", "source", "name", "context", "citations"],
    )?;
    let format = string(o, "format", path)?;
    if !formats.contains(&format) {
        return Err(constraint(
            format,
            &format!("{path}.format"),
            &format!("satisfy enum value set: [{}]", formats.join(", ")),
        ));
    }
    let source = o
        .get("source")
        .ok_or_else(|| required(&format!("{path}.source")))?;
    let sp = format!("{path}.source");
    let (kind, data) = union(
        source,
        &sp,
        "source",
        &["bytes", "s3Location", "text", "content"],
    )?;
    if kind == "bytes" {
        let b64 = data.as_str().filter(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
        });
        if b64.is_none() {
            return Err(wrong_type(&format!("{sp}.bytes"), "base64-encoded bytes"));
        }
    }
    Ok(())
}

const IMAGE_FORMATS: [&str; 4] = ["png", "jpeg", "gif", "webp"];

/// Text and token estimate of a `toolResult`'s content.
fn tool_result(v: &Value, path: &str) -> Result<(String, u64), ApiError> {
    let o = object(v, path, &["toolUseId", "content", "status", "type"])?;
    string(o, "toolUseId", path)?;
    if let Some(status) = o.get("status").filter(|s| !s.is_null()) {
        if !matches!(status.as_str(), Some("success" | "error")) {
            return Err(constraint(
                status,
                &format!("{path}.status"),
                "satisfy enum value set: [success, error]",
            ));
        }
    }
    let mut text = String::new();
    let mut tokens = 0;
    for (k, b) in array(o.get("content"), &format!("{path}.content"))?
        .iter()
        .enumerate()
    {
        let bp = format!("{path}.content.{k}");
        let members = ["text", "json", "image", "document", "video", "searchResult"];
        let piece = match union(b, &bp, "ToolResultContentBlock", &members)? {
            ("text", t) => t
                .as_str()
                .ok_or_else(|| wrong_type(&format!("{bp}.text"), "a string"))?
                .to_string(),
            ("json", j) => j.to_string(),
            ("image", i) => {
                check_media(i, &format!("{bp}.image"), &IMAGE_FORMATS)?;
                tokens += gen::IMAGE_TOKENS;
                continue;
            }
            _ => {
                tokens += gen::IMAGE_TOKENS;
                continue;
            }
        };
        tokens += gen::text_tokens(&piece);
        text.push_str(&piece);
    }
    Ok((text, tokens))
}

/// Tokens of a `reasoningContent` block.
fn reasoning(v: &Value, path: &str) -> Result<u64, ApiError> {
    match union(
        v,
        path,
        "ReasoningContentBlock",
        &["reasoningText", "redactedContent"],
    )? {
        ("reasoningText", t) => {
            let p = format!("{path}.reasoningText");
            let o = object(t, &p, &["text", "signature"])?;
            let text = string(o, "text", &p)?;
            if o.get("signature").is_some_and(|s| !s.is_string()) {
                return Err(wrong_type(&format!("{p}.signature"), "a string"));
            }
            Ok(gen::text_tokens(text))
        }
        _ => Ok(0),
    }
}

/// The tool a request forces, as [`gen::choose_calls`] takes it.
type Forced<'a> = Option<Option<&'a str>>;

/// The tools offered, the forced choice if any, and the tools' token estimate.
fn tool_config(v: &Value) -> Result<(Vec<ToolDef<'_>>, Forced<'_>, u64), ApiError> {
    let o = object(v, "toolConfig", &["tools", "toolChoice"])?;
    let list = array(o.get("tools"), "toolConfig.tools")?;
    if list.is_empty() {
        return Err(constraint(
            "[]",
            "toolConfig.tools",
            "have length greater than or equal to 1",
        ));
    }
    let mut tools = Vec::new();
    let mut tokens = 0;
    for (i, t) in list.iter().enumerate() {
        let p = format!("toolConfig.tools.{i}");
        let (kind, spec) = union(t, &p, "Tool", &["toolSpec", "cachePoint", "systemTool"])?;
        let p = format!("{p}.{kind}");
        match kind {
            "cachePoint" => check_cache_point(spec, &p)?,
            "toolSpec" => {
                let s = object(spec, &p, &["name", "description", "inputSchema", "strict"])?;
                let name = string(s, "name", &p)?;
                let ok = !name.is_empty()
                    && name.len() <= 64
                    && name
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
                if !ok {
                    return Err(constraint(
                        name,
                        &format!("{p}.name"),
                        "satisfy regular expression pattern: [a-zA-Z0-9_-]+",
                    ));
                }
                let sp = format!("{p}.inputSchema");
                let schema = s.get("inputSchema").ok_or_else(|| required(&sp))?;
                let (_, schema) = union(schema, &sp, "ToolInputSchema", &["json"])?;
                if !schema.is_object() {
                    return Err(wrong_type(&format!("{sp}.json"), "an object"));
                }
                tokens += gen::text_tokens(name)
                    + s.get("description")
                        .and_then(Value::as_str)
                        .map_or(0, gen::text_tokens)
                    + gen::text_tokens(&schema.to_string());
                tools.push(ToolDef {
                    name,
                    schema: Some(schema),
                });
            }
            _ => {}
        }
    }
    let forced = match o.get("toolChoice").filter(|c| !c.is_null()) {
        None => None,
        Some(c) => match union(
            c,
            "toolConfig.toolChoice",
            "ToolChoice",
            &["auto", "any", "tool"],
        )? {
            ("any", _) => Some(None),
            ("tool", t) => {
                let p = "toolConfig.toolChoice.tool";
                Some(Some(string(object(t, p, &["name"])?, "name", p)?))
            }
            _ => None,
        },
    };
    Ok((tools, forced, tokens))
}

/// `outputConfig`: structured output, `{textFormat: {type: json_schema, structure: {jsonSchema:
/// {schema, name?, description?}}}}`, the schema a string holding a JSON object.
fn output_config(v: &Value) -> Result<(), ApiError> {
    let o = object(v, "outputConfig", &["textFormat"])?;
    let Some(f) = o.get("textFormat").filter(|f| !f.is_null()) else {
        return Ok(());
    };
    let p = "outputConfig.textFormat";
    let f = object(f, p, &["type", "structure"])?;
    match string(f, "type", p)? {
        "json_schema" => {}
        t => {
            return Err(constraint(
                t,
                &format!("{p}.type"),
                "satisfy enum value set: [json_schema]",
            ))
        }
    }
    let structure = f
        .get("structure")
        .ok_or_else(|| required(&format!("{p}.structure")))?;
    let sp = format!("{p}.structure");
    let (_, def) = union(structure, &sp, "OutputFormatStructure", &["jsonSchema"])?;
    let dp = format!("{sp}.jsonSchema");
    let def = object(def, &dp, &["schema", "name", "description"])?;
    let schema = string(def, "schema", &dp)?;
    match serde_json::from_str::<Value>(schema) {
        Ok(Value::Object(_)) => Ok(()),
        _ => Err(invalid(format!(
            "{dp}.schema: the JSON schema is not a valid JSON object."
        ))),
    }
}

/// `inferenceConfig`: the max tokens and the stop sequences.
fn inference_config(v: &Value) -> Result<(Option<u64>, Vec<String>), ApiError> {
    let p = "inferenceConfig";
    let o = object(v, p, &["maxTokens", "temperature", "topP", "stopSequences"])?;
    let max_tokens = match o.get("maxTokens").filter(|m| !m.is_null()) {
        None => None,
        Some(m) => match m.as_u64() {
            Some(n) if n >= 1 => Some(n),
            _ if m.is_number() => {
                return Err(constraint(
                    m,
                    "inferenceConfig.maxTokens",
                    "have value greater than or equal to 1",
                ))
            }
            _ => return Err(wrong_type("inferenceConfig.maxTokens", "an integer")),
        },
    };
    for key in ["temperature", "topP"] {
        if let Some(x) = o.get(key).filter(|x| !x.is_null()) {
            match x.as_f64() {
                Some(f) if (0.0..=1.0).contains(&f) => {}
                Some(_) => {
                    return Err(constraint(
                        x,
                        &format!("{p}.{key}"),
                        "have value less than or equal to 1",
                    ))
                }
                None => return Err(wrong_type(&format!("{p}.{key}"), "a number")),
            }
        }
    }
    let mut stop = Vec::new();
    if let Some(s) = o.get("stopSequences").filter(|s| !s.is_null()) {
        for (i, seq) in array(Some(s), "inferenceConfig.stopSequences")?
            .iter()
            .enumerate()
        {
            let seq = seq
                .as_str()
                .ok_or_else(|| wrong_type(&format!("{p}.stopSequences.{i}"), "a string"))?;
            stop.push(seq.to_string());
        }
    }
    Ok((max_tokens, stop))
}

fn validate(req: &Value) -> Result<ConverseReq<'_>, ApiError> {
    let top = object(req, "", &REQUEST_FIELDS)?;
    let mut input_tokens = 0;
    let mut cache_point = false;
    if let Some(system) = top.get("system").filter(|s| !s.is_null()) {
        for (i, b) in array(Some(system), "system")?.iter().enumerate() {
            let p = format!("system.{i}");
            match union(
                b,
                &p,
                "SystemContentBlock",
                &["text", "cachePoint", "guardContent"],
            )? {
                ("text", t) => {
                    let t = t
                        .as_str()
                        .ok_or_else(|| wrong_type(&format!("{p}.text"), "a string"))?;
                    input_tokens += gen::text_tokens(t);
                }
                ("cachePoint", c) => {
                    check_cache_point(c, &format!("{p}.cachePoint"))?;
                    cache_point = true;
                }
                _ => {}
            }
        }
    }
    let messages = array(top.get("messages"), "messages")?;
    if messages.is_empty() {
        return Err(invalid(
            "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
        ));
    }
    let mut prev_role = None;
    let mut last_user_text = None;
    let mut tool_results = None;
    let mut uses_tools = false;
    for (i, m) in messages.iter().enumerate() {
        let p = format!("messages.{i}");
        let o = object(m, &p, &["role", "content"])?;
        let role = match o.get("role") {
            None | Some(Value::Null) => return Err(required(&format!("{p}.role"))),
            Some(Value::String(r)) if r == "user" || r == "assistant" => r.as_str(),
            Some(r) => {
                return Err(constraint(
                    r.as_str().unwrap_or_default(),
                    &format!("{p}.role"),
                    "satisfy enum value set: [user, assistant]",
                ))
            }
        };
        if i == 0 && role != "user" {
            return Err(invalid("A conversation must start with a user message. Try again with a conversation that starts with a user message."));
        }
        if prev_role == Some(role) {
            return Err(invalid("A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again."));
        }
        prev_role = Some(role);
        input_tokens += 4;
        let blocks = array(o.get("content"), &format!("{p}.content"))?;
        if blocks.is_empty() {
            return Err(invalid(format!("The content field in the Message object at {p} is empty. Add a ContentBlock object to the content field and try again.")));
        }
        let mut text = String::new();
        let mut results: Option<String> = None;
        for (j, b) in blocks.iter().enumerate() {
            let bp = format!("{p}.content.{j}");
            let (kind, v) = union(b, &bp, "ContentBlock", &CONTENT_MEMBERS)?;
            let misplaced = match kind {
                "toolUse" | "reasoningContent" => role != "assistant",
                "toolResult" => role != "user",
                _ => false,
            };
            if misplaced {
                return Err(invalid(format!(
                    "{bp}: a {kind} block is not allowed in a {role} message."
                )));
            }
            let bp = format!("{bp}.{kind}");
            match kind {
                "text" => {
                    let t = v.as_str().ok_or_else(|| wrong_type(&bp, "a string"))?;
                    if t.trim().is_empty() {
                        return Err(invalid(format!("The text field in the ContentBlock object at {p}.content.{j} is blank. Add text to the text field, and try again.")));
                    }
                    input_tokens += gen::text_tokens(t);
                    text.push_str(t);
                }
                "image" => {
                    check_media(v, &bp, &IMAGE_FORMATS)?;
                    input_tokens += gen::IMAGE_TOKENS;
                }
                "toolUse" => {
                    let u = object(v, &bp, &["toolUseId", "name", "input", "type"])?;
                    string(u, "toolUseId", &bp)?;
                    let name = string(u, "name", &bp)?;
                    let input = u
                        .get("input")
                        .ok_or_else(|| required(&format!("{bp}.input")))?;
                    input_tokens += gen::text_tokens(name) + gen::text_tokens(&input.to_string());
                    uses_tools = true;
                }
                "toolResult" => {
                    let (t, n) = tool_result(v, &bp)?;
                    input_tokens += n;
                    let r = results.get_or_insert_with(String::new);
                    if !r.is_empty() {
                        r.push('\n');
                    }
                    r.push_str(&t);
                    uses_tools = true;
                }
                "reasoningContent" => input_tokens += reasoning(v, &bp)?,
                "cachePoint" => {
                    check_cache_point(v, &bp)?;
                    cache_point = true;
                }
                _ => input_tokens += gen::IMAGE_TOKENS,
            }
        }
        if role == "user" {
            last_user_text = Some(text);
            tool_results = results;
        } else {
            tool_results = None;
        }
    }
    let (max_tokens, stop) = match top.get("inferenceConfig").filter(|c| !c.is_null()) {
        Some(c) => inference_config(c)?,
        None => (None, Vec::new()),
    };
    if let Some(c) = top.get("outputConfig").filter(|c| !c.is_null()) {
        output_config(c)?;
    }
    let (tools, forced) = match top.get("toolConfig").filter(|c| !c.is_null()) {
        Some(c) => {
            let (tools, forced, n) = tool_config(c)?;
            input_tokens += n;
            (tools, forced)
        }
        None if uses_tools => {
            return Err(invalid(
                "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
            ))
        }
        None => (Vec::new(), None),
    };
    Ok(ConverseReq {
        last_user_text,
        tool_results,
        tools,
        forced,
        stop,
        max_tokens,
        input_tokens,
        cache_point,
    })
}

// ---- answers ----

/// The answer with what both shapes report about it.
struct Outcome {
    answer: Answer,
    stop_reason: &'static str,
    usage: Value,
    latency_ms: u64,
}

impl Outcome {
    fn new(r: &ConverseReq<'_>, knobs: &Knobs, answer: Answer) -> Outcome {
        let output = answer.output_tokens();
        // inputTokens excludes the cached tokens; totalTokens counts everything.
        let mut usage = json!({
            "inputTokens": r.input_tokens,
            "outputTokens": output,
            "totalTokens": r.input_tokens + output + knobs.cached + knobs.cache_write,
        });
        if r.cache_point || knobs.cached > 0 || knobs.cache_write > 0 {
            usage["cacheReadInputTokens"] = knobs.cached.into();
            usage["cacheWriteInputTokens"] = knobs.cache_write.into();
        }
        let latency = knobs.ttft + knobs.tpt.saturating_mul(output.min(u32::MAX as u64) as u32);
        Outcome {
            stop_reason: match answer.finish {
                Finish::Stop => "end_turn",
                Finish::Length => "max_tokens",
                Finish::ToolCalls => "tool_use",
                Finish::StopSequence(_) => "stop_sequence",
            },
            answer,
            usage,
            latency_ms: latency.as_millis().min(u64::MAX as u128) as u64,
        }
    }

    /// The Converse response body.
    fn message(&self) -> Value {
        let a = &self.answer;
        let mut content = Vec::new();
        if !a.thinking.is_empty() {
            content.push(json!({"reasoningContent": {"reasoningText": {
                "text": a.thinking.concat(), "signature": a.signature}}}));
        }
        if !a.pieces.is_empty() {
            content.push(json!({"text": a.pieces.concat()}));
        }
        for c in &a.calls {
            content.push(json!({"toolUse": {"toolUseId": c.id, "name": c.name, "input": c.input}}));
        }
        json!({
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": self.stop_reason,
            "usage": self.usage,
            "metrics": {"latencyMs": self.latency_ms},
        })
    }
}

// ---- the event stream ----

/// One event-stream message: prelude (total length, headers length, their CRC32), headers
/// (each: name length, name, type 7 = string, value length, value), payload, CRC32 of all
/// before it.
fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = 12 + h.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Bedrock pads each event's JSON with a `p` field of varying length.
const PAD: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// Writes events into a [`Script`], numbering them for the padding.
struct Events {
    script: Script,
    n: usize,
}

impl Events {
    fn event(&mut self, kind: &str, mut payload: Value) {
        self.n += 1;
        payload["p"] = Value::from(&PAD[..1 + (self.n * 17 + 5) % (PAD.len() - 1)]);
        let body = serde_json::to_vec(&payload).unwrap_or_default();
        self.script.data(&frame(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            &body,
        ));
    }

    fn delta(&mut self, index: usize, delta: Value) {
        self.event(
            "contentBlockDelta",
            json!({"contentBlockIndex": index, "delta": delta}),
        );
    }

    fn stop(&mut self, index: usize) {
        self.event("contentBlockStop", json!({"contentBlockIndex": index}));
    }

    /// An in-stream fault: an exception message, a frame with a wrong CRC, or a cut.
    fn fault(&mut self, fault: Fault) {
        match fault {
            Fault::Malformed => {
                let mut f = frame(
                    &[
                        (":event-type", "contentBlockDelta"),
                        (":content-type", "application/json"),
                        (":message-type", "event"),
                    ],
                    br#"{"contentBlockIndex":0,"delta":{"text":"broken"},"p":"abc"}"#,
                );
                if let Some(last) = f.last_mut() {
                    *last ^= 0xff;
                }
                self.script.data(&f);
            }
            Fault::Reset => self.script.cut(),
            _ => self.script.data(&frame(
                &[
                    (":exception-type", "throttlingException"),
                    (":content-type", "application/json"),
                    (":message-type", "exception"),
                ],
                br#"{"message":"Too many requests, please wait before trying again."}"#,
            )),
        }
    }
}

/// `messageStart`, each block's deltas (tool blocks opened by `contentBlockStart`, text and
/// reasoning by their first delta) and `contentBlockStop`, `messageStop`, `metadata`.
fn stream_script(knobs: &Knobs, out: &Outcome) -> Script {
    let mut ev = Events {
        script: Script::default(),
        n: 0,
    };
    let mut gate = Gate::new(knobs);
    let a = &out.answer;
    ev.event("messageStart", json!({"role": "assistant"}));
    macro_rules! token {
        () => {
            if let Some(f) = gate.token(&mut ev.script) {
                ev.fault(f);
                return ev.script;
            }
        };
    }
    let mut index = 0;
    if !a.thinking.is_empty() {
        for piece in &a.thinking {
            token!();
            ev.delta(index, json!({"reasoningContent": {"text": piece}}));
        }
        ev.delta(
            index,
            json!({"reasoningContent": {"signature": a.signature}}),
        );
        ev.stop(index);
        index += 1;
    }
    if !a.pieces.is_empty() {
        for piece in &a.pieces {
            token!();
            ev.delta(index, json!({"text": piece}));
        }
        ev.stop(index);
        index += 1;
    }
    for call in &a.calls {
        ev.event(
            "contentBlockStart",
            json!({"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": call.id, "name": call.name}}}),
        );
        for piece in gen::json_pieces(&call.arguments) {
            token!();
            ev.delta(index, json!({"toolUse": {"input": piece}}));
        }
        ev.stop(index);
        index += 1;
    }
    if let Some(f) = gate.end(&mut ev.script) {
        ev.fault(f);
        return ev.script;
    }
    ev.event("messageStop", json!({"stopReason": out.stop_reason}));
    ev.event(
        "metadata",
        json!({"usage": out.usage, "metrics": {"latencyMs": out.latency_ms}}),
    );
    ev.script
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The event-stream encoding's published test vectors: a frame without headers, and with a
    /// `content-type` header.
    #[test]
    fn frames_match_the_reference_encoding() {
        let payload = br#"{"foo": "bar"}"#;
        let f = frame(&[], payload);
        assert_eq!(&f[..12], &[0, 0, 0, 30, 0, 0, 0, 0, 186, 242, 246, 138]);
        assert_eq!(&f[12..26], payload);
        assert_eq!(&f[26..], &[174, 114, 88, 228]);
        let f = frame(&[("content-type", "application/json")], payload);
        assert_eq!(&f[..12], &[0, 0, 0, 62, 0, 0, 0, 32, 64, 93, 249, 70]);
        assert_eq!(f[12], 12);
        assert_eq!(&f[13..25], b"content-type");
        assert_eq!(&f[25..28], &[7, 0, 16]);
        assert_eq!(&f[f.len() - 4..], &[111, 162, 191, 59]);
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let id = request_id(7);
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert_ne!(id, request_id(8));
    }
}
