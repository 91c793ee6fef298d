"""The deliver task: load the event, send one attempt, classify the answer, tell the journal."""
from __future__ import annotations

import functools
import gzip
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urljoin, urlsplit

from celery import Task
from celery.exceptions import Reject

from .. import archive, captured, endpoints, journal, logs, signing
from ..broker.messages import DELIVER_TASK, GROUP_SIZE, new_message
from ..celery import app
from ..errors import ArchiveUnavailable, DeadLettered, NoRoute
from ..journal import Attempt, Event
from ..routes import Route, event_id
from . import outbound, task_outcome
from .breaker_gate import Breakers, endpoint_failed
from .classify import Outcome, classify
from .deadline import AttemptDeadline, Deadline
from .group_run import GroupRun, group_deadline
from .lane_run import LaneRun
from .process import Worker, worker
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


def send(pools: outbound.Pools, route: Route, url: str, event: Event, attempt: int,
         extra_headers: dict[str, str] | None = None) -> tuple[Attempt, str | None]:
    """One HTTP attempt; returns what it sent and got (never raises for network trouble) and the answer's
    Retry-After: classify reads that one, the journal does not keep it.
    A request bus proxy captured is sent as it came (its method, path, query, headers and body) to
    `url`'s origin and path prefix, with its X-Request-Id and the route's signature; none of its headers."""
    if event.request:
        request = captured.Request.from_json(event.request)
        replayed = captured.replay_headers(request, event.id, extra_headers)
        if route.signing_keys:  # signed as the proxy signed it live (copies go without: Route.for_copies)
            replayed.update(signing.headers(event.id, event.body, route.signing_keys, time.time()))
        return _attempt(pools, route, captured.target(url, request), event.body, replayed, attempt, request.method)
    return send_body(pools, route, url, event_id(event.id), event.tag, event.body, attempt, extra_headers)


def send_body(pools: outbound.Pools, route: Route, url: str, request_id: str, tag: str, body: bytes, attempt: int,
              extra_headers: dict[str, str] | None = None) -> tuple[Attempt, str | None]:
    """send for a body of the route's content type: one event's, or a batch's (its request's own id)."""
    headers = {
        "User-Agent": USER_AGENT,
        **route.headers,
        **route.secret_headers,
        "Content-Type": route.content_type,
        # A destination's copy goes with the event's own id (what the producer was given), and its name.
        "X-Request-Id": request_id,
        **({"X-Bus-Destination": route.destination} if route.destination else {}),
        "X-Bus-Tag": tag,
        "X-Bus-Attempt": str(attempt),
        **(extra_headers or {}),
    }
    if route.signing_keys:
        # Signed as the JSON it is, before any compression: a receiver decodes the body, then verifies.
        headers.update(signing.headers(request_id, body, route.signing_keys, time.time()))
    if route.compress == "gzip":
        headers["Content-Encoding"] = "gzip"
        # Level 6 (zlib's default, and Fluentd's out_http's); mtime 0 so every attempt sends the same bytes.
        body = gzip.compress(body, compresslevel=6, mtime=0)
    return _attempt(pools, route, url, body, headers, attempt)


