"""Chinese first, English available (router/i18n.py): refusals keep their machine ``error`` code and
carry the message in the request's language (zh-CN when it names none), WebSocket results too,
the command line prints in ``--lang``, and every message id in the code has its zh_CN translation.

The rest of the suite runs with ``FENLIU_LANG=en`` (tests/conftest.py); these tests remove it.
"""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from router import i18n
from router.cli import main
from router.i18n import _, t
from tests.router.serve_support import ENV, Agent, Client, add_accounts, message, start_server, write_config

ROOT = Path(__file__).resolve().parents[2]
FIELD = re.compile(r"\{[^{}]*\}")


@pytest.fixture
def chinese(monkeypatch):
    """The product's default: no ``FENLIU_LANG``, no ``--lang``."""
    monkeypatch.delenv("FENLIU_LANG", raising=False)
    previous = i18n.set_default(None)
    yield
    i18n.set_default(previous)


def extracted() -> dict[str, list[str]]:
    """Every message id the code marks, as ``pybabel extract -F babel.cfg`` finds them."""
    from babel.messages.extract import extract_from_dir

    found: dict[str, list[str]] = {}
    for folder in ("router", "plugins"):
        for filename, lineno, msgid, _comments, _context in extract_from_dir(
                ROOT / folder, method_map=[("**.py", "python")], keywords={"_": None, "gettext": None}):
            found.setdefault(msgid, []).append(f"{folder}/{filename}:{lineno}")
    return found


def test_every_message_in_the_code_has_its_chinese_translation():
    found = extracted()
    assert len(found) > 80, "the extraction found the marked messages"
    zh = i18n.catalogue("zh_CN")
    missing = {m: where for m, where in found.items() if not isinstance(m, str) or not zh.get(m)}
    assert not missing, f"no zh_CN translation (run pybabel extract/update, docs/service.md 'Languages'): {missing}"
    for msgid in found:
        assert sorted(FIELD.findall(zh[msgid])) == sorted(FIELD.findall(msgid)), (msgid, zh[msgid])
        assert not re.search(r"[A-Za-z]{4,}", FIELD.sub("", zh[msgid])) or re.search(r"[\u4e00-\u9fff]", zh[msgid]), msgid


def test_language_negotiation_and_late_translation(chinese):
    assert i18n.negotiate(None) is None and i18n.negotiate("fr-FR, de;q=0.5") is None
    assert i18n.negotiate("en-US,en;q=0.9,zh-CN;q=0.8") == "en"
    assert i18n.negotiate("zh-CN,zh;q=0.9,en;q=0.8") == "zh_CN"
    assert i18n.negotiate("en;q=0.2, zh-Hans;q=0.7") == "zh_CN"
    assert i18n.negotiate("en;q=0, zh") == "zh_CN"
    reason = _("agent {agent!r} is not online", agent="a-07")
    assert str(reason) == "agent 'a-07' is not online"  # logs and str(exc) stay English
    assert t(reason) == "客服 'a-07' 不在线" and t(reason, "en") == "agent 'a-07' is not online"
    assert t(ValueError(reason)) == "客服 'a-07' 不在线"
    nested = _("{reason} (forbidden: {words})", reason=_("blocked by the outbound filter"), words="微信")
    assert t(nested) == "被发送过滤拦截（违禁：微信）"
    assert t("signature does not match the body") == "签名与请求体不符"  # a plain message id, looked up
    assert t("违禁词: 微信") == "违禁词: 微信"  # anything else as it is


@pytest.fixture
async def server(tmp_path, monkeypatch, chinese):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    cfg = write_config(tmp_path)
    add_accounts(tmp_path / "fenliu.db")
    srv = await start_server(cfg)
    client = Client(srv.url, aiohttp.ClientSession())
    try:
        yield srv, client
    finally:
        await client.http.close()
        await srv.stop()


async def _get(c: Client, path: str, **headers: str) -> tuple[int, dict]:
    async with c.http.get(f"{c.url}{path}", headers=headers) as r:
        return r.status, await r.json()


