"""The Celery app: `celery -A bus ...` finds it here; it reads ./celeryconfig.py or BUS_CELERY_CONFIG."""
from __future__ import annotations

import gc
import logging
import sys

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger, celeryd_after_setup, worker_init
from celery.utils.log import get_multiprocessing_logger

from . import celery_config, local_up, logs, settings
from .broker import celery_checks, kombu_fixes, versions
from .errors import ConfigError, Unavailable, UnsupportedKombu
from .worker.beside_pool import BesideThePool
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


# `celery -A bus flower` (or worker, inspect) typed in the directory of a running `bus up` reaches
# its Redis as the `bus` commands do, not a system Redis on 6379 (local_up.py). Before the
# settings below read BUS_REDIS_URL.
local_up.adopt(settings.load(), "celery")
app.config_from_object(celery_config.config_module())
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
# Once the pool has forked, before the consumer: the lease thread.
app.steps["worker"].add(BesideThePool)


@worker_init.connect
def _share_the_imports_with_the_pool(**_: object) -> None:
    # Right before the prefork pool forks: everything imported so far goes to the collector's
    # permanent generation, so a pool process's collections never write into (and copy) the pages
    # it shares with the worker's main process (docs/performance.md, fifth round).
    gc.freeze()

