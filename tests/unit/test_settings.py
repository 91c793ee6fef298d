"""Listener settings from the environment (forward and HTTP): secrets from variables or files, limits checked."""
from __future__ import annotations

import re

import pytest

from bus import settings
from bus.errors import ConfigError


def test_forward_defaults_have_no_handshake_and_no_idle_timeout():
    forward = settings.load({}).forward
    assert forward.shared_key is None and forward.idle_timeout is None
    assert forward.read_timeout == 30 and forward.self_hostname


def test_shared_key_and_password_come_from_a_variable_or_a_file(tmp_path):
    (tmp_path / "key").write_text("from-file\n")
    (tmp_path / "pw").write_text("pw-file")
    forward = settings.load({"BUS_FORWARD_SHARED_KEY_FILE": str(tmp_path / "key"), "BUS_FORWARD_USERNAME": "u",
                             "BUS_FORWARD_PASSWORD_FILE": str(tmp_path / "pw"), "BUS_FORWARD_IDLE_TIMEOUT": "2.5",
                             "BUS_FORWARD_SELF_HOSTNAME": "bus-1"}).forward
    assert (forward.shared_key, forward.username, forward.password) == ("from-file", "u", "pw-file")
    assert (forward.idle_timeout, forward.self_hostname) == (2.5, "bus-1")
    assert settings.load({"BUS_FORWARD_SHARED_KEY": "k"}).forward.shared_key == "k"


@pytest.mark.parametrize("env, says", [
    ({"BUS_FORWARD_SHARED_KEY": "a", "BUS_FORWARD_SHARED_KEY_FILE": "/x"}, "keep one"),
    ({"BUS_FORWARD_SHARED_KEY_FILE": "/nonexistent/key"}, "cannot be read"),
    ({"BUS_FORWARD_USERNAME": "u", "BUS_FORWARD_PASSWORD": "p"}, "needs BUS_FORWARD_SHARED_KEY"),
    ({"BUS_FORWARD_SHARED_KEY": "k", "BUS_FORWARD_USERNAME": "u"}, "both BUS_FORWARD_USERNAME and BUS_FORWARD_PASSWORD"),
    ({"BUS_FORWARD_READ_TIMEOUT": "soon"}, "not a number"),
])
def test_inconsistent_forward_settings_are_refused(env, says):
    with pytest.raises(ConfigError, match=says):
        settings.load(env)


def test_http_limits_default_to_30_seconds_and_256_connections_per_client():
    http = settings.load({}).http
    assert (http.read_timeout, http.max_connections_per_client) == (30.0, 256)
    http = settings.load({"BUS_HTTP_READ_TIMEOUT": "2.5", "BUS_HTTP_MAX_CONNECTIONS_PER_CLIENT": "3"}).http
    assert (http.read_timeout, http.max_connections_per_client) == (2.5, 3)


def test_forward_connections_per_client_default_to_256():
    assert settings.load({}).forward.max_connections_per_client == 256
    assert settings.load({"BUS_FORWARD_MAX_CONNECTIONS_PER_CLIENT": "4"}).forward.max_connections_per_client == 4


@pytest.mark.parametrize("env, says", [
    ({"BUS_HTTP_READ_TIMEOUT": "soon"}, "BUS_HTTP_READ_TIMEOUT='soon' is not a number"),
    ({"BUS_HTTP_READ_TIMEOUT": "0"}, "BUS_HTTP_READ_TIMEOUT='0' must be a positive"),
    ({"BUS_HTTP_READ_TIMEOUT": "inf"}, "BUS_HTTP_READ_TIMEOUT='inf' must be a positive, finite"),
    ({"BUS_HTTP_READ_TIMEOUT": "nan"}, "BUS_HTTP_READ_TIMEOUT='nan' must be a positive, finite"),
    ({"BUS_HTTP_MAX_CONNECTIONS_PER_CLIENT": "-1"}, "BUS_HTTP_MAX_CONNECTIONS_PER_CLIENT='-1' must be a positive"),
    ({"BUS_HTTP_MAX_CONNECTIONS_PER_CLIENT": "2.5"}, "BUS_HTTP_MAX_CONNECTIONS_PER_CLIENT='2.5' is not a number"),
    ({"BUS_FORWARD_MAX_CONNECTIONS_PER_CLIENT": "0"}, "BUS_FORWARD_MAX_CONNECTIONS_PER_CLIENT='0' must be a positive"),
])
def test_bad_http_limits_are_refused_naming_the_variable(env, says):
    with pytest.raises(ConfigError, match=re.escape(says)):
        settings.load(env)


