"""One run of the deliver task over its group of events: what every step of it needs, as one value."""
from __future__ import annotations

from dataclasses import dataclass

from celery import Task

from ..routes import VISIBILITY_MARGIN, Route
from .breaker_gate import Breakers
from .deadline import Deadline
from .lane_run import LANE_RUN_GROUPS, LaneRun
from .process import Worker


@dataclass(frozen=True, slots=True)
class GroupRun:
    """Built once at the top of deliver(), then handed to each step instead of their loose values.
    Frozen: what changes during the run lives in the objects it holds (the breakers it learns of, the
    lane's events it takes), each with its own job."""

    task: Task  # Celery's: its request's retries number a copy's attempts; it retries copies
    worker: Worker
    route_name: str  # the route of the task's queue, and so of its events
    route: Route | None  # None: no such route any more (its file was removed)
    gate: Breakers  # the route's open breakers, as this task knows them
    deadline: Deadline  # no attempt starts after it: the task ends before the visibility timeout
    task_id: str
    redelivered: bool  # kombu restored the message, or recovery made it: check each event before sending
    to: str | None = None  # send copies there (bus replay --to), the events' state untouched
    probe: bool = False  # the one event a half-open breaker lets through
    lanes: LaneRun | None = None  # an ordered route's task sending its lanes' next events itself

    @classmethod
    def begin(cls, task: Task, worker: Worker, route_name: str, deadline: Deadline, gate: Breakers,
              to: str | None, probe: bool) -> GroupRun:
        route = worker.router.by_name.get(route_name)
        task_id = task.request.id or ""
        redelivered = bool((task.request.delivery_info or {}).get("redelivered"))
        lanes = _lane_run(task_id, route, deadline) if to is None else None
        return cls(task, worker, route_name, route, gate, deadline, task_id, redelivered, to, probe, lanes)


def group_deadline(worker: Worker, route: Route | None) -> Deadline:
    """When a task must stop starting attempts: its last one must end before the visibility
    timeout, or kombu hands the task to a second worker while this one still runs it."""
    attempt = (route.open_timeout + route.read_timeout) if route else 0.0
    return Deadline.after(worker.settings.visibility_timeout - VISIBILITY_MARGIN - attempt)


def _lane_run(task_id: str, route: Route | None, deadline: Deadline) -> LaneRun | None:
    """An ordered route's task (one event per request) sends its lanes' next events itself (LaneRun), up
    to LANE_RUN_GROUPS groups' worth, each on a lease of one attempt's longest time."""
    if route is None or not route.ordered or route.batch_max > 1:
        return None
    return LaneRun(task_id, deadline, route.open_timeout + route.read_timeout + VISIBILITY_MARGIN,
                   route.group_size * LANE_RUN_GROUPS)
