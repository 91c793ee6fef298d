"""Accepting events and grouping them into task messages: the pending list per route and its Lua."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis
from redis.exceptions import NoScriptError

from ..broker.messages import GROUP_SIZE, SHOWN
from ..errors import IdempotencyConflict, SpoolError
from ..lifecycle import QUEUED
from ..wire.pipelined import NotConfirmed, SharedPipe, eval_, evalsha, script_sha
from ..wire.resp import fragment
from . import breakers, scripts, templates
from .keys import COUNTERS, event_key, filling_key, idempotency_key, index_key, pending_key, queue_name, spool_mark_key
from .store import (
    REDIS_DOWN,
    Idempotency,
    NewEvent,
    script,
    unavailable,
)
from .values import Event

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
# Both scripts (lua/accept.lua, lua/refill.lua) make groups with the functions of lua/group.lua.
ACCEPT_SCRIPT = scripts.load("accept.lua", "fill.lua", "group.lua", "lane.lua")
# The same accept, its events given as spool frames' payloads, one argument each (lua/unframe.lua).
ACCEPT_FRAMES_SCRIPT = scripts.load("accept.lua", "fill.lua", "group.lua", "lane.lua", "unframe.lua")
_REFILL = scripts.load("refill.lua", "fill.lua", "group.lua")
# Longer than a queued message usually waits for a worker; when it expires early (a long
# queue, workers down) the cost is an extra message, never a lost event.
FILLING_MS = 10_000


@dataclass(frozen=True)
class SpoolMark:
    """Where a producer's spool holds the events of one accept call: their places in it (strings that
    sort in the spool's order), and the last place of the part sent before them in the same send
    ('' for the first part). Accepting moves the spool's mark for the route past them and skips
    any at or before it (see ACCEPT_SCRIPT); the mark lives `window` seconds after the last send."""

    spool: str
    places: list[str]
    after: str
    window: int


def accept_call(events: list[NewEvent], group_size: int = GROUP_SIZE, idempotency: Idempotency | None = None,
                mark: SpoolMark | None = None, order: str = "") -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of ACCEPT_SCRIPT (lua/accept.lua names them) for the events of one route (see accept());
    `order` is the route's (routes.Route.order: '' for an unordered route)."""
    route = events[0].route
    keys, args = _route_part(route, len(events), group_size)
    if idempotency is None:
        args += ["", "", 0]
    else:
        args += [f"{idempotency.digest} {','.join(ev.id for ev in events)}", idempotency.digest, idempotency.window]
    args += [mark.after, mark.window] if mark is not None else ["", 0]
    args.append(order)
    for ev in events:
        if ev.route != route:
            raise ValueError("accept() takes the events of one route at a time")
        keys.append(event_key(ev.id))
        args += [ev.id, ev.tag, ev.body, ev.headers, repr(ev.received)]
    keys.append(idempotency_key(events[0].tag, idempotency.key) if idempotency else idempotency_key("", ""))
    keys.append(spool_mark_key(mark.spool if mark is not None else ""))
    keys.append(templates.for_route(route).key)
    if mark is not None:
        if len(mark.places) != len(events):
            raise ValueError("a SpoolMark gives one place per event")
        args += mark.places
    return keys, args


def _route_part(route: str, count: int, group_size: int) -> tuple[list[str], list[Any]]:
    """The KEYS[1..6] and ARGV[1..6] of ACCEPT_SCRIPT (and ACCEPT_FRAMES_SCRIPT) for `count` events of `route`."""
    keys = [index_key(QUEUED), index_key(QUEUED, route), queue_name(route), COUNTERS, pending_key(route),
            filling_key(route)]
    return keys, [count, route, f"accepted:{route}", group_size, SHOWN, FILLING_MS]


