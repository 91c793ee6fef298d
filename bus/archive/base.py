"""What both archive stores share: one connection per process behind a lock, and every driver
failure turned into ArchiveUnavailable (the connection is dropped and made again on the next call)."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..errors import ArchiveUnavailable
from .rows import ArchivedEvent


class StoreBase:
    # The driver's exceptions that mean "the database did not answer" (set by each store).
    down_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, url: str, shown: str):
        self.url = url
        self.shown = shown  # the URL as messages may show it (no password)
        self._lock = threading.Lock()
        self._db: Any = None

    def _open(self) -> Any:
        raise NotImplementedError

    def _down(self, exc: BaseException) -> ArchiveUnavailable:
        detail = (str(exc).strip().splitlines() or [""])[0]
        return ArchiveUnavailable(f"the archive {self.shown} did not answer ({type(exc).__name__}: {detail})")

    def _run(self, work: Callable[[Any], Any]) -> Any:
        """work(connection) under the lock; a failure of the database closes the connection."""
        with self._lock:
            if self._db is None:
                try:
                    self._db = self._open()
                except self.down_errors as exc:
                    raise self._down(exc) from exc
            try:
                return work(self._db)
            except self.down_errors as exc:
                db, self._db = self._db, None
                try:
                    db.close()
                except self.down_errors:
                    pass
                raise self._down(exc) from exc

    def get_many(self, event_ids: list[str]) -> list[ArchivedEvent]:
        raise NotImplementedError

    def get(self, event_id: str) -> ArchivedEvent | None:
        found = self.get_many([event_id])
        return found[0] if found else None

    def ping(self) -> None:
        self._run(lambda db: db.execute("SELECT 1").fetchone())

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
