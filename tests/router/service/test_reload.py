"""Hot reload: validate first, swap whole, keep the old configuration when the new one is bad,
refuse a valid one that takes something away unless forced, and keep watching through it all."""

from __future__ import annotations

import asyncio
import re
import shutil

import aiohttp
import anyio
import pytest

from router.core.config import load_config
from router.core.models import Message
from router.core.pipeline import Router
from router.service.reload import Reloader
from tests.conftest import T0, run_fenliu
from tests.policies.conftest import ONE_SHOP, agents_toml, policy, write_config
from tests.router import serve_support as ss

pytestmark = pytest.mark.anyio


def team(tmp_path, strategy="round_robin"):
    agents = agents_toml(*({"id": f"a{i}", "skills": ["presale"], "max_concurrent": 5} for i in range(1, 4)))
    return write_config(tmp_path / "cfg", ONE_SHOP, agents, {"p": policy(strategy)})


async def test_good_reload_changes_new_routing_and_keeps_open_conversations(tmp_path):
    cfg = team(tmp_path)
    router = Router(load_config(cfg))
    out = await router.handle_message(Message("s1", "m1", "b1", "hi", ts=T0))
    assert out[0].agent_id == "a1"
    (cfg / "policies" / "p.toml").write_text(policy("weighted"), encoding="utf-8")
    (cfg / "agents.toml").write_text(agents_toml(
        {"id": "a1", "skills": ["presale"]}, {"id": "a2", "skills": ["presale"]},
        {"id": "a3", "skills": ["presale"], "weight": 10_000}), encoding="utf-8")
    reloader = Reloader(cfg, router.reload)
    result = await reloader.reload("test")
    assert result.ok and result.generation == 1
    assert router.config.policy_for("s1").dispatch.strategy == "weighted"
    again = await router.handle_message(Message("s1", "m2", "b1", "again", ts=T0 + 1))
    assert again[0].agent_id == "a1", "an open conversation keeps its agent"
    picks = [(await router.handle_message(Message("s1", f"n{i}", f"c{i}", "hi", ts=T0 + 2 + i)))[0].agent_id
             for i in range(3)]
    assert picks == ["a3", "a3", "a3"], "round robin would have spread these"


async def test_bad_reload_keeps_the_old_configuration_and_reports(tmp_path):
    cfg = team(tmp_path)
    router = Router(load_config(cfg))
    before = router.config
    failures = []
    (cfg / "policies" / "p.toml").write_text(policy("fastest_finger"), encoding="utf-8")
    (cfg / "agents.toml").write_text('[[agents]]\nid = "a1"\nskills = ["presale"]\nmax_concurrent = "lots"\n', encoding="utf-8")
    reloader = Reloader(cfg, router.reload, on_failure=failures.append)
    result = await reloader.reload("test")
    assert not result.ok
    assert f"{cfg}/agents.toml: agents[0].max_concurrent: expected int, got str" in result.errors
    assert any('dispatch.strategy: expected one of' in e and '"fastest_finger"' in e for e in result.errors)
    assert router.config is before and failures == [result] and reloader.failures == 1
    out = await router.handle_message(Message("s1", "m1", "b1", "hi", ts=T0))
    assert out[0].agent_id == "a1"


async def test_agent_removed_by_reload_has_conversations_rerouted(tmp_path):
    cfg = team(tmp_path)
    router = Router(load_config(cfg))
    await router.handle_message(Message("s1", "m1", "b1", "hi", ts=T0))
    (cfg / "agents.toml").write_text(agents_toml({"id": "a2", "skills": ["presale"]}), encoding="utf-8")
    moved = []

    def apply(config):
        moved.extend(router.reload(config))

    assert (await Reloader(cfg, apply).reload()).ok
    assert [(d.conversation_id, d.agent_id, d.cause) for d in moved] == [("s1:b1", "a2", "agent_offline")]
    router.dispatcher.check_invariants()


