"""A host that takes no connection at all is one failure, whatever number of paths the route renders
for it: its events wait behind one breaker of the origin and one probe per step tests it, while an
HTTP answer (a 503 of one path) stays that path's own. Each test has its own Redis, worker and
receiver, on a port the test stops and starts."""
from __future__ import annotations

import re
import socket
import time
import uuid

import pytest

from bus import endpoints, journal
from bus.journal.keys import breaker_key, parked_key
from bus.routes import load_routes
from bus.worker.breaker_gate import Breakers
from bus.worker.verdict import Verdict
from conftest import Receiver, RedisServer, bus_env, free_port, start_worker, wait_until

ROUTE = """
match = ["svc.*"]
endpoint = "http://127.0.0.1:{port}/svc/${{tag[1]}}/"
open_timeout = 1
read_timeout = 5
retry_max_interval = 2
"""
PATHS = ["orders", "users", "carts", "mail", "search", "audit"]  # six services behind one host


class Origin:
    """One route, `svc`, rendering /svc/<name>/ on a receiver's port, and a worker for it."""

    def __init__(self, tmp, redis: RedisServer) -> None:
        self.port = free_port()
        # Bound, never listening: a connect is refused, and no other test's server can take the port
        # while the origin is down (one loaded run failed here, the likeliest cause being just that).
        self.placeholder = socket.socket()
        self.placeholder.bind(("127.0.0.1", self.port))
        self.redis = redis
        self.receiver = Receiver(port=self.port)
        routes = tmp / "routes"
        routes.mkdir()
        (routes / "svc.toml").write_text(ROUTE.format(port=self.port))
        self.client = self.redis.client()
        self.worker = start_worker(bus_env(self.redis.url, routes), tmp / "worker.log", "svc")

    def up(self) -> None:
        """The origin comes back: the receiver listens on its port."""
        self.placeholder.close()
        self.receiver.start()

    def key(self, name: str) -> endpoints.EndpointKey:
        return endpoints.key_for("svc", f"http://127.0.0.1:{self.port}/svc/{name}/")

    def whole(self) -> endpoints.EndpointKey:
        """The breaker of the origin: every path of the host behind one (spelled out, as the journal keys it)."""
        return endpoints.EndpointKey("svc", f"http://127.0.0.1:{self.port}")

    def accept(self, names: list[str], rounds: int) -> list[str]:
        """Events of these tags taken turn about in one accept: they share task groups."""
        events = [journal.NewEvent(str(uuid.uuid4()), f"svc.{name}", "svc", b"{}", time.time())
                  for _ in range(rounds) for name in names]
        journal.accept(self.client, events)
        return [e.id for e in events]

    def attempts(self, ids: list[str]) -> list[dict]:
        return [a for i in ids for a in journal.attempts(self.client, i)]

    def held(self) -> int:
        """Events held back behind any breaker of the route."""
        return sum(self.client.zcard(k) for k in self.client.scan_iter(match=parked_key("svc", "*")))

    def failing(self) -> list[journal.breakers.EndpointState]:
        return journal.breakers.failing(self.client, ["svc"])["svc"][1]

    def close(self) -> None:
        self.worker.stop()
        self.placeholder.close()
        self.receiver.stop()


@pytest.fixture
def origin(own_redis, tmp_path):
    o = Origin(tmp_path, own_redis)
    yield o
    o.close()


def test_six_paths_of_a_refused_origin_are_probed_once_per_step_not_once_per_path(origin):
    ids = origin.accept(PATHS, 30)  # nothing listens on the port: every connect is refused
    wait_until(lambda: origin.held() >= len(ids) - 10, 20, what="the events held back behind breakers")
    start = time.time()
    time.sleep(6)
    later = [a for a in origin.attempts(ids) if a["at"] >= start]
    # Steps of 1 s, then 2 s (retry_max_interval): one breaker probes 3-6 times in 6 s; six would be 18 or more.
    assert 1 <= len(later) <= 8, f"{len(later)} attempts in 6 s at a refused origin with six paths"
    assert {a.get("phase") for a in origin.attempts(ids)} == {"connect"}
    assert all(a["error"].startswith("ConnectionRefusedError") for a in later), later[:2]
    (state,) = origin.failing()
    assert state.endpoint == f"http://127.0.0.1:{origin.port}", "one breaker, the origin's, no path"
    assert not any(origin.client.exists(breaker_key("svc", origin.key(p).digest)) for p in PATHS)