def _attempt(pools: outbound.Pools, route: Route, url: str, body: bytes, headers: dict[str, str], attempt: int,
             method: str | None = None) -> tuple[Attempt, str | None]:
    at = time.time()
    status_code = response = response_error = location = error = retry_after = phase = None
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
            url = target
        answer = b""
        try:
            # Keep only the first bytes: a huge error page must not fill worker memory.
            answer = resp.read(journal.RESPONSE_KEEP)
        except (OSError, AttemptDeadline) as exc:
            # The status line arrived, so the endpoint has answered and its status decides, as
            # for a body we never read past 2 KiB. Escaping here would fail the task, and Celery
            # acks a failed task: the event would be lost.
            response_error = f"{type(exc).__name__}: {exc}"[:500]
        finally:
            outbound.finish(pools, resp)
        status_code, response = resp.status, answer.decode("utf-8", "replace")
        retry_after = resp.headers.get("retry-after")
        if resp.headers.get("location"):
            location = resp.headers["location"][:500]
    except outbound.NotConnected as exc:
        # The origin took no connection: its breaker counts it, not the path's (breaker_gate.py).
        error, phase = str(exc)[:500], "connect"
    except (OSError, ValueError, AttemptDeadline) as exc:
        # No answer: timed out, reset, garbled (ValueError: a URL or header that cannot be sent).
        error = f"{type(exc).__name__}: {exc}"[:500]
    # The journal shows attempts to every @journal reader: tokens in a URL's query or user info stay out.
    return Attempt(attempt, at, logs.redact(url) if url else url, status_code, response, response_error,
                   logs.redact(location) if location else None, logs.redact(error) if error else None,
                   round(time.monotonic() - started, 4), phase=phase), retry_after


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


def _log(event: Event, record: Attempt, outcome: Outcome, copy_to: str | None = None) -> None:
    """One line per attempt. Never the request's headers (the route's credentials) nor query values (tokens)."""
    fields: dict[str, Any] = {
        "event_id": event.id, "tag": event.tag, "route": event.route, "attempt": record.attempt,
        "status_code": record.status_code, "duration": record.duration, "verdict": outcome.verdict,
    }
    if record.error:
        fields["error"] = logs.redact(record.error)
    if outcome.delay:
        fields["retry_in"] = round(outcome.delay, 3)
    if copy_to:
        fields["copy_to"] = logs.redact(copy_to)
    log.info(
        "event %s tag=%s route=%s attempt=%d result=%s duration=%.3fs verdict=%s%s%s",
        event.id, event.tag, event.route, record.attempt,
        fields["status_code"] or fields.get("error"), record.duration, outcome.verdict,
        f" delay={outcome.delay:.1f}s" if outcome.delay else "", f" copy_to={fields['copy_to']}" if copy_to else "",
        extra={logs.FIELDS: fields},
    )


def _journal_verdict(run: GroupRun, route: Route | None, event: Event, record: Attempt, outcome: Outcome,
                     endpoint: endpoints.EndpointKey | None = None, lanes: LaneRun | None = None,
                     behind: endpoints.EndpointKey | None = None) -> Verdict | None:
    """Record the attempt and log it. An answer from `endpoint` closes its breaker in the same step;
    a failure is told to the breaker by whoever sent the request (once per request). `behind`: the
    breaker a failed probe's failure reopened (Breakers.journaled), which a retry parks it behind.
    None when recorded; else why the journal refused (journal.record_attempt), which is then the verdict."""
    w = run.worker
    status = {Verdict.DELIVERED: journal.DELIVERED, Verdict.DEAD: journal.DEAD}.get(outcome.verdict, journal.RETRYING)
    if outcome.reason:
        record = replace(record, reason=outcome.reason)  # only a dead attempt has one: the caller's stays as sent
    refused, taken = journal.record_attempt_taking(
        w.pipe, event, record, status, w.settings.retention,
        retry_at=time.time() + outcome.delay if outcome.verdict == Verdict.RETRY else None,
        endpoint_alive=route is not None and not endpoint_failed(record, route), endpoint=endpoint,
        # An ordered route's next event of the lane goes next from this task (`lanes`), or in a message.
        lane_group=journal.lane_group(route.name, route.group_size) if route is not None and route.ordered else None,
        take=lanes.offer() if lanes is not None else None, behind=behind,
    )
    if lanes is not None:
        lanes.took(taken)
    _log(event, record, outcome)
    if refused:
        # Sent (or dead-lettered) by this task, but meanwhile another copy of its message finished
        # the event, or a purge deleted it. The journal keeps what that one did.
        log.warning("event %s: attempt %d not recorded (verdict %s): the event is %s meanwhile",
                    event.id, record.attempt, outcome.verdict, refused)
        return from_journal(refused)
    return None


