//! Amazon Bedrock's Converse API, outbound only (Tollway calls Bedrock; no client speaks it to
//! Tollway): `POST /model/{modelId}/converse` and `/converse-stream`. One request shape for every
//! model Bedrock hosts (Anthropic's Claude, Amazon Nova, Meta Llama, Mistral ...).
//!
//! | canonical | Converse |
//! | --- | --- |
//! | system messages | `system: [{text}]` |
//! | user / assistant / tool turns | `messages: [{role, content: [ContentBlock]}]`, tool results folded into user turns, consecutive turns of one role merged |
//! | text with `cache_control` | the text, then `{cachePoint: {type: default}}` |
//! | base64 image | `{image: {format, source: {bytes}}}`; an `s3://` URL: `{source: {s3Location: {uri}}}`; other URLs are refused (Bedrock does not fetch them) |
//! | tool call / result | `{toolUse: {toolUseId, name, input}}` / `{toolResult: {toolUseId, content, status}}` |
//! | thinking with a signature | `{reasoningContent: {reasoningText: {text, signature}}}` |
//! | `max_tokens`, `temperature`, `top_p`, `stop` | `inferenceConfig` |
//! | `top_k`, Anthropic `thinking`, the client's Anthropic betas | `additionalModelRequestFields` (`top_k`, `thinking`, `anthropic_beta`), as Bedrock's model parameters spell them |
//! | tools, `tool_choice` | `toolConfig` (`auto`, `any`, `tool`; `none` sends no `toolChoice`, and no tools unless the conversation already holds tool blocks, which Bedrock requires `toolConfig` for) |
//! | `response_format` `json_schema` | `outputConfig.textFormat` (`type: json_schema`, `structure.jsonSchema`: the schema as a string, its name and description) |
//!
//! Embeddings go through InvokeModel (`POST /model/{modelId}/invoke`) in each embedding
//! model's own body: Amazon Titan's and Cohere Embed's ([`Embedder`]).
//!
//! A `json_schema` response format becomes `outputConfig.textFormat` (the schema as a JSON string);
//! schema-less JSON mode has no Converse field and is refused with a 400 naming it. The answer
//! carries no id: the `x-amzn-requestid` header is the answer's id.

use std::time::Duration;

use serde_json::{json, Map, Value};
use tollway_core::{
    ApiFamily, ChatRequest, ChatResponse, ErrorKind, ImageSource, Label, Part, ProviderError,
    ResponseFormat, Role, StopReason, StreamEvent, ToolCall, ToolChoice, Usage,
};

use crate::anthropic::{bad_arguments, is_off, HARMLESS_FROM_OPENAI};
use crate::eventstream::Frame;
use crate::gemini::is_gemini_signature;
use crate::openai::fallback_message;

/// The path of a model's Converse endpoint (`stream`: ConverseStream). The model id is one path
/// segment, so everything outside the unreserved characters is percent-encoded: `:` in
/// `anthropic.claude-sonnet-4-5-20250929-v1:0`, `/` in an inference profile's ARN.
pub fn model_path(model: &str, stream: bool) -> String {
    let mut out = String::with_capacity(model.len() + 24);
    out.push_str("/model/");
    out.push_str(&crate::path_segment(model));
    out.push_str(if stream {
        "/converse-stream"
    } else {
        "/converse"
    });
    out
}

// ------------------------------------------------------------------------------------------------
// Token counts (CountTokens)
// ------------------------------------------------------------------------------------------------

/// The model CountTokens is asked for: Bedrock counts for foundation models, so a cross-region
/// inference profile (`us.anthropic.claude-...`, `global.anthropic...`) counts as its foundation
/// model (`anthropic.claude-...`); `None` for an inference profile's ARN, which names no model
/// (the count is then done locally).
pub fn count_model(model: &str) -> Option<&str> {
    if model.starts_with("arn:") {
        return (!model.contains("inference-profile/")).then_some(model);
    }
    const GEOS: [&str; 8] = [
        "us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au.", "ca.",
    ];
    Some(
        GEOS.iter()
            .find_map(|g| model.strip_prefix(g))
            .unwrap_or(model),
    )
}

