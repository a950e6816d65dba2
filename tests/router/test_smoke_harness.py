import anyio
import pytest

from router.hookspecs import hookimpl

pytestmark = pytest.mark.anyio


class Boom:
    @hookimpl
    def fenliu_classify_skill(self, message, ctx):
        raise RuntimeError("kaboom")


class Slow:
    @hookimpl
    async def fenliu_priority(self, message, ctx):
        await anyio.sleep(1)
        return 100


async def test_raising_and_slow_plugins_are_isolated(fenliu_harness, fenliu_logs):
    h = fenliu_harness(Boom(), Slow())
    d = await h.send(shop_id="pdd-1001", buyer_id="b-1", text="在吗")
    assert d.action == "assigned"
    assert "plugin_error:Boom-0" in d.flags and "plugin_error:Slow-1" in d.flags
    assert d.priority == 0
    assert {e["plugin"] for e in fenliu_logs if e["event"] == "plugin_error"} == {"Boom-0", "Slow-1"}
