"""BUS_REDIS_SHARDS, a route's `shard` and BUS_WORKER_SHARD: what is taken, and the clear errors for what is not."""
from __future__ import annotations

import pytest

from bus import settings, shard_workers
from bus.broker.celery_checks import check_shard
from bus.errors import ConfigError, RouteError
from bus.routes import load_configured
from bus.shards import Shards, for_reading

A = "redis://127.0.0.1:7001/0"


def routes(tmp_path, **shards: str | None):
    folder = tmp_path / "routes"
    folder.mkdir(exist_ok=True)
    for name, shard in shards.items():
        line = f'shard = "{shard}"\n' if shard else ""
        (folder / f"{name}.toml").write_text(f'match = "{name}.*"\nendpoint = "http://svc.example/{name}"\n{line}')
    return folder


def test_shards_are_read_in_order_after_the_default_and_each_names_its_redis():
    config = settings.load({"BUS_REDIS_URL": A, "BUS_REDIS_SHARDS": " b=redis://127.0.0.1:7002/0 , c=redis://h3:6379/1"})
    assert config.shard_names == ("default", "b", "c")
    assert config.shard("default").url == A and config.shard("c").url == "redis://h3:6379/1"
    assert config.worker_redis.url == A


def test_a_sentinel_shard_takes_its_own_primary_name():
    config = settings.load({"BUS_REDIS_URL": A, "BUS_REDIS_SHARDS": "b=sentinel://s1:26379;sentinel://s2:26379/0",
                            "BUS_REDIS_SENTINEL_MASTER_B": "primary-b"})
    target = config.shard("b")
    assert target.sentinels == (("s1", 26379), ("s2", 26379)) and target.master == "primary-b"


def test_a_worker_shard_makes_that_shard_its_redis():
    config = settings.load({"BUS_REDIS_URL": A, "BUS_REDIS_SHARDS": "b=redis://127.0.0.1:7002/0",
                            "BUS_WORKER_SHARD": "b"})
    assert config.worker_redis.url == "redis://127.0.0.1:7002/0"


@pytest.mark.parametrize("raw, says", [
    ("b", "'b' is not name=URL"),
    ("b=", "is not name=URL"),
    ("b c=redis://h:1/0", "shard name 'b c'"),
    ("default=redis://h:1/0", "'default' is BUS_REDIS_URL's shard"),
    ("b=redis://h:1/0,b=redis://h:2/0", "shard 'b' is named twice"),
    ("b=http://h:1/0", r"BUS_REDIS_SHARDS \(b\)='http://h:1/0' is not a Redis URL"),
    (f"b={A}", "shard 'b' is the same Redis as BUS_REDIS_URL"),
    ("b=redis://h:1/0,c=redis://H:1/0", "shard 'c' is the same Redis as shard 'b'"),
])
def test_a_malformed_shard_list_stops_start_up_naming_the_setting(raw, says):
    with pytest.raises(ConfigError, match=says):
        settings.load({"BUS_REDIS_URL": A, "BUS_REDIS_SHARDS": raw})


def test_a_worker_shard_that_is_not_configured_is_refused():
    with pytest.raises(ConfigError, match=r"BUS_WORKER_SHARD='x' is not a shard; shards are default"):
        settings.load({"BUS_REDIS_URL": A, "BUS_WORKER_SHARD": "x"})


def test_a_route_on_an_unknown_shard_is_refused_naming_its_file_and_the_fix(tmp_path):
    folder = routes(tmp_path, api=None, orders="eu")
    config = settings.load({"BUS_REDIS_URL": A, "BUS_ROUTES": str(folder), "BUS_REDIS_SHARDS": "us=redis://h:1/0"})
    with pytest.raises(RouteError, match=r"orders.toml: key 'shard': 'eu' is not in BUS_REDIS_SHARDS \(shards: us\); "
                                         r"add eu=redis://HOST:PORT/DB"):
        load_configured(config)


def test_a_bad_shard_value_in_a_route_is_refused(tmp_path):
    folder = routes(tmp_path, api="no such")
    with pytest.raises(RouteError, match="key 'shard': expected the name of a shard"):
        load_configured(settings.load({"BUS_REDIS_URL": A, "BUS_ROUTES": str(folder)}))


def test_routes_without_shard_live_on_the_default_and_workers_split_by_shard(tmp_path):
    folder = routes(tmp_path, a1=None, b1="b", a2="default", b2="b")
    config = settings.load({"BUS_REDIS_URL": A, "BUS_ROUTES": str(folder), "BUS_REDIS_SHARDS": "b=redis://h:1/0"})
    router = load_configured(config)
    groups = shard_workers.by_shard(router.routes)
    assert {shard: [r.name for r in rs] for shard, rs in groups.items()} == {"default": ["a1", "a2"], "b": ["b1", "b2"]}
    readers = for_reading(config, router.routes)
    assert isinstance(readers, Shards) and list(readers.clients) == ["default", "b"]
    assert readers.name_of("b2") == "b" and readers.name_of("gone") == "default"


def test_a_worker_consuming_a_route_of_another_shard_is_refused(tmp_path):
    folder = routes(tmp_path, a1=None, b1="b")
    config = settings.load({"BUS_REDIS_URL": A, "BUS_ROUTES": str(folder), "BUS_REDIS_SHARDS": "b=redis://h:1/0"})
    router = load_configured(config)
    check_shard(["bus.a1"], router, "default")
    with pytest.raises(ConfigError, match="route b1 lives on shard b but this worker's broker is shard default"):
        check_shard(["bus.a1", "bus.b1"], router, "default")


def test_bus_up_runs_one_redis_and_refuses_shards(monkeypatch, capsys, tmp_path):
    from bus import cli

    monkeypatch.setenv("BUS_REDIS_SHARDS", "b=redis://127.0.0.1:7002/0")
    monkeypatch.setenv("BUS_VAR", str(tmp_path / "var"))
    assert cli.main(["up"]) == 1
    assert "bus up runs one Redis of its own, and BUS_REDIS_SHARDS is set" in capsys.readouterr().err
    assert not (tmp_path / "var").exists()  # refused before anything started
