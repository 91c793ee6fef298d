"""`python -m bench.ingress_python`: the ingress worker's own Python per single POST, without sockets.

One process: GuardedProtocol fed whole requests by data_received (as uvicorn's loop does), the bus's
real Ingress app, and Redis answering at once (the pipes' execute_packed returns the accept's reply;
the memory reading is off). What is left is the protocol's, uvicorn's and the app's Python: the
part of a single's CPU that code changes move, measured where the load of a shared machine moves it
least (the kernel's sends and the loop's wake-ups, most of a worker's CPU, are not in it). Run it from
each tree in turn (PYTHONPATH set to the tree) for an A/B; prints the min of the repeats, in µs.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from . import stats

REQUEST = (b'POST /bench.single HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n'
           b'Content-Length: 9\r\n\r\n{"a": 12}')


class Wire:
    """The transport a protocol writes into: what a client would read, and whether it was closed.
    Nothing leaves the process (tests/integration/test_http_own_path.py drives the protocol with it too)."""

    def __init__(self) -> None:
        self.sent = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sent += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name in ("peername", "sockname") else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


class _NoReading:
    """The shard's memory mark without its twice-a-second reading (which needs Redis)."""

    def due(self) -> bool:
        return False

    def check(self) -> None:
        pass

    def accepted(self, events: Any) -> None:
        pass


async def measure(count: int, repeats: int) -> list[float]:
    import uvicorn
    from uvicorn.server import ServerState

    from bus.ingress import asgi
    from bus.ingress.guarded_protocol import GuardedProtocol

    ingress = asgi.from_environment()

    async def answered(packed: bytes, confirm: bool = False) -> int:
        return 1  # the accept script's reply for new events

    for pipe in ingress.pipes.values():
        pipe.execute_packed = answered  # type: ignore[method-assign]
    for link in ingress.bus.links.values():
        object.__setattr__(link, "memory", _NoReading())
    config = uvicorn.Config(ingress, http=GuardedProtocol, log_config=None, access_log=False, server_header=False,
                            proxy_headers=False, limit_concurrency=1000, headers=[("X-Content-Type-Options", "nosniff")])
    config.load()
    state = ServerState()
    state.default_headers = list(config.encoded_headers)
    protocol = GuardedProtocol(config=config, server_state=state, app_state={}, _loop=asyncio.get_running_loop())
    wire = Wire()
    protocol.connection_made(wire)  # type: ignore[arg-type]

    async def one() -> None:
        protocol.data_received(REQUEST)
        for _ in range(20):  # a few turns of the loop: the task, then the one-write-per-turn send
            await asyncio.sleep(0)
            if wire.sent:
                break
        if b" 202 " not in wire.sent:
            raise SystemExit(f"not accepted: {bytes(wire.sent)!r}")
        wire.sent.clear()

    for _ in range(min(count, 500)):
        await one()
    per_post = []
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(count):
            await one()
        per_post.append(1e6 * (time.process_time() - started) / count)
    return per_post


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingress-python-"))
    (tmp / "routes").mkdir()
    (tmp / "routes" / "bench.toml").write_text('match = "bench.**"\nendpoint = "http://127.0.0.1:9/x"\n')
    # No Redis is reached (the pipes answer at once); the URL only has to parse.
    os.environ.update(BUS_REDIS_URL="redis://127.0.0.1:9/0", BUS_ROUTES=str(tmp / "routes"),
                      BUS_ARCHIVE_URL=f"sqlite:///{tmp}/archive.sqlite3")
    import uvloop
    per_post = uvloop.run(measure(args.posts, args.repeats))
    print(f"ingress Python per single POST: {min(per_post):.1f} us CPU (min of {args.repeats} x {args.posts}; "
          f"all {', '.join(f'{v:.1f}' for v in per_post)}); load average {stats.loadavg()}")


if __name__ == "__main__":
    main()
