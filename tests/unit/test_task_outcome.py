"""How a deliver task ends for Celery and Flower (task_outcome.finish), without servers."""
from __future__ import annotations

import pytest
from celery.exceptions import Retry

from bus.errors import DeadLettered, RetryScheduled
from bus.worker.task_outcome import finish


def never_read(ids: list[str]) -> list[str]:
    raise AssertionError("the journal is read only for dead events")


def test_a_task_whose_events_are_delivered_or_left_alone_returns_its_summary():
    assert finish("delivered=2 superseded=1", {"delivered": ["a", "b"], "superseded": ["c"]}, never_read) == \
        "delivered=2 superseded=1"


def test_a_dead_event_fails_the_task_naming_the_status_the_event_and_its_last_answer():
    with pytest.raises(DeadLettered) as failed:
        finish("dead=1 retry=1", {"dead": ["e1"], "retry": ["e2"]}, lambda ids: ["404"] * len(ids))
    assert "status dead for event e1 (last answer: 404)" in str(failed.value)
    assert "bus replay --id" in str(failed.value)


def test_many_dead_events_name_the_first_five_and_count_the_rest():
    with pytest.raises(DeadLettered, match=r"e4 \(last answer: 500\) and 2 more"):
        finish("dead=7", {"dead": [f"e{i}" for i in range(7)]}, lambda ids: ["500"] * len(ids))


@pytest.mark.parametrize("verdict", ["retry", "waiting", "error"])
def test_an_event_left_on_the_retry_schedule_retries_the_task_without_a_celery_retry_message(verdict):
    with pytest.raises(Retry) as retried:
        finish(f"{verdict}=1", {verdict: ["e1"]}, never_read)
    assert isinstance(retried.value.exc, RetryScheduled)
    assert "status retrying for event e1" in str(retried.value)
    assert retried.value.sig is None, "nothing is published: the bus's schedule sends the next attempt"
