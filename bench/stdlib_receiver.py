"""The receiver many small services are: Python's http.server on HTTP/1.1 keep-alive, recording each X-Request-Id.

Run as `python -m bench.stdlib_receiver PORT [--one-write]`. By default it answers as
http.server handlers usually do (`send_response`, `end_headers`, then `wfile.write(body)`):
the head and the body leave in two sends, which with Nagle on the server and a delayed ACK
on the client costs ~40 ms per answer unless the client acknowledges at once (issue 17).
`--one-write` sends the same answer in one send, so the two runs differ in nothing else.
The control paths are bench.receiver's: GET /_stats, GET /_ids, POST /_reset.
"""
from __future__ import annotations

import http.server
import signal
import sys
import threading
import time

from .receiver import Tally

BODY = b"ok"


def handler(tally: Tally, lock: threading.Lock, one_write: bool) -> type:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.startswith("/_"):
                self._control(f"POST {self.path}".encode())
                return
            event_id = self.headers.get("X-Request-Id")
            with lock:
                tally.record(event_id.encode() if event_id else None, time.time())
            if one_write:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n" + BODY)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

        def do_GET(self) -> None:
            self._control(f"GET {self.path}".encode())

        def _control(self, line: bytes) -> None:
            from .receiver import Connection

            with lock:
                self.wfile.write(Connection(tally).control(line))

        def log_message(self, *args: object) -> None:
            pass

        def version_string(self) -> str:
            return "stdlib"

    return Handler


def main(argv: list[str]) -> None:
    port, one_write = int(argv[0]), "--one-write" in argv[1:]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler(Tally(), threading.Lock(), one_write))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"stdlib receiver ({'one write' if one_write else 'head and body apart'}) on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
