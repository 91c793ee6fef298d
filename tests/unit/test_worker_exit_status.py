"""bus worker's exit status from Celery's exit code and what its worker went through (bus/cli/worker_exit.py)."""
from __future__ import annotations

import pytest

from bus.cli.worker_exit import Seen, status


@pytest.mark.parametrize("sig, code", [("SIGTERM", 0), ("SIGINT", 1), ("SIGTERM", None)])
def test_a_stop_asked_for_with_sigterm_or_sigint_is_0_whatever_celery_says(sig, code):
    assert status(code, Seen(ready=True, stop_signal=sig)) == (0, None)
    assert status(code, Seen(ready=False, stop_signal=sig)) == (0, None), "waiting for Redis, then stopped"


def test_a_ready_worker_that_stopped_cleanly_on_its_own_is_0():
    assert status(0, Seen(ready=True)) == (0, None)


@pytest.mark.parametrize("seen, code, says", [
    (Seen(error="ReadOnlyError: You can't write against a read only replica."), 1,
     "the worker did not start: ReadOnlyError: You can't write against a read only replica. (Celery's exit status 1)"),
    (Seen(), 0, "the worker did not start (Celery's exit status 0)"),
    (Seen(), None, "the worker did not start (Celery's exit status None)"),
    (Seen(ready=True, error="OSError: boom"), 1, "the worker stopped on its own: OSError: boom"),
    (Seen(ready=True, stop_signal="SIGQUIT"), 1, "the worker was stopped with SIGQUIT (Celery's exit status 1)"),
])
def test_anything_else_is_1_with_one_line_saying_what(seen, code, says):
    got, line = status(code, seen)
    assert got == 1 and line is not None and says in line and "\n" not in line
