"""Issue 15, "no input gets a 500", on the HTTP side: a real server on loopback fed what a
careless or hostile client sends — non-ASCII signatures, JSON nested thousands deep, numbers past
1e308, headers sent one byte at a time or 20 KB long — answers a JSON 4xx naming what was wrong,
lets the good items of a batch through, and logs one line per refusal, never a traceback. A
hypothesis fuzz of every endpoint a client reaches without logging in closes the file."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.doudian import event_sign
from router.core.ingest import split_array
from router.core.signing import SIGNATURE_HEADER, sign
from tests.router.serve_support import (
    ENV,
    ROOT,
    SECRET_A,
    SECRET_B,
    NoWechat,
    add_accounts,
    db_rows,
    free_port,
    message,
    start_server,
    write_config,
)

HEADER_TIMEOUT_S = 1.0


def configure(cfg: Path, header_timeout_s: float = HEADER_TIMEOUT_S) -> Path:
    main = cfg / "fenliu.toml"
    main.write_text(main.read_text().replace("[server]\n", f"[server]\nheader_timeout_s = {header_timeout_s}\n", 1))
    return cfg


@pytest.fixture
async def server(tmp_path, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    cfg = configure(write_config(tmp_path, max_body=1 << 20, max_batch=50))
    add_accounts(tmp_path / "fenliu.db")
    srv = await start_server(cfg, NoWechat())
    try:
        yield srv
    finally:
        await srv.stop()


def request_bytes(method: str, path: str, body: bytes = b"", headers: dict[str, str | bytes] | None = None) -> bytes:
    """One HTTP/1.1 request as bytes, header values sent as given (a client library would refuse
    or re-encode the non-ASCII and invalid UTF-8 values these tests need)."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close",
             f"Content-Length: {len(body)}".encode()]
    for name, value in (headers or {}).items():
        lines.append(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode()))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def parse_response(data: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    parsed: Any = body
    if headers.get("content-type", "").startswith("application/json"):
        parsed = json.loads(body)
    return int(status_line.split(" ", 2)[1]), headers, parsed


async def send(port: int, data: bytes) -> tuple[int, dict[str, str], Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(30):
            return parse_response(await reader.read())
    finally:
        writer.close()


def signed(secret: str, body: bytes) -> dict[str, str | bytes]:
    return {SIGNATURE_HEADER: sign(secret.encode(), body), "Content-Type": "application/json"}


def deep(n: int = 3000) -> bytes:
    return b"[" * n + b"]" * n


def assert_refusal(status: int, body: Any, expected: int, code: str | None = None) -> None:
    assert status == expected, body
    assert isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"], body
    if code is not None:
        assert body["error"] == code, body


# -- signatures: non-ASCII and invalid UTF-8 are refused as signatures, not crashes --------------------

BAD_SIGNATURES = ["sha256=é".encode(), "sha256=签名".encode(), b"sha256=\xff\xfe\x80", b"\xe9=abc", "sha256=ａｂ".encode()]


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/v1/shops/pdd-a/messages", "/v1/shops/pdd-a/ratings",
                                  "/v1/webhooks/bridge/pdd-a", "/v1/webhooks/pinduoduo/pdd-a"])
async def test_a_non_ascii_signature_is_a_401_not_a_500(server, path, fenliu_logs):
    body = json.dumps(message("m-1")).encode()
    for value in BAD_SIGNATURES:
        status, _, got = await send(server.port, request_bytes("POST", path, body, {SIGNATURE_HEADER: value}))
        assert_refusal(status, got, 401, "unauthorized")
    assert not [e for e in fenliu_logs if e.get("exc_info") or e.get("log_level") in ("error", "critical")]


@pytest.mark.anyio
async def test_a_non_ascii_doudian_event_sign_or_app_id_is_a_401(server):
    body = b'[{"tag":"200","msg_id":"1","data":"{}"}]'
    good = event_sign("7000001", body, SECRET_B)
    cases: list[dict[str, str | bytes]] = [
        {"app-id": "7000001", "event-sign": "é" * 32},
        {"app-id": "7000001", "event-sign": b"\xff" * 32},
        {"app-id": "应用", "event-sign": good},
        {"app-id": b"\xff\xfe", "event-sign": good},
    ]
    for headers in cases:
        status, _, got = await send(server.port, request_bytes("POST", "/v1/webhooks/doudian/tb-b", body, headers))
        assert_refusal(status, got, 401, "unauthorized")
    status, _, got = await send(server.port, request_bytes("POST", "/v1/webhooks/doudian/tb-b", body,
                                                           {"app-id": "7000001", "event-sign": good}))
    assert status == 200 and got == {"code": 0, "msg": "success"}


