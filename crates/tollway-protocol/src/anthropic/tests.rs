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
        r#"{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
        r#"{"model":"c","max_tokens":5,"system":"be brief \u00e9","messages":[{"role":"user","content":"hi \"q\"\n"},{"role":"assistant","content":""},{"role":"user","content":"more"}],"temperature":0.2,"top_p":1,"top_k":40,"stop_sequences":["END","\n\n"],"stream":true,"metadata":{"user_id":"u-1"}}"#,
        r#"{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"system":null,"temperature":null,"top_k":null,"stop_sequences":null,"stream":null,"metadata":null}"#,
        r#"{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"system":"","stop_sequences":[],"metadata":{}}"#,
        r#"{"messages":[{"content":"héllo ✓","role":"user"}],"max_tokens":4294967295,"model":""}"#,
    ];
    for t in taken {
        assert!(same_both_ways(t), "the fast path should take {t}");
    }
    let left = [
        "",
        "{",
        "[]",
        r#"{"model":"c","messages":[{"role":"user","content":"hi"}]}"#,
        r#"{"model":"c","max_tokens":0,"messages":[{"role":"user","content":"hi"}]}"#,
        r#"{"model":"c","max_tokens":5.0,"messages":[{"role":"user","content":"hi"}]}"#,
        r#"{"model":"c","max_tokens":5,"messages":[]}"#,
        r#"{"model":"c","max_tokens":5,"max_tokens":6,"messages":[{"role":"user","content":"hi"}]}"#,
        r#"{"model":"c","max_tokens":5,"messages":[{"role":"system","content":"hi"}]}"#,
        r#"{"model":"c","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#,
        r#"{"model":"c","max_tokens":5,"messages":[{"role":"user","content":null}]}"#,
        r#"{"model":"c","max_tokens":5,"system":[{"type":"text","text":"s"}],"messages":[{"role":"user","content":"hi"}]}"#,
        r#"{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"stop_sequences":["a",1]}"#,
        r#"{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"metadata":{"user_id":"u","x":1}}"#,
        r#"{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"thinking":{"type":"enabled","budget_tokens":1024}}"#,
        r#"{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"tools":[]}"#,
        r#"{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"models":["a"]}"#,
        r#"{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"top_k":-1}"#,
    ];
    for t in left {
        assert!(
            !same_both_ways(t),
            "the fast path should leave {t} to the general path"
        );
    }
}

/// The upstream body of a test request; checks on the way that the hand-written body is byte
/// for byte what serde writes.
fn body(r: &ChatRequest) -> Value {
    let b = request_body(r, Target::of(r), "ant/claude".into()).unwrap();
    let written = b.to_vec();
    assert_eq!(
        String::from_utf8(written.clone()).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    assert_eq!(written, encode_request(r, "ant/claude").unwrap());
    serde_json::from_slice(&written).unwrap()
}

#[test]
fn upstream_bodies_are_written_as_serde_writes_them() {
    let r = req(json!({
        "model": "claude", "max_tokens": 77, "temperature": 0.5, "stop_sequences": ["END"],
        "stream": true, "metadata": {"user_id": "u\"1"}, "top_k": 3,
        "system": [{"type": "text", "text": "policy \"quoted\"\n", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "plain"}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "long document\u{1} \\ é 🚀", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                {"type": "text", "text": "question"}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm\n", "signature": "sig"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"q": "x"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "result \"text\""},
                {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "text", "text": "bad", "cache_control": {"type": "ephemeral"}}], "is_error": true}]}
        ]
    }))
    .unwrap();
    let b = body(&r);
    assert_eq!(b["max_tokens"], json!(77));
    assert_eq!(
        b["system"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
    assert_eq!(
        b["messages"][0]["content"][0]["text"],
        json!("long document\u{1} \\ é 🚀")
    );
    assert_eq!(
        b["messages"][2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "t1", "content": "result \"text\""})
    );
    assert_eq!(b["messages"][2]["content"][1]["is_error"], json!(true));
    // a single plain system block is written as a string
    let plain = req(
        json!({"model": "claude", "max_tokens": 5, "system": "be brief",
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .unwrap();
    assert_eq!(body(&plain)["system"], json!("be brief"));
}

#[test]
fn decodes_and_reencodes_the_same_request() {
    let input = json!({
        "model": "claude-sonnet-4-5", "max_tokens": 100, "temperature": 0.5, "top_k": 5,
        "stop_sequences": ["END"], "stream": true,
        "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        "metadata": {"user_id": "u1"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}},
                  {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}
        ]
    });
    let r = req(input.clone()).unwrap();
    assert_eq!(r.max_tokens, Some(100));
    assert_eq!(r.tool_choice, Some(ToolChoice::Required));
    assert_eq!(r.parallel_tool_calls, Some(false));
    assert_eq!(r.user.as_deref(), Some("u1"));
    assert_eq!(r.tools.len(), 1);
    assert_eq!(r.messages[3].role, Role::Tool);
    let b = body(&r);
    for key in [
        "model",
        "max_tokens",
        "temperature",
        "top_k",
        "stop_sequences",
        "stream",
        "system",
        "metadata",
        "thinking",
        "tools",
        "tool_choice",
        "messages",
    ] {
        assert_eq!(b[key], input[key], "{key}");
    }
}

#[test]
fn errors_name_the_field() {
    let ok_msgs = json!([{"role": "user", "content": "x"}]);
    let cases = [
        (json!({"model": "m", "messages": ok_msgs}), "`max_tokens`"),
        (
            json!({"model": "m", "max_tokens": 0, "messages": ok_msgs}),
            "`max_tokens`",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
            "`messages[0].role`",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text"}]}]}),
            "`messages[0].content[0].text`",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}),
            "document",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": ok_msgs, "system": 3}),
            "`system`",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": ok_msgs, "tools": [{"name": "f"}]}),
            "`tools[0].input_schema`",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": ok_msgs, "tool_choice": {"type": "maybe"}}),
            "tool_choice",
        ),
    ];
    for (v, needle) in cases {
        let e = req(v.clone()).unwrap_err();
        assert!(e.message.contains(needle), "{v}: {}", e.message);
    }
}

