"""Flower tells the bus's story: a delivered event is a `bus.deliver` task whose id is the event id and whose
arguments show its tag and attempt, run by a worker named for its routes. Flower runs as docker-compose.yml
runs it: behind basic auth from FLOWER_BASIC_AUTH, with --persistent state."""
from __future__ import annotations

import subprocess
import sys
import uuid

import requests

from bus import journal
from conftest import free_port, wait_until

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


def test_flower_api_lists_a_delivered_bus_task_with_its_tag_event_id_and_worker(bus):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    flower = start_flower(bus, port)
    try:
        def worker_seen() -> list[str]:
            if flower.poll() is not None:
                raise AssertionError(f"flower exited: {(bus.tmp / f'flower-{port}.log').read_text()}")
            try:
                workers = api(url, "/api/workers", refresh="1")
                return [name for name in workers if "ops" in name.partition("@")[0].split("+")]
            except requests.RequestException:
                return []

        (worker,) = wait_until(worker_seen, 30, interval=0.3, what="Flower to see the session worker")
        assert requests.get(f"{url}/api/tasks", timeout=10).status_code == 401, "the API needs the credentials"

        tag = f"ops.flower{uuid.uuid4().hex[:8]}"
        (event_id,) = bus.post(tag, '{"seen": "in flower"}').json()["ids"]
        wait_until(lambda: journal.load(bus.redis.client(), event_id)["status"] == journal.DELIVERED, 15,
                   what="delivery")

        def task() -> dict | None:
            found = api(url, "/api/tasks", taskname="bus.deliver").get(event_id)
            return found if found and found.get("state") == "SUCCESS" else None

        seen = wait_until(task, 20, interval=0.3, what="Flower to list the task as SUCCESS")
        assert seen["name"] == "bus.deliver"
        assert seen["args"] == f"{tag} {event_id} attempt 1"
        assert seen["worker"] == worker
        assert seen["result"] == "'delivered=1'"  # verdicts of the task's events, counted
        assert (bus.tmp / "flower.db").exists() or list(bus.tmp.glob("flower.db*")), "--persistent keeps state on disk"
    finally:
        flower.terminate()
        try:
            flower.wait(15)
        except subprocess.TimeoutExpired:
            flower.kill()
            flower.wait(5)
