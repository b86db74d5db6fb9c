use serde_json::json;

use super::*;
use crate::sse::SseParser;

/// Decodes a test body, and checks on the way that the fast path, wherever it accepts a body,
/// gives exactly what the general path gives.
fn req(v: Value) -> Result<ChatRequest, ProviderError> {
    let text = v.to_string();
    same_both_ways(&text);
    decode_request(text.as_bytes())
}

/// Whether the fast path took `text` (and gave what the general path gives).
fn same_both_ways(text: &str) -> bool {
    json::same_both_ways(text, fast::decode, decode_request_general)
}

#[test]
fn the_fast_path_takes_the_common_shapes_and_agrees_with_the_general_one() {
    let taken = [
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi \"there\" \u00e9\n"},{"role":"assistant","content":""},{"role":"developer","content":"x","name":"dev"}],"max_tokens":5,"temperature":0,"top_p":0.5,"stream":true,"stream_options":{"include_usage":true},"user":"u-1"}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"max_completion_tokens":7}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":null,"temperature":null,"stream":null,"stream_options":null,"user":null}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream_options":{},"temperature":2,"top_p":1e-3}"#,
        r#"{"model":"","messages":[{"role":"user","content":"hi","name":null}],"stream":false,"stream_options":{"include_usage":false}}"#,
        " \n{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"héllo ✓\"}]}\n ",
    ];
    for t in taken {
        assert!(same_both_ways(t), "the fast path should take {t}");
    }
    // Everything else falls through to the general path, for its result or its error.
    let left = [
        "",
        "   ",
        "[]",
        "{",
        r#"{"model":"m","messages":[]}"#,
        r#"{"model":"m"}"#,
        r#"{"model":null,"messages":[{"role":"user","content":"hi"}]}"#,
        r#"{"model":5,"messages":[{"role":"user","content":"hi"}]}"#,
        r#"{"model":"m","model":"n","messages":[{"role":"user","content":"hi"}]}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5.0}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":-1}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":4294967296}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":"hot"}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":"yes"}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":2}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":1}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":"x"}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"seed":1}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"models":["a"]}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true,"x":1}}"#,
        r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#,
        r#"{"model":"m","messages":[{"role":"user","content":null}]}"#,
        r#"{"model":"m","messages":[{"role":"user"}]}"#,
        r#"{"model":"m","messages":[{"role":"tool","content":"r","tool_call_id":"c"}]}"#,
        r#"{"model":"m","messages":[{"role":"assistant","content":"a","tool_calls":[]}]}"#,
        r#"{"model":"m","messages":[{"role":"function","content":"r"}]}"#,
        r#"{"model":"m","messages":[{"role":"wizard","content":"r"}]}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"hi","role":"system"}]}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[]}"#,
    ];
    for t in left {
        assert!(
            !same_both_ways(t),
            "the fast path should leave {t} to the general path"
        );
    }
    // bad UTF-8 never reaches the fast path
    assert!(decode_request(b"{\"model\":\"\xff\"}")
        .unwrap_err()
        .message
        .contains("UTF-8"));
}

