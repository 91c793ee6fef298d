"""The moves bus/lifecycle.py's table does not have are refused by the journal's scripts themselves.

Each test builds the race by hand on the session's real Redis, on the `parked` route (no worker
consumes it): two workers, or a worker and a purge, cannot be made to interleave at one exact
instruction, so the tests call the journal's moves (and, for the breaker, delivery's own function)
in the order the race would run them, each with the copy of the event its caller would hold.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from bus import endpoints, journal, settings
from bus.broker.messages import delivery_message, outgoing
from bus.routes import load_configured
from bus.wire.pipelined import SharedPipe
from bus.worker import delivery, outbound
from bus.worker.breaker_gate import Breakers
from bus.worker.deadline import Deadline
from bus.worker.group_run import GroupRun
from conftest import parked_tag

ANSWERED = {"attempt": 1, "duration": 0.01, "status_code": 200}
FAILED = {"attempt": 1, "duration": 0.01, "status_code": 503}


@pytest.fixture
def client(bus):
    return bus.redis.client()


def accepted(bus, client) -> str:
    (event_id,) = bus.post(parked_tag(), "{}").json()["ids"]
    assert journal.load(client, event_id)["status"] == journal.QUEUED
    return event_id


def copy_for(client, event_id: str, task_id: str) -> str:
    """What lost-task recovery does: a redelivered copy of the event's message, named in its record."""
    data = delivery_message([(event_id, "parked.x")], "bus.parked", task_id=task_id, redelivered=True)
    copy = outgoing([(event_id, "parked.x")], "bus.parked", task_id, redelivered=True)
    assert journal.requeue_lost(client, event_id, "parked", copy)
    client.lrem("bus.parked", 0, data)  # no worker takes it; the test plays its copies by hand
    return task_id


def indexes_holding(client, event_id: str) -> list[str]:
    return [s for s in journal.STATUSES
            if client.zscore(journal.index_key(s), event_id) is not None
            or client.zscore(journal.index_key(s, "parked"), event_id) is not None]


def attempt(**fields) -> dict:
    return {**ANSWERED, "at": time.time(), **fields}


def test_a_stale_park_of_an_event_delivered_meanwhile_is_refused_and_changes_nothing(bus, client):
    event_id = accepted(bus, client)
    stale = journal.load(client, event_id)
    assert journal.record_attempt(client, journal.load(client, event_id), attempt(), journal.DELIVERED) is None

    assert journal.park(client, stale, time.time() + 60) == journal.DELIVERED
    record = journal.load(client, event_id)
    assert (record["status"], record["attempts"]) == (journal.DELIVERED, 1)
    assert client.zscore(journal.retry_key("parked"), event_id) is None, "not put back on the schedule"
    assert indexes_holding(client, event_id) == [journal.DELIVERED]


def test_a_park_by_a_task_after_another_copy_of_its_message_parked_the_event_is_refused(bus, client):
    event_id = accepted(bus, client)
    task = copy_for(client, event_id, "copy-of-a-lost-message")
    first, second = journal.load(client, event_id), journal.load(client, event_id)

    assert journal.park(client, first, time.time() + 60, task=task) is None
    assert journal.park(client, second, time.time() + 1, task=task) == "superseded"
    assert client.zscore(journal.retry_key("parked"), event_id) == pytest.approx(time.time() + 60, abs=5), \
        "the first park's time stands"
    assert indexes_holding(client, event_id) == [journal.RETRYING]


def test_an_attempt_moves_the_event_out_of_the_status_it_is_in_not_the_one_its_caller_loaded(bus, client):
    event_id = accepted(bus, client)
    task = copy_for(client, event_id, "copy-for-two-attempts")
    first, second = journal.load(client, event_id), journal.load(client, event_id)

    assert journal.record_attempt(client, first, attempt(**FAILED), journal.RETRYING, retry_at=time.time() + 60) is None
    assert second["status"] == journal.QUEUED and task
    assert journal.record_attempt(client, second, attempt(), journal.DELIVERED) is None
    assert indexes_holding(client, event_id) == [journal.DELIVERED], "not left in the retrying indexes too"
    assert len(journal.attempts(client, event_id)) == 2, "both attempts went out; both are kept"


def test_an_attempt_recorded_after_recovery_named_a_copy_is_kept_and_the_copy_leaves_the_event(bus, client):
    """The attempt has gone out: refusing to record it would make recovery's copy send it again."""
    event_id = accepted(bus, client)
    running = copy_for(client, event_id, "lost-but-still-running")
    sending = journal.load(client, event_id)
    copy = copy_for(client, event_id, "recovery-copy")

    assert running != copy and journal.record_attempt(client, sending, attempt(), journal.DELIVERED) is None
    assert journal.recheck(client, [journal.load(client, event_id)], copy) == [journal.DELIVERED]


def test_a_record_attempt_from_a_delivered_or_dead_event_is_refused(bus, client):
    event_id = accepted(bus, client)
    stale = journal.load(client, event_id)
    assert journal.record_attempt(client, journal.load(client, event_id), attempt(status_code=422), journal.DEAD) is None

    assert journal.record_attempt(client, stale, attempt(**FAILED), journal.RETRYING, retry_at=time.time()) == journal.DEAD
    assert journal.load(client, event_id)["status"] == journal.DEAD
    assert client.zscore(journal.retry_key("parked"), event_id) is None
    assert indexes_holding(client, event_id) == [journal.DEAD]


