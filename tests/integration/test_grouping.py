"""Single events travel in groups: events accepted while a task of their route is on its way wait
on the route's pending list, and the next task of the route to start takes up to GROUP_SIZE of
them along in a message of their own. Each event keeps its own id, record and attempts; Flower
still sees which events a task carries (argsrepr). Real Redis throughout; the last test runs the
real ingress and worker against a slow receiver."""
from __future__ import annotations

import concurrent.futures
import json
import re
import time
import uuid

import orjson
import pytest

from bus import journal
from bus.broker.messages import GROUP_SIZE, delivery_message, event_ids_of
from bus.routes import load_routes
from bus.wire.pipelined import SharedPipe
from bus.worker import recovery, scheduler
from conftest import wait_until

DB = 10  # a database of its own on the session Redis: these tests drive the journal by hand
ROUTE = "grp"


@pytest.fixture()
def client(bus):
    client = journal.connect(bus.redis.url.rsplit("/", 1)[0] + f"/{DB}", 5)
    client.flushdb()
    yield client
    client.flushdb()


def accept(client, n: int = 1) -> list[str]:
    events = [journal.NewEvent(str(uuid.uuid4()), f"{ROUTE}.t{i}", ROUTE, b"{}", time.time()) for i in range(n)]
    journal.accept(client, events)
    return [e.id for e in events]


def messages(client) -> list[dict]:
    """The route's task messages in the order workers take them (kombu BRPOPs the right end)."""
    return [orjson.loads(m) for m in reversed(client.lrange(journal.queue_name(ROUTE), 0, -1))]


def task_starts(client) -> None:
    """What a worker does as a task of the route starts (before it sends anything)."""
    kwargs = client.connection_pool.connection_kwargs
    pipe = SharedPipe(f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs['db']}", 5)
    try:
        journal.load_many(pipe, [], ROUTE)
    finally:
        pipe.close()


def test_an_event_arriving_when_no_task_is_coming_gets_its_own_task_at_once(client):
    (first,) = accept(client)
    (message,) = messages(client)
    assert event_ids_of(message) == [first]
    assert journal.pending_ids(client, ROUTE) == []


def test_events_arriving_while_a_task_is_coming_wait_and_the_next_task_start_takes_them_in_groups(client):
    (first,) = accept(client)
    later = [accept(client)[0] for _ in range(GROUP_SIZE + 5)]
    assert [event_ids_of(m) for m in messages(client)] == [[first]], "no task per event while one is coming"
    assert journal.pending_ids(client, ROUTE) == later

    task_starts(client)
    assert [event_ids_of(m) for m in messages(client)] == [[first], later[:GROUP_SIZE]]
    task_starts(client)
    assert [event_ids_of(m) for m in messages(client)] == [[first], later[:GROUP_SIZE], later[GROUP_SIZE:]]
    assert journal.pending_ids(client, ROUTE) == []

    task_starts(client)  # nothing pending: the next event need not wait for anyone
    (alone,) = accept(client)
    assert event_ids_of(messages(client)[-1]) == [alone]


def test_a_batch_is_split_into_groups_in_the_order_it_arrived(client):
    ids = accept(client, 2 * GROUP_SIZE + 3)
    assert [event_ids_of(m) for m in messages(client)] == [ids[:GROUP_SIZE]]
    task_starts(client)
    task_starts(client)
    assert [i for m in messages(client) for i in event_ids_of(m)] == ids


def test_a_group_message_is_the_message_celery_and_flower_expect(client):
    accept(client)
    ids = accept(client, 7)
    task_starts(client)
    built = messages(client)[-1]
    expected = orjson.loads(delivery_message([(i, f"{ROUTE}.t{n}") for n, i in enumerate(ids)],
                                             journal.queue_name(ROUTE)))
    assert built == expected
    assert built["headers"]["argsrepr"].startswith(f"7 events: {ROUTE}.t0 {ids[0]} attempt 1, ")


def test_pending_events_are_not_taken_for_lost_tasks(client):
    (first,) = accept(client)
    accept(client, 3)
    assert recovery.missing_tasks(client) == set()
    client.delete(journal.queue_name(ROUTE))  # the first event's task is lost; the pending ones wait for the next
    assert recovery.missing_tasks(client) == {first}


def test_the_mover_gives_pending_events_a_task_when_theirs_was_lost(bus, client, tmp_path):
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / f"{ROUTE}.toml").write_text(f'match = "{ROUTE}.*"\nendpoint = "http://127.0.0.1:9/x"\n')
    route = load_routes(routes, 60, {}).by_name[ROUTE]
    accept(client)
    waiting = accept(client, 4)
    client.delete(journal.queue_name(ROUTE))
    scheduler.tick(client, [route], mover="test")
    assert messages(client) == [], "a task may still be on its way while the flag lives"
    client.delete(f"bus:filling:{ROUTE}")  # what expiry does FILLING_MS after the last task was queued
    scheduler.tick(client, [route], mover="test")
    assert [event_ids_of(m) for m in messages(client)] == [waiting]


def test_single_events_to_a_slow_endpoint_share_tasks_and_each_arrives_once(bus):
    """30 single-event requests while each delivery takes 0.2 s: they travel in a handful of tasks."""
    name = f"g{uuid.uuid4().hex[:10]}"
    path = f"/api/{name}/"
    bus.receiver.delays[path] = 0.2
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda n: bus.post(f"api.{name}", json.dumps({"n": n})), range(30)))
    assert [a.status_code for a in answers] == [202] * 30
    ids = [a.json()["ids"][0] for a in answers]
    wait_until(lambda: len(bus.receiver.to(path)) >= 30, 30, what="30 events at the receiver")
    time.sleep(0.5)
    got = bus.receiver.to(path)
    assert sorted(r.headers["X-Request-Id"] for r in got) == sorted(ids), "each event once, under its own id"
    assert {r.headers["X-Bus-Attempt"] for r in got} == {"1"}
    assert sorted(json.loads(r.body)["n"] for r in got) == list(range(30))
    # A group's task is named after its first event: count the tasks that carried these events.
    log = (bus.tmp / "worker.log").read_text()
    tasks = set(re.findall(r"Task bus\.deliver\[([0-9a-f-]+)\] received", log)) & set(ids)
    assert 1 <= len(tasks) <= 15, f"{len(tasks)} tasks for 30 events"


class PopsBetweenReads:
    """The client, except that a task starts (taking a group off the pending list) right after
    the first read of the list: what recovery's scan can meet on a busy route."""

    def __init__(self, client, popped: int):
        self.client, self.popped = client, popped

    def __getattr__(self, name):
        return getattr(self.client, name)

    def lrange(self, key, start, end):
        chunk = self.client.lrange(key, start, end)
        if self.popped:
            self.client.lpop(key, self.popped)
            self.popped = 0
        return chunk


def test_recovery_sees_every_pending_event_while_tasks_take_groups_off_the_list(client):
    accept(client)
    waiting = accept(client, 1500)  # more than one read of the list
    assert sorted(journal.pending_ids(client, ROUTE)) == sorted(waiting)
    found = journal.pending_ids(PopsBetweenReads(client, 10), ROUTE)
    assert set(waiting[10:]) <= set(found), "an event still pending was skipped"
