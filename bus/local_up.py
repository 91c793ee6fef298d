"""The record of the `bus up` running with a ./var: its Redis URL and pid, so commands from another shell reach it.

`bus up` runs its own Redis on 6380 so as not to touch a system Redis on 6379, but a second shell
has no BUS_REDIS_URL: `bus emit`, `bus events` and `bus stats` talked to the system Redis, where
nothing delivers. `bus up` writes var/bus-up.json once everything answers and removes it when it
stops; a record whose process is gone (bus up killed with -9) is ignored, with a note, so no
command is ever sent to a dead port on the word of a stale file.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson

from . import settings

RECORD = "bus-up.json"


@dataclass(frozen=True)
class Recorded:
    redis_url: str
    pid: int
    path: Path
    alive: bool


def write(var_dir: Path, redis_url: str) -> Path:
    """Record this process as the `bus up` of var_dir; written whole or not at all."""
    path = var_dir / RECORD
    part = path.with_name(f".{RECORD}.{os.getpid()}")
    part.write_bytes(orjson.dumps({"redis_url": redis_url, "pid": os.getpid()}))
    part.replace(path)
    return path


def remove(var_dir: Path) -> None:
    """Remove the record if it is still this process's (a later `bus up` may have replaced it)."""
    found = read(var_dir)
    if found is not None and found.pid == os.getpid():
        found.path.unlink(missing_ok=True)


def read(var_dir: Path) -> Recorded | None:
    """The recorded `bus up`, alive or not; None when there is no readable record."""
    path = var_dir / RECORD
    try:
        data = orjson.loads(path.read_bytes())
        url, pid = str(data["redis_url"]), int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Recorded(url, pid, path, _is_bus_up(pid))


def _is_bus_up(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: alive, and /proc below tells what it runs
    try:
        # A pid may be reused, and a killed but unreaped `bus up` is a zombie with an empty cmdline.
        return b"bus" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc (macOS): the pid answering is all we can know


def adopt(config: settings.Settings, prog: str) -> settings.Settings:
    """Without BUS_REDIS_URL, the settings for the Redis of the live `bus up` of config.var_dir, said on stderr.

    The URL is put in the environment of the whole process: `bus worker` hands over to Celery, and
    Celery's settings, its pool processes and the deliver task read it again themselves."""
    if config.redis_url_given:
        return config
    found = read(config.var_dir)
    if found is None:
        return config
    if not found.alive:
        print(f"{prog}: ignoring {found.path}: the `bus up` (pid {found.pid}) that wrote it is no longer running; "
              f"using {config.redis_url} (set BUS_REDIS_URL to choose)", file=sys.stderr)
        return config
    print(f"{prog}: BUS_REDIS_URL is unset: using {found.redis_url}, the Redis of `bus up` (pid {found.pid}, "
          f"recorded in {found.path})", file=sys.stderr)
    os.environ["BUS_REDIS_URL"] = found.redis_url
    return settings.load()
