"""The kombu and Celery the broker glue was written against, checked before anything of them is patched.

kombu_fixes.py replaces private methods of kombu's Redis transport, celery_checks.py wraps its
queue_purge, and unacked.py reads kombu's unacked hash under kombu's own key names. Another kombu may
have renamed one, changed its parameters or moved the hash: a patch would then fail at the first ack,
or silently not apply (tasks of a killed worker back only after the visibility timeout, not seconds).
So loading the Celery app refuses such a kombu at once, naming it and what to do.
"""
from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import UnsupportedKombu
from ..journal.keys import KOMBU_UNACKED, KOMBU_UNACKED_INDEX

# [lowest, first not supported), as pyproject.toml pins them (tests/unit/test_broker_versions.py keeps both equal).
WRITTEN_AGAINST: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "kombu": ((5, 7), (6, 0)),
    "celery": ((5, 7), (6, 0)),
}

# What the glue replaces or calls, with the parameters it is written for (None: an attribute).
PATCHED: tuple[tuple[str, str, tuple[str, ...] | None], ...] = (
    ("kombu.transport.redis.Transport", "brpop_timeout", None),
    ("kombu.transport.redis.Channel", "_connparams", ("self", "asynchronous")),
    ("kombu.transport.redis.Channel", "_create_client", ("self", "asynchronous")),
    ("kombu.transport.redis.Channel", "queue_purge", ("self", "queue", "**kwargs")),
    ("kombu.transport.redis.QoS", "append", ("self", "message", "delivery_tag")),
    ("kombu.transport.redis.QoS", "_remove_from_indices", ("self", "delivery_tag", "pipe")),
    ("kombu.transport.redis.QoS", "pipe_or_acquire", ("self", "pipe", "client")),
    ("kombu.transport.virtual.QoS", "append", ("self", "message", "delivery_tag")),
)

# kombu's names for its unacked hash and index, which journal/keys.py names for unacked.py and lost.py.
HASH_NAMES = (("unacked_key", KOMBU_UNACKED), ("unacked_index_key", KOMBU_UNACKED_INDEX))


def _release(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def _range(name: str) -> str:
    (low, high) = WRITTEN_AGAINST[name]
    return f"{name}>={low[0]}.{low[1]},<{high[0]}" + (f".{high[1]}" if high[1] else "")


def _parameters(func: Any) -> tuple[str, ...]:
    shown = []
    for p in inspect.signature(func).parameters.values():
        prefix = "*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else ""
        shown.append(prefix + p.name)
    return tuple(shown)


def _class(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def problems(versions: Mapping[str, str], resolve: Callable[[str], Any] = _class) -> list[str]:
    """What does not match: each sentence names the package, its version and what differs."""
    found = []
    for name, (low, high) in WRITTEN_AGAINST.items():
        if not low <= _release(versions[name]) < high:
            found.append(f"{name} {versions[name]} is not a version the bus was written against ({_range(name)})")
    kombu = f"kombu {versions['kombu']}"
    for owner, attr, params in PATCHED:
        where = f"{owner}.{attr}"
        try:
            value = getattr(resolve(owner), attr)
        except (ImportError, AttributeError):
            found.append(f"{kombu} has no {where}, which the bus patches")
            continue
        if params is not None and _parameters(value) != params:
            found.append(f"{kombu}'s {where} takes ({', '.join(_parameters(value))}), where the bus's patch of it "
                         f"takes ({', '.join(params)})")
    channel = resolve("kombu.transport.redis.Channel")
    for attr, expected in HASH_NAMES:
        if getattr(channel, attr, None) != expected:
            found.append(f"{kombu} keeps its unacked tasks under {attr}={getattr(channel, attr, None)!r}, where the "
                         f"bus reads {expected!r}")
    return found


def installed() -> dict[str, str]:
    import celery
    import kombu

    return {"kombu": str(kombu.__version__), "celery": str(celery.__version__)}


def check(versions: Mapping[str, str] | None = None, resolve: Callable[[str], Any] = _class) -> None:
    """Refuse a kombu or Celery the glue was not written against, before kombu_fixes.apply() patches it."""
    found = problems(installed() if versions is None else versions, resolve)
    if found:
        raise UnsupportedKombu(
            "; ".join(found) + ". The bus patches kombu's Redis transport (bus/broker/kombu_fixes.py) and would "
            f"lose its fixes or fail at the first ack: install the versions it supports "
            f"(pip install '{_range('kombu')}' '{_range('celery')}'), or a bus release made for this kombu")
