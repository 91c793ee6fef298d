"""`python -m bench.after_idle [--idle S] [--rounds R]`: one event's accept -> receipt after S seconds idle.

A `bus up` tree (one route, Flower off, as bench/sides.py starts it) takes a burst of 2,000 records,
then R times: S seconds with nothing to send, one record, its milliseconds from the producer's send
to the receiver; then a second record 1 s later, the same path warm. With S past the worker's
BUS_POOL_RECYCLE_IDLE the first record goes to a pool process forked afresh (bus/worker/recycle.py):
its connections to Redis and the endpoint are new, and its code runs for the first time in it.
"""
from __future__ import annotations

import argparse
import time

from . import stats
from .versus import Versus, bus_tree


def one(versus: Versus, name: str) -> float:
    versus.cluster.reset_receiver()
    summary, accepted = versus.produce(versus.bus, name, 1)
    counts, received = versus.counted(accepted, summary, 30)
    assert counts["lost"] == 0 and counts["duplicates"] == 0, counts
    (key, sent), = accepted.items()
    return (received[key] - sent) * 1000


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.after_idle", description=__doc__.splitlines()[0])
    p.add_argument("--idle", type=float, default=60.0)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with bus_tree("bus-after-idle-") as versus:
        time.sleep(3)
        summary, accepted = versus.produce(versus.bus, "burst", 2_000)
        versus.counted(accepted, summary, 60)
        for r in range(args.rounds):
            time.sleep(args.idle)
            cold = one(versus, f"cold{r}")
            time.sleep(1)
            warm = one(versus, f"warm{r}")
            print(f"round {r + 1}: after {args.idle:.0f} s idle {cold:7.2f} ms, 1 s later {warm:7.2f} ms; "
                  f"load average {stats.loadavg()}", flush=True)


if __name__ == "__main__":
    main()
