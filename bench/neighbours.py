"""Does one failing tag hold back its neighbours? Issue 19's measurement, repeatable.

A route `api` renders `/api/${tag[1]}/`; `api.slow` answers 503, `api.ok` 200. One event of each is
posted every 0.1 s for --seconds; then it prints how long the healthy events waited (accepted to
first arrival), how many arrived at all, and what `bus stats` says about the failing endpoint
against how long its oldest event has waited. Real parts: the integration tests' redis-server on a
free port, receiver, `bus serve` and `bus worker` (tests/integration/conftest.py).

    python -m bench.neighbours [--seconds 20] [--code DIR]

`--code DIR` runs the bus processes from another checkout's `bus` package (e.g. `git archive main bus
| tar -x -C DIR`), for a before/after.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))
from conftest import Receiver, RedisServer, bus_env, start_ingress, start_worker, wait_until  # noqa: E402

PACE = 0.1
DRAIN = 90.0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.neighbours")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--code", help="a directory holding the `bus` package to run instead of this checkout's")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-neighbours-"))
    server, receiver = RedisServer(tmp), Receiver()
    server.start()
    receiver.start()
    routes = tmp / "routes"
    routes.mkdir()
    (routes / "api.toml").write_text(
        f'match = ["api.*"]\nendpoint = "{receiver.url}/api/${{tag[1]}}/"\nretry_max_interval = 2\n')
    env = bus_env(server.url, routes, **({"PYTHONPATH": args.code} if args.code else {}))
    os.chdir(tmp)  # `python -m bus` puts its working directory first on sys.path: not this checkout's bus
    receiver.script("/api/slow/", *[503] * 1_000_000)
    ingress = worker = None
    try:
        ingress, url = start_ingress(env, tmp / "ingress.log")
        worker = start_worker(env, tmp / "worker.log", "api")
        report(run(url, args.seconds), receiver, env, args.code)
    finally:
        for proc in (ingress, worker):
            if proc:
                proc.stop()
        receiver.stop()
        server.stop()


def run(url: str, seconds: float) -> dict[str, tuple[str, float]]:
    """Posts both tags for `seconds`; event id -> (tag, when accepted)."""
    sent: dict[str, tuple[str, float]] = {}
    end = time.time() + seconds
    while time.time() < end:
        for tag in ("api.slow", "api.ok"):
            answer = requests.post(f"{url}/{tag}", data="{}", headers={"Content-Type": "application/json"}, timeout=10)
            sent[answer.json()["ids"][0]] = (tag, time.time())
        time.sleep(PACE)
    return sent


def report(sent: dict[str, tuple[str, float]], receiver: Receiver, env: dict[str, str], code: str | None) -> None:
    healthy = [i for i, (tag, _) in sent.items() if tag == "api.ok"]
    stopped = time.time()
    try:
        wait_until(lambda: len(set(receiver.ids("/api/ok/"))) == len(healthy), DRAIN, what="the healthy events")
    except AssertionError:
        pass
    first: dict[str, float] = {}
    for request in receiver.to("/api/ok/"):
        first.setdefault(request.headers["X-Request-Id"], request.at)
    waits = sorted(at - sent[i][1] for i, at in first.items())
    done = subprocess.run([sys.executable, "-m", "bus", "stats", "--json"], env=env, capture_output=True, text=True,
                          timeout=60)
    (api,) = json.loads(done.stdout)["routes"]
    failing = [i for i, (tag, _) in sent.items() if tag == "api.slow"]
    now = time.time()
    print(f"code: {code or 'this checkout'}")
    print(f"healthy api.ok: {len(first)} of {len(healthy)} arrived ({DRAIN:.0f} s allowed after posting stopped); "
          f"waited p50 {pct(waits, 0.5)}, p99 {pct(waits, 0.99)}, max {pct(waits, 1.0)}")
    if first:
        print(f"last healthy arrival {max(first.values()) - stopped:.1f} s after posting stopped")
    since = api.get("failing_since")
    print(f"failing api.slow: {len(failing)} events, {len(receiver.to('/api/slow/'))} attempts; oldest waited "
          f"{now - min(sent[i][1] for i in failing):.1f} s; bus stats: failing since "
          f"{f'{now - since:.1f} s ago' if since else '(none)'}")


def pct(values: list[float], q: float) -> str:
    return f"{values[min(len(values) - 1, int(len(values) * q))] * 1000:.0f} ms" if values else "-"


if __name__ == "__main__":
    main()
