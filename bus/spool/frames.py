"""The spool's record format (pure): one event as a length+CRC framed line of bytes, and reading them back.

A frame is a 4-byte big-endian payload length, the payload's 4-byte CRC-32, then the
payload: id, tag, route, received and body joined by newlines. None of the first four
can hold a newline, and the body is JSON as orjson writes it, which escapes every
control character, so splitting at the first four newlines is exact. The CRC and the
length find a torn tail on reopening: power lost in the middle of a write, or a kill
cutting a large write short (Linux stops a write between pages for a fatal signal).
Either tears only frames whose emit had not returned yet, so cutting them off loses
nothing a caller was promised. A segment is allocated ahead, so what follows its last frame
is zeros: a header of length 0 ends the frames (a payload is never empty).
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ..journal import NewEvent

HEADER = struct.Struct(">II")
_pack = HEADER.pack
_new = object.__new__


def encode(event: NewEvent) -> bytes:
    return encode_fields(event.id, event.tag, event.route, event.received, event.body)


def encode_fields(event_id: str, tag: str, route: str, received: float, body: bytes) -> bytes:
    """encode() without a NewEvent: Producer.emit's path, where making the dataclass cost more than this."""
    payload = f"{event_id}\n{tag}\n{route}\n{received!r}\n".encode() + body
    return _pack(len(payload), zlib.crc32(payload)) + payload


def decode(payload: bytes) -> NewEvent:
    event_id, tag, route, received, body = payload.split(b"\n", 4)
    # The frozen dataclass's __init__ sets each field through object.__setattr__: filling its
    # __dict__ at once takes half the time, and the sender decodes every event it sends.
    event = _new(NewEvent)
    event.__dict__.update(id=event_id.decode(), tag=tag.decode(), route=route.decode(), body=body,
                          received=float(received), headers=b"")
    return event


@dataclass(frozen=True)
class Parsed:
    """The whole frames at the start of a buffer, the bytes they take, and whether what follows them
    is damaged (a bad CRC or an impossible length) rather than merely cut short by the buffer's end."""

    payloads: list[bytes]
    size: int
    damaged: bool = False


def parse(data: bytes | memoryview, max_frames: int | None = None, max_payload: int = 1 << 30) -> Parsed:
    """Read whole, intact frames from the start of `data`, up to `max_frames`."""
    # Slices of bytes, not of a memoryview: one copy per payload, not two (the sender's largest step).
    data = data if type(data) is bytes else bytes(data)
    payloads: list[bytes] = []
    pos, end, limit = 0, len(data), len(data) if max_frames is None else max_frames
    unpack, crc32, head = HEADER.unpack_from, zlib.crc32, HEADER.size
    while pos + head <= end and len(payloads) < limit:
        length, crc = unpack(data, pos)
        if not length:  # no frame is empty: zeros, the allocated rest of a segment not yet written
            break
        if length > max_payload:
            return Parsed(payloads, pos, damaged=True)
        stop = pos + head + length
        if stop > end:
            break
        payload = data[pos + head:stop]
        if crc32(payload) != crc:
            return Parsed(payloads, pos, damaged=True)
        payloads.append(payload)
        pos = stop
    return Parsed(payloads, pos)


def needed(data: bytes | memoryview) -> int:
    """How many bytes the first frame of `data` takes in all (header included); 0 when even its header
    is not there."""
    if len(data) < HEADER.size:
        return 0
    return HEADER.size + HEADER.unpack_from(data, 0)[0]
