"""When each event of a paced replay is sent: `--rate N/s` or `--pace original` (sped up `--pace 10x`) (pure)."""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .errors import BadFilter

_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:/s)?")
_PACE = re.compile(r"original|(\d+(?:\.\d+)?)x")


def parse_rate(text: str) -> float:
    """'200/s' or '200' -> 200.0 events per second."""
    m = _RATE.fullmatch(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise BadFilter(f"--rate {text!r} is not a positive number of events per second, e.g. 200/s")
    return float(m.group(1))


def parse_pace(text: str) -> float:
    """'original' -> 1.0, '10x' -> 10.0: how many times faster than the events first arrived."""
    m = _PACE.fullmatch(text.strip())
    if not m or (m.group(1) is not None and float(m.group(1)) <= 0):
        raise BadFilter(f"--pace {text!r} is not 'original' or a speed-up such as 10x")
    return float(m.group(1)) if m.group(1) else 1.0


def offsets(events: Sequence[dict[str, Any]], rate: float | None = None, speed: float | None = None) -> list[float]:
    """Seconds from the replay's start at which each event (oldest first) is due: evenly spaced at
    `rate`, or as far apart as they were received, divided by `speed`; with both, whichever is later."""
    if not events:
        return []
    first = events[0]["received"]
    out = []
    for i, event in enumerate(events):
        due = i / rate if rate else 0.0
        if speed:
            due = max(due, (event["received"] - first) / speed)
        out.append(due)
    return out
