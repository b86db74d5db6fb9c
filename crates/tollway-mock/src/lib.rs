//! tollway-mock: an upstream simulator that answers in the providers' own wire formats —
//! OpenAI Chat Completions and Embeddings, Anthropic Messages, Amazon Bedrock Converse, Google's
//! Gemini API (AI Studio and Vertex AI, with Claude on Vertex AI), Azure OpenAI —
//! deterministically, with knobs
//! for latency, length, tool calls, usage and faults. It shares no code with the gateway's
//! protocol crates, so tests of the gateway against it check the gateway's translations
//! against an independent reading of the API references.
//!
//! It serves plain HTTP ([`serve`], [`MockServer::start`]) or, as real providers are reached,
//! HTTPS with HTTP/2 or HTTP/1.1 by ALPN ([`tls`], [`MockServer::start_tls`]).
//!
//! # Routes
//! | route | answers |
//! | --- | --- |
//! | `POST /v1/chat/completions` | OpenAI chat completion, or SSE chunks with `stream: true` (`stream_options.include_usage` adds the usage chunk) |
//! | `POST /v1/embeddings` | OpenAI embeddings: deterministic unit vectors from a hash of each input (`dimensions`, default 1536; `encoding_format` `float` or `base64`) |
//! | `POST /v1/messages` | Anthropic message, or SSE events with `stream: true` (`anthropic-version` header required) |
//! | `POST /v1/messages/count_tokens` | Anthropic token count, `{"input_tokens": N}`: the `input_tokens` a message would report for the same request; fields other than the count's own (`max_tokens`, `stream`...) refused as the API does |
//! | `GET /v1/models` | OpenAI model list |
//! | `POST /model/{modelId}/converse` | Bedrock Converse: `{"output":{"message"}, "stopReason", "usage", "metrics"}`; the model id percent-decoded from the path (`a%3A0`, ARNs with `%2F`), never read from the body |
//! | `POST /model/{modelId}/converse-stream` | Bedrock ConverseStream: `application/vnd.amazon.eventstream` messages (`messageStart`, `contentBlockStart` for tool calls, `contentBlockDelta`…, `contentBlockStop`, `messageStop`, `metadata`), each JSON padded with `"p"` |
//! | `POST /model/{modelId}/count-tokens` | Bedrock CountTokens: `{"input": {"converse": {messages, system}}}` (counted as Converse counts them) or `{"input": {"invokeModel": {"body": "<an Anthropic Messages body>"}}}` (Claude models: counted as a message reports them) → `{"inputTokens": N}`; inference profiles refused, as the service does |
//! | `POST /model/{modelId}/invoke` | Bedrock InvokeModel for embedding models, each in its vendor's body: Titan Text Embeddings G1/V2 and Titan Multimodal (`{inputText[, dimensions \| embeddingConfig]}` → `{"embedding", "inputTextTokenCount"}`), Cohere Embed v3/v4 (`{texts ≤ 96, input_type[, output_dimension, embedding_types]}` → `{"embeddings": [[…]] \| {"float": [[…]]}, "id", "response_type", "texts"}`); `X-Amzn-Bedrock-Input-Token-Count` on every answer; extraneous keys and sizes refused as Bedrock does |
//! | `POST /v1beta/models/{model}:generateContent` | Gemini `GenerateContentResponse`: `{"candidates":[{"content":{"role":"model","parts"},"finishReason","index"}], "usageMetadata", "modelVersion", "responseId"}`; the model percent-decoded from the path, split from the method at the last `:` |
//! | `POST /v1beta/models/{model}:streamGenerateContent` | with `?alt=sse`: `data: {chunk}\r\n\r\n` events (no `event:`, no `[DONE]`), one per token, function calls whole, a last chunk with `finishReason` and the whole `usageMetadata`; without: one JSON array of the same chunks |
//! | `POST /token` | Google's OAuth 2.0 token endpoint for service accounts: a form-encoded JWT-bearer grant, checked for real ([`mock_gcp_service_account`]) → `{"access_token":"ya29.mock-…","expires_in":3599,"token_type":"Bearer"}`, else a 400 `{"error","error_description"}` |
//! | `GET /computeMetadata/v1/instance/service-accounts/default/token` | the metadata server of Google Cloud's machines: with `Metadata-Flavor: Google`, a token as `/token` gives (counted in `tokens_issued`), else 403 |
//! | `POST /{tenant}/oauth2/v2.0/token` | Microsoft Entra ID's token endpoint (client-credentials grant, client secret [`MOCK_AZURE_CLIENT_SECRET`], scope `https://cognitiveservices.azure.com/.default`): a token as `/token` gives (counted in `tokens_issued`), else Entra's `{"error", "error_description"}` |
//! | `PUT /latest/api/token`, `GET /latest/meta-data/iam/security-credentials/[{role}]` | the EC2 instance metadata service (IMDSv2: a session token, then the role [`MOCK_INSTANCE_ROLE`] and its temporary credentials, whose secret is [`MOCK_AWS_SECRET`]); counted in `tokens_issued` |
//! | `GET /v2/credentials/{id}` | the ECS / EKS Pod Identity container credentials endpoint (an `Authorization` token, if sent, must not be empty): temporary credentials as above |
//! | `POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent`, `:streamGenerateContent` | Vertex AI Gemini: as AI Studio's, plus `createTime` and `usageMetadata.trafficType`; `labels` accepted; also under `/v1beta1/` |
//! | `POST /v1/projects/{p}/locations/{l}/publishers/anthropic/models/{model}:rawPredict`, `:streamRawPredict` | Claude on Vertex AI: an Anthropic message (SSE with `"stream": true`, which `streamRawPredict` requires); the body must have `"anthropic_version": "vertex-2023-10-16"` and no `model` (the path's is echoed); ids `msg_vrtx_01…`, `toolu_vrtx_01…` |
//! | `POST /v1/projects/{p}/locations/{l}/publishers/anthropic/models/count-tokens:rawPredict` | Claude's token count on Vertex AI: `{"input_tokens": N}`, the body's `model` required |
//! | `POST /openai/deployments/{deployment}/chat/completions?api-version=…`, `…/embeddings?api-version=…` | Azure OpenAI: OpenAI's answers for the deployment named in the path (percent-decoded; the body's `model` ignored; the answer's `model` is the deployment without its query), each choice with `content_filter_results`, non-streaming answers with `prompt_filter_results`, streams opening with a `"choices": []` chunk carrying them; `api-version` (`YYYY-MM-DD[-preview]`) missing or malformed → 404 `{"error":{"code":"404","message":"Resource not found"}}` |
//! | `POST /openai/v1/chat/completions`, `/openai/v1/embeddings` | Azure OpenAI's v1 API: the same, the body's `model` naming the deployment, no `api-version` needed |
//! | `GET /_mock/stats` | `{"requests", "by_path", "streams_started", "streams_completed", "streams_aborted", "in_flight", "tokens_issued"}` (`tokens_issued`: access tokens `/token` granted) |
//! | `GET /_mock/requests` | the last ≤1000 provider-API requests, oldest first: `[{"path", "version", "headers", "body"}]` (`version`: `HTTP/1.1` or `HTTP/2.0`); for routes with parameters `path` is the one received (percent-encoding kept; Gemini's, Vertex's and Azure's with their query) and fields are added: Bedrock `"model_id"` (decoded) and `"auth"` (`{"scheme": "bearer"}`, `{"scheme": "sigv4", "access_key_id", "region", "signed_headers"}` or `{"scheme": "rejected", "error"}`); Gemini `"model_id"`, `"alt"`, `"auth"` (`{"scheme": "api_key", "via": "header"\|"query"}` or rejected); Vertex `"model_id"`, `"project"`, `"location"`, `"publisher"`, `"method"`, `"alt"`, `"auth"` (`{"scheme": "oauth2", "token"}` or `{"scheme": "rejected", "error": "UNAUTHENTICATED", "reason": "missing"\|"malformed"\|"unknown"\|"expired"}`); `/token` `"oauth"` (`grant_type`, `iss`, `scope`, `aud`, `issued`, or `error`, `error_description`); Azure `"deployment"` (null on v1), `"api_version"`, `"auth"` (`{"scheme": "api-key"\|"bearer"}` or rejected) |
//! | `POST /_mock/reset` | clears the stats (`tokens_issued` included) and the request log (204); issued access tokens stay valid |
//! | `POST /_mock/revoke_tokens` | forgets every issued access token (204): the next Vertex call with one is a 401, as after an expiry |
//!
//! Any other path: 404 in OpenAI's error shape (under `/model/`, Bedrock's
//! `UnknownOperationException`; under `/openai/`, Azure's `Resource not found`; under `/v1beta/`,
//! `/v1/projects/`, `/v1beta1/projects/`, and for an unknown `:method` or publisher, Google's
//! `NOT_FOUND`; those are not counted).
//!
//! # Authentication
//! OpenAI's and Anthropic's routes accept any API key (or none). The others check as the
//! provider does, before anything else (knobs included), logging what they made of the caller:
//! - Bedrock: any `Authorization: Bearer` key, or an AWS Signature Version 4 for the `bedrock`
//!   service made with [`MOCK_AWS_SECRET`] (any access key id, any region; the date is not
//!   compared with the clock); else a 403 as AWS sends it ([`sigv4`]).
//! - Gemini (AI Studio): a non-empty `x-goog-api-key` header or `?key=` query parameter, any
//!   value; else 403 `{"error":{"code":403,"message":"Method doesn't allow unregistered callers
//!   …","status":"PERMISSION_DENIED"}}`.
//! - Vertex AI: `Authorization: Bearer <token>` with a token `POST /token` or the metadata route issued (to this
//!   server, unexpired, not revoked), or [`MOCK_GCP_TOKEN`] (a simulated account's); else 401 `UNAUTHENTICATED` "Request had invalid
//!   authentication credentials. Expected OAuth 2 access token…" with `www-authenticate`.
//!   `/token` takes `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`: a
//!   header `{"alg":"RS256"[,"typ":"JWT"][,"kid"]}`; claims `iss` = [`MOCK_GCP_CLIENT_EMAIL`]
//!   (else `invalid_grant` "Invalid grant: account not found"), an RS256 signature by
//!   [`MOCK_GCP_PRIVATE_KEY`] checked with ring (else `invalid_grant` "Invalid JWT
//!   Signature."), `aud` an http(s) URL whose path ends in `/token` (else `invalid_grant`
//!   "…Failed audience check…"), numeric `iat` ≤ now + 5 min and `exp` > now with
//!   `exp - iat` ≤ 3600 (else `invalid_grant` "Invalid JWT: Token must be a short-lived token
//!   (60 minutes)…"), `scope` containing `https://www.googleapis.com/auth/cloud-platform` (else
//!   `invalid_scope`); another `grant_type` → `unsupported_grant_type`, no assertion →
//!   `invalid_request`. Tokens live 3599 s.
//! - Azure OpenAI: a non-empty `api-key` header or `Authorization: Bearer <token>` (any); else
//!   401 `{"error":{"code":"401","message":"Access denied due to invalid subscription key or
//!   wrong API endpoint. …"}}`. (On deployment routes a bad `api-version` is a 404 first.)
//!
//! # Knobs
//! Per request, in the model name's query (`gpt-4.1?ttft_ms=200&tokens=50`; Bedrock, Gemini,
//! Vertex: the decoded model id's, sent as `model%3Ftokens%3D5`; Azure: the decoded
//! deployment's, `my-gpt%3Ftokens%3D5`, or on the v1 API the body's `model`) or in a directive
//! anywhere in the text of the last user message, `[mock tokens=5 fault=429]`; the directive
//! wins. Unknown knobs are ignored. The `model` echoed back (Gemini's `modelVersion`) is the name
//! without its query.
//!
//! | knob | effect |
//! | --- | --- |
//! | `ttft_ms=N` | wait N ms before the first token (non-streaming: before answering) |
//! | `tpt_ms=N` | wait N ms between tokens (non-streaming: the answer comes after ttft + tpt × tokens) |
//! | `tokens=N` | reply with N tokens (`lorem ipsum dolor ...`); without it a fixed 12-token sentence |
//! | `echo=1` | reply with the last user message's text exactly (directive included), in word pieces |
//! | `tool=NAME` / `tool=1` | call tool NAME / the first tool offered |
//! | `tools=N` | make N parallel calls (the first N tools, or the last tool again) |
//! | `cached=N` | OpenAI/Azure `prompt_tokens_details.cached_tokens=N` (inside `prompt_tokens`); Gemini `cachedContentTokenCount=N` (inside `promptTokenCount`); Anthropic `cache_read_input_tokens=N`, Bedrock `cacheReadInputTokens=N` (outside the input tokens) |
//! | `cache_write=N` | Anthropic `cache_creation_input_tokens=N`; Bedrock `cacheWriteInputTokens=N` |
//! | `reasoning=N` | OpenAI `reasoning_tokens=N` (inside `completion_tokens`); Anthropic a leading `thinking` block, Bedrock a leading `reasoningContent` block, of N tokens with a signature; Gemini a leading `{"text","thought":true}` part (not with `thinkingConfig.includeThoughts: false`), `thoughtsTokenCount=N` (outside `candidatesTokenCount`), a `thoughtSignature` on the first other part |
//! | `stop=1` | when the request has stop sequences, end early on the first one (`stop` / `stop_sequence`; Gemini `STOP`) |
//! | `usage=0` | OpenAI/Azure: no `usage`; Gemini: no `usageMetadata` |
//! | `fault=429\|500\|503\|529\|400\|401\|403\|404` | that status with the provider's error body; `retry_after=S` adds `retry-after` (not Bedrock, which sends none; Bedrock and Google answer 529 with their 503; Google adds a `RetryInfo` detail) |
//! | `fault=context_length` | 400: the prompt does not fit (OpenAI/Azure `context_length_exceeded`, Gemini "The input token count (N) exceeds the maximum number of tokens allowed (1048576).") |
//! | `fault=content_policy` | 400 refusing the content (Azure: `content_filter` with `innererror.content_filter_result`); Gemini: a 200 with `promptFeedback.blockReason: "SAFETY"` and no candidates |
//! | `fault=malformed` | 200 with a body that is not JSON (streams: a broken `data:` line, Bedrock a message with a wrong CRC, after `after` tokens) |
//! | `fault=reset` | the connection is cut (streams: after `after=N` tokens, default 0; the client sees a body error) |
//! | `fault=hang` | never answers |
//! | `fault=error_event` | streams: an in-stream error event (Bedrock: a `throttlingException` message; Gemini: `data: {"error":{"code":503,…,"status":"UNAVAILABLE"}}`, closing the array in the array form) after `after` tokens, then the end (non-streaming: a 500) |
//!
//! Which faults are whose on Vertex's Claude and on Azure: 401, 403, 404 and 429 are the
//! platform's (Google's shape with Vertex's quota message; Azure's `{"error":{"code","message"}}`
//! with its rate-limit wording and `DeploymentNotFound`), other statuses the model's (Anthropic's
//! shape; OpenAI's).
//!
//! A request forcing a tool (OpenAI `tool_choice: "required"` or a named function; Anthropic
//! `tool_choice` `any` or `tool`; Bedrock `toolChoice` `any` or `tool`; Gemini
//! `toolConfig.functionCallingConfig.mode: "ANY"`, the first `allowedFunctionNames` if any) gets
//! a tool call without any knob (never with OpenAI `none`, Anthropic `none`, Gemini `NONE`). When
//! the last message is a tool result (Gemini: `functionResponse` parts), the reply is text
//! quoting the result, so tool loops end. Gemini's function calls carry no id; their `args` come
//! from `parameters` or `parametersJsonSchema` (Google's upper-case types included), and they end
//! with `STOP`.
//!
//! Gemini's structured output: with `responseMimeType: "application/json"` the text is JSON valid
//! for `responseSchema` / `responseJsonSchema` (every declared property filled: strings
//! `"example"`, numbers 1, booleans true, arrays one item, enums their first value), or
//! `{"response": "<reply>"}` without a schema; with `text/x.enum`, the schema's first enum value.
//!
//! Tokens: a reply token is one word piece (one content delta when streaming); prompt tokens
//! are estimated as ceil(chars / 4) per text part, 4 per message, 85 per image.
//! `max_tokens` (`max_completion_tokens`, Bedrock `inferenceConfig.maxTokens`, Gemini
//! `generationConfig.maxOutputTokens`) cuts the reply with `length` / `max_tokens` /
//! `MAX_TOKENS`. Gemini counts `totalTokenCount` = prompt + candidates + thoughts;
//! `candidateCount: N` gives N identical candidates, counted N times.

