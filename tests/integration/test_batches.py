"""batch_max: a route that sends the events of one tag as one JSON array per request, as Fluentd's
out_http json_array does; every event keeps its own journal record and attempts. Real Redis, ingress,
worker and receiver; the events wait while no worker runs, so the batches they form are known."""
from __future__ import annotations

import json
import uuid

import pytest
import requests

from bus import journal
from bus.broker.messages import event_ids_of
from conftest import bus_env, run_bus, start_ingress, start_worker, wait_until

ROUTES = {
    "batched.toml": 'match = "batched.*"\nendpoint = "{receiver}/batched/${{tag[1]}}"\nbatch_max = 4\n'
                    "retry_max_interval = 1\n",
    "lines.toml": 'match = "lines.*"\nendpoint = "{receiver}/lines/${{tag[1]}}"\nbatch_max = 3\n'
                  'content_type = "application/x-ndjson"\n',
    # No worker consumes it: the replay test reads the messages it queues.
    "wide.toml": 'match = "wide.*"\nendpoint = "{receiver}/wide/${{tag[1]}}"\nbatch_max = 60\n',
}


class Batching:
    def __init__(self, bus, env: dict[str, str], url: str):
        self.redis, self.receiver, self.tmp, self.env, self.url = bus.redis, bus.receiver, bus.tmp, env, url


@pytest.fixture(scope="module")
def batching(bus):
    """An ingress of its own for the two batching routes (session Redis and receiver); each test starts the worker."""
    routes = bus.tmp / "batching-routes"
    routes.mkdir()
    for name, text in ROUTES.items():
        (routes / name).write_text(text.format(receiver=bus.receiver.url))
    env = bus_env(bus.redis.url, routes)
    proc, url = start_ingress(env, bus.tmp / "batching-ingress.log")
    try:
        yield Batching(bus, env, url)
    finally:
        proc.stop()


