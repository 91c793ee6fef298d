"""RESP as the clients that write to Redis's socket themselves send it (bus/wire/resp.py)."""
from __future__ import annotations

import pytest

from bus.wire.resp import pack


def test_a_command_is_an_array_of_bulk_strings_str_as_utf8_numbers_as_decimal_bytes_as_they_are():
    assert pack(["SET", b"k\r\n", 1, 2.5, "é"]) == (
        b"*5\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$1\r\n1\r\n$3\r\n2.5\r\n$2\r\n\xc3\xa9\r\n")


def test_arguments_longer_than_the_remembered_length_prefixes_are_counted_all_the_same():
    for size in (0, 511, 512, 70_000):
        assert pack((b"x" * size,)) == b"*1\r\n$%d\r\n%s\r\n" % (size, b"x" * size)
    assert pack([]) == b"*0\r\n"


def test_an_argument_redis_cannot_take_raises_typeerror_naming_its_type():
    with pytest.raises(TypeError, match="cannot send NoneType to Redis"):
        pack(["SET", None])
