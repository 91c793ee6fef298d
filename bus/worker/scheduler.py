"""The retry schedule's mover: due retries go back to their route's queue; each half-open endpoint breaker
lets one probe out; pending events with no task message coming get one.

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
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from .. import journal
from ..broker.messages import groups, new_message
from ..routes import Route
from .backoff import FIRST_DELAY

log = logging.getLogger("bus.scheduler")
# While events move, a pass every TICK. Otherwise the next pass comes when the earliest retry or
# half-open breaker is due, but never later than IDLE_TICK: the shortest retry delay a pool process
# can schedule meanwhile is FIRST_DELAY / 2 (backoff.py), so a retry scheduled just after a pass is
# still moved on time. Five passes a second were most of an idle worker's and its Redis's CPU
# (docs/performance.md, fifth round).
TICK = 0.2
IDLE_TICK = FIRST_DELAY / 2
BATCH = 500
PROBES = 50  # half-open breakers of a route that send their probe in one tick
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
        # Pending events whose task message was lost in a crash get a new one; a breaker does
        # not hold this back (the task parks them), so they show as retrying, not as queued.
        journal.refill_if_idle(client, route.name, route.group_size)
        # Events held back behind an open breaker are not on the retry schedule (breakers.py), so
        # what is due here goes whatever the route's other endpoints are doing.
        here = _release_due(client, route, now) + _probe(client, route, now)
        moved += here
        if here:
            wake_at = min(wake_at, now + TICK)
            continue
        next_due = journal.next_due(client, route.name)
        if next_due is not None:
            wake_at = min(wake_at, next_due)
    _trim(client, routes, now)
    return Pass(moved, wake_at)


_trimmed = 0.0
TRIM_EVERY = 60.0


def _trim(client: object, routes: list[Route], now: float) -> None:
    """Now and then, forget the failing endpoints whose breaker expired (each failure trims its route too)."""
    global _trimmed
    if now - _trimmed < TRIM_EVERY:
        return
    _trimmed = now
    for route in routes:
        journal.breakers.trim(client, route.name, now, journal.breakers.ttl(route.retry_max_interval))


def _release_due(client: object, route: Route, now: float) -> int:
    items = journal.due(client, route.name, now, BATCH)
    for event_id, tag, _ in items:
        if not tag:
            journal.drop_scheduled(client, route.name, event_id)
    items = [(event_id, tag, attempts + 1) for event_id, tag, attempts in items if tag]
    if not items:
        return 0
    queue = journal.queue_name(route.name)
    return journal.release(client, route.name, [new_message(group, queue) for group in groups(items, route.group_size)])


def _probe(client: object, route: Route, now: float) -> int:
    """Every endpoint of the route whose breaker's wait is over lets its longest-held event out as a
    probe, and keeps the others held until it reports; a breaker that expired lets them all go."""
    moved = 0
    life = journal.breakers.ttl(route.retry_max_interval)
    for digest in journal.breakers.due(client, route.name, now, PROBES):
        found = journal.breakers.look(client, route.name, digest, now)
        if found.what != "probe":
            continue
        message = new_message([(found.event_id, found.tag, found.attempts + 1)], journal.queue_name(route.name),
                              probe=True)
        until = now + route.open_timeout + route.read_timeout + PROBE_SLACK
        moved += journal.breakers.send_probe(client, route.name, digest, message, until, life)
    return moved


def _run(routes: list[Route]) -> None:
    from .process import worker

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
def _start(sender: Any = None, **_: object) -> None:
    from .process import worker

    consumed = set(sender.app.amqp.queues.consume_from or sender.app.amqp.queues) if sender else set()
    routes = [r for r in worker().router.routes if journal.queue_name(r.name) in consumed]
    if routes:
        threading.Thread(target=_run, args=(routes,), name="bus-retry-schedule", daemon=True).start()
        log.info("retry schedule running for routes: %s", ", ".join(r.name for r in routes))


@worker_shutdown.connect
def _shutdown(**_: object) -> None:
    _stop.set()
