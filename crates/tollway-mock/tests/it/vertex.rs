//! Vertex AI: the OAuth 2.0 service-account flow (a JWT signed here with ring, checked by the
//! mock), Gemini under `publishers/google`, Claude under `publishers/anthropic` (`rawPredict`,
//! `streamRawPredict`, `count-tokens:rawPredict`), and Vertex's refusals.

use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde_json::{json, Value};
use tollway_mock::{mock_gcp_service_account, MOCK_GCP_CLIENT_EMAIL, MOCK_GCP_PRIVATE_KEY};

use crate::gemini::{
    google_error, parse_sse, read_json, say, stream_body, text_of, tools, weather_decl,
    DEFAULT_TEXT, FLASH,
};
use crate::*;

const SONNET: &str = "claude-sonnet-4-5@20250929";
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const UNAUTHENTICATED: &str = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.";

// ---- JWTs, independently of the mock ----

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
        }
    }
    out
}

fn b64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    } as u32;
    let s: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::new();
    for c in s.chunks(4) {
        let mut n = 0u32;
        for (i, b) in c.iter().enumerate() {
            n |= val(*b) << (18 - 6 * i);
        }
        for i in 0..c.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

fn key_pair() -> RsaKeyPair {
    let body: String = MOCK_GCP_PRIVATE_KEY
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    RsaKeyPair::from_pkcs8(&b64_decode(&body)).expect("pkcs8")
}

/// A JWT with `header` and `claims`, signed RS256 with the fixture key.
fn sign(header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let kp = key_pair();
    let mut sig = vec![0; kp.public().modulus_len()];
    kp.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .expect("sign");
    format!("{input}.{}", b64url(&sig))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn claims(m: &Mock) -> Value {
    let t = now();
    json!({"iss": MOCK_GCP_CLIENT_EMAIL, "scope": CLOUD_PLATFORM, "aud": m.url("/token"),
           "iat": t, "exp": t + 3600})
}

fn header() -> Value {
    json!({"alg": "RS256", "typ": "JWT", "kid": "7f3c1e0a"})
}

/// POSTs the form a Google client sends to the token endpoint.
async fn grant(m: &Mock, form: &str) -> (u16, Value) {
    let r = m
        .http
        .post(m.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_string())
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

fn jwt_form(jwt: &str) -> String {
    format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={jwt}")
}

/// The whole flow: a signed assertion for an access token.
pub async fn access_token(m: &Mock) -> String {
    let (s, v) = grant(m, &jwt_form(&sign(&header(), &claims(m)))).await;
    assert_eq!(s, 200, "{v}");
    v["access_token"].as_str().expect("token").to_string()
}

// ---- Vertex requests ----

fn path(publisher: &str, model: &str, method: &str) -> String {
    format!("/v1/projects/tollway-test/locations/us-central1/publishers/{publisher}/models/{model}:{method}")
}

async fn post_bearer(m: &Mock, path: &str, token: &str, body: &Value) -> reqwest::Response {
    m.http
        .post(m.url(path))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("send")
}

fn claude(text: &str) -> Value {
    json!({"anthropic_version": "vertex-2023-10-16", "max_tokens": 100,
           "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn the_service_account_flow_gets_a_token_vertex_takes() {
    let m = mock().await;
    let sa: Value =
        serde_json::from_str(&mock_gcp_service_account(&m.url("/token"))).expect("json");
    assert_eq!(sa["type"], "service_account");
    assert_eq!(sa["client_email"], MOCK_GCP_CLIENT_EMAIL);
    assert_eq!(sa["private_key"], MOCK_GCP_PRIVATE_KEY);
    assert_eq!(sa["token_uri"], m.url("/token"));
    for k in ["project_id", "private_key_id", "client_id"] {
        assert!(sa[k].as_str().is_some_and(|s| !s.is_empty()), "{k}");
    }

    let jwt = sign(&header(), &claims(&m));
    let (s, v) = grant(&m, &jwt_form(&jwt)).await;
    assert_eq!(s, 200, "{v}");
    let token = v["access_token"].as_str().expect("token").to_string();
    assert!(token.starts_with("ya29.mock-"), "{token}");
    assert_eq!(v["expires_in"], 3599);
    assert_eq!(v["token_type"], "Bearer");
    // another grant, another token; both count
    let other = access_token(&m).await;
    assert_ne!(other, token);
    assert_eq!(m.stats().await["tokens_issued"], 2);

    let r = post_bearer(
        &m,
        &path("google", FLASH, "generateContent"),
        &token,
        &say("Hello"),
    )
    .await;
    let (s, _, v) = read_json(r).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(text_of(std::slice::from_ref(&v)), DEFAULT_TEXT);
    assert_eq!(v["modelVersion"], FLASH);
    assert_eq!(v["usageMetadata"]["trafficType"], "ON_DEMAND");
    assert_eq!(v["usageMetadata"]["totalTokenCount"], 18);
    assert!(v["createTime"].as_str().is_some_and(|t| t.ends_with('Z')));

    let log = m.requests().await;
    assert_eq!(log[0]["path"], "/token");
    assert_eq!(log[0]["oauth"]["iss"], MOCK_GCP_CLIENT_EMAIL);
    assert_eq!(log[0]["oauth"]["issued"], token.as_str());
    let call = &log[2];
    assert_eq!(call["project"], "tollway-test");
    assert_eq!(call["location"], "us-central1");
    assert_eq!(call["publisher"], "google");
    assert_eq!(call["model_id"], FLASH);
    assert_eq!(call["auth"], json!({"scheme": "oauth2", "token": token}));
    let stats = m.stats().await;
    assert_eq!(stats["by_path"]["/token"], 2);
    assert_eq!(
        stats["by_path"]["/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent"],
        1
    );
}

#[tokio::test]
async fn vertex_gemini_streams_knobs_and_v1beta1() {
    let m = mock().await;
    let token = access_token(&m).await;
    // knobs in the encoded model; SSE
    let p = format!(
        "{}?alt=sse",
        path(
            "google",
            &format!("{FLASH}%3Ftokens%3D3"),
            "streamGenerateContent"
        )
    );
    let body = stream_body(post_bearer(&m, &p, &token, &say("hi")).await, true).await;
    let chunks = parse_sse(&body);
    assert_eq!(text_of(&chunks), "lorem ipsum dolor");
    assert_eq!(
        chunks.last().expect("last")["usageMetadata"]["trafficType"],
        "ON_DEMAND"
    );
    // the JSON-array form
    let p = path("google", FLASH, "streamGenerateContent");
    let text = stream_body(
        post_bearer(&m, &p, &token, &say("hi [mock tokens=2]")).await,
        false,
    )
    .await;
    let chunks: Vec<Value> = serde_json::from_str(&text).expect("array");
    assert_eq!(text_of(&chunks), "lorem ipsum");
    // v1beta1, tools
    let p = "/v1beta1/projects/p/locations/europe-west4/publishers/google/models/gemini-2.5-pro:generateContent";
    let mut body = say("weather? [mock tool=1]");
    body["tools"] = tools(&[weather_decl()]);
    body["labels"] = json!({"team": "gateway"});
    let (s, _, v) = read_json(post_bearer(&m, p, &token, &body).await).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        "get_weather"
    );
    // `labels` is Vertex's: AI Studio does not know it
    let r = m
        .http
        .post(m.url(&format!("/v1beta/models/{FLASH}:generateContent")))
        .header("x-goog-api-key", "k")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let log = m.requests().await;
    assert_eq!(log[1]["model_id"], format!("{FLASH}?tokens=3"));
    assert_eq!(log[1]["alt"], "sse");
    assert!(log[1]["path"]
        .as_str()
        .expect("path")
        .ends_with("%3Ftokens%3D3:streamGenerateContent?alt=sse"));
    assert_eq!(log[3]["location"], "europe-west4");
}

#[tokio::test]
async fn the_token_endpoint_checks_the_assertion() {
    let m = mock().await;
    let t = now();
    let good = claims(&m);
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let jwt = sign(&header(), &good);
    // the claims changed after signing
    let (h, _, sig) = {
        let mut it = jwt.split('.');
        (
            it.next().expect("h").to_string(),
            it.next().expect("c").to_string(),
            it.next().expect("s").to_string(),
        )
    };
    let forged = format!(
        "{h}.{}.{sig}",
        b64url(
            with(
                "scope",
                json!("https://www.googleapis.com/auth/cloud-platform openid")
            )
            .to_string()
            .as_bytes()
        )
    );
    // one signature character changed (mid-signature: all six of its bits count)
    let at = jwt.len() - 10;
    let c = if &jwt[at..=at] == "A" { "B" } else { "A" };
    let flipped = format!("{}{c}{}", &jwt[..at], &jwt[at + 1..]);
    let hs256 = {
        let header = json!({"alg": "HS256", "typ": "JWT"});
        let c = b64url(good.to_string().as_bytes());
        format!("{}.{c}.{sig}", b64url(header.to_string().as_bytes()))
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (forged, "invalid_grant", "Invalid JWT Signature."),
        (flipped, "invalid_grant", "Invalid JWT Signature."),
        (hs256, "invalid_grant", "RS256"),
        (
            sign(
                &header(),
                &with(
                    "scope",
                    json!("https://www.googleapis.com/auth/devstorage.read_only"),
                ),
            ),
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        ),
        (
            sign(&header(), &{
                let mut c = good.clone();
                c.as_object_mut().expect("o").remove("scope");
                c
            }),
            "invalid_scope",
            "Invalid OAuth scope",
        ),
        (
            sign(
                &header(),
                &with("iss", json!("someone@else.iam.gserviceaccount.com")),
            ),
            "invalid_grant",
            "Invalid grant: account not found",
        ),
        (
            sign(&header(), &with("aud", json!("https://example.com/oauth2"))),
            "invalid_grant",
            "Failed audience check",
        ),
        (
            // expired an hour ago
            sign(&header(), &{
                let mut c = with("iat", json!(t - 7200));
                c["exp"] = json!(t - 3600);
                c
            }),
            "invalid_grant",
            "Token must be a short-lived token (60 minutes)",
        ),
        (
            // living longer than an hour
            sign(&header(), &with("exp", json!(t + 7200))),
            "invalid_grant",
            "Token must be a short-lived token (60 minutes)",
        ),
        (
            sign(&header(), &with("iat", json!("now"))),
            "invalid_grant",
            "Check your iat and exp values",
        ),
        ("not-a-jwt".to_string(), "invalid_grant", "Invalid JWT"),
    ];
    for (jwt, error, want) in cases {
        let (s, v) = grant(&m, &jwt_form(&jwt)).await;
        assert_eq!(s, 400, "{jwt}: {v}");
        assert_eq!(v["error"], error, "{v}");
        let d = v["error_description"].as_str().expect("description");
        assert!(d.contains(want), "{d} / {want}");
    }
    let good_jwt = sign(&header(), &good);
    for (form, error) in [
        (
            format!("grant_type=client_credentials&assertion={good_jwt}"),
            "unsupported_grant_type",
        ),
        (
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer".to_string(),
            "invalid_request",
        ),
        (format!("assertion={good_jwt}"), "invalid_request"),
    ] {
        let (s, v) = grant(&m, &form).await;
        assert_eq!(s, 400, "{form}");
        assert_eq!(v["error"], error);
    }
    assert_eq!(m.stats().await["tokens_issued"], 0);
    let log = m.requests().await;
    assert_eq!(log[0]["oauth"]["error"], "invalid_grant");
    // the same JWT, untouched, is fine (any audience URL ending in /token)
    let c = with("aud", json!("https://oauth2.googleapis.com/token"));
    let (s, _) = grant(&m, &jwt_form(&sign(&header(), &c))).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn vertex_refuses_unknown_missing_and_revoked_tokens() {
    let m = mock().await;
    let p = path("google", FLASH, "generateContent");
    let check = |s: u16, h: &reqwest::header::HeaderMap, v: &Value| {
        assert_eq!(s, 401, "{v}");
        assert_eq!(google_error(v, 401, "UNAUTHENTICATED"), UNAUTHENTICATED);
        assert!(h.contains_key("www-authenticate"));
    };
    // no token; a token the mock never issued (and knobs do not come first)
    let r = m
        .http
        .post(m.url(&p))
        .json(&say("[mock fault=429]"))
        .send()
        .await
        .expect("send");
    let (s, h, v) = read_json(r).await;
    check(s, &h, &v);
    for (route, body) in [
        (p.clone(), say("hi")),
        (path("anthropic", SONNET, "rawPredict"), claude("hi")),
        (
            path("anthropic", "count-tokens", "rawPredict"),
            json!({"model": SONNET, "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ] {
        let (s, h, v) = read_json(post_bearer(&m, &route, "ya29.not-issued", &body).await).await;
        check(s, &h, &v);
    }
    // an API key is no access token here
    let r = m
        .http
        .post(m.url(&p))
        .header("x-goog-api-key", "AIza")
        .json(&say("hi"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    // a token from another server is unknown
    let other = mock().await;
    let foreign = access_token(&other).await;
    let (s, h, v) = read_json(post_bearer(&m, &p, &foreign, &say("hi")).await).await;
    check(s, &h, &v);
    // issued, then revoked
    let token = access_token(&m).await;
    let r = post_bearer(&m, &p, &token, &say("hi")).await;
    assert_eq!(r.status(), 200);
    let r = m
        .http
        .post(m.url("/_mock/revoke_tokens"))
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 204);
    let (s, h, v) = read_json(post_bearer(&m, &p, &token, &say("hi")).await).await;
    check(s, &h, &v);
    let log = m.requests().await;
    assert_eq!(log[0]["auth"]["scheme"], "rejected");
    assert_eq!(log[0]["auth"]["reason"], "missing");
    assert_eq!(log[1]["auth"]["reason"], "unknown");
}

#[tokio::test]
async fn vertex_gemini_errors_name_vertex_resources() {
    let m = mock().await;
    let token = access_token(&m).await;
    let p = path("google", FLASH, "generateContent");
    let (s, h, v) =
        read_json(post_bearer(&m, &p, &token, &say("[mock fault=429 retry_after=4]")).await).await;
    assert_eq!(s, 429);
    assert_eq!(h["retry-after"], "4");
    assert!(google_error(&v, 429, "RESOURCE_EXHAUSTED")
        .starts_with("Resource exhausted. Please try again later."));
    let (s, _, v) = read_json(post_bearer(&m, &p, &token, &say("[mock fault=404]")).await).await;
    assert_eq!(s, 404);
    assert!(google_error(&v, 404, "NOT_FOUND").starts_with(&format!(
        "Publisher Model `projects/tollway-test/locations/us-central1/publishers/google/models/{FLASH}` was not found"
    )));
    // unknown publishers and methods
    for bad in [
        path("meta", "llama", "rawPredict"),
        path("google", FLASH, "rawPredict"),
        path("anthropic", SONNET, "generateContent"),
    ] {
        let (s, _, v) = read_json(post_bearer(&m, &bad, &token, &say("hi")).await).await;
        assert_eq!(s, 404, "{bad}");
        google_error(&v, 404, "NOT_FOUND");
    }
}

#[tokio::test]
async fn claude_raw_predict_answers_as_anthropic_with_vertexs_differences() {
    let m = mock().await;
    let token = access_token(&m).await;
    // no anthropic-version header needed; the model from the path
    let (s, _, v) = read_json(
        post_bearer(
            &m,
            &path("anthropic", SONNET, "rawPredict"),
            &token,
            &claude("Hello"),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], SONNET);
    assert!(v["id"].as_str().expect("id").starts_with("msg_vrtx_01"));
    assert_eq!(v["content"][0]["text"], DEFAULT_TEXT);
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["output_tokens"], 12);

    // knobs in the encoded path; tools; anthropic_beta in the body
    let mut body = claude("weather?");
    body["tools"] = json!([weather_tool_anthropic()]);
    body["anthropic_beta"] = json!(["token-efficient-tools-2025-02-19"]);
    let p = path("anthropic", &format!("{SONNET}%3Ftool%3D1"), "rawPredict");
    let (s, _, v) = read_json(post_bearer(&m, &p, &token, &body).await).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["model"], SONNET);
    assert_eq!(v["stop_reason"], "tool_use");
    assert!(v["content"][0]["id"]
        .as_str()
        .expect("id")
        .starts_with("toolu_vrtx_01"));

    // streamRawPredict streams Anthropic's events
    let mut body = claude("hi [mock tokens=3]");
    body["stream"] = json!(true);
    let r = post_bearer(
        &m,
        &path("anthropic", SONNET, "streamRawPredict"),
        &token,
        &body,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("text/event-stream"));
    let text = r.text().await.expect("body");
    let events = sse_json(&text);
    assert_eq!(events[0].0.as_deref(), Some("message_start"));
    assert_eq!(events[0].1["message"]["model"], SONNET);
    assert_eq!(ant_stream_text(&text), "lorem ipsum dolor");
    assert_eq!(
        events.last().expect("last").0.as_deref(),
        Some("message_stop")
    );
    // rawPredict with `stream: true` streams too
    let r = post_bearer(&m, &path("anthropic", SONNET, "rawPredict"), &token, &body).await;
    assert_eq!(
        ant_stream_text(&r.text().await.expect("body")),
        "lorem ipsum dolor"
    );

    let log = m.requests().await;
    assert_eq!(log[1]["publisher"], "anthropic");
    assert_eq!(log[2]["model_id"], format!("{SONNET}?tool=1"));
    let stats = m.stats().await;
    assert_eq!(
        stats["by_path"]["/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model}:rawPredict"],
        3
    );
    assert_eq!(
        stats["by_path"]["/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model}:streamRawPredict"],
        1
    );
}

#[tokio::test]
async fn claude_raw_predict_rules() {
    let m = mock().await;
    let token = access_token(&m).await;
    let raw = path("anthropic", SONNET, "rawPredict");
    let stream = path("anthropic", SONNET, "streamRawPredict");
    let mut with_model = claude("hi");
    with_model["model"] = json!(SONNET);
    let mut no_version = claude("hi");
    no_version
        .as_object_mut()
        .expect("o")
        .remove("anthropic_version");
    let mut old_version = claude("hi");
    old_version["anthropic_version"] = json!("2023-06-01");
    let mut bad_beta = claude("hi");
    bad_beta["anthropic_beta"] = json!("x");
    let mut no_max = claude("hi");
    no_max.as_object_mut().expect("o").remove("max_tokens");
    let mut not_streaming = claude("hi");
    not_streaming["stream"] = json!(false);
    let cases = [
        (&raw, with_model, "model: Extra inputs are not permitted"),
        (&raw, no_version, "anthropic_version: Field required"),
        (
            &raw,
            old_version,
            "anthropic_version: Input should be 'vertex-2023-10-16'",
        ),
        (&raw, bad_beta, "anthropic_beta"),
        (&raw, no_max, "max_tokens: Field required"),
        (&stream, claude("hi"), "streamRawPredict requires"),
        (&stream, not_streaming, "streamRawPredict requires"),
    ];
    for (p, body, want) in cases {
        let (s, _, v) = read_json(post_bearer(&m, p, &token, &body).await).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        let msg = v["error"]["message"].as_str().expect("message");
        assert!(msg.contains(want), "{msg} / {want}");
    }
}

#[tokio::test]
async fn claude_count_tokens_on_vertex() {
    let m = mock().await;
    let token = access_token(&m).await;
    let messages = json!([{"role": "user", "content": "How many tokens is this?"}]);
    let body =
        json!({"model": SONNET, "messages": messages, "anthropic_version": "vertex-2023-10-16"});
    let p = path("anthropic", "count-tokens", "rawPredict");
    let (s, _, v) = read_json(post_bearer(&m, &p, &token, &body).await).await;
    assert_eq!(s, 200, "{v}");
    // the same count as Anthropic's own endpoint
    let (_, _, direct) = m
        .json(
            "/v1/messages/count_tokens",
            json!({"model": "claude-sonnet-4-5", "messages": messages}),
        )
        .await;
    assert_eq!(v, direct);
    assert!(v["input_tokens"].as_u64().expect("n") > 4);
    // the model is required here; max_tokens is not the count's
    for (body, want) in [
        (json!({"messages": messages}), "model: Field required"),
        (
            json!({"model": SONNET, "messages": messages, "max_tokens": 5}),
            "max_tokens: Extra inputs are not permitted",
        ),
    ] {
        let (s, _, v) = read_json(post_bearer(&m, &p, &token, &body).await).await;
        assert_eq!(s, 400);
        assert!(
            v["error"]["message"].as_str().expect("m").contains(want),
            "{v}"
        );
    }
    assert_eq!(
        m.stats().await["by_path"]["/v1/projects/{project}/locations/{location}/publishers/anthropic/models/count-tokens:rawPredict"],
        3
    );
}

#[tokio::test]
async fn claude_faults_on_vertex() {
    let m = mock().await;
    let token = access_token(&m).await;
    let raw = path("anthropic", SONNET, "rawPredict");
    // Vertex's own: quota in Google's shape, with Retry-After when asked
    let (s, h, v) =
        read_json(post_bearer(&m, &raw, &token, &claude("[mock fault=429 retry_after=3]")).await)
            .await;
    assert_eq!(s, 429);
    assert_eq!(h["retry-after"], "3");
    let msg = google_error(&v, 429, "RESOURCE_EXHAUSTED");
    assert!(
        msg.starts_with("Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model with base model: anthropic-claude-sonnet-4-5."),
        "{msg}"
    );
    for (knob, name) in [(403, "PERMISSION_DENIED"), (404, "NOT_FOUND")] {
        let (s, _, v) = read_json(
            post_bearer(&m, &raw, &token, &claude(&format!("[mock fault={knob}]"))).await,
        )
        .await;
        assert_eq!(s, knob);
        google_error(&v, knob, name);
    }
    // the model's: Anthropic's shape
    for (knob, typ) in [
        (529, "overloaded_error"),
        (500, "api_error"),
        (400, "invalid_request_error"),
    ] {
        let (s, _, v) = read_json(
            post_bearer(&m, &raw, &token, &claude(&format!("[mock fault={knob}]"))).await,
        )
        .await;
        assert_eq!(s, knob);
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], typ);
    }
    let (s, _, v) =
        read_json(post_bearer(&m, &raw, &token, &claude("[mock fault=context_length]")).await)
            .await;
    assert_eq!(s, 400);
    assert!(v["error"]["message"]
        .as_str()
        .expect("m")
        .starts_with("prompt is too long"));
    // in a stream: Anthropic's error event
    let mut body = claude("[mock fault=error_event after=2 tokens=5]");
    body["stream"] = json!(true);
    let r = post_bearer(
        &m,
        &path("anthropic", SONNET, "streamRawPredict"),
        &token,
        &body,
    )
    .await;
    let text = r.text().await.expect("body");
    assert_eq!(ant_stream_text(&text), "lorem ipsum");
    assert_eq!(
        sse_json(&text).last().expect("last").0.as_deref(),
        Some("error")
    );
}

#[tokio::test]
async fn the_metadata_server_hands_tokens_to_callers_that_say_the_flavor() {
    let m = mock().await;
    let path = "/computeMetadata/v1/instance/service-accounts/default/token";
    let r = m.http.get(m.url(path)).send().await.expect("send");
    assert_eq!(r.status(), 403);
    assert_eq!(m.stats().await["tokens_issued"], 0);
    let r = m
        .http
        .get(m.url(path))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["token_type"], "Bearer");
    assert!(v["expires_in"].as_u64().is_some_and(|e| e > 0), "{v}");
    let token = v["access_token"].as_str().expect("token").to_string();
    assert_eq!(m.stats().await["tokens_issued"], 1);
    // the token opens Vertex like one from /token
    let r = post_bearer(
        &m,
        &path_for_flash(),
        &token,
        &json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
}

fn path_for_flash() -> String {
    path("google", FLASH, "generateContent")
}
