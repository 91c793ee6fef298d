"""What an attempt's result means: delivered, retry after N seconds, or dead (pure)."""
from __future__ import annotations

from dataclasses import dataclass

from ..routes import Route
from . import backoff
from .verdict import Verdict

# Kept for callers that name the three verdicts an attempt's answer can come to.
DELIVERED, RETRY, DEAD = Verdict.DELIVERED, Verdict.RETRY, Verdict.DEAD


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    delay: float = 0.0
    reason: str = ""


def classify(route: Route, attempt: int, status_code: int | None, retry_after: str | None = None) -> Outcome:
    """Judge attempt number `attempt`; status_code None means no answer (connection error or timeout)."""
    if status_code is not None and 200 <= status_code < 300:
        return Outcome(DELIVERED)
    if status_code is not None and status_code not in route.retryable_statuses:
        # Redirects land here too: following them would let an endpoint move data to another host.
        return Outcome(DEAD, reason=f"HTTP {status_code} is not retryable for route {route.name}")
    if route.max_attempts is not None and attempt >= route.max_attempts:
        return Outcome(DEAD, reason=f"gave up after {attempt} attempts (max_attempts)")
    hint = backoff.parse_retry_after(retry_after)
    return Outcome(RETRY, delay=backoff.delay(attempt, route.retry_max_interval, hint))