def test_a_purge_of_an_event_delivered_since_it_was_listed_leaves_it_alone(bus, client):
    event_id = accepted(bus, client)
    journal.park(client, journal.load(client, event_id), time.time() + 60)
    listed = journal.summaries(client, [event_id])  # bus purge --status retrying lists it
    assert listed[0]["status"] == journal.RETRYING
    journal.record_attempt(client, journal.load(client, event_id), attempt(), journal.DELIVERED)  # a worker, meanwhile

    assert journal.purge(client, listed) == [event_id], "left, and said so"
    assert journal.load(client, event_id)["status"] == journal.DELIVERED
    assert indexes_holding(client, event_id) == [journal.DELIVERED]


def test_an_attempt_recorded_after_a_purge_makes_no_record_again(bus, client):
    """A worker sending the event while `bus purge` deletes it: its record_attempt comes last."""
    event_id = accepted(bus, client)
    sending = journal.load(client, event_id)
    journal.park(client, journal.load(client, event_id), time.time() + 60)

    assert journal.purge(client, journal.summaries(client, [event_id])) == []
    assert journal.record_attempt(client, sending, attempt(**FAILED), journal.RETRYING, retry_at=time.time()) == "gone"
    assert journal.park(client, sending, time.time() + 60) == "gone"
    assert client.keys(f"{journal.event_key(event_id)}*") == [], "no half record, no attempt log"
    assert indexes_holding(client, event_id) == []
    assert client.zscore(journal.retry_key("parked"), event_id) is None


def test_a_replay_of_an_event_delivered_since_it_was_listed_queues_nothing(bus, client):
    event_id = accepted(bus, client)
    journal.park(client, journal.load(client, event_id), time.time() + 60)
    listed = journal.summaries(client, [event_id])
    journal.record_attempt(client, journal.load(client, event_id), attempt(), journal.DELIVERED)
    message = outgoing([(event_id, "parked.x")], "bus.parked", "replayed-too-late")
    queued = client.llen("bus.parked")

    assert journal.requeue(client, listed, [(message, "parked")]) == 0
    assert journal.load(client, event_id)["status"] == journal.DELIVERED
    assert client.llen("bus.parked") == queued, "no message for an event it did not requeue"


@pytest.fixture
def worker(bus):
    config = settings.load(bus.env)
    w = delivery.Worker(settings=config, router=load_configured(config),
                        redis=journal.connect(config.redis, config.redis_timeout),
                        pipe=SharedPipe(config.redis, config.redis_timeout), pools=outbound.Pools(config.outbound))
    yield w
    w.pipe.close()


def open_breaker(w, event: dict) -> Breakers:
    """The task's view of the event's endpoint: its breaker open for another minute."""
    key = endpoints.key_for("parked", w.router.by_name["parked"].endpoint.render(event["tag"]))
    return Breakers(w.redis, {key.digest: time.time() + 60})


def redelivered_task(task_id: str) -> SimpleNamespace:
    """The request Celery gives a task that runs a message kombu restored (or recovery copied)."""
    return SimpleNamespace(request=SimpleNamespace(id=task_id, retries=0,
                                                   delivery_info={"redelivered": True, "routing_key": "bus.parked"}))


def run_of(task, w, gate: Breakers) -> GroupRun:
    """The run of that task over its group of the `parked` route, as deliver() begins it."""
    return GroupRun.begin(task, w, "parked", Deadline.after(60), gate, None, False)


def test_with_the_breaker_open_a_redelivered_copy_cannot_park_an_event_another_copy_delivered(bus, client, worker):
    """Two copies of one message (kombu restored it while the first still ran): both loaded the
    event; the first delivered it; the second finds its endpoint's breaker open. Its park comes
    before delivery's recheck, so only park's own check stands between it and moving a delivered
    event back onto the retry schedule (a second delivery). Driven through delivery._deliver_one,
    the function a task runs per event, with the request Celery would give the second copy."""
    event_id = accepted(bus, client)
    task = copy_for(client, event_id, "restored-message")
    second_copy = journal.load(client, event_id)
    journal.record_attempt(client, journal.load(client, event_id), attempt(), journal.DELIVERED)  # the first copy

    verdict = delivery._deliver_one(run_of(redelivered_task(task), worker, open_breaker(worker, second_copy)),
                                    journal.Event.from_record(second_copy))
    assert verdict == journal.DELIVERED, "left alone: it is delivered"
    record = journal.load(client, event_id)
    assert (record["status"], record["attempts"]) == (journal.DELIVERED, 1)
    assert client.zscore(journal.retry_key("parked"), event_id) is None, "not on the retry schedule"
    assert indexes_holding(client, event_id) == [journal.DELIVERED]


def test_with_the_breaker_open_a_redelivered_copy_still_parks_an_event_that_is_its_own(bus, client, worker):
    event_id = accepted(bus, client)
    task = copy_for(client, event_id, "restored-message-alone")

    event = journal.load(client, event_id)
    verdict = delivery._deliver_one(run_of(redelivered_task(task), worker, open_breaker(worker, event)),
                                    journal.Event.from_record(event))
    assert verdict == "waiting"
    assert journal.load(client, event_id)["status"] == journal.RETRYING
    assert client.zscore(journal.retry_key("parked"), event_id) is not None, \
        "its breaker (no longer in Redis) closed meanwhile: due on the retry schedule"