mod anthropic;
mod awscreds;
mod azure;
mod b64;
mod bedrock;
mod gcp;
mod gemini;
mod gen;
mod knobs;
mod openai;
pub mod sigv4;
pub mod tls;
mod vertex;

use std::collections::{HashMap, VecDeque};
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Map, Value};

pub use awscreds::MOCK_INSTANCE_ROLE;
pub use azure::MOCK_AZURE_CLIENT_SECRET;
pub use gcp::{
    mock_gcp_service_account, MOCK_GCP_CLIENT_EMAIL, MOCK_GCP_PRIVATE_KEY, MOCK_GCP_TOKEN,
};
pub use knobs::{Fault, Knobs};
pub use sigv4::MOCK_AWS_SECRET;

/// Requests kept in the log for `GET /_mock/requests`.
const LOG_CAP: usize = 1000;

/// Request bodies above this size are refused (base64 images can be large).
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// A mock server running in the background on an ephemeral loopback port.
/// Dropping it stops accepting connections (its task is aborted).
pub struct MockServer {
    addr: SocketAddr,
    tls: bool,
    task: tokio::task::JoinHandle<()>,
}

impl MockServer {
    /// Binds `127.0.0.1:0` and serves in a background task.
    pub async fn start() -> std::io::Result<MockServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = serve(listener, std::future::pending()).await;
        });
        Ok(MockServer {
            addr,
            tls: false,
            task,
        })
    }

    /// As [`MockServer::start`], over TLS ([`tls::serve_tls`]).
    pub async fn start_tls(config: Arc<rustls::ServerConfig>) -> std::io::Result<MockServer> {
        MockServer::start_tls_limited(config, None).await
    }

    /// As [`MockServer::start_tls`], announcing at most `http2_max_streams` concurrent HTTP/2
    /// streams per connection.
    pub async fn start_tls_limited(
        config: Arc<rustls::ServerConfig>,
        http2_max_streams: Option<u32>,
    ) -> std::io::Result<MockServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ =
                tls::serve_tls(listener, config, http2_max_streams, std::future::pending()).await;
        });
        Ok(MockServer {
            addr,
            tls: true,
            task,
        })
    }

    /// `http://127.0.0.1:PORT` (`https://` over TLS), without a trailing slash.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the mock on `listener` until `shutdown` completes, then lets open requests finish
