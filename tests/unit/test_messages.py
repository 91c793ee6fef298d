"""Deliver-task messages built by hand for kombu's Redis transport (Celery message protocol 2).

One message carries a group of up to GROUP_SIZE events of one route: args are [event_ids].

Besides the JSON shape, each message is fed through kombu's own virtual
transport (the base of the Redis transport, here over `memory://`) and
Celery's worker Request, then executed, so a shape Celery would not accept
fails here rather than in a worker.
"""
from __future__ import annotations

import base64
import inspect
import json
import uuid

import pytest
from celery import Celery
from celery.worker.request import Request
from kombu import Connection

from bus.broker.messages import DELIVER_TASK, GROUP_SIZE, delivery_message, event_ids_of, groups
from bus.events import new_id

EVENT_ID = "01900000-0000-7000-8000-000000000001"
TAG = "api.orders"
QUEUE = "bus.api"
ONE = [(EVENT_ID, TAG)]


def decode(raw: bytes) -> dict:
    assert isinstance(raw, bytes)
    return json.loads(raw)


def body(raw: bytes) -> list:
    return json.loads(decode(raw)["body"])


# --------------------------------------------------------------------------- JSON shape

def test_message_is_a_kombu_redis_payload():
    payload = decode(delivery_message(ONE, QUEUE))
    assert set(payload) == {"body", "content-encoding", "content-type", "headers", "properties"}
    assert payload["content-type"] == "application/json"
    assert payload["content-encoding"] == "utf-8"
    assert isinstance(payload["body"], str)
    # No body_encoding: kombu decodes the body as is (no base64).
    assert "body_encoding" not in payload["properties"]


def test_headers_name_the_deliver_task_and_its_id():
    headers = decode(delivery_message(ONE, QUEUE))["headers"]
    assert headers["task"] == DELIVER_TASK == "bus.deliver"
    assert headers["id"] == EVENT_ID
    assert headers["root_id"] == EVENT_ID
    assert headers["parent_id"] is None
    assert headers["lang"] == "py"
    assert headers["retries"] == 0
    assert headers["eta"] is None and headers["expires"] is None
    assert headers["timelimit"] == [None, None]


def test_argsrepr_shows_the_tag_next_to_the_id():
    headers = decode(delivery_message(ONE, QUEUE))["headers"]
    assert TAG in headers["argsrepr"]
    assert EVENT_ID in headers["argsrepr"]
    assert headers["kwargsrepr"] == "{}"


def test_argsrepr_of_a_group_shows_every_event_up_to_five():
    events = [(new_id(), f"api.t{i}") for i in range(5)]
    argsrepr = decode(delivery_message(events, QUEUE))["headers"]["argsrepr"]
    for event_id, tag in events:
        assert tag in argsrepr and event_id in argsrepr


def test_argsrepr_of_a_large_group_counts_the_events_and_stays_short():
    events = [(new_id(), f"api.t{i}") for i in range(50)]
    argsrepr = decode(delivery_message(events, QUEUE))["headers"]["argsrepr"]
    assert argsrepr.startswith("50 events")
    assert events[0][0] in argsrepr
    assert events[-1][0] not in argsrepr
    assert len(argsrepr) < 500


def test_properties_route_the_message_to_the_queue():
    props = decode(delivery_message(ONE, QUEUE))["properties"]
    assert props["delivery_info"]["routing_key"] == QUEUE
    assert props["delivery_info"]["exchange"] == ""
    assert props["correlation_id"] == EVENT_ID
    assert props["delivery_mode"] == 2  # persistent
    assert props["priority"] == 0  # kombu's Redis transport then uses the plain queue key


def test_body_is_args_kwargs_embed():
    assert body(delivery_message(ONE, QUEUE)) == [
        [[EVENT_ID]], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    ]


def test_body_carries_every_event_id_of_the_group_in_order():
    events = [(new_id(), "api.orders") for _ in range(7)]
    args, kwargs, _ = body(delivery_message(events, QUEUE))
    assert args == [[event_id for event_id, _ in events]]
    assert kwargs == {}


