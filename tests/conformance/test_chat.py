"""(a) plain text, (b) streaming, (c) system prompt and multi-turn — every client API x every upstream kind."""

from __future__ import annotations

import json

import pytest

from helpers import (
    DEPLOYMENT,
    MODELS,
    PROVIDER,
    UPSTREAM_KIND,
    ant_headers,
    parse_sse,
    sse_json,
    text_of,
)

PROMPT = "Say hello to the conformance suite."


def _oai_stream_text(chunks) -> tuple[str, list, object]:
    text, finish, usage = "", [], None
    for ch in chunks:
        if ch.usage is not None:
            usage = ch.usage
        for c in ch.choices:
            if c.delta and c.delta.content:
                text += c.delta.content
            if c.finish_reason:
                finish.append(c.finish_reason)
    return text, finish, usage


# ------------------------------------------------------------------ (a) non-streaming


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_plain_text(oai, mock, model):
    raw = oai.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=200
    )
    r = raw.parse()
    assert r.object == "chat.completion"
    assert r.model  # some model name
    assert len(r.choices) == 1
    msg = r.choices[0].message
    assert msg.role == "assistant"
    assert isinstance(msg.content, str) and msg.content.strip(), r
    assert r.choices[0].finish_reason == "stop"
    u = r.usage
    assert u is not None and u.prompt_tokens > 0 and u.completion_tokens > 0
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    # gateway headers
    h = raw.headers
    assert h.get("x-tollway-request-id")
    assert h.get("x-tollway-model") == DEPLOYMENT[model]
    assert h.get("x-tollway-provider") in PROVIDER[model]
    assert h.get("x-tollway-attempts") == "1"
    # the request really went to the right upstream format, with the deployment's model name
    up = mock.last_body(UPSTREAM_KIND[model])
    assert up["model"] == DEPLOYMENT[model].split("/", 1)[1]


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_plain_text(ant, mock, model):
    raw = ant.messages.with_raw_response.create(
        model=model, max_tokens=200, messages=[{"role": "user", "content": PROMPT}]
    )
    m = raw.parse()
    assert m.type == "message" and m.role == "assistant"
    assert m.content and m.content[0].type == "text" and m.content[0].text.strip()
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0
    h = raw.headers
    assert h.get("x-tollway-request-id")
    assert h.get("x-tollway-model") == DEPLOYMENT[model]
    assert h.get("x-tollway-provider") in PROVIDER[model]
    assert h.get("x-tollway-attempts") == "1"
    up = mock.last_body(UPSTREAM_KIND[model])
    assert up["model"] == DEPLOYMENT[model].split("/", 1)[1]


def test_request_ids_are_unique(oai, mock):
    ids = set()
    for _ in range(3):
        raw = oai.chat.completions.with_raw_response.create(
            model="gpt", messages=[{"role": "user", "content": "hi"}], max_tokens=20
        )
        ids.add(raw.headers.get("x-tollway-request-id"))
    assert len(ids) == 3 and None not in ids


