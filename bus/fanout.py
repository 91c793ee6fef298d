"""An event of a fan-out route seen whole: its destinations' copies, and the status derived from theirs.

Each destination keeps its own journal record of the event (id `<event id>.<destination>`), so its
status, attempts, schedule, breaker and dead letter are its own. The event's own status is derived:
- delivered when every destination has delivered it;
- queued or retrying while any destination still waits (retrying if any waits on its schedule);
- dead when none waits and at least one destination gave up on it (replay it with --destination).
"""
from __future__ import annotations

from typing import Any

from .archive import Store, tiers
from .errors import BadFilter, EventNotFound
from .filters import STATUSES
from .routes import DESTINATION_SEP, Router, copy_id

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
