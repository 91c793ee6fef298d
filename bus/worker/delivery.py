"""The deliver task: load the event, send one attempt, classify the answer, tell the journal."""
from __future__ import annotations

import functools
import gzip
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urljoin, urlsplit

import orjson
from celery import Task
from celery.exceptions import Reject

from .. import archive, captured, endpoints, journal, logs, settings, signing
from ..broker.messages import DELIVER_TASK, GROUP_SIZE, new_message
from ..celery import app
from ..errors import ArchiveUnavailable, DeadLettered, NoRoute
from ..routes import VISIBILITY_MARGIN, Route, Router, event_id, load_configured
from ..wire.pipelined import SharedPipe
from . import outbound, task_outcome
from .breaker_gate import Breakers, endpoint_failed
from .classify import Outcome, classify
from .deadline import AttemptDeadline, Deadline
from .lane_run import LANE_RUN_GROUPS, LaneRun
from .verdict import Verdict, from_journal

log = logging.getLogger("bus.delivery")
# A copy sent with `bus replay --to` (a staging service) is tried this many
# times, a few seconds apart, as Celery retries: few and short, so holding them
# in worker memory is harmless.
COPY_ATTEMPTS = 5
COPY_MAX_DELAY = 10.0
MAX_REDIRECTS = 5
INTERNAL_ERROR_DELAY = 30
USER_AGENT = "bus-delivery"


@dataclass(frozen=True)
class Worker:
    """What a worker process needs, built once after fork."""

    settings: settings.Settings
    router: Router
    redis: Any
    # The per-attempt script goes through this (no redis-py: ~0.1 ms of CPU less per event).
    pipe: SharedPipe
    pools: outbound.Pools


_lock = threading.Lock()
_worker: Worker | None = None
_last_sweep = 0.0
SWEEP_EVERY = 60.0


def worker() -> Worker:
    global _worker
    with _lock:
        if _worker is None:
            config = settings.load()
            _worker = Worker(
                settings=config,
                router=load_configured(config),
                # A worker process serves the routes of one shard (BUS_WORKER_SHARD): its broker's Redis.
                redis=journal.connect(config.worker_redis, config.redis_timeout),
                pipe=SharedPipe(config.worker_redis, config.redis_timeout),
                pools=outbound.Pools(config.outbound),
            )
        return _worker


def send(pools: outbound.Pools, route: Route, url: str, event: dict[str, Any], attempt: int,
         extra_headers: dict[str, str] | None = None) -> tuple[dict[str, Any], str | None]:
    """One HTTP attempt; returns the attempt record (never raises for network trouble) and the answer's
    Retry-After: classify reads that one, the journal does not keep it.
    A request bus proxy captured is sent as it came (its method, path, query, headers and body) to
    `url`'s origin and path prefix, with its X-Request-Id and the route's signature; none of its headers."""
    if event.get("request"):
        request = captured.Request.from_json(event["request"])
        replayed = captured.replay_headers(request, event["id"], extra_headers)
        if route.signing_keys:  # signed as the proxy signed it live (copies go without: Route.for_copies)
            replayed.update(signing.headers(event["id"], event["body"], route.signing_keys, time.time()))
        return _attempt(pools, route, captured.target(url, request), event["body"], replayed, attempt, request.method)
    headers = {
        "User-Agent": USER_AGENT,
        **route.headers,
        **route.secret_headers,
        "Content-Type": route.content_type,
        # A destination's copy goes with the event's own id (what the producer was given), and its name.
        "X-Request-Id": event_id(event["id"]),
        **({"X-Bus-Destination": route.destination} if route.destination else {}),
        "X-Bus-Tag": event["tag"],
        "X-Bus-Attempt": str(attempt),
        **(extra_headers or {}),
    }
    if route.signing_keys:
        # Signed as the JSON it is, before any compression: a receiver decodes the body, then verifies.
        headers.update(signing.headers(event_id(event["id"]), event["body"], route.signing_keys, time.time()))
    body = event["body"]
    if route.compress == "gzip":
        headers["Content-Encoding"] = "gzip"
        # Level 6 (zlib's default, and Fluentd's out_http's); mtime 0 so every attempt sends the same bytes.
        body = gzip.compress(body, compresslevel=6, mtime=0)
    return _attempt(pools, route, url, body, headers, attempt)


