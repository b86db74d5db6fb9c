use serde_json::{json, Value};
use tollway_core::{
    ApiFamily, ChatRequest, ErrorKind, ImageSource, Message, Part, ResponseFormat, Retry, Role,
    StopReason, StreamEvent, ToolCall, ToolChoice, ToolDef, ToolResult, Usage,
};

use super::*;
use crate::sse::SseParser;

mod equivalence;
mod reference;

const LABEL: &str = "gemini/gemini-2.5-flash";

fn body_for(req: &ChatRequest, model: &str) -> Value {
    let bytes = encode_request_as(req, model, LABEL).expect("encodes");
    serde_json::from_slice(&bytes).expect("json")
}

fn body(req: &ChatRequest) -> Value {
    body_for(req, "gemini-2.5-flash")
}

fn weather_tool() -> ToolDef {
    ToolDef {
        name: "get_weather".into(),
        description: Some("Weather in a city".into()),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"], "additionalProperties": false}),
        strict: None,
    }
}

fn call(id: &str, args: &str) -> Part {
    Part::ToolCall(ToolCall {
        id: id.into(),
        name: "get_weather".into(),
        arguments: args.into(),
    })
}

fn result(id: &str, text: &str, is_error: bool) -> Message {
    Message {
        role: Role::Tool,
        content: vec![Part::ToolResult(ToolResult {
            tool_call_id: id.into(),
            content: vec![Part::text(text)],
            is_error,
        })],
    }
}

#[test]
fn urls_name_the_model_as_one_segment_and_the_method() {
    assert_eq!(crate::path_segment("gemini-2.5-flash"), "gemini-2.5-flash");
    assert_eq!(
        crate::path_segment("gemini-2.5-flash?tokens=5"),
        "gemini-2.5-flash%3Ftokens%3D5"
    );
    assert_eq!(method(false), ":generateContent");
    assert_eq!(method(true), ":streamGenerateContent?alt=sse");
}

#[test]
fn a_conversation_becomes_contents_with_a_system_instruction() {
    let mut req = ChatRequest::simple("ignored", "What is in this picture?");
    req.messages
        .insert(0, Message::text(Role::System, "Be brief."));
    req.messages[1]
        .content
        .push(Part::Image(ImageSource::Base64 {
            media_type: "image/png".into(),
            data: "iVBORw0KGgo=".into(),
        }));
    req.messages.push(Message::text(Role::Assistant, "A cat."));
    req.messages
        .push(Message::text(Role::User, "And this one?"));
    req.messages.push(Message {
        role: Role::User,
        content: vec![Part::Image(ImageSource::Url(
            "gs://bucket/photos/dog.JPG".into(),
        ))],
    });
    req.max_tokens = Some(100);
    req.temperature = Some(0.2);
    req.top_p = Some(0.9);
    req.top_k = Some(40);
    req.stop = vec!["END".into()];
    let b = body(&req);
    assert_eq!(
        b,
        json!({
            "contents": [
                {"role": "user", "parts": [
                    {"text": "What is in this picture?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]},
                {"role": "model", "parts": [{"text": "A cat."}]},
                {"role": "user", "parts": [
                    {"text": "And this one?"},
                    {"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://bucket/photos/dog.JPG"}}]}
            ],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "generationConfig": {"maxOutputTokens": 100, "temperature": 0.2, "topP": 0.9,
                                 "topK": 40, "stopSequences": ["END"]}
        })
    );
}

#[test]
fn an_image_url_without_a_known_type_is_refused_by_name() {
    let mut req = ChatRequest::simple("m", "look");
    req.messages[0].content.push(Part::Image(ImageSource::Url(
        "https://example.com/pic".into(),
    )));
    let e = encode_request_as(&req, "gemini-2.5-flash", LABEL).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidRequest);
    assert!(
        e.message.contains("https://example.com/pic"),
        "{}",
        e.message
    );
    assert!(e.message.contains(LABEL), "{}", e.message);
}

#[test]
fn tools_calls_and_results_cross_with_names_found_from_ids() {
    let mut req = ChatRequest::simple("m", "Weather in Paris and Oslo?");
    req.tools = vec![weather_tool()];
    req.tool_choice = Some(ToolChoice::Tool("get_weather".into()));
    req.messages.push(Message {
        role: Role::Assistant,
        content: vec![
            Part::text("Checking."),
            call("call_1", r#"{"city":"Paris"}"#),
            call("call_2", ""),
        ],
    });
    req.messages
        .push(result("call_1", r#"{"temp_c": 18}"#, false));
    req.messages.push(result("call_2", "no such city", true));
    let b = body(&req);
    assert_eq!(
        b["contents"][1],
        json!({"role": "model", "parts": [
            {"text": "Checking."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "get_weather", "args": {}}}]})
    );
    // the two results are one user turn, as Gemini wants parallel answers
    assert_eq!(
        b["contents"][2],
        json!({"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp_c": 18}}},
            {"functionResponse": {"name": "get_weather", "response": {"error": "no such city"}}}]})
    );
    assert_eq!(
        b["tools"],
        json!([{"functionDeclarations": [{
            "name": "get_weather", "description": "Weather in a city",
            "parametersJsonSchema": weather_tool().parameters}]}])
    );
    assert_eq!(
        b["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
    );
    for (choice, mode) in [
        (ToolChoice::Auto, "AUTO"),
        (ToolChoice::None, "NONE"),
        (ToolChoice::Required, "ANY"),
    ] {
        req.tool_choice = Some(choice);
        assert_eq!(
            body(&req)["toolConfig"]["functionCallingConfig"],
            json!({ "mode": mode })
        );
    }
    // a plain-text result that is not an object is wrapped
    let mut plain = req.clone();
    plain.messages[2] = result("call_1", "18 degrees", false);
    assert_eq!(
        body(&plain)["contents"][2]["parts"][0]["functionResponse"]["response"],
        json!({"content": "18 degrees"})
    );
}

