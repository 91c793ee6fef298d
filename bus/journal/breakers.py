"""Circuit breakers per endpoint: failures in a row, opening, events held back behind one, probes, release.

A breaker belongs to one endpoint of one route (endpoints.EndpointKey: the rendered origin and
path), so a failing service holds back only its own events. Its pieces (keys.py):
- the breaker hash: failures, failing_since, step, open_until, since, endpoint. It expires
  BREAKER_TTL (or twice the route's retry_max_interval) after its last failure, so templated
  URLs of arbitrary tags leave no key behind for long; an answer from the endpoint deletes it.
- the route's open index: every endpoint whose breaker has opened, by when the retry mover
  (scheduler.py) next looks at it. The mover reads only its due members, so a breaker that is
  open costs one range read per tick, however many events wait behind it.
- the endpoint's parked set: the events held back while its breaker is open. They are on no
  retry schedule: the mover takes one out as the probe when the breaker half-opens, and when the
  endpoint answers they all go to the route's retry schedule at once (due now), in the script
  that records that answer (transitions.RECORD_ATTEMPT_SCRIPT) or, for a breaker that expired
  with events still held, in the mover's look. Every move is one script, so an event is never
  parked behind a breaker that has just closed.
- the route's failing index: what `bus stats` and /metrics list, trimmed as breakers expire.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from ..broker.messages import Outgoing
from ..endpoints import EndpointKey
from . import scripts, templates
from .keys import breaker_key, event_key, failing_key, open_breakers_key, parked_key, queue_name, retry_key
from .store import script
from .values import Event, as_event

# A breaker outlives its last failure by this long at least: long enough that "failing since"
# survives the gaps between retries of a closed breaker, short enough that the keys of endpoints
# nobody sends to any more go away. An open breaker is refreshed by every probe.
BREAKER_TTL = 3600
# How many open breakers a task reads with its events; past it, it asks for its own endpoints.
OPEN_READ = 1000


def ttl(retry_max_interval: float) -> int:
    """The lifetime of a breaker after its last failure, for a route retrying at most this far apart."""
    return int(max(BREAKER_TTL, 2 * retry_max_interval + 60))


# lua/breaker_fail.lua names its KEYS and ARGV: returns open_until when the breaker is open after it, else nil.
_FAIL = scripts.load("breaker_fail.lua")


def failed(client: redis.Redis, key: EndpointKey, now: float, threshold: int, cap: float, jitter: float,
           probe: bool = False, life: int = BREAKER_TTL) -> float | None:
    """Count a retryable failure of the endpoint; the time its breaker stays open until, if it is open."""
    result = script(client, _FAIL)(
        keys=[breaker_key(key.route, key.digest), open_breakers_key(key.route), failing_key(key.route)],
        args=[repr(now), threshold, cap, jitter, int(probe), key.digest, key.endpoint, life, key.route])
    return float(result) if result else None


def state(client: redis.Redis, key: EndpointKey) -> dict[str, float]:
    """The endpoint's breaker: empty while it answers, else failures, failing_since, open_until, since, step."""
    raw = client.hgetall(breaker_key(key.route, key.digest))
    return {k.decode(): float(v) for k, v in raw.items() if k != b"endpoint"}


def open_read(route: str, now: float) -> tuple[Any, ...]:
    """The command a task sends with its events' reads: the route's breakers still open at `now`."""
    return ("ZRANGEBYSCORE", open_breakers_key(route), repr(now), "+inf", "WITHSCORES", "LIMIT", 0, OPEN_READ)


def open_from_reply(reply: list[bytes]) -> tuple[dict[str, float], bool]:
    """open_read's answer as digest -> open_until, and whether it is every open breaker of the route."""
    found = {reply[i].decode(): float(reply[i + 1]) for i in range(0, len(reply), 2)}
    return found, len(found) < OPEN_READ


def open_until(client: redis.Redis, route: str, digests: list[str]) -> dict[str, float]:
    """Open_until of these endpoints' breakers (absent: not open), for a task whose open_read was cut short."""
    if not digests:
        return {}
    scores = client.zmscore(open_breakers_key(route), digests)
    return {d: s for d, s in zip(digests, scores) if s is not None}


_HOLD_BACK = scripts.load("hold_back.lua")


def hold_back(client: redis.Redis, event: Event | Mapping[str, Any], key: EndpointKey, now: float,
              reason: str = "waiting: endpoint failing (breaker open)", task: str = "") -> bool:
    """Park an event behind its endpoint's open breaker, without an attempt: it waits in the
    endpoint's parked set for the breaker to close. A breaker that closed since the caller looked
    puts the event on the retry schedule, due now, instead. True when it was held back."""
    return hold_back_move(client, event, key, now, reason, task) == "held"


def hold_back_move(client: redis.Redis, event: Event | Mapping[str, Any], key: EndpointKey, now: float,
                   reason: str = "waiting: endpoint failing (breaker open)", task: str = "") -> str:
    """hold_back, saying what became of the event (lua/hold_back.lua): 'held', 'due' (on the retry
    schedule: the breaker closed), or why the move was refused: 'gone', 'superseded' (`task`, the
    caller's, no longer has it), or the status it is in (delivered, dead)."""
    event = as_event(event)
    return hold_back_many(client, [event.id], event.route, key, now, reason, task)[0]


