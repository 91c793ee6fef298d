"""How `bus up` starts the ingress and the workers: forked from one process that has imported them both.

Started as `python -m bus serve` and `python -m bus worker` each child was an interpreter of its own,
with its own copy of what they all import (redis-py alone is 14 MiB of code objects per process), and
the ingress shared no page with anything. `bus up` now imports the ingress, the Celery app and the
worker's modules once, freezes them out of the collector's reach (gc.freeze: a collection would
rewrite, and so copy, every page it visits), and forks each child from that; each child then runs
the same `bus serve` or `bus worker` code it ran before, with the same arguments and environment.
`bus up` itself execs supervise.py right after, so those pages end up shared by its children alone
(docs/performance.md, issue 22). `bus serve` and `bus worker` run by hand are unchanged.

A forked child's command line is `bus up`'s; its name (ps -o comm, top) says what it runs.
"""
from __future__ import annotations

import contextlib
import gc
import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

# What the children run, imported before the fork so its pages are shared (named, not imported here:
# this module sits below the worker, the ingress and the CLI, which it only preloads). The Celery app is loaded
# with the environment `bus up` gives its children (the caller sets it first): it reads its settings
# when imported, as a child would.
SHARED = ("bus.cli", "bus.celery", "bus.worker.delivery", "bus.worker.scheduler", "bus.worker.leases", "bus.archive.launch",
          "bus.archive.mover", "bus.ingress.server", "bus.ingress.asgi", "bus.ingress.forward",
          "celery.apps.worker", "celery.worker.consumer", "celery.concurrency.prefork", "kombu.transport.redis",
          "uvicorn.server", "uvicorn.config", "uvloop", "sqlite3", "bus.archive.sqlite")


class Forked:
    """A forked child, with the part of subprocess.Popen's interface `bus up` uses to stop it."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                done, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                done, status = self.pid, 0
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            time.sleep(0.05)
        return self.returncode  # type: ignore[return-value]


def preload() -> None:
    """Import what the children run, then move it all out of the collector's reach."""
    for name in SHARED:
        importlib.import_module(name)
    gc.freeze()


def _name(title: str) -> None:
    # Linux only (a process may rename only itself), and cosmetic: `ps -o comm` and top show it
    # instead of "python", at most 15 bytes; the threads and processes it starts inherit it.
    with contextlib.suppress(OSError):
        with open("/proc/self/comm", "w") as comm:
            comm.write(title[:15])


def start(title: str, argv: list[str], main: Callable[[list[str]], int]) -> Forked:
    """Fork a child that runs `bus ARGV` (main: the CLI's, which `bus up` is called from) in a session of
    its own, as `bus up`'s Popen did."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return Forked(pid)
    code = 1
    try:
        _name(title)
        os.setsid()  # own session: Ctrl-C reaches only `bus up`, which stops its children in order
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.argv = [sys.argv[0], *argv]
        code = main(argv)
    except SystemExit as exc:  # Celery's worker_main ends with one
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - never return into `bus up`'s own code in the child
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            with contextlib.suppress(Exception):
                stream.flush()  # type: ignore[union-attr]
        os._exit(code)
