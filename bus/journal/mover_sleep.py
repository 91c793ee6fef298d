"""The retry mover's sleep: until the earliest retry, breaker or refill of its routes is due, woken
early by any script that schedules something sooner (lua/sleep.lua; wake_mover in scripts.py)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from . import scripts
from .keys import filling_key, mover_key, mover_sleeps_key, open_breakers_key, pending_key, retry_key, wake_key
from .store import script

_SLEEP = scripts.load("sleep.lua")
_LET_GO = scripts.load("let_go.lua")
# Shorter than this is not worth a blocking call: the mover passes again at once.
SHORTEST = 0.001


@dataclass(frozen=True)
class Sleep:
    """What the mover planned: when it looks again by itself, and the routes whose wake lists it waits on
    (those it moves; none: it sleeps without being woken)."""

    until: float
    routes: tuple[str, ...]


def plan(client: redis.Redis, routes: list[str], mover: str, now: float, latest: float, margin_ms: int,
         refill_after: float) -> Sleep:
    """Read when the earliest thing of `routes` is due (no later than `latest`) and leave that wake-up
    time where the scripts that schedule sooner look (see lua/sleep.lua), in one step."""
    keys = [key for route in routes
            for key in (mover_key(route), retry_key(route), open_breakers_key(route), pending_key(route),
                        filling_key(route), mover_sleeps_key(route), wake_key(route))]
    until, held = script(client, _SLEEP)(keys=keys, args=[mover, repr(now), repr(latest), margin_ms,
                                                           repr(refill_after)])
    return Sleep(float(until), tuple(routes[int(n) - 1] for n in held))


def sleep(client: redis.Redis, planned: Sleep) -> bool:
    """Wait until `planned.until` or a wake-up of one of its routes; True when woken. `client`'s socket
    timeout must be longer than the wait, so a Redis that vanished without closing the connection
    raises (REDIS_DOWN) instead of leaving the mover blocked on it; one that restarts closes it at once."""
    timeout = planned.until - time.time()
    if timeout < SHORTEST or not planned.routes:
        return False
    try:
        return client.blpop([wake_key(route) for route in planned.routes], timeout) is not None
    except redis.ResponseError as exc:
        # A primary demoted to a replica (failover) unblocks its blocked clients: look again, on the new one.
        if str(exc).startswith("UNBLOCKED"):
            return True
        raise


def let_go(client: redis.Redis, routes: list[str], mover: str) -> int:
    """Give up this mover's leases on `routes` (a worker stopping); how many it held."""
    return int(script(client, _LET_GO)(keys=[mover_key(route) for route in routes], args=[mover]))
