"""Delivery end to end: real Redis, real `bus serve` and `bus worker`, a real receiver."""
from __future__ import annotations

import json
import time
import uuid

import orjson
import pytest

from bus import journal
from conftest import wait_until, waiting_for_a_task


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def test_posted_event_arrives_as_json_with_x_request_id_equal_to_accepted_id(bus):
    name = unique()
    resp = bus.post(f"api.{name}", json.dumps({"order": 42}))
    assert resp.status_code == 202
    (event_id,) = resp.json()["ids"]
    (got,) = wait_until(lambda: bus.receiver.to(f"/api/{name}/"), 15, what="the event at the receiver")
    assert got.headers["X-Request-Id"] == event_id
    assert got.headers["X-Bus-Tag"] == f"api.{name}"
    assert got.headers["X-Bus-Attempt"] == "1"
    assert got.headers["Content-Type"] == "application/json"
    assert json.loads(got.body) == {"order": 42}


def test_accepted_event_is_in_redis_before_the_answer(bus):
    # 202 is only sent once the journal record exists and the event waits in its route's queue
    # (in a task message, or on the pending list the route's next task takes it from).
    resp = bus.post("parked.x", '{"a": 1}')
    (event_id,) = resp.json()["ids"]
    client = bus.redis.client()
    record = journal.load(client, event_id)
    assert record["tag"] == "parked.x" and record["route"] == "parked"
    assert orjson.loads(record["body"]) == {"a": 1}
    assert event_id in waiting_for_a_task(client, "parked")


def test_json_array_is_one_batch_each_event_delivered_on_its_own(bus):
    name = unique()
    resp = bus.post(f"api.{name}", json.dumps([{"n": i} for i in range(5)]))
    assert resp.status_code == 202
    ids = resp.json()["ids"]
    assert len(ids) == len(set(ids)) == 5
    wait_until(lambda: len(bus.receiver.to(f"/api/{name}/")) == 5, 15, what="5 events")
    assert sorted(bus.receiver.ids(f"/api/{name}/")) == sorted(ids)
    assert sorted(json.loads(r.body)["n"] for r in bus.receiver.to(f"/api/{name}/")) == list(range(5))


def test_ndjson_body_is_a_batch(bus):
    name = unique()
    resp = bus.post(f"api.{name}", '{"n": 1}\n{"n": 2}\n', content_type="application/x-ndjson")
    assert resp.status_code == 202 and len(resp.json()["ids"]) == 2
    wait_until(lambda: len(bus.receiver.to(f"/api/{name}/")) == 2, 15, what="2 events")


def test_503_is_retried_with_the_same_id_until_accepted(bus):
    name = unique()
    bus.receiver.script(f"/api/{name}/", 503, 503)
    (event_id,) = bus.post(f"api.{name}", "{}").json()["ids"]
    wait_until(lambda: len(bus.receiver.to(f"/api/{name}/")) == 3, 20, what="three attempts")
    got = bus.receiver.to(f"/api/{name}/")
    assert [r.headers["X-Bus-Attempt"] for r in got] == ["1", "2", "3"]
    assert {r.headers["X-Request-Id"] for r in got} == {event_id}
    # Backoff starts at 1 s, with jitter that never goes under half of it.
    assert got[1].at - got[0].at >= 0.45
    wait_until(lambda: journal.load(bus.redis.client(), event_id)["status"] == journal.DELIVERED, 5, what="delivered")
    assert len(journal.attempts(bus.redis.client(), event_id)) == 3


def test_retry_after_from_a_429_is_honoured(bus):
    name = unique()
    bus.receiver.script(f"/api/{name}/", (429, {"Retry-After": "2"}, b"slow down"))
    bus.post(f"api.{name}", "{}")
    wait_until(lambda: len(bus.receiver.to(f"/api/{name}/")) == 2, 20, what="the retry")
    first, second = bus.receiver.to(f"/api/{name}/")
    assert second.at - first.at >= 1.9


