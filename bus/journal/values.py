"""The delivery path's values: an event as the journal holds it, and one attempt as the journal keeps it.

Both are frozen: a step that changes one makes a new value (dataclasses.replace), so no caller's
copy changes under it (issue #16: records were dicts changed in place along the way). They live
on the journal's side because the journal makes and takes them: it builds an Event from an
event's hash (load_many, recheck_events, a lane's next event record_attempt.lua hands back) and
writes an Attempt (record_attempt, record_copy); the worker imports the journal, never the
reverse, and the capture proxy in the ingress records its attempts through the same calls.

The read side for users (`bus events`, GET /events, the console, replay's listing) keeps the
decoded dicts of store.decode: they show every field a record has, as JSON. A journal move
also takes such a dict (what journal.load reads) and makes it a value at its door (as_event,
as_attempt), so a caller holding one need not convert it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Event:
    """One event's record (bus:event:<id>, journal/keys.py) as a task loaded it."""

    id: str
    tag: str
    route: str
    status: str
    body: bytes
    received: float
    attempts: int = 0  # attempts recorded so far
    round: int = 0  # attempts at its last replay: backoff and max_attempts count from there
    headers: bytes = b""  # JSON of the request headers it came with, secrets removed
    last: str = ""  # the last attempt's status code or error
    # The message that sends its next attempt ('' none: it waits on the schedule); None for a record
    # from before the field existed, which any message may send (store.py).
    task: str | None = None
    parked: str | None = None  # the endpoint's parked set it waits in, behind an open breaker
    lane: str | None = None  # an ordered route's order key
    seq: int | None = None  # an ordered route's place in acceptance order
    replayed: float | None = None  # when it was last replayed: latency counts from there
    request: bytes | None = None  # a request bus proxy captured (captured.Request's JSON)

    @classmethod
    def from_journal(cls, event_id: str, fields: Mapping[bytes, bytes]) -> Event:
        """The event of a record's hash as HGETALL gives it: what store.decode reads, typed the same way
        (a unit test holds them together), without a dict between: through decode and from_record it
        cost ~5.8 us an event, this ~2.3 (store.decode alone ~1.5-2; every task start builds its group's)."""
        get = fields.get
        task, parked, lane, seq, replayed = get(b"task"), get(b"parked"), get(b"lane"), get(b"seq"), get(b"replayed")
        return cls(event_id, get(b"tag", b"").decode(), get(b"route", b"").decode(), get(b"status", b"").decode(),
                   get(b"body", b""), float(fields[b"received"]), int(get(b"attempts", 0)), int(get(b"round", 0)),
                   get(b"headers", b""), get(b"last", b"").decode(), None if task is None else task.decode(),
                   None if parked is None else parked.decode(), None if lane is None else lane.decode(),
                   None if seq is None else int(seq), None if replayed is None else float(replayed), get(b"request"))

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Event:
        """The event of a record as store.decode gives it (journal.load's dict), or of the part of one a
        caller has. Its id, route and received time it must have (every move names the event's keys and
        index score by them: a KeyError, never a silent ''); tag, status and body come out empty."""
        get = record.get
        return cls(record["id"], get("tag", ""), record["route"], get("status", ""), get("body", b""),
                   record["received"], get("attempts", 0), get("round", 0), get("headers", b""), get("last", ""),
                   get("task"), get("parked"), get("lane"), get("seq"), get("replayed"), get("request"))


# The order each kind of attempt has always been stored in (its JSON's keys): an attempt that went
# out, and one that never could (the route is gone, the URL no longer renders). Kept so the bytes
# the journal stores, and what `bus events ID` prints of them, are what they were before the values.
_SENT = ("attempt", "at", "url", "response_error", "status_code", "response", "location", "error", "phase",
         "duration", "request_id", "batch", "reason", "verdict")
_UNSENT_FIRST = ("attempt", "at", "duration", "status_code", "error", "reason")
_UNSENT = _UNSENT_FIRST + tuple(k for k in _SENT if k not in _UNSENT_FIRST)


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one try sent and got: one entry of bus:event:<id>:attempts, or of :copies for a copy
    sent elsewhere. `status_code` None is no answer (then `error` says why)."""

    attempt: int
    at: float
    url: str | None = None  # None: never sent (a dead letter written before a send)
    status_code: int | None = None
    response: str | None = None  # the answer's first bytes (RESPONSE_KEEP)
    response_error: str | None = None  # the status line came, the body broke off
    location: str | None = None
    error: str | None = None
    duration: float | None = None
    request_id: str | None = None  # a batch's request (route batch_max): its own id and size
    batch: int | None = None
    reason: str | None = None  # why a dead attempt is dead
    verdict: str | None = None  # a copy's (replay --to), in :copies
    phase: str | None = None  # "connect": no connection to the origin opened (its breaker counts it)
    # The keys of the record it was read from, in their order (from_record): written back the same.
    order: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Attempt:
        """An attempt as the journal's JSON has it (a dict; a key the record lacks stays unset)."""
        return cls(**record, order=tuple(record))

    def to_journal(self) -> bytes:
        """The JSON the journal keeps: the keys it was read with (and any set since, after them), or
        for a new attempt its kind's keys that are set, status_code always (null: no answer)."""
        if self.order:
            keys = self.order + tuple(k for k in _SENT if k not in self.order and getattr(self, k) is not None)
            return orjson.dumps({k: getattr(self, k) for k in keys})
        return orjson.dumps({k: v for k in (_SENT if self.url is not None else _UNSENT)
                             if (v := getattr(self, k)) is not None or k == "status_code"})


def as_event(event: Event | Mapping[str, Any]) -> Event:
    """A journal move's event: the value, or the value of a record dict (journal.load's, a test's)."""
    return event if isinstance(event, Event) else Event.from_record(event)


def id_of(event: Event | Mapping[str, Any]) -> str:
    """The id of an event a journal call takes, value or record dict (calls that need nothing else)."""
    return event.id if isinstance(event, Event) else event["id"]


def as_attempt(attempt: Attempt | Mapping[str, Any]) -> Attempt:
    """A journal move's attempt: the value, or that of a dict in the journal's JSON layout."""
    return attempt if isinstance(attempt, Attempt) else Attempt.from_record(attempt)