def frames_call(payloads: list[bytes], route: str, group_size: int, mark: SpoolMark, order: str = ""
                ) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of ACCEPT_FRAMES_SCRIPT (lua/unframe.lua names them): a spool's frames of one route,
    each its payload as the spool holds it (bus/spool/frames.py), with their places in `mark`."""
    if len(mark.places) != len(payloads):
        raise ValueError("a SpoolMark gives one place per event")
    keys, args = _route_part(route, len(payloads), group_size)
    keys += [idempotency_key("", ""), spool_mark_key(mark.spool), templates.for_route(route).key]
    return keys, args + ["", "", 0, mark.after, mark.window, order, *payloads, *mark.places]


def accept_frames(pipe: SharedPipe, calls: Sequence[tuple[list[bytes], str, int, str, SpoolMark]]) -> int:
    """accept_batches() for a spool's frames (each call: payloads, route, group size, order, mark), in one
    round trip. SpoolError when Redis refuses a payload as no frame of its route (BUSFRAME): nothing of
    that call was written."""
    try:
        replies = _accept_many(pipe, [frames_call(payloads, route, group_size, mark, order)
                                      for payloads, route, group_size, order, mark in calls], ACCEPT_FRAMES_SCRIPT)
    except redis.ResponseError as exc:
        if not str(exc).startswith("BUSFRAME"):
            raise
        raise SpoolError(f"Redis refused a spooled event: {str(exc).removeprefix('BUSFRAME ')}; it stays "
                         "in the spool: report it with the spool directory") from None
    return sum(int(reply) for reply in replies)


def accepted_ids(events: list[NewEvent], reply: Any, idempotency: Idempotency | None = None) -> list[str]:
    """The ids a request's answer gives, from ACCEPT_SCRIPT's reply: its own, or the first request's
    for a repeated Idempotency-Key. IdempotencyConflict for a key reused with other records."""
    if not isinstance(reply, list):
        return [ev.id for ev in events]
    if _text(reply[0]) == "repeat":
        return _text(reply[1]).partition(" ")[2].split(",")
    raise IdempotencyConflict(
        f"Idempotency-Key {idempotency.key if idempotency else ''!r} was already used for tag {events[0].tag!r} "
        "with other records; nothing was accepted. Use a new key for a new request")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def accept(client: redis.Redis | SharedPipe, events: list[NewEvent], group_size: int = GROUP_SIZE,
           idempotency: Idempotency | None = None, order: str = "") -> list[str]:
    """Journal the events of one route and put them on its pending list (queueing a task
    message for them when none is coming), atomically and in one round trip: all or none.
    A task message carries `group_size` events at most (the route's). Returns the ids the
    request's answer gives (accepted_ids). An ordered route's (`order`) events join their keys'
    lanes, and only a lane's head goes onto the pending list (lua/lane.lua)."""
    try:
        if isinstance(client, SharedPipe):  # the ways in: confirmed by replicas when BUS_ACK_REPLICAS asks
            pipe = client
            reply = templates.stored(lambda: _run_accept(pipe, events, group_size, idempotency, order), pipe.execute)
        else:
            keys, args = accept_call(events, group_size, idempotency, order=order)
            reply = templates.stored(lambda: script(client, ACCEPT_SCRIPT)(keys=keys, args=args), client.execute_command)
    except REDIS_DOWN as exc:
        raise unavailable(exc) from exc
    return accepted_ids(events, reply, idempotency)


def _run_accept(pipe: SharedPipe, events: list[NewEvent], group_size: int, idempotency: Idempotency | None,
                order: str) -> Any:
    if idempotency is None:  # every emit(): the call's constant part was packed once (accept_packed)
        try:
            return pipe.execute_packed(accept_packed(events, group_size, order), confirm=True)
        except NoScriptError:
            pass  # Redis restarted since the script was loaded: run_script loads it again
    keys, args = accept_call(events, group_size, idempotency, order=order)
    return pipe.run_script(ACCEPT_SCRIPT, keys, args, confirm=True)


def accept_packed(events: list[NewEvent], group_size: int = GROUP_SIZE, order: str = "") -> bytes:
    """The EVALSHA of ACCEPT_SCRIPT for `events` without an Idempotency-Key or a spool's mark, in RESP:
    the same bytes as pack(evalsha(ACCEPT_SCRIPT, *accept_call(events, group_size, order=order))), but
    the route's keys and arguments (9 keys, 11 arguments) are packed once per route instead of on every
    call: packing them was a fifth of emit()'s Python (when the message template still travelled too)."""
    route = events[0].route
    if any(ev.route != route for ev in events):
        raise ValueError("accept() takes the events of one route at a time")
    command, keys, placeholders, constant = _accept_parts(route, group_size, order)
    n = len(events)
    event_keys = [event_key(ev.id) for ev in events]
    event_args: list[Any] = []
    for ev in events:
        event_args += [ev.id, ev.tag, ev.body, ev.headers, repr(ev.received)]
    # 3 (EVALSHA, sha, numkeys) + 6 + n + 3 keys + 12 + 5n arguments
    return b"".join((b"*%d\r\n" % (24 + 6 * n), command, _count(9 + n), keys, fragment(event_keys), placeholders,
                     _count(n), constant, fragment(event_args)))


@lru_cache(maxsize=256)
def _count(n: int) -> bytes:
    return fragment([n])


@lru_cache(maxsize=1024)
def _accept_parts(route: str, group_size: int, order: str) -> tuple[bytes, bytes, bytes, bytes]:
    """accept_call's constant parts for a route, as RESP fragments: EVALSHA and the script's SHA, the
    route's 6 keys, the placeholders of the Idempotency-Key and the spool's mark and the template's key,
    and ARGV[2..12]."""
    keys, args = accept_call([NewEvent("-", "-", route, b"", 0.0)], group_size, None, order=order)
    return (fragment(["EVALSHA", script_sha(ACCEPT_SCRIPT)]), fragment(keys[:6]), fragment(keys[-3:]),
            fragment(args[1:12]))


@lru_cache(maxsize=1024)
def lane_group(route: str, group_size: int) -> list[Any]:
    """What record_attempt needs for an ordered route to put the next event of a lane in a message
    of its own when none of the route is coming: the message template's key, group size, events shown
    and the filling flag's lifetime (the ARGV tail of lua/record_attempt.lua)."""
    return [templates.for_route(route).key, group_size, SHOWN, FILLING_MS]


def _refill_call(route: str, mode: str, group_size: int) -> tuple[list[str], list[Any]]:
    return ([pending_key(route), filling_key(route), queue_name(route), templates.for_route(route).key],
            [group_size, SHOWN, FILLING_MS, mode])


def refill_if_idle(client: redis.Redis, route: str, group_size: int = GROUP_SIZE) -> bool:
    """The mover's check: pending events and no message coming for them (it was lost, or the
    flag expired) -> queue one; True when it did."""
    keys, args = _refill_call(route, "if-idle", group_size)
    return bool(templates.stored(lambda: script(client, _REFILL)(keys=keys, args=args), client.execute_command))


def load_many(pipe: SharedPipe, event_ids: list[str], route: str, group_size: int = GROUP_SIZE,
              now: float = 0.0) -> tuple[list[Event | None], tuple[dict[str, float], bool]]:
    """A task starts: the events (None for those gone) and the route's breakers open at `now`
    (endpoint digest -> open_until, and whether that is all of them: breakers.open_from_reply).
    In the same round trip the route's next pending group goes into a message of its own (see
    _REFILL), so events that arrived meanwhile are on their way."""
    commands: list[tuple[Any, ...]] = []
    if route:
        keys, args = _refill_call(route, "on-start", group_size)
        commands.append(evalsha(_REFILL, keys, args))
    commands += [("HGETALL", event_key(event_id)) for event_id in event_ids]
    commands.append(breakers.open_read(route, now))
    replies = pipe.execute_many(commands)
    if route:
        refilled, *replies = replies
        if isinstance(refilled, templates.MissingTemplate):
            pipe.execute(*templates.store_command(refilled))
        if isinstance(refilled, (NoScriptError, templates.MissingTemplate)):
            # Redis restarted since the script was last loaded, or lost the template (templates.py)
            templates.stored(lambda: pipe.run_script(_REFILL, keys, args), pipe.execute)
        elif isinstance(refilled, Exception):
            raise refilled
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    *raws, open_now = replies
    return ([Event.from_journal(i, dict(zip(raw[::2], raw[1::2]))) if raw else None for i, raw in zip(event_ids, raws)],
            breakers.open_from_reply(open_now))


def accept_batches(pipe: SharedPipe, batches: Sequence[tuple[list[NewEvent], int] | tuple[list[NewEvent], int, str]],
                   marks: list[SpoolMark] | None = None) -> int:
    """Accept several batches (each the events of one route, the route's group size and order) in one round
    trip: a producer's spool sending what waited on disk, each batch with its SpoolMark. Events
    already journaled, or at or before their spool's mark, are skipped (see ACCEPT_SCRIPT), so sending
    a batch again is harmless, even once its events left Redis for the archive. With BUS_ACK_REPLICAS a
    WAIT follows in the same write. Returns how many events were new; Unavailable (Unconfirmed: too
    few replicas) when Redis did not answer for all of them, and then any of the batches may have
    been taken (a refused one, ResponseError BUSGAP, is sent again whole like any other failure)."""
    each_mark: list[SpoolMark | None] = list(marks) if marks is not None else [None] * len(batches)
    # A batch may add its route's order (routes.Route.order) as a third item: unordered without it.
    calls = [accept_call(batch[0], batch[1], None, mark, batch[2] if len(batch) > 2 else "")
             for batch, mark in zip(batches, each_mark)]
    return sum(int(reply) for reply in _accept_many(pipe, calls))


def accept_copies(pipe: SharedPipe, copies: list[tuple[list[NewEvent], int, Idempotency | None, str]]) -> list[Any]:
    """A fan-out route's events: each destination's copies (its events, group size, Idempotency-Key and order) in
    one round trip, one ACCEPT_SCRIPT each; their replies in order (accepted_ids reads each). Unavailable
    when Redis did not answer for all of them: then some destinations may have taken the copies (a retry with
    the same Idempotency-Key makes no second copy where one was taken; without a key, a retry is new events)."""
    return _accept_many(pipe, [accept_call(events, group_size, idempotency, order=order)
                               for events, group_size, idempotency, order in copies])


def _accept_many(pipe: SharedPipe, calls: list[tuple[list[str], list[Any]]], script: str = ACCEPT_SCRIPT
                 ) -> list[Any]:
    """ACCEPT_SCRIPT (or `script`) for each call in one write (and WAIT for replicas when BUS_ACK_REPLICAS asks); the
    replies in order. Unavailable when Redis did not answer or confirm all of them."""
    wait = [pipe.ack.command()] if pipe.ack.replicas else []
    try:
        replies = _execute_many(pipe, [evalsha(script, keys, args) for keys, args in calls] + wait)
        confirmed: Any = replies.pop() if wait else None  # WAIT's count of replicas
        # A Redis that restarted since the script was loaded (NOSCRIPT), or that lost a template
        # (templates.py), did not run those calls: they run again, in order, with the script itself and
        # after the templates are stored; so do the later parts of a spool's send that were refused for
        # the refused part before them (BUSGAP: none of them wrote anything). Twice at most: a call run
        # again for NOSCRIPT may then find its template gone.
        for _ in range(2):
            refused = [i for i, reply in enumerate(replies)
                       if isinstance(reply, (NoScriptError, templates.MissingTemplate))]
            if not refused:
                break
            redo = [i for i, reply in enumerate(replies) if i in refused or (i > refused[0] and _gap(reply))]
            stores = list(dict.fromkeys(templates.store_command(replies[i]) for i in redo
                                        if isinstance(replies[i], templates.MissingTemplate)))
            again = _execute_many(pipe, stores + [eval_(script, *calls[i]) for i in redo] + wait)
            confirmed = again.pop() if wait else None  # this WAIT covers the first write too
            for reply in again[: len(stores)]:
                if isinstance(reply, Exception):
                    raise reply
            for i, reply in zip(redo, again[len(stores):]):
                replies[i] = reply
        for reply in replies + ([confirmed] if wait else []):
            if isinstance(reply, Exception):
                raise reply
        if wait and confirmed < pipe.ack.replicas:
            raise NotConfirmed(confirmed, pipe.ack)
    except REDIS_DOWN as exc:
        raise unavailable(exc) from exc
    return replies


def _gap(reply: Any) -> bool:
    return isinstance(reply, redis.ResponseError) and str(reply).startswith("BUSGAP")


def _execute_many(pipe: SharedPipe, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Replies in order, Redis's refusals in their place (SharedPipe raises the one command's own)."""
    if len(commands) != 1:
        return pipe.execute_many(commands)
    try:
        return [pipe.execute(*commands[0])]
    except redis.ResponseError as exc:
        return [exc]
