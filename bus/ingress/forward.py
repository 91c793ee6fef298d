"""The Fluentd forward listener: TCP connections of msgpack frames into intake, acks out; UDP heartbeats answered.

A thin shell around frames.py: one thread per connection (producers are a
few long-lived loggers and agents), a bounded number of them. Any problem with
a connection (malformed msgpack, a bad frame or tag, a frame over the limit, a
stalled or idle client, Redis down) is logged with the peer's address and
closes that connection only: the frame at fault was not accepted and not
acknowledged, so a client with require_ack_response sends it again.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack

from .. import intake
from ..errors import BusError, ConfigError, Forbidden
from ..settings import ForwardSettings
from ..tags import compile_patterns
from . import unix_socket
from .client_limits import ClientCounter
from .frames import FrameReader, Handshake, decode_frame
from .stoppable import Stop

log = logging.getLogger("bus.forward")

RECV_BYTES = 64 * 1024
# After a failed accept (out of file descriptors, say), wait this long before the next.
ACCEPT_RETRY = 0.5
HEARTBEAT_REPLY = b"\x00"


class _Closed(Exception):
    """The connection is over; the message says why (logged once, by the connection's thread)."""

    def __init__(self, why: str, level: int = logging.INFO):
        super().__init__(why)
        self.level = level


class ForwardServer:
    """Listens on HOST:PORT over TCP (events) and UDP (heartbeats), or on a unix socket (events), until stop()."""

    def __init__(self, bus: intake.Intake, host: str, port: int, config: ForwardSettings | None = None,
                 unix: tuple[socket.socket, unix_socket.SocketFile] | None = None):
        self.bus = bus
        self.config = config or bus.settings.forward
        self.max_frame = bus.settings.max_body
        self._udp: socket.socket | None = None
        self._socket_file = unix[1] if unix else None
        if unix:
            self._tcp = unix[0]  # Fluentd's in_unix: no heartbeats, its clients do not send them there
        else:
            self._tcp = _bind(socket.SOCK_STREAM, host, port)
            try:
                self._udp = _bind(socket.SOCK_DGRAM, host, self._tcp.getsockname()[1])
            except ConfigError:
                self._tcp.close()
                raise
        self._tcp.listen(128)
        # The accept and heartbeat loops block on their sockets with no timeout; stop() wakes them.
        self._stopping = Stop()
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._clients = ClientCounter(self.config.max_connections_per_client, "forward",
                                      "BUS_FORWARD_MAX_CONNECTIONS_PER_CLIENT")
        self._threads: list[threading.Thread] = []
        self.allowed_tags = compile_patterns(list(self.config.tags)) if self.config.tags else None

    @classmethod
    def on_unix_socket(cls, bus: intake.Intake, path: str, config: ForwardSettings | None = None) -> ForwardServer:
        """A listener on unix:PATH (Fluentd's in_unix, fluent-logger's unix://), BUS_UNIX_SOCKET_MODE its mode."""
        return cls(bus, "", 0, config, unix=unix_socket.bind(path, bus.settings.unix_socket_mode))

    @property
    def address(self) -> tuple[str, int]:
        return self._tcp.getsockname()[:2]

    def _where(self) -> str:
        return f"unix:{self._socket_file.path}" if self._socket_file else "%s:%d (tcp, udp heartbeat)" % self.address

    @property
    def serving(self) -> bool:
        """False once the accept or heartbeat loop has died (bus serve then stops everything)."""
        return all(thread.is_alive() for thread in self._threads)

    def start(self, on_death: Callable[[], None] | None = None) -> ForwardServer:
        """Serve from threads of its own; on_death is called (from the dying thread) if the accept or
        heartbeat loop ends before stop(), so whoever runs the listener need not poll `serving`."""
        loops = [(self._accept_loop, "forward-accept")]
        if self._udp is not None:
            loops.append((self._heartbeat_loop, "forward-heartbeat"))
        for target, name in loops:
            thread = threading.Thread(target=self._logged, args=(target, on_death), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        security = "shared-key handshake on" if self.config.shared_key else "no handshake"
        log.info("forward listener on %s; %s", self._where(), security)
        return self

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting; let each connection finish the frame it is accepting (and ack it), then close."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(grace)
        with self._lock:
            connections = dict(self._connections)
        for sock in connections:
            # Reading stops (recv returns b""), writing still works: an ack being sent gets out.
            _quietly(sock.shutdown, socket.SHUT_RD)
        deadline = time.monotonic() + grace
        for thread in connections.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        self._tcp.close()
        if self._udp is not None:
            self._udp.close()
        self._stopping.close()
        if self._socket_file is not None:
            self._socket_file.remove()
        log.info("forward listener stopped")

    def _logged(self, loop: Callable[[], None], on_death: Callable[[], None] | None) -> None:
        try:
            loop()
        except Exception:
            log.exception("forward: %s died", loop.__name__)
        if on_death is not None and not self._stopping.is_set():
            on_death()

    def _accept_loop(self) -> None:
        self._tcp.setblocking(False)
        with self._stopping.readable(self._tcp) as readable:
            while readable.wait():
                self._accept_one()

    def _accept_one(self) -> None:
        try:
            sock, peer = self._tcp.accept()
        except BlockingIOError:
            return  # the peer gave up between the wake-up and the accept
        except OSError as exc:
            log.warning("forward: accept failed: %s", exc)
            self._stopping.wait(ACCEPT_RETRY)
            return
        with self._lock:
            if len(self._connections) >= self.config.max_connections:
                log.warning("forward: refusing %s: already %d connections (BUS_FORWARD_MAX_CONNECTIONS)",
                            _peer(peer), len(self._connections))
                sock.close()
                return
            # A unix socket's peers have no address to tell them apart: they are not counted (as on HTTP).
            if isinstance(peer, tuple) and not self._clients.admit(peer[0], _peer(peer)):
                sock.close()
                return
            thread = threading.Thread(target=self._serve, args=(sock, peer), name=f"forward {_peer(peer)}", daemon=True)
            self._connections[sock] = thread
        thread.start()

    def _heartbeat_loop(self) -> None:
        # out_forward's UDP heartbeat (heartbeat_type udp): any datagram is answered with one 0x00 byte.
        udp = self._udp
        assert udp is not None  # started only once the UDP socket is bound
        udp.setblocking(False)
        with self._stopping.readable(udp) as readable:
            while readable.wait():
                try:
                    _, peer = udp.recvfrom(128)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    log.debug("forward: heartbeat socket: %s", exc)
                    continue
                try:
                    udp.sendto(HEARTBEAT_REPLY, peer)
                except OSError as exc:
                    log.debug("forward: heartbeat from %s not answered: %s", _peer(peer), exc)

    def _serve(self, sock: socket.socket, peer: Any) -> None:
        who = _peer(peer)
        try:
            _Connection(self, sock, who).run()
        except _Closed as exc:
            log.log(exc.level, "forward: %s: closed: %s", who, exc)
        except BusError as exc:
            log.warning("forward: %s: closed, frame refused and not acked: %s: %s", who, type(exc).__name__, exc)
        except OSError as exc:
            log.info("forward: %s: connection lost: %s", who, exc)
        except Exception:
            log.exception("forward: %s: unexpected error; connection closed, the frame was not acked", who)
        finally:
            _quietly(sock.close)
            with self._lock:
                self._connections.pop(sock, None)
            if isinstance(peer, tuple):
                self._clients.release(peer[0])


class _Connection:
    """One client: optional handshake, then frames in, acks out, within the read and idle timeouts."""

    def __init__(self, server: ForwardServer, sock: socket.socket, who: str):
        self.server, self.sock, self.who = server, sock, who
        self.config = server.config
        self.reader = FrameReader(server.max_frame)
        self.accepted = 0
        # When the unfinished frame (or the handshake) began; None between frames.
        self.frame_started: float | None = None
        self.last_read = time.monotonic()

    def run(self) -> None:
        if self.sock.family != socket.AF_UNIX:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        handshake = None
        if self.config.shared_key:
            handshake = Handshake(self.config.self_hostname, self.config.shared_key, self.config.username, self.config.password)
            self._send(handshake.helo())
            self.frame_started = time.monotonic()
        while True:
            data = self._recv(handshake is not None)
            if not data:
                if self.reader.pending:
                    raise _Closed(f"the stream ended in the middle of a frame ({self.reader.pending} bytes); "
                                  "nothing of that frame was accepted", logging.WARNING)
                raise _Closed(f"end of stream after {self.accepted} events")
            for obj in self.reader.feed(data):
                if handshake is None:
                    self._accept(obj)
                    continue
                pong, refused = handshake.answer(obj)
                self._send(pong)
                if refused:
                    raise _Closed(f"handshake refused: {refused}", logging.WARNING)
                log.info("forward: %s: handshake done (client %r)", self.who, obj[1])
                handshake = None
            self.last_read = time.monotonic()
            if handshake is None and not self.reader.pending:
                self.frame_started = None
            elif self.frame_started is None:
                self.frame_started = self.last_read

    def _accept(self, obj: Any) -> None:
        frame = decode_frame(obj, self.server.max_frame)
        if frame is None:
            return
        if frame.records:
            allowed = self.server.allowed_tags
            if allowed is not None and not allowed.matches(frame.tag):
                raise Forbidden(f"tag {frame.tag[:255]!r} is outside BUS_FORWARD_TAGS ({' '.join(self.config.tags)})")
            # A chunk out_forward sends again (no ack came) is accepted once: its id is the request's key.
            key = frame.chunk.hex() if isinstance(frame.chunk, bytes) else frame.chunk
            intake.accept(self.server.bus, frame.tag, frame.records, idempotency_key=key)
            self.accepted += len(frame.records)
        if frame.chunk is not None:
            # Only now: the events are journaled and queued in Redis.
            self._send({"ack": frame.chunk})

    def _recv(self, handshaking: bool) -> bytes:
        # A started frame (or the handshake) must be whole within read_timeout of its first
        # byte however slowly it trickles in (slow-loris); between frames the connection
        # may stay idle for idle_timeout, or for ever when that is unset.
        level = logging.WARNING
        if self.frame_started is not None:
            limit, deadline = self.config.read_timeout, self.frame_started + self.config.read_timeout
            what = "the handshake" if handshaking else f"a frame ({self.reader.pending} bytes so far)"
            why = f"{what} did not complete within {limit:g}s (BUS_FORWARD_READ_TIMEOUT); nothing of it was accepted"
        elif self.config.idle_timeout is not None:
            deadline, level = self.last_read + self.config.idle_timeout, logging.INFO
            why = f"idle for {self.config.idle_timeout:g}s (BUS_FORWARD_IDLE_TIMEOUT)"
        else:
            deadline, why = None, ""
        self.sock.settimeout(None if deadline is None else max(deadline - time.monotonic(), 0.001))
        try:
            return self.sock.recv(RECV_BYTES)
        except TimeoutError:
            raise _Closed(why, level) from None

    def _send(self, message: Any) -> None:
        self.sock.settimeout(self.config.read_timeout)
        self.sock.sendall(msgpack.packb(message))


def _bind(kind: int, host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    if kind == socket.SOCK_STREAM:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        proto = "tcp" if kind == socket.SOCK_STREAM else "udp"
        raise ConfigError(f"cannot listen for forward on {host}:{port} ({proto}): {exc.strerror}; "
                          "pick another --forward HOST:PORT or 'off'") from None
    return sock


def _peer(peer: Any) -> str:
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix socket"


def _quietly(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except OSError:
        pass
