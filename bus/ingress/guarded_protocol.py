"""uvicorn's HTTP/1.1 protocol (httptools) with the limits it lacks: a read deadline per request,
connections per client address, and bounds on the request head.

uvicorn reads every connection on one event loop, so a slow client costs a
connection, not a thread; but nothing in uvicorn ends a request that trickles in
for ever, and nothing stops one address from opening connection after
connection. This protocol

- gives every request BUS_HTTP_READ_TIMEOUT seconds from its first byte to
  arrive whole, head and body: then the client gets 408 with "Connection:
  close" and the connection is closed; the app only accepts a body it has
  read whole, so nothing of the request is accepted; a new connection gets
  the same time for its first byte (after a response, uvicorn's keep-alive
  timeout takes over);
- closes at once a connection from an address that already has
  BUS_HTTP_MAX_CONNECTIONS_PER_CLIENT open in this worker process (workers
  share nothing, so with --workers N a client may hold N times that);
- refuses with 400 a request line over 8,190 bytes, more than 100 header
  fields, a field over 8,190 bytes or a head over 1 MiB, the limits gunicorn
  had (httptools itself would collect a head of any size).

It also answers `POST /<tag>` itself, when the app is the bus's Ingress: the
parser's callbacks collect the head and the body into an EventPost, and the
Ingress's answer_event_post (the same handling the ASGI path calls) gives the
answer, written in one send. No ASGI scope, RequestResponseCycle, receive/send
messages or header re-encoding: those were a third of a worker's CPU per single
event (docs/performance.md, "Issue 22: ingress singles answered by the protocol").
Every other request goes through uvicorn's ASGI cycle as before. An EventPost
takes a cycle's place (self.cycle, self.pipeline), so uvicorn's own pipelining,
keep-alive, shutdown and disconnect handling, and this protocol's read deadline,
treat both alike.

Written against uvicorn 0.54's HttpToolsProtocol (its parser callbacks and
`cycle`); the keep-alive wait between requests stays uvicorn's own.
"""
from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ..errors import BusError, RequestTimeout
from .client_limits import ClientCounter
from .http import INTERNAL_ERROR, JsonAnswer, check_read_length, error_answer, is_event_post
from .request_parts import ClientGone, headers_of, query_of

log = logging.getLogger("bus.ingress")

MAX_REQUEST_LINE = 8190
MAX_FIELDS = 100
MAX_FIELD = 8190
MAX_HEAD = 1024 * 1024


class HeadTooLarge(Exception):
    """Raised from a parser callback: httptools turns it into a parser error, which uvicorn answers with 400."""


class EventPoster(Protocol):
    """What the protocol needs of the app to answer POST /<tag> itself (asgi.Ingress)."""

    max_body: int

    def answer_event_post(self, tag: str, headers: dict[str, str], query: dict[str, str],
                          body: Callable[[], Awaitable[bytes]]) -> Awaitable[JsonAnswer | None]:
        ...


