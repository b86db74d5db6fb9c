"""Google's Gemini API and Vertex AI driven by the official SDKs: an OpenAI or Anthropic client
reaches Gemini (with an API key) and Vertex AI's Gemini and Claude (with an OAuth token the gateway
gets by signing a JWT with a service account key; the mock's token endpoint checks the signature)."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from helpers import ANT_WEATHER_TOOL, OAI_WEATHER_TOOL, PNG_B64, UPSTREAM_GEMINI_KEY

PROMPT = "Say hello in a few words."


def _last(mock, kind: str = "gemini") -> dict:
    reqs = mock.upstream(kind)
    assert reqs, f"the mock received no {kind} request; it saw: {[r.get('path') for r in mock.requests()]}"
    return reqs[-1]


def test_openai_sdk_reaches_gemini(oai, mock):
    raw = oai.chat.completions.with_raw_response.create(
        model="gemini",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}],
        max_tokens=200,
        temperature=0.3,
        seed=7,
    )
    r = raw.parse()
    assert r.choices[0].message.content.strip()
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert raw.headers.get("x-tollway-model") == "gem/gemini-2.5-flash"
    assert float(raw.headers.get("x-tollway-cost-usd", "0")) > 0, "priced from the gemini table"
    req = _last(mock)
    assert req["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert req["headers"].get("x-goog-api-key") == UPSTREAM_GEMINI_KEY
    body = req["body"]
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": PROMPT}]}]
    assert body["generationConfig"] == {"maxOutputTokens": 200, "temperature": 0.3, "seed": 7}


@pytest.mark.parametrize("model", ["gemini", "vertex-gemini", "vertex-claude"])
def test_openai_sdk_stream_matches_non_stream(oai, mock, model):
    msgs = [{"role": "user", "content": PROMPT}]
    full = oai.chat.completions.create(model=model, messages=msgs, max_tokens=200)
    chunks = list(
        oai.chat.completions.create(
            model=model, messages=msgs, max_tokens=200, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == full.choices[0].message.content
    assert finish == ["stop"]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


@pytest.mark.parametrize("model", ["gemini", "vertex-gemini", "vertex-claude"])
def test_anthropic_sdk_stream_helper(ant, mock, model):
    msgs = [{"role": "user", "content": PROMPT}]
    whole = ant.messages.create(model=model, max_tokens=200, messages=msgs)
    with ant.messages.stream(model=model, max_tokens=200, messages=msgs) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == whole.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_vertex_requests_carry_a_token_from_the_service_account(oai, ant, mock):
    r = oai.chat.completions.create(model="vertex-gemini", messages=[{"role": "user", "content": PROMPT}])
    assert r.choices[0].message.content
    req = _last(mock)
    assert req["path"] == (
        "/v1/projects/tollway-conformance/locations/us-central1/publishers/google/models/"
        "gemini-2.5-flash:generateContent"
    )
    assert req["headers"]["authorization"].startswith("Bearer ya29.")
    m = ant.messages.create(
        model="vertex-claude",
        max_tokens=100,
        messages=[{"role": "user", "content": PROMPT}],
        extra_headers={"anthropic-beta": "context-1m-2025-08-07"},
    )
    assert m.content[0].text
    req = _last(mock, "vertex-claude")
    assert req["path"].endswith("/publishers/anthropic/models/claude-sonnet-4-5%4020250929:rawPredict")
    assert req["body"]["anthropic_version"] == "vertex-2023-10-16"
    assert "model" not in req["body"]
    assert req["body"]["anthropic_beta"] == ["context-1m-2025-08-07"]


def test_openai_sdk_tool_round_trip(oai, mock):
    ask = [{"role": "user", "content": "What's the weather in Paris?"}]
    r = oai.chat.completions.create(
        model="gemini", messages=ask, tools=[OAI_WEATHER_TOOL], tool_choice="required", max_tokens=200
    )
    assert r.choices[0].finish_reason == "tool_calls"
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments), dict)
    assert _last(mock)["body"]["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    follow = ask + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]
    r2 = oai.chat.completions.create(model="gemini", messages=follow, tools=[OAI_WEATHER_TOOL], max_tokens=200)
    assert r2.choices[0].message.content
    contents = _last(mock)["body"]["contents"]
    assert contents[1]["parts"][0]["functionCall"]["name"] == "get_weather"
    assert contents[2]["parts"][0]["functionResponse"] == {
        "name": "get_weather",
        "response": {"content": "sunny, 21 C"},
    }


def test_anthropic_sdk_streamed_tool_call(ant, mock):
    with ant.messages.stream(
        model="gemini",
        max_tokens=200,
        tools=[ANT_WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
    ) as s:
        final = s.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert uses and uses[0].name == "get_weather" and isinstance(uses[0].input, dict)
    assert final.stop_reason == "tool_use"
    assert _last(mock)["body"]["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }


def test_images_go_inline(oai, mock):
    r = oai.chat.completions.create(
        model="gemini",
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
    parts = _last(mock)["body"]["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}


def test_json_schema_becomes_gemini_structured_output(oai, mock):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    r = oai.chat.completions.create(
        model="gemini",
        max_tokens=50,
        messages=[{"role": "user", "content": "Name a city."}],
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}},
    )
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    config = _last(mock)["body"]["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == schema


def test_quota_and_blocked_prompts_reach_the_sdks_as_their_errors(oai, ant, mock):
    with pytest.raises(openai.RateLimitError):
        oai.with_options(max_retries=0).chat.completions.create(
            model="gemini", messages=[{"role": "user", "content": "hi [mock fault=429]"}], max_tokens=20
        )
    with pytest.raises(anthropic.RateLimitError):
        ant.with_options(max_retries=0).messages.create(
            model="vertex-gemini", max_tokens=20, messages=[{"role": "user", "content": "hi [mock fault=429]"}]
        )
    with pytest.raises(openai.BadRequestError) as ei:
        oai.with_options(max_retries=0).chat.completions.create(
            model="gemini", messages=[{"role": "user", "content": "hi [mock fault=content_policy]"}], max_tokens=20
        )
    assert "blocked" in str(ei.value)


@pytest.mark.parametrize("fault", ["fault=error_event after=3", "fault=reset after=3", "fault=malformed after=3"])
def test_a_broken_gemini_stream_fails_the_sdks_stream(oai, ant, mock, fault):
    content = f"Tell me a story. [mock tokens=20 {fault}]"
    stream = oai.chat.completions.create(model="gemini", messages=[{"role": "user", "content": content}], stream=True)
    finished = False
    with pytest.raises(openai.APIError):
        for ch in stream:
            finished = finished or any(c.finish_reason for c in ch.choices)
    assert not finished, "a broken stream reported a finish_reason"
    with ant.messages.stream(model="gemini", max_tokens=200, messages=[{"role": "user", "content": content}]) as s:
        with pytest.raises(anthropic.APIError):
            for _ in s:
                pass
