"""Turn an HTTP request body into records: a JSON object, a JSON array (a batch) or NDJSON (pure)."""
from __future__ import annotations

from typing import Any

import orjson

from ..errors import InvalidBody

NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl", "application/jsonlines", "application/x-jsonlines"})


def parse_records(body: bytes, content_type: str = "application/json") -> list[Any]:
    """Records in the body; InvalidBody says where the body broke."""
    if not body.strip():
        raise InvalidBody("the body is empty: send a JSON object, an array of objects or NDJSON")
    media = content_type.split(";", 1)[0].strip().lower()
    if media in NDJSON_TYPES:
        return _ndjson(body)
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
