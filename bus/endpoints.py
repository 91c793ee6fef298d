"""What a circuit breaker is keyed by: the rendered endpoint's origin and path, per route (pure).

A route renders a URL per tag (`/api/${tag[1]}/`), and behind one origin those paths are often
different services: the seed's scheme puts every `api.<name>` service behind one host, and a
gateway or nginx sends `/api/orders/` and `/api/users/` to different backends. A 503 from one
says nothing about the other, so a breaker per origin would let one failing service hold back
its healthy neighbours, which is what a breaker per route did. The query string is left out: it
carries tokens and per-request values, not a different service (and keys must hold no secret).
That holds for answers (5xx, 429). A failure to connect at all (refused, connect timeout, no
such host, TLS or proxy refusal) says nothing of paths: the host itself is not answering. Such
failures count against a breaker of the origin (EndpointKey.origin: the same route, scheme, host
and port, no path), so a whole origin that is down opens one breaker after five failures and is
probed once per step, whatever number of paths have events waiting (docs/design.md).

`destination` is empty today; a route with several destinations will key each one's breakers
apart, so the same URL in two destinations never shares a breaker.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class EndpointKey:
    """One endpoint of one route, as its breaker knows it."""

    route: str
    endpoint: str  # scheme://host[:port]/path of the rendered URL: no user info, query or fragment
    destination: str = ""

    @functools.cached_property
    def digest(self) -> str:
        """A short fixed-length name for Redis keys: rendered paths are long and hold any character."""
        return hashlib.blake2b(f"{self.destination}\n{self.endpoint}".encode(), digest_size=8).hexdigest()

    @functools.cached_property
    def origin(self) -> EndpointKey:
        """The breaker of the endpoint's whole origin: what a failure to connect counts against. Its
        text is scheme://host[:port] with no path, so it never equals a path's (always one '/' at least)."""
        scheme, _, rest = self.endpoint.partition("://")
        return EndpointKey(self.route, f"{scheme}://{rest.partition('/')[0]}", self.destination)


def is_origin(endpoint: str) -> bool:
    """Whether a breaker's endpoint text names a whole origin (scheme://host[:port], no path)."""
    return endpoint.count("/") == 2


def endpoint_of(url: str) -> str:
    """The part of a rendered URL that names the service: scheme, host, port and path."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2].lower()
    return f"{parts.scheme.lower()}://{host}{parts.path or '/'}"


@functools.lru_cache(maxsize=4096)
def key_for(route: str, url: str, destination: str = "") -> EndpointKey:
    """Once per URL a worker renders often: every attempt asks, and the answer never changes."""
    return EndpointKey(route, endpoint_of(url), destination)
