"""Connections to Redis for accepting events, shared by concurrent callers whose commands go out together.

PipelinedRedis is the HTTP ingress's: one asyncio connection per event loop.
SharedPipe is the same idea for threads (bus.emit() in a threaded program, the
forward listener): one blocking connection per process.

The HTTP ingress answers many connections from one event loop. Each request's
accept is one EVALSHA; requests that arrive in the same loop iteration have
their commands written to Redis in one write and their replies read in one
read, so a burst of N requests costs one round trip, not N (a cross-process
wake-up is the dearest part of a small request on a small VM). Replies come
back in the order commands were written, so each waiter is the next one in line.

Failure is what `redis.Redis` raises: ConnectionError when Redis is unreachable
or closes the connection (every command in flight fails, none is retried:
the caller answers 503 and the producer retries), TimeoutError when no reply
comes within `timeout` (the connection is dropped, so a late reply can never be
taken for another command's).
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import select
import socket
import ssl
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import hiredis
import redis
from redis._parsers.base import BaseParser
from redis.exceptions import NoScriptError

from .resp import pack
from .target import RedisTarget, parse, primary, primary_async, tls_context

__all__ = ["PipelinedRedis", "SharedPipe", "pack", "evalsha", "eval_", "handshake", "reply_error"]


def handshake(options: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The commands a new connection sends first: AUTH and SELECT, as the URL asks."""
    commands: list[tuple[Any, ...]] = []
    if options.get("password"):
        commands.append(("AUTH", options["username"], options["password"]) if options.get("username")
                        else ("AUTH", options["password"]))
    if options.get("db"):
        commands.append(("SELECT", options["db"]))
    return commands


@functools.lru_cache(maxsize=64)
def script_sha(source: str) -> str:
    """The SHA1 Redis knows a script by (EVALSHA)."""
    return hashlib.sha1(source.encode()).hexdigest()


def evalsha(source: str, keys: list[str], args: list[Any]) -> tuple[Any, ...]:
    """The script by its SHA; Redis answers NOSCRIPT (a NoScriptError) when it does not know it yet."""
    return ("EVALSHA", script_sha(source), len(keys), *keys, *args)


def eval_(source: str, keys: list[str], args: list[Any]) -> tuple[Any, ...]:
    """The script itself, which also loads it: after NOSCRIPT (a restart, a new server)."""
    return ("EVAL", source, len(keys), *keys, *args)


@dataclass(frozen=True)
class Ack:
    """How many replicas must hold a confirmed write (WAIT numreplicas timeout) before it counts."""

    replicas: int = 0
    timeout_ms: int = 1000

    def command(self) -> tuple[Any, ...]:
        return ("WAIT", self.replicas, self.timeout_ms)


class NotConfirmed(redis.RedisError):
    """The write is done on the primary, but fewer replicas than asked confirmed it in time."""

    def __init__(self, confirmed: int, ack: Ack):
        super().__init__(f"{confirmed} of {ack.replicas} replica(s) confirmed the write within {ack.timeout_ms} ms")
        self.confirmed, self.ack = confirmed, ack


class NoReplicasError(redis.ResponseError):
    """NOREPLICAS: a primary with min-replicas-to-write has too few replicas in reach to take a write."""


# redis-py turns error replies into exception types by their first word but leaves NOREPLICAS a
# plain ResponseError (a bug in our call looks the same). One more row in its table gives it a
# type of its own, for redis.Redis clients (kombu's too: still a ResponseError) and these pipes.
BaseParser.EXCEPTION_CLASSES.setdefault("NOREPLICAS", NoReplicasError)


def reply_error(reply: hiredis.ReplyError) -> redis.RedisError:
    """The exception redis-py raises for this error reply: LOADING is a BusyLoadingError (Redis is
    restarting: a ConnectionError, so callers treat it as Redis being down), NOSCRIPT a NoScriptError,
    READONLY a ReadOnlyError, OOM an OutOfMemoryError, NOREPLICAS a NoReplicasError. An error inside
    a script keeps its command's code ("OOM command not allowed ... script: ...")."""
    return BaseParser.parse_error(str(reply))


