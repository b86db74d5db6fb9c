"""Shared helpers for the conformance tests (imported as a plain module; pytest puts this dir on sys.path)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import httpx

MASTER_KEY = "sk-test-master-0001"
UPSTREAM_OPENAI_KEY = "sk-upstream-openai-secret"
UPSTREAM_ANTHROPIC_KEY = "sk-upstream-anthropic-secret"
# A Bedrock account's access key id, and the secret tollway-mock checks every SigV4 signature with
# (its MOCK_AWS_SECRET): the secret never leaves the gateway, only signatures made with it.
UPSTREAM_AWS_KEY_ID = "AKIDCONFORMANCE"
UPSTREAM_AWS_SECRET = "tollway-mock-secret"
UPSTREAM_GEMINI_KEY = "gemini-upstream-secret-key"
UPSTREAM_AZURE_KEY = "azure-upstream-secret-key"
# the simulated Google service account (its key signs the JWTs the mock's token endpoint checks)
GCP_CLIENT_EMAIL = "tollway-mock@tollway-test.iam.gserviceaccount.com"
GCP_KEY_PEM = (Path(__file__).resolve().parents[2] / "crates/tollway-mock/src/gcp-test-key.pem").read_text()
# a line from the middle of the private key: never in anything a client receives
GCP_KEY_LINE = GCP_KEY_PEM.strip().splitlines()[5]
# a virtual key declared in the config file (`keys:`)
FILE_KEY = "sk-file-conformance-key-0001abcd"
SECRETS = (
    MASTER_KEY,
    FILE_KEY,
    UPSTREAM_OPENAI_KEY,
    UPSTREAM_ANTHROPIC_KEY,
    UPSTREAM_AWS_SECRET,
    UPSTREAM_GEMINI_KEY,
    UPSTREAM_AZURE_KEY,
    GCP_KEY_LINE,
)

CONFIGURED_MODELS = ("gpt", "claude", "claude-noimg", "flaky", "hangs")

# Public model names -> the wire format of their upstream.
UPSTREAM_KIND = {"gpt": "openai", "claude": "anthropic"}
# x-tollway-model values: provider/upstream-model.
DEPLOYMENT = {"gpt": "oai/gpt-4.1", "claude": "ant/claude-sonnet-4-5"}
PROVIDER = {"gpt": ("oai", "openai-compatible", "openai"), "claude": ("ant", "anthropic")}
MODELS = ["gpt", "claude"]

ANTHROPIC_VERSION = "2023-06-01"

# A 1x1 transparent PNG.
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "City name"}},
    "required": ["city"],
}
OAI_WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather in a city", "parameters": WEATHER_SCHEMA},
}
ANT_WEATHER_TOOL = {"name": "get_weather", "description": "Current weather in a city", "input_schema": WEATHER_SCHEMA}


def oai_headers(key: str = MASTER_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "content-type": "application/json"}


def ant_headers(key: str = MASTER_KEY) -> dict[str, str]:
    return {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}


# ---------------------------------------------------------------------------------------------
# Upstream body inspection
# ---------------------------------------------------------------------------------------------


def text_of(content: Any) -> str:
    """Concatenated text of an OpenAI or Anthropic message content (string or list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    out = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text":
            out.append(part.get("text", ""))
    return "".join(out)


def parts(content: Any) -> list[dict]:
    if isinstance(content, list):
        return [p for p in content if isinstance(p, dict)]
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return []


# ---------------------------------------------------------------------------------------------
# Error shapes
# ---------------------------------------------------------------------------------------------


def assert_openai_error(resp: httpx.Response, status: int, *needles: str | tuple[str, ...]) -> dict:
    """The response is an OpenAI-shaped error with this status whose message names each needle.

    A needle that is a tuple is satisfied by any of its members (case-insensitive)."""
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.text[:500]}"
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON: {resp.text[:500]!r}") from None
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"not OpenAI error shape: {body}"
    err = body["error"]
    for k in ("message", "type", "param", "code"):
        assert k in err, f"OpenAI error lacks {k!r}: {body}"
    assert isinstance(err["message"], str) and err["message"], body
    assert isinstance(err["type"], str) and err["type"], body
    assert_names(err["message"], needles)
    return err


def assert_anthropic_error(resp: httpx.Response, status: int, *needles: str | tuple[str, ...], etype: str | None = None) -> dict:
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.text[:500]}"
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON: {resp.text[:500]!r}") from None
    assert isinstance(body, dict) and body.get("type") == "error", f"not Anthropic error shape: {body}"
    err = body.get("error")
    assert isinstance(err, dict), body
    assert isinstance(err.get("type"), str) and err["type"], body
    assert isinstance(err.get("message"), str) and err["message"], body
    if etype is not None:
        assert err["type"] == etype, f"Anthropic error type {err['type']!r}, expected {etype!r}: {body}"
    assert_names(err["message"], needles)
    return err


def assert_names(message: str, needles: Iterable[str | tuple[str, ...]]) -> None:
    low = message.lower()
    for n in needles:
        alts = n if isinstance(n, tuple) else (n,)
        assert any(a.lower() in low for a in alts), f"error message does not name {' / '.join(alts)!r}: {message!r}"


# ---------------------------------------------------------------------------------------------
# SSE
# ---------------------------------------------------------------------------------------------


def parse_sse(raw: str) -> list[tuple[str | None, str]]:
    """Split an SSE body into (event, data) pairs; comments are dropped."""
    events: list[tuple[str | None, str]] = []
    ev: str | None = None
    data: list[str] = []
    for line in raw.replace("\r\n", "\n").split("\n"):
        if line == "":
            if data or ev is not None:
                events.append((ev, "\n".join(data)))
            ev, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            ev = value
        elif name == "data":
            data.append(value)
    if data or ev is not None:
        events.append((ev, "\n".join(data)))
    return events


def sse_json(events: list[tuple[str | None, str]]) -> list[tuple[str | None, Any]]:
    out = []
    for ev, data in events:
        if data == "[DONE]":
            out.append((ev, "[DONE]"))
            continue
        try:
            out.append((ev, json.loads(data)))
        except ValueError:
            out.append((ev, data))
    return out
