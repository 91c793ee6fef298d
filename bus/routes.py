"""Routes: load and validate routes/*.toml, match a tag, render an endpoint (pure after loading)."""
from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from . import proxies, route_secrets
from .broker.messages import GROUP_SIZE
from .errors import NoRoute, RouteError
from .tags import compile_patterns

DEFAULT_RETRYABLE = frozenset([408, 425, 429, *range(500, 600)])
METHODS = ("POST", "PUT", "PATCH")
COMPRESSIONS = ("gzip", "none")
# A task stays unacked in Redis while its attempt runs; the attempt must finish
# before the visibility timeout, or kombu restores the message and the event is
# sent twice (kombu#337). Retries wait on the journal's schedule, not as unacked
# ETA tasks, so only one attempt (connect + read) plus this margin must fit.
VISIBILITY_MARGIN = 10
# A day between attempts is as patient as anyone wants; beyond it, park as dead.
MAX_RETRY_INTERVAL = 86400
# Events per request with batch_max: a task carries one batch at least, and a worker holds it.
MAX_BATCH = 500
_ROUTE_NAME = re.compile(r"[A-Za-z0-9_-]+")
# A route delivers to at most this many destinations: each is a queue, a schedule and a journal record per event.
MAX_DESTINATIONS = 16
# Between a route's name and a destination's in the destination's own name (queue bus.api.audit) and in the id
# of its copy of an event (<event id>.audit): neither route names, destination names nor UUIDs have one.
DESTINATION_SEP = "."
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_TAG_PLACEHOLDER = re.compile(r"tag(?:\[(-?\d+)\])?")
# Header names that carry credentials, whether a route lists them in `headers` or `secret_headers`.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "x-auth-token"})


@dataclass(frozen=True)
class Endpoint:
    """An endpoint template split at load time into literal text and tag-part indexes."""

    template: str
    # Literal strings and, between them, None (whole tag) or an int (tag part index).
    pieces: tuple[str | int | None, ...]
    host_templated: bool = False
    allowed_hosts: tuple[str, ...] = ()

    def render(self, tag: str) -> str:
        parts = tag.split(".")
        out: list[str] = []
        for piece in self.pieces:
            if isinstance(piece, str):  # the text between placeholders (every other piece)
                out.append(piece)
                continue
            if piece is None:
                value = tag
            else:
                try:
                    value = parts[piece]
                except IndexError:
                    raise NoRoute(
                        f"tag {tag!r} has no part [{piece}] for endpoint {self.template}; "
                        "send a tag with more parts or fix the route's match"
                    ) from None
            out.append(quote(value, safe=""))
        url = "".join(out)
        if self.host_templated:
            host = urlsplit(url).hostname or ""
            if not any(fnmatchcase(host, pattern) for pattern in self.allowed_hosts):
                raise NoRoute(f"tag {tag!r} makes host {host!r}, which is not in the route's allowed_hosts")
        return url


@dataclass(frozen=True)
class Route:
    name: str
    file: str
    match: tuple[str, ...]
    endpoint: Endpoint
    method: str = "POST"
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    open_timeout: float = 2.0
    read_timeout: float = 15.0
    retryable_statuses: frozenset[int] = DEFAULT_RETRYABLE
    retry_max_interval: float = 60.0
    max_attempts: int | None = None
    backlog_limit: int | None = None
    tls_verify: bool = True
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    follow_redirects: bool = False
    # Events per request, sent as one JSON array (NDJSON lines for an ndjson content_type) the
    # way Fluentd's out_http json_array does; 1 sends each event on its own.
    batch_max: int = 1
    # The egress proxy: None (unset) follows HTTP(S)_PROXY and NO_PROXY, "" goes straight, else an http:// URL
    # (bus/proxies.py). Out of repr: the URL may hold the proxy's password.
    proxy: str | None = field(default=None, repr=False)
    # "gzip": bodies are sent gzip-compressed with Content-Encoding: gzip (Fluentd's out_http `compress gzip`).
    compress: str | None = None
    # The Redis that holds the route's queue, events and schedule: a name in BUS_REDIS_SHARDS, or
    # "default" (BUS_REDIS_URL).
    shard: str = "default"
    # Per-key FIFO (docs/design.md, "Ordered routes"): events of one order key reach the endpoint in
    # acceptance order. `order_key` names the top-level record field the key is read from; None: the tag.
    ordered: bool = False
    order_key: str | None = None
    # Resolved secrets: kept out of repr so no log line or traceback shows them.
    secret_headers: dict[str, str] = field(default_factory=dict, repr=False)
    signing_keys: tuple[bytes, ...] = field(default=(), repr=False)
    # A destination of a fan-out route: its own name within the route (this Route's name is
    # "<route>.<destination>", its queue bus.<route>.<destination>). "" for a route with one endpoint.
    destination: str = ""
    # A fan-out route: one Route per destination (what workers deliver); this one only matches tags.
    destinations: tuple[Route, ...] = ()

    def for_copies(self) -> Route:
        """The route as copies sent elsewhere (`bus replay --to`) use it: without anything that proves to
        the route's endpoint who is calling (secret headers, credential headers, signing keys, the client
        certificate). A copy goes to a URL the replaying operator chose, which may not be the endpoint's."""
        plain = {k: v for k, v in self.headers.items() if k.lower() not in CREDENTIAL_HEADERS}
        return replace(self, headers=plain, secret_headers={}, signing_keys=(), client_cert=None, client_key=None)

    @property
    def order(self) -> str:
        """How the accept script finds an event's order key: '' (unordered), 'tag', or 'field:<name>'."""
        if not self.ordered:
            return ""
        return "tag" if self.order_key is None else f"field:{self.order_key}"

    @property
    def group_size(self) -> int:
        """Events a task message of this route carries at most: a batch must fit in one task."""
        return max(GROUP_SIZE, self.batch_max)


