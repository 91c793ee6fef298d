"""A route's task message template lives in Redis once (journal/templates.py): calls name its key instead of
carrying it. A Redis that lost it (flushed, a new shard, a failover to a replica that lagged) refuses the call
(BUSTEMPLATE) before writing anything, and every way in stores the template and calls again, so accepted
events still get a message a real Celery worker runs. Real Redis (with AOF) throughout."""
from __future__ import annotations

import time
import uuid

import orjson
import pytest

from bus import intake, journal, settings
from bus.broker.messages import delivery_message, event_ids_of, outgoing
from bus.journal import templates
from bus.wire.pipelined import SharedPipe
from conftest import wait_until

ROUTE = "tpl"


def forget_templates(client) -> int:
    """What a flushed Redis, or a replica that never got them, looks like to the callers: no template keys."""
    keys = list(client.scan_iter(match="bus:template:*", count=1000))
    return client.delete(*keys) if keys else 0


def new_events(n: int, route: str = ROUTE) -> list[journal.NewEvent]:
    return [journal.NewEvent(str(uuid.uuid4()), f"{route}.t{i}", route, b"{}", time.time()) for i in range(n)]


def queued(client, route: str = ROUTE) -> list[dict]:
    return [orjson.loads(m) for m in reversed(client.lrange(journal.queue_name(route), 0, -1))]


def test_an_accept_whose_template_is_gone_writes_nothing_and_refuses_with_its_own_error(own_redis):
    client = own_redis.client()
    events = new_events(2)
    keys, args = journal.accept_call(events)
    with pytest.raises(templates.MissingTemplate, match=r"^bus:template:[0-9a-f]{16} is not in Redis"):
        journal.store.script(client, journal.ACCEPT_SCRIPT)(keys=keys, args=args)
    assert client.keys("*") == [], "a refused accept writes nothing"


def test_emit_and_a_post_after_the_templates_are_gone_are_delivered_by_the_worker_once_each(bus):
    """emit() (this process's pipe) and the ingress (its event-loop pipe): each finds its template gone, stores
    it and accepts again; the messages they queue are run by the real Celery worker."""
    client = bus.redis.client()
    name = uuid.uuid4().hex[:8]
    bus_intake = intake.load(settings.load(bus.env))
    intake.accept(bus_intake, f"api.{name}", [{"warm": 1}])  # this process's template is stored
    wait_until(lambda: len(bus.receiver.to(f"/api/{name}/")) == 1, 15, what="the first event")
    emitted, posted = [], []
    for _ in range(3):  # the flag may come back with a task starting meanwhile; each round clears it again
        assert forget_templates(client) > 0
        client.delete(journal.filling_key("api"))  # no message of the route coming: this accept queues one
        emitted += intake.accept(bus_intake, f"api.{name}", [{"via": "emit"}])
        forget_templates(client)
        client.delete(journal.filling_key("api"))
        answer = bus.post(f"api.{name}", '{"via": "http"}')
        assert answer.status_code == 202, answer.text
        posted += answer.json()["ids"]
    wait_until(lambda: len(bus.receiver.to(f"/api/{name}/")) >= 7, 20, what="the six events")
    time.sleep(0.5)  # a second copy of any would have arrived by now
    ids = bus.receiver.ids(f"/api/{name}/")
    assert len(ids) == len(set(ids)) == 7 and set(emitted + posted) <= set(ids)
    assert list(client.scan_iter(match="bus:template:*")), "the templates were stored again"


def test_batches_frames_and_refills_store_a_template_that_is_gone_and_queue_the_same_message(own_redis):
    """The spool's paths (accept_batches, accept_frames) and a task's start (load_many's refill) and the mover's
    (refill_if_idle): each stores the template and queues the message delivery_message() builds."""
    client = own_redis.client()
    pipe = SharedPipe(own_redis.url, 5)
    try:
        batch = new_events(3)
        assert journal.accept_batches(pipe, [(batch, 25)]) == 3
        assert queued(client) == [orjson.loads(delivery_message([(e.id, e.tag) for e in batch],
                                                                journal.queue_name(ROUTE)))]

        framed = new_events(2)
        forget_templates(client)
        client.delete(journal.filling_key(ROUTE), journal.queue_name(ROUTE))
        payloads = [f"{e.id}\n{e.tag}\n{e.route}\n{e.received!r}\n".encode() + e.body for e in framed]
        mark = journal.SpoolMark("s1", ["0001", "0002"], "", 60)
        assert journal.accept_frames(pipe, [(payloads, ROUTE, 25, "", mark)]) == 2
        assert [event_ids_of(m) for m in queued(client)] == [[e.id for e in framed]]

        later = new_events(2)
        journal.accept(client, later)  # a message is coming (the flag): they wait on the pending list
        forget_templates(client)
        client.delete(journal.queue_name(ROUTE))
        journal.load_many(pipe, [], ROUTE)  # a task starts and takes them
        assert [event_ids_of(m) for m in queued(client)] == [[e.id for e in later]]

        last = new_events(1)
        journal.accept(client, last)
        forget_templates(client)
        client.delete(journal.filling_key(ROUTE), journal.queue_name(ROUTE))
        assert journal.refill_if_idle(client, ROUTE)
        assert [event_ids_of(m) for m in queued(client)] == [[last[0].id]]
    finally:
        pipe.close()


