//! Azure OpenAI deployments (`kind: azure`) reached through tollway-mock: the v1 API and the
//! dated deployment URLs, `api-key` auth, streams that open with Azure's prompt-filter chunk,
//! embeddings, and Azure's content filter as a content-policy error.

use serde_json::{json, Value};

use tollway_mock::MOCK_AZURE_CLIENT_SECRET;

use crate::harness::{config_text, header, sse, start_with, MASTER};

const AZURE_KEY: &str = "azure-test-key-0001";

fn config(mock: &str) -> String {
    let providers = format!(
        "providers:\n  az: {{ kind: azure, base_url: \"{mock}\", api_key: {AZURE_KEY}, api_version: \"2024-10-21\" }}\n  az-v1: {{ kind: azure, base_url: \"{mock}/openai/v1/\", azure_ad_token: entra-token-1 }}\n  az-old: {{ kind: azure, base_url: \"{mock}\", api_key: {AZURE_KEY}, api_version: \"2024-06-01\" }}\n  az-entra: {{ kind: azure, base_url: \"{mock}\", tenant_id: contoso, client_id: app-1, client_secret: {MOCK_AZURE_CLIENT_SECRET}, authority_host: \"{mock}\", api_version: \"2024-10-21\" }}\n  az-entra-wrong: {{ kind: azure, base_url: \"{mock}\", tenant_id: contoso, client_id: app-1, client_secret: not-the-secret, authority_host: \"{mock}\" }}\n"
    );
    format!(
        r#"{base}  gpt-az: {{ deployments: [{{ provider: az, model: my-gpt-4o }}] }}
  gpt-az-v1: {{ deployments: [{{ provider: az-v1, model: my-gpt-4o }}] }}
  gpt-az-old: {{ deployments: [{{ provider: az-old, model: my-gpt-4o }}] }}
  embed-az: {{ deployments: [{{ provider: az, model: my-embeddings }}] }}
  gpt-entra: {{ deployments: [{{ provider: az-entra, model: my-gpt-4o }}] }}
  gpt-entra-wrong:
    deployments:
      - {{ provider: az-entra-wrong, model: my-gpt-4o }}
      - {{ provider: az, model: my-gpt-4o }}
  az-filtered:
    deployments: [{{ provider: az, model: "my-gpt-4o?fault=content_policy" }}]
"#,
        base = config_text(mock).replacen("providers:\n", &providers, 1)
    )
}

