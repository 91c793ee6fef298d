"""Issue 4, "nothing accepted is lost": fault tests that kill real processes (worker, Redis, ingress).

Each test runs a bus of its own with a short BUS_VISIBILITY_TIMEOUT (and routes sized to fit it),
so a killed worker's events come back in seconds instead of the production two minutes. Every test
prints its numbers and merges them into test-artifacts/faults.json; docs/reliability.md quotes them.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import requests

from bus import RouteError, intake, journal
from bus.routes import load_routes
from conftest import bus_env, wait_until, waiting_for_a_task
from faultkit import (
    SLOW_ROUTE,
    VISIBILITY,
    FaultBus,
    MisbehavingReceiver,
    all_delivered,
    bodies_by_id,
    duplicates,
    group_pids,
    make_fault_bus,
    peak_rss_mb,
    report,
    wait_all_delivered,
    wait_group_gone,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

def test_worker_kill_9_mid_delivery_loses_nothing_and_repeats_only_what_was_mid_request(fault_bus):
    """Issue 4 point 1: SIGKILL the worker's whole process group with 40 events in flight."""
    bus = fault_bus({"slow": SLOW_ROUTE})
    path = "/slow/k"
    bus.receiver.delays[path] = 0.5  # each delivery takes 0.5 s: the worker is always mid-request
    worker = bus.worker("slow")
    ids = intake.accept(bus.intake(), "slow.k", [{"n": i} for i in range(40)])
    wait_until(lambda: len(bus.receiver.to(path)) >= 8, 30, what="deliveries to be under way")

    worker.signal(signal.SIGKILL)
    killed_at = time.time()
    assert wait_group_gone(worker.proc.pid, 10), "the killed worker's processes are gone"
    started_before_kill = {r.headers["X-Request-Id"] for r in bus.receiver.to(path) if r.at <= killed_at}
    stranded = bus.unacked()  # fetched by the dead worker: back only after the visibility timeout

    new_worker = bus.worker("slow")
    ready_at = time.time()
    wait_all_delivered(bus, ids, 120, new_worker, "all 40 events delivered after the kill")
    recovered_at = time.time()
    time.sleep(2)  # a stray extra delivery would show up now
    got = bus.receiver.ids(path)
    dups = duplicates(got)
    report(
        "worker_kill_9", sent=len(ids), delivered=len(set(got) & set(ids)), lost=len(set(ids) - set(got)),
        duplicated=len(dups), requests_started_before_kill=len(started_before_kill),
        stranded_unacked_at_kill=stranded, recovery_seconds_after_new_worker=round(recovered_at - ready_at, 1),
        visibility_timeout=VISIBILITY,
    )
    assert set(got) == set(ids), "every accepted event arrives"
    assert set(dups) <= started_before_kill, "only events the receiver had started receiving are repeated"
    assert all(len(ns) == 1 for ns in bodies_by_id(bus, path).values()), "a repeat carries the same id and body"
    # The contract's two minutes are the 110 s visibility timeout plus the restore sweep; here the
    # same sum at a 20 s timeout. (kombu's default sweep cadence alone took 100 s.)
    assert recovered_at - killed_at < VISIBILITY + 15
    assert bus.unacked() == 0, "nothing left for the visibility timeout to restore later"


def test_pool_child_kill_9_is_requeued_at_once_by_reject_on_worker_lost(fault_bus):
    """The other half of point 1: only the pool processes die; the worker's main process requeues their tasks."""
    bus = fault_bus({"slow": SLOW_ROUTE})
    path = "/slow/c"
    bus.receiver.delays[path] = 1.0
    worker = bus.worker("slow")
    ids = intake.accept(bus.intake(), "slow.c", [{"n": i} for i in range(6)])
    wait_until(lambda: len(bus.receiver.to(path)) >= 2, 30, what="two deliveries under way")
    children = [p for p in group_pids(worker.proc.pid) if p != worker.proc.pid]
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    wait_until(lambda: all_delivered(bus, ids), 60, interval=0.2, what="all events after the pool kill")
    recovered = time.time() - killed_at
    got = bus.receiver.ids(path)
    report("pool_child_kill_9", sent=len(ids), delivered=len(set(got)), lost=len(set(ids) - set(got)),
           duplicated=len(duplicates(got)), children_killed=len(children), recovery_seconds=round(recovered, 1),
           visibility_timeout=VISIBILITY)
    assert worker.proc.poll() is None, "the worker's main process lives on and forks new pool processes"
    assert set(got) == set(ids)
    # WorkerLostError -> reject(requeue=True): back in the queue at once, not after the visibility timeout.
    assert recovered < VISIBILITY - 5
    assert bus.unacked() == 0


