//! Google's Gemini API (`generateContent`, `streamGenerateContent?alt=sse`), outbound only: the
//! body Google AI Studio (`generativelanguage.googleapis.com`) and Vertex AI
//! (`{location}-aiplatform.googleapis.com`, `publishers/google/models/...`) both take.
//!
//! | canonical | Gemini |
//! | --- | --- |
//! | system messages | `systemInstruction: {parts: [{text}]}` |
//! | user / assistant / tool turns | `contents: [{role: user \| model, parts}]`; tool results are `functionResponse` parts of a user turn; consecutive turns of one role merged |
//! | base64 image | `{inlineData: {mimeType, data}}`; an image URL: `{fileData: {mimeType, fileUri}}` (the type from its extension: Gemini needs it) |
//! | tool call / result | `{functionCall: {name, args}}` / `{functionResponse: {name, response}}` (the name found from the call's id earlier in the conversation; the response is the result when it is a JSON object, else `{"content": text}`, errors `{"error": text}`) |
//! | a Gemini thought signature (see below) | `thoughtSignature` on the function call it came with |
//! | `max_tokens`, `temperature`, `top_p`, `top_k`, `stop` | `generationConfig` (`maxOutputTokens`, `temperature`, `topP`, `topK`, `stopSequences`) |
//! | OpenAI `seed`, `presence_penalty`, `frequency_penalty` | `generationConfig` (`seed`, `presencePenalty`, `frequencyPenalty`) |
//! | OpenAI `reasoning_effort`, Anthropic `thinking` | `generationConfig.thinkingConfig` (`thinkingLevel` for Gemini 3 and later, `thinkingBudget` before; `includeThoughts` with Anthropic's `thinking`) |
//! | tools, `tool_choice` | `tools: [{functionDeclarations: [{name, description, parametersJsonSchema}]}]`, `toolConfig.functionCallingConfig` (`AUTO`, `NONE`, `ANY`, `ANY` + `allowedFunctionNames`) |
//! | `response_format` `json_object` / `json_schema` | `responseMimeType: application/json` (+ `responseJsonSchema`) |
//!
//! **Thought signatures.** Gemini signs its reasoning and, from Gemini 3 on, refuses a
//! conversation whose earlier function calls lost their `thoughtSignature`. A signature becomes a
//! canonical thinking part (empty text, the signature behind [`SIGNATURE_PREFIX`]) just before
//! the function call it came with, so an Anthropic client sees a signed thinking block and sends
//! it back; Anthropic and Bedrock targets leave such parts out ([`is_gemini_signature`]). A
//! client that cannot carry them (OpenAI's chat API has no place for them) loses them; for
//! Gemini 3 and later the first function call of each model turn that has none then carries
//! Google's documented `skip_thought_signature_validator`.
//!
//! Usage: Gemini's `promptTokenCount` includes cached tokens (`cachedContentTokenCount`) and its
//! `candidatesTokenCount` excludes thinking (`thoughtsTokenCount`); both are normalised.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Value};
use tollway_core::{
    ApiFamily, ChatRequest, ChatResponse, ErrorKind, ImageSource, Label, Part, ProviderError,
    ResponseFormat, Role, StopReason, StreamEvent, ToolCall, ToolChoice, Usage,
};

use crate::anthropic::{bad_arguments, is_off, HARMLESS_FROM_OPENAI};
use crate::json::{self, lax};
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

fn image_part<'a>(
    src: &'a ImageSource,
    label: Label<'_>,
) -> Result<req_out::Part<'a>, ProviderError> {
    match src {
        ImageSource::Base64 { media_type, data } => Ok(req_out::Part::InlineData {
            inline_data: req_out::Blob {
                mime_type: media_type,
                data,
            },
        }),
        ImageSource::Url(url) => {
            let mime = mime_from_url(url).ok_or_else(|| {
                ProviderError::invalid(format!(
                    "the image `{}` needs a .png, .jpeg, .jpg, .gif, .webp, .heic or .heif name \
                     for {label} (Gemini needs its type), or send it as base64 data",
                    url.chars().take(200).collect::<String>()
                ))
            })?;
            Ok(req_out::Part::FileData {
                file_data: req_out::FileData {
                    mime_type: mime,
                    file_uri: url,
                },
            })
        }
    }
}

/// A tool call's arguments as the object `args` wants (`{}` when empty).
fn tool_args(c: &ToolCall, label: Label<'_>) -> Result<Value, ProviderError> {
    let args = c.arguments.trim();
    if args.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(args) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(bad_arguments(c, true, label)),
        Err(_) => Err(bad_arguments(c, false, label)),
    }
}

/// A tool result as the object `functionResponse.response` wants.
fn tool_response(text: String, is_error: bool) -> req_out::Response {
    if is_error {
        return req_out::Response::Error { error: text };
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => req_out::Response::Object(v),
        _ => req_out::Response::Content { content: text },
    }
}

