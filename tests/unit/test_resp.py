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


def test_an_accept_joined_from_fragments_is_the_same_command_as_the_one_packed_whole():
    # emit()'s accept packs the route's part once (journal.accept_packed): Redis must get the very
    # bytes accept_call's keys and arguments pack to, for one event or several, ordered or not.
    from bus.journal import ACCEPT_SCRIPT, NewEvent, accept_call
    from bus.journal.grouping import accept_packed
    from bus.wire.pipelined import evalsha

    for order in ("", "tag", "field:k"):
        for n in (1, 3):
            events = [NewEvent(f"0190-{i}", "api.x", "api", b'{"k":"\xc3\xa9"}', 1_700_000_000.125 + i, b"{}")
                      for i in range(n)]
            keys, args = accept_call(events, 50, None, order=order)
            assert accept_packed(events, 50, order) == pack(evalsha(ACCEPT_SCRIPT, keys, args))
    with pytest.raises(ValueError, match="one route at a time"):
        accept_packed([NewEvent("a", "t", "r1", b"{}", 1.0), NewEvent("b", "t", "r2", b"{}", 1.0)])
