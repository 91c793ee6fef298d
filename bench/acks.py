"""What replica acks cost: accepts per second with BUS_ACK_REPLICAS=0 and =1, alternating, in one run.

    python -m bench.acks [--events 20000] [--rounds 2] [--json]

Starts a primary and a replica (redis-server, AOF everysec) in a temp dir on free ports, then for
each round and each setting a fresh `bus serve` (2 workers) with that BUS_ACK_REPLICAS, and
measures HTTP accepts (4 keep-alive producers, one event per request: bench.loadgen) and
`emit()` from one thread (bench.emitter). No worker runs: only accepting is measured. Every
accepted id is checked to be on the replica too when acks are on. Bounded: each measurement has
a fixed count and a time limit.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from .procs import free_port

ROUTE = 'match = "parked.*"\nendpoint = "http://127.0.0.1:9/parked/${tag[1]}"\n'


def _redis(directory: Path, port: int, *extra: str) -> subprocess.Popen:
    directory.mkdir(parents=True)
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", *extra],
                            stdout=subprocess.DEVNULL, start_new_session=True)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.1)
    raise SystemExit(f"redis-server on {port} did not start")


def _serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "bus", "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2",
                             "--forward", "off"], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    for _ in range(200):
        try:
            import urllib.request

            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"bus serve did not answer: {log.read_text()[-2000:]}")


def _tool(args: list[str], env: dict[str, str], timeout: float) -> dict:
    done = subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"{args[0]} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ids(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def measure(tmp: Path, env: dict[str, str], acks: int, events: int, replica: redis.Redis) -> dict:
    env = {**env, "BUS_ACK_REPLICAS": str(acks)}
    port = free_port()
    ingress = _serve(env, port, tmp / f"serve-{acks}-{time.monotonic_ns()}.log")
    try:
        ids_http = tmp / f"http-{acks}.ids"
        http = _tool(["bench.loadgen", "--port", str(port), "--path", "/parked.acks", "--events", str(events),
                      "--connections", "4", "--body-bytes", "256", "--max-seconds", "120", "--ids-out", str(ids_http)],
                     env, 200)
        accepted = _ids(ids_http)
        http_rate = len(accepted) / max(http["last_answer"] - http["first_send"], 1e-9)
    finally:
        os.killpg(ingress.pid, signal.SIGTERM)
        ingress.wait(30)
    ids_emit = tmp / f"emit-{acks}.ids"
    emitted = _tool(["bench.emitter", "--tag", "parked.acks", "--events", str(events // 4), "--threads", "1",
                     "--max-seconds", "120", "--ids-out", str(ids_emit)], env, 200)
    emit_ids = _ids(ids_emit)
    on_replica = None
    if acks:
        sample = (accepted + emit_ids)[:: max(1, len(accepted + emit_ids) // 500)]
        on_replica = sum(replica.exists(f"bus:event:{i}") for i in sample) / max(1, len(sample))
    return {"acks": acks, "http_accepts_per_s": round(http_rate), "http_refused": {k: v for k, v in
            http["statuses"].items() if k != "202"}, "emit_per_s": round(emitted["accepted"] / emitted["elapsed"]),
            "share_on_replica": on_replica}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.acks", description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bus-bench-acks-"))
    primary_port, replica_port = free_port(), free_port()
    procs = [_redis(tmp / "primary", primary_port)]
    try:
        procs.append(_redis(tmp / "replica", replica_port, "--replicaof", "127.0.0.1", str(primary_port)))
        primary, replica = redis.Redis(port=primary_port), redis.Redis(port=replica_port)
        for _ in range(100):
            if primary.info("replication")["connected_slaves"] == 1:
                break
            time.sleep(0.1)
        (tmp / "routes").mkdir()
        (tmp / "routes" / "parked.toml").write_text(ROUTE)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
        env.update(BUS_REDIS_URL=f"redis://127.0.0.1:{primary_port}/0", BUS_ROUTES=str(tmp / "routes"))
        rows = []
        for _ in range(args.rounds):
            for acks in (0, 1):
                primary.flushall()
                rows.append(measure(tmp, env, acks, args.events, replica))
                print(f"bench.acks: {rows[-1]}", file=sys.stderr, flush=True)
        load = os.getloadavg()
        summary = {}
        for key in ("http_accepts_per_s", "emit_per_s"):
            off = statistics.median(r[key] for r in rows if r["acks"] == 0)
            on = statistics.median(r[key] for r in rows if r["acks"] == 1)
            summary[key] = {"acks_0": off, "acks_1": on, "acks_1_over_0": round(on / off, 2)}
        record = {"rounds": rows, "median": summary, "loadavg_end": [round(x, 2) for x in load]}
        if args.json:
            print(json.dumps(record, indent=2))
        else:
            print("| measure | BUS_ACK_REPLICAS=0 | =1 | =1 / =0 |\n|---|---|---|---|")
            for key, m in summary.items():
                print(f"| {key} | {m['acks_0']:,.0f} | {m['acks_1']:,.0f} | {m['acks_1_over_0']} |")
            print(f"load average at the end: {record['loadavg_end']}")
    finally:
        for proc in procs:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
