"""The ``make run`` demo reaches a steady state: its traffic, its simulated agents and the
service's auto-close, run 60× faster than life for a simulated hour, keep the queue bounded and
the share of buyer messages answered steady (it used to go from 0 to 192 queued in six minutes,
with the reply rate falling all the while)."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from adapters.simulator import Simulation, SimulatorAdapter
from router.core.config import load_config
from router.service.server import Server, ensure_demo

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SPEED = 60.0  # one simulated hour in a minute
SIMULATED_S = 3600.0


async def test_the_demo_holds_a_steady_state(tmp_path, demo_config, monkeypatch):
    config = load_config(demo_config)
    store = str(tmp_path / "demo.db")
    for shop in config.shops.values():
        monkeypatch.delenv(shop.secret_env, raising=False)
    ensure_demo(config, store)
    # any hour of the day: the demo's shops close at 23:00 Shanghai time and would queue everything
    for sid, shop in list(config.shops.items()):
        config.shops[sid] = msgspec.structs.replace(shop, business_hours=())
    for aid, agent in list(config.agents.items()):
        config.agents[aid] = msgspec.structs.replace(agent, schedule=())
    # the platform's own auto-close, at the same speed as everything else
    for policy in {id(p): p for p in (config.policy_for(s) for s in config.shops)}.values():
        d = policy.dispatch
        d.idle_close_s = d.idle_close_s / SPEED if d.idle_close_s else None
        d.bot_idle_close_s = d.bot_idle_close_s / SPEED if d.bot_idle_close_s else None
        d.accept_timeout_s = d.accept_timeout_s / SPEED
    monkeypatch.setattr("router.service.lifecycle.SWEEP_S", 5.0 / SPEED)
    server = await Server.start(config, port=0, simulate=True, store_path=store)
    sim = Simulation(server.service, server.url, rate=2.0, seed=11, speed=SPEED)
    d = server.service.router.dispatcher
    samples: list[tuple[float, int, int, int, int]] = []  # (simulated minute, queued, open, sent, replies)
    replies0 = SimulatorAdapter.delivered
    try:
        sim.start()
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) * SPEED < SIMULATED_S:
            await asyncio.sleep(0.5)
            queued = sum(1 for c in d.conversations.values() if c.state == "queued")
            samples.append((elapsed * SPEED / 60, queued, len(d.conversations), sim.sent,
                            SimulatorAdapter.delivered - replies0))
        await sim.stop()
    finally:
        await server.stop()
    assert sim.sent > 10_000, sim.sent  # the demo's traffic really ran: ≈ 3.7 messages per simulated second
    print("minute queued open sent replies")
    for row in samples[:: max(1, len(samples) // 30)]:
        print(" ".join(f"{x:.0f}" for x in row))
    second_half = [q for m, q, *_ in samples if m >= 30]
    first_quarter_open = max(o for m, _, o, *_ in samples if 10 <= m < 25)
    last_quarter_open = max(o for m, _, o, *_ in samples if m >= 45)

    def answered(since: float, until: float) -> float:
        window = [(s, r) for m, _, _, s, r in samples if since <= m < until]
        (s0, r0), (s1, r1) = window[0], window[-1]
        return (r1 - r0) / max(1, s1 - s0)

    rates = [answered(a, a + 15) for a in (0, 15, 30, 45)]
    # steady: the share of buyer messages answered in the last quarter is that of the second
    assert abs(rates[3] - rates[1]) < 0.15, rates
    # bounded: the queue empties between sale-day bursts instead of growing through the hour
    assert max(second_half) < 120, samples[-20:]
    assert min(second_half) < 10, samples[-20:]
    assert last_quarter_open < 1.5 * first_quarter_open + 20, (first_quarter_open, last_quarter_open)

    def mean_queue(since: float, until: float) -> float:
        window = [q for m, q, *_ in samples if since <= m < until]
        return sum(window) / len(window)

    assert mean_queue(45, 60) <= 2 * mean_queue(15, 30) + 10, (mean_queue(15, 30), mean_queue(45, 60))
