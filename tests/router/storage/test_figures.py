"""One recorded day through the real service, figures computed by hand: the dashboard
(``GET /v1/dashboard`` and the supervisors' feed), the workbench's ``GET /v1/today``, ``fenliu
stats`` and ``GET /v1/stats`` all return exactly them (router/storage/figures.py is their one
implementation). The service's clock is a stand-in moved by the test, so a 3-minute window can
lapse without waiting; everything else is real (SQLite, the journal writer, aiohttp on loopback).
"""

from __future__ import annotations

import json
import time as real_time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import aiohttp
import msgspec
import pytest

import router.service.buyers
import router.service.intake
import router.service.journal
import router.service.loop
import router.service.outbox
import router.service.service
from router.core.signing import SIGNATURE_HEADER, sign
from tests.router.serve_support import ENV, SECRET_A, SECRET_B, Agent, Client, add_accounts, message, start_server, write_config

pytestmark = pytest.mark.anyio

TZ = ZoneInfo("Asia/Shanghai")
#: Tomorrow 09:00 in Shanghai: inside the 3-minute window's hours, and ahead of the real clock,
#: so the service's clock (the later of the two) is the test's.
_tomorrow = datetime.now(TZ).date() + timedelta(days=1)
T0 = datetime(_tomorrow.year, _tomorrow.month, _tomorrow.day, 9, 0, tzinfo=TZ).timestamp()


class Clock:
    """Stands in for the ``time`` module inside the service's parts (router/service/): ``time()`` is the test's."""

    def __init__(self) -> None:
        self.now = T0

    def time(self) -> float:
        return self.now

    def __getattr__(self, name: str):
        return getattr(real_time, name)


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    for part in (router.service.service, router.service.loop, router.service.journal, router.service.buyers,
                 router.service.outbox, router.service.intake):
        monkeypatch.setattr(part, "time", c)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    return c


async def rate(c: Client, shop: str, cid: str, score: int) -> None:
    body = msgspec.json.encode({"type": "rating", "conversation_id": cid, "score": score})
    key = {"pdd-a": SECRET_A, "tb-b": SECRET_B}[shop].encode()
    async with c.http.post(f"{c.url}/v1/shops/{shop}/ratings", data=body,
                           headers={SIGNATURE_HEADER: sign(key, body), "Content-Type": "application/json"}) as r:
        assert r.status < 300, await r.text()


class Day:
    """The recorded day's moves, each at a time set on the service's clock."""

    def __init__(self, c: Client, clock: Clock, lead: str) -> None:
        self.c, self.clock, self.lead = c, clock, lead
        self.agents: dict[str, Agent] = {}

    def at(self, dt: float) -> None:
        assert T0 + dt >= self.clock.now, "the recorded day runs forwards"
        self.clock.now = T0 + dt

    async def say(self, dt: float, msg_id: str, buyer: str, shop: str = "pdd-a") -> None:
        self.at(dt)
        status, body = await self.c.post_messages(shop, message(msg_id, buyer, shop))
        assert status == 202 and body["accepted"] == 1, body

    async def status(self, dt: float, agent: str, status: str) -> None:
        self.at(dt)
        code, body = await self.c.call("PUT", f"/v1/agents/{agent}/status", self.lead, json={"status": status})
        assert code == 200, body

    async def take(self, dt: float, agent: str, cid: str) -> None:
        """The agent sees the conversation offered and accepts it."""
        await self.agents[agent].next("assigned", conversation_id=cid)
        self.at(dt)
        assert (await self.agents[agent].request({"type": "accept", "conversation_id": cid}))["ok"]

    async def reply(self, dt: float, agent: str, cid: str) -> None:
        self.at(dt)
        result = await self.agents[agent].request({"type": "reply", "conversation_id": cid, "text": "亲，在的"})
        assert result["ok"], result

    async def transfer(self, dt: float, agent: str, cid: str, to: str) -> None:
        self.at(dt)
        assert (await self.agents[agent].request({"type": "transfer", "conversation_id": cid, "to_agent": to}))["ok"]

    async def close(self, dt: float, agent: str, cid: str) -> None:
        self.at(dt)
        assert (await self.agents[agent].request({"type": "close", "conversation_id": cid}))["ok"]


