"""Celery settings the bus relies on; celeryconfig.py at the top level imports these and may override them."""
from typing import Any

from bus import settings as _settings

_s = _settings.load()

# A worker's broker is its shard's Redis (BUS_WORKER_SHARD, set by `bus worker`; BUS_REDIS_URL by default):
# the journal writes a route's task messages into its shard, in the same script as its events.
_target = _s.worker_redis
broker_url = _target.url
broker_transport_options: dict[str, Any] = {
    # Longer than one attempt (routes.py refuses routes whose timeouts break
    # this), so a running attempt is never handed to a second worker; short
    # enough that a task of a killed worker is redelivered within two minutes.
    # Retries do not wait as unacked ETA tasks (see backoff.py), so the retry
    # delay is not bounded by it.
    "visibility_timeout": _s.visibility_timeout,
    # kombu looks for messages older than the visibility timeout (those of a
    # killed worker) only on every 10th tick of a 10 s timer: every 100 s. With
    # the 110 s timeout a killed worker's events came back after up to 210 s.
    # Sweep every 5 s instead (one ZRANGE under a lock): back within
    # visibility_timeout + 5 s of the kill, once any worker runs.
    "unacked_restore_interval": 5,
    "unacked_restore_throttle": 1,
    # The sweep holds a lock in Redis; a worker killed while holding it would
    # stop every sweep until it expires (300 s by default). Restoring is safe
    # without it (a WATCH transaction per message), so keep the lock short.
    "unacked_mutex_expire": 30,
    "socket_timeout": 10,
    "socket_connect_timeout": 5,
}
if _target.sentinels:
    # kombu's Sentinel transport takes the Sentinels from the URL and the primary's name from here.
    broker_transport_options["master_name"] = _target.master
    if _s.redis_sentinel_password:
        broker_transport_options["sentinel_kwargs"] = {"password": _s.redis_sentinel_password}
broker_connection_retry_on_startup = True
broker_connection_max_retries = None

task_serializer = "json"
accept_content = ["json"]
task_ignore_result = True
# A task is acknowledged only after its attempt is journaled; a worker killed
# mid-request leaves it unacked, and losing the worker process rejects it back.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
worker_cancel_long_running_tasks_on_connection_loss = True

# Flower builds its task list from these events.
worker_send_task_events = True
