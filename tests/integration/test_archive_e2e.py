"""The journal's two tiers with real processes: `bus serve`, `bus worker`, a real Redis and each
real archive. Delivered events leave Redis within seconds of a short hot window, Redis memory
comes back to its baseline, every read still finds them, and an archive that stops answering
stops no delivery and costs no event."""
from __future__ import annotations

import re
import signal
import time
from dataclasses import dataclass

import orjson
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from archivekit import outage, rows
from bus import journal
from bus.archive import mover
from conftest import BusProcess, Receiver, RedisServer, bus_env, run_bus, start_ingress, start_worker, wait_until
from faultkit import children

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
    reads_find_the_archived_events(bus, warm, ids)


def reads_find_the_archived_events(bus: ArchivedBus, warm: list[str], ids: list[str]) -> None:
    """Every way of reading the journal, now that Redis holds none of these events."""
    listed = run_bus(bus, "events", "--status", "delivered", "--tag", "api.orders", "--json", env=bus.env)
    assert listed.returncode == 0, listed.stderr
    page = orjson.loads(listed.stdout)
    # Newest first: the last request's events (they share a received time, so ids break the tie).
    assert len(page["events"]) == 50 and set(e["id"] for e in page["events"]) <= set(ids[-250:]) and page["cursor"]
    assert {e["tier"] for e in page["events"]} == {"archive"}

    shown = run_bus(bus, "events", ids[10], env=bus.env)
    assert shown.returncode == 0, shown.stderr
    assert "status    delivered" in shown.stdout and "attempts  1" in shown.stdout
    assert "kept in   the archive" in shown.stdout and "#1 " in shown.stdout and " 200 " in shown.stdout

    paged, cursor = [], None
    for _ in range(50):
        resp = requests.get(f"{bus.url}/events", params={"limit": 500, **({"cursor": cursor} if cursor else {})},
                            timeout=30)
        assert resp.status_code == 200 and "unavailable" not in resp.json()
        paged += [(e["received"], e["id"]) for e in resp.json()["events"]]
        cursor = resp.json()["cursor"]
        if not cursor:
            break
    assert paged == sorted(paged, reverse=True) and len(set(paged)) == len(paged)
    assert sorted(i for _, i in paged) == sorted(warm + ids)

    copy = run_bus(bus, "replay", "--status", "delivered", "--id", ids[5], "--to", f"{bus.receiver.url}/copy",
                   env=bus.env)
    assert copy.returncode == 0 and "replayed 1 events copies to" in copy.stdout, copy.stderr
    wait_until(lambda: bus.receiver.to("/copy"), 30, what="the copy of an archived event")
    sent = bus.receiver.to("/copy")[0]
    assert (sent.headers["X-Request-Id"], sent.headers["X-Bus-Replay"]) == (ids[5], "copy")
    assert orjson.loads(sent.body)["n"] == 5
    wait_until(lambda: requests.get(f"{bus.url}/events/{ids[5]}", timeout=10).json()["copies"], 15,
               what="the copy recorded on the archived event")

    again = run_bus(bus, "replay", "--status", "delivered", "--id", ids[6], env=bus.env)
    assert again.returncode == 0 and "replayed 1 events to their routes" in again.stdout, again.stderr
    wait_until(lambda: bus.receiver.ids("/api/").count(ids[6]) == 2, 30, what="the replayed archived event")
    wait_until(lambda: dict(rows(bus.archive_url)).get(ids[6]) == 2 and bus.delivered_in_redis() == 0, 30,
               what="the replayed event archived again with its second attempt")
    assert len(rows(bus.archive_url)) == len(warm) + len(ids)

    purged = run_bus(bus, "purge", "--status", "delivered", "--tag", "api.warm", "--yes", env=bus.env)
    assert purged.returncode == 0 and f"purged {len(warm)} events" in purged.stdout, purged.stderr
    assert not set(warm) & {i for i, _ in rows(bus.archive_url)}


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


def test_reads_say_which_tier_did_not_answer(archived_bus):
    bus = archived_bus
    if not bus.archive_url.startswith("postgres"):
        pytest.skip("a SQLite file being written still answers readers (WAL); test_archive_reads covers a missing one")
    archived = deliver_all(bus, "api.old", 20)
    wait_archived(bus, archived)
    with outage(bus.archive_url):
        hot = bus.post("api.new", 3)
        listed = requests.get(f"{bus.url}/events", params={"status": "delivered"}, timeout=30)
        assert listed.status_code == 200
        assert "did not answer" in listed.json()["unavailable"]["archive"]
        assert not set(archived) & {e["id"] for e in listed.json()["events"]}
        one = requests.get(f"{bus.url}/events/{archived[0]}", timeout=30)
        assert one.status_code == 503 and one.headers["Retry-After"]
        assert f"event '{archived[0]}' is not in Redis, and the archive" in one.json()["error"]
        cli = run_bus(bus, "events", "--status", "delivered", env=bus.env)
        assert cli.returncode == 0 and "warning: the archive" in cli.stderr and "showing only what Redis holds" in cli.stderr
        replay = run_bus(bus, "replay", "--status", "delivered", "--dry-run", env=bus.env)
        assert replay.returncode == 1 and "nothing was done" in replay.stderr and "Traceback" not in replay.stderr
        wait_until(lambda: set(hot) <= set(bus.receiver.ids("/api/")), 30, what="delivery during the outage")


def test_the_mover_is_a_thread_of_the_worker_and_stops_with_it(archived_bus):
    bus = archived_bus
    found = wait_until(lambda: re.search(r"archive mover running \(a thread of the worker, pid (\d+)\)",
                                         bus.worker.output()), 30, what="the worker's log naming its mover")
    assert int(found.group(1)) == bus.worker.proc.pid
    # No process beside the pool: the worker's children are its two prefork processes (--concurrency 2).
    assert len(children(bus.worker.proc.pid)) == 2
    archived = deliver_all(bus, "api.stop", 50)
    wait_archived(bus, archived)
    # Idle, the mover sleeps with its lease stretched over the sleep (archive_sleep.lua).
    client = bus.redis.client()
    wait_until(lambda: client.pttl(journal.ARCHIVE_MOVER) > mover.LEASE_MS, 10, 0.05, what="the lease stretched")
    bus.worker.proc.send_signal(signal.SIGTERM)  # the main process alone: Celery's warm shutdown
    bus.worker.proc.wait(20)
    assert "archive mover stopped" in bus.worker.output()
    assert "still in a pass" not in bus.worker.output()
    # Its lease, stretched over its sleeps, went with it: the next worker's mover need not wait it out.
    assert not client.exists(journal.ARCHIVE_MOVER)