/// The upstream body of a test request; checks on the way that the hand-written body is byte
/// for byte what serde writes.
fn body(r: &ChatRequest, dialect: Dialect) -> Value {
    let b = request_body(r, Target::of(r), "up/model".into(), dialect).unwrap();
    let written = b.to_vec();
    assert_eq!(
        String::from_utf8(written.clone()).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    serde_json::from_slice(&written).unwrap()
}

#[test]
fn decodes_every_carried_field() {
    let r = req(json!({
        "model": "gpt", "max_completion_tokens": 50, "temperature": 0.2, "top_p": 0.9,
        "stop": "END", "stream": true, "stream_options": {"include_usage": true},
        "tools": [{"type": "function", "function": {"name": "f", "description": "d",
                   "parameters": {"type": "object"}, "strict": true}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": false,
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}, "strict": true}},
        "user": "u1", "seed": 7,
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "r1"}
        ]
    }))
    .unwrap();
    assert_eq!(r.max_tokens, Some(50));
    assert_eq!(r.stop, vec!["END"]);
    assert!(r.stream && r.include_usage);
    assert_eq!(r.tool_choice, Some(ToolChoice::Tool("f".into())));
    assert_eq!(r.parallel_tool_calls, Some(false));
    assert!(matches!(
        r.response_format,
        Some(ResponseFormat::JsonSchema {
            strict: Some(true),
            ..
        })
    ));
    assert_eq!(r.user.as_deref(), Some("u1"));
    assert_eq!(r.extra.fields.get("seed"), Some(&json!(7)));
    assert_eq!(r.messages[0].role, Role::System);
    assert_eq!(
        r.messages[1].content[1],
        Part::Image(ImageSource::Base64 {
            media_type: "image/png".into(),
            data: "AAA".into()
        })
    );
    assert_eq!(
        r.messages[1].content[2],
        Part::Image(ImageSource::Url("https://x/y.png".into()))
    );
    assert_eq!(
        r.messages[2].content,
        vec![Part::ToolCall(ToolCall {
            id: "c1".into(),
            name: "f".into(),
            arguments: "{\"a\":1}".into()
        })]
    );
    assert_eq!(r.messages[3].role, Role::Tool);
    // every kind of content and field goes back upstream, written by hand as serde would
    let b = body(&r, Dialect::default());
    let m = &b["messages"];
    assert_eq!(m[1]["content"][0], json!({"type": "text", "text": "look"}));
    assert_eq!(
        m[1]["content"][1]["image_url"]["url"],
        "data:image/png;base64,AAA"
    );
    assert_eq!(m[2]["content"], Value::Null);
    assert_eq!(m[2]["tool_calls"][0]["id"], "c1");
    assert_eq!(
        m[3],
        json!({"role": "tool", "content": "r1", "tool_call_id": "c1"})
    );
    assert_eq!(b["tools"][0]["function"]["name"], "f");
    assert_eq!(b["seed"], 7);
    assert_eq!(b["stop"], json!(["END"]));
}

#[test]
fn errors_name_the_field() {
    let cases = [
        (json!({"messages": []}), "`model`"),
        (json!({"model": "m"}), "`messages`"),
        (json!({"model": "m", "messages": []}), "at least one"),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
            "`messages[0].content`",
        ),
        (
            json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
            "`messages[0].role`",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}),
            "`max_tokens`",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
            "`temperature`",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
            "input_audio",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 3}),
            "`n`",
        ),
        (
            json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
            "`messages[0].tool_call_id`",
        ),
    ];
    for (v, needle) in cases {
        let e = req(v.clone()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidRequest);
        assert!(e.message.contains(needle), "{v}: {}", e.message);
    }
}

