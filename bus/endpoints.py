"""What a circuit breaker is keyed by: the rendered endpoint's origin and path, per route (pure).

A route renders a URL per tag (`/api/${tag[1]}/`), and behind one origin those paths are often
different services: the seed's scheme puts every `api.<name>` service behind one host, and a
gateway or nginx sends `/api/orders/` and `/api/users/` to different backends. A 503 from one
says nothing about the other, so a breaker per origin would let one failing service hold back
its healthy neighbours, which is what a breaker per route did. The query string is left out: it
carries tokens and per-request values, not a different service (and keys must hold no secret).
The cost of path over origin: a whole origin that is down opens one breaker per path, each
after its own few failures, and is then probed once per step per path with events waiting.

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


def endpoint_of(url: str) -> str:
    """The part of a rendered URL that names the service: scheme, host, port and path."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2].lower()
    return f"{parts.scheme.lower()}://{host}{parts.path or '/'}"


@functools.lru_cache(maxsize=4096)
def key_for(route: str, url: str, destination: str = "") -> EndpointKey:
    """Once per URL a worker renders often: every attempt asks, and the answer never changes."""
    return EndpointKey(route, endpoint_of(url), destination)
