"""The spool's sender: a background thread moving spooled events to Redis in pipelined batches, with their ids."""
from __future__ import annotations

import logging
import random
import threading
from collections import defaultdict

from .. import journal
from ..broker.messages import GROUP_SIZE
from ..errors import BusError
from ..intake import Intake
from ..settings import DEFAULT_SHARD
from .store import Batch, Spool

log = logging.getLogger(__name__)

BATCH_EVENTS = 5000      # events per round trip; the accept script runs once per route in it
SCRIPT_EVENTS = 1000     # events per script call, so no one call holds Redis for long
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0
# After a small batch, wait this long for more before the next round trip: a trickle of emits
# would otherwise cost a round trip, a cursor write and their CPU per event, and that CPU is
# taken from the emitting threads (the GIL). It delays the event's arrival in Redis, not emit.
LINGER_S, LINGER_BELOW = 0.005, 1000


class Sender:
    """Sends what the spool holds, oldest first, and acks each batch once Redis answered for all of it.

    Redis down: the batch stays, and the sender tries again after a backoff doubling
    from 0.1 s to 5 s (with jitter). A batch whose reply was lost is sent again whole;
    the accept skips the events Redis already has or had, by id and by the spool's mark
    in Redis (journal.SpoolMark: the place up to which it took this spool's events of a
    route, kept BUS_IDEMPOTENCY_WINDOW after the last send), so no id is journaled twice,
    even once delivered and archived out of Redis (with several shards, each keeps the
    marks of its own routes). Each event keeps the route emit gave it; the group size and
    shard come from this Producer's routes (the defaults for a route removed since). Redis over the ways in's memory mark
    (BUS_REDIS_MEMORY_HIGH): the sender waits as when Redis is down (RedisFull).
    """

    def __init__(self, spool: Spool, intake: Intake):
        self.spool, self.intake = spool, intake
        self.sent = 0                          # events Redis took from this sender
        self.last_error: str | None = None     # why the last try failed; None once one succeeds
        self._wake = threading.Event()         # new events were spooled
        self._hurry = threading.Event()        # flush() or close() wants a try now, backoff or not
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"bus-spool-sender {spool.directory}", daemon=True)

    def start(self) -> Sender:
        self._thread.start()
        return self

    def wake(self) -> None:
        if not self._wake.is_set():
            self._wake.set()

    def hurry(self) -> None:
        self._hurry.set()
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self.hurry()
        self._thread.join(timeout)

    def _run(self) -> None:
        delay = BACKOFF_FIRST
        while not self._stop.is_set():
            self._wake.clear()
            try:
                batch = self.spool.read(BATCH_EVENTS)
                if batch is None:
                    self._hurry.clear()
                    self._wake.wait(1.0)  # also a heartbeat, should a wake-up be missed
                    continue
                self._send(batch)
                self.sent += len(batch.payloads)
                self.last_error, delay = None, BACKOFF_FIRST  # before the ack wakes flush(): stats() then says so
                self.spool.ack(batch)
                if len(batch.payloads) < LINGER_BELOW and not self._hurry.is_set():
                    self._stop.wait(LINGER_S)
            except Exception as exc:  # the thread must outlive anything: it is the only way out of the spool
                error = str(exc) if isinstance(exc, BusError) else f"{type(exc).__name__}: {exc}"
                if error != self.last_error:  # once per new reason, not every try of a long outage
                    # Redis being down is what the spool is for (INFO; stats() has it); anything else is a bug.
                    expected = isinstance(exc, BusError)
                    log.log(logging.INFO if expected else logging.WARNING,
                            "spool %s: sending failed (%s); trying again with backoff up to %gs",
                            self.spool.directory, error, BACKOFF_MAX, exc_info=not expected)
                self.last_error = error
                self._hurry.wait(delay * random.uniform(0.5, 1.0))
                self._hurry.clear()
                delay = min(delay * 2, BACKOFF_MAX)

    def _send(self, batch: Batch) -> None:
        # Each payload goes as it is, one argument; Redis splits it (journal.accept_frames). Only its route
        # is read here, for the route's shard and group size: a batch is mostly of one route.
        by_route: dict[bytes, list[int]] = defaultdict(list)
        for i, payload in enumerate(batch.payloads):
            by_route[payload.split(b"\n", 3)[2]].append(i)
        # Per shard: each route's events go to its own, each part with its place in this spool.
        calls: dict[str, list[tuple[list[bytes], str, int, str, journal.SpoolMark]]] = defaultdict(list)
        window = self.intake.settings.idempotency_window
        for raw_route, indexes in by_route.items():
            route = raw_route.decode()
            known = self.intake.router.by_name.get(route)
            group_size = known.group_size if known is not None else GROUP_SIZE
            order = known.order if known is not None else ""
            shard = known.shard if known is not None else DEFAULT_SHARD
            after = ""
            whole = len(indexes) == len(batch.payloads)
            for start in range(0, len(indexes), SCRIPT_EVENTS):
                part = indexes[start:start + SCRIPT_EVENTS]
                stop = start + len(part)
                payloads = batch.payloads[start:stop] if whole else [batch.payloads[i] for i in part]
                places = batch.places[start:stop] if whole else [batch.places[i] for i in part]
                calls[shard].append((payloads, route, group_size, order,
                                     journal.SpoolMark(self.spool.identity, places, after, window)))
                after = places[-1]
        for shard, shard_calls in calls.items():
            link = self.intake.links[shard]
            journal.check_room(link.pipe, link.memory)
            journal.accept_frames(link.pipe, shard_calls)
            link.memory.took(sum(len(p) for call in shard_calls for p in call[0]),
                             sum(len(call[0]) for call in shard_calls))