/// The path of a model's CountTokens endpoint.
pub fn count_path(model: &str) -> String {
    format!("/model/{}/count-tokens", crate::path_segment(model))
}

/// The body of a CountTokens request for `model`: a Claude model's as an InvokeModel body
/// (Anthropic's Messages body, with `anthropic_version: bedrock-2023-05-31`), which counts the
/// tools too; any other model's as Converse's `messages` and `system`.
pub fn encode_count_tokens_request<'l>(
    req: &ChatRequest,
    model: &str,
    label: impl Into<Label<'l>>,
) -> Result<Vec<u8>, ProviderError> {
    let label = label.into();
    let write_err =
        |e: serde_json::Error| ProviderError::internal(format!("could not write the count: {e}"));
    let input = if model.contains("anthropic.") {
        let target = tollway_core::Target {
            model,
            stream: false,
        };
        let bytes = crate::anthropic::encode_request_as(req, target, label)?;
        let mut body: Map<String, Value> = serde_json::from_slice(&bytes).map_err(write_err)?;
        body.remove("model");
        body.remove("stream");
        body.insert("anthropic_version".into(), json!("bedrock-2023-05-31"));
        if !req.betas.is_empty() {
            body.insert("anthropic_beta".into(), json!(req.betas));
        }
        let text = serde_json::to_string(&body).map_err(write_err)?;
        json!({"invokeModel": {"body": text}})
    } else {
        let bytes = encode_request_as(req, label)?;
        let body: Map<String, Value> = serde_json::from_slice(&bytes).map_err(write_err)?;
        let mut converse = Map::new();
        for k in ["messages", "system"] {
            if let Some(v) = body.get(k) {
                converse.insert(k.into(), v.clone());
            }
        }
        json!({ "converse": converse })
    };
    serde_json::to_vec(&json!({ "input": input })).map_err(write_err)
}

/// CountTokens' answer, `{"inputTokens": N}`.
pub fn decode_count_tokens_response(bytes: &[u8]) -> Result<u64, ProviderError> {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v.get("inputTokens").and_then(Value::as_u64))
        .ok_or_else(|| bad_answer("the provider's token count has no `inputTokens`"))
}

// ------------------------------------------------------------------------------------------------
// Embeddings (InvokeModel)
// ------------------------------------------------------------------------------------------------

/// An embedding model Bedrock hosts, by the InvokeModel body it takes (each vendor's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedder {
    /// Titan Text Embeddings G1 (`amazon.titan-embed-text-v1`): one text per call, 1,536
    /// dimensions, no options.
    TitanV1,
    /// Titan Text Embeddings V2 (`amazon.titan-embed-text-v2:0`): one text per call,
    /// `dimensions` 256, 512 or 1,024.
    TitanV2,
    /// Titan Multimodal Embeddings G1 (`amazon.titan-embed-image-v1`) given text: one text per
    /// call, `embeddingConfig.outputEmbeddingLength` 256, 384 or 1,024.
    TitanMultimodal,
    /// Cohere Embed v3 (`cohere.embed-english-v3`, `cohere.embed-multilingual-v3`): up to 96
    /// texts per call, 1,024 dimensions, an `input_type`.
    CohereV3,
    /// Cohere Embed v4 (`cohere.embed-v4:0`): up to 96 texts per call, `output_dimension` 256,
    /// 512, 1,024 or 1,536, an `input_type`.
    CohereV4,
}

