"""Celery task messages for the deliver task, built by hand so intake can push them in its own Redis transaction (pure)."""
from __future__ import annotations

import base64
import os
import socket
import uuid

import orjson

DELIVER_TASK = "bus.deliver"
_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def delivery_message(event_id: str, tag: str, queue: str, task_id: str | None = None) -> bytes:
    """A Celery protocol-2 message for kombu's Redis transport, as LPUSHed onto list `queue`.

    The body travels as plain JSON (no base64 'body_encoding'), which kombu
    decodes as is; argsrepr puts the tag next to the id in Flower's task list.
    """
    task_id = task_id or event_id
    body = orjson.dumps([[event_id], {}, _EMBED]).decode()
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
                "kwargsrepr": "{}",
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


def event_id_of(message: dict) -> str | None:
    """The event a task message delivers, whether we built it (plain JSON body) or Celery
    published it for a retry (base64 body); None for anything else."""
    body = message.get("body")
    if not isinstance(body, str) or message.get("headers", {}).get("task") != DELIVER_TASK:
        return None
    try:
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body).decode()
        args = orjson.loads(body)[0]
        return args[0] if args and isinstance(args[0], str) else None
    except (ValueError, TypeError, IndexError, KeyError):
        return None
