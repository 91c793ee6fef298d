"""Listing, sweeping and purging the journal through its status indexes."""
from __future__ import annotations

import heapq
import itertools
import math
import re
import time
from collections.abc import Iterator
from typing import Any

import redis

from ..errors import BadFilter
from ..filters import EventFilter
from ..lifecycle import DELIVERED, STATUSES
from . import scripts
from .counters import counters
from .keys import attempts_key, copies_key, event_key, index_key, retry_key
from .store import (
    DEFAULT_RETENTION,
    SUMMARY_FIELDS,
    Page,
    script,
    summary,
)

_PURGE = scripts.load("purge.lua", "fill.lua", "group.lua", "lane.lua")
# What find() hands out: the last event's index score, ':', its id.
# The id may be a destination's copy (<id>.<destination>): a listing of one destination stops at one.
_CURSOR = re.compile(
    r"([0-9][0-9.e+-]*):([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?:\.[A-Za-z0-9_-]+)?)")


def sweep(client: redis.Redis, retention: int, now: float | None = None, batch: int = 5000) -> int:
    """Drop from the delivered indexes, overall and per route, the events received before the
    retention (their hashes expire on their own); at most `batch` per index per call."""
    cutoff = (now or time.time()) - retention
    if not client.zcount(index_key(DELIVERED), "-inf", cutoff):
        return 0
    # Every route that ever delivered has a delivered counter; an expired record no longer says its route.
    routes = sorted({route for kind, route, _, _ in counters(client) if kind == "delivered"})
    indexes = [index_key(DELIVERED)] + [index_key(DELIVERED, route) for route in routes]
    pipe = client.pipeline(transaction=False)
    for index in indexes:
        pipe.zrangebyscore(index, "-inf", cutoff, start=0, num=batch)
    stale = pipe.execute()
    pipe = client.pipeline(transaction=False)
    for index, ids in zip(indexes, stale):
        if ids:
            pipe.zrem(index, *ids)
    pipe.execute()
    return len(stale[0])


def _drop_from_indexes(client: redis.Redis, items: list[tuple[str, str | None]], status: str | None) -> None:
    pipe = client.pipeline(transaction=False)
    for event_id, route in items:
        for s in [status] if status else STATUSES:
            pipe.zrem(index_key(s), event_id)
            if route:
                pipe.zrem(index_key(s, route), event_id)
    pipe.execute()


def purge(client: redis.Redis, events: list[dict[str, Any]]) -> list[str]:
    """Delete events (record, attempts, copies and index entries) for good, in one step
    (lua/purge.lua). An event no longer in the status it was listed in (its `status`, when it has
    one: a delivery or a replay moved it since) is left as it is; returns the ids of those."""
    if not events:
        return []
    keys: list[str] = []
    args: list[Any] = []
    for event in events:
        event_id, route = event["id"], event.get("route") or ""
        keys += [event_key(event_id), attempts_key(event_id), copies_key(event_id), retry_key(route)]
        args += [event_id, route, event.get("status") or ""]
    answers = script(client, _PURGE)(keys=keys, args=args)
    return [event["id"] for event, answer in zip(events, answers) if answer not in (b"purged", b"gone")]


def _cursor_bounds(f: EventFilter, cursor: str | None) -> tuple[float | str, str | None]:
    if not cursor:
        return (f.until if f.until is not None else "+inf"), None
    match = _CURSOR.fullmatch(cursor)
    try:
        score = float(match.group(1)) if match else math.nan
    except ValueError:
        score = math.nan
    if not math.isfinite(score):
        raise BadFilter(f"cursor {cursor[:80]!r} is not one this bus handed out; "
                        "pass the cursor of the last page unchanged, or list again without one")
    return score, match.group(2)  # type: ignore[union-attr]


def find(client: redis.Redis, f: EventFilter, limit: int = 50, cursor: str | None = None,
         retention: int = DEFAULT_RETENTION, max_scan: int = 20_000) -> Page:
    """Events matching `f`, newest first, `limit` at most; reads only the indexes of the status/route asked for
    (the four status indexes, merged, when any status will do).

    A tag pattern is checked per candidate; at most `max_scan` candidates are read
    per call, so a rare tag in a huge index returns a short page with a cursor
    rather than a slow one.
    """
    sweep(client, retention)
    high, after_id = _cursor_bounds(f, cursor)
    low = f.since if f.since is not None else "-inf"
    indexes = [(index_key(status, route), route) for status in ([f.status] if f.status else STATUSES)
               for route in (f.routes or (None,))]
    newest_first = heapq.merge(*(_index_order(client, index, high, low, route) for index, route in indexes),
                               key=lambda item: (item[1], item[0]), reverse=True)
    found: list[dict[str, Any]] = []
    scanned, chunk, last = 0, max(limit * 2, 100), None
    while scanned < max_scan:
        batch = list(itertools.islice(newest_first, chunk))
        if not batch:
            return Page(found, None)
        scanned += len(batch)
        last = batch[-1]
        candidates = [(m, sc, r) for m, sc, r in batch if not (after_id and sc == high and m >= after_id)]
        if f.tag is not None:
            # Read only the tags first: a selective pattern then costs one small field per candidate.
            pipe = client.pipeline(transaction=False)
            for event_id, _, _ in candidates:
                pipe.hget(event_key(event_id), "tag")
            tags = pipe.execute()
            gone = [(event_id, route) for (event_id, _, route), tag in zip(candidates, tags) if tag is None]
            candidates = [c for c, tag in zip(candidates, tags) if tag is not None and f.matches_tag(tag.decode())]
        else:
            gone = []
        pipe = client.pipeline(transaction=False)
        for event_id, _, _ in candidates[: limit - len(found)]:
            pipe.hmget(event_key(event_id), SUMMARY_FIELDS)
        for (event_id, score, route), values in zip(candidates, pipe.execute()):
            if values[0] is None:
                gone.append((event_id, route))
                continue
            found.append(summary(event_id, values))
            if len(found) == limit:
                if gone:
                    _drop_from_indexes(client, gone, None)
                return Page(found, f"{score!r}:{event_id}")
        if gone:
            _drop_from_indexes(client, gone, None)
        # A filter that matches little needs bigger reads, fewer round trips.
        chunk = min(chunk * 2, 2000)
    if last is None:  # a scan budget of nothing: nothing read, nothing to go on from
        return Page(found, None)
    # The scan budget ran out: hand back where it stopped so the caller can go on.
    return Page(found, f"{last[1]!r}:{last[0]}")


def _index_order(client: redis.Redis, index: str, high: float | str, low: float | str, route: str | None
                 ) -> Iterator[tuple[str, float, str | None]]:
    """(id, received, the index's route) of one index from `high` down to `low`, newest first (ties: greater
    id first, as ZREVRANGEBYSCORE orders them), read in pages that grow as the reader keeps going."""
    offset, page = 0, 100
    while True:
        batch = client.zrevrangebyscore(index, high, low, start=offset, num=page, withscores=True)
        for member, score in batch:
            yield member.decode(), score, route
        if len(batch) < page:
            return
        offset += len(batch)
        page = min(page * 2, 2000)


def iter_matching(client: redis.Redis, f: EventFilter, retention: int = DEFAULT_RETENTION,
                  page: int = 500) -> Iterator[dict[str, Any]]:
    """Every matching event summary, page by page (for replay and purge)."""
    cursor = None
    while True:
        result = find(client, f, limit=page, cursor=cursor, retention=retention)
        yield from result.events
        if result.cursor is None or result.cursor == cursor:
            return
        cursor = result.cursor
