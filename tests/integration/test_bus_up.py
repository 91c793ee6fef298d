"""`bus up` runs Redis with AOF under ./var, the ingress, a worker per route and Flower; Ctrl-C stops them all."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis
import requests
from fluent import sender

from conftest import Receiver, free_port, wait_until


def processes_with_env(marker: str) -> list[int]:
    """Pids whose environment holds `marker`: every process `bus up` started inherits it."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


def kill_leftovers(up: subprocess.Popen, marker: str) -> None:
    """After a failed test: kill bus up and every process it started."""
    if up.poll() is None:
        os.killpg(up.pid, signal.SIGKILL)
    for pid in processes_with_env(marker):
        os.kill(pid, signal.SIGKILL)


def accepted(port: int, body: str) -> requests.Response | None:
    """POST /api.orders to bus up's ingress: the 202 answer, or None while it is not up yet."""
    try:
        resp = requests.post(f"http://127.0.0.1:{port}/api.orders", data=body, timeout=5)
        return resp if resp.status_code == 202 else None
    except requests.ConnectionError:
        return None


def test_bus_up_delivers_and_ctrl_c_leaves_nothing_running(tmp_path):
    receiver = Receiver()
    receiver.start()
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "api.toml").write_text(f'match = ["api.*"]\nendpoint = "{receiver.url}/api/${{tag[1]}}/"\nopen_timeout = 2\n')
    marker = f"bus-up-test-{os.getpid()}-{free_port()}"
    ingress, redis_port, flower_port, forward = free_port(), free_port(), free_port(), free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BUS_")},
           "BUS_ROUTES": str(routes), "BUS_VAR": str(tmp_path / "var"), "BUS_TEST_MARKER": marker,
           "BUS_REDIS_MAXMEMORY": "64mb"}
    up = subprocess.Popen(
        [sys.executable, "-m", "bus", "up", "--bind", f"127.0.0.1:{ingress}",
         "--redis-port", str(redis_port), "--flower-port", str(flower_port), "--forward", f"127.0.0.1:{forward}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        (event_id,) = wait_until(lambda: accepted(ingress, '{"order": 1}'), 30, what="the ingress of bus up").json()["ids"]
        wait_until(lambda: receiver.ids("/api/orders/") == [event_id], 30, what="delivery through bus up's worker")
        fluent = sender.FluentSender("api", host="127.0.0.1", port=forward)
        assert fluent.emit("forwarded", {"order": 2}), fluent.last_error
        fluent.close()
        wait_until(lambda: receiver.to("/api/forwarded/"), 30, what="an event through bus up's forward listener")
        assert (tmp_path / "var" / "redis" / "appendonlydir").is_dir(), "Redis runs with AOF under ./var"
        limits = redis.Redis(port=redis_port, socket_timeout=5).config_get("maxmemory*")
        assert limits["maxmemory"] == str(64 * 2 ** 20) and limits["maxmemory-policy"] == "noeviction"
        wait_until(lambda: _answers(f"http://127.0.0.1:{flower_port}/"), 30, what="Flower")
        assert len(processes_with_env(marker)) >= 5  # bus up, redis, ingress, worker, flower
        os.killpg(up.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        assert up.wait(60) == 0
        wait_until(lambda: not processes_with_env(marker), 10, what="every child of bus up to exit")
    finally:
        kill_leftovers(up, marker)
        receiver.stop()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code < 500
    except requests.RequestException:
        return False


def run_in(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`bus ARGS...` as typed in a second shell in `cwd`, with `env` (no BUS_REDIS_URL)."""
    return subprocess.run([sys.executable, "-m", "bus", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)


def start_bus_up(tmp_path: Path, endpoint: str, name: str, out: object = subprocess.DEVNULL
                 ) -> tuple[subprocess.Popen, dict[str, str], str, int, int]:
    """`bus up` as a new user runs it in tmp_path (no BUS_ variable at all, ./routes and ./var there), one route
    api.* to `endpoint`, Flower and the forward listener off: (process, env, marker, ingress port, Redis port)."""
    (tmp_path / "routes").mkdir()
    (tmp_path / "routes" / "api.toml").write_text(f'match = ["api.*"]\nendpoint = "{endpoint}"\n')
    marker = f"bus-up-{name}-{os.getpid()}-{free_port()}"
    ingress, redis_port = free_port(), free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("BUS_", "CELERY_"))}, "BUS_TEST_MARKER": marker}
    up = subprocess.Popen(
        [sys.executable, "-m", "bus", "up", "--bind", f"127.0.0.1:{ingress}", "--redis-port", str(redis_port),
         "--flower-port", "0", "--forward", "off"],
        cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return up, env, marker, ingress, redis_port


def test_the_quick_tour_from_a_second_shell_reaches_the_redis_of_bus_up_without_bus_redis_url(tmp_path):
    receiver = Receiver()
    receiver.start()
    up, env, marker, ingress, redis_port = start_bus_up(tmp_path, f"{receiver.url}/api/${{tag[1]}}/", "tour")
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    try:
        (curled,) = wait_until(lambda: accepted(ingress, '{"order": 42}'), 30, what="the ingress of bus up").json()["ids"]
        wait_until(lambda: (tmp_path / "var" / "bus-up.json").exists(), 10, what="bus up to record its Redis")
        # `bus routes` touches no Redis: were the record not read, nothing reaches the system Redis.
        routes = run_in(tmp_path, env, "routes", "api.orders")
        assert routes.returncode == 0, routes.stderr
        assert f"BUS_REDIS_URL is unset: using {redis_url}, the Redis of `bus up` (pid {up.pid}" in routes.stderr
        assert routes.stderr.count("\n") == 1, "said once"

        # Celery's own commands too (`celery -A bus flower` by hand); `report` connects to nothing.
        report = subprocess.run([sys.executable, "-m", "celery", "-A", "bus", "report"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=60)
        assert f"@127.0.0.1:{redis_port}/0'" in report.stdout, report.stdout + report.stderr
        assert f"celery: BUS_REDIS_URL is unset: using {redis_url}" in report.stderr

        emitted = run_in(tmp_path, env, "emit", "api.orders", '{"a":1}')
        assert emitted.returncode == 0, emitted.stderr
        emitted_id = emitted.stdout.strip()
        wait_until(lambda: sorted(receiver.ids("/api/orders/")) == sorted([curled, emitted_id]), 30,
                   what="both events delivered by bus up's worker")
        events = run_in(tmp_path, env, "events", "--json")
        assert events.returncode == 0, events.stderr
        assert curled in events.stdout and emitted_id in events.stdout
        stats = run_in(tmp_path, env, "stats", "--json")
        assert stats.returncode == 0, stats.stderr
        assert '"api"' in stats.stdout

        second = run_in(tmp_path, env, "up", "--bind", f"127.0.0.1:{free_port()}", "--redis-port", str(free_port()),
                        "--flower-port", "0", "--forward", "off")
        assert second.returncode == 1 and f"another `bus up` (pid {up.pid}) runs with" in second.stderr, second.stderr

        os.killpg(up.pid, signal.SIGINT)
        assert up.wait(60) == 0
        assert not (tmp_path / "var" / "bus-up.json").exists(), "the record does not outlive its bus up"
    finally:
        kill_leftovers(up, marker)
        receiver.stop()


def test_a_record_left_by_a_killed_bus_up_is_ignored_and_said_so(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "bus-up.json").write_text(f'{{"redis_url": "redis://127.0.0.1:1/0", "pid": {gone.pid}}}')
    (tmp_path / "routes").mkdir()
    (tmp_path / "routes" / "api.toml").write_text('match = "api.*"\nendpoint = "http://127.0.0.1:9/x"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUS_", "CELERY_"))}
    shown = run_in(tmp_path, env, "routes")
    assert shown.returncode == 0, shown.stderr
    assert f"ignoring var/bus-up.json: the `bus up` (pid {gone.pid}) that wrote it is no longer running" in shown.stderr
    assert "redis://127.0.0.1:1/0" not in shown.stderr


def test_a_child_of_bus_up_that_dies_stops_everything_else_and_bus_up_exits_1(tmp_path):
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        up, env, marker, _, _ = start_bus_up(tmp_path, "http://127.0.0.1:9/x", "child-dies", out)
    try:
        wait_until(lambda: (tmp_path / "var" / "bus-up.json").exists(), 30, what="bus up to start everything")
        # Forked from `bus up` (up_fork.py): the command line is bus up's, the name (set by the child
        # itself once forked) says what it runs.
        (worker,) = wait_until(lambda: [p for p in _children(up.pid) if _comm(p) == "bus worker"], 10,
                               what="the worker to be named")
        os.kill(worker, signal.SIGKILL)
        assert up.wait(60) == 1
        wait_until(lambda: not processes_with_env(marker), 10, what="every other child of bus up to exit")
        assert "bus up: worker api exited with status -9; stopping everything" in log.read_text()
        assert not (tmp_path / "var" / "bus-up.json").exists(), "the record does not outlive its bus up"
    finally:
        kill_leftovers(up, marker)


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_bus_up_without_flower_sends_no_task_events_until_a_monitor_asks_for_them(tmp_path):
    receiver = Receiver()
    receiver.start()
    up, env, marker, ingress, redis_port = start_bus_up(tmp_path, f"{receiver.url}/api/${{tag[1]}}/", "no-events")
    events = None
    try:
        wait_until(lambda: accepted(ingress, '{"warm": 1}'), 30, what="the ingress of bus up")
        wait_until(lambda: receiver.ids("/api/orders/"), 30, what="bus up's worker to deliver")
        events = redis.Redis(port=redis_port, socket_timeout=5).pubsub()
        events.psubscribe("*celeryev*")

        def channels_while_delivering(body: str, enough: str = "") -> set[str]:
            """The event channels published on from the POST until a heartbeat's interval (10 s without
            task events) after the delivery, or until one starting with `enough` was seen, a second on."""
            before = len(receiver.ids("/api/orders/"))
            accepted(ingress, body)
            wait_until(lambda: len(receiver.ids("/api/orders/")) > before, 30, what="the delivery")
            seen: set[str] = set()
            start = time.monotonic()
            deadline = start + 10.5
            while time.monotonic() < deadline and not (enough and any(c.startswith(enough) for c in seen)
                                                       and time.monotonic() > start + 1):
                message = events.get_message(timeout=0.2)
                if message and message["type"] == "pmessage":
                    seen.add(message["channel"].decode().rpartition("/")[2])
            return seen

        quiet = channels_while_delivering('{"order": 1}', "worker.heartbeat")
        assert "worker.heartbeat" in quiet and not {c for c in quiet if c.startswith("task.")}, quiet
        asked = subprocess.run([sys.executable, "-m", "celery", "-A", "bus", "control", "enable_events"], cwd=tmp_path,
                               env=env, capture_output=True, text=True, timeout=60)
        assert "task events enabled" in asked.stdout, asked.stdout + asked.stderr
        # Celery sends task events in batches, on task.multi.
        assert {c for c in channels_while_delivering('{"order": 2}', "task.") if c.startswith("task.")}, "as Flower asks"
        os.killpg(up.pid, signal.SIGINT)
        assert up.wait(60) == 0
    finally:
        if events is not None:
            events.close()
        kill_leftovers(up, marker)
        receiver.stop()
