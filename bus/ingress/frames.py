"""Fluentd forward protocol v1, pure: msgpack frames to (tag, records, chunk), and the shared-key handshake.

The four event modes of the Forward Protocol Specification v1, told apart by
the type of the frame's second item, as Fluentd's in_forward does:

    Message                  [tag, time, record, option?]
    Forward                  [tag, [[time, record], ...], option?]
    PackedForward            [tag, bin: concatenated msgpack [time, record], option?]
    CompressedPackedForward  the same, the bin gzipped, option {"compressed": "gzip"}

A frame is all or nothing, like an HTTP batch: one bad entry refuses the whole
frame (Fluentd would accept the good entries and ack; our contract never
acknowledges part of a batch). Every problem is raised as InvalidBody,
InvalidTag or BodyTooLarge and nothing else, so the listener can log it and
close the connection. Event times are checked but not kept: a route delivers
the record alone, as out_http's JSON body does.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..errors import BodyTooLarge, InvalidBody, InvalidTag
from ..tags import validate_tag

MESSAGE, FORWARD, PACKED, COMPRESSED = "Message", "Forward", "PackedForward", "CompressedPackedForward"
# What msgpack raises on bytes that are not msgpack (FormatError, StackError and
# UnicodeDecodeError are ValueErrors; an unhashable map key is a TypeError).
_MALFORMED = (ValueError, TypeError, msgpack.UnpackException)
# Deeper records could not be encoded as JSON anyway (orjson stops at 255 levels).
MAX_DEPTH = 250


@dataclass(frozen=True)
class EventTime:
    """Fluentd's EventTime, msgpack ext type 0: big-endian uint32 seconds and nanoseconds."""

    seconds: int
    nanoseconds: int


@dataclass(frozen=True)
class Frame:
    tag: str
    records: list[dict[str, Any]]
    # The client's `chunk` option: answer {"ack": chunk} once the records are in Redis.
    chunk: str | bytes | None
    mode: str


def _ext_hook(code: int, data: bytes) -> Any:
    if code == 0 and len(data) == 8:
        return EventTime(*struct.unpack(">II", data))
    return msgpack.ExtType(code, data)


def unpacker(max_size: int) -> msgpack.Unpacker:
    # surrogateescape: a str-typed PackedForward stream (msgpack before the bin
    # type, Fluentd v0.12) stays recoverable as bytes; a tag or record holding
    # such text is still refused (tag validation, JSON encoding).
    return msgpack.Unpacker(max_buffer_size=max(max_size, 1), raw=False, unicode_errors="surrogateescape",
                            ext_hook=_ext_hook)


