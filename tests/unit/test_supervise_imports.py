"""What `bus up`'s supervisor loads: it runs for as long as the bus does, so each module it imports is memory the
whole tree carries (docs/performance.md, issue 22)."""
from __future__ import annotations

import subprocess
import sys

from bus import supervise


def test_the_supervisor_loads_neither_the_signal_wrapper_nor_json():
    # As `bus up` runs it, in python -I -S; what its own code loads (not the interpreter's start-up).
    code = ("import sys; before = set(sys.modules); path = sys.argv[1]\n"
            "exec(compile(open(path).read(), path, 'exec'), {'__name__': 'supervise'})\n"
            "print(' '.join(sorted(set(sys.modules) - before)))")
    shown = subprocess.run([sys.executable, "-I", "-S", "-c", code, supervise.__file__], capture_output=True,
                           text=True, timeout=30, check=True)
    loaded = set(shown.stdout.split())
    assert not loaded & {"signal", "enum", "json", "re", "functools"}
