"""(h) errors through each SDK, (i) bad input over raw HTTP."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from helpers import (
    MODELS,
    ant_headers,
    assert_anthropic_error,
    assert_names,
    assert_openai_error,
    oai_headers,
    parse_sse,
    sse_json,
)

# ------------------------------------------------------------------ (h) errors through the SDKs


def test_wrong_key_openai_sdk(gw, mock):
    c = openai.OpenAI(base_url=f"{gw}/v1", api_key="sk-wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as ei:
        c.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
    assert ei.value.status_code == 401
    assert "sk-wrong-key" not in str(ei.value.body), "the client's key is echoed back"
    assert mock.stats()["requests"] == 0


def test_wrong_key_anthropic_sdk(gw, mock):
    c = anthropic.Anthropic(base_url=gw, api_key="sk-wrong-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as ei:
        c.messages.create(model="claude", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert ei.value.status_code == 401
    assert "sk-wrong-key" not in str(ei.value.body)
    assert mock.stats()["requests"] == 0


def test_unknown_model_openai_sdk(oai, mock):
    with pytest.raises(openai.NotFoundError) as ei:
        oai.chat.completions.create(model="no-such-model-xyz", messages=[{"role": "user", "content": "hi"}])
    assert "no-such-model-xyz" in ei.value.message


def test_unknown_model_anthropic_sdk(ant, mock):
    with pytest.raises(anthropic.NotFoundError) as ei:
        ant.messages.create(model="no-such-model-xyz", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert "no-such-model-xyz" in ei.value.message


@pytest.mark.parametrize("model", MODELS)
def test_rate_limit_openai_sdk(oai, mock, model):
    with pytest.raises(openai.RateLimitError) as ei:
        oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi [mock fault=429 retry_after=2]"}])
    assert ei.value.status_code == 429
    assert ei.value.response.headers.get("retry-after") == "2"


@pytest.mark.parametrize("model", MODELS)
def test_rate_limit_anthropic_sdk(ant, mock, model):
    with pytest.raises(anthropic.RateLimitError) as ei:
        ant.messages.create(model=model, max_tokens=10, messages=[{"role": "user", "content": "hi [mock fault=429 retry_after=2]"}])
    assert ei.value.status_code == 429
    assert ei.value.response.headers.get("retry-after") == "2"
    assert ei.value.body["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize("model", MODELS)
def test_upstream_500_is_502(oai, ant, mock, model):
    with pytest.raises(openai.InternalServerError) as ei:
        oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi [mock fault=500]"}])
    assert ei.value.status_code == 502
    with pytest.raises(anthropic.InternalServerError) as ei2:
        ant.messages.create(model=model, max_tokens=10, messages=[{"role": "user", "content": "hi [mock fault=500]"}])
    assert ei2.value.status_code == 502


def test_upstream_hang_is_504(oai, ant, mock):
    with pytest.raises(openai.InternalServerError) as ei:
        oai.chat.completions.create(model="hangs", messages=[{"role": "user", "content": "hi"}])
    assert ei.value.status_code == 504
    with pytest.raises(anthropic.InternalServerError) as ei2:
        ant.messages.create(model="hangs", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert ei2.value.status_code == 504


def test_upstream_hang_is_504_when_streaming(oai, mock):
    """Nothing was sent yet when the first-byte timeout fires, so a stream still gets a 504 status."""
    with pytest.raises(openai.InternalServerError) as ei:
        for _ in oai.chat.completions.create(model="hangs", messages=[{"role": "user", "content": "hi"}], stream=True):
            pass
    assert ei.value.status_code == 504


MID_STREAM_FAULTS = ["fault=error_event", "fault=reset after=3"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("fault", MID_STREAM_FAULTS)
def test_mid_stream_failure_openai_sdk(oai, mock, model, fault):
    content = f"Tell me a story. [mock tokens=20 {fault}]"
    # the stream starts fine (status 200): the failure comes after the first byte
    stream = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], stream=True)
    completed = False
    with pytest.raises(Exception) as ei:
        for ch in stream:
            for c in ch.choices:
                if c.finish_reason:
                    completed = True
    stream.close()
    assert not completed, "a failed stream reported a finish_reason as if it had completed"
    assert isinstance(ei.value, openai.APIError), f"SDK raised {type(ei.value).__name__}, not an APIError: {ei.value!r}"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("fault", MID_STREAM_FAULTS)
def test_mid_stream_failure_anthropic_sdk(ant, mock, model, fault):
    content = f"Tell me a story. [mock tokens=20 {fault}]"
    with ant.messages.stream(model=model, max_tokens=200, messages=[{"role": "user", "content": content}]) as s:
        # entering the context means the response started with status 200
        with pytest.raises(Exception) as ei:
            for _ in s:
                pass
    assert isinstance(ei.value, anthropic.APIError), f"SDK raised {type(ei.value).__name__}, not an APIError: {ei.value!r}"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("fault", MID_STREAM_FAULTS)
def test_mid_stream_failure_wire_shape(raw, mock, model, fault):
    """The stream's last event is an error in the caller's shape (and nothing claims success)."""
    content = f"Tell me a story. [mock tokens=20 {fault}]"
    body = {"model": model, "max_tokens": 200, "stream": True, "messages": [{"role": "user", "content": content}]}
    with raw.stream("POST", "/v1/messages", headers=ant_headers(), json=body) as r:
        assert r.status_code == 200
        text = r.read().decode()
    events = sse_json(parse_sse(text))
    names = [e for e, _ in events]
    assert "message_start" in names
    assert "message_stop" not in names, names
    assert names[-1] == "error", names
    err = events[-1][1]
    assert err["type"] == "error" and err["error"]["type"] and err["error"]["message"], err

    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": content}]}
    with raw.stream("POST", "/v1/chat/completions", headers=oai_headers(), json=body) as r:
        assert r.status_code == 200
        text = r.read().decode()
    events = sse_json(parse_sse(text))
    datas = [d for _, d in events if d != "[DONE]"]
    errors = [d for d in datas if isinstance(d, dict) and "error" in d]
    assert len(errors) == 1, events[-3:]
    assert errors[0]["error"]["message"]
    assert datas[-1] is errors[0], "the error is not the last data line"
    finished = [c for d in datas if isinstance(d, dict) for c in d.get("choices", []) if c.get("finish_reason")]
    assert not finished, f"a failed stream reported finish_reason: {finished}"


def test_fallback_openai_sdk(oai, mock):
    raw = oai.chat.completions.with_raw_response.create(model="flaky", messages=[{"role": "user", "content": "hi"}])
    r = raw.parse()
    assert r.choices[0].message.content
    assert raw.headers.get("x-tollway-attempts") == "2"
    assert raw.headers.get("x-tollway-model") == "ant/claude-backup"
    paths = [q["path"] for q in mock.requests()]
    assert any(p.endswith("/chat/completions") for p in paths) and any(p.endswith("/messages") for p in paths), paths


def test_fallback_anthropic_sdk(ant, mock):
    raw = ant.messages.with_raw_response.create(model="flaky", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    m = raw.parse()
    assert m.content[0].text
    assert raw.headers.get("x-tollway-attempts") == "2"
    assert raw.headers.get("x-tollway-model") == "ant/claude-backup"


def test_fallback_streaming(oai, mock):
    text = ""
    with oai.chat.completions.with_streaming_response.create(
        model="flaky", messages=[{"role": "user", "content": "hi"}], stream=True
    ) as resp:
        assert resp.headers.get("x-tollway-attempts") == "2"
        for ch in resp.parse():
            for c in ch.choices:
                text += c.delta.content or ""
    assert text


# ------------------------------------------------------------------ (i) bad input over raw HTTP

CHAT = "/v1/chat/completions"
MSGS = "/v1/messages"


def _post(raw, path: str, content: bytes, headers: dict | None = None) -> httpx.Response:
    h = (oai_headers() if path == CHAT else ant_headers()) if headers is None else headers
    return raw.post(path, content=content, headers=h)


def _check(path, resp, status, *needles, etype=None):
    if path == CHAT:
        return assert_openai_error(resp, status, *needles)
    return assert_anthropic_error(resp, status, *needles, etype=etype)


ENDPOINTS = [CHAT, MSGS]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_malformed_json(raw, mock, path):
    r = _post(raw, path, b'{"model": "gpt", "messages": [')
    _check(path, r, 400, "json", etype="invalid_request_error")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_messages_wrong_type(raw, mock, path):
    r = _post(raw, path, b'{"model": "gpt", "max_tokens": 10, "messages": 5}')
    _check(path, r, 400, "messages", etype="invalid_request_error")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_max_tokens_wrong_type(raw, mock, path):
    r = _post(raw, path, b'{"model": "gpt", "max_tokens": "x", "messages": [{"role": "user", "content": "hi"}]}')
    _check(path, r, 400, "max_tokens", etype="invalid_request_error")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_nested_wrong_type_names_path(raw, mock, path):
    r = _post(raw, path, b'{"model": "gpt", "max_tokens": 10, "messages": [{"role": "user", "content": 42}]}')
    _check(path, r, 400, "messages", "content", etype="invalid_request_error")


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("field", ["messages", "model"])
def test_missing_field(raw, mock, path, field):
    body = {"model": "gpt", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    del body[field]
    import json as _json

    r = _post(raw, path, _json.dumps(body).encode())
    _check(path, r, 400, field, etype="invalid_request_error")


def test_anthropic_missing_max_tokens(raw, mock):
    r = _post(raw, MSGS, b'{"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}')
    assert_anthropic_error(r, 400, "max_tokens", etype="invalid_request_error")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_invalid_utf8(raw, mock, path):
    r = _post(raw, path, b'{"model": "gpt", "max_tokens": 10, "messages": [{"role": "user", "content": "bad \xff\xfe bytes"}]}')
    _check(path, r, 400, ("utf-8", "utf8", "unicode", "encoding"), etype="invalid_request_error")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_body_too_large(gw, mock, path):
    big = b'{"model": "gpt", "max_tokens": 10, "messages": [{"role": "user", "content": "' + b"a" * (2 * 1024 * 1024) + b'"}]}'
    h = oai_headers() if path == CHAT else ant_headers()
    with httpx.Client(base_url=gw, timeout=30) as c:
        r = c.post(path, content=big, headers=h)
    _check(path, r, 413, etype="request_too_large")
    assert mock.stats()["requests"] == 0


@pytest.mark.parametrize("path", ENDPOINTS)
def test_missing_key(raw, mock, path):
    h = {"content-type": "application/json"}
    if path == MSGS:
        h["anthropic-version"] = "2023-06-01"
    r = _post(raw, path, b'{"model": "gpt", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}', headers=h)
    _check(path, r, 401, etype="authentication_error")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_unknown_model_raw(raw, mock, path):
    r = _post(raw, path, b'{"model": "nope-model-7", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}')
    _check(path, r, 404, "nope-model-7", etype="not_found_error")


def test_unknown_path(raw, mock):
    r = raw.post("/v1/does-not-exist", json={}, headers=oai_headers())
    assert r.status_code == 404
    body = r.json()
    if "error" in body and isinstance(body["error"], dict):
        assert body["error"].get("message"), body
    else:
        raise AssertionError(f"unknown path did not answer with a JSON error: {body}")
    r = raw.get("/nothing/here")
    assert r.status_code == 404


def test_healthz_after_bad_input(raw):
    # run after the bad-input tests above (file order)
    for _ in range(3):
        assert raw.get("/healthz").status_code == 200
    assert raw.get("/readyz").status_code == 200


def test_error_messages_never_echo_keys(raw, mock):
    r = raw.post(CHAT, content=b'{"model": 5}', headers=oai_headers())
    assert r.status_code == 400
    assert "sk-test-master-0001" not in r.text
    assert_names(r.json()["error"]["message"], ["model"])
