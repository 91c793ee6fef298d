"""Work-arounds for kombu Redis transport bugs that the fault tests hit, applied when the Celery app loads."""
from __future__ import annotations

import redis
from kombu.transport import redis as kombu_redis

_connparams = kombu_redis.Channel._connparams
_create_client = kombu_redis.Channel._create_client


def _connparams_of_a_live_channel(self: kombu_redis.Channel, asynchronous: bool = False) -> dict:
    # After a lost broker connection Celery tears the old channel down (transport.client = None)
    # while acks, rejects and the hand-back of unacked tasks for messages of that channel still
    # arrive. Each needs a connection pool, which kombu then rebuilds from the dead channel and
    # dies with AttributeError. Nobody expects that error: the consumer stops with "Unrecoverable
    # error" and the worker hangs without consuming (Redis kill -9 fault test, about one run in
    # five). Raise the connection error kombu and Celery already handle: they log it, and the
    # task stays in the unacked hash for the visibility timeout to restore.
    if self.connection is None or self.connection.client is None:
        raise redis.ConnectionError("kombu channel used after its broker connection was closed")
    return _connparams(self, asynchronous=asynchronous)


def _one_client_per_pool(self: kombu_redis.Channel, asynchronous: bool = False) -> redis.Redis:
    # kombu makes a new redis.Redis for every publish, ack and unacked-hash write
    # (conn_or_acquire); redis-py's __init__ builds a ~100-entry callbacks dict each time:
    # 17 % of a worker's main process in the profile (docs/performance.md). A client is only
    # a handle on the channel's pool, so one per pool serves them all; a new pool (after a
    # reconnect) gets a new client.
    if asynchronous:
        return _create_client(self, asynchronous=True)
    pool = self.pool
    client = self.__dict__.get("_bus_client")
    if client is None or client.connection_pool is not pool:
        client = self.__dict__["_bus_client"] = _create_client(self)
    return client


def apply() -> None:
    kombu_redis.Channel._connparams = _connparams_of_a_live_channel
    kombu_redis.Channel._create_client = _one_client_per_pool