@pytest.mark.anyio
async def test_a_refusal_is_chinese_by_default_and_english_on_request_with_the_same_code(server):
    _srv, c = server
    status, zh = await _get(c, "/v1/conversations")
    status_en, en = await _get(c, "/v1/conversations", **{"Accept-Language": "en-US,en;q=0.9"})
    assert status == status_en == 401 and zh["error"] == en["error"] == "missing_token"
    assert zh["message"].startswith("缺少登录令牌") and en["message"].startswith("missing bearer token")
    _, zh_cn = await _get(c, "/v1/conversations", **{"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"})
    assert zh_cn == zh
    _, by_query = await _get(c, "/v1/conversations?lang=en", **{"Accept-Language": "zh-CN"})
    assert by_query == en  # ?lang= first: what a page's own language switch sends on a WebSocket

    token = await c.login("acme:b01")  # an agent of tb-b only
    auth = {"Authorization": f"Bearer {token}"}
    status, zh = await _get(c, "/v1/shops/pdd-a/buyers/b-1", **auth)
    status_en, en = await _get(c, "/v1/shops/pdd-a/buyers/b-1", **auth, **{"Accept-Language": "en"})
    assert status == status_en == 403 and zh["error"] == en["error"] == "shop_forbidden", (zh, en)
    assert zh["message"] == "无权限：账号 'acme:b01' 无权访问店铺 'pdd-a'"
    assert en["message"] == "forbidden: shop 'pdd-a' is not permitted to account 'acme:b01'"

    async with c.http.post(f"{c.url}/v1/auth/login", json={"account": "acme:a01", "password": "nope"}) as r:
        assert r.status == 401 and (await r.json())["message"] == "账号或密码错误"


@pytest.mark.anyio
async def test_a_transfer_refusal_reads_chinese_in_the_workbench(server):
    """The issue's "agent 'a-07' is not online": a dispatcher refusal crossing the service's task."""
    _srv, c = server
    agent = await Agent.connect(c, await c.login("acme:a01"))
    await agent.next("hello")
    msg = message("m-1", "b-4", text="在吗")
    assert (await c.post_messages("pdd-a", msg))[0] == 202
    frame = await agent.next("assigned", conversation_id="pdd-a:b-4")
    lead = await c.login("acme:lead-a")
    status, body = await c.call("POST", f"/v1/conversations/{frame['conversation_id']}/transfer", lead,
                                json={"to_agent": "a-02"})
    assert status == 409 and body["message"] == "客服 'a-02' 不在线", body

    r = await agent.request({"type": "transfer", "conversation_id": "pdd-a:b-4", "to_agent": "a-02"})
    assert not r["ok"] and r["reason"] == "客服 'a-02' 不在线", r
    await agent.close()


@pytest.mark.anyio
async def test_websocket_results_are_in_the_upgrade_requests_language(server):
    _srv, c = server
    token = await c.login("acme:b01")
    agent = await Agent.connect(c, token)
    await agent.next("hello")
    r = await agent.request({"type": "reply", "conversation_id": "pdd-a:b-1", "text": "你好"})
    assert not r["ok"] and r["reason"] == "无权限：你的账号无权访问该店铺", r
    r = await agent.request({"type": "close", "conversation_id": "tb-b:b-9"})
    assert not r["ok"] and r["reason"] == "会话 'tb-b:b-9' 不存在或已结束", r
    await agent.close()

    ws = await c.http.ws_connect(f"{c.url.replace('http', 'ws')}/v1/agents/ws",
                                 headers={"Authorization": f"Bearer {token}", "Accept-Language": "en"})
    english = Agent(ws)
    await english.next("hello")
    r = await english.request({"type": "close", "conversation_id": "tb-b:b-9"})
    assert not r["ok"] and r["reason"] == "no open conversation 'tb-b:b-9'", r
    await english.close()


@pytest.fixture
def logging_restored():
    """``main()`` points structlog at this test's captured stderr; later tests must not log into
    that closed stream."""
    import structlog

    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_cli_tables_in_chinese_by_default_and_english_with_lang(chinese, tmp_path, capsys, demo_config, logging_restored):
    from router.store import Store

    store = tmp_path / "fenliu.db"
    Store(store).close_sync()
    argv = ["stats", "--config", str(demo_config), "--store", str(store)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Fenliu 统计" in out and "会话数" in out and "3分钟回复率" in out and "sessions" not in out
    assert main(["--lang", "en", *argv]) == 0
    out = capsys.readouterr().out
    assert "Fenliu statistics" in out and "sessions" in out and "会话数" not in out
    assert main([*argv, "--lang", "en-US"]) == 0
    assert "sessions" in capsys.readouterr().out
    assert i18n.current() == "zh_CN", "--lang is the command's, not the process's after it"

    assert main(["stats", "--config", str(demo_config), "--store", str(tmp_path / "none.db")]) == 1
    assert "错误：" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--lang", "fr", *argv])


def test_simulation_summary_labels_follow_the_language(chinese):
    from router.report import ROWS

    assert [t(label) for label, _get in ROWS][:2] == ["已分流消息", "会话"]
    assert [t(label, "en") for label, _get in ROWS][:2] == ["messages routed", "conversations"]
