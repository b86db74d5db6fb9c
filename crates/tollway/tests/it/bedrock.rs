//! Amazon Bedrock deployments (`kind: bedrock`, the Converse API) reached by both client APIs
//! through tollway-mock, which checks every SigV4 signature with its own implementation: text,
//! streams (AWS event stream framing), tools, usage and price, auth by key or signature, errors
//! and failover.

use serde_json::{json, Value};
use tollway_mock::MOCK_AWS_SECRET;

use crate::harness::{
    config_text, header, ledger_row, openai_stream_text, split, sse, start_with, MASTER,
};

const SONNET: &str = "anthropic.claude-sonnet-4-5-20250929-v1:0";

fn config(mock: &str) -> String {
    format!(
        r#"{base}  sonnet-aws: {{ deployments: [{{ provider: aws, model: "{SONNET}" }}] }}
  sonnet-profile: {{ deployments: [{{ provider: aws, model: "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.{SONNET}" }}] }}
  sonnet-apikey: {{ deployments: [{{ provider: aws-apikey, model: "{SONNET}" }}] }}
  sonnet-ec2: {{ deployments: [{{ provider: aws-ec2, model: "{SONNET}" }}] }}
  sonnet-badkey:
    deployments:
      - {{ provider: aws-wrong, model: "{SONNET}" }}
      - {{ provider: ant, model: claude-sonnet-4-5 }}
  aws-throttled: {{ deployments: [{{ provider: aws, model: "{SONNET}?fault=429" }}] }}
  aws-throttled-too: {{ deployments: [{{ provider: aws, model: "{SONNET}?fault=429&n=2" }}] }}
  aws-breaks: {{ deployments: [{{ provider: aws, model: "{SONNET}?fault=error_event&after=2&tokens=5" }}] }}
  titan: {{ deployments: [{{ provider: aws, model: "amazon.titan-embed-text-v2:0" }}] }}
  titan-down: {{ deployments: [{{ provider: aws, model: "amazon.titan-embed-text-v2:0?fault=503" }}] }}
  cohere3: {{ deployments: [{{ provider: aws-apikey, model: cohere.embed-english-v3 }}] }}
  cohere4: {{ deployments: [{{ provider: aws, model: "us.cohere.embed-v4:0" }}] }}
"#,
        base = config_text(mock).replacen(
            "providers:\n",
            &format!(
                "providers:\n  aws: {{ kind: bedrock, region: us-east-1, base_url: \"{mock}\", access_key_id: AKIDTOLLWAYTEST, secret_access_key: {MOCK_AWS_SECRET}, session_token: tok-1 }}\n  aws-apikey: {{ kind: bedrock, region: eu-west-1, base_url: \"{mock}\", api_key: br-test-key }}\n  aws-wrong: {{ kind: bedrock, region: us-east-1, base_url: \"{mock}\", access_key_id: AKIDTOLLWAYTEST, secret_access_key: not-the-secret }}\n  aws-ec2: {{ kind: bedrock, region: us-west-2, base_url: \"{mock}\", credentials: instance, metadata_endpoint: \"{mock}\" }}\n"
            ),
            1
        )
    )
}

