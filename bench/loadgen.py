"""The load generator: N keep-alive HTTP/1.1 connections POSTing events, as fast as they go or at a steady rate.

Run as `python -m bench.loadgen --port P --path /TAG --events N ...`; prints one
JSON summary line on stdout and writes "id send-time" lines of every accepted
event to --ids-out. With --direct it talks to the receiver itself, sending its
own X-Request-Id (to measure the receiver's own ceiling). With --keyed each single record carries its own
"k", which the receiver counts it by, and any 2xx accepts it: how bench.versus loads a peer (Fluentd) that
returns no ids; --path may then list several paths (tags), taken in turn. With --order-out it may list
several too, each connection keeping to its own share of them (so a tag's requests go one after another,
each sent once the one before it was answered), and every accepted event's "id path send-time
answer-time" is written there: what bench.ordering measures order from.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
import uuid
from collections import Counter

import uvloop


class Plan:
    """Hands out request numbers to the connections and says when each may be sent."""

    def __init__(self, requests: int, batch: int, rate: float, deadline: float):
        self.requests, self.batch, self.rate, self.deadline = requests, batch, rate, deadline
        self.next = 0
        self.start = time.monotonic()

    def take(self) -> int | None:
        if self.next >= self.requests or time.monotonic() > self.deadline:
            return None
        self.next += 1
        return self.next - 1

    def due(self, n: int) -> float:
        return self.start + n * self.batch / self.rate if self.rate else 0.0


def body(n: int, batch: int, pad: bytes, key: bytes = b"") -> bytes:
    if key:
        return b'{"k":"%s","n":%d,"pad":"%s"}' % (key, n, pad[:max(0, len(pad) - len(key) - 7)])
    records = [b'{"n":%d,"pad":"%s"}' % (n * batch + i, pad) for i in range(batch)]
    return records[0] if batch == 1 else b"[" + b",".join(records) + b"]"


class Result:
    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.accepted: list[tuple[str, float]] = []
        self.order: list[tuple[str, bytes, float, float]] = []  # --order-out: id, path, sent, answered
        self.events_sent = 0
        self.first_send: float | None = None
        self.last_answer = 0.0


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, await reader.readexactly(length) if length else b""


async def connection(args: argparse.Namespace, plan: Plan, result: Result, pad: bytes, paths: list[bytes]) -> None:
    reader = writer = None
    turn = 0
    while (n := plan.take()) is not None:
        due = plan.due(n)
        if due:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        own_id = uuid.uuid4().hex if args.direct or args.keyed else None
        payload = body(n, args.batch, pad, own_id.encode() if args.keyed else b"")
        extra = b"X-Request-Id: %s\r\n" % own_id.encode() if args.direct else b""
        path = paths[turn % len(paths)] if args.order_out else args.paths[n % len(args.paths)]
        turn += 1
        request = (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n"
                   % (path, extra, len(payload))) + payload
        try:
            if writer is None:
                reader, writer = await (asyncio.open_unix_connection(args.unix) if args.unix else
                                        asyncio.open_connection("127.0.0.1", args.port))
            sent = time.time()
            result.first_send = result.first_send or sent
            result.events_sent += args.batch
            status, answer = await _exchange(reader, writer, request)
        # RuntimeError: uvloop's write on a transport the peer's SIGKILL just closed (bench.versus's crash).
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, RuntimeError) as exc:
            # Not resent: a request whose answer was lost may have been accepted (the receiver then
            # counts it as unexpected), and resending would blur the duplicate count.
            result.errors[type(exc).__name__] += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            continue
        result.last_answer = time.time()
        result.statuses[status] += 1
        if (args.direct and status == 200) or (args.keyed and 200 <= status < 300):
            result.accepted.append((own_id, sent))
        elif status == 202:
            ids = json.loads(answer)["ids"]
            result.accepted.extend((i, sent) for i in ids)
            if args.order_out:
                result.order.extend((i, path, sent, result.last_answer) for i in ids)
    if writer is not None:
        writer.close()


async def run(args: argparse.Namespace) -> Result:
    result = Result()
    plan = Plan(-(-args.events // args.batch), args.batch, args.rate, time.monotonic() + args.max_seconds)
    pad = b"x" * max(0, args.body_bytes - 20)
    # Keyed loads take the paths in turn across connections; --order-out gives each connection its own.
    shares = [args.paths[c::args.connections] or args.paths for c in range(args.connections)]
    await asyncio.gather(*(connection(args, plan, result, pad, shares[c]) for c in range(args.connections)))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--unix", help="send over this unix socket instead of 127.0.0.1:PORT")
    p.add_argument("--path", required=True, help="/<tag> on the ingress, any path on the receiver")
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--batch", type=int, default=1, help="events per request (a JSON array when > 1)")
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--rate", type=float, default=0.0, help="events per second in all; 0 = as fast as answers come")
    p.add_argument("--body-bytes", type=int, default=40, help="approximate size of one event's JSON")
    p.add_argument("--max-seconds", type=float, default=600.0, help="stop sending new requests after this")
    p.add_argument("--ids-out", help="write 'id send-time' for every accepted event here")
    p.add_argument("--direct", action="store_true", help="send to the receiver with our own X-Request-Id")
    p.add_argument("--keyed", action="store_true", help='own "k" in each record; any 2xx accepts it')
    p.add_argument("--order-out", help="write 'id path send-time answer-time' for every accepted event here")
    args = p.parse_args()
    several = args.keyed or args.order_out
    args.paths = [part.encode() for part in args.path.split(",")] if several else [args.path.encode()]
    started = time.monotonic()
    result = uvloop.run(run(args))
    summarize(result, time.monotonic() - started, args.ids_out)
    if args.order_out:
        with open(args.order_out, "w") as f:
            f.writelines(f"{i} {path.decode()} {sent:.6f} {answered:.6f}\n" for i, path, sent, answered in result.order)


def summarize(result: Result, elapsed: float, ids_out: str | None) -> None:
    """The ids file and the JSON summary line on stdout (bench.forwardgen prints the same)."""
    if ids_out:
        with open(ids_out, "w") as f:
            f.writelines(f"{i} {t:.6f}\n" for i, t in result.accepted)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    json.dump({
        "events_sent": result.events_sent, "accepted": len(result.accepted),
        "statuses": {str(k): v for k, v in result.statuses.items()}, "errors": dict(result.errors),
        "elapsed": elapsed, "first_send": result.first_send, "last_answer": result.last_answer,
        "cpu": usage.ru_utime + usage.ru_stime, "max_rss_kib": usage.ru_maxrss,
    }, sys.stdout)
    print()


if __name__ == "__main__":
    main()