class _Link(asyncio.Protocol):
    """The socket's side: feeds replies to the connection's waiters in order."""

    def __init__(self, owner: PipelinedRedis):
        self.owner = owner
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.demoted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.owner._waiting
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.owner._drop(self, redis.ConnectionError(f"Redis sent something that is not RESP: {exc}"))
                return
            if reply is False:
                return
            if not waiting:
                self.owner._drop(self, redis.ConnectionError("Redis sent a reply nobody asked for"))
                return
            future, _ = waiting.popleft()
            if future.done():
                continue  # its caller gave up (cancelled); the reply is still its own
            if isinstance(reply, hiredis.ReplyError):
                error = reply_error(reply)
                future.set_exception(error)
                # READONLY: this server was demoted. The URL may name the new primary by now (a DNS
                # name, a proxy), so this connection closes once its replies are in and the next
                # command connects again, as redis-py's Sentinel connections do.
                self.demoted = self.demoted or isinstance(error, redis.ReadOnlyError)
            else:
                future.set_result(reply)
            if self.demoted and not waiting:
                self.owner._drop(self, redis.ConnectionError("Redis answered READONLY: connecting again"))
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._drop(self, redis.ConnectionError(f"Redis closed the connection ({exc or 'end of stream'})"))


class PipelinedRedis:
    """A lazily connected, self-healing Redis connection for one event loop; see the module doc."""

    def __init__(self, url: str | RedisTarget, timeout: float, ack: Ack = Ack()):
        self.timeout, self.ack = timeout, ack
        self.target = url if isinstance(url, RedisTarget) else parse(url)
        self._options = self.target.options
        self._confirming: list[asyncio.Future] = []
        self._link: _Link | None = None
        self._connecting: asyncio.Task | None = None
        self._waiting: deque[tuple[asyncio.Future, float]] = deque()
        self._out: list[bytes] = []
        self._flush_pending = False
        self._watchdog: asyncio.TimerHandle | None = None

    async def execute(self, *args: Any, confirm: bool = False) -> Any:
        """Send one command and wait for its reply (written with whatever else this loop iteration sends).
        With `confirm` and an Ack of replicas, it counts only once that many replicas hold it: one WAIT
        follows each write of confirmed commands, and NotConfirmed says when too few did."""
        return await self.execute_packed(pack(args), confirm=confirm)

    async def execute_packed(self, packed: bytes, confirm: bool = False) -> Any:
        """execute() of a command already in RESP (resp.pack, or fragments joined under one head)."""
        if self._link is None:
            await self._connected()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._out.append(packed)
        self._waiting.append((future, time.monotonic()))
        confirmed = None
        if confirm and self.ack.replicas:
            confirmed = loop.create_future()
            self._confirming.append(confirmed)
        if not self._flush_pending:
            self._flush_pending = True
            loop.call_soon(self._flush)
        try:
            reply = await future
        except BaseException:
            if confirmed is not None:
                confirmed.cancel()
            raise
        if confirmed is not None:
            count = await confirmed
            if count < self.ack.replicas:
                raise NotConfirmed(count, self.ack)
        return reply

    async def run_script(self, source: str, keys: list[str], args: list[Any], confirm: bool = False) -> Any:
        try:
            return await self.execute(*evalsha(source, keys, args), confirm=confirm)
        except NoScriptError:
            return await self.execute(*eval_(source, keys, args), confirm=confirm)

    def close(self) -> None:
        if self._link is not None and self._link.transport is not None:
            self._link.transport.close()

    # -- connection ---------------------------------------------------------------------------

    async def _connected(self) -> _Link:
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            # shield: one caller timing out must not cancel the attempt the others wait on
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _connect(self) -> _Link:
        loop = asyncio.get_running_loop()
        opts = self._options
        try:
            if opts.get("path"):
                _, link = await asyncio.wait_for(
                    loop.create_unix_connection(lambda: _Link(self), opts["path"]), self.timeout)
            else:
                host, port, tls = _tcp(opts)
                if self.target.sentinels:
                    host, port = await primary_async(self.target, self.timeout)
                _, link = await asyncio.wait_for(
                    loop.create_connection(lambda: _Link(self), host, port, ssl=tls), self.timeout)
        except TimeoutError:
            raise redis.TimeoutError(f"no connection to Redis within {self.timeout:g}s") from None
        except OSError as exc:
            raise redis.ConnectionError(f"cannot connect to Redis: {exc}") from exc
        self._link = link
        try:
            for command in handshake(opts):
                await self.execute(*command)
        except BaseException:
            self.close()
            raise
        return link

    def _flush(self) -> None:
        self._flush_pending = False
        link = self._link
        if link is None or link.transport is None or link.transport.is_closing():
            self._link = None
            self._fail_all(redis.ConnectionError("the connection to Redis was lost"))
            return
        out, self._out = self._out, []
        if self._confirming:
            # One WAIT for every confirmed write of this flush: it covers all that came before it.
            waiters, self._confirming = self._confirming, []
            counted = asyncio.get_running_loop().create_future()
            counted.add_done_callback(functools.partial(_share_count, waiters))
            out.append(pack(self.ack.command()))
            # Redis holds the reply for up to the WAIT's timeout: the watchdog waits that much longer.
            self._waiting.append((counted, time.monotonic() + self.ack.timeout_ms / 1000))
        link.transport.write(b"".join(out))
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(self.timeout, self._check_replies)

    def _check_replies(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        overdue = self._waiting[0][1] + self.timeout - time.monotonic()
        if overdue <= 0 and self._link is not None:
            self._drop(self._link, redis.TimeoutError(f"Redis did not answer within {self.timeout:g}s"))
        else:
            self._watchdog = asyncio.get_running_loop().call_later(max(overdue, 0.01), self._check_replies)

    def _drop(self, link: _Link, error: Exception) -> None:
        """The link is done for: every command in flight fails with `error`; the next one reconnects."""
        if link is self._link:
            self._link = None
            self._fail_all(error)
        if link.transport is not None and not link.transport.is_closing():
            link.transport.abort()

    def _fail_all(self, error: Exception) -> None:
        waiting, self._waiting, self._out = self._waiting, deque(), []
        confirming, self._confirming = self._confirming, []
        for future, _ in waiting:
            if not future.done():
                future.set_exception(error)
        for future in confirming:
            future.cancel()  # its command failed with `error` above


def _share_count(waiters: list[asyncio.Future], counted: asyncio.Future) -> None:
    """The WAIT's reply (how many replicas hold the writes before it) to every write it confirms."""
    for waiter in waiters:
        if waiter.done():
            continue
        if counted.cancelled():
            waiter.cancel()
        elif counted.exception() is not None:
            waiter.set_exception(counted.exception())  # type: ignore[arg-type]
        else:
            waiter.set_result(int(counted.result()))


_PENDING = object()


class _Slot:
    """One caller's command (or `count` commands), its reply (or list of replies), and what the caller
    waits on while another thread sends it."""

    __slots__ = ("packed", "count", "result", "wake", "lead", "confirm")

    def __init__(self, packed: bytes, count: int = 1, confirm: bool = False):
        self.packed, self.count, self.result, self.lead = packed, count, _PENDING, False
        self.wake: threading.Lock | None = None
        self.confirm = confirm


# Bumped in a forked child: a SharedPipe made before the fork sees it and starts afresh. Checked on
# every command instead of os.getpid(), which is a system call on each emit().
_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)


