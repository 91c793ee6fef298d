"""An event of a fan-out route seen whole: its destinations' copies, and the status derived from theirs.

Each destination keeps its own journal record of the event (id `<event id>.<destination>`), so its
status, attempts, schedule, breaker and dead letter are its own. The event's own status is derived:
- delivered when every destination has delivered it;
- queued or retrying while any destination still waits (retrying if any waits on its schedule);
- dead when none waits and at least one destination gave up on it (replay it with --destination).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from . import journal
from .archive import Store, tiers
from .errors import BadFilter, EventNotFound
from .filters import STATUSES, EventFilter
from .routes import DESTINATION_SEP, Router, copy_id, event_id
from .shards import as_shards

QUEUED, RETRYING, DELIVERED, DEAD = STATUSES


def overall(statuses: list[str]) -> str:
    """The event's status from its destinations' (see the module's rule)."""
    if all(s == DELIVERED for s in statuses):
        return DELIVERED
    if RETRYING in statuses:
        return RETRYING
    if QUEUED in statuses:
        return QUEUED
    return DEAD


def show(client: Any, store: Store | None, router: Router | None, event_id: str) -> dict[str, Any]:
    """The event as `bus events ID` and GET /events/<id> show it: a record of its own (a route with one
    endpoint, or one destination's copy), or a fan-out event with each destination's status and attempts."""
    try:
        return tiers.show(client, store, event_id)
    except EventNotFound:
        if router is None or DESTINATION_SEP in event_id or not router.fanouts:
            raise
        missing = EventNotFound(f"no event {event_id!r} in the journal (never accepted, expired after retention, "
                                "or purged)")
    copies = []
    for name in dict.fromkeys(d.destination for r in router.fanouts.values() for d in r.destinations):
        try:
            copies.append(tiers.show(client, store, copy_id(event_id, name)))
        except EventNotFound:
            continue
    if not copies:
        raise missing
    first = copies[0]
    whole = {**first, "id": event_id, "route": _parent(router, first["route"]),
             "status": overall([c["status"] for c in copies]), "attempts": sum(c["attempts"] for c in copies),
             "attempt_log": [], "copies": []}
    whole["destinations"] = [
        {"name": c["id"].partition(DESTINATION_SEP)[2], "id": c["id"], "route": c["route"], "status": c["status"],
         "attempts": c["attempts"], "last": c.get("last", ""), "attempt_log": c["attempt_log"],
         "copies": c["copies"]} for c in copies]
    return whole


def _parent(router: Router, delivered: str) -> str:
    return next((r.name for r in router.fanouts.values() if any(d.name == delivered for d in r.destinations)),
                delivered)


def destination_route(router: Router, route: str | None, destination: str | None) -> str | None:
    """The route filter `--destination NAME` (with or without `--route`) means: that destination's own
    route name; BadFilter naming what is wrong when no route, or several, have such a destination."""
    if destination is None:
        return route
    if not isinstance(destination, str):
        raise BadFilter(f"destination must be a string, not {type(destination).__name__}")
    fanouts = [router.fanouts[route]] if route in router.fanouts else [] if route else list(router.fanouts.values())
    if route and not fanouts:
        raise BadFilter(f"route {route!r} has no destinations; --destination goes with a route that has several")
    found = [d.name for r in fanouts for d in r.destinations if d.destination == destination]
    if not found:
        known = ", ".join(f"{d.name}" for r in fanouts for d in r.destinations) or "none"
        raise BadFilter(f"no destination {destination!r}{' in route ' + repr(route) if route else ''}; "
                        f"destinations are: {known}")
    if len(found) > 1:
        raise BadFilter(f"several routes have a destination {destination!r} ({', '.join(found)}); "
                        "add --route to say which")
    return found[0]


def widen(router: Router | None, f: EventFilter) -> EventFilter:
    """A filter on a fan-out route's own name reads its destinations' copies (the route has no records of its
    own); any other filter is left as it is."""
    if router is None or f.route not in router.fanouts:
        return f
    return replace(f, copies_of=tuple(d.name for d in router.fanouts[f.route].destinations))


def find(client: Any, store: Store | None, router: Router | None, f: EventFilter, limit: int = 50,
         cursor: str | None = None, retention: int = journal.DEFAULT_RETENTION) -> tiers.TieredPage:
    """A listing (`bus events`, GET /events) as tiers.find gives it; by a fan-out route's own name, one row
    per event, as `show` gives it (derived status, each destination's status and attempts), newest first.
    An event is listed when one of its destinations' copies matches the filter (`--status dead`: the
    events with a dead copy, what `bus replay --route` of the same filter sends again)."""
    f = widen(router, f)
    if not f.copies_of:
        return tiers.find(client, store, f, limit=limit, cursor=cursor, retention=retention)
    assert router is not None and f.route is not None  # widen() set copies_of from the router's route
    # Copies of one event share its received time and its id's prefix, so they sit side by side in the order.
    page = tiers.find(client, store, f, limit=limit * len(f.copies_of), cursor=cursor, retention=retention)
    received: dict[str, float] = {}
    for e in page.events:
        received.setdefault(event_id(e["id"]), e["received"])
    parents = list(received)
    more = page.cursor
    if len(parents) > limit:
        parents = parents[:limit]
        more = _cursor(received[parents[-1]], parents[-1])
    elif more:
        # Past every copy of the event the page stopped in: its other copies are in its row already.
        score, _, stopped = more.partition(":")
        more = f"{score}:{event_id(stopped)}"
    names = [d.destination for d in router.fanouts[f.route].destinations]
    # From the route's shard alone, as the listing read: another shard that is down does not fail it.
    shards = as_shards(client)
    reader = shards.of(f.copies_of[0]) if f.copies_of[0] in shards.routes else client
    copies = {c["id"]: c for c in tiers.summaries(reader, store, [copy_id(p, n) for p in parents for n in names])}
    events = []
    for parent in parents:
        mine = [copies[copy_id(parent, n)] for n in names if copy_id(parent, n) in copies]
        if mine:  # none: purged since the page was read
            events.append(_row(parent, f.route, mine))
    return tiers.TieredPage(events, more, page.unavailable)


def _row(parent: str, route: str, copies: list[dict[str, Any]]) -> dict[str, Any]:
    """One listed fan-out event: the summary fields of a record, derived, and its destinations' own."""
    waiting = next((c for c in copies if c["status"] != DELIVERED), copies[0])
    return {"id": parent, "tag": copies[0]["tag"], "route": route, "status": overall([c["status"] for c in copies]),
            "attempts": sum(c["attempts"] for c in copies), "last": waiting["last"], "received": copies[0]["received"],
            "tier": copies[0].get("tier", "redis"),
            "destinations": [{"name": c["id"].partition(DESTINATION_SEP)[2], "id": c["id"], "status": c["status"],
                              "attempts": c["attempts"], "last": c["last"]} for c in copies]}


def _cursor(received: float, parent: str) -> str:
    return f"{received!r}:{parent}"


def copy_ids(router: Router, ids: Sequence[str]) -> list[str]:
    """Replay by id: an event of a fan-out route (its own id has no record) means each of its destinations'
    copies; a copy's id, or an event of a route with one endpoint, is itself."""
    names = list(dict.fromkeys(d.destination for r in router.fanouts.values() for d in r.destinations))
    if not names:
        return list(ids)
    return list(dict.fromkeys(c for i in ids for c in ([i] if DESTINATION_SEP in i else [i, *(copy_id(i, n)
                                                                                               for n in names)])))
