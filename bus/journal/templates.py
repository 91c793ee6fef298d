"""The task message templates kept in Redis: one per route's queue, stored once, filled in by the scripts that queue messages.

broker/messages.py renders a route's template (group_template); it is stored under a key named by its
digest (keys.template_key), so a changed template (another kombu layout, another origin) is a new key
and never overwrites one a running process still names. A call names the key instead of carrying the
~700-byte template itself. A script that finds its key gone (a flushed Redis, a new shard, a failover to
a replica that had not got it) writes nothing and refuses with BUSTEMPLATE <key>, a MissingTemplate
here, and the caller stores the template and runs the call again once, as redis-py's Script does after
NOSCRIPT. Each process's template names its own origin (pid@host, as Celery's do), so the keys expire:
one a process still uses is stored again on the next refusal, one nobody uses goes away.
"""
from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import redis
from redis._parsers.base import BaseParser

from ..broker.messages import group_template
from .keys import queue_name, template_key

# A day: a running process's refusal a day costs one round trip per route; a key left behind by a
# stopped process costs ~700 B for at most that long.
TEMPLATE_TTL = 24 * 3600
REFUSAL = "BUSTEMPLATE"

_T = TypeVar("_T")


class MissingTemplate(redis.ResponseError):
    """A script's refusal: the template key it was given is not in Redis (nothing was written)."""


# Like NOREPLICAS (wire/pipelined.py): a type of its own for redis.Redis clients and the pipes alike.
BaseParser.EXCEPTION_CLASSES.setdefault(REFUSAL, MissingTemplate)


@dataclass(frozen=True)
class Template:
    key: str
    text: str


_known: dict[str, str] = {}  # key -> text of every template this process named, to store on a refusal


@lru_cache(maxsize=1024)
def for_route(route: str, redelivered: bool = False) -> Template:
    """The template of messages to `route`'s queue (marked redelivered or not), and the key it is kept under."""
    text = group_template(queue_name(route), redelivered)
    template = Template(template_key(hashlib.sha1(text.encode()).hexdigest()[:16]), text)
    _known[template.key] = text
    return template


def store(template: Template) -> tuple[Any, ...]:
    """The SET that keeps `template` in Redis."""
    return ("SET", template.key, template.text, "EX", TEMPLATE_TTL)


def store_command(refusal: MissingTemplate) -> tuple[Any, ...]:
    """The SET that puts back the template a refusal names (its message starts with the key)."""
    key = str(refusal).split(" ", 1)[0]
    if key not in _known:
        raise RuntimeError(f"Redis refused a call for message template {key!r}, which this process never named")
    return store(Template(key, _known[key]))


def stored(run: Callable[[], _T], store: Callable[..., Any]) -> _T:
    """run(), and once more after store(*store_command()) if it was refused for a missing template."""
    try:
        return run()
    except MissingTemplate as refusal:
        store(*store_command(refusal))
        return run()


async def stored_async(run: Callable[[], Awaitable[_T]], store: Callable[..., Awaitable[Any]]) -> _T:
    """stored() for the ingress's event-loop pipes."""
    try:
        return await run()
    except MissingTemplate as refusal:
        await store(*store_command(refusal))
        return await run()
