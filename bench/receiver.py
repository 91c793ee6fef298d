"""A fast HTTP/1.1 keep-alive receiver: answers every POST with 200 and records each X-Request-Id's first arrival
(or the record's "k" field, when the body has one: how bench.versus counts a peer that sends no id).

Run as `python -m bench.receiver PORT`. A raw asyncio.Protocol, no HTTP library,
so one core serves far more requests than the bus can send (the bench measures it).
Control paths on the same port: GET /_stats (JSON counts and own CPU),
GET /_ids ("id receipt-time" lines) and POST /_reset.
"""
from __future__ import annotations

import asyncio
import json
import resource
import signal
import sys
import time

import uvloop

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


class Tally:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.first: dict[bytes, float] = {}  # id -> time of its first arrival
        self.requests = 0
        self.duplicates = 0
        self.without_id = 0

    def record(self, event_id: bytes | None, at: float) -> None:
        self.requests += 1
        if event_id is None:
            self.without_id += 1
        elif event_id in self.first:
            self.duplicates += 1
        else:
            self.first[event_id] = at

    def stats(self) -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"requests": self.requests, "unique": len(self.first), "duplicates": self.duplicates,
                "without_id": self.without_id, "cpu": usage.ru_utime + usage.ru_stime,
                "max_rss_kib": usage.ru_maxrss}


def _header(head_lower: bytes, head: bytes, name: bytes) -> bytes | None:
    at = head_lower.find(b"\r\n" + name + b":")
    if at < 0:
        return None
    start = at + len(name) + 3
    end = head.find(b"\r\n", start)
    return head[start:end if end >= 0 else len(head)].strip()


def _body_key(body: bytes) -> bytes | None:
    """The record's own "k" (the versus load generators put one in, since Fluentd sends no X-Request-Id):
    both peers are then counted by the same key."""
    at = body.find(b'"k":"')
    if at < 0:
        return None
    end = body.find(b'"', at + 5)
    return body[at + 5:end] if end > at else None


def _reply(body: bytes, content_type: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (content_type, len(body), body)


class Connection(asyncio.Protocol):
    def __init__(self, tally: Tally):
        self.tally = tally
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            lower = head.lower()
            length = int(_header(lower, head, b"content-length") or 0)
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4:end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            self.transport.write(self.answer(head, lower, body))

    def answer(self, head: bytes, lower: bytes, body: bytes = b"") -> bytes:
        line = head[:head.find(b"\r\n")] if b"\r\n" in head else head
        if line.startswith(b"POST /_") or line.startswith(b"GET /_"):
            return self.control(line)
        key = _body_key(body) or _header(lower, head, b"x-request-id")
        destination = _header(lower, head, b"x-bus-destination")
        if key is not None and destination:  # a fan-out route's copy: each destination's arrival counts
            key += b"." + destination
        self.tally.record(key, time.time())
        return OK

    def control(self, line: bytes) -> bytes:
        if line.startswith(b"GET /_stats"):
            return _reply(json.dumps(self.tally.stats()).encode())
        if line.startswith(b"GET /_ids"):
            return _reply(b"".join(b"%s %.6f\n" % (k, v) for k, v in self.tally.first.items()), b"text/plain")
        if line.startswith(b"POST /_reset"):
            self.tally.reset()
            return _reply(b"{}")
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


async def serve(port: int) -> None:
    tally = Tally()
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    server = await loop.create_server(lambda: Connection(tally), "127.0.0.1", port, backlog=1024, reuse_address=True)
    print(f"receiver listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await stop


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
