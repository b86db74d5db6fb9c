"""(k) secrets: run last (file order). Nothing the clients received, and nothing the gateway logged,
contains an upstream key or the master key; the mock saw the upstream keys and never the master key."""

from __future__ import annotations

import json

from conftest import RECORDED, UPSTREAM_LOG
from helpers import MASTER_KEY, SECRETS, UPSTREAM_ANTHROPIC_KEY, UPSTREAM_OPENAI_KEY


def test_upstream_auth_headers(oai, ant, mock):
    oai.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
    ant.messages.create(model="claude", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    reqs = mock.requests()
    oai_reqs = [r for r in reqs if r["path"].endswith("/chat/completions")]
    ant_reqs = [r for r in reqs if r["path"].endswith("/messages")]
    assert oai_reqs and ant_reqs
    for r in oai_reqs:
        assert r["headers"].get("authorization") == f"Bearer {UPSTREAM_OPENAI_KEY}", r["headers"]
    for r in ant_reqs:
        assert r["headers"].get("x-api-key") == UPSTREAM_ANTHROPIC_KEY, r["headers"]
        assert r["headers"].get("anthropic-version"), "no anthropic-version header upstream"
        assert "authorization" not in r["headers"], "an Authorization header went to the Anthropic upstream"


def test_master_key_never_sent_upstream(mock):
    log = UPSTREAM_LOG + mock.requests()
    assert log, "no upstream requests were recorded"
    for r in log:
        blob = json.dumps(r)
        assert MASTER_KEY not in blob, f"the master key reached the upstream: {r.get('path')}"


def test_no_secrets_in_responses():
    assert RECORDED, "no responses were recorded"
    for rec in RECORDED:
        text = rec.text()
        for s in SECRETS:
            assert s not in text, f"{s[:12]}... appears in a response to {rec.url} (status {rec.status})"


def test_no_secrets_in_gateway_logs(gateway_proc):
    logs = gateway_proc.logs()
    assert logs.strip(), "the gateway logged nothing at all"
    for s in SECRETS:
        assert s not in logs, f"{s[:12]}... appears in the gateway's log"