#[test]
fn encodes_for_openai_and_compatible_servers() {
    let mut r = req(
        json!({"model": "gpt", "max_tokens": 9, "stream": true, "seed": 3,
        "stream_options": {"include_usage": false},
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .unwrap();
    r.model = "gpt-4.1".into();
    let b = body(&r, Dialect::default());
    assert_eq!(b["model"], "gpt-4.1");
    assert_eq!(b["max_completion_tokens"], 9);
    assert!(b.get("max_tokens").is_none());
    assert_eq!(
        b["stream_options"]["include_usage"], true,
        "usage is always requested"
    );
    assert_eq!(
        b["seed"], 3,
        "unknown fields pass through to the same API family"
    );
    assert_eq!(b["messages"], json!([{"role": "user", "content": "hi"}]));
    let b = body(
        &r,
        Dialect {
            legacy_max_tokens: true,
        },
    );
    assert_eq!(b["max_tokens"], 9);
}

#[test]
fn anthropic_requests_translate_and_unsupported_fields_are_refused() {
    let r = crate::anthropic::decode_request(
        json!({"model": "c", "max_tokens": 10, "system": "sys",
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "calling"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok", "is_error": true},
                    {"type": "text", "text": "and?"}]}
            ]})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let b = body(&r, Dialect::default());
    assert_eq!(
        b["messages"],
        json!([
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "calling", "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "Error: ok"},
            {"role": "user", "content": "and?"}
        ])
    );
    let mut thinking = r.clone();
    thinking.extra.fields.insert(
        "thinking".into(),
        json!({"type": "enabled", "budget_tokens": 2000}),
    );
    let e = encode_request(&thinking, "oai/gpt-4.1", Dialect::default()).unwrap_err();
    assert!(
        e.message.contains("thinking") && e.message.contains("oai/gpt-4.1"),
        "{}",
        e.message
    );
    thinking
        .extra
        .fields
        .insert("thinking".into(), json!({"type": "disabled"}));
    assert!(encode_request(&thinking, "oai/gpt-4.1", Dialect::default()).is_ok());
}

#[test]
fn answers_decode_with_normalised_usage() {
    let r = decode_response(
        json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 5, "model": "gpt-4.1",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
                "content": "x", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                "prompt_tokens_details": {"cached_tokens": 60}, "completion_tokens_details": {"reasoning_tokens": 5}}})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(r.stop_reason, StopReason::ToolUse);
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 40,
            output_tokens: 20,
            cache_read_tokens: 60,
            cache_write_tokens: 0,
            reasoning_tokens: 5
        }
    );
    assert_eq!(r.content.len(), 2);
    let back: Value = serde_json::from_slice(&encode_response(&r)).unwrap();
    assert_eq!(back["usage"]["prompt_tokens"], 100);
    assert_eq!(back["usage"]["prompt_tokens_details"]["cached_tokens"], 60);
    assert_eq!(back["choices"][0]["finish_reason"], "tool_calls");
    assert!(decode_response(b"{\"choices\": [").is_err());
    assert!(decode_response(b"{}").is_err());
}

