use super::*;

fn decode(v: Value) -> Result<ChatRequest, ProviderError> {
    decode_request(v.to_string().as_bytes())
}

fn err(v: Value) -> String {
    decode(v).expect_err("refused").message
}

#[test]
fn requests_decode_into_the_canonical_form() {
    let r = decode(json!({"model": "m", "input": "hi"})).expect("decodes");
    assert_eq!(r.model, "m");
    assert_eq!(r.messages, vec![Message::text(Role::User, "hi")]);
    assert!(!r.stream && r.include_usage);

    let r = decode(json!({
        "model": "m",
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Use tools."},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Weather in"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "call_2", "name": "weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "rain"}]}
        ],
        "tools": [{"type": "function", "name": "weather", "description": "d",
                   "parameters": {"type": "object"}, "strict": true}],
        "tool_choice": {"type": "function", "name": "weather"},
        "parallel_tool_calls": false,
        "max_output_tokens": 100,
        "temperature": 0.5,
        "top_p": 0.9,
        "stream": true,
        "store": false,
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
        "reasoning": {"effort": "low"},
        "metadata": {"k": "v"},
        "user": "u1",
        "models": ["other"]
    }))
    .expect("decodes");
    let roles: Vec<Role> = r.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            Role::System,
            Role::System,
            Role::User,
            Role::Assistant,
            Role::Tool
        ]
    );
    assert_eq!(r.messages[0], Message::text(Role::System, "Be brief."));
    assert_eq!(
        r.messages[2].content[1],
        Part::Image(ImageSource::Base64 {
            media_type: "image/png".into(),
            data: "AAAA".into()
        })
    );
    // the text and both calls are one assistant turn; both outputs one tool turn
    assert_eq!(r.messages[3].content.len(), 3);
    assert!(matches!(&r.messages[3].content[2], Part::ToolCall(c) if c.id == "call_2"));
    assert!(
        matches!(&r.messages[4].content[1], Part::ToolResult(t) if t.tool_call_id == "call_2" && t.text() == "rain")
    );
    assert_eq!(r.tools[0].name, "weather");
    assert_eq!(r.tools[0].strict, Some(true));
    assert_eq!(r.tool_choice, Some(ToolChoice::Tool("weather".into())));
    assert_eq!(r.parallel_tool_calls, Some(false));
    assert_eq!(
        (r.max_tokens, r.temperature, r.top_p),
        (Some(100), Some(0.5), Some(0.9))
    );
    assert!(r.stream);
    assert!(
        matches!(r.response_format, Some(ResponseFormat::JsonSchema { ref name, .. }) if name == "w")
    );
    assert_eq!(r.user.as_deref(), Some("u1"));
    // Chat Completions' names for what it also has; routing fields kept for the gateway
    assert_eq!(r.extra.family, ApiFamily::OpenAi);
    assert_eq!(r.extra.fields["reasoning_effort"], "low");
    assert_eq!(r.extra.fields["metadata"], json!({"k": "v"}));
    assert_eq!(r.extra.fields["models"], json!(["other"]));
    assert!(!r.extra.fields.contains_key("store"));
}

#[test]
fn what_cannot_be_carried_is_refused_by_name() {
    let cases = [
        (json!({"input": "hi"}), "model"),
        (json!({"model": "m"}), "input"),
        (json!({"model": "m", "input": 3}), "input"),
        (json!({"model": "m", "input": []}), "input"),
        (
            json!({"model": "m", "instructions": "x", "input": []}),
            "input",
        ),
        (
            json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (
            json!({"model": "m", "input": "hi", "conversation": "conv_1"}),
            "conversation",
        ),
        (
            json!({"model": "m", "input": "hi", "tools": [{"type": "web_search"}]}),
            "tools[0].type",
        ),
        (
            json!({"model": "m", "input": "hi", "tools": [{"type": "function"}]}),
            "tools[0].name",
        ),
        (
            json!({"model": "m", "input": [{"type": "reasoning", "id": "rs_1"}]}),
            "input[0].type",
        ),
        (
            json!({"model": "m", "input": [{"role": "tool", "content": "x"}]}),
            "input[0].role",
        ),
        (
            json!({"model": "m", "input": [{"role": "user"}]}),
            "input[0].content",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}),
            "input[0].content[0].type",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}),
            "input[0].content[0].file_id",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call_output", "call_id": "c"}]}),
            "input[0].output",
        ),
        (
            json!({"model": "m", "input": "hi", "truncation": "auto"}),
            "truncation",
        ),
        (
            json!({"model": "m", "input": "hi", "background": true}),
            "background",
        ),
        (
            json!({"model": "m", "input": "hi", "text": {"format": {"type": "yaml"}}}),
            "text.format.type",
        ),
        (
            json!({"model": "m", "input": "hi", "reasoning": {"summary": "auto"}}),
            "reasoning.summary",
        ),
        (
            json!({"model": "m", "input": "hi", "tool_choice": "sometimes"}),
            "tool_choice",
        ),
        (
            json!({"model": "m", "input": "hi", "frequency_penalty": 1}),
            "frequency_penalty",
        ),
        (
            json!({"model": "m", "input": "hi", "max_output_tokens": -1}),
            "max_output_tokens",
        ),
    ];
    for (body, field) in cases {
        let m = err(body.clone());
        assert!(m.contains(&format!("`{field}`")), "{body}: {m}");
    }
    assert!(decode_request(b"{\"model\": ").is_err());
    assert!(decode_request(b"[1]").is_err());
    // nulls are as good as absent
    assert!(decode(json!({"model": "m", "input": "hi", "previous_response_id": null, "frequency_penalty": null})).is_ok());
}

