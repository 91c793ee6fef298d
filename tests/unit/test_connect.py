"""Opening connections (bus/worker/connect.py): addresses tried in parallel, happy-eyeballs style, within one open_timeout."""
from __future__ import annotations

import socket
import time

import pytest

from bus.worker import connect


@pytest.fixture
def black_hole():
    """An address on 127.0.0.1 whose SYNs go unanswered: a listener with its accept queue full."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filling = []
    for _ in range(3):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(listener.getsockname())
        filling.append(sock)
    time.sleep(0.1)
    yield listener.getsockname()
    for sock in filling:
        sock.close()
    listener.close()


@pytest.fixture
def listening():
    listener = socket.create_server(("127.0.0.1", 0))
    yield listener.getsockname()
    listener.close()


def info(address) -> tuple:
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)


def test_an_address_that_never_answers_costs_the_attempt_delay_not_the_open_timeout(black_hole, listening):
    started = time.monotonic()
    sock = connect.happy_eyeballs([info(black_hole), info(listening)], timeout=5)
    took = time.monotonic() - started
    assert sock.getpeername() == listening
    sock.close()
    assert took < connect.CONNECTION_ATTEMPT_DELAY + 0.5, f"took {took:.2f}s: the second address waited for the first"


def test_the_open_timeout_bounds_all_addresses_together(black_hole):
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"no connection within 0.6s \(open_timeout\) to any of 4 address"):
        connect.happy_eyeballs([info(black_hole)] * 4, timeout=0.6)
    assert time.monotonic() - started < 0.6 + 0.3, "not 0.6 s per address, as socket.create_connection waits"


def test_a_refused_address_moves_on_at_once_and_the_first_error_is_kept_when_all_fail(listening):
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    refused = free.getsockname()
    free.close()
    started = time.monotonic()
    sock = connect.happy_eyeballs([info(refused), info(listening)], timeout=5)
    assert sock.getpeername() == listening and time.monotonic() - started < connect.CONNECTION_ATTEMPT_DELAY
    sock.close()
    with pytest.raises(ConnectionRefusedError):
        connect.happy_eyeballs([info(refused), info(refused)], timeout=5)


def test_address_families_alternate_starting_with_the_first_one():
    v6 = lambda n: (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (f"::{n}", 80, 0, 0))
    v4 = lambda n: (socket.AF_INET, socket.SOCK_STREAM, 6, "", (f"10.0.0.{n}", 80))
    order = connect._interleaved([v6(1), v6(2), v6(3), v4(1)])
    assert [i[4][0] for i in order] == ["::1", "10.0.0.1", "::2", "::3"]
