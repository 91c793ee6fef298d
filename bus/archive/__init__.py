"""The journal's second tier: delivered events older than BUS_HOT_WINDOW, on disk (BUS_ARCHIVE_URL).

- rows.py      the archived row (made from a journal record) and the listing query on it
- base.py      what both stores share: one connection per process, failures as ArchiveUnavailable
- sqlite.py    the store in an embedded SQLite file (the default, under BUS_VAR)
- postgres.py  the store in PostgreSQL, partitioned by day received
- mover.py     the process beside each worker that moves delivered events out of Redis, in batches
- tiers.py     reads that see both tiers: listing, one event, replay, purge

Both stores have the same small interface (`Store`); each method raises ArchiveUnavailable
when the archive does not answer, never a driver's exception.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any, Protocol

from ..settings import Settings
from .rows import ArchivedEvent, Scan


class Store(Protocol):
    url: str
    shown: str  # the URL without its password, for messages and logs

    def write(self, events: list[ArchivedEvent]) -> None: ...
    def get(self, event_id: str) -> ArchivedEvent | None: ...
    def get_many(self, event_ids: Iterable[str]) -> list[ArchivedEvent]: ...
    def add_copy(self, event_id: str, copy: bytes) -> bool: ...
    def scan(self, scan: Scan) -> list[dict[str, Any]]: ...
    def delete(self, event_ids: Iterable[str]) -> int: ...
    def drop_before(self, cutoff: float) -> int: ...
    def size(self) -> tuple[int, int]: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...


def open_store(url: str) -> Store:
    """A store for a checked BUS_ARCHIVE_URL (settings.py validated its scheme); connects on first use."""
    if url.startswith("sqlite://"):
        from .sqlite import SqliteStore
        return SqliteStore(url)
    from .postgres import PostgresStore
    return PostgresStore(url)


_lock = threading.Lock()
_stores: dict[tuple[int, str], Store] = {}


def store_for(config: Settings) -> Store | None:
    """The process's store for the configured archive (None when BUS_ARCHIVE_URL=off), made once:
    the ingress's threads, the CLI and a worker's threads share its one connection. Keyed by
    process too: a prefork child must not use the connection it inherited from the worker's main
    process (two processes on one socket mix their replies)."""
    if not config.archive_url:
        return None
    key = (os.getpid(), config.archive_url)
    with _lock:
        if key not in _stores:
            _stores[key] = open_store(config.archive_url)
        return _stores[key]
