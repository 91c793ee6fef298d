"""The archive mover: delivered events received more than BUS_HOT_WINDOW ago leave Redis for the
archive, in batches, by a thread of every `bus worker`'s main process (launch.py; one at a time holds the lease).

Moving an event is one more guarded step of its lifecycle: the batches read are written to the
archive first (an upsert by event id, one transaction), and only then deleted from Redis by a
script that checks each event is still as written (journal.forget_archived). A crash between the
two repeats the write on the next pass: one row, no gap. An archive that does not answer stops
nothing else: delivered events wait in Redis (their records still expire after BUS_RETENTION, as before the archive),
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
from .rows import from_due

log = logging.getLogger("bus.archive")
# Events per batch: each batch is two scripts in Redis (read, then delete) that run alone there.
# At 500 a batch, deliveries waited behind them: e2e ran 38 % slower while the mover worked than
# with the mover idle; at 100 it ran within the noise (docs/performance.md).
BATCH = 100
# Batches read before one archive write: a transaction (SQLite's commit and fsync, PostgreSQL's
# temporary table and upsert) costs about what 30-50 of its rows do, so it takes up to 1,000.
BATCHES_PER_WRITE = 10
TICK = 0.5
# A mover that does not hold the lease looks again this often (shorter than LEASE_MS).
IDLE_TICK = 2.0
# At most this many batches a tick (5,000 events, ~10,000 a second): the lease is stretched between ticks.
BATCHES_PER_TICK = 50
# What a pass waits for when fewer are due: this many events past the hot window, or the oldest
# LINGER s past it. Each pass costs 1-4 ms of CPU whatever it moves (lease, reads, a transaction,
# the deletes, its log line): at 100 events a second, passes every 0.5 s spent as much on that as on
# the events (docs/performance.md). Redis holds at most LINGER s or PASS_WANTS events more.
PASS_WANTS = BATCH * BATCHES_PER_WRITE // 2
LINGER = 5.0
# The longest sleep of a mover with nothing due (never longer than the hot window, within which
# nothing delivered meanwhile can be due, but a retried event received long ago: it waits this long).
LONGEST_SLEEP = 10.0
# The lease lasts a sleep and this: a SIGKILLed mover's lease lapses at most LONGEST_SLEEP + this late.
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

    def move_some(self, now: float) -> Moved:
        """Read up to BATCHES_PER_WRITE batches of due events, write them to the archive in one
        transaction, then delete them from Redis a batch at a time."""
        batches: list[list[journal.Due]] = []
        for n in range(BATCHES_PER_WRITE):
            due = journal.read_due(self.client, now - self.hot_window, BATCH, skip=n * BATCH)
            if due:
                batches.append(due)
            if len(due) < BATCH:
                break
        # One not delivered (replayed since) is not written; forget_archived takes it off the index.
        rows = {d.id: from_due(d) for batch in batches for d in batch if d.delivered}
        self.store.write(list(rows.values()))
        moved = Moved()
        for batch in batches:
            answers = journal.forget_archived(self.client, [d.as_written() for d in batch])
            moved.add(Moved(moved=answers.count("moved"), changed=answers.count("changed"), gone=answers.count("gone")))
        return moved

    def tick(self, now: float | None = None) -> Moved | None:
        """Move what is due, up to BATCHES_PER_TICK batches; None when another worker holds the lease.
        Raises ArchiveUnavailable (after logging and recording it) when the archive does not answer."""
        now = time.time() if now is None else now
        if not journal.claim_archive_mover(self.client, self.owner, LEASE_MS):
            return None
        total, started = Moved(), time.monotonic()
        try:
            for _ in range(BATCHES_PER_TICK // BATCHES_PER_WRITE):
                moved = self.move_some(now)
                total.add(moved)
                if moved.moved + moved.changed + moved.gone < BATCH * BATCHES_PER_WRITE:
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

    def wait_after(self) -> float:
        """Seconds until the next pass: until enough are due (archive_sleep.lua; TICK while some
        still are, after a pass that moved as many as it may), with the lease stretched over them."""
        now = time.time()
        wake_at = journal.plan_archive_sleep(self.client, self.owner, now, self.hot_window,
                                             min(LONGEST_SLEEP, self.hot_window), LINGER, PASS_WANTS, LEASE_MS)
        # At least TICK: an event left in Redis as changed is due at once and must not spin the loop.
        # (At most `longest`: the script caps wake_at at now + longest.)
        return max(wake_at - now, TICK)

    def let_go(self) -> None:
        """Give up the lease (a worker stopping): the next worker's mover takes over at once."""
        journal.let_go_archive_mover(self.client, self.owner)

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
    mover = Mover(client, store, config.hot_window, config.retention)
    try:
        while not stop.is_set():
            stop.wait(_one_pass(mover))
        _let_go(mover)
    finally:
        store.close()
        client.close()


def _one_pass(mover: Mover) -> float:
    """One pass of the mover; the seconds to wait before the next."""
    try:
        passed = mover.tick()
        # Another worker's mover holds the lease: look again soon, it may be stopping.
        return IDLE_TICK if passed is None else mover.wait_after()
    except ArchiveUnavailable:
        return DOWN_RETRY + TICK
    except journal.REDIS_DOWN as exc:
        log.warning("archive mover paused: Redis unreachable (%s)", exc)
        return DOWN_RETRY + TICK
    except Exception:
        log.exception("archive mover pass failed; trying again")
        return DOWN_RETRY + TICK


def _let_go(mover: Mover) -> None:
    try:
        mover.let_go()
    except journal.REDIS_DOWN as exc:
        # The lease then lapses by itself, at most LONGEST_SLEEP + LEASE_MS after the last pass.
        log.warning("archive mover could not give up its lease: Redis unreachable (%s)", exc)
