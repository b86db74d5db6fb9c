//! HTTPS upstreams end to end: provider accounts trusting a private authority (`ca_file`)
//! reached over HTTP/1.1 (the default) and HTTP/2 (`http2: true`), streams included, and a client
//! leaving mid-stream cancels its request upstream on either; an upstream whose certificate nobody vouches for is a connection failure the
//! router fails over from; an unusable `ca_file` is a config error.

use serde_json::{json, Value};
use tollway::config::{self, ProcessEnv};
use tollway_mock::tls::{Alpn, TestCerts};
use tollway_mock::MockServer;

use crate::harness::{header, sse, start_on};

#[tokio::test]
async fn private_ca_upstreams_over_http1_and_http2_answer_stream_cancel_and_an_untrusted_one_fails_over(
) {
    let certs = TestCerts::generate().expect("certificates");
    let dir = std::env::temp_dir().join(format!("tollway-it-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &certs.ca_pem).expect("write CA");
    let ca = ca_file.to_string_lossy().into_owned();
    let mock = MockServer::start_tls(certs.server_config(Alpn::Both).expect("TLS"))
        .await
        .expect("mock");
    let env = start_on(mock, Some(&certs.ca_pem), |mock| {
        format!(
            r#"
server: {{ master_key: {master} }}
providers:
  ant: {{ kind: anthropic, base_url: "{mock}", api_key: sk-ant-tls, ca_file: "{ca}" }}
  ant-h2: {{ kind: anthropic, base_url: "{mock}", api_key: sk-ant-tls, ca_file: "{ca}", http2: true }}
  untrusting: {{ kind: anthropic, base_url: "{mock}", api_key: sk-ant-tls }}
models:
  claude: {{ deployments: [{{ provider: ant, model: claude-one }}] }}
  claude-h2: {{ deployments: [{{ provider: ant-h2, model: claude-two }}] }}
  guarded:
    deployments:
      - {{ provider: untrusting, model: claude-first }}
      - {{ provider: ant, model: claude-second }}
"#,
            master = crate::harness::MASTER
        )
    })
    .await;
    assert!(env.mock.url().starts_with("https://"));

    // OpenAI-shaped client, Anthropic upstream over TLS
    let (status, _, v) = env
        .openai(json!({"model": "claude", "messages": [{"role": "user", "content": "hi [mock tokens=4]"}]}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 4, "{v}");

    // a stream, over HTTP/2
    let r = env
        .post(
            "/v1/chat/completions",
            json!({"model": "claude-h2", "stream": true,
                   "messages": [{"role": "user", "content": "hi [mock tokens=6]"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let events = sse(&r.text().await.expect("stream"));
    let text: String = events
        .iter()
        .filter(|(_, d)| d != "[DONE]")
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text.split_whitespace().count(), 6, "{events:?}");
    assert_eq!(events.last().map(|(_, d)| d.as_str()), Some("[DONE]"));

    // the first deployment's certificate is not trusted by its account: the second answers
    let (status, h, v) = env
        .openai(json!({"model": "guarded", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(header(&h, "x-tollway-provider"), "ant");
    assert_eq!(header(&h, "x-tollway-attempts"), "2");

    // what the upstream saw: HTTP/1.1, or HTTP/2 from the account that offers it; the account's
    // key; and no request from the untrusting account
    let log = env.upstream_log().await;
    assert_eq!(log.len(), 3, "{log:?}");
    for req in &log {
        let version = if req["body"]["model"] == "claude-two" {
            "HTTP/2.0"
        } else {
            "HTTP/1.1"
        };
        assert_eq!(req["version"], version, "{req}");
        assert_eq!(req["headers"]["x-api-key"], "sk-ant-tls", "{req}");
        assert_ne!(req["body"]["model"], "claude-first", "{req}");
    }

    // a client that leaves mid-stream: the upstream request (its own HTTP/1.1 connection, or an
    // HTTP/2 stream on a shared one) is cancelled, and the account keeps serving
    for (i, model) in ["claude", "claude-h2"].into_iter().enumerate() {
        let mut r = env
            .post(
                "/v1/chat/completions",
                json!({"model": model, "stream": true,
                       "messages": [{"role": "user", "content": "hi [mock tpt_ms=100 tokens=2000]"}]}),
            )
            .await;
        assert_eq!(r.status(), 200);
        assert!(!r.chunk().await.expect("chunk").expect("a chunk").is_empty());
        drop(r);
        let mut stats = env.mock_stats().await;
        for _ in 0..100 {
            if stats["streams_aborted"] == i + 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            stats = env.mock_stats().await;
        }
        assert_eq!(stats["streams_aborted"], i + 1, "{model}: {stats}");
        let (status, _, v) = env
            .openai(json!({"model": model, "messages": [{"role": "user", "content": "again"}]}))
            .await;
        assert_eq!(status, 200, "{model}: {v}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unusable_tls_and_proxy_settings_are_config_errors_naming_the_account() {
    let dir = std::env::temp_dir().join(format!("tollway-it-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let not_pem = dir.join("notes.txt");
    std::fs::write(&not_pem, "not a certificate").expect("write");
    let not_pem = not_pem.to_string_lossy().into_owned();
    let missing = dir.join("missing.pem").to_string_lossy().into_owned();
    for (account, why) in [
        (
            format!(
                r#"{{ kind: openai-compatible, base_url: "https://llm.internal/v1", ca_file: "{not_pem}" }}"#
            ),
            format!("ca_file `{not_pem}` holds no PEM certificate"),
        ),
        (
            format!(r#"{{ kind: anthropic, api_key: k, ca_file: "{missing}" }}"#),
            format!("ca_file `{missing}`: cannot read it"),
        ),
        (
            r#"{ kind: openai-compatible, base_url: "http://llm.internal/v1", http2: true }"#
                .to_string(),
            "http2 is for https:// upstreams".to_string(),
        ),
        (
            r#"{ kind: anthropic, api_key: k, proxy: "socks5://bob:pa55@proxy:1080" }"#.to_string(),
            "proxy `socks5://***@proxy:1080`: `socks5://` proxies are not supported".to_string(),
        ),
        (
            format!(
                r#"{{ kind: openai-compatible, base_url: "http://llm.internal/v1", ca_file: "{missing}" }}"#
            ),
            "is for https:// upstreams; base_url is plain http://".to_string(),
        ),
    ] {
        let text = format!(
            "providers:\n  inhouse: {account}\nmodels:\n  m: {{ deployments: [{{ provider: inhouse, model: x }}] }}\n"
        );
        let errs = config::parse(&text, &ProcessEnv).expect_err("refused");
        let all: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            errs.iter()
                .any(|e| e.path == "providers.inhouse" && e.message.contains(&why)),
            "{all:?}"
        );
        assert!(!all.iter().any(|e| e.contains("pa55")), "{all:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
