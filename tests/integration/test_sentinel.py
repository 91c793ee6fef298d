"""More than one Redis: the bus through Sentinels, a failover under load, and acks confirmed by a replica.

Each test runs a primary, a replica and three Sentinels of its own (sentinels.py), and a bus whose
BUS_REDIS_URL names the Sentinels only.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import pytest
import requests

from bus import journal
from conftest import wait_until
from faultkit import duplicates, report
from sentinels import RedisSet, forget_templates_on_replica

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def primary_client(redis_set: RedisSet):
    return redis_set.node_on(redis_set.primary_port()).client()


def test_events_are_accepted_journaled_and_delivered_through_the_sentinels(ha):
    redis_set, receiver, bus = ha
    env, url, _ = bus()
    name = uuid.uuid4().hex[:8]
    posted = requests.post(f"{url}/api.{name}", json={"via": "http"}, timeout=10)
    assert posted.status_code == 202, posted.text
    emitted = subprocess.run([sys.executable, "-m", "bus", "emit", f"api.{name}", '{"via": "cli"}'], env=env,
                             capture_output=True, text=True, timeout=60)
    assert emitted.returncode == 0, emitted.stderr
    ids = posted.json()["ids"] + [emitted.stdout.strip()]
    wait_until(lambda: sorted(receiver.ids(f"/api/{name}/")) == sorted(ids), 20, what="both delivered")
    listed = subprocess.run([sys.executable, "-m", "bus", "events", "--tag", f"api.{name}", "--json"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert sorted(e["id"] for e in json.loads(listed.stdout)["events"]) == sorted(ids), listed.stderr
    assert requests.get(f"{url}/healthz", timeout=10).status_code == 200


# "missing": the replica's message templates are deleted just before the failover (sentinels.py), so every
# producer's first accepts on the new primary are refused for them at once (test_sentinel_templates.py).
@pytest.mark.parametrize("templates", ["replicated", "missing"])
def test_a_failover_under_load_answers_only_202_or_503_and_delivers_every_202(ha, templates):
    redis_set, receiver, bus = ha
    _, url, worker = bus(BUS_ACK_REPLICAS="1", BUS_ACK_TIMEOUT_MS="500")
    name = uuid.uuid4().hex[:8]
    answers: list[tuple[float, int, list[str]]] = []
    stop = threading.Event()

    def produce() -> None:
        with requests.Session() as session:
            for n in range(3000):
                if stop.is_set():
                    return
                try:
                    resp = session.post(f"{url}/api.{name}", json={"n": n}, timeout=10)
                    answers.append((time.time(), resp.status_code, resp.json().get("ids", [])))
                except requests.RequestException:
                    answers.append((time.time(), -1, []))
                time.sleep(0.005)

    producers = [threading.Thread(target=produce) for _ in range(2)]
    for p in producers:
        p.start()
    try:
        time.sleep(1.5)
        if templates == "missing":
            forget_templates_on_replica(redis_set.replica)
        redis_set.failover()
        failed_over_at = time.time()
        wait_until(lambda: any(at > failed_over_at and status == 202 for at, status, _ in answers), 30,
                   what="accepts to resume on the new primary without a restart")
        time.sleep(1)
    finally:
        stop.set()
        for p in producers:
            p.join(30)
    statuses = Counter(status for _, status, _ in answers)
    refused_at = [at for at, status, _ in answers if status != 202]
    numbers = dict(answers=dict(statuses), seconds_of_503=round(refused_at[-1] - refused_at[0], 2) if refused_at else 0.0)
    assert set(statuses) <= {202, 503}, f"only 202 or 503 while Redis changes hands: {statuses}"
    accepted = [i for _, status, ids in answers if status == 202 for i in ids]
    wait_until(lambda: set(accepted) <= set(receiver.ids(f"/api/{name}/")), 60, what="every 202 delivered")
    assert worker.proc.poll() is None, "the same worker process delivered through the failover"
    time.sleep(1)
    got = receiver.ids(f"/api/{name}/")
    title = "sentinel_failover_under_load" + ("_templates_missing" if templates == "missing" else "")
    report(title, **numbers, accepted=len(accepted), delivered=len(set(got) & set(accepted)),
           duplicated=len(duplicates(got)), delivered_but_answered_503=len(set(got) - set(accepted)))


def test_acks_wait_for_a_replica_and_a_killed_primary_loses_nothing_acknowledged(ha):
    redis_set, receiver, bus = ha
    _, url, _ = bus(BUS_ACK_REPLICAS="1", BUS_ACK_TIMEOUT_MS="300")
    name = uuid.uuid4().hex[:8]
    acknowledged = [i for n in range(5) for i in
                    requests.post(f"{url}/api.{name}", json={"n": n}, timeout=10).json()["ids"]]
    assert len(acknowledged) == 5

    # Cut the replica off: it stops, and the primary drops its link.
    redis_set.replica.signal(signal.SIGSTOP)
    primary = redis_set.primary.client()
    primary.execute_command("CLIENT", "KILL", "TYPE", "replica")
    refused = [requests.post(f"{url}/api.{name}", json={"n": 100 + n}, timeout=10) for n in range(3)]
    assert [r.status_code for r in refused] == [503] * 3, [r.text for r in refused]
    assert "may still be delivered" in refused[0].json()["error"] and "Idempotency-Key" in refused[0].json()["error"]
    assert refused[0].headers.get("Retry-After")

    # The primary dies; the replica comes back and is promoted. Nothing acknowledged is missing.
    redis_set.primary.kill()
    redis_set.replica.signal(signal.SIGCONT)
    wait_until(lambda: redis_set.primary_port() == redis_set.replica.port, 30, interval=0.2,
               what="the Sentinels to promote the replica")
    promoted = redis_set.replica.client()
    wait_until(lambda: promoted.info("replication")["role"] == "master", 15, what="the promotion")
    missing = [i for i in acknowledged if journal.load(promoted, i) is None]
    assert not missing, f"acknowledged events lost in the failover: {missing}"
    wait_until(lambda: set(acknowledged) <= set(receiver.ids(f"/api/{name}/")), 60,
               what="the acknowledged events delivered by the promoted replica")
