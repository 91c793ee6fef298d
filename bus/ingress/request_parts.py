"""A request's head as the event loop's two paths read it (uvicorn's ASGI scope, GuardedProtocol's own
answer to POST /<tag>): its fields and query spelled as the werkzeug app sees them."""
from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl


class ClientGone(Exception):
    """The client went away (or its read deadline passed) before its request arrived whole."""


def headers_of(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Request headers by their usual spelling (as werkzeug shows them); repeated fields joined by ','."""
    out: dict[str, str] = {}
    for raw_name, raw_value in raw:
        name, value = raw_name.decode("latin-1").title(), raw_value.decode("latin-1")
        out[name] = f"{out[name]},{value}" if name in out else value
    return out


def query_of(query_string: bytes) -> dict[str, str]:
    if not query_string:
        return {}  # most event posts: no parse_qsl to pay for
    query: dict[str, str] = {}
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        query.setdefault(name, value)  # the first of repeated fields, as werkzeug's args.get()
    return query
