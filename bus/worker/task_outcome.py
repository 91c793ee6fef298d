"""How a deliver task ends in Celery, and so in Flower: a dead letter fails it, a scheduled retry retries it.

Flower and Celery's own counters only see a task's state. A task that returned "dead=1" showed
as SUCCESS, so no failure count or alert built on them ever fired. Everything is journaled by
the time this runs, and the message is acked however the task ends, so at-least-once is
untouched: under acks_late Celery acks a task that raised (task_acks_on_failure_or_timeout, kept
True in celery_defaults; were it False, Redis's reject without requeue drops the message the
same way) and acks one that raised Retry before anything else (Request.on_retry). A Retry raised
here, unlike Task.retry(), publishes nothing: the event's next attempt comes from the bus's retry
schedule alone, as before.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

from celery.exceptions import Retry

from ..errors import DeadLettered, RetryScheduled
from ..journal import Event
from .verdict import WAITING_ON_SCHEDULE, Verdict

SHOWN = 5  # ids named in a task's exception; the journal has the rest


def summary(counts: dict[Verdict, int]) -> str:
    """The task's summary, what Celery and Flower show as its result: 'delivered=2 superseded=1'."""
    return " ".join(f"{verdict}={n}" for verdict, n in sorted(counts.items()))


def tally(counts: dict[Verdict, int], ids: dict[Verdict, list[str]], event_ids: list[str],
          verdicts: list[Verdict]) -> None:
    """Count each event's verdict for the task's summary (`counts`) and name it for finish (`ids`)."""
    for event_id, verdict in zip(event_ids, verdicts):
        counts[verdict] = counts.get(verdict, 0) + 1
        ids.setdefault(verdict, []).append(event_id)


def out_of_time(event_ids: list[str], events: list[Event | None], settled: Mapping[str, Verdict]
                ) -> tuple[list[Event], list[Verdict]]:
    """The group's events left when the task's deadline passed: those to hand to a new message, and
    each id's verdict for the summary. One the task held back as it started (Breakers.hold_ahead,
    `settled`) already waits in the journal, so it keeps that verdict (WAITING behind its breaker)
    instead of being counted as handed off; one with no record (None) is MISSING, as the loop says."""
    rest = [e for e in events if e is not None and e.id not in settled]
    verdicts = [settled[i] if i in settled else Verdict.MISSING if e is None else Verdict.HANDED_OFF
                for i, e in zip(event_ids, events)]
    return rest, verdicts


def finish(summary: str, ids: dict[Verdict, list[str]], last_answers: Callable[[list[str]], list[str]]) -> str:
    """The task's result when every event was delivered or left alone; else raise what Flower should show.

    `ids` maps each verdict to its event ids; `last_answers(ids)` gives each dead event's last answer
    (a status code or an error), read from the journal only when there are dead events."""
    dead = ids.get(Verdict.DEAD, [])
    if dead:
        shown = dead[:SHOWN]
        answers = last_answers(shown)
        named = ", ".join(f"{i} (last answer: {a or 'none'})" for i, a in zip(shown, answers))
        more = f" and {len(dead) - SHOWN} more" if len(dead) > SHOWN else ""
        raise DeadLettered(f"{summary}: status dead for event {named}{more}; see `bus events ID`, fix the "
                           f"endpoint or route, then `bus replay --id ID`")
    waiting = [i for verdict in WAITING_ON_SCHEDULE for i in ids.get(verdict, [])]
    if waiting:
        more = f" and {len(waiting) - SHOWN} more" if len(waiting) > SHOWN else ""
        reason = RetryScheduled(f"{summary}: status retrying for event {', '.join(waiting[:SHOWN])}{more}; "
                                f"the bus's retry schedule sends the next attempt as a new task")
        raise Retry(message=str(reason), exc=reason)
    return summary
