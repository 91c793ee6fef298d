"""An event's moves after acceptance: attempts, the retry schedule, replays, copies (breakers: breakers.py)."""
from __future__ import annotations

import time
from typing import Any

import orjson
import redis

from .counters import LATENCY_BUCKETS, SLOT
from ..endpoints import EndpointKey
from .keys import (
    COUNTERS, attempts_key, breaker_key, copies_key, event_key, failing_key, index_key, latency_key, mover_key,
    open_breakers_key, parked_key, queue_name, retry_key, slot_key,
)
from .pipelined import SharedPipe
from ..messages import Outgoing
from .store import DEFAULT_RETENTION, DELIVERED, OWN_LUA, QUEUED, RESPONSE_KEEP, RETRYING, script


def _move(pipe: Any, event_id: str, route: str, received: float, old: str | None, new: str) -> None:
    if old and old != new:
        pipe.zrem(index_key(old), event_id)
        pipe.zrem(index_key(old, route), event_id)
    pipe.zadd(index_key(new), {event_id: received})
    pipe.zadd(index_key(new, route), {event_id: received})


# KEYS: event, attempts, copies, old status index, old route index, new status
# index, new route index, route retry schedule, the endpoint's breaker, counters,
# the route's latency histogram, the current delivered slot, the endpoint's
# parked set, the route's open and failing breaker indexes (all built by
# keys.py). ARGV: id, received, moved ('1' when the status changes), attempt
# JSON, status, last result, retention (or '' to keep), retry time (or ''), '1'
# to close the breaker, the counter field to bump, for a delivery the latency
# bucket, the seconds and the slot's time to live, and the endpoint's digest.
# Closing a breaker that was there releases what it held back (breakers.py):
# due at once, on the route's retry schedule.
RECORD_ATTEMPT_SCRIPT = """
local id, received = ARGV[1], ARGV[2]
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', ARGV[5], 'last', ARGV[6], 'task', '')
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZREM', KEYS[5], id)
end
redis.call('ZADD', KEYS[6], received, id)
redis.call('ZADD', KEYS[7], received, id)
if ARGV[7] ~= '' then
  for k = 1, 3 do redis.call('EXPIRE', KEYS[k], ARGV[7]) end
end
if ARGV[8] ~= '' then redis.call('ZADD', KEYS[8], ARGV[8], id) end
if ARGV[9] == '1' and redis.call('DEL', KEYS[9]) == 1 then
  if redis.call('EXISTS', KEYS[13]) == 1 then
    redis.call('ZUNIONSTORE', KEYS[8], 2, KEYS[8], KEYS[13], 'WEIGHTS', 1, 0)
    redis.call('DEL', KEYS[13])
  end
  redis.call('ZREM', KEYS[14], ARGV[14])
  redis.call('ZREM', KEYS[15], ARGV[14])
end
redis.call('HINCRBY', KEYS[10], ARGV[10], 1)
if ARGV[11] ~= '' then
  redis.call('HINCRBY', KEYS[11], ARGV[11], 1)
  redis.call('HINCRBYFLOAT', KEYS[11], 'sum', ARGV[12])
  redis.call('HINCRBY', KEYS[11], 'count', 1)
  redis.call('INCR', KEYS[12])
  redis.call('EXPIRE', KEYS[12], ARGV[13])
end
return 1
"""


def record_attempt(client: redis.Redis | SharedPipe, event: dict[str, Any], attempt: dict[str, Any], status: str,
                   retention: int = DEFAULT_RETENTION, retry_at: float | None = None,
                   endpoint_alive: bool = False, endpoint: EndpointKey | None = None) -> None:
    """Append an attempt and move the event to `status`, atomically in one round trip. No task
    message sends the event after this one (store.OWN_LUA): a retry gets a new message when due.

    `retry_at` puts a retrying event on the route's retry schedule; `endpoint_alive`
    (any non-retryable answer) closes the breaker of `endpoint`, the one the attempt
    went to, and releases the events it held back. Delivered events expire after
    `retention`; dead ones are kept until replayed or purged, because nobody has
    looked at them yet.
    """
    keys, args = record_attempt_call(event, attempt, status, retention, retry_at, endpoint_alive, endpoint)
    script(client, RECORD_ATTEMPT_SCRIPT)(keys=keys, args=args)