/// A Gemini request body, serialised from fields borrowed from the canonical request: the
/// prompt's text goes straight into the body, never into a `Value` tree. Values are kept only
/// for what is free-form (tool arguments and results, JSON schemas, the other API's numbers
/// passed on as they came).
mod req_out {
    use serde::Serialize;
    use serde_json::Value;

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Body<'a> {
        pub contents: Vec<Content<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub system_instruction: Option<System<'a>>,
        #[serde(skip_serializing_if = "Config::is_empty")]
        pub generation_config: Config<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub tools: Option<[Tools<'a>; 1]>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub tool_config: Option<ToolConfig<'a>>,
    }

    #[derive(Serialize)]
    pub struct Content<'a> {
        pub role: &'static str,
        pub parts: Vec<Part<'a>>,
    }

    #[derive(Serialize)]
    pub struct System<'a> {
        pub parts: Vec<Part<'a>>,
    }

    #[derive(Serialize)]
    #[serde(untagged)]
    pub enum Part<'a> {
        Text {
            text: &'a str,
        },
        #[serde(rename_all = "camelCase")]
        InlineData {
            inline_data: Blob<'a>,
        },
        #[serde(rename_all = "camelCase")]
        FileData {
            file_data: FileData<'a>,
        },
        #[serde(rename_all = "camelCase")]
        FunctionCall {
            function_call: FunctionCall<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            thought_signature: Option<&'a str>,
        },
        #[serde(rename_all = "camelCase")]
        FunctionResponse {
            function_response: FunctionResponse<'a>,
        },
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Blob<'a> {
        pub mime_type: &'a str,
        pub data: &'a str,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct FileData<'a> {
        pub mime_type: &'static str,
        pub file_uri: &'a str,
    }

    #[derive(Serialize)]
    pub struct FunctionCall<'a> {
        pub name: &'a str,
        pub args: Value,
    }

    #[derive(Serialize)]
    pub struct FunctionResponse<'a> {
        pub name: &'a str,
        pub response: Response,
    }

    /// A tool's result: the object it returned, or its text under `content` (`error` for a
    /// failed call).
    #[derive(Serialize)]
    #[serde(untagged)]
    pub enum Response {
        Object(Value),
        Content { content: String },
        Error { error: String },
    }

    #[derive(Serialize, Default)]
    #[serde(rename_all = "camelCase")]
    pub struct Config<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub max_output_tokens: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub temperature: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub top_p: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub top_k: Option<u32>,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        pub stop_sequences: &'a [String],
        #[serde(skip_serializing_if = "Option::is_none")]
        pub response_mime_type: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub response_json_schema: Option<&'a Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub seed: Option<&'a Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub presence_penalty: Option<&'a Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub frequency_penalty: Option<&'a Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub thinking_config: Option<Thinking>,
    }

    impl Config<'_> {
        pub fn is_empty(&self) -> bool {
            let Config {
                max_output_tokens,
                temperature,
                top_p,
                top_k,
                stop_sequences,
                response_mime_type,
                response_json_schema,
                seed,
                presence_penalty,
                frequency_penalty,
                thinking_config,
            } = self;
            max_output_tokens.is_none()
                && temperature.is_none()
                && top_p.is_none()
                && top_k.is_none()
                && stop_sequences.is_empty()
                && response_mime_type.is_none()
                && response_json_schema.is_none()
                && seed.is_none()
                && presence_penalty.is_none()
                && frequency_penalty.is_none()
                && thinking_config.is_none()
        }
    }

    #[derive(Serialize, Default)]
    #[serde(rename_all = "camelCase")]
    pub struct Thinking {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub thinking_level: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub thinking_budget: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub include_thoughts: Option<bool>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Tools<'a> {
        pub function_declarations: Vec<Declaration<'a>>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Declaration<'a> {
        pub name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub description: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub parameters_json_schema: Option<&'a Value>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ToolConfig<'a> {
        pub function_calling_config: Calling<'a>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Calling<'a> {
        pub mode: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub allowed_function_names: Option<[&'a str; 1]>,
    }
}

/// One model turn being written: its parts, and a Gemini signature waiting for the function
/// call it belongs to.
struct Turn<'a> {
    parts: Vec<req_out::Part<'a>>,
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
    let body = request_body(req, gemini_3_or_later(model), label.into())?;
    serde_json::to_vec(&body)
        .map_err(|e| ProviderError::internal(format!("could not write the Gemini request: {e}")))
}

/// The body [`encode_request_as`] writes.
fn request_body<'a>(
    req: &'a ChatRequest,
    gemini_3: bool,
    label: Label<'_>,
) -> Result<req_out::Body<'a>, ProviderError> {
    let mut system: Vec<req_out::Part<'a>> = Vec::new();
    let mut contents: Vec<req_out::Content<'a>> = Vec::new();
    // the function each tool call id names, as the conversation goes (a later call with the same
    // id wins: ids made up for Gemini's id-less calls repeat across turns)
    let mut names: HashMap<&str, &str> = HashMap::new();
    for m in &req.messages {
        if m.role == Role::System {
            for p in &m.content {
                match p {
                    Part::Text { text, .. } if !text.is_empty() => {
                        system.push(req_out::Part::Text { text })
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
                        turn.parts.push(req_out::Part::Text { text });
                    }
                }
                Part::Image(src) => turn.parts.push(image_part(src, label)?),
                Part::ToolCall(c) => {
                    names.insert(&c.id, &c.name);
                    let function_call = req_out::FunctionCall {
                        name: &c.name,
                        args: tool_args(c, label)?,
                    };
                    let signature = match turn.signature.take() {
                        Some(sig) => Some(sig),
                        // Gemini 3 wants the first call of a turn signed
                        None if gemini_3 && !turn.signed => Some(SKIP_SIGNATURE),
                        None => None,
                    };
                    turn.signed |= signature.is_some();
                    turn.parts.push(req_out::Part::FunctionCall {
                        function_call,
                        thought_signature: signature,
                    });
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
                    turn.parts.push(req_out::Part::FunctionResponse {
                        function_response: req_out::FunctionResponse {
                            name,
                            response: tool_response(r.text(), r.is_error),
                        },
                    });
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
            Some(prev) if prev.role == role => prev.parts.extend(turn.parts),
            _ => contents.push(req_out::Content {
                role,
                parts: turn.parts,
            }),
        }
    }
    let mut config = req_out::Config {
        max_output_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        stop_sequences: &req.stop,
        ..req_out::Config::default()
    };
    match &req.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            config.response_mime_type = Some("application/json");
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            config.response_mime_type = Some("application/json");
            config.response_json_schema = Some(schema);
        }
    }
    extra_fields(req, gemini_3, label, &mut config)?;
    let (tools, tool_config) = match tools(req) {
        Some((tools, config)) => (Some(tools), Some(config)),
        None => (None, None),
    };
    Ok(req_out::Body {
        contents,
        system_instruction: (!system.is_empty()).then_some(req_out::System { parts: system }),
        generation_config: config,
        tools,
        tool_config,
    })
}

