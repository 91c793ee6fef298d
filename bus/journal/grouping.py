"""Accepting events and grouping them into task messages: the pending list per route and its Lua."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import NoScriptError

from ..messages import GROUP_SIZE, SHOWN, group_template
from ..errors import IdempotencyConflict
from . import breakers
from .keys import COUNTERS, event_key, filling_key, idempotency_key, index_key, pending_key, queue_name, spool_mark_key
from .pipelined import NotConfirmed, SharedPipe, eval_, evalsha
from .store import OWN_LUA, QUEUED, REDIS_DOWN, Idempotency, NewEvent, decode, script, unavailable


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
# messages.group_template(); the same message as messages.delivery_message() builds; and its ids.
_GROUP_LUA = OWN_LUA + """
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
  return (string.gsub(template, '"@@(%u+)@@"', function(name) return values[name] end)), ids
end

-- Take up to `size` entries off the pending list into one message at the tail of the queue;
-- the message's task id is its first event's id, and its events' records name it.
local function take_group(pending, queue, template, size, shown)
  local entries = redis.call('LPOP', pending, size)
  if not entries then return false end
  local message, ids = group_message(template, entries, shown)
  own(ids, ids[1])
  redis.call('LPUSH', queue, message)
  return true
end
"""

# One script per request: the journal record, its two index entries, the pending entries and
# the accepted counter (and a task message when none of the route is coming), atomically and in
# one round trip. KEYS: the queued index, the route's queued index, the route's queue, the
# counters hash, the pending list, the filling flag, then each event's hash key, then the
# idempotency key, then the spool's mark hash (all named by keys.py). ARGV: the number of events,
# the route, the counter's field, the message template, the group size, how many events argsrepr
# shows, the flag's lifetime in ms, the idempotency record to keep ('' for none: then nothing of
# it is read), its digest and its lifetime in seconds, the spool mark's `after` and its lifetime
# in seconds (0: no spool, nothing of it is read), then id, tag, body, headers, received per event,
# then each event's place in its spool (spool calls only), then the queued status. Returns the
# number of events written, or {'repeat', record} for a key seen with the same digest (nothing
# written), or {'conflict'} for a key seen with another.
#
# Accepting is idempotent by id, for a producer's spool that sends a batch again (its reply was
# lost, or it was killed between Redis taking the batch and the spool forgetting it): an event
# whose record exists is skipped (not journaled, indexed, pended or counted again), and so is one
# at or before the spool's mark for the route, the place up to which Redis took that spool's
# events of the route. The mark is what still knows an event delivered and archived out of Redis
# since (bus/archive/): ~210 B per spool and ~30 B per more route, where remembering each id
# would cost ~145 B per event for the window (docs/performance.md). A spool sends in order, so the mark only grows; a call
# whose `after` (the last place of the part before it in the same send) is past the mark finds
# that part not taken, and refuses (BUSGAP), so the whole send is tried again and nothing is
# skipped that Redis never took. Ids are fresh UUIDv7s on every other path, so there the check
# costs one EXISTS per event (docs/design.md has the measurement).
ACCEPT_SCRIPT = _GROUP_LUA + """
local n, route = tonumber(ARGV[1]), ARGV[2]
local first = 13
local idempotency = KEYS[7 + n]
if ARGV[8] ~= '' then
  local seen = redis.call('GET', idempotency)
  if seen then
    if string.sub(seen, 1, #ARGV[9] + 1) == ARGV[9] .. ' ' then return {'repeat', seen} end
    return {'conflict'}
  end
end
local spooled, mark = ARGV[12] ~= '0', false
local places = first + 5 * n - 1
if spooled then
  mark = redis.call('HGET', KEYS[8 + n], route)
  if ARGV[11] ~= '' and (not mark or mark < ARGV[11]) then
    return redis.error_reply('BUSGAP an earlier part of this spool send was not taken; the spool sends it all again')
  end
end
local entries, written = {}, 0
for e = 1, n do
  local i = first + (e - 1) * 5
  local id, received = ARGV[i], ARGV[i + 4]
  if not (mark and ARGV[places + e] <= mark) and redis.call('EXISTS', KEYS[6 + e]) == 0 then
    redis.call('HSET', KEYS[6 + e], 'tag', ARGV[i + 1], 'route', route, 'body', ARGV[i + 2],
               'headers', ARGV[i + 3], 'received', received, 'status', ARGV[#ARGV])
    redis.call('ZADD', KEYS[1], received, id)
    redis.call('ZADD', KEYS[2], received, id)
    entries[#entries + 1] = id .. ' ' .. ARGV[i + 1]
    written = written + 1
  end
  if #entries == 1000 or (e == n and #entries > 0) then  -- unpack() has a stack limit; a batch may hold 10,000
    redis.call('RPUSH', KEYS[5], unpack(entries))
    entries = {}
  end
end
if written > 0 then
  if redis.call('SET', KEYS[6], '1', 'NX', 'PX', ARGV[7]) then
    take_group(KEYS[5], KEYS[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]))
  end
  redis.call('HINCRBY', KEYS[4], ARGV[3], written)
end
if ARGV[8] ~= '' then redis.call('SET', idempotency, ARGV[8], 'EX', ARGV[10]) end
if spooled then
  if not mark or ARGV[places + n] > mark then redis.call('HSET', KEYS[8 + n], route, ARGV[places + n]) end
  redis.call('EXPIRE', KEYS[8 + n], ARGV[12])
end
return written
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
                mark: SpoolMark | None = None) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of ACCEPT_SCRIPT for the events of one route (see accept())."""
    route = events[0].route
    keys = [index_key(QUEUED), index_key(QUEUED, route), queue_name(route), COUNTERS, pending_key(route),
            filling_key(route)]
    args: list[Any] = [len(events), route, f"accepted:{route}", group_template(queue_name(route)), group_size, SHOWN,
                       FILLING_MS]
    if idempotency is None:
        args += ["", "", 0]
    else:
        args += [f"{idempotency.digest} {','.join(ev.id for ev in events)}", idempotency.digest, idempotency.window]
    args += [mark.after, mark.window] if mark is not None else ["", 0]
    for ev in events:
        if ev.route != route:
            raise ValueError("accept() takes the events of one route at a time")
        keys.append(event_key(ev.id))
        args += [ev.id, ev.tag, ev.body, ev.headers, repr(ev.received)]
    keys.append(idempotency_key(events[0].tag, idempotency.key) if idempotency else idempotency_key("", ""))
    keys.append(spool_mark_key(mark.spool if mark is not None else ""))
    if mark is not None:
        if len(mark.places) != len(events):
            raise ValueError("a SpoolMark gives one place per event")
        args += mark.places
    args.append(QUEUED)
    return keys, args


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
           idempotency: Idempotency | None = None) -> list[str]:
    """Journal the events of one route and put them on its pending list (queueing a task
    message for them when none is coming), atomically and in one round trip: all or none.
    A task message carries `group_size` events at most (the route's). Returns the ids the
    request's answer gives (accepted_ids)."""
    keys, args = accept_call(events, group_size, idempotency)
    try:
        if isinstance(client, SharedPipe):  # the ways in: confirmed by replicas when BUS_ACK_REPLICAS asks
            reply = client.run_script(ACCEPT_SCRIPT, keys, args, confirm=True)
        else:
            reply = script(client, ACCEPT_SCRIPT)(keys=keys, args=args)
    except REDIS_DOWN as exc:
        raise unavailable(exc) from exc
    return accepted_ids(events, reply, idempotency)


def _refill_call(route: str, mode: str, group_size: int) -> tuple[list[str], list[Any]]:
    return ([pending_key(route), filling_key(route), queue_name(route)],
            [group_template(queue_name(route)), group_size, SHOWN, FILLING_MS, mode])


def refill_if_idle(client: redis.Redis, route: str, group_size: int = GROUP_SIZE) -> bool:
    """The mover's check: pending events and no message coming for them (it was lost, or the
    flag expired) -> queue one; True when it did."""
    keys, args = _refill_call(route, "if-idle", group_size)
    return bool(script(client, _REFILL)(keys=keys, args=args))


def load_many(pipe: SharedPipe, event_ids: list[str], route: str, group_size: int = GROUP_SIZE,
              now: float = 0.0) -> tuple[list[dict[str, Any] | None], tuple[dict[str, float], bool]]:
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
        if isinstance(refilled, NoScriptError):
            pipe.run_script(_REFILL, keys, args)  # Redis restarted since the script was last loaded
        elif isinstance(refilled, Exception):
            raise refilled
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    *raws, open_now = replies
    return ([decode(i, dict(zip(raw[::2], raw[1::2]))) if raw else None for i, raw in zip(event_ids, raws)],
            breakers.open_from_reply(open_now))


def accept_batches(pipe: SharedPipe, batches: list[tuple[list[NewEvent], int]],
                   marks: list[SpoolMark] | None = None) -> int:
    """Accept several batches (each the events of one route and the route's group size) in one round
    trip: a producer's spool sending what waited on disk, each batch with its SpoolMark. Events
    already journaled, or at or before their spool's mark, are skipped (see ACCEPT_SCRIPT), so sending
    a batch again is harmless, even once its events left Redis for the archive. With BUS_ACK_REPLICAS a
    WAIT follows in the same write. Returns how many events were new; Unavailable (Unconfirmed: too
    few replicas) when Redis did not answer for all of them, and then any of the batches may have
    been taken (a refused one, ResponseError BUSGAP, is sent again whole like any other failure)."""
    marks = marks if marks is not None else [None] * len(batches)
    calls = [accept_call(events, group_size, None, mark) for (events, group_size), mark in zip(batches, marks)]
    wait = [pipe.ack.command()] if pipe.ack.replicas else []
    try:
        replies = _execute_many(pipe, [evalsha(ACCEPT_SCRIPT, keys, args) for keys, args in calls] + wait)
        confirmed = replies.pop() if wait else None
        unknown = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if unknown:  # Redis restarted since the script was loaded
            again = _execute_many(pipe, [eval_(ACCEPT_SCRIPT, *calls[i]) for i in unknown] + wait)
            confirmed = again.pop() if wait else None  # this WAIT covers the first write too
            for i, reply in zip(unknown, again):
                replies[i] = reply
        for reply in replies + ([confirmed] if wait else []):
            if isinstance(reply, Exception):
                raise reply
        if wait and confirmed < pipe.ack.replicas:
            raise NotConfirmed(confirmed, pipe.ack)
    except REDIS_DOWN as exc:
        raise unavailable(exc) from exc
    return sum(int(reply) for reply in replies)


def _execute_many(pipe: SharedPipe, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Replies in order, Redis's refusals in their place (SharedPipe raises the one command's own)."""
    if len(commands) != 1:
        return pipe.execute_many(commands)
    try:
        return [pipe.execute(*commands[0])]
    except redis.ResponseError as exc:
        return [exc]
