"""A killed worker's unacked tasks come back within seconds of another worker running, not after the
visibility timeout: workers hold leases, and the tasks of a worker whose lease lapsed are handed back."""
from __future__ import annotations

import signal
import time

import pytest

from bus import intake, journal
from bus.broker import unacked as leases
from conftest import wait_until
from faultkit import SLOW_ROUTE, all_delivered, bodies_by_id, duplicates, report, wait_all_delivered, wait_group_gone

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Far longer than the test waits: whatever comes back in time was handed back by a lease, not by kombu.
VISIBILITY = 300


def test_a_killed_workers_tasks_are_handed_back_in_seconds_not_after_the_visibility_timeout(fault_bus):
    bus = fault_bus({"slow": SLOW_ROUTE}, visibility_timeout=VISIBILITY)
    path = "/slow/lease"
    bus.receiver.delays[path] = 0.5
    worker = bus.worker("slow")
    ids = intake.accept(bus.intake(), "slow.lease", [{"n": i} for i in range(30)])
    wait_until(lambda: len(bus.receiver.to(path)) >= 4 and bus.unacked() >= 1, 30, what="deliveries under way")
    client = bus.client()
    (dead,) = [w.decode() for w in client.hkeys(journal.keys.WORKERS)]
    assert client.scard(journal.held_key(dead)) == bus.unacked(), "the held set names every unacked task"

    worker.signal(signal.SIGKILL)
    killed_at = time.time()
    assert wait_group_gone(worker.proc.pid, 10)
    stranded = bus.unacked()
    assert stranded >= 1, "the killed worker held tasks unacked"
    started_before_kill = {r.headers["X-Request-Id"] for r in bus.receiver.to(path) if r.at <= killed_at}

    new_worker = bus.worker("slow")
    ready_at = time.time()
    wait_until(lambda: not client.hexists(journal.keys.WORKERS, dead), 30, what="the dead worker's tasks handed back")
    handed_back_at = time.time()
    wait_all_delivered(bus, ids, 60, new_worker, "every event delivered long before the visibility timeout")
    done_at = time.time()
    time.sleep(1)
    got = bus.receiver.ids(path)
    report("worker_kill_9_leases", sent=len(ids), stranded_unacked_at_kill=stranded,
           handed_back_seconds_after_new_worker=round(handed_back_at - ready_at, 1),
           all_delivered_seconds_after_new_worker=round(done_at - ready_at, 1),
           duplicated=len(duplicates(got)), visibility_timeout=VISIBILITY)
    assert set(got) == set(ids)
    assert set(duplicates(got)) <= started_before_kill, "only what was mid-request is sent again"
    assert all(len(ns) == 1 for ns in bodies_by_id(bus, path).values())
    assert bus.unacked() == 0 and not client.hexists(journal.keys.WORKERS, dead), "the dead worker is forgotten"
    assert "stopped renewing its lease" in new_worker.output()


def test_a_stopped_worker_leaves_no_lease_and_nothing_to_hand_back(fault_bus):
    bus = fault_bus({"slow": SLOW_ROUTE}, visibility_timeout=VISIBILITY)
    worker = bus.worker("slow")
    ids = intake.accept(bus.intake(), "slow.calm", [{"n": 1}])
    wait_until(lambda: all_delivered(bus, ids), 30, what="delivery")
    client = bus.client()
    assert client.hlen(journal.keys.WORKERS) == 1
    worker.stop()
    assert client.hlen(journal.keys.WORKERS) == 0 and not client.keys("bus:lease:*")


def test_a_live_worker_whose_tag_is_in_a_dead_ones_stale_set_keeps_its_task(fault_bus):
    """A tag requeued by a reject and taken again by a live worker is not handed back from the dead one's set."""
    bus = fault_bus({"slow": SLOW_ROUTE}, visibility_timeout=VISIBILITY)
    client = bus.client()
    entry = b'[{"headers": {"id": "t1"}, "properties": {"delivery_info": {}}}, "", "bus.slow"]'
    client.hset(journal.keys.KOMBU_UNACKED, "tag-1", entry)
    client.sadd(journal.held_key("dead:1"), "tag-1")
    client.sadd(journal.held_key("live:2"), "tag-1")
    client.hset(journal.keys.WORKERS, "dead:1", "0")
    assert leases.hand_back(client, "dead:1", ["live:2"], 5000) == []
    assert client.hexists(journal.keys.KOMBU_UNACKED, "tag-1") and client.llen("bus.slow") == 0
    client.hset(journal.keys.WORKERS, "dead:3", "0")
    client.sadd(journal.held_key("dead:3"), "tag-1")
    assert leases.hand_back(client, "dead:3", [], 5000) == ["t1"]
    assert client.llen("bus.slow") == 1 and not client.hexists(journal.keys.KOMBU_UNACKED, "tag-1")
    assert not client.hexists(journal.keys.WORKERS, "dead:3")


def test_one_recovery_serves_every_worker_that_asked_before_it_began(fault_bus):
    """Many workers reconnecting after one Redis restart: the first scans the backlog, the rest skip."""
    from bus.worker import recovery

    bus = fault_bus({"slow": SLOW_ROUTE}, visibility_timeout=VISIBILITY)
    client = bus.client()
    asked_early = journal.redis_time(client)
    (event_id,) = intake.accept(bus.intake(), "slow.lost", [{"n": 1}])
    client.delete("bus.slow", journal.pending_key("slow"))  # its task message lost, as in a crash
    assert recovery.recover(client, pause=0.1, asked_at=journal.redis_time(client)) == [event_id]
    client.delete("bus.slow")  # lost again
    assert recovery.recover(client, pause=0.1, asked_at=asked_early) == [], \
        "a recovery that began after this one was asked for has run: skipped"
    assert recovery.recover(client, pause=0.1, asked_at=journal.redis_time(client)) == [event_id], \
        "a crash seen after the last recovery began is looked for"
