"""Dispatcher.next_due skips timers that would do nothing when they fire (the simulator sleeps
until next_due), and keeps those that still matter."""

from __future__ import annotations

import anyio

from router.core.config import load_config
from router.core.models import AcceptEvent, CloseEvent, Message
from router.core.pipeline import Router
from tests.conftest import T0
from tests.policies.conftest import ONE_SHOP, agents_toml, policy, write_config


def _router(tmp_path, extra: str = "accept_timeout_s = 45") -> Router:
    agents = agents_toml({"id": "a1", "skills": ["presale"], "shops": ["*"], "max_concurrent": 1})
    cfg = write_config(tmp_path, ONE_SHOP, agents,
                       {"p": policy(extra=extra, targets='[{ skills = ["@skill"], timeout_s = 60 }, { skills = ["presale"] }]')})
    return Router(load_config(cfg), reservations=True)


def _send(router: Router, n: int, buyer: str, t: float) -> list:
    return anyio.run(router.handle_message, Message("s1", f"m{n}", buyer, "在吗", ts=T0 + t))


def test_a_pending_reservation_is_due_and_an_accepted_one_is_not(tmp_path):
    router = _router(tmp_path)
    d = router.dispatcher
    assert _send(router, 1, "b1", 0)[-1].agent_id == "a1"
    assert d.next_due() == T0 + 45  # the reservation runs out then
    anyio.run(router.handle_event, AcceptEvent("s1:b1", "a1", T0 + 3))
    assert d.next_due() is None  # accepted: its timer would do nothing
    assert d._timers == []


def test_an_expansion_stays_due_while_the_chat_waits_and_goes_once_it_is_assigned(tmp_path):
    router = _router(tmp_path)
    d = router.dispatcher
    _send(router, 1, "b1", 0)
    anyio.run(router.handle_event, AcceptEvent("s1:b1", "a1", T0 + 1))
    assert _send(router, 2, "b2", 2)[-1].action == "queued"
    assert d.next_due() == T0 + 62  # its expansion after 60 s of waiting
    moved = anyio.run(router.handle_event, CloseEvent("s1:b1", T0 + 5))
    assert [(m.conversation_id, m.cause) for m in moved] == [("s1:b2", "queue_drain")]
    assert d.next_due() == T0 + 5 + 45  # only b2's reservation is left; the expansion is gone
