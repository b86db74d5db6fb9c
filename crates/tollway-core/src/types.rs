//! The canonical chat request, response and stream events.
//!
//! Every inbound API (OpenAI Chat Completions, Anthropic Messages) is decoded into these types and
//! every provider encodes from them, so that any client API reaches any model. The types are plain
//! data: wire formats live in `tollway-protocol`.
//!
//! Usage is normalised before anything prices it: `input_tokens` counts only prompt tokens that were
//! neither read from nor written to a prompt cache; cache reads and cache writes are counted apart.
//! (OpenAI's `prompt_tokens` = input + cache_read + cache_write; Anthropic's `input_tokens` = input.)

use serde_json::{Map, Value};

/// The two client-facing API families. Also says which wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiFamily {
    OpenAi,
    Anthropic,
}

impl ApiFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiFamily::OpenAi => "openai",
            ApiFamily::Anthropic => "anthropic",
        }
    }
}

/// Where a request is sent: the upstream model id, and whether the answer streams. A gateway
/// tries one request on several deployments; each attempt encodes the same borrowed request for
/// its own target instead of copying it to change the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub model: &'a str,
    pub stream: bool,
}

impl<'a> Target<'a> {
    /// The request's own model and streaming.
    pub fn of(req: &'a ChatRequest) -> Self {
        Target {
            model: &req.model,
            stream: req.stream,
        }
    }
}

/// How error messages name a deployment: `provider/model`. Carried as its two parts and written
/// only when an error needs it (an encoder is given one on every attempt and almost never uses
/// it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label<'a> {
    pub provider: Option<&'a str>,
    pub model: &'a str,
}

impl<'a> Label<'a> {
    pub fn new(provider: &'a str, model: &'a str) -> Self {
        Label {
            provider: Some(provider),
            model,
        }
    }
}

/// A whole label given as text (`"openai/gpt-4.1"`).
impl<'a> From<&'a str> for Label<'a> {
    fn from(whole: &'a str) -> Self {
        Label {
            provider: None,
            model: whole,
        }
    }
}

impl std::fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(p) = self.provider {
            f.write_str(p)?;
            f.write_str("/")?;
        }
        f.write_str(self.model)
    }
}

