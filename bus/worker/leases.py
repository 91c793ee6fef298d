"""A worker's lease, and the hand-back of dead workers' tasks within seconds (broker/unacked.py).

Runs as a thread in every worker's main process, the one that takes tasks off the queues and
holds them unacked. Every second it renews this worker's lease and looks for workers whose
lease is gone; one found lapsed on two looks GRACE seconds apart (a live worker that merely
lost Redis for a moment renews in between) has its unacked tasks put back on their queues.
They are marked redelivered, so each of their events is checked against the journal again
right before it is sent: an event the dead worker had finished is not sent twice. A task it
was sending when it died is sent again with the same X-Request-Id, as after any crash.

A dead worker may also have lost a task between kombu's BRPOP and its unacked entry; finding
one dead therefore runs lost-task recovery (recovery.py) as a new primary does.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time

from celery.signals import worker_init, worker_shutdown

from .. import settings
from ..broker import kombu_fixes
from ..broker import unacked as journal_leases
from ..journal import REDIS_DOWN, connect, held_key

log = logging.getLogger("bus.leases")

TICK = 1.0
LEASE_MS = 3000
GRACE = 1.5
LOCK_MS = 30_000
_stop = threading.Event()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Watch:
    """One worker's view: its own lease, and since when each other worker has been seen lapsed."""

    def __init__(self, client: object, me: str):
        self.client, self.me = client, me
        self.lapsed_since: dict[str, float] = {}

    def tick(self, now: float) -> list[str]:
        """Renew, then hand back the tasks of workers lapsed for GRACE; the task ids handed back."""
        listed = journal_leases.renew_and_look(self.client, self.me, LEASE_MS)
        live = [w for w, alive in listed.items() if alive]
        self.lapsed_since = {w: self.lapsed_since.get(w, now) for w, alive in listed.items()
                             if not alive and w != self.me}
        handed: list[str] = []
        for worker, since in list(self.lapsed_since.items()):
            if now - since < GRACE:
                continue
            tasks = journal_leases.hand_back(self.client, worker, live, LOCK_MS)
            if tasks is None:
                continue  # another worker is handing them back
            del self.lapsed_since[worker]
            handed += tasks
            log.warning("worker %s stopped renewing its lease: %d of its unacked task(s) put back on their "
                        "queues%s", worker, len(tasks), f": {' '.join(tasks[:10])}" if tasks else "")
            _recover_lost(worker)
        return handed


def _recover_lost(worker: str) -> None:
    from .recovery import recover_in_background

    recover_in_background(f"worker {worker} died")


def _run(watch: Watch) -> None:
    while not _stop.is_set():
        try:
            watch.tick(time.time())
        except REDIS_DOWN as exc:
            log.debug("worker lease not renewed: Redis unreachable (%s)", exc)
        except Exception:
            log.exception("worker lease tick failed; trying again")
        _stop.wait(TICK)


_watch: Watch | None = None


@worker_init.connect
def _start(**_: object) -> None:
    """Before the pool forks: name the held set kombu_fixes writes (the pool processes need it too)."""
    global _watch
    config = settings.load()
    me = worker_name()
    kombu_fixes.held_key = held_key(me)
    _watch = Watch(connect(config.worker_redis, config.redis_timeout), me)


def start_thread() -> None:
    """Take the lease and keep it, before the consumer takes its first task (beside_pool.py starts it
    once the pool has forked: no thread runs in the process it copies)."""
    if _watch is not None:
        threading.Thread(target=_run, args=(_watch,), name="bus-worker-lease", daemon=True).start()


@worker_shutdown.connect
def _shutdown(**_: object) -> None:
    _stop.set()
    config = settings.load()
    try:
        # Celery has handed back what it held unacked by now (restore_at_shutdown).
        journal_leases.forget(connect(config.worker_redis, config.redis_timeout), worker_name())
    except REDIS_DOWN:
        pass  # the lease lapses by itself; whoever hands back finds nothing held
