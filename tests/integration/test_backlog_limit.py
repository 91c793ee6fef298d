"""backlog_limit: above it the ingress refuses with 503 and Retry-After; once drained it accepts again."""
from __future__ import annotations

import json

import pytest

from bus import BacklogFull, intake, journal, settings
from conftest import start_worker, wait_until


def test_full_backlog_refuses_with_503_and_accepts_again_once_drained(bus):
    client = bus.redis.client()
    accepted = []
    for i in range(3):
        resp = bus.post("capped.x", json.dumps({"n": i}))
        assert resp.status_code == 202
        accepted += resp.json()["ids"]
    refused = bus.post("capped.x", '{"n": 3}')
    assert refused.status_code == 503
    assert refused.headers["Retry-After"].isdigit()
    assert "backlog_limit is 3" in refused.json()["error"]
    # A batch that would cross the limit is refused whole, and emit() raises the same way.
    with pytest.raises(BacklogFull):
        intake.accept(intake.load(settings.load(bus.env)), "capped.y", [{}])
    assert journal.backlog(client, "capped") == 3, "nothing of the refused requests was accepted"

    worker = start_worker(bus.env, bus.tmp / "capped-worker.log", "capped")
    try:
        wait_until(lambda: journal.backlog(client, "capped") == 0, 20, what="the backlog to drain")
        assert sorted(bus.receiver.ids("/capped/x")) == sorted(accepted), "everything accepted was delivered"
        again = bus.post("capped.x", json.dumps([{"n": 4}, {"n": 5}]))
        assert again.status_code == 202
        wait_until(lambda: len(bus.receiver.ids("/capped/x")) == 5, 20, what="new events after the drain")
    finally:
        worker.stop()