#[tokio::test]
async fn deployment_urls_and_the_v1_api_both_answer() {
    let env = start_with(config).await;
    let (status, h, v) = env
        .openai(json!({"model": "gpt-az", "max_tokens": 20,
                       "messages": [{"role": "user", "content": "Hello"}]}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(header(&h, "x-tollway-model"), "az/my-gpt-4o");
    assert!(!v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("")
        .is_empty());
    let up = env.last_upstream().await;
    assert_eq!(
        up["path"],
        "/openai/deployments/my-gpt-4o/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(up["headers"]["api-key"], AZURE_KEY);
    assert!(up["headers"].get("authorization").is_none(), "{up}");
    assert_eq!(up["body"]["max_completion_tokens"], 20);
    assert!(!up.to_string().contains(MASTER));

    // an API version from before `max_completion_tokens` gets `max_tokens`
    let (status, _, v) = env
        .openai(json!({"model": "gpt-az-old", "max_tokens": 20,
                       "messages": [{"role": "user", "content": "Hello"}]}))
        .await;
    assert_eq!(status, 200, "{v}");
    let up = env.last_upstream().await;
    assert_eq!(up["body"]["max_tokens"], 20);

    // the v1 API with an Entra ID token: OpenAI's paths, the deployment in the body
    let (status, _, v) = env
        .anthropic(json!({"model": "gpt-az-v1", "max_tokens": 20,
                          "messages": [{"role": "user", "content": "Hello"}]}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["type"], "message");
    let up = env.last_upstream().await;
    assert_eq!(up["path"], "/openai/v1/chat/completions");
    assert_eq!(up["body"]["model"], "my-gpt-4o");
    assert_eq!(up["headers"]["authorization"], "Bearer entra-token-1");
}

#[tokio::test]
async fn streams_that_open_with_the_prompt_filter_chunk_translate_whole() {
    let env = start_with(config).await;
    let (_, _, whole) = env
        .openai(json!({"model": "gpt-az", "messages": [{"role": "user", "content": "Hello"}]}))
        .await;
    let expected = whole["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let r = env
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-az", "stream": true, "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": "Hello"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("body");
    let mut text = String::new();
    let mut usage = Value::Null;
    for (_, d) in sse(&body) {
        if d == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(&d).expect("json");
        assert!(v["error"].is_null(), "{body}");
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
        if v["usage"].is_object() {
            usage = v["usage"].clone();
        }
    }
    assert_eq!(text, expected, "{body}");
    assert_eq!(
        usage["prompt_tokens"], whole["usage"]["prompt_tokens"],
        "{body}"
    );

    // and to an Anthropic client: one message_start, the text, message_stop
    let r = env
        .http
        .post(format!("{}/v1/messages", env.url))
        .header("x-api-key", MASTER)
        .json(&json!({"model": "gpt-az", "max_tokens": 50, "stream": true,
                      "messages": [{"role": "user", "content": "Hello"}]}))
        .send()
        .await
        .expect("send");
    let body = r.text().await.expect("body");
    let names: Vec<String> = sse(&body).into_iter().filter_map(|(e, _)| e).collect();
    assert_eq!(
        names.iter().filter(|n| *n == "message_start").count(),
        1,
        "{body}"
    );
    assert_eq!(
        names.last().map(String::as_str),
        Some("message_stop"),
        "{body}"
    );
}

#[tokio::test]
async fn embeddings_and_the_content_filter() {
    let env = start_with(config).await;
    let (status, _, v) = {
        let r = env
            .post(
                "/v1/embeddings",
                json!({"model": "embed-az", "input": ["one", "two"], "dimensions": 8}),
            )
            .await;
        crate::harness::split(r).await
    };
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"].as_array().map(Vec::len), Some(2), "{v}");
    let up = env.last_upstream().await;
    assert_eq!(
        up["path"],
        "/openai/deployments/my-embeddings/embeddings?api-version=2024-10-21"
    );

    let (status, _, v) = env
        .openai(json!({"model": "az-filtered", "messages": [{"role": "user", "content": "Hi"}]}))
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "content_policy_violation", "{v}");
    assert!(env.healthy().await);
}

#[tokio::test]
async fn an_entra_id_application_gets_its_token_once_and_a_wrong_secret_fails_over() {
    let env = start_with(config).await;
    for _ in 0..2 {
        let (status, h, v) = env
            .openai(json!({"model": "gpt-entra", "messages": [{"role": "user", "content": "Hi"}]}))
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(header(&h, "x-tollway-provider"), "az-entra");
    }
    let log = env.upstream_log().await;
    let grants: Vec<&Value> = log
        .iter()
        .filter(|r| r["path"] == "/contoso/oauth2/v2.0/token")
        .collect();
    assert_eq!(grants.len(), 1, "one token for both requests");
    let issued = grants[0]["entra"]["issued"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(!issued.is_empty(), "{:?}", grants[0]);
    assert_eq!(
        grants[0]["entra"]["scope"],
        "https://cognitiveservices.azure.com/.default"
    );
    let up = env.last_upstream().await;
    assert_eq!(up["headers"]["authorization"], format!("Bearer {issued}"));
    assert!(up["headers"].get("api-key").is_none(), "{up}");
    assert!(!log
        .iter()
        .any(|r| r.to_string().contains(MOCK_AZURE_CLIENT_SECRET)
            && r["path"] != "/contoso/oauth2/v2.0/token"));

    // a secret Entra refuses: the attempt fails as the account's, the key account answers
    let (status, h, v) = env
        .openai(
            json!({"model": "gpt-entra-wrong", "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(header(&h, "x-tollway-attempts"), "2");
    assert_eq!(header(&h, "x-tollway-provider"), "az");
}
