"""Opening a connection to an endpoint: TCP (straight, or to the egress proxy and through its CONNECT), then TLS.

Everything here happens within one budget, the route's open_timeout (or what is left of
the attempt): not per address as socket.create_connection() waits. A name's addresses are
tried as RFC 8305 ("happy eyeballs") says: families alternated, the next address started
250 ms after the previous one (or at once when it fails) while earlier ones keep trying,
the first to connect taken. So an IPv6 address that black-holes costs 250 ms, not
open_timeout per address. Name resolution itself is left to the system's resolver and
its own timeouts (resolv.conf), as every client library does.

What goes wrong on the way to or through a proxy is a ProxyError naming the proxy
(credentials redacted), so the attempt's error says where to look; an error from the
endpoint itself (its certificate, say) stays the endpoint's even when the connection was
tunnelled. ProxyError is a ConnectionError, as BrokenAnswer is: an attempt error the
journal records and the event retries on, never raised to a user.
"""
from __future__ import annotations

import errno
import os
import selectors
import socket
import ssl
import time
from typing import cast

from ..proxies import Proxy

# A CONNECT answer's status line and headers; a proxy sending more is not one.
MAX_CONNECT_HEAD = 64 * 1024
# RFC 8305's recommended wait before starting a connection to the next address.
CONNECTION_ATTEMPT_DELAY = 0.25
_IN_PROGRESS = {errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY}


class ProxyError(ConnectionError):
    """The proxy could not be reached, refused the request, or broke the tunnel before it was up."""


def open_connection(host: str, port: int, timeout: float, proxy: Proxy | None,
                    tls: ssl.SSLContext | None) -> socket.socket:
    """A connected socket to host:port (through `proxy` when given), wrapped in TLS when `tls` is given,
    all within `timeout` seconds (TimeoutError after it)."""
    until = time.monotonic() + timeout
    sock = _tcp(proxy.host, proxy.port, timeout, proxy) if proxy else _tcp(host, port, timeout, None)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if proxy and tls:
            sock.settimeout(_left(until))
            _tunnel(sock, proxy, host, port)
        if tls:
            sock.settimeout(_left(until))  # the handshake as a whole, not per read
            sock = tls.wrap_socket(sock, server_hostname=host)
        return sock
    except BaseException:
        sock.close()
        raise


def _left(until: float) -> float:
    left = until - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out (open_timeout)")
    return left


def _tcp(host: str, port: int, timeout: float, proxy: Proxy | None) -> socket.socket:
    try:
        return happy_eyeballs(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
    except OSError as exc:
        if proxy is None:
            raise
        raise ProxyError(f"proxy {proxy.shown} could not be reached: {type(exc).__name__}: {exc}") from None


def _tunnel(sock: socket.socket, proxy: Proxy, host: str, port: int) -> None:
    """Ask the proxy for a tunnel to host:port; return once it says 2xx, with nothing of the tunnel read."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = _connect_answer(sock, proxy, authority)
    except ProxyError:
        raise
    except OSError as exc:
        raise ProxyError(f"proxy {proxy.shown} failed during CONNECT {authority}: {type(exc).__name__}: {exc}") from None
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    version, _, rest = status_line.partition(" ")
    if not version.startswith("HTTP/") or not rest[:1] == "2":
        hint = "; check the user and password in its URL" if rest.startswith("407") else ""
        raise ProxyError(f"proxy {proxy.shown} refused CONNECT {authority}: {status_line[:200]!r}{hint}")


def _connect_answer(sock: socket.socket, proxy: Proxy, authority: str) -> bytes:
    # Read byte runs up to the blank line only: the endpoint's TLS bytes that follow are not ours to take.
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        if len(head) > MAX_CONNECT_HEAD:
            raise ProxyError(f"proxy {proxy.shown} answered CONNECT {authority} with more than "
                             f"{MAX_CONNECT_HEAD // 1024} KiB of head")
        data = sock.recv(4096, socket.MSG_PEEK)
        if not data:
            raise ProxyError(f"proxy {proxy.shown} closed the connection before answering CONNECT {authority}")
        end = (head + data).find(b"\r\n\r\n")
        take = len(data) if end < 0 else end + 4 - len(head)
        head += sock.recv(take)
    return head


def happy_eyeballs(infos: list[tuple], timeout: float) -> socket.socket:
    """The first of getaddrinfo()'s addresses to connect, tried as RFC 8305 says, within `timeout` in all."""
    addresses = _interleaved(infos)
    until = time.monotonic() + timeout
    pending: set[socket.socket] = set()
    errors: list[OSError] = []
    next_start = time.monotonic()
    with selectors.DefaultSelector() as selector:
        try:
            while addresses or pending:
                now = time.monotonic()
                if now >= until:
                    raise TimeoutError(f"timed out: no connection within {timeout:g}s (open_timeout) to any of "
                                       f"{len(infos)} address(es)")
                if addresses and (now >= next_start or not pending):
                    sock = _start(addresses.pop(0), errors)
                    if sock is not None:
                        pending.add(sock)
                        selector.register(sock, selectors.EVENT_WRITE)
                    next_start = now + CONNECTION_ATTEMPT_DELAY
                    continue
                wait = min(until, next_start) - now if addresses else until - now
                for key, _ in selector.select(max(wait, 0)):
                    sock = cast(socket.socket, key.fileobj)  # we register only sockets
                    selector.unregister(sock)
                    pending.discard(sock)
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err == 0:
                        sock.setblocking(True)
                        return sock
                    errors.append(OSError(err, os.strerror(err)))
                    sock.close()
                    next_start = time.monotonic()  # a failure starts the next address at once
        finally:
            for sock in pending:
                sock.close()
    raise errors[0] if errors else OSError("the name resolved to no address")


def _start(info: tuple, errors: list[OSError]) -> socket.socket | None:
    family, kind, proto, _, address = info
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    err = sock.connect_ex(address)
    if err == 0 or err in _IN_PROGRESS:
        return sock
    errors.append(OSError(err, os.strerror(err)))
    sock.close()
    return None


def _interleaved(infos: list[tuple]) -> list[tuple]:
    """Addresses alternating between families, the family of the first address first (RFC 8305 section 4)."""
    first = [i for i in infos if i[0] == infos[0][0]] if infos else []
    other = [i for i in infos if infos and i[0] != infos[0][0]]
    out = []
    for n in range(max(len(first), len(other))):
        out += first[n:n + 1] + other[n:n + 1]
    return out