#[test]
fn openai_requests_translate() {
    let r = crate::openai::decode_request(
        json!({"model": "gpt", "user": "u", "store": true, "parallel_tool_calls": false,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "messages": [
                {"role": "system", "content": "a"}, {"role": "developer", "content": "b"},
                {"role": "user", "content": [{"type": "text", "text": "q"},
                    {"type": "image_url", "image_url": {"url": "https://x/i.png"}}]},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                    {"id": "c2", "type": "function", "function": {"name": "f", "arguments": ""}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "r1"},
                {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "r2"}]},
                {"role": "user", "content": "more"}
            ]})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let b = body(&r);
    assert_eq!(b["max_tokens"], DEFAULT_MAX_TOKENS);
    assert_eq!(
        b["system"],
        json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
    );
    assert_eq!(b["metadata"], json!({"user_id": "u"}));
    assert_eq!(
        b["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    assert_eq!(
        b["tools"],
        json!([{"name": "f", "input_schema": {"type": "object"}}])
    );
    assert_eq!(
        b["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "q"},
                {"type": "image", "source": {"type": "url", "url": "https://x/i.png"}}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}},
                {"type": "tool_use", "id": "c2", "name": "f", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "r1"},
                {"type": "tool_result", "tool_use_id": "c2", "content": "r2"},
                {"type": "text", "text": "more"}]}
        ])
    );
}