/// The other API's fields that have a Gemini spelling go into `generationConfig`; harmless ones
/// are dropped; anything else is refused by name.
fn extra_fields<'a>(
    req: &'a ChatRequest,
    gemini_3: bool,
    label: Label<'_>,
    config: &mut req_out::Config<'a>,
) -> Result<(), ProviderError> {
    for (k, v) in &req.extra.fields {
        let handled = match (req.extra.family, k.as_str()) {
            (ApiFamily::OpenAi, "seed") if v.is_i64() || v.is_u64() => {
                config.seed = Some(v);
                true
            }
            (ApiFamily::OpenAi, "presence_penalty") if v.is_number() => {
                config.presence_penalty = Some(v);
                true
            }
            (ApiFamily::OpenAi, "frequency_penalty") if v.is_number() => {
                config.frequency_penalty = Some(v);
                true
            }
            (ApiFamily::OpenAi, "reasoning_effort") => match v.as_str() {
                Some(effort) => {
                    config.thinking_config = Some(thinking_for_effort(effort, gemini_3));
                    true
                }
                None => false,
            },
            (ApiFamily::OpenAi, _) => HARMLESS_FROM_OPENAI.contains(&k.as_str()) || is_off(v),
            (ApiFamily::Anthropic, "thinking") => {
                let budget = v.get("budget_tokens").and_then(Value::as_u64);
                config.thinking_config = Some(match v.get("type").and_then(Value::as_str) {
                    Some("disabled") => req_out::Thinking {
                        thinking_budget: Some(0),
                        ..req_out::Thinking::default()
                    },
                    _ => req_out::Thinking {
                        thinking_budget: budget,
                        include_thoughts: Some(true),
                        ..req_out::Thinking::default()
                    },
                });
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
fn thinking_for_effort(effort: &str, gemini_3: bool) -> req_out::Thinking {
    if gemini_3 {
        let level = match effort {
            "none" | "minimal" => "minimal",
            "low" => "low",
            "medium" => "medium",
            _ => "high",
        };
        return req_out::Thinking {
            thinking_level: Some(level),
            ..req_out::Thinking::default()
        };
    }
    let budget = match effort {
        "none" | "minimal" => 0,
        "low" => 1024,
        "medium" => 8192,
        _ => 24576,
    };
    req_out::Thinking {
        thinking_budget: Some(budget),
        ..req_out::Thinking::default()
    }
}

/// `tools` and `toolConfig`, when the request has tools to offer.
fn tools(req: &ChatRequest) -> Option<([req_out::Tools<'_>; 1], req_out::ToolConfig<'_>)> {
    if req.tools.is_empty() {
        return None;
    }
    let function_declarations = req
        .tools
        .iter()
        .map(|t| req_out::Declaration {
            name: &t.name,
            description: t.description.as_deref(),
            parameters_json_schema: (!is_off(&t.parameters)).then_some(&t.parameters),
        })
        .collect();
    let (mode, allowed_function_names) = match &req.tool_choice {
        None | Some(ToolChoice::Auto) => ("AUTO", None),
        Some(ToolChoice::None) => ("NONE", None),
        Some(ToolChoice::Required) => ("ANY", None),
        Some(ToolChoice::Tool(name)) => ("ANY", Some([name.as_str()])),
    };
    Some((
        [req_out::Tools {
            function_declarations,
        }],
        req_out::ToolConfig {
            function_calling_config: req_out::Calling {
                mode,
                allowed_function_names,
            },
        },
    ))
}

// ------------------------------------------------------------------------------------------------
// Answers
// ------------------------------------------------------------------------------------------------

/// The parts of Gemini answers and stream events Tollway reads, typed and lenient (a field of
/// another type reads as absent, as `Value::as_str` and the like read it), borrowing strings from
/// the body.
mod wire {
    use serde::Deserialize;
    use serde_json::Value;

    use crate::json::lax;
    use crate::scan::{
        scan_bool, scan_count, scan_head, scan_list, scan_obj, scan_str, Scan, Seen,
    };

    /// A `GenerateContentResponse`, as a whole answer.
    #[derive(Deserialize, Default)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct Answer<'a> {
        #[serde(borrow, default)]
        pub candidates: lax::Head<Candidate<'a>>,
        #[serde(rename = "promptFeedback", borrow, default)]
        pub prompt_feedback: lax::Obj<Feedback<'a>>,
        #[serde(rename = "usageMetadata", default)]
        pub usage_metadata: lax::Obj<UsageMetadata>,
        #[serde(rename = "responseId", borrow, default)]
        pub response_id: lax::Str<'a>,
        #[serde(rename = "modelVersion", borrow, default)]
        pub model_version: lax::Str<'a>,
    }

    /// A `GenerateContentResponse` as one event of a stream: the answer's fields, and an error
    /// in its place. Usage there means something even when it is not an object: every event
    /// that has the field reports usage.
    #[derive(Deserialize, Default)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct Event<'a> {
        #[serde(borrow, default)]
        pub candidates: lax::Head<Candidate<'a>>,
        #[serde(rename = "promptFeedback", borrow, default)]
        pub prompt_feedback: lax::Obj<Feedback<'a>>,
        #[serde(rename = "usageMetadata", default)]
        pub usage_metadata: lax::Present<lax::Obj<UsageMetadata>>,
        #[serde(rename = "responseId", borrow, default)]
        pub response_id: lax::Str<'a>,
        #[serde(rename = "modelVersion", borrow, default)]
        pub model_version: lax::Str<'a>,
        #[serde(borrow, default)]
        pub error: lax::Present<lax::Obj<Error<'a>>>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct Candidate<'a> {
        #[serde(borrow, default)]
        pub content: lax::Obj<Content<'a>>,
        #[serde(rename = "finishReason", borrow, default)]
        pub finish_reason: lax::Str<'a>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct Content<'a> {
        #[serde(borrow, default)]
        pub parts: lax::Seq<Part<'a>>,
    }

    /// One part of an answer: text (a thought when `thought` is true), or a function call, each
    /// perhaps with a thought signature. A part that has `text` or `functionCall` must have it
    /// right, so their presence is kept.
    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct Part<'a> {
        #[serde(borrow, default)]
        pub text: lax::Present<lax::Str<'a>>,
        #[serde(default)]
        pub thought: lax::Bool,
        #[serde(rename = "thoughtSignature", borrow, default)]
        pub thought_signature: lax::Str<'a>,
        #[serde(rename = "functionCall", borrow, default)]
        pub function_call: lax::Present<lax::Obj<FunctionCall<'a>>>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct FunctionCall<'a> {
        #[serde(borrow, default)]
        pub name: lax::Str<'a>,
        #[serde(borrow, default)]
        pub id: lax::Str<'a>,
        /// The arguments, free-form: written out again as compact JSON (`null` too).
        #[serde(default)]
        pub args: lax::Present<Value>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct Feedback<'a> {
        #[serde(rename = "blockReason", borrow, default)]
        pub block_reason: lax::Str<'a>,
        #[serde(rename = "blockReasonMessage", borrow, default)]
        pub block_reason_message: lax::Str<'a>,
    }

    #[derive(Deserialize, Default)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct UsageMetadata {
        #[serde(rename = "promptTokenCount", default)]
        pub prompt: lax::Count,
        #[serde(rename = "toolUsePromptTokenCount", default)]
        pub tool_use_prompt: lax::Count,
        #[serde(rename = "cachedContentTokenCount", default)]
        pub cached: lax::Count,
        #[serde(rename = "candidatesTokenCount", default)]
        pub candidates: lax::Count,
        #[serde(rename = "thoughtsTokenCount", default)]
        pub thoughts: lax::Count,
    }

    /// `{"error": {"code", "message", "status"}}`, as an error answer's body or a stream event.
    #[derive(Deserialize)]
    pub struct ErrorBody<'a> {
        #[serde(borrow, default)]
        pub error: lax::Obj<Error<'a>>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Debug, PartialEq))]
    pub struct Error<'a> {
        #[serde(default)]
        pub code: lax::U64,
        #[serde(borrow, default)]
        pub message: lax::Str<'a>,
        #[serde(borrow, default)]
        pub status: lax::Str<'a>,
    }

    impl<'a> Candidate<'a> {
        /// The candidate's parts (none when its content or parts are missing or not what they
        /// should be).
        pub fn parts(&self) -> &[Part<'a>] {
            self.content.0.as_ref().map_or(&[], |c| &c.parts.0)
        }
    }

    // The usual shapes without serde (see `crate::scan`): each `scan` reads what serde reads
    // into the same fields, or gives `None` and serde reads the text.

    impl<'a> Answer<'a> {
        /// The usual answer (text and thought parts, usage, a finish reason); `None` for anything
        /// else (function calls...).
        pub fn scan(text: &'a str) -> Option<Self> {
            let e = scan_response(text, false)?;
            Some(Answer {
                candidates: e.candidates,
                prompt_feedback: e.prompt_feedback,
                usage_metadata: e.usage_metadata.0.unwrap_or_default(),
                response_id: e.response_id,
                model_version: e.model_version,
            })
        }
    }

    impl<'a> Event<'a> {
        /// The usual stream event (text and thought parts, usage, a finish reason); `None` for
        /// anything else (function calls, errors...).
        pub fn scan(text: &'a str) -> Option<Self> {
            scan_response(text, true)
        }
    }

    /// A `GenerateContentResponse` as an event (`event`: with its `error` field, left to serde)
    /// or as an answer (which has none, and skips one as serde does).
    fn scan_response(text: &str, event: bool) -> Option<Event<'_>> {
        let mut s = Scan::new(text);
        let mut e = Event::default();
        let mut seen = Seen::default();
        s.object(|s, key| match key {
            "candidates" => seen.read(0, &mut e.candidates, s, |s| scan_head(s, Candidate::scan)),
            "usageMetadata" => seen.read(1, &mut e.usage_metadata, s, |s| {
                scan_obj(s, UsageMetadata::scan).map(|u| lax::Present(Some(u)))
            }),
            "modelVersion" => seen.read(2, &mut e.model_version, s, scan_str),
            "responseId" => seen.read(3, &mut e.response_id, s, scan_str),
            "promptFeedback" => seen.read(4, &mut e.prompt_feedback, s, |s| {
                scan_obj(s, Feedback::scan)
            }),
            "error" if event => None,
            _ => s.skip(),
        })?;
        s.end()?;
        Some(e)
    }

    impl<'a> Candidate<'a> {
        fn scan(s: &mut Scan<'a>) -> Option<Self> {
            let mut c = Candidate {
                content: lax::Obj(None),
                finish_reason: lax::Str(None),
            };
            let mut seen = Seen::default();
            s.object(|s, key| match key {
                "content" => seen.read(0, &mut c.content, s, |s| scan_obj(s, Content::scan)),
                "finishReason" => seen.read(1, &mut c.finish_reason, s, scan_str),
                _ => s.skip(),
            })?;
            Some(c)
        }
    }

    impl<'a> Content<'a> {
        fn scan(s: &mut Scan<'a>) -> Option<Self> {
            let mut c = Content {
                parts: lax::Seq(Vec::new()),
            };
            let mut seen = Seen::default();
            s.object(|s, key| match key {
                // `lax::Seq`: `null` is no parts; an element that is not an object, serde
                "parts" => seen.read(0, &mut c.parts, s, |s| {
                    scan_list(s, Part::scan).map(|l| lax::Seq(l.0.unwrap_or_default()))
                }),
                _ => s.skip(),
            })?;
            Some(c)
        }
    }

    impl<'a> Part<'a> {
        fn scan(s: &mut Scan<'a>) -> Option<Self> {
            let mut p = Part {
                text: lax::Present(None),
                thought: lax::Bool(None),
                thought_signature: lax::Str(None),
                function_call: lax::Present(None),
            };
            let mut seen = Seen::default();
            s.object(|s, key| match key {
                "text" => seen.read(0, &mut p.text, s, |s| {
                    scan_str(s).map(|t| lax::Present(Some(t)))
                }),
                "thought" => seen.read(1, &mut p.thought, s, scan_bool),
                "thoughtSignature" => seen.read(2, &mut p.thought_signature, s, scan_str),
                // a function call (free-form arguments): serde
                "functionCall" => None,
                _ => s.skip(),
            })?;
            Some(p)
        }
    }

    impl UsageMetadata {
        fn scan(s: &mut Scan<'_>) -> Option<Self> {
            let mut u = UsageMetadata::default();
            let mut seen = Seen::default();
            s.object(|s, key| {
                let (bit, field) = match key {
                    "promptTokenCount" => (0, &mut u.prompt),
                    "candidatesTokenCount" => (1, &mut u.candidates),
                    "thoughtsTokenCount" => (2, &mut u.thoughts),
                    "cachedContentTokenCount" => (3, &mut u.cached),
                    "toolUsePromptTokenCount" => (4, &mut u.tool_use_prompt),
                    _ => return s.skip(),
                };
                seen.read(bit, field, s, scan_count)
            })?;
            Some(u)
        }
    }

    impl<'a> Feedback<'a> {
        fn scan(s: &mut Scan<'a>) -> Option<Self> {
            let mut f = Feedback {
                block_reason: lax::Str(None),
                block_reason_message: lax::Str(None),
            };
            let mut seen = Seen::default();
            s.object(|s, key| {
                let (bit, field) = match key {
                    "blockReason" => (0, &mut f.block_reason),
                    "blockReasonMessage" => (1, &mut f.block_reason_message),
                    _ => return s.skip(),
                };
                seen.read(bit, field, s, scan_str)
            })?;
            Some(f)
        }
    }
}

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

/// Gemini's `usageMetadata` (zeros without one), normalised: cached tokens out of the input,
/// thinking into the output. Sums saturate: two counts near `u64::MAX` (nonsense, but an
/// upstream's to send) must not overflow.
fn usage(u: Option<&wire::UsageMetadata>) -> Usage {
    let Some(u) = u else {
        return Usage::default();
    };
    let cached = u.cached.0;
    let thoughts = u.thoughts.0;
    Usage {
        input_tokens: u
            .prompt
            .0
            .saturating_add(u.tool_use_prompt.0)
            .saturating_sub(cached),
        output_tokens: u.candidates.0.saturating_add(thoughts),
        cache_read_tokens: cached,
        cache_write_tokens: 0,
        reasoning_tokens: thoughts,
    }
}

/// A prompt Gemini refused to answer (`promptFeedback.blockReason`, and no candidates).
fn blocked(feedback: &lax::Obj<wire::Feedback<'_>>, has_candidates: bool) -> Option<ProviderError> {
    let feedback = feedback.0.as_ref()?;
    let reason = feedback.block_reason.as_str()?;
    if has_candidates {
        return None;
    }
    let detail = feedback
        .block_reason_message
        .as_str()
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

fn answer_id(id: &lax::Str<'_>) -> String {
    match id.as_str() {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => "gemini-answer".to_string(),
    }
}

/// A function call's arguments as text: the `args` object as compact JSON, `{}` without one.
fn call_arguments(c: Option<&wire::FunctionCall<'_>>) -> String {
    match c.and_then(|c| c.args.0.as_ref()) {
        Some(args) => args.to_string(),
        None => "{}".to_string(),
    }
}

/// A function call's name (an error without one) and its id (made up when Gemini gives none).
fn call_name_and_id<'c>(
    c: Option<&'c wire::FunctionCall<'_>>,
    answer_id: &str,
    calls: usize,
) -> Result<(&'c str, String), ProviderError> {
    let name = c
        .and_then(|c| c.name.as_str())
        .ok_or_else(|| bad_answer("the provider's functionCall has no `name`"))?;
    let id = match c.and_then(|c| c.id.as_str()) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => call_id(answer_id, calls),
    };
    Ok((name, id))
}

/// A part's text, when it has some (an error when it is not a string).
fn part_text<'p>(p: &'p wire::Part<'_>) -> Result<Option<&'p str>, ProviderError> {
    match &p.text.0 {
        None => Ok(None),
        Some(t) => t
            .as_str()
            .map(Some)
            .ok_or_else(|| bad_answer("the provider's text part is not a string")),
    }
}

/// Decodes a `GenerateContentResponse`. `model`: the model asked (when the answer names no
/// `modelVersion`).
pub fn decode_response(bytes: &[u8], model: &str) -> Result<ChatResponse, ProviderError> {
    const WHAT: &str = "an answer";
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        // not UTF-8, so not JSON either: serde_json's Value names where (a typed reading would
        // skip a bad byte in a field it does not read)
        Err(_) => {
            return Err(json::parse_upstream_as::<Value>(bytes, WHAT)
                .err()
                .unwrap_or_else(|| bad_answer("the provider's answer is not UTF-8")))
        }
    };
    // the usual shape without serde; anything else (and every error) through serde, where any
    // JSON value is an answer: one that is not an object has no candidates
    let v = match wire::Answer::scan(text) {
        Some(v) => v,
        None => json::parse_upstream_str_as::<lax::Obj<wire::Answer<'_>>>(text, WHAT)?
            .0
            .unwrap_or_default(),
    };
    if let Some(e) = blocked(&v.prompt_feedback, v.candidates.0.is_some()) {
        return Err(e);
    }
    let candidate = v
        .candidates
        .0
        .ok_or_else(|| bad_answer("the provider's answer has no candidates"))?;
    let candidate = candidate.0.as_ref();
    let id = answer_id(&v.response_id);
    let mut content = Vec::new();
    let mut calls = 0;
    for p in candidate.map_or(&[][..], wire::Candidate::parts) {
        decode_part(p, &id, &mut calls, &mut content)?;
    }
    let reason = candidate
        .and_then(|c| c.finish_reason.as_str())
        .unwrap_or("STOP");
    Ok(ChatResponse {
        model: v.model_version.as_str().unwrap_or(model).to_string(),
        id,
        content,
        stop_reason: stop_reason(reason, calls > 0),
        stop_sequence: None,
        usage: usage(v.usage_metadata.0.as_ref()),
        created: crate::now_unix(),
    })
}

