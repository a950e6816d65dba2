"""Chinese first, English available (router/core/i18n.py): refusals keep their machine ``error`` code and
carry the message in the request's language (zh-CN when it names none), WebSocket results too,
the command line prints in ``--lang``, and every message id in the code has its zh_CN translation.

The rest of the suite runs with ``FENLIU_LANG=en`` (tests/conftest.py); these tests remove it.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import get_args

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.core import i18n
from router.tools.cli import main
from router.core.i18n import _, t
from router.core.models import Kind
from tests.router.core.test_config import mutate, mutation
from tests.redis.support import shared_redis  # noqa: F401 - a fixture (Redis key prefix, cleaned up)
from tests.router.serve_support import ENV, Agent, Client, add_accounts, message, start_server, write_config

ROOT = Path(__file__).resolve().parents[3]
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
    for folder in ("router", "plugins", "adapters", "policies"):
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
    from router.storage.store import Store

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
    from router.tools.report import ROWS

    assert [t(label) for label, _get in ROWS][:2] == ["已分流消息", "会话"]
    assert [t(label, "en") for label, _get in ROWS][:2] == ["messages routed", "conversations"]


# -- no English where a person reads Chinese ---------------------------------------------------------

#: Words that stay as they are in Chinese text: names of things, formats and units.
ALLOWED = {"fenliu", "Fenliu", "Erlang", "JSON", "TOML", "HTTP", "UTF", "BOM", "IANA", "UUID", "RFC", "ISO", "Unix",
           "Base64", "YYYY", "MM", "DD", "URL", "ID", "VIP", "SQLite", "PostgreSQL", "Redis", "ms", "Asia", "Shanghai",
           "min", "ok", "nan", "inf"}
_COMMAND = re.compile(r"\bfenliu(?: (?:faq mine|accounts [a-z]+|[a-z][a-z-]+))?\b")  # a command to type
_FIELD_NAME = re.compile(r"字段 [^\s：]+")  # a JSON field's name, as the catalogue introduces one
_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"|`[^`\n]*`")
_TOKEN = re.compile(r"(?<![\w\-/.$])[A-Za-z][\w.\-/\[\]@*+:]*")  # not --options


def leaks(text: str, ids: set[str] = frozenset()) -> set[str]:
    """English words in ``text`` that are not data: quoted values, paths, key paths and ids (a token
    with a digit, ``.``, ``_``, ``-``, ``/`` or a bracket), the configuration's names, and
    :data:`ALLOWED`. What is left is a message someone forgot to put in the catalogue."""
    found = set()
    text = _FIELD_NAME.sub(" ", _COMMAND.sub(" ", _QUOTED.sub(" ", text)))
    for token in _TOKEN.findall(text):
        token = token.rstrip(".-:")
        if len(token) < 2 or re.search(r"[\d._\-/\[\]@*+]", token) or token in ALLOWED or token in ids:
            continue
        found.add(token)
    return found


def config_ids(*dirs: Path) -> set[str]:
    """The names a configuration gives things (shops, agents, skills, policies, plugins, hooks, word
    list categories, platforms, strategies): data, shown as they are in any language."""
    from router.core.config import load_config

    ids: set[str] = set()
    for d in dirs:
        config = load_config(d)
        ids |= set(config.shops) | set(config.agents) | set(config.policies) | set(config.strategies)
        ids |= {s for a in config.agents.values() for s in a.skills} | {s.platform for s in config.shops.values()}
        for info in config.plugins.describe():
            ids |= {info.name, *info.hooks, *info.module.split(".")}
        for policy in config.policies.values():
            d = policy.dispatch
            ids |= {d.default_skill, *d.skill_targets, *(s for t in d.targets for s in t.skills)}
    from router.tools.scenario import Scenario

    ids |= set(Scenario().traffic.mix)  # the skill groups a scenario's buyers ask for (and plan staffs)
    return ids | {"contact"}  # the demo word list's category of the checked reply


def test_the_leak_finder_finds_english_and_passes_data():
    assert leaks("警告：插件 bot：loaded", {"bot"}) == {"loaded"}
    assert leaks("字段 items[0].ts：应为整数，收到字符串") == set()
    assert leaks("店铺 'pdd-1001' 的 least_load, presale", {"presale"}) == set()
    assert leaks("report written to var/r.html") == {"report", "written", "to"}
    assert leaks("创建：fenliu accounts add NAME，或 fenliu faq mine --from 今天") == {"NAME"}


@pytest.fixture
def wide(monkeypatch):
    """rich would cut long ids in narrow columns (``logist…``); a wide terminal shows them whole."""
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("FENLIU_LOG_LEVEL", "error")  # logs stay English, for operators


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[.*$\n?", re.MULTILINE)


def _run(capsys, *argv: str) -> tuple[int, str]:
    """``fenliu --lang zh-CN …`` in this process: its exit status, and what it printed (log lines,
    English for operators, left out)."""
    code = main(["--lang", "zh-CN", *argv])
    out = capsys.readouterr()
    return code, _LOG_LINE.sub("", out.out + out.err)


def _html_text(page: str) -> str:
    """The text a reader sees in a page: element text and SVG ``<text>``, not styles."""
    from html.parser import HTMLParser

    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.skip, self.parts = 0, []

        def handle_starttag(self, tag, attrs):
            self.skip += tag in ("style", "script")

        def handle_endtag(self, tag):
            self.skip -= tag in ("style", "script")

        def handle_data(self, data):
            if not self.skip:
                self.parts.append(data)

    parser = Text()
    parser.feed(page)
    return "\n".join(parser.parts)


def _policy_copy(tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "least_load"
    shutil.copytree(ROOT / "tests" / "data" / "sim_policy", target)
    policy = target / "policies" / "default.toml"
    policy.write_text(policy.read_text().replace('"round_robin"', '"least_load"'))
    return target


def test_simulate_and_plan_print_and_report_in_chinese(chinese, wide, tmp_path, capsys, logging_restored):
    """The simulator's tables (summary, per seed), its HTML report with the charts' titles, axes and
    legends, and ``fenliu plan`` with its report: nothing English but names and units."""
    data = ROOT / "tests" / "data"
    other = _policy_copy(tmp_path)
    ids = config_ids(data / "sim_policy", other)
    report = tmp_path / "sim.html"
    code, out = _run(capsys, "simulate", "--config", str(data / "sim_policy"), "--compare", str(other),
                     "--scenario", str(data / "sim_policy.toml"), "--baseline", "--report", str(report))
    assert code == 0, out
    assert "普通轮询" in out and "首次人工回复等待" in out and "报告已写入" in out
    assert not leaks(out, ids), out
    page = report.read_text(encoding="utf-8")
    assert '<html lang="zh-CN">' in page
    seen = _html_text(page)
    assert not leaks(seen, ids), sorted(leaks(seen, ids))
    charts = "".join(re.findall(r"<svg.*?</svg>", page, re.DOTALL))
    for label in ("排队数", "首次人工回复等待", "接待会话数", "利用率 %", "普通轮询"):  # axes, titles, legend
        assert label in charts, label

    code, out = _run(capsys, "simulate", "--config", str(data / "sim_policy"), "--scenario",
                     str(data / "sim_policy.toml"), "--baseline", "--seeds", "2")
    assert code == 0 and "±" in out, out
    assert not leaks(out, ids), out

    plan = tmp_path / "plan.html"
    code, out = _run(capsys, "plan", "--config", str(data / "sim_policy"), "--scenario", str(data / "sim_policy.toml"),
                     "--report", str(plan))
    assert code in (0, 2) and "班次" in out, out
    assert not leaks(out, ids), out
    page = plan.read_text(encoding="utf-8")
    assert not leaks(_html_text(page), ids), sorted(leaks(_html_text(page), ids))
    assert "每小时各技能组计划客服数" in page


def test_stats_faq_accounts_check_route_and_plugins_print_in_chinese(chinese, wide, tmp_path, capsys, demo_config,
                                                                     logging_restored, monkeypatch):
    import io
    import shutil

    from tests.plugins.test_bot_mine import plant
    from tests.router.storage.test_stats import store as stats_store

    ids = config_ids(demo_config)
    history = stats_store.__wrapped__(tmp_path)
    outputs = []
    for argv in (["stats", "--config", str(demo_config), "--store", str(history)],
                 ["stats", "--config", str(demo_config), "--store", str(history), "--from", "soon"],
                 ["stats", "--config", str(demo_config), "--store", str(history), "--from", "2025-11-24", "--to", "2025-11-23"],
                 ["stats", "--config", str(demo_config), "--store", str(history), "--shop", "nope"],
                 ["stats", "--config", str(demo_config), "--store", str(tmp_path / "none.db")],
                 ["plugins", "--config", str(demo_config)],
                 ["check", "--config", str(demo_config)],
                 ["check-reply", "--config", str(demo_config), "--shop", "pdd-1001", "加我微信，全网最低价"]):
        outputs.append(_run(capsys, *argv))

    mined = tmp_path / "mined" / "fenliu.db"
    mined.parent.mkdir()
    plant(mined)
    outputs.append(_run(capsys, "faq", "mine", "--config", str(demo_config), "--store", str(mined),
                        "--from", "2025-11-23", "--to", "2025-11-24"))
    faq_keys = {"proposal", "entry", "questions", "counts", "cluster", "count", "words", "shops", "examples", "faq",
                "acme", "nobody"}  # and the accounts' names below

    db = tmp_path / "accounts.db"
    for argv, stdin in ((["add", "acme", "--role", "admin", "--shops", "*", "--password-stdin"], "correct horse battery\n"),
                        (["add", "acme:a01", "--role", "agent", "--agent", "a-01", "--password-stdin"], "correct horse battery\n"),
                        (["add", "acme:x", "--role", "agent", "--agent", "a-99", "--password-stdin"], "correct horse battery\n"),
                        (["disable", "acme:a01"], ""), (["list"], ""), (["passwd", "nobody", "--password-stdin"], "short\n")):
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        outputs.append(_run(capsys, "accounts", "--config", str(demo_config), "--store", str(db), *argv))

    bad = tmp_path / "bad"
    shutil.copytree(demo_config, bad)
    agents = (bad / "agents.toml").read_text()
    (bad / "agents.toml").write_text(agents.replace('id = "a-02"', 'id = "a-01"', 1)
                                     .replace('shops = ["tb-2001"]', 'shops = ["tb-9999"]', 1)
                                     .replace("max_concurrent = 4", "max_concurrent = -4", 1))
    policy = (bad / "policies" / "default.toml").read_text()
    (bad / "policies" / "default.toml").write_text(policy.replace('on_agent_offline = "reroute"', 'on_agent_offline = "panic"'))
    outputs.append(_run(capsys, "check", "--config", str(bad)))
    (bad / "shops.toml").write_text('[[shops]]\nid = pdd\n')
    outputs.append(_run(capsys, "check", "--config", str(bad)))
    outputs.append(_run(capsys, "check", "--config", str(tmp_path / "nowhere")))

    lines = tmp_path / "lines.jsonl"
    lines.write_text('{"shop_id": "pdd-1001", "msg_id": "m1", "buyer_id": "b1", "text": "在吗", "ts": "soon"}\n'
                     '{"shop_id": "pdd-1001", "msg_id": "m2"}\n{"nope\n', encoding="utf-8")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO()))
    monkeypatch.setattr("sys.stdout", io.TextIOWrapper(io.BytesIO()))  # decisions go to stdout's buffer
    code, err = _run(capsys, "route", "--config", str(demo_config), str(lines))
    assert code == 1 and "第 1 行" in err and "字段 ts：" in err, err
    outputs.append((code, err))

    assert any("错误：" in out for _code, out in outputs)
    for _code, out in outputs:
        assert not leaks(out, ids | faq_keys), out


@pytest.mark.anyio
async def test_a_validation_error_reads_chinese_with_its_path_and_the_same_code(server):
    """msgspec's own words (``Expected `float | null`, got `str` - at `$.ts```) in a 400, in the
    asker's language; the ``error`` code and the field's path are the same in both."""
    _srv, c = server
    bad = [message("m-1", ts="soon"), message("m-2", text=7), {"shop_id": "pdd-a", "msg_id": "m-3"}]
    status, zh = await c.post_messages("pdd-a", bad)
    status_en, en = await c.post_messages("pdd-a", bad, headers={"Accept-Language": "en"})
    assert status == status_en == 400 and zh["error"] == en["error"] == "invalid_items", (zh, en)
    assert en["message"] == "item 0: ts: expected float | null, got str (and 2 more)", en
    assert zh["message"] == "第 0 条：字段 ts：应为数字或空值，收到字符串（另有 2 条）", zh
    assert [e["reason"] for e in zh["errors"]] == ["字段 ts：应为数字或空值，收到字符串", "字段 text：应为字符串，收到整数",
                                                 "缺少必填字段 'buyer_id'"]
    assert [e["index"] for e in zh["errors"]] == [e["index"] for e in en["errors"]]

    status, zh = await c.post_messages("pdd-a", None, raw=b'{"shop_id": "pdd-a",')
    assert status == 400 and zh["error"] == "invalid_items" and "不是有效的 JSON" in zh["message"], zh
    async with c.http.post(f"{c.url}/v1/auth/login", json={"account": 7, "password": "x"}) as r:
        body = await r.json()
    assert r.status == 400 and body["error"] == "bad_request", body
    assert body["message"].startswith("字段 account：应为字符串，收到整数（应为 {"), body
    assert not leaks(body["message"].split("（应为")[0])


@pytest.mark.anyio
async def test_protocol_refusals_are_chinese_by_default(server):
    """The 431 and malformed-head replies aiohttp's parser triggers (no request to negotiate with:
    the default language), with their stable codes."""
    from tests.router.service.test_hardening import request_bytes, send

    srv, _c = server
    port = int(srv.url.rsplit(":", 1)[1])
    status, _h, got = await send(port, request_bytes("GET", "/healthz", headers={f"X-H{i}": "1" for i in range(300)}))
    assert status == 431 and got["error"] == "headers_too_large", got
    assert got["message"].startswith("HTTP 请求格式错误：请求行或请求头过大（最多 100 个请求头"), got
    status, _h, got = await send(port, b"GARBAGE\r\n\r\n")
    assert status == 400 and got["error"] == "bad_request" and got["message"].startswith("HTTP 请求格式错误："), got


def test_the_request_head_timeout_is_chinese(chinese):
    from router.service.http import error_body

    body = error_body(408, _("request head not complete within {seconds:g} s (server.header_timeout_s)", seconds=10.0))
    assert body == {"error": "request_timeout", "message": "请求头未在 10 秒内收完（server.header_timeout_s）"}


KINDS = set(get_args(Kind))  # the choices a refusal names are ids
int_or_text = st.one_of(st.integers(), st.text(max_size=5), st.floats(allow_nan=False), st.booleans(), st.none(),
                        st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(fields=st.dictionaries(st.sampled_from(["shop_id", "msg_id", "buyer_id", "text", "ts", "kind", "order", "extra"]),
                              int_or_text, max_size=6),
       raw=st.one_of(st.none(), st.binary(max_size=12)))
def test_every_decode_refusal_has_a_chinese_reason_and_keeps_its_english(fields, raw):
    """Whatever msgspec says about a message (wrong types, missing or unknown fields, bad JSON),
    the reason is a catalogue message: English as before, Chinese with the same field names."""
    import msgspec

    from router.core.ingest import decode_message, explain

    body = raw if raw is not None else msgspec.json.encode(fields)
    try:
        decode_message(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        reason = explain(exc)
        assert t(reason, "en") == str(reason)
        zh = t(reason, "zh_CN")
        assert re.search(r"[\u4e00-\u9fff]", zh) and not leaks(zh, KINDS), (str(reason), zh)


def test_a_refusal_crossing_instances_is_translated_by_the_asker():
    """The Redis backend sends a refusal to the instance that asked as JSON data; it is the same
    message there, translated in that instance's asker's language."""
    import msgspec

    reason = _("conversation {cid!r} is not yours", cid="pdd-a:b-1")
    back = i18n.revive(msgspec.json.decode(msgspec.json.encode(i18n.portable(reason))))
    assert str(back) == str(reason) and t(back, "zh_CN") == t(reason, "zh_CN") != str(reason)
    nested = _("item {index}: {reason}", index=2, reason=_("unknown agent {agent!r}", agent="a-9"))
    assert t(i18n.revive(msgspec.json.decode(msgspec.json.encode(i18n.portable(nested)))), "zh_CN") == t(nested, "zh_CN")
    assert i18n.revive(i18n.portable("plain")) == "plain" and i18n.portable(None) is None


def test_english_text_that_lost_its_message_is_still_translated(chinese):
    """A message formatted to a plain ``str`` on the way (inside msgspec, an f-string elsewhere) is
    matched back to its catalogue entry; text that is not one stays as it is."""
    assert t("unknown agent 'a-9'") == "未知客服 'a-9'"
    assert t("item 3: unknown agent 'a-9'") == "第 3 条：未知客服 'a-9'"
    assert t("a-9: b") == "a-9: b" and t("在吗") == "在吗"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(mutation(), min_size=1, max_size=3))
def test_a_damaged_configuration_is_explained_in_chinese(tmp_path_factory, demo_config, mutations):
    """Any damage to the demo configuration (tests/router/core/test_config.py's mutations): each
    ``file: key: reason`` line's reason reads Chinese."""
    import shutil

    from router.core.config import ConfigErrors, load_config

    cfg = tmp_path_factory.mktemp("mutated") / "config"
    shutil.copytree(demo_config, cfg)
    for name, kind, rnd in mutations:
        (cfg / name).write_bytes(mutate((cfg / name).read_bytes(), kind, rnd))
    try:
        load_config(cfg)
    except ConfigErrors as exc:
        for e in exc.errors:
            zh = t(e.reason, "zh_CN")
            assert re.search(r"[\u4e00-\u9fff]", zh) and not leaks(zh), (str(e), zh)
            assert t(e, "zh_CN").startswith(e.file)


@pytest.mark.parametrize("edit", [
    ("policies/default.toml", 'welcome = "{buyer}，您好！', 'welcome = "{nick}，您好！'),  # unknown placeholder
    ("policies/default.toml", '"fruit"]', '"fruit", "nope"]'),  # an FAQ group that does not exist
    ("policies/default.toml", 'strategy = "least_load"', 'strategy = "fastest"'),  # a list of strategies
], ids=["placeholder", "faq-group", "strategy"])
def test_errors_that_list_what_is_known_read_chinese(tmp_path, demo_config, edit):
    """Errors that name the choices (placeholders, FAQ groups, strategies): the names are quoted
    data, the words around them Chinese; random damage rarely writes these."""
    import shutil

    from router.core.config import ConfigErrors, load_config

    cfg = tmp_path / "config"
    shutil.copytree(demo_config, cfg)
    name, old, new = edit
    text = (cfg / name).read_text(encoding="utf-8")
    assert old in text
    (cfg / name).write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigErrors) as raised:
        load_config(cfg)
    for e in raised.value.errors:
        zh = t(e.reason, "zh_CN")
        assert re.search(r"[\u4e00-\u9fff]", zh) and not leaks(zh), (str(e), zh)