#[test]
fn what_anthropic_cannot_do_is_refused_by_name() {
    let base = json!({"model": "gpt", "messages": [{"role": "user", "content": "x"}]});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        crate::openai::decode_request(b.to_string().as_bytes()).unwrap()
    };
    let e = encode_request(
        &with("response_format", json!({"type": "json_object"})),
        "ant/claude",
    )
    .unwrap_err();
    assert!(
        e.message.contains("json_object") && e.message.contains("ant/claude"),
        "{}",
        e.message
    );
    let e = encode_request(&with("logprobs", json!(true)), "ant/claude").unwrap_err();
    assert!(e.message.contains("logprobs"), "{}", e.message);
    assert!(encode_request(&with("logprobs", json!(false)), "ant/claude").is_ok());
    assert!(encode_request(&with("frequency_penalty", json!(0)), "ant/claude").is_ok());
    let e = encode_request(&with("seed", json!(1)), "ant/claude").unwrap_err();
    assert_eq!(e.param.as_deref(), Some("seed"));
    let bad_args = crate::openai::decode_request(
        json!({"model": "g", "messages": [{"role": "assistant", "content": null,
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    assert!(encode_request(&bad_args, "ant/claude")
        .unwrap_err()
        .message
        .contains("not valid JSON"));
}

/// The shapes of an upstream body that requests from other families produce: system text as a
/// string or blocks, merged turns, tool results with blocks, tool arguments as objects.
#[test]
fn upstream_bodies_have_anthropic_block_shapes() {
    let text = |t: &str| Part::text(t);
    let mut r = crate::openai::decode_request(
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    r.messages = vec![
        Message {
            role: Role::System,
            content: vec![text("one")],
        },
        Message {
            role: Role::User,
            content: vec![text("a"), text("")],
        },
        Message {
            role: Role::User,
            content: vec![Part::Image(ImageSource::Url("https://x/y.png".into()))],
        },
        Message {
            role: Role::Assistant,
            content: vec![
                Part::ToolCall(ToolCall {
                    id: "t1".into(),
                    name: "f".into(),
                    arguments: " {\"b\": [1, 2]} ".into(),
                }),
                Part::ToolCall(ToolCall {
                    id: "t2".into(),
                    name: "g".into(),
                    arguments: String::new(),
                }),
            ],
        },
        Message {
            role: Role::Tool,
            content: vec![Part::ToolResult(ToolResult {
                tool_call_id: "t1".into(),
                content: vec![
                    text("see"),
                    Part::Image(ImageSource::Base64 {
                        media_type: "image/png".into(),
                        data: "AAA".into(),
                    }),
                ],
                is_error: true,
            })],
        },
    ];
    let b = body(&r);
    assert_eq!(b["system"], json!("one"));
    assert_eq!(
        b["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "a"},
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"b": [1, 2]}},
                {"type": "tool_use", "id": "t2", "name": "g", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "is_error": true,
                "content": [{"type": "text", "text": "see"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}}]}]}
        ])
    );
    r.messages.insert(
        1,
        Message {
            role: Role::System,
            content: vec![text("two")],
        },
    );
    assert_eq!(
        body(&r)["system"],
        json!([{"type": "text", "text": "one"}, {"type": "text", "text": "two"}])
    );
    // arguments that are JSON but not an object are refused by name
    r.messages[4].content = vec![Part::ToolCall(ToolCall {
        id: "t3".into(),
        name: "f".into(),
        arguments: "[1]".into(),
    })];
    let e = encode_request(&r, "ant/claude").unwrap_err();
    assert!(
        e.message.contains("`t3` must be a JSON object"),
        "{}",
        e.message
    );
}

/// The answer to an Anthropic client; checks on the way that the hand-written answer is byte for
/// byte what serde writes.
fn answer(r: &ChatResponse) -> Vec<u8> {
    let written = encode_response(r);
    assert_eq!(
        String::from_utf8(written.clone()).unwrap(),
        serde_json::to_string(&response_message(r)).unwrap()
    );
    written
}

#[test]
fn answers_are_written_as_serde_writes_them() {
    let r = ChatResponse {
        id: String::new(),
        model: "claude \"x\"".into(),
        content: vec![
            Part::text("line\none \u{7} \\ \"q\" é"),
            Part::text(""),
            Part::Thinking {
                text: "t\n".into(),
                signature: None,
            },
        ],
        stop_reason: StopReason::StopSequence,
        stop_sequence: Some("END\n".into()),
        usage: Usage {
            input_tokens: u64::MAX,
            output_tokens: 0,
            cache_read_tokens: 12,
            cache_write_tokens: 345,
            reasoning_tokens: 9,
        },
        created: 1,
    };
    let back: Value = serde_json::from_slice(&answer(&r)).unwrap();
    assert_eq!(back["id"], "msg_tollway");
    assert_eq!(back["content"][0]["text"], "line\none \u{7} \\ \"q\" é");
    assert_eq!(back["stop_sequence"], "END\n");
    assert_eq!(back["usage"]["input_tokens"], u64::MAX);
    for cost in [None, Some("0.000123"), Some("\"")] {
        let u = out::Usage {
            cost_usd: cost,
            ..out::Usage::of(&r.usage)
        };
        let mut written = Vec::new();
        u.write(&mut written);
        assert_eq!(written, serde_json::to_vec(&u).unwrap());
    }
}