/// for up to two seconds.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let signal = async move {
        shutdown.await;
        let _ = tx.send(true);
    };
    // No Nagle: each streamed token leaves at once (as from a real provider's edge).
    let listener = axum::serve::ListenerExt::tap_io(listener, |s| {
        let _ = s.set_nodelay(true);
    });
    let server = axum::serve(listener, app())
        .with_graceful_shutdown(signal)
        .into_future();
    let deadline = async move {
        if rx.wait_for(|stopped| *stopped).await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    tokio::select! {
        r = server => r,
        () = deadline => Ok(()),
    }
}

/// The mock's router, with fresh state.
pub fn app() -> Router {
    let shared = Arc::new(Shared::default());
    Router::new()
        .route("/v1/chat/completions", post(openai::chat))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1/models", get(openai::models))
        .route(
            "/model/{model_id}/converse",
            post(bedrock::converse::<false>),
        )
        .route(
            "/model/{model_id}/converse-stream",
            post(bedrock::converse::<true>),
        )
        .route("/model/{model_id}/count-tokens", post(bedrock::count_tokens))
        .route("/model/{model_id}/invoke", post(bedrock::invoke))
        .route("/v1beta/models/{model}", post(gemini::ai_studio))
        .route("/token", post(gcp::token))
        .route(gcp::METADATA_TOKEN_PATH, get(gcp::metadata_token))
        .route("/{tenant}/oauth2/v2.0/token", post(azure::entra_token))
        .route("/latest/api/token", axum::routing::put(awscreds::imds_token))
        .route(
            "/latest/meta-data/iam/security-credentials/",
            get(awscreds::imds_role),
        )
        .route(
            "/latest/meta-data/iam/security-credentials/{role}",
            get(awscreds::imds_credentials),
        )
        .route(
            "/v2/credentials/{id}",
            get(awscreds::container_credentials),
        )
        .route(
            "/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}",
            post(vertex::predict),
        )
        .route(
            "/v1beta1/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}",
            post(vertex::predict),
        )
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(azure::chat),
        )
        .route(
            "/openai/deployments/{deployment}/embeddings",
            post(azure::embeddings),
        )
        .route("/openai/v1/chat/completions", post(azure::chat_v1))
        .route("/openai/v1/embeddings", post(azure::embeddings_v1))
        .route("/_mock/stats", get(stats))
        .route("/_mock/requests", get(requests))
        .route("/_mock/reset", post(reset))
        .route("/_mock/revoke_tokens", post(revoke_tokens))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

