"""Which Redis holds what: a route lives on its shard (BUS_REDIS_SHARDS, or BUS_REDIS_URL's "default").

The key layout (journal/keys.py) is the same on every shard; only the client differs. Writes for
a route go to its shard alone, so a shard that is down refuses only its own routes. Reads that
see the whole journal (listings, stats, metrics, replay, purge) ask every shard and say which
one did not answer.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import journal
from .errors import Unavailable
from .settings import DEFAULT_SHARD, Settings
from .wire.target import RedisTarget

__all__ = ["DEFAULT_SHARD", "Shards", "for_reading", "down", "as_shards"]


@dataclass(frozen=True)
class Shards:
    """A redis-py client per shard (default first) and the shard of each route by name; a route
    not listed (one removed since its events were written) is looked for on every shard."""

    clients: Mapping[str, Any]
    routes: Mapping[str, str] = field(default_factory=dict)
    shown: Mapping[str, str] = field(default_factory=dict)  # shard -> its URL without passwords

    def of(self, route: str) -> Any:
        """The client of the shard that holds `route`'s events (the default shard's when unknown)."""
        return self.clients[self.routes.get(route, DEFAULT_SHARD)]

    def name_of(self, route: str) -> str:
        return self.routes.get(route, DEFAULT_SHARD)

    @property
    def default(self) -> Any:
        return self.clients[DEFAULT_SHARD]

    def where(self, name: str) -> str:
        """How a message names a shard."""
        url = self.shown.get(name, "")
        return f"shard {name} ({url})" if url else f"shard {name}"

    def by_shard(self, routes: Iterable[str]) -> dict[str, list[str]]:
        """The routes grouped by their shard, each group in the order given."""
        grouped: dict[str, list[str]] = {}
        for route in routes:
            grouped.setdefault(self.name_of(route), []).append(route)
        return grouped


def as_shards(client_or_shards: Any) -> Shards:
    """Shards as given, or one Redis client as the only (default) shard: callers with one Redis
    (tests, tools) keep passing a client."""
    if isinstance(client_or_shards, Shards):
        return client_or_shards
    return Shards({DEFAULT_SHARD: client_or_shards})


def for_reading(config: Settings, routes: Iterable[Any], timeout: float | None = None) -> Shards:
    """A client to every shard of the settings, and where each of `routes` lives."""
    timeout = config.redis_timeout if timeout is None else timeout
    targets: dict[str, RedisTarget] = {name: config.shard(name) for name in config.shard_names}
    return Shards({name: journal.connect(t, timeout) for name, t in targets.items()},
                  {r.name: r.shard for r in routes}, {name: t.shown for name, t in targets.items()})


def down(shards: Shards, name: str, exc: BaseException) -> Unavailable:
    """The error of a read that needed shard `name` while it did not answer."""
    return Unavailable(f"Redis {shards.where(name)} did not answer ({exc.__class__.__name__}); "
                       "retry when it is back")
