//! The mock over TLS: HTTP/2 or HTTP/1.1 by ALPN, streams, a client that does not trust the
//! certificate, and the binary's `--tls-cert` / `--tls-key`.

use std::process::Command;

use serde_json::{json, Value};
use tollway_mock::tls::{Alpn, TestCerts};
use tollway_mock::MockServer;

fn trusting(certs: &TestCerts) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certs.ca_pem.as_bytes()).expect("CA certificate"),
        )
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .expect("client")
}

async fn last_request(http: &reqwest::Client, base: &str) -> Value {
    let log: Value = http
        .get(format!("{base}/_mock/requests"))
        .send()
        .await
        .expect("log")
        .json()
        .await
        .expect("log JSON");
    log.as_array()
        .and_then(|a| a.last())
        .cloned()
        .expect("a logged request")
}

#[tokio::test]
async fn answers_over_http2_and_http1_by_alpn() {
    let certs = TestCerts::generate().expect("certificates");
    for (alpn, version) in [(Alpn::Both, "HTTP/2.0"), (Alpn::Http1, "HTTP/1.1")] {
        let server = MockServer::start_tls(certs.server_config(alpn).expect("TLS"))
            .await
            .expect("mock");
        let base = server.url();
        assert!(base.starts_with("https://127.0.0.1:"), "{base}");
        let http = trusting(&certs);
        let r = http
            .post(format!("{base}/v1/chat/completions"))
            .json(&json!({"model": "gpt-4.1?tokens=3", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 200);
        assert_eq!(format!("{:?}", r.version()), version);
        let v: Value = r.json().await.expect("JSON");
        assert_eq!(v["usage"]["completion_tokens"], 3);
        assert_eq!(last_request(&http, &base).await["version"], version);

        // a stream arrives whole, event by event
        let text = http
            .post(format!("{base}/v1/messages"))
            .header("anthropic-version", "2023-06-01")
            .json(
                &json!({"model": "claude-sonnet-4-5?tokens=4", "max_tokens": 50, "stream": true,
                          "messages": [{"role": "user", "content": "hi"}]}),
            )
            .send()
            .await
            .expect("stream")
            .text()
            .await
            .expect("stream body");
        assert_eq!(
            text.matches("event: content_block_delta").count(),
            4,
            "{text}"
        );
        assert!(
            text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused_and_others_still_served() {
    let certs = TestCerts::generate().expect("certificates");
    let server = MockServer::start_tls(certs.server_config(Alpn::Both).expect("TLS"))
        .await
        .expect("mock");
    // the public roots only: the test authority is unknown
    let err = reqwest::get(format!("{}/v1/models", server.url()))
        .await
        .expect_err("an untrusted certificate");
    let chain = format!("{err:?}");
    assert!(chain.contains("UnknownIssuer"), "{chain}");
    let r = trusting(&certs)
        .get(format!("{}/v1/models", server.url()))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
}

#[test]
fn server_config_names_what_is_wrong_with_the_files() {
    let certs = TestCerts::generate().expect("certificates");
    let err = |cert: &str, key: &str| {
        tollway_mock::tls::server_config(cert.as_bytes(), key.as_bytes(), Alpn::Both)
            .expect_err("an error")
    };
    assert!(err("", &certs.key_pem).contains("no certificate"));
    assert!(err(&certs.cert_pem, "").contains("no usable private key"));
    let other = TestCerts::generate().expect("certificates");
    assert!(err(&certs.cert_pem, &other.key_pem).contains("do not make a TLS identity"));
}

#[tokio::test]
async fn binary_serves_https_with_tls_cert_and_key() {
    let certs = TestCerts::generate().expect("certificates");
    let dir = std::env::temp_dir().join(format!("tollway-mock-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &certs.cert_pem).expect("write cert");
    std::fs::write(&key, &certs.key_pem).expect("write key");

    // a key file that is not there: a clear error and exit status 1
    let out = Command::new(env!("CARGO_BIN_EXE_tollway-mock"))
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(dir.join("missing.pem"))
        .output()
        .expect("run tollway-mock");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read") && stderr.contains("missing.pem"),
        "{stderr}"
    );

    let (mut child, url) = crate::binary::spawn(&[
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
    ])
    .await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let r = trusting(&certs)
        .get(format!("{url}/v1/models"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Over HTTP/2 there is no `host` header: the signed `host` is the request's `:authority`.
#[tokio::test]
async fn sigv4_over_http2_signs_the_authority() {
    use tollway_mock::sigv4::{sign, Credentials, SignableRequest};
    let certs = TestCerts::generate().expect("certificates");
    let server = MockServer::start_tls(certs.server_config(Alpn::Both).expect("TLS"))
        .await
        .expect("mock");
    let http = trusting(&certs);
    let authority = server.addr().to_string();
    let path = format!("/model/{}/converse", crate::bedrock::HAIKU);
    let body = serde_json::to_vec(&crate::bedrock::say("hi [mock tokens=2]")).expect("json");
    let date = "20251207T120000Z";
    let auth = sign(
        &SignableRequest {
            method: "POST",
            path: &path,
            query: "",
            headers: &[("host", &authority), ("x-amz-date", date)],
            body: &body,
        },
        &Credentials {
            access_key_id: "AKIDH2",
            secret_access_key: tollway_mock::MOCK_AWS_SECRET,
            region: "ap-northeast-1",
            service: "bedrock",
        },
    )
    .expect("signed");
    let r = http
        .post(format!("{}{path}", server.url()))
        .header("authorization", auth)
        .header("x-amz-date", date)
        .body(body)
        .send()
        .await
        .expect("answer");
    assert_eq!(format!("{:?}", r.version()), "HTTP/2.0");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let logged = last_request(&http, &server.url()).await;
    assert_eq!(logged["auth"]["region"], "ap-northeast-1");
}
