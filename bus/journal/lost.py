"""Where a waiting event's task can be, for lost-task recovery (recovery.py).

kombu's Redis transport hands a task to a worker with BRPOP and only then records it in its
`unacked` hash (delivery tag -> [message, exchange, routing key]). A Redis or worker crash between
the two drops the task while the journal still says queued/retrying. These read the journal's places
where a waiting event's task can be (the unacked hash is read by broker/unacked.py, the caller
combines them), so recovery can find the events whose task is nowhere.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import redis

from ..broker.messages import Outgoing
from ..lifecycle import QUEUED, RETRYING
from . import scripts, templates
from .keys import (
    RECOVERY_DONE,
    RECOVERY_LOCK,
    event_key,
    index_key,
    lane_key,
    lanes_key,
    parked_key,
    pending_key,
    queue_name,
    retry_key,
)
from .store import (
    script,
)

_SCAN_CHUNK = 1000
# SCAN's COUNT: how many keys Redis looks at per call. The keys sought are a few per route among every event's
# record and attempts; at Redis's default of 10 a pass over a keyspace of N keys was N / 10 round trips per
# scan, thousands a second in the worker's main process while a recovery's second pass ran under load
# (docs/performance.md, "Issue 19: the fan-out worker's main process").
_SCAN_KEYS = 1000
_REQUEUE = scripts.load("requeue_lost.lua", "fill.lua")
_UNLOCK = scripts.load("recovery_unlock.lua")
_DONE = scripts.load("recovery_done.lua")  # keeps the latest start only: two recoveries may end out of order


def waiting_ids(client: redis.Redis) -> set[str]:
    """Ids of every event not yet delivered or dead."""
    found: set[str] = set()
    for status in (QUEUED, RETRYING):
        for start in range(0, client.zcard(index_key(status)), _SCAN_CHUNK):
            found.update(raw.decode() for raw in client.zrange(index_key(status), start, start + _SCAN_CHUNK - 1))
    return found


def still_waiting(client: redis.Redis, ids: set[str]) -> set[str]:
    """Those of `ids` that are still queued or retrying. A pass reads where events wait one place after
    another while workers deliver them: an event read as waiting and delivered before the place it
    was in is read is found nowhere, so under load nearly every pass found such events and made the
    second pass (a read of everything again) run; this one round trip per chunk leaves them out."""
    found: set[str] = set()
    chunks = sorted(ids)
    for start in range(0, len(chunks), _SCAN_CHUNK):
        chunk = chunks[start : start + _SCAN_CHUNK]
        pipe = client.pipeline(transaction=False)
        for status in (QUEUED, RETRYING):
            pipe.zmscore(index_key(status), chunk)
        queued, retrying = pipe.execute()
        found.update(i for i, q, r in zip(chunk, queued, retrying) if q is not None or r is not None)
    return found


def scheduled_ids(client: redis.Redis) -> set[str]:
    """Ids waiting on a route's retry schedule, or held back behind an endpoint's open breaker
    (breakers.py): their next task is made when they are due, or when the breaker lets them go."""
    found: set[str] = set()
    keys = [*client.scan_iter(match=retry_key("*"), count=_SCAN_KEYS, _type="zset"),
            *client.scan_iter(match=parked_key("*", "*"), count=_SCAN_KEYS, _type="zset")]
    for key in keys:
        for start in range(0, client.zcard(key), _SCAN_CHUNK):
            found.update(raw.decode() for raw in client.zrange(key, start, start + _SCAN_CHUNK - 1))
    return found


def lane_waiting_ids(client: redis.Redis) -> set[str]:
    """Ids of an ordered route waiting in their lane behind its head (lua/lane.lua): no message may send
    them before the events ahead of them are done, which then puts the next one on the pending list."""
    found: set[str] = set()
    prefix = len(lanes_key(""))
    for lanes in client.scan_iter(match=lanes_key("*"), count=_SCAN_KEYS, _type="hash"):
        route = lanes.decode()[prefix:]
        for lane, head in client.hscan_iter(lanes, count=_SCAN_CHUNK):
            key = lane_key(route, lane.decode())
            for start in range(0, client.zcard(key), _SCAN_CHUNK):
                found.update(m.decode() for m in client.zrange(key, start, start + _SCAN_CHUNK - 1) if m != head)
    return found


def pending_ids(client: redis.Redis, route: str | None = None) -> list[str]:
    """Ids on the route's pending list (every route's when None), oldest first: a task message
    takes them when the next task of the route starts."""
    keys = [pending_key(route)] if route else client.scan_iter(match=pending_key("*"), count=_SCAN_KEYS, _type="list")
    found: list[str] = []
    for key in keys:
        # Read from the accepting end (RPUSH), as task_messages reads a queue from its pushing end:
        # tasks taking groups off the other end (LPOP) do not shift what is still to be read, and
        # events accepted meanwhile only make some be read twice; bounded in case accepts outrun it.
        chunks = []
        for start in range(0, 2 * client.llen(key) + _SCAN_CHUNK, _SCAN_CHUNK):
            chunk = client.lrange(key, -(start + _SCAN_CHUNK), -(start + 1))
            if not chunk:
                break
            chunks.append(chunk)
        found += [entry.split(b" ", 1)[0].decode() for chunk in reversed(chunks) for entry in chunk]
    return found


def task_messages(client: redis.Redis) -> Iterator[dict[str, Any]]:
    """Every task message waiting in a route's queue. Those handed to a worker and not acked yet are in
    kombu's unacked hash, whose layout is the broker's (broker/unacked.py, unacked_messages).

    Recovery requeues any waiting event found neither here, nor unacked, nor on a retry schedule
    (scheduled_ids), nor on a pending list (pending_ids), nor in an ordered route's lane behind its
    head (lane_waiting_ids); a new place where events wait must be read there too.
    """
    for queue in client.scan_iter(match=queue_name("*"), count=_SCAN_KEYS, _type="list"):
        # Read by index from the pushing end until the list ends: tasks pushed meanwhile shift the
        # rest towards the end (re-read, never skipped); bounded in case pushes outrun the scan.
        limit = 2 * client.llen(queue) + _SCAN_CHUNK
        for start in range(0, limit, _SCAN_CHUNK):
            chunk = client.lrange(queue, start, start + _SCAN_CHUNK - 1)
            if not chunk:
                break
            yield from map(orjson.loads, chunk)


def requeue_lost(client: redis.Redis, event_id: str, route: str, message: Outgoing) -> bool:
    """Queue a new task for an event that is still waiting; False when it was delivered or dead meanwhile."""
    keys = [event_key(event_id), queue_name(route), templates.for_route(route, message.redelivered).key]
    args = [*message.filling, message.task_id]
    return bool(templates.stored(lambda: script(client, _REQUEUE)(keys=keys, args=args), client.execute_command))


def recovery_lock(client: redis.Redis, holder: str, seconds: int) -> bool:
    """One recovery at a time across workers: the second would only find what the first requeued."""
    return bool(client.set(RECOVERY_LOCK, holder, nx=True, ex=seconds))


def recovery_unlock(client: redis.Redis, holder: str) -> None:
    script(client, _UNLOCK)(keys=[RECOVERY_LOCK], args=[holder])  # only our own lock, not one taken after ours expired


def redis_time(client: redis.Redis) -> float:
    """Redis's clock: every worker's times compare on one clock, whatever the hosts' say."""
    seconds, micros = client.time()
    return seconds + micros / 1e6


def last_recovery(client: redis.Redis) -> float | None:
    """When the last lost-task recovery that ran to its end began (Redis's clock), if any did."""
    raw = client.get(RECOVERY_DONE)
    return float(raw) if raw else None


def recovery_done(client: redis.Redis, began: float) -> None:
    script(client, _DONE)(keys=[RECOVERY_DONE], args=[repr(began)])
