"""Replay: re-send journaled events chosen by a filter, to their route or as copies to another URL."""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import urlsplit

import redis

from . import journal
from .errors import BadFilter
from .filters import EventFilter
from .messages import GROUP_SIZE, delivery_message, groups
from .routes import Router

CHUNK = 500
MAX_IDS = 1000
_EVENT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class Plan:
    """What a replay will send: events per route, and those whose route is gone."""

    events: list[dict[str, Any]] = field(default_factory=list)
    unroutable: list[dict[str, Any]] = field(default_factory=list)
    # Events a task message of each route carries at most (a batch_max route sends more per request).
    group_sizes: dict[str, int] = field(default_factory=dict)


def check_target(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadFilter(f"--to {url!r} is not an http:// or https:// URL with a host")
    return url


def check_ids(raw: object) -> list[str]:
    """The `ids` of a replay request: a list of 1 to MAX_IDS event ids, duplicates dropped."""
    if not isinstance(raw, list) or not raw or len(raw) > MAX_IDS:
        raise BadFilter(f"ids must be a list of 1 to {MAX_IDS} event ids")
    bad = next((i for i in raw if not isinstance(i, str) or not _EVENT_ID.fullmatch(i)), None)
    if bad is not None:
        raise BadFilter(f"ids: {bad!r} is not an event id (a UUID such as 0190b7c4-8f3e-7a21-9c44-5d2e8f6a7b10)")
    return list(dict.fromkeys(raw))


def plan(client: redis.Redis, router: Router, f: EventFilter, retention: int, limit: int | None = None,
         ids: Sequence[str] | None = None) -> Plan:
    """The events `f` chooses; with `ids`, only those events, each still checked against `f`."""
    result = Plan()
    if ids:
        chosen: Iterable[dict[str, Any]] = (e for e in journal.summaries(client, ids) if f.matches(e))
    else:
        chosen = journal.iter_matching(client, f, retention)
    for event in chosen:
        route = router.by_name.get(event["route"])
        (result.events if route else result.unroutable).append(event)
        if route:
            result.group_sizes[route.name] = route.group_size
        if limit is not None and len(result.events) >= limit:
            break
    return result


def run(client: redis.Redis, events: list[dict[str, Any]], to: str | None = None,
        progress: Callable[[int, int], None] | None = None, group_sizes: dict[str, int] | None = None) -> int:
    """Queue new delivery tasks for the events (same event ids, so X-Request-Id is unchanged); returns how many.
    A task message carries up to its route's group size (Plan.group_sizes), so a batch_max route's
    replay goes out in batches as big as its first sending did; copies (`to`), sent one event per
    request, go GROUP_SIZE to a message."""
    done = 0
    for start in range(0, len(events), CHUNK):
        chunk = events[start : start + CHUNK]
        by_route: dict[str, list[dict[str, Any]]] = {}
        for e in chunk:
            by_route.setdefault(e["route"], []).append(e)
        messages = [
            (delivery_message([(e["id"], e["tag"], e["attempts"] + 1) for e in group], journal.queue_name(route),
                              task_id=str(uuid.uuid4()), to=to), route)
            for route, route_events in by_route.items()
            for group in groups(route_events, GROUP_SIZE if to else (group_sizes or {}).get(route, GROUP_SIZE))
        ]
        if to is None:
            journal.requeue(client, chunk, messages)
        else:
            for message, route in messages:
                journal.enqueue(client, route, [message])
        done += len(chunk)
        if progress:
            progress(done, len(events))
    return done
