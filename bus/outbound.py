"""Connections to endpoints: one urllib3 pool manager per TLS setting, kept for the worker process's life.

Deliveries go to urllib3 directly rather than through requests: building a
PreparedRequest and a Response (header merging, URL re-quoting, cookie
extraction) cost about 0.25 ms of CPU per attempt, a third of a delivered
event's cost in the worker (docs/performance.md). What requests added that a
delivery needs is kept here: its CA bundle (certifi) by default, TLS verified
unless a route turns it off, a client certificate per route, no retries or
redirects behind our back (the bus retries, and delivery.py follows
same-origin redirects itself).
"""
from __future__ import annotations

import threading
from urllib.parse import urlsplit

import certifi
import urllib3

from .routes import Route

# Connections kept per host: a prefork pool process sends one attempt at a time; a threads
# pool may send more at once, and the extra connections are opened and closed as needed.
CONNECTIONS_PER_HOST = 4
NO_RETRIES = urllib3.Retry(total=False, redirect=False)
# Origins kept per worker process. The pools cached here are never more than each pool manager
# holds, so a manager never evicts (and closes) a pool this cache still hands out.
MAX_POOLS = 1000


class Pools:
    """The pool managers of one worker process, by (verify, CA file, client cert, client key)."""

    def __init__(self) -> None:
        self._managers: dict[tuple, urllib3.PoolManager] = {}
        # The connection pool per TLS setting and origin, looked up without PoolManager's
        # per-call URL parsing and pool-key building.
        self._pools: dict[tuple, urllib3.HTTPConnectionPool] = {}
        self._lock = threading.Lock()

    def pool(self, route: Route, scheme: str, host: str, port: int | None) -> urllib3.HTTPConnectionPool:
        key = (route.tls_verify, route.ca_file, route.client_cert, route.client_key, scheme, host, port)
        pool = self._pools.get(key)
        if pool is None:
            if len(self._pools) >= MAX_POOLS:
                self._pools.clear()  # a templated host with many values: start over rather than grow
            pool = self._pools[key] = self.manager(route).connection_from_host(host, port, scheme)
        return pool

    def manager(self, route: Route) -> urllib3.PoolManager:
        key = (route.tls_verify, route.ca_file, route.client_cert, route.client_key)
        manager = self._managers.get(key)
        if manager is None:
            with self._lock:
                manager = self._managers.get(key) or self._new(*key)
                self._managers[key] = manager
        return manager

    @staticmethod
    def _new(verify: bool, ca_file: str | None, client_cert: str | None, client_key: str | None) -> urllib3.PoolManager:
        tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": ca_file or certifi.where()} if verify else \
            {"cert_reqs": "CERT_NONE", "assert_hostname": False}
        return urllib3.PoolManager(num_pools=MAX_POOLS, maxsize=CONNECTIONS_PER_HOST, cert_file=client_cert,
                                   key_file=client_key, **tls)


def open_response(pools: Pools, route: Route, url: str, headers: dict[str, str], body: bytes) -> urllib3.BaseHTTPResponse:
    """Send the request and return once the status line and headers are in; the body is left to
    read (or not). Raises urllib3's HTTPError or OSError when there is no answer."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return pools.pool(route, parts.scheme, parts.hostname, parts.port).urlopen(
        route.method, path, body=body, headers=headers, redirect=False, retries=NO_RETRIES, assert_same_host=False,
        timeout=urllib3.Timeout(connect=route.open_timeout, read=route.read_timeout),
        preload_content=False, decode_content=True,
    )


def finish(resp: urllib3.BaseHTTPResponse) -> None:
    """Give the connection back for the next attempt if its answer was read to the end, else close it."""
    if not resp.isclosed():
        resp.close()
    resp.release_conn()
