"""Replay: re-send journaled events chosen by a filter, to their route or as copies to another URL."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import redis

from . import journal
from .errors import BadFilter
from .filters import EventFilter
from .messages import delivery_message
from .routes import Router

CHUNK = 500


@dataclass
class Plan:
    """What a replay will send: events per route, and those whose route is gone."""

    events: list[dict[str, Any]] = field(default_factory=list)
    unroutable: list[dict[str, Any]] = field(default_factory=list)


def check_target(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadFilter(f"--to {url!r} is not an http:// or https:// URL with a host")
    return url


def plan(client: redis.Redis, router: Router, f: EventFilter, retention: int, limit: int | None = None) -> Plan:
    result = Plan()
    for event in journal.iter_matching(client, f, retention):
        (result.events if event["route"] in router.by_name else result.unroutable).append(event)
        if limit is not None and len(result.events) >= limit:
            break
    return result


def run(client: redis.Redis, events: list[dict[str, Any]], to: str | None = None,
        progress: Callable[[int, int], None] | None = None) -> int:
    """Queue a new delivery task per event (same event id, so X-Request-Id is unchanged); returns how many."""
    done = 0
    for start in range(0, len(events), CHUNK):
        chunk = events[start : start + CHUNK]
        messages = [delivery_message(e["id"], e["tag"], journal.queue_name(e["route"]), task_id=str(uuid.uuid4()), to=to,
                                     attempt=e["attempts"] + 1) for e in chunk]
        if to is None:
            journal.requeue(client, chunk, messages)
        else:
            by_route: dict[str, list[bytes]] = {}
            for e, m in zip(chunk, messages):
                by_route.setdefault(e["route"], []).append(m)
            for route, route_messages in by_route.items():
                journal.enqueue(client, route, route_messages)
        done += len(chunk)
        if progress:
            progress(done, len(events))
    return done
