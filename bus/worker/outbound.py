"""Connections to endpoints: HTTP/1.1 over keep-alive sockets, kept per origin up to BUS_CONNECTION_MAX_AGE.

A delivery is one small request and a status line to read, so the worker sends it
itself: the request is written in one send, and the answer is parsed by httptools
(llhttp, the C parser the ingress already uses). urllib3 and http.client cost about
0.5 ms of CPU per attempt here (request objects, header dicts, email-style header
parsing), half of what a delivered event cost the pool processes
(docs/performance.md). What they gave a delivery is kept: TLS verified against the
system's store (bus/trust.py) unless a route turns it off, plus a route's own CA file,
a client certificate per route, no retries and no redirects behind the bus's back (the
bus retries, and delivery.py follows same-origin redirects itself), and a reused
connection is dropped first if the endpoint closed it while it was idle. A delivery goes
through the egress proxy bus/proxies.py chooses: plain http as an absolute-URL request to
the proxy, https through its CONNECT tunnel (connect.py opens connections).
"""
from __future__ import annotations

import functools
import re
import select
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

import httptools

from ..proxies import Choice, Proxy, choose
from ..routes import Route
from ..settings import OutboundSettings
from ..trust import tls_context
from .connect import ProxyError, open_connection
from .deadline import Deadline

# Idle connections kept per origin: a prefork pool process sends one attempt at a time; a threads
# pool may send more at once, and connections beyond this are closed after their answer.
CONNECTIONS_PER_HOST = 4
# Origins kept per worker process (a templated host may have many values).
MAX_ORIGINS = 1000
READ_SIZE = 65536
# Body bytes that arrive with the head are kept up to this until the reader says how many it wants.
KEEP_BEFORE_READ = 65536
# An answer's status line and headers together (http.client allows 100 lines of 64 KiB; nginx reads
# 32 KiB by default): an endpoint sending headers without end must not fill the worker's memory.
MAX_HEAD = 256 * 1024
_UNSENDABLE = re.compile(r"[\x00-\x20\x7f]")
_LINE_BREAK = re.compile(r"[\r\n]")
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only; elsewhere the stall stays


class BrokenAnswer(ConnectionError):
    """The endpoint closed the connection or sent something that is not an HTTP answer."""


class NotConnected(ConnectionError):
    """No connection to the endpoint's origin: refused, connect timeout, no such host, TLS or proxy
    refusal. It says nothing of the path, so it counts against the origin's breaker (endpoints.py).
    Its text is the cause's own (type and message), as the attempt's error always showed it."""


class Answer:
    """An endpoint's answer: status and headers (names lower-cased) once the head is in; the body is read on demand."""

    def __init__(self, sock: socket.socket, origin: tuple, born: float, read_timeout: float, deadline: Deadline):
        self.sock, self.origin, self.born = sock, origin, born
        self._read_timeout, self._deadline = read_timeout, deadline
        self.status = 0
        self.headers: dict[str, str] = {}
        self._parser = httptools.HttpResponseParser(self)
        self._head_done = self.complete = self._keep_alive = False
        self._body: list[bytes] = []
        self._kept = self._head_bytes = 0
        self._limit = KEEP_BEFORE_READ

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self._head_done = self.status >= 200

    def on_body(self, body: bytes) -> None:
        if self._kept < self._limit:
            self._body.append(body[: self._limit - self._kept])
            self._kept += len(self._body[-1])

    def on_message_complete(self) -> None:
        if self.status >= 200:
            self.complete = True
            self._keep_alive = self._parser.should_keep_alive()  # llhttp forgets it once the message is done
        else:  # an interim answer (100 Continue): the real one follows on the same connection
            self.headers = {}

    def read_head(self) -> None:
        while not self._head_done:
            self._feed("before answering")

    def read(self, limit: int) -> bytes:
        """Up to `limit` bytes of the body, waiting for no more than that (the rest is never read)."""
        self._limit = limit
        while not self.complete and self._kept < limit:
            self._feed("in the middle of its answer")
        return b"".join(self._body)[:limit]

    def reusable(self) -> bool:
        return self.complete and self._keep_alive

    def _feed(self, when: str) -> None:
        if not self._head_done and self._head_bytes > MAX_HEAD:
            raise BrokenAnswer(f"the answer's status line and headers went past {MAX_HEAD // 1024} KiB")
        self.sock.settimeout(self._deadline.timeout(self._read_timeout))
        try:
            data = self.sock.recv(READ_SIZE)
        except TimeoutError:
            if self._deadline.passed():  # cut short by the attempt's deadline, not by read_timeout
                raise self._deadline.expired() from None
            raise
        self._head_bytes += len(data)
        if not data:
            if self._head_done and "content-length" not in self.headers and \
                    "chunked" not in self.headers.get("transfer-encoding", ""):
                self.complete = True  # a body that ends when the connection does (HTTP/1.0 style)
                self._keep_alive = False
                return
            raise BrokenAnswer(f"the endpoint closed the connection {when}")
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise BrokenAnswer("the endpoint switched protocols instead of answering") from None
        except httptools.HttpParserError as exc:
            raise BrokenAnswer(f"not an HTTP answer: {exc}") from None
        if not self.complete:
            _ack_now(self.sock)


