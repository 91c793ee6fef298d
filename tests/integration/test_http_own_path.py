"""POST /<tag> answered by GuardedProtocol itself (no ASGI cycle), beside uvicorn's ASGI path.

The protocol is driven in this process, the way uvicorn drives it (its parser callbacks fed by
data_received), with the bus's real Ingress app against a Redis of the test's own: what is written
to the transport is what a client would read. Byte for byte, without timing: a request split at
every byte, requests pipelined in one write across both paths, and the same bad requests
answered by both paths.
"""
from __future__ import annotations

import asyncio
import functools
import re
import time
from typing import Any

import orjson
import pytest
import uvicorn
from uvicorn.server import ServerState

from bench.ingress_python import Wire
from bus import intake, journal, settings
from bus.ingress import asgi
from bus.ingress.guarded_protocol import GuardedProtocol
from conftest import ROUTES, RedisServer, bus_env, waiting_for_a_task


def on_a_loop(test: Any) -> Any:
    """Run an async test on a loop of its own (the protocol and the app's pipes live on it, and are
    closed on it)."""
    @functools.wraps(test)
    def run(app: tuple[asgi.Ingress, RedisServer], **kwargs: Any) -> None:
        async def body() -> None:
            try:
                await test(app, **kwargs)
            finally:
                for pipe in app[0].pipes.values():
                    pipe.close()
        asyncio.run(body())
    return run


