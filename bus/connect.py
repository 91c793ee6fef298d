"""Opening a connection to an endpoint: TCP (straight, or to the egress proxy and through its CONNECT), then TLS.

Everything here happens within the route's open_timeout. What goes wrong on the way to
or through a proxy is a ProxyError naming the proxy (credentials redacted), so the
attempt's error says where to look; an error from the endpoint itself (its certificate,
say) stays the endpoint's even when the connection was tunnelled.
"""
from __future__ import annotations

import socket
import ssl

from .proxies import Proxy

# A CONNECT answer's status line and headers; a proxy sending more is not one.
MAX_CONNECT_HEAD = 64 * 1024


class ProxyError(ConnectionError):
    """The proxy could not be reached, refused the request, or broke the tunnel before it was up."""


def open_connection(host: str, port: int, timeout: float, proxy: Proxy | None,
                    tls: ssl.SSLContext | None) -> socket.socket:
    """A connected socket to host:port (through `proxy` when given), wrapped in TLS when `tls` is given."""
    sock = _tcp(proxy.host, proxy.port, timeout, proxy) if proxy else _tcp(host, port, timeout, None)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if proxy and tls:
            _tunnel(sock, proxy, host, port)
        if tls:
            sock = tls.wrap_socket(sock, server_hostname=host)  # handshake within open_timeout
        return sock
    except BaseException:
        sock.close()
        raise


def _tcp(host: str, port: int, timeout: float, proxy: Proxy | None) -> socket.socket:
    try:
        return socket.create_connection((host, port), timeout=timeout)
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
