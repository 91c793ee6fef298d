"""How fast the journal answers filtered listings as it grows: 1,000,000 events, 1,000 of them dead.

    python -m bench.journal_query [--events 1000000] [--dead 1000] [--json]

Starts its own redis-server (AOF on, everysec) in a temp dir on a free port,
fills the journal through journal.accept (no task messages: only the journal
is measured), marks some events dead through journal.record_attempt, then
times each listing 50 times and prints p50/p99 and how many index entries each
read. Bounded: the fill stops at --events, every query runs a fixed count.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bus import journal
from bus.events import new_id
from bus.filters import EventFilter

from .procs import Cluster

CHUNK = 1000


def fill(client, events: int, dead: int) -> list[str]:
    """`events` journaled events on two routes and ten tags; every (events/dead)-th one made dead."""
    body = orjson.dumps({"order": 1, "pad": "x" * 200})
    dead_every = max(events // max(dead, 1), 1)
    dead_ids = []
    started = time.monotonic()
    for start in range(0, events, CHUNK):
        route = "orders" if (start // CHUNK) % 2 == 0 else "billing"
        batch = [journal.NewEvent(new_id(), f"api.{route}.t{(start + i) % 10}", route, body, time.time(), b"{}")
                 for i in range(min(CHUNK, events - start))]
        journal.accept(client, batch)
        for i, ev in enumerate(batch):
            if (start + i) % dead_every == 0 and len(dead_ids) < dead:
                record = {"id": ev.id, "route": route, "received": ev.received, "status": journal.QUEUED}
                journal.record_attempt(client, record, {"attempt": 1, "at": time.time(), "status_code": 422},
                                       journal.DEAD)
                dead_ids.append(ev.id)
        if time.monotonic() - started > 900:
            raise SystemExit("fill took over 15 minutes; stopping")
    client.delete("bus.orders", "bus.billing")
    return dead_ids


def timed(client, f: EventFilter, runs: int = 50) -> dict:
    times, sizes = [], []
    for _ in range(runs):
        t = time.perf_counter()
        page = journal.find(client, f, limit=50)
        times.append((time.perf_counter() - t) * 1000)
        sizes.append(len(page.events))
    times.sort()
    return {"p50_ms": round(statistics.median(times), 2), "p99_ms": round(times[int(len(times) * 0.99) - 1], 2),
            "returned": sizes[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.journal_query")
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--dead", type=int, default=1000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        try:
            cluster.start_redis()
            client = journal.connect(cluster.env["BUS_REDIS_URL"], 30)
            before = client.info("memory")["used_memory"]
            t = time.monotonic()
            fill(client, args.events, args.dead)
            fill_s = time.monotonic() - t
            per_event = (client.info("memory")["used_memory"] - before) / args.events
            cases = {
                "50 newest dead": EventFilter(status="dead"),
                "50 newest dead, tag api.orders.**": EventFilter(status="dead", tag="api.orders.**"),
                "50 newest dead of route billing": EventFilter(status="dead", route="billing"),
                "50 newest, any status": EventFilter(),
                "50 newest queued, tag api.*.t3": EventFilter(status="queued", tag="api.*.t3"),
                "rare tag over all (scan budget 20k)": EventFilter(tag="api.nowhere.**"),
            }
            rows = {name: timed(client, f) for name, f in cases.items()}
        finally:
            cluster.close()
    result = {"events": args.events, "dead": args.dead, "fill_seconds": round(fill_s, 1),
              "redis_bytes_per_event": round(per_event), "queries": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"journal: {args.events:,} events ({args.dead:,} dead), filled in {fill_s:.0f}s, "
          f"{per_event:.0f} bytes of Redis memory per event (200-byte body)")
    print(f"{'query':40} {'p50 ms':>8} {'p99 ms':>8} {'returned':>9}")
    for name, row in rows.items():
        print(f"{name:40} {row['p50_ms']:>8} {row['p99_ms']:>8} {row['returned']:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
