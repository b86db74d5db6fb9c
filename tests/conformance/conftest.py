"""Session fixtures for the Tollway conformance suite.

The suite starts two processes for the whole session:

* ``tollway-mock --listen 127.0.0.1:0`` — the upstream simulator (OpenAI and Anthropic wire formats);
* ``tollway serve --config <tmp>/tollway.yaml --listen 127.0.0.1:0`` — the gateway, configured with
  providers pointing at the mock.

Both print ``... listening on http://127.0.0.1:PORT`` on stdout; we parse that, wait for the gateway's
``/readyz`` and hand out clients of the official SDKs pointed at the gateway.  Binaries come from
``target/debug`` unless ``TOLLWAY_BIN_DIR`` says otherwise.

Every response the SDK clients receive (headers and body, streamed bodies included, without
buffering) is recorded, and so is every upstream request the mock saw; ``test_zz_secrets.py`` scans
them all at the end of the session.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import anthropic
import httpx
import httpx2
import openai
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
from helpers import (
    FILE_KEY,
    GCP_CLIENT_EMAIL,
    GCP_KEY_PEM,
    MASTER_KEY,
    UPSTREAM_ANTHROPIC_KEY,
    UPSTREAM_AWS_KEY_ID,
    UPSTREAM_AWS_SECRET,
    UPSTREAM_AZURE_KEY,
    UPSTREAM_GEMINI_KEY,
    UPSTREAM_OPENAI_KEY,
)

START_TIMEOUT_S = float(os.environ.get("TOLLWAY_TEST_START_TIMEOUT", "30"))
STOP_TIMEOUT_S = 10.0

LISTEN_RE = re.compile(r"listening on (http://[0-9.]+:\d+)")

CONFIG_TEMPLATE = """\
server:
  master_key: {master}
  max_body_bytes: 1048576
providers:
  oai: {{ kind: openai-compatible, base_url: "{mock}/v1", api_key: {oai_key} }}
  ant: {{ kind: anthropic, base_url: "{mock}", api_key: {ant_key} }}
  aws: {{ kind: bedrock, region: us-east-1, base_url: "{mock}", access_key_id: {aws_key_id}, secret_access_key: {aws_secret} }}
  gem: {{ kind: gemini, base_url: "{mock}/v1beta", api_key: {gemini_key} }}
  vx: {{ kind: vertex, location: us-central1, base_url: "{mock}", credentials: "{gcp_key_file}" }}
  az: {{ kind: azure, base_url: "{mock}", api_key: {azure_key}, api_version: "2024-10-21" }}
  oai-fast-timeout: {{ kind: openai-compatible, base_url: "{mock}/v1", api_key: x, timeouts: {{ first_byte_ms: 500 }} }}
# One gateway serves the whole session and these tests inject upstream faults on purpose: cooldowns
# (tested in the Rust routing suite) are off, so that one test's 429 does not answer the next.
models:
  gpt: {{ circuit_breaker: false, deployments: [{{ provider: oai, model: gpt-4.1 }}] }}
  claude: {{ circuit_breaker: false, deployments: [{{ provider: ant, model: claude-sonnet-4-5 }}] }}
  bedrock: {{ circuit_breaker: false, deployments: [{{ provider: aws, model: "anthropic.claude-sonnet-4-5-20250929-v1:0" }}] }}
  titan-embed: {{ circuit_breaker: false, deployments: [{{ provider: aws, model: "amazon.titan-embed-text-v2:0" }}] }}
  cohere-embed: {{ circuit_breaker: false, deployments: [{{ provider: aws, model: cohere.embed-english-v3 }}] }}
  gemini: {{ circuit_breaker: false, deployments: [{{ provider: gem, model: gemini-2.5-flash }}] }}
  vertex-gemini: {{ circuit_breaker: false, deployments: [{{ provider: vx, model: gemini-2.5-flash }}] }}
  vertex-claude: {{ circuit_breaker: false, deployments: [{{ provider: vx, model: "claude-sonnet-4-5@20250929" }}] }}
  azure: {{ circuit_breaker: false, deployments: [{{ provider: az, model: my-gpt-4o }}] }}
  claude-noimg: {{ circuit_breaker: false, deployments: [{{ provider: ant, model: claude-haiku, capabilities: {{ vision: false }} }}] }}
  flaky: {{ circuit_breaker: false, deployments: [{{ provider: oai, model: "gpt-down?fault=500" }}, {{ provider: ant, model: claude-backup }}] }}
  hangs: {{ circuit_breaker: false, deployments: [{{ provider: oai-fast-timeout, model: "gpt-hang?fault=hang" }}] }}
  cached: {{ cache: true, circuit_breaker: false, deployments: [{{ provider: oai, model: gpt-4.1 }}] }}