async def test_watch_reloads_on_file_change(tmp_path):
    cfg = team(tmp_path)
    router = Router(load_config(cfg))
    reloader = Reloader(cfg, router.reload)
    async with anyio.create_task_group() as tg:
        ready = anyio.Event()
        tg.start_soon(lambda: reloader.watch(debounce_ms=50, ready=ready))
        await ready.wait()
        await anyio.sleep(0.3)
        (cfg / "policies" / "p.toml").write_text(policy("weighted"), encoding="utf-8")
        with anyio.fail_after(15):
            while reloader.generation == 0:
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert router.config.policy_for("s1").dispatch.strategy == "weighted"
    assert reloader.last is not None and reloader.last.trigger.startswith("watch:")


# -- a bad save: reported, never raised; the watch goes on (issue 15) ----------------------------------


async def test_invalid_utf8_is_a_failed_reload_with_the_place(tmp_path):
    cfg = team(tmp_path)
    router = Router(load_config(cfg))
    (cfg / "agents.toml").write_bytes(b'[[agents]]\nid = "a1\xff"\nskills = ["presale"]\n')
    reloader = Reloader(cfg, router.reload)
    result = await reloader.reload("test")
    assert not result.ok and not result.refused
    assert result.errors == [f"{cfg}/agents.toml: line 2, column 9: not valid UTF-8 (byte 0xff); save the file as UTF-8"]
    assert reloader.failures == 1 and router.config.agents.keys() == {"a1", "a2", "a3"}


async def test_a_loader_crash_or_an_apply_failure_is_a_result_not_an_exception(tmp_path):
    cfg = team(tmp_path)

    def crash(_d):
        raise RuntimeError("boom")

    result = await Reloader(cfg, lambda c: None, load=crash).reload("test")
    assert not result.ok and result.errors == [f"{cfg}: reload failed: RuntimeError: boom"]

    def refuse(_config):
        raise OSError("disk full")

    result = await Reloader(cfg, refuse).reload("test")
    assert not result.ok and result.errors == [f"{cfg}: could not apply: OSError: disk full"]


async def test_watch_survives_a_bad_save_and_picks_up_the_next_good_one(tmp_path):
    cfg = team(tmp_path)
    router = Router(load_config(cfg))
    calls = {"n": 0}
    real = Reloader(cfg, router.reload)._load

    def flaky(d):  # the second attempt hits a bug in a loader: the watch must outlive that too
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyError("bug")
        return real(d)

    reloader = Reloader(cfg, router.reload, load=flaky)
    async with anyio.create_task_group() as tg:
        ready = anyio.Event()
        tg.start_soon(lambda: reloader.watch(debounce_ms=50, ready=ready))
        await ready.wait()
        await anyio.sleep(0.3)
        (cfg / "policies" / "p.toml").write_bytes(policy("weighted").encode() + b"\n# \xff\xfe\n")
        with anyio.fail_after(15):
            while reloader.failures < 1:
                await anyio.sleep(0.05)
        assert "not valid UTF-8" in reloader.last.errors[0]
        (cfg / "policies" / "p.toml").write_text(policy("least_load") + "# still bad? no: a crash\n", encoding="utf-8")
        with anyio.fail_after(15):
            while reloader.failures < 2:
                await anyio.sleep(0.05)
        assert reloader.last.errors == [f"{cfg}: reload failed: KeyError: 'bug'"]
        (cfg / "policies" / "p.toml").write_text(policy("weighted"), encoding="utf-8")
        with anyio.fail_after(15):
            while reloader.generation == 0:
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert router.config.policy_for("s1").dispatch.strategy == "weighted"


# -- valid, but a mistake: refused unless forced ---------------------------------------------------------


@pytest.fixture
def demo(tmp_path, demo_config):
    cfg = tmp_path / "config"
    shutil.copytree(demo_config, cfg)
    return cfg


def keeper(cfg):
    """A Reloader comparing with the configuration it last applied, starting from the demo's."""
    state = {"config": load_config(cfg)}
    reloader = Reloader(cfg, lambda c: state.update(config=c), current=lambda: state["config"])
    return reloader, state


async def test_agents_file_cut_to_its_header_is_refused_then_forced(demo):
    reloader, state = keeper(demo)
    before = state["config"]
    agents = demo / "agents.toml"
    agents.write_text(agents.read_text(encoding="utf-8").split("[[agents]]")[0], encoding="utf-8")
    result = await reloader.reload("test")
    assert not result.ok and result.refused and state["config"] is before
    assert f"{agents}: the reload would empty this file (it had content)" in result.errors
    assert f"{agents}: agents: no agent would serve shop 'pdd-1001' (now 5: a-01, a-02, a-03, a-06, a-07)" in result.errors
    assert f"{agents}: agents: no agent would serve shop 'tb-2001' (now 4: a-04, a-05, a-06, a-07)" in result.errors
    forced = await reloader.reload("test", force=True)
    assert forced.ok and forced.forced == result.errors and state["config"].agents == {}


