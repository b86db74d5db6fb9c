#!/usr/bin/env python3
"""Peers side by side: the same loads straight to tollway-mock, through Tollway, nginx
(proxy_pass: the floor of any HTTP hop), LiteLLM's proxy and Portkey's gateway, in one run.

    bench/peers/run.sh            # installs the peers into bench/.peers (cached), then runs
    python3 bench/peers/run.py    # runs with whatever is installed; missing peers are skipped
    BENCH_PEERS=nginx bench/peers/run.sh   # only some peers (nginx, litellm, portkey) besides Tollway

Everything listens on 127.0.0.1 and is stopped at exit. Writes bench/results/peers.json and
bench/results/peers.md. The load generator, the upstream mock and the gateway under test share
this machine; each gateway runs alone against the mock while it is measured.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
REL = os.path.join(ROOT, "target", "release")
PEERS = os.path.join(ROOT, "bench", ".peers")
QUICK = os.environ.get("BENCH_QUICK") == "1"
DURATION = "3" if QUICK else "10"
# BENCH_PEERS=nginx,litellm,portkey (the default: all) picks which peers run besides Tollway.
ONLY = {p.strip() for p in os.environ.get("BENCH_PEERS", "nginx,litellm,portkey").split(",") if p.strip()}
procs = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name, cmd, env=None, cwd=None):
    log = open(os.path.join(TMP, f"{name}.log"), "w")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                         start_new_session=True)
    procs.append(p)
    return p


def stop(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=10)
    except Exception:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except Exception:
            pass


def wait_http(url, timeout=60, headers=None, body=None):
    end = time.time() + timeout
    while time.time() < end:
        try:
            req = urllib.request.Request(url, data=body, headers=headers or {})
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status < 500:
                    return True
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return True
        except Exception:
            pass
        time.sleep(0.3)
    return False


def tree(pid, field="pid"):
    """`field` of a process and of its children (LiteLLM and nginx fork workers), from ps."""
    try:
        out = subprocess.run(["ps", "-o", f"{field}=", "--ppid", str(pid), "-p", str(pid)],
                             capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]
    except Exception:
        return []


def rss_kb(pid):
    """Resident memory of a process and its children."""
    return sum(tree(pid, "rss"))


STREAM_TOKENS = 200
STREAM_MODEL = f"bench-stream?tokens={STREAM_TOKENS}&tpt_ms=0&ttft_ms=0"
HOLD_STREAMS = 200 if QUICK else 1000
HOLD_TOKENS = 20 if QUICK else 100  # one token each 100 ms: about 10 s per stream
HOLD_MODEL = f"bench-hold?tokens={HOLD_TOKENS}&tpt_ms=100"
HOLD_RATE = 500


def load(url, model, extra=(), rate=None, connections=None, key=None, stream=False,
         requests=None, duration=None, timeout=None, warmup="1"):
    cmd = [os.path.join(REL, "tollway-bench"), "run", "--url", url, "--model", model,
           "--duration", duration or DURATION, "--warmup", warmup]
    if rate:
        cmd += ["--rate", str(rate)]
    if requests:
        cmd += ["--requests", str(requests)]
    if connections:
        cmd += ["--connections", str(connections)]
    if key:
        cmd += ["--key", key]
    if stream:
        cmd += ["--stream"]
    if timeout:
        cmd += ["--timeout", str(timeout)]
    for h in extra:
        cmd += ["--header", h]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    try:
        return json.loads(r.stdout)
    except Exception:
        return {"error": (r.stderr or r.stdout)[-400:]}


def cpu_ticks(pid):
    """CPU time (clock ticks) of a process and its children."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except Exception:
            pass
    return total


def settle(pid, limit=120.0):
    """Waits until the gateway is idle again (under 5% of a core for a second), so that a peer
    still working off the backlog of an overload does not spoil the next measurement. Returns the
    seconds waited."""
    if not pid:
        time.sleep(0.5)
        return 0.0
    start = time.time()
    hz = os.sysconf("SC_CLK_TCK")
    quiet = 0
    last = cpu_ticks(pid)
    while time.time() - start < limit:
        time.sleep(0.5)
        now = cpu_ticks(pid)
        quiet = quiet + 1 if (now - last) / hz < 0.025 else 0
        last = now
        if quiet >= 2:
            break
    return round(time.time() - start, 1)


def peak_rss_during(pid, fn):
    """Runs fn() while sampling the resident memory of pid and its children every 100 ms."""
    import threading
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kb(pid))
            done.wait(0.1)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        r = fn()
    finally:
        done.set()
        t.join()
    return r, peak[0]