def _ack_now(sock: socket.socket) -> None:
    """Acknowledge what came in at once, when the answer is still incomplete.

    A receiver that writes its head and its body in two sends (Python's http.server on
    keep-alive) has Nagle hold the body until the head is acknowledged, and on a kept
    connection Linux delays that ACK by up to 40 ms: every delivery would wait for it.
    TCP_QUICKACK sends the pending ACK now (it is not sticky, hence once per read), and
    only here: an answer that came whole in one read costs no system call."""
    if _QUICKACK is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        except OSError:
            pass  # not a TCP socket (a unix socket endpoint): there is no delayed ACK to cut


class Pools:
    """The worker process's idle connections by TLS setting and origin, and one TLS context per setting."""

    def __init__(self, config: OutboundSettings | None = None) -> None:
        self.config = config or OutboundSettings()
        self._idle: dict[tuple, list[tuple[socket.socket, float]]] = {}
        self._contexts: dict[tuple, ssl.SSLContext] = {}
        self._proxies: dict[tuple, Choice] = {}
        self._lock = threading.Lock()

    def take(self, origin: tuple) -> tuple[socket.socket, float] | None:
        """An idle connection to the origin, and when it was opened: one the endpoint has not closed
        meanwhile, and younger than BUS_CONNECTION_MAX_AGE, if any."""
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                kept = idle.pop() if idle else None
            if kept is None:
                return None
            sock, born = kept
            if not _readable(sock) and not self._too_old(born):
                return kept
            sock.close()  # closed by the endpoint (or it sent something unasked), or too old: not used again

    def give_back(self, origin: tuple, sock: socket.socket, born: float) -> None:
        if self._too_old(born):
            sock.close()
            return
        with self._lock:
            idle = self._idle.get(origin)
            if idle is None:
                if len(self._idle) >= MAX_ORIGINS:
                    self._close_all()
                idle = self._idle[origin] = []
            if len(idle) < CONNECTIONS_PER_HOST:
                idle.append((sock, born))
                return
        sock.close()

    def context(self, route: Route) -> ssl.SSLContext:
        key = (route.tls_verify, route.ca_file, route.client_cert, route.client_key)
        context = self._contexts.get(key)
        if context is None:
            context = self._contexts[key] = tls_context(self.config.trust, *key)
        return context

    def proxy(self, route: Route, scheme: str, host: str, port: int) -> Choice:
        """The proxy a delivery of this route to scheme://host:port goes through (bus/proxies.py), worked out once."""
        key = (route.proxy, scheme, host, port)
        choice = self._proxies.get(key)
        if choice is None:
            if len(self._proxies) >= MAX_ORIGINS:
                self._proxies.clear()
            choice = self._proxies[key] = choose(self.config.proxies, route.proxy, scheme, host, port)
        return choice

    def _too_old(self, born: float) -> bool:
        # A kept connection never looks the name up again: past this age it is replaced, so a DNS change
        # (a moved service, a blue/green switch) reaches deliveries within BUS_CONNECTION_MAX_AGE.
        return time.monotonic() - born > self.config.connection_max_age

    def _close_all(self) -> None:
        for kept in self._idle.values():
            for sock, _ in kept:
                sock.close()
        self._idle.clear()