def _attempt(pools: outbound.Pools, route: Route, url: str, body: bytes, headers: dict[str, str], attempt: int,
             method: str | None = None) -> tuple[dict[str, Any], str | None]:
    record: dict[str, Any] = {"attempt": attempt, "at": time.time(), "url": url}
    retry_after = None
    started = time.monotonic()
    # One deadline for the whole attempt, redirects included (deadline.py).
    deadline = Deadline.after(route.open_timeout + route.read_timeout)
    try:
        for _ in range(MAX_REDIRECTS + 1):
            resp = outbound.open_response(pools, route, url, headers, body, deadline, method)
            target = _same_origin_redirect(url, resp) if route.follow_redirects else None
            if target is None:
                break
            outbound.finish(pools, resp)
            url = record["url"] = target
        answer = b""
        try:
            # Keep only the first bytes: a huge error page must not fill worker memory.
            answer = resp.read(journal.RESPONSE_KEEP)
        except (OSError, AttemptDeadline) as exc:
            # The status line arrived, so the endpoint has answered and its status decides, as
            # for a body we never read past 2 KiB. Escaping here would fail the task, and Celery
            # acks a failed task: the event would be lost.
            record["response_error"] = f"{type(exc).__name__}: {exc}"[:500]
        finally:
            outbound.finish(pools, resp)
        record.update(status_code=resp.status, response=answer.decode("utf-8", "replace"))
        retry_after = resp.headers.get("retry-after")
        if resp.headers.get("location"):
            record["location"] = resp.headers["location"][:500]
    except outbound.NotConnected as exc:
        # The origin took no connection: its breaker counts it, not the path's (breaker_gate.py).
        record.update(status_code=None, error=str(exc)[:500], phase="connect")
    except (OSError, ValueError, AttemptDeadline) as exc:
        # No answer: timed out, reset, garbled (ValueError: a URL or header that cannot be sent).
        record.update(status_code=None, error=f"{type(exc).__name__}: {exc}"[:500])
    record["duration"] = round(time.monotonic() - started, 4)
    # The journal shows attempts to every @journal reader: tokens in a URL's query or user info stay out.
    for key in ("url", "location", "error"):
        if record.get(key):
            record[key] = logs.redact(record[key])
    return record, retry_after


def _same_origin_redirect(url: str, resp: outbound.Answer) -> str | None:
    """Where a redirect points, if it stays on the endpoint's scheme, host and port.

    Another origin is never followed: the route's secret headers and signed body
    are meant for the endpoint's host alone.
    """
    if resp.status not in (301, 302, 303, 307, 308) or not resp.headers.get("location"):
        return None
    target = urljoin(url, resp.headers["location"])
    a, b = urlsplit(url), urlsplit(target)
    return target if (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port) else None


def _log(event: dict[str, Any], record: dict[str, Any], outcome: Outcome, copy_to: str | None = None) -> None:
    """One line per attempt. Never the request's headers (the route's credentials) nor query values (tokens)."""
    fields: dict[str, Any] = {
        "event_id": event["id"], "tag": event["tag"], "route": event["route"], "attempt": record["attempt"],
        "status_code": record.get("status_code"), "duration": record["duration"], "verdict": outcome.verdict,
    }
    if record.get("error"):
        fields["error"] = logs.redact(record["error"])
    if outcome.delay:
        fields["retry_in"] = round(outcome.delay, 3)
    if copy_to:
        fields["copy_to"] = logs.redact(copy_to)
    log.info(
        "event %s tag=%s route=%s attempt=%d result=%s duration=%.3fs verdict=%s%s%s",
        event["id"], event["tag"], event["route"], record["attempt"],
        fields["status_code"] or fields.get("error"), record["duration"], outcome.verdict,
        f" delay={outcome.delay:.1f}s" if outcome.delay else "", f" copy_to={fields['copy_to']}" if copy_to else "",
        extra={logs.FIELDS: fields},
    )


