use serde_json::{json, Value};
use tollway_core::{
    ApiFamily, ChatRequest, ErrorKind, ImageSource, Message, Part, ResponseFormat, Retry, Role,
    StopReason, StreamEvent, ToolCall, ToolChoice, ToolDef, ToolResult, Usage,
};

use super::*;
use crate::eventstream::{write_message, EventStreamParser};

const LABEL: &str = "bedrock-us/anthropic.claude-sonnet-4-5-20250929-v1:0";

fn body(req: &ChatRequest) -> Value {
    let bytes = encode_request_as(req, LABEL).expect("encodes");
    serde_json::from_slice(&bytes).expect("json")
}

fn weather_tool() -> ToolDef {
    ToolDef {
        name: "get_weather".into(),
        description: Some("Weather in a city".into()),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        strict: None,
    }
}

#[test]
fn model_ids_are_one_percent_encoded_path_segment() {
    assert_eq!(
        model_path("anthropic.claude-3-haiku-20240307-v1:0", false),
        "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    );
    assert_eq!(
        model_path(
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            true
        ),
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream"
    );
    assert_eq!(
        model_path("mock?tokens=5", false),
        "/model/mock%3Ftokens%3D5/converse"
    );
}

#[test]
fn a_conversation_becomes_converse_messages() {
    let mut req = ChatRequest::simple("ignored", "What is in this picture?");
    req.messages.insert(
        0,
        Message {
            role: Role::System,
            content: vec![
                Part::text("Be brief."),
                Part::Text {
                    text: "A long cached preamble".into(),
                    cache_control: Some(json!({"type": "ephemeral"})),
                },
            ],
        },
    );
    req.messages[1]
        .content
        .push(Part::Image(ImageSource::Base64 {
            media_type: "image/png".into(),
            data: "iVBORw0KGgo=".into(),
        }));
    req.messages.push(Message {
        role: Role::Assistant,
        content: vec![
            Part::Thinking {
                text: "The user wants weather.".into(),
                signature: Some("sig-1".into()),
            },
            Part::Thinking {
                text: "from another vendor".into(),
                signature: None,
            },
            Part::ToolCall(ToolCall {
                id: "tooluse_1".into(),
                name: "get_weather".into(),
                arguments: r#"{"city": "Paris"}"#.into(),
            }),
        ],
    });
    req.messages.push(Message {
        role: Role::Tool,
        content: vec![Part::ToolResult(ToolResult {
            tool_call_id: "tooluse_1".into(),
            content: vec![Part::text("18 C")],
            is_error: true,
        })],
    });
    // a user turn right after the tool turn: merged into one user message
    req.messages
        .push(Message::text(Role::User, "And tomorrow?"));
    req.max_tokens = Some(256);
    req.temperature = Some(0.2);
    req.top_p = Some(0.9);
    req.top_k = Some(40);
    req.stop = vec!["END".into()];
    req.tools = vec![weather_tool()];
    req.tool_choice = Some(ToolChoice::Tool("get_weather".into()));
    req.betas = vec!["context-1m-2025-08-07".into()];
    let b = body(&req);
    assert_eq!(
        b,
        json!({
            "system": [
                {"text": "Be brief."},
                {"text": "A long cached preamble"},
                {"cachePoint": {"type": "default"}}
            ],
            "messages": [
                {"role": "user", "content": [
                    {"text": "What is in this picture?"},
                    {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}
                ]},
                {"role": "assistant", "content": [
                    {"reasoningContent": {"reasoningText": {
                        "text": "The user wants weather.", "signature": "sig-1"}}},
                    {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather",
                                 "input": {"city": "Paris"}}}
                ]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "18 C"}],
                                    "status": "error"}},
                    {"text": "And tomorrow?"}
                ]}
            ],
            "inferenceConfig": {"maxTokens": 256, "temperature": 0.2, "topP": 0.9,
                                "stopSequences": ["END"]},
            "additionalModelRequestFields": {"top_k": 40,
                                             "anthropic_beta": ["context-1m-2025-08-07"]},
            "toolConfig": {
                "tools": [{"toolSpec": {"name": "get_weather", "description": "Weather in a city",
                    "inputSchema": {"json": {"type": "object",
                        "properties": {"city": {"type": "string"}}}}}}],
                "toolChoice": {"tool": {"name": "get_weather"}}
            }
        })
    );
}

