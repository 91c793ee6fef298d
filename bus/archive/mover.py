"""The archive mover: delivered events received more than BUS_HOT_WINDOW ago leave Redis for the
archive, in batches, by a thread of every `bus worker`'s main process (launch.py; one at a time holds the lease).

Moving an event is one more guarded step of its lifecycle: the batch is written to the archive
first (an upsert by event id), and only then deleted from Redis by a script that checks each
event is still as written (journal.forget_archived). A crash between the two repeats the write
on the next pass: one row, no gap. An archive that does not answer stops nothing else: delivered
events wait in Redis (their records still expire after BUS_RETENTION, as before the archive),
the mover says so in the log and in bus:archive:state (/metrics), and moves them once it answers.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .. import journal, settings
from ..errors import ArchiveUnavailable
from . import Store, store_for
from .rows import from_journal

log = logging.getLogger("bus.archive")
# Events per batch: each batch is two scripts in Redis (read, then delete) that run alone there.
# At 500 a batch, deliveries waited behind them: e2e ran 38 % slower while the mover worked than
# with the mover idle; at 100 it ran within the noise (docs/performance.md).
BATCH = 100
TICK = 0.5
# After a pass that found nothing to move; shorter than LEASE_MS, so the lease is renewed in time.
IDLE_TICK = 2.0
# At most this many batches a tick (5,000 events, ~10,000 a second): the lease is renewed between ticks.
BATCHES_PER_TICK = 50
LEASE_MS = 5000
RETENTION_EVERY = 300.0
# While the archive is down: one warning this often, and a try this often.
WARN_EVERY = 30.0
DOWN_RETRY = 1.0
# How often a working mover refreshes bus:archive:state ("checked"), so a stale "up" shows.
STATE_EVERY = 10.0


@dataclass
class Moved:
    moved: int = 0
    changed: int = 0  # replayed or copied since they were read: left in Redis for the next pass
    gone: int = 0  # purged or expired meanwhile

    def add(self, other: Moved) -> None:
        self.moved += other.moved
        self.changed += other.changed
        self.gone += other.gone


class Mover:
    """One worker's mover; `tick` is one pass, called by the loop below (and by the tests)."""

    def __init__(self, client: Any, store: Store, hot_window: float, retention: int, owner: str | None = None):
        self.client, self.store = client, store
        self.hot_window, self.retention = hot_window, retention
        self.owner = owner or str(uuid.uuid4())
        self.down_since: float | None = None
        self._warned = 0.0
        self._retention_done = 0.0
        self._state_written = 0.0
        self._up_since = 0.0

    def move_batch(self, now: float) -> Moved:
        """Write one batch of due events to the archive, then delete them from Redis."""
        ids = journal.due_for_archive(self.client, now - self.hot_window, BATCH)
        if not ids:
            return Moved()
        written, gone = [], []
        rows = []
        for event_id, loaded in zip(ids, journal.load_whole(self.client, ids)):
            if loaded is None:
                gone.append((event_id, "", 0, 0))
                continue
            record, tries, copies = loaded
            if record["status"] == journal.DELIVERED:
                rows.append(from_journal(record, tries, copies))
            # One not delivered (replayed since) is not written; the script takes it off the index.
            written.append((event_id, record["route"], record["attempts"], len(copies)))
        self.store.write(rows)
        answers = journal.forget_archived(self.client, written + gone)
        return Moved(moved=answers.count("moved"), changed=answers.count("changed"), gone=answers.count("gone"))

    def tick(self, now: float | None = None) -> Moved | None:
        """Move what is due, up to BATCHES_PER_TICK batches; None when another worker holds the lease.
        Raises ArchiveUnavailable (after logging and recording it) when the archive does not answer."""
        now = time.time() if now is None else now
        if not journal.claim_archive_mover(self.client, self.owner, LEASE_MS):
            return None
        total, started = Moved(), time.monotonic()
        try:
            for _ in range(BATCHES_PER_TICK):
                moved = self.move_batch(now)
                total.add(moved)
                if moved.moved + moved.changed + moved.gone < BATCH:
                    break
            self._drop_expired(now)
        except ArchiveUnavailable as exc:
            self._archive_down(now, exc)
            raise
        self._archive_up(now)
        if total.moved or total.changed:
            log.info("archived %d delivered events to %s in %.2fs (%d changed since read, left in Redis)",
                     total.moved, self.store.shown, time.monotonic() - started, total.changed,
                     extra={"bus": {"archived": total.moved, "changed": total.changed, "gone": total.gone}})
        return total

    def _drop_expired(self, now: float) -> None:
        if now - self._retention_done >= RETENTION_EVERY:
            self._retention_done = now
            dropped = self.store.drop_before(now - self.retention)
            if dropped:
                log.info("archive retention: dropped %d %s received before %s", dropped,
                         "partitions" if self.store.url.startswith("postgres") else "events",
                         time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(now - self.retention)))

    def _archive_down(self, now: float, exc: ArchiveUnavailable) -> None:
        if self.down_since is None:
            self.down_since = now
            journal.set_archive_state(self.client, False, now, str(exc))
            self._state_written = 0.0  # say "up" again at the first pass that works
        if now - self._warned >= WARN_EVERY:
            self._warned = now
            waiting = journal.overdue(self.client, now - self.hot_window)
            log.warning("%s; %d delivered events wait in Redis past the hot window (%gs) until it answers, "
                        "delivery goes on", exc, waiting, self.hot_window,
                        extra={"bus": {"archive_up": False, "overdue": waiting}})

    def _archive_up(self, now: float) -> None:
        if self.down_since is not None:
            log.info("the archive %s answers again after %.0fs; moving the delivered events that waited",
                     self.store.shown, now - self.down_since)
            self.down_since = None
            self._warned = 0.0
        if now - self._state_written >= STATE_EVERY or self._state_written == 0:
            if self._state_written == 0:
                self._up_since = now
            journal.set_archive_state(self.client, True, self._up_since)
            self._state_written = now


def run(stop: threading.Event) -> None:
    """The mover of this worker until `stop` is set (launch.py runs it in a thread of the worker)."""
    config = settings.load()
    store = store_for(config)
    if store is None:
        return
    client = journal.connect(config.worker_redis, config.redis_timeout)  # this worker's shard
    try:
        mover = Mover(client, store, config.hot_window, config.retention)
        while not stop.is_set():
            stop.wait(_one_pass(mover))
    finally:
        store.close()
        client.close()


def _one_pass(mover: Mover) -> float:
    """One pass of the mover; the seconds to wait before the next."""
    try:
        passed = mover.tick()
    except ArchiveUnavailable:
        return DOWN_RETRY + TICK
    except journal.REDIS_DOWN as exc:
        log.warning("archive mover paused: Redis unreachable (%s)", exc)
        return DOWN_RETRY + TICK
    except Exception:
        log.exception("archive mover pass failed; trying again")
        return DOWN_RETRY + TICK
    # Nothing to move (or another worker's mover holds the lease): the next delivered event is due
    # a hot window after it arrived, so passes slow down instead of asking Redis twice a second.
    busy = passed is not None and passed.moved + passed.changed + passed.gone > 0
    return TICK if busy else IDLE_TICK