def test_replay_copy_carries_to_in_kwargs():
    raw = delivery_message(ONE, QUEUE, task_id="t-1", to="http://staging.example/in")
    args, kwargs, _ = body(raw)
    assert args == [[EVENT_ID]]
    assert kwargs == {"to": "http://staging.example/in"}
    assert "staging.example" in decode(raw)["headers"]["kwargsrepr"]


def test_probe_is_flagged_in_kwargs():
    args, kwargs, _ = body(delivery_message(ONE, QUEUE, probe=True))
    assert args == [[EVENT_ID]]
    assert kwargs == {"probe": True}


def test_task_id_defaults_to_the_first_event_id_and_may_be_set():
    second = new_id()
    assert decode(delivery_message([*ONE, (second, TAG)], QUEUE))["headers"]["id"] == EVENT_ID
    raw = delivery_message(ONE, QUEUE, task_id="retry-7")
    payload = decode(raw)
    assert payload["headers"]["id"] == payload["headers"]["root_id"] == "retry-7"
    assert payload["properties"]["correlation_id"] == "retry-7"
    assert body(raw)[0] == [[EVENT_ID]]  # the events are still the argument


def test_delivery_tag_is_the_task_id_so_messages_in_flight_never_share_one():
    # kombu's Redis QoS keys unacked messages by delivery_tag; two messages in
    # flight sharing one would overwrite each other and one could be lost on
    # restore. A first delivery's task id is its first event's id (an event is
    # in one first-delivery task); every retry or replay gets a fresh uuid.
    first = decode(delivery_message(ONE, QUEUE))["properties"]["delivery_tag"]
    assert first == EVENT_ID
    retries = [str(uuid.uuid4()) for _ in range(200)]
    tags = [decode(delivery_message(ONE, QUEUE, task_id=t))["properties"]["delivery_tag"] for t in retries]
    assert tags == retries
    assert len({first, *tags}) == 201
    other = decode(delivery_message([(new_id(), TAG)], QUEUE))["properties"]["delivery_tag"]
    assert other != first


def test_tag_with_quotes_stays_valid_json():
    raw = delivery_message([(EVENT_ID, 'a"b\\c')], QUEUE, to='http://x/"q"')
    assert 'a"b\\c' in decode(raw)["headers"]["argsrepr"]
    assert body(raw)[1] == {"to": 'http://x/"q"'}


@pytest.mark.parametrize("count,sizes", [(1, [1]), (25, [25]), (26, [25, 1]), (60, [25, 25, 10])])
def test_groups_split_events_into_tasks_of_at_most_twenty_five(count, sizes):
    assert GROUP_SIZE == 25
    items = list(range(count))
    chunks = groups(items)
    assert [len(c) for c in chunks] == sizes
    assert [x for c in chunks for x in c] == items  # nothing lost, order kept


def test_groups_of_nothing_is_no_task():
    assert groups([]) == []


# --------------------------------------------------------------------------- accepted by kombu and Celery

@pytest.fixture()
def celery_task():
    """A stand-in for bus.delivery.deliver (same name and signature) that records its calls."""
    app = Celery("bus-test", set_as_current=False)
    calls: list[dict] = []

    @app.task(name=DELIVER_TASK, bind=True, acks_late=True, ignore_result=True)
    def deliver(self, event_ids, to=None, probe=False):
        calls.append({"event_ids": event_ids, "to": to, "probe": probe, "task_id": self.request.id,
                      "routing_key": (self.request.delivery_info or {}).get("routing_key")})
        return "delivered"

    deliver.calls = calls
    return app, deliver


def test_stand_in_task_has_the_real_deliver_signature(celery_task):
    from bus.worker.delivery import deliver as real

    _, stand_in = celery_task
    assert real.name == stand_in.name == DELIVER_TASK
    assert list(inspect.signature(real.run).parameters) == list(inspect.signature(stand_in.run).parameters)