#[test]
fn tool_choices_map_and_none_offers_no_tools() {
    let mut req = ChatRequest::simple("m", "hi");
    req.tools = vec![weather_tool()];
    assert_eq!(body(&req)["toolConfig"]["toolChoice"], json!({"auto": {}}));
    req.tool_choice = Some(ToolChoice::Required);
    assert_eq!(body(&req)["toolConfig"]["toolChoice"], json!({"any": {}}));
    req.tool_choice = Some(ToolChoice::None);
    assert!(body(&req).get("toolConfig").is_none());
    // with tool blocks in the conversation, the tools stay (Bedrock requires them), unforced
    req.messages.push(Message {
        role: Role::Assistant,
        content: vec![Part::ToolCall(ToolCall {
            id: "t".into(),
            name: "get_weather".into(),
            arguments: String::new(),
        })],
    });
    let b = body(&req);
    assert!(b["toolConfig"].get("toolChoice").is_none(), "{b}");
    assert_eq!(b["toolConfig"]["tools"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        b["messages"][1]["content"][0]["toolUse"]["input"],
        json!({})
    );
    // a minimal request carries no optional sections
    let b = body(&ChatRequest::simple("m", "hi"));
    assert_eq!(
        b,
        json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]})
    );
}

#[test]
fn what_converse_cannot_take_is_refused_by_name() {
    let mut req = ChatRequest::simple("m", "hi");
    req.messages[0].content.push(Part::Image(ImageSource::Url(
        "https://example.com/cat.png".into(),
    )));
    let e = encode_request_as(&req, LABEL).expect_err("a URL image");
    assert_eq!(e.kind, ErrorKind::InvalidRequest);
    assert!(e.message.contains("image by URL"), "{}", e.message);
    assert!(e.message.contains(LABEL), "{}", e.message);

    let mut req = ChatRequest::simple("m", "hi");
    req.messages[0]
        .content
        .push(Part::Image(ImageSource::Url("s3://bucket/cat.jpg".into())));
    assert_eq!(
        body(&req)["messages"][0]["content"][1],
        json!({"image": {"format": "jpeg", "source": {"s3Location": {"uri": "s3://bucket/cat.jpg"}}}})
    );

    let mut req = ChatRequest::simple("m", "hi");
    req.messages[0]
        .content
        .push(Part::Image(ImageSource::Base64 {
            media_type: "image/tiff".into(),
            data: "AAAA".into(),
        }));
    let e = encode_request_as(&req, LABEL).expect_err("tiff");
    assert!(e.message.contains("image/tiff"), "{}", e.message);

    let mut req = ChatRequest::simple("m", "hi");
    req.response_format = Some(ResponseFormat::JsonObject);
    let e = encode_request_as(&req, LABEL).expect_err("json mode");
    assert_eq!(e.param.as_deref(), Some("response_format"));
    // a schema goes as outputConfig, the schema itself as a JSON string
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}},
                        "required": ["city"], "additionalProperties": false});
    req.response_format = Some(ResponseFormat::JsonSchema {
        name: "place".into(),
        description: Some("A city".into()),
        schema: schema.clone(),
        strict: Some(true),
    });
    let b = body(&req);
    let def = &b["outputConfig"]["textFormat"];
    assert_eq!(def["type"], "json_schema");
    assert_eq!(def["structure"]["jsonSchema"]["name"], "place");
    assert_eq!(def["structure"]["jsonSchema"]["description"], "A city");
    let sent: Value = serde_json::from_str(
        def["structure"]["jsonSchema"]["schema"]
            .as_str()
            .expect("a string"),
    )
    .expect("JSON");
    assert_eq!(sent, schema);

    let mut req = ChatRequest::simple("m", "hi");
    req.messages.push(Message {
        role: Role::Assistant,
        content: vec![Part::ToolCall(ToolCall {
            id: "call_1".into(),
            name: "f".into(),
            arguments: "[1, 2]".into(),
        })],
    });
    let e = encode_request_as(&req, LABEL).expect_err("array arguments");
    assert!(e.message.contains("call_1"), "{}", e.message);
}

