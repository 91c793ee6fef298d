"""Parts for the fault tests: a bus of its own per test (short visibility timeout), a raw socket
receiver that misbehaves on purpose, process-group helpers and the numbers each test reports."""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bus import intake, journal, settings
from conftest import BusProcess, Receiver, RedisServer, bus_env, free_port, start_ingress, start_worker, wait_until
from tests.httpkit import read_head

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# Small enough that a killed worker's events are back in ~25 s; a route must fit under it:
# retry_max_interval + open_timeout + read_timeout + 10 < 20.
VISIBILITY = 20
SLOW_ROUTE = """
match = "slow.*"
endpoint = "{receiver}/slow/${tag[1]}"
open_timeout = 1
read_timeout = 4
retry_max_interval = 4
"""


def bodies_by_id(bus: FaultBus, path: str) -> dict[str, set[int]]:
    got: dict[str, set[int]] = {}
    for r in bus.receiver.to(path):
        got.setdefault(r.headers["X-Request-Id"], set()).add(json.loads(r.body)["n"])
    return got


def all_delivered(bus: FaultBus, ids: list[str]) -> bool:
    client = bus.client()
    return all(journal.load(client, i)["status"] == journal.DELIVERED for i in ids)


def wait_all_delivered(bus: FaultBus, ids: list[str], timeout: float, worker: BusProcess, what: str) -> None:
    """Wait until the journal says every event is delivered; on timeout print what is stuck where."""
    try:
        wait_until(lambda: all_delivered(bus, ids), timeout, interval=0.5, what=what)
    except AssertionError:
        client = bus.client()
        print("undelivered:", Counter(journal.load(client, i)["status"] for i in ids if not all_delivered(bus, [i])))
        print("queues:", {q.decode(): client.llen(q) for q in client.scan_iter(match="bus.*", _type="list")},
              "unacked ages:", [round(time.time() - at) for _, at in client.zrange("unacked_index", 0, -1, withscores=True)])
        os.kill(worker.proc.pid, signal.SIGUSR1)  # Celery's main process logs the stack of every thread
        time.sleep(2)
        print("worker log:\n", worker.output()[-30000:])
        raise