def test_charts_use_an_installed_cjk_font_in_chinese(chinese):
    from matplotlib import font_manager

    from router.tools.report import CJK_FONTS, _setup, cjk_font

    installed = {f.name for f in font_manager.fontManager.ttflist} & set(CJK_FONTS)
    if not installed:
        pytest.skip("no CJK font installed (Debian: fonts-noto-cjk); charts fall back to DejaVu")
    assert _setup().rcParams["font.sans-serif"][0] == cjk_font() in installed
    assert _setup().rcParams["font.sans-serif"][0] == cjk_font()
    previous = i18n.set_default("en")
    try:
        assert _setup().rcParams["font.sans-serif"][0] == "DejaVu Sans"
    finally:
        i18n.set_default(previous)


def test_no_message_is_marked_inside_an_f_string():
    """Babel does not look into f-strings: a ``_()`` or ``gettext()`` there is never extracted, so
    its text would be missing from the catalogue without the test above noticing."""
    import ast

    found = []
    for folder in ("router", "plugins", "adapters", "policies"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.JoinedStr):
                    for call in ast.walk(node):
                        if isinstance(call, ast.Call) and getattr(call.func, "id", getattr(call.func, "attr", None)) in ("_", "gettext"):
                            found.append(f"{path.relative_to(ROOT)}:{call.lineno}")
    assert not found, found


