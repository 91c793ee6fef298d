"""Flower tells the bus's story: a delivered event is a `bus.deliver` task whose id is the event id and whose
arguments show its tag and attempt, run by a worker named for its routes. Flower runs as docker-compose.yml
runs it: behind basic auth from FLOWER_BASIC_AUTH, with --persistent state."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
import requests

from bus import journal
from conftest import free_port, wait_until, waiting_for_a_task

AUTH = ("operator", "flower-test-password")


def start_flower(bus, port: int) -> subprocess.Popen:
    log = open(bus.tmp / f"flower-{port}.log", "ab")
    env = {**bus.env, "FLOWER_BASIC_AUTH": ":".join(AUTH)}
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bus", "flower", f"--port={port}", "--address=127.0.0.1",
         "--persistent=True", f"--db={bus.tmp / 'flower.db'}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def api(url: str, path: str, **params: str) -> dict:
    resp = requests.get(f"{url}{path}", params=params, auth=AUTH, timeout=10)
    resp.raise_for_status()
    return resp.json()


@pytest.fixture(scope="module")
def flower(bus):
    """Flower as docker-compose runs it, once it sees the session worker: (its URL, that worker's name)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_flower(bus, port)
    try:
        def worker_seen() -> list[str]:
            if proc.poll() is not None:
                raise AssertionError(f"flower exited: {(bus.tmp / f'flower-{port}.log').read_text()}")
            try:
                workers = api(url, "/api/workers", refresh="1")
                return [name for name in workers if "ops" in name.partition("@")[0].split("+")]
            except requests.RequestException:
                return []

        (worker,) = wait_until(worker_seen, 30, interval=0.3, what="Flower to see the session worker")
        yield url, worker
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def flower_task(url: str, task_id: str, state: str) -> dict:
    def seen() -> dict | None:
        found = api(url, "/api/tasks", taskname="bus.deliver").get(task_id)
        return found if found and found.get("state") == state else None

    return wait_until(seen, 20, interval=0.3, what=f"Flower to list task {task_id} as {state}")


def post_answered_with(bus, status: int) -> tuple[str, str]:
    """An event of a fresh tag whose first attempt the receiver answers with `status`: (tag, event id)."""
    tag = f"ops.answered{status}x{uuid.uuid4().hex[:8]}"
    bus.receiver.script(f"/ops/{tag}", status)
    (event_id,) = bus.post(tag, '{"answered": %d}' % status).json()["ids"]
    return tag, event_id


def test_flower_api_lists_a_delivered_bus_task_with_its_tag_event_id_and_worker(bus, flower):
    url, worker = flower
    assert requests.get(f"{url}/api/tasks", timeout=10).status_code == 401, "the API needs the credentials"

    tag = f"ops.flower{uuid.uuid4().hex[:8]}"
    (event_id,) = bus.post(tag, '{"seen": "in flower"}').json()["ids"]
    wait_until(lambda: journal.load(bus.redis.client(), event_id)["status"] == journal.DELIVERED, 15,
               what="delivery")
    seen = flower_task(url, event_id, "SUCCESS")
    assert seen["name"] == "bus.deliver"
    assert seen["args"] == f"{tag} {event_id} attempt 1"
    assert seen["worker"] == worker
    assert seen["result"] == "'delivered=1'"  # verdicts of the task's events, counted
    assert (bus.tmp / "flower.db").exists() or list(bus.tmp.glob("flower.db*")), "--persistent keeps state on disk"


def test_a_dead_lettered_delivery_is_a_failed_task_naming_the_status_and_event_and_is_never_redelivered(bus, flower):
    tag, event_id = post_answered_with(bus, 404)
    seen = flower_task(flower[0], event_id, "FAILURE")
    assert "DeadLettered" in seen["exception"]
    assert f"status dead for event {event_id} (last answer: 404)" in seen["exception"]
    assert journal.load(bus.redis.client(), event_id)["status"] == journal.DEAD
    # The failed task was acked: nothing of it waits in the queue or kombu's unacked hash, and the
    # endpoint was asked once (a redelivered message would skip the dead event, but must not exist).
    client = bus.redis.client()
    time.sleep(2)
    assert not [m for m in client.hvals(journal.KOMBU_UNACKED) if event_id.encode() in m]
    assert not waiting_for_a_task(client, "ops")
    assert len(bus.receiver.to(f"/ops/{tag}")) == 1


def test_a_delivery_left_on_the_bus_retry_schedule_is_a_retried_task_then_delivered(bus, flower):
    tag, event_id = post_answered_with(bus, 503)
    seen = flower_task(flower[0], event_id, "RETRY")
    assert "RetryScheduled" in seen["exception"]
    assert f"status retrying for event {event_id}" in seen["exception"]
    wait_until(lambda: journal.load(bus.redis.client(), event_id)["status"] == journal.DELIVERED, 20,
               what="the scheduled retry to deliver it")
    assert len(bus.receiver.to(f"/ops/{tag}")) == 2, "one failed attempt, one delivered: no extra Celery retry"
