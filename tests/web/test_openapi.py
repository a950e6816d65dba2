"""The published contract (router/service/openapi.py): what the server serves is what docs/ holds, every
route is described (and nothing else), each route's security matches its gate, and schemathesis
run against a real ``fenliu serve`` on loopback — logged in, bridge requests signed — gets no 5xx
and only answers the document describes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import hypothesis.strategies as st
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from router.service.access import access_of
from router.service.openapi import document, encoded
from router.core.signing import SIGNATURE_HEADER, sign
from tests.router.serve_support import ENV, SECRET_A, SECRET_B, start_server
from tests.web.support import Served, write_config

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
SECRETS = {"pdd-a": SECRET_A.encode(), "tb-b": SECRET_B.encode()}
SHOPS = list(SECRETS)
AGENTS = ["a-01", "a-02", "b-01"]
PLATFORMS = ["pinduoduo", "doudian"]
# Requests a shop's bridge signs with the shop's secret (the pinduoduo relay signs like the bridge).
SIGNED = re.compile(r"^/v1/(?:shops/([^/]+)/(?:messages|ratings)|webhooks/pinduoduo/([^/]+))$")
# How each kind of gate shows in the document.
SECURITY = {"public": [[]], "signed": [[{"signature": []}], [{"signature": []}, {"doudian": []}]]}

schema = schemathesis.openapi.from_dict(document(), config=schemathesis.Config.from_dict({
    "generation": {"max-examples": 25},
    # examples: the document has none; coverage: hundreds of boundary cases per operation, past
    # this test's time budget (the hypothesis fuzz tests of issue 15 cover the edges).
    "phases": {"examples": {"enabled": False}, "coverage": {"enabled": False}, "stateful": {"enabled": False}},
}))


def test_served_document_is_the_checked_in_one(tmp_path):
    """``docs/openapi.json`` is regenerated with ``python -m router.service.openapi > docs/openapi.json``."""
    assert DOCS.read_bytes() == encoded(), "docs/openapi.json is stale: python -m router.service.openapi > docs/openapi.json"
    served = Served(tmp_path)
    served.start()
    try:
        r = requests.get(f"{served.url}/openapi.json", timeout=10)
    finally:
        served.stop()
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.content == DOCS.read_bytes()


@pytest.mark.anyio
async def test_every_route_is_described_with_its_gate(tmp_path, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    srv = await start_server(write_config(tmp_path))
    try:
        routes = {(r.method.lower(), r.resource.canonical): access_of(r.handler)
                  for r in srv.runner.app.router.routes() if r.method != "HEAD"}
    finally:
        await srv.stop()
    paths = document()["paths"]
    described = {(m, p): op for p, item in paths.items() for m, op in item.items()}
    assert sorted(set(routes) - set(described)) == [], "routes the document does not describe"
    assert sorted(set(described) - set(routes)) == [], "described routes the server does not have"
    for key, access in routes.items():
        security = described[key]["security"]
        if access in SECURITY:
            assert security in SECURITY[access] or (key[1] == "/metrics" and {} in security), key
        else:  # account:<role>[:all_shops]: a bearer token (or, for a WebSocket, a ticket)
            assert {"bearer": []} in security, key


def test_every_refusal_is_an_error_body():
    """Every 4xx/5xx is ``Error`` or one of its extensions, each with ``error`` and ``message``."""
    schemas = document()["components"]["schemas"]
    shapes = {"Error", "IngestRejected", "Overloaded", "ConfigRejected"}
    for name in shapes:
        assert {"error", "message"} <= set(schemas[name]["required"]), name
    for path, item in document()["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                if int(status) >= 400 and path != "/healthz":  # a failed /healthz is the health body, 503
                    refs = set(re.findall(r"schemas/(\w+)", json.dumps(response["content"])))
                    assert refs and refs <= shapes, (method, path, status, refs)


# -- schemathesis against a live server -----------------------------------------------------------------


class SigningSession(requests.Session):
    """Signs what a bridge would sign, over the exact bytes sent, so generated messages get past
    the signature check and reach the decoder and the router."""

    def send(self, request: requests.PreparedRequest, **kwargs):  # type: ignore[override]
        m = SIGNED.match(urlsplit(request.url).path)
        shop = m and (m.group(1) or m.group(2))
        if shop in SECRETS:
            body = request.body or b""
            request.headers[SIGNATURE_HEADER] = sign(SECRETS[shop], body.encode() if isinstance(body, str) else body)
        return super().send(request, **kwargs)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    served = Served(tmp_path_factory.mktemp("openapi"))
    served.start()
    session = SigningSession()
    headers = {"Authorization": f"Bearer {served.token('acme')}"}
    try:
        yield served, session, headers
    finally:
        session.close()
        served.stop()
        log = (served.root / "serve.log").read_text(errors="replace")
        assert "Traceback" not in log, log[-4000:]


@schema.hook("flatmap_path_parameters")
def known_ids(context, path_parameters):
    """Half the time, ids the server knows, so requests get past "unknown shop" to the handler."""
    if not isinstance(path_parameters, dict):
        return st.just(path_parameters)

    def known(shop, agent, platform):
        out = dict(path_parameters)
        if "platform" in out:
            out["platform"] = platform
        if "shop_id" in out:
            out["shop_id"] = shop
        if "agent_id" in out:
            out["agent_id"] = agent
        if isinstance(out.get("cid"), str) and ":" in out["cid"]:
            out["cid"] = f"{shop}:{out['cid'].split(':', 1)[1]}"
        return out

    return st.one_of(st.just(path_parameters), st.builds(known, st.sampled_from(SHOPS), st.sampled_from(AGENTS),
                                                                     st.sampled_from(PLATFORMS)))


def _same_shop(case) -> None:
    """A generated message or rating names its own shop; make it the URL's, as a bridge would."""
    shop = (case.path_parameters or {}).get("shop_id")
    if shop is None:
        return
    items = case.body if isinstance(case.body, list) else [case.body]
    for item in items:
        if isinstance(item, dict):
            if isinstance(item.get("shop_id"), str):
                item["shop_id"] = shop
            if isinstance(item.get("conversation_id"), str):
                item["conversation_id"] = f"{shop}:{item['conversation_id']}"


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_schemathesis(case, live):
    served, session, headers = live
    _same_shop(case)
    case.call_and_validate(base_url=served.url, session=session, headers=headers, timeout=10,
                           checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                   response_schema_conformance])
