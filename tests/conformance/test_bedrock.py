"""Amazon Bedrock deployments (the Converse API) driven by the official SDKs: an OpenAI or Anthropic
client reaches a model on Bedrock through the gateway, which signs each request with SigV4. The mock
checks every signature with its own implementation, so a 200 here is a correctly signed request."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from helpers import ANT_WEATHER_TOOL, OAI_WEATHER_TOOL, PNG_B64, UPSTREAM_AWS_KEY_ID

MODEL = "bedrock"
UPSTREAM_ID = "anthropic.claude-sonnet-4-5-20250929-v1:0"
PATH = "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse"
PROMPT = "Say hello in a few words."


def _last(mock) -> dict:
    reqs = mock.upstream("bedrock")
    assert reqs, f"the mock received no Bedrock request; it saw: {[r.get('path') for r in mock.requests()]}"
    return reqs[-1]


def _check_signed(req: dict) -> None:
    auth = req["headers"].get("authorization", "")
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={UPSTREAM_AWS_KEY_ID}/"), auth
    assert "/us-east-1/bedrock/aws4_request" in auth, auth
    assert req["headers"].get("x-amz-date"), req["headers"]


def test_openai_sdk_reaches_a_bedrock_model(oai, mock):
    raw = oai.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}],
        max_tokens=200,
        temperature=0.3,
    )
    r = raw.parse()
    assert r.choices[0].message.content.strip()
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    h = raw.headers
    assert h.get("x-tollway-model") == f"aws/{UPSTREAM_ID}"
    assert h.get("x-tollway-provider") == "aws"
    assert float(h.get("x-tollway-cost-usd", "0")) > 0, "priced from the table's Bedrock entry"
    req = _last(mock)
    assert req["path"] == PATH
    _check_signed(req)
    body = req["body"]
    assert body["system"] == [{"text": "Be brief."}]
    assert body["messages"] == [{"role": "user", "content": [{"text": PROMPT}]}]
    assert body["inferenceConfig"] == {"maxTokens": 200, "temperature": 0.3}


def test_anthropic_sdk_reaches_a_bedrock_model(ant, mock):
    m = ant.messages.create(
        model=MODEL,
        max_tokens=200,
        system="Be brief.",
        stop_sequences=["END"],
        messages=[{"role": "user", "content": PROMPT}],
    )
    assert m.type == "message" and m.content[0].type == "text" and m.content[0].text.strip()
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0
    body = _last(mock)["body"]
    assert body["inferenceConfig"]["stopSequences"] == ["END"]
    assert body["system"] == [{"text": "Be brief."}]


def test_openai_sdk_stream_matches_non_stream(oai, mock):
    msgs = [{"role": "user", "content": PROMPT}]
    full = oai.chat.completions.create(model=MODEL, messages=msgs, max_tokens=200)
    chunks = list(
        oai.chat.completions.create(
            model=MODEL, messages=msgs, max_tokens=200, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == full.choices[0].message.content
    assert finish == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert _last(mock)["path"].endswith("/converse-stream")


def test_anthropic_sdk_stream_helper(ant, mock):
    msgs = [{"role": "user", "content": PROMPT}]
    whole = ant.messages.create(model=MODEL, max_tokens=200, messages=msgs)
    with ant.messages.stream(model=MODEL, max_tokens=200, messages=msgs) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == whole.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_openai_sdk_tool_round_trip(oai, mock):
    ask = [{"role": "user", "content": "What's the weather in Paris?"}]
    r = oai.chat.completions.create(
        model=MODEL, messages=ask, tools=[OAI_WEATHER_TOOL], tool_choice="required", max_tokens=200
    )
    assert r.choices[0].finish_reason == "tool_calls"
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments), dict)
    assert _last(mock)["body"]["toolConfig"]["toolChoice"] == {"any": {}}
    follow = ask + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C (tool-result-marker)"},
    ]
    r2 = oai.chat.completions.create(model=MODEL, messages=follow, tools=[OAI_WEATHER_TOOL], max_tokens=200)
    assert "tool-result-marker" in r2.choices[0].message.content
    turns = _last(mock)["body"]["messages"]
    assert turns[1]["content"][0]["toolUse"]["toolUseId"] == call.id
    assert turns[2]["content"][0]["toolResult"]["toolUseId"] == call.id


def test_anthropic_sdk_streamed_tool_call(ant, mock):
    with ant.messages.stream(
        model=MODEL,
        max_tokens=200,
        tools=[ANT_WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
    ) as s:
        final = s.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert uses and uses[0].name == "get_weather" and isinstance(uses[0].input, dict)
    assert final.stop_reason == "tool_use"
    assert _last(mock)["body"]["toolConfig"]["toolChoice"] == {"tool": {"name": "get_weather"}}


def test_images_go_as_bytes(oai, mock):
    r = oai.chat.completions.create(
        model=MODEL,
        max_tokens=50,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                ],
            }
        ],
    )
    assert r.choices[0].message.content
    content = _last(mock)["body"]["messages"][0]["content"]
    assert content[1] == {"image": {"format": "png", "source": {"bytes": PNG_B64}}}
    # a URL Bedrock would have to fetch: refused before it leaves, naming the problem
    with pytest.raises(openai.BadRequestError) as ei:
        oai.chat.completions.create(
            model=MODEL,
            max_tokens=50,
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}],
                }
            ],
        )
    assert "image by URL" in str(ei.value)


def test_throttling_reaches_the_sdks_as_rate_limit_errors(oai, ant, mock):
    with pytest.raises(openai.RateLimitError):
        oai.with_options(max_retries=0).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi [mock fault=429]"}], max_tokens=20
        )
    with pytest.raises(anthropic.RateLimitError):
        ant.with_options(max_retries=0).messages.create(
            model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "hi [mock fault=429]"}]
        )


@pytest.mark.parametrize("fault", ["fault=error_event", "fault=reset after=3", "fault=malformed after=3"])
def test_a_broken_event_stream_fails_the_sdks_stream(oai, ant, mock, fault):
    content = f"Tell me a story. [mock tokens=20 {fault}]"
    stream = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}], stream=True)
    finished = False
    with pytest.raises(openai.APIError):
        for ch in stream:
            finished = finished or any(c.finish_reason for c in ch.choices)
    assert not finished, "a broken stream reported a finish_reason"
    with ant.messages.stream(model=MODEL, max_tokens=200, messages=[{"role": "user", "content": content}]) as s:
        with pytest.raises(anthropic.APIError):
            for _ in s:
                pass


def test_a_json_schema_becomes_bedrocks_structured_output(oai, mock):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    r = oai.chat.completions.create(
        model=MODEL,
        max_tokens=50,
        messages=[{"role": "user", "content": "Name a city."}],
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}},
    )
    assert r.choices[0].message.content
    fmt = _last(mock)["body"]["outputConfig"]["textFormat"]
    assert fmt["type"] == "json_schema"
    assert fmt["structure"]["jsonSchema"]["name"] == "place"
    assert json.loads(fmt["structure"]["jsonSchema"]["schema"]) == schema
    # schema-less JSON mode has no Converse field: refused, naming it
    with pytest.raises(openai.BadRequestError) as ei:
        oai.chat.completions.create(
            model=MODEL,
            max_tokens=50,
            messages=[{"role": "user", "content": "Name a city."}],
            response_format={"type": "json_object"},
        )
    assert "json_object" in str(ei.value) or "response_format" in str(ei.value)


def _invoked(mock, n: int) -> list[dict]:
    reqs = [r for r in mock.requests() if str(r.get("path", "")).endswith("/invoke")]
    assert len(reqs) >= n, [r.get("path") for r in mock.requests()]
    return reqs[-n:]


def test_openai_sdk_embeds_with_titan_and_cohere_on_bedrock(oai, mock):
    # Titan takes one text a call: two signed InvokeModel calls, the vectors in input order
    r = oai.embeddings.create(model="titan-embed", input=["hello", "world"], dimensions=256)
    assert [d.index for d in r.data] == [0, 1]
    assert all(len(d.embedding) == 256 for d in r.data), "the SDK's base64 decoded"
    assert r.usage.prompt_tokens > 0
    calls = _invoked(mock, 2)
    assert sorted(c["body"]["inputText"] for c in calls) == ["hello", "world"]
    for c in calls:
        assert c["path"] == "/model/amazon.titan-embed-text-v2%3A0/invoke"
        assert c["body"]["dimensions"] == 256
        _check_signed(c)
    one = oai.embeddings.create(model="titan-embed", input="world", dimensions=256)
    assert one.data[0].embedding == r.data[1].embedding

    # Cohere: what the texts are for, sent as the SDK's extra body
    r = oai.embeddings.create(model="cohere-embed", input=["a query"], extra_body={"input_type": "search_query"})
    assert len(r.data[0].embedding) == 1024
    assert _invoked(mock, 1)[0]["body"] == {"texts": ["a query"], "input_type": "search_query"}
    with pytest.raises(openai.BadRequestError) as e:
        oai.embeddings.create(model="cohere-embed", input="x", extra_body={"input_type": "query"})
    assert "input_type" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        oai.embeddings.create(model="titan-embed", input="x", dimensions=100)
    assert "256, 512, 1024" in str(e.value)