#[test]
fn a_result_for_an_unknown_call_and_bad_arguments_are_refused() {
    let mut req = ChatRequest::simple("m", "hi");
    req.messages.push(result("call_9", "x", false));
    let e = encode_request_as(&req, "gemini-2.5-flash", LABEL).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidRequest);
    assert!(e.message.contains("call_9"), "{}", e.message);

    let mut req = ChatRequest::simple("m", "hi");
    req.messages.push(Message {
        role: Role::Assistant,
        content: vec![call("c", "[1, 2]")],
    });
    let e = encode_request_as(&req, "gemini-2.5-flash", LABEL).unwrap_err();
    assert!(e.message.contains("JSON object"), "{}", e.message);
}

#[test]
fn thought_signatures_go_back_on_their_calls_and_gemini_3_gets_the_documented_stand_in() {
    let turn = |parts: Vec<Part>| {
        let mut req = ChatRequest::simple("m", "Weather?");
        req.tools = vec![weather_tool()];
        req.messages.push(Message {
            role: Role::Assistant,
            content: parts,
        });
        req.messages.push(result("a", "{}", false));
        req
    };
    let signed = turn(vec![
        Part::Thinking {
            text: String::new(),
            signature: Some(format!("{SIGNATURE_PREFIX}c2lnbmVk")),
        },
        call("a", "{}"),
    ]);
    for model in ["gemini-2.5-flash", "gemini-3-pro-preview"] {
        assert_eq!(
            body_for(&signed, model)["contents"][1]["parts"][0]["thoughtSignature"],
            json!("c2lnbmVk"),
            "{model}"
        );
    }
    // an OpenAI client lost the signature: Gemini 3 gets the stand-in on the first call only
    let lost = turn(vec![call("a", "{}"), call("b", "{}")]);
    let b3 = body_for(&lost, "gemini-3-flash-preview");
    assert_eq!(
        b3["contents"][1]["parts"][0]["thoughtSignature"],
        json!("skip_thought_signature_validator")
    );
    assert!(b3["contents"][1]["parts"][1]
        .get("thoughtSignature")
        .is_none());
    let b25 = body_for(&lost, "gemini-2.5-pro");
    assert!(b25["contents"][1]["parts"][0]
        .get("thoughtSignature")
        .is_none());
    // another vendor's signed thinking is not Gemini's to read
    let foreign = turn(vec![
        Part::Thinking {
            text: "hmm".into(),
            signature: Some("EqQBCkYIB...".into()),
        },
        call("a", "{}"),
    ]);
    let b = body_for(&foreign, "gemini-2.5-flash");
    assert_eq!(
        b["contents"][1]["parts"],
        json!([{"functionCall": {"name": "get_weather", "args": {}}}])
    );
}

#[test]
fn gemini_signatures_never_reach_anthropic_or_bedrock() {
    let mut req = ChatRequest::simple("m", "hi");
    req.messages.push(Message {
        role: Role::Assistant,
        content: vec![
            Part::Thinking {
                text: String::new(),
                signature: Some(format!("{SIGNATURE_PREFIX}abc")),
            },
            Part::text("Hello"),
        ],
    });
    req.messages.push(Message::text(Role::User, "again"));
    let a = crate::anthropic::encode_request(&req, "anthropic/claude").expect("anthropic");
    assert!(!String::from_utf8_lossy(&a).contains("abc"));
    let b = crate::bedrock::encode_request_as(&req, "bedrock/claude").expect("bedrock");
    assert!(!String::from_utf8_lossy(&b).contains("abc"));
}

