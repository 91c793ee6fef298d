"""bus.Producer: emit() returns once the event is in the producer's own spool on local disk; a thread sends it on."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson

from .. import intake, settings
from ..errors import SpoolError
from ..events import new_id
from . import frames
from .sender import Sender
from .store import DEFAULT_MAX_BYTES, Spool

# Tags whose route emit() remembers; past it, a new tag takes the slower checked path each time.
MAX_TAGS_REMEMBERED = 10_000

# Bumped in a forked child: a Producer made before the fork belongs to the parent (its lock,
# its sender thread, which the child does not have), so the child must make its own.
_generation = 0


def _forked() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_forked)


class Producer:
    """The buffered way in (SPEC "A producer's own spool"); `bus.emit()` stays the strict one.

    - `emit(tag, record) -> id`, `emit_many(tag, records) -> ids`: the tag, route and
      records are checked now, as bus.emit() checks them (InvalidTag, NoRoute,
      InvalidBody raise at once, Redis or not); the ids are the ones the journal will
      have. Returns once the events are written to DIR (fsync='always': and fsynced).
      SpoolFull when max_bytes of events already wait: nothing of the call is kept.
    - A background thread sends the spool to Redis, oldest first, in pipelined
      batches, and removes what Redis has; while Redis is down it backs off and the
      spool grows.
    - `flush(timeout)` waits until everything emitted so far is in Redis; `close(timeout)`
      flushes, then stops the thread and releases DIR. What is still waiting stays in
      DIR: the next Producer on it (or `bus spool DIR --flush`) sends it.
    - Threads may share one Producer. One Producer per DIR (SpoolLocked otherwise), so
      a process that forks: the child may not use the parent's Producer (SpoolError;
      the child's copies of its files are closed at the fork, so the parent's lock
      is the parent's alone); it makes its own with a DIR of its own.

    fsync: 'always' (emit returns after fsync), 'everysec' (the default: a power loss
    or kernel crash may lose the last second of emits; a killed process loses nothing)
    or 'no' (the kernel's own writeback, ~30 s).
    """

    def __init__(self, spool: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES, fsync: str = "everysec",
                 config: settings.Settings | None = None):
        # The routes are read now; intake.load() connects to Redis lazily, so Redis may be down.
        self._intake = intake.load(config)
        self._spool = Spool(Path(spool), max_bytes, fsync)
        self._sender = Sender(self._spool, self._intake).start()
        self._generation = _generation
        self._pid = os.getpid()
        self._found = self._spool.written_total  # left by an earlier Producer on DIR
        self._closed = False
        self._routes: dict[str, str] = {}  # tag -> route, for the tags intake.prepare took (emit's hot path)

    @property
    def directory(self) -> Path:
        return self._spool.directory

    def emit(self, tag: str, record: dict[str, Any]) -> str:
        """Spool one event; its id. Raises a BusError (InvalidTag, NoRoute, InvalidBody, SpoolFull)."""
        # emit_many's steps for one event, spelled out: this is the hot path (docs/design.md).
        if self._generation != _generation:
            raise self._forked_error()
        route = self._routes.get(tag)
        if route is not None and isinstance(record, dict):
            # A tag intake.prepare already took: its checks of the tag and route hold for it (the
            # routes are read once, at __init__); the record's are prepare's own, repeated here.
            try:
                body = orjson.dumps(record)
            except TypeError:
                pass  # prepare below raises InvalidBody, naming why
            else:
                received = time.time()
                event_id = new_id(int(received * 1000))
                self._spool.append_one(frames.encode_fields(event_id, tag, route, received, body))
                self._sender.wake()
                return event_id
        prepared = intake.prepare(self._intake, tag, [record])
        if prepared.route.destinations:  # a copy per destination, spooled together (never remembered above)
            self._spool.append([frames.encode(event) for event in prepared.events])
            self._sender.wake()
            return prepared.ids[0]
        (event,) = prepared.events
        self._spool.append_one(frames.encode(event))
        self._sender.wake()
        # A route ordered by a record field checks each record for it (intake.prepare): not remembered.
        if len(self._routes) < MAX_TAGS_REMEMBERED and prepared.route.order_key is None:
            self._routes[tag] = event.route
        return event.id

    def emit_many(self, tag: str, records: list[dict[str, Any]]) -> list[str]:
        """Spool several events with one tag, all or nothing; their ids."""
        if self._generation != _generation:
            raise self._forked_error()
        prepared = intake.prepare(self._intake, tag, list(records))
        self._spool.append([frames.encode(event) for event in prepared.events])
        self._sender.wake()
        return prepared.ids

    def _forked_error(self) -> SpoolError:
        return SpoolError(f"this Producer on {self._spool.directory} belongs to process {self._pid}, which forked "
                          "this one: make a Producer of the child's own, with a spool directory of its own")

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event emitted before this call is in Redis; False if `timeout` passed first."""
        target = self._spool.written_total
        self._sender.hurry()
        return self._spool.wait_acked(target, timeout)

    def close(self, timeout: float | None = 5.0) -> bool:
        """Flush (up to `timeout`), stop sending and release DIR; True when nothing was left waiting."""
        if self._generation != _generation:
            return False  # the child closed its copies of the files at the fork (store.py)
        if self._closed:
            return self._spool.waiting().count == 0
        self._closed = True
        drained = self.flush(timeout)
        self._sender.stop()
        self._spool.close()
        for link in self._intake.links.values():
            link.pipe.close()
        return drained

    def stats(self) -> dict[str, Any]:
        """Counters for the embedding app's /metrics: spooled (waiting now), bytes (theirs), oldest_age
        (seconds the oldest has waited; None when none), emitted and sent (since this Producer
        started), last_error (why the last send failed; None once one succeeded)."""
        waiting = self._spool.waiting()
        return {
            "spooled": waiting.count,
            "bytes": waiting.bytes,
            "oldest_age": None if waiting.oldest is None else max(0.0, time.time() - waiting.oldest),
            "emitted": self._spool.written_total - self._found,
            "sent": self._sender.sent,
            "last_error": self._sender.last_error,
        }

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