def _park(run: GroupRun, event: Event, until: float, reason: str) -> Verdict:
    """Park the event on the retry schedule (journal.park): WAITING, or why the journal refused."""
    refused = journal.park(run.worker.redis, event, until, reason, task=run.task_id)
    return _not_sent_unless_waiting(event.id, from_journal(refused) if refused else Verdict.WAITING)


def _not_sent_unless_waiting(event_id: str, verdict: Verdict) -> Verdict:
    """A park's verdict, logged when the journal refused it (another copy of the message moved the event)."""
    if verdict != Verdict.WAITING:
        _not_sent(event_id, verdict)
    return verdict


def _send_copy(run: GroupRun, route: Route, event: Event, to: str) -> Verdict:
    """A replay to another URL (a staging copy): its own attempts, the event's state untouched, and none
    of the route's credentials or signature (Route.for_copies)."""
    w = run.worker
    attempt = run.task.request.retries + 1
    sent, retry_after = send(w.pools, route.for_copies(), to, event, attempt, {"X-Bus-Replay": "copy"})
    outcome = classify(replace(route, max_attempts=COPY_ATTEMPTS), attempt, sent.status_code, retry_after)
    record = replace(sent, verdict=outcome.verdict)
    if not journal.record_copy(w.redis, event.id, record):
        _archive_copy(w, event.id, record)
    _log(event, record, outcome, copy_to=to)
    return outcome.verdict


def _archived(run: GroupRun, event_ids: list[str], events: list[Event | None], to: str) -> list[Event | None]:
    """Copies (`to`) of events no longer in Redis are sent from the archive: replay --to works on
    the whole history. An archive that does not answer retries the message like a failed copy."""
    store = archive.store_for(run.worker.settings)
    missing = [i for i, e in zip(event_ids, events) if e is None]
    if store is None or not missing:
        return events
    try:
        rows = {row.id: row for row in store.get_many(missing)}
    except ArchiveUnavailable as exc:
        log.warning("copies to %s of %d archived events wait: %s", logs.redact(to), len(missing), exc)
        task = run.task
        raise task.retry(countdown=min(2 ** task.request.retries, COPY_MAX_DELAY), max_retries=COPY_ATTEMPTS - 1) from exc
    return [e if e is not None else from_row(rows[i]) if i in rows else None for i, e in zip(event_ids, events)]


def from_row(row: archive.ArchivedEvent) -> Event:
    """The event of an archived row, to send a copy of. A request `bus proxy` captured keeps its own
    method, path and headers (its row has them), as the same copy sent while it was in Redis does."""
    return Event(row.id, row.tag, row.route, row.status, row.body, row.received, row.attempts, row.round,
                 row.headers, row.last, replayed=row.replayed, request=row.request)


def _archive_copy(w: Worker, event_id: str, record: Attempt) -> None:
    """Keep a copy's record on the archived row of its event (see journal.record_copy)."""
    store = archive.store_for(w.settings)
    try:
        if store is None or not store.add_copy(event_id, journal.copy_record(record).to_journal()):
            log.warning("event %s: copy sent, but the event is in neither Redis nor the archive to record it", event_id)
    except ArchiveUnavailable as exc:
        log.warning("event %s: copy sent, its record not kept: %s", event_id, exc)


def _route_of_queue(task: Task) -> str:
    queue = (task.request.delivery_info or {}).get("routing_key") or ""
    return queue[4:] if queue.startswith("bus.") else ""


def _dead_unsent(run: GroupRun, event: Event, attempt: int, reason: str) -> Verdict:
    """Dead-letter an event that cannot even be sent, recording why as its attempt: DEAD, or why
    the journal refused."""
    record = Attempt(attempt, time.time(), duration=0.0, error=reason)
    return _journal_verdict(run, None, event, record, Outcome(Verdict.DEAD, reason=reason)) or Verdict.DEAD


