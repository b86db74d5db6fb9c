//! The real binaries: start-up line, `tollway check`, and graceful shutdown on SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::harness::{config_text, start, MASTER};
use crate::reload::reload;
use crate::shared::{postgres_base, unique};

pub fn spawn_listening(cmd: &mut Command, marker: &str) -> (Child, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("no stdout");
    };
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process exited before listening");
        };
        if let Some(url) = line.strip_prefix(marker) {
            let url = url.trim().to_string();
            // keep draining stdout so the child never blocks on a full pipe
            std::thread::spawn(move || for _ in lines {});
            return (child, url);
        }
    }
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_stream_finish_then_exits_zero() {
    let (mut mock, mock_url) = spawn_listening(
        Command::new(mock_bin()).args(["--listen", "127.0.0.1:0"]),
        "tollway-mock listening on ",
    );
    let dir = std::env::temp_dir().join(format!("tollway-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let cfg = dir.join("gw.yaml");
    std::fs::File::create(&cfg)
        .and_then(|mut f| f.write_all(config_text(&mock_url).as_bytes()))
        .expect("write config");
    let (mut gw, gw_url) = spawn_listening(
        Command::new(env!("CARGO_BIN_EXE_tollway"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&cfg)
            // glibc's defaults, as asked: no restart with tuned tunables (the lanes test below
            // checks the default)
            .env(tollway::malloc::OPT_OUT, "off")
            .env_remove("GLIBC_TUNABLES"),
        "tollway listening on ",
    );
    let environ = std::fs::read(format!("/proc/{}/environ", gw.id())).expect("environ");
    assert!(!environ
        .split(|&b| b == 0)
        .any(|v| v.starts_with(b"GLIBC_TUNABLES=")));
    let http = reqwest::Client::new();
    let mut r = http
        .post(format!("{gw_url}/v1/chat/completions"))
        .bearer_auth(MASTER)
        .json(&json!({"model": "gpt", "stream": true,
            "messages": [{"role": "user", "content": "hi [mock tpt_ms=30 tokens=30]"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.expect("chunk");
    assert!(first.is_some());
    // SIGTERM while the stream is in flight
    let status = Command::new("kill")
        .args(["-TERM", &gw.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let mut rest = String::new();
    while let Some(c) = r.chunk().await.expect("the stream finishes cleanly") {
        rest.push_str(&String::from_utf8_lossy(&c));
    }
    assert!(
        rest.contains("[DONE]"),
        "the in-flight stream completed: {rest}"
    );
    // new connections are refused once draining is over; the process exits 0
    let code = exit_within(&mut gw, Duration::from_secs(5)).await;
    let _ = mock.kill();
    let _ = mock.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        code.map(|c| c.code()),
        Some(Some(0)),
        "tollway exits 0 after SIGTERM"
    );
}

/// The child's exit status once it exits, polling for up to `limit`; `None` if it is still running.
async fn exit_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let end = std::time::Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return Some(s);
        }
        if std::time::Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `tollway-mock` sits next to `tollway` in the target directory (cargo builds both for the
/// workspace's default members; `cargo build --bins` guarantees it).
pub fn mock_bin() -> std::path::PathBuf {
    let gw = std::path::PathBuf::from(env!("CARGO_BIN_EXE_tollway"));
    let path = gw.with_file_name("tollway-mock");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "tollway-mock", "--bin", "tollway-mock"])
            .status()
            .expect("cargo build tollway-mock");
        assert!(status.success());
    }
    path
}

#[test]
fn check_reports_every_error_with_its_line_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("tollway-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "server:\n  listen: nowhere\nproviders:\n  p: { kind: openai, colour: red }\nmodels:\n  m:\n    deployments: [{ provider: ghost, model: x }]\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_tollway"))
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(":line 2: server.listen"), "{text}");
    assert!(
        text.contains(":line 4: providers.p: unknown field `colour`"),
        "{text}"
    );
    assert!(
        text.contains(":line 7: models.m.deployments[0].provider: unknown provider `ghost`"),
        "{text}"
    );
    assert!(text.contains("3 error(s)"), "{text}");

    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_tollway"))
        .args(["check", "--config"])
        .arg(&demo)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// In-process: when the shutdown signal fires, a stream already under way still completes, new
/// connections are refused, and `serve` returns cleanly.
#[tokio::test]
async fn shutdown_drains_in_flight_streams_in_process() {
    let mut env = start().await;
    let r = env
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt", "stream": true,
                   "messages": [{"role": "user", "content": "hi [mock tpt_ms=20 tokens=15]"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    env.stop();
    let body = r
        .text()
        .await
        .expect("the stream finishes after shutdown began");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    let done = env.done.take().expect("server task");
    let result = tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .expect("serve returns after draining")
        .expect("join");
    assert!(result.is_ok(), "{result:?}");
    assert!(!env.healthy().await, "the listener is closed");
}

/// `tollway ARGS --storage DB`: its exit code, stdout and stderr.
fn storage_command(args: &[&str], db: &str) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollway"))
        .args(args)
        .args(["--storage", db])
        .output()
        .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `tollway keys` and `tollway usage` against a SQLite file: create (secret printed once), list,
/// rotate, revoke; a usage report in CSV.
#[test]
fn keys_and_usage_commands() {
    let dir = std::env::temp_dir().join(format!("tollway-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let db = format!("sqlite://{}", dir.join("cli.db").display());
    let run = |args: &[&str]| storage_command(args, &db);
    let (code, out, err) = run(&[
        "keys",
        "create",
        "--name",
        "ci",
        "--team",
        "platform",
        "--rpm",
        "60",
        "--budget-usd",
        "12.50",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let secret = out.trim().to_string();
    assert!(secret.starts_with("sk-tw-"), "{out}");
    assert!(err.contains("shown once"));
    let (code, out, _) = run(&["keys", "list"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("ci") && out.contains("platform") && out.contains("$12.500000 monthly"),
        "{out}"
    );
    assert!(!out.contains(&secret[6..]), "a secret was listed");
    let id = out
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("id")
        .to_string();
    let (code, out, _) = run(&["keys", "rotate", &id]);
    assert_eq!(code, Some(0));
    assert!(out.trim().starts_with("sk-tw-") && out.trim() != secret);
    assert_eq!(run(&["keys", "revoke", &id]).0, Some(0));
    let (code, _, err) = run(&["keys", "revoke", &id]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no active key"));
    let (code, out, err) = run(&["usage", "--group-by", "key,day", "--format", "csv"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("key,day,requests,"), "{out}");
    assert!(
        out.lines()
            .next()
            .is_some_and(|h| h.ends_with(",cache_hits")),
        "{out}"
    );
    let (code, out, err) = run(&["usage", "--group-by", "model"]);
    assert_eq!(code, Some(0), "{err}");
    let head: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        head,
        [
            "model",
            "requests",
            "cache_hits",
            "input_tokens",
            "output_tokens",
            "cost_usd"
        ],
        "{out}"
    );
    let (code, _, err) = run(&["usage", "--group-by", "colour"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("colour"));
}

/// `tollway requests` over a ledger in a SQLite file: newest first, a page at a time with the
/// `--before` it prints, filtered; bad arguments named.
#[tokio::test]
async fn the_requests_command_pages_the_ledger() {
    let dir = std::env::temp_dir().join(format!("tollway-cli-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let db = format!("sqlite://{}", dir.join("log.db").display());
    let store = tollway_store::Store::connect(&db).await.expect("store");
    let rows: Vec<tollway_store::LedgerRow> = (0..5)
        .map(|i| tollway_store::LedgerRow {
            request_id: format!("req_{i:032}"),
            ts_ms: 1_764_547_200_000 + i,
            key_id: Some(if i % 2 == 0 { "key_even" } else { "key_odd" }.into()),
            model: "gpt".into(),
            provider: "oai".into(),
            deployment: "oai/gpt-4.1".into(),
            api: "openai".into(),
            status: if i == 3 { 502 } else { 200 },
            attempts: 1,
            input_tokens: 10,
            output_tokens: 5,
            cost_micros: Some(7),
            ..tollway_store::LedgerRow::default()
        })
        .collect();
    store.insert_ledger(&rows).await.expect("insert");
    let run = |args: &[&str]| storage_command(&[&["requests"], args].concat(), &db);
    let ids = |out: &str| -> Vec<String> {
        out.lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
            .collect()
    };
    let (code, out, err) = run(&["--limit", "2"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("TIME_UTC"), "{out}");
    assert_eq!(
        ids(&out),
        [rows[4].request_id.clone(), rows[3].request_id.clone()]
    );
    assert!(
        out.contains("2025-12-01 00:00:00")
            && out.contains("oai/gpt-4.1")
            && out.contains("0.000007"),
        "{out}"
    );
    let next = err
        .trim()
        .strip_prefix("more: --before ")
        .expect("a next page")
        .to_string();
    let (_, out, err) = run(&["--limit", "2", "--before", &next]);
    assert_eq!(
        ids(&out),
        [rows[2].request_id.clone(), rows[1].request_id.clone()]
    );
    assert!(err.contains("more:"));
    let (_, out, _) = run(&["--status", "error"]);
    assert_eq!(ids(&out), [rows[3].request_id.clone()]);
    let (_, out, _) = run(&["--key", "key_odd", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["data"].as_array().map(Vec::len), Some(2), "{v}");
    assert!(v["next"].is_null());
    let (code, _, err) = run(&["--limit", "9999"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("`limit`"), "{err}");
}

/// `tollway router eval` on the hand fixture with the shipped model: the summary, one score per
/// prompt in `--dump-scores`, an SVG plot and a JSON report.
#[test]
fn router_eval_writes_scores_plot_and_report() {
    let dir = std::env::temp_dir().join(format!("tollway-router-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let data = root.join("crates/tollway-engine/testdata/routing-sample.jsonl");
    let model = root.join("crates/tollway-engine/data/router-lexical.json");
    let (scores, plot, report) = (
        dir.join("scores.jsonl"),
        dir.join("curve.svg"),
        dir.join("report.json"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tollway"))
        .args(["router", "eval", "--data"])
        .arg(&data)
        .arg("--model")
        .arg(&model)
        .arg("--dump-scores")
        .arg(&scores)
        .arg("--plot")
        .arg(&plot)
        .arg("--report")
        .arg(&report)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("APGR"), "{stdout}");
    let lines = std::fs::read_to_string(&scores).expect("scores");
    let rows = std::fs::read_to_string(&data)
        .expect("data")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    assert_eq!(lines.lines().count(), rows);
    let first: serde_json::Value =
        serde_json::from_str(lines.lines().next().expect("line")).expect("json");
    assert!(
        first["id"].is_string()
            && first["score"]
                .as_f64()
                .is_some_and(|s| (0.0..=1.0).contains(&s))
    );
    assert!(std::fs::read_to_string(&plot)
        .expect("svg")
        .starts_with("<svg"));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    assert!(r.to_string().contains("apgr"), "{r}");
    // the domain oracle is a reference: the fixture names 40 domains
    assert!(stdout.contains("domain oracle (40 domains"), "{stdout}");
    assert!(
        r["domain_oracle"]["apgr"].as_f64().is_some_and(|a| a > 0.5)
            && r["domain_oracle"]["domains"] == 40,
        "{r}"
    );
    // the per-model predicted quality is checked against what each model scored
    assert!(
        stdout.contains("predicted quality of gpt-4-1106-preview: mean 0.")
            && stdout.contains("calibration error"),
        "{stdout}"
    );
    let weak = &r["quality_calibration"]["mixtral-8x7b-instruct-v0.1"];
    assert!(
        weak["ece"]
            .as_f64()
            .is_some_and(|e| (0.0..=1.0).contains(&e))
            && weak["bins"].as_array().is_some_and(|b| !b.is_empty()),
        "{r}"
    );
    // a missing model file is a clear error
    let out = Command::new(env!("CARGO_BIN_EXE_tollway"))
        .args(["router", "eval", "--data"])
        .arg(&data)
        .args(["--model", "/nonexistent/model.json"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/model.json"));
}

/// `tollway serve --workers 2 --pin-workers` serves on two lanes (threads with their own
/// runtimes), each pinned to a CPU of its own, from one listener, with lanes reading budgets from
/// PostgreSQL; on SIGTERM the lanes drain, the final flush writes every row (held back until then
/// by a long flush interval), and it exits 0.
#[tokio::test]
async fn the_binary_serves_on_lanes_and_flushes_its_ledger_after_they_drain() {
    let (mut mock, mock_url) = spawn_listening(
        Command::new(mock_bin()).args(["--listen", "127.0.0.1:0"]),
        "tollway-mock listening on ",
    );
    let storage = tollway_store::fresh_postgres_schema(&postgres_base(), &unique())
        .await
        .expect("a fresh schema in the local PostgreSQL");
    let dir = std::env::temp_dir().join(format!("tollway-lanes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let cfg = dir.join("gw.yaml");
    let text = format!(
        "{}storage:\n  url: \"{storage}\"\n  flush_interval_ms: 60000\n",
        config_text(&mock_url)
    );
    std::fs::write(&cfg, text).expect("write config");
    let (mut gw, gw_url) = spawn_listening(
        Command::new(env!("CARGO_BIN_EXE_tollway"))
            .env_remove("GLIBC_TUNABLES")
            .env_remove(tollway::malloc::OPT_OUT)
            .args([
                "serve",
                "--workers",
                "2",
                "--pin-workers",
                "--listen",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(&cfg),
        "tollway listening on ",
    );
    // two serving lanes, by thread name (they start right after the listening line)
    let lane_threads = || {
        let mut lanes: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", gw.id()))
            .expect("tasks")
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|c| c.trim().to_string())
            .filter(|c| c.starts_with("tollway-lane-"))
            .collect();
        lanes.sort();
        lanes
    };
    let mut lanes = lane_threads();
    for _ in 0..100 {
        if lanes.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        lanes = lane_threads();
    }
    assert_eq!(lanes, ["tollway-lane-0", "tollway-lane-1"]);
    // the process that serves (the one spawned: a restart keeps the id) runs with glibc's
    // larger per-thread cache (`tollway::malloc`)
    let environ = std::fs::read(format!("/proc/{}/environ", gw.id())).expect("environ");
    let tunables = environ
        .split(|&b| b == 0)
        .find_map(|v| v.strip_prefix(b"GLIBC_TUNABLES="))
        .map(|v| String::from_utf8_lossy(v).into_owned());
    assert_eq!(
        tunables,
        Some(format!(
            "glibc.malloc.tcache_count={}",
            tollway::malloc::TCACHE_COUNT
        ))
    );
    // each lane may run on one CPU only, and (given two CPUs) not the other lane's
    let allowed = |status: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_string())
    };
    let own = allowed(&std::fs::read_to_string("/proc/self/status").expect("status"))
        .expect("Cpus_allowed_list");
    let mut pinned: Vec<(String, String)> = Vec::new();
    for _ in 0..100 {
        pinned = std::fs::read_dir(format!("/proc/{}/task", gw.id()))
            .expect("tasks")
            .filter_map(|t| {
                let dir = t.ok()?.path();
                let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
                let comm = comm.trim().to_string();
                let list = allowed(&std::fs::read_to_string(dir.join("status")).ok()?)?;
                comm.starts_with("tollway-lane-").then_some((comm, list))
            })
            .collect();
        pinned.sort();
        if pinned.iter().all(|(_, l)| l.parse::<usize>().is_ok()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        pinned.iter().all(|(_, l)| l.parse::<usize>().is_ok()),
        "each lane on one CPU: {pinned:?}"
    );
    if own.contains(['-', ',']) {
        assert_ne!(
            pinned[0].1, pinned[1].1,
            "two CPUs, one per lane: {pinned:?}"
        );
    }

    let http = reqwest::Client::new();
    let key: serde_json::Value = http
        .post(format!("{gw_url}/admin/keys"))
        .bearer_auth(MASTER)
        .json(&json!({"name": "lanes", "budget_usd": "100"}))
        .send()
        .await
        .expect("create key")
        .json()
        .await
        .expect("json");
    let key = key["key"].as_str().expect("secret").to_string();
    // a reload asked of a lane runs on the background runtime and answers
    let (status, body) = reload(&http, &gw_url).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "reloaded", "{body}");
    // a new connection per request (the listener hands them to either lane); the budget makes
    // lanes read spend from the database
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (url, key) = (gw_url.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("client");
            http.post(format!("{url}/v1/chat/completions"))
                .bearer_auth(&key)
                .json(
                    &json!({"model": if i % 2 == 0 { "gpt" } else { "claude" }, "max_tokens": 10,
                    "messages": [{"role": "user", "content": format!("q{i} [mock ttft_ms=20]")}]}),
                )
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join"), 200);
    }
    let status = Command::new("kill")
        .args(["-TERM", &gw.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let code = exit_within(&mut gw, Duration::from_secs(10)).await;
    let _ = mock.kill();
    let _ = mock.wait();
    let _ = std::fs::remove_dir_all(&dir);
    if code.is_none() {
        let _ = gw.kill();
        let _ = gw.wait();
    }
    assert_eq!(
        code.map(|c| c.code()),
        Some(Some(0)),
        "exits 0 after SIGTERM"
    );
    let store = tollway_store::Store::connect(&storage)
        .await
        .expect("storage");
    assert_eq!(
        store.ledger_count().await.expect("count"),
        40,
        "every request's row was written by the final flush"
    );
}