def _journal_verdict(w: Worker, route: Route | None, event: dict[str, Any], record: dict[str, Any],
                     outcome: Outcome, endpoint: endpoints.EndpointKey | None = None,
                     lanes: LaneRun | None = None) -> Verdict | None:
    """Record the attempt and log it. An answer from `endpoint` closes its breaker in the same step;
    a failure is told to the breaker by whoever sent the request (once per request).
    None when recorded; else why the journal refused (journal.record_attempt), which is then the verdict."""
    status = {Verdict.DELIVERED: journal.DELIVERED, Verdict.DEAD: journal.DEAD}.get(outcome.verdict, journal.RETRYING)
    if outcome.reason:
        record = {**record, "reason": outcome.reason}  # only a dead attempt has one: the caller's stays as sent
    refused, taken = journal.record_attempt_taking(
        w.pipe, event, record, status, w.settings.retention,
        retry_at=time.time() + outcome.delay if outcome.verdict == Verdict.RETRY else None,
        endpoint_alive=route is not None and not endpoint_failed(record, route), endpoint=endpoint,
        # An ordered route's next event of the lane goes next from this task (`lanes`), or in a message.
        lane_group=journal.lane_group(route.name, route.group_size) if route is not None and route.ordered else None,
        take=lanes.offer() if lanes is not None else None,
    )
    if lanes is not None:
        lanes.took(taken)
    _log(event, record, outcome)
    if refused:
        # Sent (or dead-lettered) by this task, but meanwhile another copy of its message finished
        # the event, or a purge deleted it. The journal keeps what that one did.
        log.warning("event %s: attempt %d not recorded (verdict %s): the event is %s meanwhile",
                    event["id"], record["attempt"], outcome.verdict, refused)
        return from_journal(refused)
    return None


def _park(w: Worker, event: dict[str, Any], until: float, task_id: str, reason: str) -> Verdict:
    """Park the event on the retry schedule (journal.park): WAITING, or why the journal refused."""
    refused = journal.park(w.redis, event, until, reason, task=task_id)
    return _not_sent_unless_waiting(event["id"], from_journal(refused) if refused else Verdict.WAITING)


def _not_sent_unless_waiting(event_id: str, verdict: Verdict) -> Verdict:
    """A park's verdict, logged when the journal refused it (another copy of the message moved the event)."""
    if verdict != Verdict.WAITING:
        _not_sent(event_id, verdict)
    return verdict


def _send_copy(task: Task, w: Worker, route: Route, event: dict[str, Any], to: str) -> Verdict:
    """A replay to another URL (a staging copy): its own attempts, the event's state untouched, and none
    of the route's credentials or signature (Route.for_copies)."""
    attempt = task.request.retries + 1
    sent, retry_after = send(w.pools, route.for_copies(), to, event, attempt, {"X-Bus-Replay": "copy"})
    outcome = classify(replace(route, max_attempts=COPY_ATTEMPTS), attempt, sent.get("status_code"), retry_after)
    record = {**sent, "verdict": outcome.verdict}
    if not journal.record_copy(w.redis, event["id"], record):
        _archive_copy(w, event["id"], record)
    _log(event, record, outcome, copy_to=to)
    return outcome.verdict


def _archived(task: Task, w: Worker, event_ids: list[str], events: list[dict[str, Any] | None], to: str
              ) -> list[dict[str, Any] | None]:
    """Copies (`to`) of events no longer in Redis are sent from the archive: replay --to works on
    the whole history. An archive that does not answer retries the message like a failed copy."""
    store = archive.store_for(w.settings)
    missing = [i for i, e in zip(event_ids, events) if e is None]
    if store is None or not missing:
        return events
    try:
        rows = {row.id: row for row in store.get_many(missing)}
    except ArchiveUnavailable as exc:
        log.warning("copies to %s of %d archived events wait: %s", logs.redact(to), len(missing), exc)
        raise task.retry(countdown=min(2 ** task.request.retries, COPY_MAX_DELAY), max_retries=COPY_ATTEMPTS - 1) from exc
    return [e if e is not None else _from_row(rows[i]) if i in rows else None for i, e in zip(event_ids, events)]


def _from_row(row: Any) -> dict[str, Any]:
    return {"id": row.id, "tag": row.tag, "route": row.route, "body": row.body, "headers": row.headers,
            "received": row.received, "status": row.status, "attempts": row.attempts, "round": row.round,
            "last": row.last}


def _archive_copy(w: Worker, event_id: str, record: dict[str, Any]) -> None:
    """Keep a copy's record on the archived row of its event (see journal.record_copy)."""
    store = archive.store_for(w.settings)
    try:
        if store is None or not store.add_copy(event_id, orjson.dumps(journal.copy_record(record))):
            log.warning("event %s: copy sent, but the event is in neither Redis nor the archive to record it", event_id)
    except ArchiveUnavailable as exc:
        log.warning("event %s: copy sent, its record not kept: %s", event_id, exc)


