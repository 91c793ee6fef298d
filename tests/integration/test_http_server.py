"""The HTTP ingress as a server: pipelined requests, Redis going away and coming back, workers and their supervisor."""
from __future__ import annotations

import os
import signal
import socket
import time

import orjson
import pytest
import requests

from bus import journal
from conftest import ROUTES, BusProcess, RedisServer, bus_env, free_port, start_ingress, wait_until


@pytest.fixture
def own(tmp_path):
    """A redis-server and an ingress of their own: these tests stop Redis."""
    server = RedisServer(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    server.start()
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "parked.toml").write_text(ROUTES["parked.toml"].format(receiver="http://127.0.0.1:9"))
    env = bus_env(server.url, routes, BUS_REDIS_TIMEOUT="1")
    proc, url = start_ingress(env, tmp_path / "ingress.log")
    yield server, url, env
    proc.stop()
    server.stop()


def _responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    data, out = b"", []
    deadline = time.monotonic() + 10
    while len(out) < count and time.monotonic() < deadline:
        while b"\r\n\r\n" in data and len(out) < count:
            head, _, rest = data.partition(b"\r\n\r\n")
            length = next(int(v) for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])
                          if k.strip().lower() == b"content-length")
            if len(rest) < length:
                break
            out.append((int(head.split(b" ")[1]), rest[:length]))
            data = rest[length:]
        if len(out) < count:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {len(out)} answers"
            data += chunk
    return out


def test_requests_pipelined_in_one_write_are_each_answered_in_order(own):
    server, url, _ = own
    port = int(url.rsplit(":", 1)[1])
    requests_ = b"".join(b"POST /parked.pipelined HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                         for body in (b'{"n": %d}' % i for i in range(30)))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(requests_)
        answers = _responses(sock, 30)
    assert [status for status, _ in answers] == [202] * 30
    ids = [orjson.loads(body)["ids"][0] for _, body in answers]
    client = server.client()
    assert [orjson.loads(journal.load(client, i)["body"])["n"] for i in ids] == list(range(30))


def test_redis_going_away_gets_503_and_the_ingress_reconnects_when_it_is_back(own):
    server, url, _ = own
    first = requests.post(f"{url}/parked.restart", json={"n": 1}, timeout=10)
    assert first.status_code == 202
    server.kill()
    started = time.monotonic()
    refused = requests.post(f"{url}/parked.restart", json={"n": 2}, timeout=10)
    assert refused.status_code == 503 and refused.headers["Retry-After"].isdigit()
    assert "nothing was accepted" in refused.json()["error"]
    assert time.monotonic() - started < 5
    server.start()  # same port, same AOF: the first event is still there

    def accepted() -> requests.Response | None:
        resp = requests.post(f"{url}/parked.restart", json={"n": 3}, timeout=10)
        return resp if resp.status_code == 202 else None

    third = wait_until(accepted, 15, what="the ingress to accept again")
    client = server.client()
    bodies = [orjson.loads(journal.load(client, i)["body"])["n"]
              for i in first.json()["ids"] + third.json()["ids"]]
    assert bodies == [1, 3]


def test_workers_stop_when_their_supervisor_is_killed(own, tmp_path):
    _, _, env = own
    port = free_port()
    proc = BusProcess(["serve", "--bind", f"127.0.0.1:{port}", "--workers", "2", "--forward", "off"], env,
                      tmp_path / "two-workers.log").start()
    try:
        wait_until(lambda: _healthz(port) == 200, 20, what="two workers to answer")
        workers = [int(p) for p in open(f"/proc/{proc.proc.pid}/task/{proc.proc.pid}/children").read().split()]
        assert len(workers) >= 2, workers
        os.kill(proc.proc.pid, signal.SIGKILL)
        proc.proc.wait(10)
        wait_until(lambda: not any(_alive(p) for p in workers), 15, what="the orphaned workers to exit")
        assert _healthz(port) == 0
        assert "supervisor" in proc.output() and "is gone" in proc.output()
    finally:
        proc.stop()


def _healthz(port: int) -> int:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code
    except requests.ConnectionError:
        return 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False
