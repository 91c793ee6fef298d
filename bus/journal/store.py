"""The event record: connecting to Redis, running our scripts, reading and decoding events."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from redis.exceptions import MasterDownError

from .. import captured
from ..errors import EventNotFound, RedisFull, Unavailable, Unconfirmed
from ..wire.pipelined import NoReplicasError, NotConfirmed, SharedPipe
from ..wire.target import RedisTarget, client, parse
from .keys import attempts_key, copies_key, event_key

DEFAULT_RETENTION = 7 * 24 * 3600
RESPONSE_KEEP = 2048
SUMMARY_FIELDS = ("tag", "route", "status", "attempts", "last", "received")
# Errors that mean "Redis cannot take our commands now", as opposed to a bug in our calls: the
# one classification of Redis failures. Every way in answers them with Unavailable (503 and
# Retry-After, no forward ack); workers leave their message to Redis and try again later.
# Besides Redis not answering (ConnectionError, TimeoutError, OSError), these error replies
# refuse a write that the same Redis, or the primary a failover makes, takes a moment later.
WRITE_REFUSALS = (
    (redis.OutOfMemoryError, "Redis is at its memory limit (OOM: used memory is over its maxmemory)"),
    (redis.ReadOnlyError, "Redis at BUS_REDIS_URL is a read-only replica (READONLY), not the primary; "
                          "a failover may be under way"),
    (NoReplicasError, "the Redis primary has fewer replicas in reach than its min-replicas-to-write "
                      "(NOREPLICAS)"),
    (redis.BusyLoadingError, "Redis is loading its data after a restart (LOADING)"),
    (MasterDownError, "the Redis replica has lost its primary (MASTERDOWN)"),
)
# NotConfirmed: the primary took the write, too few replicas confirmed it in time (BUS_ACK_REPLICAS).
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, OSError, NotConfirmed, *(kind for kind, _ in WRITE_REFUSALS))
# What an operator does about a full Redis; the ingress's own high mark says it too (memory.py).
MEMORY_ADVICE = ("let the workers drain the backlog (are its endpoints up?) or give Redis more maxmemory "
                 "(BUS_REDIS_MAXMEMORY with bus up and docker-compose)")


@dataclass(frozen=True)
class NewEvent:
    id: str
    tag: str
    route: str
    body: bytes
    received: float
    headers: bytes = b""  # JSON of the request headers it came with, secrets removed


@dataclass(frozen=True)
class Idempotency:
    """A request's Idempotency-Key (or forward chunk id): a repeat of `key` for the same tag with the same
    records (`digest`) is answered with the first request's ids for `window` seconds."""

    key: str
    digest: str
    window: int


@dataclass(frozen=True)
class Page:
    events: list[dict[str, Any]]
    cursor: str | None  # pass back to continue; None when there is nothing more


# Each record names the task message that sends the event's next attempt (field `task`): every
# path that queues a message for events writes its task id there in the same step, and an
# attempt's record or a park clears it (''). A message that finds another name, or '', came
# back after its work was done (Redis restored it, unacked, after a crash lost its ack) or was
# replaced (a hand-off, the retry schedule, a replay, lost-task recovery), and leaves the event
# alone: without this, such a message and its replacement would send the event at once.
# Records from before the field existed have none, and any message may send them. Every script
# that names a task, or moves an event for a task, checks the record itself (lua/*.lua: own, owned).


def unavailable(exc: BaseException) -> Unavailable:
    """What a producer is told when Redis did not answer its accept, or refused to write it (REDIS_DOWN)."""
    if isinstance(exc, NotConfirmed):
        return Unconfirmed(f"the events were written to the Redis primary, but {exc} (BUS_ACK_REPLICAS): they may "
                           "still be delivered. Retry with the same Idempotency-Key, and no duplicate is made")
    for kind, meaning in WRITE_REFUSALS:
        if isinstance(exc, kind):
            if kind is redis.OutOfMemoryError:
                return RedisFull(f"{meaning}: nothing was accepted; retry later. Operators: {MEMORY_ADVICE}")
            return Unavailable(f"{meaning}: nothing was accepted; retry later")
    return Unavailable(f"Redis did not answer ({exc.__class__.__name__}): nothing was accepted; retry later")


