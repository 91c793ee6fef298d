"""Turn an HTTP request body into records: JSON, NDJSON, msgpack, and Fluentd in_http's forms (pure).

in_http compatibility: `json=`, `msgpack=` and `ndjson=` fields of an
application/x-www-form-urlencoded or multipart/form-data body (or of the query
string when the body is empty), application/msgpack bodies, gzip or deflate
Content-Encoding, and an array as a batch. A `time=` query parameter is
accepted and not kept: a route delivers the record alone, as out_http does.
"""
from __future__ import annotations

import zlib
from collections.abc import Mapping
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl

import orjson

from ..errors import BodyTooLarge, InvalidBody
from ..settings import DEFAULT_MAX_BODY
from .frames import gunzip, jsonable, unpack_all

NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl", "application/jsonlines",
                          "application/x-jsonlines"})
MSGPACK_TYPES = frozenset({"application/msgpack", "application/x-msgpack"})
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
# in_http looks for these fields in this order.
FORM_FIELDS = ("msgpack", "json", "ndjson")


def parse_records(body: bytes, content_type: str = "application/json", *, query: Mapping[str, str] | None = None,
                  content_encoding: str = "", limit: int = DEFAULT_MAX_BODY) -> list[Any]:
    """Records in the body; InvalidBody says where the body broke."""
    body = _decode(body, content_encoding.strip().lower(), limit)
    media = content_type.split(";", 1)[0].strip().lower()
    if media in FORM_TYPES:
        fields = _form_fields(body, content_type, media)
        if fields:
            return _from_field(*fields)
        if media == "multipart/form-data":
            raise InvalidBody("the form has no 'json', 'msgpack' or 'ndjson' field")
        # `curl -d '{"a": 1}'` sends JSON labelled as a form: read it as the JSON it is.
    elif media in MSGPACK_TYPES:
        return _msgpack(body, "the body", limit)
    if not body.strip() and query:
        fields = next(((name, query[name].encode()) for name in FORM_FIELDS if query.get(name)), None)
        if fields:
            return _from_field(*fields)
    if not body.strip():
        raise InvalidBody("the body is empty: send a JSON object, an array of objects or NDJSON")
    if media in NDJSON_TYPES:
        return _ndjson(body)
    return _json(body)


def _decode(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return gunzip(body, limit)
    if encoding == "deflate":
        inflater = zlib.decompressobj()
        try:
            out = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise InvalidBody(f"the deflate body is corrupt: {exc}") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise BodyTooLarge(f"the body inflates to over {limit} bytes (BUS_MAX_BODY)")
        return out
    raise InvalidBody(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")


def _form_fields(body: bytes, content_type: str, media: str) -> tuple[str, bytes] | None:
    """The first of in_http's fields present in a form body, with its raw bytes."""
    if media == "multipart/form-data":
        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
        if not message.is_multipart():
            raise InvalidBody("the multipart body is malformed (check the boundary)")
        found: dict[Any, bytes] = {part.get_param("name", header="content-disposition"): _payload(part)
                                   for part in message.iter_parts()}
    else:
        # latin-1 both ways keeps percent-decoded bytes as sent (a msgpack field is binary).
        found = {k: v.encode("latin-1") for k, v in parse_qsl(body.decode("latin-1"), keep_blank_values=True, encoding="latin-1")}
    return next(((name, found[name]) for name in FORM_FIELDS if name in found), None)


def _from_field(name: str, value: bytes) -> list[Any]:
    if name == "msgpack":
        return _msgpack(value, "the msgpack field", len(value))
    if not value.strip():
        raise InvalidBody(f"the {name} field is empty")
    return _ndjson(value) if name == "ndjson" else _json(value)


def _json(body: bytes) -> list[Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # Several objects one per line without an NDJSON content type (curl --data-binary @file).
        if b"\n" in body.strip() and body.lstrip()[:1] == b"{":
            try:
                return _ndjson(body)
            except InvalidBody:
                pass
        raise InvalidBody(f"the body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    return value if isinstance(value, list) else [value]


def _msgpack(body: bytes, what: str, limit: int) -> list[Any]:
    """One msgpack value: a map is one event, an array a batch (in_http's msgpack parser)."""
    values = unpack_all(body, limit, what)
    if len(values) != 1:
        raise InvalidBody(f"{what} holds {len(values)} msgpack values; send one map or one array of maps")
    value = jsonable(values[0], what)
    return value if isinstance(value, list) else [value]


def _ndjson(body: bytes) -> list[Any]:
    records = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise InvalidBody(f"NDJSON line {number} is not valid JSON: {exc.msg} at column {exc.colno}") from None
    return records


def _payload(part: Any) -> bytes:
    """A form part's bytes as sent (decode=True undoes its transfer encoding and gives bytes)."""
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""
