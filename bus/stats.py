"""Each route's operating state: backlog, retrying, dead, recent deliveries, oldest waiting event, and the state
of each of its endpoints that is failing (a breaker per rendered endpoint: endpoints.py).

One reading serves `bus stats`, GET /stats (the console) and the gauges of GET /metrics,
so the three never disagree about what "backlog" or "failing" means.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from . import journal
from .endpoints import is_origin
from .shards import Shards, as_shards, down

MINUTE_SLOTS = 60 // journal.SLOT


@dataclass(frozen=True)
class EndpointStats:
    """One failing endpoint of a route: what its breaker holds."""

    endpoint: str  # scheme://host[:port]/path as rendered, without query; no path: a whole origin (scope)
    scope: str  # "path": this endpoint's answers fail; "origin": the host takes no connection, every path waits
    failing_since: float | None  # Unix time of the first failure in its current run of failures
    failures: int  # failures in a row, counted while its breaker is closed
    breaker: str  # "closed"; "open": its events wait in Redis; "half-open": one probe is about to test it
    breaker_open_until: float | None
    held: int  # events held back behind its breaker
    oldest_held_seconds: float | None  # how long the longest-held of them has waited there


@dataclass(frozen=True)
class RouteStats:
    route: str
    backlog: int  # accepted, neither delivered nor dead: what backlog_limit counts
    queued: int
    retrying: int
    dead: int
    queue_length: int  # task messages waiting in bus.<route> for a worker
    pending: int  # queued events not yet in a task message: the route's next task takes them along
    delivered_last_minute: int
    delivered_last_hour: int
    delivered_total: int  # ever, counted when delivered: does not depend on what Redis still holds
    archived_total: int  # of those, moved from Redis to the archive
    oldest_waiting_seconds: float | None  # since acceptance, of the oldest queued or retrying event
    endpoint: str  # "ok", or "failing" while any endpoint of the route is (its last attempts failed)
    failing_since: float | None  # the earliest failing_since of its failing endpoints
    endpoints_failing: int  # how many of its endpoints are failing right now
    breakers_open: int  # of those listed, how many hold their events back (open or half-open)
    endpoints: list[EndpointStats]  # the failing endpoints, longest failing first (up to breakers.LISTED)


def read(client: redis.Redis | Shards, routes: Iterable[str], now: float | None = None) -> list[RouteStats]:
    """The stats of every route, in the order given, from one round trip per shard; Unavailable naming
    a shard that does not answer (a table without its routes would read as if they were idle)."""
    now = time.time() if now is None else now
    shards, routes = as_shards(client), list(routes)
    found: dict[str, RouteStats] = {}
    for name, names in shards.by_shard(routes).items():
        try:
            snaps = journal.snapshot(shards.clients[name], names, now)
            failing = journal.breakers.failing(shards.clients[name], names)
        except journal.REDIS_DOWN as exc:
            if len(shards.clients) == 1:
                raise
            raise down(shards, name, exc) from exc
        found.update({route: _route_stats(route, snap, *failing[route], now) for route, snap in snaps.items()})
    return [found[route] for route in routes]


def _endpoint_stats(e: journal.breakers.EndpointState, now: float) -> EndpointStats:
    b = e.breaker
    open_until = b.get("open_until")
    return EndpointStats(
        endpoint=e.endpoint, scope="origin" if is_origin(e.endpoint) else "path",
        failing_since=b.get("failing_since") or b.get("since"), failures=int(b.get("failures", 0)),
        breaker="closed" if not open_until else "open" if open_until > now else "half-open",
        breaker_open_until=open_until, held=e.held,
        oldest_held_seconds=max(0.0, now - e.oldest_held) if e.oldest_held is not None else None)


def _route_stats(route: str, snap: journal.RouteSnapshot, count: int, failing: list[journal.breakers.EndpointState],
                 now: float) -> RouteStats:
    listed = sorted((_endpoint_stats(e, now) for e in failing), key=lambda e: (e.failing_since or now, e.endpoint))
    return RouteStats(
        route=route,
        backlog=snap.queued + snap.retrying,
        queued=snap.queued,
        retrying=snap.retrying,
        dead=snap.dead,
        queue_length=snap.queue_length,
        pending=snap.pending,
        # Counted in whole slots: "last minute" is the last 50-60 s, "last hour" the last 59m50s-60m.
        delivered_last_minute=sum(snap.delivered_per_slot[-MINUTE_SLOTS:]),
        delivered_last_hour=sum(snap.delivered_per_slot),
        delivered_total=snap.delivered_total,
        archived_total=snap.archived_total,
        oldest_waiting_seconds=max(0.0, now - snap.oldest_waiting) if snap.oldest_waiting is not None else None,
        endpoint="failing" if count else "ok",
        failing_since=listed[0].failing_since if listed else None,
        endpoints_failing=count,
        breakers_open=sum(e.breaker != "closed" for e in listed),
        endpoints=listed,
    )


@dataclass(frozen=True)
class ArchiveStats:
    """The archive as the workers' mover last found it, and what waits in Redis for it."""

    url: str  # without its password
    up: bool | None  # None: no worker has tried it yet
    since: float | None  # up or down since (Unix time)
    error: str
    overdue: int  # delivered events received more than BUS_HOT_WINDOW ago, still in Redis


