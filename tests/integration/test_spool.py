"""A producer's own spool (bus.Producer): emit returns once the event is on local disk, survives Redis
being down and the producer being killed, and each id reaches the journal once. Each test has a
Redis of its own (it stops and restarts it) and no worker, so what was sent stays queued to count."""
from __future__ import annotations

import collections
import time
import uuid

import pytest

from bus import journal
from bus.journal.pipelined import SharedPipe
from conftest import RedisServer, waiting_for_a_task

ROUTE = "spooled"


@pytest.fixture()
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


def journal_holds_each_once(client, ids: list[str]) -> None:
    """Each id once in the journal, and once in what waits for a task of the route (pending list and queue)."""
    assert len(set(ids)) == len(ids)
    queued = client.zrange(journal.index_key(journal.QUEUED, ROUTE), 0, -1)
    assert sorted(i.decode() for i in queued) == sorted(ids)
    assert int(client.hget(journal.COUNTERS, f"accepted:{ROUTE}") or 0) == len(ids)
    waiting = collections.Counter(waiting_for_a_task(client, ROUTE))
    assert set(waiting) == set(ids)
    assert max(waiting.values()) == 1


def test_accepting_an_id_already_journaled_makes_no_second_journal_or_pending_entry(redis_server):
    pipe = SharedPipe(redis_server.url, 5)
    client = redis_server.client()
    events = [journal.NewEvent(str(uuid.uuid4()), f"{ROUTE}.t", ROUTE, b'{"n":%d}' % i, time.time()) for i in range(5)]
    assert journal.accept_batches(pipe, [(events[:3], 100)]) == 3
    client.hset(journal.event_key(events[0].id), "status", journal.DELIVERED)  # it moved on meanwhile
    # The spool sends the batch again, with two more (a reply lost, or a crash before the spool forgot it).
    assert journal.accept_batches(pipe, [(events, 100)]) == 2
    journal_holds_each_once(client, [e.id for e in events])
    assert client.hget(journal.event_key(events[0].id), "status") == journal.DELIVERED.encode()
    assert journal.accept_batches(pipe, [(events, 100)]) == 0
    journal_holds_each_once(client, [e.id for e in events])