def hold_back_many(client: redis.Redis, ids: list[str], route: str, key: EndpointKey, now: float,
                   reason: str = "waiting: endpoint failing (breaker open)", task: str = "") -> list[str]:
    """hold_back_move for several events of the route behind one breaker, in one script: per id what
    became of it."""
    keys = [retry_key(route), breaker_key(key.route, key.digest), parked_key(key.route, key.digest),
            open_breakers_key(key.route), *(event_key(i) for i in ids)]
    args = [route, reason, repr(now), key.digest, task, *ids]
    return [m.decode() for m in script(client, _HOLD_BACK)(keys=keys, args=args)]


def due(client: redis.Redis, route: str, now: float, limit: int) -> list[str]:
    """Digests of the route's open breakers whose wait is over (half-open), or whose probe is overdue."""
    return [d.decode() for d in client.zrangebyscore(open_breakers_key(route), "-inf", repr(now), start=0, num=limit)]


@dataclass(frozen=True)
class Look:
    """What the mover found at a due breaker: 'released' (the breaker is gone: `count` events went to
    the retry schedule), 'open' (still open: looked at later), 'empty' (nothing waits behind it), or
    'probe' (half-open: `event_id` is the longest-held event, with its tag and attempts so far)."""

    what: str
    count: int = 0
    event_id: str = ""
    tag: str = ""
    attempts: int = 0


# lua/breaker_look.lua: held-back ids whose record is gone (purged, expired) are dropped on the way to the probe.
_LOOK = scripts.load("breaker_look.lua")


def look(client: redis.Redis, route: str, digest: str, now: float) -> Look:
    """The mover at a due breaker (see Look); releases what a vanished breaker held back."""
    keys = [breaker_key(route, digest), parked_key(route, digest), open_breakers_key(route), retry_key(route)]
    what, count, *probe = script(client, _LOOK)(keys=keys, args=[digest, repr(now)])
    if not probe:
        return Look(what.decode(), int(count))
    event_id, tag, attempts = probe
    return Look(what.decode(), int(count), event_id.decode(), tag.decode(), int(attempts))


_PROBE = scripts.load("send_probe.lua", "fill.lua")


def send_probe(client: redis.Redis, route: str, digest: str, message: Outgoing, until: float, life: int) -> bool:
    """Take the probe out of the parked set to the head of the route's queue, and keep every other
    event of the endpoint waiting until it reports or `until` passes (then another probe goes)."""
    keys = [parked_key(route, digest), breaker_key(route, digest), open_breakers_key(route), queue_name(route),
            templates.for_route(route, message.redelivered).key]
    args = [message.event_ids[0], message.task_id, *message.filling, repr(until), life, digest]
    return bool(templates.stored(lambda: script(client, _PROBE)(keys=keys, args=args), client.execute_command))


def trim(client: redis.Redis, route: str, now: float, life: int) -> None:
    """Forget failing endpoints whose breaker expired (the failing index only lists; it holds no event)."""
    client.zremrangebyscore(failing_key(route), "-inf", repr(now - life))


@dataclass(frozen=True)
class EndpointState:
    """One failing endpoint of a route as Redis holds it."""

    endpoint: str
    breaker: dict[str, float]
    held: int  # events held back behind its open breaker
    oldest_held: float | None  # when the longest-held of them was parked


LISTED = 100  # endpoints read per route for stats and metrics, most recently failing first


def failing(client: redis.Redis, routes: list[str]) -> dict[str, tuple[int, list[EndpointState]]]:
    """Per route: how many endpoints are failing, and up to LISTED of them with their breakers.
    Two round trips: the indexes, then each listed breaker and its parked set."""
    pipe = client.pipeline(transaction=False)
    for route in routes:
        pipe.zcard(failing_key(route))
        pipe.zrevrange(failing_key(route), 0, LISTED - 1)
    first = pipe.execute()
    listed = {route: [d.decode() for d in first[2 * i + 1]] for i, route in enumerate(routes)}
    pipe = client.pipeline(transaction=False)
    for route in routes:
        for digest in listed[route]:
            pipe.hgetall(breaker_key(route, digest))
            pipe.zcard(parked_key(route, digest))
            pipe.zrange(parked_key(route, digest), 0, 0, withscores=True)
    replies = iter(pipe.execute())
    out: dict[str, tuple[int, list[EndpointState]]] = {}
    for i, route in enumerate(routes):
        found = []
        for _ in listed[route]:
            raw, held, oldest = next(replies), next(replies), next(replies)
            if not raw:
                continue  # expired since the index was trimmed
            endpoint = raw.pop(b"endpoint", b"").decode()
            found.append(EndpointState(endpoint, {k.decode(): float(v) for k, v in raw.items()}, held,
                                       oldest[0][1] if oldest else None))
        stale = len(listed[route]) - len(found)
        out[route] = (max(len(found), first[2 * i] - stale), found)
    return out