def _maybe_sweep(w: Worker) -> None:
    """Keep retention-expired ids out of the indexes even when nobody lists events."""
    global _last_sweep
    now = time.monotonic()
    if now - _last_sweep < SWEEP_EVERY:
        return
    _last_sweep = now
    try:
        journal.sweep(w.redis, w.settings.retention)
    except journal.REDIS_DOWN:
        log.warning("journal sweep skipped: Redis unreachable")


def _route_of_queue(task: Task) -> str:
    queue = (task.request.delivery_info or {}).get("routing_key") or ""
    return queue[4:] if queue.startswith("bus.") else ""


def _dead_unsent(w: Worker, event: dict[str, Any], attempt: int, reason: str) -> Verdict:
    """Dead-letter an event that cannot even be sent, recording why as its attempt: DEAD, or why
    the journal refused."""
    record = {"attempt": attempt, "at": time.time(), "duration": 0.0, "status_code": None, "error": reason}
    return _journal_verdict(w, None, event, record, Outcome(Verdict.DEAD, reason=reason)) or Verdict.DEAD


def _deliver_following(task: Task, w: Worker, event: dict[str, Any], gate: Breakers, to: str | None, probe: bool,
                       lanes: LaneRun | None, spread: Callable[[], None] | None = None
                       ) -> tuple[list[str], list[Verdict]]:
    """One event of the task's group, then the next events of its lane the task took (LaneRun), each
    right after the one before it; their ids and verdicts. `spread` runs once, before the first event
    taken: the group's other events (heads of other lanes) leave this task for a message of their own."""
    ids, verdicts = [event["id"]], [_deliver_one(task, w, event, gate, to, probe, lanes)]
    if spread is not None and lanes is not None and lanes.taken:
        spread()
    while lanes is not None and lanes.taken:
        event_id, taken = lanes.taken.pop()
        ids.append(event_id)
        verdicts.append(_deliver_one(task, w, taken, gate, to, probe, lanes))
    return ids, verdicts


def _deliver_one(task: Task, w: Worker, event: dict[str, Any], gate: Breakers, to: str | None, probe: bool,
                 lanes: LaneRun | None = None) -> Verdict:
    """One event of the task's group; returns its verdict."""
    route = w.router.by_name.get(event["route"])
    if to is not None:
        if route is None:
            log.warning("event %s: route %r no longer exists; copy to %s not sent", event["id"], event["route"],
                        logs.redact(to))
            return Verdict.DEAD
        return _send_copy(task, w, route, event, to)
    if event["status"] in (journal.DELIVERED, journal.DEAD):
        # A redelivery after a crash: the endpoint already has it, or it is parked.
        done = from_journal(event["status"])
        _not_sent(event["id"], done)
        return done
    attempt = event["attempts"] + 1
    # Parking and dead-lettering come before _recheck: their scripts check the event's status (and
    # park its owner) themselves, so a redelivered copy cannot move an event another copy has moved.
    if route is None:
        gone = f"route {event['route']!r} no longer exists; restore it and replay"
        return _dead_unsent(w, event, attempt, gone)
    try:
        url = route.endpoint.render(event["tag"])
    except NoRoute as exc:
        # The route changed since the event was accepted and can no longer build its URL.
        return _dead_unsent(w, event, attempt, str(exc))
    key = endpoints.key_for(route.name, url)
    held = gate.held_back(event, key, probe, task.request.id or "")
    if held:
        # Its endpoint is failing: wait in Redis for the breaker instead of hammering it.
        return _not_sent_unless_waiting(event["id"], held)
    not_sent, event = _recheck(task, w, [event])[0]
    if not_sent:
        return not_sent
    attempt = event["attempts"] + 1
    record, retry_after = send(w.pools, route, url, event, attempt)
    # Backoff and max_attempts count from the last replay, so a replayed event gets a fresh budget.
    outcome = classify(route, attempt - event["round"], record.get("status_code"), retry_after)
    refused = _journal_verdict(w, route, event, record, outcome, key, lanes)
    gate.after_attempt(route, key, record, probe)
    return refused or outcome.verdict


