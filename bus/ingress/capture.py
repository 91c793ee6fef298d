"""`bus proxy`: an ASGI app in front of an API that journals every request before forwarding it.

Per request: read the body whole (up to BUS_MAX_BODY), journal it as an event of the capture tag
with a new id (journal.CAPTURE_SCRIPT), forward it to the upstream with X-Request-Id, stream the
upstream's answer back with X-Request-Id added, and record the attempt (journal.record_attempt_call).
An answer not in --retryable makes the request delivered; one in --retryable, or no answer (502,
504), leaves it dead, for `bus replay` to send again.

Redis down: the request is forwarded all the same, its answer says `X-Bus-Captured: no`, and it is
counted (bus_requests_uncaptured_total, told to Redis once it answers): the API must not go down
with its capture. With --require-capture the client gets 503 instead and the API never sees it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .. import captured, intake, journal, logs, settings, signing
from ..errors import BodyTooLarge, ConfigError, Unavailable
from ..events import new_id
from ..journal import REDIS_DOWN
from ..tags import validate_tag
from ..wire.pipelined import PipelinedRedis
from . import guarded_protocol
from .asgi import read_body, refuse
from .http import received_headers
from .request_parts import ClientGone
from .upstream import Answer, Upstream, UpstreamError

log = logging.getLogger("bus.proxy")

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
CONFIG_ENV = "_BUS_PROXY"
CAPTURED_HEADER = b"x-bus-captured"
# Outcomes Redis could not take (it went down mid-request), kept to record later; beyond this the
# oldest are dropped and those requests stay queued (a worker's lost-task recovery sends them again).
UNRECORDED_KEPT = 100_000
RECORD_RETRY_EVERY = 1.0
WARN_EVERY = 10.0
# After Redis failed a capture, requests go on uncaptured this long before the next one tries again.
REDIS_RETRY_AFTER = 1.0


@dataclass(frozen=True)
class ProxyConfig:
    """One listener's options (bus proxy's flags)."""

    tag: str
    upstream: str
    retryable: frozenset[int] = frozenset()
    preserve_host: bool = False
    require_capture: bool = False
    keep_headers: frozenset[str] = frozenset()  # credential headers kept in the journal for replay

    def to_json(self) -> str:
        return orjson.dumps({**self.__dict__, "retryable": sorted(self.retryable),
                             "keep_headers": sorted(self.keep_headers)}).decode()

    @classmethod
    def from_json(cls, raw: str) -> ProxyConfig:
        data = orjson.loads(raw)
        return cls(data["tag"], data["upstream"], frozenset(data["retryable"]), data["preserve_host"],
                   data["require_capture"], frozenset(data["keep_headers"]))


class CaptureProxy:
    def __init__(self, bus: intake.Intake, config: ProxyConfig):
        validate_tag(config.tag)
        self.bus, self.config = bus, config
        self.route = bus.router.match(config.tag)
        if self.route.destinations:
            # A captured request has one live attempt, to the upstream, recorded in one journal record.
            raise ValueError(f"tag {config.tag!r} goes to route {self.route.name}, which has several destinations: "
                             "bus proxy journals under a route with one endpoint; give the captures a tag of "
                             "such a route")
        self.upstream = Upstream(config.upstream, self.route.open_timeout, self.route.read_timeout)
        self.shown_upstream = logs.redact(config.upstream.rstrip("/"))  # attempts show no user info
        self.redis = PipelinedRedis(bus.link(self.route).target, bus.settings.redis_timeout)  # the route's shard
        self.uncaptured = 0  # forwarded without a journal entry since Redis last took the count
        self.unrecorded: deque[tuple[list[str], list[Any]]] = deque(maxlen=UNRECORDED_KEPT)
        self._warned = 0.0
        self._redis_down_until = 0.0  # until then requests go on without trying Redis
        self._retrying: asyncio.Task | None = None

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.proxy(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self._retrying = asyncio.ensure_future(self._record_later())
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self._retrying is not None:
                        self._retrying.cancel()
                    self.upstream.close()
                    self.redis.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def proxy(self, scope: dict, receive: Receive, send: Send) -> None:
        method = scope["method"]
        headers = captured.end_to_end((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])
        try:
            length = next((v for k, v in headers if k.lower() == "content-length"), None)
            body = await read_body(receive, self.bus.settings.max_body, length)
        except ClientGone:
            return
        except BodyTooLarge as exc:
            await refuse(send, exc)
            return
        path = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        query = scope["query_string"].decode("latin-1")
        request = captured.Request(method, path, query, tuple(captured.for_replay(headers, self.config.keep_headers)))
        event = {"id": new_id(), "tag": self.config.tag, "route": self.route.name, "status": journal.QUEUED,
                 "received": time.time()}
        try:
            is_captured = await self._capture(event, headers, request, body)
        except Unavailable as exc:  # --require-capture
            await refuse(send, exc)
            return
        await self._forward(send, event, is_captured, request, headers, body)

    async def _capture(self, event: dict, headers: captured.Headers, request: captured.Request, body: bytes) -> bool:
        """Journal the request; False when Redis did not take it (and the request goes on uncaptured)."""
        if time.monotonic() < self._redis_down_until:
            # A hung or unreachable Redis costs a timeout per try: the API pays it once, not per request.
            return self._uncaptured(None)
        new = journal.NewEvent(event["id"], event["tag"], event["route"], body, event["received"],
                               received_headers((k.title(), v) for k, v in headers))
        uncaptured = self.uncaptured
        keys, args = journal.capture_call(new, request.to_json(), uncaptured)
        try:
            await self.redis.run_script(journal.CAPTURE_SCRIPT, keys, args)
        except REDIS_DOWN as exc:
            self._redis_down_until = time.monotonic() + REDIS_RETRY_AFTER
            return self._uncaptured(exc)
        self.uncaptured -= uncaptured
        return True

    def _uncaptured(self, exc: BaseException | None) -> bool:
        """Count a request Redis did not take; with --require-capture, refuse it (Unavailable)."""
        self.uncaptured += 1
        self._warn(f"Redis did not take the request ({type(exc).__name__}: {exc})" if exc else
                   f"Redis did not answer the last try; trying again every {REDIS_RETRY_AFTER:g}s")
        if self.config.require_capture:
            raise Unavailable("the bus could not journal this request (Redis did not answer) and bus proxy "
                              "runs with --require-capture: the API did not get it; retry later")
        return False

    async def _forward(self, send: Send, event: dict, is_captured: bool, request: captured.Request,
                       headers: captured.Headers, body: bytes) -> None:
        started, at = time.monotonic(), time.time()
        attempt: dict[str, Any] = {"attempt": 1, "at": at, "url": self.shown_upstream + request.path}
        extra = [(b"x-request-id", event["id"].encode())]
        if not is_captured:
            extra.append((CAPTURED_HEADER, b"no"))
        target = self.upstream.prefix + request.path + (f"?{request.query}" if request.query else "")
        try:
            answer = await self.upstream.request(request.method, target, self._upstream_headers(headers, event, body),
                                                 body)
        except UpstreamError as exc:
            await self._no_answer(send, exc, event["id"], is_captured, extra)
            attempt.update(status_code=None, error=f"UpstreamError: {exc}"[:500])
            await self._record(is_captured, event, attempt, started, journal.DEAD)
            return
        head, error = await self._pass_on(send, answer, extra)
        attempt.update(status_code=answer.status, response=head.decode("utf-8", "replace"))
        if error:
            attempt["response_error"] = error
        dead = answer.status in self.config.retryable
        await self._record(is_captured, event, attempt, started, journal.DEAD if dead else journal.DELIVERED)

    async def _no_answer(self, send: Send, exc: UpstreamError, event_id: str, is_captured: bool,
                         extra: list[tuple[bytes, bytes]]) -> None:
        """502 for an upstream that refused, reset or garbled; 504 for one that took too long."""
        message = (f"the upstream did not answer ({exc}); the request is kept in the bus's journal as dead: "
                   "`bus replay` sends it again") if is_captured else f"the upstream did not answer ({exc})"
        body = orjson.dumps({"error": message, "id": event_id})
        await send({"type": "http.response.start", "status": 504 if exc.timed_out else 502,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                                *extra]})
        await send({"type": "http.response.body", "body": body})

    async def _pass_on(self, send: Send, answer: Answer, extra: list[tuple[bytes, bytes]]) -> tuple[bytes, str | None]:
        """Stream the upstream's answer to the client; its first bytes (for the attempt record) and, if the
        upstream broke off mid-answer, why (the head has gone out: the client sees a cut answer)."""
        kept = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in answer.headers if k.lower() != b"x-request-id"]
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in captured.end_to_end(kept)]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers + extra})
        head = b""
        try:
            async for chunk in answer.body():
                if len(head) < journal.RESPONSE_KEEP:
                    head += chunk[: journal.RESPONSE_KEEP - len(head)]
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except UpstreamError as exc:
            answer.abandon()
            return head, f"UpstreamError: {exc}"[:500]
        except OSError:  # the client went away mid-answer
            answer.abandon()
        return head, None

    def _upstream_headers(self, headers: captured.Headers, event: dict, body: bytes) -> list[tuple[bytes, bytes]]:
        out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers
               if k.lower() not in captured.NOT_KEPT or (k.lower() == "host" and self.config.preserve_host)]
        if not self.config.preserve_host:
            out.append((b"host", self.upstream.netloc.encode("latin-1")))
        out.append((b"x-request-id", event["id"].encode()))
        if self.route.signing_keys:  # the route's signing_secret: the API can tell the request came through us
            signed = signing.headers(event["id"], body, self.route.signing_keys, time.time())
            out += [(k.encode(), v.encode()) for k, v in signed.items()]
        return out

    async def _record(self, is_captured: bool, event: dict, attempt: dict, started: float, status: str) -> None:
        attempt["duration"] = round(time.monotonic() - started, 4)
        if not is_captured:
            return
        if status == journal.DEAD and attempt.get("status_code"):
            attempt["reason"] = f"HTTP {attempt['status_code']} is in bus proxy --retryable"
        keys, args = journal.record_attempt_call(event, attempt, status, self.bus.settings.retention)
        try:
            refused = journal.refusal(await self.redis.run_script(journal.RECORD_ATTEMPT_SCRIPT, keys, args))
        except REDIS_DOWN as exc:
            self.unrecorded.append((keys, args))
            self._warn(f"the answer to {event['id']} could not be recorded ({type(exc).__name__}); kept to record later")
            return
        if refused:  # purged meanwhile, or recovery's copy finished it first: the journal keeps that
            log.warning("the answer to %s was not recorded: the event is %s meanwhile", event["id"], refused)

    async def _record_later(self) -> None:
        """Outcomes Redis missed go in once it answers again, oldest first."""
        while True:
            await asyncio.sleep(RECORD_RETRY_EVERY)
            while self.unrecorded:
                keys, args = self.unrecorded[0]
                try:
                    await self.redis.run_script(journal.RECORD_ATTEMPT_SCRIPT, keys, args)
                except REDIS_DOWN:
                    break
                except Exception:
                    log.exception("could not record the outcome of captured request %s; dropping it", args[0])
                self.unrecorded.popleft()

    def _warn(self, what: str) -> None:
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY:
            self._warned = now
            action = "refusing requests with 503 (--require-capture)" if self.config.require_capture else \
                "forwarding requests uncaptured (X-Bus-Captured: no)"
            log.warning("bus proxy %s: %s; %s, %d so far; %d outcomes waiting to be recorded", self.config.tag,
                        what, action, self.uncaptured, len(self.unrecorded))


def from_environment() -> CaptureProxy:
    """uvicorn's app factory, run in each worker process: settings and the listener's options from the environment."""
    config = settings.load()
    logs.configure(config.log_format)
    guarded_protocol.configure(config.http.read_timeout, config.http.max_connections_per_client)
    return CaptureProxy(intake.load(config), ProxyConfig.from_json(os.environ[CONFIG_ENV]))


def check(bus: intake.Intake, config: ProxyConfig) -> None:
    """Refuse a listener that cannot work before anything binds: a bad tag, no route, a bad upstream URL."""
    try:
        CaptureProxy(bus, config).redis.close()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def serve(bus: intake.Intake, bind: str, config: ProxyConfig, workers: int = 1) -> None:
    """Run one listener until SIGTERM/SIGINT under uvicorn, with the ingress's read deadline and head limits."""
    import uvicorn

    check(bus, config)
    logs.configure(bus.settings.log_format)
    os.environ[CONFIG_ENV] = config.to_json()
    host, _, port = bind.rpartition(":")
    uvicorn.run(
        "bus.ingress.capture:from_environment", factory=True, host=host.strip("[]"), port=int(port), workers=workers,
        http=guarded_protocol.GuardedProtocol, loop="uvloop", lifespan="on", timeout_keep_alive=5,
        timeout_graceful_shutdown=20, limit_concurrency=1000, backlog=2048,
        # The client gets the upstream's own Date and Server, not ours next to them.
        log_config=None, access_log=False, server_header=False, date_header=False, proxy_headers=False,
        # Upgrade is hop-by-hop: a WebSocket handshake reaches the upstream as a plain request.
        ws="none",
    )