#[test]
fn answers_round_trip() {
    let upstream = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
        "content": [{"type": "thinking", "thinking": "t", "signature": "sig"}, {"type": "text", "text": "hi"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 7}});
    let r = decode_response(upstream.to_string().as_bytes()).unwrap();
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 10,
            output_tokens: 5,
            cache_read_tokens: 7,
            cache_write_tokens: 3,
            reasoning_tokens: 0
        }
    );
    assert_eq!(r.stop_reason, StopReason::ToolUse);
    let back: Value = serde_json::from_slice(&answer(&r)).unwrap();
    assert_eq!(back["content"], upstream["content"]);
    assert_eq!(back["usage"], upstream["usage"]);
    assert_eq!(back["stop_reason"], "tool_use");
    // invalid tool arguments from another vendor's model are kept, not lost
    let input = |args: &str| serde_json::to_value(tool_input(args)).unwrap();
    assert_eq!(input("[1]"), json!({"_raw_arguments": "[1]"}));
    assert_eq!(input("{not json"), json!({"_raw_arguments": "{not json"}));
    assert_eq!(input("  "), json!({}));
    // an object is written as it came, whitespace and key order included
    assert_eq!(input(" {\"b\": 1, \"a\": [2]} "), json!({"b": 1, "a": [2]}));
    let raw = ChatResponse {
        content: vec![Part::ToolCall(ToolCall {
            id: "t".into(),
            name: "f".into(),
            arguments: "{\"b\": 1, \"a\": 2}".into(),
        })],
        ..r
    };
    let text = String::from_utf8(answer(&raw)).unwrap();
    assert!(text.contains(r#""input":{"b": 1, "a": 2}"#), "{text}");
}

/// Upstream answers are read leniently, field by field: a field of another type reads as absent,
/// as the `Value` accessors did; only an answer without a content array is refused.
#[test]
fn answers_with_odd_fields_decode_leniently() {
    let r = decode_response(
        br#"{"id": 5, "model": "claude", "content": [7, {"type": "text", "text": "caf\u00e9"},
            {"type": "server_tool_use", "id": "x"}, {"type": "tool_use", "id": "t", "name": "f"}],
            "stop_reason": null, "usage": {"input_tokens": "9", "output_tokens": -1,
            "cache_read_input_tokens": 4.5, "unknown": {"deep": [1]}}, "extra": [1, {"a": 2}]}"#,
    )
    .unwrap();
    assert_eq!(r.id, "");
    assert_eq!(
        r.content,
        vec![
            Part::text("café"),
            Part::ToolCall(ToolCall {
                id: "t".into(),
                name: "f".into(),
                arguments: "{}".into()
            })
        ]
    );
    assert_eq!(r.stop_reason, StopReason::EndTurn);
    assert_eq!(r.usage, Usage::default());
    for body in [
        r#"{"id": "m"}"#,
        r#"{"content": "hi"}"#,
        r#"{"content": null}"#,
    ] {
        let e = decode_response(body.as_bytes()).unwrap_err();
        assert!(e.message.contains("no content"), "{body}: {}", e.message);
    }
    let e = decode_response(br#"{"content": ["#).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidResponse);
    // stream events: odd fields are absent, an error event without details is still an error
    let odd = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":[]}\n\n\
        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":-3,\"delta\":{\"type\":\"text_delta\",\"text\":\"a\\nb\"}}\n\n\
        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":\"x\"}\n\n\
        event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":null}\n\n";
    assert_eq!(
        decode_stream(odd).unwrap(),
        vec![
            StreamEvent::Start {
                id: String::new(),
                model: String::new(),
                usage: Usage::default()
            },
            StreamEvent::TextDelta {
                index: 0,
                text: "a\nb".into()
            },
            StreamEvent::Finish {
                stop_reason: StopReason::EndTurn,
                stop_sequence: None
            },
        ]
    );
    let bare = "event: error\ndata: {\"type\":\"error\"}\n\n";
    assert_eq!(decode_stream(bare).unwrap_err().kind, ErrorKind::Upstream);
}

#[test]
fn errors_decode_and_encode() {
    let e = decode_error(
        529,
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        None,
    );
    assert_eq!(e.kind, ErrorKind::Overloaded);
    assert_eq!(e.message, "Overloaded");
    let v: Value = serde_json::from_slice(&encode_error(&ProviderError::new(
        ErrorKind::RateLimited,
        "wait",
    )))
    .unwrap();
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "wait"}})
    );
}

const STREAM: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1,"cache_read_input_tokens":4}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\": 1}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":15}}

event: message_stop
data: {"type":"message_stop"}