def figures(r):
    # a run with no successful request has no latency figures at all
    lat = r.get("latency_us") or {}
    ttfb = r.get("ttfb_us") or {}
    st = r.get("stream_stats") or {}
    out = {
        "ok": r.get("ok"), "errors": r.get("errors"), "error_kinds": r.get("error_kinds"),
        "rps": r.get("achieved_rps"), "max_in_flight": r.get("max_in_flight"),
        "p50": lat.get("p50"), "p90": lat.get("p90"), "p99": lat.get("p99"),
        "p99.9": lat.get("p99.9"), "ttfb_p50": ttfb.get("p50"), "ttfb_p99": ttfb.get("p99"),
        "error": r.get("error"),
    }
    if st:
        dur = st.get("stream_duration_us") or {}
        out.update({
            "events_mean": (st.get("events_per_stream") or {}).get("mean"),
            "duration_p50": dur.get("p50"), "duration_p99": dur.get("p99"),
        })
    return out


def measure(name, url, model, pid, extra=(), key=None, stream_model=STREAM_MODEL,
            hold_model=HOLD_MODEL):
    res = {"name": name}
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    hdrs = {"content-type": "application/json"}
    for h in extra:
        k, v = h.split(":", 1)
        hdrs[k.strip()] = v.strip()
    if key:
        hdrs["authorization"] = f"Bearer {key}"
    if not wait_http(url + "/v1/chat/completions", 90, hdrs, body):
        res["skipped"] = "did not answer a chat completion within 90 s (see its log)"
        return res
    res["rss_idle_mb"] = round(rss_kb(pid) / 1024, 1) if pid else None
    res["settle_s"] = {}
    loads = (("rps500", dict(model=model, rate=500)),
             ("rps1000", dict(model=model, rate=1000)),
             ("saturation", dict(model=model, connections=64)),
             ("stream200", dict(model=stream_model, rate=100, stream=True)))
    for label, kw in loads:
        res["settle_s"][label] = settle(pid)
        res[label] = figures(load(url, extra=extra, key=key, **kw))
    # many slow streams held open at once: the gateway's memory
    res["settle_s"]["hold"] = settle(pid)
    ramp = f"{HOLD_STREAMS / HOLD_RATE + 0.05:.2f}"
    r, peak = peak_rss_during(pid, lambda: load(
        url, hold_model, extra, key=key, rate=HOLD_RATE, requests=HOLD_STREAMS, stream=True,
        duration=ramp, timeout=60, warmup="0"))
    res["hold"] = figures(r)
    res["hold"]["rss_peak_mb"] = round(peak / 1024, 1) if pid else None
    res["rss_mb"] = round(rss_kb(pid) / 1024, 1) if pid else None
    return res