def record_attempt_call(event: dict[str, Any], attempt: dict[str, Any], status: str,
                        retention: int = DEFAULT_RETENTION, retry_at: float | None = None,
                        endpoint_alive: bool = False, endpoint: EndpointKey | None = None
                        ) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of RECORD_ATTEMPT_SCRIPT (see record_attempt), for callers with a connection of their own."""
    if attempt.get("response") is not None:
        attempt["response"] = attempt["response"][:RESPONSE_KEEP]
    last = attempt.get("status_code") or attempt.get("error") or ""
    event_id, route, old = event["id"], event["route"], event["status"] or status
    digest = endpoint.digest if endpoint else ""
    keys = [event_key(event_id), attempts_key(event_id), copies_key(event_id),
            index_key(old), index_key(old, route), index_key(status), index_key(status, route),
            retry_key(route), breaker_key(route, digest), COUNTERS, latency_key(route)]
    args = [event_id, repr(event["received"]), "1" if old != status else "0", orjson.dumps(attempt), status,
            str(last), retention if status == DELIVERED else "", repr(retry_at) if retry_at is not None else "",
            "1" if endpoint_alive and endpoint else "0"]
    slot, counted = _count_outcome(event, status, attempt)
    return (keys + [slot, parked_key(route, digest), open_breakers_key(route), failing_key(route)],
            args + counted + [digest])


# A task loads its events when it starts and sends them one after another, for up to the
# visibility timeout. A redelivered message (kombu restored it, or recovery made it) checks each
# event again right before sending it: meanwhile another copy may have attempted it (its record
# then names no message) or recovery may have handed it to a new message (store.OWN_LUA). Each
# event answers "ok <attempts> <status>" (sent by us; the task's copy is refreshed), "gone",
# "superseded", or its final status. KEYS: the events' records. ARGV: the task id.
_RECHECK = """
local out = {}
for i, record in ipairs(KEYS) do
  local status, attempts, task = unpack(redis.call('HMGET', record, 'status', 'attempts', 'task'))
  if not status then
    out[i] = 'gone'
  elseif status == 'delivered' or status == 'dead' then
    out[i] = status
  elseif task and task ~= ARGV[1] then
    out[i] = 'superseded'
  else
    out[i] = 'ok ' .. (attempts or '0') .. ' ' .. status
  end