#[test]
fn response_formats_and_the_other_apis_fields() {
    let mut req = ChatRequest::simple("m", "JSON please");
    req.response_format = Some(ResponseFormat::JsonObject);
    assert_eq!(
        body(&req)["generationConfig"],
        json!({"responseMimeType": "application/json"})
    );
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    req.response_format = Some(ResponseFormat::JsonSchema {
        name: "thing".into(),
        description: None,
        schema: schema.clone(),
        strict: Some(true),
    });
    assert_eq!(
        body(&req)["generationConfig"],
        json!({"responseMimeType": "application/json", "responseJsonSchema": schema})
    );

    let mut req = ChatRequest::simple("m", "hi");
    req.extra.family = ApiFamily::OpenAi;
    req.extra.fields.insert("seed".into(), json!(7));
    req.extra
        .fields
        .insert("presence_penalty".into(), json!(0.5));
    req.extra
        .fields
        .insert("frequency_penalty".into(), json!(0.25));
    req.extra
        .fields
        .insert("reasoning_effort".into(), json!("low"));
    req.extra.fields.insert("store".into(), json!(true));
    assert_eq!(
        body(&req)["generationConfig"],
        json!({"seed": 7, "presencePenalty": 0.5, "frequencyPenalty": 0.25,
               "thinkingConfig": {"thinkingBudget": 1024}})
    );
    assert_eq!(
        body_for(&req, "gemini-3-pro-preview")["generationConfig"]["thinkingConfig"],
        json!({"thinkingLevel": "low"})
    );
    req.extra.fields.insert("logprobs".into(), json!(true));
    let e = encode_request_as(&req, "gemini-2.5-flash", LABEL).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("logprobs"));
    assert!(e.message.contains("`logprobs`"), "{}", e.message);

    let mut req = ChatRequest::simple("m", "think");
    req.extra.family = ApiFamily::Anthropic;
    req.extra.fields.insert(
        "thinking".into(),
        json!({"type": "enabled", "budget_tokens": 2048}),
    );
    req.extra
        .fields
        .insert("metadata".into(), json!({"user_id": "u"}));
    assert_eq!(
        body(&req)["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 2048, "includeThoughts": true})
    );
    req.extra.fields.insert("container".into(), json!("c"));
    let e = encode_request_as(&req, "gemini-2.5-flash", LABEL).unwrap_err();
    assert!(
        e.message.contains("the Anthropic parameter `container`"),
        "{}",
        e.message
    );
}

#[test]
fn answers_decode_with_normalised_usage() {
    let answer = json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Let me think.", "thought": true},
            {"text": "It is "}, {"text": "sunny."}]},
            "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 8,
                          "totalTokenCount": 178, "cachedContentTokenCount": 100,
                          "thoughtsTokenCount": 50},
        "modelVersion": "gemini-2.5-flash", "responseId": "resp-1"
    });
    let r = decode_response(answer.to_string().as_bytes(), "asked").expect("decodes");
    assert_eq!(r.id, "resp-1");
    assert_eq!(r.model, "gemini-2.5-flash");
    assert_eq!(r.text(), "It is sunny.");
    assert!(
        matches!(&r.content[0], Part::Thinking { text, signature: None } if text == "Let me think.")
    );
    assert_eq!(r.stop_reason, StopReason::EndTurn);
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 20,
            output_tokens: 58,
            cache_read_tokens: 100,
            cache_write_tokens: 0,
            reasoning_tokens: 50,
        }
    );
    assert_eq!(r.usage.prompt_tokens(), 120);

    for (reason, want) in [
        ("MAX_TOKENS", StopReason::MaxTokens),
        ("SAFETY", StopReason::ContentFilter),
        ("RECITATION", StopReason::ContentFilter),
        (
            "MALFORMED_FUNCTION_CALL",
            StopReason::Other("malformed_function_call".into()),
        ),
    ] {
        let a = json!({"candidates": [{"content": {"parts": []}, "finishReason": reason}]});
        let r = decode_response(a.to_string().as_bytes(), "asked").expect("decodes");
        assert_eq!(r.stop_reason, want, "{reason}");
        assert_eq!(r.model, "asked");
    }
}

#[test]
fn function_calls_decode_with_ids_and_their_signatures() {
    let answer = json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
             "thoughtSignature": "c2ln"},
            {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]},
            "finishReason": "STOP"}],
        "responseId": "abc-123"
    });
    let r = decode_response(answer.to_string().as_bytes(), "m").expect("decodes");
    assert_eq!(r.stop_reason, StopReason::ToolUse);
    assert_eq!(r.content.len(), 3);
    assert_eq!(
        r.content[0],
        Part::Thinking {
            text: String::new(),
            signature: Some("gemini:c2ln".into())
        }
    );
    let Part::ToolCall(first) = &r.content[1] else {
        panic!("{:?}", r.content)
    };
    let Part::ToolCall(second) = &r.content[2] else {
        panic!("{:?}", r.content)
    };
    assert_eq!(first.arguments, r#"{"city":"Paris"}"#);
    assert_ne!(first.id, second.id);
    assert!(first.id.starts_with("call_abc123"), "{}", first.id);

    // the round trip: the client sends the answer back with results
    let mut req = ChatRequest::simple("m", "Weather?");
    req.messages.push(Message {
        role: Role::Assistant,
        content: r.content.clone(),
    });
    req.messages.push(result(&first.id, "{}", false));
    req.messages.push(result(&second.id, "{}", false));
    let b = body(&req);
    assert_eq!(
        b["contents"][1]["parts"][0]["thoughtSignature"],
        json!("c2ln")
    );
    assert_eq!(b["contents"][2]["parts"].as_array().map(Vec::len), Some(2));
}

#[test]
fn a_blocked_prompt_is_a_content_policy_error() {
    let answer = json!({"promptFeedback": {"blockReason": "SAFETY",
                         "blockReasonMessage": "unsafe"},
                        "usageMetadata": {"promptTokenCount": 5}});
    let e = decode_response(answer.to_string().as_bytes(), "m").unwrap_err();
    assert_eq!(e.kind, ErrorKind::ContentPolicy);
    assert!(e.message.contains("SAFETY"), "{}", e.message);
    let e = decode_response(b"{}", "m").unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidResponse);
    let e = decode_response(b"not json", "m").unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidResponse);
}