def main():
    global TMP
    TMP = tempfile.mkdtemp(prefix="tollway-peers-")
    for b in ("tollway", "tollway-mock", "tollway-bench"):
        if not os.path.exists(os.path.join(REL, b)):
            sys.exit(f"missing {REL}/{b}: cargo build --release -p tollway -p tollway-mock -p tollway-bench")
    mport = free_port()
    mock = f"http://127.0.0.1:{mport}"
    start("mock", [os.path.join(REL, "tollway-mock"), "--listen", f"127.0.0.1:{mport}"])
    if not wait_http(mock + "/v1/models", 20):
        sys.exit("the mock did not start")
    results = []
    print("peers: the load generator, the upstream mock and each gateway share this "
          f"{os.cpu_count()}-core machine; {DURATION} s per load", file=sys.stderr)

    # straight to the mock
    results.append(measure("direct (mock)", mock, "bench-small", None))

    # Tollway
    port = free_port()
    cfg = os.path.join(TMP, "tollway.yaml")
    with open(cfg, "w") as f:
        f.write(f"""server: {{ master_key: sk-bench }}
storage: {{ url: "sqlite://{TMP}/tollway.db" }}
providers:
  up: {{ kind: openai-compatible, base_url: "{mock}/v1", api_key: none }}
models:
  small: {{ deployments: [{{ provider: up, model: bench-small }}] }}
  stream200: {{ deployments: [{{ provider: up, model: "{STREAM_MODEL}" }}] }}
  hold: {{ deployments: [{{ provider: up, model: "{HOLD_MODEL}" }}] }}
""")
    p = start("tollway", [os.path.join(REL, "tollway"), "serve", "--config", cfg, "--listen",
                          f"127.0.0.1:{port}", "--log-format", "json"],
              env=dict(os.environ, RUST_LOG="warn"))
    results.append(measure("tollway", f"http://127.0.0.1:{port}", "small", p.pid, key="sk-bench",
                           stream_model="stream200", hold_model="hold"))
    stop(p)

    # nginx
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if "nginx" not in ONLY:
        pass
    elif nginx:
        port = free_port()
        ndir = os.path.join(TMP, "nginx")
        os.makedirs(os.path.join(ndir, "logs"), exist_ok=True)
        with open(os.path.join(ndir, "nginx.conf"), "w") as f:
            f.write(f"""worker_processes auto;
error_log {ndir}/logs/error.log warn;
pid {ndir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {ndir}/body; proxy_temp_path {ndir}/proxy;
  fastcgi_temp_path {ndir}/fcgi; uwsgi_temp_path {ndir}/uwsgi; scgi_temp_path {ndir}/scgi;
  upstream mock {{ server 127.0.0.1:{mport}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
""")
        p = start("nginx", [nginx, "-p", ndir, "-c", os.path.join(ndir, "nginx.conf"), "-g", "daemon off;"])
        results.append(measure("nginx proxy_pass", f"http://127.0.0.1:{port}", "bench-small", p.pid))
        stop(p)
    else:
        results.append({"name": "nginx proxy_pass", "skipped": "nginx is not installed (bench/peers/run.sh installs it)"})

    # LiteLLM
    litellm = os.path.join(PEERS, "litellm", "bin", "litellm")
    if "litellm" not in ONLY:
        pass
    elif os.path.exists(litellm):
        port = free_port()
        lcfg = os.path.join(TMP, "litellm.yaml")
        with open(lcfg, "w") as f:
            f.write(f"""model_list:
  - model_name: small
    litellm_params: {{ model: openai/bench-small, api_base: "{mock}/v1", api_key: none }}
  - model_name: stream200
    litellm_params: {{ model: "openai/{STREAM_MODEL}", api_base: "{mock}/v1", api_key: none }}
  - model_name: hold
    litellm_params: {{ model: "openai/{HOLD_MODEL}", api_base: "{mock}/v1", api_key: none }}
litellm_settings: {{ telemetry: false, drop_params: true }}
""")
        workers = str(os.cpu_count() or 2)
        lkey = "sk-" + os.urandom(32).hex()  # it refuses to start without a strong master key
        p = start("litellm", [litellm, "--config", lcfg, "--host", "127.0.0.1", "--port", str(port),
                              "--num_workers", workers],
                  env=dict(os.environ, LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False",
                           LITELLM_MASTER_KEY=lkey))
        r = measure(f"LiteLLM proxy ({workers} workers)", f"http://127.0.0.1:{port}", "small", p.pid,
                    key=lkey, stream_model="stream200", hold_model="hold")
        results.append(r)
        stop(p)
    else:
        results.append({"name": "LiteLLM proxy", "skipped": "not installed in bench/.peers/litellm (bench/peers/run.sh installs it)"})

    # Portkey
    pk = os.path.join(PEERS, "portkey", "node_modules", "@portkey-ai", "gateway")
    entry = None
    for cand in ("build/start-server.js", "dist/start-server.js", "build/index.js"):
        if os.path.exists(os.path.join(pk, cand)):
            entry = os.path.join(pk, cand)
            break
    if "portkey" not in ONLY:
        pass
    elif entry:
        port = free_port()
        p = start("portkey", ["node", entry, f"--port={port}", "--headless"], cwd=TMP,
                  env=dict(os.environ, NODE_ENV="production"))
        extra = ("x-portkey-provider: openai", f"x-portkey-custom-host: {mock}/v1",
                 "authorization: Bearer none")
        results.append(measure("Portkey gateway", f"http://127.0.0.1:{port}", "bench-small", p.pid, extra))
        stop(p)
    else:
        results.append({"name": "Portkey gateway", "skipped": "not installed in bench/.peers/portkey (bench/peers/run.sh installs it)"})

    for p in procs:
        stop(p)
    report(results)