#[test]
fn answers_decode_leniently_field_by_field() {
    // fields of unexpected types read as absent, as a loose reader would; escapes are decoded
    let r = decode_response(
        json!({"id": 7, "model": ["m"], "created": -1,
            "choices": ["junk", {"finish_reason": {"x": 1}, "message": {"role": "assistant",
                "content": "a \"quoted\" line\nnext \u{e9}", "refusal": null, "reasoning_content": 3,
                "tool_calls": [1, {"id": "c", "function": "nope"}, {"function": {"name": "g", "arguments": null}}]}}],
            "usage": {"prompt_tokens": "100", "completion_tokens": 2.5,
                "prompt_tokens_details": [1], "completion_tokens_details": null}})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(r.id, "");
    assert_eq!(r.model, "");
    assert!(r.created > 1_700_000_000, "a bad `created` reads as now");
    assert_eq!(r.stop_reason, StopReason::EndTurn);
    assert_eq!(r.usage, Usage::default());
    assert_eq!(r.text(), "a \"quoted\" line\nnext é");
    let calls: Vec<&ToolCall> = r
        .content
        .iter()
        .filter_map(|p| match p {
            Part::ToolCall(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[0].id.as_str(), calls[0].name.as_str()), ("c", ""));
    assert_eq!(
        (calls[1].name.as_str(), calls[1].arguments.as_str()),
        ("g", "")
    );
    // what cannot be an answer at all is an error naming the problem
    for (body, needle) in [
        (&b"17"[..], "does not fit the expected format"),
        (b"{\"choices\": []}", "no choices"),
        (b"{\"choices\": [{\"message\": 5}]}", "no message"),
        (b"{\"choices\": [", "not valid JSON"),
        (b"\xff", "not valid JSON"),
    ] {
        let e = decode_response(body).expect_err("not an answer");
        assert_eq!(e.kind, ErrorKind::InvalidResponse);
        assert!(e.message.contains(needle), "{}", e.message);
    }
}

#[test]
fn usage_is_written_as_serde_writes_it() {
    for u in [
        Usage::default(),
        Usage {
            input_tokens: 12,
            output_tokens: 34,
            cache_read_tokens: 5,
            cache_write_tokens: 6,
            reasoning_tokens: 7,
        },
        Usage {
            input_tokens: u64::MAX / 4,
            output_tokens: 1,
            ..Usage::default()
        },
    ] {
        let o = out::Usage::of(&u);
        let mut b = Vec::new();
        o.write(&mut b);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            serde_json::to_string(&o).unwrap()
        );
    }
}

#[test]
fn encoded_answers_have_every_field_openai_clients_read() {
    let mut r = ChatResponse {
        id: "chatcmpl-9".into(),
        model: "m".into(),
        content: vec![Part::text("hi")],
        stop_reason: StopReason::MaxTokens,
        stop_sequence: None,
        usage: Usage {
            input_tokens: 3,
            output_tokens: 4,
            cache_read_tokens: 1,
            cache_write_tokens: 0,
            reasoning_tokens: 2,
        },
        created: 42,
    };
    let v: Value = serde_json::from_slice(&encode_response(&r)).unwrap();
    assert_eq!(
        v,
        json!({"id": "chatcmpl-9", "object": "chat.completion", "created": 42, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi", "refusal": null,
                "annotations": []}, "logprobs": null, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8,
                "prompt_tokens_details": {"cached_tokens": 1, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 2, "audio_tokens": 0,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
            "system_fingerprint": null})
    );
    // only tool calls: content is null
    r.content = vec![Part::ToolCall(ToolCall {
        id: "c1".into(),
        name: "f".into(),
        arguments: "{}".into(),
    })];
    let v: Value = serde_json::from_slice(&encode_response(&r)).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"],
        json!([{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}])
    );
    // text and tool calls together; every variable string escaped
    let odd = "a \"quote\", a \\ backslash,\na newline, \u{1} a control, ünïcödé, \u{1F600}";
    r.id = odd.into();
    r.model = odd.into();
    r.content.insert(0, Part::text(odd));
    r.stop_reason = StopReason::Other("weird \"reason\"".into());
    let v: Value = serde_json::from_slice(&encode_response(&r)).unwrap();
    assert_eq!(v["id"], odd);
    assert_eq!(v["model"], odd);
    assert_eq!(v["choices"][0]["message"]["content"], odd);
    assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["id"], "c1");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[test]
fn errors_decode_and_encode() {
    let e = decode_error(
        429,
        br#"{"error": {"message": "slow down", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}"#,
        Some(Duration::from_secs(2)),
    );
    assert_eq!(e.kind, ErrorKind::RateLimited);
    assert_eq!(e.message, "slow down");
    assert_eq!(e.retry_after_secs(), Some(2));
    let e = decode_error(502, b"<html>bad gateway</html>", None);
    assert!(e.message.contains("502") && e.message.contains("bad gateway"));
    let v: Value = serde_json::from_slice(&encode_error(
        &ProviderError::invalid("nope").with_param("x"),
    ))
    .unwrap();
    assert_eq!(
        v,
        json!({"error": {"message": "nope", "type": "invalid_request_error", "param": "x", "code": null}})
    );
}

fn decode_stream(text: &str) -> Result<Vec<StreamEvent>, ProviderError> {
    let mut p = SseParser::new();
    let mut d = StreamDecoder::new();
    let mut out = Vec::new();
    for ev in p.push(text.as_bytes())? {
        out.extend(d.feed(&ev)?);
    }
    out.extend(d.finish()?);
    Ok(out)
}