@pytest.mark.parametrize("argv", [["check-reply", "--config", "config"], ["stats", "--from"], ["stats", "--nope"],
                                  ["accounts", "frob"], ["--lang", "fr", "check"]])
def test_argparse_refusals_are_chinese(chinese, capsys, argv, logging_restored):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "用法：fenliu" in err and "错误：" in err, err
    assert not leaks(err.split("错误：", 1)[1], {"ACTION", "text", "en"}), err  # argument names, a language code
    with pytest.raises(SystemExit):
        main(["--lang", "en", *argv])
    assert "error: " in capsys.readouterr().err


def test_every_commands_help_is_chinese(chinese):
    """``fenliu … --help`` for every command and sub-command: our help texts and argparse's own
    headings. Metavars (``CONFIG``), options, --role and db choices are names."""
    import argparse

    from router.tools.cli import build_parser

    def parsers(p: argparse.ArgumentParser):
        yield p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    names = {"admin", "agent", "supervisor", "upgrade", "status", "WebSocket", "en"}
    seen = 0
    for p in parsers(build_parser()):
        names |= {c for a in p._actions if isinstance(a, argparse._SubParsersAction) for c in a.choices}  # commands
        names |= {a.dest for a in p._actions if not a.option_strings}  # positional arguments' names
        text = p.format_help()
        assert text.startswith("用法：") and "选项：" in text, text
        assert not {w for w in leaks(text, names) if not w.isupper()}, (p.prog, text)
        seen += 1
    assert seen >= 15


