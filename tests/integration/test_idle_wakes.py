"""An idle bus sleeps: `bus serve`'s threads block until something comes or a stop, and a worker's
main process wakes for its timers, not once a second; stopping stays prompt, the Date header exact.

Wake-ups are counted as the kernel counts them: a thread's voluntary context switches
(/proc/PID/task/TID/status), one per time it went to sleep.
"""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from bus import intake, settings
from bus.ingress.forward import ForwardServer

QUIET = 5.0  # seconds each count runs over


def switches(pid: int | str, tid: int) -> int:
    for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError(f"no voluntary_ctxt_switches for thread {tid} of {pid}")


def wakes_per_thread(pid: int, seconds: float) -> dict[int, int]:
    """Each thread's wake-ups over `seconds` (threads that start or end meanwhile are left out)."""
    tids = [int(p.name) for p in Path(f"/proc/{pid}/task").iterdir()]
    before = {tid: switches(pid, tid) for tid in tids}
    time.sleep(seconds)
    after = {}
    for tid in tids:
        try:
            after[tid] = switches(pid, tid) - before[tid]
        except FileNotFoundError:
            pass
    return after


def test_an_idle_forward_listener_never_wakes_and_stop_ends_its_threads_at_once(bus):
    server = ForwardServer(intake.load(settings.load(bus.env)), "127.0.0.1", 0).start()
    threads = [t for t in threading.enumerate() if t.name in ("forward-accept", "forward-heartbeat")]
    stopped_in = None
    try:
        assert len(threads) == 2
        time.sleep(0.5)  # both in their wait
        before = {t.name: switches("self", t.native_id) for t in threads}
        time.sleep(QUIET)
        woke = {t.name: switches("self", t.native_id) - before[t.name] for t in threads}
        assert woke == {"forward-accept": 0, "forward-heartbeat": 0}, "each blocks until a client or the stop"
        # Still serving from that wait: a heartbeat is answered, a connection accepted.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(5)
            udp.sendto(b"ping", server.address)
            assert udp.recvfrom(16)[0] == b"\x00"
        socket.create_connection(server.address, timeout=5).close()
    finally:
        started = time.monotonic()
        server.stop()
        stopped_in = time.monotonic() - started
    assert not any(t.is_alive() for t in threads)
    assert stopped_in < 2, f"stop() took {stopped_in:.1f}s: its threads were not woken"
