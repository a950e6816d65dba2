"""Hot reload: validate first, swap whole, keep the old configuration when the new one is bad."""

from __future__ import annotations

import anyio
import pytest

from router.config import load_config
from router.models import Message
from router.pipeline import Router
from router.reload import Reloader
from tests.conftest import T0
from tests.policies.conftest import ONE_SHOP, agents_toml, policy, write_config

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
