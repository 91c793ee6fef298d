"""What a worker process keeps between tasks: its settings, routes, connections and sweep clock, built once after fork."""
from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .. import journal, settings
from ..routes import Router, load_configured
from ..wire.pipelined import SharedPipe
from . import outbound

log = logging.getLogger("bus.delivery")
SWEEP_EVERY = 60.0


@dataclass
class Sweeps:
    """Keeps retention-expired ids out of the indexes even when nobody lists events: a sweep at most
    every SWEEP_EVERY seconds per process, whichever task comes first."""

    last: float = 0.0  # time.monotonic() of the last sweep

    def maybe(self, client: Any, retention: int) -> None:
        now = time.monotonic()
        if now - self.last < SWEEP_EVERY:
            return
        self.last = now
        try:
            journal.sweep(client, retention)
        except journal.REDIS_DOWN:
            log.warning("journal sweep skipped: Redis unreachable")


@dataclass(frozen=True)
class Worker:
    """What a worker process needs, built once after fork."""

    settings: settings.Settings
    router: Router
    redis: Any
    # The per-attempt script goes through this (no redis-py: ~0.1 ms of CPU less per event).
    pipe: SharedPipe
    pools: outbound.Pools
    sweeps: Sweeps = field(default_factory=Sweeps, compare=False)


# A threads pool's first tasks may ask at once: one Worker per process, never two half-built.
_lock = threading.Lock()


def worker() -> Worker:
    with _lock:
        return _built()


@functools.cache
def _built() -> Worker:
    config = settings.load()
    return Worker(
        settings=config,
        router=load_configured(config),
        # A worker process serves the routes of one shard (BUS_WORKER_SHARD): its broker's Redis.
        redis=journal.connect(config.worker_redis, config.redis_timeout),
        pipe=SharedPipe(config.worker_redis, config.redis_timeout),
        pools=outbound.Pools(config.outbound),
    )
