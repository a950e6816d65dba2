"""Prometheus metrics for ``GET /metrics``.

Each service owns a ``CollectorRegistry`` (tests run several servers in one process). Counters
and the reply-latency histogram are updated as things happen; queue depth, oldest wait, agent
load and plugin errors are read from the live router at scrape time by a custom collector, so the
hot path pays nothing for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from router.core.textcache import text_cache_stats

if TYPE_CHECKING:
    from router.core.pipeline import Router

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Live(Collector):
    """Gauges computed from the router's state when Prometheus scrapes."""

    def __init__(self, router: Callable[[], Router], now: Callable[[], float]) -> None:
        self._router = router
        self._now = now

    def collect(self) -> Iterator[object]:
        router = self._router()
        d = router.dispatcher
        now = self._now()
        depth = GaugeMetricFamily("fenliu_queue_depth", "Conversations waiting for an agent", labels=["shop", "skill"])
        oldest = GaugeMetricFamily("fenliu_queue_oldest_wait_seconds", "How long the oldest waiting conversation has waited",
                                   labels=["shop", "skill"])
        waits: dict[tuple[str, str], list[float]] = {}
        for conv in d.queued():
            waits.setdefault((conv.shop_id, conv.skill or ""), []).append(now - (conv.queued_at or now))
        for (shop, skill), w in sorted(waits.items()):
            depth.add_metric([shop, skill], len(w))
            oldest.add_metric([shop, skill], max(w))
        yield depth
        yield oldest
        load = GaugeMetricFamily("fenliu_agent_load", "Open conversations per agent", labels=["agent", "status"])
        cap = GaugeMetricFamily("fenliu_agent_capacity", "max_concurrent per agent", labels=["agent"])
        for aid, st in sorted(d.agents.items()):
            load.add_metric([aid, st.status], st.load)
            cap.add_metric([aid], st.max_concurrent)
        yield load
        yield cap
        errors = CounterMetricFamily("fenliu_plugin_errors", "Plugin calls that raised or overran their budget",
                                     labels=["plugin"])
        for name, n in sorted(router.plugins.errors.items()):
            errors.add_metric([name], n)
        yield errors
        yield GaugeMetricFamily("fenliu_open_conversations", "Open conversations", value=len(d.conversations))
        hits = CounterMetricFamily("fenliu_text_cache_hits", "Plugin steps answered from the exact-text cache",
                                   labels=["cache"])
        misses = CounterMetricFamily("fenliu_text_cache_misses", "Plugin steps that missed the exact-text cache",
                                     labels=["cache"])
        for name, (hit, miss, _) in text_cache_stats().items():
            hits.add_metric([name], hit)
            misses.add_metric([name], miss)
        yield hits
        yield misses


class Metrics:
    """The service's metrics; ``render()`` gives the exposition text."""

    def __init__(self, router: Callable[[], Router], now: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.messages = Counter("fenliu_messages", "Messages accepted, by shop", ["shop"], registry=r)
        self.duplicates = Counter("fenliu_duplicate_messages", "Messages dropped as duplicates, by shop", ["shop"], registry=r)
        self.rejected = Counter("fenliu_rejected_requests", "Ingest requests refused, by HTTP status", ["status"], registry=r)
        self.decisions = Counter("fenliu_decisions", "Routing decisions, by action and cause", ["action", "cause"], registry=r)
        self.replies = Counter("fenliu_replies", "Agent replies, by outcome (sent, refused)", ["outcome"], registry=r)
        self.outbound = Counter("fenliu_outbound_deliveries", "Outbound delivery attempts, by result", ["result"], registry=r)
        self.reply_latency = Histogram(
            "fenliu_reply_latency_seconds", "From a buyer's first unanswered message to the agent's reply",
            buckets=(5, 15, 30, 60, 120, 180, 300, 600, 1800), registry=r,
        )
        self.ingest_queue = Gauge("fenliu_ingest_queue", "Messages accepted by HTTP and not yet routed", registry=r)
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._counts: dict[tuple[Any, tuple[str, ...]], int] = {}
        self.ws_agents = Gauge("fenliu_connected_agents", "Agents with an open WebSocket", registry=r)
        self.commits = Counter("fenliu_store_commits", "Group commits of the store", registry=r)
        self.reloads = Counter("fenliu_config_reloads", "Configuration reloads applied", registry=r)
        self.reload_failures = Counter("fenliu_config_reload_failures",
                                       "Configuration reloads rejected (the running configuration was kept)", registry=r)
        self.login_failures = Counter("fenliu_login_failures", "Logins with a wrong account or password", registry=r)
        self.login_lockouts = Counter("fenliu_login_lockouts", "Lockouts started, by scope (account, client)",
                                      ["scope"], registry=r)
        self.logins_refused = Counter("fenliu_logins_refused",
                                      "Logins refused with 429, by reason (locked_out, busy)",
                                      ["reason"], registry=r)
        r.register(_Live(router, now))

    def count(self, metric: Counter, *labels: str) -> None:
        """Count one event now, add it to ``metric`` at the next :meth:`flush` (after each
        commit, and before every scrape): a dict increment on the hot path instead of a
        locked ``inc`` per message."""
        key = (metric, labels)
        self._counts[key] = self._counts.get(key, 0) + 1

    def flush(self) -> None:
        counts, self._counts = self._counts, {}
        for (metric, labels), n in counts.items():
            self.child(metric, *labels).inc(n)

    def child(self, metric: Counter, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: the per-message counters are hit on every message
        and ``labels()`` validates and locks each time."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        self.flush()
        return generate_latest(self.registry)
