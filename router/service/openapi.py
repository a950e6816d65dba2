"""The published contract of ``fenliu serve``: an OpenAPI 3.1 document generated from the
msgspec structs the handlers decode and answer with (``msgspec.json.schema_components``), so
the schemas cannot drift from the types. The table below adds only what types cannot say: the
routes, their parameters, who may call them and which statuses they answer.

``GET /openapi.json`` serves it; ``docs/openapi.json`` is the same document checked in
(``python -m router.service.openapi > docs/openapi.json`` regenerates it; a test keeps them equal). The
WebSocket frames are JSON Schemas in ``components`` too, tied to their endpoints under the
root ``x-websocket`` key (OpenAPI has no WebSocket operations).
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Annotated, Any

import msgspec
from aiohttp import web

from router import __version__
from router.service import api_types as t
from router.core.config import Id
from router.core.models import Message, RatingEvent, WsClientFrame, WsServerFrame
from router.service.access import public
from router.service.api_types import (
    CheckRequest,
    LoginRequest,
    ProfileRequest,
    StatusRequest,
    TicketResponse,
    TransferRequest,
)

REF = "#/components/schemas/{name}"
JSON = "application/json"


class Op(msgspec.Struct, frozen=True):
    """One route: ``body`` is the request's type, ``responses`` maps a status to the answer's
    type (``None``: no body; a string: that media type, not JSON)."""

    method: str
    path: str
    summary: str
    security: tuple[str, ...] = ()
    params: tuple[tuple[str, str, Any, str], ...] = ()  # (name, in, type, description)
    body: Any = None
    responses: dict[int, tuple[Any, str]] = {}
    description: str = ""
    tags: tuple[str, ...] = ()


Cid = Annotated[str, msgspec.Meta(min_length=3, max_length=385, pattern=r"^[^:]+:.+$")]
BuyerId = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Platform = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9_-]+$")]
PageName = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_-]+\.(html|js|css|svg|png)$")]
CatalogueName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z]{2}(-[A-Za-z]{2})?\.json$")]
Batch = Message | Annotated[list[Message], msgspec.Meta(min_length=1)]

SHOP = ("shop_id", "path", Id, "a shop id from shops.toml")
BAD = {400: (t.Error, "malformed request: headers, parameters or body (the message names the field)"),
       408: (t.Error, "the request head did not arrive within server.header_timeout_s"),
       431: (t.Error, "request line or headers over the server's limits")}
TOO_LARGE = (t.Error, "body over server.max_body_bytes (or a batch over server.max_batch)")
AUTH = {**BAD, 401: (t.Error, "no bearer token, or one invalid, expired or revoked"),
        429: (t.Error, "too many requests from this client or account; see Retry-After")}
FORBIDDEN = {403: (t.Error, "the account's role or shops do not permit this")}
UNKNOWN = {404: (t.Error, "an id in the request names no shop, agent or conversation this account may see")}
SIGNED = {**BAD, 401: (t.Error, "missing or wrong X-Fenliu-Signature, or the shop has no secret"),
          404: (t.Error, "unknown shop"), 413: TOO_LARGE}

OPERATIONS: tuple[Op, ...] = (
    Op("post", "/v1/shops/{shop_id}/messages", "Ingest buyer messages (one, or a batch)", ("signature",), (SHOP,),
       Batch, {202: (t.IngestAccepted, "all taken"),
               **SIGNED, 400: ((t.Error, t.IngestRejected), "malformed JSON, or some items refused (the rest were taken)"),
               503: (t.Overloaded, "the ingest queue is full or the journal failed; see Retry-After")},
       "Signed by the shop's bridge: the HMAC-SHA256 of the raw body with the shop's secret. Idempotent by "
       "msg_id (a repeat counts as a duplicate).", ("ingest",)),
    Op("post", "/v1/shops/{shop_id}/ratings", "A buyer's satisfaction rating (满意度评价)", ("signature",), (SHOP,),
       RatingEvent, {202: (t.RatingAccepted, "recorded"), **SIGNED,
                     503: (t.Error, "the journal failed; see Retry-After")}, tags=("ingest",)),
    Op("post", "/v1/webhooks/{platform}/{shop_id}", "A platform's push (Doudian events, a PMC relay)",
       ("signature", "doudian"),
       (("platform", "path", Platform, "the adapter's name: doudian, pinduoduo, …"), SHOP),
       dict[str, Any] | list[Any],
       {200: (dict[str, Any] | list[Any], "the acknowledgement the platform expects"),
        202: (t.IngestAccepted, "messages taken"), **BAD,
        401: (t.Error, "the platform's signature is missing or wrong"), 404: (t.Error, "unknown shop or platform"),
        413: TOO_LARGE,
        503: (t.Overloaded, "the ingest queue is full or the journal failed")},
       "Each platform signs in its own way: Doudian with event-sign, a PMC relay with X-Fenliu-Signature "
       "(either scheme, as the platform uses). The body is the platform's own format.", ("ingest",)),
    Op("post", "/v1/auth/login", "Log in: a bearer token", (), (), LoginRequest,
       {200: (t.LoginResponse, "the token and who it is for"), **BAD,
        401: (t.Error, "wrong account or password"),
        429: (t.Error, "locked out after repeated failures, or too many logins at once; see Retry-After"),
        503: (t.Error, "the password checks are saturated; see Retry-After")},
       "Accounts are `main` or `main:sub`. Failures are counted per account and per client address; "
       "past the limit the answer is 429 for a growing lockout.", ("accounts",)),
    Op("post", "/v1/auth/ws-ticket", "A single-use ticket for a WebSocket URL", ("bearer",), (), None,
       {200: (TicketResponse, "pass it as ?ticket= within its lifetime"), **AUTH}, tags=("accounts",)),
    Op("get", "/v1/me", "Who the token belongs to", ("bearer",), (), None,
       {200: (t.Me, "account, role, shops, agent, skills, server clock"), **AUTH}, tags=("accounts",)),
    Op("get", "/v1/conversations", "Open conversations of the permitted shops", ("bearer",),
       (("shop_id", "query", Id, "only this shop"),
        ("state", "query", t.ConversationState, "only this state"),
        ("agent_id", "query", Id, "only this agent's")), None,
       {200: (t.ConversationList, "sorted by shop, then opening time"), **AUTH, **FORBIDDEN, **UNKNOWN}, tags=("workbench",)),
    Op("get", "/v1/conversations/{cid}", "One open conversation with its history", ("bearer",),
       (("cid", "path", Cid, "`{shop_id}:{buyer_id}`"),), None,
       {200: (t.ConversationDetail, "the conversation"), **AUTH, **FORBIDDEN,
        404: (t.Error, "no open conversation with this id")}, tags=("workbench",)),
    Op("post", "/v1/conversations/{cid}/transfer", "Transfer (转接) to an agent or a skill group", ("bearer",),
       (("cid", "path", Cid, "`{shop_id}:{buyer_id}`"),), TransferRequest,
       {200: (t.Transferred, "the decisions the transfer made"), **AUTH, **FORBIDDEN,
        404: (t.Error, "no such open conversation, shop or agent"),
        409: (t.Error, "the router refused the transfer (e.g. no such skill group)")},
       "By the agent holding the conversation or a supervisor of its shop.", ("workbench",)),
    Op("get", "/v1/agents", "Agents serving the permitted shops, with their live state", ("bearer",), (), None,
       {200: (t.AgentList, "agents"), **AUTH}, tags=("workbench",)),
    Op("put", "/v1/agents/{agent_id}/status", "Set an agent's status (在线 / 小休 / 离线)", ("bearer",),
       (("agent_id", "path", Id, "an agent id from agents.toml"),), StatusRequest,
       {200: (t.AgentStatusChanged, "the new status and the conversations it moved"), **AUTH, **FORBIDDEN,
        404: (t.Error, "unknown agent"), 409: (t.Error, "the router refused the change")},
       "The agent itself, or a supervisor whose shops contain all of the agent's.", ("workbench",)),
    Op("get", "/v1/shops/{shop_id}/buyers/{buyer_id}", "A buyer's profile: tags, notes, orders with logistics and "
       "after-sale requests", ("bearer",),
       (SHOP, ("buyer_id", "path", BuyerId, "the platform's buyer id")), None,
       {200: (t.Profile, "the profile (empty when none)"), **AUTH, **FORBIDDEN, **UNKNOWN},
       "`order` is the buyer's current order; `orders` the buyer's orders at the shop (from messages' order "
       "context and platform pushes), the most recently changed first, each with its newest logistics events "
       "and its after-sale requests.", ("workbench",)),
    Op("get", "/v1/aftersales", "Open after-sale requests (售后) of the permitted shops", ("bearer",),
       (("shop_id", "query", Id, "only this shop"),), None,
       {200: (t.AfterSales, "the open requests, with the buyer's open conversation"), **AUTH, **FORBIDDEN, **UNKNOWN},
       tags=("workbench",)),
    Op("put", "/v1/shops/{shop_id}/buyers/{buyer_id}", "Tag a buyer or add a note", ("bearer",),
       (SHOP, ("buyer_id", "path", BuyerId, "the platform's buyer id")), ProfileRequest,
       {200: (t.Profile, "the profile after the change"), **AUTH, **FORBIDDEN, 404: (t.Error, "unknown shop")},
       "Agents may add tags (`add_tags`) and notes; replacing `tags` needs a supervisor.", ("workbench",)),
    Op("get", "/v1/quick-replies", "The shop's quick replies (话术库), placeholders filled", ("bearer",),
       (("conversation_id", "query", Cid, "fill placeholders from this conversation (gives the shop)"),
        ("shop_id", "query", Id, "the shop, without a conversation"),
        ("q", "query", str, "typed text: suggest replies by keyword")),
       None, {200: (t.QuickReplies, "grouped replies"), **AUTH, **FORBIDDEN, 404: (t.Error, "unknown shop")},
       "Give `conversation_id` or `shop_id`.", ("workbench",)),
    Op("post", "/v1/replies/check", "Run the outbound filter on a draft without sending", ("bearer",), (),
       CheckRequest, {200: (t.CheckResult, "the verdict"), **AUTH, **FORBIDDEN,
                            404: (t.Error, "unknown shop or conversation")},
       "Give `conversation_id` or `shop_id`.", ("workbench",)),
    Op("get", "/v1/today", "Today's figures: the agent's own, or a supervisor's shops'", ("bearer",), (), None,
       {200: ((t.AgentToday, t.TeamToday), "figures"), **AUTH, **FORBIDDEN}, tags=("workbench",)),
    Op("get", "/v1/dashboard", "The supervisors' dashboard", ("bearer",), (), None,
       {200: (t.Dashboard, "queues, agents, conversations, figures, recent decisions"), **AUTH, **FORBIDDEN},
       tags=("workbench",)),
    Op("get", "/v1/stats", "Live counts and a period's figures", ("bearer",),
       (("from", "query", Annotated[str, msgspec.Meta(max_length=64)], "epoch seconds, YYYY-MM-DD or an ISO date-time"),
        ("to", "query", Annotated[str, msgspec.Meta(max_length=64)], "epoch seconds, YYYY-MM-DD or an ISO date-time"),
        ("shop", "query", Id, "only this shop"), ("agent", "query", Id, "only this agent")), None,
       {200: (t.StatsResponse, "counts and figures"), **AUTH, **FORBIDDEN, **UNKNOWN}, tags=("ops",)),
    Op("post", "/v1/admin/reload", "Reload the configuration from disk", ("bearer",),
       (("force", "query", Annotated[str, msgspec.Meta(max_length=16)],
         "`1` or `true`: apply a valid configuration the guards refused (also `{\"force\": true}` as the body)"),),
       None,
       {200: (t.ReloadResponse, "the new configuration is live"), **AUTH, **FORBIDDEN,
        409: (t.ConfigRejected, "valid, but it would empty a file, leave a shop without agents or turn an outbound "
                                "filter off (error: config_refused); kept the running one, force to apply"),
        422: (t.ConfigRejected, "the files have mistakes; the running configuration is kept")},
       "Needs an admin of all shops.", ("ops",)),
    Op("get", "/healthz", "Liveness and readiness", (), (), None,
       {200: (t.Health, "ready"), **BAD, 503: (t.Health, "starting, or failed closed (reason says why)")}, tags=("ops",)),
    Op("get", "/metrics", "Prometheus metrics", ("metrics",), (), None,
       {200: ("text/plain", "the exposition format"), **BAD,
        401: (t.Error, "the metrics token is required and was not given")},
       "Asks for the token of server.metrics_token_env when it is set.", ("ops",)),
    Op("get", "/openapi.json", "This document", (), (), None,
       {200: (dict[str, Any], "the OpenAPI 3.1 document"), **BAD}, tags=("ops",)),
    Op("get", "/v1/agents/ws", "The agents' WebSocket (see x-websocket)", ("ticket", "bearer"),
       (("ticket", "query", Annotated[str, msgspec.Meta(max_length=512)], "from POST /v1/auth/ws-ticket"),), None,
       {101: (None, "switching protocols"), **AUTH, **FORBIDDEN}, tags=("workbench",)),
    Op("get", "/v1/supervisors/ws", "The supervisors' live feed (see x-websocket)", ("ticket", "bearer"),
       (("ticket", "query", Annotated[str, msgspec.Meta(max_length=512)], "from POST /v1/auth/ws-ticket"),), None,
       {101: (None, "switching protocols"), **AUTH, **FORBIDDEN}, tags=("workbench",)),
    Op("get", "/", "Redirect to the workbench's login page", (), (), None,
       {302: (None, "to /web/"), **BAD}, tags=("pages",)),
    Op("get", "/web/", "The login page", (), (), None,
       {200: ("text/html", "the page"), **BAD}, tags=("pages",)),
    Op("get", "/web/{name}", "A page or asset of the workbench", (),
       (("name", "path", PageName, "a file of router/service/web/"),), None,
       {200: ("*/*", "the file (html, js, css, svg or png)"), **BAD, 404: (t.Error, "no such page")}, tags=("pages",)),
    Op("get", "/web/i18n/{lang}", "The pages' strings in one language (zh-CN.json, en.json)", (),
       (("lang", "path", CatalogueName, "a catalogue of router/service/web/i18n/"),), None,
       {200: (dict[str, str], "message key → text"), **BAD, 404: (t.Error, "no such catalogue")}, tags=("pages",)),
)

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "The token from POST /v1/auth/login, in the Authorization header only (never in a URL)."},
    "signature": {"type": "apiKey", "in": "header", "name": "X-Fenliu-Signature",
                  "description": "sha256=<hex HMAC-SHA256 of the raw body, keyed with the shop's secret>."},
    "doudian": {"type": "apiKey", "in": "header", "name": "event-sign",
                "description": "Doudian's own: hex(md5(app_key + raw body + app_secret)), with the app key in app-id."},
    "ticket": {"type": "apiKey", "in": "query", "name": "ticket",
               "description": "A single-use, short-lived ticket from POST /v1/auth/ws-ticket, for browsers' WebSockets."},
    "metrics": {"type": "http", "scheme": "bearer",
                "description": "The token in the environment variable server.metrics_token_env names."},
}

WEBSOCKETS = {
    "/v1/agents/ws": {
        "description": "An agent's conversations: the server says hello with what the agent holds, then pushes "
                       "assignments, messages, transfers and closes; the client accepts, replies, transfers, closes, "
                       "sets its status and notes. Every client frame with a `ref` gets a `result` frame echoing it.",
        "client": {"$ref": REF.format(name="WsClientFrame")},
        "server": {"$ref": REF.format(name="WsServerFrame")},
    },
    "/v1/supervisors/ws": {
        "description": "A supervisor's live feed of the permitted shops: a `decision` frame as each commits and a "
                       "`dashboard` frame every two seconds. Client frames are ignored.",
        "server": {"$ref": REF.format(name="SupervisorFrame")},
    },
    "close_codes": {"1001": "the server is shutting down",
                    "1007": "a frame that is not JSON",
                    "1008": "a frame nested deeper than any frame can be",
                    "1009": "a frame over the size limit",
                    "1011": "a fault of the server's (logged with its traceback)",
                    "4000": "replaced by a newer connection of the same agent",
                    "4008": "too slow to read its frames",
                    "4401": "the token stopped being valid (expired, password changed, account disabled or removed)"},
}


def _content(kind: Any, refs: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    if isinstance(kind, str):
        return {kind: {"schema": {"type": "string"}}}
    if isinstance(kind, tuple):  # untagged alternatives, which a msgspec union cannot express
        return {JSON: {"schema": {"anyOf": [refs[k] for k in kind]}}}
    return {JSON: {"schema": refs[kind]}}


def _body_types() -> list[Any]:
    kinds: list[Any] = []
    for op in OPERATIONS:
        for kind in [op.body, *(v[0] for v in op.responses.values()), *(p[2] for p in op.params)]:
            for k in kind if isinstance(kind, tuple) else (kind,):
                if k is not None and not isinstance(k, str) and k not in kinds:
                    kinds.append(k)
    return kinds


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (cached: it depends only on the code)."""
    frames = [WsClientFrame, WsServerFrame, t.SupervisorFrame]
    kinds = _body_types()
    schemas, components = msgspec.json.schema_components(kinds + frames, ref_template=REF)
    refs = dict(zip(kinds, schemas[:len(kinds)], strict=True))
    for name, schema in zip(("WsClientFrame", "WsServerFrame", "SupervisorFrame"), schemas[len(kinds):], strict=True):
        components[name] = schema
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        item: dict[str, Any] = {"summary": op.summary, "operationId": f"{op.method}{_camel(op.path)}",
                                "tags": list(op.tags)}
        if op.description:
            item["description"] = op.description
        item["security"] = [{name: []} for name in op.security] if op.security else []
        if op.path == "/metrics":
            item["security"].append({})  # no token unless server.metrics_token_env is set
        if op.params:
            item["parameters"] = [{"name": name, "in": where, "required": where == "path", "description": text,
                                   "schema": refs[kind]} for name, where, kind, text in op.params]
        answers = dict(op.responses)
        if op.body is not None:
            item["requestBody"] = {"required": True, "content": _content(op.body, refs)}
            answers.setdefault(413, TOO_LARGE)
        responses: dict[str, Any] = {}
        for status, (kind, text) in sorted(answers.items()):
            responses[str(status)] = {"description": text}
            if kind is not None:
                responses[str(status)]["content"] = _content(kind, refs)
        item["responses"] = responses
        paths.setdefault(op.path, {})[op.method] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": "Fenliu (分流)", "version": __version__,
                 "description": "Multi-shop message router for e-commerce customer service. Every refusal is an "
                                "`Error` body: a stable `error` code and a `message` for people."},
        "tags": [{"name": n} for n in ("ingest", "accounts", "workbench", "ops", "pages")],
        "paths": paths,
        "components": {"schemas": dict(sorted(components.items())), "securitySchemes": SECURITY_SCHEMES},
        "x-websocket": WEBSOCKETS,
    }


def _camel(path: str) -> str:
    words = [w.strip("{}") for w in path.replace(".", "/").replace("-", "/").split("/") if w]
    return "".join(w[:1].upper() + w[1:] for w in (x.replace("_", " ").title().replace(" ", "") for x in words)) or "Root"


@functools.cache
def encoded() -> bytes:
    """The document as served and as checked in: indented, keys in code order, a final newline."""
    return (json.dumps(document(), indent=2, ensure_ascii=False) + "\n").encode()


@public
async def openapi_handler(request: web.Request) -> web.Response:
    return web.Response(body=encoded(), content_type="application/json")


def main() -> int:
    sys.stdout.buffer.write(encoded())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