/// The provider-API routes, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Chat = 0,
    Embeddings = 1,
    Messages = 2,
    Models = 3,
    CountTokens = 4,
    Converse = 5,
    ConverseStream = 6,
    GenerateContent = 7,
    StreamGenerateContent = 8,
    Token = 9,
    VertexGenerateContent = 10,
    VertexStreamGenerateContent = 11,
    VertexRawPredict = 12,
    VertexStreamRawPredict = 13,
    VertexCountTokens = 14,
    AzureChat = 15,
    AzureEmbeddings = 16,
    AzureV1Chat = 17,
    AzureV1Embeddings = 18,
    ConverseCountTokens = 19,
    BatchEmbedContents = 20,
    VertexPredict = 21,
    InvokeModel = 22,
}

impl Route {
    const ALL: [Route; 23] = [
        Route::Chat,
        Route::Embeddings,
        Route::Messages,
        Route::Models,
        Route::CountTokens,
        Route::Converse,
        Route::ConverseStream,
        Route::GenerateContent,
        Route::StreamGenerateContent,
        Route::Token,
        Route::VertexGenerateContent,
        Route::VertexStreamGenerateContent,
        Route::VertexRawPredict,
        Route::VertexStreamRawPredict,
        Route::VertexCountTokens,
        Route::AzureChat,
        Route::AzureEmbeddings,
        Route::AzureV1Chat,
        Route::AzureV1Embeddings,
        Route::ConverseCountTokens,
        Route::BatchEmbedContents,
        Route::VertexPredict,
        Route::InvokeModel,
    ];

