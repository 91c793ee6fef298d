"""Real archives for the tests: a PostgreSQL database per test on the local server (dropped after),
a SQLite file in the test's temp dir, and a way to make each one stop answering and come back."""
from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from bus import journal
from bus.events import new_id

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
KINDS = ("sqlite", "postgres")
HOT = 5.0  # the hot window the mover's and the reads' tests move with, in seconds


@contextmanager
def archive_url(kind: str, tmp: Path) -> Iterator[str]:
    """A fresh, empty archive of this kind; a PostgreSQL one is dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / f'archive-{uuid.uuid4().hex[:8]}.sqlite3'}"
        return
    name = f"bus_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def outage(url: str) -> Iterator[None]:
    """The archive stops answering for the bus until the block ends, as a real one does.

    PostgreSQL: the database refuses new connections (ALLOW_CONNECTIONS false binds superusers too)
    and every open one is terminated. SQLite: another process holds the file's write lock, as a
    backup or a stuck writer would; writers give up after their busy timeout."""
    if url.startswith("sqlite://"):
        blocker = sqlite3.connect(url.removeprefix("sqlite://"), isolation_level=None)
        blocker.execute("PRAGMA journal_mode=WAL")
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        return
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        try:
            yield
        finally:
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")


def rows(url: str) -> list[tuple[str, int]]:
    """(id, attempts) of every archived row, read straight from the database (duplicates included)."""
    if url.startswith("sqlite://"):
        with sqlite3.connect(url.removeprefix("sqlite://")) as db:
            return db.execute("SELECT id, attempts FROM events").fetchall()
    with psycopg.connect(url) as db:
        return db.execute("SELECT id, attempts FROM bus_archive").fetchall()


def deliver(client, n: int, age: float, tag: str = "api.orders", route: str = "api") -> list[str]:
    """n events accepted `age` seconds ago and delivered on their first attempt, through the journal's own moves."""
    received = time.time() - age
    events = [journal.NewEvent(id=new_id(int(received * 1000)), tag=tag, route=route, body=b'{"n": %d}' % i,
                               received=received + i * 1e-6, headers=b'{"X-Trace": "t"}') for i in range(n)]
    for start in range(0, n, 500):
        journal.accept(client, events[start:start + 500])
    for e in events:
        journal.record_attempt(client, {"id": e.id, "route": route, "status": journal.QUEUED, "received": e.received},
                               {"attempt": 1, "at": time.time(), "duration": 0.01, "status_code": 200,
                                "url": "http://receiver/api"}, journal.DELIVERED)
    return [e.id for e in events]
