"""Keys an earlier version wrote and nothing reads any more go once a worker connects after an upgrade."""
from __future__ import annotations

from bus import journal
from conftest import ROUTES, Receiver, bus_env, start_worker, wait_until


def old_install(client) -> None:
    """What a Redis written before 0975d0c still holds: every event id in bus:all and bus:route:<r>:all."""
    client.zadd("bus:all", {"e1": 1.0, "e2": 2.0})
    client.zadd("bus:route:api:all", {"e1": 1.0})
    client.zadd("bus:route:old:all", {"e2": 2.0})
    client.hincrby(journal.COUNTERS, "accepted:api", 1)
    client.hincrby(journal.COUNTERS, "dead:old", 1)
    client.zadd(journal.index_key(journal.QUEUED, "api"), {"e1": 1.0})


def test_forget_retired_unlinks_the_old_all_sets_and_nothing_in_use(own_redis):
    client = own_redis.client()
    old_install(client)
    assert journal.forget_retired(client) == 3
    assert not client.exists("bus:all", "bus:route:api:all", "bus:route:old:all")
    assert client.zscore(journal.index_key(journal.QUEUED, "api"), "e1") == 1.0, "a current index is kept"
    assert client.hget(journal.COUNTERS, "accepted:api") == b"1"
    assert journal.forget_retired(client) == 0, "once gone there is nothing to do"


def test_a_worker_connecting_to_an_upgraded_redis_removes_them(own_redis, tmp_path):
    client = own_redis.client()
    old_install(client)
    receiver = Receiver()
    receiver.start()
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "api.toml").write_text(ROUTES["api.toml"].format(receiver=receiver.url))
    worker = start_worker(bus_env(own_redis.url, routes), tmp_path / "worker.log", "api")
    try:
        wait_until(lambda: not client.exists("bus:all", "bus:route:api:all", "bus:route:old:all"), 20,
                   what="the worker to remove the retired index sets")
        assert client.hget(journal.COUNTERS, "accepted:api") == b"1"
    finally:
        worker.stop()
        receiver.stop()