def _wake(slot: _Slot) -> None:
    """Let a queued caller go on: a slot is queued only with its wake lock taken."""
    assert slot.wake is not None
    slot.wake.release()


class SharedPipe:
    """One blocking connection per process, shared by its threads (group commit).

    A thread with a command takes the connection when it is free and sends its
    command together with any that other threads queued while it was busy. A
    queued thread sleeps on a lock of its own until its reply is in, or until
    the thread before it hands the connection over with the next batch to send:
    one wake-up per command, none for threads whose reply is not in yet. One
    thread alone pays one uncontended lock and one round trip per command. A
    forked child starts with a connection (and a lock) of its own.
    """

    def __init__(self, url: str | RedisTarget, timeout: float, ack: Ack = Ack()):
        self.timeout, self.ack = timeout, ack
        self.target = url if isinstance(url, RedisTarget) else parse(url)
        self._options = self.target.options
        self._fresh()

    def _fresh(self) -> None:
        self._fork = _forks
        self._lock = threading.Lock()
        self._queue: deque[_Slot] = deque()
        self._busy = False
        self._sock: socket.socket | None = None
        self._poll: select.poll | None = None
        self._reader = hiredis.Reader()

    def execute(self, *args: Any, confirm: bool = False) -> Any:
        """One command; with `confirm` and an Ack of replicas, NotConfirmed unless that many hold it
        (one WAIT after each batch of confirmed commands, as PipelinedRedis.execute)."""
        return self._submit(pack(args), confirm=confirm and self.ack.replicas > 0)

    def execute_packed(self, packed: bytes, confirm: bool = False) -> Any:
        """execute() of a command already in RESP (resp.pack, or fragments joined under one head)."""
        return self._submit(packed, confirm=confirm and self.ack.replicas > 0)

    def execute_many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Several commands in one write and one wait; their replies in order, where Redis refused one
        its error (a redis-py exception) in its place instead of raised. A lost connection raises."""
        return self._submit(b"".join(pack(command) for command in commands), len(commands))

    def run_script(self, source: str, keys: list[str], args: list[Any], confirm: bool = False) -> Any:
        try:
            return self.execute(*evalsha(source, keys, args), confirm=confirm)
        except NoScriptError:
            return self.execute(*eval_(source, keys, args), confirm=confirm)

    def close(self) -> None:
        with self._lock:
            if not self._busy:
                self._disconnect()

    def _submit(self, packed: bytes, count: int = 1, confirm: bool = False) -> Any:
        if self._fork != _forks:
            self._fresh()  # the parent's socket and lock are not ours to use
        slot = _Slot(packed, count, confirm)
        with self._lock:
            if self._busy:
                slot.wake = threading.Lock()
                slot.wake.acquire()
                self._queue.append(slot)
            else:
                self._busy = True
        if slot.wake is not None:
            slot.wake.acquire()  # released by the sending thread: the reply is in, or it is our turn to send
            if not slot.lead:
                return _outcome(slot)
        batch = [slot]
        handed_to = None
        try:
            with self._lock:
                batch.extend(self._queue)
                self._queue.clear()
            self._exchange(batch)
        finally:
            with self._lock:
                if self._queue:
                    handed_to = self._queue.popleft()
                    handed_to.lead = True
                else:
                    self._busy = False
            for other in batch[1:]:
                if other.result is _PENDING:
                    other.result = redis.ConnectionError("the thread sending this command was interrupted")
                _wake(other)
            if handed_to is not None:
                _wake(handed_to)
        return _outcome(slot)

    def _exchange(self, batch: list[_Slot]) -> None:
        """Send the batch's commands in one write and give each its reply (or the error that ended them)."""
        if self._poll is not None and self._poll.poll(0):
            # An idle connection with something to read has been closed by Redis (a restart, a
            # timeout, a kill): sending on it would fail a command Redis, now up, would take.
            self._disconnect()
        try:
            sock = self._sock or self._connect()
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
            for slot in batch:
                slot.result = exc
            return
        confirming = [slot for slot in batch if slot.confirm]
        try:
            wait = [pack(self.ack.command())] if confirming else []
            sock.sendall(b"".join([*(slot.packed for slot in batch), *wait]))
            demoted = False
            for slot in batch:
                if slot.count == 1:
                    slot.result = _answer(self._read_reply(sock))
                    demoted = demoted or isinstance(slot.result, redis.ReadOnlyError)
                else:
                    slot.result = [_answer(self._read_reply(sock)) for _ in range(slot.count)]
                    demoted = demoted or any(isinstance(r, redis.ReadOnlyError) for r in slot.result)
            if confirming:
                self._confirm(sock, confirming)
            if demoted:
                self._disconnect()  # see _Link.data_received
        except (OSError, redis.ConnectionError, redis.TimeoutError, hiredis.ProtocolError) as exc:
            self._disconnect()
            if isinstance(exc, (socket.timeout, BlockingIOError)):  # BlockingIOError: SO_RCVTIMEO/SO_SNDTIMEO ran out
                error: Exception = redis.TimeoutError(f"Redis did not answer within {self.timeout:g}s")
            elif isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
                error = exc
            else:
                error = redis.ConnectionError(f"Redis connection failed: {exc}")
            for slot in batch:
                if slot.result is _PENDING:
                    slot.result = error

    def _confirm(self, sock: socket.socket, slots: list[_Slot]) -> None:
        """Read the batch's WAIT: a confirmed write that too few replicas hold becomes NotConfirmed."""
        _set_timeout(sock, self.timeout + self.ack.timeout_ms / 1000)  # Redis holds the reply that long
        try:
            count = _answer(self._read_reply(sock))
        finally:
            _set_timeout(sock, self.timeout)
        for slot in slots:
            if isinstance(slot.result, Exception):
                continue
            if isinstance(count, Exception):
                slot.result = count
            elif int(count) < self.ack.replicas:
                slot.result = NotConfirmed(int(count), self.ack)

    def _read_reply(self, sock: socket.socket) -> Any:
        while True:
            reply = self._reader.gets()
            if reply is not False:
                return reply
            data = sock.recv(65536)
            if not data:
                raise redis.ConnectionError("Redis closed the connection")
            self._reader.feed(data)

    def _connect(self) -> socket.socket:
        opts = self._options
        try:
            if opts.get("path"):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                sock.connect(opts["path"])
            else:
                host, port, tls = _tcp(opts)
                if self.target.sentinels:
                    host, port = primary(self.target, self.timeout)
                sock = socket.create_connection((host, port), self.timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if tls is not None:
                    sock = tls.wrap_socket(sock, server_hostname=host)
            _set_timeout(sock, self.timeout)
            self._sock, self._reader = sock, hiredis.Reader()
            self._poll = select.poll()
            self._poll.register(sock, select.POLLIN)
            for command in handshake(opts):
                sock.sendall(pack(command))
                reply = self._read_reply(sock)
                if isinstance(reply, hiredis.ReplyError):
                    self._disconnect()
                    raise reply_error(reply)
        except (TimeoutError, BlockingIOError):  # BlockingIOError: the handshake's reply ran out of SO_RCVTIMEO
            self._disconnect()
            raise redis.TimeoutError(f"no connection to Redis within {self.timeout:g}s") from None
        except OSError as exc:
            self._disconnect()
            raise redis.ConnectionError(f"cannot connect to Redis: {exc}") from exc
        return sock

    def _disconnect(self) -> None:
        sock, self._sock, self._poll = self._sock, None, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


def _tcp(options: dict[str, Any]) -> tuple[str, int, ssl.SSLContext | None]:
    """Host, port and TLS context (rediss://, with the URL's ssl_* options) of a parsed URL."""
    return options.get("host", "localhost"), options.get("port", 6379), tls_context(options)


def _set_timeout(sock: socket.socket, seconds: float) -> None:
    """Bound each send and receive by `seconds`. A plain socket gets the kernel's timeouts on a blocking
    socket (SO_RCVTIMEO, SO_SNDTIMEO: running out raises BlockingIOError), where Python's own timeout
    would add a poll() before every send and every recv, two more system calls per emit(). A TLS
    socket keeps Python's timeout: its reads and writes are not plain system calls."""
    if isinstance(sock, ssl.SSLSocket):
        sock.settimeout(seconds)
        return
    sock.settimeout(None)
    micros = max(int(seconds * 1_000_000), 1)  # zero would mean no timeout at all
    value = struct.pack("ll", micros // 1_000_000, micros % 1_000_000)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


def _answer(reply: Any) -> Any:
    return reply_error(reply) if isinstance(reply, hiredis.ReplyError) else reply


def _outcome(slot: _Slot) -> Any:
    if isinstance(slot.result, Exception):
        raise slot.result
    return slot.result
