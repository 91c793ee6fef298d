"""Journaling a request `bus proxy` captured: its record and indexes, with no task message (the proxy sends it)."""
from __future__ import annotations

from typing import Any

from ..lifecycle import QUEUED
from . import scripts
from .keys import COUNTERS, event_key, index_key
from .store import (
    NewEvent,
)

# A captured request is journaled as queued before the proxy forwards it, and its live attempt is
# recorded (transitions.record_attempt_call) once the upstream has answered; lua/capture.lua says more.
CAPTURE_SCRIPT = scripts.load("capture.lua")


def capture_call(event: NewEvent, request: bytes, uncaptured: int = 0) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of CAPTURE_SCRIPT for one captured request (`request`: captured.Request's JSON)."""
    keys = [event_key(event.id), index_key(QUEUED), index_key(QUEUED, event.route), COUNTERS]
    args = [event.id, event.tag, event.route, event.body, event.headers, request, repr(event.received),
            f"accepted:{event.route}", f"uncaptured:{event.route}", uncaptured]
    return keys, args
