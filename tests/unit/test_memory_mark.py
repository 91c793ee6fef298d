"""The ingress's memory mark: when a reading of Redis refuses, and when the next reading is taken."""
from __future__ import annotations

import pytest
import redis

from bus import journal
from bus.errors import RedisFull, Unavailable
from bus.journal.memory import DRAIN_COST, MIN_GAP, MemoryMark
from bus.wire.pipelined import NoReplicasError, reply_error

MIB = 2 ** 20


def reading(used: int, maxmemory: int, waiting: int = 0, not_counted: int = 0) -> list:
    info = (f"# Memory\r\nused_memory:{used}\r\nmaxmemory:{maxmemory}\r\n"
            f"mem_not_counted_for_evict:{not_counted}\r\n").encode()
    return [info, waiting, 0]


def test_under_the_mark_accepts_and_over_it_refuses_naming_the_memory_limit():
    mark = MemoryMark(0.9)
    mark.update(reading(7 * MIB, 8 * MIB))
    mark.check()
    mark.update(reading(int(7.3 * MIB), 8 * MIB))
    with pytest.raises(RedisFull, match="near its memory limit.*BUS_REDIS_MEMORY_HIGH=0.9"):
        mark.check()


def test_what_the_waiting_events_need_to_be_delivered_counts_against_the_mark():
    mark = MemoryMark(0.9)
    mark.update(reading(6 * MIB, 8 * MIB, waiting=2 * MIB // DRAIN_COST))
    with pytest.raises(RedisFull, match="waiting events"):
        mark.check()


def test_buffers_redis_does_not_count_against_maxmemory_do_not_count_here_either():
    mark = MemoryMark(0.9)
    mark.update(reading(8 * MIB, 8 * MIB, not_counted=2 * MIB))
    mark.check()


def test_a_redis_without_maxmemory_has_no_mark():
    mark = MemoryMark(0.9)
    mark.update(reading(64 * MIB, 0, waiting=10 ** 6))
    mark.check()


def test_a_failed_reading_keeps_the_last_one():
    mark = MemoryMark(0.9)
    mark.update(reading(8 * MIB, 8 * MIB))
    mark.update([redis.ConnectionError("gone"), 0, 0])
    with pytest.raises(RedisFull):
        mark.check()


def test_readings_are_taken_every_interval_and_early_once_accepts_used_the_room():
    mark = MemoryMark(0.9, every=0.5)
    assert mark.due(100.0)
    assert not mark.due(100.1), "one reading per interval"
    assert mark.due(100.6)
    mark.update(reading(7 * MIB, 8 * MIB))  # ~0.2 MiB of room
    event = journal.NewEvent("id", "a.b", "r", b"x" * 300_000, 0.0)
    mark.accepted([event])
    assert not mark.due(100.6 + MIN_GAP / 2), "no faster than MIN_GAP"
    assert mark.due(100.6 + MIN_GAP * 2), "the room is used up: read again before the interval is over"


@pytest.mark.parametrize("reply, kind, says", [
    ("OOM command not allowed when used memory > 'maxmemory'. script: 1f, on @user_script:1.", RedisFull,
     "memory limit"),
    ("READONLY You can't write against a read only replica.", Unavailable, "read-only replica"),
    ("NOREPLICAS Not enough good replicas to write.", Unavailable, "min-replicas-to-write"),
    ("LOADING Redis is loading the dataset in memory", Unavailable, "loading"),
    ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", Unavailable, "primary"),
])
def test_every_error_reply_that_refuses_a_write_is_an_unavailable(reply, kind, says):
    import hiredis

    error = reply_error(hiredis.ReplyError(reply))
    assert isinstance(error, journal.REDIS_DOWN)
    refusal = journal.unavailable(error)
    assert type(refusal) is kind and says in str(refusal)


def test_noreplicas_is_its_own_type_for_redis_py_clients_too():
    from redis._parsers.base import BaseParser

    assert isinstance(BaseParser.parse_error("NOREPLICAS Not enough good replicas to write."), NoReplicasError)
    assert not isinstance(BaseParser.parse_error("ERR unknown command"), journal.REDIS_DOWN)
