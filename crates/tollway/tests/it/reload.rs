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