@pytest.mark.anyio
@pytest.mark.redis
@pytest.mark.slow
async def test_a_refusal_from_the_owning_redis_instance_reads_in_the_askers_language(tmp_path, shared_redis):  # noqa: F811
    """Redis backend, two instances, one shard: an agent on the instance that does not own it asks
    to close a conversation nobody holds; the owner refuses, and the agent reads the refusal in its
    own socket's language (the reason crosses as its message id and fields)."""
    import json

    from tests.redis.support import PASSWORD, Instances, owners, wait_for
    from tests.redis.support import write_config as redis_config

    r, prefix = shared_redis
    cfg = redis_config(tmp_path, prefix, shops={"s": "FENLIU_TEST_SECRET_A"},
                       agents=[{"id": "solo", "shops": ["*"], "cap": 3}], shards=1)
    nodes = Instances(cfg, tmp_path, 2, ["solo"])
    try:
        await nodes.healthy()
        await wait_for(lambda: owners(r, prefix, 1)[0] is not None, 15, "the shard to have an owner")
        router_pid = int(owners(r, prefix, 1)[0].rsplit("-", 2)[1])
        other = next(i for i, p in enumerate(nodes.procs) if p.pid != router_pid)
        async with aiohttp.ClientSession() as http:
            client = Client(nodes.urls[other], http)
            token = await client.login("ops:solo", PASSWORD)
            reasons = {}
            for lang in ("zh-CN", "en"):
                async with http.ws_connect(f"{client.url.replace('http', 'ws')}/v1/agents/ws",
                                           headers={"Authorization": f"Bearer {token}", "Accept-Language": lang}) as ws:
                    await ws.send_json({"type": "close", "conversation_id": "s:b-nobody", "ref": "c"})
                    async with asyncio.timeout(15):
                        while (frame := json.loads((await ws.receive()).data))["type"] != "result":
                            pass
                    assert frame["ok"] is False, frame
                    reasons[lang] = frame["reason"]
            assert reasons == {"zh-CN": "会话 's:b-nobody' 不存在或已结束", "en": "no open conversation 's:b-nobody'"}
    finally:
        nodes.stop()