#[test]
fn errors_are_classified_by_status_name() {
    let body = |code: u16, status: &str, msg: &str| {
        json!({"error": {"code": code, "message": msg, "status": status}}).to_string()
    };
    let e = decode_error(
        429,
        body(429, "RESOURCE_EXHAUSTED", "Quota exceeded").as_bytes(),
        Some(Duration::from_secs(7)),
    );
    assert_eq!(e.kind, ErrorKind::RateLimited);
    assert_eq!(e.retry, Retry::After(Duration::from_secs(7)));
    assert_eq!(e.message, "Quota exceeded");
    let e = decode_error(503, body(503, "UNAVAILABLE", "overloaded").as_bytes(), None);
    assert_eq!(e.kind, ErrorKind::Overloaded);
    let e = decode_error(
        400,
        body(
            400,
            "INVALID_ARGUMENT",
            "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
        )
        .as_bytes(),
        None,
    );
    assert_eq!(e.kind, ErrorKind::ContextWindowExceeded);
    let e = decode_error(400, body(400, "INVALID_ARGUMENT", "bad").as_bytes(), None);
    assert_eq!(e.kind, ErrorKind::InvalidRequest);
    let e = decode_error(
        403,
        body(403, "PERMISSION_DENIED", "no key").as_bytes(),
        None,
    );
    assert_eq!(e.kind, ErrorKind::UpstreamConfig);
    // the JSON-array form of streamGenerateContent without alt=sse
    let listed = format!("[{}]", body(500, "INTERNAL", "oops"));
    let e = decode_error(500, listed.as_bytes(), None);
    assert_eq!((e.kind, e.message.as_str()), (ErrorKind::Upstream, "oops"));
    let e = decode_error(502, b"<html>bad gateway</html>", None);
    assert!(e.message.contains("bad gateway"), "{}", e.message);
}

/// Decodes an SSE byte stream split into pieces of `step` bytes.
fn decode_stream(bytes: &[u8], step: usize) -> Result<Vec<StreamEvent>, ProviderError> {
    let mut parser = SseParser::new();
    let mut d = StreamDecoder::new("gemini-2.5-flash");
    let mut out = Vec::new();
    for piece in bytes.chunks(step) {
        for ev in parser.push(piece)? {
            d.feed_into(&ev, &mut out)?;
        }
    }
    if let Some(ev) = parser.finish()? {
        d.feed_into(&ev, &mut out)?;
    }
    out.extend(d.finish()?);
    Ok(out)
}

fn sse(chunks: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(format!("data: {c}\r\n\r\n").as_bytes());
    }
    out
}

#[test]
fn streams_decode_into_blocks_at_any_split() {
    let bytes = sse(&[
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hmm", "thought": true}]}}],
               "responseId": "r1", "modelVersion": "gemini-2.5-flash",
               "usageMetadata": {"promptTokenCount": 10}}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}],
               "responseId": "r1"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}}]}),
        json!({"candidates": [{"content": {"role": "model", "parts": [
                 {"functionCall": {"name": "f", "args": {"x": 1}}, "thoughtSignature": "s1"}]},
               "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 4,
                                 "thoughtsTokenCount": 3, "totalTokenCount": 17}}),
    ]);
    let want = vec![
        StreamEvent::Start {
            id: "r1".into(),
            model: "gemini-2.5-flash".into(),
            usage: Usage {
                input_tokens: 10,
                ..Usage::default()
            },
        },
        StreamEvent::ThinkingDelta {
            index: 0,
            text: "Hmm".into(),
        },
        StreamEvent::Usage(Usage {
            input_tokens: 10,
            ..Usage::default()
        }),
        StreamEvent::BlockStop { index: 0 },
        StreamEvent::TextDelta {
            index: 1,
            text: "Hel".into(),
        },
        StreamEvent::TextDelta {
            index: 1,
            text: "lo".into(),
        },
        StreamEvent::BlockStop { index: 1 },
        StreamEvent::ThinkingSignature {
            index: 2,
            signature: "gemini:s1".into(),
        },
        StreamEvent::BlockStop { index: 2 },
        StreamEvent::ToolCallStart {
            index: 3,
            id: "call_r1_0".into(),
            name: "f".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 3,
            arguments: r#"{"x":1}"#.into(),
        },
        StreamEvent::BlockStop { index: 3 },
        StreamEvent::Usage(Usage {
            input_tokens: 10,
            output_tokens: 7,
            reasoning_tokens: 3,
            ..Usage::default()
        }),
        StreamEvent::Finish {
            stop_reason: StopReason::ToolUse,
            stop_sequence: None,
        },
    ];
    for step in [1, 3, 17, bytes.len()] {
        assert_eq!(
            decode_stream(&bytes, step).expect("decodes"),
            want,
            "step {step}"
        );
    }
}

