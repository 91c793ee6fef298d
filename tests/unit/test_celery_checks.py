"""The start-up checks of celery_checks.py: a worker that would deliver nothing, a broker that is not the journal."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from bus.broker.celery_checks import check_broker, check_queues
from bus.errors import ConfigError


def conf(broker: str, read: str | None = None, write: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(broker_url=broker, broker_read_url=read or broker, broker_write_url=write or broker)


@pytest.mark.parametrize("same", ["redis://127.0.0.1:6380", "redis://127.0.0.1:6380/", "redis://:pw@127.0.0.1:6380/0",
                                  "redis://127.0.0.1:6380/0?socket_timeout=5"])
def test_the_same_redis_written_another_way_is_no_mismatch(same):
    check_broker(conf(same), "redis://127.0.0.1:6380/0")


@pytest.mark.parametrize("other", ["redis://127.0.0.1:6379/0", "redis://127.0.0.1:6380/1", "redis://10.0.0.1:6380/0"])
def test_another_redis_or_database_is_refused_naming_both_without_passwords(other):
    with pytest.raises(ConfigError) as refused:
        check_broker(conf(other.replace("//", "//:secret@")), "redis://127.0.0.1:6380/0")
    assert "BUS_REDIS_URL is redis://127.0.0.1:6380/0" in str(refused.value)
    assert "secret" not in str(refused.value)


def test_a_read_or_write_broker_elsewhere_is_refused_too():
    with pytest.raises(ConfigError, match="broker_write_url"):
        check_broker(conf("redis://h:6379/0", write="redis://other:6379/0"), "redis://h:6379/0")


def test_sentinel_urls_are_compared_as_written():
    url = "sentinel://h1:26379;sentinel://h2:26379/0"
    check_broker(conf(url), url)
    with pytest.raises(ConfigError):
        check_broker(conf("sentinel://h1:26379/0"), url)


def test_a_worker_needs_a_bus_queue_and_is_told_the_route_queues():
    check_queues(["bus.api"], ["api"])
    check_queues(["celery", "bus.api"], ["api"])
    with pytest.raises(ConfigError, match=r"-Q bus\.api,bus\.audit .*`bus worker \[ROUTE\.\.\.\]`"):
        check_queues(["celery"], ["api", "audit"])
    with pytest.raises(ConfigError, match=r"-Q bus\.<route>"):
        check_queues(["celery"], None)
