"""A Fluentd forward producer with acks: N connections, one record per Message-mode frame, each waiting for its ack.

Run as `python -m bench.forwardgen --port P --tags api.a,api.b --events N ...`; the same
JSON summary line and "key send-time" file as bench.loadgen --keyed: each record
carries its own "k", the receiver counts it by that, and a record counts as
accepted once its chunk is acked (out_forward's require_ack_response contract).
A frame whose ack does not come is not resent, as the load generator does not
resend: a resend would blur the duplicate count.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import time
import uuid

import msgpack
import uvloop

from .loadgen import Plan, Result, summarize


async def _acked(reader: asyncio.StreamReader, unpacker: msgpack.Unpacker, chunk: str) -> bool:
    while True:
        for answer in unpacker:
            return isinstance(answer, dict) and answer.get("ack") == chunk
        data = await reader.read(4096)
        if not data:
            raise ConnectionResetError("closed before the ack")
        unpacker.feed(data)


async def connection(args: argparse.Namespace, plan: Plan, result: Result, pad: str) -> None:
    reader = writer = unpacker = None
    while (n := plan.take()) is not None:
        due = plan.due(n)
        if due:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        key = uuid.uuid4().hex
        chunk = base64.b64encode(uuid.uuid4().bytes).decode()
        record = {"k": key, "n": n, "pad": pad}
        frame = msgpack.packb([args.tags[n % len(args.tags)], int(time.time()), record, {"chunk": chunk}])
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
                unpacker = msgpack.Unpacker(raw=False)
            sent = time.time()
            result.first_send = result.first_send or sent
            result.events_sent += 1
            writer.write(frame)
            ok = await asyncio.wait_for(_acked(reader, unpacker, chunk), args.ack_timeout)
        except (TimeoutError, OSError, msgpack.UnpackException, ValueError, RuntimeError) as exc:
            result.errors[type(exc).__name__] += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            continue
        result.last_answer = time.time()
        result.statuses[200 if ok else 500] += 1
        if ok:
            result.accepted.append((key, sent))
    if writer is not None:
        writer.close()


async def run(args: argparse.Namespace) -> Result:
    result = Result()
    plan = Plan(args.events, 1, args.rate, time.monotonic() + args.max_seconds)
    pad = "x" * max(0, args.body_bytes - 60)
    await asyncio.gather(*(connection(args, plan, result, pad) for _ in range(args.connections)))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tags", required=True, help="comma-separated tags, taken in turn")
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--rate", type=float, default=0.0, help="events per second in all; 0 = as fast as acks come")
    p.add_argument("--body-bytes", type=int, default=256, help="approximate size of one record's JSON")
    p.add_argument("--ack-timeout", type=float, default=30.0)
    p.add_argument("--max-seconds", type=float, default=600.0, help="stop sending new frames after this")
    p.add_argument("--ids-out", help="write 'key send-time' for every acked record here")
    args = p.parse_args()
    args.tags = args.tags.split(",")
    started = time.monotonic()
    result = uvloop.run(run(args))
    summarize(result, time.monotonic() - started, args.ids_out)


if __name__ == "__main__":
    main()
