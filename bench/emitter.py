"""`bus.emit()` from one process: intake.accept in a loop, one event per call, from one thread or several.

Run as `python -m bench.emitter --tag TAG --events N [--threads T]` with BUS_* set;
prints one JSON summary line and writes the accepted ids to --ids-out. With T
threads each sends N/T events, all through the process's one intake (as threads
of a web app calling bus.emit() would). `--profile FILE` wraps the loop in
pyinstrument (when installed, one thread only) and writes its text report there.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from bus import intake, settings


def emit_loop(bus: intake.Intake, tag: str, events: int, batch: int, max_seconds: float) -> list[str]:
    ids: list[str] = []
    deadline = time.monotonic() + max_seconds
    n = 0
    while n < events and time.monotonic() < deadline:
        ids += intake.accept(bus, tag, [{"n": n + i, "pad": "x" * 20} for i in range(min(batch, events - n))])
        n += batch
    return ids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tag", required=True)
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--batch", type=int, default=1, help="events per accept call (emit_many)")
    p.add_argument("--threads", type=int, default=1, help="threads calling it at once, sharing the events")
    p.add_argument("--max-seconds", type=float, default=120.0)
    p.add_argument("--ids-out")
    p.add_argument("--profile", help="write a pyinstrument text report of the loop here")
    args = p.parse_args()
    bus = intake.load(settings.load())
    bus.redis.ping()  # connect before the clock starts, as a long-lived producer would have
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
    started = time.monotonic()
    if args.threads == 1:
        ids = emit_loop(bus, args.tag, args.events, args.batch, args.max_seconds)
    else:
        share = -(-args.events // args.threads)
        with ThreadPoolExecutor(args.threads) as pool:
            parts = pool.map(lambda t: emit_loop(bus, args.tag, min(share, args.events - t * share), args.batch,
                                                 args.max_seconds), range(args.threads))
            ids = [i for part in parts for i in part]
    elapsed = time.monotonic() - started
    if profiler:
        profiler.stop()
        with open(args.profile, "w") as f:
            f.write(profiler.output_text(unicode=False, color=False, show_all=False))
    if args.ids_out:
        with open(args.ids_out, "w") as f:
            f.writelines(f"{i} 0\n" for i in ids)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    json.dump({"accepted": len(ids), "elapsed": elapsed, "cpu": usage.ru_utime + usage.ru_stime,
               "max_rss_kib": usage.ru_maxrss}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
