"""A worker idle for BUS_POOL_RECYCLE_IDLE seconds after a burst replaces the pool processes that ran
tasks with fresh forks (worker/recycle.py), and nothing accepted is lost or sent twice meanwhile."""
from __future__ import annotations

import signal
import threading
import time

import pytest

from bus import intake
from conftest import wait_until
from faultkit import SLOW_ROUTE, children, duplicates, wait_all_delivered

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IDLE = 2  # seconds; the recycler then looks every second
PATH = "/slow/r"


def recycling_bus(fault_bus):
    bus = fault_bus({"slow": SLOW_ROUTE})
    bus.env["BUS_POOL_RECYCLE_IDLE"] = str(IDLE)
    # Each delivery takes 50 ms, so a burst's groups keep both pool processes busy.
    for path in (PATH, "/slow/d", "/slow/t"):
        bus.receiver.delays[path] = 0.05
    return bus


def burst(bus, n: int = 40, tag: str = "slow.r") -> list[str]:
    return intake.accept(bus.intake(), tag, [{"n": i} for i in range(n)])


def pool_of(worker) -> set[int]:
    return set(children(worker.proc.pid))


def test_after_a_burst_and_the_idle_time_the_pool_processes_are_new_and_the_worker_still_delivers(fault_bus):
    bus = recycling_bus(fault_bus)
    worker = bus.worker("slow")
    first = pool_of(worker)
    assert len(first) == 2
    ids = burst(bus)
    wait_all_delivered(bus, ids, 60, worker, "the burst delivered")
    assert len({r.headers["X-Request-Id"] for r in bus.receiver.to(PATH)}) == len(ids)
    # Both ran tasks (40 events in groups of up to 25, prefetch 1): both are replaced, one at a time.
    wait_until(lambda: not pool_of(worker) & first and len(pool_of(worker)) == 2, IDLE + 20,
               what="both pool processes replaced")
    assert worker.output().count("replacing it with a fresh fork") == 2
    assert "exited with" not in worker.output(), "billiard saw a controlled exit, not a crash"
    later = burst(bus, 10)
    wait_all_delivered(bus, later, 30, worker, "events after the recycle delivered")
    got = bus.receiver.ids(PATH)
    assert set(got) == set(ids + later) and not duplicates(got)


def test_events_accepted_while_the_pool_is_replaced_are_delivered_exactly_once(fault_bus):
    bus = recycling_bus(fault_bus)
    worker = bus.worker("slow")
    first = pool_of(worker)
    ids = burst(bus)
    wait_all_delivered(bus, ids, 60, worker, "the burst delivered")
    # Wait for the first replacement, then accept one event every 20 ms for 1.5 s: the events land
    # while that process is stopping, forking or not yet up.
    wait_until(lambda: "replacing it with a fresh fork" in worker.output(), IDLE + 20, what="the first replacement")
    during: list[str] = []
    stop = threading.Event()

    def trickle() -> None:
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            during.extend(burst(bus, 1, "slow.d"))
            time.sleep(0.02)

    feeder = threading.Thread(target=trickle)
    feeder.start()
    try:
        # Events keep coming, so the worker is no longer idle: the second process is replaced only if
        # the trickle pauses, which it does not. So stop after a while and let the idle time pass.
        time.sleep(1.5)
    finally:
        stop.set()
        feeder.join(10)
    wait_until(lambda: not pool_of(worker) & first and len(pool_of(worker)) == 2, IDLE + 20,
               what="both pool processes replaced")
    wait_all_delivered(bus, ids + during, 60, worker, "every event delivered")
    time.sleep(1)  # a second copy would arrive now
    got = bus.receiver.ids("/slow/")
    assert len(during) >= 20
    assert set(got) == set(ids + during) and not duplicates(got)


def test_sigterm_of_the_worker_while_a_pool_process_is_replaced_stops_it_cleanly_and_loses_nothing(fault_bus):
    bus = recycling_bus(fault_bus)
    worker = bus.worker("slow")
    ids = burst(bus)
    wait_all_delivered(bus, ids, 60, worker, "the burst delivered")
    wait_until(lambda: "replacing it with a fresh fork" in worker.output(), IDLE + 20, interval=0.01,
               what="the first replacement")
    waiting = burst(bus, 20, "slow.t")  # accepted as the worker stops: some run, the rest wait
    worker.proc.send_signal(signal.SIGTERM)  # the main process alone: Celery's warm shutdown
    assert worker.proc.wait(30) == 0
    assert "Traceback" not in worker.output()
    again = bus.worker("slow")
    wait_all_delivered(bus, ids + waiting, 60, again, "everything delivered after the restart")
    time.sleep(1)
    got = bus.receiver.ids("/slow/")
    assert set(got) == set(ids + waiting) and not duplicates(got)
