"""A failing endpoint costs the bus little: retries wait in Redis behind the route's breaker,
one probe per step tests the endpoint, and its success drains everything at once."""
from __future__ import annotations

import json
import time
import uuid

import orjson
from pytest import approx

from bus import journal, scheduler
from bus.routes import load_routes
from conftest import wait_until

THRESHOLD = 5


def fresh_route(bus):
    """The `parked` route: no worker consumes it, so these tests drive the schedule by hand."""
    client = bus.redis.client()
    # The mover lease too: a worker of `parked` another test ran may hold it for a moment after it stopped.
    client.delete("bus:breaker:parked", "bus:retry:parked", "bus:mover:parked")
    drop_tasks(client)
    return client, load_routes(bus.routes_dir, 60, bus.env).by_name["parked"]


def test_breaker_opens_after_five_failures_in_a_row_and_only_a_failed_probe_lengthens_it(bus):
    client, _ = fresh_route(bus)
    now = time.time()
    results = [journal.breaker_failed(client, "parked", now, THRESHOLD, 5.0, 0.0) for _ in range(THRESHOLD)]
    assert results[:-1] == [None] * (THRESHOLD - 1)
    assert results[-1] == approx(now + 0.5, abs=1e-3)  # first step: 1 s with jitter drawn at its low end
    assert journal.breaker_failed(client, "parked", now + 0.1, THRESHOLD, 5.0, 0.0) == approx(now + 0.5, abs=1e-3), \
        "an in-flight failure does not lengthen it"
    steps = [journal.breaker_failed(client, "parked", now + 1, THRESHOLD, 5.0, 1.0, probe=True) - (now + 1)
             for _ in range(4)]
    assert steps == approx([2.0, 4.0, 5.0, 5.0], abs=1e-3), "doubling, capped"
    assert journal.breaker(client, "parked")["since"] == approx(now, abs=1e-3)


def test_due_retries_go_back_to_the_head_of_the_queue_once_each(bus):
    client, route = fresh_route(bus)
    ids = [bus.post("parked.s", "{}").json()["ids"][0] for _ in range(3)]
    drop_tasks(client)
    client.lpush("bus.parked", b"newer-message")
    now = time.time()
    for event_id, due in zip(ids, (now - 2, now - 1, now + 60)):
        journal.park(client, journal.load(client, event_id), due)
    assert scheduler.tick(client, [route], now) == 2
    assert queued_event_ids(client) == ids[:2] + ["newer-message"]
    assert scheduler.tick(client, [route], now) == 0, "moved once, never twice"
    assert client.zscore("bus:retry:parked", ids[2]) == now + 60


def drop_tasks(client) -> None:
    """Forget the route's queued tasks and pending events: the test parks and moves them by hand."""
    client.delete("bus.parked", "bus:pending:parked", "bus:filling:parked")


def queued_event_ids(client) -> list[str]:
    """Queue order as workers will take it (kombu BRPOPs, so the right end is next), groups flattened."""
    out = []
    for raw in reversed(client.lrange("bus.parked", 0, -1)):
        out += [raw.decode()] if raw == b"newer-message" else orjson.loads(orjson.loads(raw)["body"])[0][0]
    return out


def test_open_breaker_holds_everything_and_half_open_lets_exactly_one_probe_out(bus):
    client, route = fresh_route(bus)
    ids = [bus.post("parked.p", "{}").json()["ids"][0] for _ in range(4)]
    drop_tasks(client)
    now = time.time()
    for event_id in ids:
        journal.park(client, journal.load(client, event_id), now - 1)
    for _ in range(THRESHOLD):
        opened = journal.breaker_failed(client, "parked", now, THRESHOLD, 5.0, 0.0)
    assert scheduler.tick(client, [route], now) == 0, "open: nothing moves"
    assert scheduler.tick(client, [route], opened + 0.01) == 1, "half-open: one probe"
    (probe,) = [orjson.loads(m) for m in client.lrange("bus.parked", 0, -1)]
    assert orjson.loads(probe["body"])[1] == {"probe": True}
    assert scheduler.tick(client, [route], opened + 0.02) == 0, "no second probe while the first is out"
    journal.record_attempt(client, journal.load(client, ids[0]), {"attempt": 1, "at": now, "status_code": 200},
                           journal.DELIVERED, endpoint_alive=True)
    assert journal.breaker(client, "parked") == {}, "the probe's success closes it"
    assert scheduler.tick(client, [route], opened + 0.03) == 3, "and the rest drain at once"


def test_endpoint_failing_for_seconds_sees_a_handful_of_attempts_not_one_per_event(bus):
    name = f"b{uuid.uuid4().hex[:8]}"
    path = f"/api/{name}/"
    bus.receiver.script(path, *[503] * 10_000)
    ids = bus.post(f"api.{name}", json.dumps([{"n": i} for i in range(200)])).json()["ids"]
    time.sleep(6)
    hits = len(bus.receiver.to(path))
    # 5 to open the breaker, a few already in flight, then one probe per step (1 s, 2 s, capped at 2 s here).
    assert hits <= 20, f"{hits} attempts for 200 events in 6 s"
    bus.receiver.scripts[path] = []  # the endpoint recovers
    recovered = time.time()
    wait_until(lambda: len(set(bus.receiver.ids(path))) == 200, 40, what="all 200 after recovery")
    delivered = [r for r in bus.receiver.to(path)]
    first_ok = min(r.at for r in delivered if r.at >= recovered)
    assert first_ok - recovered <= 2.5 + 1, "resumes within retry_max_interval (2 s) plus a tick"
    assert sorted(set(bus.receiver.ids(path))) == sorted(ids)
