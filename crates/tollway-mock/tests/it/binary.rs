//! The `tollway-mock` binary: prints its listening line, serves, exits 0 on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Starts the binary with `args` and reads the URL from its listening line.
pub async fn spawn(args: &[&std::ffi::OsStr]) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollway-mock"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn tollway-mock");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .expect("join")
    .expect("first line");
    let url = line
        .trim_end()
        .strip_prefix("tollway-mock listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    (child, url)
}

#[tokio::test]
async fn binary_prints_its_address_serves_and_stops_on_sigterm() {
    let (mut child, url) = spawn(&["--listen".as_ref(), "127.0.0.1:0".as_ref()]).await;
    assert!(
        url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"),
        "{url}"
    );
    let r = reqwest::get(format!("{url}/v1/models")).await.unwrap();
    assert_eq!(r.status(), 200);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}
