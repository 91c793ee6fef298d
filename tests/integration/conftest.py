"""Real parts for integration tests: a redis-server with AOF on a free port, an HTTP receiver
that records requests and can go down, and `bus serve` / `bus worker` subprocesses.

Not pytest-celery: its 1.x runs broker, backend and workers as Docker containers built from
images it pulls, which neither these machines nor CI can run or fetch, and its older in-process
`celery_worker` (a thread, solo pool) cannot show what the bus promises: prefork pool processes
killed mid-request, acks_late and reject_on_worker_lost, Redis killed and restarted with AOF,
`bus worker` and `celery -A bus ...` as users start them."""
from __future__ import annotations

import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
import redis
import requests

from bus import journal
from bus.broker.messages import event_ids_of
from bus.filters import EventFilter

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class RedisServer:
    """A redis-server of our own with appendonly on, in a temp dir; can be killed and restarted.
    `options` are more redis-server arguments (e.g. "--maxmemory", "8mb")."""

    def __init__(self, directory: Path, *options: str):
        self.dir = directory
        self.options = options
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--logfile", str(self.dir / "redis.log"), *self.options],
            start_new_session=True,
        )
        client = self.client()
        wait_until(lambda: _pings(client), 10, what="redis-server to answer PING")

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
        return False


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 recording every request; answers follow per-path scripts."""

    port: int = field(default_factory=free_port)
    requests: list[Received] = field(default_factory=list)
    scripts: dict[str, list[tuple[int, dict[str, str], bytes]]] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    _server: http.server.ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, path: str, *answers: int | tuple[int, dict[str, str], bytes]) -> None:
        """Answer the next requests to `path` with these statuses (then 200)."""
        self.scripts[path] = [a if isinstance(a, tuple) else (a, {}, b"") for a in answers]

    def unscript(self, path: str) -> int:
        """Answer `path` with 200 from now on; how many requests it had until now (answered by its script)."""
        with self._lock:
            self.scripts.pop(path, None)
            return sum(r.path == path for r in self.requests)

    def start(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests.append(Received(self.path, dict(self.headers), body, time.time()))
                    script = receiver.scripts.get(self.path)
                    status, headers, payload = script.pop(0) if script else (200, {}, b"ok")
                time.sleep(receiver.delays.get(self.path, 0))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_PUT = do_PATCH = do_POST

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def to(self, path_prefix: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    def ids(self, path_prefix: str) -> list[str]:
        return [r.headers["X-Request-Id"] for r in self.to(path_prefix)]


class BusProcess:
    """`bus serve` or `bus worker` as a real subprocess, its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.args, self.env, self.log = args, env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> BusProcess:
        self._out = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "bus", *self.args], env=self.env,
                                     stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 20) -> None:
        if self.proc and self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(10)
        self._out.close()


# A fan-out route of two destinations on one receiver ({url}): the fan-out journal and console tests.
FANOUT_ROUTE = """
match = "api.*"
retry_max_interval = 1

[[destinations]]
name = "a"
endpoint = "{url}/a"

[[destinations]]
name = "b"
endpoint = "{url}/b"
"""


ROUTES = {
    # File names sort in match order: `api` is taken before the catch-all `other`.
    "api.toml": """
match = ["api.*"]
endpoint = "{receiver}/api/${{tag[1]}}/"
open_timeout = 1
read_timeout = 5
retry_max_interval = 2
""",
    "limited.toml": """
match = "limited.**"
endpoint = "{receiver}/limited/${{tag}}"
retry_max_interval = 1
max_attempts = 3
""",
    "capped.toml": """
# No session worker consumes it: its backlog only drains when a test starts one.
match = "capped.*"
endpoint = "{receiver}/capped/${{tag[1]}}"
backlog_limit = 3
""",
    "signed.toml": """
match = "signed.*"
endpoint = "{receiver}/signed/${{tag[1]}}"
# Two secrets while rotating: both signatures are sent.
signing_secret = ["env:BUS_TEST_SIGNING_OLD", "env:BUS_TEST_SIGNING_NEW"]
secret_headers = {{ Authorization = "env:BUS_TEST_ENDPOINT_TOKEN" }}
retry_max_interval = 1
""",
    "ops.toml": """
# The operating tests' own route (metrics, console, Flower), so other tests' traffic does not move its numbers.
match = "ops.**"
endpoint = "{receiver}/ops/${{tag}}"
retry_max_interval = 1
""",
    "parked.toml": """
# No worker consumes this route in the tests: its events must wait in bus.parked.
match = "parked.*"
endpoint = "{receiver}/parked/${{tag[-1]}}"
""",
    "secret.toml": """
# Credentials in a header and in the query string: they must never reach a log. Only test_logs runs its worker.
match = "secret.*"
endpoint = "{receiver}/secret/${{tag[1]}}?token=query-secret-value"
headers = {{ Authorization = "Bearer header-secret-value" }}
retry_max_interval = 1
max_attempts = 2
""",
}


