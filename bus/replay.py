"""Replay: re-send journaled events chosen by a filter, to their route or as copies to another URL."""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import redis

from . import fanout, journal
from .archive import Store, tiers
from .broker.messages import GROUP_SIZE, groups, new_message
from .errors import BadFilter
from .filters import EventFilter
from .routes import Router
from .shards import Shards, as_shards

CHUNK = 500
MAX_IDS = 1000
# An event's id, or a destination's copy of it (<id>.<destination>, routes.copy_id).
_EVENT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(\.[A-Za-z0-9_-]+)?")


@dataclass
class Plan:
    """What a replay will send: events per route, and those whose route is gone."""

    events: list[dict[str, Any]] = field(default_factory=list)
    unroutable: list[dict[str, Any]] = field(default_factory=list)


def check_target(url: object) -> str:
    """The URL copies go to: http(s) with a host, and a port if any that is a number."""
    if not isinstance(url, str):
        raise BadFilter(f"to must be a URL string, not {type(url).__name__}")
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        ok = False
    if not ok or any(c in url for c in "\r\n \t"):
        raise BadFilter(f"--to {url[:200]!r} is not an http:// or https:// URL with a host")
    return url


def check_ids(raw: object) -> list[str]:
    """The `ids` of a replay request: a list of 1 to MAX_IDS event ids, duplicates dropped."""
    if not isinstance(raw, list) or not raw or len(raw) > MAX_IDS:
        raise BadFilter(f"ids must be a list of 1 to {MAX_IDS} event ids")
    bad = next((i for i in raw if not isinstance(i, str) or not _EVENT_ID.fullmatch(i)), None)
    if bad is not None:
        raise BadFilter(f"ids: {bad!r} is not an event id (a UUID such as 0190b7c4-8f3e-7a21-9c44-5d2e8f6a7b10)")
    return list(dict.fromkeys(raw))


def plan(client: redis.Redis | Shards, router: Router, f: EventFilter, retention: int, limit: int | None = None,
         ids: Sequence[str] | None = None, archive: Store | None = None) -> Plan:
    """The events `f` chooses, from Redis and the archive; with `ids`, only those events, each still
    checked against `f`. A fan-out event is replayed as its destinations' copies that `f` chooses (by its
    route's name or its own id: each copy of the status asked)."""
    result = Plan()
    f = fanout.widen(router, f)  # a fan-out route's own name: its destinations' copies
    if ids:
        chosen: Iterable[dict[str, Any]] = (e for e in tiers.summaries(client, archive, fanout.copy_ids(router, ids))
                                            if f.matches(e))
    else:
        chosen = tiers.iter_matching(client, archive, f, retention)
    for event in chosen:
        (result.events if event["route"] in router.by_name else result.unroutable).append(event)
        if limit is not None and len(result.events) >= limit:
            break
    return result


def run(client: redis.Redis | Shards, router: Router, events: list[dict[str, Any]], to: str | None = None,
        progress: Callable[[int, int], None] | None = None, archive: Store | None = None) -> int:
    """Queue new delivery tasks for the events (same event ids, so X-Request-Id is unchanged); returns how many.
    A task message carries up to its route's group size, so a batch_max route's replay goes out in
    batches as big as its first sending did; copies (`to`), sent one event per request, go
    GROUP_SIZE to a message. An event a delivery or purge moved since it was listed is left and not counted."""
    done, sent = 0, 0
    for start in range(0, len(events), CHUNK):
        chunk = events[start : start + CHUNK]
        by_route: dict[str, list[dict[str, Any]]] = {}
        for e in chunk:
            by_route.setdefault(e["route"], []).append(e)
        messages = [
            (new_message([(e["id"], e["tag"], e["attempts"] + 1) for e in group], journal.queue_name(route), to=to),
             route)
            for route, route_events in by_route.items()
            for group in groups(route_events, GROUP_SIZE if to else _group_size(router, route))
        ]
        shards = as_shards(client)
        if to is None:
            # Archived events go back into Redis in the same transaction that queues them, on their route's shard.
            restored = {fields["id"]: (fields, tries, copies) for fields, tries, copies in tiers.restorable(archive, chunk)}
            for name, routes in shards.by_shard(by_route).items():
                mine = [e for route in routes for e in by_route[route]]
                sent += journal.requeue(shards.clients[name], mine, [m for m in messages if m[1] in routes],
                                        [restored[e["id"]] for e in mine if e["id"] in restored])
        else:
            for message, route in messages:
                journal.enqueue(shards.of(route), route, [message.data])
            sent += len(chunk)
        done += len(chunk)
        if progress:
            progress(done, len(events))
    return sent


def _group_size(router: Router, route: str) -> int:
    known = router.by_name.get(route)  # plan() left out events whose route is gone; it may go meanwhile
    return known.group_size if known else GROUP_SIZE


def run_paced(client: redis.Redis | Shards, router: Router, events: list[dict[str, Any]], due: Sequence[float],
              to: str | None = None, progress: Callable[[int, int], None] | None = None,
              clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
              archive: Store | None = None) -> int:
    """run() with each event's task queued at its due time (seconds from now, replay_pace.offsets; events
    oldest first). Events due together share a message; workers send them as soon as they take it,
    so the pace holds while they keep up."""
    start, done, sent = clock(), 0, 0
    while done < len(events):
        now = clock() - start
        if due[done] > now:
            sleep(min(due[done] - now, 0.5))
            continue
        upto = done + 1
        while upto < len(events) and upto - done < CHUNK and due[upto] <= now:
            upto += 1
        sent += run(client, router, events[done:upto], to, archive=archive)
        done = upto
        if progress:
            progress(done, len(events))
    return sent
