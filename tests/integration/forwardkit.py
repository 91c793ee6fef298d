"""A Fluentd forward-protocol client for the tests of the forward listener (its frames and answers by hand)."""
from __future__ import annotations

import socket

import msgpack


class Client:
    """A forward-protocol client over a plain socket, reading the server's msgpack answers."""

    def __init__(self, port: int, timeout: float = 5):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.unpacker = msgpack.Unpacker(raw=False)

    def send(self, frame: object) -> None:
        self.sock.sendall(frame if isinstance(frame, bytes) else msgpack.packb(frame))

    def send_unless_closed(self, data: bytes) -> bool:
        """Send; False when the server has already closed the connection (it may, mid-frame)."""
        try:
            self.send(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def read(self) -> object:
        """The server's next message; EOFError when it closed the connection instead."""
        while True:
            for obj in self.unpacker:
                return obj
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                raise EOFError("the server closed the connection")
            self.unpacker.feed(data)

    def closed_without_answer(self) -> bool:
        try:
            answer = self.read()
        except EOFError:
            return True
        raise AssertionError(f"expected the connection closed, got {answer!r}")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
