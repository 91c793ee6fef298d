"""The journal: the only module that knows Redis key names and the event record layout.

Keys (every name is built here and nowhere else):
- bus.<route>                    Celery queue of the route (a kombu Redis list)
- bus:event:<id>                 hash: tag, route, body, headers, received, status,
                                 attempts, round (attempts before the last replay), last
- bus:event:<id>:attempts        list of JSON attempt records, oldest first
- bus:event:<id>:copies          list of JSON records of replays sent elsewhere (--to)
- bus:status:<status>            sorted set of ids by received time, one per status
- bus:route:<route>:<status>     the same per route (an event is in exactly one status of each;
                                 a listing of any status merges the four)
- bus:pending:<route>            list of "<id> <tag>" accepted and not yet in a task message (FIFO)
- bus:filling:<route>            set while a task message of the route is queued that will take the
                                 next group off the pending list when it starts (expires)
- bus:retry:<route>              sorted set of ids waiting for their next attempt, by due time
- bus:breaker:<route>            hash: failures, failing_since, step, open_until, since (the route's circuit breaker)
- bus:mover:<route>              which worker moves the route's due retries right now (expires)
- bus:counters                   hash of ever-growing counters for /metrics, field "<kind>:<route>[:<label>]"
- bus:latency:<route>            hash: accept-to-2xx histogram: count per bucket (not cumulative), sum, count
- bus:delivered:<route>:<slot>   deliveries in one 10-second slot (expires after an hour), for `bus stats`

Counters are bumped in the same transaction as the transition they count, so
/metrics never disagrees with the journal, whatever process made the change.

Like rq's registries, each state is a sorted set scored by time, so a filtered
listing reads only its own set, and reading cleans out what retention expired.
"""
from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .errors import EventNotFound, Unavailable
from .filters import STATUSES, EventFilter
from .messages import GROUP_SIZE, SHOWN, group_template

QUEUED, RETRYING, DELIVERED, DEAD = STATUSES
DEFAULT_RETENTION = 7 * 24 * 3600
RESPONSE_KEEP = 2048
SUMMARY_FIELDS = ("tag", "route", "status", "attempts", "last", "received")
COUNTERS = "bus:counters"
# Accept-to-2xx seconds: from a healthy endpoint's tens of milliseconds to a day-long outage.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0)
SLOT = 10  # seconds per delivered-count slot
SLOTS_KEPT = 3600 // SLOT
# Errors that mean "Redis is not answering", as opposed to a bug in our calls.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError)


@dataclass(frozen=True)
class NewEvent:
    id: str
    tag: str
    route: str
    body: bytes
    received: float
    headers: bytes = b""  # JSON of the request headers it came with, secrets removed


@dataclass(frozen=True)
class Page:
    events: list[dict[str, Any]]
    cursor: str | None  # pass back to continue; None when there is nothing more


def queue_name(route: str) -> str:
    return f"bus.{route}"


def _event_key(event_id: str) -> str:
    return f"bus:event:{event_id}"


def _attempts_key(event_id: str) -> str:
    return f"bus:event:{event_id}:attempts"


def _copies_key(event_id: str) -> str:
    return f"bus:event:{event_id}:copies"


def _pending_key(route: str) -> str:
    return f"bus:pending:{route}"


def _filling_key(route: str) -> str:
    return f"bus:filling:{route}"


def _retry_key(route: str) -> str:
    return f"bus:retry:{route}"


def _mover_key(route: str) -> str:
    return f"bus:mover:{route}"


def _breaker_key(route: str) -> str:
    return f"bus:breaker:{route}"


def _latency_key(route: str) -> str:
    return f"bus:latency:{route}"


def _slot_key(route: str, slot: int) -> str:
    return f"bus:delivered:{route}:{slot}"


def _index_key(status: str, route: str | None = None) -> str:
    return f"bus:route:{route}:{status}" if route else f"bus:status:{status}"


