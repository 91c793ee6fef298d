"""The HTTP ingress: a werkzeug WSGI app that turns POST /<tag> into accepted events."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from importlib import resources

import orjson
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, UnsupportedMediaType
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from .. import archive, auth, fanout, filters, intake, journal, metrics, replay, stats
from ..errors import (
    ArchiveUnavailable,
    BacklogFull,
    BadFilter,
    BodyTooLarge,
    BusError,
    EventNotFound,
    Forbidden,
    IdempotencyConflict,
    InvalidBody,
    InvalidTag,
    NoRoute,
    RedisFull,
    RequestTimeout,
    Unauthorized,
    Unavailable,
    Unconfirmed,
)
from ..journal import REDIS_DOWN
from ..logs import redact
from ..routes import CREDENTIAL_HEADERS, Router
from . import origin
from .bodies import parse_records

log = logging.getLogger("bus.ingress")

# The one table from our error types to HTTP statuses.
STATUS = {InvalidTag: 400, InvalidBody: 400, BadFilter: 400, Unauthorized: 401, Forbidden: 403, NoRoute: 404,
          EventNotFound: 404, RequestTimeout: 408, IdempotencyConflict: 409, BodyTooLarge: 413, Unavailable: 503,
          BacklogFull: 503, Unconfirmed: 503, RedisFull: 503,
          ArchiveUnavailable: 503}
# Request headers never written to the journal: they carry producers' credentials.
SECRET_HEADERS = CREDENTIAL_HEADERS
# Nor those that describe the connection to the bus rather than the events (every event of a
# request would repeat them: ~100 bytes of Redis memory each).
TRANSPORT_HEADERS = frozenset({"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te",
                               "upgrade", "expect", "accept", "accept-encoding"})
NOT_JOURNALED = SECRET_HEADERS | TRANSPORT_HEADERS
MAX_LIST = 1000
REPLAY_FIELDS = frozenset({"ids", "status", "tag", "route", "destination", "since", "until", "to", "dry_run",
                           "limit"})
OPEN_ENDPOINTS = frozenset({"healthz", "metrics", "console"})
CONSOLE_TYPES = {"index.html": "text/html", "console.js": "text/javascript", "console.css": "text/css"}
# The console is our own files only: no inline script, nothing from elsewhere, never framed.
CONSOLE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'none'",
    "Cache-Control": "no-cache",
}

URLS = Map([
    Rule("/healthz", endpoint="healthz", methods=["GET"]),
    Rule("/metrics", endpoint="metrics", methods=["GET"]),
    Rule("/stats", endpoint="stats", methods=["GET"]),
    Rule("/console", endpoint="console", methods=["GET"]),
    Rule("/console/<any(console.js, console.css):asset>", endpoint="console", methods=["GET"]),
    Rule("/events", endpoint="list_events", methods=["GET"]),
    Rule("/events/replay", endpoint="replay_events", methods=["POST"]),
    Rule("/events/<event_id>", endpoint="show_event", methods=["GET"]),
    Rule("/<path:tag>", endpoint="post_events", methods=["POST"]),
])


# POST paths the werkzeug app answers with something other than post_events (static rules only:
# a POST rule with a converter would need the URL map for every request).
OWN_POSTS = frozenset(rule.rule for rule in URLS.iter_rules()
                      if "POST" in (rule.methods or ()) and rule.endpoint != "post_events")
assert not any("<" in path for path in OWN_POSTS), OWN_POSTS


def is_event_post(method: str, path: str) -> bool:
    """Whether a request posts events: a POST to `/` and anything, unless another POST rule's path.
    The tag is the rest of the path as it came, so `//api.x` or `/api.x%0a` is a bad tag (400
    saying why), not `api.x` (werkzeug merges slashes) nor another path (404)."""
    return method == "POST" and len(path) > 1 and path not in OWN_POSTS


def match_request(method: str, path: str) -> tuple[str, dict]:
    """The endpoint and URL arguments of a request, for the event loop and the werkzeug app alike.
    Raises werkzeug's NotFound or MethodNotAllowed."""
    if is_event_post(method, path):
        return "post_events", {"tag": path[1:]}
    return URLS.bind("bus").match(path, method)


