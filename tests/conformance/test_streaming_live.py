"""(l) streams are forwarded as they arrive, not buffered; (m) a client that goes away aborts the upstream."""

from __future__ import annotations

import pytest

from helpers import MODELS

SLOW = "Count slowly. [mock tpt_ms=200 tokens=10]"
LONG = "Tell me everything. [mock tpt_ms=50 tokens=2000]"


def _first_oai_content(stream) -> str:
    for ch in stream:
        for c in ch.choices:
            if c.delta and c.delta.content:
                return c.delta.content
    raise AssertionError("stream ended without content")


def _first_ant_text(stream) -> str:
    for ev in stream:
        if ev.type == "content_block_delta" and ev.delta.type == "text_delta" and ev.delta.text:
            return ev.delta.text
    raise AssertionError("stream ended without text")


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_stream_not_buffered(oai, mock, model):
    before = mock.stats()
    stream = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": SLOW}], stream=True)
    try:
        assert _first_oai_content(stream)
        during = mock.stats()
        assert during["streams_started"] == before["streams_started"] + 1, during
        assert during["streams_completed"] == before["streams_completed"], (
            "the first chunk reached the client only after the upstream stream had completed (buffering)"
        )
        rest = list(stream)
    finally:
        stream.close()
    assert rest, "nothing after the first chunk"
    after = mock.wait_stat("streams_completed", before["streams_completed"] + 1, timeout=10)
    assert after["streams_completed"] == before["streams_completed"] + 1


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_stream_not_buffered(ant, mock, model):
    before = mock.stats()
    with ant.messages.stream(model=model, max_tokens=100, messages=[{"role": "user", "content": SLOW}]) as s:
        assert _first_ant_text(s)
        during = mock.stats()
        assert during["streams_started"] == before["streams_started"] + 1, during
        assert during["streams_completed"] == before["streams_completed"], (
            "the first chunk reached the client only after the upstream stream had completed (buffering)"
        )
        final = s.get_final_message()
    assert final.stop_reason in ("end_turn", "max_tokens")
    after = mock.wait_stat("streams_completed", before["streams_completed"] + 1, timeout=10)
    assert after["streams_completed"] == before["streams_completed"] + 1


@pytest.mark.parametrize("model", MODELS)
def test_openai_client_disconnect_aborts_upstream(oai, mock, model):
    before = mock.stats()
    stream = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": LONG}], stream=True)
    assert _first_oai_content(stream)
    stream.close()
    after = mock.wait_stat("streams_aborted", before["streams_aborted"] + 1, timeout=10)
    assert after["streams_aborted"] == before["streams_aborted"] + 1, (
        f"upstream stream not aborted within 10 s of the client going away: {after}"
    )
    assert after["streams_completed"] == before["streams_completed"]


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_client_disconnect_aborts_upstream(ant, mock, model):
    before = mock.stats()
    with ant.messages.stream(model=model, max_tokens=4000, messages=[{"role": "user", "content": LONG}]) as s:
        assert _first_ant_text(s)
    after = mock.wait_stat("streams_aborted", before["streams_aborted"] + 1, timeout=10)
    assert after["streams_aborted"] == before["streams_aborted"] + 1, (
        f"upstream stream not aborted within 10 s of the client going away: {after}"
    )
    assert after["streams_completed"] == before["streams_completed"]