def test_422_is_dead_lettered_at_once_with_the_response_kept(bus):
    name = unique()
    bus.receiver.script(f"/api/{name}/", (422, {}, b'{"error": "bad order"}'))
    (event_id,) = bus.post(f"api.{name}", "{}").json()["ids"]
    client = bus.redis.client()
    wait_until(lambda: journal.load(client, event_id)["status"] == journal.DEAD, 15, what="dead letter")
    (attempt,) = journal.attempts(client, event_id)
    assert attempt["status_code"] == 422
    assert "bad order" in attempt["response"]
    time.sleep(1.5)  # longer than the first backoff: a retry would have shown up by now
    assert len(bus.receiver.to(f"/api/{name}/")) == 1


def test_max_attempts_parks_the_event_as_dead(bus):
    name = unique()
    bus.receiver.script(f"/limited/limited.{name}", 500, 500, 500, 500)
    (event_id,) = bus.post(f"limited.{name}", "{}").json()["ids"]
    client = bus.redis.client()
    wait_until(lambda: journal.load(client, event_id)["status"] == journal.DEAD, 20, what="dead after 3 attempts")
    assert len(bus.receiver.to(f"/limited/limited.{name}")) == 3


def test_receiver_down_then_up_delivers_all_30_events_each_once(bus):
    """The seed article's test: stop the service, send 30 events, wait, start it again."""
    name = unique()
    bus.receiver.stop()
    try:
        ids = [bus.post(f"api.{name}", json.dumps({"n": i})).json()["ids"][0] for i in range(30)]
        time.sleep(4)  # every event has failed at least once against the closed port
    finally:
        bus.receiver.start()
    wait_until(lambda: len(set(bus.receiver.ids(f"/api/{name}/"))) == 30, 30, what="all 30 events after the outage")
    time.sleep(2.5)  # anything sent twice would arrive within one more backoff step
    got = bus.receiver.ids(f"/api/{name}/")
    assert sorted(got) == sorted(ids), "each event exactly once"
    client = bus.redis.client()
    failed = [a for i in ids for a in journal.attempts(client, i) if a["status_code"] is None]
    assert failed, "the outage really was hit"
    # The route's breaker holds the rest back: the dead port saw a handful of attempts, not one per event.
    assert len(failed) <= 12, f"{len(failed)} attempts against the closed port"


def test_a_redelivered_task_of_a_delivered_event_is_not_sent_again(bus):
    from bus.broker.messages import delivery_message

    name = unique()
    (event_id,) = bus.post(f"api.{name}", "{}").json()["ids"]
    wait_until(lambda: bus.receiver.to(f"/api/{name}/"), 15, what="first delivery")
    client = bus.redis.client()
    wait_until(lambda: journal.load(client, event_id)["status"] == journal.DELIVERED, 5, what="delivered")
    # What a crash after the POST but before the ack leaves behind: the same task again.
    client.lpush("bus.api", delivery_message([(event_id, f"api.{name}")], "bus.api", task_id=str(uuid.uuid4())))
    wait_until(lambda: client.llen("bus.api") == 0, 10, what="the worker to take the task")
    time.sleep(1)
    assert len(bus.receiver.to(f"/api/{name}/")) == 1


def test_worker_consumes_only_the_queues_of_its_routes(bus):
    client = bus.redis.client()
    (parked,) = bus.post("parked.y", "{}").json()["ids"]
    name = unique()
    bus.post(f"api.{name}", "{}")
    wait_until(lambda: bus.receiver.to(f"/api/{name}/"), 15, what="api event")
    assert parked in waiting_for_a_task(client, "parked")
    assert not bus.receiver.to("/parked/")


def test_an_event_its_changed_route_can_no_longer_address_is_dead_lettered(bus, tmp_path):
    """Routes are read at start-up: a worker started after a route change meets events accepted before it."""
    import shutil

    from conftest import bus_env, start_worker

    client = bus.redis.client()
    (event_id,) = bus.post("parked.orders", "{}").json()["ids"]
    routes = tmp_path / "routes"
    shutil.copytree(bus.routes_dir, routes)
    (routes / "parked.toml").write_text(f'match = "parked.*"\nendpoint = "{bus.receiver.url}/parked/${{tag[5]}}"\n')
    worker = start_worker(bus_env(bus.redis.url, routes), tmp_path / "worker.log", "parked")
    try:
        wait_until(lambda: journal.load(client, event_id)["status"] == journal.DEAD, 20, what="dead letter")
        (attempt,) = journal.attempts(client, event_id)
        assert "has no part [5]" in attempt["error"]
    finally:
        worker.stop()