    fn path(self) -> &'static str {
        match self {
            Route::Chat => "/v1/chat/completions",
            Route::Embeddings => "/v1/embeddings",
            Route::Messages => "/v1/messages",
            Route::Models => "/v1/models",
            Route::CountTokens => "/v1/messages/count_tokens",
            Route::Converse => "/model/{modelId}/converse",
            Route::ConverseStream => "/model/{modelId}/converse-stream",
            Route::GenerateContent => "/v1beta/models/{model}:generateContent",
            Route::StreamGenerateContent => "/v1beta/models/{model}:streamGenerateContent",
            Route::Token => "/token",
            Route::VertexGenerateContent => {
                "/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent"
            }
            Route::VertexStreamGenerateContent => {
                "/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:streamGenerateContent"
            }
            Route::VertexRawPredict => {
                "/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model}:rawPredict"
            }
            Route::VertexStreamRawPredict => {
                "/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model}:streamRawPredict"
            }
            Route::VertexCountTokens => {
                "/v1/projects/{project}/locations/{location}/publishers/anthropic/models/count-tokens:rawPredict"
            }
            Route::AzureChat => "/openai/deployments/{deployment}/chat/completions",
            Route::AzureEmbeddings => "/openai/deployments/{deployment}/embeddings",
            Route::AzureV1Chat => "/openai/v1/chat/completions",
            Route::AzureV1Embeddings => "/openai/v1/embeddings",
            Route::ConverseCountTokens => "/model/{modelId}/count-tokens",
            Route::BatchEmbedContents => "/v1beta/models/{model}:batchEmbedContents",
            Route::VertexPredict => {
                "/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:predict"
            }
            Route::InvokeModel => "/model/{modelId}/invoke",
        }
    }
}

