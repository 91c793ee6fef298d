"""`python -m bench --peer fluentd`: `bus up` and Fluentd in one run, scenario by scenario, alternating; ratios.

Both sides deliver to the same receiver (bench/receiver.py, counting each record by
its own "k") under the same load (bench.loadgen --keyed: 4 keep-alive producers,
256-byte records over 6 tags; bench.forwardgen for forward with acks). Which side
goes first alternates from one scenario to the next, so a machine that slows down
during the run does not always hit the same side. Figures are only comparable
within one run on these shared VMs: the ratio is the result, the figures its context.
Every delivery scenario counts lost (accepted, never received) and duplicated
records at the receiver for both sides.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import accepting, report_versus, stats, verify
from .peer_fluentd import Fluentd
from .procs import BenchError, Cluster
from .run import FLOOR_RATE, Run, Sizes
from .sides import BusUp, Side

BODY_BYTES = 256


@dataclass(frozen=True)
class VersusSizes:
    e2e: int = 20_000
    forward: int = 5_000  # Fluentd drains a forward backlog at tens of events/s here: bounded for time
    latency_s: float = 30.0
    idle_s: float = 30.0
    drain_events: int = 2_000
    outage_s: float = 30.0
    crash_s: float = 20.0  # load at 150/s, the SIGKILL halfway
    slack_s: float = 180.0  # added to every wait for deliveries
    restore_s: float = 70.0  # the bus's visibility timeout (60 s) + its restore interval: redelivery after a kill


FULL = VersusSizes()
QUICK = VersusSizes(e2e=2_000, forward=1_000, latency_s=5.0, idle_s=10.0, drain_events=300, outage_s=5.0,
                    crash_s=8.0, slack_s=60.0)


def recycle_wait() -> float:
    """How long after its last task the bus's worker has replaced every pool process that ran tasks
    (BUS_POOL_RECYCLE_IDLE, one at a time a tick apart: bus/worker/recycle.py); 0 when off."""
    from bus import settings
    from bus.worker import recycle

    idle = settings.load().pool_recycle_idle
    return idle + 2 * recycle.tick_every(idle) + 2 if idle else 0.0


@contextmanager
def bus_tree(prefix: str, env: dict[str, str] | None = None) -> Iterator[Versus]:
    """The bus's side alone for the one-tree tools (bench.idle_tree, archive_tree, after_idle): the
    receiver and a `bus up` tree (with `env` given to the tree) started in a temporary directory of
    their own, stopped and removed after."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    cluster = Cluster(tmp)
    versus = Versus(cluster, QUICK)
    if env:
        versus.bus = BusUp(cluster, env=env)
    try:
        cluster.start_receiver()
        versus.bus.start()
        yield versus
    finally:
        versus.bus.stop()
        cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)


