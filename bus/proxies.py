"""Which egress proxy a delivery goes through: the route's `proxy`, else HTTP(S)_PROXY and NO_PROXY as curl reads them (pure).

The environment, as curl and requests read it: `http_proxy` / `HTTP_PROXY` for http://
endpoints, `https_proxy` / `HTTPS_PROXY` for https:// ones (reached through `CONNECT`),
the lowercase name first when both are set. `NO_PROXY` / `no_proxy` lists what goes
straight: `*` alone is everything; a name matches itself and every name under it
(`example.com` and `.example.com` both take `api.example.com` and `example.com`); an IP
address or CIDR block (`10.0.0.0/8`, `::1`) matches addresses only; `name:port` or
`[v6]:port` only that port. A route's `proxy` key wins over all of them: a URL, or "" to
go straight (NO_PROXY is for the environment's proxies and is not applied to it).

Only http:// proxies are supported (as out_http and most egress proxies); user and
password in the URL become `Proxy-Authorization: Basic`. Every text shown to users names
the proxy with its credentials redacted.
"""
from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class Proxy:
    """An http:// proxy: where to connect, the header that authenticates, and a name safe to show."""

    host: str
    port: int
    shown: str  # http://host:port, http://***@host:port when the URL had credentials (logs.redact's form)
    authorization: str | None = field(default=None, repr=False)  # "Basic ..." or None


@dataclass(frozen=True)
class Choice:
    """The proxy a delivery to one URL uses (None: straight to the endpoint) and why, for `bus routes TAG`."""

    proxy: Proxy | None
    why: str


@dataclass(frozen=True)
class ProxyEnv:
    """HTTP_PROXY, HTTPS_PROXY and NO_PROXY, read once (settings.py); each proxy None when unset."""

    http: Proxy | None = None
    https: Proxy | None = None
    http_from: str = ""  # the variable it came from, for messages
    https_from: str = ""
    no_proxy: tuple[str, ...] = ()


def parse_proxy(url: str) -> Proxy:
    """An http:// proxy URL (a bare host:port means http://, as in curl); ValueError saying what is wrong."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme.lower() != "http":
        raise ValueError(f"{_redacted(url)!r}: only http:// proxies are supported (https:// endpoints go through "
                         "them with CONNECT); socks and https:// proxies are not")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"{_redacted(url)!r} has an invalid port") from None
    if not parts.hostname:
        raise ValueError(f"{_redacted(url)!r} names no host; use e.g. http://proxy.internal:3128")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"{_redacted(url)!r}: a proxy URL is scheme, credentials, host and port only")
    host = parts.hostname
    shown_host = f"[{host}]" if ":" in host else host
    authorization = None
    user = ""
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")
        user = "***@"
    return Proxy(host=host, port=port, shown=f"http://{user}{shown_host}:{port}", authorization=authorization)


def from_environment(env: Mapping[str, str]) -> ProxyEnv:
    """The proxy variables of `env`; ValueError naming the variable when a proxy URL is unusable."""
    found: dict[str, tuple[Proxy | None, str]] = {}
    for scheme in ("http", "https"):
        found[scheme] = (None, "")
        for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY"):
            if env.get(name, "").strip():
                try:
                    found[scheme] = (parse_proxy(env[name]), name)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
                break
    raw = env.get("no_proxy") if env.get("no_proxy", "").strip() else env.get("NO_PROXY", "")
    entries = tuple(e.strip().lower() for e in (raw or "").replace(" ", ",").split(",") if e.strip())
    return ProxyEnv(http=found["http"][0], https=found["https"][0], http_from=found["http"][1],
                    https_from=found["https"][1], no_proxy=entries)


def choose(env: ProxyEnv, route_proxy: str | None, scheme: str, host: str, port: int) -> Choice:
    """The proxy for a delivery to scheme://host:port. `route_proxy` is the route's key: None when unset."""
    if route_proxy is not None:
        if route_proxy == "":
            return Choice(None, 'the route sets proxy = ""')
        return Choice(parse_proxy(route_proxy), "the route's proxy key")
    proxy, name = (env.https, env.https_from) if scheme == "https" else (env.http, env.http_from)
    if proxy is None:
        return Choice(None, f"no {scheme}_proxy in the environment")
    entry = bypassing_entry(env.no_proxy, host, port)
    if entry is not None:
        return Choice(None, f"NO_PROXY entry {entry!r} matches {host}")
    return Choice(proxy, name)


def bypassing_entry(entries: tuple[str, ...], host: str, port: int) -> str | None:
    """The first NO_PROXY entry that sends host:port straight, if any."""
    host = host.lower().strip("[]").rstrip(".")
    address = _address(host)
    for entry in entries:
        if entry == "*":
            return entry
        pattern, entry_port = _split_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        if address is not None:
            network = _network(pattern)
            if network is not None and address in network:
                return entry
            continue
        name = pattern.lstrip(".").rstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return entry
    return None


def _split_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [v6] or [v6]:port
        inside, _, rest = entry[1:].partition("]")
        return inside, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if entry.count(":") == 1:  # name:port or v4:port (a bare v6 address has more colons)
        name, _, port = entry.partition(":")
        if port.isdigit():
            return name, int(port)
    return entry, None


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _network(pattern: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(pattern, strict=False)
    except ValueError:
        return None


def _redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    _, at, hostpart = rest.rpartition("@")
    if not at:
        return url
    return f"{scheme}{sep}***@{hostpart}"
