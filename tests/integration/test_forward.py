"""The Fluentd forward listener of `bus serve`: real fluent-logger and hand-built frames in, acks and deliveries out."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid

import msgpack
import pytest
from fluent import sender

from conftest import BusProcess, bus_env, free_port, journaled, parked_tag, start_ingress, wait_until
from faultkit import children
from forwardkit import Client


def event_time(seconds: float) -> msgpack.ExtType:
    return msgpack.ExtType(0, struct.pack(">II", int(seconds), int(seconds % 1 * 1e9)))


def test_fluent_logger_events_are_delivered_by_their_route(bus):
    name = uuid.uuid4().hex[:8]
    plain = sender.FluentSender("api", host="127.0.0.1", port=bus.forward_port)
    precise = sender.FluentSender("api", host="127.0.0.1", port=bus.forward_port, nanosecond_precision=True)
    try:
        for i in range(3):
            assert plain.emit(name, {"n": i, "via": "fluent-logger"}), plain.last_error
        assert precise.emit(name, {"n": 3, "via": "EventTime"}), precise.last_error
    finally:
        plain.close()
        precise.close()
    got = wait_until(lambda: len(bus.receiver.to(f"/api/{name}/")) == 4 and bus.receiver.to(f"/api/{name}/"), 20,
                     what="4 fluent-logger events at the receiver")
    assert sorted(json.loads(r.body)["n"] for r in got) == [0, 1, 2, 3]
    assert all(r.headers["X-Bus-Tag"] == f"api.{name}" for r in got)


def mode_frames(tag: str, chunk: str) -> dict[str, list]:
    entries = [[int(time.time()), {"n": 0}], [event_time(time.time()), {"n": 1}]]
    stream = b"".join(msgpack.packb(e) for e in entries)
    return {
        "Message": [tag, event_time(time.time()), {"n": 0}, {"chunk": chunk}],
        "Forward": [tag, entries, {"chunk": chunk, "size": 2}],
        "PackedForward": [tag, stream, {"chunk": chunk, "size": 2}],
        "CompressedPackedForward": [tag, gzip.compress(stream[:5]) + gzip.compress(stream[5:]),
                                    {"chunk": chunk, "size": 2, "compressed": "gzip"}],
    }


@pytest.mark.parametrize("mode", ["Message", "Forward", "PackedForward", "CompressedPackedForward"])
def test_every_mode_is_acked_once_its_events_are_in_redis(bus, mode):
    tag, chunk = parked_tag(), uuid.uuid4().hex
    with Client(bus.forward_port) as client:
        client.send(mode_frames(tag, chunk)[mode])
        assert client.read() == {"ack": chunk}
        # Read at once, no waiting: the ack is only sent after intake.accept returned.
        events = journaled(bus, tag)
        expected = 1 if mode == "Message" else 2
        assert sorted(json.loads(e["body"])["n"] for e in events) == list(range(expected))
        assert {e["route"] for e in events} == {"parked"}


def test_several_frames_on_one_connection_each_get_their_ack_in_order(bus):
    tag = parked_tag()
    with Client(bus.forward_port) as client:
        client.send(b"".join(msgpack.packb([tag, i, {"i": i}, {"chunk": f"c{i}"}]) for i in range(5))
                    + msgpack.packb(None))  # a nil heartbeat in between is ignored
        assert [client.read() for _ in range(5)] == [{"ack": f"c{i}"} for i in range(5)]
        assert len(journaled(bus, tag)) == 5


def test_half_closed_client_still_gets_its_ack(bus):
    tag = parked_tag()
    with Client(bus.forward_port) as client:
        client.send([tag, [[1, {"a": 1}]], {"chunk": "half"}])
        client.sock.shutdown(socket.SHUT_WR)
        assert client.read() == {"ack": "half"}
        assert client.closed_without_answer()
        assert len(journaled(bus, tag)) == 1


BAD_FRAMES = {
    "malformed msgpack": b"\xc1\xc1\xc1",
    "not an array": msgpack.packb({"tag": "parked.x"}),
    "wrong array shape": msgpack.packb(["parked.x"]),
    "tag fails validation": msgpack.packb(["parked..x", 1, {"a": 1}, {"chunk": "bad"}]),
    "tag no route takes": msgpack.packb(["nobody.listens", 1, {"a": 1}, {"chunk": "bad"}]),
    "one bad record in a batch": msgpack.packb(["parked.x", [[1, {"a": 1}], [1, "text"]], {"chunk": "bad"}]),
    "size option that lies": msgpack.packb(["parked.x", [[1, {"a": 1}]], {"chunk": "bad", "size": 3}]),
    "frame over BUS_MAX_BODY": msgpack.packb(["parked.x", 1, {"x": "y" * (70 * 1024)}, {"chunk": "bad"}]),
    "gzip bomb": msgpack.packb(["parked.x", gzip.compress(b"\x00" * (1024 * 1024)), {"compressed": "gzip", "chunk": "bad"}]),
}


@pytest.mark.parametrize("name", list(BAD_FRAMES))
def test_bad_frame_closes_the_connection_enqueues_nothing_and_the_listener_serves_on(bus, parked_len, name):
    with Client(bus.forward_port) as client:
        client.send_unless_closed(BAD_FRAMES[name])
        assert client.closed_without_answer()
    assert parked_len() == 0
    with Client(bus.forward_port) as good:
        good.send(["parked.after", 1, {"ok": True}, {"chunk": "next"}])
        assert good.read() == {"ack": "next"}


def test_client_that_closes_mid_frame_gets_nothing_accepted(bus, parked_len):
    frame = msgpack.packb(["parked.x", [[1, {"n": i}] for i in range(50)], {"chunk": "cut"}])
    with Client(bus.forward_port) as client:
        client.send(frame[: len(frame) // 2])
    time.sleep(0.3)
    assert parked_len() == 0


def test_udp_heartbeat_is_answered(bus):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(5)
        udp.sendto(b"\x00", ("127.0.0.1", bus.forward_port))
        assert udp.recvfrom(16)[0] == b"\x00"


# --- an ingress with the shared-key handshake and short timeouts

KEY, USER, PASSWORD, SERVER_HOST = "s3cret-key", "alice", "pa55", "bus-under-test"


@pytest.fixture(scope="module")
def secured(bus):
    port = free_port()
    env = bus_env(bus.redis.url, bus.routes_dir, BUS_FORWARD_SHARED_KEY=KEY, BUS_FORWARD_USERNAME=USER,
                  BUS_FORWARD_PASSWORD=PASSWORD, BUS_FORWARD_SELF_HOSTNAME=SERVER_HOST,
                  BUS_FORWARD_READ_TIMEOUT="1", BUS_FORWARD_IDLE_TIMEOUT="2", BUS_FORWARD_TAGS="parked.*")
    proc, _ = start_ingress(env, bus.tmp / "secured-ingress.log", port)
    yield port
    proc.stop()


def sha512_hex(*parts: str | bytes) -> str:
    return hashlib.sha512(b"".join(p if isinstance(p, bytes) else p.encode() for p in parts)).hexdigest()


def handshake(port: int, key: str = KEY, user: str = USER, password: str = PASSWORD) -> tuple[Client, list]:
    """Connect, read HELO, send PING as out_forward does; return the client and the PONG."""
    client = Client(port)
    helo = client.read()
    assert helo[0] == "HELO"
    nonce, auth = helo[1]["nonce"], helo[1]["auth"]
    salt, hostname = os.urandom(16).hex(), "fluent-client"
    client.send(["PING", hostname, salt, sha512_hex(salt, hostname, nonce, key),
                 user, sha512_hex(auth, user, password) if auth else ""])
    pong = client.read()
    if pong[1]:  # the server proves it knows the key too
        assert pong[3:] == [SERVER_HOST, sha512_hex(salt, SERVER_HOST, nonce, key)]
    return client, pong


def test_handshake_with_the_right_key_then_events_are_acked(bus, secured):
    client, pong = handshake(secured)
    with client:
        assert pong[:3] == ["PONG", True, ""]
        tag = parked_tag()
        client.send([tag, [[1, {"secure": True}]], {"chunk": "s1"}])
        assert client.read() == {"ack": "s1"}
        assert len(journaled(bus, tag)) == 1


def test_the_shared_key_sends_only_the_tags_bus_forward_tags_allows(bus, secured):
    client, _ = handshake(secured)
    with client:
        name = uuid.uuid4().hex[:8]
        client.send([f"api.{name}", [[1, {"outside": True}]], {"chunk": "scoped"}])
        assert client.closed_without_answer(), "a tag outside BUS_FORWARD_TAGS was acked"
    assert not journaled(bus, f"api.{name}") and not bus.receiver.to(f"/api/{name}/")


def test_bus_serve_with_tokens_refuses_a_forward_listener_without_a_shared_key(bus, tmp_path):
    (tmp_path / "tokens").write_text("0" * 64 + "  api.**  someone\n")
    env = bus_env(bus.redis.url, bus.routes_dir, BUS_TOKENS=str(tmp_path / "tokens"))
    done = subprocess.run([sys.executable, "-m", "bus", "serve", "--bind", f"127.0.0.1:{free_port()}",
                           "--forward", f"127.0.0.1:{free_port()}"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "BUS_FORWARD_SHARED_KEY" in done.stderr and "--forward off" in done.stderr


@pytest.mark.parametrize("key, password, reason", [
    ("wrong-key", PASSWORD, "shared_key mismatch"),
    (KEY, "wrong-password", "username/password mismatch"),
])
def test_handshake_with_a_wrong_key_or_password_is_refused_and_closed(secured, key, password, reason):
    client, pong = handshake(secured, key=key, password=password)
    with client:
        assert pong == ["PONG", False, reason, "", ""]
        assert client.closed_without_answer()


def test_frames_without_the_handshake_are_refused(secured, parked_len):
    with Client(secured) as client:
        assert client.read()[0] == "HELO"
        client.send(["parked.x", 1, {"sneaky": True}, {"chunk": "no"}])
        pong = client.read()
        assert pong[:3] == ["PONG", False, pong[2]] and "invalid ping" in pong[2]
        assert client.closed_without_answer()
    assert parked_len() == 0


def test_client_silent_after_helo_is_closed_after_the_read_timeout(secured):
    with Client(secured) as client:
        assert client.read()[0] == "HELO"
        started = time.monotonic()
        assert client.closed_without_answer()
        assert 0.8 < time.monotonic() - started < 4


def test_slow_loris_frame_is_closed_after_the_read_timeout_however_it_trickles(secured, parked_len):
    client, pong = handshake(secured)
    frame = msgpack.packb(["parked.x", 1, {"slow": "x" * 40}, {"chunk": "slow"}])
    started = time.monotonic()
    with client:
        for byte in frame[:-1]:  # one byte every 0.1 s: each is in time, the frame is not
            if not client.send_unless_closed(bytes([byte])) or time.monotonic() - started > 4:
                break
            time.sleep(0.1)
        assert client.closed_without_answer()
        assert time.monotonic() - started < 4
    assert parked_len() == 0


def test_idle_client_is_closed_after_the_idle_timeout(secured):
    client, pong = handshake(secured)
    with client:
        assert pong[1] is True
        started = time.monotonic()
        assert client.closed_without_answer()
        assert 1.5 < time.monotonic() - started < 5


# --- one process to run, and to stop


def test_serve_with_one_http_worker_runs_both_listeners_in_one_process_and_sigterm_stops_both(bus):
    forward = free_port()
    proc, url = start_ingress(bus.env, bus.tmp / "serve-one-process.log", forward)
    try:
        socket.create_connection(("127.0.0.1", forward), timeout=5).close()
        assert children(proc.proc.pid) == [], "uvicorn serves inside `bus serve`, beside the forward listener"
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(30) == 0
        for port in (forward, int(url.rpartition(":")[2])):
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=2)
    finally:
        proc.stop()
    assert "forward listener stopped" in proc.output()


def test_serve_whose_http_port_is_taken_exits_1_and_closes_its_forward_listener(bus):
    forward, taken = free_port(), socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    with taken:
        proc = BusProcess(["serve", "--bind", f"127.0.0.1:{taken.getsockname()[1]}", "--workers", "1",
                           "--forward", f"127.0.0.1:{forward}"], bus.env, bus.tmp / "serve-port-taken.log").start()
        try:
            assert proc.proc.wait(30) == 1, proc.output()
        finally:
            proc.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", forward), timeout=2)
    assert "the HTTP ingress exited with status" in proc.output() and "forward listener stopped" in proc.output()


@pytest.mark.parametrize("how", ["sigterm", "http dies"])
def test_serve_with_several_http_workers_stops_both_on_sigterm_and_exits_when_http_dies(bus, how):
    forward = free_port()
    proc, url = start_ingress(bus.env, bus.tmp / f"serve-{how.replace(' ', '-')}.log", forward, workers=2)
    socket.create_connection(("127.0.0.1", forward), timeout=5).close()
    kids = children(proc.proc.pid)
    assert len(kids) == 1, "bus serve runs the HTTP ingress (uvicorn) as its one child"
    if how == "sigterm":
        proc.proc.send_signal(signal.SIGTERM)  # to the parent only: it must stop the HTTP ingress itself
        assert proc.proc.wait(30) == 0
    else:
        os.kill(kids[0], signal.SIGKILL)
        assert proc.proc.wait(30) == 1
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", forward), timeout=2)
    try:
        # uvicorn and its workers share the process group of `bus serve`: all must be gone.
        wait_until(lambda: _group_gone(proc.proc.pid), 30, what="every process of bus serve to exit")
    finally:
        proc.stop()
        if not _group_gone(proc.proc.pid):
            os.killpg(proc.proc.pid, signal.SIGKILL)
    assert "forward listener stopped" in proc.output()


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_one_client_address_holds_at_most_its_cap_of_connections(bus):
    """BUS_FORWARD_MAX_CONNECTIONS_PER_CLIENT=2: a third connection from 127.0.0.1 is closed at once
    with a log line; once one closes, a new one is served."""
    port = free_port()
    env = bus_env(bus.redis.url, bus.routes_dir, BUS_FORWARD_MAX_CONNECTIONS_PER_CLIENT="2")
    proc, _ = start_ingress(env, bus.tmp / "capped-forward.log", port)
    tag = parked_tag()

    def served(client: Client, n: int) -> bool:
        client.send([tag, int(time.time()), {"n": n}, {"chunk": f"c{n}"}])
        return client.read() == {"ack": f"c{n}"}

    try:
        first, second = Client(port), Client(port)
        assert served(first, 1) and served(second, 2)
        with Client(port) as third:
            assert third.closed_without_answer()
        lines = wait_until(lambda: [line for line in proc.output().splitlines()
                                    if "BUS_FORWARD_MAX_CONNECTIONS_PER_CLIENT" in line], 5, what="the refusal line")
        assert "forward: refusing 127.0.0.1:" in lines[0]
        first.close()

        def a_new_one_is_served() -> bool:
            try:
                with Client(port) as again:
                    return served(again, 3)
            except (EOFError, OSError):
                return False

        assert wait_until(a_new_one_is_served, 10, interval=0.2, what="a connection after one closed")
        second.close()
        assert len(journaled(bus, tag)) == 3
    finally:
        proc.stop()