class Router:
    """Routes in file-name order; the first whose patterns match a tag takes it, as in Fluentd."""

    def __init__(self, routes: list[Route]):
        # What tags are matched against: one Route per file.
        self.matching = routes
        # What is delivered: a route with one endpoint is itself, a fan-out route is its destinations,
        # each with its own queue, pending list, schedule and breakers (the per-route machinery runs per
        # destination). Looked up by the `route` an event's record names.
        self.routes = [d for r in routes for d in (r.destinations or (r,))]
        self.by_name = {r.name: r for r in self.routes}
        self.fanouts = {r.name: r for r in routes if r.destinations}
        self._patterns = [(compile_patterns(list(r.match)), r) for r in routes]
        self._cache: dict[str, Route | None] = {}
        self._renders: dict[str, Route] = {}

    def named(self, names: list[str]) -> list[Route]:
        """The delivered routes these names mean: a route's own name (a fan-out route's is all its
        destinations) or a destination's "<route>.<destination>"; ValueError naming one that is unknown."""
        chosen: list[Route] = []
        for name in names:
            if name in self.fanouts:
                chosen += self.fanouts[name].destinations
            elif name in self.by_name:
                chosen.append(self.by_name[name])
            else:
                raise ValueError(f"no route named {name!r}; routes are: {', '.join([*self.fanouts, *self.by_name])}")
        return list({r.name: r for r in chosen}.values())

    def match(self, tag: str) -> Route:
        """The route that takes this tag, or NoRoute."""
        try:
            route = self._cache[tag]
        except KeyError:
            route = next((r for pattern, r in self._patterns if pattern.matches(tag)), None)
            if len(self._cache) < 100_000:
                self._cache[tag] = route
        if route is None:
            raise NoRoute(f"no route matches tag {tag!r}; add a route whose match covers it")
        return route

    def accepting(self, tag: str) -> Route:
        """The route that takes this tag and can build a URL for it, or NoRoute: a tag the route cannot
        render is refused at accept, not dead-lettered later. Remembered per tag, as match() is
        (rendering costs more than the rest of checking an event)."""
        if tag in self._renders:
            return self._renders[tag]
        route = self.match(tag)
        for target in route.destinations or (route,):
            target.endpoint.render(tag)
        if len(self._renders) < 100_000:
            self._renders[tag] = route
        return route


