"""The Celery app: `celery -A bus ...` finds it here; it reads celeryconfig.py when one is importable."""
from __future__ import annotations

import importlib
import logging
import os
import sys

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger
from celery.utils.log import get_multiprocessing_logger

from . import kombu_fixes, logs, settings
from .recovery import RecoverLostTasks

app = Celery("bus", include=["bus.delivery", "bus.scheduler"])


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_format(logger: logging.Logger, **_: object) -> None:
    # Celery builds its handlers itself; BUS_LOG_FORMAT=json swaps their formatter afterwards.
    # billiard's logger (pool processes exiting, e.g. "exited with signal 15" at a stop) does not
    # propagate and gets handlers of its own, so it is switched too.
    log_format = settings.load().log_format
    logs.use_format(logger, log_format)
    logs.use_format(get_multiprocessing_logger(), log_format)


def _config_module() -> str:
    # The top-level celeryconfig.py is what users edit; running outside the
    # checkout (an installed package) falls back to the bundled defaults.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        importlib.import_module("celeryconfig")
        return "celeryconfig"
    except ModuleNotFoundError:
        return "bus.celery_defaults"


app.config_from_object(_config_module())
kombu_fixes.apply()
# Runs at every (re)connection of a worker: requeues tasks kombu lost in a crash (recovery.py).
app.steps["consumer"].add(RecoverLostTasks)
