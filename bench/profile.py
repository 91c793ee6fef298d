"""Profile where an event's CPU goes, with py-spy, in two clean phases:

A. the ingress alone (no worker) under 4 keep-alive producers of single events;
B. the worker alone draining a queue that was filled before the profile starts (`--route fanout`: the
   route with two destinations, whose figures are per copy delivered).

`python -m bench.profile [--pool prefork] [--concurrency 2] [--seconds 20] [--route bench|fanout] [--out DIR]`
(py-spy must be installed: `pip install py-spy`). Prints, per process group, CPU
ms per event split by stage, and the busiest functions; keeps the raw stacks in DIR.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bus.journal.keys import RECOVERY_DONE

from . import flame, stats
from .procs import PY, Cluster
from .run import FANOUT, FANOUT_DESTINATIONS, FULL, PARKED, ROUTE, Run


def record(cluster: Cluster, role: str, pid: int, seconds: float, out: Path):
    """Start py-spy on `pid` and its subprocesses; returns the Popen (raw collapsed stacks into `out`).

    --gil samples only the thread holding the GIL: Python CPU, not threads parked in a socket read or
    a queue (py-spy's idle detection does not tell those apart here)."""
    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    return cluster.spawn(f"py-spy-{role}", [spy, "record", "--pid", str(pid), "--subprocesses", "--format", "raw",
                                            "--rate", "200", "--gil", "--nonblocking", "--duration", str(int(seconds)),
                                            "--output", str(out)])


def cpu_of(pids: list[int]) -> float:
    return sum(s.cpu for s in (stats.read_stat(p) for p in pids) if s)


def report(title: str, groups: dict[str, Counter], cpu_ms: dict[str, float]) -> str:
    lines = [f"== {title}"]
    for group, stacks in groups.items():
        ms = cpu_ms.get(group)
        lines.append(f"-- {group}: {sum(stacks.values())} samples" + (f", {ms:.3f} CPU ms/event" if ms else ""))
        for name, share in flame.by_stage(stacks):
            lines.append(f"   {share * 100:5.1f}%  {share * ms if ms else 0:6.3f} ms  {name}")
        own, incl = flame.by_function(stacks, 12)
        lines.append("   busiest functions (self):")
        lines += [f"   {s * 100:5.1f}%  {f[:150]}" for f, s in own]
    return "\n".join(lines)


def group_ingress(parts: dict[str, Counter], master: int) -> dict[str, Counter]:
    merged: Counter = Counter()
    for root, stacks in parts.items():
        if not root.startswith(f"process {master}:"):
            merged.update(stacks)
    return {"ingress workers (uvicorn)": merged}


def group_worker(parts: dict[str, Counter], main: int) -> dict[str, Counter]:
    out = {"worker main process": Counter(), "worker pool processes": Counter()}
    for root, stacks in parts.items():
        out["worker main process" if root.startswith(f"process {main}:") else "worker pool processes"].update(stacks)
    return {k: v for k, v in out.items() if v}


def phase_ingress(run: Run, seconds: float, out: Path) -> str:
    run.no_worker()
    run.flush()
    cluster = run.cluster
    master = cluster.roles["ingress"].pid
    pids = stats.tree(master)
    load = cluster.spawn("loadgen-profile", [PY, "-m", "bench.loadgen", "--port", str(cluster.ingress_port),
                                             "--path", f"/{PARKED}.profile", "--events", "1000000",
                                             "--max-seconds", str(seconds + 3)])
    time.sleep(1.5)
    before, hset0 = cpu_of(pids), _calls(cluster, "hset")
    spy = record(cluster, "ingress", master, seconds, out / "ingress.raw")
    spy.wait()
    # One HSET per accepted event (its record); task messages are no longer one per event.
    accepted, used = _calls(cluster, "hset") - hset0, cpu_of(pids) - before
    load.wait()
    parts = flame.split_processes(flame.parse(open(out / "ingress.raw")))
    return report(f"A. ingress alone: {accepted} events accepted in {seconds:.0f}s ({accepted / seconds:.0f}/s)",
                  group_ingress(parts, master), {"ingress workers (uvicorn)": 1000 * used / max(1, accepted)})


def phase_worker(run: Run, pool: str, concurrency: int, seconds: float, out: Path, route: str = ROUTE) -> str:
    cluster = run.cluster
    run.no_worker()
    run.flush()
    cluster.reset_receiver()
    # Queue single events (one per task, as producers send them) with no worker, then profile only the worker;
    # enough that its start-up recovery scan is over well before they are all delivered.
    copies = len(FANOUT_DESTINATIONS) if route == FANOUT else 1
    cluster.tool("loadgen-fill", ["bench.loadgen", "--port", str(cluster.ingress_port), "--path", f"/{route}.profile",
                                  "--events", str(int(1500 * seconds / copies))], timeout=180)
    if route == FANOUT:
        cluster.start_worker(FANOUT, pool, concurrency)
        run.worker_spec = (FANOUT,)  # no_worker() below stops it
    else:
        run.ensure_worker(pool, concurrency, flush=False)
    main = cluster.roles["worker"].pid
    # The start-up recovery scan (bus/worker/recovery.py: O(keyspace), here the whole filled queue) is not the
    # steady state being profiled: begin once it is done.
    deadline = time.monotonic() + 60
    while not cluster.redis().get(RECOVERY_DONE) and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = stats.tree(main)
    # Requests, not unique ids: a fan-out event's copies share its X-Request-Id.
    before, got0 = {p: cpu_of([p]) for p in pids}, cluster.received()["requests"]
    spy = record(cluster, "worker", main, seconds, out / "worker.raw")
    spy.wait()
    got = cluster.received()["requests"] - got0
    used = {p: cpu_of([p]) - before[p] for p in pids}
    parts = flame.split_processes(flame.parse(open(out / "worker.raw")))
    groups = group_worker(parts, main)
    ms = {"worker main process": 1000 * used[main] / max(1, got),
          "worker pool processes": 1000 * sum(v for p, v in used.items() if p != main) / max(1, got)}
    run.no_worker()
    what = "copies" if route == FANOUT else "events"
    return report(f"B. worker alone ({pool} -c {concurrency}, route {route}): {got} {what} delivered in {seconds:.0f}s "
                  f"({got / seconds:.0f}/s)", groups, ms)


def _calls(cluster: Cluster, command: str) -> int:
    return cluster.redis().info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0)


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    p.add_argument("--pool", default="prefork")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--out", type=Path, help="where to keep the raw stacks (default: a temp dir, printed)")
    p.add_argument("--phase", choices=["ingress", "worker", "both"], default="both")
    p.add_argument("--route", choices=[ROUTE, FANOUT], default=ROUTE,
                   help=f"the worker phase's route ({FANOUT}: two destinations, figures per copy)")
    args = p.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bus-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="bus-profile-run-")))
    run = Run(cluster, FULL, quick=False)
    try:
        run.write_routes()
        cluster.start_redis()
        cluster.start_receiver()
        cluster.start_ingress()
        print(f"load average {stats.loadavg()}; raw stacks in {out}", flush=True)
        if args.phase in ("ingress", "both"):
            print(phase_ingress(run, args.seconds, out), flush=True)
        if args.phase in ("worker", "both"):
            print(phase_worker(run, args.pool, args.concurrency, args.seconds, out, args.route), flush=True)
    except KeyboardInterrupt:
        return 130
    finally:
        cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
