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

import orjson
import redis

from ..journal.keys import KOMBU_UNACKED, KOMBU_UNACKED_INDEX, WORKERS, held_key, lease_key, queue_name, reclaim_key
from ..journal.store import script

# Put one unacked task back, unless it changed or went (acked, or handed back by kombu) meanwhile,
# or a live worker holds it now (a task requeued by a reject and taken again).
# KEYS: unacked, unacked_index, the queue, the dead worker's held set, then the live workers' held
# sets. ARGV: tag, the entry as read, the message to queue.
_HAND_BACK = """
local gone = redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2]
for k = 5, #KEYS do
  if redis.call('SISMEMBER', KEYS[k], ARGV[1]) == 1 then gone = true end
end
if gone then
  redis.call('SREM', KEYS[4], ARGV[1])
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('SREM', KEYS[4], ARGV[1])
return 1
"""
# Forget a worker once nothing of it is left to hand back.
_FORGET = """
if redis.call('SCARD', KEYS[2]) == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


def register(client: redis.Redis, worker: str, ttl_ms: int) -> None:
    """Take (or renew) the worker's lease and list it among the workers."""
    pipe = client.pipeline(transaction=False)
    pipe.set(lease_key(worker), "1", px=ttl_ms)
    pipe.hset(WORKERS, worker, repr(time.time()))
    pipe.execute()


def renew(client: redis.Redis, worker: str, ttl_ms: int) -> None:
    client.set(lease_key(worker), "1", px=ttl_ms)


def workers(client: redis.Redis) -> dict[str, bool]:
    """Every listed worker and whether its lease is held (False: it died, or lost Redis for longer
    than the lease)."""
    listed = [w.decode() for w in client.hkeys(WORKERS)]
    if not listed:
        return {}
    pipe = client.pipeline(transaction=False)
    for worker in listed:
        pipe.exists(lease_key(worker))
    return {w: bool(alive) for w, alive in zip(listed, pipe.execute())}


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