def test_a_503_on_one_path_leaves_the_other_paths_of_the_origin_sending(origin):
    origin.receiver.script("/svc/orders/", *[503] * 10_000)
    origin.up()
    healthy = PATHS[1:]
    ids = origin.accept(PATHS, 10)
    healthy_ids = [i for n, i in enumerate(ids) if PATHS[n % len(PATHS)] in healthy]
    wait_until(lambda: len(set(origin.receiver.ids("/svc/")) & set(healthy_ids)) == len(healthy_ids), 20,
               what="every event of the five healthy paths")
    wait_until(lambda: origin.failing(), 10, what="the failing path's breaker")
    assert [journal.load(origin.client, i)["attempts"] for i in healthy_ids] == [1] * len(healthy_ids), \
        "each healthy event sent once, none held back"
    assert [s.endpoint for s in origin.failing()] == [f"{origin.receiver.url}/svc/orders/"], \
        "the 503s are the path's, not the origin's"
    assert not origin.client.exists(breaker_key("svc", origin.whole().digest))


def test_after_the_origin_comes_back_every_waiting_event_is_delivered_once(origin):
    ids = origin.accept(PATHS, 30)
    held = origin.whole()
    wait_until(lambda: origin.client.zcard(parked_key("svc", held.digest)) >= len(ids) - 10, 20,
               what="the events held back behind the origin's breaker")
    (state,) = origin.failing()
    assert state.held >= len(ids) - 10
    origin.up()
    back = time.time()
    wait_until(lambda: len(set(origin.receiver.ids("/svc/"))) == len(ids), 20, what="every waiting event")
    drained = time.time() - back
    got = origin.receiver.ids("/svc/")
    assert sorted(got) == sorted(ids), "each delivered exactly once"
    assert drained < 2.5 + 2, f"the last arrived {drained:.1f} s after the origin came back"
    assert {journal.load(origin.client, i)["status"] for i in ids} == {journal.DELIVERED}
    wait_until(lambda: not origin.failing(), 5, what="the origin's breaker closed")
    assert not origin.client.exists(parked_key("svc", held.digest))


def test_a_task_holds_back_its_group_behind_an_open_breaker_in_one_script_not_one_per_event(own_redis, tmp_path):
    """A backlog behind a down origin: each task's first step was one hold_back script per event."""
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "svc.toml").write_text(ROUTE.format(port=9))
    route = load_routes(routes, 60).by_name["svc"]
    client = own_redis.client()
    events = [journal.NewEvent(str(uuid.uuid4()), f"svc.{name}", "svc", b"{}", time.time())
              for _ in range(5) for name in PATHS]
    journal.accept(client, events)
    whole = endpoints.EndpointKey("svc", "http://127.0.0.1:9")
    now = time.time()
    for _ in range(5):
        until = journal.breakers.failed(client, whole, now, 5, 2.0, 0.0)
    gate = Breakers(client, {whole.digest: until})
    loaded = [journal.Event.from_record(journal.load(client, e.id)) for e in events]  # as a task loads them
    journal.breakers.hold_back_many(client, [], "svc", whole, now)  # the script loaded: its first call has two
    before = client.info("commandstats")["cmdstat_evalsha"]["calls"]
    gate.hold_ahead(route, loaded, "")
    assert client.info("commandstats")["cmdstat_evalsha"]["calls"] - before == 1
    assert set(gate.settled.values()) == {Verdict.WAITING}
    assert client.zcard(parked_key("svc", whole.digest)) == len(events)
    assert {journal.load(client, e.id)["status"] for e in events} == {journal.RETRYING}
    key = endpoints.key_for("svc", "http://127.0.0.1:9/svc/orders/")
    assert gate.held_back(loaded[0], key, probe=False) == Verdict.WAITING, "the task's loop finds its verdict"


SLOW = """
match = ["svc.*"]
endpoint = "{receiver}/svc/${{tag[1]}}/"
open_timeout = 1
read_timeout = 3
"""