impl Embedder {
    /// The embedder a model id names: a foundation model's id, a cross-region profile's
    /// (`us.cohere.embed-v4:0`) or a foundation model's ARN. `None`: no embedding model this
    /// module writes for (a chat model, or an application profile's ARN, which names none).
    pub fn of(model: &str) -> Option<Self> {
        let id = model.rsplit('/').next().unwrap_or(model);
        let id = count_model(id).unwrap_or(id);
        let family = [
            ("amazon.titan-embed-text-v1", Embedder::TitanV1),
            ("amazon.titan-embed-text-v2", Embedder::TitanV2),
            ("amazon.titan-embed-image-v1", Embedder::TitanMultimodal),
            ("cohere.embed-english-v3", Embedder::CohereV3),
            ("cohere.embed-multilingual-v3", Embedder::CohereV3),
            ("cohere.embed-v4", Embedder::CohereV4),
        ];
        family
            .into_iter()
            .find_map(|(prefix, e)| id.starts_with(prefix).then_some(e))
    }

    /// How many texts one call takes.
    pub fn batch(self) -> usize {
        match self {
            Embedder::TitanV1 | Embedder::TitanV2 | Embedder::TitanMultimodal => 1,
            Embedder::CohereV3 | Embedder::CohereV4 => 96,
        }
    }

    /// The sizes the model can return, the first its default.
    fn sizes(self) -> &'static [u32] {
        match self {
            Embedder::TitanV1 => &[1536],
            Embedder::TitanV2 => &[1024, 512, 256],
            Embedder::TitanMultimodal => &[1024, 384, 256],
            Embedder::CohereV3 => &[1024],
            Embedder::CohereV4 => &[1536, 1024, 512, 256],
        }
    }
}

/// The path of a model's InvokeModel endpoint.
pub fn invoke_path(model: &str) -> String {
    format!("/model/{}/invoke", crate::path_segment(model))
}

/// InvokeModel bodies for an embeddings request to `e`, one per call ([`Embedder::batch`] texts
/// each), in input order. A `dimensions` the model cannot return is refused here, by name,
/// before any call. Cohere's models need an `input_type`: `search_document` unless the request
/// says otherwise.
pub fn encode_embeddings_requests<'l>(
    e: Embedder,
    req: &tollway_core::EmbeddingsRequest,
    label: impl Into<Label<'l>>,
) -> Result<Vec<Vec<u8>>, ProviderError> {
    if let Some(d) = req.dimensions {
        let sizes = e.sizes();
        if !sizes.contains(&d) {
            let mut sorted = sizes.to_vec();
            sorted.sort_unstable();
            let list: Vec<_> = sorted.iter().map(u32::to_string).collect();
            return Err(ProviderError::invalid(format!(
                "model {} returns {} dimensions, not {d}",
                label.into(),
                list.join(", ")
            ))
            .with_param("dimensions"));
        }
    }
    // the model's default size is not sent: the older models take no size at all
    let dims = req.dimensions.filter(|d| *d != e.sizes()[0]);
    let input_type = req
        .input_type
        .unwrap_or(tollway_core::InputType::SearchDocument)
        .as_str();
    let write =
        |v: Value| serde_json::to_vec(&v).map_err(|e| ProviderError::internal(e.to_string()));
    req.input
        .chunks(e.batch())
        .map(|texts| match e {
            Embedder::TitanV1 => write(json!({"inputText": texts[0]})),
            Embedder::TitanV2 => {
                let mut body = json!({"inputText": texts[0]});
                if let Some(d) = dims {
                    body["dimensions"] = json!(d);
                }
                write(body)
            }
            Embedder::TitanMultimodal => {
                let mut body = json!({"inputText": texts[0]});
                if let Some(d) = dims {
                    body["embeddingConfig"] = json!({"outputEmbeddingLength": d});
                }
                write(body)
            }
            Embedder::CohereV3 | Embedder::CohereV4 => {
                let mut body = json!({"texts": texts, "input_type": input_type});
                if e == Embedder::CohereV4 {
                    // v4's answer is by type whatever is asked; asking says which
                    body["embedding_types"] = json!(["float"]);
                }
                if let Some(d) = dims {
                    body["output_dimension"] = json!(d);
                }
                write(body)
            }
        })
        .collect()
}

