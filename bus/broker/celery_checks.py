"""What a Celery worker or the ingress would otherwise get quietly wrong with the bus: its queues and its broker.

Both failures look healthy: `celery -A bus worker` without -Q consumes only Celery's default
queue `celery`, says ready and delivers nothing; a CELERY_BROKER_URL (which Celery prefers to any
setting) or a celeryconfig.py broker_url naming another Redis than BUS_REDIS_URL has the ingress
queue tasks in one Redis (the journal's: intake writes tasks and journal in one transaction)
while the workers listen on another. So both refuse to start, saying what to do.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from ..errors import BusError, ConfigError
from ..journal import queue_name
from ..logs import redact

REDIS_SCHEMES = ("redis", "rediss")


def server_id(url: str) -> tuple[str, ...]:
    """What names one Redis database: scheme, host, port, db (credentials and options aside)."""
    parts = urlsplit(url)
    if parts.scheme not in REDIS_SCHEMES:
        return (url.rstrip("/"),)  # sentinel://, unix://: compared as written
    db = parts.path.strip("/") or "0"
    return parts.scheme, (parts.hostname or "localhost").lower(), str(parts.port or 6379), db


def check_broker(conf: Any, redis_url: str, shard: str = "default") -> None:
    """Refuse a Celery broker (or read/write broker) that is not BUS_REDIS_URL's Redis (or, for a
    worker of another shard, that shard's)."""
    setting = "BUS_REDIS_URL" if shard == "default" else f"shard {shard} (BUS_WORKER_SHARD) of BUS_REDIS_SHARDS"
    for name, url in (("broker_url", conf.broker_url), ("broker_read_url", conf.broker_read_url),
                      ("broker_write_url", conf.broker_write_url)):
        if url and server_id(url) != server_id(redis_url):
            raise ConfigError(
                f"Celery's {name} is {redact(url)} (from CELERY_{name.upper()} or celeryconfig.py) but "
                f"{setting} is {redact(redis_url)}: the bus keeps its queues and journal in one Redis, so "
                f"tasks would be queued where workers do not listen. Unset CELERY_{name.upper()} and "
                f"{name} in celeryconfig.py (they default to BUS_REDIS_URL), or make them the same")


def check_queues(consumed: Iterable[str], route_names: Iterable[str] | None) -> None:
    """Refuse a worker that consumes no bus queue (`celery -A bus worker` without -Q)."""
    consumed = list(consumed)
    if any(name.startswith(queue_name("")) for name in consumed):
        return
    queues = ",".join(queue_name(r) for r in route_names or ()) or queue_name("<route>")
    raise ConfigError(f"this worker consumes only {', '.join(consumed) or 'no queue'}, where the bus queues "
                      f"nothing: each route has its own queue, so pass -Q {queues} (one or more; "
                      f"`bus routes` lists the routes), or run `bus worker [ROUTE...]`")


def check_shard(consumed: Iterable[str], router: Any, shard: str) -> None:
    """Refuse a worker consuming a route of another shard than its own: its broker is one Redis, and
    that route's task messages are written to another."""
    if router is None:
        return  # routes that do not load stop the worker elsewhere, with their own message
    queues = set(consumed)
    elsewhere = [r for r in router.routes if queue_name(r.name) in queues and r.shard != shard]
    if elsewhere:
        route = elsewhere[0]
        raise ConfigError(f"route {route.name} lives on shard {route.shard} but this worker's broker is shard "
                          f"{shard}: start it with BUS_WORKER_SHARD={route.shard} (one worker per shard), or run "
                          "`bus worker`, which starts one Celery worker per shard of the routes given")


def check_fanout_layout(router: Any, backlog: Any) -> None:
    """Refuse to start while events accepted under a route's single endpoint still wait, now that the route
    has [[destinations]]: workers consume its destinations' queues (bus.<route>.<destination>), and nothing
    would ever send those. `backlog(route)` counts a route's waiting events. Routes with one endpoint keep
    the layout they always had: nothing to migrate."""
    if router is None:
        return
    for name in router.fanouts:
        waiting = backlog(name)
        if waiting:
            raise ConfigError(
                f"route {name} now has [[destinations]], but {waiting} events accepted while it had one endpoint "
                f"still wait under it, and a fan-out route's workers would never send them. Put its endpoint back "
                f"(no [[destinations]]) until `bus stats` shows route {name} with nothing waiting, then add the "
                f"destinations; or give those events up: `bus purge --route {name} --status queued --status "
                "retrying --yes`")


def route_names(load: Any) -> list[str] | None:
    """The configured routes' names for a message, or None when they cannot be loaded right now."""
    router = routes_or_none(load)
    return None if router is None else [r.name for r in router.routes]


def routes_or_none(load: Any) -> Any:
    """load() (the Router), or None when the routes cannot be loaded right now."""
    try:
        return load()
    except BusError:
        return None


def refuse_purging_bus_queues() -> None:
    """`celery purge -Q bus.<route>` (and `celery worker --purge`) refuse a bus queue, saying what to use.

    Emptying the list would not stick: the journal still holds each event as queued, and the
    workers' lost-task recovery (recovery.py) queues every one of them again at their next
    (re)connect. Dropping events is the journal's job: `bus purge`."""
    from kombu.transport import redis as kombu_redis

    queue_purge = kombu_redis.Channel.queue_purge

    def _queue_purge(self: Any, queue: str, **kwargs: Any) -> Any:
        if queue.startswith(queue_name("")):
            route = queue[len(queue_name("")):]
            raise SystemExit(
                f"celery purge: {queue} is a bus queue; nothing was purged. Emptying it would not stick: "
                f"the journal still holds its events and the workers queue them again. To drop them for good "
                f"run `bus purge --route {route} --status queued --status retrying --yes` (without --yes it "
                f"only counts)")
        return queue_purge(self, queue, **kwargs)

    kombu_redis.Channel.queue_purge = _queue_purge
