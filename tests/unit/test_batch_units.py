"""How a task's events are cut into requests: singles, or same-tag runs of at most batch_max (pure)."""
from __future__ import annotations

from bus.journal import Event
from bus.routes import parse_route
from bus.worker.delivery import _units


def route(batch_max: int):
    return parse_route("r", "r.toml", {"match": "a.*", "endpoint": "http://svc.example/${tag[1]}",
                                       "batch_max": batch_max}, 60)


def event(tag: str, status: str = "queued") -> Event:
    return Event("e", tag, "r", status, b"{}", 0.0)


EVENTS = [event("a.x"), event("a.x"), event("a.x"), event("a.y"), None, event("a.y", "delivered"), event("a.y")]


def test_runs_of_one_tag_up_to_batch_max_and_never_across_what_is_not_to_be_sent():
    assert _units(route(2), EVENTS, None) == [
        ([0, 1], True), ([2], True), ([3], True),  # a new tag starts a new batch
        ([4], False), ([5], False),  # gone from the journal, already delivered: handled one by one
        ([6], True),  # a batch of one is still sent as an array
    ]


def test_without_batch_max_or_for_replay_copies_every_event_goes_on_its_own():
    singles = [([i], False) for i in range(len(EVENTS))]
    assert _units(route(1), EVENTS, None) == singles
    assert _units(route(4), EVENTS, "http://staging.example/in") == singles