# Only the `cached` model, and requests that send a cache header, use the response cache.
cache: {{ mode: opt-in }}
routers:
  auto: {{ kind: learned, candidates: [claude, gpt], strong_share: 0.5 }}
keys:
  file-key: {{ key: "{file_key}", team: conformance, models: [gpt] }}
"""


# --------------------------------------------------------------------------------------------
# Recording of everything the clients received (for the secrets scan)
# --------------------------------------------------------------------------------------------


@dataclass
class Recorded:
    url: str
    status: int
    headers: list[tuple[str, str]]
    body: bytearray = field(default_factory=bytearray)

    def text(self) -> str:
        hdrs = "\n".join(f"{k}: {v}" for k, v in self.headers)
        return f"{self.status} {self.url}\n{hdrs}\n\n{self.body.decode('utf-8', 'replace')}"


RECORDED: list[Recorded] = []
UPSTREAM_LOG: list[dict] = []


def _make_recording_transport(mod: Any) -> Any:
    """A transport for ``httpx``-like module ``mod`` (httpx or httpx2) that passes requests through
    and tees each response body into RECORDED as the client reads it (no buffering)."""

    class TeeStream(mod.SyncByteStream):
        def __init__(self, inner: Any, rec: Recorded) -> None:
            self._inner = inner
            self._rec = rec

        def __iter__(self) -> Iterator[bytes]:
            for chunk in self._inner:
                self._rec.body.extend(chunk)
                yield chunk

        def close(self) -> None:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()

    class RecordingTransport(mod.BaseTransport):
        def __init__(self) -> None:
            self._inner = mod.HTTPTransport()

        def handle_request(self, request: Any) -> Any:
            resp = self._inner.handle_request(request)
            rec = Recorded(str(request.url), resp.status_code, list(resp.headers.items()))
            RECORDED.append(rec)
            return mod.Response(
                status_code=resp.status_code,
                headers=resp.headers,
                stream=TeeStream(resp.stream, rec),
                extensions=resp.extensions,
            )

        def close(self) -> None:
            self._inner.close()

    return RecordingTransport()


# --------------------------------------------------------------------------------------------
# Process management
# --------------------------------------------------------------------------------------------


def bin_dir() -> Path:
    d = os.environ.get("TOLLWAY_BIN_DIR")
    return Path(d) if d else REPO_ROOT / "target" / "debug"


class Proc:
    """A child process whose stdout/stderr are drained into files by background threads."""

    def __init__(self, name: str, argv: list[str], logdir: Path) -> None:
        self.name = name
        self.argv = argv
        self.stdout_path = logdir / f"{name}.stdout.log"
        self.stderr_path = logdir / f"{name}.stderr.log"
        exe = Path(argv[0])
        if not exe.exists():
            pytest.exit(
                f"{exe} does not exist: run `cargo build --bins` first (or set TOLLWAY_BIN_DIR)",
                returncode=3,
            )
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=str(logdir),
        )
        self._lines: "queue.Queue[str]" = queue.Queue()
        self._threads = [
            threading.Thread(target=self._drain, args=(self.popen.stdout, self.stdout_path, True), daemon=True),
            threading.Thread(target=self._drain, args=(self.popen.stderr, self.stderr_path, False), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _drain(self, pipe: Any, path: Path, to_queue: bool) -> None:
        with open(path, "wb") as f:
            for line in iter(pipe.readline, b""):
                f.write(line)
                f.flush()
                if to_queue:
                    self._lines.put(line.decode("utf-8", "replace"))

    def wait_for_url(self, timeout: float = START_TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None and self._lines.empty():
                break
            try:
                line = self._lines.get(timeout=0.1)
            except queue.Empty:
                continue
            m = LISTEN_RE.search(line)
            if m:
                return m.group(1)
        self.stop()
        raise RuntimeError(
            f"{self.name} did not print its listening address within {timeout}s "
            f"(exit={self.popen.poll()}); stderr:\n{self.logs()[-4000:]}"
        )

    def logs(self) -> str:
        self.flush_logs()
        out = ""
        for p in (self.stdout_path, self.stderr_path):
            if p.exists():
                out += p.read_text("utf-8", "replace")
        return out

    def flush_logs(self, timeout: float = 0.0) -> None:
        if self.popen.poll() is not None:
            for t in self._threads:
                t.join(timeout=timeout or 2.0)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds. Returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        self.flush_logs()
        return self.popen.returncode


def write_config(tmpdir: Path, mock_url: str) -> Path:
    path = tmpdir / "tollway.yaml"
    path.write_text(
        CONFIG_TEMPLATE.format(
            master=MASTER_KEY,
            mock=mock_url,
            oai_key=UPSTREAM_OPENAI_KEY,
            ant_key=UPSTREAM_ANTHROPIC_KEY,
            aws_key_id=UPSTREAM_AWS_KEY_ID,
            aws_secret=UPSTREAM_AWS_SECRET,
            gemini_key=UPSTREAM_GEMINI_KEY,
            azure_key=UPSTREAM_AZURE_KEY,
            file_key=FILE_KEY,
            gcp_key_file=_gcp_key_file(tmpdir, mock_url),
        )
    )
    return path


def _gcp_key_file(tmpdir: Path, mock_url: str) -> Path:
    """A service account key file, as Google's console makes them, whose token endpoint is the
    mock's."""
    key = {
        "type": "service_account",
        "project_id": "tollway-conformance",
        "private_key_id": "0123456789abcdef",
        "private_key": GCP_KEY_PEM,
        "client_email": GCP_CLIENT_EMAIL,
        "client_id": "100000000000000000001",
        "token_uri": f"{mock_url}/token",
    }
    path = tmpdir / "vertex-sa.json"
    path.write_text(json.dumps(key))
    return path