#[test]
fn streams_that_fail_say_why() {
    // an error object in the stream
    let bytes = sse(&[
        json!({"candidates": [{"content": {"parts": [{"text": "Hi"}]}}]}),
        json!({"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}}),
    ]);
    let e = decode_stream(&bytes, 5).unwrap_err();
    assert_eq!(e.kind, ErrorKind::RateLimited);
    // cut before a finish reason
    let bytes = sse(&[json!({"candidates": [{"content": {"parts": [{"text": "Hi"}]}}]})]);
    let e = decode_stream(&bytes, 5).unwrap_err();
    assert!(e.message.contains("ended before"), "{}", e.message);
    // a blocked prompt
    let bytes = sse(&[json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})]);
    assert_eq!(
        decode_stream(&bytes, 5).unwrap_err().kind,
        ErrorKind::ContentPolicy
    );
    // not JSON
    let e = decode_stream(b"data: {oops\n\n", 4).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidResponse);
}

#[test]
fn huge_token_counts_saturate() {
    let answer = json!({
        "candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": u64::MAX, "toolUsePromptTokenCount": 5,
                          "candidatesTokenCount": u64::MAX, "thoughtsTokenCount": u64::MAX}
    });
    let r = decode_response(answer.to_string().as_bytes(), "m").expect("decodes");
    assert_eq!(r.usage.input_tokens, u64::MAX);
    assert_eq!(r.usage.output_tokens, u64::MAX);
    assert_eq!(r.usage.reasoning_tokens, u64::MAX);
}

#[test]
fn embeddings_requests_are_written_as_each_api_takes_them() {
    let req = tollway_core::EmbeddingsRequest {
        model: "gemini-embedding-001".into(),
        input: vec!["a \"quoted\" text".into(), "é".into()],
        dimensions: Some(8),
        input_type: None,
        user: Some("u-1".into()),
    };
    let body: Value = serde_json::from_slice(&encode_embeddings_request(
        &req,
        "models/gemini-embedding-001",
    ))
    .expect("JSON");
    assert_eq!(
        body,
        json!({"requests": [
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a \"quoted\" text"}]}, "outputDimensionality": 8},
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "é"}]}, "outputDimensionality": 8},
        ]})
    );
    let body: Value =
        serde_json::from_slice(&encode_vertex_embeddings_request(&req)).expect("JSON");
    assert_eq!(
        body,
        json!({"instances": [{"content": "a \"quoted\" text"}, {"content": "é"}],
               "parameters": {"outputDimensionality": 8}})
    );
    let plain = tollway_core::EmbeddingsRequest {
        dimensions: None,
        ..req.clone()
    };
    let body: Value =
        serde_json::from_slice(&encode_vertex_embeddings_request(&plain)).expect("JSON");
    assert!(body.get("parameters").is_none(), "{body}");
    // what the vectors are for: Google's task type, in each API's spelling
    let query = tollway_core::EmbeddingsRequest {
        input: vec!["q".into()],
        dimensions: None,
        input_type: Some(tollway_core::InputType::SearchQuery),
        ..req
    };
    let body: Value =
        serde_json::from_slice(&encode_embeddings_request(&query, "text-embedding-004"))
            .expect("JSON");
    assert_eq!(
        body,
        json!({"requests": [{"model": "models/text-embedding-004",
                             "content": {"parts": [{"text": "q"}]}, "taskType": "RETRIEVAL_QUERY"}]})
    );
    let body: Value =
        serde_json::from_slice(&encode_vertex_embeddings_request(&query)).expect("JSON");
    assert_eq!(
        body,
        json!({"instances": [{"content": "q", "task_type": "RETRIEVAL_QUERY"}]})
    );
}

#[test]
fn embeddings_answers_are_read_with_their_counts_or_refused_by_name() {
    let r = decode_embeddings_response(
        br#"{"embeddings": [{"values": [0.5, -1, 2e-3]}, {"values": []}]}"#,
        "gemini-embedding-001",
        2,
        false,
    )
    .expect("an answer");
    assert_eq!(r.data, vec![vec![0.5, -1.0, 0.002], vec![]]);
    assert_eq!(r.usage.input_tokens, 0, "AI Studio sends no count");
    assert_eq!(r.model, "gemini-embedding-001");
    let r = decode_embeddings_response(
        br#"{"predictions": [
            {"embeddings": {"statistics": {"truncated": false, "token_count": 6}, "values": [1, 2]}},
            {"embeddings": {"statistics": {"truncated": false, "token_count": 4.0}, "values": [3, 4]}}
        ], "metadata": {"billableCharacterCount": 30}}"#,
        "text-embedding-005",
        2,
        true,
    )
    .expect("an answer");
    assert_eq!(r.data, vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
    assert_eq!(r.usage.input_tokens, 10);
    for (body, vertex, want) in [
        (
            &b"{\"embeddings\": [{\"values\": [1]}]}"[..],
            false,
            "1 embeddings for 2 inputs",
        ),
        (
            &b"{\"embeddings\": [{\"values\": [\"x\"]}, {\"values\": [1]}]}"[..],
            false,
            "not a list of numbers",
        ),
        (&b"{\"predictions\": 3}"[..], true, "no predictions"),
        (&b"{\"embeddings\": "[..], false, "not valid JSON"),
        (&b"{}"[..], false, "no embeddings"),
    ] {
        let e = decode_embeddings_response(body, "m", 2, vertex).expect_err("refused");
        assert_eq!(e.kind, tollway_core::ErrorKind::InvalidResponse);
        assert!(e.message.contains(want), "{}: {}", want, e.message);
    }
}