fn answer(content: Vec<Part>, stop_reason: StopReason) -> ChatResponse {
    ChatResponse {
        id: "chatcmpl-abc".into(),
        model: "gpt-4.1".into(),
        content,
        stop_reason,
        stop_sequence: None,
        usage: Usage {
            input_tokens: 10,
            output_tokens: 5,
            cache_read_tokens: 4,
            cache_write_tokens: 0,
            reasoning_tokens: 2,
        },
        created: 1_700_000_000,
    }
}

#[test]
fn answers_are_response_objects() {
    let r = answer(
        vec![
            Part::text("Hello"),
            Part::ToolCall(ToolCall {
                id: "call_1".into(),
                name: "f".into(),
                arguments: "{\"a\":1}".into(),
            }),
        ],
        StopReason::ToolUse,
    );
    let v: Value =
        serde_json::from_slice(&encode_response(&r, &Settings::default())).expect("json");
    assert_eq!(v["id"], "resp_abc");
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "gpt-4.1");
    assert_eq!(v["created_at"], 1_700_000_000);
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["role"], "assistant");
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(v["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(v["output"][1]["type"], "function_call");
    assert_eq!(v["output"][1]["call_id"], "call_1");
    assert_eq!(v["output"][1]["name"], "f");
    assert_eq!(v["output"][1]["arguments"], "{\"a\":1}");
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 14, "input_tokens_details": {"cached_tokens": 4},
               "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 19})
    );
    let cut: Value = serde_json::from_slice(&encode_response(
        &answer(vec![Part::text("Hel")], StopReason::MaxTokens),
        &Settings::default(),
    ))
    .expect("json");
    assert_eq!(cut["status"], "incomplete");
    assert_eq!(cut["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(cut["output"][0]["status"], "incomplete");
}

/// (event name, data) of each SSE event, checking that every `type` matches its event name and
/// that sequence numbers count up from 0.
fn events(bytes: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(bytes).expect("utf-8");
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let mut name = String::new();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push_str(d);
            }
        }
        let v: Value = serde_json::from_str(&data).expect("event data is JSON");
        assert_eq!(v["type"], name.as_str());
        assert_eq!(v["sequence_number"], out.len());
        out.push((name, v));
    }
    out
}

