//! The mock's answers have the shape of the providers' published examples (testdata/).

use serde_json::{json, Value};

use crate::*;

fn golden(name: &str) -> String {
    let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn golden_json(name: &str) -> Value {
    serde_json::from_str(&golden(name)).expect("golden json")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Differences in shape: keys (recursively) and JSON types. Array elements are compared with
/// the golden's first element.
fn shape_diff(golden: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    if kind(golden) != kind(actual) {
        out.push(format!(
            "{path}: golden {} vs mock {}",
            kind(golden),
            kind(actual)
        ));
        return;
    }
    match (golden, actual) {
        // Tool input follows the tool's own schema, not the golden's.
        (Value::Object(_), Value::Object(_)) if path.ends_with(".input") => {}
        (Value::Object(g), Value::Object(a)) => {
            for k in g.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}.{k}: missing from the mock"));
            }
            for k in a.keys().filter(|k| !g.contains_key(*k)) {
                out.push(format!("{path}.{k}: not in the golden"));
            }
            for (k, gv) in g {
                if let Some(av) = a.get(k) {
                    shape_diff(gv, av, &format!("{path}.{k}"), out);
                }
            }
        }
        (Value::Array(g), Value::Array(a)) => {
            if let Some(g0) = g.first() {
                for (i, av) in a.iter().enumerate() {
                    shape_diff(g0, av, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn assert_shape(golden: &Value, actual: &Value) {
    let mut diffs = Vec::new();
    shape_diff(golden, actual, "$", &mut diffs);
    assert!(diffs.is_empty(), "{diffs:#?}\nmock: {actual}");
}

/// A label for an SSE event: its name plus the kind of block/delta it carries.
fn label(event: &Option<String>, v: &Value) -> String {
    let mut l = event.clone().unwrap_or_default();
    for k in [&v["content_block"]["type"], &v["delta"]["type"]] {
        if let Some(t) = k.as_str() {
            l.push(':');
            l.push_str(t);
        }
    }
    if event.is_none() {
        // OpenAI chunks: classify by what the delta carries.
        let choice = &v["choices"][0];
        l = if v["choices"].as_array().is_some_and(Vec::is_empty) {
            "usage".into()
        } else if choice["delta"].get("role").is_some() {
            "role".into()
        } else if choice["delta"].get("content").is_some() {
            "content".into()
        } else if choice["delta"]["tool_calls"][0].get("id").is_some() {
            "tool_call_start".into()
        } else if choice["delta"].get("tool_calls").is_some() {
            "tool_call_args".into()
        } else {
            "finish".into()
        };
    }
    l
}

/// The event sequence with repeats collapsed, e.g. `message_start ping content_block_delta:text_delta ...`.
fn pattern(body: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (e, d) in sse(body) {
        let l = if d == "[DONE]" {
            "[DONE]".to_string()
        } else {
            label(&e, &serde_json::from_str(&d).expect("json"))
        };
        if out.last() != Some(&l) {
            out.push(l);
        }
    }
    out
}

/// Same event pattern, and each mock event has the shape of the golden event with its label.
fn assert_stream_shape(golden_body: &str, mock_body: &str) {
    assert_eq!(pattern(golden_body), pattern(mock_body), "{mock_body}");
    let goldens: Vec<(String, Value)> = sse_json(golden_body)
        .into_iter()
        .map(|(e, v)| (label(&e, &v), v))
        .collect();
    for (e, v) in sse_json(mock_body) {
        let l = label(&e, &v);
        let g = goldens
            .iter()
            .find(|(gl, _)| *gl == l)
            .unwrap_or_else(|| panic!("no golden event {l}"));
        assert_shape(&g.1, &v);
    }
    let lines: Vec<&str> = mock_body.split("\n\n").collect();
    assert_eq!(lines.last(), Some(&""), "the body ends with a blank line");
}

#[tokio::test]
async fn chat_completion_has_the_reference_shape() {
    let m = mock().await;
    let (s, _, v) = m
        .json(
            "/v1/chat/completions",
            json!({"model": "gpt-4.1", "messages": user("hi")}),
        )
        .await;
    assert_eq!(s, 200);
    assert_shape(&golden_json("openai_chat_completion.json"), &v);

    let (_, _, v) = m
        .json(
            "/v1/chat/completions",
            json!({"model": "gpt-4.1", "messages": user("weather?"), "tools": [weather_tool_openai()],
                   "tool_choice": "required"}),
        )
        .await;
    assert_shape(&golden_json("openai_chat_tool_calls.json"), &v);
}

#[tokio::test]
async fn chat_stream_has_the_reference_shape() {
    let m = mock().await;
    let body = m
        .stream(
            "/v1/chat/completions",
            json!({"model": "gpt-4.1", "messages": user("hi"), "stream": true,
                   "stream_options": {"include_usage": true}}),
        )
        .await;
    assert_stream_shape(&golden("openai_chat_stream.txt"), &body);
}

#[tokio::test]
async fn messages_have_the_reference_shape() {
    let m = mock().await;
    let (s, _, v) = m
        .json(
            "/v1/messages",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": user("hi")}),
        )
        .await;
    assert_eq!(s, 200);
    assert_shape(&golden_json("anthropic_message.json"), &v);

    let (_, _, v) = m
        .json(
            "/v1/messages",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": user("weather?"),
                   "tools": [weather_tool_anthropic()], "tool_choice": {"type": "any"}}),
        )
        .await;
    assert_shape(&golden_json("anthropic_message_tool_use.json"), &v);
}

#[tokio::test]
async fn message_streams_have_the_reference_shape() {
    let m = mock().await;
    let base = json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": true});
    let with = |extra: Value| {
        let mut b = base.clone();
        for (k, v) in extra.as_object().expect("obj") {
            b[k] = v.clone();
        }
        b
    };
    let body = m
        .stream("/v1/messages", with(json!({"messages": user("hi")})))
        .await;
    assert_stream_shape(&golden("anthropic_stream.txt"), &body);

    let body = m
        .stream(
            "/v1/messages",
            with(
                json!({"messages": user("weather?"), "tools": [weather_tool_anthropic()],
                        "tool_choice": {"type": "tool", "name": "get_weather"}}),
            ),
        )
        .await;
    assert_stream_shape(&golden("anthropic_stream_tool_use.txt"), &body);

    let body = m
        .stream(
            "/v1/messages",
            with(json!({"messages": user("think [mock reasoning=4]")})),
        )
        .await;
    assert_stream_shape(&golden("anthropic_stream_thinking.txt"), &body);
}

#[tokio::test]
async fn embeddings_and_models_have_the_reference_shape() {
    let m = mock().await;
    let (s, _, v) = m
        .json(
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": "hello"}),
        )
        .await;
    assert_eq!(s, 200);
    assert_shape(&golden_json("openai_embeddings.json"), &v);
    let v: Value = m
        .http
        .get(m.url("/v1/models"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_shape(&golden_json("openai_models.json"), &v);
}

/// A label for a Bedrock event: its type plus what its `delta` / `start` carries.
fn bedrock_label(event_type: &str, v: &Value) -> String {
    let mut l = event_type.to_string();
    for key in ["delta", "start"] {
        if let Some((k, inner)) = v[key].as_object().and_then(|o| o.iter().next()) {
            l.push(':');
            l.push_str(k);
            if let Some((k2, _)) = inner.as_object().and_then(|o| o.iter().next()) {
                if k == "reasoningContent" {
                    l.push('.');
                    l.push_str(k2);
                }
            }
        }
    }
    l
}

/// The golden stream: one `event-type<TAB>payload` per line.
fn bedrock_golden_stream(name: &str) -> Vec<(String, Value)> {
    golden(name)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (t, j) = l.split_once('\t').expect("tab");
            let v: Value = serde_json::from_str(j).expect("json");
            (bedrock_label(t, &v), v)
        })
        .collect()
}

fn collapse(labels: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in labels {
        if out.last() != Some(&l) {
            out.push(l);
        }
    }
    out
}

async fn assert_bedrock_stream_shape(m: &Mock, golden_name: &str, body: &Value) {
    let goldens = bedrock_golden_stream(golden_name);
    let frames = crate::bedrock::stream(m, crate::bedrock::HAIKU, body).await;
    let events: Vec<(String, Value)> = frames
        .iter()
        .map(|f| {
            let v = f.json();
            (bedrock_label(f.event_type(), &v), v)
        })
        .collect();
    assert_eq!(
        collapse(goldens.iter().map(|(l, _)| l.clone())),
        collapse(events.iter().map(|(l, _)| l.clone()))
    );
    for (l, v) in &events {
        let (_, g) = goldens
            .iter()
            .find(|(gl, _)| gl == l)
            .unwrap_or_else(|| panic!("no golden event {l}"));
        assert_shape(g, v);
    }
}

#[tokio::test]
async fn converse_has_the_reference_shape() {
    use crate::bedrock::{converse, say, top_song_tool, HAIKU};
    let m = mock().await;
    let (s, _, v) = converse(&m, HAIKU, &say("hi")).await;
    assert_eq!(s, 200);
    assert_shape(&golden_json("bedrock_converse.json"), &v);
    let mut body = say("top song?");
    body["toolConfig"] = json!({"tools": [top_song_tool()], "toolChoice": {"any": {}}});
    let (_, _, v) = converse(&m, HAIKU, &body).await;
    assert_shape(&golden_json("bedrock_converse_tool_use.json"), &v);
}

#[tokio::test]
async fn converse_streams_have_the_reference_shape() {
    use crate::bedrock::{say, top_song_tool};
    let m = mock().await;
    assert_bedrock_stream_shape(&m, "bedrock_converse_stream.txt", &say("hi")).await;
    let mut body = say("top song? [mock reasoning=3]");
    body["toolConfig"] =
        json!({"tools": [top_song_tool()], "toolChoice": {"tool": {"name": "top_song"}}});
    assert_bedrock_stream_shape(&m, "bedrock_converse_stream_tool_use.txt", &body).await;
}