// ------------------------------------------------------------------------------------------------
// The scanner (`crate::scan`) against serde
// ------------------------------------------------------------------------------------------------

/// Whether the scanner took a stream event; when it did, serde reads the same text into the same
/// fields (and panics say so if not). What it leaves (function calls, errors, anything unusual)
/// serde reads or refuses.
fn event_scan_agrees(text: &str) -> bool {
    crate::scan::agrees(
        text,
        wire::Event::scan(text),
        json::parse_upstream_str_as::<lax::Obj<wire::Event<'_>>>(text, "a stream event"),
        |fast, general| assert_eq!(Some(fast), general.0.as_ref(), "{text}"),
    )
}

/// [`event_scan_agrees`] for a whole answer.
fn answer_scan_agrees(text: &str) -> bool {
    crate::scan::agrees(
        text,
        wire::Answer::scan(text),
        json::parse_upstream_str_as::<lax::Obj<wire::Answer<'_>>>(text, "an answer"),
        |fast, general| assert_eq!(Some(fast), general.0.as_ref(), "{text}"),
    )
}

/// Stream events of the usual shapes: as the mock writes them, as Google AI Studio and Vertex AI
/// write them (spaces after colons, safety ratings, `createTime`, the usage's details), and the
/// edges of each field the scanner reads.
const EVENTS: &[&str] = &[
    // the mock: a text piece, the closing chunk, a thought, a signed piece
    r#"{"candidates":[{"content":{"parts":[{"text":" ipsum"}],"role":"model"},"index":0}],"modelVersion":"bench-stream","responseId":"JkgGedxa9_3GIogUMQ2p4Q","usageMetadata":{"promptTokenCount":5,"promptTokensDetails":[{"modality":"TEXT","tokenCount":5}],"totalTokenCount":5}}"#,
    r#"{"candidates":[{"content":{"parts":[{"text":""}],"role":"model"},"finishReason":"STOP","index":0}],"modelVersion":"bench-stream","responseId":"JkgGedxa9_3GIogUMQ2p4Q","usageMetadata":{"candidatesTokenCount":5,"promptTokenCount":5,"promptTokensDetails":[{"modality":"TEXT","tokenCount":5}],"totalTokenCount":10}}"#,
    r#"{"candidates":[{"content":{"parts":[{"text":"Let me ","thought":true}],"role":"model"},"index":0}],"modelVersion":"gemini-2.5-flash","responseId":"mock-gemini-7","usageMetadata":{"promptTokenCount":12,"totalTokenCount":12}}"#,
    r#"{"candidates":[{"content":{"parts":[{"text":"Paris","thoughtSignature":"bW9jaw=="}],"role":"model"},"index":0}],"responseId":"mock-gemini-7"}"#,
    // Google AI Studio
    r#"{"candidates": [{"content": {"parts": [{"text": "The sky is blue because"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 8,"totalTokenCount": 8,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 8}]},"modelVersion": "gemini-2.5-flash","responseId": "Yk9uaPLDCMrNz7IPwdWq-Ak"}"#,
    r#"{"candidates": [{"content": {"parts": [{"text": " of Rayleigh scattering."}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 8,"candidatesTokenCount": 12,"totalTokenCount": 59,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 8}],"thoughtsTokenCount": 39},"modelVersion": "gemini-2.5-flash","responseId": "Yk9uaPLDCMrNz7IPwdWq-Ak"}"#,
    // Vertex AI
    r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hi"}]},"safetyRatings":[{"category":"HARM_CATEGORY_HATE_SPEECH","probability":"NEGLIGIBLE","probabilityScore":0.05,"severity":"HARM_SEVERITY_NEGLIGIBLE","severityScore":1.2e-2}],"avgLogprobs":-0.31}],"usageMetadata":{"trafficType":"ON_DEMAND"},"modelVersion":"gemini-2.0-flash-001","createTime":"2026-01-01T00:00:00.123456Z","responseId":"abc"}"#,
    r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"."}]},"finishReason":"STOP","citationMetadata":{"citations":[{"startIndex":1,"uri":"https://example.com/a"}]}}],"usageMetadata":{"promptTokenCount":100,"candidatesTokenCount":3,"totalTokenCount":103,"cachedContentTokenCount":60,"toolUsePromptTokenCount":4,"cacheTokensDetails":[{"modality":"TEXT","tokenCount":60}],"trafficType":"ON_DEMAND"}}"#,
    // edges: escapes, raw UTF-8, whitespace, `null`s, empty lists, no candidates, several
    r#" { "candidates" : [ { "content" : { "parts" : [ { "text" : "a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00" , "thought" : false } ] } } ] } "#,
    "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"raw UTF-8: é 中 😀\"}]}}]}",
    r#"{"candidates":null,"usageMetadata":null,"modelVersion":null,"responseId":null,"promptFeedback":null}"#,
    r#"{"candidates":[{"content":null,"finishReason":null}]}"#,
    r#"{"candidates":[{"content":{"parts":null,"role":null}}]}"#,
    r#"{"candidates":[{"content":{"parts":[{"text":null,"thought":null,"thoughtSignature":null},{},{"text":"","thought":true,"thoughtSignature":"c2ln"}]}}]}"#,
    r#"{"candidates":[],"usageMetadata":{}}"#,
    r#"{"candidates":[{}]}"#,
    r#"{}"#,
    r#"{"candidates":[{"content":{"parts":[{"text":"a"}]},"index":0},{"content":{"parts":[{"functionCall":{"name":"f"}}]},"index":1},7,null]}"#,
    r#"{"usageMetadata":{"promptTokenCount":0,"candidatesTokenCount":18446744073709551615,"thoughtsTokenCount":null}}"#,
    r#"{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"no","safetyRatings":[{"category":"HARM_CATEGORY_DANGEROUS_CONTENT","probability":"HIGH","blocked":true}]},"usageMetadata":{"promptTokenCount":9,"totalTokenCount":9}}"#,
    r#"{"candidates":[{"content":{"parts":[{"text":"x","inlineData":{"mimeType":"image/png","data":"iVBO"},"videoMetadata":{}}]}}],"x":[1,2.5e-3,true,false,{},[]]}"#,
];

