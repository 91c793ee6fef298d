"""Delivered events leaving Redis for the archive: which are due, their whole records, and the
guarded delete once the archive holds them."""
from __future__ import annotations

import time
from typing import Any

import redis

from ..lifecycle import DELIVERED
from . import scripts
from .counters import counters
from .keys import ARCHIVE_MOVER, ARCHIVE_STATE, COUNTERS, attempts_key, copies_key, event_key, index_key
from .store import (
    decode,
    script,
)
from .transitions import claim_lease


def due_for_archive(client: redis.Redis, cutoff: float, limit: int) -> list[str]:
    """Ids of delivered events received before `cutoff`, oldest first."""
    return [i.decode() for i in client.zrangebyscore(index_key(DELIVERED), "-inf", cutoff, start=0, num=limit)]


def overdue(client: redis.Redis, cutoff: float) -> int:
    """Delivered events received before `cutoff` still in Redis: the mover's backlog."""
    return client.zcount(index_key(DELIVERED), "-inf", cutoff)


# lua/load_whole.lua: one script call per batch, not three commands per event.
_LOAD_WHOLE = scripts.load("load_whole.lua")


def load_whole(client: redis.Redis, event_ids: list[str]
               ) -> list[tuple[dict[str, Any], list[bytes], list[bytes]] | None]:
    """Each event's record (decoded), raw attempt and copy lists, in one round trip; None when gone."""
    if not event_ids:
        return []
    replies = script(client, _LOAD_WHOLE)(keys=[event_key(i) for i in event_ids], args=[])
    out: list[tuple[dict[str, Any], list[bytes], list[bytes]] | None] = []
    for event_id, (flat, tries, copies) in zip(event_ids, replies):
        out.append((decode(event_id, dict(zip(flat[::2], flat[1::2]))), tries, copies) if flat else None)
    return out


# lua/forget_archived.lua: deletes what the archive now holds, if each event is still as written.
_FORGET = scripts.load("forget_archived.lua")
assert attempts_key("x") == event_key("x") + ":attempts" and copies_key("x") == event_key("x") + ":copies"


def forget_archived(client: redis.Redis, written: list[tuple[str, str, int, int]]) -> list[str]:
    """Delete from Redis the events the archive now holds, given as (id, route, attempts, copies)
    as they were written; per event 'moved', 'changed' (left in Redis) or 'gone'."""
    if not written:
        return []
    keys = [index_key(DELIVERED), COUNTERS] + [index_key(DELIVERED, route) for _, route, _, _ in written]
    args = [str(v) for item in written for v in item]
    return [r.decode() for r in script(client, _FORGET)(keys=keys, args=args)]


def claim_archive_mover(client: redis.Redis, worker_id: str, ms: int) -> bool:
    """One worker moves delivered events to the archive at a time."""
    return claim_lease(client, ARCHIVE_MOVER, worker_id, ms)


def set_archive_state(client: redis.Redis, up: bool, since: float, error: str = "") -> None:
    """What the mover last found, for /metrics and `bus stats` (any process can read it)."""
    client.hset(ARCHIVE_STATE, mapping={"up": "1" if up else "0", "since": repr(since), "error": error[:500],
                                        "checked": repr(time.time())})


def archive_state(client: redis.Redis) -> dict[str, Any]:
    """{'up': bool, 'since': float, 'error': str, 'checked': float}, or {} before any mover ran."""
    raw = {k.decode(): v.decode() for k, v in client.hgetall(ARCHIVE_STATE).items()}
    if not raw:
        return {}
    return {"up": raw.get("up") == "1", "since": float(raw.get("since", 0)), "error": raw.get("error", ""),
            "checked": float(raw.get("checked", 0))}


def archived_counts(client: redis.Redis) -> dict[str, int]:
    """Events moved to the archive so far, per route."""
    return {route: value for kind, route, _, value in counters(client) if kind == "archived"}


def in_redis(client: redis.Redis, event_ids: list[str]) -> set[str]:
    """Which of these events have a record in Redis (a listing shows Redis's over an archived row)."""
    if not event_ids:
        return set()
    pipe = client.pipeline(transaction=False)
    for event_id in event_ids:
        pipe.exists(event_key(event_id))
    return {i for i, found in zip(event_ids, pipe.execute()) if found}
