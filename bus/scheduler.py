"""The retry schedule's mover: due retries go back to their route's queue; a half-open breaker lets one probe out;
pending events with no task message coming get one.

It runs as a thread in every worker's main process (started on Celery's
worker_ready signal) for the routes that worker consumes. Several workers may
move the same route: journal.release moves an id only once.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass

from celery.signals import worker_ready, worker_shutdown

from . import journal
from .backoff import FIRST_DELAY
from .messages import groups, new_message
from .routes import Route

log = logging.getLogger("bus.scheduler")
# While events move, a pass every TICK. Otherwise the next pass comes when the earliest retry or
# half-open breaker is due, but never later than IDLE_TICK: the shortest retry delay a pool process
# can schedule meanwhile is FIRST_DELAY / 2 (backoff.py), so a retry scheduled just after a pass is
# still moved on time. Five passes a second of six round trips each were most of an idle worker's
# and its Redis's CPU; an idle pass is now two a second of three (docs/performance.md, fifth round).
TICK = 0.2
IDLE_TICK = FIRST_DELAY / 2
BATCH = 500
PROBE_SLACK = 5.0
MOVER_LEASE_MS = 2000
_MOVER = str(uuid.uuid4())

_stop = threading.Event()


@dataclass(frozen=True)
class Pass:
    moved: int  # events moved to their queues
    wake_at: float  # when the next pass is wanted


def tick(client: object, routes: list[Route], now: float | None = None, mover: str = "") -> int:
    """One pass over the routes; returns how many events were moved to their queues."""
    return one_pass(client, routes, now, mover).moved


def one_pass(client: object, routes: list[Route], now: float | None = None, mover: str = "") -> Pass:
    """One pass over the routes: what it moved, and when the next one is due."""
    moved = 0
    now = time.time() if now is None else now
    wake_at = now + IDLE_TICK
    for route in routes:
        if not journal.claim_mover(client, route.name, mover or _MOVER, MOVER_LEASE_MS):
            continue
        # Pending events whose task message was lost in a crash get a new one; the breaker does
        # not hold this back (the task parks them), so they show as retrying, not as queued.
        journal.refill_if_idle(client, route.name, route.group_size)
        breaker, next_due = journal.breaker_and_next_due(client, route.name)
        open_until = breaker.get("open_until", 0.0)
        if open_until > now:
            wake_at = min(wake_at, open_until)
            continue
        if next_due is None:
            continue
        if next_due > now:
            wake_at = min(wake_at, next_due)
            continue
        probe = open_until > 0  # the breaker's wait is over: one event tests the endpoint
        items = journal.due(client, route.name, now, 1 if probe else BATCH)
        if not items:
            continue
        wake_at = min(wake_at, now + TICK)
        if probe:
            journal.hold_breaker(client, route.name, now + route.open_timeout + route.read_timeout + PROBE_SLACK)
        for event_id, tag, _ in items:
            if not tag:
                journal.drop_scheduled(client, route.name, event_id)
        items = [(event_id, tag, attempts + 1) for event_id, tag, attempts in items if tag]
        queue = journal.queue_name(route.name)
        messages = [new_message(group, queue, probe=probe) for group in groups(items, route.group_size)]
        moved += journal.release(client, route.name, messages)
    return Pass(moved, wake_at)


def _run(routes: list[Route]) -> None:
    from .delivery import worker

    while not _stop.is_set():
        try:
            done = one_pass(worker().redis, routes)
        except journal.REDIS_DOWN as exc:
            log.warning("retry schedule paused: Redis unreachable (%s)", exc)
            _stop.wait(1.0)
            continue
        except Exception:
            log.exception("retry schedule tick failed; trying again")
            _stop.wait(1.0)
            continue
        # A wait of at least a millisecond: a retry due right now is moved on the next pass, not in a spin.
        _stop.wait(min(max(done.wake_at - time.time(), 0.001), IDLE_TICK))


@worker_ready.connect
def _start(sender: object = None, **_: object) -> None:
    from .delivery import worker

    consumed = set(sender.app.amqp.queues.consume_from or sender.app.amqp.queues) if sender else set()
    routes = [r for r in worker().router.routes if journal.queue_name(r.name) in consumed]
    if routes:
        threading.Thread(target=_run, args=(routes,), name="bus-retry-schedule", daemon=True).start()
        log.info("retry schedule running for routes: %s", ", ".join(r.name for r in routes))


@worker_shutdown.connect
def _shutdown(**_: object) -> None:
    _stop.set()