#[test]
fn streams_are_typed_events_that_add_up_to_the_response() {
    let mut e = StreamEncoder::new(Settings::default());
    let mut out = Vec::new();
    let usage = Usage {
        input_tokens: 7,
        ..Usage::default()
    };
    for ev in [
        StreamEvent::Start {
            id: "chatcmpl-s1".into(),
            model: "gpt-4.1".into(),
            usage,
        },
        StreamEvent::TextDelta {
            index: 0,
            text: "Hel".into(),
        },
        StreamEvent::TextDelta {
            index: 0,
            text: "lo".into(),
        },
        StreamEvent::ToolCallStart {
            index: 1,
            id: "call_9".into(),
            name: "f".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 1,
            arguments: "{\"a\":".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 1,
            arguments: "1}".into(),
        },
        StreamEvent::Finish {
            stop_reason: StopReason::ToolUse,
            stop_sequence: None,
        },
        StreamEvent::Usage(Usage {
            input_tokens: 7,
            output_tokens: 3,
            ..Usage::default()
        }),
    ] {
        e.push(&ev, &mut out);
    }
    e.set_cost_usd(Some("0.000123".into()));
    e.finish(&mut out);
    e.finish(&mut out); // once only
    let evs = events(&out);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(evs[0].1["response"]["id"], "resp_s1");
    assert_eq!(evs[0].1["response"]["status"], "in_progress");
    assert_eq!(evs[4].1["delta"], "Hel");
    // the deltas, written by hand, name their items as the other events do
    assert_eq!(evs[4].1["item_id"], evs[2].1["item"]["id"]);
    assert_eq!(evs[4].1["output_index"], 0);
    assert_eq!(evs[4].1["content_index"], 0);
    assert_eq!(evs[10].1["item_id"], "fc_call_9");
    assert_eq!(evs[10].1["output_index"], 1);
    assert_eq!(evs[11].1["delta"], "1}");
    assert_eq!(evs[6].1["text"], "Hello");
    assert_eq!(evs[9].1["item"]["call_id"], "call_9");
    assert_eq!(evs[9].1["output_index"], 1);
    assert_eq!(evs[12].1["arguments"], "{\"a\":1}");
    let done = &evs[14].1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(done["output"][0]["status"], "completed");
    assert_eq!(done["output"][1]["arguments"], "{\"a\":1}");
    assert_eq!(done["usage"]["input_tokens"], 7);
    assert_eq!(done["usage"]["output_tokens"], 3);
    assert_eq!(done["usage"]["cost_usd"], "0.000123");
    assert_eq!(e.usage().output_tokens, 3);
}

#[test]
fn a_cut_answer_is_incomplete_and_a_failed_stream_says_so() {
    let mut e = StreamEncoder::new(Settings::default());
    let mut out = Vec::new();
    e.push(
        &StreamEvent::TextDelta {
            index: 0,
            text: "Hel".into(),
        },
        &mut out,
    );
    e.push(
        &StreamEvent::Finish {
            stop_reason: StopReason::MaxTokens,
            stop_sequence: None,
        },
        &mut out,
    );
    e.finish(&mut out);
    let evs = events(&out);
    let (name, last) = evs.last().expect("events");
    assert_eq!(name, "response.incomplete");
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    assert_eq!(last["response"]["output"][0]["status"], "incomplete");

    let mut e = StreamEncoder::new(Settings::default());
    let mut out = Vec::new();
    e.push(
        &StreamEvent::TextDelta {
            index: 0,
            text: "Hel".into(),
        },
        &mut out,
    );
    e.error(
        &ProviderError::new(tollway_core::ErrorKind::Upstream, "the upstream went away"),
        &mut out,
    );
    e.finish(&mut out); // nothing more after a failure
    let evs = events(&out);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(&names[names.len() - 2..], ["error", "response.failed"]);
    assert_eq!(evs[evs.len() - 2].1["message"], "the upstream went away");
    let failed = &evs[evs.len() - 1].1["response"];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["message"], "the upstream went away");
}

#[test]
fn responses_repeat_the_requests_settings() {
    let req = decode(
        json!({"model": "m", "input": "hi", "temperature": 0.2, "max_output_tokens": 9,
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "tool_choice": "required", "parallel_tool_calls": false, "user": "u",
        "metadata": {"k": "v"}, "reasoning": {"effort": "high"},
        "text": {"format": {"type": "json_object"}}}),
    )
    .expect("decodes");
    let settings = Settings::of(&req);
    let r = answer(vec![Part::text("{}")], StopReason::EndTurn);
    let v: Value = serde_json::from_slice(&encode_response(&r, &settings)).expect("json");
    assert_eq!(v["temperature"], 0.2);
    assert_eq!(v["top_p"], Value::Null);
    assert_eq!(v["max_output_tokens"], 9);
    assert_eq!(v["tools"][0]["name"], "f");
    assert_eq!(v["tools"][0]["type"], "function");
    assert_eq!(v["tool_choice"], "required");
    assert_eq!(v["parallel_tool_calls"], false);
    assert_eq!(v["user"], "u");
    assert_eq!(v["metadata"], json!({"k": "v"}));
    assert_eq!(v["reasoning"]["effort"], "high");
    assert_eq!(v["text"]["format"]["type"], "json_object");
    // streams repeat them in every snapshot
    let mut e = StreamEncoder::new(settings);
    let mut out = Vec::new();
    e.finish(&mut out);
    let evs = events(&out);
    assert_eq!(evs[0].1["response"]["tool_choice"], "required");
    assert_eq!(evs[evs.len() - 1].1["response"]["max_output_tokens"], 9);
}