/// The answer to one call of [`encode_embeddings_requests`]: its vectors (as many as `texts`)
/// and its input tokens: Titan's `inputTextTokenCount`, or for Cohere (whose answer on Bedrock
/// carries none) the `X-Amzn-Bedrock-Input-Token-Count` header, `header_tokens`.
pub fn decode_embeddings_response(
    e: Embedder,
    bytes: &[u8],
    texts: usize,
    header_tokens: Option<u64>,
) -> Result<(Vec<Vec<f32>>, u64), ProviderError> {
    #[derive(serde::Deserialize)]
    struct Titan {
        embedding: Vec<f32>,
        #[serde(rename = "inputTextTokenCount")]
        tokens: Option<u64>,
    }
    #[derive(serde::Deserialize)]
    struct Cohere {
        embeddings: Vectors,
    }
    /// `embeddings_floats` (a list of vectors) or `embeddings_by_type` (`{"float": [...]}`).
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Vectors {
        Floats(Vec<Vec<f32>>),
        ByType { float: Vec<Vec<f32>> },
    }
    let (data, tokens) = match e {
        Embedder::TitanV1 | Embedder::TitanV2 | Embedder::TitanMultimodal => {
            let t: Titan = crate::json::parse_upstream_as(bytes, "an embeddings answer")?;
            (vec![t.embedding], t.tokens.or(header_tokens))
        }
        Embedder::CohereV3 | Embedder::CohereV4 => {
            let c: Cohere = crate::json::parse_upstream_as(bytes, "an embeddings answer")?;
            let data = match c.embeddings {
                Vectors::Floats(v) | Vectors::ByType { float: v } => v,
            };
            (data, header_tokens)
        }
    };
    if data.len() != texts {
        return Err(bad_answer(format!(
            "the provider sent {} embeddings for {texts} inputs",
            data.len()
        )));
    }
    if data.iter().any(Vec::is_empty) {
        return Err(bad_answer("the provider sent an empty embedding"));
    }
    Ok((data, tokens.unwrap_or(0)))
}

// ------------------------------------------------------------------------------------------------
// Outbound request
// ------------------------------------------------------------------------------------------------

/// Fields of an Anthropic request that Bedrock takes among a Claude model's
/// `additionalModelRequestFields`, under the same name.
const ANTHROPIC_MODEL_FIELDS: &[&str] = &["thinking"];
/// Fields of an Anthropic request a Bedrock target can do without.
const HARMLESS_FROM_ANTHROPIC: &[&str] = &["metadata", "service_tier"];

fn image_format(media_type: &str) -> Option<&'static str> {
    Some(match media_type.to_ascii_lowercase().as_str() {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        _ => return None,
    })
}

fn image_block(src: &ImageSource, label: Label<'_>) -> Result<Value, ProviderError> {
    match src {
        ImageSource::Base64 { media_type, data } => {
            let format = image_format(media_type).ok_or_else(|| {
                ProviderError::unsupported(&format!("an image of type `{media_type}`"), label)
            })?;
            Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
        }
        ImageSource::Url(url) if url.starts_with("s3://") => {
            let ext = url.rsplit('.').next().unwrap_or_default();
            let format = image_format(&format!("image/{ext}")).ok_or_else(|| {
                ProviderError::invalid(format!(
                    "the image `{url}` needs a .png, .jpeg, .jpg, .gif or .webp name for {label}"
                ))
            })?;
            Ok(json!({"image": {"format": format, "source": {"s3Location": {"uri": url}}}}))
        }
        ImageSource::Url(_) => Err(ProviderError::unsupported(
            "an image by URL (send it as base64 data, or an s3:// URL)",
            label,
        )),
    }
}