def _deliver_following(run: GroupRun, event: Event, spread: Callable[[], None] | None = None
                       ) -> tuple[list[str], list[Verdict]]:
    """One event of the task's group, then the next events of its lane the task took (LaneRun), each
    right after the one before it; their ids and verdicts. `spread` runs once, before the first event
    taken: the group's other events (heads of other lanes) leave this task for a message of their own."""
    lanes = run.lanes
    ids, verdicts = [event.id], [_deliver_one(run, event)]
    if spread is not None and lanes is not None and lanes.taken:
        spread()
    while lanes is not None and lanes.taken:
        taken_id, taken = lanes.taken.pop()
        ids.append(taken_id)
        verdicts.append(_deliver_one(run, taken))
    return ids, verdicts


def _deliver_one(run: GroupRun, event: Event) -> Verdict:
    """One event of the task's group; returns its verdict."""
    w = run.worker
    route = w.router.by_name.get(event.route)
    if run.to is not None:
        if route is None:
            log.warning("event %s: route %r no longer exists; copy to %s not sent", event.id, event.route,
                        logs.redact(run.to))
            return Verdict.DEAD
        return _send_copy(run, route, event, run.to)
    if event.status in (journal.DELIVERED, journal.DEAD):
        # A redelivery after a crash: the endpoint already has it, or it is parked.
        done = from_journal(event.status)
        _not_sent(event.id, done)
        return done
    attempt = event.attempts + 1
    # Parking and dead-lettering come before _recheck: their scripts check the event's status (and
    # park its owner) themselves, so a redelivered copy cannot move an event another copy has moved.
    if route is None:
        gone = f"route {event.route!r} no longer exists; restore it and replay"
        return _dead_unsent(run, event, attempt, gone)
    try:
        url = route.endpoint.render(event.tag)
    except NoRoute as exc:
        # The route changed since the event was accepted and can no longer build its URL.
        return _dead_unsent(run, event, attempt, str(exc))
    key = endpoints.key_for(route.name, url)
    held = run.gate.held_back(event, key, run.probe, run.task_id)
    if held:
        # Its endpoint is failing: wait in Redis for the breaker instead of hammering it.
        return _not_sent_unless_waiting(event.id, held)
    not_sent, event = _recheck(run, [event])[0]
    if not_sent:
        return not_sent
    attempt = event.attempts + 1
    record, retry_after = send(w.pools, route, url, event, attempt)
    # Backoff and max_attempts count from the last replay, so a replayed event gets a fresh budget.
    outcome = classify(route, attempt - event.round, record.status_code, retry_after)
    refused = run.gate.journaled(route, key, record, run.probe, lambda behind: _journal_verdict(
        run, route, event, record, outcome, key, run.lanes, behind))
    return refused or outcome.verdict


def _recheck(run: GroupRun, events: list[Event]) -> list[tuple[Verdict | None, Event]]:
    """Right before sending, whether this task still sends the events (journal.recheck_events): per
    event None and the event to send (its attempts and status as the journal has them), else the
    verdict of an event not sent and the event as it was.

    Only a redelivered message checks (kombu restored it, or lost-task recovery made it): another
    copy of it may be running, and recovery may hand its events to a new message while it runs.
    A first delivery was checked when it loaded its events (_mine), and saves the round trip."""
    if not run.redelivered:
        return [(None, event) for event in events]
    checked: list[tuple[Verdict | None, Event]] = []
    for event, (refused, fresh) in zip(events, journal.recheck_events(run.worker.pipe, events, run.task_id)):
        if refused is None:
            checked.append((None, fresh))
        else:
            why = from_journal(refused)
            _not_sent(event.id, why)
            checked.append((why, event))
    return checked


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


def _mine(task_id: str, event_ids: list[str], events: list[Event | None]
          ) -> tuple[list[str], list[Event | None], int]:
    """The task's events that its message still sends, and how many it no longer does.

    An event's record names the message that sends its next attempt (journal/store.py, the field `task`).
    Another name means this message came back after its work was done, its ack lost in a crash
    (Redis restores it from `unacked`), or was replaced by a hand-off, the retry schedule, a
    replay or lost-task recovery; sending would race the message that now has the event."""
    keep_ids: list[str] = []
    keep: list[Event | None] = []
    for one_id, event in zip(event_ids, events):
        owner = event.task if event is not None else None
        if owner is not None and owner != task_id:
            _not_sent(one_id, Verdict.SUPERSEDED)
            continue
        keep_ids.append(one_id)
        keep.append(event)
    return keep_ids, keep, len(event_ids) - len(keep_ids)


