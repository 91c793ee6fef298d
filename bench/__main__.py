"""`python -m bench [--quick] [--json] [--scenario NAME ...]`: run the benchmark scenarios of issue 8.

Exit status: 0 when every accepted event arrived, 1 when one was lost or late,
end-to-end delivery collapsed below a tenth of its target, or a scenario broke;
2 on a usage error. Targets that are missed are reported, not failed on.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

from . import accepting, archiving, delivering, ordering, report, stats
from .procs import BenchError, Cluster
from .run import FULL, QUICK, Run

Scenario = Callable[[Run], dict]


def scenarios(run: Run) -> list[Scenario]:
    chosen: list[Scenario] = [accepting.receiver_ceiling, accepting.ingress_single, accepting.ingress_single_unix,
                              accepting.ingress_batch100,
                              accepting.emit, accepting.emit_threads, accepting.emit_many, accepting.producer,
                              accepting.producer_outage, accepting.redis_memory, delivering.e2e, delivering.e2e_fanout,
                              delivering.latency, delivering.drain_outage, delivering.stdlib_receiver,
                              ordering.ordering]
    if run.sizes.pool_events:
        chosen += [delivering.pool("prefork", 2), delivering.pool("prefork", 4), delivering.pool("threads", 8)]
        if importlib.util.find_spec("gevent"):
            chosen.append(delivering.pool("gevent", 50))
        chosen.append(delivering.pool("solo", 1))
        # Experiments with settings the bus could change: Flower's task events off (Flower can switch
        # them on while it runs), and a deeper prefetch (fewer BRPOP round trips per task).
        chosen.append(delivering.pool("prefork", 2, {"worker_send_task_events": False}, "_noevents"))
        chosen.append(delivering.pool("prefork", 2, {"worker_send_task_events": False, "worker_prefetch_multiplier": 8},
                                      "_noevents_prefetch8"))
        # What grouping buys: the same worker fed requests of 100 events, which the intake packs into tasks.
        chosen.append(delivering.pool("prefork", 2, label="_fed_batches100", feed_batch=100))
    if run.sizes.backlog:
        chosen.append(delivering.backlog)
    if run.sizes.long_run:
        chosen.append(archiving.long_run)
    return chosen


def _name(s: Scenario) -> str:
    return {"receiver_ceiling": "receiver"}.get(s.__name__, s.__name__)


def _versions() -> str:
    redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    return f"Python {sys.version.split()[0]}, Redis {redis_v.removeprefix('v=')}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a CI-sized run (under a minute); no pools, no backlog")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    p.add_argument("--scenario", action="append", metavar="NAME", help="run only this scenario (repeatable)")
    p.add_argument("--backlog-minutes", type=float, help="how long the receiver stays down in `backlog` (default 5)")
    p.add_argument("--backlog-events", type=int, help="events in `backlog` (default 100000)")
    p.add_argument("--ingress", default="bus:2x8", metavar="SERVER:WxT",
                   help="bus:WxT (bus serve --workers W --threads T, default 2x8) or granian:WxT (the werkzeug app "
                        "alone under granian: an experiment)")
    p.add_argument("--redis-setting", action="append", default=[], metavar="NAME=VALUE",
                   help="extra redis-server setting, e.g. hash-max-listpack-value=4096 (repeatable)")
    p.add_argument("--long-run-events", type=int, help="events per half of `long_run` (default 100000)")
    p.add_argument("--archive-url", help="the journal's archive for the run (default: a SQLite file in its temp dir), "
                                         "e.g. postgresql://postgres@127.0.0.1:5432/bench (an empty database)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir with every process's log")
    p.add_argument("--peer", choices=["fluentd"], help="run `bus up` and this peer side by side instead, alternating, "
                   "and print each figure with its ratio (bench/versus.py); --scenario then picks among fresh "
                   "(idle before any traffic), e2e, forward, latency, idle, outage, crash, bus_only")
    args = p.parse_args(argv)
    if args.peer:
        from . import versus

        signal.signal(signal.SIGTERM, _interrupt)
        return versus.run(args.quick, args.json, args.keep, args.scenario, argv if argv is not None else sys.argv[1:])
    sizes = QUICK if args.quick else FULL
    overrides = {"backlog_minutes": args.backlog_minutes, "backlog": args.backlog_events,
                 "long_run": args.long_run_events}
    sizes = dataclasses.replace(sizes, **{k: v for k, v in overrides.items() if v is not None})
    signal.signal(signal.SIGTERM, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="bus-bench-"))
    redis_settings = [part for kv in args.redis_setting for part in ("--" + kv.split("=", 1)[0], kv.split("=", 1)[1])]
    cluster = Cluster(tmp, args.ingress, redis_settings, args.archive_url)
    run = Run(cluster, sizes, args.quick)
    chosen = scenarios(run)
    if args.scenario:
        unknown = set(args.scenario) - {_name(s) for s in chosen}
        if unknown:
            p.error(f"unknown scenario {sorted(unknown)[0]!r}; choose from {', '.join(_name(s) for s in chosen)}")
        chosen = [s for s in chosen if _name(s) in args.scenario]
    record = {"mode": "quick" if args.quick else "full", "cores": os.cpu_count(), "loadavg_start": stats.loadavg(),
              "versions": _versions(), "command": shlex.join(["python", "-m", "bench", *(argv or sys.argv[1:])]),
              "ingress": args.ingress, "redis_settings": args.redis_setting, "results": run.results}
    keep, interrupted = args.keep, False
    try:
        run.write_routes()
        cluster.start_redis()
        record["machine"] = stats.calibrate(cluster.redis_port)
        cluster.start_receiver()
        cluster.start_ingress()
        for scenario in chosen:
            print(f"bench: {_name(scenario)} ...", file=sys.stderr, flush=True)
            try:
                run.results.append(scenario(run))
            except BenchError as exc:
                keep = True
                run.results.append({"scenario": _name(scenario), "error": str(exc), "pass": False})
                run.no_worker()
            print(f"bench: {_name(scenario)}: {_brief(run.results[-1])}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("bench: interrupted; stopping every process (results so far below)", file=sys.stderr)
        interrupted = True
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        keep = True
        return 1
    finally:
        cluster.close()
        if keep:
            print(f"bench: logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    record["loadavg_end"] = stats.loadavg()
    print(report.as_json(record) if args.json else report.text(record))
    if interrupted:
        return 130
    return 1 if report.failures(run.results) else 0


def _brief(r: dict) -> str:
    if r.get("error"):
        return "ERROR " + r["error"].splitlines()[0]
    return f"rate={r.get('rate')} events={r.get('events')} pass={r.get('pass')}"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        sys.exit(1)
