"""The HTTP ingress as an ASGI app under uvicorn: POST /<tag> on the event loop, the rest through the WSGI app.

Accepting events is the hot path: it runs on the loop, and its one Redis
script goes through a PipelinedRedis, so requests that arrive together share
a round trip. Everything else (journal API, console, metrics, health, replay)
is the werkzeug app of http.py, run in a small thread pool: those are rare,
and some read a lot from Redis. Routes with a backlog_limit take the same
thread-pool path for their accept, as its check reads Redis before the write.
"""
from __future__ import annotations

import asyncio
import functools
import io
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from redis.exceptions import NoScriptError

from .. import auth, intake, journal, logs, settings
from ..errors import BusError, Unavailable
from ..journal import REDIS_DOWN
from ..wire.pipelined import Ack, PipelinedRedis
from . import guarded_protocol
from .http import (
    INTERNAL_ERROR,
    JsonAnswer,
    authorize,
    authorize_head,
    check_declared_length,
    check_read_length,
    error_answer,
    is_event_post,
    make_app,
    prepare_posted,
)
from .request_parts import ClientGone, headers_of, query_of

log = logging.getLogger("bus.ingress")

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
JSON = (b"content-type", b"application/json")
# How many threads run the werkzeug app (and accepts with a backlog check) per worker process.
THREADS_ENV = "_BUS_SERVE_THREADS"
PARENT_CHECK = 1.0
# Bodies up to this size are parsed on the event loop; bigger ones in the thread pool.
INLINE_BODY = 64 * 1024


