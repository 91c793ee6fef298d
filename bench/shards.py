"""What a second Redis buys: delivered events/s with both routes on one Redis and with them split over two shards.

    python -m bench.shards [--events 20000] [--rounds 2] [--json]

Each round starts fresh processes in a temp dir: redis-server (AOF everysec) on free ports, one
for the one-shard layout and two for the two-shard one (route `west` then has `shard = "b"`),
bench.receiver, and the same workers in both layouts: one `bus worker ROUTE --concurrency 2` per
route (route `east` on BUS_REDIS_URL, `west` on its shard). Once both are ready, the same load is
accepted through the intake in batches of 500 (half per route, as fast as Redis takes it), and the
rate is the events over the time from the receiver's first to its last arrival. Layouts alternate,
so a machine that gets busier mid-run shifts both. Also printed: each Redis's CPU per delivered
event (INFO cpu), which is what sharding spreads. Bounded: a fixed count, a time limit per round.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

from .procs import BenchError, Cluster, free_port, wait_until

ROUTES = ("east", "west")
BATCH = 500
ROUND_LIMIT = 300.0  # seconds a round may take to deliver everything


def _route(name: str, receiver_port: int, shard: str | None) -> str:
    line = f'shard = "{shard}"\n' if shard else ""
    return f'match = "{name}.*"\nendpoint = "http://127.0.0.1:{receiver_port}/{name}"\n{line}'


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _second_redis(cluster: Cluster, port: int) -> redis.Redis:
    data = cluster.tmp / "redis-b"
    data.mkdir()
    cluster.spawn("redis_b", [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--dir", str(data), "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                              "--hash-max-listpack-value", "4096", "--logfile", str(cluster.tmp / "redis-b.log")])
    client = redis.Redis(port=port, socket_timeout=30)

    def pings() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_until(pings, 10, "the second redis-server to answer PING")
    return client


def measure(tmp: Path, shards: int, events: int) -> dict:
    """One round: `shards` is 1 (both routes on BUS_REDIS_URL) or 2 (`west` on shard b)."""
    cluster = Cluster(tmp)
    try:
        cluster.start_redis()
        clients = {"default": cluster.redis()}
        if shards == 2:
            port = free_port()
            clients["b"] = _second_redis(cluster, port)
            cluster.env["BUS_REDIS_SHARDS"] = f"b=redis://127.0.0.1:{port}/0"
        cluster.routes_dir.mkdir()
        for name in ROUTES:
            shard = "b" if shards == 2 and name == "west" else None
            (cluster.routes_dir / f"{name}.toml").write_text(_route(name, cluster.receiver_port, shard))
        cluster.env["BUS_ARCHIVE_URL"] = "off"  # what is measured is Redis and the workers, not the archive
        cluster.start_receiver()
        for name in ROUTES:
            cluster.start_worker(name, role=f"worker_{name}")
        cpu_before = {name: _redis_cpu(c) for name, c in clients.items()}
        _accept(cluster.env, events)
        deadline = time.monotonic() + ROUND_LIMIT
        while cluster.received()["unique"] < events:
            cluster.assert_running()
            if time.monotonic() > deadline:
                raise BenchError(f"only {cluster.received()['unique']} of {events} events arrived within "
                                 f"{ROUND_LIMIT:.0f}s")
            time.sleep(0.2)
        times = sorted(cluster.received_ids().values())
        cpu = {name: _redis_cpu(c) - cpu_before[name] for name, c in clients.items()}
        return {"shards": shards, "events": events, "delivered_per_s": round(len(times) / (times[-1] - times[0])),
                "duplicates": cluster.received()["duplicates"],
                "redis_cpu_us_per_event": {name: round(1e6 * s / events, 1) for name, s in cpu.items()}}
    finally:
        cluster.close()


def _accept(env: dict[str, str], events: int) -> None:
    """The load: `events` accepted half per route through the intake, batches of BATCH."""
    from bus import intake, settings

    bus = intake.load(settings.load(env))
    per_route = events // len(ROUTES)
    for sent in range(0, per_route, BATCH):
        for name in ROUTES:
            intake.accept(bus, f"{name}.load", [{"n": sent + i, "pad": "x" * 200}
                                                 for i in range(min(BATCH, per_route - sent))])


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.shards", description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=20000, help="events per round, half per route (default 20000)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.events < 2 * len(ROUTES) or args.events % len(ROUTES):
        raise SystemExit(f"--events must be an even number of at least {2 * len(ROUTES)}")
    rows = []
    for round_ in range(args.rounds):
        for shards in (1, 2):
            tmp = Path(tempfile.mkdtemp(prefix=f"bus-bench-shards-{shards}-"))
            try:
                rows.append(measure(tmp, shards, args.events))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            print(f"bench.shards: round {round_ + 1}: {rows[-1]}", file=sys.stderr, flush=True)
    one = statistics.median(r["delivered_per_s"] for r in rows if r["shards"] == 1)
    two = statistics.median(r["delivered_per_s"] for r in rows if r["shards"] == 2)
    record = {"rounds": rows, "median": {"one_shard": one, "two_shards": two, "two_over_one": round(two / one, 2)},
              "cpus": os.cpu_count(), "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    if args.json:
        print(json.dumps(record, indent=2))
        return
    print("| layout | delivered events/s (median) | Redis CPU per event, each Redis |\n|---|---|---|")
    for shards, rate in ((1, one), (2, two)):
        cpu = [r["redis_cpu_us_per_event"] for r in rows if r["shards"] == shards][-1]
        shown = ", ".join(f"{name} {us} us" for name, us in cpu.items())
        print(f"| {'one Redis' if shards == 1 else 'two shards'} | {rate:,.0f} | {shown} |")
    print(f"two shards / one: {record['median']['two_over_one']}; {record['cpus']} CPUs, "
          f"load average at the end {record['loadavg_end']}")


if __name__ == "__main__":
    main()