def test_a_redis_restarted_from_its_aof_keeps_the_template(own_redis):
    client = own_redis.client()
    journal.accept(client, new_events(1))
    key = templates.for_route(ROUTE).key
    stored = client.get(key)
    assert stored == templates.for_route(ROUTE).text.encode()
    own_redis.kill()  # SIGKILL: only what the AOF holds comes back
    own_redis.start()
    client = own_redis.client()
    assert client.get(key) == stored and client.ttl(key) > 0
    client.delete(journal.filling_key(ROUTE), journal.queue_name(ROUTE))
    events = new_events(1)
    keys, args = journal.accept_call(events)
    # The script itself, without the callers' store-and-retry: it finds the template and queues a message.
    assert journal.store.script(client, journal.ACCEPT_SCRIPT)(keys=keys, args=args) == 1
    assert [event_ids_of(m) for m in queued(client)] == [[events[0].id]]


def test_a_spool_send_in_parts_whose_template_is_gone_is_taken_whole_in_order(own_redis):
    """A later part of a spool's send refuses (BUSGAP) when the part before it was not taken: here that part
    was refused for its template, so both run again, in order, once it is stored."""
    client = own_redis.client()
    pipe = SharedPipe(own_redis.url, 5)
    try:
        events = new_events(4)
        places = ["0001", "0002", "0003", "0004"]
        marks = [journal.SpoolMark("s2", places[:2], "", 60), journal.SpoolMark("s2", places[2:], places[1], 60)]
        assert journal.accept_batches(pipe, [(events[:2], 25), (events[2:], 25)], marks) == 4
        assert client.hget(journal.spool_mark_key("s2"), ROUTE) == b"0004"
        assert [event_ids_of(m) for m in queued(client)] == [[e.id for e in events[:2]]]
        assert client.lrange(journal.pending_key(ROUTE), 0, -1) == [f"{e.id} {e.tag}".encode() for e in events[2:]]
    finally:
        pipe.close()


@pytest.mark.parametrize("template_there", [True, False])
def test_an_ordered_lanes_next_event_gets_its_message_from_the_attempt_or_else_from_the_mover(own_redis,
                                                                                            template_there):
    """A delivered head lets its lane's next event go in a message record_attempt makes, when the template is
    there; an attempt's record is not refused for a template gone: the event waits on the pending list, no
    message flagged as coming, and the mover's refill stores the template and sends it."""
    client = own_redis.client()
    head, after = new_events(2)
    after = journal.NewEvent(after.id, head.tag, ROUTE, b"{}", after.received)  # same tag: one lane
    journal.accept(client, [head, after], order="tag")
    client.delete(journal.queue_name(ROUTE), journal.filling_key(ROUTE))  # the head's message was taken
    if not template_there:
        forget_templates(client)
    answered = {"attempt": 1, "at": time.time(), "duration": 0.01, "status_code": 200}
    assert journal.record_attempt(client, journal.load(client, head.id), answered, journal.DELIVERED,
                                  lane_group=journal.lane_group(ROUTE, 25)) is None
    if template_there:
        assert [event_ids_of(m) for m in queued(client)] == [[after.id]]
        return
    assert queued(client) == [] and not client.exists(journal.filling_key(ROUTE))
    assert client.lrange(journal.pending_key(ROUTE), 0, -1) == [f"{after.id} {after.tag}".encode()]
    assert journal.refill_if_idle(client, ROUTE)
    assert [event_ids_of(m) for m in queued(client)] == [[after.id]]


def test_messages_made_in_python_are_filled_into_the_stored_template_as_the_bytes_delivery_message_builds(
        own_redis):
    """Recovery's copy (a redelivered message), a hand-off, the retry schedule's release, a probe and a replay:
    each call names the template's key and carries only the message's own values; each finds the template gone,
    stores it, and queues exactly messages.Outgoing.data (delivery_message's bytes)."""
    client = own_redis.client()
    (event,) = new_events(1)
    journal.accept(client, [event])
    queue = journal.queue_name(ROUTE)

    def last_pushed(at: int) -> bytes:
        return client.lindex(queue, at)

    client.delete(queue)
    copy = outgoing([(event.id, event.tag, 1)], queue, "copy-1", redelivered=True)
    forget_templates(client)
    assert journal.requeue_lost(client, event.id, ROUTE, copy)
    assert last_pushed(-1) == copy.data == delivery_message([(event.id, event.tag, 1)], queue, "copy-1",
                                                            redelivered=True)

    handed = outgoing([(event.id, event.tag, 1)], queue, "handed-1", to=None)
    forget_templates(client)
    assert journal.hand_off(client, ROUTE, handed, "copy-1") == 1
    assert last_pushed(0) == handed.data

    assert journal.park(client, journal.load(client, event.id), time.time(), task="handed-1") is None
    retry = outgoing([(event.id, event.tag, 2)], queue, "retry-1")
    forget_templates(client)
    assert journal.release(client, ROUTE, [retry]) == 1
    assert last_pushed(-1) == retry.data

    client.zadd(journal.keys.parked_key(ROUTE, "ep"), {event.id: 1.0})  # held back behind a breaker
    probe = outgoing([(event.id, event.tag, 3)], queue, "probe-1", probe=True)
    forget_templates(client)
    assert journal.breakers.send_probe(client, ROUTE, "ep", probe, time.time() + 30, 60)
    assert last_pushed(-1) == probe.data

    replay = outgoing([(event.id, event.tag, 4)], queue, "replay-1", to="http://127.0.0.1:9/staging")
    forget_templates(client)
    assert journal.requeue(client, journal.summaries(client, [event.id]), [(replay, ROUTE)]) == 1
    assert last_pushed(0) == replay.data
    assert journal.load(client, event.id)["task"] == "replay-1"