struct LogEntry {
    route: Route,
    version: Version,
    headers: Vec<(String, String)>,
    body: Bytes,
    /// Routes with parameters: the path as received (percent-encoding included) and fields
    /// added to the entry (Bedrock: `model_id` decoded, `auth` as the mock checked it).
    detail: Option<(String, Value)>,
}

/// State shared by all requests of one `app()`.
#[derive(Default)]
pub(crate) struct Shared {
    /// Per-request sequence number, for ids; never reset.
    seq: AtomicU64,
    requests: AtomicU64,
    by_path: [AtomicU64; Route::ALL.len()],
    streams_started: AtomicU64,
    streams_completed: AtomicU64,
    streams_aborted: AtomicU64,
    in_flight: AtomicI64,
    log: Mutex<VecDeque<LogEntry>>,
    /// OAuth access tokens `POST /token` issued, with their expiry (Unix seconds).
    tokens: Mutex<HashMap<String, u64>>,
    tokens_issued: AtomicU64,
}

impl Shared {
    /// Counts and logs a provider-API request; the guard keeps it in flight until dropped.
    fn begin(
        self: &Arc<Self>,
        route: Route,
        version: Version,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> (InFlight, u64) {
        self.begin_with(route, version, headers, body, None)
    }

    /// [`Shared::begin`], logging the request's own path and what the mock made of the caller.
    fn begin_with(
        self: &Arc<Self>,
        route: Route,
        version: Version,
        headers: &HeaderMap,
        body: &Bytes,
        detail: Option<(String, Value)>,
    ) -> (InFlight, u64) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.by_path[route as usize].fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let headers = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let entry = LogEntry {
            route,
            version,
            headers,
            body: body.clone(),
            detail,
        };
        if let Ok(mut log) = self.log.lock() {
            if log.len() >= LOG_CAP {
                log.pop_front();
            }
            log.push_back(entry);
        }
        (
            InFlight {
                shared: Arc::clone(self),
            },
            seq,
        )
    }