# Secrets the `signed` route reads from the environment (made for the tests, nothing real).
ROUTE_SECRETS = {
    "BUS_TEST_SIGNING_OLD": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "BUS_TEST_SIGNING_NEW": "whsec_dGVzdC1zZWNyZXQtbmV3LTAxMjM0NTY3ODk=",
    "BUS_TEST_ENDPOINT_TOKEN": "Bearer endpoint-token-7f3a9c",
}


@dataclass
class Bus:
    """A running bus: its Redis, routes folder, receiver, ingress URL and environment."""

    redis: RedisServer
    receiver: Receiver
    routes_dir: Path
    env: dict[str, str]
    url: str
    tmp: Path
    forward_port: int = 0  # the ingress's Fluentd forward listener on 127.0.0.1

    def post(self, tag: str, body: bytes | str, content_type: str = "application/json", **kw) -> requests.Response:
        return requests.post(f"{self.url}/{tag}", data=body, headers={"Content-Type": content_type}, timeout=10, **kw)

    def process(self, *args: str, env: dict[str, str] | None = None, name: str = "bus") -> BusProcess:
        log = self.tmp / f"{name}-{time.monotonic_ns()}.log"
        return BusProcess(list(args), {**self.env, **(env or {})}, log)


def bus_env(redis_url: str, routes_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    # Each bus its own archive beside its routes: the default (./var of the checkout) would be one
    # file shared by every test's bus, and its rows would show in other tests' listings.
    archive = f"sqlite:///{Path(routes_dir).absolute().parent / 'archive.sqlite3'}"
    return {**env, **ROUTE_SECRETS, "BUS_REDIS_URL": redis_url, "BUS_ROUTES": str(routes_dir),
            "BUS_ARCHIVE_URL": archive, "PYTHONUNBUFFERED": "1", **extra}


def start_ingress(env: dict[str, str], log: Path, forward_port: int | None = None, workers: int = 1,
                  port: int | None = None) -> tuple[BusProcess, str]:
    """`bus serve` on a free port (or `port`); its forward listener on 127.0.0.1:forward_port, off when None."""
    port = port or free_port()
    forward = "off" if forward_port is None else f"127.0.0.1:{forward_port}"
    proc = BusProcess(["serve", "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--threads", "4",
                       "--forward", forward], env, log).start()
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.proc.poll() is not None:
            raise AssertionError(f"bus serve exited:\n{proc.output()}")
        try:
            return requests.get(f"{url}/healthz", timeout=5).status_code in (200, 503)
        except requests.ConnectionError:
            return False

    wait_until(up, 20, what="bus serve to answer /healthz")
    return proc, url


def start_worker(env: dict[str, str], log: Path, *routes: str) -> BusProcess:
    proc = BusProcess(["worker", *routes, "--concurrency", "2"], env, log).start()

    def ready() -> bool:
        if proc.proc.poll() is not None:
            raise AssertionError(f"bus worker exited:\n{proc.output()}")
        return " ready." in proc.output()

    wait_until(ready, 30, what="bus worker to be ready")
    return proc


def journaled(bus: Bus, tag: str) -> list[dict]:
    """Events with this tag that are in Redis right now and not yet delivered."""
    client = bus.redis.client()
    page = journal.find(client, EventFilter(status=journal.QUEUED, tag=tag), limit=1000)
    events = (journal.load(client, e["id"]) for e in page.events)
    return [e for e in events if e]


def parked_tag() -> str:
    """A fresh tag of the `parked` route: no worker consumes it, so its events stay queued for the test to see."""
    return f"parked.{uuid.uuid4().hex[:10]}"


def waiting_for_a_task(client: redis.Redis, route: str) -> list[str]:
    """Event ids the route's queue holds: in its task messages, or on its pending list for the next one."""
    in_messages = [i for m in client.lrange(journal.queue_name(route), 0, -1) for i in event_ids_of(orjson.loads(m))]
    return in_messages + journal.pending_ids(client, route)


@pytest.fixture
def parked_len(bus):
    """How many events were queued for delivery on the `parked` route since the test began."""
    client = bus.redis.client()
    before = len(waiting_for_a_task(client, "parked"))
    return lambda: len(waiting_for_a_task(client, "parked")) - before


@pytest.fixture(scope="session")
def bus(tmp_path_factory: pytest.TempPathFactory):
    """One bus for the session: Redis with AOF, a receiver, an ingress (HTTP and forward) and a worker for
    `api`, `limited`, `signed` and `ops`."""
    tmp = tmp_path_factory.mktemp("bus")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    receiver = Receiver()
    receiver.start()
    routes_dir = tmp / "routes"
    routes_dir.mkdir()
    for name, text in ROUTES.items():
        (routes_dir / name).write_text(text.format(receiver=receiver.url))
    env = bus_env(server.url, routes_dir, BUS_MAX_BODY=str(64 * 1024))
    forward_port = free_port()
    ingress, url = start_ingress(env, tmp / "ingress.log", forward_port)
    worker = start_worker(env, tmp / "worker.log", "api", "limited", "signed", "ops")
    try:
        yield Bus(server, receiver, routes_dir, env, url, tmp, forward_port)
    finally:
        ingress.stop()
        worker.stop()
        receiver.stop()
        server.stop()


def run_bus(bus: Bus, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`bus ARGS...` as a user runs it, against this bus (or `env`), its output captured."""
    return subprocess.run([sys.executable, "-m", "bus", *args], env=env or bus.env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(params=["sqlite", "postgres"])
def archive_url(request, tmp_path):
    """An empty archive of each kind in turn: a SQLite file, or a PostgreSQL database of its own."""
    from archivekit import archive_url as make

    with make(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def store(archive_url):
    """An open store of each archive in turn (archive_url), closed after."""
    from bus.archive import open_store

    s = open_store(archive_url)
    yield s
    s.close()


@pytest.fixture
def redis_server(tmp_path):
    """Start redis-servers of the test's own, each named (its folder) and with more options; all killed after."""
    started: list[RedisServer] = []

    def start(name: str, *options: str) -> RedisServer:
        directory = tmp_path / name
        directory.mkdir()
        server = RedisServer(directory, *options)
        server.start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.kill()


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of the test's own (for tests that must see every key, or kill it)."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fault_bus(tmp_path):
    """Make buses of the test's own (faultkit.FaultBus: short visibility timeout); all closed after."""
    from faultkit import VISIBILITY, FaultBus, make_fault_bus  # faultkit imports this module

    made: list[FaultBus] = []

    def make(routes: dict[str, str], visibility_timeout: int = VISIBILITY, appendfsync: str = "always") -> FaultBus:
        made.append(make_fault_bus(tmp_path, routes, visibility_timeout, appendfsync))
        return made[-1]

    try:
        yield make
    finally:
        for bus in made:
            bus.close()


@pytest.fixture
def ha(tmp_path):
    """A primary, a replica and three Sentinels (sentinels.RedisSet), a receiver, and bus(**env) to start an ingress
    and an `api` worker that find Redis through the Sentinels only; all stopped after."""
    from sentinels import HA_ROUTE, MASTER, RedisSet  # sentinels imports this module

    redis_set = RedisSet(tmp_path / "redis")
    receiver = Receiver()
    receiver.start()
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "api.toml").write_text(HA_ROUTE.format(receiver=receiver.url))
    procs = []

    def bus(**extra: str):
        env = bus_env(redis_set.url, routes, BUS_REDIS_SENTINEL_MASTER=MASTER, **extra)
        ingress, url = start_ingress(env, tmp_path / f"ingress-{len(procs)}.log")
        worker = start_worker(env, tmp_path / f"worker-{len(procs)}.log", "api")
        procs.extend([ingress, worker])
        return env, url, worker

    try:
        yield redis_set, receiver, bus
    finally:
        for proc in procs:
            proc.stop()
        receiver.stop()
        redis_set.stop()

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture()
def page():
    """A tab of a real headless Chromium (Debian's, driven by Playwright); the test fails on any script error,
    console error or answer of 400 or more it saw. Skipped without chromium (failed under CI)."""
    if not os.access(CHROMIUM, os.X_OK):
        reason = f"{CHROMIUM} is missing: the console's browser test did not run (scripts/setup.sh installs chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True, timeout=30_000)
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 900})
            tab.set_default_timeout(15_000)
            problems: list[str] = []
            tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            tab.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
                   if msg.type == "error" else None)
            tab.on("response", lambda r: problems.append(f"{r.status} from {r.request.method} {r.url}")
                   if r.status >= 400 else None)
            yield tab
            assert problems == [], f"the page ran without script errors or CSP violations: {problems}"
        finally:
            browser.close()
