"""(d) tool calls: forced and directed, tool results sent back, streamed tool-call reassembly."""

from __future__ import annotations

import json

import pytest

from helpers import ANT_WEATHER_TOOL, MODELS, OAI_WEATHER_TOOL, UPSTREAM_KIND, parts, text_of

ASK = "What's the weather in Paris?"
DIRECTED = ASK + " [mock tool=get_weather]"
RESULT = "sunny, 21 C (tool-result-marker)"


def _check_args(args: dict) -> None:
    assert isinstance(args, dict)
    assert isinstance(args.get("city"), str), f"tool args lack a string 'city': {args}"


# ------------------------------------------------------------------ OpenAI SDK


def _oai_call(oai, model, content, **kw):
    r = oai.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], tools=[OAI_WEATHER_TOOL], max_tokens=200, **kw
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls
    assert calls and len(calls) == 1, choice.message
    call = calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert call.id
    args = json.loads(call.function.arguments)
    _check_args(args)
    return r, call, args


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_forced_tool_choice(oai, mock, model):
    _oai_call(oai, model, ASK, tool_choice={"type": "function", "function": {"name": "get_weather"}})
    up = mock.last_body(UPSTREAM_KIND[model])
    # the tool and the forced choice were translated for the upstream
    if UPSTREAM_KIND[model] == "anthropic":
        assert [t["name"] for t in up["tools"]] == ["get_weather"]
        assert up["tools"][0]["input_schema"]["properties"]["city"]["type"] == "string"
        assert up["tool_choice"]["type"] == "tool" and up["tool_choice"]["name"] == "get_weather"
    else:
        assert [t["function"]["name"] for t in up["tools"]] == ["get_weather"]
        assert up["tool_choice"]["function"]["name"] == "get_weather"


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_tool_round_trip(oai, mock, model):
    r, call, args = _oai_call(oai, model, DIRECTED)
    history = [
        {"role": "user", "content": DIRECTED},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": call.function.arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": RESULT},
    ]
    mock.reset()
    r2 = oai.chat.completions.create(model=model, messages=history, tools=[OAI_WEATHER_TOOL], max_tokens=200)
    assert r2.choices[0].message.content
    assert r2.choices[0].finish_reason == "stop"
    up = mock.last_body(UPSTREAM_KIND[model])
    msgs = up["messages"]
    if UPSTREAM_KIND[model] == "anthropic":
        assistant = [m for m in msgs if m["role"] == "assistant"]
        uses = [p for m in assistant for p in parts(m["content"]) if p.get("type") == "tool_use"]
        assert len(uses) == 1 and uses[0]["id"] == call.id and uses[0]["name"] == "get_weather"
        assert uses[0]["input"] == args
        results = [p for m in msgs if m["role"] == "user" for p in parts(m["content"]) if p.get("type") == "tool_result"]
        assert len(results) == 1, msgs
        assert results[0]["tool_use_id"] == call.id
        assert "tool-result-marker" in text_of(results[0].get("content"))
        assert msgs[-1]["role"] == "user"
    else:
        tool_msgs = [m for m in msgs if m["role"] == "tool"]
        assert len(tool_msgs) == 1 and tool_msgs[0]["tool_call_id"] == call.id
        assert "tool-result-marker" in text_of(tool_msgs[0]["content"])
        asst = [m for m in msgs if m["role"] == "assistant"]
        assert asst and asst[-1]["tool_calls"][0]["id"] == call.id
        assert json.loads(asst[-1]["tool_calls"][0]["function"]["arguments"]) == args


def _oai_reassemble(stream) -> tuple[dict[int, dict], list[str]]:
    calls: dict[int, dict] = {}
    finish = []
    for ch in stream:
        for c in ch.choices:
            if c.finish_reason:
                finish.append(c.finish_reason)
            for tc in c.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                if tc.id:
                    assert slot["id"] in (None, tc.id), "tool call id changed mid-stream"
                    slot["id"] = tc.id
                if tc.function is not None:
                    if tc.function.name:
                        slot["name"] += tc.function.name
                    if tc.function.arguments:
                        slot["arguments"] += tc.function.arguments
    return calls, finish


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_streamed_tool_call(oai, mock, model):
    _, _, args = _oai_call(oai, model, DIRECTED)
    stream = oai.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": DIRECTED}],
        tools=[OAI_WEATHER_TOOL],
        max_tokens=200,
        stream=True,
    )
    calls, finish = _oai_reassemble(stream)
    assert finish == ["tool_calls"]
    assert list(calls) == [0]
    assert calls[0]["id"] and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == args


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_parallel_tool_calls(oai, mock, model):
    content = ASK + " [mock tool=get_weather tools=2]"
    r = oai.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], tools=[OAI_WEATHER_TOOL], max_tokens=200
    )
    calls = r.choices[0].message.tool_calls
    assert calls and len(calls) == 2
    assert len({c.id for c in calls}) == 2
    for c in calls:
        _check_args(json.loads(c.function.arguments))
    stream = oai.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], tools=[OAI_WEATHER_TOOL], max_tokens=200, stream=True
    )
    scalls, finish = _oai_reassemble(stream)
    assert sorted(scalls) == [0, 1]
    assert finish == ["tool_calls"]
    assert [json.loads(scalls[i]["arguments"]) for i in (0, 1)] == [json.loads(c.function.arguments) for c in calls]


