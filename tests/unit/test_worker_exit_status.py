"""bus worker's exit status from Celery's exit code and what its worker went through (bus/cli/worker_exit.py)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from bus.cli.worker_exit import Seen, status


def seen(code: int | None, **what: object) -> Seen:
    """What was seen, with a worker whose exit code Celery set to `code` (None: no worker was made)."""
    return Seen(worker=None if code is None else SimpleNamespace(exitcode=code), **what)  # type: ignore[arg-type]


@pytest.mark.parametrize("sig, code", [("SIGTERM", 0), ("SIGINT", 1), ("SIGTERM", None)])
def test_a_stop_asked_for_with_sigterm_or_sigint_is_0_whatever_celery_says(sig, code):
    assert status(seen(code, ready=True, stop_signal=sig)) == (0, None)
    assert status(seen(code, ready=False, stop_signal=sig)) == (0, None), "waiting for Redis, then stopped"


def test_a_ready_worker_that_stopped_cleanly_on_its_own_is_0():
    assert status(seen(0, ready=True)) == (0, None)


@pytest.mark.parametrize("what, says", [
    (seen(1, error="ReadOnlyError: You can't write against a read only replica."),
     "the worker did not start: ReadOnlyError: You can't write against a read only replica. (Celery's exit status 1)"),
    (seen(0), "the worker did not start (Celery's exit status 0)"),
    (seen(None), "the worker did not start (Celery's exit status None)"),
    (seen(1, ready=True, error="OSError: boom"), "the worker stopped on its own: OSError: boom"),
    (seen(1, ready=True, stop_signal="SIGQUIT"), "the worker was stopped with SIGQUIT (Celery's exit status 1)"),
])
def test_anything_else_is_1_with_one_line_saying_what(what, says):
    got, line = status(what)
    assert got == 1 and line is not None and says in line and "\n" not in line
