"""The delivery's HTTP client (bus/worker/outbound.py) against a scripted socket server on 127.0.0.1."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from bus import settings
from bus.errors import ConfigError
from bus.journal import Attempt, Event
from bus.routes import parse_route
from bus.settings import OutboundSettings
from bus.worker import outbound
from serverkit import CLOSE, ScriptedServer


def route(port: int, read_timeout: float = 2):
    return parse_route("r", "r.toml", {"match": "a.*", "endpoint": f"http://127.0.0.1:{port}/in",
                                       "open_timeout": 1, "read_timeout": read_timeout}, 60)


def send(pools: outbound.Pools, server: ScriptedServer, headers: dict[str, str] | None = None,
         read_timeout: float = 2) -> tuple[int, dict[str, str], bytes]:
    answer = outbound.open_response(pools, route(server.port, read_timeout), f"http://127.0.0.1:{server.port}/in?x=1",
                                    headers or {"X-Request-Id": "e1"}, b'{"n": 1}')
    try:
        return answer.status, answer.headers, answer.read(2048)
    finally:
        outbound.finish(pools, answer)


@pytest.fixture
def pools():
    return outbound.Pools()


def test_an_answer_read_to_its_end_leaves_the_connection_for_the_next_request(pools):
    server = ScriptedServer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Thing: a\r\n\r\nhello",
                            b"HTTP/1.1 503 Busy\r\nRetry-After: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"5\r\nabcde\r\n3\r\nfgh\r\n0\r\n\r\n",
                            b"HTTP/1.1 204 No Content\r\n\r\n")
    assert send(pools, server) == (200, {"content-length": "5", "x-thing": "a"}, b"hello")
    status, headers, body = send(pools, server)
    assert (status, headers["retry-after"], body) == (503, "3", b"abcdefgh")
    assert send(pools, server)[0] == 204
    server.close()
    assert [n for n, _ in server.requests] == [1, 1, 1], "one connection for all three"
    head = server.requests[0][1].decode()
    assert head.startswith("POST /in?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}" in head and "Content-Length: 8" in head and "X-Request-Id: e1" in head


def test_an_interim_100_continue_is_skipped_for_the_answer_after_it(pools):
    server = ScriptedServer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
    assert send(pools, server) == (201, {"content-length": "2"}, b"ok")
    server.close()


def test_a_body_that_ends_with_the_connection_is_read_and_the_connection_not_kept(pools):
    server = ScriptedServer((b"HTTP/1.0 200 OK\r\n\r\nuntil the end", CLOSE),
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert send(pools, server)[::2] == (200, b"until the end")
    assert send(pools, server)[0] == 200
    server.close()
    assert [n for n, _ in server.requests] == [1, 2]


def test_a_connection_the_endpoint_closed_while_idle_is_replaced_not_failed(pools):
    # The first answer says keep-alive, then the server closes the connection (its idle timeout).
    server = ScriptedServer((b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", CLOSE),
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert send(pools, server)[0] == 200
    time.sleep(0.2)
    assert send(pools, server)[0] == 200, "the closed connection was noticed before sending on it"
    server.close()
    assert [n for n, _ in server.requests] == [1, 2]


def test_only_the_first_bytes_of_a_large_body_are_read_and_its_connection_is_closed(pools):
    server = ScriptedServer(b"HTTP/1.1 500 X\r\nContent-Length: 1000000\r\n\r\n" + b"E" * 100_000,
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    status, _, body = send(pools, server)
    assert (status, len(body)) == (500, 2048)
    assert send(pools, server)[0] == 200
    server.close()
    assert [n for n, _ in server.requests] == [1, 2], "the unread rest is never read: a new connection"


@pytest.mark.parametrize("answer, says", [
    (b"SMTP ready\r\n\r\n", "not an HTTP answer"),
    (None, "closed the connection before answering"),
    ((b"HTTP/1.1 200 OK\r\nContent-Le", CLOSE), "closed the connection before answering"),
])
def test_no_answer_is_an_oserror_saying_what_came_instead(pools, answer, says):
    server = ScriptedServer(answer)
    with pytest.raises(OSError, match=says):
        send(pools, server)
    server.close()


def test_headers_without_end_are_cut_off_before_they_fill_memory(pools):
    endless = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Filler-%d: %s\r\n" % (i, b"f" * 1000) for i in range(2000))
    server = ScriptedServer(endless, b"never sent")
    with pytest.raises(outbound.BrokenAnswer, match="went past 256 KiB"):
        send(pools, server)
    server.close()


def test_a_cut_body_is_an_error_of_the_body_not_of_the_status(pools):
    server = ScriptedServer((b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", CLOSE))
    answer = outbound.open_response(pools, route(server.port), f"http://127.0.0.1:{server.port}/in", {}, b"{}")
    assert answer.status == 200
    with pytest.raises(outbound.BrokenAnswer, match="in the middle of its answer"):
        answer.read(2048)
    outbound.finish(pools, answer)
    server.close()


def test_an_endpoint_that_does_not_answer_times_out_at_read_timeout(pools):
    server = ScriptedServer(b"", b"never sent")  # reads the request, sends nothing, waits for another
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        send(pools, server, read_timeout=0.5)
    assert time.monotonic() - started < 2
    server.close()


@pytest.mark.parametrize("headers", [{"X-Evil": "a\r\nInjected: yes"}, {"X-Evil\n": "a"}])
def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(pools, headers):
    server = ScriptedServer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(ValueError, match="line break"):
        send(pools, server, headers)
    assert server.requests == []
    server.close()


def test_a_url_that_is_not_http_or_holds_a_space_is_refused(pools):
    r = route(9)
    with pytest.raises(ValueError, match="not an http"):
        outbound.open_response(pools, r, "ftp://127.0.0.1:9/x", {}, b"")
    with pytest.raises(ValueError, match="space or control character"):
        outbound.open_response(pools, r, "http://127.0.0.1:9/a b", {}, b"")


def test_a_connection_older_than_the_age_limit_is_replaced_so_dns_changes_are_seen():
    pools = outbound.Pools(OutboundSettings(connection_max_age=0.3))
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    server = ScriptedServer(ok, ok, ok)
    assert send(pools, server)[0] == 200
    assert send(pools, server)[0] == 200  # young: kept
    time.sleep(0.4)
    assert send(pools, server)[0] == 200
    server.close()
    assert [n for n, _ in server.requests] == [1, 1, 2], "the third request went on a new connection"


def test_bus_connection_max_age_is_read_from_the_environment():
    assert settings.load({}).outbound.connection_max_age == 120
    assert settings.load({"BUS_CONNECTION_MAX_AGE": "30"}).outbound.connection_max_age == 30
    with pytest.raises(ConfigError, match="BUS_CONNECTION_MAX_AGE"):
        settings.load({"BUS_CONNECTION_MAX_AGE": "soon"})


class TricklingServer(ScriptedServer):
    """Reads a request, then sends its answer's status line one byte every 0.2 s (at most 10 s)."""

    def __init__(self):
        super().__init__(b"")

    def _answer(self, conn: socket.socket) -> None:
        conn.recv(65536)
        self.answers.clear()
        for byte in b"HTTP/1.1 200 OK\r\n" * 3:
            conn.sendall(bytes([byte]))  # an OSError once the client gave up ends it: what the test wants
            time.sleep(0.2)


def test_the_whole_attempt_deadline_holds_outside_the_main_thread_as_in_a_threads_pool():
    from bus.worker import delivery

    server = TricklingServer()
    r = parse_route("r", "r.toml", {"match": "a.*", "endpoint": f"http://127.0.0.1:{server.port}/in",
                                    "open_timeout": 0.5, "read_timeout": 1}, 60)
    records: list[Attempt] = []
    event = Event("e1", "a.b", "r", "queued", b"{}", 0.0)
    thread = threading.Thread(target=lambda: records.append(delivery.send(outbound.Pools(), r, r.endpoint.render("a.b"),
                                                                          event, 1)[0]))
    thread.start()
    thread.join(10)
    server.close()
    [record] = records
    assert record.status_code is None
    assert record.error.startswith("AttemptDeadline: no complete answer within 1.5s (open_timeout + read_timeout)")
    assert record.duration < 1.5 + 0.3, "each trickled byte came within read_timeout; the attempt's deadline cut it"