class FrameReader:
    """Cuts a byte stream into msgpack objects, never holding a frame over max_size bytes."""

    def __init__(self, max_size: int, source: str = "the connection"):
        self.max_size = max_size
        self.source = source
        self._unpacker = unpacker(max_size)
        self._fed = 0
        # Stream offset where the last whole frame ended. (Unpacker.tell() is exact only
        # there: inside an unfinished frame it counts the items parsed so far.)
        self._boundary = 0

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held back until the rest arrives."""
        return self._fed - self._boundary

    def feed(self, data: bytes) -> Iterator[Any]:
        """Take the next bytes read from the connection; yield every frame they complete."""
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull:
            raise self._too_large() from None
        self._fed += len(data)
        while True:
            try:
                obj = next(self._unpacker)
            except StopIteration:
                break
            except _MALFORMED as exc:
                raise InvalidBody(f"malformed msgpack in {self.source}, in the value starting at byte {self._boundary}: "
                                  f"{str(exc) or type(exc).__name__}") from None
            end = self._unpacker.tell()
            if end - self._boundary > self.max_size:
                raise self._too_large()
            self._boundary = end
            yield obj
        if self.pending > self.max_size:
            raise self._too_large()

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(f"a frame is over the limit of {self.max_size} bytes (BUS_MAX_BODY)")


def decode_frame(obj: Any, max_size: int) -> Frame | None:
    """The events of one frame, or None for a nil heartbeat; InvalidBody/InvalidTag/BodyTooLarge otherwise."""
    if obj is None:
        return None  # in_forward ignores a nil message: a TCP heartbeat
    if not isinstance(obj, list) or not 2 <= len(obj) <= 4:
        raise InvalidBody(f"a frame must be an array [tag, ...] of 2 to 4 items, got {_kind(obj)}")
    tag = obj[0]
    if not isinstance(tag, str):
        raise InvalidTag(f"the frame's tag is a msgpack {_kind(tag)}, not a string")
    validate_tag(tag)
    entries = obj[1]
    if isinstance(entries, list):
        mode, option = FORWARD, _option(obj, 2)
        if option.compressed == "gzip":
            raise InvalidBody("option compressed=gzip needs the entries as packed bin, not an array")
    elif isinstance(entries, (bytes, str)):
        option = _option(obj, 2)
        stream = entries if isinstance(entries, bytes) else entries.encode("utf-8", "surrogateescape")
        mode = PACKED
        if option.compressed == "gzip":
            stream, mode = gunzip(stream, max_size), COMPRESSED
        entries = unpack_all(stream, max_size, "the packed entries")
    else:
        if len(obj) < 3:
            raise InvalidBody("a Message frame is [tag, time, record, option]; the record is missing")
        mode, option = MESSAGE, _option(obj, 3)
        if option.compressed == "gzip":
            raise InvalidBody("option compressed=gzip is for PackedForward frames only")
        entries = [obj[1:3]]
    records = [_entry(entry, i, mode) for i, entry in enumerate(entries)]
    if option.size is not None and option.size != len(records):
        raise InvalidBody(f"option size says {option.size} events but the frame holds {len(records)}")
    return Frame(tag, records, option.chunk, mode)


@dataclass(frozen=True)
class _Option:
    chunk: str | bytes | None = None
    size: int | None = None
    compressed: str | None = None


def _option(obj: list, index: int) -> _Option:
    if len(obj) > index + 1:
        raise InvalidBody(f"the frame has {len(obj)} items; after its option nothing may follow")
    raw = obj[index] if len(obj) > index else None
    if raw is None:
        return _Option()
    if not isinstance(raw, dict):
        raise InvalidBody(f"the frame's option is a msgpack {_kind(raw)}, not a map")
    chunk, size, compressed = raw.get("chunk"), raw.get("size"), raw.get("compressed")
    if chunk is not None and not isinstance(chunk, (str, bytes)):
        raise InvalidBody(f"option chunk is a msgpack {_kind(chunk)}, not a string")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise InvalidBody(f"option size is {size!r}, not a count of events")
    if compressed not in (None, "text", "gzip"):
        raise InvalidBody(f"option compressed={compressed!r} is not supported; use gzip or text")
    return _Option(chunk, size, compressed)


def _entry(entry: Any, index: int, mode: str) -> dict[str, Any]:
    where = "the event" if mode == MESSAGE else f"entry {index}"
    if not isinstance(entry, list) or len(entry) != 2:
        raise InvalidBody(f"{where} must be [time, record], got {_kind(entry)}")
    time, record = entry
    # Fluent Bit >= 2.1 may send [[time, metadata], record].
    if isinstance(time, list) and len(time) == 2 and isinstance(time[1], dict):
        time = time[0]
    if time is not None and (isinstance(time, bool) or not isinstance(time, (int, float, EventTime))):
        raise InvalidBody(f"the time of {where} is a msgpack {_kind(time)}; send an integer or an EventTime")
    if not isinstance(record, dict):
        raise InvalidBody(f"{where}'s record is a msgpack {_kind(record)}, not a map; each event must be a map")
    return jsonable(record, where)


def jsonable(value: Any, where: str = "the record", depth: int = 0) -> Any:
    """msgpack bin (bytes) as text, so a record encodes as JSON; other values are left for the encoder to judge."""
    if depth > MAX_DEPTH:
        raise InvalidBody(f"{where} is nested over {MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        return {jsonable(k, where, depth + 1): jsonable(v, where, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v, where, depth + 1) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidBody(f"{where} holds binary data that is not UTF-8 text; JSON cannot carry it") from None
    return value


def unpack_all(data: bytes, max_size: int, what: str) -> list[Any]:
    """Every msgpack object in data, which must end on an object boundary."""
    reader = FrameReader(max(max_size, len(data)), what)
    objects = list(reader.feed(data))
    if reader.pending:
        raise InvalidBody(f"{what} ends in the middle of a msgpack value (its last {reader.pending} bytes)")
    return objects


def gunzip(data: bytes, limit: int) -> bytes:
    """Inflate gzip data of one or more members (Fluentd appends one per write), refusing more than limit bytes out."""
    out: list[bytes] = []
    total = 0
    while data:
        inflater = zlib.decompressobj(wbits=31)
        pending = data
        while not inflater.eof:
            try:
                piece = inflater.decompress(pending, limit - total + 1)
            except zlib.error as exc:
                raise InvalidBody(f"the gzip data is corrupt: {exc}") from None
            total += len(piece)
            if total > limit:
                raise BodyTooLarge(f"the gzip data inflates to over {limit} bytes (BUS_MAX_BODY)")
            out.append(piece)
            pending = inflater.unconsumed_tail
            if not piece and not pending:
                raise InvalidBody("the gzip data is truncated")
        data = inflater.unused_data
    return b"".join(out)


def _kind(value: Any) -> str:
    names = {type(None): "nil", bool: "boolean", int: "integer", float: "float", str: "string", bytes: "bin",
             list: "array", dict: "map", EventTime: "EventTime"}
    return names.get(type(value), "extension value")


# The shared-key handshake (spec: "Handshake Messages"). Server: HELO; client: PING; server: PONG.


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def _sha512_hex(*parts: str | bytes) -> str:
    digest = hashlib.sha512()
    for part in parts:
        digest.update(_bytes(part))
    return digest.hexdigest()


@dataclass(frozen=True)
class Handshake:
    """One connection's handshake state: the nonce and user-auth salt it sent in HELO."""

    self_hostname: str
    shared_key: str
    username: str | None = None
    password: str | None = None
    nonce: bytes = field(default_factory=lambda: os.urandom(16))
    auth_salt: bytes = field(default_factory=lambda: os.urandom(16))

    def helo(self) -> list[Any]:
        # auth is empty when no user authentication is asked for (spec), so clients send no password digest.
        return ["HELO", {"nonce": self.nonce, "auth": self.auth_salt if self.username else b"", "keepalive": True}]

    def answer(self, ping: Any) -> tuple[list[Any], str | None]:
        """The PONG to send, and why the client is refused (None when it is accepted)."""
        reason = self._refusal(ping)
        if reason:
            return ["PONG", False, reason, "", ""], reason
        _, _, salt, *_ = ping
        digest = _sha512_hex(salt, self.self_hostname, self.nonce, self.shared_key)
        return ["PONG", True, "", self.self_hostname, digest], None

    def _refusal(self, ping: Any) -> str | None:
        if not (isinstance(ping, list) and len(ping) == 6 and ping[0] == "PING"
                and all(isinstance(p, (str, bytes)) for p in ping[1:])):
            return "invalid ping message: expected [PING, hostname, salt, digest, username, password digest]"
        _, hostname, salt, digest, username, password_digest = ping
        expected = _sha512_hex(salt, hostname, self.nonce, self.shared_key)
        if not hmac.compare_digest(_bytes(digest), expected.encode()):
            return "shared_key mismatch"
        if self.username:
            expected = _sha512_hex(self.auth_salt, self.username, self.password or "")
            if _bytes(username) != self.username.encode() or not hmac.compare_digest(_bytes(password_digest), expected.encode()):
                return "username/password mismatch"
        return None
