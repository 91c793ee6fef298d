"""`python -m bench.idle_tree [--down] [--seconds S] [--settle S]`: CPU and PSS per process of an idle `bus up` tree.

The profile behind bench.versus's idle and endpoint-down lines: a `bus up` (one
route, Flower off, as bench/sides.py starts it) settles, then each process's CPU
is read from /proc over S seconds and its PSS from smaps_rollup. With --down the
receiver is stopped and 2,000 records are accepted first, so the tree is
measured while its endpoint is down with a backlog (breaker open, retries due).
The tree's Redis commands per second over the same S seconds (INFO commandstats) follow,
so a change in what the tree asks of Redis shows beside its CPU. --settle 0 starts the
window as the records are accepted (the first attempts and the holds included). --wakes
lists every thread that woke in the window, wake-ups a second (its voluntary context
switches), with the call it sleeps in: a 30 s window resolves 0.033 % of CPU, but one wake.
"""
from __future__ import annotations

import argparse
import time

import redis

from . import stats
from .sides import cmdline, smaps_kib
from .versus import bus_tree


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.idle_tree", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--down", action="store_true", help="endpoint down with 2,000 records waiting")
    p.add_argument("--settle", type=float, default=3.0, help="seconds from the records' acceptance to the window")
    p.add_argument("--wakes", action="store_true", help="wake-ups a second of each thread that woke")
    args = p.parse_args()
    with bus_tree("bus-idle-tree-") as versus:
        cluster, bus = versus.cluster, versus.bus
        time.sleep(5)
        if args.down:
            cluster.stop("receiver")
            versus.produce(bus, "down", 2_000)
        time.sleep(args.settle)
        pids = bus.pids()
        client = redis.Redis(port=bus.redis_port, socket_timeout=5)
        calls0 = stats.command_calls(client)
        switches = stats.thread_switches(pids)
        before, t0 = stats.tree_cpu(pids, bus.root), time.monotonic()
        time.sleep(args.seconds)
        after, elapsed = stats.tree_cpu(pids, bus.root), time.monotonic() - t0
        switched = stats.thread_switches(pids)
        calls = stats.command_calls(client)
        client.close()
        pss = {pid: smaps_kib(pid)["Pss"] for pid in pids}
        for pid in pids:
            cpu = (after.get(pid, 0.0) - before.get(pid, 0.0)) / elapsed * 100
            print(f"{cpu:6.2f} % {pss[pid] / 1024:6.1f} MiB PSS  {cmdline(pid)[:80]}")
        total = (sum(after.values()) - sum(before.values())) / elapsed * 100
        print(f"tree: {total:.2f} % of a core over {elapsed:.0f} s, {sum(pss.values()) / 1024:.1f} MiB PSS"
              f"; load average {stats.loadavg()}")
        rates = {name: (n - calls0.get(name, 0)) / elapsed for name, n in calls.items()}
        shown = sorted(((r, name) for name, r in rates.items() if r >= 0.05 and name != "info"), reverse=True)
        print("redis commands/s: " + ", ".join(f"{name} {r:.1f}" for r, name in shown))
        woke = {key: n - switches.get(key, 0) for key, n in switched.items()}
        print(f"wake-ups/s, all threads: {sum(woke.values()) / elapsed:.1f}")
        if args.wakes:
            for (pid, tid), n in sorted(woke.items(), key=lambda kv: -kv[1]):
                if n:
                    print(f"  {n / elapsed:6.2f}/s  {pid}/{tid} {stats.thread_wait(pid, tid):22}  {cmdline(pid)[:50]}")


if __name__ == "__main__":
    main()
