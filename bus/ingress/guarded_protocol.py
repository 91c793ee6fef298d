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

Written against uvicorn 0.54's HttpToolsProtocol (its parser callbacks and
`cycle`); the keep-alive wait between requests stays uvicorn's own.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..errors import RequestTimeout
from .client_limits import ClientCounter
from .http import error_answer

log = logging.getLogger("bus.ingress")

MAX_REQUEST_LINE = 8190
MAX_FIELDS = 100
MAX_FIELD = 8190
MAX_HEAD = 1024 * 1024


class HeadTooLarge(Exception):
    """Raised from a parser callback: httptools turns it into a parser error, which uvicorn answers with 400."""


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
        super().on_message_begin()
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
        super().on_headers_complete()
        self._what = f"the body of {self.scope['method']} {self.scope.get('path', '?')}"

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

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
            status, _, body = error_answer(RequestTimeout(
                f"{self._what} did not arrive whole within {self.read_timeout:g}s; nothing was accepted. "
                "Send the whole request without pausing, and retry"))
            defaults = b"".join(b"%s: %s\r\n" % pair for pair in self.server_state.default_headers)
            self.transport.write(b"HTTP/1.1 %d Request Timeout\r\n%scontent-type: application/json\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                                 % (status, defaults, len(body), body))
        if self.cycle is not None and not self.cycle.response_complete:
            # The app's receive() now says the client is gone; it accepts nothing and sends nothing.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()


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


def configure(read_timeout: float, max_connections_per_client: int) -> None:
    """Set this process's limits; the app factory calls it in each worker before the first connection
    (uvicorn's workers are spawned processes and take the class by name, not the parent's settings)."""
    GuardedProtocol.read_timeout = read_timeout
    GuardedProtocol.clients = ClientCounter(max_connections_per_client, "http", "BUS_HTTP_MAX_CONNECTIONS_PER_CLIENT")


def _peer(client: Any) -> str:
    return f"{client[0]}:{client[1]}" if isinstance(client, tuple) and len(client) >= 2 else "unix socket"