def _json(payload: object, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status=status, mimetype="application/json", headers=headers)


# An answer of the event loop's paths: status, extra headers, JSON body.
JsonAnswer = tuple[int, dict[str, str], bytes]
# What an unexpected error answers, on every path (its extra headers are never changed).
INTERNAL_ERROR: JsonAnswer = (500, {}, b'{"error":"internal error; nothing was accepted, see the ingress log"}')


def error_answer(exc: BusError) -> JsonAnswer:
    """Status, extra headers and JSON body of the answer to a refused request (WSGI and ASGI alike)."""
    status = STATUS.get(type(exc), 400)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Unavailable) else {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="bus"'
    return status, headers, orjson.dumps({"error": str(exc)})


def _error(exc: BusError) -> Response:
    status, headers, body = error_answer(exc)
    return Response(body, status=status, mimetype="application/json", headers=headers)


def check_declared_length(length: int | None, limit: int) -> None:
    if length is not None and length > limit:
        raise BodyTooLarge(f"the body is {length} bytes; the limit is {limit} (BUS_MAX_BODY)")


def check_read_length(length: int, limit: int) -> None:
    if length > limit:
        raise BodyTooLarge(f"the body is over the limit of {limit} bytes (BUS_MAX_BODY)")


def _read_body(request: Request, limit: int) -> bytes:
    check_declared_length(request.content_length, limit)
    body = request.stream.read(limit + 1)
    check_read_length(len(body), limit)
    return body


def received_headers(items: Iterable[tuple[str, str]]) -> bytes:
    """JSON of the request headers kept in the journal: no credentials, no transport headers, bounded."""
    kept = {k: v[:1024] for k, v in list(items)[:64] if k.lower() not in NOT_JOURNALED}
    return orjson.dumps(kept)


def _check_batch(records: list, max_batch: int) -> None:
    if len(records) > max_batch:
        raise BodyTooLarge(f"the batch has {len(records)} events; the limit is {max_batch} (BUS_MAX_BATCH)")


def prepare_posted(bus: intake.Intake, tag: str, headers: Mapping[str, str], query: Mapping[str, str],
                   body: bytes) -> intake.Prepared:
    """A POST /<tag> body's records, checked and given ids (no I/O): the event loop's path
    (asgi.py) and the werkzeug app's both start here."""
    records = parse_records(body, headers.get("Content-Type") or "application/json", query=query,
                            content_encoding=headers.get("Content-Encoding", ""), limit=bus.settings.max_body)
    _check_batch(records, bus.settings.max_batch)
    return intake.prepare(bus, tag, records, received_headers(headers.items()), headers.get("Idempotency-Key"))


def post_events(bus: intake.Intake, request: Request, tag: str) -> Response:
    try:
        prepared = prepare_posted(bus, tag, request.headers, request.args, _read_body(request, bus.settings.max_body))
        ids = intake.commit(bus, prepared)
    except BusError as exc:
        intake.count_refusal(bus, tag, exc)
        raise
    return _json({"ids": ids}, 202)


def _limit(raw: object, default: int = 50) -> int:
    if raw in (None, ""):
        return default
    if isinstance(raw, bool) or not str(raw).isdigit() or not 1 <= int(str(raw)) <= MAX_LIST:
        raise BadFilter(f"limit {raw!r} must be a whole number from 1 to {MAX_LIST}")
    return int(str(raw))


def _filter(values: dict, status_default: str | None, router: Router | None = None) -> filters.EventFilter:
    route = values.get("route")
    if router is not None:
        route = fanout.destination_route(router, route, values.get("destination"))
    return filters.build(values.get("status", status_default), values.get("tag"), route,
                         values.get("since"), values.get("until"), now=time.time())


def list_events(bus: intake.Intake, request: Request) -> Response:
    args = request.args.to_dict()
    page = fanout.find(bus.shards, archive.store_for(bus.settings), bus.router, _filter(args, None, bus.router),
                       limit=_limit(args.get("limit")), cursor=args.get("cursor") or None,
                       retention=bus.settings.retention)
    # A tier that did not answer is named, so a short page is never taken for the whole journal.
    missing = {"unavailable": page.unavailable} if page.unavailable else {}
    return _json({"events": page.events, "cursor": page.cursor, **missing}, 200)


def show_event(bus: intake.Intake, event_id: str) -> Response:
    return _json(fanout.show(bus.shards, archive.store_for(bus.settings), bus.router, event_id), 200)


def replay_events(bus: intake.Intake, request: Request) -> Response:
    """POST /events/replay {"ids", "status", "tag", "route", "since", "until", "to", "dry_run", "limit"}."""
    if request.mimetype != "application/json":
        # A cross-site form can post text/plain but not application/json without the browser asking
        # first (CORS preflight): this keeps another web page from replaying events through a browser.
        raise UnsupportedMediaType("send the replay request as JSON with Content-Type: application/json")
    try:
        spec = orjson.loads(_read_body(request, 64 * 1024) or b"{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"the body is not valid JSON: {exc.msg}") from None
    if not isinstance(spec, dict):
        raise InvalidBody("send a JSON object of filters, e.g. {\"status\": \"dead\"}")
    unknown = sorted(set(spec) - REPLAY_FIELDS)
    if unknown:
        # A misspelt filter must not widen the replay to everything the others match.
        raise BadFilter(f"unknown replay field {unknown[0]!r}; use {', '.join(sorted(REPLAY_FIELDS))}")
    to = spec.get("to")
    if to is not None:
        to = replay.check_target(to)
    limit = _limit(spec.get("limit"), default=0) if spec.get("limit") is not None else None
    ids = replay.check_ids(spec["ids"]) if spec.get("ids") is not None else None
    store = archive.store_for(bus.settings)
    chosen = replay.plan(bus.shards, bus.router, _filter(spec, journal.DEAD, bus.router), bus.settings.retention, limit, ids,
                         archive=store)
    sent = 0 if spec.get("dry_run") else replay.run(bus.shards, bus.router, chosen.events, to=to, archive=store)
    return _json({"matched": len(chosen.events), "replayed": sent, "dry_run": bool(spec.get("dry_run")),
                  "unroutable": len(chosen.unroutable), "ids": [e["id"] for e in chosen.events[:100]]}, 200)


def metrics_page(bus: intake.Intake, request: Request) -> Response:
    body, content_type = metrics.exposition(bus.shards, _route_names(bus), request.headers.get("Accept", ""),
                                            bus.settings.hot_window if bus.settings.archive_url else None)
    return Response(body, content_type=content_type)


def stats_page(bus: intake.Intake) -> Response:
    """GET /stats: what `bus stats --json` prints (the console's backlog table reads it)."""
    now, config = time.time(), bus.settings
    archived = (stats.read_archive(bus.shards, redact(config.archive_url), config.hot_window, now)
                if config.archive_url else None)
    return _json(stats.as_json(stats.read(bus.shards, _route_names(bus), now), now, archived), 200)


def _route_names(bus: intake.Intake) -> list[str]:
    return [r.name for r in bus.router.routes]


def console(asset: str = "index.html") -> Response:
    """The journal console: static files shipped in the package, talking to the JSON API above."""
    body = (resources.files("bus") / "console" / asset).read_bytes()
    return Response(body, content_type=f"{CONSOLE_TYPES[asset]}; charset=utf-8", headers=CONSOLE_HEADERS)


def healthz(bus: intake.Intake) -> Response:
    """200 only while an accept would be taken on every shard: Redis a primary, taking writes, under the
    memory mark, with the replicas BUS_ACK_REPLICAS asks for. With shards, 503 while any one cannot
    write (its routes refuse), the body saying which ("shards": name -> "ok" or why not)."""
    states: dict[str, str] = {}
    failed: Unavailable | None = None
    for name, link in bus.links.items():
        try:
            journal.check_writable(link.pipe, link.memory, bus.settings.ack_replicas)
            states[name] = "ok"
        except Unavailable as exc:
            failed = failed or exc
            states[name] = str(exc)
    sharded = {"shards": states} if len(states) > 1 else {}
    if failed is not None:
        down = [name for name, state in states.items() if state != "ok"]
        error = str(failed) if not sharded else "; ".join(f"shard {n}: {states[n]}" for n in down)
        return _json({"status": "unavailable", "error": error, **sharded}, 503,
                     {"Retry-After": str(failed.retry_after)})
    return _json({"status": "ok", **sharded}, 200)


# URLS' endpoints and what answers them: (intake, request, URL arguments) -> response.
HANDLERS: dict[str, Callable[[intake.Intake, Request, dict], Response]] = {
    "healthz": lambda bus, request, args: healthz(bus),
    "post_events": lambda bus, request, args: post_events(bus, request, args["tag"]),
    "list_events": lambda bus, request, args: list_events(bus, request),
    "show_event": lambda bus, request, args: show_event(bus, args["event_id"]),
    "replay_events": lambda bus, request, args: replay_events(bus, request),
    "metrics": lambda bus, request, args: metrics_page(bus, request),
    "stats": lambda bus, request, args: stats_page(bus),
    "console": lambda bus, request, args: console(args.get("asset", "index.html")),
}


def authorize(tokens: list[auth.Token] | None, method: str, headers: Mapping[str, str], endpoint: str, args: dict,
              allowed_hosts: tuple[str, ...] = ()) -> None:
    """With BUS_TOKENS set, events need a token allowed for their tag and the journal needs @journal.
    Health, metrics (counts, no event data) and the console's static files stay open. Without
    BUS_TOKENS, requests that a web page on another site could make are refused (origin.py).
    Runs on the request head alone: nothing of a refused request's body is read."""
    if tokens is None:
        why = origin.refusal(method, headers, allowed_hosts)
        if why is not None:
            raise Forbidden(why)
        return
    if endpoint in OPEN_ENDPOINTS:
        return
    token = auth.authenticate(tokens, headers.get("Authorization"))
    if endpoint == "post_events":
        auth.check_tag(token, args["tag"])
    else:
        auth.check_journal(token)


def authorize_head(tokens: list[auth.Token] | None, method: str, path: str, headers: Mapping[str, str],
                   allowed_hosts: tuple[str, ...]) -> bool:
    """authorize() a request the werkzeug app will answer, before its body is read. False when no rule
    takes it: the app answers 404 or 405 then, which needs no body and reveals nothing."""
    try:
        endpoint, args = match_request(method, path)
    except HTTPException:
        return False
    authorize(tokens, method, headers, endpoint, args, allowed_hosts)
    return True


def make_app(bus: intake.Intake | None = None, tokens: list[auth.Token] | None = None
             ) -> Callable[[dict, Callable], Iterable[bytes]]:
    """The WSGI app; `bus` defaults to the process-wide intake loaded from the environment.
    `tokens` None means an open bus (no BUS_TOKENS)."""

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        try:
            # PATH_INFO as sent (request.path would strip its leading slashes), as PEP 3333's latin-1.
            endpoint, args = match_request(request.method, environ.get("PATH_INFO", "").encode("latin-1").decode(
                "utf-8", "replace"))
            current = bus or intake.default()
            authorize(tokens, request.method, request.headers, endpoint, args, current.settings.http.allowed_hosts)
            response = HANDLERS[endpoint](current, request, args)
        except BusError as exc:
            response = _error(exc)
        except REDIS_DOWN as exc:
            response = _error(journal.unavailable(exc))
        except MethodNotAllowed as exc:
            response = _json({"error": f"{request.method} is not allowed here; use {', '.join(exc.valid_methods or [])}"}, 405)
        except NotFound:
            response = _json({"error": f"nothing at {request.path}; POST events to /<tag>"}, 404)
        except HTTPException as exc:
            response = _json({"error": exc.description}, exc.code or 400)
        except Exception:
            log.exception("unexpected error handling %s %s", request.method, request.path)
            status, _, body = INTERNAL_ERROR
            response = Response(body, status=status, mimetype="application/json")
        return response(environ, start_response)

    return app
