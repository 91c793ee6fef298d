"""The worker step that runs once the prefork pool has forked and before the consumer starts: it
forks the archive mover, then starts the lease thread.

In that order on purpose. The mover is forked from the worker's main process when that process has
just forked its pool processes, so it shares the same pages they do (~5 MiB of its own instead of
the 24 of a spawned interpreter, or the 16 of a fork at worker_init, whose pages the worker's
start-up then rewrote: docs/performance.md, issue 22); and before any thread of the worker runs,
because a fork copies the locks other threads hold. The lease still starts before the consumer takes
its first task, which is what leases.py needs.
"""
from __future__ import annotations

import gc

from celery import bootsteps


class BesideThePool(bootsteps.StartStopStep):
    """Worker step (app.steps['worker']); start() runs once per worker start, after the Pool step."""

    requires = ("celery.worker.components:Pool",)

    def start(self, w: object) -> None:
        from ..archive import launch
        from . import leases

        # What the worker's start-up created since worker_init's freeze: the mover's collections
        # must not rewrite (and so copy) those pages either.
        gc.freeze()
        launch.fork_mover()
        leases.start_thread()
