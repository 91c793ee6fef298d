"""The HTTP port's own limits: a read deadline per request (slow-loris) and connections per client address.

One `bus serve` with small limits (2 s, 3 connections) against a Redis of its
own, so other tests' connections and traffic never count against the cap.
"""
from __future__ import annotations

import concurrent.futures
import json
import socket
import time

import pytest
import requests

from bus import journal
from bus.filters import EventFilter
from conftest import ROUTES, RedisServer, bus_env, start_ingress, wait_until, waiting_for_a_task

READ_TIMEOUT = 2.0
CAP = 3
# How long past the deadline a stalled client may still be connected (the deadline is checked per recv).
MARGIN = 1.5


class Ingress:
    def __init__(self, url: str, proc, redis: RedisServer):
        self.url, self.proc, self.redis = url, proc, redis
        self.host, self.port = "127.0.0.1", int(url.rsplit(":", 1)[1])

    def connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def log_lines(self, needle: str) -> list[str]:
        return [line for line in self.proc.output().splitlines() if needle in line]


@pytest.fixture(scope="module")
def ingress(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("http-limits")
    server = RedisServer(tmp_path_factory.mktemp("http-limits-redis"))
    server.start()
    routes = tmp / "routes"
    routes.mkdir()
    # Only `parked` (no worker consumes it): whatever the ingress accepts stays in bus.parked to be counted.
    (routes / "parked.toml").write_text(ROUTES["parked.toml"].format(receiver="http://127.0.0.1:9"))
    env = bus_env(server.url, routes, BUS_HTTP_READ_TIMEOUT=str(READ_TIMEOUT),
                  BUS_HTTP_MAX_CONNECTIONS_PER_CLIENT=str(CAP))
    proc, url = start_ingress(env, tmp / "ingress.log")
    try:
        yield Ingress(url, proc, server)
    finally:
        proc.stop()
        server.stop()


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Read until the server closes the connection (True) or `seconds` pass (False); what it sent."""
    received = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            data = sock.recv(4096)
        except TimeoutError:
            break
        except ConnectionResetError:
            return True, received
        if not data:
            return True, received
        received += data
    return False, received


def _trickle(sock: socket.socket, data: bytes, every: float, until: float) -> bool:
    """Send `data` a byte at a time every `every` seconds until `until`; False once the server has cut us off."""
    for byte in data:
        if time.monotonic() > until:
            return True
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return False
        time.sleep(every)
    return True


def test_a_request_head_trickled_byte_by_byte_is_cut_off_at_the_read_timeout(ingress):
    head = b"POST /parked.loris HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    sock = ingress.connect()
    started = time.monotonic()
    try:
        assert _trickle(sock, head[:3], every=0.5, until=started + READ_TIMEOUT)
        # Meanwhile, halfway through the stall, the ingress answers others at once: the stalled
        # client holds one thread, not the worker.
        t = time.monotonic()
        assert requests.get(f"{ingress.url}/healthz", timeout=5).status_code == 200
        assert time.monotonic() - t < 1.0
        # Sending stops working (reset) or the read below sees the close; either way near the deadline.
        still_open = _trickle(sock, head[3:10], every=0.5, until=started + READ_TIMEOUT + MARGIN)
        closed, answer = (True, b"") if not still_open else _closed_within(sock, READ_TIMEOUT + MARGIN)
        elapsed = time.monotonic() - started
    finally:
        sock.close()
    assert closed, "the slow-loris connection was still open"
    assert READ_TIMEOUT - 0.5 <= elapsed <= READ_TIMEOUT + MARGIN + 1.0, elapsed
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer
    lines = wait_until(lambda: ingress.log_lines("did not arrive whole"), 5, what="the read-timeout log line")
    assert any("WARNING" in line and "127.0.0.1:" in line and "the request head" in line
               and "BUS_HTTP_READ_TIMEOUT" in line for line in lines), lines


def test_a_body_that_stalls_gets_408_and_nothing_of_it_is_enqueued(ingress):
    client = ingress.redis.client()
    before = len(waiting_for_a_task(client, "parked"))
    sock = ingress.connect()
    try:
        sock.sendall(b"POST /parked.stall HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n" + b'[{"a": 1}, {"b": 2}')
        started = time.monotonic()
        closed, answer = _closed_within(sock, READ_TIMEOUT + MARGIN + 1.0)
        elapsed = time.monotonic() - started
    finally:
        sock.close()
    assert closed and elapsed <= READ_TIMEOUT + MARGIN + 0.5, (closed, elapsed)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in answer.lower() and b"did not arrive whole" in answer
    assert len(waiting_for_a_task(client, "parked")) == before
    assert journal.find(client, EventFilter(tag="parked.stall")).events == []
    lines = wait_until(lambda: ingress.log_lines("the body of POST /parked.stall"), 5, what="the body-timeout log line")
    assert "WARNING" in lines[0] and "127.0.0.1:" in lines[0] and "BUS_HTTP_READ_TIMEOUT" in lines[0], lines
    # A whole request is still accepted, and lands where the stalled one would have.
    assert requests.post(f"{ingress.url}/parked.stall", json={"a": 1}, timeout=5).status_code == 202
    assert len(waiting_for_a_task(client, "parked")) == before + 1


def test_connections_over_the_cap_are_closed_at_accept_and_the_count_is_given_back(ingress):
    held = [ingress.connect() for _ in range(CAP)]
    try:
        # The first CAP connections work (and keep-alive keeps them counted).
        for sock in held:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        extra = ingress.connect()
        try:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            closed, answer = _closed_within(extra, 2.0)
        except (ConnectionResetError, BrokenPipeError):
            closed, answer = True, b""
        finally:
            extra.close()
        assert closed and answer == b"", answer
        lines = wait_until(lambda: ingress.log_lines("BUS_HTTP_MAX_CONNECTIONS_PER_CLIENT"), 5, what="the refusal line")
        assert "WARNING" in lines[0] and "refusing 127.0.0.1:" in lines[0], lines
    finally:
        for sock in held:
            sock.close()
    # Closed connections give their count back: many short connections in a row, all answered.
    for _ in range(3 * CAP):
        with requests.Session() as session:
            assert wait_until(lambda: _healthz(session, ingress.url), 5, what="a connection after the cap") == 200
    assert len(ingress.log_lines("refusing 127.0.0.1:")) == len(lines)


def _healthz(session: requests.Session, url: str) -> int:
    try:
        return session.get(f"{url}/healthz", timeout=5).status_code
    except requests.ConnectionError:
        return 0


def test_a_keep_alive_client_sends_many_requests_on_one_connection_unhindered(ingress):
    client = ingress.redis.client()
    before = len(waiting_for_a_task(client, "parked"))
    sock = ingress.connect()
    started = time.monotonic()
    try:
        for i in range(200):
            body = b'{"n": %d}' % i
            sock.sendall(b"POST /parked.keepalive HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            answer = _read_response(sock)
            assert answer.startswith(b"HTTP/1.1 202 "), (i, answer)
            # Spread over more than one read timeout: the deadline is per request, not per connection.
            time.sleep(0.015)
    finally:
        sock.close()
    assert time.monotonic() - started > READ_TIMEOUT
    assert len(waiting_for_a_task(client, "parked")) == before + 200
    assert len(journal.find(client, EventFilter(tag="parked.keepalive"), limit=1000).events) == 200


def _read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length body, read whole."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk, "connection closed mid-body"
        body += chunk
    return head + b"\r\n\r\n" + body


def test_more_back_to_back_keep_alive_producers_than_threads_are_all_served(bus):
    """A thread keeps reading a connection whose next request follows at once only while another
    thread is free: 8 producers on the session's ingress of 4 threads all get every answer."""
    client = bus.redis.client()
    before = len(waiting_for_a_task(client, "parked"))
    host, port = bus.url.removeprefix("http://").split(":")

    def produce(n: int) -> list[bytes]:
        sock = socket.create_connection((host, int(port)), timeout=5)
        try:
            answers = []
            for i in range(50):
                body = b'{"p": %d, "i": %d}' % (n, i)
                sock.sendall(b"POST /parked.busy HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                answers.append(_read_response(sock).split(b"\r\n", 1)[0])
            return answers
        finally:
            sock.close()

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = [a for got in pool.map(produce, range(8)) for a in got]
    assert [a.split(b" ")[1] for a in answers] == [b"202"] * 400
    assert time.monotonic() - started < 30
    assert len(waiting_for_a_task(client, "parked")) == before + 400


def test_a_batch_too_big_to_parse_on_the_event_loop_is_accepted_whole_or_refused_whole(ingress):
    """Bodies over 64 KiB are parsed in the ingress's thread pool (asgi.INLINE_BODY): the same answers."""
    client = ingress.redis.client()
    before = len(waiting_for_a_task(client, "parked"))
    body = json.dumps([{"n": i, "pad": "x" * 40} for i in range(3000)])
    assert len(body) > 64 * 1024
    resp = requests.post(f"{ingress.url}/parked.big", data=body, headers={"Content-Type": "application/json"},
                         timeout=30)
    assert resp.status_code == 202 and len(resp.json()["ids"]) == 3000
    assert len(waiting_for_a_task(client, "parked")) == before + 3000
    broken = body[:-1] + "}"
    refused = requests.post(f"{ingress.url}/parked.big", data=broken, headers={"Content-Type": "application/json"},
                            timeout=30)
    assert refused.status_code == 400 and "not valid JSON" in refused.json()["error"], refused.text
    assert len(waiting_for_a_task(client, "parked")) == before + 3000


@pytest.mark.parametrize("what, head", [
    ("a request line over 8 KiB", b"POST /parked." + b"x" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("more than 100 header fields", b"POST /parked.fields HTTP/1.1\r\n" + b"".join(b"X-F%d: v\r\n" % i for i in range(101))
     + b"Content-Length: 2\r\n\r\n{}"),
    ("a header field over 8 KiB", b"POST /parked.field HTTP/1.1\r\nX-Big: " + b"v" * 9000 + b"\r\nContent-Length: 2\r\n\r\n{}"),
])
def test_a_request_head_over_the_limits_gets_400_and_a_closed_connection(ingress, what, head):
    client = ingress.redis.client()
    before = len(waiting_for_a_task(client, "parked"))
    sock = ingress.connect()
    try:
        sock.sendall(head)
        closed, answer = _closed_within(sock, READ_TIMEOUT / 2)
    finally:
        sock.close()
    assert closed and answer.startswith(b"HTTP/1.1 400 "), (what, answer[:200])
    assert len(waiting_for_a_task(client, "parked")) == before


def test_a_head_that_keeps_coming_is_cut_off_at_1_mib_before_its_deadline(ingress):
    """One header value that never ends: httptools would collect it whole; the head's bound stops it."""
    sock = ingress.connect()
    started = time.monotonic()
    try:
        sock.sendall(b"POST /parked.endless HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        sent, cut = 0, False
        while sent < 4 * 1024 * 1024 and not cut:
            try:
                sock.sendall(b"v" * 65536)
                sent += 65536
            except OSError:
                cut = True
        closed, answer = (True, b"") if cut else _closed_within(sock, READ_TIMEOUT / 2)
    finally:
        sock.close()
    assert closed and time.monotonic() - started < READ_TIMEOUT, "cut off by the size bound, not the deadline"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer[:200]


def test_a_connection_that_never_sends_a_byte_is_closed_at_the_read_timeout(ingress):
    silent = ingress.connect()
    try:
        closed, _ = _closed_within(silent, READ_TIMEOUT + MARGIN + 1)
        assert closed, "a silent connection was held past BUS_HTTP_READ_TIMEOUT"
    finally:
        silent.close()
    assert requests.get(f"{ingress.url}/healthz", timeout=5).status_code == 200