def test_redis_memory_settings_default_to_2gb_and_a_mark_at_0_9():
    loaded = settings.load({})
    assert (loaded.redis_maxmemory, loaded.redis_memory_high) == ("2gb", 0.9)
    loaded = settings.load({"BUS_REDIS_MAXMEMORY": "512MB", "BUS_REDIS_MEMORY_HIGH": "0.8"})
    assert (loaded.redis_maxmemory, loaded.redis_memory_high) == ("512mb", 0.8)


@pytest.mark.parametrize("env, says", [
    ({"BUS_REDIS_MAXMEMORY": "lots"}, "size in Redis's units"),
    ({"BUS_REDIS_MAXMEMORY": "0"}, "size in Redis's units"),
    ({"BUS_REDIS_MEMORY_HIGH": "90"}, "from 0 to 1"),
    ({"BUS_REDIS_MEMORY_HIGH": "0"}, "positive"),
])
def test_bad_redis_memory_settings_are_refused(env, says):
    with pytest.raises(ConfigError, match=says):
        settings.load(env)


def test_the_archive_defaults_to_a_sqlite_file_under_bus_var_and_a_two_minute_hot_window(tmp_path):
    config = settings.load({"BUS_VAR": str(tmp_path)})
    assert config.archive_url == f"sqlite:///{tmp_path / 'archive.sqlite3'}"
    assert config.hot_window == 120
    assert settings.load({"BUS_ARCHIVE_URL": "off"}).archive_url == ""
    assert settings.load({"BUS_HOT_WINDOW": "5s"}).hot_window == 5
    assert settings.load({"BUS_HOT_WINDOW": "1.5"}).hot_window == 1.5
    url = "postgresql://bus@db:5432/bus"
    assert settings.load({"BUS_ARCHIVE_URL": url}).archive_url == url


@pytest.mark.parametrize("env, says", [
    ({"BUS_ARCHIVE_URL": "mysql://db/bus"}, "BUS_ARCHIVE_URL='mysql://db/bus': use postgresql://"),
    ({"BUS_ARCHIVE_URL": "pgsql://bus:hunter2@db/bus"}, r"pgsql://\*\*\*@db/bus"),
    ({"BUS_ARCHIVE_URL": "sqlite://archive.db"}, "absolute path"),
    ({"BUS_ARCHIVE_URL": "postgresql://bus:hunter2@db/bus?sslmod=require"}, "invalid URI query parameter: \"sslmod\""),
    ({"BUS_HOT_WINDOW": "soon"}, "BUS_HOT_WINDOW='soon' is not a duration"),
    ({"BUS_HOT_WINDOW": "0"}, "more than 0 seconds"),
    ({"BUS_HOT_WINDOW": "2d"}, "at most a day"),
])
def test_bad_archive_settings_are_refused_naming_the_variable(env, says):
    with pytest.raises(ConfigError, match=says) as caught:
        settings.load(env)
    assert "hunter2" not in str(caught.value)


def test_the_pool_recycle_waits_30_seconds_by_default_and_0_turns_it_off():
    assert settings.load({}).pool_recycle_idle == 30.0
    assert settings.load({"BUS_POOL_RECYCLE_IDLE": "0"}).pool_recycle_idle == 0.0
    assert settings.load({"BUS_POOL_RECYCLE_IDLE": "90"}).pool_recycle_idle == 90.0
    with pytest.raises(ConfigError, match="BUS_POOL_RECYCLE_IDLE='soon' is not a number"):
        settings.load({"BUS_POOL_RECYCLE_IDLE": "soon"})
