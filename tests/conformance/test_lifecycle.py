"""The gateway shuts down cleanly on SIGTERM (exit code 0), in a process of its own."""

from __future__ import annotations

import httpx

from conftest import start_gateway
from helpers import oai_headers


def test_sigterm_exits_zero(config_path, tmp_path, mock):
    proc, url = start_gateway(config_path, tmp_path, name="tollway-sigterm")
    try:
        r = httpx.post(
            f"{url}/v1/chat/completions",
            headers=oai_headers(),
            json={"model": "gpt", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        assert r.status_code == 200, r.text
    finally:
        code = proc.stop(timeout=10)
    assert code == 0, f"gateway exited with {code} on SIGTERM; logs:\n{proc.logs()[-3000:]}"


def test_sigterm_finishes_in_flight_stream(config_path, tmp_path, mock):
    """A stream in flight when SIGTERM arrives is allowed to finish (graceful drain), then exit 0."""
    import signal
    import threading

    proc, url = start_gateway(config_path, tmp_path, name="tollway-drain")
    body = {"model": "gpt", "stream": True, "messages": [{"role": "user", "content": "hi [mock tpt_ms=100 tokens=10]"}]}
    result: dict = {}
    try:
        with httpx.stream("POST", f"{url}/v1/chat/completions", headers=oai_headers(), json=body, timeout=15) as r:
            assert r.status_code == 200
            it = r.iter_lines()
            first = next(it)
            assert first.startswith("data:")
            proc.popen.send_signal(signal.SIGTERM)
            rest = list(it)
            result["done"] = any(line.strip() == "data: [DONE]" for line in rest)
    finally:
        code = proc.stop(timeout=10)
    assert result.get("done"), "the in-flight stream was cut on SIGTERM"
    assert code == 0
