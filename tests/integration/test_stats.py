"""`bus stats` and GET /stats: per route backlog, retrying, dead, recent deliveries, oldest waiting, endpoint state."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid

import pytest
import requests

from bus import endpoints, journal
from bus.routes import load_routes

DB = 9  # a Redis database of its own on the session server: nothing else writes there
BETA = endpoints.key_for("beta", "http://127.0.0.1:9/beta")


def accept(client, route: str, received: float) -> dict:
    event_id = str(uuid.uuid4())
    tag = f"{route}.x"
    journal.accept(client, [journal.NewEvent(event_id, tag, route, b"{}", received)])
    return journal.load(client, event_id)


def attempt(client, event: dict, status: str, code: int, at: float, **kw) -> None:
    journal.record_attempt(client, event, {"attempt": 1, "at": at, "duration": 0.1, "status_code": code}, status, **kw)


@pytest.fixture()
def known(bus, tmp_path):
    """Two routes in a state built by hand: alpha busy and healthy, beta's endpoint failing behind a half-open
    breaker with one event held back."""
    url = bus.redis.url.rsplit("/", 1)[0] + f"/{DB}"
    client = journal.connect(url, 5)
    client.flushdb()
    routes = tmp_path / "routes"
    routes.mkdir()
    for name in ("alpha", "beta"):
        (routes / f"{name}.toml").write_text(f'match = "{name}.*"\nendpoint = "http://127.0.0.1:9/{name}"\n')
    now = time.time()
    attempt(client, accept(client, "alpha", now - 30), journal.DELIVERED, 200, now - 10)
    attempt(client, accept(client, "alpha", now - 2000), journal.DELIVERED, 200, now - 1900)
    attempt(client, accept(client, "alpha", now - 100), journal.DEAD, 422, now - 90)
    accept(client, "alpha", now - 50)
    attempt(client, accept(client, "beta", now - 7200), journal.RETRYING, 503, now - 60, retry_at=now + 60)
    for _ in range(5):
        journal.breakers.failed(client, BETA, now - 300, 5, 5.0, 0.0)
    journal.breakers.hold_back(client, accept(client, "beta", now - 20), BETA, now - 10)
    yield {**bus.env, "BUS_REDIS_URL": url, "BUS_ROUTES": str(routes)}, now
    client.flushdb()


def bus_stats(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bus", "stats", *args], env=env, capture_output=True, text=True,
                          timeout=30)


def test_bus_stats_json_reports_each_route_of_a_known_state(known):
    env, now = known
    done = bus_stats(env, "--json")
    assert done.returncode == 0, done.stderr
    alpha, beta = json.loads(done.stdout)["routes"]
    assert alpha | {"oldest_waiting_seconds": 0} == {
        "route": "alpha", "backlog": 1, "queued": 1, "retrying": 0, "dead": 1,
        # The first event's task is queued; the next three wait for it on the pending list.
        "queue_length": 1, "pending": 3,
        "delivered_last_minute": 1, "delivered_last_hour": 2, "oldest_waiting_seconds": 0,
        "delivered_total": 2, "archived_total": 0,
        "endpoint": "ok", "failing_since": None, "endpoints_failing": 0, "breakers_open": 0, "endpoints": []}
    assert alpha["oldest_waiting_seconds"] == pytest.approx(50, abs=5)
    assert beta["oldest_waiting_seconds"] == pytest.approx(7200, abs=5)
    assert (beta["backlog"], beta["queued"], beta["retrying"], beta["dead"]) == (2, 0, 2, 0)
    assert (beta["delivered_last_minute"], beta["delivered_last_hour"]) == (0, 0)
    assert (beta["endpoint"], beta["endpoints_failing"], beta["breakers_open"]) == ("failing", 1, 1)
    assert beta["failing_since"] == pytest.approx(now - 300, abs=0.01)
    (failing,) = beta["endpoints"]
    assert failing | {"breaker_open_until": 0, "oldest_held_seconds": 0} == {
        "endpoint": "http://127.0.0.1:9/beta", "scope": "path", "failing_since": pytest.approx(now - 300, abs=0.01),
        "failures": 5,
        "breaker": "half-open", "breaker_open_until": 0, "held": 1, "oldest_held_seconds": 0}
    assert failing["oldest_held_seconds"] == pytest.approx(10, abs=5)


def test_bus_stats_prints_a_table_per_route_and_watch_refreshes_it(known):
    env, now = known
    done = bus_stats(env)
    # The known state ages while the suite runs (a loaded machine took seconds between the fixture and
    # this table): every age printed is its age at `now` plus at most the time since.
    late = int(time.time() - now) + 1
    assert done.returncode == 0, done.stderr
    header, alpha, beta, _, endpoints_header, beta_endpoint, archive = done.stdout.splitlines()
    # No worker has run against this Redis: the archive is named and untried, and the known state's
    # event delivered more than the hot window ago waits for it.
    assert re.fullmatch(r"archive sqlite:///\S+: not tried yet; 1 delivered events past the hot window wait in Redis",
                        archive), archive
    assert header.split() == ["ROUTE", "BACKLOG", "RETRYING", "DEAD", "DELIVERED/1M", "DELIVERED/1H", "OLDEST",
                              "WAITING", "ENDPOINT"]
    assert alpha.split()[:6] == ["alpha", "1", "0", "1", "1", "2"] and alpha.split()[7:] == ["ok"]
    assert re.fullmatch(r"\d+s", alpha.split()[6]) and 49 <= int(alpha.split()[6][:-1]) <= 50 + late
    assert beta.split()[:7] == ["beta", "2", "2", "0", "0", "0", "2h00m"]
    failing = re.fullmatch(r"1 endpoint failing, the first since \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ \(5m(\d\d)s ago\)",
                           " ".join(beta.split()[7:]))
    assert failing and int(failing[1]) <= late, beta
    assert endpoints_header.split() == ["ROUTE", "FAILING", "ENDPOINT", "SINCE", "FAILURES", "BREAKER", "HELD", "BACK"]
    endpoint = re.fullmatch(r"beta http://127\.0\.0\.1:9/beta \S+ \S+ \(5m(\d\d)s ago\) 5 half-open 1 \(oldest (\d+)s\)",
                            " ".join(beta_endpoint.split()))
    assert endpoint and int(endpoint[1]) <= late and 10 <= int(endpoint[2]) <= 10 + late, beta_endpoint
    watched = bus_stats(env, "--watch", "0.2", "--count", "2")
    assert watched.returncode == 0 and watched.stdout.count("ROUTE  BACKLOG") == 2
    assert "every 0.2s; Ctrl-C to stop" in watched.stdout


def test_get_stats_answers_what_bus_stats_json_prints(bus):
    """`parked` has no worker, so the two readings must agree on it exactly."""
    bus.post("parked.stats", "{}")
    over_http = requests.get(f"{bus.url}/stats", timeout=10).json()
    on_cli = json.loads(bus_stats(bus.env, "--json").stdout)
    configured = [r.name for r in load_routes(bus.routes_dir, 60, bus.env).routes]
    assert [r["route"] for r in over_http["routes"]] == [r["route"] for r in on_cli["routes"]] == configured
    assert {"ops", "parked"} <= set(configured)
    http_parked, cli_parked = (next(r for r in d["routes"] if r["route"] == "parked") for d in (over_http, on_cli))
    stable = ("backlog", "queued", "retrying", "dead", "queue_length")
    assert [http_parked[k] for k in stable] == [cli_parked[k] for k in stable]
    assert http_parked["backlog"] == journal.backlog(bus.redis.client(), "parked") >= 1


def test_bus_stats_says_when_redis_is_down(bus):
    done = bus_stats({**bus.env, "BUS_REDIS_URL": "redis://127.0.0.1:9/0", "BUS_REDIS_TIMEOUT": "1"})
    assert done.returncode == 1 and "did not answer" in done.stderr
