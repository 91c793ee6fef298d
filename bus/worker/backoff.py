"""Retry delays: exponential backoff with jitter, and Retry-After parsing (pure).

Knobs, all per route:
- first delay: 1 s (FIRST_DELAY), doubling each attempt;
- cap: the route's retry_max_interval (60 s default, as Fluentd's seed config);
- jitter: the delay is drawn from [d/2, d], so retries of many events spread
  out but a delay is never zero (full jitter could fire at once and hammer a
  host that just failed);
- Retry-After from the endpoint wins over the computed delay, capped at
  retry_max_interval;
- breaker: after BREAKER_THRESHOLD retryable failures in a row an endpoint's
  breaker opens (one per rendered origin and path: endpoints.py); while open,
  no event for that endpoint is sent: they wait in Redis. It half-opens after 1 s, then 2 s... capped at
  min(retry_max_interval, BREAKER_MAX_INTERVAL), and lets one probe through;
  the probe's success closes it and everything waiting drains at once. The
  cap is short because a probe costs a dead host one connection, while a
  long cap would keep a recovered endpoint waiting.

Retries wait in a Redis sorted set (journal's retry schedule), not as Celery
ETA tasks: an ETA task sits unacked in worker memory and, past kombu's
visibility timeout, is redelivered as a duplicate (kombu#337). So the delay
has no upper bound tied to the visibility timeout; only one attempt must fit
in it (routes.VISIBILITY_MARGIN).
"""
from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

FIRST_DELAY = 1.0
BREAKER_THRESHOLD = 5
# With jitter a probe comes 1.25-2.5 s after the last one: an endpoint that comes back waits at
# most 2.5 s for the first probe (a 5 s cap made the 2,000-event drain after an outage take up
# to ~5.5 s, over issue 8's 5 s), and a dead one gets a request every 2 s or so.
BREAKER_MAX_INTERVAL = 2.5


def delay(attempt: int, max_interval: float, retry_after: float | None = None, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    if retry_after is not None:
        return max(FIRST_DELAY, min(retry_after, max_interval))
    # Cap the exponent first: 2 ** 1024 no longer fits a float, and "forever" reaches it.
    base = min(FIRST_DELAY * 2 ** min(max(attempt - 1, 0), 64), max_interval)
    return base / 2 * (1 + (rng or random).random())


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)
