"""The journal: the only module that knows Redis key names and the event record layout.

Keys (every name is built here and nowhere else):
- bus.<route>                  Celery queue of the route (a kombu Redis list)
- bus:event:<id>               hash: tag, route, body, received, status, attempts, last
- bus:event:<id>:attempts      list of JSON attempt records, oldest first
- bus:status:<status>          sorted set of ids by received time, one per status
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .errors import Unavailable

QUEUED, RETRYING, DELIVERED, DEAD = "queued", "retrying", "delivered", "dead"
STATUSES = (QUEUED, RETRYING, DELIVERED, DEAD)
DEFAULT_RETENTION = 7 * 24 * 3600
RESPONSE_KEEP = 2048
# Errors that mean "Redis is not answering", as opposed to a bug in our calls.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError)


@dataclass(frozen=True)
class NewEvent:
    id: str
    tag: str
    route: str
    body: bytes
    received: float
    message: bytes  # the Celery task message that will deliver it


def queue_name(route: str) -> str:
    return f"bus.{route}"


def _event_key(event_id: str) -> str:
    return f"bus:event:{event_id}"


def _attempts_key(event_id: str) -> str:
    return f"bus:event:{event_id}:attempts"


def _status_key(status: str) -> str:
    return f"bus:status:{status}"


def connect(url: str, timeout: float) -> redis.Redis:
    """A client that fails fast: a request must get 503 in seconds, never hang on a dead Redis."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )


def accept(client: redis.Redis, events: list[NewEvent]) -> None:
    """Journal the events and enqueue their delivery tasks in one atomic round trip: all or none."""
    pipe = client.pipeline(transaction=True)
    for ev in events:
        pipe.hset(
            _event_key(ev.id),
            mapping={"tag": ev.tag, "route": ev.route, "body": ev.body, "received": ev.received, "status": QUEUED, "attempts": 0},
        )
        pipe.zadd(_status_key(QUEUED), {ev.id: ev.received})
        pipe.lpush(queue_name(ev.route), ev.message)
    try:
        pipe.execute()
    except REDIS_DOWN as exc:
        raise Unavailable(f"Redis did not answer ({exc.__class__.__name__}): nothing was accepted; retry later") from exc


def load(client: redis.Redis, event_id: str) -> dict[str, Any] | None:
    """The event's record, or None when it is gone (expired or purged)."""
    raw = client.hgetall(_event_key(event_id))
    if not raw:
        return None
    record = {k.decode(): v for k, v in raw.items()}
    for k in ("tag", "route", "status", "last"):
        if k in record:
            record[k] = record[k].decode()
    record["received"] = float(record["received"])
    record["attempts"] = int(record["attempts"])
    record["id"] = event_id
    return record


def attempts(client: redis.Redis, event_id: str) -> list[dict[str, Any]]:
    return [orjson.loads(a) for a in client.lrange(_attempts_key(event_id), 0, -1)]


def record_attempt(
    client: redis.Redis,
    event_id: str,
    attempt: dict[str, Any],
    status: str,
    received: float,
    retention: int = DEFAULT_RETENTION,
) -> None:
    """Append an attempt and move the event to `status` in one transaction.

    Delivered events expire after `retention`; dead ones are kept until replayed
    or purged, because nobody has looked at them yet.
    """
    if "response" in attempt and attempt["response"] is not None:
        attempt["response"] = attempt["response"][:RESPONSE_KEEP]
    last = attempt.get("status_code") or attempt.get("error") or ""
    key, akey = _event_key(event_id), _attempts_key(event_id)
    pipe = client.pipeline(transaction=True)
    pipe.rpush(akey, orjson.dumps(attempt))
    pipe.hincrby(key, "attempts", 1)
    pipe.hset(key, mapping={"status": status, "last": str(last)})
    for other in STATUSES:
        if other != status:
            pipe.zrem(_status_key(other), event_id)
    pipe.zadd(_status_key(status), {event_id: received})
    if status == DELIVERED:
        pipe.expire(key, retention)
        pipe.expire(akey, retention)
    pipe.execute()


def count(client: redis.Redis, status: str) -> int:
    return client.zcard(_status_key(status))


def ids(client: redis.Redis, status: str, limit: int = 100) -> Iterator[str]:
    """Newest first."""
    for raw in client.zrevrange(_status_key(status), 0, limit - 1):
        yield raw.decode()



# --- Lost-task recovery (see recovery.py) ------------------------------------------------------
# kombu's Redis transport hands a task to a worker with BRPOP and only then records it in its
# `unacked` hash (delivery tag -> [message, exchange, routing key]). A Redis or worker crash between
# the two drops the task while the journal still says queued/retrying. These read where a waiting
# event's task can be, so recovery can find the events whose task is nowhere.
KOMBU_UNACKED = "unacked"
_RECOVERY_LOCK = "bus:recovery:lock"
_SCAN_CHUNK = 1000
# Put a task back only if its event is still waiting, at the consuming end of the queue.
_REQUEUE = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'queued' or status == 'retrying' then
    redis.call('RPUSH', KEYS[2], ARGV[1])
    return 1
end
return 0
"""
_UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def waiting_ids(client: redis.Redis) -> set[str]:
    """Ids of every event not yet delivered or dead."""
    found: set[str] = set()
    for status in (QUEUED, RETRYING):
        for start in range(0, client.zcard(_status_key(status)), _SCAN_CHUNK):
            found.update(raw.decode() for raw in client.zrange(_status_key(status), start, start + _SCAN_CHUNK - 1))
    return found


def task_messages(client: redis.Redis) -> Iterator[dict[str, Any]]:
    """Every task message Redis holds: waiting in a route's queue, or handed to a worker and unacked.

    Recovery requeues any waiting event not found here, so a new place where events wait for
    their next attempt (a retry schedule) must be read here too.
    """
    for queue in client.scan_iter(match=queue_name("*"), _type="list"):
        # Read by index from the pushing end until the list ends: tasks pushed meanwhile shift the
        # rest towards the end (re-read, never skipped); bounded in case pushes outrun the scan.
        limit = 2 * client.llen(queue) + _SCAN_CHUNK
        for start in range(0, limit, _SCAN_CHUNK):
            chunk = client.lrange(queue, start, start + _SCAN_CHUNK - 1)
            if not chunk:
                break
            yield from map(orjson.loads, chunk)
    for _, raw in client.hscan_iter(KOMBU_UNACKED, count=_SCAN_CHUNK):
        yield orjson.loads(raw)[0]


def requeue(client: redis.Redis, event_id: str, route: str, message: bytes) -> bool:
    """Queue a new task for an event that is still waiting; False when it was delivered or dead meanwhile."""
    return bool(client.eval(_REQUEUE, 2, _event_key(event_id), queue_name(route), message))


def recovery_lock(client: redis.Redis, holder: str, seconds: int) -> bool:
    """One recovery at a time across workers: the second would only find what the first requeued."""
    return bool(client.set(_RECOVERY_LOCK, holder, nx=True, ex=seconds))


def recovery_unlock(client: redis.Redis, holder: str) -> None:
    client.eval(_UNLOCK, 1, _RECOVERY_LOCK, holder)  # only our own lock, not one taken after ours expired
