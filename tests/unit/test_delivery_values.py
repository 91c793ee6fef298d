"""The delivery path's values (bus/journal/values.py): events and attempts are frozen, read from and
written to the journal's own layout."""
from __future__ import annotations

import dataclasses

import orjson
import pytest

from bus.journal import Attempt, Event
from bus.journal.store import decode

# Every field a script writes into bus:event:<id> (accept, capture, record_attempt, park, hold_back,
# requeue, lane.lua), as HGETALL gives them.
HASH = {
    b"tag": b"api.orders", b"route": b"api", b"body": b'{"n":1}', b"headers": b'{"a":"b"}', b"received": b"1700000000.25",
    b"status": b"retrying", b"task": b"", b"request": b'{"method":"PUT"}', b"attempts": b"3", b"last": b"503",
    b"round": b"1", b"replayed": b"1700000100.5", b"parked": b"bus:parked:api:d1", b"lane": b":api.orders",
    b"seq": b"7",
}


def test_an_event_is_read_from_its_hash_with_every_field_typed_and_none_dropped():
    event = Event.from_journal("e1", HASH)
    assert event == Event("e1", "api.orders", "api", "retrying", b'{"n":1}', 1700000000.25, 3, 1, b'{"a":"b"}', "503",
                          "", "bus:parked:api:d1", ":api.orders", 7, 1700000100.5, b'{"method":"PUT"}')
    assert {k.decode() for k in HASH} <= {f.name for f in dataclasses.fields(Event)}, "a field the journal writes is lost"


def test_an_event_from_its_hash_is_the_event_of_the_record_the_read_side_decodes():
    for fields in (HASH, {k: v for k, v in HASH.items() if k in (b"tag", b"route", b"body", b"received", b"status")}):
        assert Event.from_journal("e1", fields) == Event.from_record(decode("e1", dict(fields)))


def test_a_record_from_before_the_task_field_names_no_task_and_any_message_may_send_it():
    fields = {k: v for k, v in HASH.items() if k != b"task"}
    assert Event.from_journal("e1", fields).task is None
    assert Event.from_journal("e1", HASH).task == ""


def test_events_and_attempts_are_frozen_and_a_change_is_a_new_value():
    event = Event.from_journal("e1", HASH)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.status = "delivered"  # type: ignore[misc]
    changed = dataclasses.replace(event, attempts=4, status="queued")
    assert (event.attempts, event.status, changed.attempts, changed.status) == (3, "retrying", 4, "queued")
    attempt = Attempt(1, 2.0, "http://x/in", 200, "ok", duration=0.01)
    with pytest.raises(dataclasses.FrozenInstanceError):
        attempt.status_code = 500  # type: ignore[misc]
    assert not hasattr(event, "__dict__") and not hasattr(attempt, "__dict__"), "slots: no dict per event"


@pytest.mark.parametrize("stored", [
    b'{"attempt":1,"at":1.5,"url":"http://x/in","status_code":200,"response":"ok","duration":0.01}',
    # bus proxy's attempts keep their own order: response_error after the response
    b'{"attempt":1,"at":1.5,"url":"http://api/p","status_code":200,"response":"par","response_error":"UpstreamError: cut",'
    b'"duration":0.2}',
    b'{"attempt":1,"at":1.5,"duration":0.1,"status_code":500}',
])
def test_an_attempt_read_from_the_journal_writes_back_the_same_bytes(stored):
    assert Attempt.from_journal(stored).to_journal() == stored


def test_a_field_set_on_an_attempt_read_from_the_journal_goes_after_its_keys_as_a_dict_would_have_it():
    stored = b'{"attempt":1,"at":1.5,"url":"http://x/in","status_code":422,"response":"no","duration":0.01}'
    dead = dataclasses.replace(Attempt.from_journal(stored), reason="HTTP 422")
    assert dead.to_journal() == orjson.dumps({**orjson.loads(stored), "reason": "HTTP 422"})