def parse_endpoint(template: str) -> Endpoint:
    """Split an endpoint template; placeholders may only sit in the path, query or fragment."""
    pieces: list[str | int | None] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(template):
        inner = _TAG_PLACEHOLDER.fullmatch(m.group(1).strip())
        if not inner:
            raise ValueError(f"unknown placeholder {m.group(0)!r}; use ${{tag}} or ${{tag[N]}}")
        pieces.append(template[pos : m.start()])
        pieces.append(None if inner.group(1) is None else int(inner.group(1)))
        pos = m.end()
    pieces.append(template[pos:])
    marker = "\x00"
    skeleton = "".join(p if isinstance(p, str) else marker for p in pieces)
    url = urlsplit(skeleton)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"{template!r} is not an http:// or https:// URL with a host")
    if marker in url.scheme or "@" in url.netloc:
        raise ValueError(f"{template!r}: the scheme, port and user info must be fixed (no placeholders, no '@')")
    try:
        _ = url.port  # urlsplit checks the port only when asked
    except ValueError:
        raise ValueError(f"{template!r} has an invalid port") from None
    # A tag in the host decides where data goes: allowed only with allowed_hosts (checked in parse_route).
    return Endpoint(template, tuple(pieces), host_templated=marker in url.netloc)


def _endpoint(value: Any) -> Endpoint:
    if not isinstance(value, str):
        raise ValueError(f"expected a URL string, got {value!r}")
    return parse_endpoint(value)


def _statuses(value: Any) -> frozenset[int]:
    if not isinstance(value, list) or not value:
        raise ValueError("expected a non-empty list such as [408, 429, \"500-599\"]")
    codes: set[int] = set()
    for item in value:
        if isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599:
            codes.add(item)
        elif isinstance(item, str) and re.fullmatch(r"\d{3}-\d{3}", item):
            lo, hi = map(int, item.split("-"))
            if not 100 <= lo <= hi <= 599:
                raise ValueError(f"range {item!r} is not within 100-599")
            codes.update(range(lo, hi + 1))
        else:
            raise ValueError(f"{item!r} is not a status code (100-599) or a range like \"500-599\"")
    if any(200 <= c < 300 for c in codes):
        raise ValueError("2xx statuses mean delivered and cannot be retried")
    return frozenset(codes)


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"expected a positive number of seconds, got {value!r}")
    return float(value)


def _interval(value: Any) -> float:
    seconds = _seconds(value)
    if not 1 <= seconds <= MAX_RETRY_INTERVAL:
        raise ValueError(f"expected 1 to {MAX_RETRY_INTERVAL} seconds (backoff starts at 1 s), got {value!r}")
    return seconds


def _patterns(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(p, str) for p in value):
        raise ValueError("expected a pattern or a non-empty list of patterns such as [\"api.*\"]")
    compile_patterns(value)
    return tuple(value)


