"""OpenAI's Responses API (`client.responses`) through the gateway, to OpenAI- and Anthropic-format
upstreams: plain answers, the SDK's stream helper, function tools over two turns, and errors."""

from __future__ import annotations

import json

import openai
import pytest

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


@pytest.mark.parametrize("model,deployment", [("gpt", "oai/gpt-4.1"), ("claude", "ant/claude-sonnet-4-5")])
def test_responses_create(oai, model, deployment):
    raw = oai.responses.with_raw_response.create(
        model=model, instructions="Be brief.", input="Hello!", max_output_tokens=50, temperature=0.3
    )
    assert raw.headers.get("x-tollway-model") == deployment
    assert raw.headers.get("x-tollway-cost-usd")
    r = raw.parse()
    assert r.object == "response" and r.status == "completed"
    assert r.id.startswith("resp_")
    assert r.output_text
    assert r.output[0].type == "message" and r.output[0].role == "assistant"
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    # the request's settings, repeated as the API does
    assert r.temperature == 0.3 and r.max_output_tokens == 50 and r.tool_choice == "auto"


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_responses_stream_helper_builds_the_final_response(oai, model):
    deltas = []
    kinds = []
    with oai.responses.stream(model=model, input=[{"role": "user", "content": "Hi [mock tokens=8]"}]) as s:
        for ev in s:
            kinds.append(ev.type)
            if ev.type == "response.output_text.delta":
                deltas.append(ev.delta)
        final = s.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert len(deltas) >= 2
    assert final.output_text == "".join(deltas)
    assert final.status == "completed"
    assert final.usage.output_tokens == 8


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_responses_function_tools_over_two_turns(oai, model):
    first = oai.responses.create(
        model=model, tools=TOOLS, input=[{"role": "user", "content": "Weather in Paris? [mock tool=get_weather]"}]
    )
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1, first.output
    call = calls[0]
    assert call.name == "get_weather"
    json.loads(call.arguments)
    second = oai.responses.create(
        model=model,
        tools=TOOLS,
        input=[
            {"role": "user", "content": "Weather in Paris? [mock tool=get_weather]"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"},
        ],
    )
    assert second.output_text
    assert not [o for o in second.output if o.type == "function_call"]


def test_responses_streamed_function_call(oai):
    with oai.responses.stream(
        model="claude", tools=TOOLS, input="Weather in Rome? [mock tool=get_weather]"
    ) as s:
        arg_deltas = [ev.delta for ev in s if ev.type == "response.function_call_arguments.delta"]
        final = s.get_final_response()
    calls = [o for o in final.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert calls[0].arguments == "".join(arg_deltas)
    json.loads(calls[0].arguments)


def test_responses_errors_in_openai_shape(oai):
    with pytest.raises(openai.BadRequestError) as e:
        oai.responses.create(model="gpt", input="hi", previous_response_id="resp_123")
    assert "previous_response_id" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        oai.responses.create(model="gpt", input="hi", tools=[{"type": "web_search"}])
    assert "web_search" in str(e.value)
    with pytest.raises(openai.NotFoundError) as e:
        oai.responses.create(model="no-such-model", input="hi")
    assert "no-such-model" in str(e.value)
    # reasoning effort travels as Chat Completions' reasoning_effort (Anthropic: output_config.effort)
    r = oai.responses.create(model="claude", input="hi", reasoning={"effort": "low"})
    assert r.status == "completed"
