"""Celery task messages for the deliver task, built by hand so intake can push them in its own Redis transaction (pure)."""
from __future__ import annotations

import os
import socket
import uuid

import orjson

DELIVER_TASK = "bus.deliver"
_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def delivery_message(event_id: str, tag: str, queue: str, task_id: str | None = None, to: str | None = None,
                     probe: bool = False, attempt: int = 1) -> bytes:
    """A Celery protocol-2 message for kombu's Redis transport, as LPUSHed onto list `queue`.

    The body travels as plain JSON (no base64 'body_encoding'), which kombu
    decodes as is. argsrepr is what Flower shows as the task's arguments: the
    tag, the event id and which attempt this task makes (or that it sends a copy).
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
                "argsrepr": describe(tag, event_id, attempt, to is not None, probe),
                "kwargsrepr": repr(kwargs) if kwargs else "{}",
                "origin": _ORIGIN,
                "ignore_result": True,
            },
            "properties": {
                "correlation_id": task_id,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )


def describe(tag: str, event_id: str, attempt: int, copy: bool = False, probe: bool = False) -> str:
    """'api.orders 0190... attempt 2': how a delivery task reads in Flower's task list."""
    if copy:
        return f"{tag} {event_id} copy"
    return f"{tag} {event_id} attempt {attempt}" + (" probe" if probe else "")
