"""A bench run's shared state: sizes (full or quick), the routes, the cluster, and how to drive the tools."""
from __future__ import annotations

from dataclasses import dataclass, field

from . import verify
from .probe import Window
from .procs import Cluster


@dataclass(frozen=True)
class Sizes:
    receiver: int = 20_000  # requests straight to the receiver, to measure its own ceiling
    ingress_single: int = 10_000
    ingress_batch: int = 50_000  # events, in requests of 100
    emit: int = 20_000
    producer: int = 100_000  # bus.Producer.emit: at 50,000/s two seconds of emits, enough to outlast warm-up
    memory: int = 10_000  # events of 1 KiB waiting in Redis
    e2e: int = 20_000
    latency_s: float = 30.0  # at 100 events/s
    drain_events: int = 2_000
    outage_s: float = 30.0
    pool_events: int = 10_000  # per worker pool compared
    stdlib_events: int = 4_000  # per receiver of the stdlib_receiver scenario (two-write and one-write http.server)
    backlog: int = 100_000
    backlog_minutes: float = 5.0
    delivery_slack_s: float = 180.0  # added to every delivery wait: two of the route's longest retry intervals
    long_run: int = 100_000  # events of ~230 bytes delivered with archiving off, then on (bench/archiving.py)


FULL = Sizes()
QUICK = Sizes(receiver=5_000, ingress_single=2_000, ingress_batch=10_000, emit=3_000, producer=20_000, memory=2_000,
              e2e=2_000,
              latency_s=4.0, drain_events=300, outage_s=3.0, pool_events=0, stdlib_events=400, backlog=0, delivery_slack_s=20.0,
              long_run=3_000)

# Events a collapse-free bus delivers per second at the very least (a tenth of the e2e target);
# every wait for deliveries is sized from it.
FLOOR_RATE = 130.0
ROUTE = "bench"  # has a worker in delivery scenarios
ORDERED = "ordered"  # the same as ROUTE with ordered = true (the tag as order key): bench.ordering's
PARKED = "parked"  # never has a worker: accept-only scenarios leave their events waiting here
FANOUT = "fanout"  # a route with two destinations on the same receiver (e2e_fanout)
FANOUT_DESTINATIONS = ("a", "b")


@dataclass
class Run:
    cluster: Cluster
    sizes: Sizes
    quick: bool
    worker_spec: tuple | None = None
    results: list[dict] = field(default_factory=list)

    def write_routes(self) -> None:
        receiver = f"http://127.0.0.1:{self.cluster.receiver_port}"
        self.cluster.routes_dir.mkdir(exist_ok=True)
        # Production route settings (the defaults of routes/api.toml): backoff up to 60 s.
        for name in (ROUTE, PARKED):
            (self.cluster.routes_dir / f"{name}.toml").write_text(
                f'match = "{name}.*"\nendpoint = "{receiver}/{name}/${{tag[1]}}"\nopen_timeout = 2\nretry_max_interval = 60\n')
        (self.cluster.routes_dir / f"{ORDERED}.toml").write_text(
            f'match = "{ORDERED}.*"\nendpoint = "{receiver}/{ORDERED}/${{tag[1]}}"\nopen_timeout = 2\n'
            'retry_max_interval = 60\nordered = true\n')
        (self.cluster.routes_dir / f"{FANOUT}.toml").write_text(
            f'match = "{FANOUT}.*"\nopen_timeout = 2\nretry_max_interval = 60\n' + "".join(
                f'[[destinations]]\nname = "{d}"\nendpoint = "{receiver}/{FANOUT}/{d}/${{tag[1]}}"\n'
                for d in FANOUT_DESTINATIONS))

    # -- workers and Redis state ----------------------------------------------
    def flush(self) -> None:
        """A clean Redis between scenarios; never under a running worker (kombu keeps its bindings there)."""
        assert not any(r.startswith("worker") for r in self.cluster.roles), "flush with a worker running"
        self.cluster.redis().flushall()

    def no_worker(self) -> None:
        for role in [r for r in self.cluster.roles if r.startswith("worker")]:
            self.cluster.stop(role, grace=20.0)
        self.worker_spec = None

    def ensure_worker(self, pool: str = "prefork", concurrency: int = 2, config: dict | None = None,
                      flush: bool = True) -> None:
        spec = (pool, concurrency, sorted((config or {}).items()))
        if self.worker_spec == spec:
            return
        self.no_worker()
        if flush:
            self.flush()
        self.cluster.start_worker(ROUTE, pool, concurrency, config=config)
        self.worker_spec = spec

    # -- the tools --------------------------------------------------------------
    def loadgen(self, name: str, path: str, events: int, batch: int = 1, rate: float = 0.0, body_bytes: int = 40,
                direct: bool = False, max_seconds: float = 300.0, unix: str | None = None,
                extra: list[str] | None = None) -> tuple[dict, dict[str, float]]:
        ids = self.cluster.tmp / f"{name}.ids"
        port = self.cluster.receiver_port if direct else self.cluster.ingress_port
        where = ["--unix", unix] if unix else ["--port", str(port)]
        argv = ["bench.loadgen", *where, "--path", path, "--events", str(events), "--batch", str(batch),
                "--rate", str(rate), "--body-bytes", str(body_bytes), "--max-seconds", str(max_seconds),
                "--ids-out", str(ids), "--connections", "4"]
        if direct:
            argv.append("--direct")
        argv += extra or []
        summary = self.cluster.tool(f"loadgen-{name}", argv, timeout=max_seconds + 60)
        return summary, verify.read_ids(ids)

    def window(self, **kw) -> Window:
        return Window(self.cluster, **kw).start()

    def wait_for(self, accepted: int, expected_rate: float = FLOOR_RATE) -> float:
        """How long a delivery scenario may wait for its events before the missing ones count as late."""
        return accepted / expected_rate + self.sizes.delivery_slack_s


def tool_process(name: str, summary: dict) -> dict:
    """A finished tool's own CPU and peak RSS as a process row."""
    return {"role": name, "pid": None, "name": name, "cpu_s": round(summary["cpu"], 2),
            "peak_rss_mib": round(summary["max_rss_kib"] / 1024, 1)}


def result(name: str, events: dict, rate: float | None, target: str, passed: bool | None, window: dict,
           **extra) -> dict:
    return {"scenario": name, "events": events, "rate": round(rate, 1) if rate else rate, "target": target,
            "pass": passed, "window": window, **extra}
