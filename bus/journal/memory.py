"""Whether Redis can take new events: its memory against the ingress's high mark (read twice a
second), and for /healthz its role and a probe write.

Redis runs with a maxmemory and `noeviction` (bus up, docker-compose): it never
drops an accepted event to make room, it refuses writes instead (OOM). Refused
at its hard limit, the workers could no longer record attempts (kombu's own
write of a task to `unacked` fails and the worker stops), so nothing drained.
The ways in therefore refuse early, at a high mark: when Redis's memory plus
what its waiting events still need to be delivered (DRAIN_COST each: an
attempt list, its record, the expiries; measured 660-960 B) is over
BUS_REDIS_MEMORY_HIGH (0.9) of maxmemory. Whatever is in Redis then drains
within the limit, with a tenth of it to spare for kombu, counters and retries.

The mark is read (INFO memory and the sizes of the queued and retrying
indexes, one round trip) every READ_EVERY seconds per process, by whichever
accept finds it due; the others use that reading: never a round trip per
request. Half a second of a busy ingress can be more than the room left, so
between readings each process also counts what its own accepts add and takes
the next reading early once that would reach the mark (at most every MIN_GAP
seconds). Redis compares used_memory less mem_not_counted_for_evict
(replication and AOF buffers) with maxmemory; so do we. A Redis without
maxmemory has no mark.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from ..errors import RedisFull, Unavailable
from ..lifecycle import QUEUED, RETRYING
from ..wire.pipelined import SharedPipe
from .keys import HEALTH_PROBE, index_key
from .store import (
    MEMORY_ADVICE,
    REDIS_DOWN,
    NewEvent,
    unavailable,
)

READ_EVERY = 0.5
MIN_GAP = 0.02
# Redis memory of a waiting event besides its body and headers: its hash, two index entries, its
# place on the pending list and in a task message (measured: 750-1100 B, by hash encoding).
EVENT_OVERHEAD = 1000
# What delivering an event adds to Redis (measured 660-960 B), until retention or the archive frees it.
DRAIN_COST = 1000
# One reading: Redis memory and how many events wait (queued or retrying) to be delivered.
READING = [("INFO", "memory"), ("ZCARD", index_key(QUEUED)), ("ZCARD", index_key(RETRYING))]


class MemoryMark:
    """The last reading of Redis memory and the refusal it implies; shared by a process's accepts."""

    def __init__(self, high: float, every: float = READ_EVERY):
        self.high, self.every = high, every
        self._next = 0.0  # time.monotonic() of the next reading
        self._last = 0.0  # ... and of the last one
        self._room: float = float("inf")  # bytes under the mark, less what this process accepted since
        self._refusal: str | None = None
        self._lock = threading.Lock()

    def due(self, now: float | None = None) -> bool:
        """True for the one caller that takes the next reading (it then calls update() with READING's replies)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if now < self._next and (self._room > 0 or now < self._last + MIN_GAP):
                return False
            self._next, self._last = now + self.every, now
            return True

    def accepted(self, events: Iterable[NewEvent]) -> None:
        """Count what these events, just accepted, take of the room until the next reading."""
        size = count = 0
        for event in events:
            size += len(event.body) + len(event.headers)
            count += 1
        self.took(size, count)

    def took(self, size: int, count: int) -> None:
        """accepted() of `count` events of `size` bytes in all (bodies and headers; a spool's sender counts its
        frames' payloads, which hold a little more: the ids and tags)."""
        with self._lock:
            self._room -= size + count * (EVENT_OVERHEAD + DRAIN_COST)

    def update(self, replies: list[Any]) -> None:
        """Take a reading: the replies to READING. One that is an error leaves the last reading."""
        if any(isinstance(reply, Exception) for reply in replies):
            return
        info, queued, retrying = replies
        fields = parse_info(info)
        limit = int(fields.get("maxmemory", 0))
        used = int(fields.get("used_memory", 0)) - int(fields.get("mem_not_counted_for_evict", 0))
        waiting = int(queued) + int(retrying)
        needed = used + waiting * DRAIN_COST
        self._room = self.high * limit - needed if limit else float("inf")
        if self._room < 0:
            mib = 2 ** 20
            self._refusal = (
                f"Redis is near its memory limit (maxmemory {limit / mib:.1f} MiB): {used / mib:.1f} MiB used, "
                f"plus {waiting * DRAIN_COST / mib:.1f} MiB that delivering its {waiting} waiting events will take, "
                f"is over the ingress's high mark (BUS_REDIS_MEMORY_HIGH={self.high:g} of it): nothing was "
                f"accepted; retry later. Operators: {MEMORY_ADVICE}")
        else:
            self._refusal = None

    def check(self) -> None:
        """RedisFull when the last reading was over the mark."""
        if self._refusal is not None:
            raise RedisFull(self._refusal)


def check_room(pipe: SharedPipe, mark: MemoryMark) -> None:
    """The threaded ways in (emit, forward, CLI, the werkzeug app): a reading through the process's
    pipe when due, then RedisFull when over the mark."""
    if mark.due():
        try:
            mark.update(pipe.execute_many(READING))
        except REDIS_DOWN:
            pass  # the accept that follows finds out for itself, and says so
    mark.check()


def check_writable(pipe: SharedPipe, mark: MemoryMark, replicas: int = 0) -> None:
    """GET /healthz: Unavailable unless an accept now would be taken: Redis is a primary with at least
    `replicas` (BUS_ACK_REPLICAS) connected, under the high mark, and takes a write (one round trip:
    READONLY, NOREPLICAS, OOM, LOADING all show)."""
    try:
        replication, *reading, probe = pipe.execute_many(
            [("INFO", "replication"), *READING, ("SET", HEALTH_PROBE, "1", "PX", 10_000)])
    except REDIS_DOWN as exc:
        raise unavailable(exc) from exc
    for reply in (replication, *reading, probe):
        if isinstance(reply, REDIS_DOWN):
            raise unavailable(reply)
        if isinstance(reply, Exception):  # e.g. an ACL without INFO: not writable as far as we can tell
            raise Unavailable(f"Redis refused the health check ({reply.__class__.__name__}: {reply})")
    fields = parse_info(replication)
    role, connected = fields.get("role", ""), int(fields.get("connected_slaves", 0))
    if role != "master":
        raise Unavailable(f"Redis at BUS_REDIS_URL is a replica (role:{role}), not a writable primary; "
                          "a failover may be under way")
    if connected < replicas:
        raise Unavailable(f"the Redis primary has {connected} connected replica(s); BUS_ACK_REPLICAS={replicas} "
                          "asks each accept to wait for more, so accepts would be refused")
    mark.update(reading)
    mark.check()


def parse_info(raw: bytes | str) -> dict[str, str]:
    """INFO's `name:value` lines (section headers and blank lines left out)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    fields = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and not name.startswith("#"):
            fields[name] = value
    return fields