class Versus:
    def __init__(self, cluster: Cluster, sizes: VersusSizes):
        self.cluster, self.sizes = cluster, sizes
        self.bus, self.fluentd = BusUp(cluster), Fluentd(cluster)
        self.turn = 0
        self.rows: list[dict] = []  # one per side and scenario
        self.extra: dict = {}

    def order(self) -> list[Side]:
        self.turn += 1
        return [self.bus, self.fluentd] if self.turn % 2 else [self.fluentd, self.bus]

    # -- the tools --------------------------------------------------------------
    def produce(self, side: Side, name: str, events: int, rate: float = 0.0, forward: bool = False,
                max_seconds: float = 600.0) -> tuple[dict, dict[str, float]]:
        ids = self.cluster.tmp / f"{name}-{side.name}.ids"
        if forward:
            argv = ["bench.forwardgen", "--port", str(side.forward_port), "--tags", side.paths().replace("/", "")]
        else:
            argv = ["bench.loadgen", "--keyed", "--port", str(side.http_port), "--path", side.paths()]
        argv += ["--events", str(events), "--rate", str(rate), "--body-bytes", str(BODY_BYTES),
                 "--max-seconds", str(max_seconds), "--ids-out", str(ids), "--connections", "4"]
        summary = self.cluster.tool(f"loadgen-{name}-{side.name}", argv, timeout=max_seconds + 60)
        return summary, verify.read_ids(ids)

    def counted(self, accepted: dict[str, float], summary: dict, wait: float) -> tuple[dict, dict[str, float]]:
        """Wait for the accepted records, then count them at the receiver (by key, the same for both sides)."""
        verify.wait_delivered(self.cluster, len(accepted), wait)
        received = self.cluster.received_ids()
        dup = self.cluster.received()["duplicates"]
        missing = sum(1 for k in accepted if k not in received)
        return {"sent": summary["events_sent"], "accepted": len(accepted), "delivered": len(accepted) - missing,
                "lost": missing, "duplicates": dup,
                "unexpected": sum(1 for k in received if k not in accepted)}, received

    def record(self, scenario: str, side: Side, **figures) -> None:
        self.rows.append({"scenario": scenario, "side": side.name, **figures, "loadavg": stats.loadavg()})
        print(f"versus: {scenario} {side.name}: {json.dumps(figures, default=str)[:300]}", file=sys.stderr, flush=True)

    # -- scenarios ----------------------------------------------------------------
    def e2e(self, forward: bool = False) -> None:
        scenario = "forward" if forward else "e2e"
        n = self.sizes.forward if forward else self.sizes.e2e
        for side in self.order():
            self.cluster.reset_receiver()
            cpu0 = side.cpu()
            summary, accepted = self.produce(side, scenario, n, forward=forward)
            counts, received = self.counted(accepted, summary, len(accepted) / FLOOR_RATE * 3 + self.sizes.slack_s)
            cpu = side.cpu() - cpu0
            times = [received[k] for k in accepted if k in received]
            rate = counts["delivered"] / (max(times) - summary["first_send"]) if times else 0.0
            accept_rate = len(accepted) / (summary["last_answer"] - summary["first_send"]) if accepted else 0.0
            self.record(scenario, side, events=counts, delivered_per_s=round(rate, 1),
                        accepted_per_s=round(accept_rate, 1),
                        cpu_ms_per_event=round(cpu * 1000 / counts["delivered"], 3) if counts["delivered"] else None,
                        producer_errors=summary["errors"])

    def latency(self) -> None:
        n = int(100 * self.sizes.latency_s)
        for side in self.order():
            self.cluster.reset_receiver()
            summary, accepted = self.produce(side, "latency", n, rate=100.0, max_seconds=self.sizes.latency_s + 30)
            counts, received = self.counted(accepted, summary, self.sizes.slack_s)
            ms = [(received[k] - sent) * 1000 for k, sent in accepted.items() if k in received]
            self.record("latency", side, events=counts, p50_ms=_round(stats.percentile(ms, 50)),
                        p99_ms=_round(stats.percentile(ms, 99)), max_ms=_round(max(ms) if ms else None))

    def fresh(self) -> None:
        """Both sides idle before any traffic: the trees as they start, nothing yet to send or to keep.
        The `idle` line after traffic also pays for what traffic leaves behind (the bus archives each
        delivered record once its hot window passes; Fluentd keeps no history), so the two differ."""
        self._idle("fresh", settle=8.0)  # as bench.idle_tree: start-up's imports and first ticks done

    def idle(self) -> None:
        """Both sides idle at once over the same window, after the scenarios before it: CPU, then PSS and
        RSS of each whole tree."""
        # The last scenario's stragglers (a flush thread, a task's tail), and the worker's replacing of
        # its pool processes once idle: the line shows the tree as it then stays.
        self._idle("idle", settle=5 + recycle_wait())

    def _idle(self, scenario: str, settle: float) -> None:
        time.sleep(settle)
        cpu0 = {s.name: s.cpu() for s in (self.bus, self.fluentd)}
        t0 = time.monotonic()
        time.sleep(self.sizes.idle_s)
        elapsed = time.monotonic() - t0
        for side in self.order():
            cpu = side.cpu() - cpu0[side.name]
            self.record(scenario, side, idle_cpu_pct=round(cpu / elapsed * 100, 2), idle_s=round(elapsed, 1),
                        **side.memory())

    def outage(self) -> None:
        """Receiver down, records accepted, receiver back after the outage: seconds until the last arrives.
        The tree's CPU from the end of the load to the receiver's return is its cost while an endpoint is down."""
        for side in self.order():
            self.cluster.stop("receiver")
            started = time.monotonic()
            summary, accepted = self.produce(side, "outage", self.sizes.drain_events, max_seconds=120)
            cpu0, t0 = side.cpu(), time.monotonic()
            time.sleep(max(1.0, self.sizes.outage_s - (time.monotonic() - started)))
            down_cpu_pct = (side.cpu() - cpu0) / (time.monotonic() - t0) * 100
            down_s = time.monotonic() - started
            self.cluster.start_receiver()
            back = time.time()
            # Fluentd drains about 10/s after an outage (flush_thread_burst_interval) plus its backoff (≤ 60 s).
            counts, received = self.counted(accepted, summary, len(accepted) / 5 + self.sizes.slack_s)
            times = [received[k] for k in accepted if k in received]
            self.record("outage", side, events=counts, drain_s=_round(max(times) - back if times else None),
                        down_cpu_pct=round(down_cpu_pct, 2), outage_s=round(down_s, 1))

    def crash(self) -> None:
        """Load at 150/s; halfway, SIGKILL to every process of the side at once, then start it again on the
        state it left (the bus's ./var with Redis's AOF, Fluentd's file buffer). Lost and duplicated counted."""
        n = int(150 * self.sizes.crash_s)
        for side in self.order():
            self.cluster.reset_receiver()
            out: dict = {}
            def produce(side: Side = side) -> None:
                out["summary"], out["accepted"] = self.produce(side, "crash", n, rate=150.0,
                                                               max_seconds=self.sizes.crash_s + 30)

            producer = threading.Thread(target=produce)
            producer.start()
            time.sleep(self.sizes.crash_s / 2)
            killed = time.monotonic()
            side.kill_all()
            side.start()
            down_s = time.monotonic() - killed
            producer.join(self.sizes.crash_s + 120)
            if "summary" not in out:
                raise BenchError(f"the producer of crash/{side.name} did not finish")
            counts, _ = self.counted(out["accepted"], out["summary"], self.sizes.restore_s + self.sizes.slack_s)
            self.record("crash", side, events=counts, kill_to_ready_s=round(down_s, 1),
                        producer_errors=out["summary"]["errors"])

    def bus_only(self, quick: bool) -> None:
        """The targets that have no Fluentd counterpart, in the same run: ingress singles and emit() against
        the machine's bare PING rate, through the bench's own Redis and `bus serve` (bench/accepting.py)."""
        sizes = Sizes(ingress_single=2_000 if quick else 10_000, emit=3_000 if quick else 20_000)
        run = Run(self.cluster, sizes, quick)
        run.write_routes()
        self.cluster.start_ingress()
        for scenario in (accepting.ingress_single, accepting.emit):
            r = scenario(run)
            self.extra[r["scenario"]] = {"rate": r["rate"], "events": r["events"]}
            print(f"versus: {r['scenario']}: {r['rate']}/s", file=sys.stderr, flush=True)
        self.cluster.stop("ingress")


