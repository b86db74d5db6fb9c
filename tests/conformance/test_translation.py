"""(e) images, (f) sampling parameters and structured output, (g) cached-token accounting."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from helpers import MODELS, PNG_B64, UPSTREAM_KIND, assert_names, parts

DATA_URL = f"data:image/png;base64,{PNG_B64}"


def _image_url(mock) -> str:
    # A URL on loopback (the mock), so nothing can reach the internet even if someone fetched it.
    return f"{mock.url}/_mock/images/cat.png"


# ------------------------------------------------------------------ (e) images


def _upstream_image_parts(mock, kind: str) -> list[dict]:
    up = mock.last_body(kind)
    user_parts = [p for m in up["messages"] if m["role"] == "user" for p in parts(m["content"])]
    if kind == "anthropic":
        return [p for p in user_parts if p.get("type") == "image"]
    return [p for p in user_parts if p.get("type") == "image_url"]


def _assert_upstream_base64(mock, model):
    kind = UPSTREAM_KIND[model]
    imgs = _upstream_image_parts(mock, kind)
    assert len(imgs) == 1, f"upstream got {len(imgs)} images: {mock.last_body(kind)['messages']}"
    if kind == "anthropic":
        assert imgs[0]["source"] == {"type": "base64", "media_type": "image/png", "data": PNG_B64}
    else:
        url = imgs[0]["image_url"]["url"] if isinstance(imgs[0]["image_url"], dict) else imgs[0]["image_url"]
        assert url == DATA_URL


def _assert_upstream_url(mock, model, url):
    kind = UPSTREAM_KIND[model]
    imgs = _upstream_image_parts(mock, kind)
    assert len(imgs) == 1
    if kind == "anthropic":
        assert imgs[0]["source"] == {"type": "url", "url": url}
    else:
        got = imgs[0]["image_url"]["url"] if isinstance(imgs[0]["image_url"], dict) else imgs[0]["image_url"]
        assert got == url


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_base64_image(oai, mock, model):
    r = oai.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": DATA_URL}},
                ],
            }
        ],
        max_tokens=100,
    )
    assert r.choices[0].message.content
    _assert_upstream_base64(mock, model)


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_url_image(oai, mock, model):
    url = _image_url(mock)
    oai.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "Describe."}, {"type": "image_url", "image_url": {"url": url}}],
            }
        ],
        max_tokens=100,
    )
    _assert_upstream_url(mock, model, url)


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_base64_image(ant, mock, model):
    m = ant.messages.create(
        model=model,
        max_tokens=100,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
                    {"type": "text", "text": "What is in this picture?"},
                ],
            }
        ],
    )
    assert m.content[0].text
    _assert_upstream_base64(mock, model)


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_url_image(ant, mock, model):
    url = _image_url(mock)
    ant.messages.create(
        model=model,
        max_tokens=100,
        messages=[
            {
                "role": "user",
                "content": [{"type": "image", "source": {"type": "url", "url": url}}, {"type": "text", "text": "Describe."}],
            }
        ],
    )
    _assert_upstream_url(mock, model, url)


def test_image_to_model_without_vision_openai_sdk(oai, mock):
    before = mock.stats()["requests"]
    with pytest.raises(openai.BadRequestError) as ei:
        oai.chat.completions.create(
            model="claude-noimg",
            messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": DATA_URL}}]}],
        )
    assert ei.value.status_code == 400
    assert_names(ei.value.message, [("image", "vision"), ("claude-noimg", "claude-haiku")])
    assert mock.stats()["requests"] == before, "the request was sent upstream anyway"


def test_image_to_model_without_vision_anthropic_sdk(ant, mock):
    before = mock.stats()["requests"]
    with pytest.raises(anthropic.BadRequestError) as ei:
        ant.messages.create(
            model="claude-noimg",
            max_tokens=50,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
                        {"type": "text", "text": "hi"},
                    ],
                }
            ],
        )
    assert ei.value.status_code == 400
    assert_names(ei.value.message, [("image", "vision"), ("claude-noimg", "claude-haiku")])
    assert mock.stats()["requests"] == before


# ------------------------------------------------------------------ (f) parameters


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("limit_param", ["max_tokens", "max_completion_tokens"])
def test_openai_sdk_sampling_params_carried(oai, mock, model, limit_param):
    oai.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Count."}],
        stop=["END", "STOP"],
        temperature=0.25,
        top_p=0.5,
        **{limit_param: 77},
    )
    up = mock.last_body(UPSTREAM_KIND[model])
    assert up.get("temperature") == pytest.approx(0.25)
    assert up.get("top_p") == pytest.approx(0.5)
    if UPSTREAM_KIND[model] == "anthropic":
        assert up.get("stop_sequences") == ["END", "STOP"]
        assert up.get("max_tokens") == 77
    else:
        assert up.get("stop") in (["END", "STOP"],)
        assert 77 in (up.get("max_tokens"), up.get("max_completion_tokens"))


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_sampling_params_carried(ant, mock, model):
    ant.messages.create(
        model=model,
        max_tokens=77,
        stop_sequences=["END", "STOP"],
        # anthropic 2.x no longer takes sampling parameters as arguments; older clients and raw
        # HTTP callers still send them, and the gateway carries them.
        extra_body={"temperature": 0.25, "top_p": 0.5},
        messages=[{"role": "user", "content": "Count."}],
    )
    up = mock.last_body(UPSTREAM_KIND[model])
    assert up.get("temperature") == pytest.approx(0.25)
    assert up.get("top_p") == pytest.approx(0.5)
    if UPSTREAM_KIND[model] == "anthropic":
        assert up.get("stop_sequences") == ["END", "STOP"]
        assert up.get("max_tokens") == 77
    else:
        stop = up.get("stop")
        assert stop == ["END", "STOP"]
        assert 77 in (up.get("max_tokens"), up.get("max_completion_tokens"))


def test_max_tokens_stop_reason(oai, ant, mock):
    """Hitting the output limit maps to length / max_tokens across formats."""
    for model in MODELS:
        r = oai.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Go on. [mock tokens=50]"}], max_tokens=5
        )
        assert r.choices[0].finish_reason == "length", (model, r.choices[0])
        m = ant.messages.create(model=model, max_tokens=5, messages=[{"role": "user", "content": "Go on. [mock tokens=50]"}])
        assert m.stop_reason == "max_tokens", (model, m.stop_reason)


JSON_SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "weather",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "temp_c": {"type": "number"}},
            "required": ["city", "temp_c"],
            "additionalProperties": False,
        },
    },
}


def test_response_format_json_schema_to_openai_upstream(oai, mock):
    oai.chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "Weather in Oslo as JSON."}], response_format=JSON_SCHEMA_FORMAT
    )
    up = mock.last_body("openai")
    assert up.get("response_format") == JSON_SCHEMA_FORMAT


def test_response_format_json_schema_to_anthropic_upstream(oai, mock):
    """json_schema reaches an Anthropic model as its structured-output ``output_config.format``."""
    oai.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "Weather in Oslo as JSON."}], response_format=JSON_SCHEMA_FORMAT
    )
    up = mock.last_body("anthropic")
    assert up["output_config"]["format"] == {"type": "json_schema", "schema": JSON_SCHEMA_FORMAT["json_schema"]["schema"]}


def test_response_format_json_object_to_anthropic_upstream_refused(oai, mock):
    before = mock.stats()["requests"]
    with pytest.raises(openai.BadRequestError) as ei:
        oai.chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "Weather in Oslo as JSON."}],
            response_format={"type": "json_object"},
        )
    assert ei.value.status_code == 400
    assert_names(ei.value.message, [("response_format", "json_object"), ("claude",)])
    assert mock.stats()["requests"] == before, "the request was sent upstream anyway"


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_structured_output_and_effort_carried(ant, mock, model):
    schema = JSON_SCHEMA_FORMAT["json_schema"]["schema"]
    ant.messages.create(
        model=model,
        max_tokens=50,
        output_config={"effort": "low", "format": {"type": "json_schema", "schema": schema}},
        messages=[{"role": "user", "content": "Weather in Oslo as JSON."}],
    )
    up = mock.last_body(UPSTREAM_KIND[model])
    if UPSTREAM_KIND[model] == "anthropic":
        assert up["output_config"] == {"format": {"type": "json_schema", "schema": schema}, "effort": "low"}
    else:
        assert up["response_format"]["type"] == "json_schema"
        assert up["response_format"]["json_schema"]["schema"] == schema
        assert up["reasoning_effort"] == "low"


# ------------------------------------------------------------------ (g) cached tokens


def _replay(mock, kind: str, body: dict) -> dict:
    """Send the exact upstream request to the mock directly and return the usage it reports."""
    body = dict(body)
    body.pop("stream", None)
    body.pop("stream_options", None)
    if kind == "openai":
        r = httpx.post(f"{mock.url}/v1/chat/completions", json=body, headers={"Authorization": "Bearer x"}, timeout=10)
    else:
        r = httpx.post(
            f"{mock.url}/v1/messages", json=body, headers={"x-api-key": "x", "anthropic-version": "2023-06-01"}, timeout=10
        )
    assert r.status_code == 200, r.text
    return r.json()["usage"]


CACHED_PROMPT = "A long, repeated prompt prefix that the provider cached. [mock cached=7]"


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_cached_tokens(oai, mock, model):
    r = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": CACHED_PROMPT}], max_tokens=100)
    u = r.usage
    assert u.prompt_tokens_details is not None, u
    assert u.prompt_tokens_details.cached_tokens == 7
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    kind = UPSTREAM_KIND[model]
    upstream = _replay(mock, kind, mock.last_body(kind))
    if kind == "anthropic":
        # OpenAI's prompt_tokens include the cached ones; Anthropic's input_tokens exclude them.
        assert upstream["cache_read_input_tokens"] == 7
        expected = upstream["input_tokens"] + 7 + (upstream.get("cache_creation_input_tokens") or 0)
        assert u.prompt_tokens == expected
        assert u.completion_tokens == upstream["output_tokens"]
    else:
        assert u.prompt_tokens == upstream["prompt_tokens"]


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_cached_tokens(ant, mock, model):
    m = ant.messages.create(model=model, max_tokens=100, messages=[{"role": "user", "content": CACHED_PROMPT}])
    u = m.usage
    assert u.cache_read_input_tokens == 7
    kind = UPSTREAM_KIND[model]
    upstream = _replay(mock, kind, mock.last_body(kind))
    if kind == "openai":
        assert upstream["prompt_tokens_details"]["cached_tokens"] == 7
        assert u.input_tokens == upstream["prompt_tokens"] - 7, "input_tokens must exclude cached tokens"
        assert u.output_tokens == upstream["completion_tokens"]
    else:
        assert u.input_tokens == upstream["input_tokens"]


@pytest.mark.parametrize("model", MODELS)
def test_cached_tokens_in_streams(oai, ant, mock, model):
    chunks = list(
        oai.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": CACHED_PROMPT}],
            max_tokens=100,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 7
    with ant.messages.stream(model=model, max_tokens=100, messages=[{"role": "user", "content": CACHED_PROMPT}]) as s:
        final = s.get_final_message()
    assert final.usage.cache_read_input_tokens == 7
