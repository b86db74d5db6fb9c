#!/usr/bin/env python3
"""Measures what a `kill -9` of the gateway loses from the usage ledger.

Starts tollway-mock and tollway (SQLite ledger, storage.flush_interval_ms as given), sends requests
one after another for a few seconds, kills the gateway with SIGKILL without warning, then counts the
ledger rows against the answers the client received. Everything runs on loopback; it stops by itself.

    python3 bench/ledger_kill9.py [--flush-ms 1000] [--seconds 3] [--bin-dir target/release]
"""
import argparse
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start(cmd, marker, cwd):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=cwd)
    for line in p.stdout:
        m = re.search(marker + r" (http://\S+)", line)
        if m:
            return p, m.group(1)
    raise SystemExit(f"{cmd[0]} did not start")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flush-ms", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tollway-kill9-")
    mock, mock_url = start([os.path.join(a.bin_dir, "tollway-mock"), "--listen", "127.0.0.1:0"], "listening on", work)
    db = os.path.join(work, "ledger.db")
    cfg = os.path.join(work, "gw.yaml")
    with open(cfg, "w") as f:
        f.write(f"""server:
  master_key: sk-kill9-test
storage:
  url: sqlite://{db}
  flush_interval_ms: {a.flush_ms}
providers:
  up: {{ kind: openai-compatible, base_url: "{mock_url}/v1", api_key: none }}
models:
  m: {{ deployments: [{{ provider: up, model: m }}] }}
""")
    gw, gw_url = start([os.path.join(a.bin_dir, "tollway"), "serve", "--config", cfg, "--listen", "127.0.0.1:0"], "tollway listening on", work)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    done = []  # (completion time, request id)
    t0 = time.time()
    try:
        while time.time() - t0 < a.seconds:
            req = urllib.request.Request(gw_url + "/v1/chat/completions", data=body, method="POST",
                                         headers={"Authorization": "Bearer sk-kill9-test", "content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as r:
                r.read()
                done.append((time.time(), r.headers["x-tollway-request-id"]))
    finally:
        killed_at = time.time()
        gw.send_signal(signal.SIGKILL)
        gw.wait()
        mock.terminate()
        mock.wait()
    con = sqlite3.connect(db)
    rows = {r[0] for r in con.execute("SELECT request_id FROM tollway_ledger")}
    lost = [t for t, rid in done if rid not in rows]
    window = [t for t, _ in done if killed_at - t <= a.flush_ms / 1000]
    oldest_lost = max((killed_at - t for t in lost), default=0.0)
    result = {
        "flush_interval_ms": a.flush_ms,
        "answered": len(done),
        "in_ledger": len(rows),
        "lost": len(lost),
        "answered_within_last_flush_interval": len(window),
        "oldest_lost_row_age_ms": round(oldest_lost * 1000, 1),
        "bound_held": len(lost) <= len(window) and oldest_lost * 1000 <= a.flush_ms + 50,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["bound_held"] else 1


if __name__ == "__main__":
    sys.exit(main())
