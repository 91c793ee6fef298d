"""Celery task messages for the deliver task, built by hand so intake can push them in its own Redis transaction (pure)."""
from __future__ import annotations

import os
import socket

import orjson

DELIVER_TASK = "bus.deliver"
_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def delivery_message(event_id: str, tag: str, queue: str, task_id: str | None = None, to: str | None = None,
                     probe: bool = False) -> bytes:
    """A Celery protocol-2 message for kombu's Redis transport, as LPUSHed onto list `queue`.

    The body travels as plain JSON (no base64 'body_encoding'), which kombu
    decodes as is; argsrepr puts the tag next to the id in Flower's task list.
    """
    task_id = task_id or event_id
    kwargs: dict[str, object] = {"to": to} if to else {}
    if probe:
        kwargs["probe"] = True
    body = orjson.dumps([[event_id], kwargs, _EMBED]).decode()
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
                "argsrepr": f"{tag} {event_id}",
                "kwargsrepr": repr(kwargs) if kwargs else "{}",
                "origin": _ORIGIN,
                "ignore_result": True,
            },
            "properties": {
                "correlation_id": task_id,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                # Unique among messages in flight: the event id for a first delivery,
                # a fresh uuid for every retry or replay (their task_id).
                "delivery_tag": task_id,
            },
        }
    )
