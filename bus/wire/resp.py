"""Commands in RESP, Redis's wire format, for the clients that write to the socket themselves."""
from __future__ import annotations

from typing import Any

# "$<length>" of the short arguments, made once: formatting one per argument was half of pack().
_HEADS = [b"$%d" % n for n in range(512)]


def pack(args: tuple[Any, ...] | list[Any]) -> bytes:
    """One command in RESP: str as UTF-8, int and float as decimal text, bytes as they are."""
    return b"*%d\r\n" % len(args) + fragment(args)


def fragment(args: tuple[Any, ...] | list[Any]) -> bytes:
    """The arguments of a command in RESP without the array's head: pack() is the head and one fragment,
    and a command may be joined from fragments made apart (some once, some per call) under one head
    that counts all their arguments."""
    # Built by slices and one join, not an append or a format per argument: a spool's batch
    # packs ~7 arguments per event, and this took a third of its sender's CPU.
    encoded = [a.encode() if type(a) is str else a if type(a) is bytes else _number(a) for a in args]
    if not encoded:
        return b""
    flat = encoded * 2
    flat[1::2] = encoded
    flat[0::2] = [_HEADS[n] if n < 512 else b"$%d" % n for n in map(len, encoded)]
    return b"\r\n".join(flat) + b"\r\n"


def _number(arg: Any) -> bytes:
    if type(arg) not in (int, float):
        raise TypeError(f"cannot send {type(arg).__name__} to Redis")
    return repr(arg).encode()