def report(test: str, **numbers: Any) -> None:
    """Print a test's measured numbers and merge them into test-artifacts/faults.json (for docs/reliability.md)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "faults.json"
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError):
        results = {}
    results[test] = {**numbers, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"\nFAULT RESULT {test}: {json.dumps(numbers, sort_keys=True)}")


def duplicates(ids: list[str]) -> dict[str, int]:
    return {i: n for i, n in Counter(ids).items() if n > 1}


def children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    return [int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()]


def group_pids(pgid: int) -> list[int]:
    """Live processes of a process group (a worker's main process and its pool children)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(pid))
    return found


def wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not group_pids(pgid):
            return True
        time.sleep(0.05)
    return False


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the most memory the process ever held resident."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class FaultBus:
    """One bus for one fault test: its own Redis (AOF, fsync always), receiver, routes and processes."""

    tmp: Path
    redis: RedisServer
    receiver: Receiver
    routes_dir: Path
    env: dict[str, str]
    appendfsync: str = "always"
    procs: list[BusProcess] = field(default_factory=list)

    def client(self) -> redis.Redis:
        return self.redis.client()

    def start_redis(self) -> None:
        """(Re)start Redis on its port from its AOF, with this bus's fsync policy."""
        self.redis.start()
        self.client().config_set("appendfsync", self.appendfsync)

    def intake(self) -> intake.Intake:
        return intake.load(settings.load(self.env))

    def worker(self, *routes: str) -> BusProcess:
        proc = start_worker(self.env, self.tmp / f"worker-{time.monotonic_ns()}.log", *routes)
        self.procs.append(proc)
        return proc

    def ingress(self) -> tuple[BusProcess, str]:
        proc, url = start_ingress(self.env, self.tmp / f"ingress-{time.monotonic_ns()}.log")
        self.procs.append(proc)
        return proc, url

    def unacked(self) -> int:
        """Messages kombu holds as delivered-but-not-acked (what the visibility timeout restores)."""
        return self.client().hlen("unacked")

    def close(self) -> None:
        for proc in self.procs:
            try:
                proc.stop(timeout=20)
            except Exception:  # a test already killed it; make sure the group is gone
                proc.signal(signal.SIGKILL)
            if proc.proc is not None:
                wait_group_gone(proc.proc.pid, 10)
        self.receiver.stop()
        self.redis.kill()


def make_fault_bus(tmp: Path, routes: dict[str, str], visibility_timeout: int, appendfsync: str = "always") -> FaultBus:
    (tmp / "redis").mkdir()
    server = RedisServer(tmp / "redis")
    receiver = Receiver()
    receiver.start()
    routes_dir = tmp / "routes"
    routes_dir.mkdir()
    for name, text in routes.items():
        (routes_dir / f"{name}.toml").write_text(text.replace("{receiver}", receiver.url))
    env = bus_env(server.url, routes_dir, BUS_VISIBILITY_TIMEOUT=str(visibility_timeout))
    bus = FaultBus(tmp, server, receiver, routes_dir, env, appendfsync)
    bus.start_redis()
    return bus


class MisbehavingReceiver:
    """A raw TCP HTTP server whose answer per path follows a script of misbehaviours, then 200.

    Modes: ("sleep", s) answers 200 after s seconds; ("status", code, headers) answers with that
    status; "reset" closes with RST after reading the request; "cut_headers" sends half a status
    line and header, then RST; "cut_body" sends a 200 status line and part of the body, then RST;
    ("huge", code, nbytes) streams nbytes of body; ("trickle", s) sends one header byte every s
    seconds, forever.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.scripts: dict[str, list[Any]] = {}
        self.requests: list[tuple[str, str, float]] = []  # (path, X-Request-Id, at)
        self.bytes_sent: dict[str, int] = {}
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(64)
        self._closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, path: str, *modes: Any) -> None:
        with self._lock:
            self.scripts[path] = list(modes)

    def to(self, path: str) -> list[tuple[str, str, float]]:
        with self._lock:
            return [r for r in self.requests if r[0] == path]

    def close(self) -> None:
        self._closed.set()
        self._sock.close()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(30)
            data = read_head(conn)
            if b"\r\n\r\n" not in data:
                return
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            length = int(headers.get("content-length", 0))
            while len(body) < length:
                body += conn.recv(65536)
            with self._lock:
                self.requests.append((path, headers.get("x-request-id", ""), time.time()))
                script = self.scripts.get(path)
                mode = script.pop(0) if script else ("status", 200, {})
            self._answer(conn, path, mode)
        except OSError:
            pass
        finally:
            conn.close()

    def _answer(self, conn: socket.socket, path: str, mode: Any) -> None:
        kind = mode if isinstance(mode, str) else mode[0]
        if kind == "sleep":
            time.sleep(mode[1])
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        elif kind == "status":
            _, code, headers = mode
            extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            conn.sendall(f"HTTP/1.1 {code} X\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\nno".encode())
        elif kind == "reset":
            _rst(conn)
        elif kind == "cut_headers":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Le")
            time.sleep(0.2)
            _rst(conn)
        elif kind == "cut_body":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
            time.sleep(0.2)
            _rst(conn)
        elif kind == "huge":
            _, code, total = mode
            conn.sendall(f"HTTP/1.1 {code} X\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n".encode())
            block, sent = b"E" * 65536, 0
            try:
                while sent < total:
                    sent += conn.send(block[: total - sent])
            finally:
                with self._lock:
                    self.bytes_sent[path] = self.bytes_sent.get(path, 0) + sent
        elif kind == "trickle":
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            deadline = time.monotonic() + 120  # bounded, like every loop in the tests
            while time.monotonic() < deadline and not self._closed.is_set():
                conn.sendall(b"X")
                time.sleep(mode[1])


def _rst(conn: socket.socket) -> None:
    # SO_LINGER 0: close() sends a TCP RST instead of a FIN, what a crashing receiver looks like.
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