class Ingress:
    def __init__(self, bus: intake.Intake, tokens: list[auth.Token] | None, threads: int = 8):
        self.bus, self.tokens = bus, tokens
        self.wsgi = make_app(bus, tokens)
        self.pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="bus-http")
        config = bus.settings
        # One pipe per shard: a shard that is down stalls and refuses only its own routes' accepts.
        self.pipes = {name: PipelinedRedis(link.target, config.redis_timeout,
                                           Ack(config.ack_replicas, config.ack_timeout_ms))
                      for name, link in bus.links.items()}

    @property
    def max_body(self) -> int:
        return self.bus.settings.max_body

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if is_event_post(scope["method"], scope["path"]):
                await self.post_events(scope, receive, send)
            else:
                await self.through_wsgi(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        watch: asyncio.Task | None = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                supervisor = multiprocessing.parent_process()  # set in a worker of uvicorn's (--workers > 1)
                if supervisor is not None and supervisor.pid is not None:
                    # Its pid from the spawn, not getppid() now: it may have died before this worker got here.
                    watch = asyncio.ensure_future(_stop_when_orphaned(supervisor.pid))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if watch is not None:
                    watch.cancel()
                for pipe in self.pipes.values():
                    pipe.close()
                self.pool.shutdown(wait=False)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def post_events(self, scope: dict, receive: Receive, send: Send) -> None:
        headers = headers_of(scope["headers"])
        answer = await self.answer_event_post(scope["path"][1:], headers, query_of(scope["query_string"]),
                                              lambda: read_body(receive, self.bus.settings.max_body, None))
        if answer is not None:
            await _respond(send, *answer)

    async def answer_event_post(self, tag: str, headers: dict[str, str], query: dict[str, str],
                                body: Callable[[], Awaitable[bytes]]) -> JsonAnswer | None:
        """The answer to POST /<tag> (status, extra headers, JSON body), or None when the client went away.

        The one handling of an event post: uvicorn's ASGI path (post_events) and GuardedProtocol's own
        path (which answers POST /<tag> without an ASGI cycle) both call it, so they answer alike.
        body() is called once the head passed its checks: a refused client never gets to send
        BUS_MAX_BODY bytes."""
        try:
            ids = await self._accept(tag, headers, query, body)
        except ClientGone:
            return None
        except BusError as exc:
            await asyncio.get_running_loop().run_in_executor(self.pool, intake.count_refusal, self.bus, tag, exc)
            return error_answer(exc)
        except Exception:
            log.exception("unexpected error handling POST /%s", tag)
            return INTERNAL_ERROR
        return 202, {}, orjson.dumps({"ids": ids})

    async def _accept(self, tag: str, headers: dict[str, str], query: dict[str, str],
                      read: Callable[[], Awaitable[bytes]]) -> list[str]:
        """What the werkzeug app's post_events does, with the waits on the loop; the ids to answer with.
        Raises a BusError."""
        bus, loop = self.bus, asyncio.get_running_loop()
        authorize(self.tokens, "POST", headers, "post_events", {"tag": tag}, bus.settings.http.allowed_hosts)
        check_declared_length(declared_length(headers.get("Content-Length")), bus.settings.max_body)
        body = await read()
        work = functools.partial(prepare_posted, bus, tag, headers, query, body)
        # A big batch, or a compressed body (30 KB of gzip may inflate to BUS_MAX_BODY), would hold
        # every other connection of the loop while it is parsed and given ids: that goes to the pool.
        inline = len(body) <= INLINE_BODY and headers.get("Content-Encoding", "identity").lower() == "identity"
        prepared = work() if inline else await loop.run_in_executor(self.pool, work)
        if prepared.route.backlog_limit is not None:
            return await loop.run_in_executor(self.pool, intake.commit, bus, prepared)  # its check reads Redis first
        link = bus.link(prepared.route)
        memory, pipe = link.memory, self.pipes[link.name]
        try:
            if memory.due():
                # Twice a second one accept also reads Redis memory; the others use that reading.
                memory.update(await asyncio.gather(*(pipe.execute(*command) for command in journal.READING),
                                                   return_exceptions=True))
            memory.check()
            calls = intake.accept_calls(prepared)
            if len(calls) == 1:  # one endpoint: every single event's path, no gather to pay for
                replies = [await _accept_one(pipe, *calls[0])]
            else:
                scripts = [journal.accept_call(events, size, idempotency, order=order)
                           for events, size, idempotency, order in calls]
                # One accept per destination of a fan-out route: sent together, so they share one write.
                replies = await asyncio.gather(*(_accept_script(pipe, keys, args) for keys, args in scripts),
                                               return_exceptions=True)
                failed = next((r for r in replies if isinstance(r, BaseException)), None)
                if failed is not None:
                    raise failed
        except REDIS_DOWN as exc:
            raise intake.on_shard(bus, link, journal.unavailable(exc)) from exc
        except Unavailable as exc:  # above the shard's memory mark
            raise intake.on_shard(bus, link, exc) from exc
        memory.accepted(prepared.events)
        return intake.answer(prepared, calls, replies)

    async def through_wsgi(self, scope: dict, receive: Receive, send: Send) -> None:
        headers = headers_of(scope["headers"])
        try:
            # The token is checked on the head: a refused client never gets to send BUS_MAX_BODY bytes.
            routed = authorize_head(self.tokens, scope["method"], scope["path"], headers,
                                    self.bus.settings.http.allowed_hosts)
            body = await read_body(receive, self.bus.settings.max_body, headers.get("Content-Length")) if routed else b""
        except ClientGone:
            return
        except BusError as exc:
            await refuse(send, exc)
            return
        environ = _environ(scope, headers, body)
        status, response_headers, answer = await asyncio.get_running_loop().run_in_executor(
            self.pool, _call_wsgi, self.wsgi, environ)
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": answer})


async def _accept_one(pipe: PipelinedRedis, events: list[journal.NewEvent], group_size: int,
                      idempotency: journal.Idempotency | None, order: str) -> Any:
    """One ACCEPT_SCRIPT call, confirmed; without an Idempotency-Key its route's part is packed once
    (journal.accept_packed), as emit()'s is. A Redis that lost the route's message template has it
    stored again and the call repeated (journal/templates.py)."""
    if idempotency is None:
        packed = journal.accept_packed(events, group_size, order)
        try:
            return await journal.stored_async(lambda: pipe.execute_packed(packed, confirm=True), pipe.execute)
        except NoScriptError:
            pass  # Redis restarted since the script was loaded: run_script loads it again
    keys, args = journal.accept_call(events, group_size, idempotency, order=order)
    return await _accept_script(pipe, keys, args)


async def _accept_script(pipe: PipelinedRedis, keys: list[str], args: list[Any]) -> Any:
    return await journal.stored_async(lambda: pipe.run_script(journal.ACCEPT_SCRIPT, keys, args, confirm=True),
                                      pipe.execute)


def from_environment() -> Ingress:
    """uvicorn's app factory, run in each worker process: settings, tokens and limits from the environment."""
    config = settings.load()
    logs.configure(config.log_format)
    guarded_protocol.configure(config.http.read_timeout, config.http.max_connections_per_client)
    tokens = auth.load_tokens(config.tokens_file) if config.tokens_file else None
    return Ingress(intake.load(config), tokens, int(os.environ.get(THREADS_ENV, "8")))


async def _stop_when_orphaned(parent: int) -> None:
    """A worker whose supervisor died (SIGKILL, OOM) stops too, instead of holding the port for ever."""
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_CHECK)
    log.error("the ingress supervisor (pid %d) is gone; this worker stops", parent)
    os.kill(os.getpid(), signal.SIGTERM)


def declared_length(declared: str | None) -> int | None:
    return int(declared) if declared and declared.isdigit() else None


async def read_body(receive: Receive, limit: int, declared: str | None) -> bytes:
    check_declared_length(declared_length(declared), limit)
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        check_read_length(size, limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def refuse(send: Send, exc: BusError) -> None:
    """Answer a refused request with its status, headers and JSON error (http.error_answer)."""
    await _respond(send, *error_answer(exc))


async def _respond(send: Send, status: int, extra: dict[str, str], body: bytes) -> None:
    headers = [JSON, (b"content-length", b"%d" % len(body))]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _environ(scope: dict, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    server = scope.get("server") or ("127.0.0.1", 0)
    client = scope.get("client") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": "",
        # PEP 3333: the path's bytes, each as one character.
        "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1] or ""),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": str(client[0]),
        "REMOTE_PORT": str(client[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
        else:
            environ[f"HTTP_{key}"] = value
    return environ


def _call_wsgi(app: Callable, environ: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    started: list[Any] = []
    chunks: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        started[:] = [status, headers]
        return chunks.append

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status, headers = started
    return (int(status.split(" ", 1)[0]), [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            b"".join(chunks))
