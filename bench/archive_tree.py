"""`python -m bench.archive_tree [--records N] [--rate R] [--hot-window S]`: the `bus up` tree's CPU while
its archive mover moves a known number of records, per record.

A `bus up` tree (as bench.idle_tree starts it, with BUS_HOT_WINDOW=S given to the tree itself: the
bench strips BUS_* from what it starts) is sent N records by bench.loadgen (as fast as they go, or
R a second), which it delivers. The tree idles until the first of them leaves the hot window: that
idle stretch, from when the worker has replaced its pool processes after the last delivery
(bench.versus.recycle_wait) to the first record's exit, is the baseline. Then
each process's CPU is read from /proc from the first record's exit until Redis's delivered index is
empty (bounded), and the CPU above the baseline's rate is divided by the records moved.
"""
from __future__ import annotations

import argparse
import time

from bus import journal

from . import stats, verify
from .procs import BenchError
from .sides import cmdline
from .versus import bus_tree, recycle_wait

SETTLE = 3.0 + recycle_wait()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.archive_tree", description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=20_000)
    p.add_argument("--rate", type=float, default=0.0, help="records a second (0: as fast as they go)")
    p.add_argument("--hot-window", type=float, default=70.0,
                   help="seconds; longer than the delivery and the pool's recycling take")
    args = p.parse_args()
    with bus_tree("bus-archive-tree-", env={"BUS_HOT_WINDOW": f"{args.hot_window:g}s"}) as versus:
        cluster, bus = versus.cluster, versus.bus
        time.sleep(5)
        summary, accepted = versus.produce(bus, "archive", args.records, rate=args.rate,
                                           max_seconds=args.records / (args.rate or 500) + 60)
        if not verify.wait_delivered(cluster, len(accepted), 180):
            raise BenchError(f"{len(accepted)} records not all delivered within 180 s")
        delivered_at = time.time()
        due_at = summary["first_send"] + args.hot_window
        if due_at - delivered_at < SETTLE + 10:
            raise BenchError(f"the delivery took {delivered_at - summary['first_send']:.0f} s: give a hot window "
                             f"at least {delivered_at - summary['first_send'] + SETTLE + 10:.0f} s")
        client = journal.connect(f"redis://127.0.0.1:{bus.redis_port}/0", 10)
        time.sleep(SETTLE)
        pids = bus.pids()
        idle0, t_idle = stats.tree_cpu(pids, bus.root), time.monotonic()
        time.sleep(max(0.0, due_at - time.time()))
        idle1, t_due = stats.tree_cpu(pids, bus.root), time.monotonic()
        idle_s = t_due - t_idle
        end = t_due + args.hot_window + len(accepted) / 100 + 60  # bounded: a mover slower than 100/s fails
        while client.zcard(journal.index_key(journal.DELIVERED)) and time.monotonic() < end:
            time.sleep(0.2)
        left = client.zcard(journal.index_key(journal.DELIVERED))
        moved = journal.archived_counts(client).get("api", 0)
        done, t_done = stats.tree_cpu(pids, bus.root), time.monotonic()
        window = t_done - t_due
        print(f"{len(accepted)} records sent at {args.rate or 'full'} /s, hot window {args.hot_window:g} s; "
              f"{moved} archived in {window:.1f} s ({moved / window:,.0f} records/s), {left} left in Redis; "
              f"idle baseline over {idle_s:.1f} s")
        extra_total = 0.0
        for pid in pids:
            if pid not in done:
                print(f"  exited during the window  {pid}")
                continue
            base = (idle1.get(pid, 0.0) - idle0.get(pid, 0.0)) / idle_s
            used = done.get(pid, 0.0) - idle1.get(pid, 0.0)
            extra = used - base * window
            extra_total += extra
            print(f"{used / window * 100:6.2f} % (idle {base * 100:5.2f} %), {extra / max(moved, 1) * 1e6:7.1f} µs/record"
                  f"  {cmdline(pid)[:70]}")
        used_total = sum(done[pid] - idle1.get(pid, 0.0) for pid in done)
        print(f"tree: {used_total / window * 100:.2f} % of a core while archiving, "
              f"{extra_total / max(moved, 1) * 1e6:.1f} µs/record above idle; load average {stats.loadavg()}")
        client.close()


if __name__ == "__main__":
    main()
