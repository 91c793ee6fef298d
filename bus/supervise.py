"""What `bus up` becomes once everything runs: a parent that waits for its children's signals, and stops them.

`bus up` starts Redis, the ingress and the workers, then execs this file with
`python -I -S` (same pid, same children): the setup's imports (redis-py, the
journal, the routes) stayed resident in the supervisor for as long as the bus
ran, 24 MiB of PSS to watch a few pids. This file imports the standard library
only, and waits in sigwaitinfo for a child to exit or a signal to stop, so it
neither polls nor wakes while the bus runs. A second Ctrl-C while it stops the
children waits too, instead of cutting the stop short. `bus up` blocks the signals before
the exec, so one that arrives meanwhile waits for sigwaitinfo instead of
killing the supervisor with its children left running.

Argv: the `bus up` record to remove on the way out, then NAME=PID for each child
in the order they are stopped (ingress first, Redis last).

Its imports are kept to C modules and `os`: `signal` wraps `_signal` in enums (enum,
functools, re, ...) and `json` pulls in its decoder; the two were 1.1 of the 3.8 MiB
this process held of its own (docs/performance.md, issue 22, fourth pass).
"""
from __future__ import annotations

import _signal as signal  # the C module: its constants are plain ints, which is all this file needs
import os
import sys
import time

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
WAITED = {signal.SIGCHLD, *STOP_SIGNALS}
GRACE = 20.0


def block_signals() -> None:
    """Before the exec: hold the signals this file waits for (the mask and pending signals survive exec)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)


def read_record(path: str) -> bytes | None:
    """The `bus up` record as `bus up` wrote it just before the exec (None when there is none)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def remove_record(path: str, written: bytes | None) -> None:
    """Remove the `bus up` record if it is still the one read at the start: a later `bus up` that
    replaced it wrote another pid into it."""
    if written is not None and read_record(path) == written:
        try:
            os.unlink(path)
        except OSError:
            pass


def _reap(children: dict[int, str]) -> tuple[str, int] | None:
    """(name, exit status) of a child that has exited, if any; it is reaped and no longer listed."""
    for pid, name in children.items():
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, -1
        if done:
            del children[pid]
            return name, os.waitstatus_to_exitcode(status) if status != -1 else -1
    return None


def _next_signal() -> int:
    """The next of the held signals to arrive. Without sigwaitinfo (macOS): a look every 0.5 s at the
    pending ones, as `bus up` polled its children before."""
    if hasattr(signal, "sigwaitinfo"):
        return signal.sigwaitinfo(WAITED).si_signo
    time.sleep(0.5)
    pending = signal.sigpending() & set(STOP_SIGNALS)
    return min(pending) if pending else signal.SIGCHLD


def _say(line: str, err: bool = False) -> None:
    print(f"bus up: {line}", file=sys.stderr if err else sys.stdout, flush=True)


def watch(children: dict[int, str]) -> int:
    """Until a child exits (1) or a stop signal arrives (0)."""
    while True:
        exited = _reap(children)
        if exited is not None:
            _say(f"{exited[0]} exited with status {exited[1]}; stopping everything", err=True)
            return 1
        if _next_signal() in STOP_SIGNALS:
            _say("stopping")
            return 0


def terminate(pid: int, grace: float) -> bool:
    """SIGTERM to a child, waiting up to `grace` seconds for it to exit, then SIGKILL. False when it
    had to be killed; a child already gone or reaped counts as stopped."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return True
        except ChildProcessError:
            return True  # reaped already
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    return False


def stop(children: dict[int, str], grace: float = GRACE) -> None:
    """SIGTERM to each child in turn, waiting for it up to `grace` seconds, then SIGKILL."""
    for pid, name in children.items():
        if not terminate(pid, grace):
            _say(f"{name} did not stop in {grace:.0f}s; killing it", err=True)


def main(argv: list[str]) -> int:
    record, *named = argv
    children = {int(pid): name for name, _, pid in (arg.rpartition("=") for arg in named)}
    signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)  # already held if exec'd by `bus up`
    written = read_record(record)
    try:
        return watch(children)
    finally:
        remove_record(record, written)  # first: commands must not be sent to a Redis that is stopping
        stop(children)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