async def test_one_shop_losing_its_agents_is_refused_another_keeping_some_is_not(demo):
    reloader, state = keeper(demo)
    agents = demo / "agents.toml"
    text = agents.read_text(encoding="utf-8")
    blocks = text.split("[[agents]]")
    keep = [b.replace('shops = ["*"]', 'shops = ["pdd-1001"]') for b in blocks[1:] if '"tb-2001"' not in b]
    agents.write_text("[[agents]]".join([blocks[0], *keep]), encoding="utf-8")  # tb-2001's agents go
    result = await reloader.reload("test")
    assert result.refused and len(result.errors) == 1
    assert result.errors == [f"{agents}: agents: no agent would serve shop 'tb-2001' (now 4: a-04, a-05, a-06, a-07)"]
    agents.write_text("[[agents]]".join([blocks[0], *blocks[1:-1]]), encoding="utf-8")  # only the last one goes
    assert (await reloader.reload("test")).ok


async def test_policy_cut_before_its_sensitive_table_is_refused(demo):
    """Without ``[sensitive]`` only the default patterns would check replies: the word lists go."""
    reloader, state = keeper(demo)
    path = demo / "policies" / "default.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text[:text.index("# Sensitive words")], encoding="utf-8")  # a save cut short
    result = await reloader.reload("test")
    assert result.refused and result.errors == [
        f"{path}: sensitive: the outbound filter of shop '{sid}' would lose outbound rules: "
        "sensitive.abuse, sensitive.ad_law, sensitive.contact" for sid in ("pdd-1001", "pdd-1002")]


async def test_outbound_filter_turned_off_three_ways_is_refused(demo):
    reloader, state = keeper(demo)
    path = demo / "policies" / "vip.toml"
    original = path.read_text(encoding="utf-8")
    path.write_text(re.sub(r'outbound = "(block|mask)"', 'outbound = "off"', original), encoding="utf-8")
    result = await reloader.reload("test")
    assert result.refused and len(result.errors) == 1
    assert result.errors == [f"{path}: sensitive: the outbound filter of shop 'tb-2001' would lose outbound rules: "
                             "sensitive.abuse, sensitive.ad_law, sensitive.contact"]
    path.write_text(original.replace("[sensitive]\n", "[sensitive]\nenabled = false\n"), encoding="utf-8")
    result = await reloader.reload("test")
    assert result.refused and result.errors[0].startswith(f"{path}: sensitive: the outbound filter of shop 'tb-2001' would be off")
    path.write_text(original, encoding="utf-8")
    main = demo / "fenliu.toml"
    main.write_text(main.read_text(encoding="utf-8").replace("disabled = []", 'disabled = ["sensitive"]'), encoding="utf-8")
    result = await reloader.reload("test")
    assert result.refused and len(result.errors) == 3
    assert all(e.startswith(f"{main}: plugins: the outbound filter of shop ") and "would be off" in e
               for e in result.errors)
    assert (await reloader.reload("test", force=True)).ok
    assert state["config"].plugins.chain("fenliu_outbound_filter") == ()


async def test_an_emptied_word_list_is_refused(demo):
    reloader, state = keeper(demo)
    words = demo / "words" / "contact.txt"
    words.write_text("# contact words\n", encoding="utf-8")
    result = await reloader.reload("test")
    assert result.refused and result.errors == [f"{words}: the reload would empty this file (it had content)"]
    result = await reloader.reload("test", force=True)
    assert result.ok and result.forced
    words.write_text("# still none\n\n", encoding="utf-8")
    assert (await reloader.reload("test")).ok, "the baseline is the file as last applied"


# -- the running service: admin endpoint, watcher, shutdown, and `fenliu reload` --------------------------


@pytest.fixture
def env(monkeypatch):
    for k, v in ss.ENV.items():
        monkeypatch.setenv(k, v)


