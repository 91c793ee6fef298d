"""`python -m bench.http_clients`: what one delivery's HTTP request costs in each client the bus could send with.

Each client sends the same keep-alive POST (a delivery's headers, a 40-byte JSON body)
to bench.receiver on 127.0.0.1 and reads its answer; the figure is this process's CPU
(user + system) per request over `--requests` requests after a warm-up, the way a pool
process pays for it. Then 50 requests to bench.stdlib_receiver (Python's http.server,
head and body in two writes) give each client's wall time per request there: the
Nagle/delayed-ACK stall of issue 17 is ~40 ms. Clients that are not installed are
skipped (pip install pycurl httpx: the bus does not depend on them).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Callable

from bus.routes import parse_route
from bus.worker import outbound

from .procs import _connects, free_port, wait_until

BODY = b'{"order": 1234, "status": "paid", "x": 1}'
HEADERS = {"User-Agent": "bus-delivery", "Content-Type": "application/json", "X-Request-Id": "0190f3c2-7c1e-7000-8000-1",
           "X-Bus-Tag": "api.orders", "X-Bus-Attempt": "1"}


def bus_client(url: str) -> Callable[[], int]:
    route = parse_route("bench", "bench.toml", {"match": "api.*", "endpoint": url}, 60)
    pools = outbound.Pools()

    def send() -> int:
        answer = outbound.open_response(pools, route, url, HEADERS, BODY)
        answer.read(2048)
        outbound.finish(pools, answer)
        return answer.status

    return send


def urllib3_client(url: str) -> Callable[[], int]:
    import urllib3

    pool = urllib3.connection_from_url(url, maxsize=1)

    def send() -> int:
        resp = pool.urlopen("POST", url, body=BODY, headers=HEADERS, retries=False, redirect=False,
                            preload_content=False)
        resp.read(2048)
        resp.release_conn()
        return resp.status

    return send


def pycurl_client(url: str) -> Callable[[], int]:
    import pycurl

    curl = pycurl.Curl()
    curl.setopt(pycurl.URL, url)
    curl.setopt(pycurl.HTTPHEADER, [f"{k}: {v}" for k, v in HEADERS.items()])
    curl.setopt(pycurl.WRITEFUNCTION, lambda data: None)

    def send() -> int:
        curl.setopt(pycurl.POSTFIELDS, BODY)
        curl.perform()
        return curl.getinfo(pycurl.RESPONSE_CODE)

    return send


def httpx_client(url: str) -> Callable[[], int]:
    import httpx

    client = httpx.Client(trust_env=False)

    def send() -> int:
        return client.post(url, content=BODY, headers=HEADERS).status_code

    return send


CLIENTS = {"bus/worker/outbound.py": (bus_client, None), "pycurl": (pycurl_client, "pycurl"),
           "urllib3": (urllib3_client, "urllib3"), "httpx": (httpx_client, "httpx")}


def measure(make: Callable[[str], Callable[[], int]], url: str, requests: int) -> tuple[float, float]:
    send = make(url)
    for _ in range(200):
        assert send() == 200
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(requests):
        send()
    return (time.process_time() - cpu) / requests * 1e6, (time.perf_counter() - wall) / requests * 1e6


def stalled_ms(make: Callable[[str], Callable[[], int]], url: str, requests: int = 50) -> float:
    send = make(url)
    send()
    started = time.perf_counter()
    for _ in range(requests):
        send()
    return (time.perf_counter() - started) / requests * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=3, help="repeat the CPU measurement, clients interleaved")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    fast, split = free_port(), free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "bench.receiver", str(fast)], stdout=subprocess.DEVNULL),
             subprocess.Popen([sys.executable, "-m", "bench.stdlib_receiver", str(split)], stdout=subprocess.DEVNULL)]
    try:
        for port in (fast, split):
            wait_until(lambda: _connects(port), 10, "a receiver to listen")
        chosen = {name: make for name, (make, module) in CLIENTS.items()
                  if module is None or importlib.util.find_spec(module)}
        cpu: dict[str, list[float]] = {name: [] for name in chosen}
        wall: dict[str, list[float]] = {name: [] for name in chosen}
        for _ in range(args.rounds):
            for name, make in chosen.items():
                c, w = measure(make, f"http://127.0.0.1:{fast}/bench/x", args.requests)
                cpu[name].append(c)
                wall[name].append(w)
        rows = {name: {"cpu_us_per_request": round(min(cpu[name]), 1), "cpu_us_all_rounds": [round(c, 1) for c in cpu[name]],
                       "wall_us_per_request": round(min(wall[name]), 1),
                       "two_write_receiver_ms_per_request": round(stalled_ms(make, f"http://127.0.0.1:{split}/x"), 2)}
                for name, make in chosen.items()}
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'client':18} {'CPU us/request (best of rounds)':>32} {'all rounds':>24} {'wall us':>8} "
          f"{'two-write receiver ms/request':>30}")
    for name, row in rows.items():
        print(f"{name:18} {row['cpu_us_per_request']:>32} {str(row['cpu_us_all_rounds']):>24} "
              f"{row['wall_us_per_request']:>8} {row['two_write_receiver_ms_per_request']:>30}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
