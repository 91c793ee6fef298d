"""Celery task messages for the deliver task, built by hand so intake can push them in its own Redis transaction (pure)."""
from __future__ import annotations

import os
import socket

import orjson

DELIVER_TASK = "bus.deliver"
_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


# Events of one route that arrived together travel in one task: Celery's own
# cost per task (receive, pool hand-off, ack, events) is paid once per group.
# Each event keeps its own journal record, attempts and retry schedule.
GROUP_SIZE = 50


def groups(items: list, size: int = GROUP_SIZE) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def delivery_message(events: list[tuple[str, str]], queue: str, task_id: str | None = None, to: str | None = None,
                     probe: bool = False) -> bytes:
    """A Celery protocol-2 message for kombu's Redis transport, as LPUSHed onto list `queue`.

    `events` is (event id, tag) pairs of one route. The body travels as plain
    JSON (no base64 'body_encoding'), which kombu decodes as is; argsrepr lists
    the tags and ids so Flower shows which events a task carries.
    """
    ids = [event_id for event_id, _ in events]
    # Unique among messages in flight: an event is in one first-delivery task,
    # so its id names that task; retries and replays pass a fresh uuid.
    task_id = task_id or ids[0]
    kwargs: dict[str, object] = {"to": to} if to else {}
    if probe:
        kwargs["probe"] = True
    shown = " ".join(f"{tag}:{event_id}" for event_id, tag in events[:5])
    argsrepr = shown if len(events) <= 5 else f"{len(events)} events {shown} ..."
    body = orjson.dumps([[ids], kwargs, _EMBED]).decode()
    return orjson.dumps(
        {
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "py",
                "task": DELIVER_TASK,
                "id": task_id,
                "shadow": None,
                "eta": None,
                "expires": None,
                "group": None,
                "group_index": None,
                "retries": 0,
                "timelimit": [None, None],
                "root_id": task_id,
                "parent_id": None,
                "argsrepr": argsrepr,
                "kwargsrepr": repr(kwargs) if kwargs else "{}",
                "origin": _ORIGIN,
                "ignore_result": True,
            },
            "properties": {
                "correlation_id": task_id,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "delivery_tag": task_id,
            },
        }
    )