def journaled_without_a_task(client, name: str, n: int) -> list[str]:
    """n events of api.<name> in the journal with no task message yet (the route's filling flag held,
    their pending entries taken back): the test queues their messages itself."""
    from bus.events import new_id

    events = [journal.NewEvent(new_id(), f"api.{name}", "api", b'{"n": %d}' % i, time.time()) for i in range(n)]
    client.set(journal.filling_key("api"), "1", px=30_000)
    journal.accept(client, events)
    for event in events:
        client.lrem(journal.pending_key("api"), 0, f"{event.id} {event.tag}")
    client.delete(journal.filling_key("api"))
    return [e.id for e in events]


def test_a_lost_task_that_comes_back_leaves_its_events_to_the_copy_recovery_made(bus):
    """What a Redis outage can leave behind: a message requeued (marked redelivered) and, for each of its
    events, the copy lost-task recovery made, which the event's record now names. Run by the worker's
    two pool processes at once, each event is sent once: by recovery's copy."""
    from bus.broker.messages import delivery_message

    name = unique()
    path = f"/api/{name}/"
    bus.receiver.delays[path] = 0.3
    client = bus.redis.client()
    ids = journaled_without_a_task(client, name, 4)
    pipe = client.pipeline(transaction=True)
    copies = []
    for event_id in ids:  # what journal.requeue_lost leaves: the record names the copy
        copy = str(uuid.uuid4())
        pipe.hset(journal.event_key(event_id), "task", copy)
        copies.append(delivery_message([(event_id, f"api.{name}")], "bus.api", task_id=copy, redelivered=True))
    pipe.lpush("bus.api", delivery_message([(i, f"api.{name}") for i in ids], "bus.api", task_id=ids[0],
                                           redelivered=True), *copies)
    pipe.execute()
    wait_until(lambda: all(journal.load(client, i)["status"] == journal.DELIVERED for i in ids), 20,
               what="every event delivered")
    time.sleep(1)
    assert sorted(bus.receiver.ids(path)) == sorted(ids), "each event was sent once"
    worker_log = (bus.tmp / "worker.log").read_text()
    assert all(f"event {i} is no longer this task's to send" in worker_log for i in ids)


@pytest.mark.parametrize("done", ["attempted", "parked"])
def test_a_message_restored_after_its_work_was_done_leaves_its_events_to_the_retry_schedule(bus, done):
    """Redis restores a message from `unacked` when its ack was lost (a crash right after the attempt
    or the park was recorded). Its event waits on the retry schedule, which will send it in a message
    of its own: the restored one must not send it too (the two would race: a duplicate)."""
    from bus.broker.messages import delivery_message

    name = unique()
    path = f"/api/{name}/"
    client = bus.redis.client()
    (event_id,) = journaled_without_a_task(client, name, 1)
    later = time.time() + 3600
    if done == "attempted":
        journal.record_attempt(client, journal.load(client, event_id),
                               {"attempt": 1, "at": time.time(), "duration": 0.0, "status_code": 503},
                               journal.RETRYING, retry_at=later)
    else:
        journal.park(client, journal.load(client, event_id), later)
    client.lpush("bus.api", delivery_message([(event_id, f"api.{name}")], "bus.api", task_id=event_id,
                                             redelivered=True))
    said = f"event {event_id} is no longer this task's to send"
    wait_until(lambda: said in (bus.tmp / "worker.log").read_text() or bus.receiver.ids(path), 20,
               what="the restored message to run")
    assert bus.receiver.ids(path) == [], "the restored message sent nothing"
    client.zadd(journal.retry_key("api"), {event_id: time.time()}, xx=True)  # now due
    wait_until(lambda: journal.load(client, event_id)["status"] == journal.DELIVERED, 20, what="the retry")
    time.sleep(0.5)
    assert bus.receiver.ids(path) == [event_id]