# -- bodies: nesting and number range, with a valid signature ---------------------------------------------


@pytest.mark.anyio
async def test_json_nested_thousands_deep_in_a_batch_names_the_item_and_the_rest_goes_through(server, tmp_path):
    good = [json.dumps(message(f"m-{i}", f"b-{i}")).encode() for i in range(2)]
    nasty = b'{"shop_id": "pdd-a", "msg_id": "m-x", "buyer_id": "b-x", "buyer": {"nick": ' + deep() + b"}}"
    for bad in (deep(), nasty, b'{"a": ' * 3000 + b"1" + b"}" * 3000):
        body = b"[" + good[0] + b"," + bad + b"," + good[1] + b"]"
        for path in ("/v1/shops/pdd-a/messages", "/v1/webhooks/bridge/pdd-a"):
            status, _, got = await send(server.port, request_bytes("POST", path, body, signed(SECRET_A, body)))
            assert_refusal(status, got, 400, "invalid_items")
            assert [e["index"] for e in got["errors"]] == [1], got
            assert got["message"].startswith("item 1: ")
    assert db_rows(tmp_path / "fenliu.db", "SELECT msg_id FROM messages ORDER BY msg_id") == [("m-0",), ("m-1",)]


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/v1/shops/pdd-a/messages", "/v1/webhooks/bridge/pdd-a",
                                  "/v1/shops/pdd-a/ratings", "/v1/webhooks/pinduoduo/pdd-a"])
async def test_a_single_body_nested_thousands_deep_is_a_400(server, path):
    for body in (deep(), b'{"shop_id": "pdd-a", "junk": ' + deep() + b"}", b'{"a":' * 5000 + b"1" + b"}" * 5000,
                 b"[" * 3000, b'[{"a": 1}, ' + deep() + b"]]"):
        status, _, got = await send(server.port, request_bytes("POST", path, body, signed(SECRET_A, body)))
        assert_refusal(status, got, 400)


HUGE = "1" + "0" * 400  # an integer past 1e308: float() of it raises OverflowError


def pmc_frame(frame_id: int, content: str, type_: str = "pdd_refund_RefundCreated") -> dict[str, Any]:
    return {"commandType": "Common", "id": frame_id, "time": 1763880000123,
            "message": {"type": type_, "mallID": 1001, "content": content}}


@pytest.mark.anyio
async def test_a_pmc_refund_fee_past_1e308_names_the_frame_and_field(server, tmp_path):
    good = pmc_frame(1, json.dumps({"tid": "240101-90", "buyer_id": "b-50", "refund_fee": 1990}))
    bad = pmc_frame(2, '{"tid": "240101-91", "buyer_id": "b-51", "refund_fee": ' + HUGE + "}")
    nested = pmc_frame(3, '{"tid": "240101-92", "x": ' + deep().decode() + "}")
    body = json.dumps([good, bad, nested]).encode()
    status, _, got = await send(server.port, request_bytes("POST", "/v1/webhooks/pinduoduo/pdd-a", body,
                                                           signed(SECRET_A, body)))
    assert_refusal(status, got, 400, "invalid_items")
    assert [e["index"] for e in got["errors"]] == [1, 2], got
    assert "refund_fee" in got["errors"][0]["reason"]
    assert db_rows(tmp_path / "fenliu.db", "SELECT order_id, buyer_id FROM orders") == [("240101-90", "b-50")]
    single = json.dumps(bad).encode()
    status, _, got = await send(server.port, request_bytes("POST", "/v1/webhooks/pinduoduo/pdd-a", single,
                                                           signed(SECRET_A, single)))
    assert_refusal(status, got, 400, "invalid_items")
    assert "refund_fee" in got["message"]


