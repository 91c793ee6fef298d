"""The journal builds what it keeps of an attempt without changing the caller's values (issue #16)."""
from __future__ import annotations

from bus import journal
from bus.journal import Attempt
from bus.journal.store import RESPONSE_KEEP

EVENT = {"id": "e1", "route": "api", "received": 1.0}


def long_attempt() -> dict:
    return {"attempt": 1, "at": 2.0, "duration": 0.1, "status_code": 500, "response": "x" * (RESPONSE_KEEP + 10)}


def test_record_attempt_call_keeps_the_response_cut_and_leaves_the_callers_attempt_whole():
    attempt = long_attempt()
    _, args = journal.record_attempt_call(EVENT, attempt, journal.RETRYING, retry_at=3.0)
    kept = next(a for a in args if isinstance(a, bytes) and a.startswith(b"{"))
    assert kept.count(b"x") == RESPONSE_KEEP
    assert attempt == long_attempt()


def test_a_copys_record_is_cut_in_a_new_value_and_a_short_one_is_not_copied():
    attempt = Attempt.from_record(long_attempt())
    kept = journal.copy_record(attempt)
    assert len(kept.response) == RESPONSE_KEEP and attempt == Attempt.from_record(long_attempt())
    short = Attempt(1, 2.0, response="ok")
    assert journal.copy_record(short) is short
    no_answer = Attempt(1, 2.0, status_code=None, error="ConnectionRefusedError")
    assert journal.copy_record(no_answer) is no_answer
