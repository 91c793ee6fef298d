"""Event filters shared by `bus events`, `bus replay`, `bus purge` and GET /events: parsed and validated here (pure)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from .errors import BadFilter, RouteError
from .lifecycle import STATUSES  # the one vocabulary; kept here for filters' callers
from .tags import TagPattern, compile_patterns

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class EventFilter:
    status: str | None = None
    tag: str | None = None
    route: str | None = None
    since: float | None = None
    until: float | None = None
    # A fan-out route has no records of its own: its events are its destinations' copies, whose routes
    # ("<route>.<destination>", fanout.widen) these are; empty for any other route.
    copies_of: tuple[str, ...] = ()

    @property
    def routes(self) -> tuple[str, ...]:
        """The routes whose records match: none asked (any will do), the route, or its destinations'."""
        return self.copies_of or ((self.route,) if self.route is not None else ())

    def matches_tag(self, tag: str) -> bool:
        return self.tag is None or _tag_pattern(self.tag).matches(tag)

    def matches(self, summary: dict) -> bool:
        """Whether an event summary (as journal.find returns them) passes every part of the filter."""
        return ((self.status is None or summary["status"] == self.status)
                and (self.route is None or summary["route"] in self.routes)
                and (self.since is None or summary["received"] >= self.since)
                and (self.until is None or summary["received"] <= self.until)
                and self.matches_tag(summary["tag"]))


@lru_cache(maxsize=256)
def _tag_pattern(pattern: str) -> TagPattern:
    return compile_patterns([pattern])


def parse_duration(text: str) -> float:
    """'90s', '30m', '1h', '7d', '2w' or plain seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    m = _DURATION.fullmatch(text)
    if not m:
        raise BadFilter(f"{text!r} is not a duration; use e.g. 90s, 30m, 1h, 7d")
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_time(text: str, now: float, name: str) -> float:
    """A point in time: a duration ago ('1h'), an ISO 8601 date-time, or Unix seconds."""
    text = text.strip()
    if re.fullmatch(r"\d{9,}(?:\.\d+)?", text):
        return float(text)
    try:
        return now - parse_duration(text)
    except BadFilter:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadFilter(f"--{name} {text!r} is not a time; use a duration ago (1h, 30m), "
                        "an ISO date-time (2026-11-22T10:00:00Z) or Unix seconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _point(value: object, now: float, name: str) -> float | None:
    """A time from a command line or query string (parse_time), or Unix seconds as a JSON number."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return parse_time(value, now, name)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    raise BadFilter(f"{name} must be a time (a string such as '1h' or '2026-11-22T10:00:00Z', or Unix seconds), "
                    f"not {type(value).__name__}")


def build(status: str | None = None, tag: str | None = None, route: str | None = None,
          since: str | float | None = None, until: str | float | None = None, *, now: float) -> EventFilter:
    """Validate raw filter values (from a command line, a query string or a JSON body) into an EventFilter."""
    for name, value in (("status", status), ("tag", tag), ("route", route)):
        if value is not None and not isinstance(value, str):
            raise BadFilter(f"{name} must be a string, not {type(value).__name__}")
    if status is not None and status not in STATUSES:
        raise BadFilter(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")
    if tag is not None:
        try:
            compile_patterns([tag])
        except RouteError as exc:
            raise BadFilter(f"bad tag pattern: {exc}") from None
    # A destination of a fan-out route is a route of its own: "<route>.<destination>".
    if route is not None and not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)?", route):
        raise BadFilter(f"{route!r} is not a route name")
    lo, hi = _point(since, now, "since"), _point(until, now, "until")
    if lo is not None and hi is not None and lo > hi:
        raise BadFilter("--since is after --until: nothing can match")
    return EventFilter(status=status, tag=tag, route=route, since=lo, until=hi)
