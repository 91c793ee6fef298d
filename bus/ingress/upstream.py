"""The capture proxy's connections to its upstream: HTTP/1.1 keep-alive on the event loop, answers streamed.

One request at a time per connection; idle ones are kept for the next request. The answer's head is
awaited within the read timeout, then its body is handed out chunk by chunk as it arrives, so a
chunked or huge answer passes through without being held whole. httptools (llhttp) parses it, as
it does the requests the ingress reads.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

IDLE_PER_UPSTREAM = 64
# Upstream body bytes held for a client that reads slowly before the upstream is paused.
HIGH_WATER = 1024 * 1024


class UpstreamError(OSError):
    """No (whole) answer: refused, reset, closed, garbled. `timed_out` for a read or connect deadline."""

    def __init__(self, message: str, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out


class _Link(asyncio.Protocol):
    """One connection; the current exchange's parser callbacks live here."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._reset(head_only=False)

    def _reset(self, head_only: bool) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = self.keep_alive = False
        self.head_only = head_only  # a HEAD's answer declares a length it never sends
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.error: UpstreamError | None = None
        self.received = False
        self.wake = asyncio.Event()
        self.head = False
        self.paused = False
        self.parser = httptools.HttpResponseParser(self)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("the upstream switched protocols instead of answering")
        except httptools.HttpParserError as exc:
            if not self.complete:  # bytes after a HEAD's answer are its never-sent body
                self._fail(f"not an HTTP answer: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self.error is None:
            framed = any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in self.headers)
            if self.head and not framed:
                self.complete = True  # a body that ends with the connection (HTTP/1.0 style)
            else:
                self._fail("the upstream closed the connection " + ("mid-answer" if self.head else "before answering"))
        self.wake.set()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 100 Continue and friends: the real answer follows
            self.headers = []
            return
        self.status, self.head = status, True
        if self.head_only:
            self.complete = True
        self.wake.set()

    def on_body(self, body: bytes) -> None:
        if self.head_only:
            return
        self.chunks.append(bytes(body))
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and self.transport is not None and not self.paused:
            self.transport.pause_reading()
            self.paused = True
        self.wake.set()

    def on_message_complete(self) -> None:
        if self.status >= 200:
            self.complete = True
            self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once the message is done
            self.wake.set()

    def _fail(self, message: str) -> None:
        self.error = UpstreamError(message)
        self.wake.set()
        if self.transport is not None:
            self.transport.close()

    # used by Upstream
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and not self.head_only

    async def wait(self, timeout: float, what: str) -> None:
        try:
            await asyncio.wait_for(self.wake.wait(), timeout)
        except TimeoutError:
            if self.transport is not None:
                self.transport.close()
            raise UpstreamError(f"no {what} within {timeout:g}s", timed_out=True) from None
        self.wake.clear()
        if self.error is not None:
            raise self.error


class Answer:
    """The upstream's status and headers; `body()` yields its bytes as they arrive."""

    def __init__(self, upstream: Upstream, link: _Link):
        self._upstream, self._link = upstream, link
        self.status, self.headers = link.status, link.headers

    async def body(self) -> AsyncIterator[bytes]:
        link = self._link
        while True:
            while link.chunks:
                chunk = link.chunks.popleft()
                link.buffered -= len(chunk)
                if link.paused and link.buffered < HIGH_WATER // 2 and link.transport is not None:
                    link.transport.resume_reading()
                    link.paused = False
                yield chunk
            if link.complete:
                self._upstream._give_back(link)
                return
            await link.wait(self._upstream.read_timeout, "more of the answer")

    def abandon(self) -> None:
        """The client went away mid-answer: the connection cannot be reused."""
        if self._link.transport is not None:
            self._link.transport.close()


class Upstream:
    """Connections to one upstream origin (http only: the API sits next to the proxy)."""

    def __init__(self, url: str, open_timeout: float, read_timeout: float):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"--upstream {url!r} is not an http:// URL with a host: bus proxy speaks plain HTTP "
                             "to an API next to it; give its http://HOST:PORT")
        self.host, self.port = parts.hostname, parts.port or 80
        self.netloc = parts.netloc
        self.prefix = parts.path.rstrip("/")  # requests go below it, as replays do (captured.target)
        self.open_timeout, self.read_timeout = open_timeout, read_timeout
        self._idle: list[_Link] = []

    async def request(self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Answer:
        """Send the request; return once the answer's head is in. Raises UpstreamError."""
        head = b"%s %s HTTP/1.1\r\n" % (method.encode("latin-1"), target.encode("latin-1"))
        head += b"".join(b"%s: %s\r\n" % pair for pair in headers)
        head += b"content-length: %d\r\n\r\n" % len(body)
        link = self._take()
        reused = link is not None
        if link is None:
            link = await self._connect()
        try:
            return await self._exchange(link, method, head, body)
        except UpstreamError as exc:
            # An idle connection the upstream closed just as we sent: it never saw the request, a
            # new connection may send it (as browsers and Go's client do).
            if not (reused and not link.received and not exc.timed_out):
                raise
        return await self._exchange(await self._connect(), method, head, body)

    async def _exchange(self, link: _Link, method: str, head: bytes, body: bytes) -> Answer:
        link._reset(head_only=method == "HEAD")
        assert link.transport is not None
        link.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            link.transport.write(body)
        while not link.head:
            await link.wait(self.read_timeout, "answer")
        return Answer(self, link)

    async def _connect(self) -> _Link:
        loop = asyncio.get_running_loop()
        try:
            _, link = await asyncio.wait_for(loop.create_connection(_Link, self.host, self.port), self.open_timeout)
        except TimeoutError:
            raise UpstreamError(f"could not connect to {self.netloc} within {self.open_timeout:g}s",
                                timed_out=True) from None
        except OSError as exc:
            raise UpstreamError(f"could not connect to {self.netloc}: {exc.strerror or exc}") from None
        return link

    def _take(self) -> _Link | None:
        while self._idle:
            link = self._idle.pop()
            if not link.closed:
                return link
        return None

    def _give_back(self, link: _Link) -> None:
        if link.reusable() and len(self._idle) < IDLE_PER_UPSTREAM:
            self._idle.append(link)
        elif link.transport is not None:
            link.transport.close()

    def close(self) -> None:
        for link in self._idle:
            if link.transport is not None:
                link.transport.close()
        self._idle.clear()
