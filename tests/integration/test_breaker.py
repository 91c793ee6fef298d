"""A failing endpoint costs the bus little and holds back only its own events: they wait in Redis
behind that endpoint's breaker (one per rendered origin and path), one probe per step tests it, and
its success drains everything it held at once."""
from __future__ import annotations

import json
import time
import uuid

import orjson
from pytest import approx

from bus import endpoints, journal, scheduler
from bus.endpoints import EndpointKey
from bus.routes import load_routes
from conftest import wait_until

THRESHOLD = 5


def endpoint(bus, tag: str) -> EndpointKey:
    """The breaker key of a tag of the `parked` route (`/parked/${tag[-1]}`): one per last tag part."""
    route = load_routes(bus.routes_dir, 60, bus.env).by_name["parked"]
    return endpoints.key_for("parked", route.endpoint.render(tag))


def fresh_route(bus):
    """The `parked` route: no worker consumes it, so these tests drive the schedule by hand."""
    client = bus.redis.client()
    # The mover lease too: a worker of `parked` another test ran may hold it for a moment after it stopped.
    leftovers = [*client.scan_iter(match="bus:breaker:parked:*"), *client.scan_iter(match="bus:parked:parked:*")]
    client.delete("bus:breakers:parked", "bus:failing:parked", "bus:retry:parked", "bus:mover:parked", *leftovers)
    drop_tasks(client)
    return client, load_routes(bus.routes_dir, 60, bus.env).by_name["parked"]


def open_breaker(client, key: EndpointKey, now: float) -> float:
    for _ in range(THRESHOLD):
        opened = journal.breakers.failed(client, key, now, THRESHOLD, 5.0, 0.0)
    return opened


def test_breaker_opens_after_five_failures_in_a_row_and_only_a_failed_probe_lengthens_it(bus):
    client, _ = fresh_route(bus)
    key = endpoint(bus, "parked.one")
    now = time.time()
    results = [journal.breakers.failed(client, key, now, THRESHOLD, 5.0, 0.0) for _ in range(THRESHOLD)]
    assert results[:-1] == [None] * (THRESHOLD - 1)
    assert results[-1] == approx(now + 0.5, abs=1e-3)  # first step: 1 s with jitter drawn at its low end
    assert journal.breakers.failed(client, key, now + 0.1, THRESHOLD, 5.0, 0.0) == approx(now + 0.5, abs=1e-3), \
        "an in-flight failure does not lengthen it"
    steps = [journal.breakers.failed(client, key, now + 1, THRESHOLD, 5.0, 1.0, probe=True) - (now + 1)
             for _ in range(4)]
    assert steps == approx([2.0, 4.0, 5.0, 5.0], abs=1e-3), "doubling, capped"
    assert journal.breakers.state(client, key)["since"] == approx(now, abs=1e-3)
    assert journal.breakers.state(client, endpoint(bus, "parked.other")) == {}, "another endpoint has its own"
    assert 0 < client.ttl(f"bus:breaker:parked:{key.digest}") <= journal.breakers.BREAKER_TTL, "it expires"


def test_the_breaker_key_is_the_rendered_origin_and_path_without_credentials_or_query():
    a = endpoints.key_for("api", "http://user:pw@Svc.example:8000/api/orders/?token=secret")
    assert a.endpoint == "http://svc.example:8000/api/orders/"
    assert a == endpoints.key_for("api", "http://svc.example:8000/api/orders/?token=other")
    assert a.digest != endpoints.key_for("api", "http://svc.example:8000/api/users/").digest
    assert a.digest != endpoints.EndpointKey("api", a.endpoint, destination="audit").digest


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


def test_an_open_breaker_holds_back_only_its_endpoint_and_half_open_lets_exactly_one_probe_out(bus):
    client, route = fresh_route(bus)
    failing, healthy = endpoint(bus, "parked.down"), endpoint(bus, "parked.up")
    held = [bus.post("parked.down", "{}").json()["ids"][0] for _ in range(4)]
    (other,) = bus.post("parked.up", "{}").json()["ids"]
    drop_tasks(client)
    now = time.time()
    opened = open_breaker(client, failing, now)
    for event_id in held:
        assert journal.breakers.hold_back(client, journal.load(client, event_id), failing, now)
    journal.park(client, journal.load(client, other), now - 1)  # a retry of the healthy endpoint, due
    assert scheduler.tick(client, [route], now) == 1, "open: only the other endpoint's event moves"
    assert queued_event_ids(client) == [other]
    drop_tasks(client)
    assert scheduler.tick(client, [route], opened + 0.01) == 1, "half-open: one probe"
    (probe,) = [orjson.loads(m) for m in client.lrange("bus.parked", 0, -1)]
    assert orjson.loads(probe["body"])[1] == {"probe": True}
    assert queued_event_ids(client) == held[:1], "the longest-held event goes first"
    assert scheduler.tick(client, [route], opened + 0.02) == 0, "no second probe while the first is out"
    journal.record_attempt(client, journal.load(client, held[0]), {"attempt": 1, "at": now, "status_code": 200},
                           journal.DELIVERED, endpoint_alive=True, endpoint=failing)
    assert journal.breakers.state(client, failing) == {}, "the probe's success closes it"
    assert not client.exists(f"bus:parked:parked:{failing.digest}")
    assert scheduler.tick(client, [route], opened + 0.03) == 3, "and the rest drain at once"
    assert sorted(queued_event_ids(client)) == sorted(held), "the probe's message and the rest's"
    assert journal.breakers.state(client, healthy) == {}


def test_an_event_parked_as_its_breaker_closes_is_due_at_once_instead_of_held_back(bus):
    client, route = fresh_route(bus)
    key = endpoint(bus, "parked.race")
    (event_id,) = bus.post("parked.race", "{}").json()["ids"]
    drop_tasks(client)
    now = time.time()
    open_breaker(client, key, now)
    event = journal.load(client, event_id)  # the task read the breaker open ...
    journal.record_attempt(client, journal.load(client, bus.post("parked.race", "{}").json()["ids"][0]),
                           {"attempt": 1, "at": now, "status_code": 200}, journal.DELIVERED, endpoint_alive=True,
                           endpoint=key)  # ... and a probe's answer closed it before the park
    drop_tasks(client)
    assert not journal.breakers.hold_back(client, event, key, now)
    assert client.zscore("bus:retry:parked", event_id) == approx(now), "on the retry schedule, due now"
    assert scheduler.tick(client, [route], now + 0.01) == 1


def test_a_breaker_that_expires_with_events_held_back_lets_them_all_go(bus):
    client, route = fresh_route(bus)
    key = endpoint(bus, "parked.gone")
    ids = [bus.post("parked.gone", "{}").json()["ids"][0] for _ in range(3)]
    drop_tasks(client)
    now = time.time()
    open_breaker(client, key, now)
    for event_id in ids:
        journal.breakers.hold_back(client, journal.load(client, event_id), key, now)
    assert journal.scheduled_ids(client) >= set(ids), "lost-task recovery knows where they wait"
    client.delete(f"bus:breaker:parked:{key.digest}")  # what its time to live does after an hour without a probe
    assert scheduler.tick(client, [route], now + 10) == 0, "moved to the retry schedule first"
    assert scheduler.tick(client, [route], now + 10) == 3, "then queued, all of them"
    assert sorted(queued_event_ids(client)) == sorted(ids)
    assert client.zcard("bus:breakers:parked") == 0


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
