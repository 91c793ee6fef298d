"""Keys that earlier versions of the bus wrote and nothing reads any more, removed after an upgrade.

Until the journal kept two index entries per event instead of four (commit 0975d0c), every event id
was also in `bus:all` and `bus:route:<route>:all`, by received time. Nothing reads or trims them
since, so a Redis upgraded in place kept both for good: about 145 bytes per event ever accepted
that retention had not yet swept. A worker removes them when it connects (worker/recovery.py).
"""
from __future__ import annotations

import redis

from .counters import counters
from .keys import RETIRED_ALL, retired_route_all_key


def forget_retired(client: redis.Redis) -> int:
    """UNLINK (freed off Redis's main thread, so a large set does not stall it) the retired index
    sets of every route with counters; every route that ever accepted an event has them. Returns
    how many keys existed. Two round trips; nothing to do once they are gone."""
    routes = sorted({route for _, route, _, _ in counters(client) if route})
    return int(client.unlink(RETIRED_ALL, *(retired_route_all_key(r) for r in routes)))