    fn stream_started(&self) {
        self.streams_started.fetch_add(1, Ordering::Relaxed);
    }

    fn stream_finished(&self, completed: bool) {
        let c = if completed {
            &self.streams_completed
        } else {
            &self.streams_aborted
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Keeps a request counted in `in_flight` until dropped (with the handler, or with the stream).
pub(crate) struct InFlight {
    shared: Arc<Shared>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn stats(State(s): State<Arc<Shared>>) -> Json<Value> {
    let mut by_path = Map::new();
    for r in Route::ALL {
        let n = s.by_path[r as usize].load(Ordering::Relaxed);
        if n > 0 {
            by_path.insert(r.path().to_string(), n.into());
        }
    }
    Json(json!({
        "requests": s.requests.load(Ordering::Relaxed),
        "by_path": by_path,
        "streams_started": s.streams_started.load(Ordering::Relaxed),
        "streams_completed": s.streams_completed.load(Ordering::Relaxed),
        "streams_aborted": s.streams_aborted.load(Ordering::Relaxed),
        "in_flight": s.in_flight.load(Ordering::Relaxed).max(0),
        "tokens_issued": s.tokens_issued.load(Ordering::Relaxed),
    }))
}

async fn requests(State(s): State<Arc<Shared>>) -> Json<Value> {
    let Ok(log) = s.log.lock() else {
        return Json(Value::Array(Vec::new()));
    };
    let out = log
        .iter()
        .map(|e| {
            let mut headers = Map::new();
            for (k, v) in &e.headers {
                match headers.get_mut(k) {
                    Some(Value::String(prev)) => {
                        prev.push_str(", ");
                        prev.push_str(v);
                    }
                    _ => {
                        headers.insert(k.clone(), Value::String(v.clone()));
                    }
                }
            }
            let body = if e.body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&e.body).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&e.body).into_owned())
                })
            };
            let mut entry = json!({
                "path": e.route.path(),
                "version": format!("{:?}", e.version),
                "headers": headers,
                "body": body,
            });
            if let Some((path, extra)) = &e.detail {
                entry["path"] = Value::String(path.clone());
                if let (Some(o), Value::Object(x)) = (entry.as_object_mut(), extra) {
                    o.extend(x.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
            entry
        })
        .collect();
    Json(Value::Array(out))
}

async fn reset(State(s): State<Arc<Shared>>) -> StatusCode {
    for c in [
        &s.requests,
        &s.streams_started,
        &s.streams_completed,
        &s.streams_aborted,
        &s.tokens_issued,
    ] {
        c.store(0, Ordering::Relaxed);
    }
    for c in &s.by_path {
        c.store(0, Ordering::Relaxed);
    }
    if let Ok(mut log) = s.log.lock() {
        log.clear();
    }
    StatusCode::NO_CONTENT
}

/// Forgets every OAuth access token issued (204): the next Vertex call with one is a 401.
async fn revoke_tokens(State(s): State<Arc<Shared>>) -> StatusCode {
    if let Ok(mut t) = s.tokens.lock() {
        t.clear();
    }
    StatusCode::NO_CONTENT
}

/// The `name=value` pairs of a query string or form body, percent-decoded (`+` is a space).
pub(crate) fn form_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let dec = |x: &str| {
                String::from_utf8_lossy(&sigv4::percent_decode(&x.replace('+', " "))).into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

/// The path as received, with its query if any (percent-encoding kept), for the request log.
pub(crate) fn path_and_query(uri: &Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| uri.path().to_string(), |pq| pq.as_str().to_string())
}

/// The first value of `name` in the request's query.
pub(crate) fn query_param(uri: &Uri, name: &str) -> Option<String> {
    form_pairs(uri.query()?)
        .into_iter()
        .find_map(|(k, v)| (k == name).then_some(v))
}

async fn not_found(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if path.starts_with("/model/") {
        return bedrock::unknown_operation();
    }
    if path.starts_with("/openai/") {
        return azure::resource_not_found();
    }
    if ["/v1beta/", "/v1/projects/", "/v1beta1/projects/"]
        .iter()
        .any(|p| path.starts_with(p))
    {
        return gemini::GoogleError::new(
            StatusCode::NOT_FOUND,
            format!("The requested URL {path} was not found on this server."),
        )
        .into_response();
    }
    openai::error_response(
        StatusCode::NOT_FOUND,
        &format!("Invalid URL ({method} {})", uri.path()),
        "invalid_request_error",
        None,
        None,
    )
    .into_response()
}