/// Appends the Converse blocks of one canonical part to `out`.
fn encode_part(p: &Part, label: Label<'_>, out: &mut Vec<Value>) -> Result<(), ProviderError> {
    match p {
        Part::Text {
            text,
            cache_control,
        } => {
            // Bedrock rejects blank text blocks
            if !text.trim().is_empty() {
                out.push(json!({ "text": text }));
            }
            if cache_control.is_some() {
                out.push(json!({"cachePoint": {"type": "default"}}));
            }
        }
        Part::Image(src) => out.push(image_block(src, label)?),
        Part::ToolCall(c) => out.push(json!({"toolUse": {
            "toolUseId": c.id,
            "name": c.name,
            "input": tool_input(c, label)?,
        }})),
        Part::ToolResult(r) => {
            let mut content = Vec::with_capacity(r.content.len());
            for p in &r.content {
                match p {
                    Part::Text { text, .. } if !text.trim().is_empty() => {
                        content.push(json!({ "text": text }))
                    }
                    Part::Text { .. } => {}
                    Part::Image(src) => content.push(image_block(src, label)?),
                    _ => {
                        return Err(ProviderError::unsupported(
                            "tool results other than text and images",
                            label,
                        ))
                    }
                }
            }
            let mut block = json!({"toolUseId": r.tool_call_id, "content": content});
            if r.is_error {
                block["status"] = json!("error");
            }
            out.push(json!({ "toolResult": block }));
        }
        Part::Thinking { text, signature } => {
            // reasoning without a signature came from another vendor: Bedrock cannot verify it,
            // and the model does not need it
            if let Some(sig) = signature.as_deref().filter(|s| !is_gemini_signature(s)) {
                out.push(json!({"reasoningContent": {"reasoningText": {
                    "text": text, "signature": sig
                }}}));
            }
        }
    }
    Ok(())
}

/// A tool call's arguments as the object `input` wants (`{}` when empty).
fn tool_input(c: &ToolCall, label: Label<'_>) -> Result<Value, ProviderError> {
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

/// Encodes a canonical request as a Converse body. The model and whether the answer streams are
/// in the path ([`model_path`]), not the body. `label` names the target in errors.
pub fn encode_request_as<'l>(
    req: &ChatRequest,
    label: impl Into<Label<'l>>,
) -> Result<Vec<u8>, ProviderError> {
    let label = label.into();
    let mut system: Vec<Value> = Vec::new();
    let mut messages: Vec<(&str, Vec<Value>)> = Vec::new();
    for m in &req.messages {
        if m.role == Role::System {
            for p in &m.content {
                match p {
                    Part::Text { .. } => encode_part(p, label, &mut system)?,
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
            encode_part(p, label, &mut blocks)?;
        }
        if blocks.is_empty() {
            continue;
        }
        // Bedrock wants alternating turns: consecutive turns of one role are merged
        match messages.last_mut() {
            Some((prev, content)) if *prev == role => content.extend(blocks),
            _ => messages.push((role, blocks)),
        }
    }
    let mut body = Map::new();
    body.insert(
        "messages".into(),
        Value::Array(
            messages
                .into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
        ),
    );
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    let mut inference = Map::new();
    if let Some(n) = req.max_tokens {
        inference.insert("maxTokens".into(), json!(n));
    }
    if let Some(t) = req.temperature {
        inference.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        inference.insert("topP".into(), json!(p));
    }
    if !req.stop.is_empty() {
        inference.insert("stopSequences".into(), json!(req.stop));
    }
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    let mut additional = Map::new();
    if let Some(k) = req.top_k {
        additional.insert("top_k".into(), json!(k));
    }
    if !req.betas.is_empty() {
        additional.insert("anthropic_beta".into(), json!(req.betas));
    }
    match &req.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            return Err(ProviderError::unsupported(
                "response_format json_object (send a json_schema instead)",
                label,
            )
            .with_param("response_format"))
        }
        Some(ResponseFormat::JsonSchema {
            name,
            description,
            schema,
            ..
        }) => {
            // Converse takes the schema as a JSON string
            let mut def = Map::new();
            def.insert("schema".into(), Value::String(schema.to_string()));
            if !name.is_empty() {
                def.insert("name".into(), json!(name));
            }
            if let Some(d) = description {
                def.insert("description".into(), json!(d));
            }
            body.insert(
                "outputConfig".into(),
                json!({"textFormat": {"type": "json_schema", "structure": {"jsonSchema": def}}}),
            );
        }
    }
    for (k, v) in &req.extra.fields {
        let (harmless, model_field) = match req.extra.family {
            ApiFamily::OpenAi => (
                HARMLESS_FROM_OPENAI.contains(&k.as_str()) || is_off(v),
                false,
            ),
            ApiFamily::Anthropic => (
                HARMLESS_FROM_ANTHROPIC.contains(&k.as_str()),
                ANTHROPIC_MODEL_FIELDS.contains(&k.as_str()),
            ),
        };
        if model_field {
            additional.insert(k.clone(), v.clone());
        } else if !harmless {
            return Err(crate::unsupported_field(req.extra.family, k, label));
        }
    }
    if !additional.is_empty() {
        body.insert(
            "additionalModelRequestFields".into(),
            Value::Object(additional),
        );
    }
    if let Some(tools) = tool_config(req) {
        body.insert("toolConfig".into(), tools);
    }
    serde_json::to_vec(&Value::Object(body))
        .map_err(|e| ProviderError::internal(format!("could not write the Bedrock request: {e}")))
}