class GuardedProtocol(HttpToolsProtocol):
    """The limits are class attributes, set by configure() in each worker process before it serves."""

    read_timeout: float = 30.0
    clients: ClientCounter = ClientCounter(256)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._address: str | None = None
        self._refused = False
        self._deadline: asyncio.TimerHandle | None = None
        self._what = "the request head"
        self._received = 0  # bytes of the current request so far
        self._in_head = False
        self._fields = 0
        # The app answers POST /<tag> through EventPost when it can (not when uvicorn wrapped it).
        self._poster: EventPoster | None = self.app if hasattr(self.app, "answer_event_post") else None

    # -- connections per client ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        # A unix socket's peers have no address to tell them apart: they are not counted.
        address = str(peer[0]) if isinstance(peer, tuple) and peer else None
        if address is not None and not self.clients.admit(address, _peer(peer)):
            self._refused = True
            transport.close()
            return
        self._address = address
        super().connection_made(OneWritePerTurn(transport, self.loop))  # type: ignore[arg-type]
        # A connection that never sends a byte has no request for on_message_begin to time: without
        # this, silent connections from many addresses would hold the worker's 1,000 for ever.
        self._what = "a first request"
        self._deadline = self.loop.call_later(self.read_timeout, self._timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._disarm()
        address, self._address = self._address, None
        if address is not None:
            self.clients.release(address)
        super().connection_lost(exc)

    # -- the read deadline and the head's bounds -------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        # Counted after the parser ran: a chunk that starts a request counts toward it (on_message_begin
        # resets the count), so the head's bound holds from the request's first byte.
        self._received += len(data)
        if self._in_head and self._received > MAX_HEAD and not self.transport.is_closing():
            self.send_400_response(f"the request head is over {MAX_HEAD} bytes")

    def on_message_begin(self) -> None:
        # uvicorn's on_message_begin, without its scope dict: an event post needs none, and
        # on_headers_complete makes it for every other request (_scope).
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self.scope = None  # type: ignore[assignment]
        # The clock runs from the request's first byte, not from the idle keep-alive wait before it.
        self._disarm()
        self._deadline = self.loop.call_later(self.read_timeout, self._timed_out)
        self._what, self._in_head, self._fields, self._received = "the request head", True, 0, 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_REQUEST_LINE:
            raise HeadTooLarge(f"the request line is over {MAX_REQUEST_LINE} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > MAX_FIELDS or len(name) + len(value) > MAX_FIELD:
            raise HeadTooLarge(f"more than {MAX_FIELDS} header fields or one over {MAX_FIELD} bytes")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._poster is not None and self.parser.get_method() == b"POST" and not self.parser.should_upgrade() \
                and not self._over_concurrency():
            url = httptools.parse_url(self.url)
            path = url.path.decode("ascii")
            if "%" in path:
                path = urllib.parse.unquote(path)
            if is_event_post("POST", path):
                self._what = f"the body of POST {path}"
                self._post(path[1:], url.query or b"")
                return
        self.scope = self._scope()  # type: ignore[assignment]
        super().on_headers_complete()
        self._what = f"the body of {self.scope['method']} {self.scope.get('path', '?')}"

    def on_body(self, body: bytes) -> None:
        if isinstance(self.cycle, EventPost):
            self.cycle.add(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        if isinstance(self.cycle, EventPost):
            self.cycle.complete()
        else:
            super().on_message_complete()

    # -- POST /<tag>, answered here ----------------------------------------------------------------

    def _scope(self) -> dict:
        return {"type": "http", "asgi": {"version": self.asgi_version, "spec_version": "2.3"}, "http_version": "1.1",
                "server": self.server, "client": self.client, "scheme": self.scheme, "root_path": self.root_path,
                "headers": self.headers, "state": self.app_state.copy()}

    def _over_concurrency(self) -> bool:
        """uvicorn's limit_concurrency: past it, uvicorn's own 503 (the ASGI path) answers."""
        limit = self.limit_concurrency
        return limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit)

    def _post(self, tag: str, query: bytes) -> None:
        assert self._poster is not None
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        post = EventPost(self, self._poster, tag, query, keep_alive)
        existing, self.cycle = self.cycle, post  # type: ignore[assignment]
        if existing is None or existing.response_complete:
            self._start_asgi_task(post, self.app)  # type: ignore[arg-type]
        else:  # pipelined behind a request still being answered: uvicorn starts it in turn
            self.flow.pause_reading()
            self.pipeline.appendleft((post, self.app))  # type: ignore[arg-type]

    def answer(self, post: EventPost, status: int, extra: dict[str, str], body: bytes) -> None:
        """Write an event post's answer in one send, then let uvicorn start the next request or wait."""
        self.transport.write(_response(self.server_state.default_headers, status, extra, body, not post.keep_alive))
        post.response_started = post.response_complete = True
        if not post.keep_alive:
            self.transport.close()
        self.on_response_complete()

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        log.warning("http: %s: closed: %s did not arrive whole within %gs (BUS_HTTP_READ_TIMEOUT), "
                    "%d bytes so far; nothing of it was accepted", _peer(self.client), self._what, self.read_timeout,
                    self._received)
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            status, extra, body = error_answer(RequestTimeout(
                f"{self._what} did not arrive whole within {self.read_timeout:g}s; nothing was accepted. "
                "Send the whole request without pausing, and retry"))
            self.transport.write(_response(self.server_state.default_headers, status, extra, body, close=True))
        if self.cycle is not None and not self.cycle.response_complete:
            # The app's receive() now says the client is gone; it accepts nothing and sends nothing.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()


class EventPost:
    """One POST /<tag> in place of uvicorn's RequestResponseCycle: its head, its body as it arrives, and
    the attributes of a cycle that uvicorn's protocol and GuardedProtocol read (response_complete,
    disconnected, keep_alive, message_event, run_asgi for a pipelined start)."""

    def __init__(self, protocol: GuardedProtocol, poster: EventPoster, tag: str, query: bytes, keep_alive: bool):
        self.protocol, self.poster, self.tag, self.query = protocol, poster, tag, query
        self.raw_headers: list[tuple[bytes, bytes]] = protocol.headers
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = protocol.expect_100_continue
        self.body = bytearray()
        self.more_body = True
        self.too_large: BusError | None = None
        self.disconnected = self.response_started = self.response_complete = False
        self._waiter: asyncio.Future | None = None
        # uvicorn and _timed_out wake a cycle's reader with cycle.message_event.set(): here, set() below.
        self.message_event = self

    def add(self, chunk: bytes) -> None:
        if self.response_complete or self.too_large is not None:
            return  # answered (refused on its head) or over the limit: the rest is read and dropped
        self.body += chunk
        try:
            check_read_length(len(self.body), self.poster.max_body)
        except BusError as exc:
            self.too_large, self.body = exc, bytearray()
            self.set()

    def complete(self) -> None:
        self.more_body = False
        self.set()

    def set(self) -> None:
        """Wake the body's reader: the body is whole, over the limit, or the client is gone."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> bytes:
        """The whole body (asked for once the head passed its checks), as asgi.read_body gives it."""
        if self.more_body and self.waiting_for_100_continue and not self.protocol.transport.is_closing():
            self.protocol.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.waiting_for_100_continue = False
        while self.more_body and self.too_large is None and not self.disconnected:
            self.protocol.flow.resume_reading()  # paused if this post was pipelined
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        if self.disconnected:
            raise ClientGone()
        if self.too_large is not None:
            raise self.too_large
        return bytes(self.body)

    async def run_asgi(self, app: Any) -> None:
        """Answer the post (uvicorn calls this in a task, at once or when its turn in the pipeline comes)."""
        try:
            answer = await self.poster.answer_event_post(self.tag, headers_of(self.raw_headers),
                                                         query_of(self.query), self.read)
        except Exception:
            log.exception("unexpected error answering POST /%s", self.tag)
            answer = INTERNAL_ERROR
        if answer is not None and not self.disconnected and not self.protocol.transport.is_closing():
            self.protocol.answer(self, *answer)


class OneWritePerTurn:
    """A transport whose writes within one turn of the event loop leave in one send.

    uvicorn writes a response's head and its body separately: two sends, two
    TCP segments, and a client woken twice per answer (a wake-up is the dearest
    part of a small request on a small VM). Writes are kept until the turn ends;
    close() sends them first. Everything else is the real transport's.
    """

    def __init__(self, transport: asyncio.BaseTransport, loop: asyncio.AbstractEventLoop):
        self._transport, self._loop = transport, loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._send)
        self._pending.append(data)

    def _send(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(b"".join(pending))  # type: ignore[attr-defined]

    def close(self) -> None:
        self._send()
        self._transport.close()

    def get_write_buffer_size(self) -> int:
        return sum(map(len, self._pending)) + self._transport.get_write_buffer_size()  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


_defaults: tuple[object, bytes] = (None, b"")


def _fields(default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """uvicorn's default headers (date, X-Content-Type-Options) as head lines, made again only when
    the server state hands out a new list (once a second at most, for the date: quiet_server.DatedState)."""
    global _defaults
    if _defaults[0] is not default_headers:
        _defaults = (default_headers, b"".join(b"%s: %s\r\n" % pair for pair in default_headers))
    return _defaults[1]


def _response(default_headers: list[tuple[bytes, bytes]], status: int, extra: dict[str, str], body: bytes,
              close: bool) -> bytes:
    """A JSON answer written by the protocol itself (an event post's, a read deadline's 408), in one piece."""
    head = [STATUS_LINE[status], _fields(default_headers),
            b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)]
    head += [b"%s: %s\r\n" % (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
    if close:
        head.append(b"connection: close\r\n")
    head += [b"\r\n", body]
    return b"".join(head)


def configure(read_timeout: float, max_connections_per_client: int) -> None:
    """Set this process's limits; the app factory calls it in each worker before the first connection
    (uvicorn's workers are spawned processes and take the class by name, not the parent's settings)."""
    GuardedProtocol.read_timeout = read_timeout
    GuardedProtocol.clients = ClientCounter(max_connections_per_client, "http", "BUS_HTTP_MAX_CONNECTIONS_PER_CLIENT")


def _peer(client: Any) -> str:
    return f"{client[0]}:{client[1]}" if isinstance(client, tuple) and len(client) >= 2 else "unix socket"