# ------------------------------------------------------------------ Anthropic SDK


def _ant_call(ant, model, content, **kw):
    m = ant.messages.create(
        model=model, max_tokens=200, tools=[ANT_WEATHER_TOOL], messages=[{"role": "user", "content": content}], **kw
    )
    assert m.stop_reason == "tool_use", m
    uses = [b for b in m.content if b.type == "tool_use"]
    assert len(uses) == 1, m.content
    use = uses[0]
    assert use.name == "get_weather" and use.id
    _check_args(use.input)
    return m, use


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_forced_tool_choice(ant, mock, model):
    _ant_call(ant, model, ASK, tool_choice={"type": "tool", "name": "get_weather"})
    up = mock.last_body(UPSTREAM_KIND[model])
    if UPSTREAM_KIND[model] == "openai":
        assert up["tools"][0]["type"] == "function"
        assert up["tools"][0]["function"]["name"] == "get_weather"
        assert up["tools"][0]["function"]["parameters"]["properties"]["city"]["type"] == "string"
        assert up["tool_choice"]["type"] == "function" and up["tool_choice"]["function"]["name"] == "get_weather"
    else:
        assert up["tool_choice"] == {"type": "tool", "name": "get_weather"} or (
            up["tool_choice"]["type"] == "tool" and up["tool_choice"]["name"] == "get_weather"
        )


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_tool_round_trip(ant, mock, model):
    m, use = _ant_call(ant, model, DIRECTED)
    history = [
        {"role": "user", "content": DIRECTED},
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": RESULT}]},
    ]
    mock.reset()
    m2 = ant.messages.create(model=model, max_tokens=200, tools=[ANT_WEATHER_TOOL], messages=history)
    assert m2.stop_reason == "end_turn" and m2.content[0].type == "text"
    up = mock.last_body(UPSTREAM_KIND[model])
    msgs = up["messages"]
    if UPSTREAM_KIND[model] == "openai":
        tool_msgs = [x for x in msgs if x["role"] == "tool"]
        assert len(tool_msgs) == 1, msgs
        assert tool_msgs[0]["tool_call_id"] == use.id
        assert "tool-result-marker" in text_of(tool_msgs[0]["content"])
        asst = [x for x in msgs if x["role"] == "assistant"]
        assert asst and asst[-1]["tool_calls"][0]["id"] == use.id
        assert asst[-1]["tool_calls"][0]["function"]["name"] == "get_weather"
        assert json.loads(asst[-1]["tool_calls"][0]["function"]["arguments"]) == use.input
        # the tool message directly follows the assistant's call
        assert msgs.index(tool_msgs[0]) == msgs.index(asst[-1]) + 1
    else:
        results = [p for x in msgs if x["role"] == "user" for p in parts(x["content"]) if p.get("type") == "tool_result"]
        assert len(results) == 1 and results[0]["tool_use_id"] == use.id
        assert "tool-result-marker" in text_of(results[0].get("content"))


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_streamed_tool_call(ant, mock, model):
    _, use = _ant_call(ant, model, DIRECTED)
    partial: dict[int, str] = {}
    starts: dict[int, object] = {}
    with ant.messages.stream(
        model=model, max_tokens=200, tools=[ANT_WEATHER_TOOL], messages=[{"role": "user", "content": DIRECTED}]
    ) as s:
        for ev in s:
            if ev.type == "content_block_start":
                starts[ev.index] = ev.content_block
            elif ev.type == "content_block_delta" and ev.delta.type == "input_json_delta":
                partial[ev.index] = partial.get(ev.index, "") + ev.delta.partial_json
        final = s.get_final_message()
    tool_idx = [i for i, b in starts.items() if b.type == "tool_use"]
    assert len(tool_idx) == 1, starts
    i = tool_idx[0]
    assert starts[i].name == "get_weather" and starts[i].id
    assert json.loads(partial[i]) == use.input
    assert final.stop_reason == "tool_use"
    final_uses = [b for b in final.content if b.type == "tool_use"]
    assert len(final_uses) == 1 and final_uses[0].input == use.input
    assert final.usage.output_tokens > 0
