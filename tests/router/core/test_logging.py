"""Logs: JSON off a terminal, readable on one, with the message's context bound while it is routed."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from router.core.hookspecs import hookimpl
from router.core.logging import configure_logging

pytestmark = pytest.mark.anyio


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Chatty:
    @hookimpl
    def fenliu_priority(self, message, ctx):
        structlog.get_logger("test").info("looking", agent_id="a-9")


@pytest.fixture
def restore_logging():
    yield
    structlog.reset_defaults()


async def test_lines_carry_the_message_context_only_while_it_is_routed(fenliu_harness, restore_logging):
    out = io.StringIO()
    configure_logging("info", "auto", stream=out)
    h = fenliu_harness(Chatty())
    await h.send(shop_id="pdd-1001", buyer_id="b-1", msg_id="m-77", text="在吗")
    structlog.get_logger("test").info("afterwards")
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    looking = next(x for x in lines if x["event"] == "looking")
    assert (looking["shop_id"], looking["conversation_id"], looking["msg_id"], looking["agent_id"]) == (
        "pdd-1001", "pdd-1001:b-1", "m-77", "a-9")
    assert looking["level"] == "info" and "timestamp" in looking
    after = next(x for x in lines if x["event"] == "afterwards")
    assert "msg_id" not in after and "shop_id" not in after


def test_console_output_on_a_terminal(restore_logging):
    out = Tty()
    configure_logging("info", "auto", stream=out)
    structlog.get_logger("test").info("hello", shop_id="pdd-1001")
    text = out.getvalue()
    assert "hello" in text and "shop_id" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_level_filters(restore_logging):
    out = io.StringIO()
    configure_logging("warning", "json", stream=out)
    structlog.get_logger("test").info("quiet")
    structlog.get_logger("test").warning("loud")
    assert [json.loads(x)["event"] for x in out.getvalue().splitlines()] == ["loud"]
