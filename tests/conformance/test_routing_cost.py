"""Embeddings, cost headers and auto-routing through the official SDKs."""

from __future__ import annotations

import json


def test_openai_sdk_embeddings(oai, mock):
    r = oai.embeddings.create(model="gpt", input=["hello", "world"], dimensions=16)
    assert [d.index for d in r.data] == [0, 1]
    assert all(len(d.embedding) == 16 for d in r.data)
    assert r.usage.prompt_tokens > 0
    ups = [q for q in mock.requests() if q.get("path") == "/v1/embeddings"]
    assert ups, mock.requests()
    up = ups[-1]["body"]
    assert up["input"] == ["hello", "world"] and up["model"] == "gpt-4.1"


def test_openai_sdk_embeddings_base64_default_decodes(oai):
    # the SDK asks for base64 by default and decodes it itself
    r = oai.embeddings.create(model="gpt", input="hello", dimensions=8)
    assert len(r.data[0].embedding) == 8
    assert all(isinstance(x, float) for x in r.data[0].embedding)


def test_cost_header_and_stream_usage_cost(oai):
    raw = oai.chat.completions.with_raw_response.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
    cost = raw.headers.get("x-tollway-cost-usd")
    assert cost and float(cost) > 0, cost
    chunks = list(
        oai.chat.completions.create(
            model="claude", stream=True, stream_options={"include_usage": True}, messages=[{"role": "user", "content": "hi"}]
        )
    )
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert usage_chunks, chunks
    extra = usage_chunks[-1].usage.model_dump()
    assert "cost_usd" in extra and float(extra["cost_usd"]) > 0, extra


def test_auto_router_through_both_sdks(oai, ant):
    raw = oai.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "What is the capital of France?"}]
    )
    route = raw.headers.get("x-tollway-route", "")
    assert route.startswith("router=auto; kind=learned; model=lexical; score="), route
    target = route.rsplit("target=", 1)[1]
    assert target in ("claude", "gpt")
    assert raw.parse().choices[0].message.content
    raw = ant.messages.with_raw_response.create(
        model="auto", max_tokens=50, messages=[{"role": "user", "content": "Prove that sqrt(2) is irrational."}]
    )
    assert raw.headers.get("x-tollway-route", "").startswith("router=auto; kind=learned")
    assert raw.parse().content[0].text