/// Shapes the scanner leaves to serde (which reads or refuses them).
const EVENTS_FOR_SERDE: &[&str] = &[
    // a function call, an error (even `null`), a text that is not a string
    r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{}}}]}}]}"#,
    r#"{"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED"}}"#,
    r#"{"error":null}"#,
    r#"{"candidates":[{"content":{"parts":[{"text":1}]}}]}"#,
    // values of other types where the scanner reads one
    r#"{"candidates":[{"content":{"parts":[{"text":"a","thought":"true"}]}}]}"#,
    r#"{"candidates":[{"content":{"parts":[{"text":"a","thought":1}]}}]}"#,
    r#"{"candidates":[null]}"#,
    r#"{"candidates":[1,{}]}"#,
    r#"{"candidates":{"0":{}}}"#,
    r#"{"candidates":[{"content":{"parts":[1,{"text":"a"}]}}]}"#,
    r#"{"candidates":[{"content":{"parts":{}}}]}"#,
    r#"{"candidates":[{"content":[]}]}"#,
    r#"{"candidates":[{"finishReason":1}]}"#,
    r#"{"usageMetadata":5}"#,
    r#"{"usageMetadata":{"promptTokenCount":1.5}}"#,
    r#"{"usageMetadata":{"promptTokenCount":-1}}"#,
    r#"{"usageMetadata":{"promptTokenCount":"7"}}"#,
    r#"{"usageMetadata":{"promptTokenCount":1e3}}"#,
    r#"{"usageMetadata":{"promptTokenCount":18446744073709551616}}"#,
    r#"{"responseId":7}"#,
    r#"{"promptFeedback":{"blockReason":true}}"#,
    // duplicates, at each level (serde refuses them)
    r#"{"responseId":"a","responseId":"b"}"#,
    r#"{"candidates":[],"candidates":[]}"#,
    r#"{"candidates":[{"finishReason":"STOP","finishReason":"STOP"}]}"#,
    r#"{"candidates":[{"content":{"parts":[],"parts":[]}}]}"#,
    r#"{"candidates":[{"content":{"parts":[{"text":"a","text":"b"}]}}]}"#,
    r#"{"candidates":[{"content":{"parts":[{"thought":true,"thought":true}]}}]}"#,
    r#"{"usageMetadata":{"promptTokenCount":1,"promptTokenCount":2}}"#,
    r#"{"promptFeedback":{"blockReason":"a","blockReason":"b"}}"#,
    // escapes the scanner does not read, text serde refuses
    r#"{"response\u0049d":"x"}"#,
    r#"{"x":"\u0041"}"#,
    r#"{"candidates":[{"content":{"parts":[{"text":"lone \ud83d"}]}}]}"#,
    "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"tab\there\"}]}}]}",
    r#"{"candidates":[]} x"#,
    r#"{"candidates":[],}"#,
    r#"{"candidates":[{"content":{"parts":[{"text":"a"}]}}]"#,
    r#"{"x":01}"#,
    r#"{"candidates":[{"content":{"parts":[{"text":"a","thought":tru}]}}]}"#,
    "[1]",
    "null",
    "\"s\"",
    "",
];

#[test]
fn the_event_scanner_reads_the_usual_events_as_serde_does() {
    for t in EVENTS {
        assert!(event_scan_agrees(t), "the scanner should take {t}");
    }
    for t in EVENTS_FOR_SERDE {
        assert!(
            !event_scan_agrees(t),
            "the scanner should leave {t} to serde"
        );
    }
    // an error is an event's field, not an answer's: skipped there, as serde skips it
    assert!(answer_scan_agrees(EVENTS_FOR_SERDE[1]));
    assert!(answer_scan_agrees(EVENTS_FOR_SERDE[2]));
}

/// The events above, mutated: whenever the scanner takes one, serde takes it too and reads the
/// same.
#[test]
fn the_event_scanner_never_disagrees_with_serde_on_mutated_events() {
    let (taken, total) = crate::scan::mutate_and_check(EVENTS, 20_000, event_scan_agrees);
    eprintln!("events: the scanner took {taken} of {total} mutations");
    // the mutations reach both outcomes
    assert!(taken > 2_000 && total - taken > 2_000, "{taken} of {total}");
    let (taken, total) = crate::scan::mutate_and_check(EVENTS_FOR_SERDE, 20_000, event_scan_agrees);
    eprintln!("events left to serde: the scanner took {taken} of {total} mutations");
    assert!(taken > 100, "{taken} of {total}");
}

