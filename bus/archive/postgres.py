"""The archive in PostgreSQL: one table partitioned by day received, so retention drops whole partitions."""
from __future__ import annotations

import calendar
import re
import time
from collections.abc import Iterable
from typing import Any

import psycopg

from ..logs import redact
from .base import StoreBase
from .rows import COLUMNS, SUMMARY_COLUMNS, ArchivedEvent, Scan, append_copy, from_values, summary, where

DAY = 86400
# tag is compared byte-wise (COLLATE "C") so the tag-prefix range of rows.where can use its index.
SCHEMA = """
CREATE TABLE IF NOT EXISTS bus_archive (
  id text NOT NULL, tag text COLLATE "C" NOT NULL, route text NOT NULL, status text NOT NULL,
  received double precision NOT NULL, attempts integer NOT NULL, last text NOT NULL, round integer NOT NULL,
  replayed double precision, body bytea NOT NULL, headers bytea NOT NULL, attempt_log bytea NOT NULL,
  copies bytea NOT NULL, request bytea,
  PRIMARY KEY (id, received)
) PARTITION BY RANGE (received);
CREATE INDEX IF NOT EXISTS bus_archive_by_time ON bus_archive (received, id);
CREATE INDEX IF NOT EXISTS bus_archive_by_route ON bus_archive (route, received, id);
CREATE INDEX IF NOT EXISTS bus_archive_by_tag ON bus_archive (tag, received, id);
"""
# A unique key on a partitioned table must hold the partition key: (id, received). An event's
# received time never changes, so this is "unique by event id", and a second write of the same
# event (after a crash, or once a replayed event is delivered again) updates its one row.
_UPSERT = (f"INSERT INTO bus_archive ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM bus_archive_incoming "
           "ON CONFLICT (id, received) DO UPDATE SET "
           + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in ("id", "received")))
_PARTITION = re.compile(r"bus_archive_p(\d{8})")
CONNECT_TIMEOUT = 3
# A read or write that takes longer counts as the archive being down rather than holding a request.
STATEMENT_TIMEOUT_MS = 10_000


def partition_name(day: int) -> str:
    return "bus_archive_p" + time.strftime("%Y%m%d", time.gmtime(day * DAY))


class PostgresStore(StoreBase):
    """psycopg serialises a connection's use itself; the base's lock also keeps a reconnect to one thread."""

    # QueryCanceled: statement_timeout, a database too slow to count as answering.
    down_errors = (psycopg.OperationalError, psycopg.InterfaceError, psycopg.errors.QueryCanceled)

    def __init__(self, url: str):
        super().__init__(url, redact(url))
        self._days: set[int] = set()  # partitions this process knows exist

    def _open(self) -> psycopg.Connection:
        db = psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT, autocommit=True,
                             options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}")
        try:
            db.execute(SCHEMA)
        except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
            db.execute(SCHEMA)  # two processes made the schema at once: the second run finds it all there
        self._days = set()
        return db

    def _ensure_partitions(self, db: psycopg.Connection, days: set[int]) -> None:
        for day in sorted(days - self._days):
            try:
                db.execute(f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF bus_archive "
                           f"FOR VALUES FROM ({day * DAY}) TO ({(day + 1) * DAY})")
            except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
                pass  # another worker made it between our check and our CREATE
            self._days.add(day)

    def write(self, events: list[ArchivedEvent]) -> None:
        """COPY the batch into a temporary table, then upsert it by (id, received): one transaction."""
        if not events:
            return

        def work(db: psycopg.Connection) -> None:
            self._ensure_partitions(db, {int(e.received // DAY) for e in events})
            with db.transaction():
                db.execute("CREATE TEMP TABLE IF NOT EXISTS bus_archive_incoming "
                           "(LIKE bus_archive INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
                with db.cursor() as cur:
                    with cur.copy(f"COPY bus_archive_incoming ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                        for event in events:
                            copy.write_row(event.values())
                    cur.execute(_UPSERT)

        self._run(work)

    def add_copy(self, event_id: str, copy: bytes) -> bool:
        """Append a copy's record (replay --to of an archived event) to its row; False when there is none."""
        def work(db: psycopg.Connection) -> bool:
            with db.transaction():
                found = db.execute("SELECT received, copies FROM bus_archive WHERE id = %s FOR UPDATE",
                                   (event_id,)).fetchone()
                if found:
                    db.execute("UPDATE bus_archive SET copies = %s WHERE id = %s AND received = %s",
                               (append_copy(bytes(found[1]), copy), event_id, found[0]))
            return bool(found)

        return self._run(work)

    def get_many(self, event_ids: Iterable[str]) -> list[ArchivedEvent]:
        ids = list(event_ids)
        if not ids:
            return []
        sql = f"SELECT {', '.join(COLUMNS)} FROM bus_archive WHERE id = ANY(%s)"
        return self._run(lambda db: [from_values(v) for v in db.execute(sql, (ids,)).fetchall()])

    def scan(self, scan: Scan) -> list[dict[str, Any]]:
        clause, params = where(scan, "%s")
        sql = (f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM bus_archive WHERE {clause} "
               "ORDER BY received DESC, id DESC LIMIT %s")
        return self._run(lambda db: [summary(v) for v in db.execute(sql, [*params, scan.limit]).fetchall()])

    def delete(self, event_ids: Iterable[str]) -> int:
        ids = list(event_ids)
        if not ids:
            return 0
        return self._run(lambda db: db.execute("DELETE FROM bus_archive WHERE id = ANY(%s)", (ids,)).rowcount)

    def drop_before(self, cutoff: float) -> int:
        """Retention: drop every partition whose whole day ended before `cutoff`; returns how many."""
        def work(db: psycopg.Connection) -> int:
            names = [r[0] for r in db.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'bus_archive'::regclass").fetchall()]
            dropped = 0
            for name in names:
                m = _PARTITION.fullmatch(name)
                if not m:
                    continue
                day = calendar.timegm(time.strptime(m.group(1), "%Y%m%d")) // DAY
                if (day + 1) * DAY <= cutoff:
                    db.execute(f"DROP TABLE IF EXISTS {name}")
                    self._days.discard(day)
                    dropped += 1
            return dropped

        return self._run(work)

    def size(self) -> tuple[int, int]:
        """(rows, bytes on disk: tables, indexes and TOAST of every partition) for the bench and sizing."""
        sql = ("SELECT (SELECT count(*) FROM bus_archive), COALESCE(sum(pg_total_relation_size(i.inhrelid)), 0) "
               "FROM pg_inherits i WHERE i.inhparent = 'bus_archive'::regclass")
        return self._run(lambda db: tuple(int(v) for v in db.execute(sql).fetchone()))