#[test]
fn extra_fields_follow_the_client_api() {
    let mut req = ChatRequest::simple("m", "hi");
    req.extra.family = ApiFamily::OpenAi;
    req.extra.fields.insert("store".into(), json!(true));
    req.extra.fields.insert("logprobs".into(), json!(false));
    assert!(encode_request_as(&req, LABEL).is_ok(), "harmless or off");
    req.extra
        .fields
        .insert("logit_bias".into(), json!({"50256": -100}));
    let e = encode_request_as(&req, LABEL).expect_err("logit_bias");
    assert!(
        e.message.contains("OpenAI parameter `logit_bias`"),
        "{}",
        e.message
    );

    let mut req = ChatRequest::simple("m", "hi");
    req.extra.family = ApiFamily::Anthropic;
    req.extra.fields.insert(
        "thinking".into(),
        json!({"type": "enabled", "budget_tokens": 2048}),
    );
    req.extra
        .fields
        .insert("metadata".into(), json!({"user_id": "u"}));
    assert_eq!(
        body(&req)["additionalModelRequestFields"],
        json!({"thinking": {"type": "enabled", "budget_tokens": 2048}})
    );
    req.extra.fields.insert("container".into(), json!("c"));
    let e = encode_request_as(&req, LABEL).expect_err("container");
    assert_eq!(e.param.as_deref(), Some("container"));
}

#[test]
fn answers_decode_from_the_api_reference_shape() {
    let answer = json!({
        "output": {"message": {"role": "assistant", "content": [
            {"reasoningContent": {"reasoningText": {"text": "Think.", "signature": "sig"}}},
            {"reasoningContent": {"redactedContent": "AAAA"}},
            {"text": "Let me check."},
            {"toolUse": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "top_song",
                         "input": {"sign": "WZPZ"}}}
        ]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 375, "outputTokens": 80, "totalTokens": 470,
                  "cacheReadInputTokens": 10, "cacheWriteInputTokens": 5},
        "metrics": {"latencyMs": 1275}
    });
    let r = decode_response(
        answer.to_string().as_bytes(),
        "0e5fa3b6-1c3e-4d2b-9a1e-f2a1c5f0d9e7",
        "anthropic.claude-3-haiku-20240307-v1:0",
    )
    .expect("decodes");
    assert_eq!(r.id, "0e5fa3b6-1c3e-4d2b-9a1e-f2a1c5f0d9e7");
    assert_eq!(r.model, "anthropic.claude-3-haiku-20240307-v1:0");
    assert_eq!(r.stop_reason, StopReason::ToolUse);
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 375,
            output_tokens: 80,
            cache_read_tokens: 10,
            cache_write_tokens: 5,
            reasoning_tokens: 0
        }
    );
    assert_eq!(
        r.content.len(),
        3,
        "the redacted block has no canonical part"
    );
    assert_eq!(
        r.content[0],
        Part::Thinking {
            text: "Think.".into(),
            signature: Some("sig".into())
        }
    );
    assert_eq!(r.text(), "Let me check.");
    match &r.content[2] {
        Part::ToolCall(c) => {
            assert_eq!(c.name, "top_song");
            let args: Value = serde_json::from_str(&c.arguments).expect("json");
            assert_eq!(args, json!({"sign": "WZPZ"}));
        }
        other => panic!("{other:?}"),
    }
    for (reason, want) in [
        ("end_turn", StopReason::EndTurn),
        ("max_tokens", StopReason::MaxTokens),
        ("stop_sequence", StopReason::StopSequence),
        ("guardrail_intervened", StopReason::ContentFilter),
        ("content_filtered", StopReason::ContentFilter),
        (
            "model_context_window_exceeded",
            StopReason::Other("model_context_window_exceeded".into()),
        ),
    ] {
        let a = json!({"output": {"message": {"role": "assistant", "content": []}},
                       "stopReason": reason});
        let r = decode_response(a.to_string().as_bytes(), "", "m").expect("decodes");
        assert_eq!(r.stop_reason, want);
        assert!(!r.id.is_empty());
    }
    for bad in [
        &b"not json"[..],
        br#"{"stopReason": "end_turn"}"#,
        br#"{"output": {"message": {"content": []}}}"#,
        br#"{"output": {"message": {"content": [{"text": 5}]}}, "stopReason": "end_turn"}"#,
        br#"{"output": {"message": {"content": [{"toolUse": {"name": "x"}}]}}, "stopReason": "end_turn"}"#,
    ] {
        let e = decode_response(bad, "", "m").expect_err("bad answer");
        assert_eq!(e.kind, ErrorKind::InvalidResponse);
    }
}