class SeenIngress(asgi.Ingress):
    """The real app, noting which requests reached it through uvicorn's ASGI cycle."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.through_asgi: list[str] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.through_asgi.append(f"{scope['method']} {scope['path']}")
        await super().__call__(scope, receive, send)


@pytest.fixture
def app(own_redis, tmp_path, monkeypatch):
    server = own_redis
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "parked.toml").write_text(ROUTES["parked.toml"].format(receiver="http://127.0.0.1:9"))
    for name, value in bus_env(server.url, routes, BUS_MAX_BODY="4096").items():
        if name.startswith("BUS_"):
            monkeypatch.setenv(name, value)
    ingress = SeenIngress(intake.load(settings.load()), None, 2)
    try:
        yield ingress, server
    finally:
        ingress.pool.shutdown(wait=False)


def connect(ingress: asgi.Ingress, own_path: bool = True) -> tuple[GuardedProtocol, Wire]:
    """A connection as uvicorn makes one; own_path=False keeps POST /<tag> on the ASGI path."""
    config = uvicorn.Config(ingress, http=GuardedProtocol, log_config=None, access_log=False, server_header=False,
                            proxy_headers=False, limit_concurrency=1000, headers=[("X-Content-Type-Options", "nosniff")])
    config.load()
    state = ServerState()
    state.default_headers = list(config.encoded_headers)  # uvicorn's server adds date to these
    protocol = GuardedProtocol(config=config, server_state=state, app_state={}, _loop=asyncio.get_running_loop())
    if not own_path:
        protocol._poster = None
    wire = Wire()
    protocol.connection_made(wire)  # type: ignore[arg-type]
    return protocol, wire


def answers(wire: Wire) -> list[tuple[int, dict[str, str], bytes]]:
    """The complete responses written so far (status, headers, body); 100 Continue included."""
    out, data = [], bytes(wire.sent)
    while b"\r\n\r\n" in data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        if len(rest) < length:
            break
        out.append((int(lines[0].split(" ")[1]), headers, rest[:length]))
        data = rest[length:]
    return out


async def until_answered(wire: Wire, count: int, seconds: float = 10) -> list[tuple[int, dict[str, str], bytes]]:
    deadline = time.monotonic() + seconds
    while len(answers(wire)) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    got = answers(wire)
    assert len(got) >= count, f"{len(got)} answers of {count} within {seconds}s: {bytes(wire.sent)!r}"
    return got


def post(tag: str, body: bytes, *extra: bytes) -> bytes:
    head = b"".join(line + b"\r\n" for line in extra)
    return (b"POST /%s HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n%s"
            b"Content-Length: %d\r\n\r\n%s" % (tag.encode(), head, len(body), body))


def journaled(server: RedisServer, event_id: str) -> dict:
    return orjson.loads(journal.load(server.client(), event_id)["body"])


@on_a_loop
async def test_an_event_post_is_answered_by_the_protocol_and_the_rest_through_asgi(app):
    ingress, server = app
    protocol, wire = connect(ingress)
    protocol.data_received(post("parked.own", b'{"n": 1}'))
    protocol.data_received(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    (status, _, body), (health, _, _) = await until_answered(wire, 2)
    assert (status, health) == (202, 200)
    assert journaled(server, orjson.loads(body)["ids"][0]) == {"n": 1}
    assert ingress.through_asgi == ["GET /healthz"]


@pytest.mark.parametrize("request_", [
    post("parked.split", b'{"n": 2}'),
    # chunked, with Expect: 100-continue and HTTP/1.0 keep-alive off: the limits the protocol keeps
    b"POST /parked.split HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n3\r\n{\"n\r\n5\r\n\": 2}\r\n0\r\n\r\n",
    b"POST /parked.split HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n"
    b'{"n": 2}',
], ids=["content-length", "chunked-100-continue", "http-1.0"])
@on_a_loop
async def test_a_request_split_at_every_byte_is_still_accepted(app, request_):
    ingress, server = app
    protocol, wire = connect(ingress)
    for i in range(len(request_)):
        protocol.data_received(request_[i:i + 1])
        await asyncio.sleep(0)  # a turn of the loop between bytes, as between reads
    got = await until_answered(wire, 2 if b"100-continue" in request_ else 1)
    status, headers, body = got[-1]
    assert status == 202, got
    assert journaled(server, orjson.loads(body)["ids"][0]) == {"n": 2}
    if b"100-continue" in request_:
        assert got[0][0] == 100
    # HTTP/1.0 without keep-alive: answered with connection: close and closed, as uvicorn does
    assert wire.closed == (b"HTTP/1.0" in request_) == (headers.get("connection") == "close")
    assert ingress.through_asgi == []


@on_a_loop
async def test_pipelined_requests_on_both_paths_are_answered_in_order(app):
    ingress, server = app
    protocol, wire = connect(ingress)
    protocol.data_received(post("parked.p", b'{"n": 1}') + b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                           + post("parked.p", b'{"n": ') + post("parked.p", b'{"n": 3}')
                           + b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                           + post("parked.p", b'{"n": 5}', b"Connection: close"))
    got = await until_answered(wire, 6)
    assert [status for status, _, _ in got] == [202, 200, 400, 202, 200, 202]
    assert [journaled(server, orjson.loads(got[i][2])["ids"][0])["n"] for i in (0, 3, 5)] == [1, 3, 5]
    assert got[5][1]["connection"] == "close" and wire.closed
    assert ingress.through_asgi == ["GET /healthz", "GET /metrics"]


BAD = {
    "malformed JSON": post("parked.bad", b'{"n": '),
    "bad tag": post("parked..x", b'{"n": 1}'),
    "no route": post("nowhere.x", b'{"n": 1}'),
    "declared too large": b"POST /parked.big HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 5000\r\n\r\n" + b" " * 5000,
    "read too large": b"POST /parked.big HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n1388\r\n" + b" " * 5000 + b"\r\n0\r\n\r\n",
    "another site": post("parked.x", b'{"n": 1}', b"Origin: https://evil.example"),
    "another Host": post("parked.x", b'{"n": 1}').replace(b"Host: 127.0.0.1:8080", b"Host: evil.example"),
    "not JSON content": post("parked.x", b"n=1").replace(b"application/json", b"text/csv"),
    "a gzip body that is not gzip": post("parked.x", b"not gzip", b"Content-Encoding: gzip"),
}


@pytest.mark.parametrize("name", list(BAD))
@on_a_loop
async def test_a_bad_request_gets_the_same_answer_on_both_paths(app, name):
    ingress, server = app
    written = []
    for own_path in (True, False):
        protocol, wire = connect(ingress, own_path)
        protocol.data_received(BAD[name])
        (status, headers, body), = await until_answered(wire, 1)
        headers.pop("date", None)  # uvicorn's server loop adds it; none here
        written.append((status, headers, orjson.loads(body), wire.closed))
    assert written[0] == written[1]
    assert 400 <= written[0][0] < 500 and "error" in written[0][2]
    assert ingress.through_asgi == [re.sub(r" HTTP/1\.1.*", "", BAD[name].split(b"\r\n")[0].decode())]
    assert waiting_for_a_task(server.client(), "parked") == []  # nothing of it was accepted


@on_a_loop
async def test_redis_down_gets_the_same_503_with_retry_after_on_both_paths(app):
    ingress, server = app
    server.kill()
    written = []
    for own_path in (True, False):
        protocol, wire = connect(ingress, own_path)
        started = time.monotonic()
        protocol.data_received(post("parked.down", b'{"n": 1}'))
        (status, headers, body), = await until_answered(wire, 1)
        assert time.monotonic() - started < 5  # answered within a few seconds, never a hang
        headers.pop("date", None)
        written.append((status, headers, orjson.loads(body)))
    assert written[0] == written[1]
    assert written[0][0] == 503 and written[0][1]["retry-after"].isdigit()
    assert ingress.through_asgi == ["POST /parked.down"]
