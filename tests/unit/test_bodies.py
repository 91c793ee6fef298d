"""HTTP bodies to records, including Fluentd in_http's forms (pure: no server)."""
from __future__ import annotations

import gzip
import zlib
from urllib.parse import quote_from_bytes, urlencode

import msgpack
import pytest

from bus.errors import BodyTooLarge, InvalidBody
from bus.ingress.bodies import parse_records

FORM = "application/x-www-form-urlencoded"


def multipart(*fields: tuple[str, bytes, str | None]) -> tuple[bytes, str]:
    boundary = "XyZbOuNdArY"
    body = b""
    for name, value, filename in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_json_form_field_holds_one_event_or_a_batch():
    assert parse_records(urlencode({"json": '{"a": 1}'}).encode(), FORM) == [{"a": 1}]
    assert parse_records(urlencode({"json": '[{"a": 1}, {"a": 2}]'}).encode(), FORM) == [{"a": 1}, {"a": 2}]


def test_msgpack_form_field_keeps_binary_bytes():
    packed = msgpack.packb({"a": "ü", "b": b"text"})
    assert parse_records(b"msgpack=" + quote_from_bytes(packed).encode(), FORM) == [{"a": "ü", "b": "text"}]


def test_ndjson_form_field_and_field_order_of_in_http():
    assert parse_records(urlencode({"ndjson": '{"a": 1}\n{"a": 2}'}).encode(), FORM) == [{"a": 1}, {"a": 2}]
    # in_http reads msgpack before json.
    body = urlencode({"json": '{"from": "json"}', "msgpack": msgpack.packb({"from": "msgpack"})}).encode()
    assert parse_records(body, FORM) == [{"from": "msgpack"}]


def test_json_sent_as_a_form_by_curl_d_is_still_read_as_json():
    assert parse_records(b'{"a": 1}', FORM) == [{"a": 1}]


def test_multipart_fields_including_a_binary_msgpack_file():
    body, content_type = multipart(("json", b'{"a": 1}', None))
    assert parse_records(body, content_type) == [{"a": 1}]
    body, content_type = multipart(("other", b"x", None), ("msgpack", msgpack.packb([{"n": 1}, {"n": 2}]), "events.bin"))
    assert parse_records(body, content_type) == [{"n": 1}, {"n": 2}]


def test_multipart_without_an_in_http_field_is_refused():
    body, content_type = multipart(("other", b"{}", None))
    with pytest.raises(InvalidBody, match="'json', 'msgpack' or 'ndjson' field"):
        parse_records(body, content_type)


@pytest.mark.parametrize("content_type", ["application/msgpack", "application/x-msgpack"])
def test_msgpack_body_is_a_map_or_an_array_of_maps(content_type):
    assert parse_records(msgpack.packb({"a": 1}), content_type) == [{"a": 1}]
    assert parse_records(msgpack.packb([{"a": 1}, {"b": 2}]), content_type) == [{"a": 1}, {"b": 2}]


@pytest.mark.parametrize("body, says", [
    (msgpack.packb({"a": 1}) + msgpack.packb({"b": 2}), "holds 2 msgpack values"),
    (msgpack.packb({"a": 1})[:-1], "ends in the middle"),
    (b"\xc1", "malformed msgpack"),
    (msgpack.packb({"a": b"\xff"}), "not UTF-8"),
])
def test_bad_msgpack_body_is_refused_saying_why(body, says):
    with pytest.raises(InvalidBody, match=says):
        parse_records(body, "application/msgpack")


def test_query_fields_are_used_when_the_body_is_empty_and_time_is_accepted():
    assert parse_records(b"", "application/json", query={"json": '{"q": 1}', "time": "1700000000.5"}) == [{"q": 1}]
    assert parse_records(b'{"a": 1}', "application/json", query={"time": "1700000000"}) == [{"a": 1}]


def test_gzip_and_deflate_bodies_are_inflated():
    assert parse_records(gzip.compress(b'[{"a": 1}]'), "application/json", content_encoding="gzip") == [{"a": 1}]
    assert parse_records(zlib.compress(b'{"a": 2}'), "application/json", content_encoding="deflate") == [{"a": 2}]


def test_compressed_body_over_the_limit_is_refused_and_unknown_encodings_too():
    bomb = b'{"a": "' + b"x" * 100_000 + b'"}'
    with pytest.raises(BodyTooLarge):
        parse_records(gzip.compress(bomb), content_encoding="gzip", limit=1000)
    with pytest.raises(BodyTooLarge):
        parse_records(zlib.compress(bomb), content_encoding="deflate", limit=1000)
    with pytest.raises(InvalidBody, match="br"):
        parse_records(b"{}", content_encoding="br")