"#;

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
fn upstream_streams_decode() {
    let events = decode_stream(STREAM).unwrap();
    assert_eq!(
        events,
        vec![
            StreamEvent::Start {
                id: "msg_1".into(),
                model: "claude".into(),
                usage: Usage {
                    input_tokens: 25,
                    output_tokens: 1,
                    cache_read_tokens: 4,
                    ..Usage::default()
                }
            },
            StreamEvent::TextDelta {
                index: 0,
                text: "Hello".into()
            },
            StreamEvent::BlockStop { index: 0 },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "toolu_1".into(),
                name: "f".into()
            },
            StreamEvent::ToolCallDelta {
                index: 1,
                arguments: "{\"a\": 1}".into()
            },
            StreamEvent::BlockStop { index: 1 },
            StreamEvent::Usage(Usage {
                output_tokens: 15,
                ..Usage::default()
            }),
            StreamEvent::Finish {
                stop_reason: StopReason::ToolUse,
                stop_sequence: None
            },
        ]
    );
    let cut = &STREAM[..STREAM.find("event: message_delta").unwrap()];
    assert!(decode_stream(cut).is_err());
    let err = format!("{cut}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n");
    assert_eq!(decode_stream(&err).unwrap_err().kind, ErrorKind::Overloaded);
}