def start_gateway(config: Path, logdir: Path, name: str = "tollway") -> tuple[Proc, str]:
    proc = Proc(
        name,
        [str(bin_dir() / "tollway"), "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
        logdir,
    )
    url = proc.wait_for_url()
    deadline = time.monotonic() + START_TIMEOUT_S
    last: Any = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/readyz", timeout=2)
            if r.status_code == 200:
                return proc, url
            last = r.status_code
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.1)
    proc.stop()
    raise RuntimeError(f"gateway /readyz never returned 200 (last: {last!r}); logs:\n{proc.logs()[-4000:]}")


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


_WORKDIR: list[Path] = []


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tollway")
    _WORKDIR.append(d)
    return d


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if _WORKDIR and exitstatus != 0:
        terminalreporter.write_line(f"gateway/mock config and logs: {_WORKDIR[0]}")


@pytest.fixture(scope="session")
def mock_proc(workdir: Path) -> Iterator[Proc]:
    proc = Proc("tollway-mock", [str(bin_dir() / "tollway-mock"), "--listen", "127.0.0.1:0"], workdir)
    proc.url = proc.wait_for_url()  # type: ignore[attr-defined]
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def mock_url(mock_proc: Proc) -> str:
    return mock_proc.url  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def config_path(workdir: Path, mock_url: str) -> Path:
    return write_config(workdir, mock_url)


@pytest.fixture(scope="session")
def gateway_proc(config_path: Path, workdir: Path) -> Iterator[Proc]:
    proc, url = start_gateway(config_path, workdir)
    proc.url = url  # type: ignore[attr-defined]
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def gw(gateway_proc: Proc) -> str:
    """Base URL of the gateway under test."""
    return gateway_proc.url  # type: ignore[attr-defined]


