"""The processes of a bench run: Redis, `bus serve`, `bus worker`s, the receiver and the tools; each in its own
process group, all killed on exit (normal, Ctrl-C, SIGTERM or failure)."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


class BenchError(Exception):
    """A run that cannot go on (a process that does not start, a tool that fails)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _unix_answers(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(path)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _kill_group(proc: subprocess.Popen, grace: float) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


class Cluster:
    """Starts and stops the bench's processes; `roles` maps a role name to its running root process."""

    def __init__(self, tmp: Path, ingress: str = "bus:2x8", redis_settings: list[str] = (),
                 archive_url: str | None = None):
        self.tmp = tmp
        self.ingress_spec, self.redis_settings = ingress, list(redis_settings)
        self.roles: dict[str, subprocess.Popen] = {}
        self.redis_port, self.ingress_port, self.receiver_port = free_port(), free_port(), free_port()
        self.routes_dir = tmp / "routes"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
        # The journal's archive in the run's temp dir (the default would be the checkout's ./var).
        self.archive_url = archive_url or f"sqlite:///{tmp / 'archive.sqlite3'}"
        self.env.update(BUS_REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0", BUS_ROUTES=str(self.routes_dir),
                        BUS_ARCHIVE_URL=self.archive_url, PYTHONUNBUFFERED="1")
        self._logs: list = []

    # -- plumbing -------------------------------------------------------------
    def spawn(self, role: str, argv: list[str], env: dict[str, str] | None = None,
              cwd: Path = REPO) -> subprocess.Popen:
        log = open(self.tmp / f"{role}.log", "ab")
        self._logs.append(log)
        proc = subprocess.Popen(argv, env={**self.env, **(env or {})}, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.roles[role] = proc
        return proc

    def log(self, role: str) -> str:
        path = self.tmp / f"{role}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _check_alive(self, role: str) -> None:
        proc = self.roles[role]
        if proc.poll() is not None:
            raise BenchError(f"{role} exited with status {proc.returncode}:\n{self.log(role)[-3000:]}")

    def assert_running(self) -> None:
        """Every long-running part is still up: a worker killed from outside (another job's `pkill`, the OOM
        killer) must end the scenario with that reason, not a long wait that reports late events."""
        for role, proc in list(self.roles.items()):
            if not role.startswith(("loadgen", "emitter", "py-spy")) and proc.poll() is not None:
                raise BenchError(f"{role} (pid {proc.pid}) exited with status {proc.returncode} during the scenario; "
                                 "nothing in the bench stops it there, so something else killed it")

    def stop(self, role: str, grace: float = 10.0) -> None:
        proc = self.roles.pop(role, None)
        if proc:
            _kill_group(proc, grace)

    def close(self) -> None:
        """Everything down, Redis last (a worker stopping still talks to it)."""
        for role in [r for r in reversed(list(self.roles)) if r != "redis"] + ["redis"]:
            self.stop(role, grace=5.0)
        for log in self._logs:
            log.close()

    def tool(self, role: str, argv: list[str], timeout: float) -> dict:
        """Run a bench tool (load generator, emitter) to completion; its JSON summary line."""
        proc = self.spawn(role, [PY, "-m", *argv])
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop(role)
            raise BenchError(f"{role} did not finish within {timeout:.0f}s") from None
        self.roles.pop(role, None)
        out = self.log(role).strip().splitlines()
        if proc.returncode != 0 or not out:
            raise BenchError(f"{role} failed with status {proc.returncode}:\n{self.log(role)[-3000:]}")
        (self.tmp / f"{role}.log").unlink()
        return json.loads(out[-1])

    # -- the parts ------------------------------------------------------------
    def start_redis(self) -> None:
        data = self.tmp / "redis"
        data.mkdir(exist_ok=True)
        self.spawn("redis", [
            shutil.which("redis-server") or "redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
            "--dir", str(data), "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--hash-max-listpack-value", "4096",  # as bus up and docker-compose run it
            "--logfile", str(self.tmp / "redis-server.log"), *self.redis_settings,
        ])
        client = self.redis()
        wait_until(lambda: self._check_alive("redis") or _pings(client), 10, "redis-server to answer PING")

    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, socket_timeout=30)

    def start_ingress(self) -> None:
        """`bus:WxT` is `bus serve --workers W --threads T`; `granian:WxT` serves the werkzeug app alone with
        granian (W workers, T blocking threads each): an experiment, `bus serve` does not offer it."""
        server, _, shape = self.ingress_spec.partition(":")
        workers, _, threads = (shape or "2x8").partition("x")
        if server == "granian":
            self.spawn("ingress", [str(Path(PY).parent / "granian"), "--interface", "wsgi", "--host", "127.0.0.1",
                                   "--port", str(self.ingress_port), "--workers", workers, "--blocking-threads",
                                   threads, "--log-level", "warning", "bench.wsgi:app"])
        else:
            # No scenario uses the forward listener; its fixed port would clash with another bench running.
            self.spawn("ingress", [PY, "-m", "bus", "serve", "--bind", f"127.0.0.1:{self.ingress_port}",
                                    "--workers", workers, "--threads", threads, "--forward", "off"])

        def healthy() -> bool:
            self._check_alive("ingress")
            try:
                return http_get(self.ingress_port, "/healthz")[0] == 200
            except OSError:
                return False

        wait_until(healthy, 30, "bus serve to answer /healthz")

    def start_unix_ingress(self, path: str) -> None:
        """A second `bus serve` (HTTP only, 2x8 as the first) on unix:PATH, role ingress_unix."""
        self.spawn("ingress_unix", [PY, "-m", "bus", "serve", "--bind", f"unix:{path}", "--forward", "off"])
        wait_until(lambda: self._check_alive("ingress_unix") or _unix_answers(path), 30, "the unix-socket ingress")

    def start_receiver(self, module: list[str] | None = None) -> None:
        """bench.receiver, or another receiver module (and its flags) on the same port and control paths."""
        name, *flags = module or ["bench.receiver"]
        self.spawn("receiver", [PY, "-m", name, str(self.receiver_port), *flags])
        wait_until(lambda: self._check_alive("receiver") or connects(self.receiver_port), 10, "the receiver to listen")

    def start_worker(self, route: str, pool: str = "prefork", concurrency: int = 2, role: str = "worker",
                     config: dict[str, object] | None = None, env: dict[str, str] | None = None) -> None:
        """`config` overrides Celery settings for this worker only, through a celeryconfig.py of its own in
        the folder it runs in (the bus imports `celeryconfig` from the path, where the working dir comes first);
        `env` adds environment variables (BUS_ARCHIVE_URL, BUS_HOT_WINDOW)."""
        env, cwd = dict(env or {}), REPO
        if config:
            folder = self.tmp / f"celeryconfig-{len(self._logs)}"
            folder.mkdir()
            (folder / "celeryconfig.py").write_text(
                "from bus.celery_defaults import *  # noqa\n" + "".join(f"{k} = {v!r}\n" for k, v in config.items()))
            env["PYTHONPATH"], cwd = str(REPO), folder
        if pool == "prefork":
            # The production path: `bus worker` (prefork, mingle and gossip off).
            argv = [PY, "-m", "bus", "worker", route, "--concurrency", str(concurrency)]
        else:
            argv = [PY, "-m", "celery", "-A", "bus", "worker", "-P", pool, "-c", str(concurrency),
                    "-Q", f"bus.{route}", "--hostname", f"{route}-{pool}@%h", "--loglevel", "INFO",
                    "--without-mingle", "--without-gossip"]
        self.spawn(role, argv, env, cwd)
        wait_until(lambda: self._check_alive(role) or " ready." in self.log(role), 60, f"{role} ({pool}) to be ready")

    # -- the receiver's control paths -----------------------------------------
    def received(self) -> dict:
        return json.loads(http_get(self.receiver_port, "/_stats")[1])

    def received_ids(self) -> dict[str, float]:
        lines = http_get(self.receiver_port, "/_ids")[1].decode().splitlines()
        return {i: float(t) for i, t in (line.split() for line in lines)}

    def reset_receiver(self) -> None:
        http_get(self.receiver_port, "/_reset", method="POST")


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
        return False


def http_get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()