def _round(v: float | None) -> float | None:
    return round(v, 2) if v is not None else None


def run(quick: bool, as_json: bool, keep: bool, only: list[str] | None, argv: list[str]) -> int:
    sizes = QUICK if quick else FULL
    tmp = Path(tempfile.mkdtemp(prefix="bus-versus-"))
    cluster = Cluster(tmp)
    versus = Versus(cluster, sizes)
    record = {"mode": "quick" if quick else "full", "cores": os.cpu_count(),
              "command": shlex.join(["python", "-m", "bench", *argv]), "loadavg_start": stats.loadavg(),
              "rows": versus.rows, "bus_only": versus.extra, "errors": []}
    steps = {"fresh": versus.fresh, "e2e": versus.e2e, "forward": lambda: versus.e2e(forward=True), "latency": versus.latency,
             "idle": versus.idle, "outage": versus.outage, "crash": versus.crash,
             "bus_only": lambda: versus.bus_only(quick)}
    chosen = [s for s in steps if not only or s in only]
    interrupted = False
    try:
        cluster.start_redis()  # the bench's own: the machine's PING rate, and the bus-only lines
        record["machine"] = stats.calibrate(cluster.redis_port)
        cluster.start_receiver()
        versus.bus.start()
        versus.fluentd.start()
        for name in chosen:
            print(f"versus: {name} ...", file=sys.stderr, flush=True)
            try:
                steps[name]()
            except BenchError as exc:
                keep = True
                record["errors"].append(f"{name}: {exc}")
                print(f"versus: {name}: ERROR {exc}", file=sys.stderr, flush=True)
                for side in (versus.bus, versus.fluentd):
                    if side.role not in cluster.roles:
                        side.start()
                if "receiver" not in cluster.roles:
                    cluster.start_receiver()
    except KeyboardInterrupt:
        print("versus: interrupted; stopping every process (results so far below)", file=sys.stderr)
        interrupted = True
    except BenchError as exc:
        record["errors"].append(str(exc))
        keep = True
    finally:
        for side in (versus.bus, versus.fluentd):
            side.stop()
        cluster.close()
        if keep:
            print(f"versus: logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    record["loadavg_end"] = stats.loadavg()
    print(json.dumps(record, indent=1) if as_json else report_versus.text(record))
    if interrupted:
        return 130
    lost = [r for r in versus.rows if r["side"] == "bus" and r.get("events", {}).get("lost")]
    return 1 if lost or record["errors"] else 0
