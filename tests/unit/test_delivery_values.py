"""The delivery path's values (bus/journal/values.py, bus/worker/group_run.py): events and attempts are
frozen, read from and written to the journal's own layout, and an attempt journals the bytes it always did."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import orjson
import pytest

from bus import archive, captured, logs, settings
from bus.journal import Attempt, Event
from bus.journal.store import decode
from bus.routes import VISIBILITY_MARGIN, Router, parse_route
from bus.worker import delivery, outbound
from bus.worker.breaker_gate import Breakers
from bus.worker.deadline import Deadline
from bus.worker.group_run import GroupRun, group_deadline
from bus.worker.process import Worker
from serverkit import ScriptedServer

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


def test_a_record_dict_without_its_route_or_received_time_is_refused_at_a_moves_door_not_indexed_at_zero():
    record = {"id": "e1", "route": "api", "received": 5.0}
    assert Event.from_record(record) == Event("e1", "", "api", "", b"", 5.0)
    for missing in ("route", "received"):
        with pytest.raises(KeyError, match=missing):
            Event.from_record({k: v for k, v in record.items() if k != missing})


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
    assert Attempt.from_record(orjson.loads(stored)).to_journal() == stored


def test_a_field_set_on_an_attempt_read_from_the_journal_goes_after_its_keys_as_a_dict_would_have_it():
    stored = b'{"attempt":1,"at":1.5,"url":"http://x/in","status_code":422,"response":"no","duration":0.01}'
    dead = dataclasses.replace(Attempt.from_record(orjson.loads(stored)), reason="HTTP 422")
    assert dead.to_journal() == orjson.dumps({**orjson.loads(stored), "reason": "HTTP 422"})


def http(status: str, *headers: str, body: bytes = b"") -> bytes:
    head = "".join(f"{h}\r\n" for h in (f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers))
    return head.encode() + b"\r\n" + body


EVENT = Event("e1", "a.b", "r", "queued", b'{"n":1}', 1.0)


def sent(answer: bytes | None, attempt: int = 1) -> tuple[Attempt, str]:
    server = ScriptedServer(answer)
    r = parse_route("r", "r.toml", {"match": "a.*", "endpoint": f"http://127.0.0.1:{server.port}/in?token=s3cret",
                                    "open_timeout": 1, "read_timeout": 2}, 60)
    try:
        record, _ = delivery.send(outbound.Pools(), r, r.endpoint.render("a.b"), EVENT, attempt)
    finally:
        server.close()
    assert b"s3cret" not in record.to_journal(), "a token in the URL's query stays out of the journal"
    return record, logs.redact(f"http://127.0.0.1:{server.port}/in?token=s3cret")


# What the old code stored for each kind, its dict's keys in the order it built them (the attempt's
# own time and duration put in): the bytes in the journal and `bus events ID` do not change.
def test_a_delivered_attempt_journals_the_bytes_it_did_before():
    record, url = sent(http("200 OK", body=b"fine"))
    assert record.to_journal() == orjson.dumps({"attempt": 1, "at": record.at, "url": url, "status_code": 200,
                                                "response": "fine", "duration": record.duration})


def test_a_retried_attempt_journals_the_bytes_it_did_before():
    record, url = sent(http("503 Busy", "Retry-After: 3", "Location: /elsewhere", body=b"busy"), attempt=2)
    assert record.to_journal() == orjson.dumps({"attempt": 2, "at": record.at, "url": url, "status_code": 503,
                                                "response": "busy", "location": "/elsewhere",
                                                "duration": record.duration})
    refused, url = sent(None, attempt=3)  # the endpoint closed the connection: no answer
    assert refused.to_journal() == orjson.dumps({"attempt": 3, "at": refused.at, "url": url, "status_code": None,
                                                 "error": refused.error, "duration": refused.duration})
    assert refused.error and refused.status_code is None


def test_a_dead_attempt_journals_the_bytes_it_did_before():
    record, url = sent(http("422 Unprocessable", body=b"no"))
    dead = dataclasses.replace(record, reason="HTTP 422 is not retryable")  # as delivery._journal_verdict adds it
    assert dead.to_journal() == orjson.dumps({"attempt": 1, "at": record.at, "url": url, "status_code": 422,
                                              "response": "no", "duration": record.duration,
                                              "reason": "HTTP 422 is not retryable"})
    unsent = Attempt(4, 9.5, duration=0.0, error="route 'gone' no longer exists")  # as delivery._dead_unsent makes it
    assert dataclasses.replace(unsent, reason=unsent.error).to_journal() == orjson.dumps(
        {"attempt": 4, "at": 9.5, "duration": 0.0, "status_code": None, "error": "route 'gone' no longer exists",
         "reason": "route 'gone' no longer exists"})


def test_a_batched_attempt_and_a_copy_journal_the_bytes_they_did_before():
    record, url = sent(http("200 OK", body=b"[]"), attempt=2)
    batched = dataclasses.replace(record, attempt=5, request_id="req-1", batch=3)  # as delivery._deliver_batch does
    assert batched.to_journal() == orjson.dumps({"attempt": 5, "at": record.at, "url": url, "status_code": 200,
                                                 "response": "[]", "duration": record.duration,
                                                 "request_id": "req-1", "batch": 3})
    copy = dataclasses.replace(record, verdict="delivered")  # delivery._send_copy's record
    assert copy.to_journal() == orjson.dumps({"attempt": 2, "at": record.at, "url": url, "status_code": 200,
                                              "response": "[]", "duration": record.duration, "verdict": "delivered"})


def test_a_group_run_is_one_frozen_value_with_its_deadline_an_object_like_an_attempts():
    config = settings.load({})
    r = parse_route("r", "r.toml", {"match": "a.*", "endpoint": "http://svc.example/in", "open_timeout": 2,
                                    "read_timeout": 8, "ordered": True}, 60)
    w = Worker(settings=config, router=Router([r]), redis=None, pipe=None, pools=outbound.Pools())  # type: ignore[arg-type]
    deadline = group_deadline(w, r)
    assert isinstance(deadline, Deadline) and not deadline.passed()
    assert deadline.seconds == config.visibility_timeout - VISIBILITY_MARGIN - 10
    task = SimpleNamespace(request=SimpleNamespace(id="t1", retries=0, delivery_info={"redelivered": True}))
    run = GroupRun.begin(task, w, "r", deadline, Breakers(None), None, False)  # type: ignore[arg-type]
    assert (run.route, run.task_id, run.redelivered, run.lanes and run.lanes.deadline) == (r, "t1", True, deadline)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.probe = True  # type: ignore[misc]
    copies = GroupRun.begin(task, w, "r", deadline, Breakers(None), "http://staging.example", False)  # type: ignore[arg-type]
    assert copies.lanes is None, "a copy (replay --to) never runs a lane"


def test_a_copy_of_an_archived_proxy_capture_goes_with_its_own_method_path_and_query():
    request = captured.Request("PATCH", "/orders/7", "a=1", (("X-Custom", "kept"),))
    row = archive.ArchivedEvent("e1", "proxied.api", "r", "delivered", 1.0, 1, "201", 0, None, b'{"a":1}', b"{}",
                                b"[]", b"[]", request.to_json())
    server = ScriptedServer(http("200 OK"))
    r = parse_route("r", "r.toml", {"match": "proxied.*", "endpoint": "http://127.0.0.1:1"}, 60)
    try:
        record, _ = delivery.send(outbound.Pools(), r.for_copies(), f"http://127.0.0.1:{server.port}",
                                  delivery.from_row(row), 1, {"X-Bus-Replay": "copy"})
    finally:
        server.close()
    assert record.status_code == 200
    ((_, head),) = server.requests
    assert head.startswith(b"PATCH /orders/7?a=1 HTTP/1.1\r\n") and b"X-Custom: kept" in head
