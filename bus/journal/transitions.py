"""An event's moves after acceptance: attempts, the retry schedule, replays, copies (breakers: breakers.py)."""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import redis

from ..broker.messages import Outgoing
from ..endpoints import EndpointKey
from ..lifecycle import DELIVERED, RETRYING
from ..wire.pipelined import SharedPipe
from . import scripts, templates
from .counters import LATENCY_BUCKETS, SLOT
from .keys import (
    COUNTERS,
    attempts_key,
    breaker_key,
    copies_key,
    event_key,
    failing_key,
    latency_key,
    mover_key,
    open_breakers_key,
    parked_key,
    queue_name,
    retry_key,
    slot_key,
)
from .store import (
    DEFAULT_RETENTION,
    RESPONSE_KEEP,
    script,
)
from .values import Attempt, Event, as_attempt, as_event, id_of

# Every move of bus/lifecycle.py's table below is one script of lua/ that reads the event's status
# (and the task its record names) itself and answers 'ok' or why it refused: 'gone', 'superseded',
# or the status the event is in. The functions return None when the move was made, else that reason.
RECORD_ATTEMPT_SCRIPT = scripts.load("record_attempt.lua", "fill.lua", "group.lua", "lane.lua")
_PARK = scripts.load("park.lua")
_RECHECK = scripts.load("recheck.lua")
_RELEASE = scripts.load("release.lua", "fill.lua")
_HAND_OFF = scripts.load("hand_off.lua", "fill.lua")
_REQUEUE = scripts.load("requeue.lua", "fill.lua")
_CLAIM_MOVER = scripts.load("claim_mover.lua")


def refusal(reply: bytes | str) -> str | None:
    """None for a script's 'ok' ('ok <id>' included), else its reason for refusing the move."""
    text = reply.decode() if isinstance(reply, bytes) else reply
    return None if text == "ok" or text.startswith("ok ") else text


def record_attempt(client: redis.Redis | SharedPipe, event: Event | Mapping[str, Any],
                   attempt: Attempt | Mapping[str, Any], status: str,
                   retention: int = DEFAULT_RETENTION, retry_at: float | None = None,
                   endpoint_alive: bool = False, endpoint: EndpointKey | None = None,
                   lane_group: list[Any] | None = None, take: tuple[str, float] | None = None,
                   behind: EndpointKey | None = None) -> str | None:
    """Append an attempt and move the event to `status`, atomically in one round trip. No task
    message sends the event after this one: a retry gets a new message when due.

    `retry_at` puts a retrying event on the route's retry schedule; `endpoint_alive`
    (any non-retryable answer) closes the breaker of `endpoint`, the one the attempt
    went to, and releases the events it held back; any HTTP answer closes the breaker
    of its origin (connect failures: endpoints.py) likewise. Delivered events expire after
    `retention`; dead ones are kept until replayed or purged, because nobody has
    looked at them yet.

    None when recorded; else why nothing was (lua/record_attempt.lua): 'gone' (purged meanwhile)
    or the status it is in (delivered or dead already: another copy of its message finished it).

    `lane_group` (grouping.lane_group, for an ordered route) lets a delivered or dead event's lane
    send its next event in a message made by the same script when none of the route is coming;
    `take` (a task id, and until when) lets that task take it instead (lua/lane.lua): its id is
    then in `taken`, with its record, for the task to send next.

    `behind` (a failed probe's: `endpoint` or its origin, the breaker its failure was counted with
    first) parks a retrying event in that breaker's parked set instead, while the breaker is open and
    `retry_at` comes before it half-opens: on the schedule, its next task would only park it there.
    """
    return record_attempt_taking(client, event, attempt, status, retention, retry_at, endpoint_alive, endpoint,
                                 lane_group, take, behind)[0]


