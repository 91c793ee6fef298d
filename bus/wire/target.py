"""What BUS_REDIS_URL names: one Redis server, or Redis Sentinels that say which server is the primary.

`sentinel://h1:26379;sentinel://h2:26379/0` is kombu's form: one URL per Sentinel, joined by ';',
with the database (and the primary's password, as kombu reads it) on any of them. The primary's
name is BUS_REDIS_SENTINEL_MASTER. Every connection the bus makes (redis-py's for the journal
and kombu's for the broker, and the two pipes of wire/pipelined.py) asks the Sentinels for
the primary when it connects, so after a failover the next connection finds the new one; a
demoted primary's READONLY drops the connection that got it.
"""
from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
import redis
from redis.backoff import NoBackoff
from redis.connection import SSLConnection, parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel

from ..errors import ConfigError
from .resp import pack

DEFAULT_MASTER = "mymaster"
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class RedisTarget:
    """A parsed BUS_REDIS_URL. `options` are redis-py's connection options for the server itself
    (db, password, TLS); `sentinels` is empty for a plain redis://, rediss:// or unix:// URL."""

    url: str
    options: dict[str, Any] = field(hash=False, compare=False, repr=False)
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = DEFAULT_MASTER
    sentinel_password: str | None = field(default=None, repr=False)

    @property
    def shown(self) -> str:
        """The URL without its passwords, for messages."""
        return ";".join(part.rpartition("@")[2] if "@" in part else part for part in self.url.split(";"))


def parse(url: str, master: str = DEFAULT_MASTER, sentinel_password: str | None = None,
          setting: str = "BUS_REDIS_URL") -> RedisTarget:
    """ConfigError naming what is wrong with the URL (and the `setting` it came from)."""
    if not url.startswith("sentinel://"):
        try:
            return RedisTarget(url, parse_url(url))
        except ValueError as exc:
            raise ConfigError(f"{setting}={_hide(url)!r} is not a Redis URL ({exc}); use "
                              "redis://HOST:PORT/DB, rediss://..., unix:///path or sentinel://HOST:PORT;...") from None
    sentinels: list[tuple[str, int]] = []
    options: dict[str, Any] = {}
    for part in url.split(";"):
        parts = urlsplit(part.strip())
        if parts.scheme != "sentinel" or not parts.hostname:
            raise ConfigError(f"{setting}: {_hide(part)!r} is not sentinel://HOST:PORT; give every Sentinel "
                              "as sentinel://HOST:PORT, joined by ';'")
        try:
            sentinels.append((parts.hostname, parts.port or SENTINEL_PORT))
        except ValueError:
            raise ConfigError(f"{setting}: {_hide(part)!r} has a port that is not a number") from None
        if parts.password:
            options["password"] = unquote(parts.password)
            if parts.username:
                options["username"] = unquote(parts.username)
        if parts.path.strip("/"):
            try:
                options["db"] = int(parts.path.strip("/"))
            except ValueError:
                raise ConfigError(f"{setting}: the database in {_hide(part)!r} is not a number") from None
    return RedisTarget(url, options, tuple(sentinels), master, sentinel_password)


def client(target: RedisTarget, timeout: float) -> redis.Redis:
    """A redis-py client that fails fast (no retries: the caller answers 503), Sentinel-managed for
    a sentinel:// URL: it asks for the primary on each new connection."""
    fail_fast = dict(socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0),
                     health_check_interval=30)
    if not target.sentinels:
        return redis.Redis.from_url(target.url, **fail_fast)
    sentinel = Sentinel(list(target.sentinels), socket_timeout=timeout,
                        sentinel_kwargs={"socket_timeout": timeout, "password": target.sentinel_password})
    return sentinel.master_for(target.master, **fail_fast, **target.options)


def primary(target: RedisTarget, timeout: float) -> tuple[str, int]:
    """The primary's address: the first Sentinel that knows it, or ConnectionError naming them."""
    errors = []
    for host, port in target.sentinels:
        try:
            with socket.create_connection((host, port), timeout) as sock:
                sock.settimeout(timeout)
                exchange = _Exchange(target)
                sock.sendall(exchange.request)
                while (address := exchange.feed(sock.recv(4096))) is None:
                    pass
            return address
        except (OSError, ValueError) as exc:
            errors.append(f"{host}:{port}: {exc}")
    raise redis.ConnectionError(f"no Sentinel named the primary {target.master!r}: {'; '.join(errors)}")


async def primary_async(target: RedisTarget, timeout: float) -> tuple[str, int]:
    """primary() for an event loop."""
    errors = []
    for host, port in target.sentinels:
        writer = None
        try:
            reader_stream, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            exchange = _Exchange(target)
            writer.write(exchange.request)
            while (address := exchange.feed(await asyncio.wait_for(reader_stream.read(4096), timeout))) is None:
                pass
            return address
        except (TimeoutError, OSError, ValueError) as exc:
            errors.append(f"{host}:{port}: {exc or 'timed out'}")
        finally:
            if writer is not None:
                writer.close()
    raise redis.ConnectionError(f"no Sentinel named the primary {target.master!r}: {'; '.join(errors)}")


def tls_context(options: dict[str, Any]) -> ssl.SSLContext | None:
    """The TLS context of a rediss:// URL, with its ssl_ca_certs, ssl_certfile, ssl_keyfile and
    ssl_cert_reqs as redis-py reads them; None for plain TCP."""
    if options.get("connection_class") is not SSLConnection:
        return None
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    reqs = str(options.get("ssl_cert_reqs", "required")).lower()
    if reqs in ("none", str(ssl.CERT_NONE)):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif reqs in ("optional", str(ssl.CERT_OPTIONAL)):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


class _Exchange:
    """What one Sentinel is asked (AUTH first when it wants a password) and its answers as they
    arrive: the same for the blocking and the event-loop lookups, which only read differently."""

    def __init__(self, target: RedisTarget):
        self.target = target
        commands: list[tuple[Any, ...]] = [("AUTH", target.sentinel_password)] if target.sentinel_password else []
        commands.append(("SENTINEL", "get-master-addr-by-name", target.master))
        self.expected = len(commands)
        self.request = b"".join(pack(c) for c in commands)
        self._reader, self._replies = hiredis.Reader(), cast(list[Any], [])

    def feed(self, data: bytes) -> tuple[str, int] | None:
        """The primary's address once every answer is in; None while some are still to come."""
        if not data:
            raise OSError("the Sentinel closed the connection")
        self._reader.feed(data)
        while len(self._replies) < self.expected and (reply := self._reader.gets()) is not False:
            self._replies.append(reply)
        return _address(self.target, self._replies) if len(self._replies) == self.expected else None


def _address(target: RedisTarget, replies: list[Any]) -> tuple[str, int]:
    for reply in replies:
        if isinstance(reply, hiredis.ReplyError):
            raise ValueError(str(reply))
    address = replies[-1]
    if not address:
        raise ValueError(f"it does not know a primary named {target.master!r} (BUS_REDIS_SENTINEL_MASTER)")
    return address[0].decode(), int(address[1])


def _hide(url: str) -> str:
    return url.rpartition("@")[2] if "@" in url else url
