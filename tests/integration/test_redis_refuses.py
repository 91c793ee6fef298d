"""A Redis that will not take writes (full, a replica, short of replicas) makes every way in refuse
with 503 and Retry-After, never a 500; workers keep delivering what was accepted."""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import requests

import bus
from bus import intake, settings
from conftest import BusProcess, Receiver, bus_env, free_port, start_ingress, start_worker, wait_until
from forwardkit import Client

ROUTES = {
    "fill.toml": 'match = "fill.*"\nendpoint = "{receiver}/fill/${{tag[1]}}"\nretry_max_interval = 1\n',
    # A backlog_limit sends the accept through the werkzeug app instead of the event loop.
    "checked.toml": 'match = "checked.*"\nendpoint = "{receiver}/checked/${{tag[1]}}"\nbacklog_limit = 1000000\n',
}
RECORD = {"payload": "x" * 400}


class OwnBus:
    """An ingress (HTTP and forward) on a Redis of the test's own; a worker when asked."""

    def __init__(self, tmp: Path, redis_url: str, **env: str):
        self.tmp, self.receiver = tmp, Receiver()
        self.receiver.start()
        routes = tmp / "routes"
        routes.mkdir()
        for name, text in ROUTES.items():
            (routes / name).write_text(text.format(receiver=self.receiver.url))
        self.env = bus_env(redis_url, routes, **env)
        self.forward_port = free_port()
        self.ingress, self.url = start_ingress(self.env, tmp / "ingress.log", self.forward_port)
        self.worker: BusProcess | None = None

    def post(self, tag: str, records: list[dict]) -> requests.Response:
        return requests.post(f"{self.url}/{tag}", data=json.dumps(records),
                             headers={"Content-Type": "application/json"}, timeout=10)

    def healthz(self) -> requests.Response:
        return requests.get(f"{self.url}/healthz", timeout=10)

    def stop(self) -> None:
        for proc in (self.ingress, self.worker):
            if proc is not None:
                proc.stop()
        self.receiver.stop()


@pytest.fixture
def own_bus(tmp_path):
    made: list[OwnBus] = []

    def make(redis_url: str, **env: str) -> OwnBus:
        made.append(OwnBus(tmp_path, redis_url, **env))
        return made[-1]

    yield make
    for one in made:
        one.stop()


def emit_through(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tag: str) -> None:
    monkeypatch.setattr(intake, "_default", intake.load(settings.load(env)))
    bus.emit(tag, {"n": 1})


def refused(answer: requests.Response, says: str) -> str:
    assert answer.status_code == 503, (answer.status_code, answer.text)
    assert answer.headers["Retry-After"].isdigit()
    error = answer.json()["error"]
    assert says in error, error
    return error


def forward_is_not_acked(port: int, tag: str) -> None:
    with Client(port, timeout=10) as client:
        client.send([tag, int(time.time()), {"n": 1}, {"chunk": "refused-chunk"}])
        assert client.closed_without_answer()


def test_a_full_redis_is_refused_with_503_naming_the_memory_limit_and_workers_still_deliver(
        redis_server, own_bus, monkeypatch):
    server = redis_server("full", "--maxmemory", "8mb", "--maxmemory-policy", "noeviction")
    # Delivered events leave Redis for the archive after the hot window (2 s here): the memory
    # they free is what lets the ingress accept again once the workers have drained.
    one = own_bus(server.url, BUS_HOT_WINDOW="2")
    assert one.healthz().status_code == 200
    accepted: list[str] = []
    deadline = time.monotonic() + 120
    for _ in range(2000):
        assert time.monotonic() < deadline, "Redis never filled up"
        answer = one.post("fill.a", [RECORD] * 50)
        assert answer.status_code in (202, 503), (answer.status_code, answer.text)
        if answer.status_code == 503:
            break
        accepted += answer.json()["ids"]
    else:
        raise AssertionError("2000 requests went in without a refusal")
    error = refused(answer, "memory limit")
    assert "maxmemory" in error
    refused(one.post("checked.a", [RECORD]), "memory limit")
    refused(one.healthz(), "memory limit")
    forward_is_not_acked(one.forward_port, "fill.a")
    with pytest.raises(bus.RedisFull, match="memory limit"):  # an Unavailable
        emit_through(one.env, monkeypatch, "fill.a")
    assert accepted, "the bus accepted events before it filled up"

    one.worker = start_worker(one.env, one.tmp / "worker.log", "fill")
    wait_until(lambda: set(one.receiver.ids("/fill/a")) >= set(accepted), 90, interval=0.5,
               what=f"the {len(accepted)} accepted events to be delivered")
    assert "OutOfMemory" not in one.worker.output() and "OOM" not in one.worker.output()
    # Drained and the delivered records archived: room again.
    wait_until(lambda: one.healthz().status_code == 200 and one.post("fill.b", [RECORD]).status_code == 202, 150,
               interval=1, what="the ingress to accept again once drained")


def test_a_replica_as_the_bus_url_refuses_writes_with_503(redis_server, own_bus, monkeypatch):
    primary = redis_server("primary")
    replica = redis_server("replica", "--replicaof", "127.0.0.1", str(primary.port))
    one = own_bus(replica.url)
    tag = f"fill.{uuid.uuid4().hex[:8]}"
    refused(one.post(tag, [RECORD]), "read-only replica")
    refused(one.post("checked.a", [RECORD]), "read-only replica")
    refused(one.healthz(), "replica")
    forward_is_not_acked(one.forward_port, tag)
    with pytest.raises(bus.Unavailable, match="read-only replica"):
        emit_through(one.env, monkeypatch, tag)
    assert "Traceback" not in one.ingress.output()

    # The replica is promoted (a failover behind the same URL): accepts resume by themselves.
    replica.client().execute_command("REPLICAOF", "NO", "ONE")
    assert one.post(tag, [RECORD]).status_code == 202
    assert one.post("checked.a", [RECORD]).status_code == 202
    assert one.healthz().status_code == 200
    bus.emit(tag, {"n": 2})


def test_a_primary_short_of_its_min_replicas_refuses_with_503(redis_server, own_bus, monkeypatch):
    server = redis_server("lonely", "--min-replicas-to-write", "1")
    one = own_bus(server.url)
    refused(one.post("fill.a", [RECORD]), "min-replicas-to-write")
    refused(one.post("checked.a", [RECORD]), "min-replicas-to-write")
    refused(one.healthz(), "min-replicas-to-write")
    forward_is_not_acked(one.forward_port, "fill.a")
    with pytest.raises(bus.Unavailable, match="min-replicas-to-write"):
        emit_through(one.env, monkeypatch, "fill.a")
    assert "Traceback" not in one.ingress.output()


def test_healthz_is_503_while_fewer_replicas_than_bus_ack_replicas_are_connected(redis_server, own_bus):
    primary = redis_server("acked")
    one = own_bus(primary.url, BUS_ACK_REPLICAS="1", BUS_ACK_TIMEOUT_MS="200")
    refused(one.healthz(), "BUS_ACK_REPLICAS=1")
    replica = redis_server("its-replica", "--replicaof", "127.0.0.1", str(primary.port))
    wait_until(lambda: replica.client().info("replication").get("master_link_status") == "up", 20,
               what="the replica to sync")
    wait_until(lambda: one.healthz().status_code == 200, 10, what="/healthz once a replica is connected")
