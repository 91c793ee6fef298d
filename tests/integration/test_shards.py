"""Shards (SPEC "More than one Redis"): BUS_REDIS_SHARDS and a route's `shard`. Two real redis-servers
(AOF, fsync always), one `bus serve`, one `bus worker` for routes on both (one Celery worker per
shard), a real receiver; a shard killed with SIGKILL refuses only its own routes."""
from __future__ import annotations

import subprocess
import sys
import uuid

import orjson
import pytest
import requests

from bus import journal
from conftest import BusProcess, Receiver, RedisServer, bus_env, start_ingress, wait_until
from faultkit import wait_group_gone

ROUTES = {
    # On BUS_REDIS_URL (shard "default").
    "north.toml": 'match = "north.*"\nendpoint = "{receiver}/north/${{tag[1]}}"\nretry_max_interval = 1\n',
    # On shard b.
    "south.toml": 'match = "south.*"\nendpoint = "{receiver}/south/${{tag[1]}}"\nretry_max_interval = 1\nshard = "b"\n',
}


class TwoShards:
    def __init__(self, tmp):
        self.tmp = tmp
        (tmp / "a").mkdir()
        (tmp / "b").mkdir()
        self.a, self.b = RedisServer(tmp / "a"), RedisServer(tmp / "b")
        self.a.start()
        self.b.start()
        self.receiver = Receiver()
        self.receiver.start()
        self.routes_dir = tmp / "routes"
        self.routes_dir.mkdir()
        for name, text in ROUTES.items():
            (self.routes_dir / name).write_text(text.format(receiver=self.receiver.url))
        self.env = bus_env(self.a.url, self.routes_dir, BUS_REDIS_SHARDS=f"b={self.b.url}", BUS_REDIS_TIMEOUT="1")
        self.procs: list[BusProcess] = []
        ingress, self.url = start_ingress(self.env, tmp / "ingress.log")
        self.procs.append(ingress)
        self.worker = BusProcess(["worker", "--concurrency", "2"], self.env, tmp / "worker.log").start()
        self.procs.append(self.worker)
        # One Celery worker per shard, both in the one log: both must say ready.
        wait_until(lambda: self.worker.output().count(" ready.") >= 2 or self.worker.proc.poll() is not None, 40,
                   what="both shards' workers to be ready")
        assert self.worker.proc.poll() is None, self.worker.output()

    def post(self, tag: str, record: dict) -> requests.Response:
        return requests.post(f"{self.url}/{tag}", json=record, timeout=10)

    def bus(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bus", *args], env=self.env, capture_output=True, text=True,
                              timeout=60)

    def close(self) -> None:
        for proc in self.procs:
            proc.stop(timeout=20)
            wait_group_gone(proc.proc.pid, 10)
        self.receiver.stop()
        self.a.stop()
        self.b.kill()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    bus = TwoShards(tmp_path_factory.mktemp("shards"))
    try:
        yield bus
    finally:
        bus.close()


