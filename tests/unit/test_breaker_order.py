"""Breakers.journaled: the order of a request's record and its breaker's count. No Redis: the count is faked."""
from __future__ import annotations

import pytest

from bus import endpoints, journal
from bus.journal import Attempt
from bus.worker.breaker_gate import Breakers
from routekit import MINIMAL, load, write


@pytest.fixture
def gate(tmp_path, monkeypatch):
    write(tmp_path, "api.toml", MINIMAL)
    (route,) = load(tmp_path).routes
    steps: list[str] = []
    monkeypatch.setattr(journal.breakers, "failed", lambda *a, **k: steps.append("counted") or 9e9)
    return route, Breakers(client=None), steps  # type: ignore[arg-type]


REFUSED = Attempt(1, 2.0, "http://svc.example/in", None, error="ConnectionRefusedError", phase="connect")


def test_a_failed_probe_is_counted_before_its_record_which_is_given_the_breaker_it_reopened(gate):
    route, breakers, steps = gate
    key = endpoints.key_for(route.name, "http://svc.example/in")
    got = breakers.journaled(route, key, REFUSED, True, lambda behind: steps.append(f"journaled {behind}") or "v")
    assert got == "v"
    assert steps == ["counted", f"journaled {key.origin}"], "a connect failure reopens the origin's breaker"


@pytest.mark.parametrize("probe, record, steps_then", [
    (False, REFUSED, ["counted"]),  # counted after its record
    (True, Attempt(1, 2.0, "http://svc.example/in", 200), []),  # an answer: the record closed the breakers
])
def test_any_other_request_is_journaled_first_and_parks_behind_nothing(gate, probe, record, steps_then):
    route, breakers, steps = gate
    key = endpoints.key_for(route.name, "http://svc.example/in")
    breakers.journaled(route, key, record, probe, lambda behind: steps.append(f"journaled {behind}"))
    assert steps == ["journaled None", *steps_then]