def open_response(pools: Pools, route: Route, url: str, headers: dict[str, str], body: bytes,
                  deadline: Deadline | None = None, method: str | None = None) -> Answer:
    """Send the request and return once the status line and headers are in; the body is left to
    read (or not). Raises OSError (NotConnected when no connection to the origin opened, BrokenAnswer
    for a garbled or cut answer, TimeoutError when read_timeout passes) when there is no
    answer, AttemptDeadline once `deadline` (the whole attempt's, redirects included) has
    passed, ValueError for a URL or header that cannot be sent. `method` is the route's unless given
    (a captured request's own)."""
    deadline = deadline or Deadline.after(route.open_timeout + route.read_timeout)
    scheme, host, port, target, host_header = _target(url)
    tls = scheme == "https"
    proxy = pools.proxy(route, scheme, host, port).proxy
    if proxy and not tls:
        # Plain http through a proxy: the absolute URL as the target, its credentials in a header of its own.
        target = f"http://{host_header}{target}"
        if proxy.authorization:
            headers = {**headers, "Proxy-Authorization": proxy.authorization}
    request = _request(method or route.method, target, host_header, headers, body)
    origin = (route.tls_verify, route.ca_file, route.client_cert, route.client_key, tls, host, port, proxy)
    kept = pools.take(origin)
    if kept is None:
        kept = _open(pools, route, host, port, proxy, tls, deadline), time.monotonic()
    sock, born = kept
    try:
        sock.settimeout(deadline.timeout(route.read_timeout))  # sendall as a whole, not per send
        sock.sendall(request)
        answer = Answer(sock, origin, born, route.read_timeout, deadline)
        answer.read_head()
        if proxy and not tls and answer.status == 407:
            raise ProxyError(f"proxy {proxy.shown} refused the request: 407 Proxy Authentication Required; "
                             "check the user and password in its URL")
        return answer
    except BaseException:
        sock.close()
        raise


def _open(pools: Pools, route: Route, host: str, port: int, proxy: Proxy | None, tls: bool,
          deadline: Deadline) -> socket.socket:
    try:
        return open_connection(host, port, deadline.timeout(route.open_timeout), proxy,
                               pools.context(route) if tls else None)
    except TimeoutError as exc:
        if deadline.passed():  # a redirect's connection, with less than open_timeout left of the attempt
            raise deadline.expired() from None
        raise NotConnected(f"{type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        raise NotConnected(f"{type(exc).__name__}: {exc}") from exc


def finish(pools: Pools, answer: Answer) -> None:
    """Keep the connection for the next attempt if its answer was read to the end, else close it."""
    if answer.reusable():
        pools.give_back(answer.origin, answer.sock, answer.born)
    else:
        answer.sock.close()


@functools.lru_cache(maxsize=4096)
def _target(url: str) -> tuple[str, str, int, str, str]:
    """Scheme, host, port, request target and Host header of a URL; parsed once per URL a process sends to
    (urlsplit and its hostname/port properties were a fifth of the client's own CPU per request)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url}")
    host = parts.hostname
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, parts.port or (443 if parts.scheme == "https" else 80), target, \
        _host_header(host, parts.port)


def _request(method: str, target: str, host: str, headers: dict[str, str], body: bytes) -> bytes:
    if _UNSENDABLE.search(target):
        raise ValueError(f"the URL path holds a space or control character: {target[:200]!r}")
    if _LINE_BREAK.search("".join(headers) + "".join(headers.values())):
        raise ValueError("a header name or value holds a line break")  # it would start a header of its own
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Accept-Encoding: identity"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


def _host_header(host: str, port: int | None) -> str:
    name = f"[{host}]" if ":" in host else host
    return f"{name}:{port}" if port else name


def _readable(sock: socket.socket) -> bool:
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True
