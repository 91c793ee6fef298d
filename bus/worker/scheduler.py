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
from dataclasses import dataclass
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from .. import journal
from ..broker.messages import groups, new_message
from ..journal import mover_sleep
from ..routes import Route
from .leases import worker_name

log = logging.getLogger("bus.scheduler")
# While events move, a pass every TICK. A pass that moves nothing sleeps (journal/mover_sleep.py) until
# the earliest retry, half-open breaker or refill of its routes is due, at most WAIT_CAP, blocked on the
# routes' wake lists: every script that puts something on the schedule sooner than that pushes to them
# (lifecycle.WAKES_MOVER), so nothing is moved later for the sleep. Polling twice a second instead was
# most of an idle worker's and its Redis's CPU (docs/performance.md, issue 22).
TICK = 0.2
WAIT_CAP = 10.0
BATCH = 500
PROBES = 50  # half-open breakers of a route that send their probe in one tick
PROBE_SLACK = 5.0
# A route's mover holds its lease this long past its last pass (past its sleep's end, when it sleeps):
# how soon another worker's mover takes over from a dead one, and how often one that holds none looks.
MOVER_LEASE_MS = 2000

_stop = threading.Event()
_moving: list[str] = []  # the routes this process's mover looks after


# Wake-ups of one sleep that only re-plan it (_sleep_through) before the mover passes anyway.
REPLANS = 20


@dataclass(frozen=True)
class Pass:
    moved: int  # events moved to their queues
    wake_at: float  # when the next pass is wanted at the latest
    held: tuple[str, ...] = ()  # the routes this mover moved (it held their lease)
    busy: bool = False  # more may be due than the pass moved: the next one comes a TICK later, no sleep planned


def tick(client: object, routes: list[Route], now: float | None = None, mover: str = "") -> int:
    """One pass over the routes; returns how many events were moved to their queues."""
    return one_pass(client, routes, now, mover).moved


def one_pass(client: object, routes: list[Route], now: float | None = None, mover: str = "") -> Pass:
    """One pass over the routes: what it moved, when the next one is due at the latest, which routes it held."""
    moved = 0
    now = time.time() if now is None else now
    wake_at = now + WAIT_CAP
    held = []
    busy = False
    for route in routes:
        held_by_another = journal.claim_mover(client, route.name, mover or worker_name(), MOVER_LEASE_MS)
        if held_by_another is not None:
            # Another worker's mover: looked at again when that worker's own lease would lapse if it died.
            wake_at = min(wake_at, now + min(held_by_another + 0.05, MOVER_LEASE_MS / 1000))
            continue
        held.append(route.name)
        # Pending events whose task message was lost in a crash get a new one; a breaker does
        # not hold this back (the task parks them), so they show as retrying, not as queued.
        journal.refill_if_idle(client, route.name, route.group_size)
        # Events held back behind an open breaker are not on the retry schedule (breakers.py), so
        # what is due here goes whatever the route's other endpoints are doing.
        released, probes = _release_due(client, route, now), _probe(client, route, now)
        moved += released + probes
        # Released events are passed over again a TICK later (a backlog drains BATCH a pass). A probe is not:
        # the mover sleeps until its deadline, and its report wakes it for a breaker it reopened (breaker_fail.lua).
        if released or probes >= PROBES:
            wake_at, busy = min(wake_at, now + TICK), True
    _trim(client, routes, now)
    return Pass(moved, wake_at, tuple(held), busy)


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

    w = worker()  # built once per process: one look, not a lock taken twice every pass
    client, config = w.redis, w.settings
    # Its own connection for the blocking wait, with a socket timeout past the longest one.
    waiter = journal.connect(config.worker_redis, WAIT_CAP + config.redis_timeout)
    while not _stop.is_set():
        try:
            done = one_pass(client, routes)
            if done.busy or not done.held:
                # A wait of at least a millisecond: a retry due right now is moved on the next pass, not in a spin.
                _stop.wait(max(done.wake_at - time.time(), mover_sleep.SHORTEST))
                continue
            _sleep_through(client, waiter, list(done.held), done.wake_at)
        except journal.REDIS_DOWN as exc:
            log.warning("retry schedule paused: Redis unreachable (%s)", exc)
            _stop.wait(1.0)
        except Exception:
            log.exception("retry schedule tick failed; trying again")
            _stop.wait(1.0)


def _sleep_through(client: Any, waiter: Any, routes: list[str], latest: float) -> None:
    """Sleep until the earliest thing of `routes` is due (at the latest `latest`). A wake-up for something
    due later than now only plans the sleep again: the plan (lua/sleep.lua) reads everything a pass would
    find due, so a pass there would find nothing, for five round trips. Behind a down endpoint that is a
    breaker its probe reopened for 1.25-2.5 s while the mover slept until the probe's deadline (issue 22)."""
    for _ in range(REPLANS):
        planned = mover_sleep.plan(client, routes, worker_name(), time.time(), latest, MOVER_LEASE_MS, TICK)
        if not mover_sleep.sleep(waiter, planned) or _stop.is_set():
            return


@worker_ready.connect
def _start(sender: Any = None, **_: object) -> None:
    from .process import worker

    consumed = set(sender.app.amqp.queues.consume_from or sender.app.amqp.queues) if sender else set()
    routes = [r for r in worker().router.routes if journal.queue_name(r.name) in consumed]
    if routes:
        _moving[:] = [r.name for r in routes]
        threading.Thread(target=_run, args=(routes,), name="bus-retry-schedule", daemon=True).start()
        log.info("retry schedule running for routes: %s", ", ".join(r.name for r in routes))


@worker_shutdown.connect
def _shutdown(**_: object) -> None:
    _stop.set()
    if _moving:
        from .process import worker

        try:  # a restarted worker's mover then takes the routes at once, not when the lease would lapse
            mover_sleep.let_go(worker().redis, _moving, worker_name())
        except journal.REDIS_DOWN:
            pass  # the leases lapse by themselves
