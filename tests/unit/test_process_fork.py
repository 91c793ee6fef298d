"""A pool process forked while another thread of the worker's main process holds process._lock
(the retry schedule takes it every pass) starts with the lock free, not waiting on it forever."""
from __future__ import annotations

import os

from bus.worker import process


def test_a_child_forked_while_the_lock_is_held_can_take_it():
    with process._lock:
        pid = os.fork()
        if pid == 0:  # the child: exit status 0 only if the lock is free here
            free = False
            try:
                free = process._lock.acquire(blocking=False)
            finally:  # whatever happens, the child never goes on to run the rest of the session
                os._exit(0 if free else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
