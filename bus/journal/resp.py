"""Commands in RESP, Redis's wire format, for the clients that write to the socket themselves."""
from __future__ import annotations

from typing import Any


def pack(args: tuple[Any, ...] | list[Any]) -> bytes:
    """One command in RESP: str as UTF-8, int and float as decimal text, bytes as they are."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        kind = type(arg)
        if kind is str:
            arg = arg.encode()
        elif kind is not bytes:
            if kind not in (int, float):
                raise TypeError(f"cannot send {kind.__name__} to Redis")
            arg = repr(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)