def _method(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in METHODS:
        raise ValueError(f"expected one of {', '.join(METHODS)}, got {value!r}")
    return value.upper()


def _headers(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError("expected a table of header names to string values")
    for k, v in value.items():
        if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", k) or "\n" in v or "\r" in v:
            raise ValueError(f"header {k!r} has an invalid name or a line break in its value")
    return dict(value)


def _content_type(value: Any) -> str:
    if not isinstance(value, str) or "/" not in value or "\n" in value:
        raise ValueError(f"expected a media type such as \"application/json\", got {value!r}")
    return value


def _max_attempts(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a whole number of attempts >= 1 (leave it out to retry forever), got {value!r}")
    return value


def _backlog_limit(value: Any) -> int:
    if isinstance(value, str):
        raise ValueError(f"{value!r}: backlog_limit counts events (a whole number); a size in bytes is not supported yet")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a whole number of events >= 1, got {value!r}")
    return value


def _batch_max(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BATCH:
        raise ValueError(f"expected a whole number of events per request from 1 to {MAX_BATCH}, got {value!r}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _existing_file(value: Any) -> str:
    if not isinstance(value, str) or not Path(value).is_file():
        raise ValueError(f"expected the path of a readable file, got {value!r}")
    return value


def _proxy(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError('expected an http:// proxy URL such as "http://proxy.internal:3128", or "" for none')
    if value:
        proxies.parse_proxy(value)
    return value


def _compress(value: Any) -> str | None:
    if value not in COMPRESSIONS:
        raise ValueError(f'expected "gzip" (or "none"), got {value!r}')
    return None if value == "none" else value


def _shard(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", value):
        raise ValueError(f"expected the name of a shard in BUS_REDIS_SHARDS (letters, digits, '_', '-'), got {value!r}")
    return value


def _order_key(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", value):
        raise ValueError("expected the name of a top-level record field (letters, digits, '_', '.', '-'), "
                         f"such as \"order_id\", got {value!r}")
    return value


def _hosts(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(h, str) and h for h in value):
        raise ValueError("expected a non-empty list of host names, e.g. [\"*.svc.internal\", \"api.example.com\"]")
    return tuple(h.lower() for h in value)


_KEYS = {
    "match": _patterns,
    "endpoint": _endpoint,
    "method": _method,
    "content_type": _content_type,
    "headers": _headers,
    "open_timeout": _seconds,
    "read_timeout": _seconds,
    "retryable_statuses": _statuses,
    "retry_max_interval": _interval,
    "max_attempts": _max_attempts,
    "backlog_limit": _backlog_limit,
    "allowed_hosts": _hosts,
    "tls_verify": _bool,
    "ca_file": _existing_file,
    "client_cert": _existing_file,
    "client_key": _existing_file,
    "follow_redirects": _bool,
    "batch_max": _batch_max,
    "proxy": _proxy,
    "compress": _compress,
    "shard": _shard,
    "ordered": _bool,
    "order_key": _order_key,
}
# Keys whose values are secret references, resolved against the environment.
_SECRET_KEYS = ("secret_headers", "signing_secret")


def _secret_values(table: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    try:
        if "secret_headers" in table:
            key, refs = "secret_headers", table["secret_headers"]
            if not isinstance(refs, dict) or not refs:
                raise ValueError("expected a table such as { Authorization = \"env:API_TOKEN\" }")
            values["secret_headers"] = _headers({name: route_secrets.resolve(ref, environ) for name, ref in refs.items()})
        if "signing_secret" in table:
            key, refs = "signing_secret", table["signing_secret"]
            refs = [refs] if isinstance(refs, str) else refs
            if not isinstance(refs, list) or not 1 <= len(refs) <= 2:
                raise ValueError("expected one reference, or a list of two while rotating")
            values["signing_keys"] = tuple(route_secrets.signing_key(route_secrets.resolve(r, environ)) for r in refs)
    except ValueError as exc:
        raise ValueError(f"key {key!r}: {exc}") from None
    return values


def parse_route(name: str, file: str, table: dict[str, Any], visibility_timeout: int,
                environ: Mapping[str, str] | None = None) -> Route:
    """Validate one route's table; every problem names the file and the key (never a secret's value)."""
    if not _ROUTE_NAME.fullmatch(name):
        raise RouteError(f"{file}: the file name must be letters, digits, '_' or '-' (it names queue bus.{name})")
    if "destinations" in table:
        return _fanout(name, file, table, visibility_timeout, environ)
    return _route(name, file, file, table, visibility_timeout, environ)


# Keys that belong to the route as a whole (what it takes, where its events live), not to a destination.
_ROUTE_ONLY = ("match", "backlog_limit", "shard")


def _fanout(name: str, file: str, table: dict[str, Any], visibility_timeout: int,
            environ: Mapping[str, str] | None) -> Route:
    """A route with [[destinations]]: every key of the route's own table is a default for each destination,
    which may set any key but match, backlog_limit and shard (those are the route's)."""
    raw = table["destinations"]
    if not isinstance(raw, list) or not raw or not all(isinstance(d, dict) for d in raw):
        raise RouteError(f"{file}: key 'destinations': expected one or more [[destinations]] tables, each with "
                         "a name and an endpoint")
    if len(raw) > MAX_DESTINATIONS:
        raise RouteError(f"{file}: key 'destinations': {len(raw)} destinations, at most {MAX_DESTINATIONS} per route")
    if "endpoint" in table:
        raise RouteError(f"{file}: key 'endpoint': a route with destinations has an endpoint in each "
                         "[[destinations]] table; move it into one")
    defaults = {k: v for k, v in table.items() if k != "destinations"}
    children: list[Route] = []
    for i, dest in enumerate(raw, 1):
        dname = dest.get("name")
        where = f"{file}: destination {i}" + (f" ({dname!r})" if isinstance(dname, str) else "")
        if not isinstance(dname, str) or not _ROUTE_NAME.fullmatch(dname):
            raise RouteError(f"{where}: key 'name' is required: letters, digits, '_' or '-' "
                             f"(it names queue bus.{name}{DESTINATION_SEP}NAME)")
        if any(c.destination == dname for c in children):
            raise RouteError(f"{where}: key 'name': another destination of the route is named {dname!r}; "
                             "each needs a name of its own")
        misplaced = next((k for k in _ROUTE_ONLY if k in dest), None)
        if misplaced:
            raise RouteError(f"{where}: key {misplaced!r} belongs to the route, not to one destination; "
                             "set it above the [[destinations]] tables")
        merged = {**defaults, **{k: v for k, v in dest.items() if k != "name"}}
        if "endpoint" not in merged:
            raise RouteError(f"{where}: key 'endpoint' is required")
        child = _route(f"{name}{DESTINATION_SEP}{dname}", file, where, merged, visibility_timeout, environ)
        children.append(replace(child, destination=dname))
    # Matching and accepting read the route's match, backlog_limit and shard (the same in every destination).
    return replace(children[0], name=name, destination="", destinations=tuple(children))


def _route(name: str, file: str, where: str, table: dict[str, Any], visibility_timeout: int,
           environ: Mapping[str, str] | None) -> Route:
    unknown = sorted(set(table) - set(_KEYS) - set(_SECRET_KEYS))
    if unknown:
        known = ", ".join([*_KEYS, *_SECRET_KEYS, "destinations"])
        raise RouteError(f"{where}: unknown key {unknown[0]!r}; known keys are {known}")
    for required in ("match", "endpoint"):
        if required not in table:
            raise RouteError(f"{where}: key {required!r} is required")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in _SECRET_KEYS:
            continue
        try:
            values[key] = _KEYS[key](value)
        except (ValueError, RouteError) as exc:
            raise RouteError(f"{where}: key {key!r}: {exc}") from None
    try:
        values.update(_secret_values(table, environ or {}))
    except ValueError as exc:
        raise RouteError(f"{where}: {exc}") from None
    endpoint = values["endpoint"]
    hosts = values.pop("allowed_hosts", ())
    if endpoint.host_templated and not hosts:
        raise RouteError(f"{where}: key 'endpoint': a placeholder in the host lets a tag choose where data goes; "
                         "list the hosts it may reach in allowed_hosts")
    values["endpoint"] = replace(endpoint, allowed_hosts=hosts)
    if "client_key" in values and "client_cert" not in values:
        raise RouteError(f"{where}: key 'client_key': set client_cert too")
    if "order_key" in values and not values.get("ordered"):
        raise RouteError(f"{where}: key 'order_key': it only applies to an ordered route; add ordered = true")
    route = Route(name=name, file=file, **values)
    longest = route.open_timeout + route.read_timeout + VISIBILITY_MARGIN
    if longest >= visibility_timeout:
        raise RouteError(
            f"{where}: key 'read_timeout': open_timeout + read_timeout + {VISIBILITY_MARGIN}s margin ({longest:g}s) "
            f"must stay under the Redis visibility timeout ({visibility_timeout}s), or an attempt still running "
            "is handed to another worker and sent twice; lower the timeouts or raise BUS_VISIBILITY_TIMEOUT"
        )
    return route


def copy_id(event_id: str, destination: str) -> str:
    """The id of a destination's copy of an event: its own journal record, attempts and status."""
    return f"{event_id}{DESTINATION_SEP}{destination}"


def event_id(copy: str) -> str:
    """The event a record belongs to: its own id, or the event of a destination's copy."""
    return copy.partition(DESTINATION_SEP)[0]


def load_configured(config: Any) -> Router:
    """The routes the settings point at (BUS_ROUTES), with secrets resolved from its environment,
    each on a shard the settings know."""
    router = load_routes(config.routes_dir, config.visibility_timeout, config.environ)
    check_shards(router, config.shard_names)
    return router


def check_shards(router: Router, shards: tuple[str, ...]) -> None:
    """RouteError naming the first route whose `shard` is not in BUS_REDIS_SHARDS."""
    for route in router.matching:
        if route.shard not in shards:
            known = ", ".join(s for s in shards if s != "default") or "none"
            raise RouteError(f"{route.file}: key 'shard': {route.shard!r} is not in BUS_REDIS_SHARDS (shards: "
                             f"{known}); add {route.shard}=redis://HOST:PORT/DB to BUS_REDIS_SHARDS or fix the name")


def load_routes(directory: Path | str, visibility_timeout: int, environ: Mapping[str, str] | None = None) -> Router:
    """Read every *.toml in file-name order; the first broken file stops start-up."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RouteError(f"{directory}: routes folder not found; create it or set BUS_ROUTES")
    routes = []
    for path in sorted(directory.glob("*.toml")):
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise RouteError(f"{path}: not valid TOML: {exc}") from None
        routes.append(parse_route(path.stem, str(path), table, visibility_timeout, environ))
    if not routes:
        raise RouteError(f"{directory}: no *.toml route files; add one such as routes/api.toml")
    return Router(routes)