#[test]
fn upstream_streams_decode_text_tools_and_usage() {
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let mut text = String::new();
    text += &chunk(json!({"role": "assistant", "content": ""}), Value::Null);
    text += &chunk(json!({"content": "Hel"}), Value::Null);
    text += &chunk(json!({"content": "lo"}), Value::Null);
    text += &chunk(
        json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
        Value::Null,
    );
    text += &chunk(
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\""}}]}),
        Value::Null,
    );
    text += &chunk(
        json!({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
        Value::Null,
    );
    text += &chunk(json!({}), json!("tool_calls"));
    text += &format!(
        "data: {}\n\n",
        json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 2}}})
    );
    text += "data: [DONE]\n\n";
    let events = decode_stream(&text).unwrap();
    assert_eq!(
        events,
        vec![
            StreamEvent::Start {
                id: "c1".into(),
                model: "m".into(),
                usage: Usage::default()
            },
            StreamEvent::TextDelta {
                index: 0,
                text: "Hel".into()
            },
            StreamEvent::TextDelta {
                index: 0,
                text: "lo".into()
            },
            StreamEvent::BlockStop { index: 0 },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "call_1".into(),
                name: "f".into()
            },
            StreamEvent::ToolCallDelta {
                index: 1,
                arguments: "{\"a\"".into()
            },
            StreamEvent::ToolCallDelta {
                index: 1,
                arguments: ":1}".into()
            },
            StreamEvent::BlockStop { index: 1 },
            StreamEvent::Finish {
                stop_reason: StopReason::ToolUse,
                stop_sequence: None
            },
            StreamEvent::Usage(Usage {
                input_tokens: 7,
                output_tokens: 4,
                cache_read_tokens: 2,
                ..Usage::default()
            }),
        ]
    );
    // cut short: no finish_reason
    let cut = chunk(json!({"content": "Hel"}), Value::Null);
    assert!(decode_stream(&cut)
        .unwrap_err()
        .message
        .contains("ended before"));
    // an error chunk mid-stream
    let err = cut + "data: {\"error\": {\"message\": \"boom\", \"type\": \"server_error\"}}\n\n";
    assert_eq!(decode_stream(&err).unwrap_err().message, "boom");
    assert!(decode_stream("data: {nope\n\n").is_err());
}

#[test]
fn client_streams_encode_and_decode_back() {
    let events = vec![
        StreamEvent::Start {
            id: "msg_1".into(),
            model: "claude".into(),
            usage: Usage {
                input_tokens: 5,
                ..Usage::default()
            },
        },
        StreamEvent::ThinkingDelta {
            index: 0,
            text: "hmm".into(),
        },
        StreamEvent::BlockStop { index: 0 },
        StreamEvent::TextDelta {
            index: 1,
            text: "Hi".into(),
        },
        StreamEvent::BlockStop { index: 1 },
        StreamEvent::ToolCallStart {
            index: 2,
            id: "t1".into(),
            name: "f".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 2,
            arguments: "{}".into(),
        },
        StreamEvent::BlockStop { index: 2 },
        StreamEvent::Finish {
            stop_reason: StopReason::ToolUse,
            stop_sequence: None,
        },
        StreamEvent::Usage(Usage {
            output_tokens: 3,
            ..Usage::default()
        }),
    ];
    let mut enc = StreamEncoder::new(true);
    let mut out = Vec::new();
    for ev in &events {
        enc.push(ev, &mut out);
    }
    enc.finish(&mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|b| b.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == "msg_1"));
    // every chunk but the last carries `"usage": null`, and the exact shape OpenAI sends
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| c.get("usage") == Some(&Value::Null)));
    assert_eq!(
        chunks[1],
        json!({"id": "msg_1", "object": "chat.completion.chunk", "created": chunks[1]["created"],
            "model": "claude", "system_fingerprint": null, "choices": [{"index": 0,
            "delta": {"content": "Hi"}, "logprobs": null, "finish_reason": null}], "usage": null})
    );
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 5);
    assert_eq!(last["usage"]["completion_tokens"], 3);
    let back = decode_stream(&text).unwrap();
    assert!(
        back.contains(&StreamEvent::TextDelta {
            index: 0,
            text: "Hi".into()
        }),
        "{back:?}"
    );
    assert!(back.contains(&StreamEvent::ToolCallStart {
        index: 1,
        id: "t1".into(),
        name: "f".into()
    }));
    // without include_usage: no usage chunk, no usage field
    let mut enc = StreamEncoder::new(false);
    let mut out = Vec::new();
    enc.push(&events[0], &mut out);
    enc.finish(&mut out);
    assert!(!String::from_utf8(out).unwrap().contains("usage"));
    // an error mid-stream is an error chunk
    let mut out = Vec::new();
    enc.error(&ProviderError::new(ErrorKind::Timeout, "slow"), &mut out);
    let v: Value = serde_json::from_str(
        String::from_utf8(out)
            .unwrap()
            .trim()
            .trim_start_matches("data: "),
    )
    .unwrap();
    assert_eq!(v["error"]["message"], "slow");
}

