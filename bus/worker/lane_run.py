"""A task of an ordered route sending its lanes' next events itself, instead of through the queue."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

# How many groups' worth of its lane's events a task sends before it ends. Each task start costs the
# lane ~30-130 ms on a loaded 2-core VM (the pool process waits for its next message meanwhile:
# docs/performance.md), so a run of one group (25) spent a quarter of its time there; the other lanes
# do not wait on a long run, since the task hands its group's other heads on first (delivery._spread).
LANE_RUN_GROUPS = 4


@dataclass
class LaneRun:
    """Per task: when an event of an ordered route is delivered or dead, its lane's next event may go
    at once from the same task (lua/lane.lua's `take`), saving it a trip through the queue and a task
    of its own. Only while the task has time for one more attempt and has taken fewer than `limit`
    (the rest of its group's lanes wait meanwhile). A taken event holds a lease on the retry
    schedule for `lease` seconds: should the task die first, the retry mover sends it."""

    task_id: str
    deadline: float  # time.monotonic() after which nothing is taken: the task must end before the visibility timeout
    lease: float
    limit: int
    taken: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (id, record) to send next
    count: int = 0

    def offer(self) -> tuple[str, float] | None:
        """(task id, lease's end) to take a lane's next event, or None when the task takes no more."""
        if self.count >= self.limit or time.monotonic() > self.deadline:
            return None
        return self.task_id, time.time() + self.lease

    def took(self, record: dict[str, Any] | None) -> None:
        """The record of the event record_attempt.lua took (it comes back with the answer), or None."""
        if record is not None:
            self.taken.append((record["id"], record))
            self.count += 1
