"""Azure OpenAI driven by the official SDKs through the gateway: the deployment URLs with an
`api-key`, Azure's prompt-filter chunk at the head of streams, and its content filter."""

from __future__ import annotations

import anthropic
import openai
import pytest

from helpers import UPSTREAM_AZURE_KEY

PROMPT = "Say hello in a few words."


def _last(mock) -> dict:
    reqs = mock.upstream("azure")
    assert reqs, f"the mock received no Azure request; it saw: {[r.get('path') for r in mock.requests()]}"
    return reqs[-1]


def test_openai_sdk_reaches_an_azure_deployment(oai, mock):
    raw = oai.chat.completions.with_raw_response.create(
        model="azure", messages=[{"role": "user", "content": PROMPT}], max_tokens=100
    )
    r = raw.parse()
    assert r.choices[0].message.content.strip()
    assert raw.headers.get("x-tollway-model") == "az/my-gpt-4o"
    req = _last(mock)
    assert req["path"] == "/openai/deployments/my-gpt-4o/chat/completions?api-version=2024-10-21"
    assert req["headers"].get("api-key") == UPSTREAM_AZURE_KEY
    assert req["body"]["max_completion_tokens"] == 100


def test_streams_with_the_prompt_filter_chunk_match_non_stream(oai, ant, mock):
    msgs = [{"role": "user", "content": PROMPT}]
    full = oai.chat.completions.create(model="azure", messages=msgs, max_tokens=200)
    chunks = list(
        oai.chat.completions.create(
            model="azure", messages=msgs, max_tokens=200, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens
    with ant.messages.stream(model="azure", max_tokens=200, messages=msgs) as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    assert streamed == full.choices[0].message.content
    assert final.stop_reason == "end_turn"


def test_the_content_filter_is_a_bad_request_for_both_sdks(oai, ant, mock):
    with pytest.raises(openai.BadRequestError) as ei:
        oai.with_options(max_retries=0).chat.completions.create(
            model="azure", messages=[{"role": "user", "content": "hi [mock fault=content_policy]"}], max_tokens=20
        )
    assert ei.value.code == "content_policy_violation"
    with pytest.raises(anthropic.BadRequestError):
        ant.with_options(max_retries=0).messages.create(
            model="azure", max_tokens=20, messages=[{"role": "user", "content": "hi [mock fault=content_policy]"}]
        )