end
return out
"""


def recheck(client: redis.Redis | SharedPipe, events: list[dict[str, Any]], task_id: str) -> list[str]:
    """Whether task `task_id` still sends each event (see _RECHECK): per event 'ok' (its attempts and
    status refreshed from the journal), 'gone', 'superseded', 'delivered' or 'dead'."""
    answers = script(client, _RECHECK)(keys=[event_key(event["id"]) for event in events], args=[task_id])
    states = []
    for event, raw in zip(events, answers):
        state, *fresh = raw.decode().split(" ")
        if state == "ok":
            event["attempts"], event["status"] = int(fresh[0]), fresh[1]
        states.append(state)
    return states


def status_class(code: int | None) -> str:
    """'2xx' ... '5xx' for an HTTP status, 'error' for no answer (connection error, timeout, route gone)."""
    return f"{code // 100}xx" if code else "error"


def _count_outcome(event: dict[str, Any], status: str, attempt: dict[str, Any]) -> tuple[str, list[Any]]:
    """The delivered-slot key and the counter arguments of record_attempt's script for this outcome."""
    route = event["route"]
    done = attempt.get("at", time.time()) + attempt.get("duration", 0.0)
    slot = slot_key(route, int(done // SLOT))
    if status != DELIVERED:
        kind = "retried" if status == RETRYING else "dead"
        return slot, [f"{kind}:{route}:{status_class(attempt.get('status_code'))}", "", 0, 0]
    # A replayed event is timed from its replay: the days it spent dead say nothing about delivery.
    seconds = max(0.0, done - max(event["received"], event.get("replayed", 0.0)))
    bucket = next((repr(b) for b in LATENCY_BUCKETS if seconds <= b), "+Inf")
    return slot, [f"delivered:{route}", bucket, repr(seconds), 3600 + 2 * SLOT]


def park(client: redis.Redis, event: dict[str, Any], until: float, reason: str = "waiting for its next attempt"
         ) -> None:
    """Hold an event off until `until` without an attempt: no worker memory, just Redis. The
    message that parked it is done with it: the retry schedule makes the next one."""
    pipe = client.pipeline(transaction=True)
    pipe.hset(event_key(event["id"]), mapping={"status": RETRYING, "last": reason, "task": ""})
    _move(pipe, event["id"], event["route"], event["received"], event["status"], RETRYING)
    pipe.zadd(retry_key(event["route"]), {event["id"]: until})
    pipe.execute()


# RPUSH puts released events at the head of the queue (kombu LPUSHes and
# BRPOPs): they have waited longer than anything queued. ARGV holds
# groups of (count, task id, ids..., message); the earliest group is pushed last so it
# is next in line. An id another mover already took is not counted again, nor named as
# the message's (store.OWN_LUA).
_RELEASE = OWN_LUA + """
local starts = {}
local i = 1
while i <= #ARGV do
  starts[#starts + 1] = i
  i = i + tonumber(ARGV[i]) + 3
end
local moved = 0
for g = #starts, 1, -1 do
  local first, n, task = starts[g] + 2, tonumber(ARGV[starts[g]]), ARGV[starts[g] + 1]
  local removed = 0
  for j = first, first + n - 1 do
    if redis.call('ZREM', KEYS[1], ARGV[j]) == 1 then
      own({ARGV[j]}, task)
      removed = removed + 1
    end
  end
  if removed > 0 then
    redis.call('RPUSH', KEYS[2], ARGV[first + n])
    moved = moved + removed
  end
end
return moved
"""


def due(client: redis.Redis, route: str, now: float, limit: int) -> list[tuple[str, str, int]]:
    """Up to `limit` (id, tag, attempts so far) of the route's events whose retry time has come; tag '' when gone."""
    ids = [i.decode() for i in client.zrangebyscore(retry_key(route), "-inf", now, start=0, num=limit)]
    if not ids:
        return []
    pipe = client.pipeline(transaction=False)
    for event_id in ids:
        pipe.hmget(event_key(event_id), ("tag", "attempts"))
    return [(i, t.decode() if t else "", int(n or 0)) for i, (t, n) in zip(ids, pipe.execute())]


def next_due(client: redis.Redis, route: str) -> float | None:
    """When the route's earliest retry or half-open breaker is due (None: neither waits), in one round trip:
    what the retry schedule's mover reads after a pass that moved nothing."""
    pipe = client.pipeline(transaction=False)
    pipe.zrange(retry_key(route), 0, 0, withscores=True)
    pipe.zrange(open_breakers_key(route), 0, 0, withscores=True)
    firsts = [float(first[0][1]) for first in pipe.execute() if first]
    return min(firsts) if firsts else None


def release(client: redis.Redis, route: str, groups: list[Outgoing]) -> int:
    """Move scheduled events to the head of the route's queue, one message per group of ids."""
    if not groups:
        return 0
    argv: list[Any] = []
    for message in groups:
        argv += [len(message.event_ids), message.task_id, *message.event_ids, message.data]
    return int(script(client, _RELEASE)(keys=[retry_key(route), queue_name(route)], args=argv))


def claim_mover(client: redis.Redis, route: str, worker_id: str, ms: int) -> bool:
    """One mover per route at a time, so a group is never moved twice by two workers."""
    return claim_lease(client, mover_key(route), worker_id, ms)


def claim_lease(client: redis.Redis, key: str, worker_id: str, ms: int) -> bool:
    """Take or keep a lease that expires unless its holder renews it within `ms`."""
    # One round trip: the GET after the SET NX reads the holder either way (every pass of every mover).
    pipe = client.pipeline(transaction=False)
    pipe.set(key, worker_id, nx=True, px=ms)
    pipe.get(key)
    taken, holder = pipe.execute()
    return bool(taken) or holder == worker_id.encode()


def drop_scheduled(client: redis.Redis, route: str, event_id: str) -> None:
    """An id on the schedule whose record is gone (expired or purged) has nothing left to send."""
    client.zrem(retry_key(route), event_id)


# Only beside a record still in Redis: a copy of an archived event goes to its archive row instead,
# and a list left behind for an event the archive mover just took would never be deleted.
_RECORD_COPY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
"""


def record_copy(client: redis.Redis, event_id: str, attempt: dict[str, Any]) -> bool:
    """A replay sent to another URL (--to): kept apart so the event's own state is untouched.
    False when the event is no longer in Redis (archived): the caller records it there."""
    copy_record(attempt)
    return bool(script(client, _RECORD_COPY)(keys=[event_key(event_id), copies_key(event_id)],
                                             args=[orjson.dumps(attempt)]))


def copy_record(attempt: dict[str, Any]) -> dict[str, Any]:
    """A copy's attempt as it is kept: its response cut to RESPONSE_KEEP."""
    if attempt.get("response") is not None:
        attempt["response"] = attempt["response"][:RESPONSE_KEEP]
    return attempt


def requeue(client: redis.Redis, events: list[dict[str, Any]], messages: list[tuple[Outgoing, str]],
            restored: list[tuple[dict[str, Any], list[bytes], list[bytes]]] = ()) -> None:
    """Replay to the route: status back to queued, retention lifted, new (message, route) tasks queued
    and named in their events' records; one transaction. `restored` are (record fields, attempts,
    copies) of archived events among them, put back into Redis in the same transaction, so the
    archive mover never sees one half-restored."""
    owners = {i: message.task_id for message, _ in messages for i in message.event_ids}
    # Which breaker's parked set holds each event, if any: listings hand over summaries without it.
    reading = client.pipeline(transaction=False)
    for event in events:
        reading.hget(event_key(event["id"]), "parked")
    held = [raw.decode() if raw else None for raw in reading.execute()] if events else []
    pipe = client.pipeline(transaction=True)
    for fields, tries, copies in restored:
        key = event_key(fields["id"])
        pipe.delete(key, attempts_key(fields["id"]), copies_key(fields["id"]))
        pipe.hset(key, mapping={k: v for k, v in fields.items() if k != "id" and v is not None})
        if tries:
            pipe.rpush(attempts_key(fields["id"]), *tries)
        if copies:
            pipe.rpush(copies_key(fields["id"]), *copies)
    for event, parked in zip(events, held):
        key = event_key(event["id"])
        pipe.hset(key, mapping={"status": QUEUED, "round": event["attempts"], "replayed": repr(time.time()),
                                "task": owners[event["id"]]})
        for k in (key, attempts_key(event["id"]), copies_key(event["id"])):
            pipe.persist(k)
        _move(pipe, event["id"], event["route"], event["received"], event["status"], QUEUED)
        pipe.zrem(retry_key(event["route"]), event["id"])
        if parked:  # held back behind a breaker: the replay's message sends it now
            pipe.zrem(parked_key(event["route"], parked), event["id"])
    for message, route in messages:
        pipe.lpush(queue_name(route), message.data)
    pipe.execute()


def enqueue(client: redis.Redis, route: str, messages: list[bytes]) -> None:
    """Queue extra tasks for events without changing their state (copies for `replay --to`)."""
    if messages:
        client.lpush(queue_name(route), *messages)


# KEYS: the queue. ARGV: the message, its task id, the events' ids.
_HAND_OFF = OWN_LUA + """
redis.call('LPUSH', KEYS[1], ARGV[1])
own({unpack(ARGV, 3)}, ARGV[2])
return 1
"""


def hand_off(client: redis.Redis, route: str, message: Outgoing) -> None:
    """Queue a message that takes over its events from the task that queues it, in one step."""
    script(client, _HAND_OFF)(keys=[queue_name(route)], args=[message.data, message.task_id, *message.event_ids])
