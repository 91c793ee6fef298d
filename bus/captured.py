"""A captured request (bus proxy): what of an HTTP request the journal keeps to send it again, and the
header rules a proxy follows (pure).

A captured request is an ordinary journal event: its body is the request's body bytes, and one more
field of the record, `request`, is the JSON of `Request` below. Every read, filter, purge and replay
works on it as on any event; only the sending (delivery.send) looks at `request` to repeat the
method, path, query and headers instead of POSTing the body to the route's endpoint.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson

from .routes import CREDENTIAL_HEADERS

# RFC 9110 7.6.1: these describe one connection, never the message; a proxy drops them both ways,
# and with them every field the Connection header names. Proxy-Authorization is the proxy's own.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                        "upgrade", "proxy-authorization", "proxy-authenticate"})
# Rebuilt for each sending: the length by whoever sends the body, the id by the bus (a client's own
# X-Request-Id would otherwise travel next to ours), the host by the URL it goes to.
NOT_KEPT = frozenset({"content-length", "x-request-id", "host", "expect"})
# Kept in the journal but not sent again: a replay reads 2 KiB of the answer and needs no compression.
NOT_REPLAYED = frozenset({"accept-encoding"})

Headers = list[tuple[str, str]]


@dataclass(frozen=True)
class Request:
    """The parts of a request a replay repeats; headers in their order, repeated fields kept apart."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]

    def to_json(self) -> bytes:
        return orjson.dumps({"method": self.method, "path": self.path, "query": self.query,
                             "headers": [list(pair) for pair in self.headers]})

    @classmethod
    def from_json(cls, raw: bytes | str) -> Request:
        data = orjson.loads(raw)
        return cls(data["method"], data["path"], data["query"], tuple((k, v) for k, v in data["headers"]))


def end_to_end(headers: Iterable[tuple[str, str]]) -> Headers:
    """The headers a proxy passes on (either way): without hop-by-hop fields and those Connection names."""
    pairs = list(headers)
    named = {token.strip().lower() for name, value in pairs if name.lower() == "connection"
             for token in value.split(",")}
    return [(k, v) for k, v in pairs if k.lower() not in HOP_BY_HOP and k.lower() not in named]


def for_replay(headers: Iterable[tuple[str, str]], keep_secrets: frozenset[str] = frozenset()) -> Headers:
    """The headers the journal keeps to send the request again: credentials only where the operator
    named them (bus proxy --keep-header), since @journal readers see what is kept."""
    return [(k, v) for k, v in headers
            if k.lower() not in NOT_KEPT and (k.lower() not in CREDENTIAL_HEADERS or k.lower() in keep_secrets)]


def shown(request: Request) -> dict:
    """The request as listings show it (bus events ID, /events/ID): credentials' values hidden."""
    headers = [[k, "[redacted]" if k.lower() in CREDENTIAL_HEADERS else v] for k, v in request.headers]
    return {"method": request.method, "path": request.path, "query": request.query, "headers": headers}


def target(base: str, request: Request) -> str:
    """Where the request goes: the base URL's scheme, host and path prefix, then its own path and query
    (`http://staging:8000/v2` + `/orders?id=7` -> `http://staging:8000/v2/orders?id=7`)."""
    parts = urlsplit(base)
    url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}{request.path}"
    return f"{url}?{request.query}" if request.query else url


def replay_headers(request: Request, event_id: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The headers of a replayed request: the kept ones (repeated fields joined, as RFC 9110 5.3 allows),
    the same X-Request-Id as the live request had, and `extra` (X-Bus-Replay for copies)."""
    out: dict[str, str] = {}
    for name, value in request.headers:
        if name.lower() in NOT_REPLAYED:
            continue
        title = name.title()
        out[title] = f"{out[title]}, {value}" if title in out else value
    out["X-Request-Id"] = event_id
    out.update(extra or {})
    return out