def _recheck(task: Task, w: Worker, events: list[dict[str, Any]]
             ) -> list[tuple[Verdict | None, dict[str, Any]]]:
    """Right before sending, whether this task still sends the events (journal.recheck_events): per
    event None and the event to send (its attempts and status as the journal has them), else the
    verdict of an event not sent and the event as it was.

    Only a redelivered message checks (kombu restored it, or lost-task recovery made it): another
    copy of it may be running, and recovery may hand its events to a new message while it runs.
    A first delivery was checked when it loaded its events (_mine), and saves the round trip."""
    if not _redelivered(task):
        return [(None, event) for event in events]
    checked: list[tuple[Verdict | None, dict[str, Any]]] = []
    for event, (refused, fresh) in zip(events, journal.recheck_events(w.pipe, events, task.request.id or "")):
        if refused is None:
            checked.append((None, fresh))
        else:
            why = from_journal(refused)
            _not_sent(event["id"], why)
            checked.append((why, event))
    return checked


def _redelivered(task: Task) -> bool:
    return bool((task.request.delivery_info or {}).get("redelivered"))


def _not_sent(event_id: str, why: Verdict) -> None:
    """The log line of an event a task leaves alone: DELIVERED or DEAD already, GONE from the
    journal, or SUPERSEDED (see _mine)."""
    if why == Verdict.GONE:
        log.warning("event %s is not in the journal (expired or purged); nothing to deliver", event_id)
    elif why == Verdict.SUPERSEDED:
        log.info("event %s is no longer this task's to send (attempted, parked or handed to another task "
                 "since this message was queued); leaving it", event_id)
    else:
        log.info("event %s is already %s; not sending it again", event_id, why)


def _mine(task: Task, event_ids: list[str], events: list[dict[str, Any] | None]
          ) -> tuple[list[str], list[dict[str, Any] | None], int]:
    """The task's events that its message still sends, and how many it no longer does.

    An event's record names the message that sends its next attempt (journal/store.py, the field `task`).
    Another name means this message came back after its work was done, its ack lost in a crash
    (Redis restores it from `unacked`), or was replaced by a hand-off, the retry schedule, a
    replay or lost-task recovery; sending would race the message that now has the event."""
    keep_ids: list[str] = []
    keep: list[dict[str, Any] | None] = []
    for one_id, event in zip(event_ids, events):
        owner = event.get("task") if event is not None else None
        if owner is not None and owner != task.request.id:
            _not_sent(one_id, Verdict.SUPERSEDED)
            continue
        keep_ids.append(one_id)
        keep.append(event)
    return keep_ids, keep, len(event_ids) - len(keep_ids)


def _deliver_batch(task: Task, w: Worker, route: Route, batch: list[dict[str, Any]], gate: Breakers,
                   probe: bool) -> list[Verdict]:
    """Events of one tag in one request (route batch_max), as Fluentd's out_http json_array sends
    them: a JSON array of their bodies (NDJSON lines for an ndjson content type). The answer
    decides for every event of the batch, each journaled with its own attempt number; the
    breaker counts the request once. Returns the verdicts."""
    try:
        url = route.endpoint.render(batch[0]["tag"])
    except NoRoute as exc:
        return [_dead_unsent(w, event, event["attempts"] + 1, str(exc)) for event in batch]
    key = endpoints.key_for(route.name, url)
    if not probe and gate.until(key) > time.time():  # each parked, or due on the schedule if it closed meanwhile
        return [_not_sent_unless_waiting(event["id"], gate.hold(event, key, task.request.id or "")) for event in batch]
    checked = _recheck(task, w, batch)
    verdicts = {i: refused for i, (refused, _) in enumerate(checked) if refused}  # those not sent
    sending = [i for i in range(len(checked)) if i not in verdicts]
    if not sending:
        return [verdicts[i] for i in range(len(checked))]
    batch = [checked[i][1] for i in sending]
    attempts = [event["attempts"] + 1 for event in batch]
    ids = [event_id(event["id"]) for event in batch]
    bodies = [event["body"] for event in batch]
    body = b"\n".join(bodies) + b"\n" if "ndjson" in route.content_type else b"[" + b",".join(bodies) + b"]"
    # The request has an id of its own (X-Request-Id, and webhook-id when signed); the events' ids
    # travel in X-Bus-Event-Ids, in the order of the body.
    request = {"id": str(uuid.uuid4()), "tag": batch[0]["tag"], "body": body}
    sent, retry_after = send(w.pools, route, url, request, max(attempts), {"X-Bus-Event-Ids": ",".join(ids)})
    for i, event, attempt in zip(sending, batch, attempts):
        record = {**sent, "attempt": attempt, "request_id": request["id"], "batch": len(batch)}
        outcome = classify(route, attempt - event["round"], record.get("status_code"), retry_after)
        verdicts[i] = _journal_verdict(w, route, event, record, outcome, key) or outcome.verdict
    gate.after_attempt(route, key, sent, probe)
    return [verdicts[i] for i in range(len(checked))]


