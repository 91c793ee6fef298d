"""Event ids: UUIDv7, time-sortable and unique without coordination (pure)."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator

# The variant's two bits (0b10) over a random nibble: the hex digit it makes.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


# Random hex digits drawn in bulk (one getrandom() per 256 ids, not one each: a third of new_id),
# 20 to an id, each handed out once: next() on a list's iterator is one step under the GIL, so
# threads never share one. A forked child drops the parent's rest: the two would make the same ids.
_POOL_IDS = 256
_pool: Iterator[str] = iter(())
_last_ms: tuple[int, str] = (-1, "")  # the last millisecond seen, as the id's first 15 characters


def _drop_pool() -> None:
    global _pool
    _pool = iter(())


os.register_at_fork(after_in_child=_drop_pool)


def new_id(now_ms: int | None = None) -> str:
    """A UUIDv7 string: 48-bit Unix milliseconds, version and variant bits, 74 random bits."""
    # Spelled in hex digits, not as a 128-bit int: half the CPU, and bus.Producer.emit's largest step.
    global _pool, _last_ms
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    r = next(_pool, None)
    if r is None:
        digits = os.urandom(10 * _POOL_IDS).hex()
        _pool = iter([digits[i:i + 20] for i in range(0, len(digits), 20)])
        r = next(_pool)
    last = _last_ms
    if last[0] == ms:  # most ids of a busy producer share their millisecond with the one before
        head = last[1]
    else:
        m = f"{ms & 0xFFFFFFFFFFFF:012x}"
        head = f"{m[:8]}-{m[8:]}-7"
        _last_ms = (ms, head)
    return f"{head}{r[:3]}-{_VARIANT[r[3]]}{r[4:7]}-{r[7:19]}"


def id_time(event_id: str) -> float:
    """The acceptance time (Unix seconds) encoded in an event id."""
    return int(event_id.replace("-", "")[:12], 16) / 1000.0
