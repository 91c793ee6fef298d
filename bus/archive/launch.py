"""Each `bus worker` runs its archive mover (mover.py) in a process beside it, and stops it with it.

The mover is forked from the worker's main process once the pool has forked, before any thread
of the worker starts (bus/beside_pool.py): it then shares the worker's imported interpreter with
the pool processes instead of being a second one (a spawned `python -m bus.archive.mover` cost
24 MiB of PSS of its own: docs/performance.md, issue 22). A fork while other threads run would
copy their held locks into the child, so a worker that has threads by then (a threads pool)
spawns it as a new interpreter instead, as before. Either way it is a process of its own, not a thread of the worker's main process:
that process is Celery's consumer, and a thread decoding and writing batches there holds the GIL
the consumer needs to hand tasks to the pool (prefetch 1: every wait there is a pool process idle).
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

from celery.signals import worker_ready, worker_shutdown

from .. import logs, settings, supervise
from . import mover

log = logging.getLogger("bus.archive")
STOP_WAIT = 5.0
_forked: int | None = None
_spawned: subprocess.Popen | None = None


def fork_mover() -> int | None:
    """Fork the mover from this (the worker's main) process if it has no other thread; its pid, or
    None when the archive is off or threads run (worker_ready then spawns it)."""
    global _forked
    if not settings.load().archive_url or threading.active_count() > 1:
        return None
    parent = os.getpid()
    # Unflushed output would be written twice, once by each process.
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = mover.run(parent, forked=True)
        except BaseException:  # noqa: BLE001 - the child must never return into Celery's start-up
            logging.getLogger("bus.archive").exception("archive mover failed")
        finally:
            os._exit(code)
    _forked = pid
    return pid


@worker_ready.connect
def _start(sender: object = None, **_: object) -> None:
    global _spawned
    config = settings.load()
    if not config.archive_url:
        log.info("archive off (BUS_ARCHIVE_URL=off): delivered events stay in Redis for BUS_RETENTION")
        return
    if _forked is not None:
        pid, how = _forked, "forked from the worker"
    else:
        _spawned = subprocess.Popen([sys.executable, "-m", "bus.archive.mover", str(os.getpid())])
        pid, how = _spawned.pid, "spawned"
    log.info("archive mover running (pid %d), %s: delivered events older than %gs go to %s", pid, how,
             config.hot_window, logs.redact(config.archive_url))


@worker_shutdown.connect
def _shutdown(**_: object) -> None:
    global _forked
    if _forked is not None:
        supervise.terminate(_forked, STOP_WAIT)
        _forked = None
    if _spawned is not None and _spawned.poll() is None:
        _spawned.terminate()
        try:
            _spawned.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            _spawned.kill()