#[tokio::test]
async fn an_openai_client_reaches_a_bedrock_model_signed_and_priced() {
    let env = start_with(config).await;
    let (status, h, v) = env
        .openai(
            json!({"model": "sonnet-aws", "max_tokens": 100, "temperature": 0.5,
                       "messages": [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Hello there"}]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(header(&h, "x-tollway-model"), format!("aws/{SONNET}"));
    assert_eq!(header(&h, "x-tollway-provider"), "aws");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
    assert!(!text.is_empty(), "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > 0, "{v}");
    assert!(
        v["usage"]["completion_tokens"].as_u64().unwrap_or(0) > 0,
        "{v}"
    );
    // priced from the table's Bedrock entry for the model
    let cost: f64 = header(&h, "x-tollway-cost-usd").parse().unwrap_or(0.0);
    assert!(cost > 0.0, "{:?}", h.get("x-tollway-cost-usd"));

    let up = env.last_upstream().await;
    // the model id is one percent-encoded path segment
    assert_eq!(
        up["path"],
        "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse"
    );
    let authz = up["headers"]["authorization"].as_str().unwrap_or("");
    assert!(
        authz.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTOLLWAYTEST/")
            && authz.contains("/us-east-1/bedrock/aws4_request"),
        "{authz}"
    );
    assert_eq!(up["headers"]["x-amz-security-token"], "tok-1");
    assert!(
        !up.to_string().contains(MOCK_AWS_SECRET),
        "the secret never travels"
    );
    assert!(
        !up.to_string().contains(MASTER),
        "the client's key never travels"
    );
    let body = &up["body"];
    assert_eq!(body["system"], json!([{"text": "Be brief."}]));
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [{"text": "Hello there"}]}])
    );
    assert_eq!(
        body["inferenceConfig"],
        json!({"maxTokens": 100, "temperature": 0.5})
    );
    assert!(body.get("model").is_none(), "the model is in the path only");

    // an inference profile's ARN, `/` and all, is one segment too
    let (status, _, v) = env
        .openai(json!({"model": "sonnet-profile", "messages": [{"role": "user", "content": "Hi"}]}))
        .await;
    assert_eq!(status, 200, "{v}");
    let up = env.last_upstream().await;
    assert_eq!(
        up["path"],
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse"
    );

    // a Bedrock API key: a bearer token, no signature
    let (status, _, v) = env
        .openai(json!({"model": "sonnet-apikey", "messages": [{"role": "user", "content": "Hi"}]}))
        .await;
    assert_eq!(status, 200, "{v}");
    let up = env.last_upstream().await;
    assert_eq!(up["headers"]["authorization"], "Bearer br-test-key");
    assert!(up["headers"].get("x-amz-date").is_none());
}

#[tokio::test]
async fn streams_reach_both_client_apis_from_the_event_stream() {
    let env = start_with(config).await;
    let (_, _, whole) = env
        .openai(json!({"model": "sonnet-aws", "messages": [{"role": "user", "content": "Hello"}]}))
        .await;
    let expected = whole["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(!expected.is_empty(), "{whole}");
    let r = env
        .post(
            "/v1/chat/completions",
            json!({"model": "sonnet-aws", "stream": true, "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": "Hello"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("body");
    let (text, chunks) = openai_stream_text(&body);
    assert_eq!(text, expected, "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    let finish: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null() && c.is_object())
        .collect();
    assert_eq!(finish.len(), 1, "{body}");
    assert_eq!(finish[0]["choices"][0]["finish_reason"], "stop");
    let usage = chunks
        .iter()
        .find(|c| c["usage"].is_object())
        .expect("a usage chunk");
    for k in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(usage["usage"][k], whole["usage"][k], "{k}: {body}");
    }
    let up = env.last_upstream().await;
    assert_eq!(
        up["path"],
        "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream"
    );

    // an Anthropic client, streamed: every event type, the usage in message_delta
    let r = env
        .http
        .post(format!("{}/v1/messages", env.url))
        .header("x-api-key", MASTER)
        .json(
            &json!({"model": "sonnet-aws", "max_tokens": 50, "stream": true,
                      "messages": [{"role": "user", "content": "Hello [mock cached=7]"}]}),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("body");
    let events = sse(&body);
    let names: Vec<&str> = events.iter().filter_map(|(e, _)| e.as_deref()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{body}");
    assert!(names.contains(&"content_block_start"), "{body}");
    assert!(names.contains(&"content_block_delta"), "{body}");
    assert!(names.contains(&"content_block_stop"), "{body}");
    assert_eq!(names.last(), Some(&"message_stop"), "{body}");
    let delta = events
        .iter()
        .find(|(e, _)| e.as_deref() == Some("message_delta"))
        .map(|(_, d)| serde_json::from_str::<Value>(d).expect("json"))
        .expect("message_delta");
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap_or(0) > 0);
    assert_eq!(delta["usage"]["cache_read_input_tokens"], 7, "{body}");
}

#[tokio::test]
async fn tool_calls_and_results_cross_to_bedrock() {
    let env = start_with(config).await;
    let tools = json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let (status, _, v) = env
        .openai(
            json!({"model": "sonnet-aws", "tools": tools, "tool_choice": "required",
                       "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap_or("")).expect("json");
    assert!(args.is_object(), "{args}");
    let up = env.last_upstream().await;
    assert_eq!(up["body"]["toolConfig"]["toolChoice"], json!({"any": {}}));
    assert_eq!(
        up["body"]["toolConfig"]["tools"][0]["toolSpec"]["name"],
        "get_weather"
    );

    // the result goes back as a toolResult in a user turn; the mock answers quoting it
    let id = call["id"].as_str().unwrap_or("").to_string();
    let (status, _, v) = env
        .openai(json!({"model": "sonnet-aws", "tools": tools,
                       "messages": [
                           {"role": "user", "content": "Weather in Paris?"},
                           {"role": "assistant", "content": null, "tool_calls": [call]},
                           {"role": "tool", "tool_call_id": id, "content": "18 C and sunny"}]}))
        .await;
    assert_eq!(status, 200, "{v}");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
    assert!(text.contains("18 C and sunny"), "{v}");
    let up = env.last_upstream().await;
    let turns = up["body"]["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(turns.len(), 3, "{up}");
    assert_eq!(turns[1]["content"][0]["toolUse"]["toolUseId"], id.as_str());
    assert_eq!(
        turns[2]["content"][0]["toolResult"],
        json!({"toolUseId": id, "content": [{"text": "18 C and sunny"}]})
    );

    // an Anthropic client streaming a tool call: input_json_delta pieces that make the object
    let r = env
        .http
        .post(format!("{}/v1/messages", env.url))
        .header("x-api-key", MASTER)
        .json(
            &json!({"model": "sonnet-aws", "max_tokens": 200, "stream": true,
                      "tool_choice": {"type": "any"},
                      "tools": [{"name": "get_weather", "input_schema": {"type": "object",
                                 "properties": {"city": {"type": "string"}}}}],
                      "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("body");
    let mut json_text = String::new();
    let mut started = None;
    for (e, d) in sse(&body) {
        let v: Value = serde_json::from_str(&d).expect("json");
        match e.as_deref() {
            Some("content_block_start") if v["content_block"]["type"] == "tool_use" => {
                started = Some(v["content_block"]["name"].clone());
            }
            Some("content_block_delta") if v["delta"]["type"] == "input_json_delta" => {
                json_text.push_str(v["delta"]["partial_json"].as_str().unwrap_or(""));
            }
            _ => {}
        }
    }
    assert_eq!(started, Some(json!("get_weather")), "{body}");
    let input: Value = serde_json::from_str(&json_text).expect("the pieces make JSON");
    assert!(input.is_object(), "{input}");
}

#[tokio::test]
async fn bedrock_errors_are_classified_and_failed_over() {
    let env = start_with(config).await;
    // a wrong secret: the mock's own SigV4 check refuses it (403), the next deployment answers
    let (status, h, v) = env
        .openai(json!({"model": "sonnet-badkey", "messages": [{"role": "user", "content": "Hi"}]}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(header(&h, "x-tollway-attempts"), "2");
    assert_eq!(header(&h, "x-tollway-model"), "ant/claude-sonnet-4-5");
    let log = env.upstream_log().await;
    let refused = log
        .iter()
        .find(|r| r["path"].as_str().unwrap_or("").starts_with("/model/"))
        .expect("the Bedrock attempt");
    assert!(refused["headers"]["authorization"]
        .as_str()
        .unwrap_or("")
        .starts_with("AWS4-HMAC-SHA256"));

    // Bedrock's throttling: a 429 in the caller's shape (each model once: a throttled deployment
    // then cools down)
    let (status, _, v) = env
        .openai(json!({"model": "aws-throttled", "messages": [{"role": "user", "content": "Hi"}]}))
        .await;
    assert_eq!(status, 429, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    let (status, _, v) = env
        .anthropic(json!({"model": "aws-throttled-too", "max_tokens": 10,
                          "messages": [{"role": "user", "content": "Hi"}]}))
        .await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["type"], "rate_limit_error");

    // an exception mid-stream ends the client's stream with an error event
    let r = env
        .post(
            "/v1/chat/completions",
            json!({"model": "aws-breaks", "stream": true,
                   "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("body");
    let (text, chunks) = openai_stream_text(&body);
    assert!(
        !text.is_empty(),
        "tokens before the exception arrive: {body}"
    );
    assert!(
        chunks.iter().any(|c| c["error"].is_object()),
        "an error chunk: {body}"
    );

    // a request Converse cannot take is refused before it leaves, naming the feature
    let (status, _, v) = env
        .openai(json!({"model": "sonnet-aws",
                       "messages": [{"role": "user", "content": [
                           {"type": "text", "text": "What is this?"},
                           {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}))
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("image by URL"),
        "{v}"
    );
    assert!(env.healthy().await);
}

/// A config check of Bedrock accounts happens before anything starts: a test config with a
/// broken one is refused by `start_with`'s parse, so here the error itself is looked at.
#[test]
fn a_bedrock_account_without_credentials_is_a_config_error() {
    let text = "providers:\n  aws: { kind: bedrock, region: us-east-1 }\nmodels:\n  m: { deployments: [{ provider: aws, model: x }] }\n";
    let errs = tollway::config::parse(text, &std::collections::BTreeMap::new())
        .expect_err("no credentials");
    let all = format!("{errs:?}");
    assert!(all.contains("no AWS credentials"), "{all}");
}

#[tokio::test]
async fn token_counts_are_asked_of_bedrock_for_the_foundation_model() {
    let env = start_with(config).await;
    let body = |model: &str| {
        json!({"model": model, "system": "Be brief.",
               "tools": [{"name": "lookup", "input_schema": {"type": "object",
                          "properties": {"city": {"type": "string"}}}}],
               "messages": [{"role": "user", "content": "What is the capital of France?"}]})
    };
    let (status, _, v) = env
        .anthropic_at("/v1/messages/count_tokens", body("sonnet-aws"))
        .await;
    assert_eq!(status, 200, "{v}");
    let counted = v["input_tokens"].as_u64().unwrap_or(0);
    assert!(counted > 0, "{v}");
    let up = env.last_upstream().await;
    assert_eq!(
        up["path"],
        "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/count-tokens"
    );
    assert!(up["headers"]["authorization"]
        .as_str()
        .unwrap_or("")
        .starts_with("AWS4-HMAC-SHA256 Credential=AKIDTOLLWAYTEST/"));
    let invoke: Value = serde_json::from_str(
        up["body"]["input"]["invokeModel"]["body"]
            .as_str()
            .unwrap_or("{}"),
    )
    .expect("an InvokeModel body");
    assert_eq!(invoke["anthropic_version"], "bedrock-2023-05-31");
    assert_eq!(invoke["tools"][0]["name"], "lookup");
    // the same count as Anthropic's own API gives for the same request
    let (_, _, direct) = env
        .anthropic_at("/v1/messages/count_tokens", body("claude"))
        .await;
    assert_eq!(direct["input_tokens"], counted, "{direct}");

    // an inference profile's ARN names no model: counted locally, nothing sent
    crate::harness::counted_locally(&env, body("sonnet-profile")).await;
}

#[tokio::test]
async fn on_ec2_the_instance_roles_credentials_sign_and_are_fetched_once() {
    let env = start_with(config).await;
    for _ in 0..2 {
        let (status, _, v) = env
            .openai(json!({"model": "sonnet-ec2", "messages": [{"role": "user", "content": "Hi"}]}))
            .await;
        assert_eq!(status, 200, "{v}");
    }
    let up = env.last_upstream().await;
    let authz = up["headers"]["authorization"].as_str().unwrap_or("");
    assert!(
        authz.starts_with("AWS4-HMAC-SHA256 Credential=ASIAMOCK")
            && authz.contains("/us-west-2/bedrock/aws4_request"),
        "{authz}"
    );
    assert!(up["headers"]["x-amz-security-token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    let log = env.upstream_log().await;
    let fetched = log
        .iter()
        .filter(|r| {
            r["path"].as_str().unwrap_or("").starts_with(&format!(
                "/latest/meta-data/iam/security-credentials/{}",
                tollway_mock::MOCK_INSTANCE_ROLE
            ))
        })
        .count();
    assert_eq!(fetched, 1, "credentials fetched once for two requests");
    assert_eq!(
        log.iter()
            .filter(|r| r["path"] == "/latest/api/token")
            .count(),
        1
    );
}

#[tokio::test]
async fn embeddings_reach_titan_and_cohere_signed_batched_counted_and_priced() {
    let env = start_with(config).await;
    let embed = |body: Value| async { split(env.post("/v1/embeddings", body).await).await };

    // Titan V2: one signed InvokeModel call per input, the vectors in input order
    // (long enough to cost a micro-dollar at $0.02 per million tokens)
    let long = "hello world ".repeat(60);
    let texts = [long.as_str(), "second text", "third"];
    let (status, h, v) = embed(json!({"model": "titan", "input": texts, "dimensions": 256})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        header(&h, "x-tollway-model"),
        "aws/amazon.titan-embed-text-v2:0"
    );
    let data = v["data"].as_array().expect("data");
    assert_eq!(data.len(), 3);
    assert!(data
        .iter()
        .enumerate()
        .all(|(i, d)| d["index"] == i && d["embedding"].as_array().map(Vec::len) == Some(256)));
    let log = env.upstream_log().await;
    let calls = &log[log.len() - 3..];
    let mut bodies: Vec<String> = calls
        .iter()
        .map(|c| c["body"]["inputText"].to_string())
        .collect();
    bodies.sort();
    let mut want: Vec<String> = texts.iter().map(|t| json!(t).to_string()).collect();
    want.sort();
    assert_eq!(bodies, want);
    for c in calls {
        assert_eq!(c["path"], "/model/amazon.titan-embed-text-v2%3A0/invoke");
        assert_eq!(c["body"]["dimensions"], 256);
        assert_eq!(c["auth"]["scheme"], "sigv4", "{c}");
    }
    let (_, _, one) = embed(json!({"model": "titan", "input": "third", "dimensions": 256})).await;
    assert_eq!(
        one["data"][0]["embedding"], data[2]["embedding"],
        "in input order"
    );
    // the tokens Titan counted, priced from the table
    let tokens = v["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
    assert!(tokens >= 120, "{v}");
    let cost: f64 = header(&h, "x-tollway-cost-usd").parse().unwrap_or(0.0);
    assert!(cost > 0.0, "{h:?}");
    let row = ledger_row(&env, header(&h, "x-tollway-request-id")).await;
    assert!(
        !row.cost_estimated && row.input_tokens as u64 == tokens,
        "{row:?}"
    );

    // Cohere v3 by API key: 100 texts in calls of 96 and 4, what they are for passed on, the
    // count from Bedrock's header
    let many: Vec<String> = (0..100).map(|i| format!("document number {i}")).collect();
    let (status, h, v) =
        embed(json!({"model": "cohere3", "input": many, "input_type": "search_query"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"].as_array().map(Vec::len), Some(100));
    assert_eq!(
        v["data"][99]["embedding"].as_array().map(Vec::len),
        Some(1024)
    );
    let log = env.upstream_log().await;
    let mut sizes: Vec<usize> = log[log.len() - 2..]
        .iter()
        .map(|c| {
            assert_eq!(c["body"]["input_type"], "search_query");
            assert_eq!(c["auth"]["scheme"], "bearer");
            c["body"]["texts"].as_array().map_or(0, Vec::len)
        })
        .collect();
    sizes.sort();
    assert_eq!(sizes, [4, 96]);
    assert!(
        v["usage"]["prompt_tokens"].as_u64().unwrap_or(0) >= 100,
        "{v}"
    );
    let row = ledger_row(&env, header(&h, "x-tollway-request-id")).await;
    assert!(!row.cost_estimated && row.cost_micros.is_some(), "{row:?}");

    // Cohere v4 through a cross-region profile, answered by type, sent on as base64
    let (status, _, v) = embed(json!({"model": "cohere4", "input": "x", "dimensions": 512,
                                      "encoding_format": "base64"}))
    .await;
    assert_eq!(status, 200, "{v}");
    // 512 little-endian f32s: 2,048 bytes, 2,732 base64 characters
    assert_eq!(
        v["data"][0]["embedding"].as_str().map(str::len),
        Some(2732),
        "{v}"
    );
    let up = env.last_upstream().await;
    assert_eq!(up["path"], "/model/us.cohere.embed-v4%3A0/invoke");
    assert_eq!(
        up["body"],
        json!({"texts": ["x"], "input_type": "search_document",
               "embedding_types": ["float"], "output_dimension": 512})
    );

    // refused by name before any call: a size the model cannot return, a chat model, an
    // unknown input type
    let before = env.upstream_log().await.len();
    for (body, want) in [
        (
            json!({"model": "titan", "input": "x", "dimensions": 100}),
            "model aws/amazon.titan-embed-text-v2:0 returns 256, 512, 1024 dimensions, not 100",
        ),
        (json!({"model": "sonnet-aws", "input": "x"}), "embeddings"),
        (
            json!({"model": "cohere3", "input": "x", "input_type": "search"}),
            "input_type",
        ),
    ] {
        let (status, _, v) = embed(body).await;
        assert_eq!(status, 400, "{v}");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(want), "{msg}");
    }
    assert_eq!(env.upstream_log().await.len(), before);
    // what only Bedrock knows it refuses (a text over Cohere v3's 2,048 characters): its 400,
    // its words, in OpenAI's shape, not retried
    let (status, _, v) =
        embed(json!({"model": "cohere3", "input": ["ok", "x".repeat(3000)]})).await;
    assert_eq!(status, 400, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("maxLength: 2048"), "{msg}");
    assert_eq!(
        env.upstream_log().await.len(),
        before + 1,
        "a client error is not retried"
    );
    // Bedrock's error, in OpenAI's shape
    let (status, _, v) = embed(json!({"model": "titan-down", "input": "x"})).await;
    assert_eq!(status, 503, "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
}