def record_attempt_taking(client: redis.Redis | SharedPipe, event: Event | Mapping[str, Any],
                          attempt: Attempt | Mapping[str, Any], status: str, retention: int = DEFAULT_RETENTION,
                          retry_at: float | None = None, endpoint_alive: bool = False, endpoint: EndpointKey | None = None,
                          lane_group: list[Any] | None = None, take: tuple[str, float] | None = None,
                          behind: EndpointKey | None = None) -> tuple[str | None, Event | None]:
    """record_attempt's refusal, and the lane's next event the task took (None: none): the script
    sends its record back, so the task need not load it."""
    keys, args = record_attempt_call(event, attempt, status, retention, retry_at, endpoint_alive, endpoint, behind)
    if lane_group:
        args += [*lane_group, *((take[0], repr(take[1])) if take else ("", ""))]
    reply = script(client, RECORD_ATTEMPT_SCRIPT)(keys=keys, args=args)
    if isinstance(reply, list):  # ['ok <id>', the taken event's HGETALL]
        taken_id, flat = reply[0].decode()[3:], reply[1]
        return None, Event.from_journal(taken_id, dict(zip(flat[::2], flat[1::2])))
    return refusal(reply), None


def record_attempt_call(event: Event | Mapping[str, Any], attempt: Attempt | Mapping[str, Any], status: str,
                        retention: int = DEFAULT_RETENTION, retry_at: float | None = None,
                        endpoint_alive: bool = False, endpoint: EndpointKey | None = None,
                        behind: EndpointKey | None = None) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of RECORD_ATTEMPT_SCRIPT (lua/record_attempt.lua names them; see record_attempt),
    for callers with a connection of their own. The journaled attempt keeps RESPONSE_KEEP of the
    response (a new value: the caller's `attempt` is left as it is)."""
    event, attempt = as_event(event), _response_kept(as_attempt(attempt))
    last = attempt.status_code or attempt.error or ""
    event_id, route = event.id, event.route
    digest, origin = (endpoint.digest, endpoint.origin.digest) if endpoint else ("", "")
    keys = [event_key(event_id), attempts_key(event_id), copies_key(event_id), retry_key(route),
            breaker_key(route, digest), COUNTERS, latency_key(route)]
    # An answer of any status says the origin takes connections: its breaker closes ('o'), the path's
    # only when the answer is not a failure ('1').
    closes = "0" if endpoint is None else "1" if endpoint_alive else "o" if attempt.status_code else "0"
    args = [event_id, route, repr(event.received), attempt.to_journal(), status, str(last),
            retention if status == DELIVERED else "", repr(retry_at) if retry_at is not None else "", closes]
    slot, counted = _count_outcome(event, status, attempt)
    # The breaker a failed probe's record may park it behind: '1' the endpoint's, 'o' its origin's.
    parks = {endpoint: "1", endpoint.origin: "o"}.get(behind, "") if endpoint and behind else ""
    return (keys + [slot, parked_key(route, digest), open_breakers_key(route), failing_key(route),
                    breaker_key(route, origin), parked_key(route, origin)],
            args + counted + [digest, origin, parks, repr(time.time())])


# A task loads its events when it starts and sends them one after another, for up to the
# visibility timeout. A redelivered message (kombu restored it, or recovery made it) checks each
# event again right before sending it (lua/recheck.lua).
def recheck(client: redis.Redis | SharedPipe, events: Sequence[Event | Mapping[str, Any]], task_id: str) -> list[str]:
    """Whether task `task_id` still sends each event (see _RECHECK): per event 'ok', 'gone',
    'superseded', 'delivered' or 'dead'. Only the events' ids are read."""
    return [answer.split(" ", 1)[0] for answer in _rechecked(client, [id_of(event) for event in events], task_id)]


def recheck_events(client: redis.Redis | SharedPipe, events: Sequence[Event | Mapping[str, Any]], task_id: str
                   ) -> list[tuple[str | None, Event]]:
    """recheck, with the event to send: per event (None, a new value of it with its attempts and status
    as the journal has them now), or (why not: 'gone', 'superseded', 'delivered', 'dead', the event
    as given)."""
    given = [as_event(event) for event in events]
    checked: list[tuple[str | None, Event]] = []
    for event, answer in zip(given, _rechecked(client, [event.id for event in given], task_id)):
        state, *fresh = answer.split(" ")
        if state == "ok":
            checked.append((None, replace(event, attempts=int(fresh[0]), status=fresh[1])))
        else:
            checked.append((state, event))
    return checked


def _rechecked(client: redis.Redis | SharedPipe, event_ids: list[str], task_id: str) -> list[str]:
    """lua/recheck.lua's answer per event: 'ok <attempts> <status>', or why the task no longer sends it."""
    return [raw.decode() for raw in script(client, _RECHECK)(keys=[event_key(i) for i in event_ids], args=[task_id])]


def status_class(code: int | None) -> str:
    """'2xx' ... '5xx' for an HTTP status, 'error' for no answer (connection error, timeout, route gone)."""
    return f"{code // 100}xx" if code else "error"


def _count_outcome(event: Event, status: str, attempt: Attempt) -> tuple[str, list[Any]]:
    """The delivered-slot key and the counter arguments of record_attempt's script for this outcome."""
    route = event.route
    done = attempt.at + (attempt.duration or 0.0)
    slot = slot_key(route, int(done // SLOT))
    if status != DELIVERED:
        kind = "retried" if status == RETRYING else "dead"
        return slot, [f"{kind}:{route}:{status_class(attempt.status_code)}", "", 0, 0]
    # A replayed event is timed from its replay: the days it spent dead say nothing about delivery.
    seconds = max(0.0, done - max(event.received, event.replayed or 0.0))
    bucket = next((repr(b) for b in LATENCY_BUCKETS if seconds <= b), "+Inf")
    return slot, [f"delivered:{route}", bucket, repr(seconds), 3600 + 2 * SLOT]


def park(client: redis.Redis, event: Event | Mapping[str, Any], until: float,
         reason: str = "waiting for its next attempt", task: str = "") -> str | None:
    """Hold an event off until `until` without an attempt: no worker memory, just Redis. The
    message that parked it is done with it: the retry schedule makes the next one.

    `task`: the task parking it ('' when none). None when parked; else why not (lua/park.lua):
    'gone', 'superseded' (another copy of the message, or another task, moved it since it was
    loaded) or the status it is in (delivered or dead: nothing to wait for)."""
    event = as_event(event)
    return refusal(script(client, _PARK)(
        keys=[event_key(event.id), retry_key(event.route)],
        args=[event.id, event.route, repr(until), reason, task]))



def due(client: redis.Redis, route: str, now: float, limit: int) -> list[tuple[str, str, int]]:
    """Up to `limit` (id, tag, attempts so far) of the route's events whose retry time has come; tag '' when gone."""
    ids = [i.decode() for i in client.zrangebyscore(retry_key(route), "-inf", now, start=0, num=limit)]
    if not ids:
        return []
    pipe = client.pipeline(transaction=False)
    for event_id in ids:
        pipe.hmget(event_key(event_id), ("tag", "attempts"))
    return [(i, t.decode() if t else "", int(n or 0)) for i, (t, n) in zip(ids, pipe.execute())]


def release(client: redis.Redis, route: str, groups: list[Outgoing]) -> int:
    """Move scheduled events to the head of the route's queue, one message per group of ids."""
    if not groups:
        return 0
    argv: list[Any] = []
    for message in groups:
        argv += [len(message.event_ids), message.task_id, *message.event_ids, *message.filling]
    keys = [retry_key(route), queue_name(route), templates.for_route(route).key]
    return int(templates.stored(lambda: script(client, _RELEASE)(keys=keys, args=argv), client.execute_command))


def claim_mover(client: redis.Redis, route: str, worker_id: str, ms: int) -> float | None:
    """One mover per route at a time, so a group is never moved twice by two workers; `worker_id` is the
    worker's name: a mover whose worker's lease is gone loses the route at once (lua/claim_mover.lua).
    None when this mover holds the route; else the seconds until the holder's worker lease lapses
    unless renewed (when to look again)."""
    answer = int(script(client, _CLAIM_MOVER)(keys=[mover_key(route)], args=[worker_id, ms]))
    return None if answer == 1 else -answer / 1000


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


# lua/record_copy.lua: only beside a record still in Redis (a copy of an archived event goes to its archive row).
_RECORD_COPY = scripts.load("record_copy.lua")


def record_copy(client: redis.Redis, event_id: str, attempt: Attempt | Mapping[str, Any]) -> bool:
    """A replay sent to another URL (--to): kept apart so the event's own state is untouched.
    False when the event is no longer in Redis (archived): the caller records it there."""
    return bool(script(client, _RECORD_COPY)(keys=[event_key(event_id), copies_key(event_id)],
                                             args=[copy_record(attempt).to_journal()]))


def copy_record(attempt: Attempt | Mapping[str, Any]) -> Attempt:
    """A copy's attempt as it is kept: its response cut to RESPONSE_KEEP (a new value when cut)."""
    return _response_kept(as_attempt(attempt))


def _response_kept(attempt: Attempt) -> Attempt:
    """`attempt` with its response cut to RESPONSE_KEEP: itself when it is short enough, else a new value,
    so the common short answer costs no copy."""
    response = attempt.response
    if response is None or len(response) <= RESPONSE_KEEP:
        return attempt
    return replace(attempt, response=response[:RESPONSE_KEEP])


def requeue(client: redis.Redis, events: list[dict[str, Any]], messages: list[tuple[Outgoing, str]],
            restored: Sequence[tuple[dict[str, Any], list[bytes], list[bytes]]] = ()) -> int:
    """Replay to the route: status back to queued, retention lifted, new (message, route) tasks queued
    and named in their events' records; one transaction. `restored` are (record fields, attempts,
    copies) of archived events among them, put back into Redis in the same transaction, so the
    archive mover never sees one half-restored. An event no longer in the status it was listed in
    (its `status`, when it has one) is left as it is (lua/requeue.lua). Returns how many were requeued."""
    owners = {i: n for n, (message, _) in enumerate(messages, 1) for i in message.event_ids}
    keys: list[str] = []
    args: list[Any] = [len(events), repr(time.time())]
    for event in events:
        event_id, route = event["id"], event["route"]
        keys += [event_key(event_id), attempts_key(event_id), copies_key(event_id), retry_key(route)]
        args += [event_id, route, event.get("status") or "", messages[owners[event_id] - 1][0].task_id, owners[event_id]]
    for message, route in messages:
        keys += [queue_name(route), templates.for_route(route, message.redelivered).key]
        args += [message.task_id, *message.filling]
    pipe = client.pipeline(transaction=True)
    # The templates are stored first in the same transaction: a refusal inside MULTI could not be answered.
    for template in {templates.for_route(route, message.redelivered) for message, route in messages}:
        pipe.execute_command(*templates.store(template))
    for fields, tries, copies in restored:
        key = event_key(fields["id"])
        pipe.delete(key, attempts_key(fields["id"]), copies_key(fields["id"]))
        pipe.hset(key, mapping={k: v for k, v in fields.items() if k != "id" and v is not None})
        if tries:
            pipe.rpush(attempts_key(fields["id"]), *tries)
        if copies:
            pipe.rpush(copies_key(fields["id"]), *copies)
    # redis-py loads the script before MULTI, so a Redis that forgot it cannot refuse it inside.
    script(client, _REQUEUE)(keys=keys, args=args, client=pipe)
    answers = pipe.execute()[-1]
    return sum(1 for answer in answers if refusal(answer) is None)


def enqueue(client: redis.Redis, route: str, messages: list[bytes]) -> None:
    """Queue extra tasks for events without changing their state (copies for `replay --to`)."""
    if messages:
        client.lpush(queue_name(route), *messages)


def hand_off(client: redis.Redis, route: str, message: Outgoing, task: str = "") -> int:
    """Queue a message that takes over its events from the task that queues it (`task`; '' when
    none), in one step (lua/hand_off.lua). Returns how many events changed hands: those still
    waiting and still that task's."""
    keys = [queue_name(route), templates.for_route(route, message.redelivered).key]
    args = [*message.filling, message.task_id, task, *message.event_ids]
    return int(templates.stored(lambda: script(client, _HAND_OFF)(keys=keys, args=args), client.execute_command))