/// `toolConfig`, when the request has tools to offer.
fn tool_config(req: &ChatRequest) -> Option<Value> {
    if req.tools.is_empty() {
        return None;
    }
    let choice = match &req.tool_choice {
        None | Some(ToolChoice::Auto) => Some(json!({"auto": {}})),
        Some(ToolChoice::Required) => Some(json!({"any": {}})),
        Some(ToolChoice::Tool(name)) => Some(json!({"tool": {"name": name}})),
        // Converse has no "none": no tools are offered, unless the conversation's own tool
        // blocks need `toolConfig` to be there (then the tools go without a `toolChoice`)
        Some(ToolChoice::None) if !req.uses_tools_in_messages() => return None,
        Some(ToolChoice::None) => None,
    };
    let tools: Vec<Value> = req
        .tools
        .iter()
        .map(|t| {
            let mut spec = Map::new();
            spec.insert("name".into(), json!(t.name));
            if let Some(d) = &t.description {
                spec.insert("description".into(), json!(d));
            }
            spec.insert("inputSchema".into(), json!({ "json": t.parameters }));
            json!({ "toolSpec": spec })
        })
        .collect();
    let mut config = json!({ "tools": tools });
    if let Some(c) = choice {
        config["toolChoice"] = c;
    }
    Some(config)
}

// ------------------------------------------------------------------------------------------------
// Answers
// ------------------------------------------------------------------------------------------------

fn bad_answer(msg: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorKind::InvalidResponse, msg)
}

fn stop_reason(s: &str) -> StopReason {
    match s {
        "end_turn" => StopReason::EndTurn,
        "tool_use" => StopReason::ToolUse,
        "max_tokens" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence,
        "guardrail_intervened" | "content_filtered" => StopReason::ContentFilter,
        other => StopReason::Other(other.to_string()),
    }
}

fn usage(u: Option<&Value>) -> Usage {
    let n = |k: &str| {
        u.and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Usage {
        input_tokens: n("inputTokens"),
        output_tokens: n("outputTokens"),
        cache_read_tokens: n("cacheReadInputTokens"),
        cache_write_tokens: n("cacheWriteInputTokens"),
        reasoning_tokens: 0,
    }
}

/// One content block of an answer; `None` for blocks with no canonical part (redacted
/// reasoning, citations ...).
fn block_part(b: &Value) -> Result<Option<Part>, ProviderError> {
    if let Some(t) = b.get("text") {
        let text = t
            .as_str()
            .ok_or_else(|| bad_answer("the provider's text block is not a string"))?;
        return Ok(Some(Part::text(text)));
    }
    if let Some(u) = b.get("toolUse") {
        let field = |k: &str| {
            u.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| bad_answer(format!("the provider's toolUse block has no `{k}`")))
        };
        let input = u.get("input").cloned().unwrap_or_else(|| json!({}));
        return Ok(Some(Part::ToolCall(ToolCall {
            id: field("toolUseId")?,
            name: field("name")?,
            arguments: input.to_string(),
        })));
    }
    if let Some(r) = b.pointer("/reasoningContent/reasoningText") {
        return Ok(Some(Part::Thinking {
            text: r
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            signature: r
                .get("signature")
                .and_then(Value::as_str)
                .map(str::to_string),
        }));
    }
    Ok(None)
}

