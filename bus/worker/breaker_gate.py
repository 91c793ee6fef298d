"""A delivery task's view of its route's endpoint breakers: send, or hold the event back behind one.

Two breakers stand before an endpoint: its origin's, counting failures to connect (refused,
connect timeout, no such host, TLS or proxy refusal: the host itself is not answering, whatever
the path), and its own, counting every other failure (a retryable status, a read timeout). An
event waits behind the origin's while that is open, else behind its endpoint's (endpoints.py)."""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import redis

from .. import endpoints, journal
from ..endpoints import EndpointKey
from ..errors import NoRoute
from ..journal import Attempt, Event
from ..routes import Route
from . import backoff
from .verdict import Verdict, from_journal

log = logging.getLogger("bus.delivery")
T = TypeVar("T")


def endpoint_failed(record: Attempt, route: Route) -> bool:
    """No answer, or an answer that says the endpoint cannot take anything right now."""
    code = record.status_code
    return code is None or code in route.retryable_statuses


def origin_failed(record: Attempt) -> bool:
    """The attempt found no connection to the origin (delivery._attempt marks it)."""
    return record.phase == "connect"


@dataclass
class Breakers:
    """The route's open breakers as one task knows them: read with its events (journal.load_many),
    then kept up to date by the task's own attempts, so a failure that opens an endpoint's breaker
    holds back the rest of that endpoint's events in the group, and only those."""

    client: redis.Redis
    open_until: dict[str, float] = field(default_factory=dict)  # endpoint digest -> until when
    complete: bool = True  # False: the route had more open breakers than were read; ask for the others
    settled: dict[str, Verdict] = field(default_factory=dict)  # event id -> its verdict, held back by hold_ahead

    def until(self, key: EndpointKey) -> float:
        """Until when the endpoint's events wait: the later of its origin's breaker and its own (0: not open)."""
        return max(self._until(key.origin), self._until(key))

    def _until(self, key: EndpointKey) -> float:
        if key.digest not in self.open_until and not self.complete:
            found = journal.breakers.open_until(self.client, key.route, [key.digest])
            self.open_until[key.digest] = found.get(key.digest, 0.0)
        return self.open_until.get(key.digest, 0.0)

    def after_attempt(self, route: Route, key: EndpointKey, record: Attempt, probe: bool) -> EndpointKey | None:
        """Count a failed request with its origin's breaker (no connection) or its endpoint's (any other
        failure); an answer closed them when it was journaled (the origin's on any status). Returns the
        breaker the failure left open (None: none): a failed probe's record parks it there (journaled)."""
        if record.status_code is not None:
            self.open_until.pop(key.origin.digest, None)
        if not endpoint_failed(record, route):
            self.open_until.pop(key.digest, None)
            return None
        counted = key.origin if origin_failed(record) else key
        opened = journal.breakers.failed(
            self.client, counted, time.time(), backoff.BREAKER_THRESHOLD,
            min(route.retry_max_interval, backoff.BREAKER_MAX_INTERVAL), random.random(), probe,
            journal.breakers.ttl(route.retry_max_interval))
        if opened is None:
            return None
        self.open_until[counted.digest] = opened
        return counted

    def journaled(self, route: Route, key: EndpointKey, record: Attempt, probe: bool,
                  journal_it: Callable[[EndpointKey | None], T]) -> T:
        """Journal the request's events (`journal_it`, given the breaker a retry parks behind) and count
        the request with its breakers (after_attempt), once per request; what `journal_it` returned.
        A failed probe's failure is counted first, so that its record can park the probe behind the
        breaker that failure reopened (journal.record_attempt's `behind`). On the retry schedule instead,
        the probe would come back as a task that only finds the breaker open and parks it: a whole task
        per probe (issue 22). Any other request is counted after its events are journaled."""
        if probe and endpoint_failed(record, route):
            return journal_it(self.after_attempt(route, key, record, probe))
        journaled = journal_it(None)
        self.after_attempt(route, key, record, probe)
        return journaled

    def held_back(self, event: Event, key: EndpointKey, probe: bool, task: str = "") -> Verdict | None:
        """None when the event is to be sent; else it waits behind its endpoint's open breaker (see
        hold, or hold_ahead's verdict for it) and this is its verdict. A probe is sent whatever the
        breaker says."""
        if probe:
            return None
        if event.id in self.settled:  # whatever the breaker says now: the journal has it held, or due
            return self.settled.pop(event.id)
        if self.until(key) <= time.time():
            return None
        return self.hold(event, key, task)

    def hold_ahead(self, route: Route, events: list[Event | None], task: str) -> None:
        """As the task starts, hold back every event of its group whose endpoint waits behind an open
        breaker, one script per breaker (journal.breakers.hold_back_many) instead of one per event:
        behind a down endpoint that is most of a backlog's first pass (docs/performance.md). Their
        verdicts wait in `settled` for held_back. Not for batched or ordered routes: their loops
        hand events on (a batch, a lane's run) before held_back would see them."""
        if route.batch_max > 1 or route.ordered:
            return
        if self.complete and not self.open_until:
            return  # the route has no open breaker (most tasks): no event's URL to render for nothing
        now = time.time()
        behind: dict[EndpointKey, list[str]] = {}
        try:
            for event in events:
                if event is None or event.status in (journal.DELIVERED, journal.DEAD):
                    continue
                try:
                    key = endpoints.key_for(route.name, route.endpoint.render(event.tag))
                except NoRoute:
                    continue  # the loop dead-letters it
                if self.until(key) > now:
                    behind.setdefault(self._behind(key, now), []).append(event.id)
        except journal.REDIS_DOWN:
            raise
        except Exception:
            # Outside the loop's own guard: a bug here must not fail the task; the loop holds each event itself.
            log.exception("holding back the group's events at once failed; the task holds each in turn")
            return
        for key, ids in behind.items():
            moved = journal.breakers.hold_back_many(self.client, ids, route.name, key, now, task=task)
            self.settled.update((i, from_journal(m)) for i, m in zip(ids, moved))
            if "due" in moved:
                self.open_until.pop(key.digest, None)  # it closed meanwhile: they are due on the retry schedule

    def hold(self, event: Event, key: EndpointKey, task: str = "") -> Verdict:
        """Park the event behind the open breaker of its origin, else of its endpoint
        (journal.breakers.hold_back): WAITING, or why the journal refused (SUPERSEDED, GONE,
        DELIVERED, DEAD: another copy of the message, `task`, moved it since it was loaded)."""
        behind = self._behind(key, time.time())
        moved = journal.breakers.hold_back_move(self.client, event, behind, time.time(), task=task)
        if moved == "due":
            self.open_until.pop(behind.digest, None)  # it closed meanwhile: the event is due on the retry schedule
        return from_journal(moved)

    def _behind(self, key: EndpointKey, now: float) -> EndpointKey:
        """The breaker the endpoint's events wait behind: its origin's while that is open, else its own."""
        return key.origin if self._until(key.origin) > now else key
