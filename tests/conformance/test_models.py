"""(j) /v1/models through both SDKs, health endpoints."""

from __future__ import annotations

from helpers import CONFIGURED_MODELS, ant_headers, oai_headers


def test_openai_sdk_models_list(oai):
    page = oai.models.list()
    ids = [m.id for m in page.data]
    assert set(CONFIGURED_MODELS) <= set(ids), ids
    assert len(ids) == len(set(ids))
    for m in page.data:
        assert m.object == "model"


def test_anthropic_sdk_models_list(ant):
    page = ant.models.list()
    ids = [m.id for m in page.data]
    assert set(CONFIGURED_MODELS) <= set(ids), ids
    for m in page.data:
        assert m.type == "model"
        assert m.display_name
        assert m.created_at


def test_models_shapes_raw(raw):
    r = raw.get("/v1/models", headers=oai_headers())
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list" and isinstance(body["data"], list)
    r = raw.get("/v1/models", headers=ant_headers())
    assert r.status_code == 200
    body = r.json()
    assert isinstance(body["data"], list) and "has_more" in body
    assert "first_id" in body and "last_id" in body


def test_models_requires_key(raw):
    r = raw.get("/v1/models")
    assert r.status_code == 401


def test_health(raw):
    assert raw.get("/healthz").status_code == 200
    assert raw.get("/readyz").status_code == 200