async def test_one_recorded_day_everywhere_the_same(tmp_path, clock, fenliu):
    cfg = write_config(tmp_path)
    add_accounts(tmp_path / "fenliu.db")
    srv = await start_server(cfg)
    try:
        async with aiohttp.ClientSession() as http:
            c = Client(srv.url, http)
            lead, admin = await c.login("acme:lead-a"), await c.login("acme")
            day = Day(c, clock, admin)
            for aid, account in (("a-01", "acme:a01"), ("a-02", "acme:a02"), ("b-01", "acme:b01")):
                day.agents[aid] = await Agent.connect(c, await c.login(account))
                await day.agents[aid].next("hello")
            await day.status(1, "a-02", "break")
            # b-1: a-01 answers in 60 s (in time), then a follow-up in 30 s; closed, rated 5.
            await day.say(10, "m-1", "b-1")
            await day.take(15, "a-01", "pdd-a:b-1")
            await day.reply(70, "a-01", "pdd-a:b-1")
            await day.say(100, "m-2", "b-1")
            await day.reply(130, "a-01", "pdd-a:b-1")
            await day.close(200, "a-01", "pdd-a:b-1")
            await rate(c, "pdd-a", "pdd-a:b-1", 5)
            # b-2: a-02 holds it when its window lapses (at 480 s), hands it to a-01 at 500 s, who
            # answers at 520 s: the miss is a-02's, the answer (220 s) a-01's. Rated 2, a-01's.
            await day.status(250, "a-01", "break")
            await day.status(251, "a-02", "online")
            await day.say(300, "m-3", "b-2")
            await day.take(305, "a-02", "pdd-a:b-2")
            await day.status(490, "a-01", "online")
            await day.transfer(500, "a-02", "pdd-a:b-2", "a-01")
            await day.take(505, "a-01", "pdd-a:b-2")
            await day.reply(520, "a-01", "pdd-a:b-2")
            await day.close(530, "a-01", "pdd-a:b-2")
            await rate(c, "pdd-a", "pdd-a:b-2", 2)
            # b-3: nobody online, queued from 600 s; lapses in the queue at 780 s; a-01 comes back
            # at 800 s, takes it and answers at 810 s (210 s).
            await day.status(550, "a-01", "break")
            await day.status(551, "a-02", "break")
            await day.say(600, "m-4", "b-3")
            # another shop's buyer, answered in 50 s by b-01: outside lead-a's figures.
            await day.say(650, "m-5", "b-9", shop="tb-b")
            await day.take(655, "b-01", "tb-b:b-9")
            await day.reply(700, "b-01", "tb-b:b-9")
            await day.status(800, "a-01", "online")
            await day.take(801, "a-01", "pdd-a:b-3")
            await day.reply(810, "a-01", "pdd-a:b-3")
            # b-4: a-01 takes it and never answers; by the last move (1100 s) it lapsed on a-01.
            await day.say(900, "m-6", "b-4")
            await day.take(905, "a-01", "pdd-a:b-4")
            await day.say(1100, "m-7", "b-5", shop="tb-b")  # the day's last input: the clock

            _, board = await c.call("GET", "/v1/dashboard", lead)
            _, today_lead = await c.call("GET", "/v1/today", lead)
            _, today_a01 = await c.call("GET", "/v1/today", await c.login("acme:a01"))
            a, b = _tomorrow.isoformat(), (_tomorrow + timedelta(days=1)).isoformat()
            _, stats_lead = await c.call("GET", f"/v1/stats?from={a}&to={b}", lead)
            _, stats_a01 = await c.call("GET", f"/v1/stats?from={a}&to={b}", await c.login("acme:a01"))
            ws = await http.ws_connect(f"{srv.url.replace('http', 'ws')}/v1/supervisors/ws",
                                       headers={"Authorization": f"Bearer {lead}"})
            frame = None
            while frame is None or frame["type"] != "dashboard":
                frame = await ws.receive_json(timeout=10)
            await ws.close()
        cli = fenliu("stats", "--config", str(cfg), "--from", a, "--to", b, "--shop", "pdd-a", "--json", "-",
                     env=ENV)
        assert cli.returncode == 0, cli.stderr
        cli_a01 = fenliu("stats", "--config", str(cfg), "--from", a, "--to", b, "--shop", "pdd-a", "--agent", "a-01",
                         "--json", "-", env=ENV)
    finally:
        await srv.stop()

    team = board["today"]["stats"]
    print(json.dumps(team, indent=1, ensure_ascii=False))
    # By hand, shop pdd-a (lead-a sees only it). Sessions b-1..b-4; 3-minute windows from each
    # session's first message: b-1 hit (60 s, a-01), b-2 lapsed on a-02, b-3 lapsed in the queue,
    # b-4 lapsed on a-01.
    t = team["total"]
    assert (t["sessions"], t["messages"], t["replies"], t["responses"]) == (4, 5, 4, 4)
    assert (t["reply_3min_eligible"], t["reply_3min_hits"], t["reply_3min_rate"], t["pending"]) == (4, 1, 0.25, 0)
    assert t["first_response_s_avg"] == round((60 + 220 + 210) / 3, 3)
    assert t["human_response_s_avg"] == round((60 + 30 + 220 + 210) / 4, 3)
    assert (t["transfers"], t["ratings"], t["rating_avg"], t["satisfaction_rate"]) == (1, 2, 3.5, 0.5)
    assert (t["queued_sessions"], t["queue_wait_s_avg"]) == (1, 200)
    agents = {r["key"]: r for r in team["by_agent"]}
    a01, a02 = agents["a-01"], agents["a-02"]
    assert (a01["sessions"], a01["reply_3min_eligible"], a01["reply_3min_hits"]) == (4, 2, 1)  # b-1 hit, b-4 lapsed
    assert (a02["sessions"], a02["reply_3min_eligible"], a02["reply_3min_hits"]) == (1, 1, 0)  # b-2 lapsed on a-02
    assert a01["human_response_s_avg"] == round((60 + 30 + 220 + 210) / 4, 3) and a02["human_response_s_avg"] is None
    assert (a01["replies"], a02["replies"], a02["transfers"]) == (4, 0, 1)
    assert (a01["ratings"], a01["rating_avg"]) == (2, 3.5)
    queue = team["queue"]
    assert (queue["reply_3min_eligible"], queue["reply_3min_hits"], queue["queue_wait_s_max"]) == (1, 0, 200)
    assert set(agents) == {"a-01", "a-02"}, "b-01 serves another shop"

    # The same figures everywhere, to the message.
    comparable = {k: v for k, v in team.items() if k not in ("since", "until")}

    def same(stats: dict) -> dict:
        out = {k: v for k, v in stats.items() if k not in ("since", "until")}
        for rows in (out["total"], *out["by_shop"], *out["by_skill"], *out["by_agent"], out["queue"] or {}):
            rows.pop("converted", None), rows.pop("conversion_rate", None)  # a period report's figure only
        return out

    expected = same(comparable)
    assert same(today_lead["stats"]) == expected
    assert same(frame["today"]["stats"]) == expected
    assert same(stats_lead["period"]) == expected
    assert same(json.loads(cli.stdout)) == expected
    assert today_lead["reply_rate"] == 0.25 and board["today"]["reply_rate"] == 0.25
    assert board["today"]["first_response_s"] == t["first_response_s_avg"]
    assert board["today"]["satisfaction_rate"] == 0.5
    # An agent's own figures: what is charged to a-01, in /v1/today, /v1/stats and the CLI.
    mine = same(today_a01["stats"])
    assert mine["total"] == {**a01, "key": "total"}
    assert same(stats_a01["period"]) == mine
    assert same(json.loads(cli_a01.stdout)) == mine
    assert board["agents"][0]["today"] == {k: v for k, v in today_lead["agents"]["a-01"].items()}


