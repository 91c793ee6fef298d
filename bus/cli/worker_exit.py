"""`bus worker`'s exit status, which Celery's own loses.

Celery's worker_main drops the worker's exit code (app.start returns None where click returns it):
a worker that never started (an "Unrecoverable error" in a boot step, e.g. a read-only replica as
BUS_REDIS_URL) ended `bus worker` with 0, and `bus up`, systemd or an orchestrator took it for a
clean stop. Celery also says 1 for a stop asked for with SIGINT (Ctrl-C) and 0 for one with SIGTERM.
Here a stop asked for by either is 0, and anything else that ends the worker with a failure, or
before it was ready, is 1 with one line saying so (Celery has logged the why, with its traceback,
above it).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from celery.signals import worker_init, worker_ready, worker_shutting_down

CLEAN_STOPS = ("SIGTERM", "SIGINT")


@dataclass
class Seen:
    """What the worker went through, as Celery's signals and its critical log line told it."""

    worker: Any = None  # Celery's WorkController: its exitcode is the one worker_main drops
    ready: bool = False
    stop_signal: str | None = None  # the signal a shutdown was asked for with (Celery's name for it)
    error: str | None = None  # the unrecoverable error Celery logged, as one line


def watch() -> Seen:
    """Record what the worker goes through from now on (call before it starts, in its main process)."""
    seen = Seen()

    def init(sender: Any = None, **_: object) -> None:
        seen.worker = sender

    def ready(**_: object) -> None:
        seen.ready = True

    def shutting_down(sig: str = "", **_: object) -> None:
        seen.stop_signal = seen.stop_signal or sig

    # weak=False: the handlers are closures, gone at once if only weakly held.
    worker_init.connect(init, weak=False)
    worker_ready.connect(ready, weak=False)
    worker_shutting_down.connect(shutting_down, weak=False)
    logging.getLogger("celery.worker").addFilter(_ErrorKept(seen))  # worker.py logs on this one
    return seen


class _ErrorKept(logging.Filter):
    """Keeps the exception of Celery's 'Unrecoverable error' line for the one-line summary; logs it as before."""

    def __init__(self, seen: Seen) -> None:
        super().__init__()
        self.seen = seen

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL and record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            first = (str(exc).strip().splitlines() or [""])[0]
            self.seen.error = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        return True


def status(seen: Seen) -> tuple[int, str | None]:
    """`bus worker`'s exit status from what was seen, and the line to print (None: none)."""
    code = getattr(seen.worker, "exitcode", None)  # Celery's exit code (None: no worker was made)
    if seen.stop_signal in CLEAN_STOPS:
        return 0, None
    if code == 0 and seen.ready:
        return 0, None  # stopped on its own, cleanly (`celery control shutdown`)
    why = f": {seen.error}" if seen.error else ""
    if seen.stop_signal:
        what = f"was stopped with {seen.stop_signal}"
    elif not seen.ready:
        what = "did not start"
    else:
        what = "stopped on its own"
    return 1, f"the worker {what}{why} (Celery's exit status {code}); its log above says why"