@pytest.mark.anyio
async def test_a_rejected_or_refused_reload_lists_its_reasons_in_the_askers_language(server):
    srv, c = server
    cfg = srv.service.config.dir
    admin = await c.login("acme")
    path = cfg / "policies" / "default.toml"
    good = path.read_bytes()
    path.write_bytes(good.replace(b'"round_robin"', b'"round_robin\xff"'))
    status, zh = await c.call("POST", "/v1/admin/reload", admin)
    assert (status, zh["error"]) == (422, "config_rejected"), zh
    assert zh["errors"] == [f"{path}：第 3 行第 24 列：不是有效的 UTF-8（字节 0xff）；请将文件存为 UTF-8"], zh
    path.write_bytes(good)
    agents = cfg / "agents.toml"
    agents.write_text(agents.read_text(encoding="utf-8").split("[[agents]]\nid = \"b-01\"")[0], encoding="utf-8")
    status, zh = await c.call("POST", "/v1/admin/reload", admin)
    status_en, en = await c.call("POST", "/v1/admin/reload?lang=en", admin)
    assert status == status_en == 409 and zh["error"] == en["error"] == "config_refused", (zh, en)
    assert zh["errors"] == [f"{agents}：agents：店铺 'tb-b' 将没有客服接待（目前 1 名：b-01）"], zh
    assert en["errors"] == [f"{agents}: agents: no agent would serve shop 'tb-b' (now 1: b-01)"], en
    assert "force" in zh["message"] and not leaks(zh["message"].split("（")[0]), zh["message"]
