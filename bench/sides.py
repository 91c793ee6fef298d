"""The two systems bench.versus compares, each a process tree it starts, measures (CPU, PSS) and kills: `bus up`.

A side knows its ports, its tags' paths and how to start again on the state it left
(the bus's ./var, Fluentd's buffer dir), which is what the SIGKILL scenario needs.
bench/peer_fluentd.py is the other side.
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from . import stats
from .procs import PY, REPO, BenchError, Cluster, connects, free_port, http_get, wait_until

TAGS = [f"api.t{i}" for i in range(6)]  # 6 tags, as in the measurements


def smaps_kib(pid: int) -> dict[str, int]:
    """Pss, Rss and Private_Dirty of one process in KiB from smaps_rollup (zeros when it is gone).
    Private_Dirty is what the process adds to its tree: the pages only it maps, which for a forked
    child includes a page its relatives have rewritten since (it alone still maps the original)."""
    found = dict.fromkeys(("Pss", "Rss", "Private_Dirty"), 0)
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in found:
                    found[name] = int(rest.split()[0])
    except OSError:
        pass
    return found


def cmdline(pid: int) -> str:
    """The process's name and command line: `bus up` forks its ingress and workers, which keep its
    command line and name themselves (bus/up_fork.py)."""
    try:
        parts = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"
    return f"[{name}] " + " ".join(p.decode(errors="replace") for p in parts if p)[:90]


class Side:
    """A process tree rooted at the process `start()` spawns as `role` in the cluster."""

    name = "?"
    role = "?"
    http_port = forward_port = 0

    def __init__(self, cluster: Cluster):
        self.cluster = cluster

    def paths(self) -> str:
        """The HTTP paths of the 6 tags, as bench.loadgen --keyed takes them."""
        return ",".join(f"/{t}" for t in TAGS)

    @property
    def root(self) -> int:
        proc = self.cluster.roles.get(self.role)
        if proc is None or proc.poll() is not None:
            raise BenchError(f"{self.name} is not running")
        return proc.pid

    def pids(self) -> list[int]:
        return stats.tree(self.root)

    def cpu(self) -> float:
        """CPU seconds of the whole tree so far (the root's reaped children included)."""
        root = self.root
        return sum(stats.tree_cpu(self.pids(), root).values())

    def memory(self) -> dict:
        rows = []
        for pid in self.pids():
            kib = smaps_kib(pid)
            rows.append({"pid": pid, "cmd": cmdline(pid), "pss_mib": round(kib["Pss"] / 1024, 1),
                         "rss_mib": round(kib["Rss"] / 1024, 1), "private_mib": round(kib["Private_Dirty"] / 1024, 1)})
        return {"pss_mib": round(sum(r["pss_mib"] for r in rows), 1),
                "rss_mib": round(sum(r["rss_mib"] for r in rows), 1), "processes": rows}

    def kill_all(self) -> None:
        """SIGKILL to every process of the tree at once, as a power cut would stop them."""
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc = self.cluster.roles.pop(self.role)
        proc.wait(10)
        wait_until(lambda: not any(_alive(p) for p in pids), 20,
                   f"every process of {self.name} to die")

    def stop(self) -> None:
        """SIGTERM to the root, then SIGKILL to whatever of the tree is left (bus up's children run in
        sessions of their own, so the cluster's process-group kill would not reach them)."""
        proc = self.cluster.roles.get(self.role)
        if proc is None or proc.poll() is not None:
            return
        pids = stats.tree(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.cluster.stop(self.role, grace=5)


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent that was killed with it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class BusUp(Side):
    """`bus up` with one route (the repo's routes/api.toml, pointed at the receiver), Flower off: the
    whole tree a user runs. Its ./var lives in the run's temp dir and survives a kill."""

    name = "bus"
    role = "bus-up"

    def __init__(self, cluster: Cluster, env: dict[str, str] | None = None):
        super().__init__(cluster)
        self.http_port, self.forward_port, self.redis_port = free_port(), free_port(), free_port()
        # Settings for the tree (BUS_HOT_WINDOW for bench.archive_tree): the cluster strips BUS_* from its own.
        self.env = dict(env or {})
        self.var = cluster.tmp / "bus-var"
        self.routes = cluster.tmp / "bus-routes"
        self.starts = 0

    def start(self) -> None:
        self.routes.mkdir(exist_ok=True)
        route = (REPO / "routes" / "api.toml").read_text()
        if "http://127.0.0.1:8000/" not in route:
            raise BenchError("routes/api.toml no longer points at http://127.0.0.1:8000/; update bench/sides.py")
        (self.routes / "api.toml").write_text(
            route.replace("http://127.0.0.1:8000/", f"http://127.0.0.1:{self.cluster.receiver_port}/"))
        self.starts += 1
        log = self.cluster.tmp / f"{self.role}.log"
        ready_before = self.cluster.log(self.role).count(" ready.")
        self.cluster.spawn(self.role, [PY, "-m", "bus", "up", "--bind", f"127.0.0.1:{self.http_port}",
                                       "--forward", f"127.0.0.1:{self.forward_port}",
                                       "--redis-port", str(self.redis_port), "--flower-port", "0"],
                           env={**self.env, "BUS_VAR": str(self.var), "BUS_ROUTES": str(self.routes),
                                "BUS_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0"}, cwd=self.cluster.tmp)

        def ready() -> bool:
            if self.cluster.roles[self.role].poll() is not None:
                raise BenchError(f"bus up exited:\n{log.read_text(errors='replace')[-3000:]}")
            if self.cluster.log(self.role).count(" ready.") <= ready_before or not connects(self.forward_port):
                return False
            try:
                return http_get(self.http_port, "/healthz")[0] == 200
            except OSError:
                return False

        wait_until(ready, 120, "bus up (ingress, forward listener and worker) to be ready", interval=0.1)
