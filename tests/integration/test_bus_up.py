"""`bus up` runs Redis with AOF under ./var, the ingress, a worker per route and Flower; Ctrl-C stops them all."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
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
        def post() -> requests.Response | None:
            try:
                resp = requests.post(f"http://127.0.0.1:{ingress}/api.orders", data='{"order": 1}', timeout=5)
                return resp if resp.status_code == 202 else None
            except requests.ConnectionError:
                return None

        (event_id,) = wait_until(post, 30, what="the ingress of bus up").json()["ids"]
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
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
        for pid in processes_with_env(marker):
            os.kill(pid, signal.SIGKILL)
        receiver.stop()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code < 500
    except requests.RequestException:
        return False
