"""What a browser may do to an open bus (no BUS_TOKENS): the Host and cross-site checks (pure).

With no tokens, only the network guards the bus, and a web page on another
site is on the user's network through the user's browser. Two attacks follow,
and each check stops one:

- Cross-site simple requests: a page can POST `text/plain` or a form to any
  address without asking first, so it could inject events or start a replay.
  Browsers say where a request comes from (`Sec-Fetch-Site`, and `Origin` on
  every POST), so a state-changing request that another site made is refused.
  Producers that are programs send neither header.
- DNS rebinding: a page on `evil.example` re-points its own name at 127.0.0.1
  and then reads the journal as a same-origin page. The browser still sends
  `Host: evil.example`, so a host name the bus does not know is refused. An
  IP address, a name without a dot (localhost, a compose service name) and a
  `.localhost` name cannot be re-pointed by someone else's DNS; any other
  name must be listed in BUS_ALLOWED_HOSTS.
A bus with BUS_TOKENS does not need either: a browser cannot attach a bearer
token to another site's request without a CORS preflight, which the bus never
grants.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from fnmatch import fnmatchcase
from functools import lru_cache
from urllib.parse import urlsplit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def refusal(method: str, headers: Mapping[str, str], allowed_hosts: tuple[str, ...]) -> str | None:
    """Why an open bus refuses this request (the text of a 403), or None when it may go on."""
    host = headers.get("Host") or ""
    name = _host_name(host)
    if host and not _known_host(name, allowed_hosts):
        return (f"Host {host[:100]!r} is not one this bus answers to while it is open (no BUS_TOKENS): "
                "a web page could reach it by DNS rebinding. Add the name to BUS_ALLOWED_HOSTS, "
                "or set BUS_TOKENS")
    if method in SAFE_METHODS:
        return None
    site = (headers.get("Sec-Fetch-Site") or "").lower()
    origin = headers.get("Origin")
    if site in ("cross-site", "same-site") or (origin is not None and not _same_origin(origin, host)):
        return (f"a request from another site ({(origin or site)[:100]}) is refused on an open bus (no BUS_TOKENS): "
                "send events from a program, or set BUS_TOKENS")
    return None


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


# Remembered: a producer sends the same Host on every request, and parsing it as an IP address was a
# sixth of the ingress's own Python per single event. Bounded, as Host is the client's to choose.
@lru_cache(maxsize=256)
def _known_host(name: str, allowed_hosts: tuple[str, ...]) -> bool:
    name = name.lower().rstrip(".")
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    if "." not in name or name.endswith(".localhost"):
        return True
    return any(fnmatchcase(name, pattern.lower()) for pattern in allowed_hosts)


def _same_origin(origin: str, host: str) -> bool:
    """Whether Origin names the host the request was sent to ("null" never does)."""
    try:
        parts = urlsplit(origin)
        return bool(parts.netloc) and parts.netloc.lower() == host.lower()
    except ValueError:
        return False