def connect(url: str, timeout: float) -> redis.Redis:
    """A client that fails fast: a request must get 503 in seconds, never hang on a dead Redis."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )


def _move(pipe: Any, event_id: str, route: str, received: float, old: str | None, new: str) -> None:
    if old and old != new:
        pipe.zrem(_index_key(old), event_id)
        pipe.zrem(_index_key(old, route), event_id)
    pipe.zadd(_index_key(new), {event_id: received})
    pipe.zadd(_index_key(new, route), {event_id: received})


# Newly accepted events wait on their route's pending list, and a task message takes them
# off it in groups of up to GROUP_SIZE: a request of one event does not cost one Celery task
# (receive, pool hand-off, ack, task events: ~2 ms of CPU, most of what an event costs).
# Messages are made at two moments, both in Lua so taking ids off the list and queueing the
# message that carries them are one step: on accept when no message of the route is queued
# (the "filling" flag is absent), and when a task starts (refill). A task starting while
# events pile up takes up to a group with it into the next message, so under load groups
# grow by themselves and at low rates an event still gets its task at once. The flag
# expires, and the mover (scheduler.py) refills a route whose pending list has no message
# coming, so events whose message was lost in a crash are not stranded.
#
# group_message(template, entries, shown): the message for "<id> <tag>" entries, filled into
# messages.group_template(); the same message as messages.delivery_message() builds.
_GROUP_LUA = """
local function group_message(template, entries, shown)
  local ids, described = {}, {}
  for i, entry in ipairs(entries) do
    local space = string.find(entry, ' ', 1, true)
    ids[i] = string.sub(entry, 1, space - 1)
    if i <= shown then described[i] = string.sub(entry, space + 1) .. ' ' .. ids[i] .. ' attempt 1' end
  end
  local argsrepr = table.concat(described, ', ')
  if #entries > shown then argsrepr = #entries .. ' events: ' .. argsrepr .. ', ...' end
  local body = '[[["' .. table.concat(ids, '","') ..
               '"]],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]'
  local values = {ID = cjson.encode(ids[1]), BODY = cjson.encode(body), ARGSREPR = cjson.encode(argsrepr)}
  return (string.gsub(template, '"@@(%u+)@@"', function(name) return values[name] end))
end

-- Take up to `size` entries off the pending list into one message at the tail of the queue.
local function take_group(pending, queue, template, size, shown)
  local entries = redis.call('LPOP', pending, size)
  if not entries then return false end
  redis.call('LPUSH', queue, group_message(template, entries, shown))
  return true