#[test]
fn client_streams_have_every_event_in_order_and_decode_back() {
    let events = decode_stream(STREAM).unwrap();
    let mut enc = StreamEncoder::new(false);
    let mut out = Vec::new();
    for ev in &events {
        enc.push(ev, &mut out);
    }
    enc.finish(&mut out);
    let text = String::from_utf8(out).unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(decode_stream(&text).unwrap(), {
        // the re-encoded stream carries the final usage whole in message_delta
        let mut e = events.clone();
        e[6] = StreamEvent::Usage(Usage {
            input_tokens: 25,
            output_tokens: 15,
            cache_read_tokens: 4,
            ..Usage::default()
        });
        e[0] = StreamEvent::Start {
            id: "msg_1".into(),
            model: "claude".into(),
            usage: Usage {
                input_tokens: 25,
                output_tokens: 1,
                cache_read_tokens: 4,
                ..Usage::default()
            },
        };
        e
    });
    // OpenAI-style upstream: text blocks start without an explicit start event; indices compact
    let mut enc = StreamEncoder::new(false);
    let mut out = Vec::new();
    for ev in [
        StreamEvent::Start {
            id: "c".into(),
            model: "g".into(),
            usage: Usage::default(),
        },
        StreamEvent::TextDelta {
            index: 3,
            text: "a".into(),
        },
        StreamEvent::ToolCallStart {
            index: 7,
            id: "call".into(),
            name: "f".into(),
        },
        StreamEvent::Finish {
            stop_reason: StopReason::ToolUse,
            stop_sequence: None,
        },
    ] {
        enc.push(&ev, &mut out);
    }
    enc.finish(&mut out);
    let text = String::from_utf8(out).unwrap();
    // the client's block indices are compact and in order: 0 (text), then 1 (tool use)
    let starts: Vec<Value> = text
        .split("\n\n")
        .filter(|b| b.starts_with("event: content_block_start"))
        .filter_map(|b| b.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(starts.len(), 2, "{text}");
    assert_eq!(
        (
            starts[0]["index"].as_u64(),
            starts[0]["content_block"]["type"].as_str()
        ),
        (Some(0), Some("text"))
    );
    assert_eq!(
        (
            starts[1]["index"].as_u64(),
            starts[1]["content_block"]["type"].as_str()
        ),
        (Some(1), Some("tool_use"))
    );
    let back = decode_stream(&text).unwrap();
    assert!(
        back.contains(&StreamEvent::TextDelta {
            index: 0,
            text: "a".into()
        }),
        "{back:?}"
    );
    assert!(back.contains(&StreamEvent::ToolCallStart {
        index: 1,
        id: "call".into(),
        name: "f".into()
    }));
    let mut out = Vec::new();
    enc.error(&ProviderError::new(ErrorKind::Overloaded, "busy"), &mut out);
    assert!(String::from_utf8(out)
        .unwrap()
        .starts_with("event: error\n"));
}

#[test]
fn structured_output_and_effort_cross_both_ways() {
    let r = req(json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
        "output_config": {"effort": "high", "format": {"type": "json_schema", "schema": {"type": "object"}}},
        "cache_control": {"type": "ephemeral"}}))
    .unwrap();
    assert!(matches!(
        r.response_format,
        Some(ResponseFormat::JsonSchema { .. })
    ));
    let same = body(&r);
    assert_eq!(
        same["output_config"],
        json!({"format": {"type": "json_schema", "schema": {"type": "object"}}, "effort": "high"})
    );
    assert_eq!(same["cache_control"], json!({"type": "ephemeral"}));
    let oai: Value = serde_json::from_slice(
        &crate::openai::encode_request(&r, "oai/gpt", crate::openai::Dialect::default()).unwrap(),
    )
    .unwrap();
    assert_eq!(oai["reasoning_effort"], "high");
    assert_eq!(oai["response_format"]["type"], "json_schema");
    assert_eq!(
        oai["response_format"]["json_schema"]["schema"],
        json!({"type": "object"})
    );
    // and back: an OpenAI json_schema request reaches Anthropic as output_config.format
    let o = crate::openai::decode_request(
        json!({"model": "g", "reasoning_effort": "low", "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}}})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let b = body(&o);
    assert_eq!(
        b["output_config"],
        json!({"format": {"type": "json_schema", "schema": {"type": "object"}}, "effort": "low"})
    );
}

#[test]
fn delta_events_are_written_as_serde_writes_them() {
    let texts = ["", "plain", "a \"quoted\" \\ line\nbreak \u{1}", "héllo ✓"];
    for t in texts {
        for (index, d) in [
            (0, BlockDelta::Text { text: t }),
            (3, BlockDelta::Thinking { thinking: t }),
            (12, BlockDelta::Signature { signature: t }),
            (4_000_000_000, BlockDelta::InputJson { partial_json: t }),
        ] {
            let (kind, _, _) = d.parts();
            // the reference, with the same delta (BlockDelta is not Clone: rebuilt)
            let mut expected = Vec::new();
            let same = match kind {
                "text_delta" => BlockDelta::Text { text: t },
                "thinking_delta" => BlockDelta::Thinking { thinking: t },
                "signature_delta" => BlockDelta::Signature { signature: t },
                _ => BlockDelta::InputJson { partial_json: t },
            };
            crate::sse::write_json_event(
                &mut expected,
                Some("content_block_delta"),
                &DeltaEvent {
                    kind: "content_block_delta",
                    index,
                    delta: same,
                },
            );
            let mut written = Vec::new();
            StreamEncoder::delta(&mut written, index, d);
            assert_eq!(
                String::from_utf8(written).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }
}

/// Every event a client stream can hold, written from fragments: the exact text, keys in the
/// order Anthropic's reference shows them, escapes where the text needs them.
#[test]
fn client_stream_events_are_written_exactly() {
    let mut enc = StreamEncoder::new(false);
    let mut out = Vec::new();
    for ev in [
        StreamEvent::Start {
            id: "msg_\"1".into(),
            model: "claude".into(),
            usage: Usage {
                input_tokens: 12,
                cache_read_tokens: 3,
                ..Usage::default()
            },
        },
        StreamEvent::ThinkingDelta {
            index: 0,
            text: "hm".into(),
        },
        StreamEvent::ThinkingSignature {
            index: 0,
            signature: "sig".into(),
        },
        StreamEvent::TextDelta {
            index: 1,
            text: "a\n".into(),
        },
        StreamEvent::BlockStop { index: 1 },
        StreamEvent::ToolCallStart {
            index: 2,
            id: "toolu_1".into(),
            name: "f\\".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 2,
            arguments: "{\"q\":".into(),
        },
        StreamEvent::Finish {
            stop_reason: StopReason::StopSequence,
            stop_sequence: Some("END".into()),
        },
        StreamEvent::Usage(Usage {
            output_tokens: 9,
            ..Usage::default()
        }),
    ] {
        enc.push(&ev, &mut out);
    }
    enc.set_cost_usd(Some("0.0012".into()));
    enc.finish(&mut out);
    let expected = concat!(
        "event: message_start\n",
        r#"data: {"type":"message_start","message":{"id":"msg_\"1","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":3}}}"#,
        "\n\nevent: ping\n",
        r#"data: {"type":"ping"}"#,
        "\n\nevent: content_block_start\n",
        r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}"#,
        "\n\nevent: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}"#,
        "\n\nevent: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"sig"}}"#,
        "\n\nevent: content_block_stop\n",
        r#"data: {"type":"content_block_stop","index":0}"#,
        "\n\nevent: content_block_start\n",
        r#"data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#,
        "\n\nevent: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"a\n"}}"#,
        "\n\nevent: content_block_stop\n",
        r#"data: {"type":"content_block_stop","index":1}"#,
        "\n\nevent: content_block_start\n",
        r#"data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"f\\","input":{}}}"#,
        "\n\nevent: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"q\":"}}"#,
        "\n\nevent: content_block_stop\n",
        r#"data: {"type":"content_block_stop","index":2}"#,
        "\n\nevent: message_delta\n",
        r#"data: {"type":"message_delta","delta":{"stop_reason":"stop_sequence","stop_sequence":"END"},"usage":{"input_tokens":12,"output_tokens":9,"cache_creation_input_tokens":0,"cache_read_input_tokens":3,"cost_usd":"0.0012"}}"#,
        "\n\nevent: message_stop\n",
        r#"data: {"type":"message_stop"}"#,
        "\n\n",
    );
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}

/// An attempt encodes the borrowed request for its own target: the deployment's model, and
/// streaming or not, whatever the request itself says.
#[test]
fn requests_are_encoded_for_their_target() {
    let r = req(json!({"model": "public", "max_tokens": 5, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]}))
    .unwrap();
    for stream in [false, true] {
        let target = Target {
            model: "claude-upstream",
            stream,
        };
        let body = encode_request_as(&r, target, "ant/claude-upstream").unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["model"], "claude-upstream");
        assert_eq!(v.get("stream").is_some(), stream, "{v}");
    }
}