WAITING_ROUTE = """
match = "wait.*"
endpoint = "{receiver}/wait/${tag[1]}"
open_timeout = 1
read_timeout = 2
retry_max_interval = 4
"""


@pytest.mark.parametrize("appendfsync", ["always", "everysec"])
def test_redis_kill_9_and_restart_loses_nothing_and_workers_resume_without_restart(fault_bus, monkeypatch, appendfsync):
    """Issue 4 point 2: 200 events waiting on a dead receiver, Redis SIGKILLed, restarted from its AOF.
    everysec (what `bus up` and docker-compose run) survives a process kill too: Redis writes each
    command to the kernel before it answers; only a machine crash can take the last second."""
    import bus as bus_pkg

    bus = fault_bus({"wait": WAITING_ROUTE}, appendfsync=appendfsync)
    path = "/wait/r"
    bus.receiver.stop()
    ingress, url = bus.ingress()
    worker = bus.worker("wait")
    ids = intake.accept(bus.intake(), "wait.r", [{"n": i} for i in range(200)])
    client = bus.client()
    wait_until(lambda: journal.count(client, journal.RETRYING) >= 20, 30, what="events failing and retrying")

    bus.redis.kill()
    down_at = time.monotonic()
    started = time.monotonic()
    resp = requests.post(f"{url}/wait.r", data="{}", headers={"Content-Type": "application/json"}, timeout=30)
    ingress_answer_s = time.monotonic() - started
    assert resp.status_code == 503 and int(resp.headers["Retry-After"]) > 0, resp.text
    assert requests.get(f"{url}/healthz", timeout=30).status_code == 503
    monkeypatch.setattr(intake, "_default", None)
    monkeypatch.setenv("BUS_REDIS_URL", bus.env["BUS_REDIS_URL"])
    monkeypatch.setenv("BUS_ROUTES", bus.env["BUS_ROUTES"])
    started = time.monotonic()
    with pytest.raises(bus_pkg.Unavailable):
        bus_pkg.emit("wait.r", {"while": "down"})
    emit_raise_s = time.monotonic() - started
    monkeypatch.setattr(intake, "_default", None)
    time.sleep(max(0.0, 8 - (time.monotonic() - down_at)))  # down long enough for the worker to notice and retry

    bus.start_redis()
    restarted_at = time.monotonic()
    assert journal.count(client, journal.QUEUED) + journal.count(client, journal.RETRYING) == 200, "the AOF kept them"
    bus.receiver.start()
    after = requests.post(f"{url}/wait.r", data='{"n": 200}', headers={"Content-Type": "application/json"}, timeout=30)
    assert after.status_code == 202, after.text
    ids += after.json()["ids"]
    wait_all_delivered(bus, ids, 120, worker, "all events after the Redis restart")
    recovered_s = time.monotonic() - restarted_at
    time.sleep(2)
    got = bus.receiver.ids(path)
    report(
        f"redis_kill_9_{appendfsync}", sent=len(ids), delivered=len(set(got) & set(ids)), lost=len(set(ids) - set(got)),
        duplicated=len(duplicates(got)), ingress_503_seconds=round(ingress_answer_s, 2),
        emit_raise_seconds=round(emit_raise_s, 2), redis_down_seconds=round(restarted_at - down_at, 1),
        recovery_seconds_after_restart=round(recovered_s, 1), visibility_timeout=VISIBILITY,
        lost_tasks_requeued_by_recovery=sum(map(int, re.findall(r"requeued (\d+) event", worker.output()))),
    )
    assert ingress_answer_s < 5 and emit_raise_s < 5
    assert worker.proc.poll() is None, "the same worker process delivered them: it reconnected on its own"
    assert set(got) == set(ids)
    assert not duplicates(got), "the receiver was down during the outage: nothing was mid-request"
    # Copies the worker held when the connection dropped stay unacked until the visibility timeout
    # restores them; the journal then says delivered and they are not sent again.
    wait_until(lambda: bus.unacked() == 0, VISIBILITY + 15, interval=0.5, what="stale unacked copies to be restored")
    time.sleep(2)
    assert not duplicates(bus.receiver.ids(path)), "restored copies of delivered events are not sent again"


