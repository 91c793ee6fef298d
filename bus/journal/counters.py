"""Counts for /metrics and `bus stats`: counters bumped by the transitions, latency, per-route snapshots."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import redis

from ..lifecycle import DEAD, QUEUED, RETRYING
from .keys import COUNTERS, index_key, latency_key, pending_key, queue_name, slot_key
from .store import (
    REDIS_DOWN,
    unavailable,
)

# Accept-to-2xx seconds: from a healthy endpoint's tens of milliseconds to a day-long outage.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0)
SLOT = 10  # seconds per delivered-count slot
SLOTS_KEPT = 3600 // SLOT


def count_refused(client: redis.Redis, route: str, reason: str) -> None:
    """A request the ingress refused; `route` is '' when none was chosen (bad tag, no route)."""
    client.hincrby(COUNTERS, f"refused:{route}:{reason}", 1)


def counters(client: redis.Redis) -> list[tuple[str, str, str, int]]:
    """Every counter as (kind, route, label, value); label is '' for kinds without one."""
    out = []
    for name, value in client.hgetall(COUNTERS).items():
        kind, _, rest = name.decode().partition(":")
        route, _, label = rest.partition(":")
        out.append((kind, route, label, int(value)))
    return out


def latency(client: redis.Redis, routes: Iterable[str]) -> dict[str, tuple[list[tuple[str, int]], float]]:
    """Per route with deliveries: cumulative (upper bound, count) buckets ending with '+Inf', and the sum."""
    routes = list(routes)
    pipe = client.pipeline(transaction=False)
    for route in routes:
        pipe.hgetall(latency_key(route))
    out = {}
    for route, raw in zip(routes, pipe.execute()):
        if not raw:
            continue
        values = {k.decode(): v for k, v in raw.items()}
        running, buckets = 0, []
        for bound in [repr(b) for b in LATENCY_BUCKETS] + ["+Inf"]:
            running += int(values.get(bound, 0))
            buckets.append((bound, running))
        out[route] = (buckets, float(values.get("sum", 0)))
    return out


@dataclass(frozen=True)
class RouteSnapshot:
    """What Redis says about one route at one moment."""

    queued: int
    retrying: int
    dead: int
    queue_length: int  # task messages in bus.<route> waiting for a worker
    pending: int  # events on the route's pending list: the next task message of the route takes them
    oldest_waiting: float | None  # received time of the oldest queued or retrying event
    delivered_per_slot: list[int]  # the last hour, SLOT seconds each, oldest first; the last is the current slot
    # Ever delivered, and of those moved to the archive: counters, whatever Redis still holds of the events.
    delivered_total: int = 0
    archived_total: int = 0


def snapshot(client: redis.Redis, routes: Iterable[str], now: float) -> dict[str, RouteSnapshot]:
    """Every route's counts, oldest waiting event and recent deliveries, in one round trip (breakers:
    breakers.failing)."""
    routes = list(routes)
    current = int(now // SLOT)
    slots = range(current - SLOTS_KEPT + 1, current + 1)
    pipe = client.pipeline(transaction=False)
    for route in routes:
        for status in (QUEUED, RETRYING, DEAD):
            pipe.zcard(index_key(status, route))
        for status in (QUEUED, RETRYING):
            pipe.zrange(index_key(status, route), 0, 0, withscores=True)
        pipe.llen(queue_name(route))
        pipe.llen(pending_key(route))
        pipe.mget([slot_key(route, s) for s in slots])
        pipe.hmget(COUNTERS, [f"delivered:{route}", f"archived:{route}"])
    results = pipe.execute()
    per_route = len(results) // max(1, len(routes))
    out = {}
    for i, route in enumerate(routes):
        queued, retrying, dead, first_queued, first_retrying, length, pending, slot_counts, totals = \
            results[i * per_route:(i + 1) * per_route]
        oldest = [score for _, score in first_queued + first_retrying]
        out[route] = RouteSnapshot(
            queued=queued, retrying=retrying, dead=dead, queue_length=length, pending=pending,
            oldest_waiting=min(oldest) if oldest else None,
            delivered_per_slot=[int(c or 0) for c in slot_counts],
            delivered_total=int(totals[0] or 0), archived_total=int(totals[1] or 0),
        )
    return out


def count(client: redis.Redis, status: str, route: str | None = None) -> int:
    return client.zcard(index_key(status, route))


def backlog(client: redis.Redis, route: str) -> int:
    """Events of the route accepted but neither delivered nor dead (queued or waiting to retry)."""
    pipe = client.pipeline(transaction=False)
    pipe.zcard(index_key(QUEUED, route))
    pipe.zcard(index_key(RETRYING, route))
    try:
        return sum(pipe.execute())
    except REDIS_DOWN as exc:
        raise unavailable(exc) from exc
