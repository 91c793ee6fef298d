"""The archive in an embedded SQLite file (the default: `bus up` and tests need no server)."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .base import StoreBase
from .rows import COLUMNS, SUMMARY_COLUMNS, ArchivedEvent, Scan, append_copy, from_values, summary, where

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
  id TEXT NOT NULL UNIQUE, tag TEXT NOT NULL, route TEXT NOT NULL, status TEXT NOT NULL,
  received REAL NOT NULL, attempts INTEGER NOT NULL, last TEXT NOT NULL, round INTEGER NOT NULL,
  replayed REAL, body BLOB NOT NULL, headers BLOB NOT NULL, attempt_log BLOB NOT NULL, copies BLOB NOT NULL,
  request BLOB
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (received, id);
CREATE INDEX IF NOT EXISTS events_by_route ON events (route, received, id);
CREATE INDEX IF NOT EXISTS events_by_tag ON events (tag, received, id);
"""
_UPSERT = (f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)}) "
           "ON CONFLICT (id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c != "id"))
# A writer waits this long for another process's transaction (s), then the archive counts as down.
BUSY_SECONDS = 3.0
DROP_BATCH = 5000


class SqliteStore(StoreBase):
    """sqlite3 objects are not safe to use from two threads at once: the base's lock serialises
    them. WAL lets the ingress and the CLI read while a worker writes."""

    # DatabaseError: locked past the busy timeout, disk full, the file gone or damaged.
    down_errors = (sqlite3.DatabaseError, OSError)

    def __init__(self, url: str):
        super().__init__(url, url)
        self.path = Path(url.removeprefix("sqlite://"))

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=BUSY_SECONDS, check_same_thread=False, isolation_level=None)
        # FULL: a batch committed here is on disk before the mover deletes it from Redis.
        db.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;" + SCHEMA)
        return db

    def write(self, events: list[ArchivedEvent]) -> None:
        """Insert or replace each event by id, in one transaction: writing the same event twice
        leaves one row (a crash between this and the Redis delete repeats the write)."""
        if not events:
            return

        def work(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(_UPSERT, [e.values() for e in events])
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

        self._run(work)

    def add_copy(self, event_id: str, copy: bytes) -> bool:
        """Append a copy's record (replay --to of an archived event) to its row; False when there is none."""
        def work(db: sqlite3.Connection) -> bool:
            db.execute("BEGIN IMMEDIATE")
            try:
                found = db.execute("SELECT copies FROM events WHERE id = ?", (event_id,)).fetchone()
                if found:
                    db.execute("UPDATE events SET copies = ? WHERE id = ?", (append_copy(found[0], copy), event_id))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return bool(found)

        return self._run(work)

    def get_many(self, event_ids: Iterable[str]) -> list[ArchivedEvent]:
        ids = list(event_ids)
        if not ids:
            return []
        sql = f"SELECT {', '.join(COLUMNS)} FROM events WHERE id IN ({', '.join('?' for _ in ids)})"
        return self._run(lambda db: [from_values(v) for v in db.execute(sql, ids).fetchall()])

    def scan(self, scan: Scan) -> list[dict[str, Any]]:
        clause, params = where(scan, "?")
        sql = (f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM events WHERE {clause} "
               "ORDER BY received DESC, id DESC LIMIT ?")
        return self._run(lambda db: [summary(v) for v in db.execute(sql, [*params, scan.limit]).fetchall()])

    def delete(self, event_ids: Iterable[str]) -> int:
        ids = list(event_ids)
        if not ids:
            return 0
        sql = f"DELETE FROM events WHERE id IN ({', '.join('?' for _ in ids)})"
        return self._run(lambda db: db.execute(sql, ids).rowcount)

    def drop_before(self, cutoff: float) -> int:
        """Retention: delete rows received before `cutoff`, a batch at a time so readers never wait long."""
        sql = "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events WHERE received < ? LIMIT ?)"
        dropped = 0
        while True:
            n = self._run(lambda db: db.execute(sql, (cutoff, DROP_BATCH)).rowcount)
            dropped += n
            if n < DROP_BATCH:
                return dropped

    def size(self) -> tuple[int, int]:
        """(rows, bytes on disk, WAL included) for the bench and sizing."""
        count = self._run(lambda db: db.execute("SELECT count(*) FROM events").fetchone()[0])
        return count, sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*"))