/// One answer part as canonical parts (a signed function call brings its signature first).
fn decode_part(
    p: &wire::Part<'_>,
    answer_id: &str,
    calls: &mut usize,
    out: &mut Vec<Part>,
) -> Result<(), ProviderError> {
    let signature = p
        .thought_signature
        .as_str()
        .map(|s| format!("{SIGNATURE_PREFIX}{s}"));
    if let Some(c) = &p.function_call.0 {
        let c = c.0.as_ref();
        let (name, id) = call_name_and_id(c, answer_id, *calls)?;
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
            arguments: call_arguments(c),
        }));
        return Ok(());
    }
    if let Some(text) = part_text(p)? {
        if p.thought.0 == Some(true) {
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
    // not UTF-8: not JSON, and the message is the body's text
    let text = std::str::from_utf8(body).ok();
    let parse = |text| serde_json::from_str::<lax::Obj<wire::ErrorBody<'_>>>(text).ok();
    let error_body = text.and_then(|text| match parse(text) {
        Some(lax::Obj(Some(b))) => Some(b),
        // not an object: perhaps the list `streamGenerateContent` without `alt=sse` answers
        Some(lax::Obj(None)) => serde_json::from_str::<lax::Head<wire::ErrorBody<'_>>>(text)
            .ok()
            .and_then(|h| h.0)
            .and_then(|first| first.0),
        None => None,
    });
    let error = error_body.as_ref().and_then(|b| b.error.0.as_ref());
    let message = error
        .and_then(|e| e.message.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| fallback_message(status, body));
    let code = error.and_then(|e| e.status.as_str()).unwrap_or_default();
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
        // the usual shape without serde; anything else (and every error) through serde, where
        // any JSON value is an event: one that is not an object holds nothing
        let v = match wire::Event::scan(data) {
            Some(v) => v,
            None => {
                json::parse_upstream_str_as::<lax::Obj<wire::Event<'_>>>(data, "a stream event")?
                    .0
                    .unwrap_or_default()
            }
        };
        if let Some(e) = &v.error.0 {
            let e = e.0.as_ref();
            let message = e
                .and_then(|e| e.message.as_str())
                .unwrap_or("the provider reported an error mid-stream")
                .to_string();
            let status = e
                .and_then(|e| e.code.0)
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(500);
            let code = e.and_then(|e| e.status.as_str()).unwrap_or_default();
            return Err(classify(status, code, message, None));
        }
        if let Some(e) = blocked(&v.prompt_feedback, v.candidates.0.is_some()) {
            return Err(e);
        }
        let reported = v.usage_metadata.0.as_ref();
        let metadata = reported.and_then(|u| u.0.as_ref());
        if !self.started {
            self.started = true;
            self.id = answer_id(&v.response_id);
            let model = v.model_version.as_str().unwrap_or(&self.model).to_string();
            // the prompt's count, when the first event has it, goes into the start (an
            // Anthropic client reads it from `message_start`)
            let prompt = Usage {
                output_tokens: 0,
                reasoning_tokens: 0,
                ..usage(metadata)
            };
            out.push(StreamEvent::Start {
                id: self.id.clone(),
                model,
                usage: prompt,
            });
        }
        let candidate = v.candidates.0.as_ref().and_then(|c| c.0.as_ref());
        for p in candidate.map_or(&[][..], wire::Candidate::parts) {
            self.part(p, out)?;
        }
        if reported.is_some() {
            out.push(StreamEvent::Usage(usage(metadata)));
        }
        if let Some(reason) = candidate.and_then(|c| c.finish_reason.as_str()) {
            self.close(out);
            self.finished = true;
            out.push(StreamEvent::Finish {
                stop_reason: stop_reason(reason, self.calls > 0),
                stop_sequence: None,
            });
        }
        Ok(())
    }

    fn part(
        &mut self,
        p: &wire::Part<'_>,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), ProviderError> {
        let signature = p.thought_signature.as_str();
        if let Some(c) = &p.function_call.0 {
            let c = c.0.as_ref();
            let (name, id) = call_name_and_id(c, &self.id, self.calls)?;
            self.close(out);
            if let Some(sig) = signature {
                let index = self.block(Open::Thinking, out);
                out.push(StreamEvent::ThinkingSignature {
                    index,
                    signature: format!("{SIGNATURE_PREFIX}{sig}"),
                });
                self.close(out);
            }
            self.calls += 1;
            let index = self.next_index;
            self.next_index += 1;
            out.push(StreamEvent::ToolCallStart {
                index,
                id,
                name: name.to_string(),
            });
            out.push(StreamEvent::ToolCallDelta {
                index,
                arguments: call_arguments(c),
            });
            out.push(StreamEvent::BlockStop { index });
            return Ok(());
        }
        if let Some(text) = part_text(p)? {
            if p.thought.0 == Some(true) {
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

/// Google AI Studio's `batchEmbedContents` body: one request per input, each naming the model
/// (`models/<id>`), with `outputDimensionality` when the client asked for `dimensions`.
/// Google's `taskType` for what an embedding is for.
fn task_type(t: tollway_core::InputType) -> &'static str {
    use tollway_core::InputType::*;
    match t {
        SearchDocument => "RETRIEVAL_DOCUMENT",
        SearchQuery => "RETRIEVAL_QUERY",
        Classification => "CLASSIFICATION",
        Clustering => "CLUSTERING",
    }
}

pub fn encode_embeddings_request(req: &tollway_core::EmbeddingsRequest, model: &str) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        requests: Vec<One<'a>>,
    }
    #[derive(serde::Serialize)]
    struct One<'a> {
        model: &'a str,
        content: Content<'a>,
        #[serde(rename = "taskType", skip_serializing_if = "Option::is_none")]
        task: Option<&'static str>,
        #[serde(
            rename = "outputDimensionality",
            skip_serializing_if = "Option::is_none"
        )]
        dims: Option<u32>,
    }
    #[derive(serde::Serialize)]
    struct Content<'a> {
        parts: [Text<'a>; 1],
    }
    #[derive(serde::Serialize)]
    struct Text<'a> {
        text: &'a str,
    }
    let name = format!("models/{}", model.strip_prefix("models/").unwrap_or(model));
    let body = Body {
        requests: req
            .input
            .iter()
            .map(|text| One {
                model: &name,
                content: Content {
                    parts: [Text { text }],
                },
                task: req.input_type.map(task_type),
                dims: req.dimensions,
            })
            .collect(),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Vertex AI's `predict` body for an embedding model: one instance per input.
pub fn encode_vertex_embeddings_request(req: &tollway_core::EmbeddingsRequest) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        instances: Vec<Instance<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        parameters: Option<Parameters>,
    }
    #[derive(serde::Serialize)]
    struct Instance<'a> {
        content: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        task_type: Option<&'static str>,
    }
    #[derive(serde::Serialize)]
    struct Parameters {
        #[serde(rename = "outputDimensionality")]
        dims: u32,
    }
    let body = Body {
        instances: req
            .input
            .iter()
            .map(|content| Instance {
                content,
                task_type: req.input_type.map(task_type),
            })
            .collect(),
        parameters: req.dimensions.map(|dims| Parameters { dims }),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A vector of numbers, or why it is not one.
fn vector(v: Option<&Value>) -> Result<Vec<f32>, ProviderError> {
    v.and_then(Value::as_array)
        .ok_or_else(|| bad_answer("an embedding is not a list of numbers"))?
        .iter()
        .map(|x| x.as_f64().map(|f| f as f32))
        .collect::<Option<_>>()
        .ok_or_else(|| bad_answer("an embedding is not a list of numbers"))
}

/// The answer to [`encode_embeddings_request`] (`{"embeddings": [{"values": [...]}]}`) or, with
/// `vertex`, to [`encode_vertex_embeddings_request`] (`{"predictions": [{"embeddings": {"values",
/// "statistics": {"token_count"}}}]}`). Google AI Studio reports no token count: the usage is then
/// zero, for the gateway to estimate. `inputs`: how many vectors the request asked for.
pub fn decode_embeddings_response(
    bytes: &[u8],
    model: &str,
    inputs: usize,
    vertex: bool,
) -> Result<tollway_core::EmbeddingsResponse, ProviderError> {
    let v = json::parse_upstream(bytes, "an embeddings answer")?;
    let mut data = Vec::new();
    let mut tokens = 0u64;
    if vertex {
        let items = v
            .get("predictions")
            .and_then(Value::as_array)
            .ok_or_else(|| bad_answer("the provider's embeddings answer has no predictions"))?;
        for item in items {
            let e = item.get("embeddings");
            data.push(vector(e.and_then(|e| e.get("values")))?);
            let count = e.and_then(|e| e.pointer("/statistics/token_count"));
            tokens = tokens.saturating_add(count.and_then(Value::as_f64).map_or(0, |n| n as u64));
        }
    } else {
        let items = v
            .get("embeddings")
            .and_then(Value::as_array)
            .ok_or_else(|| bad_answer("the provider's embeddings answer has no embeddings"))?;
        for item in items {
            data.push(vector(item.get("values"))?);
        }
    }
    if data.len() != inputs {
        return Err(bad_answer(format!(
            "the provider sent {} embeddings for {inputs} inputs",
            data.len()
        )));
    }
    Ok(tollway_core::EmbeddingsResponse {
        model: model.to_string(),
        data,
        usage: Usage {
            input_tokens: tokens,
            ..Usage::default()
        },
    })
}

#[cfg(test)]
mod tests;
