"""`bus worker` for routes on several shards: one Celery worker process per shard.

A Celery worker has one broker, and a route's task messages are written to its shard's Redis, so
a worker can only serve the routes of one shard. Given routes of several, `bus worker` runs
`bus worker ROUTES` once per shard with BUS_WORKER_SHARD set, passes SIGTERM/SIGINT on, and
stops them all (exit 1) when one exits on its own, as `bus up` does with its children.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from .routes import Route

GRACE = 30.0  # a worker finishes its attempt in flight (open_timeout + read_timeout, under the visibility timeout)


def by_shard(routes: Sequence[Route]) -> dict[str, list[Route]]:
    """The routes grouped by shard, in the order their shards first appear."""
    grouped: dict[str, list[Route]] = {}
    for route in routes:
        grouped.setdefault(route.shard, []).append(route)
    return grouped


def run(groups: dict[str, list[Route]], options: list[str]) -> int:
    """Start a `bus worker` per shard and wait; `options` are the command's own (--loglevel, --concurrency, --no-task-events)."""
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _: stopping.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _: stopping.append(signum))
    children: dict[str, subprocess.Popen] = {}
    for shard, routes in groups.items():
        env = {**os.environ, "BUS_WORKER_SHARD": shard}
        command = [sys.executable, "-m", "bus", "worker", *(r.name for r in routes), *options]
        children[shard] = subprocess.Popen(command, env=env)
        print(f"bus worker: shard {shard}: routes {', '.join(r.name for r in routes)} (pid {children[shard].pid})",
              file=sys.stderr, flush=True)
    status = 0
    try:
        while not stopping:
            ended = [(shard, p) for shard, p in children.items() if p.poll() is not None]
            if ended:
                shard, proc = ended[0]
                print(f"bus worker: the worker of shard {shard} exited with status {proc.returncode}; "
                      "stopping the others", file=sys.stderr, flush=True)
                status = 1
                break
            time.sleep(0.5)
    finally:
        _stop(list(children.values()))
    return status


def _stop(children: list[subprocess.Popen]) -> None:
    # SIGTERM, whatever stopped us: it is Celery's warm shutdown however often it comes, while a
    # second SIGINT (after the terminal's Ctrl-C reached the children too) would be its cold one.
    for proc in children:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    for proc in children:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