def _units(route: Route | None, events: list[dict[str, Any] | None], to: str | None) -> list[tuple[list[int], bool]]:
    """The task's events in sending order: (indexes, batched) per request. A route with batch_max
    sends events still to be sent as arrays (even of one, as out_http's json_array does), runs
    of one tag at most batch_max long; anything else one event per request."""
    def sendable(event: dict[str, Any] | None) -> bool:
        return event is not None and event["status"] not in (journal.DELIVERED, journal.DEAD)

    batch_max = route.batch_max if route is not None else 1
    batching = batch_max > 1 and to is None
    units: list[tuple[list[int], bool]] = []
    for i, event in enumerate(events):
        if event is None or not (batching and sendable(event)):
            units.append(([i], False))
            continue
        last, batched = units[-1] if units else ([], False)
        first = events[last[0]] if last else None
        if batched and len(last) < batch_max and first is not None and first["tag"] == event["tag"]:
            last.append(i)
        else:
            units.append(([i], True))
    return units


def _lane_run(task: Task, w: Worker, route: Route | None, deadline: float) -> LaneRun | None:
    """An ordered route's task (one event per request) sends its lanes' next events itself (LaneRun), up
    to LANE_RUN_GROUPS groups' worth, each on a lease of one attempt's longest time."""
    if route is None or not route.ordered or route.batch_max > 1:
        return None
    return LaneRun(task.request.id or "", deadline, route.open_timeout + route.read_timeout + VISIBILITY_MARGIN,
                   route.group_size * LANE_RUN_GROUPS)


def _group_deadline(w: Worker, route_name: str) -> float:
    """When this task must stop starting attempts: its last one must end before the visibility
    timeout, or kombu hands the task to a second worker while this one still runs it."""
    route = w.router.by_name.get(route_name)
    attempt = (route.open_timeout + route.read_timeout) if route else 0.0
    return time.monotonic() + w.settings.visibility_timeout - VISIBILITY_MARGIN - attempt


def _hand_off(w: Worker, route_name: str, rest: list[dict[str, Any]], to: str | None, task_id: str,
              why: str = "of a slow group") -> None:
    """Queue the events this task has no time left for as a task of their own (same ids)."""
    if not rest:
        return
    queue = journal.queue_name(route_name)
    message = new_message([(e["id"], e["tag"], e["attempts"] + 1) for e in rest], queue, to=to)
    if to is None:
        journal.hand_off(w.redis, route_name, message, task_id)
    else:
        journal.enqueue(w.redis, route_name, [message.data])
    log.info("handing %d events %s to a new task of route %s", len(rest), why, route_name)


def _spread(w: Worker, route_name: str, rest: list[dict[str, Any]], task_id: str, handed: list[int], count: int
            ) -> None:
    """The rest of an ordered route's group (heads of other lanes) to a new message, so that another pool
    process sends them while this task follows its lane (hand_off.lua: only those still this task's move)."""
    _hand_off(w, route_name, rest, None, task_id, "of other lanes, this task following one")
    handed.append(count)


def _last_answers(w: Worker, event_ids: list[str]) -> list[str]:
    try:
        return [str(s["last"]) for s in journal.summaries(w.redis, event_ids)]
    except journal.REDIS_DOWN:
        return ["unknown: journal unreachable"] * len(event_ids)


# throws: a dead letter is an outcome the journal holds, logged without a traceback (one line at INFO).
# acks_on_failure: a task that raised has journaled its outcome (task_outcome.py); a celeryconfig.py
# turning it off must not change that.
@app.task(name=DELIVER_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
          throws=(DeadLettered,), acks_on_failure=True)
