"""Each `bus worker` runs its archive mover (mover.py) in a thread of its main process, and stops it with it.

A thread, not a process of its own: a process beside the worker, even one forked from it once the
pool had forked, kept 10-12 MiB of private pages (what it rewrote of the pages it shared with the
worker) for a loop that sleeps 2 s between passes; as a thread it adds about 1 MiB to the worker's
main process (docs/performance.md, issue 22, fourth pass). The price is the GIL: while the thread
decodes and writes a batch, Celery's consumer in the same process waits for it to hand the next
task to a pool process. Batches are 100 events (mover.BATCH) and the mover works only on what left
the hot window, so the long-run scenario (archiving on against off, bench/archiving.py) is what says
whether that costs delivery: measured there, not assumed. A worker killed with its mover leaves
nothing half-done that the next pass does not finish: the archive is written before Redis forgets.
"""
from __future__ import annotations

import logging
import os
import threading

from celery.signals import worker_ready, worker_shutdown

from .. import logs, settings
from . import mover

log = logging.getLogger("bus.archive")
STOP_WAIT = 5.0
_stop = threading.Event()
_thread: threading.Thread | None = None


@worker_ready.connect
def _start(sender: object = None, **_: object) -> None:
    global _thread
    config = settings.load()
    if not config.archive_url:
        log.info("archive off (BUS_ARCHIVE_URL=off): delivered events stay in Redis for BUS_RETENTION")
        return
    _stop.clear()
    _thread = threading.Thread(target=_run, name="bus-archive-mover", daemon=True)
    _thread.start()
    log.info("archive mover running (a thread of the worker, pid %d): delivered events older than %gs go to %s",
             os.getpid(), config.hot_window, logs.redact(config.archive_url))


def _run() -> None:
    try:
        mover.run(_stop)
    except Exception:
        # store_for or the first connection failed: delivery goes on, delivered events wait in Redis.
        log.exception("archive mover stopped; delivered events stay in Redis until the worker restarts")


@worker_shutdown.connect
def _shutdown(**_: object) -> None:
    global _thread
    _stop.set()
    if _thread is not None:
        # A pass in progress ends its batch (write, then delete) before the worker's process exits.
        _thread.join(STOP_WAIT)
        if _thread.is_alive():
            log.warning("archive mover still in a pass after %.0fs; the next worker's mover finishes it", STOP_WAIT)
        else:
            log.info("archive mover stopped")
        _thread = None
