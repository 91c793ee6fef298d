"""Replaces the prefork pool processes that ran tasks once the worker has been idle a while.

Why: CPython 3.11 writes a reference count into every object and code object it touches, so a pool
process that has delivered events holds its own copy of the pages of the main process's heap it ran
through (~7 MiB each on top of ~5, docs/performance.md, issue 22); a process forked afresh shares
them again. Celery's own ways to replace processes do not fit: worker_max_tasks_per_child replaces a
busy process every N tasks, not an idle one; `pool_restart` (worker_pool_restarts) replaces them all
at once on a remote command; the autoscaler's shrink picks any process billiard thinks inactive, and
billiard counts a process inactive as soon as no job it has *acknowledged* runs, even while a job
is already written to its pipe.

So this is a timer of the worker's event loop (the thread that hands tasks to the pool; a 5 s tick,
as the pool's own maintain_pool timer), and all it reads is the AsynPool's bookkeeping that the same
thread keeps. Once no task has been handed out or run for `idle_after` seconds and no job waits or
runs anywhere in the pool, it takes one process that ran tasks since its fork out of the set tasks
are written to and stops it (billiard's controlled termination: SIGTERM to a process waiting on an
empty pipe). billiard's maintain_pool forks its replacement when the exit is seen; the next one
goes only once that replacement has said it is up. Being done in the thread that hands out tasks,
there is no moment in which a task can be written to a process being stopped: a task that arrives
meanwhile goes to another process, or waits in the pool's buffer for the replacement (with
--concurrency 1, for the length of a fork).

Under the threads and solo pools there are no processes to replace: nothing is started.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from celery import bootsteps

log = logging.getLogger("bus.recycle")
TICK = 5.0


@dataclass
class IdleRecycler:
    """What one prefork worker knows of its pool processes: how many tasks each index had been
    given when the process now there started, and when the pool last did anything."""

    pool: Any  # celery.concurrency.asynpool.AsynPool
    remove_writer: Any  # the event loop's remove_writer: a retired pipe must not be polled for writes
    idle_after: float
    last_total: int = 0
    last_busy: float = field(default_factory=time.monotonic)
    # pid -> write count of its index when it started (the processes there at start: 0)
    given_at_start: dict[int, int] = field(default_factory=dict)
    # index -> write count when its process was retired: what its replacement starts from
    retired_at: dict[int, int] = field(default_factory=dict)
    retiring: int | None = None  # pid of the process being replaced

    def tick(self, now: float | None = None) -> int | None:
        """One look; the pid of a process it stopped, if it stopped one."""
        pool = self.pool
        now = time.monotonic() if now is None else now
        given = pool.write_stats  # index -> jobs written to that index's processes (billiard counts them)
        total = sum(given.values())
        if total != self.last_total or pool._cache or pool.outbound_buffer:
            self.last_total, self.last_busy = total, now
            return None
        if now - self.last_busy < self.idle_after or not _running(pool):
            return None
        procs = list(pool._pool)
        live = {p.pid for p in procs}
        self.given_at_start = {pid: n for pid, n in self.given_at_start.items() if pid in live}
        for proc in procs:
            if proc.pid not in self.given_at_start:
                self.given_at_start[proc.pid] = self.retired_at.pop(proc.index, given[proc.index])
        if self.retiring in live or pool._waiting_to_start or len(procs) < pool._processes:
            return None  # one at a time: the last one's replacement is not up yet
        self.retiring = None
        for proc in procs:
            if given[proc.index] > self.given_at_start[proc.pid] and _idle(pool, proc):
                return self._retire(proc, given[proc.index])
        return None

    def _retire(self, proc: Any, given: int) -> int:
        fd = proc.inqW_fd
        # Out of the set schedule_writes picks from (for the fair and the default strategy alike),
        # before the signal: no task can be written to it from here on.
        self.pool._all_inqueues.discard(fd)
        self.remove_writer(fd)
        self.retired_at[proc.index] = given
        self.retiring = proc.pid
        proc.terminate_controlled()  # SIGTERM, and billiard logs no error for its exit
        log.info("pool process %d idle %.0f s after %d task(s): replacing it with a fresh fork",
                 proc.pid, self.idle_after, given - self.given_at_start.get(proc.pid, 0))
        return int(proc.pid)


def _running(pool: Any) -> bool:
    from billiard.pool import RUN

    return bool(pool._state == RUN)


def _idle(pool: Any, proc: Any) -> bool:
    """Ready for a task and given none (the pool's cache being empty, no job is assigned anywhere)."""
    fd = proc.inqW_fd
    return (proc.exitcode is None and proc not in pool._waiting_to_start and fd in pool._all_inqueues
            and fd not in pool._busy_workers and fd not in pool._active_writes)


def recycler_for(w: Any, idle_after: float) -> IdleRecycler | None:
    """A recycler for worker `w`'s pool, or None: recycling off, or no processes to replace."""
    from celery.concurrency.asynpool import AsynPool

    pool = getattr(getattr(w, "pool", None), "_pool", None)
    hub = getattr(w, "hub", None)
    if idle_after <= 0 or hub is None or not isinstance(pool, AsynPool):
        return None
    # The processes there now start from nothing given (recycler_for runs right after the pool starts).
    return IdleRecycler(pool, hub.remove_writer, idle_after,
                        given_at_start={p.pid: pool.write_stats[p.index] for p in pool._pool})


def tick_every(idle_after: float) -> float:
    """TICK, or less for a short idle time (tests), never under a second."""
    return max(1.0, min(TICK, idle_after / 2))


class RecycleIdlePool(bootsteps.StartStopStep):
    """Worker step (app.steps['worker']): arms the recycler's timer on the worker's event loop."""

    requires = ("celery.worker.components:Hub", "celery.worker.components:Pool")

    def start(self, w: Any) -> None:
        from .. import settings

        recycler = recycler_for(w, settings.load().pool_recycle_idle)
        if recycler is None:
            return
        timer: list[Any] = []

        def tick() -> None:
            try:
                recycler.tick()
            except Exception:
                # It reads the AsynPool's private bookkeeping: a Celery whose names changed turns the
                # recycling off with one message, instead of an error every tick.
                log.exception("pool processes will not be replaced when idle (BUS_POOL_RECYCLE_IDLE)")
                timer[0].cancel()

        timer.append(w.hub.call_repeatedly(tick_every(recycler.idle_after), tick))