# ------------------------------------------------------------------ (b) streaming


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_stream_matches_non_stream(oai, mock, model):
    msgs = [{"role": "user", "content": PROMPT}]
    full = oai.chat.completions.create(model=model, messages=msgs, max_tokens=200)

    chunks = list(
        oai.chat.completions.create(
            model=model, messages=msgs, max_tokens=200, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks, "no chunks"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text, finish, usage = _oai_stream_text(chunks)
    assert text == full.choices[0].message.content
    assert finish == ["stop"]
    # the usage chunk: present, last, with empty choices, consistent with the non-streamed usage
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1, f"expected exactly one usage chunk, got {len(usage_chunks)}"
    assert usage_chunks[0] is chunks[-1] and chunks[-1].choices == []
    assert usage.prompt_tokens == full.usage.prompt_tokens
    assert usage.completion_tokens == full.usage.completion_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    # without include_usage: no usage anywhere
    chunks2 = list(oai.chat.completions.create(model=model, messages=msgs, max_tokens=200, stream=True))
    text2, finish2, _ = _oai_stream_text(chunks2)
    assert text2 == text and finish2 == ["stop"]
    assert all(c.usage is None for c in chunks2), "usage chunk sent without stream_options.include_usage"


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_stream_helper(ant, mock, model):
    msgs = [{"role": "user", "content": PROMPT}]
    full = ant.messages.create(model=model, max_tokens=200, messages=msgs)
    with ant.messages.stream(model=model, max_tokens=200, messages=msgs) as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    assert streamed == full.content[0].text
    assert final.content[0].text == streamed
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == full.usage.output_tokens > 0
    assert final.usage.input_tokens == full.usage.input_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_raw_event_sequence(raw, mock, model):
    body = {"model": model, "max_tokens": 200, "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    with raw.stream("POST", "/v1/messages", headers=ant_headers(), json=body) as r:
        assert r.status_code == 200, r.read()
        assert r.headers.get("content-type", "").startswith("text/event-stream")
        assert r.headers.get("x-tollway-request-id")
        text = r.read().decode()
    events = sse_json(parse_sse(text))
    names = [e for e, _ in events]
    # every event is named and its data.type matches the name
    for ev, data in events:
        assert ev is not None, f"unnamed SSE event: {data!r}"
        assert isinstance(data, dict) and data.get("type") == ev, (ev, data)
    assert names.count("message_start") == 1 and names[0] == "message_start", names
    assert names.count("message_stop") == 1 and names[-1] == "message_stop", names
    assert "ping" in names, names
    assert names.count("message_delta") == 1, names
    for n in ("content_block_start", "content_block_delta", "content_block_stop"):
        assert n in names, names
    # block structure: start < deltas < stop, per index
    starts = [i for i, n in enumerate(names) if n == "content_block_start"]
    stops = [i for i, n in enumerate(names) if n == "content_block_stop"]
    assert len(starts) == len(stops)
    assert names.index("message_delta") > max(stops)
    start_msg = events[0][1]["message"]
    assert start_msg["role"] == "assistant" and start_msg["content"] == []
    assert "usage" in start_msg
    if UPSTREAM_KIND[model] == "anthropic":
        # Anthropic upstreams report prompt tokens up front; OpenAI ones only at the end.
        assert start_msg["usage"]["input_tokens"] > 0
    delta = events[names.index("message_delta")][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] > 0
    assert delta["usage"]["input_tokens"] > 0, "the final usage is whole"
    streamed = "".join(
        d["delta"]["text"] for e, d in events if e == "content_block_delta" and d["delta"]["type"] == "text_delta"
    )
    assert streamed.strip()


@pytest.mark.parametrize("model", MODELS)
def test_openai_raw_stream_format(raw, mock, model):
    body = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": PROMPT}],
    }
    with raw.stream("POST", "/v1/chat/completions", headers={"Authorization": "Bearer sk-test-master-0001"}, json=body) as r:
        assert r.status_code == 200, r.read()
        assert r.headers.get("content-type", "").startswith("text/event-stream")
        text = r.read().decode()
    events = sse_json(parse_sse(text))
    assert events[-1][1] == "[DONE]", events[-3:]
    assert all(d != "[DONE]" for _, d in events[:-1])
    ids = {d["id"] for _, d in events[:-1]}
    assert len(ids) == 1, f"chunks carry different ids: {ids}"
    first = events[0][1]
    assert first["choices"][0]["delta"].get("role") == "assistant"


# ------------------------------------------------------------------ (c) system prompt + multi-turn

SYSTEM = "You are a terse assistant. (system-marker-42)"
TURNS = [
    {"role": "user", "content": "My name is Ada."},
    {"role": "assistant", "content": "Hello Ada."},
    {"role": "user", "content": "What is my name?"},
]


def _check_upstream_conversation(mock, model):
    kind = UPSTREAM_KIND[model]
    up = mock.last_body(kind)
    msgs = up["messages"]
    if kind == "anthropic":
        system = up.get("system")
        assert system is not None, f"no top-level system field upstream: {json.dumps(up)[:800]}"
        assert "system-marker-42" in text_of(system)
        assert all(m["role"] in ("user", "assistant") for m in msgs), msgs
        convo = msgs
    else:
        assert msgs[0]["role"] in ("system", "developer"), msgs
        assert "system-marker-42" in text_of(msgs[0]["content"])
        assert not any("system-marker-42" in text_of(m.get("content")) for m in msgs[1:])
        convo = msgs[1:]
    assert [m["role"] for m in convo] == ["user", "assistant", "user"], convo
    assert [text_of(m["content"]) for m in convo] == [t["content"] for t in TURNS]


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_system_and_multi_turn(oai, mock, model):
    r = oai.chat.completions.create(
        model=model, messages=[{"role": "system", "content": SYSTEM}, *TURNS], max_tokens=100
    )
    assert r.choices[0].message.content
    _check_upstream_conversation(mock, model)


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_system_and_multi_turn(ant, mock, model):
    m = ant.messages.create(model=model, max_tokens=100, system=SYSTEM, messages=TURNS)
    assert m.content[0].text
    _check_upstream_conversation(mock, model)


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_system_blocks(ant, mock, model):
    """`system` given as a list of text blocks works too."""
    m = ant.messages.create(
        model=model, max_tokens=100, system=[{"type": "text", "text": SYSTEM}], messages=TURNS
    )
    assert m.content[0].text
    _check_upstream_conversation(mock, model)


@pytest.mark.parametrize("model", MODELS)
def test_echo_round_trips_unicode(oai, ant, mock, model):
    """[mock echo=1]: the reply is the last user text — non-ASCII survives both directions."""
    text = "Grüße, 世界! 🚀 [mock echo=1]"
    r = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])
    assert "Grüße, 世界! 🚀" in r.choices[0].message.content
    m = ant.messages.create(model=model, max_tokens=100, messages=[{"role": "user", "content": text}])
    assert "Grüße, 世界! 🚀" in m.content[0].text
