"""GET /metrics: Prometheus metrics read from Redis at scrape time by a prometheus_client custom collector.

Why Redis and not prometheus_client's multiprocess mode: the bus's counting
processes are Celery prefork children and uvicorn workers, in several
containers (a worker per route). Multiprocess mode only adds up processes that
share one directory on one host, and loses counts when a child is replaced.
The journal's transitions already run as Redis transactions, so each counter is
an HINCRBY inside the transaction of the transition it counts: the numbers are
cluster-wide, survive restarts (AOF), and a redelivered task that does not
change the journal does not count twice. Any ingress process answers a scrape
with the same numbers.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from . import journal, stats
from .shards import Shards, as_shards

# kind in the journal's counters -> (metric name without _total, help, extra label)
COUNTERS = {
    "accepted": ("bus_events_accepted", "Events accepted (journaled and queued).", None),
    "refused": ("bus_requests_refused", "Requests refused at the ingress, by route ('' when none matched) "
                "and reason; not counted when Redis itself is down.", "reason"),
    "delivered": ("bus_events_delivered", "Events delivered (the endpoint answered 2xx).", None),
    "retried": ("bus_events_retried", "Failed attempts that were scheduled to be tried again, by status class.",
                "status_class"),
    "uncaptured": ("bus_requests_uncaptured", "Requests bus proxy forwarded without journaling them (Redis was "
                   "down), by route; counted once Redis answers again.", None),
    "dead": ("bus_events_dead", "Events dead-lettered, by the status class of their last attempt.", "status_class"),
    "archived": ("bus_events_archived", "Delivered events moved from Redis to the archive (BUS_ARCHIVE_URL).", None),
}


# The endpoint label's cardinality: only failing endpoints are listed (an answer deletes an endpoint's
# breaker, an idle one expires), and at most this many per route, so templated URLs of arbitrary tags
# cannot grow a scrape without bound; bus_endpoints_failing counts them all.
METRICS_ENDPOINTS = 20


class BusCollector(Collector):
    """Counters and the latency histogram kept in Redis, and gauges of each route's current state,
    summed over the shards (each route's from its own); a shard that does not answer leaves out
    what it holds and shows as bus_redis_shard_up 0."""

    def __init__(self, client: redis.Redis | Shards, routes: Iterable[str], hot_window: float | None = None):
        self.shards = as_shards(client)
        self.routes = list(routes)
        self.hot_window = hot_window  # None: the archive is off

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("bus_redis_up", "1 when the journal's Redis (every shard) answered this scrape, else 0.")
        shard_up = GaugeMetricFamily("bus_redis_shard_up", "1 when the shard answered this scrape, else 0 "
                                     "(BUS_REDIS_SHARDS; 'default' is BUS_REDIS_URL).", labels=["shard"])
        now = time.time()
        counts: dict[tuple[str, str, str], int] = {}
        latency: dict[str, Any] = {}
        current: list[stats.RouteStats] = []
        overdue, states, answered = 0, [], []
        for name, client in self.shards.clients.items():
            mine = [r for r in self.routes if self.shards.name_of(r) == name]
            try:
                shard_counts = journal.counters(client)
                seen = sorted(set(mine) | {route for kind, route, _, _ in shard_counts
                                           if kind != "refused" and route and self.shards.name_of(route) == name})
                shard_latency = journal.latency(client, seen)
                shard_current = stats.read(client, mine, now)
                if self.hot_window is not None:
                    overdue += journal.overdue(client, now - self.hot_window)
                    states.append(journal.archive_state(client))
            except journal.REDIS_DOWN:
                answered.append(False)
                shard_up.add_metric([name], 0)
                continue
            answered.append(True)
            shard_up.add_metric([name], 1)
            for kind, route, label, value in shard_counts:
                counts[(kind, route, label)] = counts.get((kind, route, label), 0) + value
            latency.update(shard_latency)
            current += shard_current
        up.add_metric([], int(all(answered)))
        yield up
        if len(self.shards.clients) > 1:
            yield shard_up
        if not any(answered):
            return
        yield from self._counters([(*k, v) for k, v in counts.items()])
        hist = HistogramMetricFamily("bus_delivery_latency_seconds",
                                     "Seconds from acceptance (or replay) to the endpoint's 2xx.", labels=["route"])
        for route, (buckets, total) in sorted(latency.items()):
            hist.add_metric([route], buckets, total)
        yield hist
        order = {r: i for i, r in enumerate(self.routes)}
        yield from _gauges(sorted(current, key=lambda s: order[s.route]))
        if self.hot_window is not None:
            yield from _archive(overdue, states)

    def _counters(self, counts: list[tuple[str, str, str, int]]) -> Iterator[Metric]:
        families = {}
        for kind, (name, doc, extra) in COUNTERS.items():
            families[kind] = CounterMetricFamily(name, doc, labels=["route"] + ([extra] if extra else []))
        # Zero for every configured route, so rate() works from the first event on.
        zero = {(kind, route, "") for kind in ("accepted", "delivered") for route in self.routes}
        present = {(kind, route, label) for kind, route, label, _ in counts}
        for kind, route, label, value in sorted(counts + [(*z, 0) for z in zero - present]):
            if kind in families:
                families[kind].add_metric([route] + ([label] if COUNTERS[kind][2] else []), value)
        yield from families.values()


def _archive(overdue_events: int, states: list[dict[str, Any]]) -> list[Metric]:
    """The archive as the workers' movers last found it, and what waits in Redis for it."""
    overdue = GaugeMetricFamily("bus_archive_overdue_events", "Delivered events received more than "
                                "BUS_HOT_WINDOW ago still in Redis: the archive mover's backlog (grows while "
                                "the archive is down).")
    overdue.add_metric([], overdue_events)
    found = [overdue]
    state = max(states, key=lambda st: st.get("checked") or 0.0, default={})
    if state:
        up = GaugeMetricFamily("bus_archive_up", "1 when the archive answered the mover's last pass, else 0 "
                               "(absent before any worker ran).")
        up.add_metric([], int(state["up"]))
        found.append(up)
    return found


def _gauges(current: list[stats.RouteStats]) -> Iterator[Metric]:
    gauges = {
        "backlog": GaugeMetricFamily("bus_backlog_events", "Events accepted and neither delivered nor dead "
                                     "(queued + retrying): what backlog_limit counts.", labels=["route"]),
        "queued": GaugeMetricFamily("bus_queued_events", "Events queued for their next attempt.", labels=["route"]),
        "retrying": GaugeMetricFamily("bus_retrying_events", "Events waiting in Redis to be tried again.",
                                      labels=["route"]),
        "dead": GaugeMetricFamily("bus_dead_events", "Dead-lettered events kept in the journal.", labels=["route"]),
        "queue_length": GaugeMetricFamily("bus_queue_messages", "Task messages in the route's Celery queue.",
                                          labels=["route"]),
        "pending": GaugeMetricFamily("bus_pending_events", "Queued events not yet in a task message: the route's "
                                     "next task takes them along in groups.", labels=["route"]),
    }
    oldest = GaugeMetricFamily("bus_oldest_waiting_seconds", "Age since acceptance of the route's oldest queued "
                               "or retrying event; 0 when none waits.", labels=["route"])
    failing_count = GaugeMetricFamily("bus_endpoints_failing", "How many of the route's endpoints are failing "
                                      "(their last attempts got no answer or a retryable status); 0 when none.",
                                      labels=["route"])
    open_count = GaugeMetricFamily("bus_breakers_open", "How many of the route's endpoints have their breaker "
                                   "holding their events back (open or half-open).", labels=["route"])
    per_endpoint = ["route", "endpoint"]
    failing = GaugeMetricFamily("bus_endpoint_failing", "1 for each failing endpoint of the route (only failing "
                                f"ones are listed, at most {METRICS_ENDPOINTS} per route, longest failing first).",
                                labels=per_endpoint)
    failures = GaugeMetricFamily("bus_endpoint_consecutive_failures", "Failed attempts in a row counted by the "
                                 "endpoint's breaker.", labels=per_endpoint)
    since = GaugeMetricFamily("bus_endpoint_failing_since_timestamp_seconds", "When the endpoint's current run of "
                              "failures began (Unix time).", labels=per_endpoint)
    breaker = GaugeMetricFamily("bus_breaker_open", "1 while the endpoint's breaker holds its events back (open or "
                                "half-open), else 0.", labels=per_endpoint)
    held = GaugeMetricFamily("bus_endpoint_held_events", "Events held back in Redis behind the endpoint's breaker.",
                             labels=per_endpoint)
    for s in current:
        for field_, gauge in gauges.items():
            gauge.add_metric([s.route], getattr(s, field_))
        oldest.add_metric([s.route], s.oldest_waiting_seconds or 0.0)
        failing_count.add_metric([s.route], s.endpoints_failing)
        open_count.add_metric([s.route], s.breakers_open)
        for e in s.endpoints[:METRICS_ENDPOINTS]:
            labels = [s.route, e.endpoint]
            failing.add_metric(labels, 1)
            failures.add_metric(labels, e.failures)
            if e.failing_since:
                since.add_metric(labels, e.failing_since)
            breaker.add_metric(labels, int(e.breaker != "closed"))
            held.add_metric(labels, e.held)
    yield from [*gauges.values(), oldest, failing_count, open_count, failing, failures, since, breaker, held]


def exposition(client: redis.Redis | Shards, routes: Iterable[str], accept: str = "",
               hot_window: float | None = None) -> tuple[bytes, str]:
    """The scrape answer and its content type (Prometheus text, or OpenMetrics when the scraper asks for it).
    `hot_window` (seconds) adds the archive's gauges; None when the archive is off."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BusCollector(client, routes, hot_window))
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type
