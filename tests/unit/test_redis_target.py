"""BUS_REDIS_URL parsing and the question asked of a Sentinel (pure: no server)."""
from __future__ import annotations

import pytest

from bus.errors import ConfigError
from bus.wire.target import _Exchange, parse

ADDRESS = b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6390\r\n"


def test_kombus_sentinel_form_names_every_sentinel_the_database_and_the_primarys_password():
    target = parse("sentinel://:pw@10.0.0.1:26379;sentinel://10.0.0.2/3", "orders")
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379))
    assert target.options == {"password": "pw", "db": 3} and target.master == "orders"
    assert "pw" not in target.shown


@pytest.mark.parametrize("url, says", [
    ("sentinel://10.0.0.1:26379;redis://10.0.0.2", "is not sentinel://HOST:PORT"),
    ("sentinel://10.0.0.1:port", "port that is not a number"),
    ("sentinel://10.0.0.1/db", "database"),
    ("ftp://x", "is not a Redis URL"),
])
def test_a_broken_url_is_refused_naming_what_is_wrong(url, says):
    with pytest.raises(ConfigError, match=says):
        parse(url)


def test_the_answer_may_arrive_in_pieces_and_a_password_is_sent_first():
    exchange = _Exchange(parse("sentinel://h:1", "m", sentinel_password="s3"))
    assert exchange.request.startswith(b"*2\r\n$4\r\nAUTH\r\n$2\r\ns3\r\n")
    assert exchange.feed(b"+OK\r\n" + ADDRESS[:9]) is None
    assert exchange.feed(ADDRESS[9:]) == ("127.0.0.1", 6390)


def test_a_refused_password_or_an_unknown_primary_is_an_error_naming_it():
    with pytest.raises(ValueError, match="WRONGPASS"):
        _Exchange(parse("sentinel://h:1", "m", sentinel_password="x")).feed(b"-WRONGPASS nope\r\n" + ADDRESS)
    with pytest.raises(ValueError, match="BUS_REDIS_SENTINEL_MASTER"):
        _Exchange(parse("sentinel://h:1", "m")).feed(b"*-1\r\n")
    with pytest.raises(OSError, match="closed"):
        _Exchange(parse("sentinel://h:1", "m")).feed(b"")