def deliver(self: Task, event_ids: list[str], to: str | None = None, probe: bool = False) -> str:
    """Deliver a group of events of one route, one attempt each. A retryable failure puts that
    event on the route's retry schedule (journal); the scheduler queues it again when it is due.

    With `to`, send copies there instead (bus replay --to) and leave the events' state alone.
    `probe` marks the one event a half-open breaker lets through.
    """
    w = worker()
    _maybe_sweep(w)
    route_name = _route_of_queue(self)
    route = w.router.by_name.get(route_name)
    deadline = _group_deadline(w, route_name)
    try:
        events, (open_now, complete) = journal.load_many(w.pipe, event_ids, route_name,
                                                         route.group_size if route else GROUP_SIZE, time.time())
        gate = Breakers(w.redis, open_now, complete)
        if to is not None:
            events = _archived(self, w, event_ids, events, to)
        verdicts: dict[Verdict, int] = {}
        ids_by_verdict: dict[Verdict, list[str]] = {}
        if to is None:  # a copy leaves the event's state alone, its owner included
            event_ids, events, superseded = _mine(self, event_ids, events)
            if superseded:
                verdicts[Verdict.SUPERSEDED] = superseded
            if route is not None and not probe and route.batch_max <= 1 and not route.ordered:
                gate.hold_ahead(route, events, self.request.id or "")  # one script per open breaker, not per event
        copies_to_retry = []
        lanes = _lane_run(self, w, route, deadline) if to is None else None
        handed: list[int] = []  # how many of the group a lane's run handed to a new message (_spread)
        for n, (unit, batched) in enumerate(_units(route, events, to)):
            if n and time.monotonic() > deadline:
                rest = [e for e in events[unit[0]:] if e is not None and e["id"] not in gate.settled]  # held: not sent
                _hand_off(w, route_name, rest, to, self.request.id or "")
                verdicts[Verdict.HANDED_OFF] = len(event_ids) - unit[0]
                break
            ids, unit_events = [event_ids[i] for i in unit], [events[i] for i in unit]
            try:
                # A failure may open its endpoint's breaker: the rest of the group for that endpoint then
                # waits instead of being sent, and the group's other endpoints go on.
                if batched:
                    assert route is not None  # only a route's batch_max makes a batch (_units)
                    outcomes = _deliver_batch(self, w, route, [e for e in unit_events if e is not None], gate, probe)
                elif unit_events[0] is None:
                    _not_sent(ids[0], Verdict.GONE)
                    outcomes = [Verdict.MISSING]
                else:
                    # A task that follows one lane hands the heads of its group's other lanes to a new message
                    # at once: held here they would wait for this lane's run, the other pool process idle.
                    rest = [e for e in events[unit[0] + 1:] if e is not None] if lanes is not None else []
                    spread = functools.partial(_spread, w, route_name, rest, self.request.id or "", handed,
                                               len(event_ids) - unit[0] - 1) if rest else None
                    ids, outcomes = _deliver_following(self, w, unit_events[0], gate, to, probe, lanes, spread)
            except journal.REDIS_DOWN:
                raise
            except Exception:
                # A bug must not lose an event: Celery acks a failed task, so park them for a later try.
                log.exception("events %s: unexpected error while delivering; trying again in %ss",
                              " ".join(ids), INTERNAL_ERROR_DELAY)
                for event in unit_events:
                    if event is not None:
                        _park(w, event, time.time() + INTERNAL_ERROR_DELAY, self.request.id or "",
                              "waiting: internal error, see worker log")
                outcomes = [Verdict.ERROR] * len(unit)
            for event_id, verdict in zip(ids, outcomes):
                verdicts[verdict] = verdicts.get(verdict, 0) + 1
                ids_by_verdict.setdefault(verdict, []).append(event_id)
                if to is not None and verdict == Verdict.RETRY:
                    copies_to_retry.append(event_id)
            if handed:
                verdicts[Verdict.HANDED_OFF] = handed[0]
                break
    except journal.REDIS_DOWN as exc:
        # Leave the message to Redis: rejected back to its queue (events already journaled are
        # skipped when it comes back), or restored after the visibility timeout.
        raise Reject(f"journal unreachable: {exc}", requeue=True) from exc
    if copies_to_retry:
        raise self.retry(args=[copies_to_retry], kwargs={"to": to}, max_retries=COPY_ATTEMPTS - 1,
                         countdown=min(2 ** self.request.retries, COPY_MAX_DELAY))
    summary = task_outcome.summary(verdicts)
    if to is not None:
        return summary  # copies (replay --to) retry as Celery tasks above; their verdicts stay a result
    return task_outcome.finish(summary, ids_by_verdict, lambda ids: _last_answers(w, ids))