def test_each_routes_events_live_on_its_shard_are_delivered_and_every_read_sees_both(shards):
    tag = uuid.uuid4().hex[:8]
    north = [shards.post(f"north.{tag}", {"n": i}).json()["ids"][0] for i in range(5)]
    south = [shards.post(f"south.{tag}", {"n": i}).json()["ids"][0] for i in range(5)]
    wait_until(lambda: len(shards.receiver.to(f"/north/{tag}")) == 5 and len(shards.receiver.to(f"/south/{tag}")) == 5,
               20, what="both routes' events to be delivered")
    assert sorted(shards.receiver.ids(f"/north/{tag}")) == sorted(north)
    assert sorted(shards.receiver.ids(f"/south/{tag}")) == sorted(south)
    a, b = shards.a.client(), shards.b.client()
    assert all(a.exists(journal.event_key(i)) and not b.exists(journal.event_key(i)) for i in north)
    assert all(b.exists(journal.event_key(i)) and not a.exists(journal.event_key(i)) for i in south)
    assert not a.exists(journal.queue_name("south")) and b.hget(journal.COUNTERS, "delivered:south") is not None

    listed = shards.bus("events", "--tag", f"*.{tag}", "--json")
    assert listed.returncode == 0, listed.stderr
    page = orjson.loads(listed.stdout)
    assert {e["id"] for e in page["events"]} == set(north + south) and "unavailable" not in page
    # Page by page across the two shards: the cursor continues both, nothing twice, nothing skipped.
    seen, cursor = [], None
    for _ in range(10):
        url = f"{shards.url}/events?tag=*.{tag}&limit=3" + (f"&cursor={cursor}" if cursor else "")
        body = requests.get(url, timeout=10).json()
        seen += [e["id"] for e in body["events"]]
        cursor = body["cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(north + south)
    shown = shards.bus("events", south[0], "--json")
    assert shown.returncode == 0 and orjson.loads(shown.stdout)["route"] == "south"

    stats = shards.bus("stats", "--json")
    assert stats.returncode == 0, stats.stderr
    delivered = {r["route"]: r["delivered_total"] for r in orjson.loads(stats.stdout)["routes"]}
    assert delivered["north"] >= 5 and delivered["south"] >= 5
    metrics = requests.get(f"{shards.url}/metrics", timeout=10).text
    assert 'bus_events_delivered_total{route="south"}' in metrics and 'bus_redis_shard_up{shard="b"} 1.0' in metrics
    health = requests.get(f"{shards.url}/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["shards"] == {"default": "ok", "b": "ok"}

    # Replay and purge act on each event on its own shard.
    replayed = requests.post(f"{shards.url}/events/replay", json={"status": "delivered", "tag": f"*.{tag}"}, timeout=10)
    assert replayed.status_code == 200 and replayed.json()["replayed"] == 10
    wait_until(lambda: len(shards.receiver.to(f"/north/{tag}")) == 10 and len(shards.receiver.to(f"/south/{tag}")) == 10,
               20, what="the replayed events to be delivered again, each by its own shard's worker")
    wait_until(lambda: all(b.hget(journal.event_key(i), "status") == b"delivered" for i in south), 10,
               what="the replays to be journaled")
    purged = shards.bus("purge", "--status", "delivered", "--tag", f"*.{tag}", "--yes")
    assert purged.returncode == 0 and "purged 10 events" in purged.stdout, purged.stderr
    assert not any(a.exists(journal.event_key(i)) or b.exists(journal.event_key(i)) for i in north + south)


def test_a_killed_shard_refuses_only_its_routes_and_delivers_what_it_accepted_once_back(shards):
    tag = uuid.uuid4().hex[:8]
    # South's endpoint fails for a while: its events wait on shard b's retry schedule when b is killed.
    shards.receiver.script(f"/south/{tag}", *([503] * 200))
    waiting = [shards.post(f"south.{tag}", {"n": i}).json()["ids"][0] for i in range(3)]
    wait_until(lambda: len(shards.receiver.to(f"/south/{tag}")) >= 3, 10, what="south's first attempts")
    shards.b.kill()

    refused = shards.post(f"south.{tag}", {"n": 99})
    assert refused.status_code == 503 and refused.headers["Retry-After"] and "shard b" in refused.json()["error"]
    taken = [shards.post(f"north.{tag}", {"n": i}) for i in range(3)]
    assert [r.status_code for r in taken] == [202] * 3
    wait_until(lambda: len(shards.receiver.to(f"/north/{tag}")) == 3, 20, what="north to deliver while b is down")


    emitted = shards.bus("emit", f"south.{tag}", '{"n": 98}')
    assert emitted.returncode == 1 and "shard b: Redis did not answer" in emitted.stderr and "Traceback" not in emitted.stderr
    assert shards.bus("emit", f"north.{tag}", '{"n": 98}').returncode == 0
    one = requests.get(f"{shards.url}/events/{waiting[0]}", timeout=10)
    assert one.status_code == 503 and "shard b" in one.json()["error"]  # not a 404: it may be on b

    health = requests.get(f"{shards.url}/healthz", timeout=10)
    assert health.status_code == 503 and "shard b" in health.json()["error"]
    assert health.json()["shards"]["default"] == "ok"
    listed = shards.bus("events", "--tag", f"north.{tag}", "--json")
    assert listed.returncode == 0, listed.stderr
    page = orjson.loads(listed.stdout)
    assert len(page["events"]) == 4 and "shard b" in page["unavailable"]
    assert "shard b" in listed.stderr
    stats = shards.bus("stats")
    assert stats.returncode == 1 and "shard b" in stats.stderr and "Traceback" not in stats.stderr
    metrics = requests.get(f"{shards.url}/metrics", timeout=10).text
    assert 'bus_redis_shard_up{shard="b"} 0.0' in metrics and 'bus_events_accepted_total{route="north"}' in metrics

    shards.receiver.scripts[f"/south/{tag}"] = []  # the endpoint is back too
    shards.b.start()  # from its AOF, on the same port
    wait_until(lambda: set(waiting) <= set(shards.receiver.ids(f"/south/{tag}"))
               and all(shards.b.client().hget(journal.event_key(i), "status") == b"delivered" for i in waiting),
               60, what="the events shard b accepted before it was killed to be delivered")
    assert shards.post(f"south.{tag}", {"n": 100}).status_code == 202
    assert shards.worker.proc.poll() is None  # the worker of shard b reconnected; nothing was restarted


def test_a_celery_worker_of_another_shards_route_refuses_to_start(shards):
    env = {**shards.env, "BUS_WORKER_SHARD": "default"}
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "bus", "worker", "-Q", "bus.south"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "route south lives on shard b" in done.stderr and "BUS_WORKER_SHARD=b" in done.stderr


def test_an_endpoint_failing_on_shard_b_keeps_its_breaker_there_and_bus_stats_shows_it(shards):
    tag = f"south.f{uuid.uuid4().hex[:8]}"
    path = f"/south/{tag.split('.')[1]}"
    shards.receiver.script(path, *[503] * 1000)
    ids = [shards.post(tag, {"n": i}).json()["ids"][0] for i in range(8)]

    def failing() -> dict | None:
        done = shards.bus("stats", "--json")
        (south,) = [r for r in orjson.loads(done.stdout)["routes"] if r["route"] == "south"]
        found = [e for e in south["endpoints"] if e["endpoint"] == f"{shards.receiver.url}{path}"]
        return found[0] if found and found[0]["breaker"] != "closed" else None

    shown = wait_until(failing, 20, what="the failing endpoint's breaker in bus stats")
    assert shown["failures"] >= 5
    assert shards.b.client().zcard("bus:failing:south") >= 1 and not shards.a.client().exists("bus:failing:south")
    shards.receiver.scripts[path] = []
    client = shards.b.client()
    wait_until(lambda: all(journal.load(client, i)["status"] == journal.DELIVERED for i in ids), 30,
               what="the held events delivered once the endpoint answers")
