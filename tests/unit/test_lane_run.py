"""A task of an ordered route takes its lanes' next events only while it has time and room (bus/worker/lane_run.py)."""
from __future__ import annotations

import time

from bus.journal import Event
from bus.worker.deadline import Deadline
from bus.worker.lane_run import LaneRun


def test_a_task_takes_next_events_on_a_lease_until_its_limit():
    lanes = LaneRun("task-1", Deadline.after(60), lease=15.0, limit=2)
    task, until = lanes.offer()
    assert task == "task-1" and time.time() + 14 < until <= time.time() + 15
    a, b = Event("a", "t.a", "r", "queued", b"{}", 0.0), Event("b", "t.a", "r", "queued", b"{}", 0.0)
    lanes.took(a)
    lanes.took(None)  # the lane had nothing more: nothing taken, nothing counted
    lanes.took(b)
    assert lanes.taken == [("a", a), ("b", b)] and lanes.offer() is None


def test_a_task_past_its_deadline_takes_nothing_so_it_ends_before_the_visibility_timeout():
    assert LaneRun("task-1", Deadline.after(-1), lease=15.0, limit=25).offer() is None
