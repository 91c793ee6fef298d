"""`python -m bench.spool_store [--events N]`: what a producer's spool costs per emit, by store (issue 21).

Every emit must reach the file before it returns (so SIGKILL loses nothing), which
leaves two candidates: a segment file, one write() of a length+CRC frame per call
(bus/spool/store.py), or SQLite in WAL mode, one committed INSERT per call. Both are
timed per event on local disk (wall clock and this thread's CPU), with one call per
event and with 100 per call, and with fsync per call. Prints one line per case; no
Redis needed.
"""
from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bus.journal import NewEvent
from bus.spool import frames
from bus.spool.store import Spool

BODY = b'{"n":1,"pad":"xxxxxxxxxxxxxxxxxxxx"}'


def timed(name: str, events: int, per_call: int, call: Callable[[], None]) -> None:
    # CPU time too: on a shared machine it is the steadier number (waiting on fsync is not CPU).
    started, cpu = time.perf_counter(), time.thread_time()
    for _ in range(events // per_call):
        call()
    elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu
    print(f"{name:<48} {events / elapsed:>10,.0f} events/s  {elapsed / events * 1e6:8.2f} us/event "
          f"({cpu / events * 1e6:.2f} us CPU)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--dir", help="where to write (default: a temp dir; use the disk the spool will live on)")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bus-spool-store-", dir=args.dir))
    n = args.events
    event = NewEvent(str(uuid.uuid4()), "api.orders", "api", BODY, time.time())
    row = (event.id, event.tag, event.route, event.received, event.body)
    try:
        for fsync in ("no", "always"):
            count = n if fsync == "no" else max(100, n // 50)
            spool = Spool(root / f"segments-{fsync}", fsync=fsync)
            timed(f"segment file, fsync={fsync}, 1 per call", count, 1, lambda: spool.append([frames.encode(event)]))
            timed(f"segment file, fsync={fsync}, 100 per call", count, 100,
                  lambda: spool.append([frames.encode(event) for _ in range(100)]))
            spool.close()
        for sync in ("OFF", "NORMAL", "FULL"):
            count = n if sync != "FULL" else max(100, n // 50)
            db = sqlite3.connect(root / f"sqlite-{sync}.db", isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={sync}")
            db.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT, tag TEXT, route TEXT, received REAL, "
                       "body BLOB)")
            insert = "INSERT INTO events (id, tag, route, received, body) VALUES (?, ?, ?, ?, ?)"

            def commit(rows: list[tuple]) -> None:
                db.execute("BEGIN")
                db.executemany(insert, rows)
                db.execute("COMMIT")

            timed(f"SQLite WAL, synchronous={sync}, 1 per call", count, 1, lambda: commit([row]))
            timed(f"SQLite WAL, synchronous={sync}, 100 per call", count, 100, lambda: commit([row] * 100))
            db.close()
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
