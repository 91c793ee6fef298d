"""A listener's bookkeeping: connections counted per client and given back, refusals logged sparingly."""
from __future__ import annotations

import logging

from bus.ingress.client_limits import REFUSAL_LOG_EVERY, ClientCounter


def test_a_client_at_the_cap_is_refused_until_one_of_its_connections_ends():
    counter = ClientCounter(2)
    assert counter.admit("10.0.0.1", "10.0.0.1:1") and counter.admit("10.0.0.1", "10.0.0.1:2")
    assert not counter.admit("10.0.0.1", "10.0.0.1:3")
    assert counter.admit("10.0.0.2", "10.0.0.2:1"), "another address has its own count"
    counter.release("10.0.0.1")
    assert counter.admit("10.0.0.1", "10.0.0.1:4")
    for _ in range(2):
        counter.release("10.0.0.1")
    counter.release("10.0.0.2")
    assert counter.open("10.0.0.1") == counter.open("10.0.0.2") == 0
    # Many connections opened and closed leave nothing behind.
    for _ in range(1000):
        assert counter.admit("10.0.0.1", "10.0.0.1:5")
        counter.release("10.0.0.1")
    assert counter._clients == {}


def test_a_flood_of_refusals_writes_one_line_per_interval_and_the_rest_is_counted(caplog):
    now = [100.0]
    counter = ClientCounter(1, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, "bus.ingress")
    assert counter.admit("10.0.0.1", "10.0.0.1:1")
    for _ in range(50):
        assert not counter.admit("10.0.0.1", "10.0.0.1:2")
    assert len(caplog.records) == 1 and "refusing 10.0.0.1:2" in caplog.records[0].getMessage()
    now[0] += REFUSAL_LOG_EVERY
    assert not counter.admit("10.0.0.1", "10.0.0.1:3")
    assert "50 refusals since the last line" in caplog.records[1].getMessage()
    assert not counter.admit("10.0.0.1", "10.0.0.1:4")
    counter.release("10.0.0.1")
    assert "1 more connection(s) refused" in caplog.records[2].getMessage()
    assert len(caplog.records) == 3
