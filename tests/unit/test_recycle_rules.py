"""When worker/recycle.py stops a pool process: only after idle_after with nothing given, waiting or
running, only one that ran tasks and is ready, one at a time. A stand-in for the AsynPool's
bookkeeping (the end-to-end behaviour is tests/integration/test_pool_recycle.py)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields

from billiard.pool import RUN

from bus.worker.recycle import IdleRecycler


@dataclass(eq=False)  # hashed by identity, as billiard's processes
class Proc:
    pid: int
    index: int
    inqW_fd: int
    exitcode: int | None = None
    stopped: bool = False

    def terminate_controlled(self) -> None:
        self.stopped = True


@dataclass
class Pool:
    _pool: list[Proc]
    _processes: int = 2
    _state: int = RUN
    write_stats: Counter = field(default_factory=Counter)
    _cache: dict = field(default_factory=dict)
    outbound_buffer: list = field(default_factory=list)
    _waiting_to_start: set = field(default_factory=set)
    _busy_workers: set = field(default_factory=set)
    _active_writes: set = field(default_factory=set)
    _all_inqueues: set = field(default_factory=set)


def pool_of_two() -> tuple[Pool, IdleRecycler, list[int]]:
    procs = [Proc(101, 0, 10), Proc(102, 1, 11)]
    pool = Pool(procs, _all_inqueues={10, 11})
    removed: list[int] = []
    recycler = IdleRecycler(pool, removed.append, 30.0, last_busy=0.0, given_at_start={101: 0, 102: 0})
    return pool, recycler, removed


def test_a_process_that_ran_tasks_is_stopped_only_once_the_pool_was_idle_long_enough():
    pool, recycler, removed = pool_of_two()
    pool.write_stats[0] = 3
    assert recycler.tick(now=1.0) is None  # tasks were given since the last look: busy at 1.0
    assert recycler.tick(now=30.0) is None  # idle 29 s
    assert recycler.tick(now=31.5) == 101
    assert pool._pool[0].stopped and removed == [10] and 10 not in pool._all_inqueues
    assert not pool._pool[1].stopped, "the one that ran nothing stays"


def test_nothing_is_stopped_while_a_job_waits_or_runs_anywhere():
    pool, recycler, _ = pool_of_two()
    pool.write_stats[0] = 3
    recycler.tick(now=1.0)
    pool._cache["job"] = object()
    assert recycler.tick(now=100.0) is None
    pool._cache.clear()
    pool.outbound_buffer.append("job")
    assert recycler.tick(now=200.0) is None
    pool.outbound_buffer.clear()
    assert recycler.tick(now=229.0) is None, "idle counts from the last look that saw work"
    assert recycler.tick(now=231.0) == 101


def test_one_at_a_time_the_next_only_once_the_replacement_is_up():
    pool, recycler, _ = pool_of_two()
    pool.write_stats.update({0: 2, 1: 2})
    recycler.tick(now=1.0)
    assert recycler.tick(now=40.0) == 101
    assert recycler.tick(now=45.0) is None, "101 has not exited yet"
    new = Proc(103, 0, 10)
    pool._pool[0] = new
    pool._waiting_to_start.add(new)
    assert recycler.tick(now=50.0) is None, "its replacement has not said it is up"
    pool._waiting_to_start.clear()
    pool._all_inqueues.add(10)
    assert recycler.tick(now=55.0) == 102
    assert not new.stopped, "the replacement has run nothing since its fork"


def test_a_busy_or_starting_process_is_left_alone():
    pool, recycler, _ = pool_of_two()
    pool.write_stats[0] = 1
    recycler.tick(now=1.0)
    pool._busy_workers.add(10)
    assert recycler.tick(now=40.0) is None


def test_the_stand_ins_use_names_billiard_and_celery_still_have():
    """The stand-ins mirror private names: a billiard or celery that renamed one fails here, not only end to end."""
    import inspect

    import billiard.pool
    import billiard.process
    from celery.concurrency import asynpool

    source = inspect.getsource(billiard.pool) + inspect.getsource(asynpool)
    missing = [f.name for f in fields(Pool) if f"self.{f.name} =" not in source]
    missing += [name for name in ("index", "inqW_fd") if f".{name} =" not in source]  # set on each process by the pool
    missing += [name for name in ("pid", "exitcode", "terminate_controlled")
                if not hasattr(billiard.process.BaseProcess, name)]
    assert missing == []
