"""Task messages: the event a message delivers, as recovery reads it back from Redis (pure)."""
from __future__ import annotations

import base64

import orjson

from bus.messages import DELIVER_TASK, delivery_message, event_id_of


def test_event_id_of_a_message_intake_built():
    message = orjson.loads(delivery_message("01a2-ev", "api.orders", "bus.api"))
    assert event_id_of(message) == "01a2-ev"


def test_event_id_of_a_retry_celery_published_with_a_base64_body():
    # The shape kombu's Redis transport stores for Task.retry (body_encoding base64), as seen in an AOF.
    body = base64.b64encode(b'[["01a2-ev"], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]')
    message = {"body": body.decode(), "headers": {"task": DELIVER_TASK, "id": "01a2-ev", "retries": 1},
               "properties": {"body_encoding": "base64", "delivery_tag": "t"}}
    assert event_id_of(message) == "01a2-ev"


def test_event_id_of_anything_else_is_none():
    assert event_id_of({"body": "[[1], {}, {}]", "headers": {"task": "other.task"}}) is None
    assert event_id_of({"body": "not json", "headers": {"task": DELIVER_TASK}}) is None
    assert event_id_of({}) is None