@pytest.mark.anyio
async def test_a_doudian_pay_amount_past_1e308_names_the_event_and_field(server, tmp_path):
    good = {"tag": "101", "msg_id": "1", "data": json.dumps({"p_id": 6920000000000000001, "open_id": "b-60",
                                                              "pay_amount": 8900})}
    bad = {"tag": "101", "msg_id": "2", "data": '{"p_id": 6920000000000000002, "open_id": "b-61", "pay_amount": '
                                                + HUGE + "}"}
    body = json.dumps([good, bad]).encode()
    status, _, got = await send(server.port, request_bytes("POST", "/v1/webhooks/doudian/tb-b", body,
                                                           {"app-id": "7000001",
                                                            "event-sign": event_sign("7000001", body, SECRET_B)}))
    assert_refusal(status, got, 400, "invalid_items")
    assert [e["index"] for e in got["errors"]] == [1] and "pay_amount" in got["errors"][0]["reason"], got
    assert db_rows(tmp_path / "fenliu.db", "SELECT order_id, buyer_id FROM orders") == [("6920000000000000001", "b-60")]
    for body in (deep(), b'[{"tag": "1", "x": ' + deep() + b"}]"):
        status, _, got = await send(server.port, request_bytes("POST", "/v1/webhooks/doudian/tb-b", body,
                                                               {"app-id": "7000001",
                                                                "event-sign": event_sign("7000001", body, SECRET_B)}))
        assert_refusal(status, got, 400)


_plain_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('ab"\\[]{},: \n'), max_size=8) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10)


@settings(max_examples=150, deadline=None)
@given(items=st.lists(_plain_json, max_size=6), gap=st.sampled_from(["", " ", "\n\t "]), depth=st.integers(0, 3))
def test_the_fallback_splitter_finds_the_items_a_json_parser_finds(items, gap, depth):
    """``split_array`` (used when msgspec gives up on an array) splits any array — strings holding
    brackets, commas, quotes and backslashes included — into exactly its items."""
    items = [json.loads("[" * depth + json.dumps(i) + "]" * depth) for i in items]
    body = ("[" + gap + f"{gap},{gap}".join(json.dumps(i, ensure_ascii=False) for i in items) + gap + "]").encode()
    assert [json.loads(raw) for raw in split_array(body)] == items


# -- headers: slow, huge, malformed -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_client_sending_headers_slowly_is_cut_off(server):
    """Slowloris: each connection trickles a header line now and then but never ends the head. Each
    is closed once the header timeout has passed (a 408 or a plain close), while a normal request
    still gets through; a connection that sends nothing at all is closed the same way."""
    async def slow() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(b"POST /v1/shops/pdd-a/messages HTTP/1.1\r\nHost: x\r\n")
            for i in range(200):  # bounded: 200 trickles of 0.1 s, far past the 1 s header timeout
                try:
                    writer.write(f"X-Slow-{i}: 1\r\n".encode())
                    await writer.drain()
                except ConnectionError:
                    break
                try:
                    data = await asyncio.wait_for(reader.read(), 0.1)
                except TimeoutError:
                    continue
                return data or b"closed"
            return b""
        finally:
            writer.close()

    async def silent() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            async with asyncio.timeout(20 * HEADER_TIMEOUT_S):
                return await reader.read() or b"closed"
        finally:
            writer.close()

    results = await asyncio.gather(*(slow() for _ in range(20)), *(silent() for _ in range(5)))
    assert all(results), "every slow connection was closed"
    timed_out = [r for r in results if r != b"closed"]
    for data in timed_out:
        status, _, body = parse_response(data)
        assert_refusal(status, body, 408, "request_timeout")
    status, _, got = await send(server.port, request_bytes("GET", "/healthz"))
    assert status == 200 and got["status"] == "ok"


@pytest.mark.anyio
async def test_huge_and_malformed_headers_get_a_json_4xx(server, caplog, fenliu_logs):
    caplog.set_level(logging.DEBUG)
    huge = request_bytes("GET", "/healthz", headers={"X-Big": "a" * 20_000})
    many = request_bytes("GET", "/healthz", headers={f"X-H{i}": "1" for i in range(300)})
    long_path = request_bytes("GET", "/healthz?" + "a" * 20_000)
    for data in (huge, many, long_path):
        status, _, got = await send(server.port, data)
        assert_refusal(status, got, 431, "headers_too_large")
    for data in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
                 b"POST /v1/shops/pdd-a/messages HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
                 b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n"):
        status, _, got = await send(server.port, data)
        assert_refusal(status, got, 400, "bad_request")
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    assert not [e for e in fenliu_logs if e.get("exc_info")]


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/v1/shops/pdd-a/messages", "/v1/webhooks/bridge/pdd-a", "/v1/auth/login"])
async def test_a_compressed_body_that_does_not_inflate_is_a_400(server, path, caplog, fenliu_logs):
    caplog.set_level(logging.DEBUG)
    body = b"this is not gzip"
    headers = {**signed(SECRET_A, body), "Content-Encoding": "gzip"}
    status, _, got = await send(server.port, request_bytes("POST", path, body, headers))
    assert_refusal(status, got, 400, "bad_request")
    assert "content-encoding" in got["message"].lower()
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    assert not [e for e in fenliu_logs if e.get("exc_info")]