#[test]
fn context_window_and_content_policy_errors_are_recognised_in_both_formats() {
    let e = decode_error(
        400,
        br#"{"error": {"message": "This model's maximum context length is 8192 tokens.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}"#,
        None,
    );
    assert_eq!(e.kind, ErrorKind::ContextWindowExceeded);
    assert_eq!(e.http_status(), 400);
    assert!(!e.is_retriable());
    let e = decode_error(
        400,
        br#"{"error": {"message": "rejected", "type": "invalid_request_error", "code": "content_policy_violation"}}"#,
        None,
    );
    assert_eq!(e.kind, ErrorKind::ContentPolicy);
    let e = crate::anthropic::decode_error(
        400,
        br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#,
        None,
    );
    assert_eq!(e.kind, ErrorKind::ContextWindowExceeded);
    let v: Value = serde_json::from_slice(&encode_error(&e)).unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    // an ordinary 400 stays one
    assert_eq!(
        decode_error(400, br#"{"error": {"message": "bad"}}"#, None).kind,
        ErrorKind::InvalidRequest
    );
}

#[test]
fn embeddings_requests_and_answers() {
    let (r, b64) = decode_embeddings_request(
        br#"{"model": "e", "input": ["a", "b"], "dimensions": 8, "encoding_format": "base64"}"#,
    )
    .unwrap();
    assert_eq!(r.input, vec!["a", "b"]);
    assert_eq!(r.dimensions, Some(8));
    assert!(b64);
    assert!(
        decode_embeddings_request(br#"{"model": "e", "input": [[1, 2]]}"#)
            .unwrap_err()
            .message
            .contains("token-array")
    );
    assert!(decode_embeddings_request(br#"{"model": "e"}"#)
        .unwrap_err()
        .message
        .contains("`input`"));
    // what the vectors are for (Cohere's `input_type`): kept, checked, never sent to OpenAI
    assert_eq!(r.input_type, None);
    let (q, _) =
        decode_embeddings_request(br#"{"model": "e", "input": "q", "input_type": "search_query"}"#)
            .unwrap();
    assert_eq!(q.input_type, Some(tollway_core::InputType::SearchQuery));
    let up: Value = serde_json::from_slice(&encode_embeddings_request(&q)).unwrap();
    assert!(up.get("input_type").is_none(), "{up}");
    let err = decode_embeddings_request(br#"{"model": "e", "input": "q", "input_type": "query"}"#)
        .unwrap_err();
    assert_eq!(err.param.as_deref(), Some("input_type"));
    assert!(
        err.message.contains(
            "`search_document`, `search_query`, `classification`, `clustering`, got `query`"
        ),
        "{}",
        err.message
    );
    let up: Value = serde_json::from_slice(&encode_embeddings_request(&r)).unwrap();
    assert_eq!(up["encoding_format"], "float");
    let resp = decode_embeddings_response(
        br#"{"object": "list", "model": "e", "data": [{"index": 1, "embedding": [0.5, 1]}, {"index": 0, "embedding": [1.0, 0.0]}], "usage": {"prompt_tokens": 4, "total_tokens": 4}}"#,
    )
    .unwrap();
    assert_eq!(
        resp.data,
        vec![vec![1.0, 0.0], vec![0.5, 1.0]],
        "ordered by index"
    );
    assert_eq!(resp.usage.input_tokens, 4);
    let v: Value = serde_json::from_slice(&encode_embeddings_response(&resp, true)).unwrap();
    // 1.0f32 = 00 00 80 3f, 0.0 = 00 00 00 00
    assert_eq!(v["data"][0]["embedding"], "AACAPwAAAAA=");
    let v: Value = serde_json::from_slice(&encode_embeddings_response(&resp, false)).unwrap();
    assert_eq!(v["data"][1]["embedding"], json!([0.5, 1.0]));
}

/// An attempt encodes the borrowed request for its own target: the deployment's model, and
/// streaming or not, whatever the request itself says.
#[test]
fn requests_are_encoded_for_their_target() {
    let r = req(json!({"model": "public", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]}))
    .unwrap();
    for stream in [false, true] {
        let target = Target {
            model: "upstream-id",
            stream,
        };
        let body = encode_request_as(&r, target, "up/upstream-id", Dialect::default()).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["model"], "upstream-id");
        assert_eq!(v.get("stream").is_some(), stream, "{v}");
        assert_eq!(v.get("stream_options").is_some(), stream, "{v}");
    }
    // the plain form encodes the request's own model and streaming
    let v: Value =
        serde_json::from_slice(&encode_request(&r, "up/public", Dialect::default()).unwrap())
            .unwrap();
    assert_eq!(
        (v["model"].as_str(), v["stream"].as_bool()),
        (Some("public"), Some(true))
    );
}

/// Every chunk the scanner reads, serde reads the same; what it leaves (the usage chunk, tool
/// calls, errors, anything unusual) serde reads or refuses.
fn scan_agrees(text: &str) -> bool {
    crate::scan::agrees(
        text,
        wire::Chunk::scan(text),
        json::parse_upstream_str_as::<wire::Chunk<'_>>(text, "a stream chunk"),
        |fast, general| assert_eq!(fast, general, "{text}"),
    )
}

const CHUNKS: &[&str] = &[
    r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","service_tier":"default","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}"#,
    r#"{"id":"c","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
    r#"{"id":"c","choices":[]}"#,
    r#"{"choices":[{"delta":{"reasoning_content":"Let me think"}}]}"#,
    r#" { "id" : "c" , "choices" : [ { "delta" : { "content" : "a\"b\\c\nd\u00e9\ud83d\ude00" } , "finish_reason" : "length" } ] } "#,
    r#"{"id":null,"model":null,"choices":null}"#,
    r#"{"choices":[{"delta":null,"finish_reason":null,"logprobs":{"content":[{"token":"a","logprob":-0.5,"bytes":[97],"top_logprobs":[]}]}}],"x":[1,2.5e-3,true,false,{}]}"#,
    r#"{"choices":[{"delta":{"content":"hi","tool_calls":null}}]}"#,
    "{\"choices\":[{\"delta\":{\"content\":\"raw UTF-8: é 中 😀\"}}]}",
];

#[test]
fn the_chunk_scanner_reads_the_usual_chunks_as_serde_does() {
    for t in CHUNKS {
        assert!(scan_agrees(t), "the scanner should take {t}");
    }
    // left to serde: read there, or refused there
    for t in [
        r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]}"#,
        r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
        r#"{"choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"}}]}"#,
        r#"{"id":1,"choices":[]}"#,
        r#"{"id":"a","id":"b"}"#,
        r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#,
        r#"{"con\u0074ent":"x"}"#,
        r#"{"x":"\u0041"}"#,
        r#"{"choices":[{"delta":{"content":"lone \ud83d"}}]}"#,
        r#"{"choices":[]} x"#,
        r#"{"choices":[],}"#,
        r#"{"created":01}"#,
        "{\"choices\":[{\"delta\":{\"content\":\"tab\there\"}}]}",
        "[1]",
        "",
    ] {
        assert!(!scan_agrees(t), "the scanner should leave {t} to serde");
    }
}