def test_events_held_back_as_a_task_starts_count_as_waiting_not_handed_off_when_its_deadline_passes(own_redis, tmp_path):
    """Visibility 15 s: a task starts no attempt after 15 - 10 - 4 = 1 s. Its group: two events of a path
    answering in 1.5 s, then three behind an open breaker (held back at once, hold_ahead). The first
    answer ends the time: the second slow event goes to a new message; the held ones wait in the
    journal, and the summary said 'handed_off=4' for all four."""
    receiver = Receiver()
    receiver.delays["/svc/slow/"] = 1.5
    receiver.start()
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "svc.toml").write_text(SLOW.format(receiver=receiver.url))
    client = own_redis.client()
    events = [journal.NewEvent(str(uuid.uuid4()), f"svc.{name}", "svc", b"{}", time.time())
              for name in ["slow", "slow", "down", "down", "down"]]
    worker = start_worker(bus_env(own_redis.url, routes, BUS_VISIBILITY_TIMEOUT="15"), tmp_path / "worker.log", "svc")
    try:
        down = endpoints.key_for("svc", f"{receiver.url}/svc/down/")
        for probe in [False] * 5 + [True] * 4:  # open, then four failed probes: its step is 16 s
            journal.breakers.failed(client, down, time.time(), 5, 60.0, 1.0, probe)
        journal.accept(client, events)  # one group, one message
        summary = wait_until(lambda: re.search(r"delivered=\d+ handed_off=\d+(?: waiting=\d+)?", worker.output()),
                             20, what="the task's summary in the worker's log")
        wait_until(lambda: len(receiver.to("/svc/slow/")) == 2, 20, what="the handed-off event delivered")
    finally:
        worker.stop()
        receiver.stop()
    assert summary.group(0) == "delivered=1 handed_off=1 waiting=3"
    assert "handing 1 events of a slow group to a new task of route svc" in worker.output()
    assert {journal.load(client, e.id)["status"] for e in events[2:]} == {journal.RETRYING}, "held, not sent"
    assert not receiver.to("/svc/down/")


def test_a_failed_probe_waits_behind_the_breaker_it_reopened_and_no_task_comes_to_park_it_again(origin):
    """A probe's failure reopens its breaker for 1-2 s (retry_max_interval 2); its retry (attempt 1: 0.5-1 s) came due first,
    and a whole task only found the breaker open and parked it again: two tasks per probe, for nothing."""
    ids = origin.accept(PATHS, 5)
    parked, retry = parked_key("svc", origin.whole().digest), journal.retry_key("svc")
    wait_until(lambda: origin.client.zcard(parked) >= len(ids) - 1 and not origin.client.zcard(retry), 20,
               what="every event held back behind the origin's breaker")
    time.sleep(2)  # a step of the breaker: the tail of the events' first pass is over
    tasks_before, start = _tasks(origin), time.time()
    time.sleep(6)
    probes = sorted((a["at"], i) for i in ids for a in origin.attempts([i]) if a["at"] >= start)
    tasks = _tasks(origin) - tasks_before
    assert 2 <= len(probes) <= 7, f"{len(probes)} probes in 6 s, one per 1-2 s step (retry_max_interval 2)"
    gaps = [b[0] - a[0] for a, b in zip(probes, probes[1:])]
    assert all(0.95 <= g <= 2 + 1.5 for g in gaps), f"probes {gaps} s apart"
    assert tasks <= len(probes) + 1, f"{tasks} tasks for {len(probes)} probes: one each"
    for _, probed in probes[:-1]:  # the last may not have reported yet
        record = journal.load(origin.client, probed)
        assert origin.client.zscore(parked, probed) is not None, "back behind the breaker"
        assert origin.client.zscore(retry, probed) is None, "not on the retry schedule"
        assert record["status"] == journal.RETRYING and record["task"] == ""
        assert record["last"].startswith("ConnectionRefusedError"), \
            f"its last word is its attempt's, not a task's that parked it again: {record['last']!r}"
    origin.up()
    wait_until(lambda: len(set(origin.receiver.ids("/svc/"))) == len(ids), 20, what="every waiting event")
    assert sorted(origin.receiver.ids("/svc/")) == sorted(ids), "each delivered exactly once"
    assert {journal.load(origin.client, i)["status"] for i in ids} == {journal.DELIVERED}


def _tasks(origin: Origin) -> int:
    """Tasks the worker has taken so far (Celery's line per message received)."""
    return origin.worker.output().count("] received")
