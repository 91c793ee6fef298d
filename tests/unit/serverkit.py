"""A scripted HTTP server on 127.0.0.1 for the delivery client's unit tests: raw answers, closes on cue."""
from __future__ import annotations

import socket
import threading
import time

from tests.httpkit import read_head

CLOSE = "close"


class ScriptedServer:
    """Answers each request it reads with the next scripted bytes; None closes the connection instead,
    and (bytes, CLOSE) closes it right after answering."""

    def __init__(self, *answers: bytes | tuple[bytes, str] | None):
        self.answers = list(answers)
        self.requests: list[tuple[int, bytes]] = []  # (connection number, request head)
        self.connections = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(10)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        deadline = time.monotonic() + 10
        while self.answers and time.monotonic() < deadline:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(5)
                try:
                    self._answer(conn)
                except OSError:
                    pass  # the client closed or reset it

    def _answer(self, conn: socket.socket) -> None:
        while self.answers:
            data = read_head(conn)
            if not data:
                return
            self.requests.append((self.connections, data.partition(b"\r\n\r\n")[0]))
            answer = self.answers.pop(0)
            if answer is None:
                return
            conn.sendall(answer[0] if isinstance(answer, tuple) else answer)
            if isinstance(answer, tuple):
                return

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept(); close() alone does not
        except OSError:
            pass
        self._sock.close()
        self._thread.join(5)
