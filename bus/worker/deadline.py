"""A deadline as an object: an attempt's (open_timeout + read_timeout), which every blocking socket step
takes its timeout from, and a task's group's (group_run.group_deadline: no attempt starts after it).

A per-read timeout alone lets a receiver that sends a byte every second hold a worker for
ever, and outlive the visibility timeout routes.py sized for open_timeout + read_timeout
(the task is then handed to a second worker: a duplicate on top of a stuck one). Bounding
each connect, handshake, send and read by what is left of the attempt holds in every pool
(prefork, solo, threads, gevent), where a SIGALRM timer held only in a process's main
thread, and it never raises in the middle of anything but a socket call.
"""
from __future__ import annotations

import time
from dataclasses import dataclass


class AttemptDeadline(Exception):
    """The whole attempt took longer than open_timeout + read_timeout (not an OSError: nothing on the way may
    take it for a network error and go on)."""


@dataclass(frozen=True)
class Deadline:
    seconds: float
    at: float  # time.monotonic() when the attempt (or the group's last start) must be over

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(seconds, time.monotonic() + seconds)

    def timeout(self, limit: float) -> float:
        """The timeout of the next blocking step: its own `limit`, or what is left of the attempt if less."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise self.expired()
        return min(limit, left)

    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def expired(self) -> AttemptDeadline:
        return AttemptDeadline(f"no complete answer within {self.seconds:g}s (open_timeout + read_timeout)")
