"""Work-arounds for kombu Redis transport bugs that the fault tests hit, and its idle polling, applied when the
Celery app loads."""
from __future__ import annotations

import time

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

_connparams = kombu_redis.Channel._connparams
_create_client = kombu_redis.Channel._create_client
_remove_from_indices = kombu_redis.QoS._remove_from_indices
_register_with_event_loop = kombu_redis.Transport.register_with_event_loop
# The Redis set of delivery tags this worker process holds unacked (bus:held:<worker>), once
# leases.start() has named it; None in every process that does not consume.
held_key: str | None = None


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


def _append_and_hold(self: kombu_redis.QoS, message: object, delivery_tag: str) -> None:
    # kombu's QoS.append (the unacked entry and its index), plus the tag in this worker's held set
    # in the same pipeline: a worker killed after it has no task unacked that its set does not
    # name, so leases.py can hand exactly those back when its lease lapses.
    delivery = message.delivery_info  # type: ignore[attr-defined]
    with self.pipe_or_acquire() as pipe:
        pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()})
        pipe.hset(self.unacked_key, delivery_tag, dumps([message._raw, delivery["exchange"],  # type: ignore[attr-defined]
                                                         delivery["routing_key"]]))
        if held_key is not None:
            pipe.sadd(held_key, delivery_tag)
        pipe.execute()
    virtual.QoS.append(self, message, delivery_tag)


def _remove_and_release(self: kombu_redis.QoS, delivery_tag: str, pipe: object = None) -> object:
    # Acked, rejected or restored: out of the held set in the same pipeline as out of unacked.
    pipe = _remove_from_indices(self, delivery_tag, pipe)
    if held_key is not None:
        pipe.srem(held_key, delivery_tag)  # type: ignore[attr-defined]
    return pipe


# kombu's consumer sends BRPOP with a 1 s server-side timeout, so an idle worker woke, re-registered
# its poller and sent BRPOP again every second (a quarter of an idle worker's wake-ups). A message
# pushed meanwhile answers a waiting BRPOP at once, so a longer timeout delays nothing; it stays
# under the broker socket_timeout (10 s, celery_defaults.py), and a half-open connection is still
# dropped after it plus health_check_interval. Set on the class rather than as the polling_interval
# transport option, which would also make every synchronous drain_events (Flower's event receiver)
# sleep that long between polls.
BRPOP_TIMEOUT = 5

# kombu's event loop looks every second whether a consumed queue's binding table is due for a refresh
# (every third of its lifetime, which is an hour at least: kombu_redis.MIN_BINDING_TTL) or the channel
# for a sweep of overdue tables (every BINDING_SWEEP_INTERVAL, 60 s). The bus's queues do not expire and
# the pidbox's tables live an hour, so the look found nothing to do but woke an idle worker's main
# process once a second, more than its other timers together (docs/performance.md, "what still wakes").
# Every 10 s a refresh comes at most 10 s after it is due, against a lifetime of an hour.
BINDING_CHECK_EVERY = 10.0


def _binding_check_every_10_s(self: kombu_redis.Transport, connection: object, loop: object) -> None:
    _register_with_event_loop(self, connection, loop)
    cycle = self.cycle
    cycle._binding_expiry_tref.cancel()
    cycle._binding_expiry_tref = loop.call_repeatedly(  # type: ignore[attr-defined]
        BINDING_CHECK_EVERY, cycle.maybe_refresh_binding_expiry)


def apply() -> None:
    kombu_redis.Transport.brpop_timeout = BRPOP_TIMEOUT
    kombu_redis.Transport.register_with_event_loop = _binding_check_every_10_s
    kombu_redis.Channel._connparams = _connparams_of_a_live_channel
    kombu_redis.Channel._create_client = _one_client_per_pool
    kombu_redis.QoS.append = _append_and_hold
    kombu_redis.QoS._remove_from_indices = _remove_and_release
