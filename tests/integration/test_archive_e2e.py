"""The journal's two tiers with real processes: `bus serve`, `bus worker`, a real Redis and each
real archive. Delivered events leave Redis within seconds of a short hot window, Redis memory
comes back to its baseline, every read still finds them, and an archive that stops answering
stops no delivery and costs no event."""
from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from archivekit import outage, rows
from bus import journal
from conftest import BusProcess, Receiver, RedisServer, bus_env, run_bus, start_ingress, start_worker, wait_until

pytestmark = pytest.mark.integration
HOT_WINDOW = 2


@dataclass
class ArchivedBus:
    redis: RedisServer
    receiver: Receiver
    env: dict[str, str]
    url: str
    archive_url: str
    worker: BusProcess

    def post(self, tag: str, n: int, start: int = 0) -> list[str]:
        body = b"\n".join(orjson.dumps({"n": i, "pad": "x" * 200}) for i in range(start, start + n))
        resp = requests.post(f"{self.url}/{tag}", data=body, headers={"Content-Type": "application/x-ndjson"},
                             timeout=30)
        assert resp.status_code == 202, resp.text
        return resp.json()["ids"]

    def delivered_in_redis(self) -> int:
        return self.redis.client().zcard(journal.index_key(journal.DELIVERED))

    def metric(self, name: str) -> float | None:
        text = requests.get(f"{self.url}/metrics", timeout=10).text
        found = [s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]
        return sum(found) if found else None


@pytest.fixture
def archived_bus(archive_url, tmp_path):
    server = RedisServer(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    server.start()
    receiver = Receiver()
    receiver.start()
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "api.toml").write_text(f'match = "api.*"\nendpoint = "{receiver.url}/api/${{tag[1]}}"\n'
                                     "retry_max_interval = 1\n")
    env = bus_env(server.url, routes, BUS_ARCHIVE_URL=archive_url, BUS_HOT_WINDOW=f"{HOT_WINDOW}s")
    ingress, url = start_ingress(env, tmp_path / "ingress.log")
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        yield ArchivedBus(server, receiver, env, url, archive_url, worker)
    finally:
        ingress.stop()
        worker.stop()
        receiver.stop()
        server.stop()


def deliver_all(bus: ArchivedBus, tag: str, n: int, batch: int = 250) -> list[str]:
    ids = []
    for start in range(0, n, batch):
        ids += bus.post(tag, min(batch, n - start), start)
    wait_until(lambda: set(ids) <= set(bus.receiver.ids("/api/")), 180, 0.2, what=f"{n} events delivered")
    return ids


def wait_archived(bus: ArchivedBus, ids: list[str], timeout: float = 60) -> None:
    wait_until(lambda: bus.delivered_in_redis() == 0 and {i for i, _ in rows(bus.archive_url)} >= set(ids),
               timeout, 0.25, what="every delivered event in the archive and none left in Redis")


def test_thousands_of_delivered_events_leave_redis_and_its_memory_comes_back_to_the_baseline(archived_bus):
    bus = archived_bus
    client = bus.redis.client()
    warm = deliver_all(bus, "api.warm", 200)  # counters, latency histogram, scripts: Redis's steady state
    wait_archived(bus, warm)
    baseline = client.info("memory")["used_memory"]
    started = time.monotonic()
    ids = deliver_all(bus, "api.orders", 3000)
    peak = client.info("memory")["used_memory"]
    wait_archived(bus, warm + ids)
    after = client.info("memory")["used_memory"]
    print(f"\nARCHIVE {bus.archive_url.split(':')[0]}: 3000 events in {time.monotonic() - started:.1f}s; "
          f"used_memory baseline={baseline} peak={peak} after={after}")
    # In Redis the 3000 events would take ~1.4-2 KB each (4-6 MB); what stays is noise.
    assert after - baseline < 150_000, (baseline, after)
    assert len(rows(bus.archive_url)) == len(warm) + len(ids)
    assert len(set(bus.receiver.ids("/api/"))) == len(bus.receiver.ids("/api/")) == len(warm) + len(ids)
    assert client.dbsize() < 50, sorted(k.decode() for k in client.keys("*"))[:60]
    assert "archived" in bus.worker.output() and "delivered events to" in bus.worker.output()
    assert bus.metric("bus_events_archived_total") == len(warm) + len(ids)
    assert bus.metric("bus_archive_up") == 1


def test_an_archive_that_stops_answering_stops_no_delivery_and_no_event_is_lost_or_doubled(archived_bus):
    bus = archived_bus
    first = deliver_all(bus, "api.before", 300)
    with outage(bus.archive_url):
        during = deliver_all(bus, "api.during", 700)
        wait_until(lambda: bus.metric("bus_archive_up") == 0, 30, 0.25, what="bus_archive_up 0")
        wait_until(lambda: (bus.metric("bus_archive_overdue_events") or 0) > 0, 30, 0.25, what="overdue events")
        assert bus.delivered_in_redis() >= len(during)
    wait_archived(bus, first + during)
    archived = [i for i, _ in rows(bus.archive_url)]
    assert sorted(archived) == sorted(first + during), "an event lost or archived twice"
    got = bus.receiver.ids("/api/")
    assert sorted(got) == sorted(first + during), "an event lost or delivered twice"
    out = bus.worker.output()
    assert "delivered events wait in Redis past the hot window" in out and "answers again" in out
    assert bus.metric("bus_archive_up") == 1
