"""The exact-match response cache through the official SDKs: an answer repeated whole or streamed,
to either SDK, without reaching the provider; `Cache-Control` sent as an SDK's extra header."""

from __future__ import annotations

import uuid


def _openai_requests(mock) -> int:
    return len(mock.upstream("openai"))


def test_openai_sdk_repeated_request_is_answered_from_the_cache(oai, mock):
    prompt = f"cache me {uuid.uuid4()}"
    msgs = [{"role": "user", "content": prompt}]
    first = oai.chat.completions.with_raw_response.create(model="cached", messages=msgs, max_tokens=40)
    assert first.headers.get("x-tollway-cache") == "miss"
    a = first.parse()
    assert _openai_requests(mock) == 1

    again = oai.chat.completions.with_raw_response.create(model="cached", messages=msgs, max_tokens=40)
    assert again.headers.get("x-tollway-cache") == "hit"
    assert again.headers.get("x-tollway-cost-usd") == "0.000000"
    assert again.headers.get("x-tollway-attempts") == "0"
    assert again.headers.get("age") is not None
    b = again.parse()
    assert b.choices[0].message.content == a.choices[0].message.content
    assert b.usage.completion_tokens == a.usage.completion_tokens
    assert _openai_requests(mock) == 1

    # the same request streamed: the SDK reads the kept answer as an ordinary stream
    chunks = list(
        oai.chat.completions.create(
            model="cached", messages=msgs, max_tokens=40, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == a.choices[0].message.content
    assert [c.usage for c in chunks if c.usage][-1].completion_tokens == a.usage.completion_tokens
    assert _openai_requests(mock) == 1


def test_anthropic_sdk_gets_an_answer_kept_from_a_stream(ant, mock):
    prompt = f"stream then cache {uuid.uuid4()}"
    msgs = [{"role": "user", "content": prompt}]
    with ant.messages.stream(model="cached", max_tokens=64, messages=msgs) as s:
        streamed = s.get_final_message()
        assert s.response.headers.get("x-tollway-cache") == "miss"
    assert _openai_requests(mock) == 1

    raw = ant.messages.with_raw_response.create(model="cached", max_tokens=64, messages=msgs)
    assert raw.headers.get("x-tollway-cache") == "hit"
    m = raw.parse()
    assert m.content[0].text == streamed.content[0].text
    assert m.stop_reason == streamed.stop_reason == "end_turn"
    assert m.usage.output_tokens == streamed.usage.output_tokens
    with ant.messages.stream(model="cached", max_tokens=64, messages=msgs) as s:
        again = s.get_final_message()
        assert s.response.headers.get("x-tollway-cache") == "hit"
    assert again.content[0].text == streamed.content[0].text
    assert _openai_requests(mock) == 1


def test_cache_control_from_an_sdk(oai, mock):
    msgs = [{"role": "user", "content": f"opt in by header {uuid.uuid4()}"}]
    # `gpt` is not cached under `mode: opt-in`, unless the request asks
    plain = oai.chat.completions.with_raw_response.create(model="gpt", messages=msgs)
    assert plain.headers.get("x-tollway-cache") is None
    ask = {"cache-control": "max-age=300"}
    first = oai.chat.completions.with_raw_response.create(model="gpt", messages=msgs, extra_headers=ask)
    assert first.headers.get("x-tollway-cache") == "miss"
    second = oai.chat.completions.with_raw_response.create(model="gpt", messages=msgs, extra_headers=ask)
    assert second.headers.get("x-tollway-cache") == "hit"
    fresh = oai.chat.completions.with_raw_response.create(
        model="gpt", messages=msgs, extra_headers={"cache-control": "no-cache"}
    )
    assert fresh.headers.get("x-tollway-cache") == "refresh"
    assert _openai_requests(mock) == 3