async def test_service_answers_reasons_keeps_watching_and_still_closes(tmp_path, env):
    cfg = ss.write_config(tmp_path)
    ss.add_accounts(tmp_path / "fenliu.db")
    srv = await ss.start_server(cfg)
    stopped = False
    try:
        async with aiohttp.ClientSession() as http:
            c = ss.Client(srv.url, http)
            admin = await c.login("acme")
            reloader = srv.service.reloader
            path = cfg / "policies" / "default.toml"
            good = path.read_bytes()
            path.write_bytes(good.replace(b'"round_robin"', b'"round_robin\xff"'))
            with anyio.fail_after(20):
                while not (reloader.last and reloader.last.trigger.startswith("watch:")):
                    await anyio.sleep(0.05)
            line = f"{path}: line 3, column 24: not valid UTF-8 (byte 0xff); save the file as UTF-8"
            assert reloader.last.errors == [line]
            status, body = await c.call("POST", "/v1/admin/reload", admin)
            assert (status, body["error"], body["errors"]) == (422, "config_rejected", [line])

            path.write_bytes(good.replace(b"accept_timeout_s = 30.0", b"accept_timeout_s = 40.0"))
            with anyio.fail_after(20):
                while srv.service.config.policy_for("pdd-a").dispatch.accept_timeout_s != 40.0:
                    await anyio.sleep(0.05)

            agents = cfg / "agents.toml"
            agents.write_text(agents.read_text(encoding="utf-8").split("[[agents]]\nid = \"b-01\"")[0], encoding="utf-8")
            status, body = await c.call("POST", "/v1/admin/reload", admin)
            assert (status, body["error"]) == (409, "config_refused")
            assert body["errors"] == [f"{agents}: agents: no agent would serve shop 'tb-b' (now 1: b-01)"]
            assert "force" in body["message"] and "b-01" in srv.service.config.agents
            status, body = await c.call("POST", "/v1/admin/reload", admin, data=b"{not json")
            assert status == 400 and body["error"] == "bad_request"
            status, body = await c.call("POST", "/v1/admin/reload", admin, json={"force": True})
            assert status == 200 and body["forced"] == [f"{agents}: agents: no agent would serve shop 'tb-b' (now 1: b-01)"]
            assert sorted(srv.service.config.agents) == ["a-01", "a-02"]
            watch = next(t for t in srv.service._tasks if t.get_name() == "fenliu-config-watch")
            assert not watch.done()
        await srv.stop()  # the writer and the store close: nothing the watcher saw gets in the way
        stopped = True
        assert not (tmp_path / "fenliu.db-wal").exists() or (tmp_path / "fenliu.db-wal").stat().st_size == 0
    finally:
        if not stopped:
            await srv.stop()


async def test_fenliu_reload_command_reports_refusals_and_forces(tmp_path):
    cfg = ss.write_config(tmp_path)
    ss.add_accounts(tmp_path / "fenliu.db")
    port = ss.free_port()
    url = f"http://127.0.0.1:{port}"
    proc = ss.spawn(cfg, port)
    try:
        await ss.wait_healthy(url, proc)
        agents = cfg / "agents.toml"
        agents.write_text(agents.read_text(encoding="utf-8").split("[[agents]]\nid = \"b-01\"")[0], encoding="utf-8")
        args = ("reload", "--config", str(cfg), "--url", url, "--account", "acme", "--password-stdin")
        r = await asyncio.to_thread(run_fenliu, *args, input=ss.PASSWORD + "\n")
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert f"{agents}: agents: no agent would serve shop 'tb-b' (now 1: b-01)" in r.stderr.splitlines()
        assert "--force" in r.stderr
        r = await asyncio.to_thread(run_fenliu, *args, "--force", input=ss.PASSWORD + "\n")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("reloaded: generation ") and "(2 shops, 2 agents)" in r.stdout
        assert f"forced: {agents}: agents: no agent would serve shop 'tb-b' (now 1: b-01)" in r.stderr
        r = await asyncio.to_thread(run_fenliu, "reload", "--config", str(cfg), "--url", f"http://127.0.0.1:{ss.free_port()}",
                                    env={"FENLIU_TOKEN": "x"})
        assert r.returncode == 1 and r.stderr.startswith("error: cannot reach") and "Traceback" not in r.stderr
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)
