"""Issue 22, the idle worker's CPU: the retry mover sleeps on its routes' wake lists instead of polling
twice a second, and nothing it moves is moved later for it (worker/scheduler.py, journal/mover_sleep.py).

Each test runs a bus of its own (faultkit): a real Redis with AOF, a real `bus worker`, a real receiver.
The mover's longest sleep is scheduler.WAIT_CAP (10 s); every retry here is due within about a second.
"""
from __future__ import annotations

import hashlib
import signal
import time

import pytest

from bus import intake, journal
from bus.journal import scripts
from bus.journal.keys import breaker_key, mover_key, mover_sleeps_key, parked_key, wake_key
from bus.worker import scheduler
from conftest import wait_until
from faultkit import all_delivered

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUTE = """
match = "nap.*"
endpoint = "{receiver}/nap/${tag[1]}"
open_timeout = 1
read_timeout = 2
retry_max_interval = 2
"""
# How late a due retry or probe may reach the receiver: the mover's wake-up, a task through the queue
# (kombu's BRPOP answers a push at once), the attempt. The sleep it must not wait out is WAIT_CAP.
LATE = 1.5


@pytest.fixture
def nap_bus(fault_bus):
    return fault_bus({"nap": ROUTE})  # visibility timeout faultkit.VISIBILITY (20 s)


def blocked_on_wake_list(client) -> bool:
    """Whether a client of this Redis is blocked in BLPOP (the sleeping mover)."""
    return any(c.get("cmd") == "blpop" and "b" in c.get("flags", "") for c in client.client_list())


def sleeping_mover(client, route: str = "nap") -> float:
    """Wait until the route's mover sleeps; until when it means to."""
    wait_until(lambda: blocked_on_wake_list(client) and client.get(mover_sleeps_key(route)), 20,
               what="the retry mover to sleep on its wake list")
    return float(client.get(mover_sleeps_key(route)))


def test_an_idle_worker_s_mover_blocks_on_its_wake_list_instead_of_polling(nap_bus):
    nap_bus.worker("nap")
    client = nap_bus.client()
    until = sleeping_mover(client)
    assert until - time.time() > 3, "nothing is due: it sleeps for seconds, not half of one"
    before = client.info("commandstats").get("cmdstat_zrangebyscore", {}).get("calls", 0)
    time.sleep(6)
    calls = client.info("commandstats").get("cmdstat_zrangebyscore", {}).get("calls", 0) - before
    # Polling twice a second read the retry schedule and the breakers' index on every pass: 24 in 6 s.
    # What is left is at most one pass of the mover's and the archive mover's own (every 2 s).
    assert calls <= 8, f"{calls} range reads in 6 s of idle"
    assert blocked_on_wake_list(client)


def test_a_retry_scheduled_while_the_mover_sleeps_is_queued_when_due_not_when_the_sleep_ends(nap_bus):
    nap_bus.receiver.script("/nap/r", 503)
    nap_bus.worker("nap")
    client = nap_bus.client()
    until = sleeping_mover(client)
    (event_id,) = intake.accept(nap_bus.intake(), "nap.r", [{"n": 1}])
    wait_until(lambda: len(nap_bus.receiver.to("/nap/r")) >= 2, scheduler.WAIT_CAP + 10, interval=0.02,
               what="the retry")
    first, second = nap_bus.receiver.to("/nap/r")[:2]
    assert second.at < until - 2, "it came long before the sleep would have ended"
    # backoff: the first retry is due 0.5-1 s after the failure.
    assert second.at - first.at < 1.0 + LATE, f"the retry came {second.at - first.at:.2f} s after the failure"
    wait_until(lambda: journal.load(client, event_id)["status"] == journal.DELIVERED, 10, what="the attempt recorded")
    sleeping_mover(client)  # and back to sleep


def test_a_half_open_breaker_s_probe_goes_out_when_its_wait_is_over(nap_bus):
    nap_bus.receiver.script("/nap/down", *[503] * 5)  # five failures in a row open the breaker; the probe gets 200
    nap_bus.worker("nap")
    client = nap_bus.client()
    sleeping_mover(client)
    ids = intake.accept(nap_bus.intake(), "nap.down", [{"n": i} for i in range(8)])

    def opened() -> float | None:
        keys = list(client.scan_iter(match=breaker_key("nap", "*")))
        found = keys and client.hget(keys[0], "open_until")
        return float(found) if found else None

    open_until = wait_until(opened, 30, interval=0.01, what="the breaker to open")
    wait_until(lambda: len(nap_bus.receiver.to("/nap/down")) >= 6, scheduler.WAIT_CAP + 10, interval=0.02,
               what="the probe")
    probe = nap_bus.receiver.to("/nap/down")[5]
    assert open_until - 0.05 <= probe.at < open_until + LATE, f"probe {probe.at - open_until:+.2f} s after half-open"
    wait_until(lambda: all_delivered(nap_bus, ids), 30,
               what="the held-back events after the probe succeeded")


