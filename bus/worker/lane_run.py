"""A task of an ordered route sending its lanes' next events itself, instead of through the queue."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..journal import Event
from .deadline import Deadline

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
    deadline: Deadline  # the task's group's: after it nothing is taken, the task must end before the visibility timeout
    lease: float
    limit: int
    taken: list[tuple[str, Event]] = field(default_factory=list)  # (id, event) to send next
    count: int = 0

    def offer(self) -> tuple[str, float] | None:
        """(task id, lease's end) to take a lane's next event, or None when the task takes no more."""
        if self.count >= self.limit or self.deadline.passed():
            return None
        return self.task_id, time.time() + self.lease

    def took(self, event: Event | None) -> None:
        """The event record_attempt.lua took (its record comes back with the answer), or None."""
        if event is not None:
            self.taken.append((event.id, event))
            self.count += 1