/// Every event the scanner reads, serde reads the same (the scanner leaves message, content
/// block, usage and error to serde, so those are absent on both sides).
fn event_scan_agrees(text: &str) -> bool {
    crate::scan::agrees(
        text,
        wire::Event::scan(text),
        serde_json::from_str::<wire::Event<'_>>(text),
        |fast, general| {
            assert_eq!(fast.kind, general.kind, "{text}");
            assert_eq!(fast.index, general.index, "{text}");
            assert_eq!(fast.delta, general.delta, "{text}");
            assert!(general.message.0.is_none(), "{text}");
            assert!(general.content_block.0.is_none(), "{text}");
            assert!(general.usage.0.is_none(), "{text}");
            assert!(general.error.0.is_none(), "{text}");
        },
    )
}

const EVENTS: &[&str] = &[
    r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}"#,
    r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\": \"San Fra"}}"#,
    r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me solve this step by step:\n\n1. First break down 27 * 453"}}"#,
    r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}}"#,
    r#"{"type": "content_block_stop", "index": 0}"#,
    r#"{"type": "ping"}"#,
    r#"{"type": "message_stop"}"#,
    r#"{"type":"content_block_delta","index":null,"delta":null,"extra":[1,{"a":true}]}"#,
    "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"é 中 😀 \\u00e9\"}}",
];

#[test]
fn the_event_scanner_reads_the_usual_events_as_serde_does() {
    for t in EVENTS {
        assert!(event_scan_agrees(t), "the scanner should take {t}");
    }
    for t in [
        r#"{"type": "message_start", "message": {"id": "msg_1", "model": "claude", "usage": {"input_tokens": 25}}}"#,
        r#"{"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}"#,
        r#"{"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, "usage": {"output_tokens": 15}}"#,
        r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#,
        r#"{"type":"content_block_delta","index":-1}"#,
        r#"{"type":"a","type":"b"}"#,
        r#"{"type":"content_block_delta","delta":{"text":"a","text":"b"}}"#,
        r#"{"type": "ping"} {"#,
    ] {
        assert!(
            !event_scan_agrees(t),
            "the scanner should leave {t} to serde"
        );
    }
    let (taken, total) = crate::scan::mutate_and_check(EVENTS, 6000, event_scan_agrees);
    assert!(taken > 100 && taken < total, "{taken} of {total} taken");
}

/// What a scanned answer holds, to compare with serde's (a tool call's raw `input` has no `==`).
fn answer_fields(m: &wire::Message<'_>) -> String {
    let blocks: Vec<_> = m.content.0.as_ref().map_or(Vec::new(), |bs| {
        bs.iter()
            .map(|b| {
                (
                    b.kind.clone(),
                    b.text.clone(),
                    b.id.clone(),
                    b.name.clone(),
                    b.input.map(|r| r.get().to_string()),
                    b.thinking.clone(),
                    b.signature.clone(),
                )
            })
            .collect()
    });
    format!(
        "{:?} {:?} {:?} {:?} {:?} {:?} {:?}",
        m.id,
        m.model,
        m.content.0.is_some(),
        blocks,
        m.stop_reason,
        m.stop_sequence,
        m.usage
    )
}

fn answer_scan_agrees(text: &str) -> bool {
    crate::scan::agrees(
        text,
        wire::Message::scan(text),
        json::parse_upstream_str_as::<wire::Message<'_>>(text, "an answer"),
        |fast, general| assert_eq!(answer_fields(fast), answer_fields(general), "{text}"),
    )
}