#[test]
fn errors_are_classified_by_type_and_status() {
    let e = decode_error(
        429,
        Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
        br#"{"message":"Too many requests, please wait before trying again."}"#,
        None,
    );
    assert_eq!(e.kind, ErrorKind::RateLimited);
    assert_eq!(e.upstream_status, Some(429));
    assert_eq!(
        e.message,
        "Too many requests, please wait before trying again."
    );
    let e = decode_error(
        400,
        Some("ValidationException"),
        br#"{"message":"Input is too long for requested model."}"#,
        None,
    );
    assert_eq!(e.kind, ErrorKind::ContextWindowExceeded);
    let e = decode_error(
        400,
        Some("ValidationException"),
        br#"{"message":"messages: field required"}"#,
        None,
    );
    assert_eq!(e.kind, ErrorKind::InvalidRequest);
    assert_eq!(e.retry, Retry::Never);
    let e = decode_error(
        400,
        Some("ServiceQuotaExceededException"),
        br#"{"message":"quota"}"#,
        Some(std::time::Duration::from_secs(2)),
    );
    assert_eq!(e.kind, ErrorKind::RateLimited);
    assert!(e.is_retriable());
    let e = decode_error(
        503,
        Some("ServiceUnavailableException"),
        br#"{"message":"busy"}"#,
        None,
    );
    assert_eq!(e.kind, ErrorKind::Overloaded);
    let e = decode_error(
        403,
        Some("AccessDeniedException"),
        br#"{"Message":"denied"}"#,
        None,
    );
    assert_eq!(e.kind, ErrorKind::UpstreamConfig);
    assert_eq!(e.message, "denied");
    let e = decode_error(408, Some("ModelTimeoutException"), b"", None);
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(e.message.contains("408"), "{}", e.message);
}

fn event(kind: &str, payload: Value) -> Vec<u8> {
    write_message(
        &[
            (":event-type", kind),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

fn decode_all(bytes: &[u8]) -> Result<Vec<StreamEvent>, tollway_core::ProviderError> {
    let mut parser = EventStreamParser::new();
    let mut dec = StreamDecoder::new("req-1", "m");
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(f) = parser.next(&mut rest)? {
        dec.feed_into(&f, &mut out)?;
    }
    parser.finish()?;
    out.extend(dec.finish()?);
    Ok(out)
}

#[test]
fn streams_decode_to_canonical_events() {
    let mut bytes = Vec::new();
    for (kind, payload) in [
        (
            "messageStart",
            json!({"role": "assistant", "p": "abcdefghijklmnopqrs"}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "Hmm."}}, "p": "ab"}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "sig"}}}),
        ),
        ("contentBlockStop", json!({"contentBlockIndex": 0})),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"text": "Hello"}}),
        ),
        ("contentBlockStop", json!({"contentBlockIndex": 1})),
        (
            "contentBlockStart",
            json!({"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "tooluse_1", "name": "f"}}}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 2, "delta": {"toolUse": {"input": "{\"a\":"}}}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 2, "delta": {"toolUse": {"input": "1}"}}}),
        ),
        ("contentBlockStop", json!({"contentBlockIndex": 2})),
        ("messageStop", json!({"stopReason": "tool_use"})),
        (
            "metadata",
            json!({"usage": {"inputTokens": 12, "outputTokens": 7, "totalTokens": 19},
                   "metrics": {"latencyMs": 300}, "p": "abc"}),
        ),
    ] {
        bytes.extend(event(kind, payload));
    }
    let events = decode_all(&bytes).expect("valid stream");
    assert_eq!(
        events,
        vec![
            StreamEvent::Start {
                id: "req-1".into(),
                model: "m".into(),
                usage: Usage::default()
            },
            StreamEvent::ThinkingDelta {
                index: 0,
                text: "Hmm.".into()
            },
            StreamEvent::ThinkingSignature {
                index: 0,
                signature: "sig".into()
            },
            StreamEvent::BlockStop { index: 0 },
            StreamEvent::TextDelta {
                index: 1,
                text: "Hello".into()
            },
            StreamEvent::BlockStop { index: 1 },
            StreamEvent::ToolCallStart {
                index: 2,
                id: "tooluse_1".into(),
                name: "f".into()
            },
            StreamEvent::ToolCallDelta {
                index: 2,
                arguments: "{\"a\":".into()
            },
            StreamEvent::ToolCallDelta {
                index: 2,
                arguments: "1}".into()
            },
            StreamEvent::BlockStop { index: 2 },
            StreamEvent::Usage(Usage {
                input_tokens: 12,
                output_tokens: 7,
                ..Usage::default()
            }),
            StreamEvent::Finish {
                stop_reason: StopReason::ToolUse,
                stop_sequence: None
            },
        ]
    );
}