@pytest.mark.anyio
async def test_each_refusal_is_one_log_line_without_a_traceback(server, fenliu_logs, caplog):
    body = json.dumps(message("m-1")).encode()
    requests = [
        request_bytes("POST", "/v1/shops/pdd-a/messages", body, {SIGNATURE_HEADER: "sha256=é".encode()}),
        request_bytes("POST", "/v1/shops/pdd-a/messages", deep(), signed(SECRET_A, deep())),
        request_bytes("POST", "/v1/shops/nope/messages", body, signed(SECRET_A, body)),
        request_bytes("GET", "/healthz", headers={"X-Big": "a" * 20_000}),
    ]
    for data in requests:
        status, _, _ = await send(server.port, data)
        assert 400 <= status < 500
    lines = [e for e in fenliu_logs if e["event"] == "request_rejected"]
    assert [e["status"] for e in lines] == [401, 400, 404, 431], lines
    assert all(e.get("error") and e.get("reason") for e in lines)
    assert not [e for e in fenliu_logs if e.get("exc_info")]
    assert not [r for r in caplog.records if r.exc_info]


# -- the fuzz: every endpoint reachable without a login, against `fenliu serve` ----------------------------

_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
            | st.integers(10**300, 10**400) | st.integers(-(10**400), -(10**300)) | st.text(max_size=12))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
_ids = st.sampled_from(["pdd-a", "tb-b", "", "pdd-a:b-1"]) | st.text(max_size=10) | _json
_wild_number = (st.integers() | st.integers(10**300, 10**400) | st.floats(allow_nan=False) | st.text(max_size=5)
                | st.sampled_from([1e308, -1e308, 0, -1]))
_message = st.fixed_dictionaries(
    {"shop_id": _ids, "msg_id": _ids, "buyer_id": _ids},
    optional={"text": st.text(max_size=40) | _json, "ts": _wild_number, "kind": st.text(max_size=8),
              "order": st.fixed_dictionaries({}, optional={"order_id": _ids, "amount": _wild_number,
                                                          "status": _ids}) | _json,
              "buyer": _json, "junk": _json})
_content = st.fixed_dictionaries({}, optional={"tid": _ids, "order_sn": _ids, "refund_fee": _wild_number,
                                               "pay_amount": _wild_number, "buyer_id": _ids, "open_id": _ids,
                                               "p_id": _ids, "refund_amount": _wild_number, "x": _json})
_pmc = st.fixed_dictionaries(
    {"commandType": st.sampled_from(["Common", "HeartBeat", "Ack", "Fail", "x"])},
    optional={"id": _ids, "time": _wild_number, "message": st.fixed_dictionaries(
        {"type": st.sampled_from(["pdd_refund_RefundCreated", "pdd_trade_TradeSellerShip", "x"])},
        optional={"mallID": _ids, "content": _content.map(json.dumps) | st.text(max_size=20)}) | _json})
_doudian = st.fixed_dictionaries({"tag": st.sampled_from(["100", "101", "200", "0", 101]) | _ids},
                                 optional={"msg_id": _ids, "data": _content.map(json.dumps) | st.text(max_size=20)
                                           | _json})
_rating = st.fixed_dictionaries({"type": st.sampled_from(["rating", "tick", "x"])},
                                optional={"conversation_id": _ids, "score": _wild_number, "comment": _json,
                                          "ts": _wild_number})
_login = st.fixed_dictionaries({}, optional={"account": _ids, "password": _ids, "x": _json})


