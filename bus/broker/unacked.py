"""Worker leases, and handing a dead worker's unacked tasks back to their queues (for bus/worker/leases.py).

kombu hands a task back only once it has been unacked for the visibility timeout (60 s by
default, and it cannot be much shorter: an attempt must fit in it). A worker killed with
SIGKILL therefore left its in-flight events waiting that long. Each worker now holds a lease
that it renews every second, and records the delivery tags it holds in `bus:held:<worker>` in
the same pipeline as kombu's own unacked entry (kombu_fixes.py). When a lease is gone, another
worker (or the dead one's successor) puts exactly those tasks back at the consuming end of
their queues, marked redelivered as kombu's own restore marks them, in seconds.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import redis

from ..journal import scripts
from ..journal.keys import KOMBU_UNACKED, KOMBU_UNACKED_INDEX, WORKERS, held_key, lease_key, queue_name, reclaim_key
from ..journal.store import script

_SCAN_CHUNK = 1000  # entries HSCAN reads per call
# The scripts on kombu's keys, in bus/broker/lua/ (each names its KEYS and ARGV): put one unacked task
# back unless it changed, went or a live worker holds it; forget a worker with nothing left to hand back.
_HAND_BACK = scripts.load("hand_back.lua", package=__package__)
_FORGET = scripts.load("forget_worker.lua", package=__package__)


# Renew this worker's lease and look at every listed worker's, in one round trip (lua/renew_and_look.lua).
_RENEW_AND_LOOK = scripts.load("renew_and_look.lua", package=__package__)


def renew_and_look(client: redis.Redis, worker: str, ttl_ms: int) -> dict[str, bool]:
    """Take (or renew) the worker's lease and list it among the workers; then every listed worker and
    whether its lease is held (False: it died, or lost Redis for longer than the lease)."""
    found = script(client, _RENEW_AND_LOOK)(keys=[WORKERS, lease_key(worker)],
                                            args=[worker, ttl_ms, repr(time.time()), lease_key("")])
    return {found[i].decode(): bool(found[i + 1]) for i in range(0, len(found), 2)}


def hand_back(client: redis.Redis, worker: str, live: list[str], lock_ms: int) -> list[str] | None:
    """Queue again the tasks a worker with no lease held; their task ids. None when another worker
    is doing it. The worker is forgotten once nothing of it is left."""
    if not client.set(reclaim_key(worker), "1", nx=True, px=lock_ms):
        return None
    live_sets = [held_key(w) for w in live]
    try:
        tags = [t.decode() for t in client.smembers(held_key(worker))]
        entries = client.hmget(KOMBU_UNACKED, tags) if tags else []
        handed = []
        for tag, entry in zip(tags, entries):
            message = _redelivered(entry) if entry is not None else None
            if message is None:
                client.srem(held_key(worker), tag)  # acked since, or not ours to hand back
                continue
            task_id, queue, data = message
            keys = [KOMBU_UNACKED, KOMBU_UNACKED_INDEX, queue, held_key(worker), *live_sets]
            if script(client, _HAND_BACK)(keys=keys, args=[tag, entry, data]):
                handed.append(task_id)
        script(client, _FORGET)(keys=[WORKERS, held_key(worker)], args=[worker])
        return handed
    finally:
        client.delete(reclaim_key(worker))


def unacked_messages(client: redis.Redis) -> Iterator[dict[str, Any]]:
    """Every task message kombu handed to a worker and holds unacked (its hash: delivery tag ->
    [message, exchange, routing key]); lost-task recovery reads them beside journal.task_messages."""
    for _, raw in client.hscan_iter(KOMBU_UNACKED, count=_SCAN_CHUNK):
        yield orjson.loads(raw)[0]


def forget(client: redis.Redis, worker: str) -> None:
    """A worker that stops cleanly: its lease goes at once and nothing of it is left to hand back."""
    pipe = client.pipeline(transaction=False)
    pipe.delete(lease_key(worker))
    pipe.hdel(WORKERS, worker)
    pipe.execute()


def _redelivered(entry: bytes) -> tuple[str, str, bytes] | None:
    """(task id, queue, message marked redelivered) of a kombu unacked entry [message, exchange,
    routing key], or None when it is not a task of a bus route's queue."""
    try:
        payload, _, routing_key = orjson.loads(entry)
        queue = str(routing_key)
        if not queue.startswith(queue_name("")):
            return None
        # As kombu marks what it restores: the task then checks each event again before sending it.
        payload["headers"]["redelivered"] = True
        payload["properties"]["delivery_info"]["redelivered"] = True
        return str(payload["headers"].get("id", "")), queue, orjson.dumps(payload)
    except (ValueError, TypeError, KeyError):
        return None