def receive(raw: bytes, queue: str = QUEUE):
    """The message as a kombu virtual-transport Message, fetched from `queue` as a worker would."""
    conn = Connection("memory://")
    channel = conn.default_channel
    channel.queue_declare(queue=queue)
    # kombu's Redis transport LPUSHes the JSON and, on fetch, json-loads it into this dict.
    channel._put(queue, json.loads(raw))
    message = channel.basic_get(queue)
    assert message is not None
    return conn, message


@pytest.mark.parametrize("size", [1, 3, GROUP_SIZE])
@pytest.mark.parametrize(
    "kwargs,expected",
    [
        ({}, {"to": None, "probe": False}),
        ({"to": "http://staging.example/in"}, {"to": "http://staging.example/in", "probe": False}),
        ({"probe": True}, {"to": None, "probe": True}),
    ],
    ids=["intake", "replay-copy", "breaker-probe"],
)
def test_celery_worker_accepts_and_runs_the_message(celery_task, kwargs, expected, size):
    app, deliver = celery_task
    events = [(new_id(), f"api.t{i}") for i in range(size)]
    ids = [event_id for event_id, _ in events]
    task_id = str(uuid.uuid4())
    conn, message = receive(delivery_message(events, QUEUE, task_id=task_id, **kwargs))
    try:
        assert message.headers["task"] == DELIVER_TASK
        assert message.content_type == "application/json"
        assert message.decode()[0] == [ids]

        request = Request(message, app=app, task=deliver)
        assert request.task_name == DELIVER_TASK
        assert request.id == task_id
        assert request.args == [ids]
        assert events[0][0] in request.argsrepr and events[0][1] in request.argsrepr
        assert request.delivery_info["routing_key"] == QUEUE
        assert request.eta is None and request.expires is None

        request.execute()
        assert deliver.calls == [{"event_ids": ids, "task_id": task_id, "routing_key": QUEUE, **expected}]
    finally:
        conn.release()


def test_kombu_reads_priority_zero_so_redis_uses_the_plain_queue_key():
    # The Redis transport LPUSHes onto f"{queue}" only for priority 0 (else f"{queue}\x06\x16{pri}").
    payload = json.loads(delivery_message(ONE, QUEUE))
    with Connection("memory://") as conn:
        assert conn.default_channel._get_message_priority(payload, reverse=False) == 0


# --------------------------------------------------------------------------- reading a message back (recovery)

def test_event_ids_of_a_message_intake_built():
    events = [(new_id(), TAG), (new_id(), TAG)]
    assert event_ids_of(json.loads(delivery_message(events, QUEUE))) == [e[0] for e in events]


def test_event_ids_of_a_retry_celery_published_with_a_base64_body():
    # The shape kombu's Redis transport stores for Task.retry (body_encoding base64), as seen in an AOF.
    raw = b'[[["01a2-ev"]], {"to": "http://x/"}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
    message = {"body": base64.b64encode(raw).decode(), "headers": {"task": DELIVER_TASK, "id": "t", "retries": 1},
               "properties": {"body_encoding": "base64", "delivery_tag": "t"}}
    assert event_ids_of(message) == ["01a2-ev"]


def test_event_ids_of_anything_else_is_empty():
    assert event_ids_of({"body": "[[[1]], {}, {}]", "headers": {"task": "other.task"}}) == []
    assert event_ids_of({"body": "not json", "headers": {"task": DELIVER_TASK}}) == []
    assert event_ids_of({}) == []


def test_a_redelivered_copy_is_marked_where_kombu_marks_a_restored_message():
    message = decode(delivery_message(ONE, QUEUE, task_id="t", redelivered=True))
    assert message["headers"]["redelivered"] is True
    assert message["properties"]["delivery_info"]["redelivered"] is True
    plain = decode(delivery_message(ONE, QUEUE, task_id="t"))
    assert "redelivered" not in plain["headers"] and "redelivered" not in plain["properties"]["delivery_info"]
