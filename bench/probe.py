"""Watch a scenario's window: CPU and peak RSS of every process of every role, machine load, Redis counters."""
from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass, field

import redis

from . import stats
from .procs import Cluster


def redis_counters(client: redis.Redis) -> dict:
    info = client.info("stats")
    mem = client.info("memory")
    return {"commands": info["total_commands_processed"], "reads": info["total_reads_processed"],
            "used_memory": mem["used_memory"], "calls": stats.command_calls(client)}


# Tools report their own CPU and RSS (getrusage) when they finish; sampling them would count them twice.
TOOLS = ("loadgen", "emitter")


@dataclass
class Window:
    """What a scenario used between start() and stop()."""

    cluster: Cluster
    interval: float = 0.5
    peak_rss: dict[int, int] = field(default_factory=dict)  # pid -> KiB
    cpu_start: dict[int, float] = field(default_factory=dict)
    cpu_last: dict[int, float] = field(default_factory=dict)
    names: dict[int, tuple[str, str]] = field(default_factory=dict)  # pid -> (role, process name)
    redis_peak: int = 0
    record_backlog: bool = False  # also sample Redis memory and the largest worker RSS over time
    samples: list[dict] = field(default_factory=list)  # (t, worker RSS MiB, Redis MiB), for backlogs

    def start(self) -> Window:
        self.client = self.cluster.redis()
        self.redis_before = redis_counters(self.client)
        self.busy_before, self.t0 = stats.machine_busy_seconds(), time.monotonic()
        self.own_before = _own_cpu()
        self.load_before = stats.loadavg()
        self._sample(first=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self, first: bool = False) -> None:
        worker_rss = 0
        for role, proc in list(self.cluster.roles.items()):
            if proc.poll() is not None or role.startswith(TOOLS):
                continue
            pids = stats.tree(proc.pid)
            for pid, cpu in stats.tree_cpu(pids, proc.pid).items():
                if first:
                    self.cpu_start[pid] = cpu
                self.cpu_last[pid] = cpu
                rss = stats.read_rss_kib(pid) or 0
                self.peak_rss[pid] = max(self.peak_rss.get(pid, 0), rss)
                if pid not in self.names:
                    st = stats.read_stat(pid)
                    self.names[pid] = (role, st.name if st else "?")
                if role.startswith("worker"):
                    worker_rss = max(worker_rss, rss)
        if self.record_backlog:
            used = self.client.info("memory")["used_memory"]
            self.redis_peak = max(self.redis_peak, used)
            self.samples.append({"t": round(time.monotonic() - self.t0, 1), "worker_rss_mib": round(worker_rss / 1024, 1),
                                 "redis_mib": round(used / 2**20, 1)})

    def stop(self, tools: list[dict] = ()) -> dict:
        """The window's numbers; `tools` are the rows of the tools that ran in it (they count in its CPU)."""
        self._sample()
        self._stop.set()
        self._thread.join()
        elapsed = time.monotonic() - self.t0
        after = redis_counters(self.client)
        busy = stats.machine_busy_seconds() - self.busy_before
        processes = [
            {"role": role, "pid": pid, "name": name,
             "cpu_s": round(self.cpu_last.get(pid, 0.0) - self.cpu_start.get(pid, 0.0), 2),
             "peak_rss_mib": round(self.peak_rss.get(pid, 0) / 1024, 1)}
            for pid, (role, name) in sorted(self.names.items(), key=lambda kv: (kv[1][0], kv[0]))
        ] + list(tools) + [{"role": "bench", "pid": os.getpid(), "name": "orchestrator (sampling, polling)",
                             "cpu_s": round(_own_cpu() - self.own_before, 2),
                             "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}]
        ours = sum(p["cpu_s"] for p in processes)
        calls = {k: v - self.redis_before["calls"].get(k, 0) for k, v in after["calls"].items()}
        return {
            "elapsed_s": round(elapsed, 2),
            "loadavg": f"{self.load_before} -> {stats.loadavg()}",
            "machine_busy_cpu_s": round(busy, 1),
            "other_cpu_s": round(max(0.0, busy - ours), 1),
            "processes": processes,
            "redis": {
                "used_memory_mib": round(after["used_memory"] / 2**20, 2),
                "used_memory_delta": after["used_memory"] - self.redis_before["used_memory"],
                "peak_used_memory_mib": round(max(self.redis_peak, after["used_memory"]) / 2**20, 2),
                "commands": after["commands"] - self.redis_before["commands"],
                "reads": after["reads"] - self.redis_before["reads"],
                "calls": {k: v for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v},
            },
            "backlog_samples": self.samples,
        }


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
