"""Idempotency-Key on POST /<tag> and the forward chunk id: a producer that retries after a timeout or a 503
makes no duplicate, and a key reused for other records is refused."""
from __future__ import annotations

import uuid

import requests

from bus import journal
from conftest import journaled, parked_tag, wait_until
from forwardkit import Client


def post(bus, tag: str, body: str, key: str, **headers: str) -> requests.Response:
    return requests.post(f"{bus.url}/{tag}", data=body, timeout=10,
                         headers={"Content-Type": "application/json", "Idempotency-Key": key, **headers})


def test_a_repeated_key_answers_the_first_ids_and_enqueues_nothing_new(bus, parked_len):
    tag, key = parked_tag(), str(uuid.uuid4())
    first = post(bus, tag, '[{"n": 1}, {"n": 2}]', key)
    assert first.status_code == 202, first.text
    again = post(bus, tag, '[{"n":1},{"n":2}]', key)  # the same records, spelt differently
    assert again.status_code == 202 and again.json()["ids"] == first.json()["ids"]
    assert parked_len() == 2 and len(journaled(bus, tag)) == 2


def test_the_same_key_with_other_records_is_refused_with_409_naming_the_key(bus, parked_len):
    tag, key = parked_tag(), f"order-{uuid.uuid4().hex[:8]}"
    assert post(bus, tag, '{"n": 1}', key).status_code == 202
    other = post(bus, tag, '{"n": 2}', key)
    assert other.status_code == 409 and key in other.json()["error"], other.text
    assert parked_len() == 1


def test_a_key_is_scoped_to_its_tag(bus, parked_len):
    key = str(uuid.uuid4())
    a, b = post(bus, parked_tag(), "{}", key), post(bus, parked_tag(), "{}", key)
    assert a.status_code == b.status_code == 202 and a.json()["ids"] != b.json()["ids"]
    assert parked_len() == 2


def test_a_key_that_is_not_visible_ascii_is_refused_with_400(bus, parked_len):
    for key in ("has space", "x" * 256):
        resp = post(bus, parked_tag(), "{}", key)
        assert resp.status_code == 400 and "Idempotency-Key" in resp.json()["error"], resp.text
    assert parked_len() == 0


def test_a_repeat_on_the_werkzeug_path_of_a_backlog_limited_route_answers_the_first_ids(bus):
    client = bus.redis.client()
    assert journal.backlog(client, "capped") == 0, "test_backlog_limit leaves the capped route drained"
    tag, key = f"capped.i{uuid.uuid4().hex[:6]}", str(uuid.uuid4())
    first = post(bus, tag, "{}", key)
    try:
        assert first.status_code == 202, first.text
        assert post(bus, tag, "{}", key).json()["ids"] == first.json()["ids"]
        assert post(bus, tag, '{"x": 1}', key).status_code == 409
        assert journal.backlog(client, "capped") == 1
    finally:
        # The capped route has no worker and a backlog_limit of 3: leave it as we found it.
        journal.purge(client, [{"id": i, "route": "capped"} for i in first.json().get("ids", [])])


def test_a_forward_chunk_sent_again_after_a_lost_ack_is_accepted_once(bus):
    tag, chunk = parked_tag(), uuid.uuid4().hex
    frame = [tag, [[1, {"n": 1}], [2, {"n": 2}]], {"chunk": chunk}]
    for _ in range(2):
        with Client(bus.forward_port) as client:
            client.send(frame)
            assert client.read() == {"ack": chunk}
    assert len(journaled(bus, tag)) == 2


def test_a_repeated_key_delivers_once(bus):
    name, key = uuid.uuid4().hex[:8], str(uuid.uuid4())
    answers = {tuple(post(bus, f"api.{name}", '{"pay": 1}', key).json()["ids"]) for _ in range(3)}
    assert len(answers) == 1
    (event_id,) = answers.pop()
    wait_until(lambda: journal.load(bus.redis.client(), event_id)["status"] == journal.DELIVERED, 15, what="delivery")
    assert bus.receiver.ids(f"/api/{name}/") == [event_id]
