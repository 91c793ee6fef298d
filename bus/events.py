"""Event ids: UUIDv7, time-sortable and unique without coordination (pure)."""
from __future__ import annotations

import os
import time


def new_id(now_ms: int | None = None) -> str:
    """A UUIDv7 string: 48-bit Unix milliseconds, version and variant bits, 74 random bits."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFFFFFFFFFF) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62 | rand & ((1 << 62) - 1)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def id_time(event_id: str) -> float:
    """The acceptance time (Unix seconds) encoded in an event id."""
    return int(event_id.replace("-", "")[:12], 16) / 1000.0