PARKED_ROUTE = """
# No worker consumes this route here: its tasks stay in bus.parked where the test can see them.
match = "parked.*"
endpoint = "{receiver}/parked/${tag[1]}"
open_timeout = 1
read_timeout = 2
retry_max_interval = 2
"""


def queued_event_ids(bus: FaultBus, queue: str) -> list[str]:
    """Ids in the queue's task messages and on its route's pending list (the next task takes those)."""
    return waiting_for_a_task(bus.client(), queue.removeprefix("bus."))


def test_a_task_lost_between_brpop_and_unacked_is_requeued_when_a_worker_starts_or_reconnects(fault_bus):
    """The gap behind the Redis kill -9 loss, made deterministic: RPOP a task (what a BRPOP whose
    answer never reached kombu's unacked hash amounts to) and check that recovery puts it back."""
    bus = fault_bus({"slow": SLOW_ROUTE, "parked": PARKED_ROUTE})
    client = bus.client()
    (first,) = intake.accept(bus.intake(), "parked.a", [{"n": 1}])
    client.rpop("bus.parked")  # lost: the journal says queued, no task anywhere
    worker = bus.worker("slow")  # a worker of another route: recovery covers every route
    started = time.monotonic()
    wait_until(lambda: queued_event_ids(bus, "bus.parked") == [first], 20, interval=0.2, what="the task requeued at start")
    on_start_s = time.monotonic() - started

    (second,) = intake.accept(bus.intake(), "parked.b", [{"n": 2}])
    client.rpop("bus.parked")  # the consuming end holds the requeued first task: lost again
    bus.redis.kill()
    bus.start_redis()
    restarted = time.monotonic()
    wait_until(lambda: sorted(queued_event_ids(bus, "bus.parked")) == sorted([first, second]), 60, interval=0.2,
               what="the task requeued after the worker reconnected")
    on_reconnect_s = time.monotonic() - restarted
    report("lost_task_recovery", lost_tasks_simulated=2, requeued=2, on_worker_start_seconds=round(on_start_s, 1),
           on_reconnect_seconds=round(on_reconnect_s, 1))
    assert worker.proc.poll() is None
    assert "requeued 1 event(s) whose delivery task was lost" in worker.output()


def test_redis_stalling_past_the_journal_timeout_mid_attempt_loses_nothing(fault_bus):
    """Point 2, the quieter Redis fault: Redis freezes (SIGSTOP: a fork or fsync stall) for longer than
    BUS_REDIS_TIMEOUT while an attempt is under way. Journaling the attempt times out in the worker,
    but the commands already sent are applied when Redis resumes: nothing lost, nothing repeated."""
    bus = fault_bus({"slow": SLOW_ROUTE})
    path = "/slow/stall"
    bus.receiver.delays[path] = 1.0
    bus.worker("slow")
    (event_id,) = intake.accept(bus.intake(), "slow.stall", [{"n": 0}])
    wait_until(lambda: bus.receiver.to(path), 30, interval=0.01, what="the attempt to reach the receiver")
    bus.redis.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(4)  # the attempt ends after 1 s; journaling it times out after 2 s
    finally:
        bus.redis.proc.send_signal(signal.SIGCONT)
    resumed = time.monotonic()
    wait_until(lambda: all_delivered(bus, [event_id]), VISIBILITY + 20, interval=0.2, what="the event after the stall")
    got = bus.receiver.ids(path)
    report("redis_stall_mid_attempt", sent=1, delivered=1, lost=0, duplicated=len(duplicates(got)),
           recovery_seconds_after_stall=round(time.monotonic() - resumed, 1), stall_seconds=4)
    assert set(got) == {event_id}
    assert len(got) <= 2, "at most the attempt whose result could not be journaled is repeated"