def _deliver_batch(run: GroupRun, route: Route, batch: list[Event]) -> list[Verdict]:
    """Events of one tag in one request (route batch_max), as Fluentd's out_http json_array sends
    them: a JSON array of their bodies (NDJSON lines for an ndjson content type). The answer
    decides for every event of the batch, each journaled with its own attempt number; the
    breaker counts the request once. Returns the verdicts."""
    w, gate = run.worker, run.gate
    try:
        url = route.endpoint.render(batch[0].tag)
    except NoRoute as exc:
        return [_dead_unsent(run, event, event.attempts + 1, str(exc)) for event in batch]
    key = endpoints.key_for(route.name, url)
    if not run.probe and gate.until(key) > time.time():  # each parked, or due on the schedule if it closed meanwhile
        return [_not_sent_unless_waiting(event.id, gate.hold(event, key, run.task_id)) for event in batch]
    checked = _recheck(run, batch)
    verdicts = {i: refused for i, (refused, _) in enumerate(checked) if refused}  # those not sent
    sending = [i for i in range(len(checked)) if i not in verdicts]
    if not sending:
        return [verdicts[i] for i in range(len(checked))]
    batch = [checked[i][1] for i in sending]
    attempts = [event.attempts + 1 for event in batch]
    ids = [event_id(event.id) for event in batch]
    bodies = [event.body for event in batch]
    body = b"\n".join(bodies) + b"\n" if "ndjson" in route.content_type else b"[" + b",".join(bodies) + b"]"
    # The request has an id of its own (X-Request-Id, and webhook-id when signed); the events' ids
    # travel in X-Bus-Event-Ids, in the order of the body.
    request_id = str(uuid.uuid4())
    sent, retry_after = send_body(w.pools, route, url, request_id, batch[0].tag, body, max(attempts),
                                  {"X-Bus-Event-Ids": ",".join(ids)})

    def journal_all(behind: endpoints.EndpointKey | None) -> None:
        for i, event, attempt in zip(sending, batch, attempts):
            record = replace(sent, attempt=attempt, request_id=request_id, batch=len(batch))
            outcome = classify(route, attempt - event.round, record.status_code, retry_after)
            verdicts[i] = _journal_verdict(run, route, event, record, outcome, key, behind=behind) or outcome.verdict

    gate.journaled(route, key, sent, run.probe, journal_all)
    return [verdicts[i] for i in range(len(checked))]


def _units(route: Route | None, events: list[Event | None], to: str | None) -> list[tuple[list[int], bool]]:
    """The task's events in sending order: (indexes, batched) per request. A route with batch_max
    sends events still to be sent as arrays (even of one, as out_http's json_array does), runs
    of one tag at most batch_max long; anything else one event per request."""
    def sendable(event: Event | None) -> bool:
        return event is not None and event.status not in (journal.DELIVERED, journal.DEAD)

    batch_max = route.batch_max if route is not None else 1
    batching = batch_max > 1 and to is None
    units: list[tuple[list[int], bool]] = []
    for i, event in enumerate(events):
        if event is None or not (batching and sendable(event)):
            units.append(([i], False))
            continue
        last, batched = units[-1] if units else ([], False)
        first = events[last[0]] if last else None
        if batched and len(last) < batch_max and first is not None and first.tag == event.tag:
            last.append(i)
        else:
            units.append(([i], True))
    return units


