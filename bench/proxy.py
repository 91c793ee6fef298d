"""bus proxy's cost: added latency over going direct (p50, p99) and requests/s proxied with capture.

Run as `python -m bench.proxy [--requests N] [--load N] [--workers W]`. Starts its own Redis (AOF,
fsync every second as `bus up` runs it), bench.receiver as the upstream, and `bus proxy` in front
of it, all on 127.0.0.1. Latency: one keep-alive connection, requests one at a time, direct and
through the proxy in alternating blocks so both see the same machine. Throughput: bench.loadgen's
keep-alive connections as fast as answers come; every 200 must be in the journal afterwards.
Prints one JSON line. Targets (issue #20): added p50 <= 1 ms, >= 3,000 requests/s captured.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

BLOCK = 100
REQUEST = (b"POST /orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Content-Length: 40\r\n\r\n" + b'{"order": 42, "pad": "xxxxxxxxxxxxxxxx"}')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def exchange(sock: socket.socket) -> None:
    """One request, its whole answer read (Content-Length framing: both answer with it)."""
    sock.sendall(REQUEST)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(line[15:]) for line in head.split(b"\r\n") if line[:15].lower() == b"content-length:")
    while len(rest) < length:
        rest += sock.recv(65536)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def latencies(direct: int, proxied: int, requests: int) -> dict:
    socks = {name: socket.create_connection(("127.0.0.1", port)) for name, port in
             (("direct", direct), ("proxied", proxied))}
    for sock in socks.values():
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(200):  # warm up: connections to the upstream, scripts loaded
            exchange(sock)
    took: dict[str, list[float]] = {"direct": [], "proxied": []}
    for _ in range(max(1, requests // BLOCK)):
        for name, sock in socks.items():
            for _ in range(BLOCK):
                started = time.perf_counter()
                exchange(sock)
                took[name].append((time.perf_counter() - started) * 1000)
    out = {}
    for name, values in took.items():
        out[name] = {"p50_ms": round(percentile(values, 50), 3), "p99_ms": round(percentile(values, 99), 3)}
    out["added_p50_ms"] = round(out["proxied"]["p50_ms"] - out["direct"]["p50_ms"], 3)
    out["added_p99_ms"] = round(out["proxied"]["p99_ms"] - out["direct"]["p99_ms"], 3)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children (uvicorn's workers, with --workers > 1)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    total = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        total += sum(int(v) for v in Path(f"/proc/{child}/stat").read_text().rpartition(")")[2].split()[11:13])
    return total / os.sysconf("SC_CLK_TCK")


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def load(port: int, requests: int, connections: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.loadgen", "--port", str(port), "--path", "/orders",
                          "--events", str(requests), "--connections", str(connections), "--direct",
                          "--max-seconds", "120"], capture_output=True, text=True, timeout=300, check=True)
    summary = json.loads(out.stdout)
    summary["rate"] = round(summary["accepted"] / (summary["last_answer"] - summary["first_send"]))
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=3000, help="requests timed one at a time, per side")
    p.add_argument("--load", type=int, default=30000, help="requests of the throughput run")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--workers", type=int, default=1, help="bus proxy --workers")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    procs: list[subprocess.Popen] = []
    try:
        redis_port, upstream_port, proxy_port = free_port(), free_port(), free_port()
        procs.append(subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
                                       "--bind", "127.0.0.1", "--dir", str(tmp), "--appendonly", "yes",
                                       "--appendfsync", "everysec", "--save", "", "--logfile", str(tmp / "redis.log")]))
        procs.append(subprocess.Popen([sys.executable, "-m", "bench.receiver", str(upstream_port)],
                                      stdout=subprocess.DEVNULL))
        routes = tmp / "routes"
        routes.mkdir()
        (routes / "api.toml").write_text(f'match = "api.*"\nendpoint = "http://127.0.0.1:{upstream_port}"\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
        env.update(BUS_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", BUS_ROUTES=str(routes))
        wait_port(redis_port)
        wait_port(upstream_port)
        procs.append(subprocess.Popen([sys.executable, "-m", "bus", "proxy", "--bind", f"127.0.0.1:{proxy_port}",
                                       "--upstream", f"http://127.0.0.1:{upstream_port}", "--tag", "api.orders",
                                       "--workers", str(args.workers)], env=env,
                                      stdout=open(tmp / "proxy.log", "wb"), stderr=subprocess.STDOUT))
        wait_port(proxy_port)
        result: dict = {"latency": latencies(upstream_port, proxy_port, args.requests)}
        client = redis.Redis(port=redis_port)
        before = int(client.hget("bus:counters", "accepted:api") or 0)
        result["direct"] = {"rate": load(upstream_port, args.load, args.connections)["rate"]}
        proxy_pid = procs[-1].pid
        cpu_before, redis_before = cpu_seconds(proxy_pid), redis_cpu(client)
        proxied = load(proxy_port, args.load, args.connections)
        proxy_cpu, redis_used = cpu_seconds(proxy_pid) - cpu_before, redis_cpu(client) - redis_before
        captured = int(client.hget("bus:counters", "accepted:api") or 0) - before
        result["proxied"] = {"rate": proxied["rate"], "statuses": proxied["statuses"], "errors": proxied["errors"],
                             "captured": captured, "all_captured": captured == proxied["accepted"],
                             # CPU per request: what the rate would be on a core of its own, whatever else ran
                             "proxy_cpu_us_per_request": round(proxy_cpu / max(1, proxied["accepted"]) * 1e6),
                             "redis_cpu_us_per_request": round(redis_used / max(1, proxied["accepted"]) * 1e6)}
        result["targets"] = {"added_p50_le_1ms": result["latency"]["added_p50_ms"] <= 1.0,
                             "proxied_ge_3000_per_s": proxied["rate"] >= 3000}
        result["workers"] = args.workers
        result["loadavg_1m"] = os.getloadavg()[0]
        print(json.dumps(result))
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
