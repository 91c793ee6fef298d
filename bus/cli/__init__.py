"""The `bus` command: argument parsing and the commands (commands.py), the journal's commands `bus events`,
`bus replay`, `bus purge` (journal.py) and `bus proxy` (proxy.py). The top of the import graph: nothing in
the bus imports it but bus/__main__.py.

`main` is here because pyproject's entry point is `bus.cli:main`."""
from .commands import main

__all__ = ["main"]
