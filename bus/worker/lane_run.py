"""A task of an ordered route sending its lanes' next events itself, instead of through the queue."""
from __future__ import annotations

import time
from dataclasses import dataclass, field


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
    taken: list[str] = field(default_factory=list)
    count: int = 0

    def offer(self) -> tuple[str, float] | None:
        """(task id, lease's end) to take a lane's next event, or None when the task takes no more."""
        if self.count >= self.limit or time.monotonic() > self.deadline:
            return None
        return self.task_id, time.time() + self.lease

    def took(self, event_id: str | None) -> None:
        if event_id:
            self.taken.append(event_id)
            self.count += 1
