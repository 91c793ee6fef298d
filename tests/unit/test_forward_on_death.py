"""ForwardServer.start(on_death=...): a loop that dies says so from its dying thread (bus serve then
stops, server._serve_beside); a stop() that ends the loops does not."""
from __future__ import annotations

import socket
import threading

from bus import intake, settings
from bus.ingress.forward import ForwardServer


def listener() -> ForwardServer:
    # Nothing here talks to Redis: the port is one nobody listens on.
    return ForwardServer(intake.load(settings.load({"BUS_REDIS_URL": "redis://127.0.0.1:1/0"})), "127.0.0.1", 0)


def test_an_accept_loop_that_dies_calls_on_death_and_stops_serving():
    server, died = listener(), threading.Event()

    def broken() -> None:
        raise RuntimeError("accept broke")

    server._accept_one = broken  # type: ignore[method-assign]
    server.start(on_death=died.set)
    try:
        socket.create_connection(server.address, timeout=5).close()
        assert died.wait(5), "on_death was not called when the accept loop died"
        assert not server.serving
    finally:
        server.stop(grace=1)


def test_a_stop_ends_the_loops_without_calling_on_death():
    server, died = listener(), threading.Event()
    server.start(on_death=died.set)
    assert server.serving
    server.stop(grace=5)
    assert not server.serving
    assert not died.is_set(), "on_death was called for a stop asked for"
