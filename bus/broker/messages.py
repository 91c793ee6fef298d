"""Celery task messages for the deliver task, built by hand so intake can push them in its own Redis transaction (pure)."""
from __future__ import annotations

import base64
import functools
import os
import socket
import uuid
from typing import NamedTuple

import orjson

DELIVER_TASK = "bus.deliver"
_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


# Events of one route that arrived together travel in one task: Celery's own
# cost per task (receive, pool hand-off, ack, events) is paid once per group.
# Each event keeps its own journal record, attempts and retry schedule. A group
# is sent one event after another, so it stays modest: a slow endpoint still
# gets parallel attempts from several worker processes, and a killed worker's
# group comes back small (delivery.py also hands off what would not finish
# within the visibility timeout). Measured on 2 cores, prefork -c 2, a fast
# receiver: 10 -> ~950 events/s, 25 -> ~1,730/s, 50 -> ~1,820/s.
GROUP_SIZE = 25
SHOWN = 5  # events described in a task's argsrepr; a longer group adds "N events: ..., ..."


def groups(items: list, size: int = GROUP_SIZE) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def delivery_message(events: list[tuple], queue: str, task_id: str | None = None, to: str | None = None,
                     probe: bool = False, redelivered: bool = False) -> bytes:
    """A Celery protocol-2 message for kombu's Redis transport, as LPUSHed onto list `queue`.

    `events` is (event id, tag) or (event id, tag, attempt) of one route. The
    body travels as plain JSON (no base64 'body_encoding'), which kombu decodes
    as is. argsrepr is what Flower shows as the task's arguments: the tag, the
    event id and which attempt this task makes (or that it sends a copy), for
    the first few events of the group. `redelivered` marks it as kombu marks a message it
    restores: a copy of events another task may be sending right now (delivery checks each
    event again right before sending it).
    """
    # Unique among messages in flight: an event is in one first-delivery task,
    # so its id names that task; retries and replays pass a fresh uuid.
    return outgoing(events, queue, task_id or events[0][0], to, probe, redelivered).data


class Outgoing(NamedTuple):
    """A task message about to be queued, with what the journal writes of it: its task id goes into
    the records of the events it carries (the message that sends them next). The journal's scripts
    fill its values into the route's template kept in Redis (journal/templates.py: `filling`); `data`
    is the whole message, for what is pushed as it is."""

    task_id: str
    event_ids: list[str]
    body: str
    argsrepr: str
    kwargsrepr: str
    queue: str
    redelivered: bool = False

    @property
    def filling(self) -> list[bytes]:
        """Body, argsrepr and kwargsrepr as the JSON strings that replace the template's "@@BODY@@",
        "@@ARGSREPR@@" and "@@KWARGSREPR@@" (group.lua's fill puts the task id in "@@ID@@")."""
        return [orjson.dumps(self.body), orjson.dumps(self.argsrepr), orjson.dumps(self.kwargsrepr)]

    @property
    def data(self) -> bytes:
        return _envelope(self.task_id, self.body, self.argsrepr, self.kwargsrepr, self.queue, self.redelivered)


def outgoing(events: list[tuple], queue: str, task_id: str, to: str | None = None, probe: bool = False,
             redelivered: bool = False) -> Outgoing:
    """The message delivery_message() describes, as its parts (see there)."""
    ids = [e[0] for e in events]
    kwargs: dict[str, object] = {"to": to} if to else {}
    if probe:
        kwargs["probe"] = True
    shown = ", ".join(describe(e[1], e[0], e[2] if len(e) > 2 else 1, to is not None, probe) for e in events[:SHOWN])
    argsrepr = shown if len(events) <= SHOWN else f"{len(events)} events: {shown}, ..."
    body = orjson.dumps([[ids], kwargs, _EMBED]).decode()
    return Outgoing(task_id, ids, body, argsrepr, repr(kwargs) if kwargs else "{}", queue, redelivered)


def new_message(events: list[tuple], queue: str, to: str | None = None, probe: bool = False,
                redelivered: bool = False) -> Outgoing:
    """A message under a task id of its own: a retry, a hand-off, a replay, a recovered task
    (a group's first message is made in Lua and has its first event's id)."""
    return outgoing(events, queue, str(uuid.uuid4()), to, probe, redelivered)


@functools.lru_cache(maxsize=1024)
def group_template(queue: str, redelivered: bool = False) -> str:
    """The message to `queue` with "@@ID@@", "@@BODY@@", "@@ARGSREPR@@" and "@@KWARGSREPR@@" left for
    the journal's Lua to fill in (lua/fill.lua): a group of newly accepted events taken off the route's
    pending list, or an Outgoing's values; the filled-in message equals delivery_message() of those
    events. `redelivered`: the template of messages marked so."""
    return _envelope("@@ID@@", "@@BODY@@", "@@ARGSREPR@@", "@@KWARGSREPR@@", queue, redelivered).decode()


def _envelope(task_id: str, body: str, argsrepr: str, kwargsrepr: str, queue: str, redelivered: bool = False) -> bytes:
    message = _message(task_id, body, argsrepr, kwargsrepr, queue)
    if redelivered:
        message["headers"]["redelivered"] = True
        message["properties"]["delivery_info"]["redelivered"] = True
    return orjson.dumps(message)


def _message(task_id: str, body: str, argsrepr: str, kwargsrepr: str, queue: str) -> dict:
    return {
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
            "kwargsrepr": kwargsrepr,
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


def describe(tag: str, event_id: str, attempt: int, copy: bool = False, probe: bool = False) -> str:
    """'api.orders 0190... attempt 2': how a delivery task reads in Flower's task list."""
    if copy:
        return f"{tag} {event_id} copy"
    return f"{tag} {event_id} attempt {attempt}" + (" probe" if probe else "")


def event_ids_of(message: dict) -> list[str]:
    """The events a task message delivers, whether we built it (plain JSON body) or Celery
    published it (a copy's retry: base64 body); [] for anything else."""
    body = message.get("body")
    if not isinstance(body, str) or message.get("headers", {}).get("task") != DELIVER_TASK:
        return []
    try:
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body).decode()
        ids = orjson.loads(body)[0][0]
        return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []
    except (ValueError, TypeError, IndexError, KeyError):
        return []
