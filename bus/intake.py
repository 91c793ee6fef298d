"""The one door into the bus: validate tag and records, pick the route, assign ids, journal and enqueue."""
from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, cast

import orjson
import redis

from . import journal, settings
from .errors import (
    BacklogFull,
    BodyTooLarge,
    BusError,
    IdempotencyConflict,
    InvalidBody,
    InvalidTag,
    NoRoute,
    RedisFull,
    Unavailable,
)
from .events import new_id
from .routes import Route, Router, copy_id, event_id, load_configured
from .settings import DEFAULT_SHARD
from .shards import Shards
from .tags import validate_tag
from .wire.pipelined import Ack, SharedPipe
from .wire.target import RedisTarget


@dataclass(frozen=True)
class Link:
    """One shard as the ways in use it."""

    name: str
    target: RedisTarget
    redis: redis.Redis
    # Accepts go through this one connection, shared by the process's threads (wire/pipelined.py).
    pipe: SharedPipe
    # The shard's memory as last read, shared by the process's ways in: above the mark they refuse.
    memory: journal.MemoryMark = field(default_factory=lambda: journal.MemoryMark(0.9))


@dataclass(frozen=True)
class Intake:
    """What accepting an event needs, loaded once per process: the routes and a link to each shard
    (bus/shards.py), BUS_REDIS_URL's ("default") first. A route's events go to its shard's link."""

    settings: settings.Settings
    router: Router
    links: dict[str, Link]

    def link(self, route: Route) -> Link:
        return self.links[route.shard]

    @property
    def redis(self) -> redis.Redis:
        """The default shard's client (refusals of tags no route takes are counted there)."""
        return self.links[DEFAULT_SHARD].redis

    @property
    def pipe(self) -> SharedPipe:
        return self.links[DEFAULT_SHARD].pipe

    @property
    def memory(self) -> journal.MemoryMark:
        return self.links[DEFAULT_SHARD].memory

    @property
    def shards(self) -> Shards:
        """Every shard's client, for the reads that see the whole journal."""
        return Shards({name: link.redis for name, link in self.links.items()},
                      {r.name: r.shard for r in self.router.routes},
                      {name: link.target.shown for name, link in self.links.items()})


_lock = threading.Lock()
_default: Intake | None = None


def load(config: settings.Settings | None = None) -> Intake:
    config = config or settings.load()
    return Intake(settings=config, router=load_configured(config),
                  links={name: _link(config, name) for name in config.shard_names})


def _link(config: settings.Settings, name: str) -> Link:
    target = config.shard(name)
    return Link(name, target, journal.connect(target, config.redis_timeout),
                SharedPipe(target, config.redis_timeout, Ack(config.ack_replicas, config.ack_timeout_ms)),
                journal.MemoryMark(config.redis_memory_high))


def default() -> Intake:
    """The process-wide intake, built from the environment on first use."""
    global _default
    with _lock:
        if _default is None:
            _default = load()
        return _default


@dataclass(frozen=True)
class Prepared:
    """Events checked and given ids, ready for one ACCEPT_SCRIPT call (journal.accept_call)."""

    route: Route
    events: list[journal.NewEvent]
    idempotency: journal.Idempotency | None = None

    @property
    def ids(self) -> list[str]:
        """The events' ids (of a fan-out route: each event once, not each destination's copy)."""
        if not self.route.destinations:
            return [e.id for e in self.events]
        return list(dict.fromkeys(event_id(e.id) for e in self.events))


# Stripe's limit; a key is any visible ASCII (a UUID, a hash, an order number).
MAX_IDEMPOTENCY_KEY = 255
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,%d}" % MAX_IDEMPOTENCY_KEY)


