"""`python -m bench.archive_pass [--records N] [--rounds R] [--archive-url URL] [--profile]`: the archive
mover's CPU per record, in this process.

A redis-server of its own (as the bench starts it) is filled with N records through the journal's own
moves (accept, then a delivered first attempt, as tests/integration/test_archive_mover.py does), all
past the hot window; then one Mover (bus/archive/mover.py) ticks until none is left, as the worker's
thread would. It prints, per record moved: this thread's CPU (the mover's Python, the Redis client's
parsing and SQLite's writes: all in this thread), Redis's CPU (INFO cpu) and its commands (INFO
commandstats), and the records moved a second. R rounds, each on a fresh Redis and archive; with
--profile the last round runs under cProfile and its busiest functions follow.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import tempfile
import time
from pathlib import Path

from bus import journal
from bus.archive import open_store
from bus.archive.mover import Mover
from bus.events import new_id

from . import stats
from .procs import Cluster

HOT_WINDOW = 5.0
BODY_BYTES = 230  # as the long-run scenario: the production body size of issue 14
# Headers as the ingress keeps them for a JSON POST (secrets removed).
HEADERS = b'{"Content-Type": "application/json", "User-Agent": "bench/1", "X-Request-Id": "r-0000000001"}'


def fill(client, n: int, age: float) -> None:
    """n records accepted `age` seconds ago, each delivered on its first attempt."""
    received = time.time() - age
    pad = b"x" * (BODY_BYTES - 20)
    events = [journal.NewEvent(id=new_id(int(received * 1000)), tag="api.orders", route="api",
                               body=b'{"n": %8d, "p": "%s"}' % (i, pad), received=received + i * 1e-6,
                               headers=HEADERS) for i in range(n)]
    for start in range(0, n, 500):
        journal.accept(client, events[start:start + 500])
    for e in events:
        journal.record_attempt(client, {"id": e.id, "route": "api", "status": journal.QUEUED, "received": e.received},
                               {"attempt": 1, "at": time.time(), "duration": 0.004, "status_code": 200,
                                "url": "http://127.0.0.1:8000/api/orders/"}, journal.DELIVERED)


def redis_cpu(client) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def one_round(tmp: Path, n: int, archive_url: str | None, profile: cProfile.Profile | None,
              per_tick: int = 0) -> dict:
    cluster = Cluster(tmp)
    try:
        cluster.start_redis()
        client = cluster.redis()
        store = open_store(archive_url or f"sqlite:///{tmp / 'archive.sqlite3'}")
        store.ping()  # the connection and schema made before the window
        mover = Mover(client, store, HOT_WINDOW, 7 * 86400)
        if per_tick:
            return trickle(cluster, client, mover, n, per_tick, profile)
        fill(client, n, HOT_WINDOW + 5)
        calls0, rcpu0 = stats.command_calls(client), redis_cpu(client)
        cpu0, wall0 = time.thread_time(), time.monotonic()
        moved = ticks = 0
        if profile:
            profile.enable()
        for _ in range(10 * n // 100 + 10):  # bounded: each tick moves up to 5,000
            got = mover.tick()
            ticks += 1
            moved += got.moved if got else 0
            if got is not None and got.moved + got.changed + got.gone == 0:
                break
        if profile:
            profile.disable()
        cpu, wall = time.thread_time() - cpu0, time.monotonic() - wall0
        rcpu, calls = redis_cpu(client) - rcpu0, stats.command_calls(client)
        left = client.zcard(journal.index_key(journal.DELIVERED))
        store.close()
        per = {name: (c - calls0.get(name, 0)) / max(moved, 1) for name, c in calls.items()}
        return {"moved": moved, "left": left, "ticks": ticks, "wall": wall, "cpu": cpu, "redis_cpu": rcpu,
                "commands": {k: v for k, v in per.items() if v >= 0.001 and k not in ("info",)}}
    finally:
        cluster.close()


def trickle(cluster: Cluster, client, mover: Mover, n: int, per_tick: int, profile: cProfile.Profile | None) -> dict:
    """n records moved `per_tick` at a time, as a mover finds them when they leave the hot window at a
    low rate: only the ticks are measured (Redis's CPU around each, less what an INFO alone costs)."""
    info_cost = redis_cpu(client)
    info_cost = (redis_cpu(client) - info_cost)
    cpu = rcpu = wall = 0.0
    moved = ticks = 0
    calls0 = stats.command_calls(client)
    filled = {}
    for _ in range(n // per_tick):
        before = stats.command_calls(client)
        fill(client, per_tick, HOT_WINDOW + 5)
        after = stats.command_calls(client)
        for k, v in after.items():
            filled[k] = filled.get(k, 0) + v - before.get(k, 0)
        r0, c0, w0 = redis_cpu(client), time.thread_time(), time.monotonic()
        if profile:
            profile.enable()
        got = mover.tick()
        if profile:
            profile.disable()
        c1, w1, r1 = time.thread_time(), time.monotonic(), redis_cpu(client)
        cpu, wall, rcpu = cpu + c1 - c0, wall + w1 - w0, rcpu + r1 - r0 - info_cost
        moved += got.moved if got else 0
        ticks += 1
    calls = stats.command_calls(client)
    left = client.zcard(journal.index_key(journal.DELIVERED))
    per = {name: (c - calls0.get(name, 0) - filled.get(name, 0)) / max(moved, 1) for name, c in calls.items()}
    return {"moved": moved, "left": left, "ticks": ticks, "wall": wall, "cpu": cpu, "redis_cpu": rcpu,
            "commands": {k: v for k, v in per.items() if v >= 0.001 and k not in ("info", "command")}}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.archive_pass", description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--archive-url", help="a PostgreSQL archive (emptied by no one: give a fresh database)")
    p.add_argument("--profile", action="store_true", help="cProfile the last round")
    p.add_argument("--per-tick", type=int, default=0,
                   help="records due at each tick (0: all at once); only the ticks are measured")
    args = p.parse_args()
    prof = cProfile.Profile(time.thread_time) if args.profile else None  # CPU, not waits
    for r in range(args.rounds):
        tmp = Path(tempfile.mkdtemp(prefix="bus-archive-pass-"))
        try:
            last = r == args.rounds - 1
            res = one_round(tmp, args.records, args.archive_url, prof if last else None, args.per_tick)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        n = max(res["moved"], 1)
        print(f"round {r + 1}: moved {res['moved']} (left {res['left']}) in {res['ticks']} ticks, {res['wall']:.2f} s:"
              f" {res['moved'] / res['wall']:,.0f} records/s; mover thread {res['cpu'] / n * 1e6:.1f} µs/record,"
              f" redis {res['redis_cpu'] / n * 1e6:.1f} µs/record, together"
              f" {(res['cpu'] + res['redis_cpu']) / n * 1e6:.1f}; load average {stats.loadavg()}"
              + (" (profiled)" if last and prof else ""))
        print("  redis commands per record: " + ", ".join(
            f"{k} {v:.3f}" for k, v in sorted(res["commands"].items(), key=lambda kv: -kv[1])))
    if prof:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())


if __name__ == "__main__":
    main()
