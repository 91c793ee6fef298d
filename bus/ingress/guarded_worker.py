"""gunicorn's threaded worker with the two limits it lacks: a read deadline per request and connections per client.

gthread waits for a new connection's first byte without holding a thread,
but once a request has started, its thread reads head and body with plain
blocking recv() calls: a client trickling a byte now and then holds that
thread for ever, and nothing stops one client from opening connection after
connection. This worker

- gives every request BUS_HTTP_READ_TIMEOUT seconds from its first recv()
  to arrive whole (head and body, however slowly it trickles in): then the
  client gets 408 and the connection is closed at once, nothing of the
  request accepted (the app only accepts a body it has read whole; its
  RequestTimeout maps to 408 like any other BusError);
- closes at accept a connection from an address that already has
  BUS_HTTP_MAX_CONNECTIONS_PER_CLIENT open in this worker process (gunicorn's
  workers share nothing, so with --workers N a client may hold N times that).

Written against gunicorn 27's gthread (accept() is its own, with the cap
added; the rest extends gthread's hooks). The keep-alive wait between
requests stays gunicorn's `keepalive`.
"""
from __future__ import annotations

import errno
import logging
import select
import socket
import threading
import time
from typing import Any, Callable

from gunicorn import util
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import ThreadWorker, TConn

from ..errors import RequestTimeout
from .client_limits import ClientCounter

log = logging.getLogger("bus.ingress")

# What a timed-out connection's close reads off the socket without waiting, so the kernel
# does not answer unread bytes with a reset that could swallow the 408.
CLOSE_DRAIN = 64 * 1024
# How long a thread that has answered a keep-alive request waits for the next one on the same
# connection before giving the connection back to the poller. A producer sending back to back
# (a client library's loop, a forwarder) sends its next request within a millisecond or two.
STICKY = 0.005


class ReadDeadline:
    """The read deadline of the request a connection is on; armed per request, started by its first recv()."""

    def __init__(self, limit: float, who: str):
        self.limit, self.who = limit, who
        self.armed = False
        self.started: float | None = None
        self.what = "the request head"
        self.received = 0
        self.expired = False
        self.request: Any = None  # gunicorn's Request once its head is read

    def begin(self) -> None:
        """A request may start: the clock runs from its first recv(), not from the idle wait before it."""
        self.armed, self.started, self.what, self.received, self.request = True, None, "the request head", 0, None

    def reading_body(self, request: Any) -> None:
        self.what, self.request = f"the body of {request.method} {request.path}", request

    def done(self) -> None:
        """The app has answered: draining the rest and the keep-alive wait are gunicorn's own (bounded) business."""
        self.armed, self.request = False, None

    def remaining(self) -> float | None:
        """Seconds left for the next recv(); None when no deadline applies. Raises once the time is up."""
        if not self.armed:
            return None
        now = time.monotonic()
        if self.started is None:
            self.started = now
        left = self.started + self.limit - now
        if left <= 0:
            raise self.expire()
        return left

    def expire(self) -> RequestTimeout:
        if not self.expired:
            self.expired = True
            if self.request is not None:
                # The app answers 408 and gunicorn sends it with "Connection: close": the rest of the body
                # is still on its way, so the connection cannot carry another request.
                self.request.force_close()
            log.warning("http: %s: closed: %s did not arrive whole within %gs (BUS_HTTP_READ_TIMEOUT), "
                        "%d bytes so far; nothing of it was accepted", self.who, self.what, self.limit, self.received)
        return RequestTimeout(f"{self.what} did not arrive whole within {self.limit:g}s; nothing was accepted. "
                              "Send the whole request without pausing, and retry")


class DeadlineUnreader(SocketUnreader):
    """gunicorn's socket reader, each recv() bounded by what is left of the request's deadline."""

    def __init__(self, sock: socket.socket, deadline: ReadDeadline):
        super().__init__(sock)
        self.deadline = deadline

    def chunk(self, size_hint: int | None = None) -> bytes:
        left = self.deadline.remaining()
        if left is None:
            # Outside a request gunicorn bounds its own reads (the drain after a response sets its timeouts).
            return super().chunk(size_hint)
        before = self.sock.gettimeout()
        self.sock.settimeout(left)
        try:
            data = super().chunk(size_hint)
        except socket.timeout:
            raise self.deadline.expire() from None
        finally:
            # The response is written with the socket as gunicorn left it, not with a nearly spent timeout.
            _quietly(self.sock.settimeout, before)
        self.deadline.received += len(data)
        return data


