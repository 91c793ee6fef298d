"""`python -m bench.hops`: where a record's latency goes at a low rate, hop by hop, through a `bus up` tree.

The versus latency scenario's load (bench.loadgen --keyed, 4 keep-alive producers, 256-byte records,
100/s) into `bus up` (one route, Flower off), with every Python process of the tree stamping the
hops of each event (bench/hop_stamps/sitecustomize.py, put on their PYTHONPATH): the ingress's
accept entered and returned, BRPOP's message in the worker's main process, its unacked entry
written, its hand-off to the pool, the pool process's task start, the events loaded, the POST
sent and answered; the load generator's send time and the receiver's receipt close the chain.
Prints the median and p99 of each hop's step from the one before it, and of the whole.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from . import stats, verify
from .procs import REPO, Cluster
from .sides import BusUp

STAMPS = REPO / "bench" / "hop_stamps"
# In the order an event crosses them; "sent" (loadgen) and "receipt" (receiver) come by the record's key.
HOPS = ["sent", "ingress_in", "accepted", "brpop", "qos_appended", "to_pool", "pool_start", "loaded", "post",
        "receipt"]


TASK_HOPS = ("brpop", "qos_appended", "to_pool", "pool_start", "loaded")


def read_stamps(out: Path) -> tuple[dict[str, dict[str, float]], dict[str, str], dict[str, str]]:
    """{event id: {hop: first time}}, {event id: record key} and {event id: task id} from every process's stamp file; the
    worker's hops are stamped by task id and given to each event the task carried."""
    hops: dict[str, dict[str, float]] = defaultdict(dict)
    keys: dict[str, str] = {}
    task_of: dict[str, str] = {}
    for path in out.glob("hops-*.txt"):
        for line in path.read_text().splitlines():
            hop, event, value = line.split()
            if hop == "key":
                keys[event] = value
            elif hop == "task":
                task_of.setdefault(event, value)
            else:
                hops[event].setdefault(hop, float(value))
    for event, task in task_of.items():
        for hop in TASK_HOPS:
            if hop in hops.get(task, {}):
                hops[event].setdefault(hop, hops[task][hop])
    return hops, keys, task_of


def steps(hops: dict[str, dict[str, float]], keys: dict[str, str], sent: dict[str, float],
          received: dict[str, float]) -> dict[str, list[float]]:
    """Milliseconds of each hop from the one before it, over the events that have every hop."""
    out: dict[str, list[float]] = defaultdict(list)
    for event, k in keys.items():
        h = dict(hops.get(event, {}))
        if k not in sent or k not in received:
            continue
        h["sent"], h["receipt"] = sent[k], received[k]
        if not all(name in h for name in HOPS):
            continue
        for before, after in zip(HOPS, HOPS[1:]):
            out[f"{before} -> {after}"].append((h[after] - h[before]) * 1000)
        out["total"].append((h["receipt"] - h["sent"]) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hops", description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=3000)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs and stamp files)")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bus-hops-"))
    out = tmp / "hops"
    out.mkdir()
    cluster = Cluster(tmp)
    cluster.env.update(PYTHONPATH=str(STAMPS), BENCH_HOPS_OUT=str(out))
    bus = BusUp(cluster)
    load0 = stats.loadavg()
    try:
        cluster.start_receiver()
        bus.start()
        ids = tmp / "hops.ids"
        summary = cluster.tool("loadgen-hops", [
            "bench.loadgen", "--keyed", "--port", str(bus.http_port), "--path", bus.paths(),
            "--events", str(args.events), "--rate", str(args.rate), "--body-bytes", "256",
            "--max-seconds", str(args.events / args.rate + 30), "--ids-out", str(ids), "--connections", "4"],
            timeout=args.events / args.rate + 90)
        sent = verify.read_ids(ids)
        verify.wait_delivered(cluster, len(sent), 120)
        received = cluster.received_ids()
    finally:
        bus.stop()
        cluster.close()
    hops, keys, task_of = read_stamps(out)
    table = steps(hops, keys, sent, received)
    sizes = list(Counter(task_of.values()).values())
    report = {"events": len(sent), "tasks": len(sizes), "events_per_task_p50": stats.percentile(sizes, 50),
              "errors": summary["errors"], "received": len(received),
              "with_every_hop": len(table.get("total", [])), "loadavg": [load0, stats.loadavg()],
              "hops_ms": {name: {"p50": round(stats.percentile(v, 50) or 0, 3),
                                 "p99": round(stats.percentile(v, 99) or 0, 3)} for name, v in table.items()}}
    print(json.dumps(report, indent=1))
    if args.keep:
        print(f"hops: kept {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
