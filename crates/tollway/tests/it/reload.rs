//! Hot reload: through the admin endpoint under a bounded concurrent load (no request lost), an
//! invalid config rejected with its errors while the old one keeps serving, and SIGHUP and file
//! changes on the real binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{config_text, start, MASTER};
use crate::lifecycle::{mock_bin, spawn_listening};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollway-reload-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    dir.join("gw.yaml")
}

fn write(path: &Path, text: &str) {
    // write then rename, as editors and config managers do, so a reader never sees half a file
    let tmp = path.with_extension("tmp");
    std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn with_extra_model(base: &str, name: &str) -> String {
    format!("{base}  {name}: {{ deployments: [{{ provider: oai, model: {name}-up }}] }}\n")
}

async fn model_ids(http: &reqwest::Client, url: &str) -> Vec<String> {
    let v: Value = http
        .get(format!("{url}/v1/models"))
        .bearer_auth(MASTER)
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    v["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub async fn reload(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = http
        .post(format!("{url}/admin/reload"))
        .bearer_auth(MASTER)
        .send()
        .await
        .expect("reload");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn reloads_under_load_lose_no_request_and_bad_configs_are_rejected() {
    let env = start().await;
    let base = config_text(&env.mock.url());
    let path = scratch("load");
    write(&path, &base);
    env.state.set_config_source(path.clone(), None);

    // a bounded loop of concurrent requests, streaming and not, while the config flips
    let mut workers = Vec::new();
    for w in 0..4 {
        let http = env.http.clone();
        let url = env.url.clone();
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for i in 0..40 {
                let stream = (i + w) % 2 == 0;
                let r = http
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(MASTER)
                    .json(&json!({"model": "gpt", "stream": stream,
                        "messages": [{"role": "user", "content": "hi [mock tokens=20 tpt_ms=1]"}]}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let body = r.text().await.unwrap_or_default();
                        if stream && !body.contains("[DONE]") {
                            failures.push(format!("stream cut: {body}"));
                        }
                    }
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }
    for i in 0..10 {
        let text = if i % 2 == 0 {
            with_extra_model(&base, "fresh")
        } else {
            base.clone()
        };
        write(&path, &text);
        let (status, body) = reload(&env.http, &env.url).await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in workers {
        let failures = w.await.expect("join");
        assert!(failures.is_empty(), "{failures:?}");
    }

    write(&path, &with_extra_model(&base, "fresh"));
    let (status, body) = reload(&env.http, &env.url).await;
    assert_eq!(status, 200, "{body}");
    assert!(model_ids(&env.http, &env.url)
        .await
        .contains(&"fresh".to_string()));

    // an invalid config: rejected with every error, the running one kept
    write(&path, &format!("{base}  broken: {{ deployments: [{{ provider: nobody, model: x }}] }}\nbogus_section: 1\n"));
    let (status, body) = reload(&env.http, &env.url).await;
    assert_eq!(status, 400, "{body}");
    let errors = body["error"]["errors"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(errors.len(), 2, "{body}");
    assert!(errors.iter().any(|e| e
        .as_str()
        .unwrap_or("")
        .contains("unknown provider `nobody`")));
    let ids = model_ids(&env.http, &env.url).await;
    assert!(ids.contains(&"fresh".to_string()) && !ids.contains(&"broken".to_string()));
    let (status, _, _) = env
        .openai(json!({"model": "fresh", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 200);
    // the admin endpoint needs the master key
    let r = env
        .http
        .post(format!("{}/admin/reload", env.url))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
}

async fn wait_for_model(http: &reqwest::Client, url: &str, name: &str) -> bool {
    for _ in 0..100 {
        if model_ids(http, url).await.iter().any(|m| m == name) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn sighup_and_file_changes_reload_the_real_binary() {
    let (mut mock, mock_url) = spawn_listening(
        Command::new(mock_bin()).args(["--listen", "127.0.0.1:0"]),
        "tollway-mock listening on ",
    );
    let path = scratch("sighup");
    let base = config_text(&mock_url);
    write(&path, &base);
    let (mut gw, gw_url) = spawn_listening(
        Command::new(env!("CARGO_BIN_EXE_tollway"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path),
        "tollway listening on ",
    );
    let http = reqwest::Client::new();
    // SIGHUP
    write(&path, &with_extra_model(&base, "by-signal"));
    let _ = Command::new("kill")
        .args(["-HUP", &gw.id().to_string()])
        .status();
    assert!(
        wait_for_model(&http, &gw_url, "by-signal").await,
        "SIGHUP did not reload"
    );
    // the file watcher, with no signal
    write(
        &path,
        &with_extra_model(&with_extra_model(&base, "by-signal"), "by-watch"),
    );
    assert!(
        wait_for_model(&http, &gw_url, "by-watch").await,
        "the file change was not picked up"
    );
    // an invalid file is ignored; the gateway keeps serving
    write(&path, "models: [this is not valid\n");
    let _ = Command::new("kill")
        .args(["-HUP", &gw.id().to_string()])
        .status();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(model_ids(&http, &gw_url)
        .await
        .contains(&"by-watch".to_string()));
    let _ = gw.kill();
    let _ = gw.wait();
    let _ = mock.kill();
    let _ = mock.wait();
}

#[tokio::test]
async fn keys_declared_in_the_file_work_follow_reloads_and_are_the_files_to_change() {
    const BOT: &str = "sk-live-4f9Qz7Lw2Xc8Vb1Nm6Kj3Hg5";
    // the config: the usual one, a team, and these `keys:` entries
    let file = |mock: &str, entries: &[&str]| {
        let entries = entries.concat();
        format!(
            "{}teams:\n  ops: {{ rpm: 100 }}\nkeys:\n{entries}",
            config_text(mock)
        )
    };
    let bot = format!("  bot: {{ key: \"{BOT}\", team: ops, models: [gpt], rpm: 3 }}\n");
    let hashed = format!(
        "  hashed: {{ key_sha256: {}, models: [claude] }}\n",
        tollway_store::hash_secret("a-secret-kept-elsewhere-0001")
    );
    let env = crate::harness::start_with(|mock| file(mock, &[&bot, &hashed])).await;
    let path = scratch("keys");
    let rewrite = |entries: &[&str]| write(&path, &file(&env.mock.url(), entries));
    rewrite(&[&bot, &hashed]);
    env.state.set_config_source(path.clone(), None);
    let chat = |key: &'static str, model: &'static str| {
        let http = env.http.clone();
        let url = env.url.clone();
        async move {
            let r = http
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .expect("send");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    // a secret of the operator's own form works, within the key's models and limits
    assert_eq!(chat(BOT, "gpt").await.0, 200);
    let (status, v) = chat(BOT, "claude").await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(chat(BOT, "gpt").await.0, 200);
    assert_eq!(chat(BOT, "gpt").await.0, 200);
    let (status, v) = chat(BOT, "gpt").await;
    assert_eq!(status, 429, "rpm 3: {v}");
    // a key declared by its hash: the file holds no secret
    assert_eq!(chat("a-secret-kept-elsewhere-0001", "claude").await.0, 200);

    // listed as the file's; the admin API will not revoke or rotate it
    let (_, list) = env.admin_get("/admin/keys", Some(MASTER)).await;
    let listed = list["data"].as_array().expect("data");
    let bot_row = listed
        .iter()
        .find(|k| k["name"] == "bot")
        .expect("bot listed");
    assert_eq!(bot_row["source"], "config");
    assert_eq!(bot_row["team"], "ops");
    assert_eq!(bot_row["id"], tollway_store::config_key_id("bot"));
    assert!(!list.to_string().contains(BOT), "no secret in the list");
    for action in ["revoke", "rotate"] {
        let r = env
            .http
            .post(format!(
                "{}/admin/keys/{}/{action}",
                env.url,
                bot_row["id"].as_str().unwrap_or("")
            ))
            .bearer_auth(MASTER)
            .send()
            .await
            .expect("action");
        assert_eq!(r.status().as_u16(), 400, "{action}");
        let v: Value = r.json().await.expect("json");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("keys.bot")),
            "{v}"
        );
    }

    // removed from the file: revoked on reload; the other key is untouched
    rewrite(&[&hashed]);
    let (status, body) = reload(&env.http, &env.url).await;
    assert_eq!(status, 200, "{body}");
    let (status, v) = chat(BOT, "gpt").await;
    assert_eq!(status, 401, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("revoked")),
        "{v}"
    );
    assert_eq!(chat("a-secret-kept-elsewhere-0001", "claude").await.0, 200);

    // a file whose key takes another key's secret is rejected whole: the running config is kept
    let (api_key, api_secret) = env
        .state
        .accounts()
        .store()
        .create_key(tollway_store::NewKey {
            name: "api".into(),
            ..tollway_store::NewKey::default()
        })
        .await
        .expect("create");
    let stolen = format!("  thief: {{ key: \"{api_secret}\" }}\n");
    rewrite(&[&hashed, &stolen]);
    let (status, body) = reload(&env.http, &env.url).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains(&api_key.id), "{body}");
    assert!(
        !body.to_string().contains(&api_secret),
        "the secret is never echoed: {body}"
    );

    // declared again: back, under the same id
    rewrite(&[&bot, &hashed]);
    let (status, body) = reload(&env.http, &env.url).await;
    assert_eq!(status, 200, "{body}");
    let (status, v) = chat(BOT, "gpt").await;
    assert!(
        status == 200 || status == 429,
        "working again (maybe still limited): {status} {v}"
    );
}
