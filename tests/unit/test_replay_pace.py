"""Paced replays (bus/replay_pace.py): when each event is due."""
from __future__ import annotations

import pytest

from bus.errors import BadFilter
from bus.replay_pace import offsets, parse_pace, parse_rate


def test_rate_and_pace_are_read_as_the_docs_write_them():
    assert parse_rate("200/s") == 200.0 and parse_rate("2.5") == 2.5
    assert parse_pace("original") == 1.0 and parse_pace("10x") == 10.0


@pytest.mark.parametrize("bad", ["0/s", "fast", "-3/s", ""])
def test_a_rate_that_is_not_a_positive_number_per_second_is_refused_with_an_example(bad):
    with pytest.raises(BadFilter, match="e.g. 200/s"):
        parse_rate(bad)


def test_a_pace_that_is_not_original_or_a_speed_up_is_refused():
    with pytest.raises(BadFilter, match="10x"):
        parse_pace("0x")


def test_a_rate_spaces_events_evenly():
    events = [{"received": t} for t in (100.0, 100.0, 500.0)]
    assert offsets(events, rate=4) == [0.0, 0.25, 0.5]


def test_original_pace_keeps_the_gaps_they_arrived_with_divided_by_the_speed_up():
    events = [{"received": t} for t in (100.0, 101.0, 110.0)]
    assert offsets(events, speed=1) == [0.0, 1.0, 10.0]
    assert offsets(events, speed=10) == [0.0, 0.1, 1.0]
    assert offsets(events, rate=1, speed=10) == [0.0, 1.0, 2.0]  # the rate still caps a burst