def prepare(intake: Intake, tag: str, records: list[Any], headers: bytes = b"",
            idempotency_key: str | None = None) -> Prepared:
    """Everything accepting does before Redis: the tag, its route, each record, ids. Raises a BusError.
    With an `idempotency_key`, a repeat of the key for this tag with the same records gets the first
    request's ids and accepts nothing (journal.accept_call)."""
    validate_tag(tag)
    route = intake.router.accepting(tag)
    if not records:
        raise InvalidBody("no events in the request: send a JSON object, a non-empty array of objects or NDJSON")
    received = time.time()
    events = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            where = f"item {i}" if len(records) > 1 else "the body"
            raise InvalidBody(f"{where} is a JSON {_json_type(record)}, not an object; each event must be a JSON object")
        try:
            body = orjson.dumps(record)
        except TypeError as exc:
            raise InvalidBody(f"item {i} cannot be encoded as JSON: {exc}") from None
        if route.order_key is not None:
            _check_order_key(route, record, i if len(records) > 1 else None)
        if route.destinations:  # one record per destination: its own status, attempts and schedule
            shared = new_id()
            events += [journal.NewEvent(copy_id(shared, cast(str, d.destination)), tag, d.name, body, received, headers)
                       for d in route.destinations]
        else:
            events.append(journal.NewEvent(new_id(), tag, route.name, body, received, headers))
    return Prepared(route, events, _idempotency(intake, idempotency_key, events))


def _check_order_key(route: Route, record: dict[str, Any], item: int | None) -> None:
    """An ordered route keyed by a record field takes only records that have it as a string, number or
    boolean: a record without its key has no place in any order, and guessing one would order it wrongly."""
    value = record.get(route.order_key) if route.order_key is not None else None
    if isinstance(value, (str, int, float)):  # bool is an int
        return
    where = f"item {item}" if item is not None else "the event"
    kind = "an object" if isinstance(value, dict) else "an array" if isinstance(value, list) else "null"
    found = "has no field" if route.order_key not in record else f"has {kind} in field"
    raise InvalidBody(f"{where} {found} {route.order_key!r}, the order_key of ordered route {route.name} "
                      f"({route.file}): give every event a string or number {route.order_key!r}, or send it with a "
                      "tag another route takes")


def _idempotency(intake: Intake, key: str | None, events: list[journal.NewEvent]) -> journal.Idempotency | None:
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidBody(f"Idempotency-Key {key[:80]!r} is not 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII "
                          "characters (a UUID is a good key)")
    # The records as journaled, not the request's bytes: the same events re-encoded (gzip, NDJSON,
    # another key order) are the same request.
    digest = hashlib.sha256(b"\n".join(e.body for e in events)).hexdigest()[:32]
    return journal.Idempotency(key, digest, intake.settings.idempotency_window)


def accept(intake: Intake, tag: str, records: list[Any], headers: bytes = b"",
           idempotency_key: str | None = None) -> list[str]:
    """Accept a batch for one tag, all or nothing; return the event ids once they are in Redis.

    `headers` is the JSON of the request headers the events came with (already
    stripped of secrets), kept in the journal for `bus events ID`.
    """
    return commit(intake, prepare(intake, tag, records, headers, idempotency_key))


def commit(intake: Intake, prepared: Prepared) -> list[str]:
    """Journal and enqueue prepared events (after Redis's memory and the route's backlog checks), through
    the process's pipe; the ids the request's answer gives (a repeated Idempotency-Key's are the first request's)."""
    link = intake.link(prepared.route)
    try:
        journal.check_room(link.pipe, link.memory)
        check_backlog(intake, prepared)
        if prepared.route.destinations:
            calls = accept_calls(prepared)
            ids = answer(prepared, calls, journal.accept_copies(link.pipe, calls))
        else:
            ids = journal.accept(link.pipe, prepared.events, prepared.route.group_size, prepared.idempotency,
                                 prepared.route.order)
    except Unavailable as exc:
        raise on_shard(intake, link, exc) from exc
    link.memory.accepted(prepared.events)
    return ids


