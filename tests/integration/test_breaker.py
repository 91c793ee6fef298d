"""A failing endpoint costs the bus little and holds back only its own events: they wait in Redis
behind that endpoint's breaker (one per rendered origin and path), one probe per step tests it, and
its success drains everything it held at once."""
from __future__ import annotations

import json
import time
import uuid

import orjson
from pytest import approx

from bus import endpoints, journal
from bus.endpoints import EndpointKey
from bus.filters import EventFilter
from bus.routes import load_routes
from bus.worker import scheduler
from conftest import run_bus, wait_until
from metricskit import scrape, value

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


def test_any_answer_closes_the_origin_breaker_and_lets_its_events_go_while_a_503_counts_for_the_path(bus):
    """A connect failure counts against the origin; an HTTP answer of any status says the host is up:
    the origin's breaker closes and what it held is due at once, and the 503 is the path's own."""
    client, _ = fresh_route(bus)
    key = endpoint(bus, "parked.web")
    held, answered = bus.post("parked.web", "[{}, {}]").json()["ids"]
    drop_tasks(client)
    now = time.time()
    open_breaker(client, key.origin, now)
    assert journal.breakers.hold_back(client, journal.load(client, held), key.origin, now)
    attempt = {"attempt": 1, "at": now, "status_code": 503, "duration": 0.01}
    assert journal.record_attempt(client, journal.load(client, answered), attempt, journal.RETRYING,
                                  retry_at=now + 60, endpoint=key) is None
    assert journal.breakers.state(client, key.origin) == {}
    assert client.zscore("bus:retry:parked", held) == 0, "due at once"
    assert not client.exists(f"bus:parked:parked:{key.origin.digest}")
    assert client.zscore("bus:breakers:parked", key.origin.digest) is None


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


def test_a_replayed_held_back_event_leaves_its_breaker_for_the_replays_message(bus):
    client, _ = fresh_route(bus)
    key = endpoint(bus, "parked.again")
    (event_id,) = bus.post("parked.again", "{}").json()["ids"]
    drop_tasks(client)
    now = time.time()
    open_breaker(client, key, now)
    journal.breakers.hold_back(client, journal.load(client, event_id), key, now)
    done = run_bus(bus, "replay", "--status", "retrying", "--id", event_id)
    assert done.returncode == 0, done.stderr
    assert client.zscore(f"bus:parked:parked:{key.digest}", event_id) is None, "not released a second time later"
    assert queued_event_ids(client) == [event_id]
    assert journal.load(client, event_id)["status"] == journal.QUEUED


def test_a_purged_held_back_event_is_no_longer_counted_as_held(bus):
    client, _ = fresh_route(bus)
    key = endpoint(bus, "parked.purge")
    (event_id,) = bus.post("parked.purge", "{}").json()["ids"]
    drop_tasks(client)
    open_breaker(client, key, time.time())
    journal.breakers.hold_back(client, journal.load(client, event_id), key, time.time())
    done = run_bus(bus, "purge", "--route", "parked", "--status", "retrying", "--tag", "parked.purge", "--yes")
    assert done.returncode == 0, done.stderr
    assert journal.load(client, event_id) is None
    assert client.zcard(f"bus:parked:parked:{key.digest}") == 0


def accept_interleaved(client, tags: list[str], rounds: int) -> dict[str, list[str]]:
    """Events of several tags of the `api` route, taken turn about in one accept: they share task groups."""
    events = [journal.NewEvent(str(uuid.uuid4()), tag, "api", b"{}", time.time()) for _ in range(rounds) for tag in tags]
    journal.accept(client, events)
    return {tag: [e.id for e in events if e.tag == tag] for tag in tags}


def api_endpoints(bus) -> dict[str, dict]:
    """The `api` route's failing endpoints as `bus stats --json` prints them."""
    done = run_bus(bus, "stats", "--json")
    assert done.returncode == 0, done.stderr
    (api,) = [r for r in json.loads(done.stdout)["routes"] if r["route"] == "api"]
    return {e["endpoint"]: e for e in api["endpoints"]}


