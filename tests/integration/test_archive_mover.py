"""The archive mover against a real Redis and each real archive: what it moves, what it leaves,
and that a crash or an outage between its two steps costs no event and no duplicate row."""
from __future__ import annotations

import logging
import time

import pytest

from archivekit import HOT, deliver, outage, rows
from bus import journal
from bus.archive import mover as mover_module
from bus.archive.mover import Mover
from bus.archive.rows import from_due
from bus.broker.messages import new_message
from bus.errors import ArchiveUnavailable

pytestmark = pytest.mark.integration


@pytest.fixture
def client(own_redis):
    return own_redis.client()


def in_redis(client, ids: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for i in ids:
        pipe.exists(journal.event_key(i), journal.attempts_key(i))
    return sum(pipe.execute())


def test_delivered_events_past_the_hot_window_move_in_batches_and_leave_redis(client, store, archive_url):
    old = deliver(client, 1200, age=HOT + 5)
    other = deliver(client, 30, age=HOT + 5, tag="web.pages", route="web")  # the same batches, another route
    fresh = deliver(client, 10, age=0)
    moved = Mover(client, store, HOT, 7 * 86400).tick()
    assert (moved.moved, moved.changed, moved.gone) == (1230, 0, 0)
    assert in_redis(client, old + other) == 0 and in_redis(client, fresh) == 2 * len(fresh)
    assert set(i.decode() for i in client.zrange(journal.index_key(journal.DELIVERED), 0, -1)) == set(fresh)
    assert client.zcard(journal.index_key(journal.DELIVERED, "api")) == len(fresh)
    assert client.zcard(journal.index_key(journal.DELIVERED, "web")) == 0
    assert sorted(rows(archive_url)) == sorted((i, 1) for i in old + other)
    row = store.get(old[7])
    assert (row.tag, row.route, row.status, row.body, row.headers) == (
        "api.orders", "api", "delivered", b'{"n": 7}', b'{"X-Trace": "t"}')
    assert b'"status_code":200' in row.attempt_log
    assert journal.archived_counts(client) == {"api": 1200, "web": 30}


def test_a_worker_killed_between_the_archive_write_and_the_redis_delete_leaves_one_row_and_no_gap(
        client, store, archive_url):
    ids = deliver(client, 300, age=HOT + 5)
    # What a worker killed right after its archive write leaves behind: the rows written, Redis untouched.
    store.write([from_due(d) for d in journal.read_due(client, time.time() - HOT, 200)])
    assert in_redis(client, ids) == 2 * len(ids)
    moved = Mover(client, store, HOT, 7 * 86400).tick()
    assert moved.moved == 300
    assert sorted(rows(archive_url)) == sorted((i, 1) for i in ids)
    assert in_redis(client, ids) == 0


def test_an_event_copied_after_the_mover_read_it_stays_in_redis_until_the_next_pass(client, store):
    (event_id,) = deliver(client, 1, age=HOT + 5)
    store.write([from_due(d) for d in journal.read_due(client, time.time() - HOT, 1)])
    journal.record_copy(client, event_id, {"attempt": 1, "at": time.time(), "status_code": 200, "url": "http://copy"})
    assert journal.forget_archived(client, [(event_id, "api", 1, 0)]) == ["changed"]
    assert in_redis(client, [event_id]) == 2
    assert Mover(client, store, HOT, 7 * 86400).tick().moved == 1
    assert b"http://copy" in store.get(event_id).copies


def test_a_replayed_event_is_no_longer_due(client, store, archive_url):
    (event_id,) = deliver(client, 1, age=HOT + 5)
    record = journal.load(client, event_id)
    message = new_message([(event_id, record["tag"], record["attempts"] + 1)], journal.queue_name("api"))
    journal.requeue(client, [record], [(message, "api")])
    assert Mover(client, store, HOT, 7 * 86400).tick().moved == 0
    assert rows(archive_url) == [] and journal.load(client, event_id)["status"] == journal.QUEUED


def test_an_archive_that_does_not_answer_keeps_events_in_redis_then_takes_them(client, store, archive_url, caplog):
    caplog.set_level(logging.INFO, "bus.archive")
    ids = deliver(client, 50, age=HOT + 5)
    mover = Mover(client, store, HOT, 7 * 86400)
    with outage(archive_url):
        with pytest.raises(ArchiveUnavailable, match="did not answer"):
            mover.tick()
        assert in_redis(client, ids) == 2 * len(ids)
        state = journal.archive_state(client)
        assert state["up"] is False and "did not answer" in state["error"]
    assert "50 delivered events wait in Redis past the hot window" in caplog.text
    assert mover.tick().moved == 50
    assert journal.archive_state(client)["up"] is True
    assert sorted(rows(archive_url)) == sorted((i, 1) for i in ids)
    assert "answers again" in caplog.text


def test_one_worker_moves_at_a_time(client, store):
    deliver(client, 5, age=HOT + 5)
    assert Mover(client, store, HOT, 7 * 86400, owner="a").tick().moved == 5
    deliver(client, 5, age=HOT + 5)
    assert Mover(client, store, HOT, 7 * 86400, owner="b").tick() is None


def test_an_event_in_the_delivered_index_that_is_not_delivered_is_left_alone_and_no_longer_blocks_the_mover(
        client, store, archive_url):
    (event_id,) = deliver(client, 1, age=HOT + 5)
    client.hset(journal.event_key(event_id), "status", journal.RETRYING)  # an index out of step with its record
    assert Mover(client, store, HOT, 7 * 86400).tick().changed == 1
    assert client.zscore(journal.index_key(journal.DELIVERED), event_id) is None
    # Its route's delivered index too (forget_archived's ZREM per route of the batch).
    assert client.zscore(journal.index_key(journal.DELIVERED, "api"), event_id) is None
    assert journal.load(client, event_id)["status"] == journal.RETRYING and rows(archive_url) == []


def test_a_request_captured_by_bus_proxy_is_archived_with_its_event_and_restored_for_a_replay(client, store):
    from bus.archive import tiers

    (event_id,) = deliver(client, 1, age=HOT + 5)
    captured = b'{"method": "PUT", "path": "/orders/7"}'
    client.hset(journal.event_key(event_id), "request", captured)
    assert Mover(client, store, HOT, 7 * 86400).tick().moved == 1
    assert store.get(event_id).request == captured
    ((fields, tries, _),) = tiers.restorable(store, [{"id": event_id, "tier": "archive"}])
    assert fields["request"] == captured and len(tries) == 1


def assert_waits(wait: float, planned: float, since: float) -> None:
    """The mover waits what was planned when the records were written, less the time since then."""
    assert planned - (time.monotonic() - since) - 0.2 <= wait <= planned + 0.2, (wait, planned)


def test_a_mover_with_little_due_waits_for_more_and_holds_its_lease_over_the_wait(client, store):
    hot = 60.0  # longer than the longest sleep
    mover = Mover(client, store, hot, 7 * 86400, owner="a")
    assert mover.tick().moved == 0
    # Nothing in Redis: it sleeps the longest (the idle tick was 2 s), its lease stretched over the sleep.
    assert mover.wait_after() == pytest.approx(mover_module.LONGEST_SLEEP, abs=0.1)
    assert client.pttl(journal.ARCHIVE_MOVER) > mover_module.LEASE_MS + 1000 * mover_module.LONGEST_SLEEP - 500
    assert Mover(client, store, hot, 7 * 86400, owner="b").tick() is None
    # A few soon due: it waits until the oldest has lingered, not until each one is.
    # (Each wait counts from when the records were written: the time writing them took comes off it.)
    started = time.monotonic()
    deliver(client, 10, age=hot - 1)
    assert_waits(mover.wait_after(), 1 + mover_module.LINGER, since=started)
    # As many as a pass wants soon due: it looks again when they are.
    started = time.monotonic()
    deliver(client, mover_module.PASS_WANTS, age=hot - 1.5)
    assert_waits(mover.wait_after(), 1.5, since=started)
    # A hot window shorter than the longest sleep bounds it: an event delivered meanwhile is due no sooner.
    client.delete(journal.index_key(journal.DELIVERED))
    assert Mover(client, store, 3.0, 7 * 86400, owner="a").wait_after() == pytest.approx(3.0, abs=0.1)


def test_a_mover_that_lets_go_of_its_lease_is_followed_at_once(client, store):
    deliver(client, 5, age=HOT + 5)
    first = Mover(client, store, HOT, 7 * 86400, owner="a")
    assert first.tick().moved == 5
    first.wait_after()
    deliver(client, 5, age=HOT + 5)
    assert Mover(client, store, HOT, 7 * 86400, owner="b").tick() is None
    first.let_go()
    assert Mover(client, store, HOT, 7 * 86400, owner="b").tick().moved == 5