class Mock:
    """Control and introspection of the upstream simulator."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)

    def reset(self) -> None:
        self.http.post("/_mock/reset").raise_for_status()

    def stats(self) -> dict:
        r = self.http.get("/_mock/stats")
        r.raise_for_status()
        return r.json()

    def requests(self) -> list[dict]:
        r = self.http.get("/_mock/requests")
        r.raise_for_status()
        data = r.json()
        if isinstance(data, dict):  # tolerate {"requests": [...]}
            data = data.get("requests", data.get("data", []))
        out = []
        for item in data:
            item = dict(item)
            body = item.get("body")
            if isinstance(body, str):
                try:
                    item["body"] = json.loads(body)
                except ValueError:
                    pass
            hdrs = item.get("headers") or {}
            if isinstance(hdrs, list):  # [[k, v], ...] or [{"name":..,"value":..}]
                norm: dict[str, str] = {}
                for h in hdrs:
                    if isinstance(h, dict):
                        norm[str(h.get("name", "")).lower()] = str(h.get("value", ""))
                    else:
                        norm[str(h[0]).lower()] = str(h[1])
                hdrs = norm
            item["headers"] = {str(k).lower(): v for k, v in hdrs.items()}
            out.append(item)
        return out

    def upstream(self, kind: str) -> list[dict]:
        """Requests the mock received for one wire format: 'openai', 'anthropic', 'bedrock',
        'gemini' (Gemini API and Vertex AI's Gemini), 'vertex-claude' or 'azure'."""
        paths = [(r, str(r.get("path", ""))) for r in self.requests()]
        if kind == "gemini":
            return [r for r, p in paths if ":generateContent" in p or ":streamGenerateContent" in p]
        if kind == "vertex-claude":
            return [r for r, p in paths if p.split("?")[0].endswith((":rawPredict", ":streamRawPredict"))]
        if kind == "azure":
            return [r for r, p in paths if p.startswith("/openai/")]
        if kind == "bedrock":
            return [
                r
                for r in self.requests()
                if str(r.get("path", "")).startswith("/model/")
                and str(r.get("path", "")).endswith(("/converse", "/converse-stream"))
            ]
        suffix = "/chat/completions" if kind == "openai" else "/messages"
        return [r for r in self.requests() if str(r.get("path", "")).split("?")[0].endswith(suffix)]

    def last_body(self, kind: str) -> dict:
        reqs = self.upstream(kind)
        assert reqs, f"the mock received no {kind}-format request; it saw: {[r.get('path') for r in self.requests()]}"
        body = reqs[-1]["body"]
        assert isinstance(body, dict), f"upstream body is not JSON: {body!r}"
        return body

    def wait_stat(self, key: str, target: int, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        s = self.stats()
        while time.monotonic() < deadline:
            s = self.stats()
            if s.get(key, 0) >= target:
                return s
            time.sleep(0.05)
        return s


@pytest.fixture(scope="session")
def mock_ctl(mock_url: str) -> Iterator[Mock]:
    m = Mock(mock_url)
    yield m
    m.http.close()


@pytest.fixture
def mock(mock_ctl: Mock, gw: str) -> Iterator[Mock]:
    """Per test: a reset mock; afterwards its request log is kept for the secrets scan."""
    mock_ctl.reset()
    yield mock_ctl
    try:
        UPSTREAM_LOG.extend(mock_ctl.requests())
    except Exception:
        pass


def _http_client() -> httpx2.Client:
    return httpx2.Client(transport=_make_recording_transport(httpx2), timeout=httpx2.Timeout(30.0, connect=5.0))


@pytest.fixture(scope="session")
def oai(gw: str) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=f"{gw}/v1", api_key=MASTER_KEY, max_retries=0, http_client=_http_client())
    yield c
    c.close()


@pytest.fixture(scope="session")
def ant(gw: str) -> Iterator[anthropic.Anthropic]:
    c = anthropic.Anthropic(base_url=gw, api_key=MASTER_KEY, max_retries=0, http_client=_http_client())
    yield c
    c.close()


@pytest.fixture(scope="session")
def raw(gw: str) -> Iterator[httpx.Client]:
    """A plain httpx client for the gateway; responses are recorded for the secrets scan."""
    c = httpx.Client(base_url=gw, timeout=30, transport=_make_recording_transport(httpx))
    yield c
    c.close()


@pytest.fixture(autouse=True)
def _gateway_alive(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "gateway_proc" in request.fixturenames:
        proc: Proc = request.getfixturevalue("gateway_proc")
        assert proc.popen.poll() is None, f"the gateway died during this test:\n{proc.logs()[-4000:]}"
