"""What a delivery of one event came to: the one vocabulary of classify, delivery, the breaker gate
and the task's outcome (pure).

A StrEnum, so a verdict reads as its value wherever it goes today: log lines (text and JSON), the
task's summary ("delivered=2 superseded=1", what Flower shows) and a copy's journaled record.
The enum itself is in bus/lifecycle.py, beside the statuses, so every layer may name a verdict (the
CLI reads a copy's journaled one); it is re-exported here for the worker's modules.
The journal answers in its own words (a script's refusal, hold_back's 'held' or 'due');
from_journal is the one place they become verdicts.
"""
from __future__ import annotations

from ..errors import BusError
from ..lifecycle import DEAD, DELIVERED, Verdict

# Verdicts that leave the event waiting for a later attempt on the bus's schedule: a failed
# attempt, parked behind an open breaker, parked after an internal error.
WAITING_ON_SCHEDULE = (Verdict.RETRY, Verdict.WAITING, Verdict.ERROR)


class UnknownAnswer(BusError):
    """A journal script answered something no verdict stands for (a script and this module disagree)."""


# A script's refusal ('gone', 'superseded', or the final status the event is in) and hold_back's
# two answers ('held' behind the breaker, 'due' on the schedule because it closed meanwhile).
_FROM_JOURNAL = {
    "gone": Verdict.GONE,
    "superseded": Verdict.SUPERSEDED,
    DELIVERED: Verdict.DELIVERED,
    DEAD: Verdict.DEAD,
    "held": Verdict.WAITING,
    "due": Verdict.WAITING,
}


def from_journal(answer: str) -> Verdict:
    """The verdict of an event the journal refused to move, or held back."""
    try:
        return _FROM_JOURNAL[answer]
    except KeyError:
        raise UnknownAnswer(f"journal answered {answer!r}, which is none of {sorted(_FROM_JOURNAL)}") from None
