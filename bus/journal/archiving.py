"""Delivered events leaving Redis for the archive: which are due, their whole records, and the
guarded delete once the archive holds them."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from ..lifecycle import DELIVERED
from . import scripts
from .counters import counters
from .keys import ARCHIVE_MOVER, ARCHIVE_STATE, COUNTERS, attempts_key, copies_key, event_key, index_key
from .store import script
from .transitions import claim_lease


def overdue(client: redis.Redis, cutoff: float) -> int:
    """Delivered events received before `cutoff` still in Redis: the mover's backlog."""
    return client.zcount(index_key(DELIVERED), "-inf", cutoff)


# What the archive keeps of a record's hash, in the order lua/read_due.lua hands them back.
ARCHIVED_FIELDS = ("tag", "route", "status", "received", "attempts", "last", "round", "replayed", "body", "headers",
                   "request")
# Per event in read_due's reply: its id, those fields, its attempts, its copies and how many copies.
_STRIDE = 1 + len(ARCHIVED_FIELDS) + 3


@dataclass(frozen=True)
class Due:
    """A delivered event past the hot window as the mover reads it: the record's ARCHIVED_FIELDS as
    stored (None when absent, all None when the record is gone), its attempts and copies as the JSON
    arrays the archive keeps, and how many copies (what forget_archived checks)."""

    id: str
    fields: dict[str, bytes | None]
    attempt_log: bytes
    copies: bytes
    copy_count: int

    @property
    def gone(self) -> bool:
        return self.fields["status"] is None

    @property
    def delivered(self) -> bool:
        return self.fields["status"] == _DELIVERED

    def as_written(self) -> tuple[str, str, int, int]:
        """(id, route, attempts, copies) as read: what forget_archived checks before it deletes."""
        if self.gone:
            return self.id, "", 0, 0
        return self.id, (self.fields["route"] or b"").decode(), int(self.fields["attempts"] or 0), self.copy_count


_DELIVERED = DELIVERED.encode()


# lua/read_due.lua: the ids and their records in one script call per batch, in a flat reply.
_READ_DUE = scripts.load("read_due.lua")


def read_due(client: redis.Redis, cutoff: float, limit: int, skip: int = 0) -> list[Due]:
    """Delivered events received before `cutoff`, oldest first, whole: up to `limit` after the first `skip`."""
    flat = script(client, _READ_DUE)(keys=[index_key(DELIVERED)], args=[repr(cutoff), limit, skip, *ARCHIVED_FIELDS])
    n = len(ARCHIVED_FIELDS)
    return [Due(flat[i].decode(), dict(zip(ARCHIVED_FIELDS, flat[i + 1:i + 1 + n])), flat[i + 1 + n], flat[i + 2 + n],
                flat[i + 3 + n])
            for i in range(0, len(flat), _STRIDE)]


# lua/forget_archived.lua: deletes what the archive now holds, if each event is still as written.
_FORGET = scripts.load("forget_archived.lua")
assert attempts_key("x") == event_key("x") + ":attempts" and copies_key("x") == event_key("x") + ":copies"


def forget_archived(client: redis.Redis, written: list[tuple[str, str, int, int]]) -> list[str]:
    """Delete from Redis the events the archive now holds, given as (id, route, attempts, copies)
    as they were written; per event 'moved', 'changed' (left in Redis) or 'gone'."""
    if not written:
        return []
    args = [str(v) for item in written for v in item]
    return [r.decode() for r in script(client, _FORGET)(keys=[index_key(DELIVERED), COUNTERS], args=args)]


def claim_archive_mover(client: redis.Redis, worker_id: str, ms: int) -> bool:
    """One worker moves delivered events to the archive at a time."""
    return claim_lease(client, ARCHIVE_MOVER, worker_id, ms)


# lua/archive_sleep.lua: when to look again, and the lease stretched over the wait, in one step.
_SLEEP = scripts.load("archive_sleep.lua")
_LET_GO = scripts.load("let_go.lua")


def plan_archive_sleep(client: redis.Redis, worker_id: str, now: float, hot_window: float, longest: float,
                       linger: float, want: int, margin_ms: int) -> float:
    """When the mover looks again: `want` events past the hot window, or the oldest `linger` s past
    it, and at most `longest` s from now; its lease (if it holds it) lasts until then and `margin_ms`."""
    return float(script(client, _SLEEP)(keys=[ARCHIVE_MOVER, index_key(DELIVERED)],
                                        args=[worker_id, repr(now), repr(hot_window), repr(longest), repr(linger),
                                              want, margin_ms]))


def let_go_archive_mover(client: redis.Redis, worker_id: str) -> bool:
    """Give up the mover's lease (a worker stopping), so another worker's mover takes over at once
    rather than when the lease stretched over its sleep would lapse; False when it held none."""
    return bool(script(client, _LET_GO)(keys=[ARCHIVE_MOVER], args=[worker_id]))


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
