"""Numbers the bench reports: percentiles (pure) and per-process CPU and RSS read from /proc."""
from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0..100) with linear interpolation between closest ranks; None when empty."""
    if not values:
        return None
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def rate(count: int, seconds: float) -> float | None:
    return count / seconds if seconds > 0 and count else None


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    name: str
    cpu: float  # seconds of user+system CPU of this process (threads included)
    reaped_children_cpu: float  # CPU of children that exited and were waited for


def read_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    # The name sits in parentheses and may itself contain spaces or ')'.
    name = raw[raw.index("(") + 1:raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2:].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ProcStat(pid, int(fields[1]), name, (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK)


def read_rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return 0  # a zombie has no VmRSS line


# x86_64 numbers of the calls an idle thread waits in, to name where each thread sleeps.
WAITS = {0: "read", 7: "poll", 23: "select", 35: "nanosleep", 43: "accept", 45: "recvfrom", 61: "wait4",
         202: "futex", 230: "clock_nanosleep", 232: "epoll_wait", 270: "pselect6", 271: "ppoll",
         281: "epoll_pwait", 288: "accept4", 441: "epoll_pwait2"}


def command_calls(client: Any) -> dict[str, int]:
    """Calls per Redis command so far (INFO commandstats) by command name, from a redis.Redis client."""
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in client.info("commandstats").items()}


def thread_switches(pids: Iterable[int]) -> dict[tuple[int, int], int]:
    """Voluntary context switches so far per (pid, thread id): one per time a thread went to sleep,
    so their growth over a window counts its wake-ups, which CPU ticks are too coarse to see."""
    out = {}
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            out[(pid, tid)] = int(line.split()[1])
            except OSError:
                pass
    return out


def thread_wait(pid: int, tid: int) -> str:
    """The thread's name and the system call it is blocked in now (read /proc/.../syscall as root)."""
    base = f"/proc/{pid}/task/{tid}"
    try:
        name = Path(f"{base}/comm").read_text().strip()
        call = Path(f"{base}/syscall").read_text().split()[0]
    except (OSError, IndexError):
        return "?"
    return f"{name} in {WAITS.get(int(call), call) if call.isdigit() else call}"


def tree(root: int) -> list[int]:
    """`root` and all its live descendants (scanning /proc: children files need a kernel option)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = read_stat(int(entry))
            if st:
                children.setdefault(st.ppid, []).append(st.pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if os.path.exists(f"/proc/{pid}"):
            found.append(pid)
            todo.extend(children.get(pid, []))
    return found


def tree_cpu(pids: Iterable[int], root: int) -> dict[int, float]:
    """CPU seconds per live pid; the root also carries what its reaped children used."""
    out = {}
    for pid in pids:
        st = read_stat(pid)
        if st:
            out[pid] = st.cpu + (st.reaped_children_cpu if pid == root else 0.0)
    return out


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (from /proc/stat), to see how much others used."""
    with open("/proc/stat") as f:
        parts = f.readline().split()
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in parts[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def calibrate(redis_port: int, pings: int = 3000) -> dict:
    """How fast this machine is at the two things that bound the bus: a bare loopback round trip to
    Redis (no client library: the floor under one synchronous caller, e.g. one thread calling emit())
    and plain Python bytecode. Numbers from different machines compare only next to these."""
    import socket

    with socket.create_connection(("127.0.0.1", redis_port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(200):
            sock.sendall(b"PING\r\n")
            sock.recv(64)
        started = time.perf_counter()
        for _ in range(pings):
            sock.sendall(b"PING\r\n")
            sock.recv(64)
        ping = (time.perf_counter() - started) / pings
    started = time.perf_counter()
    total = 0
    for i in range(2_000_000):
        total += i
    loop = time.perf_counter() - started
    return {"redis_ping_us": round(ping * 1e6, 1), "bare_pings_per_s": round(1 / ping),
            "python_loop_mops": round(2 / loop, 1)}
