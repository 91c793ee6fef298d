"""`bus.Producer` from one process: emit into the spool from one thread (or several), then the drain to Redis.

Run as `python -m bench.producer --tag TAG --events N --spool DIR [--threads T] [--outage]`
with BUS_* set; prints one JSON summary line and writes the ids to --ids-out.

- Without --outage the sender runs while the loop emits (Redis up), as in an app;
  `elapsed` is the emit loop, `drain_elapsed` the wait in flush() after it.
- `sender_cpu` is the sender thread's CPU seconds (Redis up: while the loop ran and the
  flush; with --outage: the drain), taken from the emitting thread under the GIL.
- With --outage the loop emits into a Producer whose Redis is unreachable (nothing
  competes with the loop, and the spool fills as it would during an outage); then a
  new Producer on the same DIR with the real Redis sends it all: `drain_elapsed` is
  that Producer's flush, so events / drain_elapsed is the drain rate to Redis.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from bus import Producer, settings

DOWN = "redis://127.0.0.1:1/0"


def thread_cpu(thread: object) -> float:
    """CPU seconds a live thread of this process used (Linux /proc), e.g. the spool's sender."""
    fields = open(f"/proc/self/task/{thread.native_id}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def emit_loop(producer: Producer, tag: str, events: int, max_seconds: float) -> list[str]:
    deadline = time.monotonic() + max_seconds
    ids: list[str] = []
    for n in range(events):
        if n % 1000 == 0 and time.monotonic() > deadline:
            break
        ids.append(producer.emit(tag, {"n": n, "pad": "x" * 20}))
    return ids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tag", required=True)
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--spool", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--outage", action="store_true", help="emit while Redis is unreachable, then drain it")
    p.add_argument("--max-seconds", type=float, default=120.0)
    p.add_argument("--ids-out")
    args = p.parse_args()
    config = settings.load()
    producer = Producer(args.spool, config=settings.load({**os.environ, "BUS_REDIS_URL": DOWN}) if args.outage else config)
    started, cpu = time.monotonic(), time.thread_time()
    if args.threads == 1:
        ids = emit_loop(producer, args.tag, args.events, args.max_seconds)
    else:
        share = -(-args.events // args.threads)
        with ThreadPoolExecutor(args.threads) as pool:
            parts = pool.map(lambda t: emit_loop(producer, args.tag, min(share, args.events - t * share),
                                                 args.max_seconds), range(args.threads))
            ids = [i for part in parts for i in part]
    elapsed, emit_cpu = time.monotonic() - started, time.thread_time() - cpu
    if args.outage:
        producer.close(0)
        producer = Producer(args.spool, config=config)
    drain_started = time.monotonic()
    drained = producer.flush(args.max_seconds)
    drain_elapsed = time.monotonic() - drain_started
    sender_cpu = thread_cpu(producer._sender._thread)  # the bench looks inside: the sender's share of the GIL
    producer.close(0)
    if args.ids_out:
        with open(args.ids_out, "w") as f:
            f.writelines(f"{i} 0\n" for i in ids)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    json.dump({"accepted": len(ids), "elapsed": elapsed, "emit_thread_cpu": emit_cpu, "drained": drained,
               "drain_elapsed": drain_elapsed, "sender_cpu": sender_cpu, "cpu": usage.ru_utime + usage.ru_stime,
               "max_rss_kib": usage.ru_maxrss}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