end
"""

# One script per request: the journal record, its two index entries, the pending entries and
# the accepted counter (and a task message when none of the route is coming), atomically and in
# one round trip. KEYS: the queued index, the route's queued index, the route's queue, the
# counters hash, the pending list, the filling flag, then each event's hash key (all built by
# the functions above). ARGV: the number of events, the route, the counter's field, the message
# template, the group size, how many events argsrepr shows, the flag's lifetime in ms, then id,
# tag, body, headers, received per event, then the queued status.
_ACCEPT = _GROUP_LUA + """
local n, route = tonumber(ARGV[1]), ARGV[2]
local first = 8
local entries = {}
for e = 1, n do
  local i = first + (e - 1) * 5
  local id, received = ARGV[i], ARGV[i + 4]
  redis.call('HSET', KEYS[6 + e], 'tag', ARGV[i + 1], 'route', route, 'body', ARGV[i + 2],
             'headers', ARGV[i + 3], 'received', received, 'status', ARGV[#ARGV])
  redis.call('ZADD', KEYS[1], received, id)
  redis.call('ZADD', KEYS[2], received, id)
  entries[#entries + 1] = id .. ' ' .. ARGV[i + 1]
  if #entries == 1000 or e == n then  -- unpack() has a stack limit; a batch may hold 10,000
    redis.call('RPUSH', KEYS[5], unpack(entries))
    entries = {}
  end
end
if redis.call('SET', KEYS[6], '1', 'NX', 'PX', ARGV[7]) then
  take_group(KEYS[5], KEYS[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]))
end
redis.call('HINCRBY', KEYS[4], ARGV[3], n)
return n
"""

# A task of the route starts (or the mover finds pending events with no message coming:
# ARGV[5] = 'if-idle'): the next group goes into a message and the flag stays; nothing pending
# clears the flag, so the next accept queues its own message at once.
# KEYS: pending list, filling flag, queue. ARGV: template, group size, shown, flag ms, mode.
_REFILL = _GROUP_LUA + """
if ARGV[5] == 'if-idle' and redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if take_group(KEYS[1], KEYS[3], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
  return 1
end
redis.call('DEL', KEYS[2])
return 0
"""
# Longer than a queued message usually waits for a worker; when it expires early (a long
# queue, workers down) the cost is an extra message, never a lost event.
FILLING_MS = 10_000


def accept(client: redis.Redis, events: list[NewEvent], group_size: int = GROUP_SIZE) -> None:
    """Journal the events of one route and put them on its pending list (queueing a task
    message for them when none is coming), atomically and in one round trip: all or none.
    A task message carries `group_size` events at most (the route's)."""
    route = events[0].route
    keys = [_index_key(QUEUED), _index_key(QUEUED, route), queue_name(route), COUNTERS, _pending_key(route),
            _filling_key(route)]
    args: list[Any] = [len(events), route, f"accepted:{route}", group_template(queue_name(route)), group_size, SHOWN,
                       FILLING_MS]
    for ev in events:
        if ev.route != route:
            raise ValueError("accept() takes the events of one route at a time")
        keys.append(_event_key(ev.id))
        args += [ev.id, ev.tag, ev.body, ev.headers, repr(ev.received)]
    args.append(QUEUED)
    try:
        _script(client, _ACCEPT)(keys=keys, args=args)
    except REDIS_DOWN as exc:
        raise Unavailable(f"Redis did not answer ({exc.__class__.__name__}): nothing was accepted; retry later") from exc


def _refill_call(route: str, mode: str, group_size: int) -> tuple[list[str], list[Any]]:
    return ([_pending_key(route), _filling_key(route), queue_name(route)],
            [group_template(queue_name(route)), group_size, SHOWN, FILLING_MS, mode])


def refill_if_idle(client: redis.Redis, route: str, group_size: int = GROUP_SIZE) -> bool:
    """The mover's check: pending events and no message coming for them (it was lost, or the
    flag expired) -> queue one; True when it did."""
    keys, args = _refill_call(route, "if-idle", group_size)
    return bool(_script(client, _REFILL)(keys=keys, args=args))


def _script(client: redis.Redis, source: str) -> Any:
    """A registered script per client (EVALSHA, falling back to EVAL after a Redis restart)."""
    cache = client.__dict__.setdefault("_bus_scripts", {})
    if source not in cache:
        cache[source] = client.register_script(source)
    return cache[source]


def _decode(event_id: str, raw: dict[bytes, bytes]) -> dict[str, Any]:
    record: dict[str, Any] = {k.decode(): v for k, v in raw.items()}
    for k in ("tag", "route", "status", "last"):
        if k in record:
            record[k] = record[k].decode()
    record["received"] = float(record["received"])
    record["attempts"] = int(record.get("attempts", 0))
    record["round"] = int(record.get("round", 0))
    if "replayed" in record:
        record["replayed"] = float(record["replayed"])
    record["id"] = event_id
    return record


def load(client: redis.Redis, event_id: str) -> dict[str, Any] | None:
    """The event's record (body and headers as bytes), or None when it is gone (expired or purged)."""
    raw = client.hgetall(_event_key(event_id))
    return _decode(event_id, raw) if raw else None


def load_many(client: redis.Redis, event_ids: list[str], route: str, group_size: int = GROUP_SIZE
              ) -> tuple[list[dict[str, Any] | None], float]:
    """A task starts: the events (None for those gone) and the time the route's breaker stays
    open until (0: closed). In the same round trip the route's next pending group goes into a
    message of its own (see _REFILL), so events that arrived meanwhile are on their way."""
    pipe = client.pipeline(transaction=False)
    if route:
        keys, args = _refill_call(route, "on-start", group_size)
        _script(client, _REFILL)(keys=keys, args=args, client=pipe)
    for event_id in event_ids:
        pipe.hgetall(_event_key(event_id))
    pipe.hget(_breaker_key(route), "open_until")
    results = pipe.execute()
    *raws, open_until = results[1:] if route else results
    return [_decode(i, raw) if raw else None for i, raw in zip(event_ids, raws)], float(open_until or 0)


def attempts(client: redis.Redis, event_id: str) -> list[dict[str, Any]]:
    return [orjson.loads(a) for a in client.lrange(_attempts_key(event_id), 0, -1)]


def show(client: redis.Redis, event_id: str) -> dict[str, Any]:
    """One event with its body, received headers, every attempt and every copy sent elsewhere."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(_event_key(event_id))
    pipe.lrange(_attempts_key(event_id), 0, -1)
    pipe.lrange(_copies_key(event_id), 0, -1)
    raw, tries, copies = pipe.execute()
    if not raw:
        raise EventNotFound(f"no event {event_id!r} in the journal (never accepted, expired after retention, or purged)")
    record = _decode(event_id, raw)
    try:
        record["body"] = orjson.loads(record["body"])
    except orjson.JSONDecodeError:
        record["body"] = record["body"].decode("utf-8", "replace")
    record["headers"] = orjson.loads(record["headers"]) if record.get("headers") else {}
    record["attempt_log"] = [orjson.loads(a) for a in tries]
    record["copies"] = [orjson.loads(c) for c in copies]
    return record


# KEYS: event, attempts, copies, old status index, old route index, new status
# index, new route index, route retry schedule, route breaker, counters, the
# route's latency histogram, the current delivered slot (all built by the
# functions above). ARGV: id, received, moved ('1' when the status changes),
# attempt JSON, status, last result, retention (or '' to keep), retry time
# (or ''), '1' to close the breaker, the counter field to bump, and for a
# delivery the latency bucket, the seconds and the slot's time to live.
_RECORD_ATTEMPT = """
local id, received = ARGV[1], ARGV[2]
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', ARGV[5], 'last', ARGV[6])
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
if ARGV[9] == '1' then redis.call('DEL', KEYS[9]) end
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


def record_attempt(client: redis.Redis, event: dict[str, Any], attempt: dict[str, Any], status: str,
                   retention: int = DEFAULT_RETENTION, retry_at: float | None = None,
                   endpoint_alive: bool = False) -> None:
    """Append an attempt and move the event to `status`, atomically in one round trip.

    `retry_at` puts a retrying event on the route's retry schedule; `endpoint_alive`
    (any non-retryable answer) closes the route's breaker. Delivered events expire
    after `retention`; dead ones are kept until replayed or purged, because nobody
    has looked at them yet.
    """
    if attempt.get("response") is not None:
        attempt["response"] = attempt["response"][:RESPONSE_KEEP]
    last = attempt.get("status_code") or attempt.get("error") or ""
    event_id, route, old = event["id"], event["route"], event["status"] or status
    keys = [_event_key(event_id), _attempts_key(event_id), _copies_key(event_id),
            _index_key(old), _index_key(old, route), _index_key(status), _index_key(status, route),
            _retry_key(route), _breaker_key(route), COUNTERS, _latency_key(route)]
    args = [event_id, repr(event["received"]), "1" if old != status else "0", orjson.dumps(attempt), status,
            str(last), retention if status == DELIVERED else "", repr(retry_at) if retry_at is not None else "",
            "1" if endpoint_alive else "0"]
    slot, counted = _count_outcome(event, status, attempt)
    _script(client, _RECORD_ATTEMPT)(keys=keys + [slot], args=args + counted)


def status_class(code: int | None) -> str:
    """'2xx' ... '5xx' for an HTTP status, 'error' for no answer (connection error, timeout, route gone)."""
    return f"{code // 100}xx" if code else "error"


def _count_outcome(event: dict[str, Any], status: str, attempt: dict[str, Any]) -> tuple[str, list[Any]]:
    """The delivered-slot key and the counter arguments of record_attempt's script for this outcome."""
    route = event["route"]
    done = attempt.get("at", time.time()) + attempt.get("duration", 0.0)
    slot = _slot_key(route, int(done // SLOT))
    if status != DELIVERED:
        kind = "retried" if status == RETRYING else "dead"
        return slot, [f"{kind}:{route}:{status_class(attempt.get('status_code'))}", "", 0, 0]
    # A replayed event is timed from its replay: the days it spent dead say nothing about delivery.
    seconds = max(0.0, done - max(event["received"], event.get("replayed", 0.0)))
    bucket = next((repr(b) for b in LATENCY_BUCKETS if seconds <= b), "+Inf")
    return slot, [f"delivered:{route}", bucket, repr(seconds), 3600 + 2 * SLOT]


def count_refused(client: redis.Redis, route: str, reason: str) -> None:
    """A request the ingress refused; `route` is '' when none was chosen (bad tag, no route)."""
    client.hincrby(COUNTERS, f"refused:{route}:{reason}", 1)


def counters(client: redis.Redis) -> list[tuple[str, str, str, int]]:
    """Every counter as (kind, route, label, value); label is '' for kinds without one."""
    out = []
    for name, value in client.hgetall(COUNTERS).items():
        kind, _, rest = name.decode().partition(":")
        route, _, label = rest.partition(":")
        out.append((kind, route, label, int(value)))
    return out


def latency(client: redis.Redis, routes: Iterable[str]) -> dict[str, tuple[list[tuple[str, int]], float]]:
    """Per route with deliveries: cumulative (upper bound, count) buckets ending with '+Inf', and the sum."""
    routes = list(routes)
    pipe = client.pipeline(transaction=False)
    for route in routes:
        pipe.hgetall(_latency_key(route))
    out = {}
    for route, raw in zip(routes, pipe.execute()):
        if not raw:
            continue
        values = {k.decode(): v for k, v in raw.items()}
        running, buckets = 0, []
        for bound in [repr(b) for b in LATENCY_BUCKETS] + ["+Inf"]:
            running += int(values.get(bound, 0))
            buckets.append((bound, running))
        out[route] = (buckets, float(values.get("sum", 0)))
    return out


@dataclass(frozen=True)
class RouteSnapshot:
    """What Redis says about one route at one moment."""

    queued: int
    retrying: int
    dead: int
    queue_length: int  # task messages in bus.<route> waiting for a worker
    pending: int  # events on the route's pending list: the next task message of the route takes them
    oldest_waiting: float | None  # received time of the oldest queued or retrying event
    breaker: dict[str, float]
    delivered_per_slot: list[int]  # the last hour, SLOT seconds each, oldest first; the last is the current slot


def snapshot(client: redis.Redis, routes: Iterable[str], now: float) -> dict[str, RouteSnapshot]:
    """Every route's counts, oldest waiting event, breaker and recent deliveries, in one round trip."""
    routes = list(routes)
    current = int(now // SLOT)
    slots = range(current - SLOTS_KEPT + 1, current + 1)
    pipe = client.pipeline(transaction=False)
    for route in routes:
        for status in (QUEUED, RETRYING, DEAD):
            pipe.zcard(_index_key(status, route))
        for status in (QUEUED, RETRYING):
            pipe.zrange(_index_key(status, route), 0, 0, withscores=True)
        pipe.llen(queue_name(route))
        pipe.llen(_pending_key(route))
        pipe.hgetall(_breaker_key(route))
        pipe.mget([_slot_key(route, s) for s in slots])
    results = pipe.execute()
    out = {}
    for i, route in enumerate(routes):
        queued, retrying, dead, first_queued, first_retrying, length, pending, breaker_, slot_counts = \
            results[i * 9:(i + 1) * 9]
        oldest = [score for _, score in first_queued + first_retrying]
        out[route] = RouteSnapshot(
            queued=queued, retrying=retrying, dead=dead, queue_length=length, pending=pending,
            oldest_waiting=min(oldest) if oldest else None,
            breaker={k.decode(): float(v) for k, v in breaker_.items()},
            delivered_per_slot=[int(c or 0) for c in slot_counts],
        )
    return out


def summaries(client: redis.Redis, event_ids: Iterable[str]) -> list[dict[str, Any]]:
    """Summaries of these events in the order given; ids not in the journal are left out."""
    event_ids = list(event_ids)
    pipe = client.pipeline(transaction=False)
    for event_id in event_ids:
        pipe.hmget(_event_key(event_id), SUMMARY_FIELDS)
    return [_summary(i, v) for i, v in zip(event_ids, pipe.execute()) if v[0] is not None]


def park(client: redis.Redis, event: dict[str, Any], until: float,
         reason: str = "waiting: endpoint failing (breaker open)") -> None:
    """Hold an event off until `until` without an attempt: no worker memory, just Redis."""
    pipe = client.pipeline(transaction=True)
    pipe.hset(_event_key(event["id"]), mapping={"status": RETRYING, "last": reason})
    _move(pipe, event["id"], event["route"], event["received"], event["status"], RETRYING)
    pipe.zadd(_retry_key(event["route"]), {event["id"]: until})
    pipe.execute()


# Both scripts keep every breaker/schedule transition atomic across any number of
# workers and cost one round trip each (the dramatiq pattern).
_BREAKER_FAIL = """
local now, threshold, cap, jitter = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local probe = ARGV[5] == '1'
redis.call('HSETNX', KEYS[1], 'failing_since', tostring(now))
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
-- Failures of attempts already in flight when it opened do not lengthen the wait; a failed probe does.
if open_until > now and not probe then return tostring(open_until) end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if failures < threshold and not probe then return false end
local step = redis.call('HINCRBY', KEYS[1], 'step', 1)
local delay = math.min(2 ^ (step - 1), cap)
open_until = now + delay / 2 * (1 + jitter)
redis.call('HSET', KEYS[1], 'open_until', tostring(open_until))
redis.call('HSETNX', KEYS[1], 'since', tostring(now))
return tostring(open_until)
"""

# RPUSH puts released events at the head of the queue (kombu LPUSHes and
# BRPOPs): they have waited longer than anything queued, and a probe must not
# wait behind a backlog that is only going to be parked again. ARGV holds
# groups of (count, ids..., message); the earliest group is pushed last so it
# is next in line. An id another mover already took is not counted again.
_RELEASE = """
local starts = {}
local i = 1
while i <= #ARGV do
  starts[#starts + 1] = i
  i = i + tonumber(ARGV[i]) + 2
end
local moved = 0
for g = #starts, 1, -1 do
  local first, n = starts[g] + 1, tonumber(ARGV[starts[g]])
  local removed = 0
  for j = first, first + n - 1 do
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[j])
  end
  if removed > 0 then
    redis.call('RPUSH', KEYS[2], ARGV[first + n])
    moved = moved + removed
  end
end
return moved
"""


def breaker_failed(client: redis.Redis, route: str, now: float, threshold: int, cap: float, jitter: float,
                   probe: bool = False) -> float | None:
    """Count a retryable failure; returns the time the breaker stays open until, if it is open."""
    result = _script(client, _BREAKER_FAIL)(keys=[_breaker_key(route)], args=[now, threshold, cap, jitter, int(probe)])
    return float(result) if result else None


def breaker(client: redis.Redis, route: str) -> dict[str, float]:
    """The route's breaker: empty while the endpoint answers, else failures, failing_since, open_until, since, step."""
    return {k.decode(): float(v) for k, v in client.hgetall(_breaker_key(route)).items()}


def hold_breaker(client: redis.Redis, route: str, until: float) -> None:
    """While a probe is out, keep everyone else waiting until it reports (or times out)."""
    client.hset(_breaker_key(route), "open_until", repr(until))


def due(client: redis.Redis, route: str, now: float, limit: int) -> list[tuple[str, str, int]]:
    """Up to `limit` (id, tag, attempts so far) of the route's events whose retry time has come; tag '' when gone."""
    ids = [i.decode() for i in client.zrangebyscore(_retry_key(route), "-inf", now, start=0, num=limit)]
    if not ids:
        return []
    pipe = client.pipeline(transaction=False)
    for event_id in ids:
        pipe.hmget(_event_key(event_id), ("tag", "attempts"))
    return [(i, t.decode() if t else "", int(n or 0)) for i, (t, n) in zip(ids, pipe.execute())]


def release(client: redis.Redis, route: str, groups: list[tuple[list[str], bytes]]) -> int:
    """Move scheduled events to the head of the route's queue, one message per group of ids."""
    if not groups:
        return 0
    argv: list[Any] = []
    for ids, message in groups:
        argv += [len(ids), *ids, message]
    return int(_script(client, _RELEASE)(keys=[_retry_key(route), queue_name(route)], args=argv))


def claim_mover(client: redis.Redis, route: str, worker_id: str, ms: int) -> bool:
    """One mover per route at a time, so a group is never moved twice by two workers."""
    key = _mover_key(route)
    return bool(client.set(key, worker_id, nx=True, px=ms)) or client.get(key) == worker_id.encode()


def drop_scheduled(client: redis.Redis, route: str, event_id: str) -> None:
    """An id on the schedule whose record is gone (expired or purged) has nothing left to send."""
    client.zrem(_retry_key(route), event_id)


def record_copy(client: redis.Redis, event_id: str, attempt: dict[str, Any]) -> None:
    """A replay sent to another URL (--to): kept apart so the event's own state is untouched."""
    if attempt.get("response") is not None:
        attempt["response"] = attempt["response"][:RESPONSE_KEEP]
    client.rpush(_copies_key(event_id), orjson.dumps(attempt))


def requeue(client: redis.Redis, events: list[dict[str, Any]], messages: list[tuple[bytes, str]]) -> None:
    """Replay to the route: status back to queued, retention lifted, new (message, route) tasks queued;
    one transaction."""
    pipe = client.pipeline(transaction=True)
    for event in events:
        key = _event_key(event["id"])
        pipe.hset(key, mapping={"status": QUEUED, "round": event["attempts"], "replayed": repr(time.time())})
        for k in (key, _attempts_key(event["id"]), _copies_key(event["id"])):
            pipe.persist(k)
        _move(pipe, event["id"], event["route"], event["received"], event["status"], QUEUED)
        pipe.zrem(_retry_key(event["route"]), event["id"])
    for message, route in messages:
        pipe.lpush(queue_name(route), message)
    pipe.execute()


def enqueue(client: redis.Redis, route: str, messages: list[bytes]) -> None:
    """Queue extra tasks for events without changing their state (copies for `replay --to`)."""
    if messages:
        client.lpush(queue_name(route), *messages)


def sweep(client: redis.Redis, retention: int, now: float | None = None, batch: int = 5000) -> int:
    """Drop from the delivered indexes, overall and per route, the events received before the
    retention (their hashes expire on their own); at most `batch` per index per call."""
    cutoff = (now or time.time()) - retention
    if not client.zcount(_index_key(DELIVERED), "-inf", cutoff):
        return 0
    # Every route that ever delivered has a delivered counter; an expired record no longer says its route.
    routes = [name.decode()[len("delivered:"):] for name in client.hkeys(COUNTERS)
              if name.startswith(b"delivered:")]
    indexes = [_index_key(DELIVERED)] + [_index_key(DELIVERED, route) for route in routes]
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
            pipe.zrem(_index_key(s), event_id)
            if route:
                pipe.zrem(_index_key(s, route), event_id)
    pipe.execute()


def purge(client: redis.Redis, events: list[dict[str, Any]]) -> int:
    """Delete events (record, attempts, copies and index entries) for good."""
    pipe = client.pipeline(transaction=True)
    for event in events:
        pipe.delete(_event_key(event["id"]), _attempts_key(event["id"]), _copies_key(event["id"]))
        pipe.zrem(_retry_key(event["route"]), event["id"])
    pipe.execute()
    _drop_from_indexes(client, [(e["id"], e["route"]) for e in events], None)
    return len(events)


def _cursor_bounds(f: EventFilter, cursor: str | None) -> tuple[float | str, str | None]:
    if not cursor:
        return (f.until if f.until is not None else "+inf"), None
    score, _, last_id = cursor.partition(":")
    return float(score), last_id


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
    indexes = [_index_key(status, f.route) for status in ([f.status] if f.status else STATUSES)]
    newest_first = heapq.merge(*(_index_order(client, index, high, low) for index in indexes),
                               key=lambda item: (item[1], item[0]), reverse=True)
    found: list[dict[str, Any]] = []
    scanned, chunk, last = 0, max(limit * 2, 100), None
    while scanned < max_scan:
        batch = list(itertools.islice(newest_first, chunk))
        if not batch:
            return Page(found, None)
        scanned += len(batch)
        last = batch[-1]
        candidates = [(m, sc) for m, sc in batch if not (after_id and sc == high and m >= after_id)]
        if f.tag is not None:
            # Read only the tags first: a selective pattern then costs one small field per candidate.
            pipe = client.pipeline(transaction=False)
            for event_id, _ in candidates:
                pipe.hget(_event_key(event_id), "tag")
            tags = pipe.execute()
            gone = [(event_id, f.route) for (event_id, _), tag in zip(candidates, tags) if tag is None]
            candidates = [c for c, tag in zip(candidates, tags) if tag is not None and f.matches_tag(tag.decode())]
        else:
            gone = []
        pipe = client.pipeline(transaction=False)
        for event_id, _ in candidates[: limit - len(found)]:
            pipe.hmget(_event_key(event_id), SUMMARY_FIELDS)
        for (event_id, score), values in zip(candidates, pipe.execute()):
            if values[0] is None:
                gone.append((event_id, f.route))
                continue
            found.append(_summary(event_id, values))
            if len(found) == limit:
                if gone:
                    _drop_from_indexes(client, gone, None)
                return Page(found, f"{score!r}:{event_id}")
        if gone:
            _drop_from_indexes(client, gone, None)
        # A filter that matches little needs bigger reads, fewer round trips.
        chunk = min(chunk * 2, 2000)
    # The scan budget ran out: hand back where it stopped so the caller can go on.
    return Page(found, f"{last[1]!r}:{last[0]}")


def _index_order(client: redis.Redis, index: str, high: float | str, low: float | str
                 ) -> Iterator[tuple[str, float]]:
    """(id, received) of one index from `high` down to `low`, newest first (ties: greater id first,
    as ZREVRANGEBYSCORE orders them), read in pages that grow as the reader keeps going."""
    offset, page = 0, 100
    while True:
        batch = client.zrevrangebyscore(index, high, low, start=offset, num=page, withscores=True)
        for member, score in batch:
            yield member.decode(), score
        if len(batch) < page:
            return
        offset += len(batch)
        page = min(page * 2, 2000)


def _summary(event_id: str, values: list[bytes | None]) -> dict[str, Any]:
    tag, route, status, tries, last, received = (v.decode() if v is not None else None for v in values)
    return {"id": event_id, "tag": tag, "route": route, "status": status, "attempts": int(tries or 0),
            "last": last or "", "received": float(received or 0)}


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


def count(client: redis.Redis, status: str, route: str | None = None) -> int:
    return client.zcard(_index_key(status, route))


def backlog(client: redis.Redis, route: str) -> int:
    """Events of the route accepted but neither delivered nor dead (queued or waiting to retry)."""
    pipe = client.pipeline(transaction=False)
    pipe.zcard(_index_key(QUEUED, route))
    pipe.zcard(_index_key(RETRYING, route))
    try:
        return sum(pipe.execute())
    except REDIS_DOWN as exc:
        raise Unavailable(f"Redis did not answer ({exc.__class__.__name__}): nothing was accepted; retry later") from exc

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
        for start in range(0, client.zcard(_index_key(status)), _SCAN_CHUNK):
            found.update(raw.decode() for raw in client.zrange(_index_key(status), start, start + _SCAN_CHUNK - 1))
    return found


def scheduled_ids(client: redis.Redis) -> set[str]:
    """Ids waiting on a route's retry schedule: their next task is made when they are due."""
    found: set[str] = set()
    for key in client.scan_iter(match=_retry_key("*"), _type="zset"):
        for start in range(0, client.zcard(key), _SCAN_CHUNK):
            found.update(raw.decode() for raw in client.zrange(key, start, start + _SCAN_CHUNK - 1))
    return found


def pending_ids(client: redis.Redis, route: str | None = None) -> list[str]:
    """Ids on the route's pending list (every route's when None), oldest first: a task message
    takes them when the next task of the route starts."""
    keys = [_pending_key(route)] if route else client.scan_iter(match=_pending_key("*"), _type="list")
    found: list[str] = []
    for key in keys:
        for start in range(0, 2 * client.llen(key) + _SCAN_CHUNK, _SCAN_CHUNK):
            chunk = client.lrange(key, start, start + _SCAN_CHUNK - 1)
            if not chunk:
                break
            found += [entry.split(b" ", 1)[0].decode() for entry in chunk]
    return found


def task_messages(client: redis.Redis) -> Iterator[dict[str, Any]]:
    """Every task message Redis holds: waiting in a route's queue, or handed to a worker and unacked.

    Recovery requeues any waiting event found neither here, nor on a retry schedule
    (scheduled_ids), nor on a pending list (pending_ids); a new place where events wait must
    be read there too.
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


def requeue_lost(client: redis.Redis, event_id: str, route: str, message: bytes) -> bool:
    """Queue a new task for an event that is still waiting; False when it was delivered or dead meanwhile."""
    return bool(_script(client, _REQUEUE)(keys=[_event_key(event_id), queue_name(route)], args=[message]))


def recovery_lock(client: redis.Redis, holder: str, seconds: int) -> bool:
    """One recovery at a time across workers: the second would only find what the first requeued."""
    return bool(client.set(_RECOVERY_LOCK, holder, nx=True, ex=seconds))


def recovery_unlock(client: redis.Redis, holder: str) -> None:
    client.eval(_UNLOCK, 1, _RECOVERY_LOCK, holder)  # only our own lock, not one taken after ours expired