/// A chat request in canonical form.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The model name: the public name as the client sent it, replaced by the deployment's
    /// upstream model id before the request reaches a provider.
    pub model: String,
    pub messages: Vec<Message>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u32>,
    pub stop: Vec<String>,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`: the client wants a final usage chunk.
    /// (Providers are always asked for usage; this only shapes what the client sees.)
    pub include_usage: bool,
    pub tools: Vec<ToolDef>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<ResponseFormat>,
    /// End-user id (OpenAI `user`, Anthropic `metadata.user_id`).
    pub user: Option<String>,
    /// Anthropic beta features the client asked for (its `anthropic-beta` header, e.g. a longer
    /// context window): sent on to Anthropic-format upstreams, meaningless to others.
    pub betas: Vec<String>,
    /// Fields of the inbound API that have no canonical equivalent, kept verbatim.
    pub extra: Extra,
}

impl ChatRequest {
    /// A minimal request: one user turn of text. Handy for tests and probes.
    pub fn simple(model: impl Into<String>, text: impl Into<String>) -> Self {
        ChatRequest {
            model: model.into(),
            messages: vec![Message::text(Role::User, text)],
            max_tokens: None,
            temperature: None,
            top_p: None,
            top_k: None,
            stop: Vec::new(),
            stream: false,
            include_usage: false,
            tools: Vec::new(),
            tool_choice: None,
            parallel_tool_calls: None,
            response_format: None,
            user: None,
            betas: Vec::new(),
            extra: Extra::default(),
        }
    }

    pub fn has_images(&self) -> bool {
        self.messages.iter().any(|m| {
            m.content.iter().any(|p| match p {
                Part::Image(_) => true,
                Part::ToolResult(r) => r.content.iter().any(|p| matches!(p, Part::Image(_))),
                _ => false,
            })
        })
    }

    pub fn uses_tools(&self) -> bool {
        !self.tools.is_empty() || self.uses_tools_in_messages()
    }

    /// Whether the conversation holds tool calls or tool results.
    pub fn uses_tools_in_messages(&self) -> bool {
        self.messages.iter().any(|m| {
            m.content
                .iter()
                .any(|p| matches!(p, Part::ToolCall(_) | Part::ToolResult(_)))
        })
    }
}

/// Inbound fields with no canonical equivalent. They are forwarded verbatim when the target speaks
/// the same API family as the client, and otherwise either ignored (when documented as harmless) or
/// refused with a 400 naming them — never silently dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Extra {
    pub family: ApiFamily,
    pub fields: Map<String, Value>,
}

impl Default for Extra {
    fn default() -> Self {
        Extra {
            family: ApiFamily::OpenAi,
            fields: Map::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// System (or OpenAI "developer") instructions. Anthropic targets hoist them to `system`.
    System,
    User,
    Assistant,
    /// Tool results (OpenAI `tool` messages). Anthropic targets fold them into user turns.
    Tool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
}

impl Message {
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Message {
            role,
            content: vec![Part::text(text)],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text {
        text: String,
        /// Anthropic `cache_control` on this block (a caching hint; OpenAI caches automatically).
        cache_control: Option<Value>,
    },
    Image(ImageSource),
    ToolCall(ToolCall),
    ToolResult(ToolResult),
    /// Anthropic extended thinking. Only Anthropic targets can take it back as input.
    Thinking {
        text: String,
        signature: Option<String>,
    },
}

impl Part {
    pub fn text(text: impl Into<String>) -> Self {
        Part::Text {
            text: text.into(),
            cache_control: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    Base64 { media_type: String, data: String },
    Url(String),
}

impl ImageSource {
    /// Parses a `data:<media type>;base64,<data>` URL into a base64 source; any other URL stays a URL.
    pub fn from_url(url: &str) -> ImageSource {
        if let Some(rest) = url.strip_prefix("data:") {
            if let Some((meta, data)) = rest.split_once(',') {
                if let Some(media_type) = meta.strip_suffix(";base64") {
                    return ImageSource::Base64 {
                        media_type: media_type.to_string(),
                        data: data.to_string(),
                    };
                }
            }
        }
        ImageSource::Url(url.to_string())
    }

    /// The source as a URL (base64 becomes a `data:` URL).
    pub fn to_url(&self) -> String {
        match self {
            ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
            ImageSource::Url(u) => u.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text, exactly as the model produced them.
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    pub tool_call_id: String,
    /// Text and image parts.
    pub content: Vec<Part>,
    pub is_error: bool,
}

impl ToolResult {
    /// The result's text parts joined (for targets that take tool results as a string).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for p in &self.content {
            if let Part::Text { text, .. } = p {
                out.push_str(text);
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Value,
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    Auto,
    None,
    /// The model must call some tool (OpenAI "required", Anthropic "any").
    Required,
    /// The model must call this tool.
    Tool(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        description: Option<String>,
        schema: Value,
        strict: Option<bool>,
    },
}

/// A complete (non-streaming) answer in canonical form.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    pub id: String,
    /// The upstream model id that answered.
    pub model: String,
    /// Text, tool-call and thinking parts, in the order the model produced them.
    pub content: Vec<Part>,
    pub stop_reason: StopReason,
    /// The stop sequence that ended the answer, when one did and the provider says which.
    pub stop_sequence: Option<String>,
    pub usage: Usage,
    /// Unix seconds.
    pub created: u64,
}

impl ChatResponse {
    pub fn text(&self) -> String {
        let mut out = String::new();
        for p in &self.content {
            if let Part::Text { text, .. } = p {
                out.push_str(text);
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
    ContentFilter,
    /// Anthropic `refusal`, `pause_turn` and anything else we do not model, carried by name.
    Other(String),
}

/// Token usage, normalised (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens neither read from nor written to a cache.
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    /// Reasoning tokens, a part of `output_tokens` (as both OpenAI and Anthropic count them).
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Every prompt token, cached or not (OpenAI's `prompt_tokens`).
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens + self.cache_read_tokens + self.cache_write_tokens
    }

    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens() + self.output_tokens
    }

    /// Folds a later (cumulative) usage report into this one: each counter keeps the larger value,
    /// since providers report running totals and some fields only in some events.
    pub fn merge(&mut self, later: &Usage) {
        self.input_tokens = self.input_tokens.max(later.input_tokens);
        self.output_tokens = self.output_tokens.max(later.output_tokens);
        self.cache_read_tokens = self.cache_read_tokens.max(later.cache_read_tokens);
        self.cache_write_tokens = self.cache_write_tokens.max(later.cache_write_tokens);
        self.reasoning_tokens = self.reasoning_tokens.max(later.reasoning_tokens);
    }
}

/// One event of a streamed answer in canonical form.
///
/// Grammar, as providers' decoders produce it and downstream encoders expect it:
/// `Start`, then any number of block events, then `Finish`, with `Usage` anywhere after `Start`.
/// A block is a text, thinking or tool-call content block named by `index` (increasing from 0,
/// unique within the answer); its deltas follow its start and precede its `BlockStop` (a block may
/// also be closed implicitly by `Finish`). Errors travel as `Err` items of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Start {
        id: String,
        model: String,
        /// Usage known when the answer starts (Anthropic reports input tokens here).
        usage: Usage,
    },
    TextDelta {
        index: u32,
        text: String,
    },
    ThinkingDelta {
        index: u32,
        text: String,
    },
    ThinkingSignature {
        index: u32,
        signature: String,
    },
    ToolCallStart {
        index: u32,
        id: String,
        name: String,
    },
    ToolCallDelta {
        index: u32,
        arguments: String,
    },
    BlockStop {
        index: u32,
    },
    Finish {
        stop_reason: StopReason,
        stop_sequence: Option<String>,
    },
    /// A cumulative usage report; fold it in with [`Usage::merge`].
    Usage(Usage),
}

/// An embeddings request in canonical form.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: Vec<String>,
    pub dimensions: Option<u32>,
    /// What the vectors are for, for models that embed a text differently by its use (Cohere's
    /// `input_type`, Google's `taskType`); others ignore it.
    pub input_type: Option<InputType>,
    pub user: Option<String>,
}

/// What an embedding is for, in Cohere's words (the `input_type` clients send).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputType {
    /// A document stored for search.
    SearchDocument,
    /// A query searched with.
    SearchQuery,
    Classification,
    Clustering,
}

impl InputType {
    pub const ALL: [InputType; 4] = [
        InputType::SearchDocument,
        InputType::SearchQuery,
        InputType::Classification,
        InputType::Clustering,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InputType::SearchDocument => "search_document",
            InputType::SearchQuery => "search_query",
            InputType::Classification => "classification",
            InputType::Clustering => "clustering",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsResponse {
    pub model: String,
    pub data: Vec<Vec<f32>>,
    pub usage: Usage,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProviderError;

    #[test]
    fn labels_name_provider_and_model() {
        assert_eq!(Label::new("oai", "gpt-4.1").to_string(), "oai/gpt-4.1");
        assert_eq!(Label::from("ant/claude").to_string(), "ant/claude");
        assert_eq!(
            ProviderError::unsupported("images", Label::new("p", "m")).message,
            "images is not supported by model p/m"
        );
    }

    #[test]
    fn data_urls_round_trip() {
        let src = ImageSource::from_url("data:image/png;base64,iVBORw0KGgo=");
        assert_eq!(
            src,
            ImageSource::Base64 {
                media_type: "image/png".into(),
                data: "iVBORw0KGgo=".into()
            }
        );
        assert_eq!(src.to_url(), "data:image/png;base64,iVBORw0KGgo=");
        let url = ImageSource::from_url("https://example.com/cat.png");
        assert_eq!(url, ImageSource::Url("https://example.com/cat.png".into()));
        // a data URL that is not base64 stays a URL rather than being misread
        assert!(matches!(
            ImageSource::from_url("data:text/plain,hello"),
            ImageSource::Url(_)
        ));
    }

    #[test]
    fn usage_merge_keeps_running_totals() {
        let mut u = Usage {
            input_tokens: 10,
            output_tokens: 1,
            cache_read_tokens: 5,
            ..Usage::default()
        };
        u.merge(&Usage {
            output_tokens: 42,
            ..Usage::default()
        });
        assert_eq!(u.input_tokens, 10);
        assert_eq!(u.output_tokens, 42);
        assert_eq!(u.cache_read_tokens, 5);
        assert_eq!(u.prompt_tokens(), 15);
        assert_eq!(u.total_tokens(), 57);
    }
}