/// The chunks above, mutated: whenever the scanner takes one, serde takes it too and reads the
/// same.
#[test]
fn the_chunk_scanner_never_disagrees_with_serde_on_mutated_chunks() {
    let (taken, total) = crate::scan::mutate_and_check(CHUNKS, 6000, scan_agrees);
    // the mutations reach both outcomes
    assert!(taken > 100 && taken < total, "{taken} of {total} taken");
}

fn answer_scan_agrees(text: &str) -> bool {
    crate::scan::agrees(
        text,
        wire::Completion::scan(text),
        json::parse_upstream_str_as::<wire::Completion<'_>>(text, "an answer"),
        |fast, general| assert_eq!(fast, general, "{text}"),
    )
}

const ANSWERS: &[&str] = &[
    include_str!("../../../tollway-mock/testdata/openai_chat_completion.json"),
    r#"{"choices":[{"finish_reason":"stop","index":0,"logprobs":null,"message":{"annotations":[],"content":"Hello! This is a deterministic reply from the tollway mock upstream server.","refusal":null,"role":"assistant"}}],"created":1795853218,"id":"chatcmpl-00000000000000000001","model":"bench-small","object":"chat.completion","service_tier":"default","system_fingerprint":"fp_t0llwaym0ck","usage":{"completion_tokens":12,"completion_tokens_details":{"accepted_prediction_tokens":0,"audio_tokens":0,"reasoning_tokens":0,"rejected_prediction_tokens":0},"prompt_tokens":13,"prompt_tokens_details":{"audio_tokens":0,"cached_tokens":0},"total_tokens":25}}"#,
    r#"{"id":"x","choices":[{"message":{"reasoning_content":"think","content":"a\nb \u00e9","tool_calls":null},"finish_reason":"length"}],"usage":{"prompt_tokens":100,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":60},"completion_tokens_details":{"reasoning_tokens":3}}}"#,
    r#"{"choices":[{"message":{"content":null,"refusal":"I can't help with that.","tool_calls":[]}}],"usage":null,"created":null}"#,
    r#"{"choices":[],"usage":{"prompt_tokens":null,"completion_tokens":0,"prompt_tokens_details":null}}"#,
];