/// Decodes a Converse answer. `id`: the answer's id (the `x-amzn-requestid` header); `model`:
/// the model id the request was sent to (the answer does not name it).
pub fn decode_response(bytes: &[u8], id: &str, model: &str) -> Result<ChatResponse, ProviderError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| bad_answer(format!("the provider's answer is not valid JSON: {e}")))?;
    let blocks = v
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_answer("the provider's answer has no `output.message.content`"))?;
    let mut content = Vec::with_capacity(blocks.len());
    for b in blocks {
        if let Some(p) = block_part(b)? {
            content.push(p);
        }
    }
    let reason = v
        .get("stopReason")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_answer("the provider's answer has no `stopReason`"))?;
    Ok(ChatResponse {
        id: answer_id(id),
        model: model.to_string(),
        content,
        stop_reason: stop_reason(reason),
        stop_sequence: None,
        usage: usage(v.get("usage")),
        created: crate::now_unix(),
    })
}

fn answer_id(request_id: &str) -> String {
    if request_id.is_empty() {
        "bedrock-answer".to_string()
    } else {
        request_id.to_string()
    }
}

/// Classifies a Bedrock error answer: its status, the `x-amzn-errortype` header (`Type` or
/// `Type:namespace`) and the body (`{"message": ...}`).
pub fn decode_error(
    status: u16,
    error_type: Option<&str>,
    body: &[u8],
    retry_after: Option<Duration>,
) -> ProviderError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("message").or_else(|| v.get("Message")))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| fallback_message(status, body));
    let kind = error_type
        .map(|t| t.split(':').next().unwrap_or(t))
        .unwrap_or_default();
    let e = ProviderError::from_upstream_status(status, message, retry_after);
    let lower = e.message.to_ascii_lowercase();
    let reclassified = match kind {
        "ThrottlingException" | "ServiceQuotaExceededException" | "ModelNotReadyException" => {
            Some(ErrorKind::RateLimited)
        }
        "ServiceUnavailableException" => Some(ErrorKind::Overloaded),
        "ModelTimeoutException" => Some(ErrorKind::Timeout),
        "ValidationException"
            if lower.contains("too long")
                || lower.contains("too many input tokens")
                || lower.contains("context window")
                || lower.contains("context length") =>
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

/// Turns a ConverseStream answer's event stream messages into canonical events.
#[derive(Debug)]
pub struct StreamDecoder {
    id: String,
    model: String,
    started: bool,
    /// `messageStop`'s reason, held until the usage (`metadata`, which follows it) is out.
    stop: Option<StopReason>,
    finished: bool,
}

impl StreamDecoder {
    /// `id`: the answer's id (the `x-amzn-requestid` header); `model`: the model id asked.
    pub fn new(id: &str, model: &str) -> Self {
        StreamDecoder {
            id: answer_id(id),
            model: model.to_string(),
            started: false,
            stop: None,
            finished: false,
        }
    }

    fn start(&mut self, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: self.id.clone(),
                model: self.model.clone(),
                usage: Usage::default(),
            });
        }
    }

    fn finish_into(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some(reason) = self.stop.take() {
            self.finished = true;
            out.push(StreamEvent::Finish {
                stop_reason: reason,
                stop_sequence: None,
            });
        }
    }

    /// Decodes one message into `out`.
    pub fn feed_into(
        &mut self,
        frame: &Frame,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), ProviderError> {
        if frame.message_type != "event" {
            return Err(stream_error(frame));
        }
        let v: Value = serde_json::from_slice(&frame.payload).map_err(|e| {
            bad_answer(format!(
                "the provider's `{}` event is not valid JSON: {e}",
                frame.event_type
            ))
        })?;
        let index = || {
            v.get("contentBlockIndex")
                .and_then(Value::as_u64)
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| {
                    bad_answer(format!(
                        "the provider's `{}` event has no contentBlockIndex",
                        frame.event_type
                    ))
                })
        };
        match frame.event_type.as_str() {
            "messageStart" => self.start(out),
            "contentBlockStart" => {
                self.start(out);
                if let Some(t) = v.pointer("/start/toolUse") {
                    let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or_default();
                    out.push(StreamEvent::ToolCallStart {
                        index: index()?,
                        id: s("toolUseId").to_string(),
                        name: s("name").to_string(),
                    });
                }
            }
            "contentBlockDelta" => {
                self.start(out);
                let index = index()?;
                let Some(d) = v.get("delta") else {
                    return Err(bad_answer(
                        "the provider's contentBlockDelta event has no delta",
                    ));
                };
                let s = |p: &str| d.pointer(p).and_then(Value::as_str);
                if let Some(text) = s("/text") {
                    out.push(StreamEvent::TextDelta {
                        index,
                        text: text.to_string(),
                    });
                } else if let Some(args) = s("/toolUse/input") {
                    out.push(StreamEvent::ToolCallDelta {
                        index,
                        arguments: args.to_string(),
                    });
                } else if let Some(text) = s("/reasoningContent/text") {
                    out.push(StreamEvent::ThinkingDelta {
                        index,
                        text: text.to_string(),
                    });
                } else if let Some(sig) = s("/reasoningContent/signature") {
                    out.push(StreamEvent::ThinkingSignature {
                        index,
                        signature: sig.to_string(),
                    });
                }
                // other deltas (redacted reasoning, citations) have no canonical event
            }
            "contentBlockStop" => out.push(StreamEvent::BlockStop { index: index()? }),
            "messageStop" => {
                self.start(out);
                let reason = v.get("stopReason").and_then(Value::as_str).ok_or_else(|| {
                    bad_answer("the provider's messageStop event has no stopReason")
                })?;
                self.stop = Some(stop_reason(reason));
            }
            "metadata" => {
                self.start(out);
                out.push(StreamEvent::Usage(usage(v.get("usage"))));
                self.finish_into(out);
            }
            // events added to the API later
            _ => {}
        }
        Ok(())
    }

    /// The end of the stream: the answer must have been stopped.
    pub fn finish(&mut self) -> Result<Vec<StreamEvent>, ProviderError> {
        let mut out = Vec::new();
        self.finish_into(&mut out);
        if self.finished {
            Ok(out)
        } else {
            Err(bad_answer(
                "the provider's stream ended before the answer was complete",
            ))
        }
    }
}

/// An exception (or error) message in the stream.
fn stream_error(frame: &Frame) -> ProviderError {
    let message = serde_json::from_slice::<Value>(&frame.payload)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .or_else(|| (!frame.error_message.is_empty()).then(|| frame.error_message.clone()))
        .unwrap_or_else(|| "the provider reported an error mid-stream".to_string());
    let kind = match frame.exception_type.as_str() {
        "throttlingException" | "serviceQuotaExceededException" => ErrorKind::RateLimited,
        "serviceUnavailableException" => ErrorKind::Overloaded,
        "validationException" => ErrorKind::InvalidRequest,
        "modelTimeoutException" => ErrorKind::Timeout,
        _ => ErrorKind::Upstream,
    };
    let e = ProviderError::new(kind, message);
    if frame.exception_type.is_empty() {
        e
    } else {
        let message = format!("{} ({})", e.message, frame.exception_type);
        ProviderError { message, ..e }
    }
}

#[cfg(test)]
mod tests;