def _encoded(strategy: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    return strategy.map(lambda v: json.dumps(v, ensure_ascii=False).encode())


_deep = st.builds(lambda n, kind: (b"[" * n + b"]" * n) if kind else (b'{"a":' * n + b"1" + b"}" * n),
                  st.integers(500, 6000), st.booleans())
_noise = st.binary(max_size=64) | _encoded(_json) | _deep


def _bodies(item: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    return _encoded(item) | _encoded(st.lists(item, max_size=5)) | _noise | st.builds(
        lambda items, bad, at: b"[" + b",".join([*items[:at], bad, *items[at:]]) + b"]",
        st.lists(_encoded(item), max_size=3), _deep, st.integers(0, 3))


# (method, path, body, how it is signed)
_endpoints = st.one_of(
    st.tuples(st.just("POST"), st.just("/v1/shops/pdd-a/messages"), _bodies(_message), st.just("bridge")),
    st.tuples(st.just("POST"), st.just("/v1/webhooks/bridge/pdd-a"), _bodies(_message), st.just("bridge")),
    st.tuples(st.just("POST"), st.just("/v1/shops/pdd-a/ratings"), _bodies(_rating), st.just("bridge")),
    st.tuples(st.just("POST"), st.just("/v1/webhooks/pinduoduo/pdd-a"), _bodies(_pmc), st.just("bridge")),
    st.tuples(st.just("POST"), st.just("/v1/webhooks/doudian/tb-b"), _bodies(_doudian), st.just("doudian")),
    st.tuples(st.just("POST"), st.just("/v1/auth/login"), _bodies(_login), st.just("none")),
    st.tuples(st.just("GET"), st.sampled_from(["/healthz", "/healthz?x=%ff%fe", "/v1/shops/%ff/messages"]),
              st.just(b""), st.just("none")),
)
# A signature as sent: the right one, garbage bytes, a near miss, or none.
_signature_mode = st.sampled_from(["right", "right", "right", "garbage", "none"])
_header_bytes = st.binary(min_size=1, max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b)
_extra_headers = st.dictionaries(st.sampled_from(["Content-Type", "Content-Encoding", "app-id", "Expect",
                                                  "X-Forwarded-For", "Authorization"]),
                                 _header_bytes | st.sampled_from([b"gzip", b"deflate", b"br", b"100-continue"]),
                                 max_size=2)


class Served:
    """``fenliu serve`` as a subprocess whose log (stderr, JSON lines at warning) is kept in a file."""

    def __init__(self, root: Path) -> None:
        self.cfg = configure(write_config(root, max_body=1 << 20, max_batch=50), header_timeout_s=5.0)
        add_accounts(root / "fenliu.db")
        self.port = free_port()
        self.log = root / "serve.log"
        env = {**os.environ, **ENV, "FENLIU_LOG_LEVEL": "warning", "FENLIU_LOG_FORMAT": "json",
               "PYTHONUNBUFFERED": "1"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "router", "serve", "--config", str(self.cfg),
                                          "--port", str(self.port)], cwd=ROOT, env=env, stdout=out, stderr=out)
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if self.request(request_bytes("GET", "/healthz"))[0] == 200:
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline, "fenliu serve did not become healthy"
            time.sleep(0.1)

    def request(self, data: bytes) -> tuple[int, dict[str, str], Any]:
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(data)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return parse_response(b"".join(chunks))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def test_fuzzed_requests_get_no_5xx_and_leave_no_traceback(tmp_path):
    served = Served(tmp_path)
    refusals = 0

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(endpoint=_endpoints, mode=_signature_mode, garbage=_header_bytes, extra=_extra_headers)
    def one(endpoint: tuple[str, str, bytes, str], mode: str, garbage: bytes, extra: dict[str, bytes]) -> None:
        nonlocal refusals
        method, path, body, scheme = endpoint
        headers: dict[str, str | bytes] = dict(extra)
        headers.pop("Expect", None)  # a client that asks for 100-continue waits for it; not this test's point
        if scheme == "bridge":
            secret = SECRET_A
            headers[SIGNATURE_HEADER] = {"right": sign(secret.encode(), body), "garbage": garbage}.get(mode, b"")
        elif scheme == "doudian":
            headers["app-id"] = "7000001"
            headers["event-sign"] = {"right": event_sign("7000001", body, SECRET_B), "garbage": garbage}.get(mode, b"")
        headers = {k: v for k, v in headers.items() if v != b""}
        status, _, got = served.request(request_bytes(method, path, body, headers))
        assert status < 500, (path, body[:200], headers, got)
        if status >= 400:
            refusals += 1
            assert isinstance(got, dict) and got.get("error") and got.get("message"), (status, got)

    try:
        one()
    finally:
        served.stop()
    log = served.log.read_text(errors="replace")
    assert "Traceback" not in log and '"exception"' not in log, log[-3000:]
    rejected = [json.loads(line) for line in log.splitlines() if '"request_rejected"' in line]
    assert len(rejected) == refusals, "one log line per refusal"