def accept_calls(prepared: Prepared) -> list[tuple[list[journal.NewEvent], int, journal.Idempotency | None, str]]:
    """The accept scripts' arguments (events, group size, Idempotency-Key, order): one for a route with one endpoint,
    one per destination for a fan-out route. Each destination keeps its own Idempotency-Key record (the key with the destination's
    name): a repeated request is then a repeat for every destination, and one whose first try reached Redis
    for some destinations only is taken by the others on its retry."""
    if not prepared.route.destinations:
        return [(prepared.events, prepared.route.group_size, prepared.idempotency, prepared.route.order)]
    calls = []
    for dest in prepared.route.destinations:
        events = [e for e in prepared.events if e.route == dest.name]
        idem = prepared.idempotency
        if idem is not None:
            idem = replace(idem, key=copy_id(idem.key, dest.destination))
        calls.append((events, dest.group_size, idem, dest.order))  # an ordered route's destinations keep their own order
    return calls


def answer(prepared: Prepared, calls: list[tuple[list[journal.NewEvent], int, journal.Idempotency | None, str]],
           replies: list[Any]) -> list[str]:
    """The ids a request's answer gives, from the replies of accept_calls' `calls`, in their order."""
    for (events, _, idempotency, _), reply in zip(calls[1:], replies[1:]):
        journal.accepted_ids(events, reply, idempotency)  # an IdempotencyConflict in any destination is the request's
    events, _, idempotency, _ = calls[0]
    ids = journal.accepted_ids(events, replies[0], idempotency)
    return [event_id(i) for i in ids] if prepared.route.destinations else ids


def on_shard(intake: Intake, link: Link, exc: Unavailable) -> Unavailable:
    """A refusal naming the shard when there are several: the other shards' routes still accept."""
    if len(intake.links) == 1:
        return exc
    return type(exc)(f"shard {link.name}: {exc}")


def check_backlog(intake: Intake, prepared: Prepared) -> None:
    """BacklogFull when the route has a backlog_limit the events would pass."""
    route = prepared.route
    if route.backlog_limit is None:
        return
    # Checked before the write, so concurrent requests may overshoot by a batch; it is a soft ceiling.
    # A fan-out route's limit holds for each destination: the one furthest behind decides.
    redis_ = intake.link(route).redis
    waiting, behind = max(((journal.backlog(redis_, d.name), d) for d in route.destinations or (route,)),
                          key=lambda pair: pair[0])
    if waiting + len(prepared.ids) > route.backlog_limit:
        # Of a fan-out route, the destination that holds the others back is named: it is the one to look at.
        who = f"route {route.name}'s destination {behind.destination}" if route.destinations else f"route {route.name}"
        raise BacklogFull(f"{who} has {waiting} events waiting, its backlog_limit is "
                          f"{route.backlog_limit}: nothing was accepted; retry after it drains")


# Refusals counted for /metrics, by reason. Unavailable (Redis down) is missing on purpose:
# there is nowhere to count it, and trying would make the 503 wait for Redis again.
REFUSAL_REASONS = {InvalidTag: "invalid_tag", NoRoute: "no_route", InvalidBody: "invalid_body",
                   BodyTooLarge: "too_large", BacklogFull: "backlog_full", IdempotencyConflict: "idempotency_conflict",
                   RedisFull: "redis_full"}


def count_refusal(intake: Intake, tag: str, exc: BusError) -> None:
    """Count a refused request under the route its tag would take ('' when none) and the refusal's reason."""
    reason = REFUSAL_REASONS.get(type(exc))
    if reason is None:
        return
    try:
        validate_tag(tag)
        matched = intake.router.match(tag)
        route, client = matched.name, intake.link(matched).redis
    except BusError:
        route, client = "", intake.redis
    try:
        journal.count_refused(client, route, reason)
    except journal.REDIS_DOWN:
        pass  # the refusal stands; only its count is lost


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")
