"""Celery settings for the bus workers. The defaults the bus relies on come from
bus/celery_defaults.py; override any Celery setting below this line.

Keep task_acks_late and task_reject_on_worker_lost on: they are what makes a
killed worker's event come back instead of vanishing.
"""
from bus.celery_defaults import *  # noqa: F401,F403