/// Answers of the usual shapes: as the mock writes them, pretty-printed as Google writes them.
const ANSWERS: &[&str] = &[
    r#"{"candidates":[{"content":{"parts":[{"text":"Hello! This is a deterministic reply from the tollway mock upstream server."}],"role":"model"},"finishReason":"STOP","index":0}],"modelVersion":"bench-small","responseId":"6dplxSrI5t84UCnXaiCr3Z","usageMetadata":{"candidatesTokenCount":12,"promptTokenCount":5,"promptTokensDetails":[{"modality":"TEXT","tokenCount":5}],"totalTokenCount":17}}"#,
    r#"{"candidates":[{"content":{"parts":[{"text":"Thinking it over.","thought":true},{"text":"Paris is the capital of France.","thoughtSignature":"bW9jaw=="}],"role":"model"},"index":0,"finishReason":"STOP"}],"modelVersion":"gemini-2.5-flash","responseId":"mock-gemini-0000000000000001","usageMetadata":{"promptTokenCount":12,"totalTokenCount":30,"promptTokensDetails":[{"modality":"TEXT","tokenCount":12}],"candidatesTokenCount":14,"thoughtsTokenCount":4,"cachedContentTokenCount":8,"cacheTokensDetails":[{"modality":"TEXT","tokenCount":8}],"trafficType":"ON_DEMAND"},"createTime":"2026-12-07T10:00:00.000000Z"}"#,
    r#"{
  "candidates": [
    {
      "content": {
        "parts": [
          {
            "text": "Escapes: \u00e9 \ud83d\ude00 \"q\" \\ \/ \b\f\n\r\t"
          }
        ],
        "role": "model"
      },
      "finishReason": "MAX_TOKENS",
      "avgLogprobs": -0.5
    }
  ],
  "usageMetadata": {
    "promptTokenCount": 4,
    "candidatesTokenCount": 9,
    "totalTokenCount": 13,
    "promptTokensDetails": [
      {
        "modality": "TEXT",
        "tokenCount": 4
      }
    ]
  },
  "modelVersion": "gemini-2.5-pro",
  "responseId": "r1"
}"#,
    r#"{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe"},"usageMetadata":{"promptTokenCount":5}}"#,
    r#"{"candidates":[],"promptFeedback":{"blockReason":"BLOCKLIST"},"error":{"code":1}}"#,
    r#"{}"#,
];

#[test]
fn the_answer_scanner_reads_the_usual_answers_as_serde_does() {
    for t in ANSWERS {
        assert!(answer_scan_agrees(t), "the scanner should take {t}");
    }
    for t in [
        include_str!("../../../../fuzz/seeds/upstream_answer/gemini_answer.json"),
        r#"{"candidates":[{"content":{"parts":[{"text":"a"}]}}],"usageMetadata":[]}"#,
        r#"{"usageMetadata":{"candidatesTokenCount":2,"candidatesTokenCount":2}}"#,
    ] {
        assert!(
            !answer_scan_agrees(t),
            "the scanner should leave {t} to serde"
        );
    }
    let (taken, total) = crate::scan::mutate_and_check(ANSWERS, 20_000, answer_scan_agrees);
    eprintln!("answers: the scanner took {taken} of {total} mutations");
    assert!(taken > 2_000 && total - taken > 2_000, "{taken} of {total}");
}

/// Answers and streams decode the same whichever way they were read: as they are (the scanner)
/// and with a first key spelled with an escape (serde).
#[test]
fn answers_and_streams_decode_the_same_through_the_scanner_and_serde() {
    for t in ANSWERS {
        let escaped = crate::scan::with_escaped_first_key(t);
        assert!(wire::Answer::scan(&escaped).is_none(), "{escaped}");
        let decode = |t: &str| {
            decode_response(t.as_bytes(), "asked").map(|mut r| {
                r.created = 0;
                r
            })
        };
        assert_eq!(decode(t), decode(&escaped), "{t}");
    }
    // each event first in a stream, and the mock's and Google's streams event by event
    let mut streams: Vec<Vec<&str>> = EVENTS.iter().map(|e| vec![*e]).collect();
    streams.push(EVENTS[..4].to_vec());
    streams.push(EVENTS[4..6].to_vec());
    streams.push(EVENTS[6..8].to_vec());
    for stream in streams {
        let mut fast = StreamDecoder::new("asked");
        let mut general = StreamDecoder::new("asked");
        for t in &stream {
            let escaped = crate::scan::with_escaped_first_key(t);
            assert!(wire::Event::scan(&escaped).is_none(), "{escaped}");
            let feed = |d: &mut StreamDecoder, data: &str| {
                let mut out = Vec::new();
                let ev = SseEvent {
                    event: None,
                    data: data.to_string(),
                };
                d.feed_into(&ev, &mut out).map(|()| out)
            };
            assert_eq!(feed(&mut fast, t), feed(&mut general, &escaped), "{t}");
        }
        assert_eq!(fast.finish(), general.finish(), "{stream:?}");
    }
}
