"""Which Celery settings the bus runs with, and their broker URLs, found without importing Celery.

bus/celery.py hands config_module() to the Celery app; `bus serve` only needs the broker URLs that
app would use (to refuse one that is not the journal's Redis: celery_checks.check_broker), and
importing Celery, kombu and the app for that cost the ingress 5.5 MiB of PSS for as long as it ran
(docs/performance.md, issue 22). broker_urls() resolves them as Celery's Settings does.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import stat
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from . import settings
from .errors import ConfigError

DEFAULTS = "bus.celery_defaults"


@dataclass(frozen=True)
class BrokerUrls:
    broker_url: str | None
    broker_read_url: str | None
    broker_write_url: str | None


def config_module() -> ModuleType:
    """The Celery settings: BUS_CELERY_CONFIG's file, else ./celeryconfig.py, else the bundled defaults.

    The file is Python that every worker runs, so it is loaded by its path, never found on
    sys.path, and refused when another user owns it or anyone may write it (as ssh refuses
    a config file others can write; a group-writable one is left alone, as umask 002 makes
    them): `bus worker` run in a shared directory must not run a celeryconfig.py someone else
    left there."""
    explicit = settings.load().celery_config
    path = explicit or Path("celeryconfig.py")
    if not path.is_file():
        if explicit:
            raise ConfigError(f"BUS_CELERY_CONFIG={explicit}: no such file")
        return importlib.import_module(DEFAULTS)
    _check_owner(path)
    spec = importlib.util.spec_from_file_location("celeryconfig", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["celeryconfig"] = module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:
        # The user's file, not the bus: say where it broke in one line, not with the bus's traceback.
        sys.modules.pop("celeryconfig", None)
        raise ConfigError(f"{path.resolve()}: the Celery settings file failed to run: {_where(exc, path)}; fix it, "
                          f"or point BUS_CELERY_CONFIG at another file") from exc
    return module


def _where(exc: Exception, path: Path) -> str:
    """The error and the file's line it came from (a syntax error's own line, else the deepest frame in the file)."""
    line = exc.lineno if isinstance(exc, SyntaxError) else None
    if line is None:
        mine = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == path.resolve()]
        line = mine[-1].lineno if mine else None
    what = exc.msg if isinstance(exc, SyntaxError) else str(exc)
    return f"{type(exc).__name__}: {what}" + (f" (line {line})" if line else "")


def _check_owner(path: Path) -> None:
    info = path.stat()
    if info.st_uid not in (0, os.getuid()) or info.st_mode & stat.S_IWOTH:
        raise ConfigError(f"{path.resolve()}: refusing to load Celery settings that another user owns or may "
                          f"write (owner uid {info.st_uid}, mode {stat.filemode(info.st_mode)}); run "
                          f"'chmod o-w {path}', or point BUS_CELERY_CONFIG at the file you mean")


def _setting(module: ModuleType, *names: str) -> str | None:
    # Celery reads a setting under its name or its old upper-case name (BROKER_URL); the first set wins.
    for name in names:
        for spelled in (name, name.upper()):
            value = getattr(module, spelled, None)
            if value:
                return str(value)
    return None


def broker_urls(module: ModuleType | None = None) -> BrokerUrls:
    """The broker URLs a Celery app configured from `module` (config_module() by default) would use:
    CELERY_BROKER_URL and its read/write siblings from the environment first, as Celery's do."""
    module = config_module() if module is None else module
    url = os.environ.get("CELERY_BROKER_URL") or _setting(module, "broker_url", "broker_host")
    return BrokerUrls(
        broker_url=url,
        broker_read_url=os.environ.get("CELERY_BROKER_READ_URL") or _setting(module, "broker_read_url") or url,
        broker_write_url=os.environ.get("CELERY_BROKER_WRITE_URL") or _setting(module, "broker_write_url") or url,
    )