class GuardedConn(TConn):
    """A gthread connection with a read deadline, giving its client's count back however it ends."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any, read_timeout: float,
                 release: Callable[[], None] | None):
        super().__init__(cfg, sock, client, server)
        self.deadline = ReadDeadline(read_timeout, _peer(client))
        self._release: Callable[[], None] | None = release

    def init(self) -> None:
        fresh = not self.initialized
        super().init()
        if fresh and not self.is_http2 and type(self.parser.unreader) is SocketUnreader:
            reader = DeadlineUnreader(self.sock, self.deadline)
            reader.buf = self.parser.unreader.buf
            self.parser.unreader = reader

    def close(self, graceful: bool = False) -> None:
        try:
            if self.deadline.expired:
                # No lingering close for a stalled client: gunicorn's waits up to 2 s on the worker's main loop.
                _close_now(self.sock)
            else:
                super().close(graceful)
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class GuardedThreadWorker(ThreadWorker):
    """gthread plus the read deadline and the per-client cap; configure() sets the limits before gunicorn forks."""

    read_timeout = 30.0
    max_connections_per_client = 256

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.clients = ClientCounter(self.max_connections_per_client, "http", "BUS_HTTP_MAX_CONNECTIONS_PER_CLIENT")
        self._busy = 0  # threads inside handle()
        self._busy_lock = threading.Lock()

    def accept(self, listener: socket.socket) -> None:
        # gthread's accept(), with the cap checked before the connection costs a thread or a count.
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        address = _address(client_addr)
        if address is not None and not self.clients.admit(address, _peer(client_addr)):
            util.close(client_sock)
            return
        self.nr_conns += 1
        client_sock.setblocking(True)
        release = None if address is None else (lambda: self.clients.release(address))
        conn = GuardedConn(self.cfg, client_sock, client_addr, listener.getsockname(), self.read_timeout, release)
        self.enqueue_req(conn)

    def handle(self, conn: GuardedConn) -> Any:
        # gthread hands every keep-alive request from its thread back to the main loop, which
        # re-registers the socket with the poller and, once the next request is readable, submits
        # it to the pool again: two epoll_ctl calls, a wake-up pipe, a queue hand-off and GIL
        # switches per request, a third of the ingress's CPU per event. A producer that sends
        # request after request gets its next one read by the same thread when it arrives within
        # STICKY seconds and another thread is free for everyone else.
        with self._busy_lock:
            self._busy += 1
        try:
            result = self._handle_one(conn)
            while result is True and self.alive and self._spare_thread() and _next_request_within(conn, STICKY):
                result = self._handle_one(conn)
            return result
        finally:
            with self._busy_lock:
                self._busy -= 1

    def _handle_one(self, conn: GuardedConn) -> Any:
        # One call reads one HTTP/1 request (or defers an idle new connection to the poller).
        conn.deadline.begin()
        return super().handle(conn)

    def _spare_thread(self) -> bool:
        return self._busy < self.cfg.threads

    def handle_request(self, req: Any, conn: GuardedConn) -> bool:
        conn.deadline.reading_body(req)
        try:
            return super().handle_request(req, conn)
        finally:
            conn.deadline.done()

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        if isinstance(exc, RequestTimeout):
            # The head stalled (or the body did and the app let the error through): already logged once.
            _quietly(util.write_error, client, 408, "Request Timeout", str(exc))
            return
        super().handle_error(req, client, addr, exc)


def configure(read_timeout: float, max_connections_per_client: int) -> type[GuardedThreadWorker]:
    """The worker class with these limits for gunicorn's worker_class; a class of its own, so nothing global changes."""
    return type("GuardedThreadWorker", (GuardedThreadWorker,), {
        "read_timeout": read_timeout, "max_connections_per_client": max_connections_per_client,
        "__module__": __name__})


def _next_request_within(conn: GuardedConn, seconds: float) -> bool:
    """Whether the connection's next request (or its end) is readable within `seconds`."""
    if conn.parser.unreader.buf.getvalue():
        return True  # read ahead with the last request (pipelining)
    try:
        readable, _, _ = select.select([conn.sock], [], [], seconds)
    except (OSError, ValueError):
        return False
    return bool(readable)


def _close_now(sock: socket.socket) -> None:
    try:
        sock.setblocking(False)
        drained = 0
        while drained < CLOSE_DRAIN:
            data = sock.recv(4096)
            if not data:
                break
            drained += len(data)
    except OSError:
        pass  # nothing more waiting (EAGAIN), or the client is already gone
    util.close(sock)


def _address(client: Any) -> str | None:
    # A unix socket's peers have no address to tell them apart: they are not counted.
    return str(client[0]) if isinstance(client, tuple) and client else None


def _peer(client: Any) -> str:
    return f"{client[0]}:{client[1]}" if isinstance(client, tuple) and len(client) >= 2 else "unix socket"


def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except OSError:
        pass
