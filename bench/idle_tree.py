"""`python -m bench.idle_tree [--down] [--seconds S]`: CPU and PSS per process of an idle `bus up` tree.

The profile behind bench.versus's idle and endpoint-down lines: a `bus up` (one
route, Flower off, as bench/sides.py starts it) settles, then each process's CPU
is read from /proc over S seconds and its PSS from smaps_rollup, and Redis's INFO
commandstats over the same window says which commands the idle tree sends. With --down the
receiver is stopped and 2,000 records are accepted first, so the tree is
measured while its endpoint is down with a backlog (breaker open, retries due).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import redis

from . import stats
from .procs import Cluster
from .sides import cmdline, pss_kib
from .versus import QUICK, Versus


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.idle_tree", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--down", action="store_true", help="endpoint down with 2,000 records waiting")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bus-idle-tree-"))
    cluster = Cluster(tmp)
    versus = Versus(cluster, QUICK)
    bus = versus.bus
    try:
        cluster.start_receiver()
        bus.start()
        time.sleep(5)
        if args.down:
            cluster.stop("receiver")
            versus.produce(bus, "down", 2_000)
        time.sleep(3)
        pids = bus.pids()
        client = redis.Redis(port=bus.redis_port)
        commands = client.info("commandstats")
        before, t0 = stats.tree_cpu(pids, bus.root), time.monotonic()
        time.sleep(args.seconds)
        after, elapsed = stats.tree_cpu(pids, bus.root), time.monotonic() - t0
        commands = {name: stat["calls"] - commands.get(name, {}).get("calls", 0)
                    for name, stat in client.info("commandstats").items()}
        commands.pop("cmdstat_info", None)  # this bench's own two
        for pid in pids:
            cpu = (after.get(pid, 0.0) - before.get(pid, 0.0)) / elapsed * 100
            print(f"{cpu:6.2f} % {pss_kib(pid)[0] / 1024:6.1f} MiB PSS  {cmdline(pid)[:80]}")
        total = (sum(after.values()) - sum(before.values())) / elapsed * 100
        print(f"tree: {total:.2f} % of a core over {elapsed:.0f} s, {sum(pss_kib(p)[0] for p in pids) / 1024:.1f} MiB PSS"
              f"; load average {stats.loadavg()}")
        busiest = sorted(((n, name.removeprefix("cmdstat_")) for name, n in commands.items() if n), reverse=True)
        print(f"redis: {sum(commands.values()) / elapsed:.2f} commands/s (scripts' own included): "
              + ", ".join(f"{name} {n / elapsed:.2f}" for n, name in busiest))
    finally:
        bus.stop()
        cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