def retried_on_time(nap_bus, client, tag: str, what: str) -> None:
    """An event of `tag` (its path answers 503 once) is retried within the 1 s backoff, then recorded delivered."""
    path = "/" + tag.replace(".", "/")
    (event_id,) = intake.accept(nap_bus.intake(), tag, [{"n": 1}])
    wait_until(lambda: len(nap_bus.receiver.to(path)) >= 2, scheduler.WAIT_CAP + 20, interval=0.02, what=what)
    failed, retried = nap_bus.receiver.to(path)[:2]
    assert retried.at - failed.at < 1.0 + LATE, f"the retry came {retried.at - failed.at:.2f} s after the failure"
    wait_until(lambda: journal.load(client, event_id)["status"] == journal.DELIVERED, 10, what="the attempt recorded")


def test_the_sleeping_mover_survives_redis_kill_9_and_restart_and_still_moves_a_due_retry(nap_bus):
    nap_bus.receiver.script("/nap/after", 503)
    worker = nap_bus.worker("nap")
    client = nap_bus.client()
    sleeping_mover(client)
    nap_bus.redis.kill()
    time.sleep(3)  # the connection it was blocked on is gone; the thread must not hang on it
    nap_bus.start_redis()
    sleeping_mover(client)  # it came back to its wait on the restarted Redis
    retried_on_time(nap_bus, client, "nap.after", "the retry after the restart")
    assert worker.proc.poll() is None, "the same worker, reconnected on its own"
    assert client.llen(wake_key("nap")) == 0


def test_a_stopping_worker_gives_up_the_lease_it_stretched_over_its_sleep(nap_bus):
    worker = nap_bus.worker("nap")
    client = nap_bus.client()
    sleeping_mover(client)
    assert client.pttl(mover_key("nap")) > 3000, "the lease lasts the sleep"
    worker.stop()
    assert not client.exists(mover_key("nap")), "a restarted worker's mover takes the route at once"


def test_a_sigkilled_worker_s_sleeping_mover_leaves_its_route_to_the_next_worker_at_once(nap_bus):
    nap_bus.receiver.script("/nap/next", 503)
    first = nap_bus.worker("nap")
    client = nap_bus.client()
    sleeping_mover(client)
    assert client.pttl(mover_key("nap")) > 6000, "its lease is stretched over the sleep"
    first.signal(signal.SIGKILL)  # the whole worker: main process, pool, archive mover
    first.proc.wait(10)
    nap_bus.worker("nap")
    # The dead worker's own lease (leases.py, 3 s) is gone by the time the second one is ready.
    retried_on_time(nap_bus, client, "nap.next", "the retry, moved by the second worker")


def mover_passes(client, seconds: float) -> int:
    """The route's mover passes over `seconds`, read with MONITOR: each opens with claim_mover.lua."""
    sha = hashlib.sha1(scripts.load("claim_mover.lua").encode()).hexdigest()
    passes, end = 0, time.time() + seconds
    with client.monitor() as monitor:
        for _ in range(100_000):  # Redis answers the worker's lease renewals every second: never blocked for long
            if time.time() >= end:
                break
            if f"EVALSHA {sha}" in monitor.next_command()["command"]:
                passes += 1
    return passes


def test_behind_a_down_endpoint_the_mover_passes_once_per_probe(nap_bus):
    """A pass that sent a probe was followed by a pass a TICK later, and a wake-up for the breaker the probe
    reopened by another: two or three passes (five round trips each) per probe, for nothing but a sleep."""
    nap_bus.receiver.script("/nap/dead", *[503] * 1000)
    nap_bus.worker("nap")
    client = nap_bus.client()
    # A backlog: each event's probe in the window is its first attempt, its retry (0.5-1 s) due before the
    # breaker half-opens (record_attempt.lua parks only those; a later retry keeps its backoff).
    ids = intake.accept(nap_bus.intake(), "nap.dead", [{"n": i} for i in range(30)])
    parked = lambda: sum(client.zcard(k) for k in client.scan_iter(match=parked_key("nap", "*")))  # noqa: E731
    wait_until(lambda: parked() >= len(ids) - 1 and not client.zcard(journal.retry_key("nap")), 30,
               what="every event held back behind the breaker")
    time.sleep(2)  # a step of the breaker: the tail of the events' first pass is over
    start = time.time()
    passes = mover_passes(client, 8)
    probes = [hit.at for hit in nap_bus.receiver.to("/nap/dead") if start <= hit.at < start + 8]
    assert 3 <= len(probes) <= 9, f"{len(probes)} probes in 8 s, one per 1-2 s step"
    # retry_max_interval = 2 caps the breaker's step at 2 s: with jitter, 1-2 s.
    assert all(0.95 <= b - a <= 2 + LATE for a, b in zip(probes, probes[1:])), f"probes at {probes}"
    assert passes <= len(probes) + 1, f"{passes} mover passes for {len(probes)} probes"  # +1: the window's edge
    nap_bus.receiver.script("/nap/dead")  # the endpoint answers again
    wait_until(lambda: all_delivered(nap_bus, ids), 20,
               what="every held-back event delivered after the endpoint came back")
    answered = [a["status_code"] for i in ids for a in journal.attempts(client, i)]
    assert answered.count(200) == len(ids), "each delivered once"
