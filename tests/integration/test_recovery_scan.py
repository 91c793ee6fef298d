"""Lost-task recovery reads where waiting events are with few round trips, however big the keyspace: every
event's record and attempts are keys, and the few it looks for (each route's schedule, pending list, queue,
lanes) are found with SCAN. At Redis's default COUNT of 10 that was a round trip per 10 keys, per scan."""
from __future__ import annotations

import uuid

import orjson

from bus import journal
from bus.worker import recovery

NOISE = 20_000


def test_a_pass_over_a_big_keyspace_takes_few_scans_and_still_finds_where_events_wait(own_redis):
    client = own_redis.client()
    waiting = [str(uuid.uuid4()) for _ in range(3)]
    journal.accept(client, [journal.NewEvent(i, "r.x", "r", b"{}", 1.0) for i in waiting])
    pipe = client.pipeline(transaction=False)
    for n in range(NOISE):  # stands in for other events' records, attempts and the rest
        pipe.set(f"noise:{n}", b"x")
    pipe.execute()
    client.config_resetstat()

    assert recovery.missing_tasks(client) == set(), "each accepted event is on its pending list or in a message"

    scans = client.info("commandstats").get("cmdstat_scan", {}).get("calls", 0)
    # Five scans (schedules, breakers' parked events, lanes, pending lists, queues) of ~NOISE keys each.
    assert 0 < scans <= 5 * (NOISE // 1000 + 3), scans
    client.delete(journal.keys.pending_key("r"), journal.queue_name("r"))
    assert recovery.missing_tasks(client) == set(waiting), "with neither, every one is missing"


def test_an_event_delivered_while_a_pass_reads_is_not_taken_for_lost(own_redis, monkeypatch):
    """Under load most passes read an event as waiting and then see it nowhere, because a worker delivered
    it meanwhile; each such one made the second pass run. The timing is forced here: the pass's last read
    (the queues) comes after a real delivery of one event; the pending list and queue are gone, so the
    other two are missing for real."""
    client = own_redis.client()
    waiting = [str(uuid.uuid4()) for _ in range(3)]
    journal.accept(client, [journal.NewEvent(i, "r.x", "r", b"{}", 1.0) for i in waiting])
    client.delete(journal.keys.pending_key("r"), journal.queue_name("r"))
    read_queues = journal.task_messages

    def delivered_meanwhile(c):
        journal.record_attempt(c, journal.load(c, waiting[0]),
                               {"attempt": 1, "at": 2.0, "duration": 0.1, "status_code": 200}, journal.DELIVERED)
        return read_queues(c)

    monkeypatch.setattr(journal, "task_messages", delivered_meanwhile)
    assert recovery.missing_tasks(client) == set(waiting[1:])


def test_an_event_whose_message_a_worker_holds_unacked_is_not_taken_for_lost(own_redis):
    """kombu moves a task it hands to a worker out of the queue into its unacked hash (read by
    broker/unacked.py, beside the journal's places): an event whose message is there is in flight."""
    client = own_redis.client()
    event_id = str(uuid.uuid4())
    journal.accept(client, [journal.NewEvent(event_id, "r.x", "r", b"{}", 1.0)])
    (message,) = client.lrange(journal.queue_name("r"), 0, -1)
    client.delete(journal.queue_name("r"))  # as kombu's BRPOP takes it, then records it unacked
    client.hset(journal.KOMBU_UNACKED, "tag-1", orjson.dumps([orjson.loads(message), "", journal.queue_name("r")]))
    assert recovery.missing_tasks(client) == set()
    client.hdel(journal.KOMBU_UNACKED, "tag-1")
    assert recovery.missing_tasks(client) == {event_id}, "nowhere now: lost"
