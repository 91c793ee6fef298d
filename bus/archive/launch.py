"""Each `bus worker` starts its archive mover (mover.py) as a process beside it, and stops it with it.

Apart from mover.py so that the mover's own process never imports Celery: it needs only Redis and
the archive, and Celery, kombu and billiard were a third of its memory (docs/performance.md).
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys

from celery.signals import worker_ready, worker_shutdown

from .. import logs, settings

log = logging.getLogger("bus.archive")
_child: subprocess.Popen | None = None


# A process of its own, not a thread of the worker's main process: that process is Celery's
# consumer, and a thread decoding and writing batches there holds the GIL the consumer needs to
# hand tasks to the pool (prefetch 1: every wait there is a pool process idle).
@worker_ready.connect
def _start(sender: object = None, **_: object) -> None:
    global _child
    config = settings.load()
    if not config.archive_url:
        log.info("archive off (BUS_ARCHIVE_URL=off): delivered events stay in Redis for BUS_RETENTION")
        return
    _child = subprocess.Popen([sys.executable, "-m", "bus.archive.mover", str(os.getpid())])
    log.info("archive mover running (pid %d): delivered events older than %gs go to %s", _child.pid,
             config.hot_window, logs.redact(config.archive_url))


@worker_shutdown.connect
def _shutdown(**_: object) -> None:
    if _child is not None and _child.poll() is None:
        _child.terminate()
        try:
            _child.wait(5)
        except subprocess.TimeoutExpired:
            _child.kill()