def test_a_route_whose_attempt_outlasts_the_visibility_timeout_is_refused_with_a_clear_message(tmp_path):
    """Issue 4 point 4, the configuration half: what would let kombu hand a running attempt to a second worker
    (kombu#337) is refused at start-up. Retries wait in Redis, so only one attempt must fit, not the backoff."""
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "late.toml").write_text(
        'match = "late.*"\nendpoint = "http://127.0.0.1:9/x"\nopen_timeout = 1\nread_timeout = 14\n'
        'retry_max_interval = 3600\n'
    )
    # 1 + 14 + 10 = 25: not under a 25 s visibility timeout.
    with pytest.raises(RouteError) as refused:
        load_routes(routes, 25)
    message = str(refused.value)
    for part in ("late.toml", "read_timeout", "visibility timeout (25s)", "sent twice", "BUS_VISIBILITY_TIMEOUT"):
        assert part in message
    assert load_routes(routes, 26).by_name["late"].retry_max_interval == 3600, "a backoff far past the timeout is fine"
    env = bus_env("redis://127.0.0.1:1/0", routes, BUS_VISIBILITY_TIMEOUT="25")
    worker = subprocess.run([sys.executable, "-m", "bus", "worker", "late"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert worker.returncode == 1 and "read_timeout" in worker.stderr and "late.toml" in worker.stderr


def test_a_retry_waiting_longer_than_the_visibility_timeout_is_delivered_exactly_once(fault_bus):
    """Issue 4 point 4: with Celery ETA retries, a wait past the visibility timeout is restored and run twice
    (kombu#337). Here the wait sits in the journal's retry schedule: nothing is unacked meanwhile."""
    visibility = 20
    wait = 28  # longer than the visibility timeout
    bus = fault_bus({"edge": f"""
match = "edge.*"
endpoint = "{{receiver}}/edge/${{tag[1]}}"
open_timeout = 1
read_timeout = 2
retry_max_interval = {wait}
"""}, visibility_timeout=visibility)
    path = "/edge/x"
    # Retry-After far beyond the cap: the retry waits exactly retry_max_interval.
    bus.receiver.script(path, (429, {"Retry-After": "3600"}, b"later"))
    bus.worker("edge")
    (event_id,) = intake.accept(bus.intake(), "edge.x", [{"n": 0}])
    client = bus.client()
    oldest_unacked = 0.0
    deadline = time.monotonic() + wait + 30
    while journal.load(client, event_id)["status"] != journal.DELIVERED and time.monotonic() < deadline:
        scores = [s for _, s in client.zrange("unacked_index", 0, -1, withscores=True)]
        oldest_unacked = max([oldest_unacked] + [time.time() - s for s in scores])
        time.sleep(0.25)
    assert journal.load(client, event_id)["status"] == journal.DELIVERED
    # A task is restored only once it has sat unacked longer than the visibility timeout: none did
    # (longest_unacked below), and nothing is left unacked to be restored later.
    assert bus.unacked() == 0
    time.sleep(2)
    got = bus.receiver.to(path)
    gaps = [round(b.at - a.at, 1) for a, b in zip(got, got[1:])]
    report("long_backoff_no_duplicates", sent=1, attempts=len(got), delivered_times=len(got) - 1,
           retry_gaps_seconds=gaps, retry_max_interval=wait, longest_unacked_seconds=round(oldest_unacked, 1),
           visibility_timeout=visibility)
    assert [r.headers["X-Bus-Attempt"] for r in got] == ["1", "2"], "one refusal, one delivery, no extra"
    assert wait - 0.5 <= gaps[0] <= wait + 3, gaps
    assert oldest_unacked < 5, "the waiting retry never sat unacked in a worker"
    assert len(journal.attempts(client, event_id)) == 2
    assert bus.unacked() == 0


def _slow_upload_start(url: str, tag: str, body: bytes) -> socket.socket:
    """A POST whose body is only half sent: a request the ingress is in the middle of."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(f"POST /{tag} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body[: len(body) // 2])
    return sock


def _slow_upload_finish(sock: socket.socket, body: bytes) -> tuple[int, dict]:
    with sock:
        sock.sendall(body[len(body) // 2:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload or b"{}")


def test_sigterm_to_ingress_and_worker_under_load_answers_in_flight_requests_and_loses_nothing(fault_bus):
    """Issue 4 point 6: SIGTERM (as systemd sends it, to the whole process group) during load."""
    bus = fault_bus({"slow": SLOW_ROUTE})
    path = "/slow/g"
    bus.receiver.delays[path] = 0.1
    ingress, url = bus.ingress()
    worker = bus.worker("slow")
    accepted: list[str] = []
    outcomes: Counter = Counter()
    stop = threading.Event()

    def produce(k: int) -> None:
        for n in range(5000):
            if stop.is_set():
                return
            try:
                r = requests.post(f"{url}/slow.g", data=json.dumps({"n": k * 10000 + n}), timeout=30,
                                  headers={"Content-Type": "application/json", "Connection": "close"})
                outcomes[r.status_code] += 1
                if r.status_code == 202:
                    accepted.extend(r.json()["ids"])
            except requests.ConnectionError:
                outcomes["refused or reset"] += 1
                time.sleep(0.05)

    producers = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
    for t in producers:
        t.start()
    try:
        wait_until(lambda: len(accepted) >= 100, 30, what="load on the ingress")
        slow_body = json.dumps({"n": -1, "pad": "x" * 4096}).encode()
        in_flight = _slow_upload_start(url, "slow.g", slow_body)
        time.sleep(0.5)  # the ingress has read the headers and waits for the rest of the body
        ingress.signal(signal.SIGTERM)
        time.sleep(1)
        status, answer = _slow_upload_finish(in_flight, slow_body)
        ingress.proc.wait(30)
    finally:
        stop.set()
        for t in producers:
            t.join(60)
    assert status == 202, answer
    accepted.extend(answer["ids"])
    client = bus.client()
    journaled = sum(journal.count(client, s) for s in journal.STATUSES)

    # Celery's warm shutdown: SIGTERM to the main process only (docker stop, `bus up`, systemd's
    # KillMode=mixed). Pool processes finish their attempts; reserved tasks go back to the queue.
    wait_until(lambda: len(set(bus.receiver.ids(path))) >= 20, 30, what="the worker to be busy")
    worker.proc.send_signal(signal.SIGTERM)
    term_at = time.monotonic()
    worker.proc.wait(30)
    warm_stop_s = time.monotonic() - term_at
    assert wait_group_gone(worker.proc.pid, 10)
    warm_unacked = bus.unacked()
    warm_dups = duplicates(bus.receiver.ids(path))

    # SIGTERM to the whole group (systemd's default KillMode=control-group): the pool processes die
    # mid-request, the main process sees WorkerLostError and requeues their tasks (reject_on_worker_lost).
    worker = bus.worker("slow")
    seen = len(bus.receiver.to(path))
    wait_until(lambda: len(bus.receiver.to(path)) >= seen + 10, 30, what="the second worker to be busy")
    worker.signal(signal.SIGTERM)
    term_at, group_term_at = time.monotonic(), time.time()
    worker.proc.wait(30)
    group_stop_s = time.monotonic() - term_at
    assert wait_group_gone(worker.proc.pid, 10)
    started_before_group_term = {r.headers["X-Request-Id"] for r in bus.receiver.to(path) if r.at <= group_term_at}

    worker = bus.worker("slow")
    restarted = time.monotonic()
    wait_all_delivered(bus, accepted, 120, worker, "every accepted event after the restart")
    recovered_s = time.monotonic() - restarted
    time.sleep(2)
    got = bus.receiver.ids(path)
    dups = duplicates(got)
    report(
        "graceful_stop", sent=len(accepted), journaled=journaled, delivered=len(set(got) & set(accepted)),
        lost=len(set(accepted) - set(got)), duplicated=len(dups), duplicated_by_warm_stop=len(warm_dups),
        ingress_outcomes={str(k): v for k, v in outcomes.items()}, warm_stop_seconds=round(warm_stop_s, 1),
        unacked_after_warm_stop=warm_unacked, group_stop_seconds=round(group_stop_s, 1),
        recovery_seconds_after_restart=round(recovered_s, 1),
    )
    assert journaled == len(accepted), "every event the ingress journaled was answered 202 to its producer"
    assert set(got) == set(accepted), "zero loss"
    assert not warm_dups, "a warm shutdown finishes its attempts instead of cutting them off"
    assert warm_unacked == 0, "a warm shutdown hands its reserved tasks back at once"
    assert set(dups) <= started_before_group_term, "only attempts cut off by the group SIGTERM are repeated"


# Point 7: one bus, one worker (two pool processes) and one misbehaving receiver for all cases.
RAW_ROUTE = """
match = "raw.*"
endpoint = "{raw}/${tag[1]}"
open_timeout = 1
read_timeout = 2
retry_max_interval = 4
"""


@pytest.fixture(scope="module")
def rude(tmp_path_factory):
    raw = MisbehavingReceiver()
    bus = make_fault_bus(tmp_path_factory.mktemp("rude"), {"raw": RAW_ROUTE.replace("{raw}", raw.url)}, VISIBILITY)
    try:
        bus.worker("raw")
        yield bus, raw
    finally:
        bus.close()
        raw.close()


def settle(bus: FaultBus, event_id: str, status: str, timeout: float = 30) -> list[dict]:
    client = bus.client()
    wait_until(lambda: journal.load(client, event_id)["status"] == status, timeout, interval=0.1, what=f"status {status}")
    return journal.attempts(client, event_id)


def test_receiver_sleeping_past_read_timeout_is_retried_and_frees_the_worker(rude):
    bus, raw = rude
    raw.script("/sleepy", ("sleep", 6))
    (event_id,) = intake.accept(bus.intake(), "raw.sleepy", [{"n": 1}])
    attempts = settle(bus, event_id, journal.DELIVERED)
    report("receiver_sleeps_past_read_timeout", sent=1, delivered=1, attempts=len(attempts),
           timed_out_attempt_seconds=attempts[0]["duration"], read_timeout=2)
    assert "Timeout" in attempts[0]["error"]
    assert attempts[0]["duration"] < 2 + 1, "the attempt gave up at read_timeout, not when the receiver woke up"
    assert attempts[1]["status_code"] == 200


@pytest.mark.parametrize("mode", ["reset", "cut_headers"])
def test_connection_reset_before_a_complete_answer_is_retried(rude, mode):
    """"reset": RST right after the request; "cut_headers": half a status line and header, then RST."""
    bus, raw = rude
    raw.script(f"/{mode}", mode, mode)
    (event_id,) = intake.accept(bus.intake(), f"raw.{mode}", [{"n": 1}])
    attempts = settle(bus, event_id, journal.DELIVERED)
    report(f"connection_reset_{mode}", sent=1, delivered=1, attempts=len(attempts),
           errors=[a.get("error", a.get("status_code")) for a in attempts])
    assert [a.get("status_code") for a in attempts] == [None, None, 200], attempts
    assert len({r[1] for r in raw.to(f"/{mode}")}) == 1, "every attempt carries the same X-Request-Id"


def test_connection_reset_inside_the_body_of_a_2xx_counts_as_delivered_once(rude):
    """Decision: the status line is the endpoint's answer (we never read past 2 KiB of the body anyway).
    Before the fix the read error escaped the task, Celery acked the failed task and the event was lost."""
    bus, raw = rude
    raw.script("/cut_body", "cut_body")
    (event_id,) = intake.accept(bus.intake(), "raw.cut_body", [{"n": 1}])
    (attempt,) = settle(bus, event_id, journal.DELIVERED)
    report("connection_reset_cut_body", sent=1, delivered=1, attempts=1, response_error=attempt["response_error"])
    assert attempt["status_code"] == 200 and "reset" in attempt["response_error"].lower()
    assert len(raw.to("/cut_body")) == 1


def test_429_retry_after_is_honoured(rude):
    bus, raw = rude
    raw.script("/busy", ("status", 429, {"Retry-After": "3"}))
    (event_id,) = intake.accept(bus.intake(), "raw.busy", [{"n": 1}])
    settle(bus, event_id, journal.DELIVERED)
    first, second = raw.to("/busy")
    gap = second[2] - first[2]
    report("retry_after_429", sent=1, delivered=1, retry_after=3, measured_gap_seconds=round(gap, 2))
    assert 2.9 <= gap < 3 + 2, "the next attempt waits for Retry-After (the backoff alone would be ~1 s)"


@pytest.mark.parametrize("code", [301, 302])
def test_redirects_are_not_followed_but_dead_lettered_with_the_location_kept(rude, code):
    """Decision: following a redirect would let an endpoint send events to another host; park them instead."""
    bus, raw = rude
    raw.script(f"/moved{code}", ("status", code, {"Location": f"{raw.url}/elsewhere{code}"}))
    (event_id,) = intake.accept(bus.intake(), f"raw.moved{code}", [{"n": 1}])
    (attempt,) = settle(bus, event_id, journal.DEAD)
    time.sleep(1.5)
    report(f"redirect_{code}", sent=1, dead=1, location=attempt.get("location"))
    assert attempt["status_code"] == code
    assert attempt["location"] == f"{raw.url}/elsewhere{code}"
    assert not raw.to(f"/elsewhere{code}") and len(raw.to(f"/moved{code}")) == 1


def test_a_100_mb_response_body_is_not_read_and_the_worker_stays_small(rude):
    bus, raw = rude
    huge = 100 * 1024 * 1024
    raw.script("/huge", ("huge", 500, huge), ("huge", 200, huge))
    worker = bus.procs[0]
    before = {pid: peak_rss_mb(pid) for pid in group_pids(worker.proc.pid)}
    (event_id,) = intake.accept(bus.intake(), "raw.huge", [{"n": 1}])
    attempts = settle(bus, event_id, journal.DELIVERED)
    after = {pid: peak_rss_mb(pid) for pid in group_pids(worker.proc.pid)}
    growth = max(after[p] - before.get(p, after[p]) for p in after)
    wait_until(lambda: len(raw.bytes_sent) == 1 and raw.bytes_sent["/huge"] > 0, 10, what="the server to see the hang-up")
    report("huge_response_body", sent=1, delivered=1, attempts=len(attempts), body_bytes_offered=2 * huge,
           body_bytes_the_server_got_out=raw.bytes_sent["/huge"], worker_peak_rss_growth_mb=round(growth, 1),
           worker_peak_rss_mb=round(max(after.values()), 1))
    assert [a["status_code"] for a in attempts] == [500, 200]
    assert len(attempts[0]["response"]) <= journal.RESPONSE_KEEP
    assert raw.bytes_sent["/huge"] < huge // 4, "the worker hung up instead of reading 100 MB"
    assert growth < 20, "peak memory of the worker processes barely moved"
    assert max(a["duration"] for a in attempts) < 2


def test_a_receiver_trickling_its_answer_is_cut_off_at_open_plus_read_timeout(rude):
    """One byte every half second never trips a per-read timeout: without a deadline on the whole
    attempt the pool process is held for as long as the receiver likes, and the task outlives the
    visibility timeout (a duplicate on top of a stuck worker)."""
    bus, raw = rude
    raw.script("/trickle", ("trickle", 0.5))
    (event_id,) = intake.accept(bus.intake(), "raw.trickle", [{"n": 1}])
    attempts = settle(bus, event_id, journal.DELIVERED, timeout=VISIBILITY)
    report("receiver_trickles_answer", sent=1, delivered=1, attempts=len(attempts),
           cut_off_attempt_seconds=attempts[0]["duration"], open_plus_read_timeout=1 + 2, error=attempts[0]["error"])
    assert attempts[0]["status_code"] is None and attempts[0]["duration"] < 1 + 2 + 0.5
    assert attempts[1]["status_code"] == 200