def test_a_failing_tag_never_holds_back_a_healthy_tag_of_the_same_route_and_failing_since_stays_put(bus):
    """`api` renders /api/${tag[1]}/: two tags answering 503 and one answering 200 share the route and its
    task groups. Every healthy event goes through while the failing ones wait, each failing endpoint has a
    breaker of its own in `bus stats` and /metrics, and its "failing since" survives its probes."""
    name = uuid.uuid4().hex[:8]
    down, later, up = f"api.d{name}", f"api.l{name}", f"api.u{name}"
    paths = {tag: f"/api/{tag.split('.')[1]}/" for tag in (down, later, up)}
    urls = {tag: f"{bus.receiver.url}{path}" for tag, path in paths.items()}
    bus.receiver.script(paths[down], *[503] * 10_000)
    bus.receiver.script(paths[later], *[503] * 10_000)
    client = bus.redis.client()
    ids = accept_interleaved(client, [down, up], 12)
    healthy_waited: set[str] = set()

    def all_healthy_arrived(expected: int) -> bool:
        # A healthy event held back behind another endpoint's breaker would sit as retrying for a second or more.
        waiting = journal.find(client, EventFilter(status=journal.RETRYING, tag=up), limit=100).events
        healthy_waited.update(e["id"] for e in waiting)
        return len(set(bus.receiver.ids(paths[up]))) == expected

    wait_until(lambda: all_healthy_arrived(12), 20, what="the healthy tag's first 12 events")
    wait_until(lambda: urls[down] in api_endpoints(bus), 10, what="the failing endpoint in bus stats")
    first = api_endpoints(bus)[urls[down]]
    assert first["failures"] >= THRESHOLD and first["breaker"] in ("open", "half-open")
    more = accept_interleaved(client, [later, up], 6)
    wait_until(lambda: all_healthy_arrived(18), 20, what="the healthy tag's next 6 events")
    assert not healthy_waited, f"{len(healthy_waited)} healthy events waited behind a failing endpoint"
    assert not journal_delivered(client, ids[down] + more[later]), "while the failing ones still wait"
    assert sorted(set(bus.receiver.ids(paths[up]))) == sorted(ids[up] + more[up])
    assert [journal.load(client, i)["attempts"] for i in ids[up] + more[up]] == [1] * 18, "each sent once, at once"

    tried = len(bus.receiver.to(paths[down]))
    wait_until(lambda: len(bus.receiver.to(paths[down])) >= tried + 2, 20, what="two probes of the failing endpoint")
    shown = wait_until(lambda: (lambda e: e if urls[later] in e else None)(api_endpoints(bus)), 10,
                       what="the second failing endpoint in bus stats")
    assert shown[urls[down]]["failing_since"] == first["failing_since"], "not reset by its probes"
    assert shown[urls[later]]["failing_since"] > first["failing_since"], "each endpoint's own"
    assert urls[up] not in shown
    assert shown[urls[down]]["held"] + shown[urls[later]]["held"] >= 1, "failing events wait in Redis"
    samples = scrape(bus.url)
    for tag in (down, later):
        labels = {"route": "api", "endpoint": urls[tag]}
        assert value(samples, "bus_breaker_open", **labels) == 1
        assert value(samples, "bus_endpoint_failing_since_timestamp_seconds", **labels) == shown[urls[tag]][
            "failing_since"]
    assert not value(samples, "bus_endpoint_failing", route="api", endpoint=urls[up])

    bus.receiver.scripts[paths[down]] = []  # both services come back
    bus.receiver.scripts[paths[later]] = []
    failing = ids[down] + more[later]
    wait_until(lambda: len(journal_delivered(client, failing)) == len(failing), 30, what="the held events, delivered")
    assert not {urls[down], urls[later]} & set(api_endpoints(bus)), "an answer closes each breaker"


def journal_delivered(client, event_ids: list[str]) -> set[str]:
    return {i for i in event_ids if journal.load(client, i)["status"] == journal.DELIVERED}


def test_a_failed_probes_record_parks_it_behind_the_breaker_only_while_open_and_if_its_retry_comes_first(bus):
    """The breaker is counted first (Breakers.journaled); then the record parks a retry due before the
    half-open (a task would only park it again), keeps a later one's backoff on the schedule, and parks
    nothing behind a breaker that closed meanwhile."""
    client, _ = fresh_route(bus)
    key = endpoint(bus, "parked.probe")
    soon, late, closed = bus.post("parked.probe", "[{}, {}, {}]").json()["ids"]
    drop_tasks(client)
    now = time.time()
    until = journal.breakers.failed(client, key.origin, now, THRESHOLD, 5.0, 1.0, probe=True)
    assert until == approx(now + 1.0, abs=1e-3)
    refused = {"attempt": 1, "at": now, "error": "ConnectionRefusedError: refused", "phase": "connect", "duration": 0.001}
    # `closed`: behind the path's breaker, which is not open (the origin's is)
    for event_id, retry_at, behind in ((soon, now + 0.7, key.origin), (late, now + 5, key.origin), (closed, now + 0.7, key)):
        assert journal.record_attempt(client, journal.load(client, event_id), refused, journal.RETRYING,
                                      retry_at=retry_at, endpoint=key, behind=behind) is None
    parked = f"bus:parked:parked:{key.origin.digest}"
    assert client.zrange(parked, 0, -1) == [soon.encode()], "only the retry due before the half-open waits there"
    assert client.zscore("bus:retry:parked", soon) is None
    record = journal.load(client, soon)
    assert (record["status"], record["attempts"], record["parked"]) == (journal.RETRYING, 1, key.origin.digest)
    assert client.zscore("bus:breakers:parked", key.origin.digest) == approx(until, abs=1e-3), "looked at when it half-opens"
    assert client.zscore("bus:retry:parked", late) == approx(now + 5, abs=1e-3), "its own backoff kept"
    assert client.zscore("bus:retry:parked", closed) == approx(now + 0.7, abs=1e-3), "no breaker: the schedule"
    assert not client.exists(f"bus:parked:parked:{key.digest}")
