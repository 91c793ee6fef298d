"""supervise.terminate: how `bus up`'s supervisor stops a child (SIGTERM, a grace, then SIGKILL)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from bus import supervise


def _child(code: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"  # its handlers are set
    return proc


def test_a_child_that_stops_on_sigterm_is_reaped_and_counts_as_stopped():
    proc = _child("import time; print('ready', flush=True); time.sleep(60)")
    started = time.monotonic()
    assert supervise.terminate(proc.pid, 10) is True
    assert time.monotonic() - started < 5
    assert not os.path.exists(f"/proc/{proc.pid}")


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace():
    proc = _child("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
                  "time.sleep(60)")
    started = time.monotonic()
    assert supervise.terminate(proc.pid, 0.5) is False
    assert 0.5 <= time.monotonic() - started < 10
    assert not os.path.exists(f"/proc/{proc.pid}")