async def test_an_agent_outside_its_shift_is_not_online_not_offered_and_shown_as_next(tmp_path, monkeypatch):
    """a-02's shift starts in two hours: the dashboard reports it 排班外 (``in_shift`` false) with
    when it comes on, does not count it in 在线客服, lists it under who comes on next, and a move to
    it is refused; /v1/agents (the workbench's transfer list) says the same."""
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    cfg = write_config(tmp_path)
    starts = (datetime.now(TZ) + timedelta(hours=2)).replace(second=0, microsecond=0)
    ends = starts + timedelta(hours=1)
    agents = cfg / "agents.toml"
    agents.write_text(agents.read_text(encoding="utf-8").replace(
        'id = "a-02"\n', f'id = "a-02"\nschedule = [{{ start = "{starts:%H:%M}", end = "{ends:%H:%M}" }}]\n'),
        encoding="utf-8")
    add_accounts(tmp_path / "fenliu.db")
    srv = await start_server(cfg)
    try:
        async with aiohttp.ClientSession() as http:
            c = Client(srv.url, http)
            lead = await c.login("acme:lead-a")
            a01 = await Agent.connect(c, await c.login("acme:a01"))
            await a01.next("hello")
            status, _ = await c.post_messages("pdd-a", message("m-1", "b-1"))
            assert status == 202
            await a01.next("assigned", conversation_id="pdd-a:b-1")
            _, board = await c.call("GET", "/v1/dashboard", lead)
            by_id = {a["id"]: a for a in board["agents"]}
            assert by_id["a-02"]["in_shift"] is False and by_id["a-01"]["in_shift"] is True
            assert by_id["a-02"]["shift_starts"] == starts.timestamp() and by_id["a-01"]["shift_starts"] is None
            assert board["totals"]["agents_online"] == 1, "an agent outside its shift is not online"
            assert board["next_on"] == [{"id": "a-02", "name": "a-02", "at": starts.timestamp()}]
            _, listed = await c.call("GET", "/v1/agents", lead)
            assert {a["id"]: a["in_shift"] for a in listed["agents"]} == {"a-01": True, "a-02": False}
            code, body = await c.call("POST", "/v1/conversations/pdd-a:b-1/transfer", lead, json={"to_agent": "a-02"})
            assert code == 409 and body["error"] == "agent_off_shift", body
            _, stats = await c.call("GET", "/v1/stats", lead)
            assert stats["shops"]["pdd-a"]["agents_online"] == 1
            await a01.close()
    finally:
        await srv.stop()