def read_archive(client: redis.Redis | Shards, shown_url: str, hot_window: float, now: float) -> ArchiveStats:
    """The archive as the latest mover pass of any shard found it, and what waits for it on all of them."""
    shards = as_shards(client)
    states = [journal.archive_state(c) for c in shards.clients.values()]
    state = max(states, key=lambda st: st.get("checked") or 0.0)
    return ArchiveStats(url=shown_url, up=state.get("up"), since=state.get("since"), error=state.get("error", ""),
                        overdue=sum(journal.overdue(c, now - hot_window) for c in shards.clients.values()))


def archive_text(a: ArchiveStats, now: float) -> str:
    """One line under `bus stats`' table."""
    state = ("not tried yet" if a.up is None else
             f"{'up' if a.up else 'DOWN'} for {age(now - a.since) if a.since else '-'}")
    line = f"archive {a.url}: {state}; {a.overdue} delivered events past the hot window wait in Redis"
    return line + (f" ({a.error})" if a.error and not a.up else "")


def as_json(stats: list[RouteStats], now: float, archive: ArchiveStats | None = None) -> dict[str, Any]:
    """What GET /stats and `bus stats --json` answer."""
    return {"at": now, "routes": [asdict(s) for s in stats], **({"archive": asdict(archive)} if archive else {})}


def age(seconds: float | None) -> str:
    """A short human duration: 45s, 3m05s, 2h10m, 4d03h; '-' for none."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def since_text(failing_since: float | None, now: float) -> str:
    if not failing_since:
        return "-"
    when = datetime.fromtimestamp(failing_since, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"{when} ({age(now - failing_since)} ago)"


def endpoint_text(s: RouteStats, now: float) -> str:
    """The route's ENDPOINT column: ok, or how many of its endpoints fail (each listed below the table)."""
    if s.endpoint == "ok":
        return "ok"
    n = s.endpoints_failing
    return f"{n} endpoint{'s' * (n != 1)} failing, the first since {since_text(s.failing_since, now)}"


TABLE_ENDPOINTS = 10  # failing endpoints a route shows in `bus stats`' second table (--json: breakers.LISTED)


def table(stats: list[RouteStats], now: float) -> Sequence[tuple[str, ...]]:
    """Rows for `bus stats`, header first."""
    rows = [("ROUTE", "BACKLOG", "RETRYING", "DEAD", "DELIVERED/1M", "DELIVERED/1H", "OLDEST WAITING", "ENDPOINT")]
    rows += [(s.route, str(s.backlog), str(s.retrying), str(s.dead), str(s.delivered_last_minute),
              str(s.delivered_last_hour), age(s.oldest_waiting_seconds), endpoint_text(s, now)) for s in stats]
    return rows


def endpoint_table(stats: list[RouteStats], now: float) -> Sequence[tuple[str, ...]]:
    """Rows of the failing endpoints, header first; none at all when every endpoint answers."""
    rows = [("ROUTE", "FAILING ENDPOINT", "SINCE", "FAILURES", "BREAKER", "HELD BACK")]
    for s in stats:
        for e in s.endpoints[:TABLE_ENDPOINTS]:
            held = f"{e.held} (oldest {age(e.oldest_held_seconds)})" if e.held else "0"
            shown = f"{e.endpoint} (every path: no connection)" if e.scope == "origin" else e.endpoint
            rows.append((s.route, shown, since_text(e.failing_since, now), str(e.failures), e.breaker, held))
        if s.endpoints_failing > TABLE_ENDPOINTS:
            rows.append((s.route, f"... and {s.endpoints_failing - TABLE_ENDPOINTS} more", "", "", "",
                         "(bus stats --json lists more)"))
    return rows if len(rows) > 1 else []
