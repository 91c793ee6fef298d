"""The deliver task: load the event, send one attempt, classify the answer, tell the journal."""
from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import requests
import urllib3
from celery import Task
from celery.exceptions import Reject

from . import journal, settings
from .celery import app
from .classify import DEAD, DELIVERED, Outcome, classify
from .messages import DELIVER_TASK
from .routes import Route, Router, load_routes

log = logging.getLogger("bus.delivery")


class RetryLater(Exception):
    """Raised by an attempt that should be tried again after `delay` seconds."""

    def __init__(self, delay: float, reason: str):
        super().__init__(f"{reason}; next attempt in {delay:.1f}s")
        self.delay = delay


class DeliveryTask(Task):
    """Celery's autoretry_for uses one fixed countdown; ours comes from the failed attempt (backoff, Retry-After)."""

    def retry(self, *args: Any, exc: BaseException | None = None, countdown: float | None = None, **kwargs: Any):
        if countdown is None and isinstance(exc, RetryLater):
            countdown = exc.delay
        return super().retry(*args, exc=exc, countdown=countdown, **kwargs)


@dataclass(frozen=True)
class Worker:
    """What a worker process needs, built once after fork."""

    settings: settings.Settings
    router: Router
    redis: Any
    session: requests.Session


_lock = threading.Lock()
_worker: Worker | None = None


def worker() -> Worker:
    global _worker
    with _lock:
        if _worker is None:
            config = settings.load()
            _worker = Worker(
                settings=config,
                router=load_routes(config.routes_dir, config.visibility_timeout),
                redis=journal.connect(config.redis_url, config.redis_timeout),
                session=requests.Session(),
            )
        return _worker


class AttemptDeadline(Exception):
    """The whole attempt took longer than open_timeout + read_timeout (not an OSError: urllib3 must not catch it)."""


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Bound the whole attempt, not each socket read as requests does: a receiver sending a byte
    every second would otherwise hold a pool process for ever, and outlive the visibility timeout
    that routes.py sized for open_timeout + read_timeout. Prefork pool processes run tasks in
    their main thread, where SIGALRM can interrupt a blocked read; other pools go without."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise AttemptDeadline(f"no complete answer within {seconds:g}s (open_timeout + read_timeout)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def send(session: requests.Session, route: Route, url: str, event: dict[str, Any], attempt: int) -> dict[str, Any]:
    """One HTTP attempt; returns the attempt record (never raises for network trouble)."""
    headers = {
        **route.headers,
        "Content-Type": route.content_type,
        "X-Request-Id": event["id"],
        "X-Bus-Tag": event["tag"],
        "X-Bus-Attempt": str(attempt),
    }
    record: dict[str, Any] = {"attempt": attempt, "at": time.time(), "url": url}
    started = time.monotonic()
    try:
        with _deadline(route.open_timeout + route.read_timeout):
            resp = session.request(
                route.method, url, data=event["body"], headers=headers,
                timeout=(route.open_timeout, route.read_timeout), allow_redirects=False, stream=True,
            )
            body = b""
            try:
                # Keep only the first bytes: a huge error page must not fill worker memory.
                body = resp.raw.read(journal.RESPONSE_KEEP, decode_content=True) or b""
            except (urllib3.exceptions.HTTPError, OSError, AttemptDeadline) as exc:
                # The status line arrived, so the endpoint has answered and its status decides, as
                # for a body we never read past 2 KiB. Escaping here would fail the task, and Celery
                # acks a failed task: the event would be lost.
                record["response_error"] = f"{type(exc).__name__}: {exc}"[:500]
            finally:
                resp.close()
        record.update(status_code=resp.status_code, response=body.decode("utf-8", "replace"),
                      retry_after=resp.headers.get("Retry-After"))
        if 300 <= resp.status_code < 400:
            # Redirects are not followed (classify.py); keep where it pointed for whoever replays it.
            record["location"] = resp.headers.get("Location")
    except (requests.RequestException, AttemptDeadline) as exc:
        record.update(status_code=None, error=f"{type(exc).__name__}: {exc}"[:500])
    record["duration"] = round(time.monotonic() - started, 4)
    return record


def _journal_verdict(w: Worker, event: dict[str, Any], record: dict[str, Any], outcome: Outcome) -> None:
    status = {DELIVERED: journal.DELIVERED, DEAD: journal.DEAD}.get(outcome.verdict, journal.RETRYING)
    if outcome.reason:
        record["reason"] = outcome.reason
    try:
        journal.record_attempt(w.redis, event["id"], record, status, event["received"])
    except journal.REDIS_DOWN as exc:
        # The attempt is not journaled. Failing the task would make Celery ack it (acks_late acks
        # failures too) and the event would be lost; put the task back instead: a repeat, same id.
        raise Reject(f"journal unreachable after attempt {record['attempt']}: {exc}", requeue=True) from exc
    log.info(
        "event %s tag=%s route=%s attempt=%d result=%s duration=%.3fs verdict=%s%s",
        event["id"], event["tag"], event["route"], record["attempt"],
        record.get("status_code") or record.get("error"), record["duration"], outcome.verdict,
        f" delay={outcome.delay:.1f}s" if outcome.delay else "",
    )


@app.task(
    name=DELIVER_TASK, bind=True, base=DeliveryTask, acks_late=True, reject_on_worker_lost=True,
    max_retries=None, autoretry_for=(RetryLater,), ignore_result=True,
)
def deliver(self: DeliveryTask, event_id: str) -> str:
    """Deliver one event: one attempt per run; a retryable failure raises RetryLater."""
    w = worker()
    try:
        event = journal.load(w.redis, event_id)
    except journal.REDIS_DOWN as exc:
        # Leave the message to Redis: rejected back to its queue, or restored after the visibility timeout.
        raise Reject(f"journal unreachable: {exc}", requeue=True) from exc
    if event is None:
        log.warning("event %s is not in the journal (expired or purged); nothing to deliver", event_id)
        return "missing"
    if event["status"] in (journal.DELIVERED, journal.DEAD):
        # A redelivery after a crash: the endpoint already has it, or it is parked.
        log.info("event %s is already %s; not sending it again", event_id, event["status"])
        return event["status"]
    attempt = event["attempts"] + 1
    route = w.router.by_name.get(event["route"])
    if route is None:
        record = {"attempt": attempt, "at": time.time(), "duration": 0.0, "status_code": None,
                  "error": f"route {event['route']!r} no longer exists; restore it and replay"}
        _journal_verdict(w, event, record, Outcome(DEAD, reason=record["error"]))
        return DEAD
    record = send(w.session, route, route.endpoint.render(event["tag"]), event, attempt)
    outcome = classify(route, attempt, record.get("status_code"), record.pop("retry_after", None))
    _journal_verdict(w, event, record, outcome)
    if outcome.verdict in (DELIVERED, DEAD):
        return outcome.verdict
    raise RetryLater(outcome.delay, str(record.get("status_code") or record.get("error")))