def _hand_off(run: GroupRun, rest: list[Event], why: str = "of a slow group") -> None:
    """Queue the events this task has no time left for as a task of their own (same ids)."""
    if not rest:
        return
    route_name, redis = run.route_name, run.worker.redis
    message = new_message([(e.id, e.tag, e.attempts + 1) for e in rest], journal.queue_name(route_name), to=run.to)
    if run.to is None:
        journal.hand_off(redis, route_name, message, run.task_id)
    else:
        journal.enqueue(redis, route_name, [message.data])
    log.info("handing %d events %s to a new task of route %s", len(rest), why, route_name)


def _spread(run: GroupRun, rest: list[Event], handed: list[int], count: int) -> None:
    """The rest of an ordered route's group (heads of other lanes) to a new message, so that another pool
    process sends them while this task follows its lane (hand_off.lua: only those still this task's move)."""
    _hand_off(run, rest, "of other lanes, this task following one")  # a lane's run sends no copies: `to` is None
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
    w.sweeps.maybe(w.redis, w.settings.retention)
    route_name = _route_of_queue(self)
    route = w.router.by_name.get(route_name)
    deadline = group_deadline(w, route)
    try:
        events, (open_now, complete) = journal.load_many(w.pipe, event_ids, route_name,
                                                         route.group_size if route else GROUP_SIZE, time.time())
        run = GroupRun.begin(self, w, route_name, deadline, Breakers(w.redis, open_now, complete), to, probe)
        if to is not None:
            events = _archived(run, event_ids, events, to)
        verdicts: dict[Verdict, int] = {}
        ids_by_verdict: dict[Verdict, list[str]] = {}
        if to is None:  # a copy leaves the event's state alone, its owner included
            event_ids, events, superseded = _mine(run.task_id, event_ids, events)
            if superseded:
                verdicts[Verdict.SUPERSEDED] = superseded
            if route is not None and not probe:
                run.gate.hold_ahead(route, events, run.task_id)  # one script per open breaker, not per event
        copies_to_retry = []
        handed: list[int] = []  # how many of the group a lane's run handed to a new message (_spread)
        for n, (unit, batched) in enumerate(_units(route, events, to)):
            if n and deadline.passed():
                rest, left = task_outcome.out_of_time(event_ids[unit[0]:], events[unit[0]:], run.gate.settled)
                _hand_off(run, rest)
                task_outcome.tally(verdicts, ids_by_verdict, event_ids[unit[0]:], left)
                break
            ids, unit_events = [event_ids[i] for i in unit], [events[i] for i in unit]
            try:
                # A failure may open its endpoint's breaker: the rest of the group for that endpoint then
                # waits instead of being sent, and the group's other endpoints go on.
                first = unit_events[0]
                if batched:
                    assert route is not None  # only a route's batch_max makes a batch (_units)
                    outcomes = _deliver_batch(run, route, [e for e in unit_events if e is not None])
                elif first is None:
                    _not_sent(ids[0], Verdict.GONE)
                    outcomes = [Verdict.MISSING]
                else:
                    # A task that follows one lane hands the heads of its group's other lanes to a new message
                    # at once: held here they would wait for this lane's run, the other pool process idle.
                    rest = [e for e in events[unit[0] + 1:] if e is not None] if run.lanes is not None else []
                    spread = functools.partial(_spread, run, rest, handed, len(event_ids) - unit[0] - 1) if rest else None
                    ids, outcomes = _deliver_following(run, first, spread)
            except journal.REDIS_DOWN:
                raise
            except Exception:
                # A bug must not lose an event: Celery acks a failed task, so park them for a later try.
                log.exception("events %s: unexpected error while delivering; trying again in %ss",
                              " ".join(ids), INTERNAL_ERROR_DELAY)
                for event in unit_events:
                    if event is not None:
                        _park(run, event, time.time() + INTERNAL_ERROR_DELAY, "waiting: internal error, see worker log")
                outcomes = [Verdict.ERROR] * len(unit)
            task_outcome.tally(verdicts, ids_by_verdict, ids, outcomes)
            if to is not None:
                copies_to_retry += [one_id for one_id, verdict in zip(ids, outcomes) if verdict == Verdict.RETRY]
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