#[test]
fn the_answer_scanner_reads_the_usual_answers_as_serde_does() {
    for t in ANSWERS {
        assert!(answer_scan_agrees(t), "the scanner should take {t}");
    }
    for t in [
        // tool calls, several choices, odd counts, duplicates: serde reads or refuses them
        r#"{"choices":[{"message":{"tool_calls":[{"id":"c","function":{"name":"f","arguments":"{}"}}]}}]}"#,
        r#"{"choices":[{"message":{"content":"a"}},{"message":{"content":"b"}}]}"#,
        r#"{"usage":{"prompt_tokens":1.5}}"#,
        r#"{"usage":{"prompt_tokens":-1}}"#,
        r#"{"usage":{"prompt_tokens":"7"}}"#,
        r#"{"created":-5}"#,
        r#"{"usage":{"prompt_tokens":1,"prompt_tokens":2}}"#,
        r#"{"choices":[{"message":{"content":"a"},"message":null}]}"#,
        r#"{"choices":[] "#,
    ] {
        assert!(
            !answer_scan_agrees(t),
            "the scanner should leave {t} to serde"
        );
    }
    let (taken, total) = crate::scan::mutate_and_check(ANSWERS, 6000, answer_scan_agrees);
    assert!(taken > 100 && taken < total, "{taken} of {total} taken");
}

/// An answer decodes the same whichever way it was read.
#[test]
fn answers_decode_the_same_through_the_scanner_and_serde() {
    for t in ANSWERS {
        assert!(wire::Completion::scan(t).is_some());
        // the same answer with a first key spelled with an escape: the scanner leaves it to serde
        let escaped = crate::scan::with_escaped_first_key(t);
        assert!(wire::Completion::scan(&escaped).is_none());
        let fast = decode_response(t.as_bytes()).map_err(|e| e.message);
        let general = decode_response(escaped.as_bytes()).map_err(|e| e.message);
        assert_eq!(fast, general, "{t}");
    }
}