def connect(url: str | RedisTarget, timeout: float) -> redis.Redis:
    """A client that fails fast: a request must get 503 in seconds, never hang on a dead Redis.
    Through Sentinels for a sentinel:// URL (target.py)."""
    return client(url if isinstance(url, RedisTarget) else parse(url), timeout)


def script(client: redis.Redis | SharedPipe, source: str) -> Any:
    """A registered script per client (EVALSHA, falling back to EVAL after a Redis restart).
    A SharedPipe runs it without redis-py (the per-event scripts of the hot paths)."""
    if isinstance(client, SharedPipe):
        return lambda keys, args: client.run_script(source, keys, args)
    cache = client.__dict__.setdefault("_bus_scripts", {})
    if source not in cache:
        cache[source] = client.register_script(source)
    return cache[source]


def decode(event_id: str, raw: dict[bytes, bytes]) -> dict[str, Any]:
    record: dict[str, Any] = {k.decode(): v for k, v in raw.items()}
    for k in ("tag", "route", "status", "last", "task", "parked", "lane"):
        if k in record:
            record[k] = record[k].decode()
    record["received"] = float(record["received"])
    record["attempts"] = int(record.get("attempts", 0))
    record["round"] = int(record.get("round", 0))
    if "replayed" in record:
        record["replayed"] = float(record["replayed"])
    if "seq" in record:  # an ordered route's event: its place in acceptance order
        record["seq"] = int(record["seq"])
    record["id"] = event_id
    return record


def load(client: redis.Redis, event_id: str) -> dict[str, Any] | None:
    """The event's record (body and headers as bytes), or None when it is gone (expired or purged)."""
    raw = client.hgetall(event_key(event_id))
    return decode(event_id, raw) if raw else None


def attempts(client: redis.Redis, event_id: str) -> list[dict[str, Any]]:
    return [orjson.loads(a) for a in client.lrange(attempts_key(event_id), 0, -1)]


def last_copies(client: redis.Redis, event_ids: Iterable[str]) -> list[dict[str, Any] | None]:
    """Each event's latest copy sent elsewhere (replay --to), None for one with none."""
    pipe = client.pipeline(transaction=False)
    for event_id in event_ids:
        pipe.lindex(copies_key(event_id), -1)
    return [orjson.loads(raw) if raw else None for raw in pipe.execute()]


def show(client: redis.Redis, event_id: str) -> dict[str, Any]:
    """One event with its body, received headers, every attempt and every copy sent elsewhere."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(event_key(event_id))
    pipe.lrange(attempts_key(event_id), 0, -1)
    pipe.lrange(copies_key(event_id), 0, -1)
    raw, tries, copies = pipe.execute()
    if not raw:
        raise EventNotFound(f"no event {event_id!r} in the journal (never accepted, expired after retention, or purged)")
    return readable(decode(event_id, raw), [orjson.loads(a) for a in tries], [orjson.loads(c) for c in copies])


def readable(record: dict[str, Any], attempt_log: list[Any], copies: list[Any]) -> dict[str, Any]:
    """What `bus events ID` and GET /events/<id> show of a decoded record (from Redis or the archive)."""
    try:
        record["body"] = orjson.loads(record["body"])
    except orjson.JSONDecodeError:
        record["body"] = record["body"].decode("utf-8", "replace")
    record["headers"] = orjson.loads(record["headers"]) if record.get("headers") else {}
    if "request" in record:  # captured by bus proxy: credentials kept for replay are not shown
        record["request"] = captured.shown(captured.Request.from_json(record["request"]))
    record["attempt_log"] = attempt_log
    record["copies"] = copies
    return record


def summaries(client: redis.Redis, event_ids: Iterable[str]) -> list[dict[str, Any]]:
    """Summaries of these events in the order given; ids not in the journal are left out."""
    event_ids = list(event_ids)
    pipe = client.pipeline(transaction=False)
    for event_id in event_ids:
        pipe.hmget(event_key(event_id), SUMMARY_FIELDS)
    return [summary(i, v) for i, v in zip(event_ids, pipe.execute()) if v[0] is not None]


def summary(event_id: str, values: list[bytes | None]) -> dict[str, Any]:
    tag, route, status, tries, last, received = (v.decode() if v is not None else None for v in values)
    return {"id": event_id, "tag": tag, "route": route, "status": status, "attempts": int(tries or 0),
            "last": last or "", "received": float(received or 0)}