const ANSWERS: &[&str] = &[
    include_str!("../../../tollway-mock/testdata/anthropic_message.json"),
    r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[{"type":"thinking","thinking":"Hmm\n","signature":"sig"},{"type":"text","text":"a \"quoted\" \u00e9"}],"stop_reason":"max_tokens","stop_sequence":null,"usage":{"input_tokens":10,"cache_creation_input_tokens":null,"cache_read_input_tokens":4,"output_tokens":2,"service_tier":"standard"}}"#,
    r#"{"content":[],"usage":null,"stop_reason":"stop_sequence","stop_sequence":"\n\nHuman:"}"#,
    r#"{"content":null}"#,
];

#[test]
fn the_answer_scanner_reads_the_usual_answers_as_serde_does() {
    for t in ANSWERS {
        assert!(answer_scan_agrees(t), "the scanner should take {t}");
    }
    for t in [
        r#"{"content":[{"type":"tool_use","id":"t","name":"f","input":{"a":1}}]}"#,
        r#"{"content":["text"]}"#,
        r#"{"usage":{"input_tokens":1.5}}"#,
        r#"{"usage":{"input_tokens":1,"input_tokens":2}}"#,
        r#"{"content":[{"type":"text","text":"a","text":"b"}]}"#,
        r#"{"id":"a"}x"#,
    ] {
        assert!(
            !answer_scan_agrees(t),
            "the scanner should leave {t} to serde"
        );
    }
    let (taken, total) = crate::scan::mutate_and_check(ANSWERS, 6000, answer_scan_agrees);
    assert!(taken > 100 && taken < total, "{taken} of {total} taken");
    // and the answer decodes the same either way (an escaped first key sends it to serde)
    for t in ANSWERS {
        let escaped = crate::scan::with_escaped_first_key(t);
        assert!(wire::Message::scan(&escaped).is_none());
        assert_eq!(
            decode_response(t.as_bytes()).map_err(|e| e.message),
            decode_response(escaped.as_bytes()).map_err(|e| e.message),
            "{t}"
        );
    }
}

#[test]
fn token_counts_need_no_max_tokens_and_send_only_their_own_fields() {
    let body = json!({"model": "claude", "system": "Be brief.", "temperature": 0.5,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}]});
    let r = decode_count_tokens_request(body.to_string().as_bytes()).expect("decodes");
    assert_eq!(r.model, "claude");
    assert_eq!(r.messages.len(), 2);
    // a max_tokens given is checked as for a message
    let mut bad = body.clone();
    bad["max_tokens"] = json!(0);
    let e = decode_count_tokens_request(bad.to_string().as_bytes()).unwrap_err();
    assert!(e.message.contains("max_tokens"), "{}", e.message);
    let e = decode_count_tokens_request(b"{\"model\": \"claude\"}").unwrap_err();
    assert!(e.message.contains("messages"), "{}", e.message);
    // upstream: the count's fields only, for the deployment's model
    let sent = encode_count_tokens_request(
        &r,
        Target {
            model: "claude-sonnet-4-5",
            stream: false,
        },
        "ant/claude-sonnet-4-5",
    )
    .expect("encodes");
    let sent: Value = serde_json::from_slice(&sent).expect("json");
    let mut keys: Vec<&str> = sent
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["messages", "model", "system", "tools"]);
    assert_eq!(sent["model"], "claude-sonnet-4-5");
    // answers
    assert_eq!(
        decode_count_tokens_response(b"{\"input_tokens\": 42}").ok(),
        Some(42)
    );
    for bad in [
        &b"{\"tokens\": 42}"[..],
        b"{\"input_tokens\": -1}",
        b"not json",
    ] {
        let e = decode_count_tokens_response(bad).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidResponse);
    }
    assert_eq!(encode_count_tokens_response(7), b"{\"input_tokens\":7}");
}

#[test]
fn claude_on_vertex_names_its_version_and_carries_betas_in_the_body() {
    let mut r = ChatRequest::simple("claude-sonnet-4-5", "hi");
    r.max_tokens = Some(64);
    r.betas = vec!["context-1m-2025-08-07".into()];
    let target = Target {
        model: "claude-sonnet-4-5@20250929",
        stream: true,
    };
    let bytes = encode_request_vertex(&r, target, "vertex/claude").expect("encodes");
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    assert!(v.get("model").is_none(), "{v}");
    assert_eq!(v["anthropic_version"], json!(VERTEX_VERSION));
    assert_eq!(v["anthropic_beta"], json!(["context-1m-2025-08-07"]));
    assert_eq!(v["stream"], json!(true));
    assert_eq!(v["max_tokens"], json!(64));
    assert_eq!(v["messages"][0]["content"][0]["text"], json!("hi"));
}