def report(results):
    direct = results[0]
    tw = next((r for r in results if r["name"] == "tollway"), None)

    def added(r, load, q):
        try:
            return r[load][q] - direct[load][q]
        except Exception:
            return None

    def per_chunk(r, q):
        a = added(r, "stream200", q)
        return None if a is None else a / STREAM_TOKENS

    def ratio(a, b):
        return f"{a / b:.2f}" if a is not None and b else "–"

    fmt = lambda v: "–" if v is None else (f"{v:.0f}" if isinstance(v, (int, float)) else str(v))
    fmt1 = lambda v: "–" if v is None else f"{v:.1f}"
    live = [r for r in results if "skipped" not in r]
    lines = ["# Peers — " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "",
             f"{os.cpu_count()} cores; **the load generator, the upstream mock and the gateway under "
             "test share this machine** (one gateway at a time). Latency in µs from each request's "
             "scheduled start (open loop); *added* = through the gateway − straight to the mock, "
             f"same percentile; {DURATION} s per load. Before each load the runner waits until the "
             "gateway is idle again (\"settled\" column: the longest wait), so a peer still working "
             "off an overload does not spoil the next figure. Ratios are the peer's figure over "
             "Tollway's from this run.", "",
             "## Non-streaming small chat", "",
             "| path | added p50 @500 | added p99 @500 | added p50 @1k | added p99 @1k | errors @1k | "
             "max RPS (64 conn.) | RSS idle MB | settled (s) | added p50 @1k ÷ Tollway | max RPS ÷ Tollway |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['name']} | skipped: {r['skipped']} | | | | | | | | | |")
            continue
        a50, a99 = added(r, "rps500", "p50"), added(r, "rps500", "p99")
        b50, b99 = added(r, "rps1000", "p50"), added(r, "rps1000", "p99")
        rps = r["saturation"]["rps"]
        ratio_lat = ratio_rps = "–"
        if tw and "skipped" not in tw and r is not direct:
            ratio_lat = ratio(b50, added(tw, "rps1000", "p50"))
            ratio_rps = ratio(rps, tw["saturation"]["rps"])
        if r is direct:
            a50, a99, b50, b99 = (r["rps500"]["p50"], r["rps500"]["p99"], r["rps1000"]["p50"],
                                  r["rps1000"]["p99"])
        settled = max((v for v in r.get("settle_s", {}).values()), default=None)
        lines.append(f"| {r['name']}{' (absolute)' if r is direct else ''} | {fmt(a50)} | {fmt(a99)} | "
                     f"{fmt(b50)} | {fmt(b99)} | {fmt(r['rps1000']['errors'])} | {fmt(rps)} | "
                     f"{fmt1(r.get('rss_idle_mb'))} | {fmt1(settled)} | {ratio_lat} | {ratio_rps} |")
    lines += ["", f"## Streaming {STREAM_TOKENS} chunks, open loop 100 streams/s", "",
              "Per chunk = (stream duration through the gateway − straight to the mock) / "
              f"{STREAM_TOKENS}, same percentile; events = SSE events a client received per stream.",
              "", "| path | added TTFB p50 | added TTFB p99 | per-chunk added p50 | "
              "per-chunk added p99 | events per stream | ok | errors | per-chunk p99 ÷ Tollway |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    kinds = lambda d: ", ".join(f"{k} {v}" for k, v in (d.get("error_kinds") or {}).items())
    for r in live:
        s = r["stream200"]
        t50, t99 = added(r, "stream200", "ttfb_p50"), added(r, "stream200", "ttfb_p99")
        c50, c99 = per_chunk(r, "duration_p50"), per_chunk(r, "duration_p99")
        if r is direct:
            t50, t99 = s.get("ttfb_p50"), s.get("ttfb_p99")
            c50 = c99 = None
        rc = ratio(c99, per_chunk(tw, "duration_p99")) if tw and r is not direct else "–"
        lines.append(f"| {r['name']}{' (absolute TTFB)' if r is direct else ''} | {fmt(t50)} | "
                     f"{fmt(t99)} | {fmt1(c50)} | {fmt1(c99)} | {fmt1(s.get('events_mean'))} | "
                     f"{fmt(s.get('ok'))} | {fmt(s.get('errors'))} {kinds(s)} | {rc} |")
    lines += ["", f"## {HOLD_STREAMS} slow streams held open at once", "",
              f"{HOLD_STREAMS} streams of {HOLD_TOKENS} chunks at 100 ms each (~{HOLD_TOKENS // 10} s), "
              f"opened at {HOLD_RATE}/s; memory of the gateway and its worker processes, sampled every "
              "100 ms.", "",
              "| path | streams open at once (max) | ok | errors | RSS peak MB | RSS peak ÷ Tollway |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in live:
        if r is direct:
            continue
        h = r["hold"]
        rr = ratio(h.get("rss_peak_mb"), tw["hold"].get("rss_peak_mb")) if tw and "hold" in tw else "–"
        lines.append(f"| {r['name']} | {fmt(h.get('max_in_flight'))} | {fmt(h.get('ok'))} | "
                     f"{fmt(h.get('errors'))} {kinds(h)} | {fmt1(h.get('rss_peak_mb'))} | {rr} |")
    out = os.path.join(ROOT, "bench", "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "peers.json"), "w") as f:
        json.dump(results, f, indent=2)
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "peers.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in procs:
            stop(p)
