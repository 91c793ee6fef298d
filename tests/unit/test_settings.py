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


# The settings where 0 turns something off, each with its default and what it reads as when off.
OFF = {
    "BUS_POOL_RECYCLE_IDLE": (lambda c: c.pool_recycle_idle, 30.0, 0.0),
    "BUS_FORWARD_IDLE_TIMEOUT": (lambda c: c.forward.idle_timeout, None, None),  # None: never closed
}


@pytest.mark.parametrize("name", OFF)
def test_a_setting_where_0_means_off_reads_its_default_a_number_of_seconds_and_every_spelling_of_0(name):
    read, default, off = OFF[name]
    assert read(settings.load({})) == read(settings.load({name: ""})) == default
    assert read(settings.load({name: "90"})) == 90.0
    assert read(settings.load({name: "2.5"})) == 2.5
    for zero in ("0", "0.0", " 0 ", "00"):
        assert read(settings.load({name: zero})) == off, zero


@pytest.mark.parametrize("name", OFF)
@pytest.mark.parametrize("bad", ["soon", "-1", "-0.5", "inf", "nan", "1e999", "30s"])
def test_a_bad_value_of_a_setting_where_0_means_off_names_it_the_value_and_what_is_accepted(name, bad):
    with pytest.raises(ConfigError) as caught:
        settings.load({name: bad})
    assert str(caught.value) == f"{name}={bad!r} is not a number of seconds; give a positive number, or 0 to turn it off"


@pytest.mark.parametrize("env, says", [
    # The HTTP and forward limits: a bad value refused, naming the variable and the value.
    ({"BUS_HTTP_READ_TIMEOUT": "soon"}, "BUS_HTTP_READ_TIMEOUT='soon' is not a number"),
    ({"BUS_HTTP_READ_TIMEOUT": "0"}, "BUS_HTTP_READ_TIMEOUT='0' must be a positive"),
    ({"BUS_HTTP_READ_TIMEOUT": "inf"}, "BUS_HTTP_READ_TIMEOUT='inf' must be a positive, finite"),
    ({"BUS_HTTP_READ_TIMEOUT": "nan"}, "BUS_HTTP_READ_TIMEOUT='nan' must be a positive, finite"),
    ({"BUS_HTTP_MAX_CONNECTIONS_PER_CLIENT": "-1"}, "BUS_HTTP_MAX_CONNECTIONS_PER_CLIENT='-1' must be a positive"),
    ({"BUS_HTTP_MAX_CONNECTIONS_PER_CLIENT": "2.5"}, "BUS_HTTP_MAX_CONNECTIONS_PER_CLIENT='2.5' is not a number"),
    ({"BUS_FORWARD_MAX_CONNECTIONS_PER_CLIENT": "0"}, "BUS_FORWARD_MAX_CONNECTIONS_PER_CLIENT='0' must be a positive"),
    # Settings where 0 is not off but refused, naming the variable, the value and what is accepted.
    ({"BUS_HOT_WINDOW": "0"}, "BUS_HOT_WINDOW='0' must be more than 0 seconds and at most a day (24h)"),
    ({"BUS_IDEMPOTENCY_WINDOW": "0"}, "BUS_IDEMPOTENCY_WINDOW='0' is under 1 s"),
    ({"BUS_CONNECTION_MAX_AGE": "0"}, "BUS_CONNECTION_MAX_AGE='0' must be a positive, finite number"),
    ({"BUS_ACK_REPLICAS": "-1"}, "BUS_ACK_REPLICAS='-1' is not a whole number of 0 or more"),
])
def test_bad_limits_and_a_0_where_0_is_not_off_are_refused_naming_the_variable_and_the_value(env, says):
    with pytest.raises(ConfigError, match=re.escape(says)):
        settings.load(env)


def test_settings_where_0_is_a_value_of_their_own_take_it():
    assert settings.load({"BUS_ACK_REPLICAS": "0"}).ack_replicas == 0  # no replica waited for
    assert settings.load({"BUS_ACK_REPLICAS": "2"}).ack_replicas == 2
    assert settings.load({"BUS_IDEMPOTENCY_WINDOW": "24h"}).idempotency_window == 86400
    assert settings.load({"BUS_CONNECTION_MAX_AGE": "30"}).outbound.connection_max_age == 30.0
