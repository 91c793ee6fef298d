"""The Celery app: `celery -A bus ...` finds it here; it reads ./celeryconfig.py or BUS_CELERY_CONFIG."""
from __future__ import annotations

import gc
import importlib.util
import logging
import os
import stat
import sys
from pathlib import Path

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger, celeryd_after_setup, worker_init
from celery.utils.log import get_multiprocessing_logger

from . import local_up, logs, settings
from .broker import celery_checks, kombu_fixes, versions
from .errors import ConfigError, Unavailable, UnsupportedKombu
from .worker.recovery import RecoverLostTasks

app = Celery("bus", include=["bus.worker.delivery", "bus.worker.scheduler", "bus.worker.leases", "bus.archive.launch"])


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_format(logger: logging.Logger, **_: object) -> None:
    # Celery builds its handlers itself; BUS_LOG_FORMAT=json swaps their formatter afterwards.
    # billiard's logger (pool processes exiting, e.g. "exited with signal 15" at a stop) does not
    # propagate and gets handlers of its own, so it is switched too.
    log_format = settings.load().log_format
    logs.use_format(logger, log_format)
    logs.use_format(get_multiprocessing_logger(), log_format)


@celeryd_after_setup.connect
def _refuse_a_worker_that_would_deliver_nothing(instance: object, conf: object, **_: object) -> None:
    # Runs once -Q is applied, before the worker connects. Celery logs and swallows exceptions from
    # signal handlers, so the refusal is printed here and the worker stopped with SystemExit.
    from .routes import load_configured

    config = settings.load()
    try:
        celery_checks.check_broker(conf, config.worker_redis.url, config.worker_shard)
        consumed = instance.app.amqp.queues.consume_from  # type: ignore[attr-defined]
        celery_checks.check_queues(consumed, celery_checks.route_names(lambda: load_configured(config)))
        router = celery_checks.routes_or_none(lambda: load_configured(config))
        celery_checks.check_shard(consumed, router, config.worker_shard)
        _check_fanout_layout(router, config)
    except ConfigError as exc:
        print(f"celery worker: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def _check_fanout_layout(router: object, config: settings.Settings) -> None:
    """celery_checks.check_fanout_layout against the worker's Redis; a Redis that does not answer now is
    left to the worker's own connection handling."""
    from . import journal

    client = journal.connect(config.worker_redis, config.redis_timeout)
    try:
        celery_checks.check_fanout_layout(router, lambda route: journal.backlog(client, route))
    except Unavailable:
        return
    finally:
        client.close()


def _config_module() -> object:
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
        return "bus.celery_defaults"
    _check_owner(path)
    spec = importlib.util.spec_from_file_location("celeryconfig", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["celeryconfig"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _check_owner(path: Path) -> None:
    info = path.stat()
    if info.st_uid not in (0, os.getuid()) or info.st_mode & stat.S_IWOTH:
        raise ConfigError(f"{path.resolve()}: refusing to load Celery settings that another user owns or may "
                          f"write (owner uid {info.st_uid}, mode {stat.filemode(info.st_mode)}); run "
                          f"'chmod o-w {path}', or point BUS_CELERY_CONFIG at the file you mean")


# `celery -A bus flower` (or worker, inspect) typed in the directory of a running `bus up` reaches
# its Redis as the `bus` commands do, not a system Redis on 6379 (local_up.py). Before the
# settings below read BUS_REDIS_URL.
local_up.adopt(settings.load(), "celery")
app.config_from_object(_config_module())
try:
    # Before patching: a kombu whose private methods changed would take the patches wrongly (broker/versions.py).
    versions.check()
except UnsupportedKombu as exc:
    # Raised while `celery -A bus ...` or `bus worker` loads the app: the message alone, not a traceback.
    raise SystemExit(f"bus: {exc}") from None
kombu_fixes.apply()
celery_checks.refuse_purging_bus_queues()
# Runs at every (re)connection of a worker: requeues tasks kombu lost in a crash (recovery.py).
app.steps["consumer"].add(RecoverLostTasks)


@worker_init.connect
def _share_the_imports_with_the_pool(**_: object) -> None:
    # Right before the prefork pool forks: everything imported so far goes to the collector's
    # permanent generation, so a pool process's collections never write into (and copy) the pages
    # it shares with the worker's main process (docs/performance.md, fifth round).
    gc.freeze()