def post_singles(bus, tag: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        resp = requests.post(f"{bus.url}/{tag}", data=json.dumps({"n": i}),
                             headers={"Content-Type": "application/json"}, timeout=10)
        assert resp.status_code == 202, resp.text
        ids += resp.json()["ids"]
    return ids


def test_events_of_one_tag_go_as_json_arrays_of_at_most_batch_max_each_recorded_on_its_own(batching):
    bus = batching
    name = f"b{uuid.uuid4().hex[:8]}"
    ids = post_singles(bus, f"batched.{name}", 10)
    worker = start_worker(bus.env, bus.tmp / f"batched-{name}.log", "batched")
    try:
        wait_until(lambda: sum(len(json.loads(r.body)) for r in bus.receiver.to(f"/batched/{name}")) >= 10, 20,
                   what="10 events at the receiver")
        # The receiver has the last request before the worker has its answer and journals it.
        client = bus.redis.client()
        wait_until(lambda: all(journal.load(client, i)["status"] == journal.DELIVERED for i in ids), 20,
                   what="the 10 events journaled as delivered")
    finally:
        worker.stop()
    requests = bus.receiver.to(f"/batched/{name}")
    bodies = [json.loads(r.body) for r in requests]
    assert all(isinstance(b, list) and 1 <= len(b) <= 4 for b in bodies), bodies
    assert sorted(item["n"] for b in bodies for item in b) == list(range(10)), "each event once"
    # The first event got its task on its own; the next nine waited and went in arrays of up to four.
    assert len(requests) < 10
    for r, body in zip(requests, bodies):
        carried = r.headers["X-Bus-Event-Ids"].split(",")
        assert len(carried) == len(body) and set(carried) <= set(ids)
        assert r.headers["X-Request-Id"] not in ids, "a batch request has an id of its own"
        assert r.headers["Content-Type"] == "application/json"
    for event_id in ids:
        (attempt,) = journal.attempts(client, event_id)
        assert attempt["status_code"] == 200 and attempt["request_id"] in {r.headers["X-Request-Id"] for r in requests}


def test_a_failed_batch_is_retried_for_each_of_its_events_and_a_refused_one_is_dead_for_each(batching):
    bus = batching
    name = f"f{uuid.uuid4().hex[:8]}"
    path = f"/batched/{name}"
    bus.receiver.script(path, 503, 422)  # first request retried, second refused, then 200
    ids = post_singles(bus, f"batched.{name}", 5)
    worker = start_worker(bus.env, bus.tmp / f"batched-{name}.log", "batched")
    client = bus.redis.client()
    try:
        def settled() -> bool:
            return all(journal.load(client, i)["status"] in (journal.DELIVERED, journal.DEAD) for i in ids)

        wait_until(settled, 30, interval=0.2, what="every event delivered or dead")
    finally:
        worker.stop()
    requests = bus.receiver.to(path)
    first = requests[0].headers["X-Bus-Event-Ids"].split(",")
    second = requests[1].headers["X-Bus-Event-Ids"].split(",")
    for event_id in first:
        attempts = journal.attempts(client, event_id)
        assert [a["status_code"] for a in attempts][0] == 503, "the whole first batch failed once"
    refused = [i for i in ids if journal.load(client, i)["status"] == journal.DEAD]
    assert sorted(refused) == sorted(second), "the refused batch's events are dead, each of them"
    for event_id in refused:
        (attempt,) = journal.attempts(client, event_id)
        assert attempt["status_code"] == 422 and attempt["batch"] == len(second)
    delivered = [i for i in ids if journal.load(client, i)["status"] == journal.DELIVERED]
    assert sorted(delivered + refused) == sorted(ids)


def test_an_ndjson_route_sends_one_line_per_event(batching):
    bus = batching
    name = f"l{uuid.uuid4().hex[:8]}"
    post_singles(bus, f"lines.{name}", 4)
    worker = start_worker(bus.env, bus.tmp / f"lines-{name}.log", "lines")
    try:
        wait_until(lambda: sum(r.body.count(b"\n") for r in bus.receiver.to(f"/lines/{name}")) >= 4, 20,
                   what="4 lines at the receiver")
    finally:
        worker.stop()
    lines = [json.loads(line) for r in bus.receiver.to(f"/lines/{name}") for line in r.body.splitlines()]
    assert sorted(item["n"] for item in lines) == [0, 1, 2, 3]
    assert all(r.headers["Content-Type"] == "application/x-ndjson" for r in bus.receiver.to(f"/lines/{name}"))


def test_a_replay_of_a_batch_max_route_queues_messages_as_big_as_its_batches(batching):
    """A route with batch_max 60 replayed with `bus replay`: one task message of 60 events (they go
    as one array), not three of 25 (three requests); copies elsewhere (POST /events/replay with
    `to`) still go 25 to a message."""
    bus = batching
    client = bus.redis.client()
    tag = f"wide.w{uuid.uuid4().hex[:8]}"
    resp = requests.post(f"{bus.url}/{tag}", json=[{"n": i} for i in range(60)], timeout=10)
    ids = resp.json()["ids"]
    for event_id in ids:  # dead letters, as if the endpoint had refused them
        journal.record_attempt(client, journal.load(client, event_id),
                               {"attempt": 1, "at": 0.0, "duration": 0.0, "status_code": 422}, journal.DEAD)
    before = client.llen("bus.wide")
    copies = requests.post(f"{bus.url}/events/replay", json={"tag": tag, "to": "http://127.0.0.1:9/copies"},
                           timeout=30)
    assert copies.status_code == 200 and copies.json()["replayed"] == 60, copies.text
    done = run_bus(bus, "replay", "--tag", tag, env=bus.env)
    assert done.returncode == 0 and "replayed 60 events" in done.stdout, done.stdout + done.stderr
    queued = [json.loads(m) for m in client.lrange("bus.wide", 0, client.llen("bus.wide") - before - 1)]
    sizes = sorted(len(event_ids_of(m)) for m in queued)
    assert sizes == [10, 25, 25, 60], "the replay in one message, the copies 25 to a message"