#[test]
fn broken_streams_are_errors() {
    // an exception message mid-stream
    let mut bytes = event("messageStart", json!({"role": "assistant"}));
    bytes.extend(write_message(
        &[
            (":message-type", "exception"),
            (":exception-type", "throttlingException"),
            (":content-type", "application/json"),
        ],
        br#"{"message":"Too many tokens, please wait before trying again."}"#,
    ));
    let e = decode_all(&bytes).expect_err("exception");
    assert_eq!(e.kind, ErrorKind::RateLimited);
    assert!(e.message.contains("Too many tokens"), "{}", e.message);
    assert!(e.message.contains("throttlingException"), "{}", e.message);

    // the body ends before messageStop
    let mut bytes = event("messageStart", json!({"role": "assistant"}));
    bytes.extend(event(
        "contentBlockDelta",
        json!({"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
    ));
    let e = decode_all(&bytes).expect_err("cut short");
    assert_eq!(e.kind, ErrorKind::InvalidResponse);

    // a stop without its metadata still finishes (usage unknown)
    let mut bytes = event("messageStart", json!({"role": "assistant"}));
    bytes.extend(event("messageStop", json!({"stopReason": "end_turn"})));
    let events = decode_all(&bytes).expect("finishes");
    assert!(matches!(events.last(), Some(StreamEvent::Finish { .. })));

    // a payload that is not JSON, a delta without an index
    for bad in [
        write_message(
            &[
                (":message-type", "event"),
                (":event-type", "contentBlockDelta"),
            ],
            b"{oops",
        ),
        event("contentBlockDelta", json!({"delta": {"text": "x"}})),
        event("contentBlockDelta", json!({"contentBlockIndex": 0})),
    ] {
        let e = decode_all(&bad).expect_err("bad event");
        assert_eq!(e.kind, ErrorKind::InvalidResponse, "{}", e.message);
    }
}

#[test]
fn token_counts_ask_for_the_foundation_model_in_the_right_shape() {
    assert_eq!(
        count_model("us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
        Some("anthropic.claude-sonnet-4-5-20250929-v1:0")
    );
    assert_eq!(
        count_model("global.anthropic.claude-haiku-4-5-20251001-v1:0"),
        Some("anthropic.claude-haiku-4-5-20251001-v1:0")
    );
    assert_eq!(
        count_model("amazon.nova-pro-v1:0"),
        Some("amazon.nova-pro-v1:0")
    );
    assert_eq!(
        count_model("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
        None
    );
    assert_eq!(
        count_path("anthropic.claude-sonnet-4-5-20250929-v1:0"),
        "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/count-tokens"
    );

    let mut req = ChatRequest::simple("m", "How many tokens?");
    req.messages
        .insert(0, Message::text(Role::System, "Be brief."));
    req.tools = vec![weather_tool()];
    req.betas = vec!["context-1m-2025-08-07".into()];
    // Claude: an InvokeModel body, tools included
    let bytes =
        encode_count_tokens_request(&req, "anthropic.claude-sonnet-4-5-20250929-v1:0", LABEL)
            .expect("encodes");
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    let body: Value = serde_json::from_str(
        v["input"]["invokeModel"]["body"]
            .as_str()
            .expect("a string body"),
    )
    .expect("json body");
    assert_eq!(body["anthropic_version"], "bedrock-2023-05-31");
    assert!(
        body.get("model").is_none() && body.get("stream").is_none(),
        "{body}"
    );
    assert_eq!(body["tools"][0]["name"], "get_weather");
    assert_eq!(body["anthropic_beta"], json!(["context-1m-2025-08-07"]));
    // any other model: Converse's messages and system only
    let bytes = encode_count_tokens_request(&req, "amazon.nova-pro-v1:0", LABEL).expect("encodes");
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    let converse = v["input"]["converse"].as_object().expect("converse");
    let keys: Vec<&String> = converse.keys().collect();
    assert_eq!(keys, ["messages", "system"]);
    assert_eq!(
        decode_count_tokens_response(br#"{"inputTokens": 42}"#).expect("count"),
        42
    );
    assert_eq!(
        decode_count_tokens_response(b"{}").unwrap_err().kind,
        ErrorKind::InvalidResponse
    );
}

fn embeddings_request(input: &[&str], dimensions: Option<u32>) -> tollway_core::EmbeddingsRequest {
    tollway_core::EmbeddingsRequest {
        model: "m".into(),
        input: input.iter().map(|s| s.to_string()).collect(),
        dimensions,
        input_type: None,
        user: Some("u-1".into()),
    }
}

fn embeddings_bodies(e: Embedder, req: &tollway_core::EmbeddingsRequest) -> Vec<Value> {
    encode_embeddings_requests(e, req, "aws/m")
        .expect("encodes")
        .iter()
        .map(|b| serde_json::from_slice(b).expect("json"))
        .collect()
}

#[test]
fn embedding_models_are_known_by_their_ids_profiles_and_arns() {
    use Embedder::*;
    for (id, want) in [
        ("amazon.titan-embed-text-v1", Some(TitanV1)),
        ("amazon.titan-embed-text-v2:0", Some(TitanV2)),
        ("amazon.titan-embed-image-v1", Some(TitanMultimodal)),
        ("cohere.embed-english-v3", Some(CohereV3)),
        ("cohere.embed-multilingual-v3", Some(CohereV3)),
        ("cohere.embed-v4:0", Some(CohereV4)),
        ("us.cohere.embed-v4:0", Some(CohereV4)),
        (
            "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0",
            Some(TitanV2),
        ),
        // an application profile's ARN names no model; chat models are not embedders
        (
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123",
            None,
        ),
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", None),
        ("amazon.nova-pro-v1:0", None),
    ] {
        assert_eq!(Embedder::of(id), want, "{id}");
    }
    assert_eq!(
        invoke_path("amazon.titan-embed-text-v2:0"),
        "/model/amazon.titan-embed-text-v2%3A0/invoke"
    );
}

#[test]
fn embeddings_requests_are_written_in_each_models_own_body() {
    // Titan: one text a call; the default size is not sent
    let req = embeddings_request(&["a \"quoted\" text", "é"], Some(512));
    assert_eq!(
        embeddings_bodies(Embedder::TitanV2, &req),
        vec![
            json!({"inputText": "a \"quoted\" text", "dimensions": 512}),
            json!({"inputText": "é", "dimensions": 512}),
        ]
    );
    let req = embeddings_request(&["x"], Some(1024));
    assert_eq!(
        embeddings_bodies(Embedder::TitanV2, &req),
        vec![json!({"inputText": "x"})]
    );
    assert_eq!(
        embeddings_bodies(Embedder::TitanV1, &embeddings_request(&["x"], None)),
        vec![json!({"inputText": "x"})]
    );
    assert_eq!(
        embeddings_bodies(
            Embedder::TitanMultimodal,
            &embeddings_request(&["x"], Some(384))
        ),
        vec![json!({"inputText": "x", "embeddingConfig": {"outputEmbeddingLength": 384}})]
    );
    // Cohere: 96 texts a call, `search_document` unless the request says what they are for
    let many: Vec<String> = (0..200).map(|i| format!("t{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let bodies = embeddings_bodies(Embedder::CohereV3, &embeddings_request(&refs, None));
    assert_eq!(bodies.len(), 3);
    assert_eq!(bodies[0]["texts"].as_array().map(Vec::len), Some(96));
    assert_eq!(
        bodies[2]["texts"],
        json!(["t192", "t193", "t194", "t195", "t196", "t197", "t198", "t199"])
    );
    assert_eq!(bodies[1]["texts"][0], "t96");
    assert!(bodies
        .iter()
        .all(|b| b["input_type"] == "search_document" && b.get("embedding_types").is_none()));
    let mut query = embeddings_request(&["q"], Some(256));
    query.input_type = Some(tollway_core::InputType::SearchQuery);
    assert_eq!(
        embeddings_bodies(Embedder::CohereV4, &query),
        vec![json!({"texts": ["q"], "input_type": "search_query",
                    "embedding_types": ["float"], "output_dimension": 256})]
    );
}

#[test]
fn sizes_a_model_cannot_return_are_refused_by_name_before_any_call() {
    for (e, dims, sizes) in [
        (Embedder::TitanV1, 1024, "1536"),
        (Embedder::TitanV2, 100, "256, 512, 1024"),
        (Embedder::TitanMultimodal, 512, "256, 384, 1024"),
        (Embedder::CohereV3, 512, "1024"),
        (Embedder::CohereV4, 2048, "256, 512, 1024, 1536"),
    ] {
        let err = encode_embeddings_requests(e, &embeddings_request(&["x"], Some(dims)), "aws/m")
            .expect_err("refused");
        assert_eq!(err.kind, ErrorKind::InvalidRequest);
        assert_eq!(err.param.as_deref(), Some("dimensions"));
        assert_eq!(
            err.message,
            format!("model aws/m returns {sizes} dimensions, not {dims}"),
            "{e:?}"
        );
    }
    // a model's own size is accepted, and not sent to models that take none
    let bodies = embeddings_bodies(Embedder::CohereV3, &embeddings_request(&["x"], Some(1024)));
    assert!(bodies[0].get("output_dimension").is_none());
}

#[test]
fn embeddings_answers_are_read_in_every_shape_with_their_counts() {
    // Titan: the count in the body wins over the header
    let (v, n) = decode_embeddings_response(
        Embedder::TitanV2,
        br#"{"embedding": [0.5, -1, 2e-3], "inputTextTokenCount": 7, "embeddingsByType": {"float": [0.5, -1, 2e-3]}}"#,
        1,
        Some(99),
    )
    .expect("an answer");
    assert_eq!((v, n), (vec![vec![0.5, -1.0, 0.002]], 7));
    // Cohere: floats, or by type; the count from the header, or none (the gateway counts)
    let (v, n) = decode_embeddings_response(
        Embedder::CohereV3,
        br#"{"id": "x", "embeddings": [[1, 2], [3, 4]], "response_type": "embeddings_floats", "texts": ["a", "b"]}"#,
        2,
        Some(5),
    )
    .expect("an answer");
    assert_eq!((v, n), (vec![vec![1.0, 2.0], vec![3.0, 4.0]], 5));
    let (v, n) = decode_embeddings_response(
        Embedder::CohereV4,
        br#"{"id": "x", "embeddings": {"float": [[1.5]]}, "response_type": "embeddings_by_type"}"#,
        1,
        None,
    )
    .expect("an answer");
    assert_eq!((v, n), (vec![vec![1.5]], 0));
    // refused, by name
    for (e, body, texts, want) in [
        (
            Embedder::CohereV3,
            &br#"{"embeddings": [[1]]}"#[..],
            2,
            "1 embeddings for 2 inputs",
        ),
        (
            Embedder::CohereV3,
            br#"{"embeddings": [[]]}"#,
            1,
            "an empty embedding",
        ),
        (
            Embedder::TitanV2,
            br#"{"embedding": ["x"]}"#,
            1,
            "does not fit the expected format",
        ),
        (
            Embedder::TitanV2,
            br#"{"embedding": [1"#,
            1,
            "not valid JSON",
        ),
        (
            Embedder::CohereV4,
            br#"{"embeddings": {"int8": [[1]]}}"#,
            1,
            "does not fit",
        ),
    ] {
        let err = decode_embeddings_response(e, body, texts, None).expect_err("refused");
        assert_eq!(err.kind, ErrorKind::InvalidResponse, "{}", err.message);
        assert!(err.message.contains(want), "{}", err.message);
    }
}
