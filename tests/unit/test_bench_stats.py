"""The bench's pure helpers (no servers, no timing)."""
import pytest

from bench.report import failures
from bench.stats import percentile


def test_percentile_interpolates_between_closest_ranks():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10], 99) == 10
    assert percentile([3, 1, 2], 0) == 1 and percentile([3, 1, 2], 100) == 3


def test_percentile_of_nothing_is_none_and_out_of_range_is_refused():
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1], 101)


def test_a_lost_or_late_event_fails_the_run_but_a_missed_target_does_not():
    ok = {"scenario": "e2e", "events": {"lost": 0, "late": 0}, "pass": False, "rate": 900}
    assert failures([ok]) == []
    assert failures([{**ok, "events": {"lost": 1, "late": 0}}]) == ["e2e: 1 accepted events lost"]
    assert failures([{**ok, "events": {"lost": 0, "late": 2}}])
    assert failures([{**ok, "collapse": True}])
