"""The worker step that runs once the prefork pool has forked and before the consumer starts: it
starts the lease thread.

There on purpose. The lease must be held before the consumer takes its first task (leases.py), and
no thread may run when the pool forks, because a fork copies the locks other threads hold.
"""
from __future__ import annotations

import gc

from celery import bootsteps


class BesideThePool(bootsteps.StartStopStep):
    """Worker step (app.steps['worker']); start() runs once per worker start, after the Pool step."""

    requires = ("celery.worker.components:Pool",)

    def start(self, w: object) -> None:
        from . import leases

        # What the worker's start-up created since worker_init's freeze: the main process's own
        # collections need not visit it again (the pool processes were forked with it frozen).
        gc.freeze()
        leases.start_thread()
